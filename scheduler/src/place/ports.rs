//! Host ports: each machine's range minus what live attempts hold, charged
//! with each placement of the batch. Kept only for machines a task with ports
//! has looked at.

use crate::snapshot::Machine;
use std::collections::{BTreeSet, HashMap};

#[derive(Default)]
pub struct PortsTaken {
    by_machine: HashMap<usize, BTreeSet<u16>>,
}

impl PortsTaken {
    fn taken<'a>(&'a mut self, machines: &[Machine], i: usize) -> &'a mut BTreeSet<u16> {
        self.by_machine.entry(i).or_insert_with(|| {
            let m = &machines[i];
            m.used_ports
                .iter()
                .copied()
                .filter(|p| (m.ports.first..=m.ports.last).contains(p))
                .collect()
        })
    }

    /// Ports left in machine `i`'s range.
    pub fn free(&mut self, machines: &[Machine], i: usize) -> usize {
        let range = machines[i].ports.len();
        range.saturating_sub(self.taken(machines, i).len())
    }

    /// Take the `n` lowest free ports of machine `i` (the caller checked there are).
    pub fn take(&mut self, machines: &[Machine], i: usize, n: u16) -> Vec<u16> {
        if n == 0 {
            return Vec::new();
        }
        let range = machines[i].ports;
        let taken = self.taken(machines, i);
        let picked: Vec<u16> = (range.first..=range.last)
            .filter(|p| !taken.contains(p))
            .take(usize::from(n))
            .collect();
        taken.extend(picked.iter().copied());
        picked
    }
}

//! Why a task waits, for the user: every machine's first rejection, counted by
//! cause, with the nearest miss for a resource.
//!
//! `0/3 machines fit: 2 insufficient memory (nearest: m2 has 7.5Gi of 64Gi), 1 zone != b`

use super::feasible::{first_reject, Reject};
use crate::snapshot::{Machine, PendingTask};
use borg_shared::wire::Capacity;
use std::collections::BTreeMap;

/// `on_machine(i)`: how many of the task's job machine `i` holds now;
/// `free_ports(i)`: how many host ports it has left.
pub fn why_unplaceable(
    task: &PendingTask,
    machines: &[Machine],
    free: &[Capacity],
    on_machine: impl Fn(usize) -> u32,
    mut free_ports: impl FnMut(usize) -> usize,
) -> (String, &'static str) {
    if machines.is_empty() {
        return ("no machines are up".to_string(), "no_machines");
    }
    // Per cause: how many machines, and for a resource the one with the most of it free.
    let mut causes: BTreeMap<Reject, (usize, Option<usize>)> = BTreeMap::new();
    for (i, m) in machines.iter().enumerate() {
        let Some(reject) = first_reject(task, m, &free[i], on_machine(i), free_ports(i)) else {
            // A machine fits after all (the caller only asks when none did).
            continue;
        };
        let entry = causes.entry(reject.clone()).or_insert((0, None));
        entry.0 += 1;
        if let Reject::Insufficient(dim) = reject {
            let better = match entry.1 {
                None => true,
                Some(j) => {
                    let (a, b) = (dim.of(&free[i]), dim.of(&free[j]));
                    a > b || (a == b && m.name < machines[j].name)
                }
            };
            if better {
                entry.1 = Some(i);
            }
        }
    }
    let mut causes: Vec<(Reject, usize, Option<usize>)> =
        causes.into_iter().map(|(r, (n, i))| (r, n, i)).collect();
    // Most machines first; ties in check order (constraints, per machine, cpu, memory, disk).
    causes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let parts: Vec<String> = causes
        .iter()
        .map(|(reject, n, nearest)| {
            let what = describe(reject, task, machines, free, *nearest);
            format!("{} {what}", thousands(*n))
        })
        .collect();
    let cause = causes.first().map_or("constraint", |(r, _, _)| r.cause());
    let reason = format!(
        "0/{} machines fit: {}",
        thousands(machines.len()),
        parts.join(", ")
    );
    (reason, cause)
}

fn describe(
    reject: &Reject,
    task: &PendingTask,
    machines: &[Machine],
    free: &[Capacity],
    nearest: Option<usize>,
) -> String {
    match reject {
        Reject::Constraint(k) => task.constraints[*k].to_string(),
        Reject::PerMachine(max) => format!("already hold max_per_machine {max} of the job"),
        Reject::Ports => format!("fewer than {} free ports", task.ports),
        Reject::Insufficient(dim) => {
            let need = dim.of(&task.request);
            match nearest {
                Some(i) => format!(
                    "insufficient {} (nearest: {} has {} of {})",
                    dim.name(),
                    machines[i].name,
                    dim.show(dim.of(&free[i])),
                    dim.show(need)
                ),
                None => format!("insufficient {}", dim.name()),
            }
        }
    }
}

/// `1234567` → `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}

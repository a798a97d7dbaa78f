//! Free TCP ports for test cells, picked where nothing else will take them.
//!
//! Binding port 0 hands out a port from the kernel's ephemeral range, the same
//! range every outgoing connection (Postgres clients, HTTP clients of parallel
//! tests) draws its local port from: between the pick and the server's bind,
//! another process's `connect` may take it. Dev cells also give their borglets
//! task port ranges from 20000 up (`jobctl dev --port-range`). So ports for
//! listeners are picked at random from 10000–19999, below both, and checked by
//! binding each. A port is handed out once per process: two picks made before
//! either server binds (a cell's borglets, started one after another) could
//! otherwise both find the same port free.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// Every port this process has handed out.
static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

const LOW: u16 = 10_000;
const HIGH: u16 = 20_000;

/// One free port.
pub fn free_port() -> u16 {
    free_port_run(1)
}

/// The first of `n` consecutive free ports (all of `base..base + n` bound
/// once to check them, then released), none of them handed out before by
/// this process.
pub fn free_port_run(n: u16) -> u16 {
    assert!(n > 0 && n < HIGH - LOW, "a run of {n} ports");
    loop {
        let base = LOW + random_u16() % (HIGH - LOW - n);
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.range(base..base + n).next().is_some() {
            continue;
        }
        let held: Vec<_> = (base..base + n)
            .map_while(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == n as usize {
            given.extend(base..base + n);
            return base;
        }
    }
}

fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).expect("the OS random source");
    u16::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_free_and_below_the_ephemeral_and_task_ranges() {
        let base = free_port_run(11);
        assert!((LOW..HIGH - 11).contains(&base));
        for p in base..base + 11 {
            TcpListener::bind(("127.0.0.1", p)).expect("every port of the run binds");
        }
    }

    #[test]
    fn a_port_is_never_handed_out_twice_though_nothing_bound_it() {
        let mut seen = BTreeSet::new();
        for _ in 0..500 {
            let base = free_port_run(3);
            for p in base..base + 3 {
                assert!(seen.insert(p), "port {p} handed out twice");
            }
        }
    }
}

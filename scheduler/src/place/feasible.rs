//! The feasibility checks, in the order they are applied. Each says why it
//! rejects a machine, so the reason a task waits comes from the same code that
//! turned the machine down (see `reason.rs`).

use crate::snapshot::{Machine, PendingTask};
use borg_shared::spec::Constraint;
use borg_shared::wire::Capacity;
use borg_shared::{Bytes, MilliCpu};

/// Why one machine cannot take one task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// The first of the task's constraints the machine's labels fail, by index.
    Constraint(usize),
    /// The machine already runs `max_per_machine` of the job's tasks.
    PerMachine(u32),
    /// Not enough of this resource left; the first dimension short, in `Dim::ALL` order.
    Insufficient(Dim),
    /// Fewer host ports free in the machine's range than the task asks for.
    Ports,
}

impl Reject {
    /// A short stable name (a metrics label).
    pub fn cause(&self) -> &'static str {
        match self {
            Reject::Constraint(_) => "constraint",
            Reject::PerMachine(_) => "max_per_machine",
            Reject::Insufficient(d) => d.name(),
            Reject::Ports => "ports",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Cpu,
    Memory,
    Disk,
}

impl Dim {
    pub const ALL: [Dim; 3] = [Dim::Cpu, Dim::Memory, Dim::Disk];

    pub fn of(self, c: &Capacity) -> u64 {
        match self {
            Dim::Cpu => c.cpu.0,
            Dim::Memory => c.memory.0,
            Dim::Disk => c.disk.0,
        }
    }

    pub fn show(self, v: u64) -> String {
        match self {
            Dim::Cpu => MilliCpu(v).to_string(),
            Dim::Memory | Dim::Disk => Bytes(v).to_string(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dim::Cpu => "cpu",
            Dim::Memory => "memory",
            Dim::Disk => "disk",
        }
    }
}

/// Check 1: the job's constraints against the machine's labels.
pub fn constraints(constraints: &[Constraint], machine: &Machine) -> Option<Reject> {
    constraints
        .iter()
        .position(|c| !c.matches(&machine.labels))
        .map(Reject::Constraint)
}

/// Check 2: `spread.max_per_machine`, given how many of the job's live tasks the
/// machine holds (already there plus placed earlier in this batch).
pub fn per_machine(task: &PendingTask, on_machine: u32) -> Option<Reject> {
    match task.max_per_machine() {
        Some(max) if on_machine >= max => Some(Reject::PerMachine(max)),
        _ => None,
    }
}

/// Check 3: every resource dimension fits in what is free.
pub fn resources(request: &Capacity, free: &Capacity) -> Option<Reject> {
    Dim::ALL
        .into_iter()
        .find(|d| d.of(request) > d.of(free))
        .map(Reject::Insufficient)
}

/// Check 4: enough host ports left in the machine's range.
pub fn ports(task: &PendingTask, free_ports: usize) -> Option<Reject> {
    (usize::from(task.ports) > free_ports).then_some(Reject::Ports)
}

/// All checks, first rejection wins.
pub fn first_reject(
    task: &PendingTask,
    machine: &Machine,
    free: &Capacity,
    on_machine: u32,
    free_ports: usize,
) -> Option<Reject> {
    constraints(&task.constraints, machine)
        .or_else(|| per_machine(task, on_machine))
        .or_else(|| resources(&task.request, free))
        .or_else(|| ports(task, free_ports))
}

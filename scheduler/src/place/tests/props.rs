//! Placement tests: properties.

use super::*;

const ZONES: [&str; 3] = ["a", "b", "c"];

fn arb_machine(i: usize) -> impl Strategy<Value = Machine> {
    (
        0u64..=4000,
        0u64..=4096,
        0u64..=2048,
        0u64..=4000,
        0u64..=4096,
        proptest::option::of(0usize..3),
        (0u16..6, proptest::collection::vec(9000u16..9006, 0..3)),
        // A third of the machines empty: hybrid scoring tells them apart.
        proptest::bool::weighted(0.33),
    )
        .prop_map(
            move |(cpu, mem_mi, disk_mi, ucpu, umem_mi, zone, (nports, used), empty)| {
                let (ucpu, umem_mi) = if empty { (0, 0) } else { (ucpu, umem_mi) };
                let mut m = MachineBuilder::new(i as u128, &format!("m{i:02}"))
                    .cap(cpu, mem_mi * MI)
                    .disk(disk_mi * MI)
                    .used(ucpu.min(cpu), umem_mi.min(mem_mi) * MI)
                    .ports(9000, 9000 + nports, &used);
                if let Some(z) = zone {
                    m = m.label("zone", ZONES[z]);
                }
                m.build()
            },
        )
}

fn arb_constraints() -> impl Strategy<Value = Vec<Constraint>> {
    let one = (0usize..3, 0usize..5).prop_map(|(z, op)| {
        let (op, value) = match op {
            0 => (ConstraintOp::Eq, Some(ZONES[z].to_string())),
            1 => (ConstraintOp::Ne, Some(ZONES[z].to_string())),
            2 => (
                ConstraintOp::In,
                Some(format!("{},{}", ZONES[z], ZONES[(z + 1) % 3])),
            ),
            3 => (ConstraintOp::NotIn, Some(ZONES[z].to_string())),
            _ => (ConstraintOp::Exists, None),
        };
        Constraint {
            label: "zone".to_string(),
            op,
            value,
            values: vec![],
        }
    });
    proptest::collection::vec(one, 0..3)
}

#[derive(Debug, Clone)]
struct Case {
    machines: Vec<Machine>,
    /// In the (shuffled) order handed to place().
    tasks: Vec<PendingTask>,
}

fn arb_case() -> impl Strategy<Value = Case> {
    let machines = (0usize..8).prop_flat_map(|n| (0..n).map(arb_machine).collect::<Vec<_>>());
    // A handful of jobs, each with its constraints; tasks pick a job.
    let spread = proptest::option::of((proptest::bool::ANY, proptest::option::of(1u32..3)));
    let jobs = proptest::collection::vec(
        (0i32..4, arb_constraints(), spread, proptest::bool::ANY),
        1..5,
    );
    (machines, jobs)
        .prop_flat_map(|(machines, jobs)| {
            let njobs = jobs.len();
            let task = (
                0..njobs,
                0i64..5,
                0u64..=1500,
                0u64..=1500,
                0u64..=256,
                0u16..3,
                proptest::option::of(0usize..8),
            );
            (
                Just(machines),
                Just(jobs),
                proptest::collection::vec(task, 0..40),
            )
        })
        .prop_flat_map(|(machines, jobs, raw)| {
            type Job = (i32, Arc<[Constraint]>, Option<Arc<Spread>>, bool);
            let jobs: Vec<Job> = jobs
                .into_iter()
                .map(|(p, c, spread, service)| {
                    let spread = spread.map(|(by_zone, max_per_machine)| {
                        Arc::new(Spread {
                            label: by_zone.then(|| "zone".to_string()),
                            max_per_machine,
                        })
                    });
                    (p, Arc::from(c), spread, service)
                })
                .collect();
            let tasks: Vec<PendingTask> = raw
                .into_iter()
                .enumerate()
                .map(
                    |(n, (job, age, cpu, mem_mi, disk_mi, ports, failed_on))| PendingTask {
                        id: TaskId(uuid(n as u128 + 1)),
                        job_id: JobId(uuid(900 + job as u128)),
                        priority: jobs[job].0,
                        created_at: t0() - chrono::Duration::seconds(age),
                        request: cap(cpu, mem_mi * MI, disk_mi * MI),
                        constraints: jobs[job].1.clone(),
                        spread: jobs[job].2.clone(),
                        ports,
                        owner: Arc::from("default"),
                        name: format!("t/{n}"),
                        failed_on: failed_on.and_then(|i| machines.get(i)).map(|m| m.id),
                        service: jobs[job].3,
                    },
                )
                .collect();
            (Just(machines), Just(tasks).prop_shuffle())
        })
        .prop_map(|(machines, tasks)| Case { machines, tasks })
}

fn matches_all(t: &PendingTask, m: &Machine) -> bool {
    t.constraints.iter().all(|c| c.matches(&m.labels))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn placement_invariants(case in arb_case(), sample in 0usize..3, of in 1i32..4) {
        // Sampling (relaxed randomization) on 1 or 2 feasible machines must
        // keep every invariant; 0 scores them all. So must a share of the
        // machines preferred (one of `of` schedulers).
        let mut snapshot = snap(case.machines.clone());
        snapshot.sample = sample;
        snapshot.home = crate::slice::Slice { rank: 0, of };
        let home = |i: usize| snapshot.home.is_home(case.machines[i].id);
        let decisions = place(&snapshot, &case.tasks);
        let by_id: HashMap<TaskId, &PendingTask> = case.tasks.iter().map(|t| (t.id, t)).collect();
        let index: HashMap<MachineId, usize> =
            case.machines.iter().enumerate().map(|(i, m)| (m.id, i)).collect();

        // Every task decided exactly once.
        let mut decided = HashSet::new();
        for d in &decisions {
            prop_assert!(decided.insert(d.task()), "task decided twice: {:?}", d);
        }
        prop_assert_eq!(decided.len(), case.tasks.len());

        let mut placed_on: HashMap<TaskId, usize> = HashMap::new();
        let mut ports_held: HashSet<(usize, u16)> = HashSet::new();
        let mut used: Vec<Capacity> = case.machines.iter().map(|m| m.used).collect();
        for d in &decisions {
            match d {
                Decision::Place { task, machine, ports } => {
                    let t = by_id[task];
                    let i = index[machine];
                    prop_assert!(matches_all(t, &case.machines[i]), "constraints broken: {:?}", d);
                    // Ports: as many as asked, in the range, never one held already.
                    let m = &case.machines[i];
                    prop_assert_eq!(ports.len(), usize::from(t.ports));
                    for p in ports {
                        prop_assert!((m.ports.first..=m.ports.last).contains(p), "port {} outside {:?}", p, m.ports);
                        prop_assert!(!m.used_ports.contains(p), "port {} already in use on {}", p, m.name);
                        prop_assert!(ports_held.insert((i, *p)), "port {} given twice on {}", p, m.name);
                    }
                    used[i] = used[i].saturating_add(&t.request);
                    placed_on.insert(*task, i);
                }
                Decision::Unplaceable { reason, .. } => {
                    prop_assert!(!reason.trim().is_empty());
                }
                Decision::Preempt { .. } => {
                    prop_assert!(false, "nothing to preempt in these cases: {:?}", d);
                }
            }
        }
        // Never over-commit: what was already there plus the batch fits the capacity
        // (machines generated with used <= capacity).
        for (i, m) in case.machines.iter().enumerate() {
            prop_assert!(fits(&used[i], &m.capacity), "{} over-committed: {:?} > {:?}", m.name, used[i], m.capacity);
        }

        // Priority order: an unplaceable task did not fit even with only the tasks
        // ahead of it in the queue placed; lower ones never took its room.
        let mut queue: Vec<&PendingTask> = case.tasks.iter().collect();
        queue.sort_by(|a, b| a.queue_cmp(b));
        // Replayed with each job's tasks per machine: max_per_machine is never
        // exceeded, and a spread task went to a group holding the fewest of its job
        // among the machines it could go to.
        let mut free: Vec<Capacity> = case.machines.iter().map(Machine::free).collect();
        let mut on: HashMap<(JobId, usize), u32> = HashMap::new();
        let mut ports_free: Vec<usize> = case
            .machines
            .iter()
            .map(|m| {
                let held: HashSet<u16> = m
                    .used_ports
                    .iter()
                    .copied()
                    .filter(|p| (m.ports.first..=m.ports.last).contains(p))
                    .collect();
                m.ports.len() - held.len()
            })
            .collect();
        let zone = |i: usize| case.machines[i].labels.get("zone").cloned();
        let group = |on: &HashMap<(JobId, usize), u32>, job: JobId, i: usize| -> u32 {
            (0..case.machines.len())
                .filter(|&k| zone(k) == zone(i))
                .map(|k| on.get(&(job, k)).copied().unwrap_or(0))
                .sum()
        };
        for t in queue {
            let max = t.max_per_machine().unwrap_or(u32::MAX);
            let feasible = |i: usize, on: &HashMap<(JobId, usize), u32>, free: &[Capacity], ports_free: &[usize]| {
                matches_all(t, &case.machines[i])
                    && fits(&t.request, &free[i])
                    && on.get(&(t.job_id, i)).copied().unwrap_or(0) < max
                    && ports_free[i] >= usize::from(t.ports)
            };
            match placed_on.get(&t.id) {
                Some(&i) => {
                    prop_assert!(feasible(i, &on, &free, &ports_free), "task {} placed where it does not fit", t.id);
                    // Home machines first: placed away from home only when no
                    // home machine could take it (spread groups come first).
                    if t.spread_label().is_none() && !home(i) {
                        for k in (0..case.machines.len()).filter(|&k| home(k)) {
                            prop_assert!(
                                !feasible(k, &on, &free, &ports_free),
                                "task {} left home although {} could take it", t.id, case.machines[k].name
                            );
                        }
                    }
                    // Back on the machine its last run failed on only when no
                    // other it was looking at could take it (every feasible
                    // machine scored: sample 0).
                    if sample == 0 && t.spread_label().is_none() && t.failed_on == Some(case.machines[i].id) {
                        for k in (0..case.machines.len()).filter(|&k| k != i && home(k) == home(i)) {
                            prop_assert!(
                                !feasible(k, &on, &free, &ports_free),
                                "task {} put back where it failed although {} could take it", t.id, case.machines[k].name
                            );
                        }
                    }
                    // A service's task went to a machine holding the fewest of
                    // its job's tasks among those it was looking at (all of its
                    // part: sample 0), the one its last run failed on aside.
                    if sample == 0 && t.service && t.spread_label().is_none() {
                        let mine = on.get(&(t.job_id, i)).copied().unwrap_or(0);
                        let failed = |k: usize| t.failed_on == Some(case.machines[k].id);
                        for k in (0..case.machines.len()).filter(|&k| home(k) == home(i) && failed(k) <= failed(i)) {
                            prop_assert!(
                                !(feasible(k, &on, &free, &ports_free) && on.get(&(t.job_id, k)).copied().unwrap_or(0) < mine),
                                "service task {} stacked on {} although {} holds fewer of its job", t.id, case.machines[i].name, case.machines[k].name
                            );
                        }
                    }
                    if t.spread_label().is_some() {
                        let mine = group(&on, t.job_id, i);
                        for k in 0..case.machines.len() {
                            prop_assert!(
                                !(feasible(k, &on, &free, &ports_free) && group(&on, t.job_id, k) < mine),
                                "spread task {} went to a fuller group than {}'s", t.id, case.machines[k].name
                            );
                        }
                    }
                    free[i] = sub(&free[i], &t.request);
                    ports_free[i] -= usize::from(t.ports);
                    *on.entry((t.job_id, i)).or_insert(0) += 1;
                }
                None => {
                    for (i, m) in case.machines.iter().enumerate() {
                        prop_assert!(
                            !feasible(i, &on, &free, &ports_free),
                            "task {} left unplaced but fits on {} given only higher-priority placements",
                            t.id, m.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn input_order_does_not_matter(case in arb_case()) {
        let snapshot = snap(case.machines.clone());
        let a = place(&snapshot, &case.tasks);
        let mut reversed = case.tasks.clone();
        reversed.reverse();
        let b = place(&snapshot, &reversed);
        prop_assert_eq!(a, b);
    }
}

fn arb_preemption_case() -> impl Strategy<Value = (Snapshot, Vec<PendingTask>)> {
    let machine = (
        500u64..=4000,
        proptest::collection::vec((0i32..400, 100u64..=1500), 0..4),
        0u64..=1500,
    );
    (
        proptest::collection::vec(machine, 1..5),
        proptest::collection::vec((0i32..400, 100u64..=2500), 1..12),
    )
        .prop_map(|(machines, tasks)| {
            let mut snapshot = snap(vec![]);
            let mut n = 0u128;
            for (i, (cpu, victims, stopping)) in machines.into_iter().enumerate() {
                let used: u64 = victims.iter().map(|(_, c)| c).sum::<u64>() + stopping;
                let m = MachineBuilder::new(i as u128, &format!("m{i}"))
                    .cap(cpu.max(used), 8 * GI)
                    .used(used, 0)
                    .build();
                let list = victims
                    .into_iter()
                    .map(|(p, c)| {
                        n += 1;
                        victim(n, p, c)
                    })
                    .collect();
                snapshot.victims.insert(m.id, list);
                if stopping > 0 {
                    snapshot.stopping.insert(m.id, cap(stopping, 0, 0));
                }
                snapshot.machines.push(m);
            }
            let tasks = tasks
                .into_iter()
                .enumerate()
                .map(|(k, (p, c))| TaskBuilder::new(k as u128 + 1).priority(p).cpu(c).build())
                .collect();
            (snapshot, tasks)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Only production preempts, only lower bands are preempted, a victim is
    /// taken once, the victims make enough room, and placements still never
    /// over-commit (victims keep their capacity until they have stopped).
    #[test]
    fn preemption_invariants((snapshot, tasks) in arb_preemption_case()) {
        let decisions = place(&snapshot, &tasks);
        let by_id: HashMap<TaskId, &PendingTask> = tasks.iter().map(|t| (t.id, t)).collect();
        let victims: HashMap<borg_shared::AttemptId, (MachineId, &Victim)> = snapshot
            .victims
            .iter()
            .flat_map(|(m, l)| l.iter().map(move |v| (v.attempt, (*m, v))))
            .collect();
        let mut taken = HashSet::new();
        let mut placed: HashMap<MachineId, u64> = HashMap::new();
        // Per machine: what preempting tasks will take, and the room their victims make.
        let mut promised: HashMap<MachineId, u64> = HashMap::new();
        let mut made: HashMap<MachineId, u64> = HashMap::new();
        for d in &decisions {
            match d {
                Decision::Preempt { task, machine, victims: chosen, .. } => {
                    let t = by_id[task];
                    prop_assert!(t.priority >= 200, "a batch task preempted: {:?}", d);
                    prop_assert!(!chosen.is_empty());
                    for a in chosen {
                        let (on, v) = victims[a];
                        prop_assert_eq!(on, *machine);
                        prop_assert!(v.priority < 200, "production preempted: {:?}", v);
                        prop_assert!(taken.insert(*a), "victim taken twice: {:?}", a);
                        *made.entry(*machine).or_insert(0) += v.request.cpu.0;
                    }
                    *promised.entry(*machine).or_insert(0) += t.request.cpu.0;
                }
                Decision::Place { task, machine, .. } => {
                    *placed.entry(*machine).or_insert(0) += by_id[task].request.cpu.0;
                }
                Decision::Unplaceable { .. } => {}
            }
        }
        for m in &snapshot.machines {
            let placed = placed.get(&m.id).copied().unwrap_or(0);
            prop_assert!(placed <= m.free().cpu.0, "{} over-committed", m.name);
            // Enough room made for every preempting task, beside what was placed now.
            let room = m.free().cpu.0
                + snapshot.stopping.get(&m.id).map_or(0, |c| c.cpu.0)
                + made.get(&m.id).copied().unwrap_or(0);
            prop_assert!(
                placed + promised.get(&m.id).copied().unwrap_or(0) <= room,
                "not enough room made on {}", m.name
            );
        }
    }
}

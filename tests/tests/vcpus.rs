//! A domain's vCPUs in QEMU: each runs on the physical CPU the hypervisor
//! placed it on (pinned, or near its vnode's memory), the guest brings its
//! secondary vCPUs up with VCPU_OP and runs its SMP suite on them, vCPUs
//! that share a CPU take turns, and a domain ends cleanly with every vCPU
//! stopped.

use pv_abi::exit::ExitCode;
use tests::ktap::{self, Ktap};
use tests::{boot_domains, domain_config, domain_lines, domain_report, DomainReport};
use tests::{context, default_machine};
use xtask::qemu::{Outcome, RunResult};

/// `numavisor: domain N: vcpu V (vnode K) runs on cpu C (node M)[, pinned]`
/// as (V, K, C, M, pinned), in vCPU order.
fn placements(run: &RunResult, id: u32) -> Vec<(u32, u32, u32, u32, bool)> {
    let prefix = format!("numavisor: domain {id}: vcpu ");
    run.console
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (v, rest) = rest.split_once(" (vnode ")?;
            let (k, rest) = rest.split_once(") runs on cpu ")?;
            let (c, rest) = rest.split_once(" (node ")?;
            let (m, rest) = rest.split_once(')')?;
            Some((
                v.parse().ok()?,
                k.parse().ok()?,
                c.parse().ok()?,
                m.parse().ok()?,
                rest == ", pinned",
            ))
        })
        .collect()
}

/// vCPUs the hypervisor reported as brought up, as (vCPU, CPU).
fn ups(run: &RunResult, id: u32) -> Vec<(u32, u32)> {
    let prefix = format!("numavisor: domain {id}: vcpu ");
    run.console
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (v, rest) = rest.split_once(" up on cpu ")?;
            let c = rest.split(' ').next()?;
            Some((v.parse().ok()?, c.parse().ok()?))
        })
        .collect()
}

/// Domain `id` shut down with status 0 after a passing KTAP run in which
/// its `smp` suite ran (not skipped), with all `nr` vCPUs online, and every
/// secondary vCPU went down before the end.
fn assert_smp_domain_passed(run: &RunResult, id: u32, nr: u32) -> Ktap {
    assert_eq!(
        domain_report(&run.console, id),
        Some(DomainReport::Shutdown { status: 0 }),
        "domain {id}; {}",
        context(run)
    );
    let lines = domain_lines(&run.console, id);
    let k = ktap::parse(&lines);
    if let Err(e) = k.verdict() {
        panic!("domain {id} KTAP: {e}; {}", context(run));
    }
    let smp = k
        .suite("smp")
        .unwrap_or_else(|| panic!("no smp suite; {}", context(run)));
    assert!(!smp.skip, "smp suite skipped; {}", context(run));
    assert!(
        smp.subtests.iter().all(|t| t.ok && !t.skip),
        "every smp test ran and passed; {}",
        context(run)
    );
    let summary = format!("guest: smp: {nr} of {nr} vcpus online");
    assert!(
        lines.contains(&summary),
        "missing '{summary}'; {}",
        context(run)
    );
    let mut up: Vec<u32> = ups(run, id).iter().map(|&(v, _)| v).collect();
    up.sort_unstable();
    up.dedup();
    assert_eq!(up, (0..nr).collect::<Vec<_>>(), "{}", context(run));
    for v in 1..nr {
        let down = format!("numavisor: domain {id}: vcpu {v} down");
        assert!(
            run.console.lines().any(|l| l == down),
            "missing '{down}'; {}",
            context(run)
        );
    }
    let teardown = format!("numavisor: domain {id}: teardown:");
    assert!(
        run.console
            .lines()
            .any(|l| l.starts_with(&teardown) && l.contains("none left owned")),
        "{}",
        context(run)
    );
    k
}

#[test]
fn the_mirror_domain_runs_every_vcpu_on_its_own_cpu() {
    let run = boot_domains(&default_machine(), "", &[]);
    assert!(run.outcome.success(), "{}", context(&run));
    let placed = placements(&run, 1);
    assert_eq!(placed.len(), 6, "{}", context(&run));
    for &(v, k, c, m, pinned) in &placed {
        // Mirror: vnode k is machine node k, vCPU v is CPU v.
        assert_eq!((c, m, pinned), (v, k, true), "vcpu {v}; {}", context(&run));
    }
    let mut up = ups(&run, 1);
    up.sort_unstable();
    // The smp suite takes one vCPU down and brings it up again.
    up.dedup();
    assert_eq!(
        up,
        (0..6).map(|v| (v, v)).collect::<Vec<_>>(),
        "each vCPU came up on the CPU it was placed on; {}",
        context(&run)
    );
    // Each vCPU's state (VMCB) on its CPU's node; node 2 has no memory, so
    // CPUs 4-5 get the nearest node with memory (1 and 3 tie at 20: 1).
    let state = run
        .console
        .lines()
        .find_map(|l| l.strip_prefix("numavisor: domain 1: vcpu state: 8 KiB each, on node(s) "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or("");
    assert_eq!(state, "0,0,1,1,1,1", "{}", context(&run));
    assert_smp_domain_passed(&run, 1, 6);
}

#[test]
fn unpinned_vcpus_follow_their_vnode_and_pinned_ones_share_a_cpu() {
    let configs = [
        domain_config("smp-unpinned.cfg"),
        domain_config("smp-shared.cfg"),
    ];
    let run = boot_domains(&default_machine(), "", &configs);
    assert!(run.outcome.success(), "{}", context(&run));
    // smp-unpinned: vnode 0 on node 0 (CPUs 0-1), vnode 1 memoryless on
    // node 2 (CPUs 4-5): spread before sharing.
    let cpus: Vec<(u32, u32, bool)> = placements(&run, 1)
        .iter()
        .map(|&(_, _, c, m, p)| (c, m, p))
        .collect();
    assert_eq!(
        cpus,
        vec![
            (0, 0, false),
            (1, 0, false),
            (0, 0, false),
            (4, 2, false),
            (5, 2, false)
        ],
        "{}",
        context(&run)
    );
    assert_smp_domain_passed(&run, 1, 5);
    // smp-shared: four vCPUs pinned to CPU 2 take turns.
    let cpus: Vec<(u32, bool)> = placements(&run, 2)
        .iter()
        .map(|&(_, _, c, _, p)| (c, p))
        .collect();
    assert_eq!(cpus, vec![(2, true); 4], "{}", context(&run));
    assert_smp_domain_passed(&run, 2, 4);
}

#[test]
fn with_smp_off_vcpus_take_turns_on_the_boot_cpu_and_pins_elsewhere_are_refused() {
    let spec = default_machine();
    let image = tests::guest_image("");
    let run =
        tests::boot_modules_cmdline(&spec, "smp=off", image, &[domain_config("smp-shared.cfg")]);
    let refused = run
        .console
        .lines()
        .find(|l| l.starts_with("numavisor: domain 1: refused: "))
        .unwrap_or("");
    assert!(
        refused.contains("vcpu 0 is pinned to CPU 2, which is not running"),
        "{}",
        context(&run)
    );
    // The mirror domain alone: placed, not pinned, all on CPU 0.
    let run = tests::boot_modules_cmdline(&spec, "smp=off", tests::guest_image(""), &[]);
    assert!(run.outcome.success(), "{}", context(&run));
    assert!(
        run.console.contains(
            "numavisor: mirror domain: 1 of 6 CPUs run vCPUs: its vCPUs are placed near their vnodes, not pinned"
        ),
        "{}",
        context(&run)
    );
    let placed = placements(&run, 1);
    assert_eq!(placed.len(), 6, "{}", context(&run));
    assert!(
        placed.iter().all(|&(_, _, c, _, p)| c == 0 && !p),
        "{}",
        context(&run)
    );
    assert_smp_domain_passed(&run, 1, 6);
}

#[test]
fn nosmp_keeps_the_guest_on_vcpu_0() {
    let run = boot_domains(&default_machine(), "nosmp", &[]);
    assert!(run.outcome.success(), "{}", context(&run));
    assert_eq!(ups(&run, 1), vec![(0, 0)], "{}", context(&run));
    let k = ktap::parse(&domain_lines(&run.console, 1));
    let smp = k
        .suite("smp")
        .unwrap_or_else(|| panic!("no smp suite; {}", context(&run)));
    assert!(smp.skip, "{}", context(&run));
}

#[test]
fn a_fault_on_a_secondary_vcpu_ends_the_whole_domain_and_the_next_runs() {
    let configs = [
        domain_config("fault-secondary.cfg"),
        domain_config("two-vnodes.cfg"),
    ];
    let run = boot_domains(&default_machine(), "", &configs);
    match domain_report(&run.console, 1) {
        Some(DomainReport::Killed { reason, gpa, .. }) => {
            assert!(reason.contains("nested page fault"), "{reason}");
            assert!(gpa.is_some(), "{}", context(&run));
        }
        other => panic!("{other:?}; {}", context(&run)),
    }
    assert!(
        run.console
            .lines()
            .any(|l| l == "numavisor: domain 1: vcpu 1 ended the domain"),
        "{}",
        context(&run)
    );
    assert!(
        domain_lines(&run.console, 1)
            .iter()
            .any(|l| l == "guest: fail=npf: on vcpu 1"),
        "{}",
        context(&run)
    );
    let teardown = "numavisor: domain 1: teardown:";
    assert!(
        run.console
            .lines()
            .any(|l| l.starts_with(teardown) && l.contains("none left owned")),
        "{}",
        context(&run)
    );
    assert_smp_domain_passed(&run, 2, 3);
    assert_eq!(
        run.outcome,
        Outcome::Exited(ExitCode::Failure),
        "{}",
        context(&run)
    );
}

//! Several domains sharing the machine at once (issue 10): they run side by
//! side, are placed by NUMA (automatic placement when they name no node),
//! share CPUs by weight, end alone (a fault included) with every page they
//! owned back, and the run ends with the heap as it was before the first.

use pv_abi::exit::ExitCode;
use tests::{
    assert_domain_passed, boot_domains, boot_modules_cmdline, context, default_machine,
    domain_config, domain_report, guest_image, write_config, DomainReport,
};
use xtask::machine::presets;
use xtask::qemu::{Outcome, RunResult};

/// Domain `id` ended with every page it owned back, by the frame table's
/// owner field.
fn assert_torn_down(run: &RunResult, id: u32) {
    let prefix = format!("numavisor: domain {id}: teardown: ");
    let line = run
        .console
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no teardown of domain {id}; {}", context(run)));
    assert!(
        line.ends_with("pages returned, none left owned"),
        "{line}; {}",
        context(run)
    );
}

/// The heap at the end of the run equals the probe before the first domain.
fn assert_heap_restored(run: &RunResult) {
    assert!(
        run.console
            .lines()
            .any(|l| l == "numavisor: heap probe matches the one before the first domain"),
        "{}",
        context(run)
    );
}

/// Positions (console line numbers) of domain `id`'s guest lines.
fn guest_line_numbers(run: &RunResult, id: u32) -> Vec<usize> {
    let prefix = format!("(d{id}) ");
    run.console
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with(&prefix))
        .map(|(i, _)| i)
        .collect()
}

/// Proof that two domains ran at the same time: each printed a line while
/// the other was between its first and last line. Run one after the other,
/// one domain's lines would all come before the other's.
fn assert_interleaved(run: &RunResult, a: u32, b: u32) {
    let (la, lb) = (guest_line_numbers(run, a), guest_line_numbers(run, b));
    let (Some(&a0), Some(&a1), Some(&b0), Some(&b1)) =
        (la.first(), la.last(), lb.first(), lb.last())
    else {
        panic!("domains {a} and {b} both print; {}", context(run));
    };
    assert!(
        a0 < b1 && b0 < a1,
        "domains {a} (lines {a0}..{a1}) and {b} (lines {b0}..{b1}) did not overlap; {}",
        context(run)
    );
}

/// The nodes of `numavisor: domain N (name): placed on node(s) A,B: ...`.
fn placed_nodes(run: &RunResult, id: u32) -> Option<Vec<u32>> {
    let prefix = format!("numavisor: domain {id} (");
    run.console.lines().find_map(|l| {
        let rest = l.strip_prefix(&prefix)?;
        let (_, rest) = rest.split_once("): placed on node(s) ")?;
        let (nodes, _) = rest.split_once(':')?;
        nodes.split(',').map(|n| n.trim().parse().ok()).collect()
    })
}

/// `numavisor: domain N: vcpu V ran T ms on cpu C (S ms of it sharing the cpu)`
/// as (T, S).
fn ran_ms(run: &RunResult, id: u32, vcpu: u32) -> (u64, u64) {
    let prefix = format!("numavisor: domain {id}: vcpu {vcpu} ran ");
    run.console
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (total, rest) = rest.split_once(" ms on cpu ")?;
            let (_, rest) = rest.split_once(" (")?;
            let (shared, _) = rest.split_once(" ms of it sharing")?;
            Some((total.parse().ok()?, shared.parse().ok()?))
        })
        .unwrap_or_else(|| panic!("no run time of domain {id} vcpu {vcpu}; {}", context(run)))
}

#[test]
fn the_default_run_places_a_domain_beside_the_mirror() {
    let spec = default_machine();
    let configs: Vec<String> = xtask::DEFAULT_RUN_DOMAINS
        .iter()
        .map(|d| {
            xtask::images::workspace_root()
                .join(d)
                .display()
                .to_string()
        })
        .collect();
    let run = boot_modules_cmdline(
        &spec,
        xtask::DEFAULT_RUN_CMDLINE,
        guest_image(spec.guest_cmdline),
        &configs,
    );
    assert!(run.outcome.success(), "{}", context(&run));
    assert_domain_passed(&run, 1);
    assert_domain_passed(&run, 2);
    assert_interleaved(&run, 1, 2);
    let nodes = placed_nodes(&run, 2).unwrap_or_else(|| panic!("{}", context(&run)));
    assert_eq!(nodes.len(), 1, "64 MiB fits in one node; {}", context(&run));
    // The views, in Xen's formats.
    for header in [
        "Name                                        ID   Mem VCPUs\tState\tTime(s)",
        "Name                                ID  VCPU   CPU State   Time(s) Affinity",
        "Memory location of each domain:",
    ] {
        assert!(
            run.console.lines().any(|l| l == header),
            "missing '{header}'; {}",
            context(&run)
        );
    }
    assert!(
        run.console
            .lines()
            .any(|l| l.starts_with("auto ") && l.contains("     2 ")),
        "xl list shows the auto domain; {}",
        context(&run)
    );
    assert_torn_down(&run, 1);
    assert_torn_down(&run, 2);
    assert_heap_restored(&run);
}

#[test]
fn weights_split_a_shared_cpu_two_to_one() {
    let run = boot_domains(
        &default_machine(),
        "",
        &[
            domain_config("weight-heavy.cfg"),
            domain_config("weight-light.cfg"),
        ],
    );
    assert!(run.outcome.success(), "{}", context(&run));
    assert_domain_passed(&run, 1);
    assert_domain_passed(&run, 2);
    let (_, heavy) = ran_ms(&run, 1, 0);
    let (_, light) = ran_ms(&run, 2, 0);
    assert!(
        light > 200,
        "they shared the CPU for a while ({heavy} ms and {light} ms); {}",
        context(&run)
    );
    let ratio = heavy as f64 / light as f64;
    assert!(
        (1.8..=2.2).contains(&ratio),
        "weight 512 against 256 while sharing: {heavy} ms against {light} ms ({ratio:.2}); {}",
        context(&run)
    );
    assert_torn_down(&run, 1);
    assert_torn_down(&run, 2);
    assert_heap_restored(&run);
}

#[test]
fn eight_auto_placed_domains_on_ring8_take_a_node_each() {
    let ring8 = presets()
        .into_iter()
        .find(|p| p.name == "ring8")
        .expect("the ring8 preset");
    let configs: Vec<String> = (0..8)
        .map(|i| {
            write_config(
                &format!("ring8-auto-{i}"),
                &format!("name = \"auto-{i}\"\nmemory = 48\nvcpus = 1\ncmdline = \"ktest=boot\"\n"),
            )
        })
        .collect();
    let run = boot_domains(&ring8, "", &configs);
    assert!(run.outcome.success(), "{}", context(&run));
    let mut nodes = Vec::new();
    for id in 1..=8 {
        assert_domain_passed(&run, id);
        assert_torn_down(&run, id);
        let placed = placed_nodes(&run, id).unwrap_or_else(|| panic!("{}", context(&run)));
        assert_eq!(placed.len(), 1, "domain {id}; {}", context(&run));
        nodes.push(placed[0]);
    }
    nodes.sort_unstable();
    assert_eq!(nodes, (0..8).collect::<Vec<u32>>(), "{}", context(&run));
    assert_heap_restored(&run);
}

#[test]
fn a_domain_that_faults_ends_alone_while_another_runs() {
    let busy = write_config(
        "busy-node1",
        "name = \"busy\"\nvnuma = [ \"pnode=1,size=32,vcpus=0,vdistances=10\" ]\ncmdline = \"burn=60\"\n",
    );
    let run = boot_domains(
        &default_machine(),
        "",
        &[busy, domain_config("fault-npf.cfg")],
    );
    assert_eq!(
        run.outcome,
        Outcome::Exited(ExitCode::Failure),
        "the worst status is the faulting domain's; {}",
        context(&run)
    );
    assert!(
        matches!(
            domain_report(&run.console, 2),
            Some(DomainReport::Killed { .. })
        ),
        "{}",
        context(&run)
    );
    assert_domain_passed(&run, 1);
    // The fault came and went while the busy domain ran.
    let killed = run
        .console
        .lines()
        .position(|l| l.starts_with("numavisor: domain 2 (fault-npf): killed"))
        .unwrap_or(0);
    let busy_last = guest_line_numbers(&run, 1).last().copied().unwrap_or(0);
    assert!(killed < busy_last, "{}", context(&run));
    assert_torn_down(&run, 1);
    assert_torn_down(&run, 2);
    assert_heap_restored(&run);
}

#[test]
fn domains_beyond_the_machine_are_refused_the_others_run() {
    // The default machine has about 1.4 GiB free on nodes 0, 1 and 3: two
    // domains of 600 MiB fit (each spanning two nodes), the third does not.
    let configs: Vec<String> = (0..3)
        .map(|i| {
            write_config(
                &format!("big-{i}"),
                &format!("name = \"big-{i}\"\nmemory = 600\nvcpus = 1\ncmdline = \"ktest=boot\"\n"),
            )
        })
        .collect();
    let run = boot_domains(&default_machine(), "", &configs);
    assert_eq!(
        run.outcome,
        Outcome::Exited(ExitCode::Failure),
        "{}",
        context(&run)
    );
    assert_domain_passed(&run, 1);
    assert_domain_passed(&run, 2);
    match domain_report(&run.console, 3) {
        Some(DomainReport::Refused { reason }) => assert!(
            reason.contains("MiB") || reason.contains("pages"),
            "the refusal says what is short: {reason}"
        ),
        other => panic!("domain 3: {other:?}; {}", context(&run)),
    }
    for id in [1, 2] {
        let nodes = placed_nodes(&run, id).unwrap_or_else(|| panic!("{}", context(&run)));
        assert_eq!(
            nodes.len(),
            2,
            "domain {id} spans two nodes; {}",
            context(&run)
        );
        assert_torn_down(&run, id);
    }
    assert_heap_restored(&run);
}

#[test]
fn a_spinning_domain_is_ended_by_its_time_limit() {
    // fault-spin.cfg spins with interrupts off on CPU 2 and never exits on
    // its own; time_limit = 5 ends it, and the domain beside it passes.
    let run = boot_domains(
        &default_machine(),
        "",
        &[
            domain_config("fault-spin.cfg"),
            domain_config("two-vnodes.cfg"),
        ],
    );
    assert_eq!(
        run.outcome,
        Outcome::Exited(ExitCode::Failure),
        "{}",
        context(&run)
    );
    match domain_report(&run.console, 1) {
        Some(DomainReport::Killed { reason, .. }) => {
            assert_eq!(reason, "time limit of 5 s reached", "{}", context(&run))
        }
        other => panic!("domain 1: {other:?}; {}", context(&run)),
    }
    let (ran, _) = ran_ms(&run, 1, 0);
    assert!(
        (4_000..=6_000).contains(&ran),
        "it had its CPU until the limit: {ran} ms; {}",
        context(&run)
    );
    assert_domain_passed(&run, 2);
    assert_torn_down(&run, 1);
    assert_torn_down(&run, 2);
    assert_heap_restored(&run);
}

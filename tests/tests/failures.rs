//! How runs end when something goes wrong: bad firmware tables give a
//! warning and a safe fallback; a hypervisor panic, a CPU exception and a
//! hang each end QEMU with their own, documented outcome.

use std::time::Duration;
use tests::context;

use pv_abi::exit::ExitCode;
use tests::acpi::{self, Table};
use tests::{boot_with, boot_with_timeout, parse_report, MachineReport};
use xtask::machine::preset;
use xtask::qemu::{Outcome, RunResult};

/// A 512 MiB, 2-CPU machine without `-numa` (so QEMU writes no SRAT or SLIT
/// of its own) plus the given tables.
fn uma_with(tables: &[(&Table, &str)]) -> (RunResult, MachineReport) {
    let mut args = preset("uma").expect("uma preset").qemu_args();
    for (t, tag) in tables {
        args.extend(t.qemu_args(tag));
    }
    let run = boot_with(args, "");
    let report = parse_report(&run.console);
    (run, report)
}

/// Two proximity domains, one CPU and 256 MiB each.
fn two_domain_srat() -> Table {
    let mut t = acpi::srat();
    acpi::srat_cpu(&mut t, 0, 0, true);
    acpi::srat_cpu(&mut t, 1, 1, true);
    acpi::srat_memory(&mut t, 0, 256 << 20, 0, 1);
    acpi::srat_memory(&mut t, 256 << 20, 256 << 20, 1, 1);
    t
}

#[test]
fn our_own_srat_and_slit_are_used() {
    let srat = two_domain_srat();
    let slit = acpi::slit(&[vec![10, 17], vec![17, 10]]);
    let (run, r) = uma_with(&[(&srat, "good-srat"), (&slit, "good-slit")]);
    assert!(run.outcome.success(), "{}", context(&run));
    assert_eq!(r.nr_nodes, Some(2), "{}", context(&run));
    assert_eq!(r.nodes[0].distances, vec![10, 17], "{}", context(&run));
    assert_eq!(
        r.cpus.iter().map(|c| c.node).collect::<Vec<_>>(),
        vec![0, 1],
        "{}",
        context(&run)
    );
}

#[test]
fn slit_with_a_distance_below_10_falls_back_to_defaults() {
    let srat = two_domain_srat();
    let slit = acpi::slit(&[vec![10, 5], vec![5, 10]]);
    let (run, r) = uma_with(&[(&srat, "srat-for-bad-slit"), (&slit, "bad-slit")]);
    assert!(run.outcome.success(), "{}", context(&run));
    assert_eq!(r.nr_nodes, Some(2), "{}", context(&run));
    assert_eq!(r.nodes[1].distances, vec![20, 10], "{}", context(&run));
    assert!(
        r.warnings.iter().any(|w| w.starts_with("SLIT")),
        "{}",
        context(&run)
    );
}

#[test]
fn slit_smaller_than_the_srat_falls_back_to_defaults() {
    let srat = two_domain_srat();
    let slit = acpi::slit(&[vec![10]]);
    let (run, r) = uma_with(&[(&srat, "srat-for-small-slit"), (&slit, "small-slit")]);
    assert!(run.outcome.success(), "{}", context(&run));
    assert_eq!(r.nodes[0].distances, vec![10, 20], "{}", context(&run));
    assert!(
        r.warnings.iter().any(|w| w.starts_with("SLIT")),
        "{}",
        context(&run)
    );
}

#[test]
fn srat_with_a_zero_length_entry_gives_one_node() {
    let mut srat = two_domain_srat();
    srat.u8(1).u8(0).u32(0); // a memory entry whose length field is 0
    let (run, r) = uma_with(&[(&srat, "zero-length")]);
    assert!(run.outcome.success(), "{}", context(&run));
    assert_eq!(r.nr_nodes, Some(1), "{}", context(&run));
    assert!(
        r.warnings.iter().any(|w| w.contains("SRAT")),
        "{}",
        context(&run)
    );
}

#[test]
fn srat_with_overlapping_nodes_gives_one_node() {
    let mut srat = acpi::srat();
    acpi::srat_cpu(&mut srat, 0, 0, true);
    acpi::srat_cpu(&mut srat, 1, 1, true);
    acpi::srat_memory(&mut srat, 0, 384 << 20, 0, 1);
    acpi::srat_memory(&mut srat, 256 << 20, 256 << 20, 1, 1);
    let (run, r) = uma_with(&[(&srat, "overlap")]);
    assert!(run.outcome.success(), "{}", context(&run));
    assert_eq!(r.nr_nodes, Some(1), "{}", context(&run));
    assert!(
        r.nodes[0].memsize_mib + 16 >= 512,
        "all memory in the one node; {}",
        context(&run)
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("overlaps")),
        "{}",
        context(&run)
    );
}

#[test]
fn srat_with_a_truncated_entry_gives_one_node() {
    let mut srat = two_domain_srat();
    srat.u8(1).u8(40).u32(1); // claims 40 bytes, the table ends after 6
    let (run, r) = uma_with(&[(&srat, "truncated")]);
    assert!(run.outcome.success(), "{}", context(&run));
    assert_eq!(r.nr_nodes, Some(1), "{}", context(&run));
    assert!(!r.warnings.is_empty(), "{}", context(&run));
}

fn crash(kind: &str, timeout: Duration) -> RunResult {
    let spec = preset("two-nodes").expect("two-nodes preset");
    boot_with_timeout(spec.qemu_args(), &format!("crash={kind}"), timeout)
}

#[test]
fn a_panic_reports_its_location_and_exit_code() {
    let run = crash("panic", xtask::DEFAULT_TIMEOUT);
    assert_eq!(
        run.outcome,
        Outcome::Exited(ExitCode::Panic),
        "{}",
        context(&run)
    );
    assert!(
        run.console
            .contains("numavisor: PANIC at hypervisor/src/bare_metal/"),
        "{}",
        context(&run)
    );
    assert!(
        run.console.contains("deliberate panic"),
        "{}",
        context(&run)
    );
}

#[test]
fn a_cpu_exception_is_reported_not_a_reset() {
    let run = crash("fault", xtask::DEFAULT_TIMEOUT);
    assert_eq!(
        run.outcome,
        Outcome::Exited(ExitCode::Exception),
        "{}",
        context(&run)
    );
    assert!(
        run.console.contains("CPU exception 14 (page fault)"),
        "{}",
        context(&run)
    );
}

#[test]
fn a_hang_is_killed_by_the_time_out() {
    let run = crash("hang", Duration::from_secs(5));
    assert_eq!(
        run.outcome,
        Outcome::TimedOut(Duration::from_secs(5)),
        "{}",
        context(&run)
    );
    assert!(run.outcome.describe().contains("time-out"));
    assert_eq!(run.outcome.process_status(), 124);
}

//! The ABI compatibility matrix (pv-abi's versioning rules, README "ABI
//! versions"): every pairing of {ABI 1.0 guest, current guest} x {ABI 1.0
//! hypervisor, current hypervisor} boots the default machine and passes its
//! KTAP suites: an old guest does not use what 1.1 added, a current guest
//! on an old hypervisor takes its fallback. An incompatible major (the
//! test-only `major2` build, which claims ABI 2.x) is refused on both
//! sides: the hypervisor refuses the image by its ELF note, and when told
//! to run it anyway (`abi-note=ignore`) the guest refuses the hypervisor at
//! VERSION and shuts down with ABI_MISMATCH.

use pv_abi::exit::ExitCode;
use pv_abi::{AbiVersion, ShutdownStatus};
use tests::abi::boot_pair;
use tests::context;
use tests::ktap::{self, Ktap};
use tests::{domain_lines, domain_report, DomainReport};
use xtask::machine::{preset, MachineSpec};
use xtask::qemu::{Outcome, RunResult};

fn machine() -> MachineSpec {
    preset("default").expect("default preset")
}

/// The current ABI, as the current builds print it.
fn cur() -> String {
    AbiVersion::CURRENT.to_string()
}

/// Domain 1 passed every suite; returns its KTAP and its console lines.
fn passed(run: &RunResult) -> (Ktap, Vec<String>) {
    assert!(run.outcome.success(), "{}", context(run));
    assert_eq!(
        domain_report(&run.console, 1),
        Some(DomainReport::Shutdown { status: 0 }),
        "{}",
        context(run)
    );
    let lines = domain_lines(&run.console, 1);
    let k = ktap::parse(&lines);
    if let Err(e) = k.verdict() {
        panic!("KTAP: {e}; {}", context(run));
    }
    for suite in ["boot", "vnuma", "acpi", "hypercall_abi"] {
        assert!(k.suite(suite).is_some(), "suite {suite}; {}", context(run));
    }
    (k, lines)
}

fn has(run: &RunResult, line: &str) {
    assert!(
        run.console.lines().any(|l| l == line),
        "missing line {line:?}; {}",
        context(run)
    );
}

/// The `vnuma` suite's `vnode_mem` test: `Some(skipped)` if it ran.
fn vnode_mem_test(k: &Ktap) -> Option<bool> {
    let t = k
        .suite("vnuma")?
        .subtests
        .iter()
        .find(|t| t.name == "vnode_mem")?;
    assert!(t.ok, "vnuma.vnode_mem failed");
    Some(t.skip)
}

const V1_0_FEATURES: &str = "vnuma,physinfo,domain-node-pages,virtual-acpi";
/// What the current builds offer: 1.0's, 1.1's `vnode-mem`, 1.2's
/// `dma-exchange`, 1.3's `vcpu-op`.
const CURRENT_FEATURES: &str =
    "vnuma,physinfo,domain-node-pages,virtual-acpi,vnode-mem,dma-exchange,vcpu-op";

#[test]
fn current_guest_on_current_hypervisor_uses_vnode_mem() {
    let run = boot_pair(&machine(), "current", "current", "");
    let (k, lines) = passed(&run);
    let v = cur();
    has(
        &run,
        &format!("numavisor: ABI {v}, features {CURRENT_FEATURES}"),
    );
    has(
        &run,
        &format!("numavisor: domain 1: guest image speaks ABI {v} (its ELF note), the hypervisor {v}: using ABI {v}"),
    );
    has(
        &run,
        &format!("(d1) guest: ABI {v} (guest {v}, using {v}), features {CURRENT_FEATURES}"),
    );
    // One line per vnode, with the free memory behind it.
    let vnodes: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("guest: vnode ") && l.ends_with(" free there"))
        .collect();
    assert_eq!(vnodes.len(), 4, "{}", context(&run));
    assert!(
        vnodes[0].starts_with("guest: vnode 0: 64 MiB on pnode 0, "),
        "{vnodes:?}"
    );
    assert_eq!(
        vnodes[2],
        "guest: vnode 2: 0 MiB on pnode 2, 0 MiB free there"
    );
    assert_eq!(vnode_mem_test(&k), Some(false), "{}", context(&run));
}

#[test]
fn current_guest_on_1_0_hypervisor_takes_its_fallback() {
    let run = boot_pair(&machine(), "1.0", "current", "");
    let (k, lines) = passed(&run);
    let v = cur();
    has(
        &run,
        &format!("numavisor: ABI 1.0, features {V1_0_FEATURES}"),
    );
    has(
        &run,
        &format!("numavisor: domain 1: guest image speaks ABI {v} (its ELF note), the hypervisor 1.0: using ABI 1.0"),
    );
    has(
        &run,
        &format!("(d1) guest: ABI 1.0 (guest {v}, using 1.0), features {V1_0_FEATURES}"),
    );
    has(
        &run,
        "(d1) guest: features not offered: vnode-mem,dma-exchange,vcpu-op: using fallback paths",
    );
    has(&run, "(d1) guest: vnode-mem not offered (hypervisor ABI 1.0): fallback: sizes from get_vnuma, free memory unknown");
    has(&run, "(d1) guest: vnode 0: 64 MiB, free memory unknown");
    has(&run, "(d1) guest: vnode 2: 0 MiB, free memory unknown");
    assert!(
        !lines.iter().any(|l| l.ends_with(" free there")),
        "{}",
        context(&run)
    );
    // The test of vnode_mem ran and passed: the 1.0 hypervisor ignored the
    // appended field (48 bytes handled, buffer untouched).
    assert_eq!(vnode_mem_test(&k), Some(false), "{}", context(&run));
}

#[test]
fn guest_1_0_on_current_hypervisor_does_not_use_the_addition() {
    let run = boot_pair(&machine(), "current", "1.0", "");
    let (k, lines) = passed(&run);
    let v = cur();
    has(
        &run,
        &format!("numavisor: domain 1: guest image speaks ABI 1.0 (its ELF note), the hypervisor {v}: using ABI 1.0"),
    );
    // The 1.0 guest sees bits 4, 5 and 6 but does not know them (printed
    // as a number).
    has(
        &run,
        &format!("(d1) guest: ABI {v} (guest 1.0, using 1.0), features {V1_0_FEATURES},0x70"),
    );
    has(
        &run,
        "(d1) guest: numavisor guest-os 0.1.0 starting (ABI 1.0)",
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("vnode-mem") || l.starts_with("guest: vnode ")),
        "{}",
        context(&run)
    );
    assert_eq!(vnode_mem_test(&k), None, "{}", context(&run));
}

#[test]
fn guest_1_0_on_hypervisor_1_0() {
    let run = boot_pair(&machine(), "1.0", "1.0", "");
    let (k, _) = passed(&run);
    has(
        &run,
        &format!("numavisor: ABI 1.0, features {V1_0_FEATURES}"),
    );
    has(
        &run,
        &format!("(d1) guest: ABI 1.0 (guest 1.0, using 1.0), features {V1_0_FEATURES}"),
    );
    assert_eq!(vnode_mem_test(&k), None, "{}", context(&run));
}

/// The major the test-only `major2` build claims.
fn major2() -> String {
    format!("2.{}", AbiVersion::CURRENT.minor)
}

/// Domain 1 was refused with `reason`, the guest never ran, and the run
/// ended as a failure.
fn refused(run: &RunResult, reason: &str) {
    assert_eq!(
        domain_report(&run.console, 1),
        Some(DomainReport::Refused {
            reason: reason.to_string()
        }),
        "{}",
        context(run)
    );
    assert!(domain_lines(&run.console, 1).is_empty(), "{}", context(run));
    assert_eq!(
        run.outcome,
        Outcome::Exited(ExitCode::Failure),
        "{}",
        context(run)
    );
}

#[test]
fn another_major_is_refused_by_the_hypervisor() {
    let (v, m2) = (cur(), major2());
    let run = boot_pair(&machine(), "current", "major2", "");
    refused(
        &run,
        &format!("guest image speaks ABI {m2} (its ELF note), this hypervisor speaks ABI {v}: different major versions cannot work together"),
    );
    let run = boot_pair(&machine(), "major2", "current", "");
    has(
        &run,
        &format!("numavisor: ABI {m2}, features {CURRENT_FEATURES}"),
    );
    refused(
        &run,
        &format!("guest image speaks ABI {v} (its ELF note), this hypervisor speaks ABI {m2}: different major versions cannot work together"),
    );
}

/// Run anyway, the guest refuses the hypervisor at VERSION, naming both
/// versions, and shuts down with ABI_MISMATCH before anything else.
fn refused_by_guest(run: &RunResult, hv: &str, guest: &str) {
    has(
        run,
        &format!("numavisor: warning: domain 1: guest image speaks ABI {guest} (its ELF note), this hypervisor speaks ABI {hv}: different major versions cannot work together; running it anyway (abi-note=ignore)"),
    );
    let lines = domain_lines(&run.console, 1);
    assert_eq!(
        lines,
        vec![
            format!("guest: numavisor guest-os 0.1.0 starting (ABI {guest})"),
            format!("guest: ABI mismatch: the hypervisor speaks ABI {hv}, this guest speaks ABI {guest}; different major versions cannot work together"),
        ],
        "{}",
        context(run)
    );
    assert_eq!(
        domain_report(&run.console, 1),
        Some(DomainReport::Shutdown {
            status: ShutdownStatus::ABI_MISMATCH.raw()
        }),
        "{}",
        context(run)
    );
    has(
        run,
        "numavisor: domain 1: teardown: 49152 pages returned, none left owned",
    );
    assert_eq!(
        run.outcome,
        Outcome::Exited(ExitCode::Failure),
        "{}",
        context(run)
    );
}

#[test]
fn another_major_is_refused_by_the_guest() {
    let (v, m2) = (cur(), major2());
    let run = boot_pair(&machine(), "current", "major2", "abi-note=ignore");
    refused_by_guest(&run, &v, &m2);
    let run = boot_pair(&machine(), "major2", "current", "abi-note=ignore");
    refused_by_guest(&run, &m2, &v);
}

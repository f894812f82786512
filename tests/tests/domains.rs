//! Domains in QEMU: the guest boots on the hypervisor in every layout,
//! learns exactly its virtual topology, passes its KTAP suites, and is torn
//! down with every page returned; bad configs, oversized domains and
//! misbehaving guests are refused or ended with a report while the
//! hypervisor goes on.

use pv_abi::exit::ExitCode;
use tests::{assert_domain_passed, context, default_machine};
use tests::{boot_domains, boot_modules, domain_config, domain_lines, domain_report, DomainReport};
use xtask::qemu::{Outcome, RunResult};

/// The guest's `guest: node N (vnode V): cpus C, memory M` lines.
fn guest_nodes(run: &RunResult, id: u32) -> Vec<String> {
    domain_lines(&run.console, id)
        .into_iter()
        .filter(|l| l.starts_with("guest: node "))
        .collect()
}

#[test]
fn the_mirror_domain_sees_the_machine() {
    let run = boot_domains(&default_machine(), "", &[]);
    assert!(run.outcome.success(), "{}", context(&run));
    let k = assert_domain_passed(&run, 1);
    for suite in ["boot", "vnuma", "acpi", "hypercall_abi", "memory"] {
        assert!(
            k.suite(suite).is_some(),
            "suite {suite} ran; {}",
            context(&run)
        );
    }
    // One vnode per machine node, the memoryless and the CPU-less included,
    // with the machine's CPUs and distances.
    let nodes = guest_nodes(&run, 1);
    assert_eq!(nodes.len(), 4, "{}", context(&run));
    assert!(
        nodes[0].starts_with("guest: node 0 (vnode 0): cpus 0-1, memory ["),
        "{nodes:?}"
    );
    assert!(
        nodes[1].starts_with("guest: node 1 (vnode 1): cpus 2-3, memory ["),
        "{nodes:?}"
    );
    assert_eq!(nodes[2], "guest: node 2 (vnode 2): cpus 4-5, memory none");
    assert!(
        nodes[3].starts_with("guest: node 3 (vnode 3): cpus none, memory ["),
        "{nodes:?}"
    );
    let lines = domain_lines(&run.console, 1);
    let rows: Vec<&String> = lines
        .iter()
        .skip_while(|l| !l.ends_with("distances:"))
        .skip(2)
        .take(4)
        .collect();
    assert_eq!(
        rows[0].split_whitespace().skip(2).collect::<Vec<_>>(),
        ["10", "20", "30", "40"],
        "{rows:?}"
    );
    assert!(
        run.console.contains("get_vnuma and the ACPI tables agree"),
        "{}",
        context(&run)
    );
    assert!(
        run.console.contains("P->node == M->node verified"),
        "{}",
        context(&run)
    );
}

#[test]
fn node_bits_and_high_only_layouts() {
    let configs = [
        domain_config("node-bits.cfg"),
        domain_config("high-only.cfg"),
    ];
    let run = boot_domains(&default_machine(), "", &configs);
    assert!(run.outcome.success(), "{}", context(&run));
    assert_domain_passed(&run, 1);
    assert_domain_passed(&run, 2);
    // node-bits: vnode k starts at k << 36.
    let n = guest_nodes(&run, 1);
    assert!(n[1].contains("memory [0x1000000000.."), "{n:?}");
    assert!(n[2].contains("memory [0x2000000000.."), "{n:?}");
    // high-only: nothing below 4 GiB.
    let starts: Vec<u64> = domain_lines(&run.console, 2)
        .iter()
        .filter_map(|l| l.strip_prefix("guest:   memory [0x"))
        .filter_map(|l| u64::from_str_radix(l.split("..").next()?, 16).ok())
        .collect();
    assert!(
        !starts.is_empty() && starts.iter().all(|&s| s >= 4 << 30),
        "{starts:?}; {}",
        context(&run)
    );
}

#[test]
fn several_domains_in_a_row_identity_and_memoryless() {
    let configs = [
        domain_config("identity.cfg"),
        domain_config("memoryless.cfg"),
        domain_config("two-vnodes.cfg"),
    ];
    let run = boot_domains(&default_machine(), "", &configs);
    assert!(run.outcome.success(), "{}", context(&run));
    for id in 1..=3 {
        assert_domain_passed(&run, id);
    }
    let n = guest_nodes(&run, 2);
    assert_eq!(
        n[1], "guest: node 1 (vnode 1): cpus 1-2, memory none",
        "{n:?}"
    );
    assert!(n[2].contains("cpus none, memory ["), "{n:?}");
}

#[test]
fn a_domain_too_big_for_its_node_is_refused_and_the_next_runs() {
    let configs = [
        domain_config("too-big.cfg"),
        domain_config("two-vnodes.cfg"),
    ];
    let run = boot_domains(&default_machine(), "", &configs);
    match domain_report(&run.console, 1) {
        Some(DomainReport::Refused { reason }) => {
            assert!(
                reason.contains("node 1") && reason.contains("short by 512 MiB"),
                "{reason}"
            )
        }
        other => panic!("{other:?}; {}", context(&run)),
    }
    assert_domain_passed(&run, 2);
    assert_eq!(
        run.outcome,
        Outcome::Exited(ExitCode::Failure),
        "the worst status wins; {}",
        context(&run)
    );
}

#[test]
fn misbehaving_guests_are_ended_and_the_hypervisor_goes_on() {
    let configs = [
        domain_config("fault-npf.cfg"),
        domain_config("fault-triple.cfg"),
        domain_config("fault-halt.cfg"),
        domain_config("two-vnodes.cfg"),
    ];
    let run = boot_domains(&default_machine(), "", &configs);
    match domain_report(&run.console, 1) {
        Some(DomainReport::Killed { reason, rip, gpa }) => {
            assert!(reason.contains("nested page fault"), "{reason}");
            assert!(rip >= 0xFFFF_FFFF_8000_0000, "guest rip {rip:#x}");
            let touched = domain_lines(&run.console, 1)
                .iter()
                .find_map(|l| {
                    l.strip_prefix("guest: fail=npf: touching guest-physical 0x")
                        .map(str::to_string)
                })
                .and_then(|l| u64::from_str_radix(l.split(' ').next()?, 16).ok());
            assert_eq!(
                gpa,
                touched,
                "the report names the address the guest touched; {}",
                context(&run)
            );
        }
        other => panic!("{other:?}; {}", context(&run)),
    }
    assert!(
        matches!(domain_report(&run.console, 2), Some(DomainReport::Killed { ref reason, .. }) if reason.contains("triple")),
        "{}",
        context(&run)
    );
    assert!(
        matches!(domain_report(&run.console, 3), Some(DomainReport::Killed { ref reason, .. }) if reason.contains("HLT")),
        "{}",
        context(&run)
    );
    for id in 1..=3 {
        let teardown = format!("numavisor: domain {id}: teardown:");
        assert!(
            run.console
                .lines()
                .any(|l| l.starts_with(&teardown) && l.contains("none left owned")),
            "domain {id} torn down cleanly; {}",
            context(&run)
        );
    }
    assert_domain_passed(&run, 4);
    assert_eq!(
        run.outcome,
        Outcome::Exited(ExitCode::Failure),
        "{}",
        context(&run)
    );
}

#[test]
fn garbage_hypercalls_get_errors_not_crashes() {
    let run = boot_domains(&default_machine(), "fail=hypercall", &[]);
    assert!(run.outcome.success(), "{}", context(&run));
    let k = assert_domain_passed(&run, 1);
    assert!(k.suite("hypercall_garbage").is_some(), "{}", context(&run));
}

#[test]
fn bad_configs_and_images_are_refused_with_a_message() {
    let dir = std::env::temp_dir().join(format!("numavisor-domains-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad_cfg = dir.join("bad.cfg");
    std::fs::write(&bad_cfg, "name = \"bad\"\nmemory = lots\n").expect("write");
    let run = boot_domains(
        &default_machine(),
        "",
        &[
            bad_cfg.display().to_string(),
            domain_config("two-vnodes.cfg"),
        ],
    );
    match domain_report(&run.console, 1) {
        Some(DomainReport::Refused { reason }) => {
            assert!(reason.starts_with("bad.cfg:2:"), "{reason}")
        }
        other => panic!("{other:?}; {}", context(&run)),
    }
    assert_domain_passed(&run, 2);

    // An ELF header and nothing else: not a guest image.
    let bad_elf = dir.join("broken.elf");
    let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
    bytes.resize(40, 0);
    std::fs::write(&bad_elf, &bytes).expect("write");
    let run = boot_modules(&default_machine(), bad_elf.display().to_string(), &[]);
    match domain_report(&run.console, 1) {
        Some(DomainReport::Refused { reason }) => {
            assert!(reason.starts_with("guest image:"), "{reason}")
        }
        other => panic!("{other:?}; {}", context(&run)),
    }
    assert_eq!(
        run.outcome,
        Outcome::Exited(ExitCode::Failure),
        "{}",
        context(&run)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

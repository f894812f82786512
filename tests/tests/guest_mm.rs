//! The guest's memory policies, slabs and NUMA emulation in QEMU: the
//! mirror domain of `two-nodes` booted with `numa=fake=4` on its command
//! line splits its two vnodes into Linux's four emulated nodes, prints
//! Linux's `Faking node` lines, and passes every KTAP suite on them,
//! `fake_numa` and the policy and slab suites included (not skipped).

use tests::ktap;
use tests::{boot_domains, domain_lines, domain_report, DomainReport};
use xtask::machine::preset;

#[test]
fn guest_numa_fake_on_two_nodes() {
    let spec = preset("two-nodes").expect("two-nodes preset");
    let run = boot_domains(&spec, "numa=fake=4", &[]);
    let context = format!(
        "{}\n--- console ---\n{}",
        run.outcome.describe(),
        run.console
    );
    assert!(run.outcome.success(), "{context}");
    assert_eq!(
        domain_report(&run.console, 1),
        Some(DomainReport::Shutdown { status: 0 }),
        "{context}"
    );
    let lines = domain_lines(&run.console, 1);
    let k = ktap::parse(&lines);
    if let Err(e) = k.verdict() {
        panic!("KTAP: {e}; {context}");
    }
    for suite in [
        "fake_numa",
        "policy_default",
        "policy_preferred",
        "policy_bind",
        "policy_interleave",
        "policy_preferred_many",
        "policy_weighted_interleave",
        "policy_flags",
        "policy_errors",
        "slab",
        "accounting",
    ] {
        let s = k
            .suite(suite)
            .unwrap_or_else(|| panic!("no suite {suite}; {context}"));
        assert!(s.ok && !s.skip, "suite {suite}: {s:?}; {context}");
    }
    let faking: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("Faking node "))
        .collect();
    assert_eq!(faking.len(), 4, "{context}");
    assert!(
        lines
            .iter()
            .any(|l| l == "guest: NUMA: 4 nodes (from numa=fake)"),
        "{context}"
    );
    // Two fake nodes per vnode, at distance 10 from each other.
    assert!(
        lines
            .iter()
            .any(|l| l == "guest: numa=fake:     0:  10  20  10  20"),
        "{context}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "Fallback order for Node 0: 0 2 1 3 "),
        "{context}"
    );
}

//! Boots the hypervisor on every preset machine and checks that what it
//! prints (`xl info -n` tables and the heap probe) matches the QEMU options
//! that built the machine.

use tests::{boot, parse_report, MachineReport};
use xtask::machine::{preset, MachineSpec};

/// Firmware keeps some RAM for itself (the 640 KiB-1 MiB hole, ACPI tables,
/// BIOS data at the top of low memory): a node may show up to this much less
/// than QEMU was given.
const FIRMWARE_SLACK_MIB: u64 = 16;

/// Boots `name` and checks that the run passed; returns the parsed report.
fn boot_ok(name: &str) -> (MachineSpec, MachineReport, String) {
    let spec = preset(name).unwrap_or_else(|| panic!("no preset {name}"));
    let run = boot(&spec, "");
    assert!(
        run.outcome.success(),
        "machine '{name}': {}\n--- console ---\n{}",
        run.outcome.describe(),
        run.console
    );
    let report = parse_report(&run.console);
    (spec, report, run.console)
}

/// A node as the test expects it: memory in MiB, CPUs, distances (in the
/// expected node order).
struct ExpectedNode {
    mem_mib: u64,
    cpus: Vec<u32>,
    distances: Vec<u32>,
}

/// The nodes QEMU's options describe, numbered as Linux numbers them.
fn expected_from_spec(spec: &MachineSpec) -> Vec<ExpectedNode> {
    let order = spec.linux_node_order();
    if !spec.numa {
        return vec![ExpectedNode {
            mem_mib: spec.total_mem_mib(),
            cpus: (0..spec.nr_cpus()).collect(),
            distances: vec![10],
        }];
    }
    order
        .iter()
        .map(|&q| ExpectedNode {
            mem_mib: spec.nodes[q].mem_mib,
            cpus: spec.nodes[q].cpus.clone(),
            distances: order
                .iter()
                .map(|&r| u32::from(spec.distance(q, r)))
                .collect(),
        })
        .collect()
}

fn check_against(name: &str, report: &MachineReport, expected: &[ExpectedNode], console: &str) {
    let ctx = || format!("machine '{name}'\n--- console ---\n{console}");
    assert_eq!(
        report.nr_nodes,
        Some(expected.len() as u32),
        "node count; {}",
        ctx()
    );
    assert_eq!(
        report.nodes.len(),
        expected.len(),
        "numa_info rows; {}",
        ctx()
    );
    let nr_cpus: usize = expected.iter().map(|e| e.cpus.len()).sum();
    assert_eq!(report.nr_cpus, Some(nr_cpus as u32), "CPU count; {}", ctx());
    assert_eq!(report.cpus.len(), nr_cpus, "cpu_topology rows; {}", ctx());
    for (id, e) in expected.iter().enumerate() {
        let row = &report.nodes[id];
        assert_eq!(row.node, id as u32, "{}", ctx());
        assert!(
            row.memsize_mib <= e.mem_mib && row.memsize_mib + FIRMWARE_SLACK_MIB >= e.mem_mib,
            "node {id}: memsize {} MiB, QEMU gave {} MiB; {}",
            row.memsize_mib,
            e.mem_mib,
            ctx()
        );
        assert!(
            row.memfree_mib <= row.memsize_mib,
            "node {id}: more free than present; {}",
            ctx()
        );
        assert_eq!(row.distances, e.distances, "node {id} distances; {}", ctx());
        let mut cpus: Vec<u32> = report
            .cpus
            .iter()
            .filter(|c| c.node == id as u32)
            .map(|c| c.cpu)
            .collect();
        cpus.sort_unstable();
        assert_eq!(cpus, e.cpus, "node {id} CPUs; {}", ctx());
    }
    check_probe(report, console);
}

/// The heap probe agrees with itself and with `xl info -n`.
fn check_probe(report: &MachineReport, console: &str) {
    assert_eq!(
        report.probe_nodes.len(),
        report.nodes.len(),
        "probe covers every node\n{console}"
    );
    for n in &report.probe_nodes {
        let listed: u64 = report
            .probe
            .iter()
            .filter(|r| r.node == n.node)
            .map(|r| r.pages)
            .sum();
        assert_eq!(
            listed, n.free_pages,
            "node {}: probe rows add up to its free pages\n{console}",
            n.node
        );
        for r in report.probe.iter().filter(|r| r.node == n.node) {
            assert_eq!(r.pages, r.blocks << r.order, "probe row {r:?}\n{console}");
        }
        let row = &report.nodes[n.node as usize];
        assert_eq!(
            n.free_pages >> 8,
            row.memfree_mib,
            "node {} free MiB\n{console}",
            n.node
        );
    }
    assert!(
        console.contains("heap self-test: ok"),
        "heap self-test\n{console}"
    );
}

fn check_preset(name: &str) {
    let (spec, report, console) = boot_ok(name);
    check_against(name, &report, &expected_from_spec(&spec), &console);
}

#[test]
fn default_machine() {
    check_preset("default");
}

#[test]
fn one_node_without_srat() {
    let (spec, report, console) = boot_ok("uma");
    check_against("uma", &report, &expected_from_spec(&spec), &console);
    assert!(
        report.warnings.iter().any(|w| w.contains("SRAT")),
        "a warning names the missing SRAT\n{console}"
    );
}

#[test]
fn two_nodes() {
    check_preset("two-nodes");
}

#[test]
fn ring_of_eight_nodes() {
    check_preset("ring8");
}

#[test]
fn asymmetric_slit() {
    check_preset("asymmetric");
}

#[test]
fn node_ids_follow_linux_numbering() {
    check_preset("cpu-order");
}

#[test]
fn numa_off_gives_one_node() {
    let (spec, report, console) = boot_ok("numa-off");
    let expected = [ExpectedNode {
        mem_mib: spec.total_mem_mib(),
        cpus: (0..spec.nr_cpus()).collect(),
        distances: vec![10],
    }];
    check_against("numa-off", &report, &expected, &console);
}

#[test]
fn numa_fake_interleaves_over_physical_nodes() {
    let (spec, report, console) = boot_ok("fake4");
    // Linux's split_nodes_interleave: fake nodes go round-robin over the
    // physical nodes (0, 1, 0, 1), each about a quarter of memory.
    assert_eq!(report.nodes.len(), 4, "{console}");
    let total: u64 = report.nodes.iter().map(|n| n.memsize_mib).sum();
    assert!(
        total + FIRMWARE_SLACK_MIB >= spec.total_mem_mib(),
        "{console}"
    );
    for n in &report.nodes {
        assert!(
            (200..=300).contains(&n.memsize_mib),
            "node {} has {} MiB\n{console}",
            n.node,
            n.memsize_mib
        );
    }
    let phys = [0usize, 1, 0, 1];
    for (i, n) in report.nodes.iter().enumerate() {
        let want: Vec<u32> = (0..4)
            .map(|j| u32::from(spec.distance(phys[i], phys[j])))
            .collect();
        assert_eq!(n.distances, want, "fake node {i}\n{console}");
    }
    // A CPU goes to the first fake node on its physical node.
    for c in &report.cpus {
        assert_eq!(
            c.node,
            if c.cpu < 2 { 0 } else { 1 },
            "cpu {}\n{console}",
            c.cpu
        );
    }
    check_probe(&report, &console);
}

#[test]
fn memory_above_4g() {
    check_preset("high-mem");
}

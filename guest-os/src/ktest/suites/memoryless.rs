//! Suite `memoryless`: `numa_node_id`/`numa_mem_id` of every CPU; a CPU on
//! a memoryless node allocates locally from its nearest node with memory
//! (the first node with memory in its node's zonelist), counted as a hit
//! there and as `other_node` (Linux compares with `numa_node_id()`);
//! `THISNODE` on a memoryless node fails at once, touching nothing.

use alloc::format;
use alloc::vec::Vec;

use super::mm_util::{expect_stats, mm, zone_infos};
use crate::boot::Guest;
use crate::ktest::{problems, skip, Suite, Test, TestResult};
use crate::mm::{AllocError, Gfp, Mm, NumaStat, ZonelistOrder, NUMA_NO_NODE};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "memoryless",
    tests: &[
        Test {
            name: "cpu_nodes_and_mem_nodes",
            run: cpu_nodes_and_mem_nodes,
        },
        Test {
            name: "memoryless_node_with_cpus",
            run: memoryless_node_with_cpus,
        },
        Test {
            name: "thisnode_fails_at_once",
            run: thisnode_fails_at_once,
        },
        Test {
            name: "local_allocations_use_mem_node",
            run: local_allocations_use_mem_node,
        },
        Test {
            name: "no_node_means_numa_mem_id",
            run: no_node_means_numa_mem_id,
        },
    ],
};

/// CPUs on memoryless nodes.
fn memoryless_cpus(mm: &Mm) -> Vec<u32> {
    (0..mm.nr_cpus())
        .filter(|&c| mm.node(mm.cpu_to_node(c)).is_some_and(|n| !n.has_memory()))
        .collect()
}

/// For every CPU (run as that CPU): `numa_node_id()` is the node the view
/// puts it on; `numa_mem_id()` is `cpu_to_mem()`, has memory, and is the
/// first node with memory in the node's fallback order (the node itself if
/// it has memory, in node order).
fn cpu_nodes_and_mem_nodes(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    for cpu in 0..mm.nr_cpus() {
        let view_node = g
            .view
            .as_ref()
            .and_then(|v| v.nodes.iter().find(|n| n.cpus.contains(&cpu)))
            .map_or(0, |n| n.id);
        let Some((node, mem)) = mm.with_cpu(cpu, |m| (m.numa_node_id(), m.numa_mem_id())) else {
            bad.push(format!("cpu {cpu}: with_cpu refused"));
            continue;
        };
        if node != view_node || node != mm.cpu_to_node(cpu) {
            bad.push(format!(
                "cpu {cpu}: numa_node_id {node}, the view says {view_node}"
            ));
        }
        if mem != mm.cpu_to_mem(cpu) {
            bad.push(format!(
                "cpu {cpu}: numa_mem_id {mem}, cpu_to_mem {}",
                mm.cpu_to_mem(cpu)
            ));
        }
        let Some(n) = mm.node(node) else { continue };
        if mm.zonelist_order() == ZonelistOrder::Node {
            let first_with_memory = n
                .node_order()
                .iter()
                .copied()
                .find(|&m| mm.node(m).is_some_and(|x| x.has_memory()));
            if Some(mem) != first_with_memory {
                bad.push(format!(
                    "cpu {cpu} on node {node}: local memory node {mem}, fallback order {:?}",
                    n.node_order()
                ));
            }
        }
        if !mm.node(mem).is_some_and(|x| x.has_memory()) {
            bad.push(format!("cpu {cpu}: local memory node {mem} has no memory"));
        }
    }
    problems(bad)
}

/// Whether this domain has a memoryless node with CPUs (the default machine
/// and `domains/memoryless.cfg` do); which, and their local memory nodes.
fn memoryless_node_with_cpus(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let cpus = memoryless_cpus(mm);
    if cpus.is_empty() {
        skip!("no CPU on a memoryless node in this domain");
    }
    problems(
        cpus.iter()
            .filter(|&&c| mm.cpu_to_mem(c) == mm.cpu_to_node(c))
            .map(|c| format!("cpu {c}: its memoryless node is its local memory node"))
            .collect(),
    )
}

/// `THISNODE` on each memoryless node: `NoMemory` at once, no counter and
/// no zone changed.
fn thisnode_fails_at_once(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let nodes: Vec<u32> = mm
        .nodes()
        .iter()
        .filter(|n| !n.has_memory())
        .map(|n| n.id())
        .collect();
    if nodes.is_empty() {
        skip!("no memoryless node");
    }
    let mut bad = Vec::new();
    for nid in nodes {
        for order in [0, 3] {
            let stats = mm.all_numa_stats();
            let zones = zone_infos(mm);
            let r = mm.alloc_pages_node(nid, Gfp::THISNODE | Gfp::NOWARN, order);
            if r != Err(AllocError::NoMemory) {
                bad.push(format!("node {nid} order {order}: {r:?}"));
                if let Ok(p) = r {
                    let _ = mm.free(p);
                }
            }
            if let Err(e) = expect_stats(mm, &stats, &[]) {
                bad.push(e);
            }
            if zone_infos(mm) != zones {
                bad.push(format!("node {nid}: a zone changed"));
            }
        }
    }
    problems(bad)
}

/// Run as each CPU of a memoryless node, `alloc_pages` lands on its local
/// memory node: `numa_hit` there (the preferred zone is there) and
/// `other_node` there (not the CPU's node).
fn local_allocations_use_mem_node(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let cpus = memoryless_cpus(mm);
    if cpus.is_empty() {
        skip!("no CPU on a memoryless node");
    }
    let mut bad = Vec::new();
    for cpu in cpus {
        let r = mm.with_cpu(cpu, |m| {
            let before = m.all_numa_stats();
            let mem = m.numa_mem_id();
            let p = m
                .alloc_pages(Gfp::KERNEL, 0)
                .map_err(|e| format!("cpu {cpu}: {e}"))?;
            let mut out = Vec::new();
            if p.nid != mem {
                out.push(format!(
                    "cpu {cpu}: page on node {}, local memory node {mem}",
                    p.nid
                ));
            }
            if let Err(e) = expect_stats(
                m,
                &before,
                &[(mem, NumaStat::Hit, 1), (mem, NumaStat::OtherNode, 1)],
            ) {
                out.push(format!("cpu {cpu}: {e}"));
            }
            if let Err(e) = m.free(p) {
                out.push(format!("cpu {cpu}: {e}"));
            }
            Ok::<_, alloc::string::String>(out)
        });
        match r {
            Some(Ok(v)) => bad.extend(v),
            Some(Err(e)) => bad.push(e),
            None => bad.push(format!("cpu {cpu}: with_cpu refused")),
        }
    }
    problems(bad)
}

/// `alloc_pages_node(NUMA_NO_NODE)` uses `numa_mem_id()`; a memoryless
/// node given explicitly leads to its local memory node.
fn no_node_means_numa_mem_id(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    for cpu in 0..mm.nr_cpus() {
        let r = mm.with_cpu(cpu, |m| {
            let want = m.numa_mem_id();
            match m.alloc_pages_node(NUMA_NO_NODE, Gfp::KERNEL, 0) {
                Ok(p) => {
                    let ok = p.nid == want;
                    let _ = m.free(p);
                    (!ok).then(|| {
                        format!(
                            "cpu {cpu}: NUMA_NO_NODE gave node {}, numa_mem_id {want}",
                            p.nid
                        )
                    })
                }
                Err(e) => Some(format!("cpu {cpu}: {e}")),
            }
        });
        bad.extend(r.flatten());
    }
    for n in mm.nodes().iter().filter(|n| !n.has_memory()) {
        let want = crate::mm::zonelist::local_memory_node(
            n.zonelist(crate::mm::ZonelistKind::Fallback),
            n.id(),
        );
        match mm.alloc_pages_node(n.id(), Gfp::KERNEL, 0) {
            Ok(p) => {
                if p.nid != want {
                    bad.push(format!(
                        "node {}: page on {}, expected {want}",
                        n.id(),
                        p.nid
                    ));
                }
                let _ = mm.free(p);
            }
            Err(e) => bad.push(format!("node {}: {e}", n.id())),
        }
    }
    problems(bad)
}

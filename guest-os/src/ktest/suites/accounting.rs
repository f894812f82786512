//! Suite `accounting`: numastat counters move exactly as Linux's
//! `zone_statistics` moves them, for allocations from each CPU, for a
//! preferred node, for a miss, under a nodemask and through the interleave
//! hook; one count per allocation whatever its order. Runs last of the
//! memory suites: its last test checks that after the whole run every page
//! is back (free == managed in every zone).

use alloc::format;
use alloc::vec::Vec;

use super::mm_util::{exhaust_node, expect_stats, give_back, mm};
use crate::boot::Guest;
use crate::ktest::{problems, skip, Suite, Test, TestResult};
use crate::mm::stats::zone_statistics;
use crate::mm::{Gfp, NodeMask, NumaStat, ZoneType, ZonelistKind};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "accounting",
    tests: &[
        Test {
            name: "local_allocation_from_each_cpu",
            run: local_allocation_from_each_cpu,
        },
        Test {
            name: "preferred_node_hits",
            run: preferred_node_hits,
        },
        Test {
            name: "miss_and_foreign",
            run: miss_and_foreign,
        },
        Test {
            name: "nodemask_preferred_zone",
            run: nodemask_preferred_zone,
        },
        Test {
            name: "interleave_hook",
            run: interleave_hook,
        },
        Test {
            name: "one_count_per_allocation",
            run: one_count_per_allocation,
        },
        Test {
            name: "every_page_back",
            run: every_page_back,
        },
    ],
};

/// Run as each CPU, `alloc_pages` lands on the CPU's local memory node and
/// counts what `zone_statistics` says: the preferred zone is the first of
/// the CPU node's zonelist, local/other relative to the CPU's node.
fn local_allocation_from_each_cpu(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    for cpu in 0..mm.nr_cpus() {
        let r = mm.with_cpu(cpu, |m| {
            let node = m.numa_node_id();
            let Some(pref) = m
                .zonelist(node, ZonelistKind::Fallback)
                .and_then(|l| l.first_zone(ZoneType::Normal, None))
            else {
                return Some(format!("cpu {cpu}: empty zonelist"));
            };
            let before = m.all_numa_stats();
            let p = match m.alloc_pages(Gfp::KERNEL, 0) {
                Ok(p) => p,
                Err(e) => return Some(format!("cpu {cpu}: {e}")),
            };
            let want: Vec<(u32, NumaStat, u64)> = zone_statistics(pref.nid, p.nid, node)
                .map(|(n, s)| (n, s, 1))
                .collect();
            let mut out = Vec::new();
            if p.nid != m.numa_mem_id() {
                out.push(format!(
                    "page on node {}, numa_mem_id {}",
                    p.nid,
                    m.numa_mem_id()
                ));
            }
            if let Err(e) = expect_stats(m, &before, &want) {
                out.push(e);
            }
            if let Err(e) = m.free(p) {
                out.push(format!("{e}"));
            }
            (!out.is_empty()).then(|| format!("cpu {cpu}: {}", out.join("; ")))
        });
        bad.extend(r.flatten());
    }
    problems(bad)
}

/// From CPU 0, `alloc_pages_node(n)` for every node with memory: a hit on
/// n, local if n is CPU 0's node, other otherwise.
fn preferred_node_hits(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    let local = mm.cpu_to_node(0);
    let r = mm.with_cpu(0, |m| {
        for n in m.nodes().iter().filter(|n| n.has_memory()) {
            let before = m.all_numa_stats();
            match m.alloc_pages_node(n.id(), Gfp::KERNEL, 0) {
                Ok(p) => {
                    let lo = if n.id() == local {
                        NumaStat::LocalNode
                    } else {
                        NumaStat::OtherNode
                    };
                    if p.nid != n.id() {
                        bad.push(format!("node {}: page on {}", n.id(), p.nid));
                    }
                    if let Err(e) =
                        expect_stats(m, &before, &[(n.id(), NumaStat::Hit, 1), (n.id(), lo, 1)])
                    {
                        bad.push(format!("node {}: {e}", n.id()));
                    }
                    let _ = m.free(p);
                }
                Err(e) => bad.push(format!("node {}: {e}", n.id())),
            }
        }
    });
    if r.is_none() {
        bad.push("no CPU 0".into());
    }
    problems(bad)
}

/// The first node with memory is drained; an allocation preferring it
/// lands on the next node of its zonelist: `numa_miss` there,
/// `numa_foreign` on the preferred node, local/other there.
fn miss_and_foreign(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let Some(x) = mm.nodes().iter().find(|n| n.has_memory()).map(|n| n.id()) else {
        skip!("no memory");
    };
    if mm.memory_nodes().weight() < 2 {
        skip!("one node with memory: no miss possible");
    }
    let pages = exhaust_node(mm, x, Gfp::KERNEL);
    mm.drain_all_pages();
    let mut bad = Vec::new();
    let before = mm.all_numa_stats();
    let local = mm.numa_node_id();
    match mm.alloc_pages_node(x, Gfp::NOWARN, 0) {
        Ok(p) => {
            let lo = if p.nid == local {
                NumaStat::LocalNode
            } else {
                NumaStat::OtherNode
            };
            if p.nid == x {
                bad.push(format!("node {x} drained, but the page is on it"));
            }
            if let Err(e) = expect_stats(
                mm,
                &before,
                &[
                    (p.nid, NumaStat::Miss, 1),
                    (x, NumaStat::Foreign, 1),
                    (p.nid, lo, 1),
                ],
            ) {
                bad.push(e);
            }
            let _ = mm.free(p);
        }
        Err(e) => bad.push(format!("no fallback from node {x}: {e}")),
    }
    bad.extend(give_back(mm, pages));
    problems(bad)
}

/// `__alloc_pages` preferring CPU 0's node with a nodemask of the other
/// nodes with memory: the page is in the mask, and the preferred zone is
/// the first zone of the zonelist inside the mask, so it counts as a hit
/// (as Linux counts MPOL_BIND allocations).
fn nodemask_preferred_zone(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let local = mm.cpu_to_node(0);
    let mask = mm.memory_nodes().andnot(NodeMask::single(local));
    if mask.is_empty() {
        skip!("no node with memory besides CPU 0's");
    }
    let Some(pref) = mm
        .zonelist(local, ZonelistKind::Fallback)
        .and_then(|l| l.first_zone(ZoneType::Normal, Some(&mask)))
    else {
        skip!("no zone in the mask");
    };
    let mut bad = Vec::new();
    let before = mm.all_numa_stats();
    match mm.with_cpu(0, |m| m.__alloc_pages(Gfp::KERNEL, 0, local, Some(&mask))) {
        Some(Ok(p)) => {
            if !mask.contains(p.nid) || p.nid != pref.nid {
                bad.push(format!(
                    "page on node {}, mask {mask}, preferred zone {pref}",
                    p.nid
                ));
            }
            if let Err(e) = expect_stats(
                mm,
                &before,
                &[(p.nid, NumaStat::Hit, 1), (p.nid, NumaStat::OtherNode, 1)],
            ) {
                bad.push(e);
            }
            let _ = mm.free(p);
        }
        r => bad.push(format!("{r:?}")),
    }
    // An empty mask: nothing allowed, fails at once.
    let r = mm.__alloc_pages(Gfp::NOWARN, 0, local, Some(&NodeMask::NONE));
    if r.is_ok() {
        bad.push(format!("an empty nodemask gave {r:?}"));
    }
    problems(bad)
}

/// The interleave hook counts `interleave_hit` on the page's node when the
/// page is on the node interleave asked for, and nothing otherwise.
fn interleave_hook(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let Some(n) = mm.memory_nodes().first_node() else {
        skip!("no memory");
    };
    let p = mm
        .alloc_pages_node(n, Gfp::THISNODE, 0)
        .map_err(|e| format!("{e}"))?;
    let mut bad = Vec::new();
    let before = mm.all_numa_stats();
    if !mm.count_interleave_hit(&p, n) {
        bad.push("a page on the wanted node was not a hit".into());
    }
    if let Err(e) = expect_stats(mm, &before, &[(n, NumaStat::InterleaveHit, 1)]) {
        bad.push(e);
    }
    let before = mm.all_numa_stats();
    let other = (n + 1) % mm.nr_nodes();
    if other != n && mm.count_interleave_hit(&p, other) {
        bad.push("a page on another node counted as a hit".into());
    }
    if let Err(e) = expect_stats(mm, &before, &[]) {
        bad.push(e);
    }
    if let Err(e) = mm.free(p) {
        bad.push(format!("{e}"));
    }
    problems(bad)
}

/// An order-3 allocation counts once, as Linux's `zone_statistics(...,
/// 1)` in `rmqueue`.
fn one_count_per_allocation(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let node = mm.numa_node_id();
    let Some(pref) = mm
        .zonelist(node, ZonelistKind::Fallback)
        .and_then(|l| l.first_zone(ZoneType::Normal, None))
    else {
        skip!("no memory");
    };
    let before = mm.all_numa_stats();
    let p = mm.alloc_pages(Gfp::KERNEL, 3).map_err(|e| format!("{e}"))?;
    let want: Vec<(u32, NumaStat, u64)> = zone_statistics(pref.nid, p.nid, node)
        .map(|(n, s)| (n, s, 1))
        .collect();
    let r = expect_stats(mm, &before, &want);
    let f = mm.free(p);
    problems(
        r.err()
            .into_iter()
            .chain(f.err().map(|e| format!("{e}")))
            .collect(),
    )
}

/// After every suite: per-CPU lists drained, every zone's free pages equal
/// its managed pages, every invariant holds.
fn every_page_back(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    mm.drain_all_pages();
    let mut bad = mm.check();
    for z in mm.zones() {
        let i = z.info();
        if i.free != i.managed || i.pcp != 0 || i.used != 0 {
            bad.push(format!(
                "node {} {}: free {} of {} managed, {} per-CPU, {} used",
                i.nid, i.zone, i.free, i.managed, i.pcp, i.used
            ));
        }
    }
    problems(bad)
}

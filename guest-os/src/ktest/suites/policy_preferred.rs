//! Suite `policy_preferred`: `MPOL_PREFERRED` puts pages on its node (a hit
//! there), keeps only the first node of a mask, falls back along that
//! node's zonelist when it is exhausted (a miss on the page's node, foreign
//! on the preferred one), and works the same as a VMA policy.

use alloc::format;
use alloc::vec::Vec;

use super::mm_util::{exhaust_node, expect_stats, give_back, mm};
use super::policy_util::{exit, memory_nodes, two_memory_nodes};
use crate::boot::Guest;
use crate::ktest::{problems, skip, Suite, Test, TestResult};
use crate::mm::mempolicy::uapi::MPOL_PREFERRED;
use crate::mm::mempolicy::Mempolicies;
use crate::mm::{Gfp, NodeMask, NumaStat, ZonelistKind};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "policy_preferred",
    tests: &[
        Test {
            name: "lands_on_the_preferred_node",
            run: lands_on_the_preferred_node,
        },
        Test {
            name: "keeps_the_first_node_of_a_mask",
            run: keeps_the_first_node_of_a_mask,
        },
        Test {
            name: "falls_back_when_exhausted",
            run: falls_back_when_exhausted,
        },
        Test {
            name: "vma_policy",
            run: vma_policy,
        },
    ],
};

/// For every node with memory: 4 pages, all there, 4 hits, local or
/// other by CPU 0's node.
fn lands_on_the_preferred_node(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let local = mm.numa_node_id();
    let mut bad = Vec::new();
    for n in memory_nodes(mm) {
        if let Err(e) = sys.set_mempolicy(&mut t, MPOL_PREFERRED, NodeMask::single(n)) {
            bad.push(format!("node {n}: {e}"));
            continue;
        }
        match sys.get_mempolicy(&mut t, 0, 0) {
            Ok((MPOL_PREFERRED, m)) if m == NodeMask::single(n) => {}
            r => bad.push(format!("node {n}: get_mempolicy {r:?}")),
        }
        let before = mm.all_numa_stats();
        let mut pages = Vec::new();
        for _ in 0..4 {
            match sys.alloc_pages(&mut t, Gfp::KERNEL, 0) {
                Ok(p) => pages.push(p),
                Err(e) => bad.push(format!("node {n}: {e}")),
            }
        }
        if pages.iter().any(|p| p.nid != n) {
            bad.push(format!(
                "node {n}: pages on {:?}",
                pages.iter().map(|p| p.nid).collect::<Vec<_>>()
            ));
        }
        let lo = if n == local {
            NumaStat::LocalNode
        } else {
            NumaStat::OtherNode
        };
        if let Err(e) = expect_stats(mm, &before, &[(n, NumaStat::Hit, 4), (n, lo, 4)]) {
            bad.push(format!("node {n}: {e}"));
        }
        bad.extend(give_back(mm, pages));
    }
    problems(bad)
}

/// `MPOL_PREFERRED` with two nodes keeps the first (`mpol_new_preferred`).
fn keeps_the_first_node_of_a_mask(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (a, b) = two_memory_nodes(mm)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let mask = NodeMask::single(a).or(NodeMask::single(b));
    sys.set_mempolicy(&mut t, MPOL_PREFERRED, mask)
        .map_err(|e| format!("{e}"))?;
    let mut bad = Vec::new();
    match sys.get_mempolicy(&mut t, 0, 0) {
        Ok((MPOL_PREFERRED, m)) if m == NodeMask::single(a) => {}
        r => bad.push(format!("get_mempolicy {r:?}, expected preferred {a}")),
    }
    match sys.alloc_pages(&mut t, Gfp::KERNEL, 0) {
        Ok(p) => {
            if p.nid != a {
                bad.push(format!("page on {}, expected {a}", p.nid));
            }
            let _ = mm.free(p);
        }
        Err(e) => bad.push(format!("{e}")),
    }
    problems(bad)
}

/// The first node with memory drained: a preferred allocation lands on the
/// next node of its zonelist that has memory, counted as a miss there and
/// foreign on the preferred node; given back, it lands home again.
fn falls_back_when_exhausted(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (n, _) = two_memory_nodes(mm)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    sys.set_mempolicy(&mut t, MPOL_PREFERRED, NodeMask::single(n))
        .map_err(|e| format!("{e}"))?;
    let drained = exhaust_node(mm, n, Gfp::KERNEL);
    mm.drain_all_pages();
    let mut bad = Vec::new();
    let next = mm.zonelist(n, ZonelistKind::Fallback).and_then(|zl| {
        zl.refs()
            .iter()
            .find(|z| z.nid != n && mm.zone(**z).info().free > 0)
            .map(|z| z.nid)
    });
    let local = mm.numa_node_id();
    let before = mm.all_numa_stats();
    match (sys.alloc_pages(&mut t, Gfp::NOWARN, 0), next) {
        (Ok(p), Some(next)) => {
            if p.nid != next {
                bad.push(format!("fell back to {}, expected {next}", p.nid));
            }
            let lo = if p.nid == local {
                NumaStat::LocalNode
            } else {
                NumaStat::OtherNode
            };
            if let Err(e) = expect_stats(
                mm,
                &before,
                &[
                    (p.nid, NumaStat::Miss, 1),
                    (n, NumaStat::Foreign, 1),
                    (p.nid, lo, 1),
                ],
            ) {
                bad.push(e);
            }
            let _ = mm.free(p);
        }
        (r, next) => bad.push(format!("drained node {n}: {r:?}, next node {next:?}")),
    }
    bad.extend(give_back(mm, drained));
    mm.drain_all_pages();
    match sys.alloc_pages(&mut t, Gfp::KERNEL, 0) {
        Ok(p) => {
            if p.nid != n {
                bad.push(format!("after giving back: page on {}", p.nid));
            }
            let _ = mm.free(p);
        }
        Err(e) => bad.push(format!("after giving back: {e}")),
    }
    problems(bad)
}

/// `mbind(MPOL_PREFERRED)` on a mapping: its faults go to the node, while
/// the task (no policy) allocates locally.
fn vma_policy(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let local_mem = mm.numa_mem_id();
    let Some(&n) = memory_nodes(mm).iter().find(|&&n| n != local_mem) else {
        skip!("no node with memory besides CPU 0's");
    };
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let len = 4 << 12;
    let a = sys.mmap(&mut t, len).map_err(|e| format!("{e}"))?;
    let mut bad = Vec::new();
    if let Err(e) = sys.mbind(&mut t, a, len, MPOL_PREFERRED, NodeMask::single(n), 0) {
        bad.push(format!("mbind: {e}"));
    }
    for i in 0..4 {
        match sys.fault(&mut t, a + (i << 12)) {
            Ok(p) if p.nid == n => {}
            r => bad.push(format!("page {i}: {r:?}, expected node {n}")),
        }
    }
    match sys.alloc_pages(&mut t, Gfp::KERNEL, 0) {
        Ok(p) => {
            if p.nid != local_mem {
                bad.push(format!("task page on {}, expected {local_mem}", p.nid));
            }
            let _ = mm.free(p);
        }
        Err(e) => bad.push(format!("{e}")),
    }
    bad.extend(exit(&sys, &mut t));
    problems(bad)
}

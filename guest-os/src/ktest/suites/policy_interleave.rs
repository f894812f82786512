//! Suite `policy_interleave`: `MPOL_INTERLEAVE` without an address rotates
//! through its nodes per task (`il_prev`): over two nodes N pages put
//! exactly N/2 on each (LTP's set_mempolicy02), starting at the first node,
//! with `get_mempolicy(MPOL_F_NODE)` naming the next node each time and
//! `interleave_hit` and `numa_hit` counted once per page on its node; over
//! every node with memory the split is exact too; page faults interleave by
//! index (the page's offset in its object), whatever the order they come
//! in; a drained target falls back without an `interleave_hit`.

use alloc::format;
use alloc::vec::Vec;

use super::mm_util::{exhaust_node, expect_stats, give_back, mm};
use super::policy_util::{exit, memory_nodes, per_node, two_memory_nodes};
use crate::boot::Guest;
use crate::ktest::{problems, Suite, Test, TestResult};
use crate::mm::mempolicy::uapi::{MPOL_F_NODE, MPOL_INTERLEAVE};
use crate::mm::mempolicy::{Mempolicies, Mempolicy, Mode};
use crate::mm::{Gfp, NodeMask, NumaStat};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "policy_interleave",
    tests: &[
        Test {
            name: "two_nodes_exactly_half_each",
            run: two_nodes_exactly_half_each,
        },
        Test {
            name: "every_memory_node_exactly",
            run: every_memory_node_exactly,
        },
        Test {
            name: "faults_interleave_by_index",
            run: faults_interleave_by_index,
        },
        Test {
            name: "drained_target_falls_back_without_hit",
            run: drained_target_falls_back_without_hit,
        },
    ],
};

/// 64 pages over two nodes: 32 each, alternating from the first node;
/// `get_mempolicy(MPOL_F_NODE)` predicts every page; 32 `interleave_hit`
/// and 32 `numa_hit` per node, local/other by CPU 0's node.
fn two_nodes_exactly_half_each(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (a, b) = two_memory_nodes(mm)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let mask = NodeMask::single(a).or(NodeMask::single(b));
    sys.set_mempolicy(&mut t, MPOL_INTERLEAVE, mask)
        .map_err(|e| format!("{e}"))?;
    let n = 64;
    let local = mm.numa_node_id();
    let before = mm.all_numa_stats();
    let mut bad = Vec::new();
    let mut pages = Vec::new();
    for k in 0..n {
        let next = sys.get_mempolicy(&mut t, 0, MPOL_F_NODE);
        match sys.alloc_pages(&mut t, Gfp::KERNEL, 0) {
            Ok(p) => {
                let want = if k % 2 == 0 { a } else { b };
                if p.nid != want || next != Ok((want as i32, mask)) {
                    bad.push(format!(
                        "page {k}: node {}, expected {want}; get_mempolicy said {next:?}",
                        p.nid
                    ));
                }
                pages.push(p);
            }
            Err(e) => bad.push(format!("page {k}: {e}")),
        }
    }
    let c = per_node(mm, &pages);
    if c[a as usize] != n / 2 || c[b as usize] != n / 2 {
        bad.push(format!("per node {c:?}, expected {} on {a} and {b}", n / 2));
    }
    let lo = |x: u32| {
        if x == local {
            NumaStat::LocalNode
        } else {
            NumaStat::OtherNode
        }
    };
    let half = n / 2;
    if let Err(e) = expect_stats(
        mm,
        &before,
        &[
            (a, NumaStat::Hit, half),
            (a, NumaStat::InterleaveHit, half),
            (a, lo(a), half),
            (b, NumaStat::Hit, half),
            (b, NumaStat::InterleaveHit, half),
            (b, lo(b), half),
        ],
    ) {
        bad.push(e);
    }
    bad.extend(give_back(mm, pages));
    problems(bad)
}

/// 16 pages per node with memory, interleaved over all of them: exactly 16
/// each, in node order round after round.
fn every_memory_node_exactly(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let nodes = memory_nodes(mm);
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    sys.set_mempolicy(&mut t, MPOL_INTERLEAVE, mm.memory_nodes())
        .map_err(|e| format!("{e}"))?;
    let per = 16;
    let mut bad = Vec::new();
    let mut pages = Vec::new();
    for k in 0..per * nodes.len() {
        match sys.alloc_pages(&mut t, Gfp::KERNEL, 0) {
            Ok(p) => {
                if p.nid != nodes[k % nodes.len()] {
                    bad.push(format!("page {k} on node {}", p.nid));
                }
                pages.push(p);
            }
            Err(e) => bad.push(format!("page {k}: {e}")),
        }
    }
    let c = per_node(mm, &pages);
    for &n in &nodes {
        if c[n as usize] != per as u64 {
            bad.push(format!("node {n}: {} pages, expected {per}", c[n as usize]));
        }
    }
    bad.extend(give_back(mm, pages));
    problems(bad)
}

/// A mapping of 16 pages bound to interleave over two nodes, faulted in
/// from the last page to the first: page i is on the `(pgoff + i) % 2`-th
/// node whatever the order; a mapping of the same object from page 1 on is
/// shifted by one; `interleave_nid` agrees.
fn faults_interleave_by_index(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (a, b) = two_memory_nodes(mm)?;
    let nodes = [a, b];
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let mask = NodeMask::single(a).or(NodeMask::single(b));
    let mut bad = Vec::new();
    for pgoff in [0u64, 1] {
        let len = 16 << 12;
        let addr = sys
            .mmap_pgoff(&mut t, len, pgoff)
            .map_err(|e| format!("{e}"))?;
        if let Err(e) = sys.mbind(&mut t, addr, len, MPOL_INTERLEAVE, mask, 0) {
            bad.push(format!("mbind: {e}"));
        }
        for i in (0..16u64).rev() {
            let want = nodes[((pgoff + i) % 2) as usize];
            match sys.fault(&mut t, addr + (i << 12)) {
                Ok(p) if p.nid == want => {}
                r => bad.push(format!(
                    "pgoff {pgoff} page {i}: {r:?}, expected node {want}"
                )),
            }
        }
    }
    let pol = Mempolicy::create(Mode::Interleave, 0, mask, mask, mm.memory_nodes())
        .ok()
        .flatten()
        .ok_or("interleave policy")?;
    for ilx in 0..10u64 {
        let got = sys.interleave_nid(&pol, ilx);
        if got != nodes[(ilx % 2) as usize] {
            bad.push(format!("interleave_nid({ilx}) = {got}"));
        }
    }
    bad.extend(exit(&sys, &mut t));
    problems(bad)
}

/// The first node drained: interleave's turn on it lands elsewhere with no
/// `interleave_hit` (a miss there, foreign on the drained node); the next
/// turn is a hit as usual.
fn drained_target_falls_back_without_hit(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (a, b) = two_memory_nodes(mm)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let mask = NodeMask::single(a).or(NodeMask::single(b));
    sys.set_mempolicy(&mut t, MPOL_INTERLEAVE, mask)
        .map_err(|e| format!("{e}"))?;
    let drained = exhaust_node(mm, a, Gfp::KERNEL);
    mm.drain_all_pages();
    let mut bad = Vec::new();
    let local = mm.numa_node_id();
    let before = mm.all_numa_stats();
    match sys.alloc_pages(&mut t, Gfp::NOWARN, 0) {
        Ok(p) => {
            let lo = if p.nid == local {
                NumaStat::LocalNode
            } else {
                NumaStat::OtherNode
            };
            if p.nid == a {
                bad.push("a page on the drained node".into());
            }
            if let Err(e) = expect_stats(
                mm,
                &before,
                &[
                    (p.nid, NumaStat::Miss, 1),
                    (a, NumaStat::Foreign, 1),
                    (p.nid, lo, 1),
                ],
            ) {
                bad.push(format!("drained turn: {e}"));
            }
            let _ = mm.free(p);
        }
        Err(e) => bad.push(format!("drained turn: {e}")),
    }
    let before = mm.all_numa_stats();
    match sys.alloc_pages(&mut t, Gfp::NOWARN, 0) {
        Ok(p) => {
            if p.nid != b {
                bad.push(format!("next turn on {}, expected {b}", p.nid));
            }
            let lo = if b == local {
                NumaStat::LocalNode
            } else {
                NumaStat::OtherNode
            };
            if let Err(e) = expect_stats(
                mm,
                &before,
                &[
                    (b, NumaStat::Hit, 1),
                    (b, NumaStat::InterleaveHit, 1),
                    (b, lo, 1),
                ],
            ) {
                bad.push(format!("next turn: {e}"));
            }
            let _ = mm.free(p);
        }
        Err(e) => bad.push(format!("next turn: {e}")),
    }
    bad.extend(give_back(mm, drained));
    problems(bad)
}

//! Suite `policy_weighted_interleave`: `MPOL_WEIGHTED_INTERLEAVE` with
//! weights 3:1 puts exactly 3/4 and 1/4 of a multiple of 4 pages on its two
//! nodes, as runs of 3 then 1 (the per-task `il_weight` countdown), with
//! `interleave_hit` on both; unset weights are 1 (plain interleave); faults
//! place by index through the weights; a weight change takes effect at the
//! next run, not inside the current one; the sysfs files read and write as
//! Linux 6.9's.

use alloc::format;
use alloc::vec::Vec;

use super::mm_util::{expect_stats, give_back, mm};
use super::policy_util::{exit, per_node, two_memory_nodes};
use crate::boot::Guest;
use crate::ktest::{problems, Suite, Test, TestResult};
use crate::mm::mempolicy::uapi::{MPOL_F_NODE, MPOL_WEIGHTED_INTERLEAVE};
use crate::mm::mempolicy::{Errno, Mempolicies, Mempolicy, Mode};
use crate::mm::{Gfp, NodeMask, NumaStat};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "policy_weighted_interleave",
    tests: &[
        Test {
            name: "three_to_one_exactly",
            run: three_to_one_exactly,
        },
        Test {
            name: "default_weight_is_one",
            run: default_weight_is_one,
        },
        Test {
            name: "faults_by_index",
            run: faults_by_index,
        },
        Test {
            name: "countdown_outlives_a_weight_change",
            run: countdown_outlives_a_weight_change,
        },
        Test {
            name: "sysfs_weights",
            run: sysfs_weights,
        },
    ],
};

/// 64 pages, weights 3 and 1: 48 and 16, as a a a b repeated;
/// `interleave_hit` 48 and 16.
fn three_to_one_exactly(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (a, b) = two_memory_nodes(mm)?;
    let sys = Mempolicies::new(mm);
    sys.weights().set(a, 3).map_err(|e| format!("{e}"))?;
    sys.weights().set(b, 1).map_err(|e| format!("{e}"))?;
    let mut t = sys.new_task();
    sys.set_mempolicy(
        &mut t,
        MPOL_WEIGHTED_INTERLEAVE,
        NodeMask::single(a).or(NodeMask::single(b)),
    )
    .map_err(|e| format!("{e}"))?;
    let n = 64u64;
    let local = mm.numa_node_id();
    let before = mm.all_numa_stats();
    let mut bad = Vec::new();
    let mut pages = Vec::new();
    for k in 0..n {
        match sys.alloc_pages(&mut t, Gfp::KERNEL, 0) {
            Ok(p) => {
                let want = if k % 4 < 3 { a } else { b };
                if p.nid != want {
                    bad.push(format!("page {k} on node {}, expected {want}", p.nid));
                }
                pages.push(p);
            }
            Err(e) => bad.push(format!("page {k}: {e}")),
        }
    }
    let c = per_node(mm, &pages);
    if c[a as usize] != n * 3 / 4 || c[b as usize] != n / 4 {
        bad.push(format!(
            "per node {c:?}, expected {} on {a}, {} on {b}",
            n * 3 / 4,
            n / 4
        ));
    }
    let lo = |x: u32| {
        if x == local {
            NumaStat::LocalNode
        } else {
            NumaStat::OtherNode
        }
    };
    if let Err(e) = expect_stats(
        mm,
        &before,
        &[
            (a, NumaStat::Hit, 48),
            (a, NumaStat::InterleaveHit, 48),
            (a, lo(a), 48),
            (b, NumaStat::Hit, 16),
            (b, NumaStat::InterleaveHit, 16),
            (b, lo(b), 16),
        ],
    ) {
        bad.push(e);
    }
    bad.extend(give_back(mm, pages));
    problems(bad)
}

/// No weight set: every node weighs 1, so pages alternate.
fn default_weight_is_one(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (a, b) = two_memory_nodes(mm)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    sys.set_mempolicy(
        &mut t,
        MPOL_WEIGHTED_INTERLEAVE,
        NodeMask::single(a).or(NodeMask::single(b)),
    )
    .map_err(|e| format!("{e}"))?;
    let mut bad = Vec::new();
    let mut pages = Vec::new();
    for k in 0..8 {
        match sys.alloc_pages(&mut t, Gfp::KERNEL, 0) {
            Ok(p) => {
                let want = if k % 2 == 0 { a } else { b };
                if p.nid != want {
                    bad.push(format!("page {k} on node {}, expected {want}", p.nid));
                }
                pages.push(p);
            }
            Err(e) => bad.push(format!("page {k}: {e}")),
        }
    }
    bad.extend(give_back(mm, pages));
    problems(bad)
}

/// Weights 3:1 and a weighted-interleave mapping faulted backwards: page i
/// is on a for `i % 4 < 3`, else b; `weighted_interleave_nid` agrees.
fn faults_by_index(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (a, b) = two_memory_nodes(mm)?;
    let sys = Mempolicies::new(mm);
    sys.weights().set(a, 3).map_err(|e| format!("{e}"))?;
    let mask = NodeMask::single(a).or(NodeMask::single(b));
    let mut t = sys.new_task();
    let len = 16 << 12;
    let addr = sys.mmap_pgoff(&mut t, len, 0).map_err(|e| format!("{e}"))?;
    let mut bad = Vec::new();
    if let Err(e) = sys.mbind(&mut t, addr, len, MPOL_WEIGHTED_INTERLEAVE, mask, 0) {
        bad.push(format!("mbind: {e}"));
    }
    for i in (0..16u64).rev() {
        let want = if i % 4 < 3 { a } else { b };
        match sys.fault(&mut t, addr + (i << 12)) {
            Ok(p) if p.nid == want => {}
            r => bad.push(format!("page {i}: {r:?}, expected node {want}")),
        }
    }
    let pol = Mempolicy::create(Mode::WeightedInterleave, 0, mask, mask, mm.memory_nodes())
        .ok()
        .flatten()
        .ok_or("policy")?;
    for ilx in 0..12u64 {
        let want = if ilx % 4 < 3 { a } else { b };
        let got = sys.weighted_interleave_nid(&pol, ilx);
        if got != want {
            bad.push(format!(
                "weighted_interleave_nid({ilx}) = {got}, expected {want}"
            ));
        }
    }
    bad.extend(exit(&sys, &mut t));
    problems(bad)
}

/// Weight 3 on a: one page on a (two left in the run); a's weight drops to
/// 1: the run still ends with two more pages on a, and
/// `get_mempolicy(MPOL_F_NODE)` names a while the run lasts; then b, then
/// a once (the new weight), then b.
fn countdown_outlives_a_weight_change(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (a, b) = two_memory_nodes(mm)?;
    let sys = Mempolicies::new(mm);
    sys.weights().set(a, 3).map_err(|e| format!("{e}"))?;
    let mask = NodeMask::single(a).or(NodeMask::single(b));
    let mut t = sys.new_task();
    sys.set_mempolicy(&mut t, MPOL_WEIGHTED_INTERLEAVE, mask)
        .map_err(|e| format!("{e}"))?;
    let mut bad = Vec::new();
    let mut pages = Vec::new();
    let mut step = |want: u32, change: Option<u8>, bad: &mut Vec<alloc::string::String>| {
        let next = sys.get_mempolicy(&mut t, 0, MPOL_F_NODE);
        if next.map(|r| r.0) != Ok(want as i32) {
            bad.push(format!(
                "get_mempolicy(MPOL_F_NODE) {next:?}, expected {want}"
            ));
        }
        match sys.alloc_pages(&mut t, Gfp::KERNEL, 0) {
            Ok(p) => {
                if p.nid != want {
                    bad.push(format!("page on {}, expected {want}", p.nid));
                }
                pages.push(p);
            }
            Err(e) => bad.push(format!("{e}")),
        }
        if let Some(w) = change {
            let _ = sys.weights().set(a, w);
        }
    };
    step(a, Some(1), &mut bad);
    for want in [a, a, b, a, b] {
        step(want, None, &mut bad);
    }
    bad.extend(give_back(mm, pages));
    problems(bad)
}

/// `nodeN` reads the effective weight; writes take decimal, hex or octal;
/// an empty write restores the default; anything else is `EINVAL`.
fn sysfs_weights(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    let w = sys.weights();
    let mut bad = Vec::new();
    let checks: [(&str, Result<usize, Errno>, &str); 6] = [
        ("4\n", Ok(2), "4\n"),
        ("0x10", Ok(4), "16\n"),
        ("", Ok(0), "1\n"),
        ("256", Err(Errno::EINVAL), "1\n"),
        ("-1", Err(Errno::EINVAL), "1\n"),
        ("0", Ok(1), "1\n"),
    ];
    for (input, want, shows) in checks {
        let r = w.store(0, input);
        if r != want || w.show(0) != shows {
            bad.push(format!(
                "store({input:?}) = {r:?}, shows {:?}; expected {want:?}, {shows:?}",
                w.show(0)
            ));
        }
    }
    problems(bad)
}

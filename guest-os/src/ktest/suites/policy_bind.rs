//! Suite `policy_bind`: `MPOL_BIND` never leaves its nodes (from every CPU,
//! for every node and pair of nodes with memory); it starts at the first
//! node of the local zonelist inside the mask (a hit there); when its nodes
//! are exhausted the allocation fails rather than leave the mask; `mbind`
//! binds a mapping, refuses misplaced pages with `MPOL_MF_STRICT` and moves
//! them with `MPOL_MF_MOVE`; allocations for zones below `policy_zone` are
//! not bound.

use alloc::format;
use alloc::vec::Vec;

use super::mm_util::{exhaust_node, expect_stats, give_back, mm};
use super::policy_util::{exit, memory_nodes, per_node, preferred_zone_node, two_memory_nodes};
use crate::boot::Guest;
use crate::ktest::{problems, skip, Suite, Test, TestResult};
use crate::mm::mempolicy::uapi::{
    MPOL_BIND, MPOL_DEFAULT, MPOL_F_ADDR, MPOL_MF_MOVE, MPOL_MF_STRICT,
};
use crate::mm::mempolicy::{Errno, Mempolicies};
use crate::mm::stats::zone_statistics;
use crate::mm::{AllocError, Gfp, NodeMask, ZoneType};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "policy_bind",
    tests: &[
        Test {
            name: "never_leaves_the_mask",
            run: never_leaves_the_mask,
        },
        Test {
            name: "exhausted_mask_fails",
            run: exhausted_mask_fails,
        },
        Test {
            name: "mbind_strict_and_move",
            run: mbind_strict_and_move,
        },
        Test {
            name: "lower_zones_are_not_bound",
            run: lower_zones_are_not_bound,
        },
    ],
};

/// Every single node and pair of nodes with memory, from every CPU: 8
/// pages, all inside, the first on the preferred zone's node (the first of
/// the CPU node's zonelist inside the mask), counted as `zone_statistics`
/// counts it.
fn never_leaves_the_mask(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    let nodes = memory_nodes(mm);
    let mut masks: Vec<NodeMask> = nodes.iter().map(|&n| NodeMask::single(n)).collect();
    for (i, &a) in nodes.iter().enumerate() {
        for &b in &nodes[i + 1..] {
            masks.push(NodeMask::single(a).or(NodeMask::single(b)));
        }
    }
    let mut bad = Vec::new();
    for cpu in 0..mm.nr_cpus() {
        let r = mm.with_cpu(cpu, |m| {
            let mut out = Vec::new();
            let mut t = sys.new_task();
            for mask in &masks {
                if let Err(e) = sys.set_mempolicy(&mut t, MPOL_BIND, *mask) {
                    out.push(format!("mask {mask}: {e}"));
                    continue;
                }
                let node = m.numa_node_id();
                let pref = preferred_zone_node(m, node, Some(mask));
                let mut pages = Vec::new();
                for k in 0..8 {
                    let before = m.all_numa_stats();
                    match sys.alloc_pages(&mut t, Gfp::KERNEL, 0) {
                        Ok(p) => {
                            if !mask.contains(p.nid) {
                                out.push(format!("mask {mask}: page on node {}", p.nid));
                            }
                            if k == 0 {
                                if Some(p.nid) != pref {
                                    out.push(format!(
                                        "mask {mask}: first page on {}, preferred zone on {pref:?}",
                                        p.nid
                                    ));
                                }
                                let want: Vec<_> =
                                    zone_statistics(pref.unwrap_or(p.nid), p.nid, node)
                                        .map(|(n, s)| (n, s, 1))
                                        .collect();
                                if let Err(e) = expect_stats(m, &before, &want) {
                                    out.push(format!("mask {mask}: {e}"));
                                }
                            }
                            pages.push(p);
                        }
                        Err(e) => out.push(format!("mask {mask}: {e}")),
                    }
                }
                out.extend(give_back(m, pages));
            }
            (!out.is_empty()).then(|| format!("cpu {cpu}: {}", out.join("; ")))
        });
        bad.extend(r.flatten());
    }
    problems(bad)
}

/// Bound to one node that is then drained: the allocation fails (and moves
/// no counter) where an unbound one succeeds elsewhere. Bound to two: the
/// second takes over when the first is drained, and when both are, the
/// allocation fails.
fn exhausted_mask_fails(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (a, b) = two_memory_nodes(mm)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let mut free_task = sys.new_task();
    let mut bad = Vec::new();
    sys.set_mempolicy(&mut t, MPOL_BIND, NodeMask::single(a))
        .map_err(|e| format!("{e}"))?;
    let drained_a = exhaust_node(mm, a, Gfp::KERNEL);
    mm.drain_all_pages();
    let before = mm.all_numa_stats();
    let failures = mm.failures();
    let r = sys.alloc_pages(&mut t, Gfp::NOWARN, 0);
    if r != Err(AllocError::NoMemory) {
        bad.push(format!("bound to drained node {a}: {r:?}"));
    }
    if let Err(e) = expect_stats(mm, &before, &[]) {
        bad.push(format!("a failed bind moved counters: {e}"));
    }
    if mm.failures() != failures + 1 {
        bad.push(format!(
            "{} failures, expected one",
            mm.failures() - failures
        ));
    }
    match sys.alloc_pages(&mut free_task, Gfp::NOWARN, 0) {
        Ok(p) => {
            if p.nid == a {
                bad.push("an unbound page on the drained node".into());
            }
            let _ = mm.free(p);
        }
        Err(e) => bad.push(format!("unbound: {e}")),
    }
    // Two nodes: the second takes over, then nothing.
    let mask = NodeMask::single(a).or(NodeMask::single(b));
    sys.set_mempolicy(&mut t, MPOL_BIND, mask)
        .map_err(|e| format!("{e}"))?;
    let local = mm.numa_node_id();
    let pref = preferred_zone_node(mm, local, Some(&mask)).unwrap_or(a);
    let before = mm.all_numa_stats();
    match sys.alloc_pages(&mut t, Gfp::NOWARN, 0) {
        Ok(p) => {
            if p.nid != b {
                bad.push(format!(
                    "bound to {mask} with {a} drained: page on {}",
                    p.nid
                ));
            }
            let want: Vec<_> = zone_statistics(pref, p.nid, local)
                .map(|(n, s)| (n, s, 1))
                .collect();
            if let Err(e) = expect_stats(mm, &before, &want) {
                bad.push(e);
            }
            let _ = mm.free(p);
        }
        Err(e) => bad.push(format!("bound to {mask} with {a} drained: {e}")),
    }
    let drained_b = exhaust_node(mm, b, Gfp::KERNEL);
    mm.drain_all_pages();
    let r = sys.alloc_pages(&mut t, Gfp::NOWARN, 0);
    if r != Err(AllocError::NoMemory) {
        bad.push(format!("bound to drained {mask}: {r:?}"));
    }
    bad.extend(give_back(mm, drained_a));
    bad.extend(give_back(mm, drained_b));
    problems(bad)
}

/// Eight pages faulted locally, then `mbind(MPOL_BIND, other node)`: with
/// `MPOL_MF_STRICT` alone `EIO` and the mapping keeps its policy; with
/// `MPOL_MF_MOVE | MPOL_MF_STRICT` every page moves to the node; new faults
/// land there.
fn mbind_strict_and_move(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let here = mm.numa_mem_id();
    let Some(&other) = memory_nodes(mm).iter().find(|&&n| n != here) else {
        skip!("no node with memory besides CPU 0's");
    };
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let len = 16 << 12;
    let a = sys.mmap(&mut t, len).map_err(|e| format!("{e}"))?;
    let mut bad = Vec::new();
    for i in 0..8 {
        if let Err(e) = sys.fault(&mut t, a + (i << 12)) {
            bad.push(format!("fault {i}: {e}"));
        }
    }
    let mask = NodeMask::single(other);
    let r = sys.mbind(&mut t, a, len, MPOL_BIND, mask, MPOL_MF_STRICT);
    if r != Err(Errno::EIO) {
        bad.push(format!("STRICT over misplaced pages: {r:?}, expected EIO"));
    }
    match sys.get_mempolicy(&mut t, a, MPOL_F_ADDR) {
        Ok((MPOL_DEFAULT, _)) => {}
        r => bad.push(format!("after EIO the VMA policy is {r:?}")),
    }
    if let Err(e) = sys.mbind(
        &mut t,
        a,
        len,
        MPOL_BIND,
        mask,
        MPOL_MF_MOVE | MPOL_MF_STRICT,
    ) {
        bad.push(format!("MOVE: {e}"));
    }
    for i in 8..16 {
        if let Err(e) = sys.fault(&mut t, a + (i << 12)) {
            bad.push(format!("fault {i}: {e}"));
        }
    }
    let pages: Vec<_> = t.pages().map(|(_, p)| *p).collect();
    let c = per_node(mm, &pages);
    if c[other as usize] != 16 || pages.len() != 16 {
        bad.push(format!(
            "pages per node after MOVE: {c:?}, expected all 16 on {other}"
        ));
    }
    match sys.get_mempolicy(&mut t, a, MPOL_F_ADDR) {
        Ok((MPOL_BIND, m)) if m == mask => {}
        r => bad.push(format!("VMA policy {r:?}")),
    }
    bad.extend(exit(&sys, &mut t));
    problems(bad)
}

/// `apply_policy_zone`: with memory in a zone above `ZONE_DMA`, a
/// `GFP_DMA` allocation is not bound: it may leave the mask.
fn lower_zones_are_not_bound(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    if sys.policy_zone() == ZoneType::Dma {
        skip!("policy_zone is ZONE_DMA: every allocation is bound");
    }
    let dma_nodes: Vec<u32> = mm
        .nodes()
        .iter()
        .filter(|n| n.zone(ZoneType::Dma).managed() > 0)
        .map(|n| n.id())
        .collect();
    let Some(&outside) = memory_nodes(mm).iter().find(|n| !dma_nodes.contains(n)) else {
        skip!("no ZONE_DMA memory, or every node has some");
    };
    if dma_nodes.is_empty() {
        skip!("no ZONE_DMA memory in this domain");
    }
    let mut t = sys.new_task();
    sys.set_mempolicy(&mut t, MPOL_BIND, NodeMask::single(outside))
        .map_err(|e| format!("{e}"))?;
    let p = sys
        .alloc_pages(&mut t, Gfp::DMA, 0)
        .map_err(|e| format!("GFP_DMA: {e}"))?;
    let bad = if dma_nodes.contains(&p.nid) {
        Vec::new()
    } else {
        alloc::vec![format!("GFP_DMA page on node {}", p.nid)]
    };
    let _ = mm.free(p);
    problems(bad)
}

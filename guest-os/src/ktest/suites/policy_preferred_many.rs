//! Suite `policy_preferred_many`: `MPOL_PREFERRED_MANY` allocates inside
//! its nodes while they have memory (the first pass, restricted to the
//! mask, succeeds: no failed pass); with every node of the mask drained the
//! first pass fails (one failure, no counter moved by it) and only the
//! second, unrestricted pass places the page outside the mask, counted
//! against the local zonelist's preferred zone; bind with the same mask
//! fails instead. A home node (`set_mempolicy_home_node`) starts the
//! search there.

use alloc::format;
use alloc::vec::Vec;

use super::mm_util::{exhaust_node, expect_stats, give_back, mm};
use super::policy_util::{exit, memory_nodes, preferred_zone_node, two_memory_nodes};
use crate::boot::Guest;
use crate::ktest::{problems, skip, Suite, Test, TestResult};
use crate::mm::mempolicy::uapi::{MPOL_BIND, MPOL_PREFERRED_MANY};
use crate::mm::mempolicy::Mempolicies;
use crate::mm::stats::zone_statistics;
use crate::mm::{AllocError, Gfp, NodeMask, ZonelistKind};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "policy_preferred_many",
    tests: &[
        Test {
            name: "first_pass_inside_the_mask",
            run: first_pass_inside_the_mask,
        },
        Test {
            name: "second_pass_only_when_the_mask_is_drained",
            run: second_pass_only_when_the_mask_is_drained,
        },
        Test {
            name: "home_node_first",
            run: home_node_first,
        },
    ],
};

/// The mask: every node with memory but the last of CPU 0's fallback
/// order (so that one node is outside).
fn mask_and_outside(g: &Guest) -> Result<(NodeMask, u32), crate::ktest::TestError> {
    let mm = mm(g)?;
    two_memory_nodes(mm)?;
    let order: Vec<u32> = mm
        .zonelist(mm.numa_node_id(), ZonelistKind::Fallback)
        .map(|zl| zl.nodes())
        .unwrap_or_default();
    let outside = *order.last().ok_or("empty zonelist")?;
    Ok((mm.memory_nodes().andnot(NodeMask::single(outside)), outside))
}

/// Eight pages: inside the mask, the first on the preferred zone's node
/// (the local zonelist inside the mask), and no failed pass.
fn first_pass_inside_the_mask(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (mask, _) = mask_and_outside(g)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    sys.set_mempolicy(&mut t, MPOL_PREFERRED_MANY, mask)
        .map_err(|e| format!("{e}"))?;
    let local = mm.numa_node_id();
    let pref = preferred_zone_node(mm, local, Some(&mask));
    let failures = mm.failures();
    let mut bad = Vec::new();
    let mut pages = Vec::new();
    for k in 0..8 {
        match sys.alloc_pages(&mut t, Gfp::KERNEL, 0) {
            Ok(p) => {
                if !mask.contains(p.nid) || (k == 0 && Some(p.nid) != pref) {
                    bad.push(format!(
                        "page {k} on node {}, mask {mask}, preferred {pref:?}",
                        p.nid
                    ));
                }
                pages.push(p);
            }
            Err(e) => bad.push(format!("page {k}: {e}")),
        }
    }
    if mm.failures() != failures {
        bad.push(format!(
            "{} failed passes with memory in the mask",
            mm.failures() - failures
        ));
    }
    bad.extend(give_back(mm, pages));
    problems(bad)
}

/// Every node of the mask drained: bind with the mask fails; preferred-many
/// fails its first pass (exactly one failure more) and its second pass puts
/// the page outside, on the first node of the local zonelist with memory,
/// counted as `zone_statistics` counts an unrestricted allocation.
fn second_pass_only_when_the_mask_is_drained(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (mask, outside) = mask_and_outside(g)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let mut drained = Vec::new();
    for n in mask.iter() {
        drained.extend(exhaust_node(mm, n, Gfp::KERNEL));
    }
    mm.drain_all_pages();
    let mut bad = Vec::new();
    if let Err(e) = sys.set_mempolicy(&mut t, MPOL_BIND, mask) {
        bad.push(format!("bind: {e}"));
    }
    let r = sys.alloc_pages(&mut t, Gfp::NOWARN, 0);
    if r != Err(AllocError::NoMemory) {
        bad.push(format!("bind to the drained mask: {r:?}"));
    }
    if let Err(e) = sys.set_mempolicy(&mut t, MPOL_PREFERRED_MANY, mask) {
        bad.push(format!("preferred-many: {e}"));
    }
    let local = mm.numa_node_id();
    let pref = preferred_zone_node(mm, local, None);
    let failures = mm.failures();
    let before = mm.all_numa_stats();
    match sys.alloc_pages(&mut t, Gfp::KERNEL, 0) {
        Ok(p) => {
            if p.nid != outside {
                bad.push(format!("second pass on node {}, expected {outside}", p.nid));
            }
            if mm.failures() != failures + 1 {
                bad.push(format!(
                    "{} failed passes, expected exactly the first",
                    mm.failures() - failures
                ));
            }
            let want: Vec<_> = zone_statistics(pref.unwrap_or(p.nid), p.nid, local)
                .map(|(n, s)| (n, s, 1))
                .collect();
            if let Err(e) = expect_stats(mm, &before, &want) {
                bad.push(e);
            }
            let _ = mm.free(p);
        }
        Err(e) => bad.push(format!("second pass: {e}")),
    }
    bad.extend(give_back(mm, drained));
    problems(bad)
}

/// A mapping with preferred-many over two nodes and the second as home
/// node: faults land on the home node.
fn home_node_first(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let nodes = memory_nodes(mm);
    let local = mm.numa_node_id();
    let Some(&home) = nodes.iter().rev().find(|&&n| n != local) else {
        skip!("no node with memory besides CPU 0's");
    };
    let mask = mm.memory_nodes();
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let len = 4 << 12;
    let a = sys.mmap(&mut t, len).map_err(|e| format!("{e}"))?;
    let mut bad = Vec::new();
    if let Err(e) = sys.mbind(&mut t, a, len, MPOL_PREFERRED_MANY, mask, 0) {
        bad.push(format!("mbind: {e}"));
    }
    if let Err(e) = sys.set_mempolicy_home_node(&mut t, a, len, u64::from(home), 0) {
        bad.push(format!("home node: {e}"));
    }
    for i in 0..4 {
        match sys.fault(&mut t, a + (i << 12)) {
            Ok(p) if p.nid == home => {}
            r => bad.push(format!("page {i}: {r:?}, expected home node {home}")),
        }
    }
    bad.extend(exit(&sys, &mut t));
    problems(bad)
}

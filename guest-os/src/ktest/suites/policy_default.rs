//! Suite `policy_default`: without a policy (and with `MPOL_LOCAL`, and
//! with `MPOL_PREFERRED` and no nodes, which is local) a task's pages land
//! on its CPU's local memory node (`numa_mem_id()`), counted as Linux's
//! `zone_statistics` counts them; page faults do the same; `get_mempolicy`
//! reports `MPOL_DEFAULT`/`MPOL_LOCAL` with an empty nodemask;
//! `__GFP_THISNODE` ignores the task policy.

use alloc::format;
use alloc::vec::Vec;

use super::mm_util::{expect_stats, mm};
use super::policy_util::{exit, memory_nodes, ok, preferred_zone_node};
use crate::boot::Guest;
use crate::ktest::{problems, skip, Suite, Test, TestResult};
use crate::mm::mempolicy::uapi::{
    MPOL_BIND, MPOL_DEFAULT, MPOL_F_ADDR, MPOL_F_NODE, MPOL_LOCAL, MPOL_PREFERRED,
};
use crate::mm::mempolicy::Mempolicies;
use crate::mm::stats::zone_statistics;
use crate::mm::{Gfp, NodeMask, NumaStat};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "policy_default",
    tests: &[
        Test {
            name: "local_on_numa_mem_id_from_every_cpu",
            run: local_on_numa_mem_id_from_every_cpu,
        },
        Test {
            name: "local_and_empty_preferred_are_local",
            run: local_and_empty_preferred_are_local,
        },
        Test {
            name: "page_faults_are_local",
            run: page_faults_are_local,
        },
        Test {
            name: "thisnode_ignores_the_task_policy",
            run: thisnode_ignores_the_task_policy,
        },
    ],
};

/// As each CPU, with no policy, then `MPOL_LOCAL`: the page is on
/// `numa_mem_id()`, and the counters move exactly as `zone_statistics`
/// says for the CPU node's preferred zone.
fn local_on_numa_mem_id_from_every_cpu(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    let mut bad = Vec::new();
    for cpu in 0..mm.nr_cpus() {
        let r = mm.with_cpu(cpu, |m| {
            let mut out = Vec::new();
            let mut t = sys.new_task();
            for mode in [None, Some(MPOL_LOCAL)] {
                if let Some(mode) = mode {
                    if let Err(e) = sys.set_mempolicy(&mut t, mode, NodeMask::NONE) {
                        out.push(format!("MPOL_LOCAL: {e}"));
                    }
                }
                let node = m.numa_node_id();
                let Some(pref) = preferred_zone_node(m, node, None) else {
                    out.push("no memory".into());
                    break;
                };
                let before = m.all_numa_stats();
                match sys.alloc_pages(&mut t, Gfp::KERNEL, 0) {
                    Ok(p) => {
                        if p.nid != m.numa_mem_id() {
                            out.push(format!(
                                "{mode:?}: page on node {}, numa_mem_id {}",
                                p.nid,
                                m.numa_mem_id()
                            ));
                        }
                        let want: Vec<_> = zone_statistics(pref, p.nid, node)
                            .map(|(n, s)| (n, s, 1))
                            .collect();
                        if let Err(e) = expect_stats(m, &before, &want) {
                            out.push(e);
                        }
                        let _ = m.free(p);
                    }
                    Err(e) => out.push(format!("{mode:?}: {e}")),
                }
            }
            (!out.is_empty()).then(|| format!("cpu {cpu}: {}", out.join("; ")))
        });
        bad.extend(r.flatten());
    }
    problems(bad)
}

/// `get_mempolicy` after `MPOL_DEFAULT`, `MPOL_LOCAL` and `MPOL_PREFERRED`
/// with no nodes (which `mpol_new` turns into `MPOL_LOCAL`).
fn local_and_empty_preferred_are_local(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let mut bad = Vec::new();
    for (mode, want) in [
        (MPOL_DEFAULT, MPOL_DEFAULT),
        (MPOL_LOCAL, MPOL_LOCAL),
        (MPOL_PREFERRED, MPOL_LOCAL),
        (MPOL_DEFAULT, MPOL_DEFAULT),
    ] {
        if let Err(e) = ok("set", sys.set_mempolicy(&mut t, mode, NodeMask::NONE)) {
            bad.push(format!("mode {mode}: {e}"));
            continue;
        }
        match sys.get_mempolicy(&mut t, 0, 0) {
            Ok((m, nodes)) if m == want && nodes.is_empty() => {}
            r => bad.push(format!(
                "mode {mode}: get_mempolicy {r:?}, expected ({want}, empty)"
            )),
        }
        let is_default = t.mempolicy().is_none();
        if is_default != (want == MPOL_DEFAULT) {
            bad.push(format!("mode {mode}: task policy {:?}", t.mempolicy()));
        }
    }
    problems(bad)
}

/// Eight pages of a mapping, touched: all on `numa_mem_id()`, and
/// `get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)` names that node; the VMA's
/// policy reads as `MPOL_DEFAULT`.
fn page_faults_are_local(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let mut bad = Vec::new();
    let want = mm.numa_mem_id();
    let addr = sys
        .mmap(&mut t, 8 << 12)
        .map_err(|e| format!("mmap: {e}"))?;
    for i in 0..8u64 {
        let a = addr + (i << 12);
        match sys.fault(&mut t, a) {
            Ok(p) if p.nid == want => {}
            r => bad.push(format!("page {i}: {r:?}, expected node {want}")),
        }
        match sys.get_mempolicy(&mut t, a, MPOL_F_NODE | MPOL_F_ADDR) {
            Ok((n, _)) if n == want as i32 => {}
            r => bad.push(format!("page {i}: get_mempolicy(NODE|ADDR) {r:?}")),
        }
    }
    match sys.get_mempolicy(&mut t, addr, MPOL_F_ADDR) {
        Ok((MPOL_DEFAULT, m)) if m.is_empty() => {}
        r => bad.push(format!("get_mempolicy(ADDR) {r:?}")),
    }
    if t.nr_pages() != 8 {
        bad.push(format!("{} pages mapped, expected 8", t.nr_pages()));
    }
    bad.extend(exit(&sys, &mut t));
    problems(bad)
}

/// A task bound elsewhere: `alloc_pages(__GFP_THISNODE)` uses the default
/// (local) policy, not the task's, and lands on the CPU's node.
fn thisnode_ignores_the_task_policy(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let local = mm.numa_node_id();
    if !mm.memory_nodes().contains(local) {
        skip!("CPU 0's node {local} has no memory");
    }
    let Some(&other) = memory_nodes(mm).iter().find(|&&n| n != local) else {
        skip!("one node with memory");
    };
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    sys.set_mempolicy(&mut t, MPOL_BIND, NodeMask::single(other))
        .map_err(|e| format!("bind: {e}"))?;
    let before = mm.all_numa_stats();
    let p = sys
        .alloc_pages(&mut t, Gfp::THISNODE, 0)
        .map_err(|e| format!("THISNODE: {e}"))?;
    let mut bad = Vec::new();
    if p.nid != local {
        bad.push(format!("THISNODE page on node {}, expected {local}", p.nid));
    }
    if let Err(e) = expect_stats(
        mm,
        &before,
        &[(local, NumaStat::Hit, 1), (local, NumaStat::LocalNode, 1)],
    ) {
        bad.push(e);
    }
    let _ = mm.free(p);
    let q = sys
        .alloc_pages(&mut t, Gfp::KERNEL, 0)
        .map_err(|e| format!("bound: {e}"))?;
    if q.nid != other {
        bad.push(format!("bound page on node {}, expected {other}", q.nid));
    }
    let _ = mm.free(q);
    problems(bad)
}

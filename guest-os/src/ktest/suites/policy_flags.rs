//! Suite `policy_flags`: `MPOL_F_STATIC_NODES` and `MPOL_F_RELATIVE_NODES`,
//! and rebinding when the allowed nodes (the cpuset's `mems`) change, as
//! `Documentation/admin-guide/mm/numa_memory_policy.rst` describes and
//! Linux 6.x's `mpol_rebind_policy` does: the documentation's examples on
//! masks of up to 8 nodes, then the same rules on this machine's nodes with
//! real allocations; VMA policies are rebound too; preferred policies keep
//! their node (the cpuset still confines the allocation).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::mm_util::mm;
use super::policy_util::{exit, per_node, two_memory_nodes};
use crate::boot::Guest;
use crate::ktest::{problems, Suite, Test, TestResult};
use crate::mm::mempolicy::uapi::{
    MPOL_BIND, MPOL_F_RELATIVE_NODES, MPOL_F_STATIC_NODES, MPOL_INTERLEAVE, MPOL_PREFERRED,
};
use crate::mm::mempolicy::{Errno, Mempolicies, Mempolicy, Mode};
use crate::mm::{Gfp, NodeMask};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "policy_flags",
    tests: &[
        Test {
            name: "documentation_examples",
            run: documentation_examples,
        },
        Test {
            name: "static_nodes_on_this_machine",
            run: static_nodes_on_this_machine,
        },
        Test {
            name: "relative_nodes_on_this_machine",
            run: relative_nodes_on_this_machine,
        },
        Test {
            name: "default_remap_and_preferred",
            run: default_remap_and_preferred,
        },
        Test {
            name: "vma_policies_rebind",
            run: vma_policies_rebind,
        },
        Test {
            name: "cpuset_mems_errors",
            run: cpuset_mems_errors,
        },
    ],
};

fn m(s: &str) -> NodeMask {
    NodeMask::parse(s).unwrap_or_default()
}

/// A policy on abstract nodes (any of 64 allowed, all "with memory").
fn policy(mode: Mode, flags: i32, nodes: &str, allowed: &str) -> Result<Mempolicy, String> {
    Mempolicy::create(
        mode,
        flags as u16,
        m(nodes),
        m(allowed),
        NodeMask::first(64),
    )
    .map_err(|e| format!("{e}"))?
    .ok_or_else(|| String::from("default policy"))
}

/// The documentation's examples:
/// - static: interleave over 1-3 in a cpuset with mems 1-3, mems become
///   3-5: without the flag interleave moves to 3-5; with it, to 3 only;
///   back to 1-3: 1-3 again; with no user node allowed (6-7): the new
///   mems themselves.
/// - relative: a nodemask of 2-5 relative to mems 2-5; mems 3-7 give
///   3,5-7; mems 0,2-3,5 give 0,2-3,5. Nodes 0,2,4 are "the first, third
///   and fifth" allowed node: 1,3,5 of mems 1-5; with mems 1-3, 4 wraps
///   (4 % 3 = 1) and all three are used.
fn documentation_examples(_: &Guest) -> TestResult {
    let mut bad = Vec::new();
    let mut check = |what: &str, p: &Mempolicy, want: &str| {
        if p.nodes() != m(want) {
            bad.push(format!("{what}: nodes {}, expected {want}", p.nodes()));
        }
    };
    let mut plain = policy(Mode::Interleave, 0, "1-3", "1-3")?;
    plain.rebind(m("3-5"));
    check("default 1-3 -> mems 3-5", &plain, "3-5");
    let mut st = policy(Mode::Interleave, MPOL_F_STATIC_NODES, "1-3", "1-3")?;
    st.rebind(m("3-5"));
    check("static 1-3 -> mems 3-5", &st, "3");
    st.rebind(m("1-3"));
    check("static 1-3 -> mems 1-3 again", &st, "1-3");
    st.rebind(m("6-7"));
    check("static 1-3 -> mems 6-7", &st, "6-7");
    let mut rel = policy(Mode::Interleave, MPOL_F_RELATIVE_NODES, "2-5", "2-5")?;
    check("relative 2-5 in 2-5", &rel, "2-5");
    rel.rebind(m("3-7"));
    check("relative 2-5 -> mems 3-7", &rel, "3,5-7");
    rel.rebind(m("0,2-3,5"));
    check("relative 2-5 -> mems 0,2-3,5", &rel, "0,2-3,5");
    let mut rel = policy(Mode::Bind, MPOL_F_RELATIVE_NODES, "0,2,4", "1-5")?;
    check("relative 0,2,4 in 1-5", &rel, "1,3,5");
    rel.rebind(m("1-3"));
    check("relative 0,2,4 -> mems 1-3", &rel, "1-3");
    // The user's nodemask is what get_mempolicy reports for both flags.
    let keeps_user = rel.w() == m("0,2,4") && rel.stores_user_nodemask();
    // A default remap is not relative: 1,3,5 in 1-5 -> 7-9 -> 1-3 loses
    // the spacing ("may not preserve the relative nature").
    let mut p = policy(Mode::Bind, 0, "1,3,5", "1-5")?;
    p.rebind(m("7-9"));
    check("remap 1,3,5 of 1-5 -> 7-9", &p, "7-9");
    p.rebind(m("1-5"));
    check("remap back to 1-5", &p, "1-3");
    if !keeps_user {
        bad.push(format!("relative policy keeps {rel:?}"));
    }
    problems(bad)
}

fn pair(a: u32, b: u32) -> NodeMask {
    NodeMask::single(a).or(NodeMask::single(b))
}

/// Allocates `n` pages with the task policy; the nodes used.
fn nodes_used(
    sys: &Mempolicies<'_>,
    t: &mut crate::mm::mempolicy::Task,
    n: usize,
) -> Result<NodeMask, String> {
    let mut pages = Vec::new();
    for _ in 0..n {
        pages.push(
            sys.alloc_pages(t, Gfp::KERNEL, 0)
                .map_err(|e| format!("{e}"))?,
        );
    }
    let used = pages.iter().map(|p| p.nid).collect();
    for p in pages {
        let _ = sys.mm().free(p);
    }
    Ok(used)
}

/// Interleave over a,b with static nodes; mems {b}: interleave on b only;
/// mems {a,b} again: both (the user's mask is remembered). Bind with
/// static nodes and a node outside the cpuset: accepted, effective when
/// the cpuset grows.
fn static_nodes_on_this_machine(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (a, b) = two_memory_nodes(mm)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let mut bad = Vec::new();
    let both = pair(a, b);
    sys.cpuset_set_mems(&mut t, both)
        .map_err(|e| format!("{e}"))?;
    sys.set_mempolicy(&mut t, MPOL_INTERLEAVE | MPOL_F_STATIC_NODES, both)
        .map_err(|e| format!("{e}"))?;
    sys.cpuset_set_mems(&mut t, NodeMask::single(b))
        .map_err(|e| format!("{e}"))?;
    match nodes_used(&sys, &mut t, 4) {
        Ok(u) if u == NodeMask::single(b) => {}
        r => bad.push(format!("static, mems {b}: used {r:?}")),
    }
    sys.cpuset_set_mems(&mut t, both)
        .map_err(|e| format!("{e}"))?;
    match nodes_used(&sys, &mut t, 4) {
        Ok(u) if u == both => {}
        r => bad.push(format!("static, mems {both} again: used {r:?}")),
    }
    match sys.get_mempolicy(&mut t, 0, 0) {
        Ok((mode, nodes)) if mode == MPOL_INTERLEAVE | MPOL_F_STATIC_NODES && nodes == both => {}
        r => bad.push(format!("get_mempolicy {r:?}")),
    }
    sys.cpuset_set_mems(&mut t, NodeMask::single(a))
        .map_err(|e| format!("{e}"))?;
    if let Err(e) = sys.set_mempolicy(&mut t, MPOL_BIND | MPOL_F_STATIC_NODES, both) {
        bad.push(format!("static bind with {b} outside the cpuset: {e}"));
    }
    if t.mempolicy().map(|p| p.nodes()) != Some(NodeMask::single(a)) {
        bad.push(format!("static bind in mems {a}: {:?}", t.mempolicy()));
    }
    sys.cpuset_set_mems(&mut t, both)
        .map_err(|e| format!("{e}"))?;
    if t.mempolicy().map(|p| p.nodes()) != Some(both) {
        bad.push(format!(
            "static bind after mems {both}: {:?}",
            t.mempolicy()
        ));
    }
    problems(bad)
}

/// Bind to node 0 relative to the cpuset: the cpuset's first node; mems
/// {b}: b; mems {a,b}: a again; `get_mempolicy` reports the user's 0.
fn relative_nodes_on_this_machine(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (a, b) = two_memory_nodes(mm)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let mut bad = Vec::new();
    sys.cpuset_set_mems(&mut t, pair(a, b))
        .map_err(|e| format!("{e}"))?;
    sys.set_mempolicy(
        &mut t,
        MPOL_BIND | MPOL_F_RELATIVE_NODES,
        NodeMask::single(0),
    )
    .map_err(|e| format!("{e}"))?;
    for (mems, want) in [(pair(a, b), a), (NodeMask::single(b), b), (pair(a, b), a)] {
        if let Err(e) = sys.cpuset_set_mems(&mut t, mems) {
            bad.push(format!("mems {mems}: {e}"));
        }
        match nodes_used(&sys, &mut t, 2) {
            Ok(u) if u == NodeMask::single(want) => {}
            r => bad.push(format!(
                "relative 0, mems {mems}: used {r:?}, expected {want}"
            )),
        }
    }
    match sys.get_mempolicy(&mut t, 0, 0) {
        Ok((mode, nodes))
            if mode == MPOL_BIND | MPOL_F_RELATIVE_NODES && nodes == NodeMask::single(0) => {}
        r => bad.push(format!("get_mempolicy {r:?}")),
    }
    problems(bad)
}

/// Without flags bind remaps by position: bind {a} in mems {a,b}; mems
/// {b}: {b}; mems {a,b}: b is the first of the old mems, so {a}.
/// Preferred keeps its node when rebound (Linux 6.x), and the cpuset
/// confines its pages: preferred b in mems {a} allocates on a.
fn default_remap_and_preferred(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (a, b) = two_memory_nodes(mm)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let mut bad = Vec::new();
    sys.cpuset_set_mems(&mut t, pair(a, b))
        .map_err(|e| format!("{e}"))?;
    sys.set_mempolicy(&mut t, MPOL_BIND, NodeMask::single(a))
        .map_err(|e| format!("{e}"))?;
    for (mems, want) in [(NodeMask::single(b), b), (pair(a, b), a)] {
        if let Err(e) = sys.cpuset_set_mems(&mut t, mems) {
            bad.push(format!("{e}"));
        }
        match nodes_used(&sys, &mut t, 2) {
            Ok(u) if u == NodeMask::single(want) => {}
            r => bad.push(format!(
                "bind remapped to mems {mems}: used {r:?}, expected {want}"
            )),
        }
    }
    sys.set_mempolicy(&mut t, MPOL_PREFERRED, NodeMask::single(b))
        .map_err(|e| format!("{e}"))?;
    sys.cpuset_set_mems(&mut t, NodeMask::single(a))
        .map_err(|e| format!("{e}"))?;
    if t.mempolicy().map(|p| p.nodes()) != Some(NodeMask::single(b)) {
        bad.push(format!("preferred after rebind: {:?}", t.mempolicy()));
    }
    match nodes_used(&sys, &mut t, 2) {
        Ok(u) if u == NodeMask::single(a) => {}
        r => bad.push(format!("preferred {b} in mems {a}: used {r:?}")),
    }
    problems(bad)
}

/// A mapping interleaved over a,b; the cpuset shrinks to {a}: its policy
/// is rebound and every fault lands on a.
fn vma_policies_rebind(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (a, b) = two_memory_nodes(mm)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let len = 8 << 12;
    let addr = sys.mmap(&mut t, len).map_err(|e| format!("{e}"))?;
    let mut bad = Vec::new();
    if let Err(e) = sys.mbind(&mut t, addr, len, MPOL_INTERLEAVE, pair(a, b), 0) {
        bad.push(format!("mbind: {e}"));
    }
    sys.cpuset_set_mems(&mut t, NodeMask::single(a))
        .map_err(|e| format!("{e}"))?;
    for i in 0..8 {
        if let Err(e) = sys.fault(&mut t, addr + (i << 12)) {
            bad.push(format!("fault {i}: {e}"));
        }
    }
    let pages: Vec<_> = t.pages().map(|(_, p)| *p).collect();
    let c = per_node(mm, &pages);
    if c[a as usize] != 8 {
        bad.push(format!("pages per node {c:?}, expected 8 on {a}"));
    }
    bad.extend(exit(&sys, &mut t));
    problems(bad)
}

/// A cpuset's mems: empty is `ENOSPC`; a node without memory `EINVAL`;
/// a failed write changes nothing.
fn cpuset_mems_errors(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    let mut t = sys.new_task();
    let mut bad = Vec::new();
    let before = t.mems_allowed();
    let r = sys.cpuset_set_mems(&mut t, NodeMask::NONE);
    if r != Err(Errno::ENOSPC) {
        bad.push(format!("empty mems: {r:?}"));
    }
    let no_memory = (0..NodeMask::MAX_NODES)
        .find(|&n| !mm.memory_nodes().contains(n))
        .unwrap_or(63);
    let r = sys.cpuset_set_mems(&mut t, NodeMask::single(no_memory));
    if r != Err(Errno::EINVAL) {
        bad.push(format!("mems {no_memory} (no memory): {r:?}"));
    }
    if t.mems_allowed() != before {
        bad.push(format!(
            "mems changed to {} by failed writes",
            t.mems_allowed()
        ));
    }
    problems(bad)
}

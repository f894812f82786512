//! Suite `policy_errors`: the error cases of `set_mempolicy`, `mbind`,
//! `get_mempolicy` and `set_mempolicy_home_node`, as Linux 6.x's
//! `sanitize_mpol_flags`, `get_nodes`, `mpol_new`, `mpol_set_nodemask`,
//! `do_mbind` and `do_get_mempolicy` decide them (and the set_mempolicy(2),
//! mbind(2), get_mempolicy(2) manual pages list them); a refused call
//! leaves the policy as it was.

use alloc::format;
use alloc::vec::Vec;

use super::mm_util::mm;
use super::policy_util::exit;
use crate::boot::Guest;
use crate::ktest::{problems, Suite, Test, TestResult};
use crate::mm::mempolicy::uapi::*;
use crate::mm::mempolicy::{Errno, Mempolicies};
use crate::mm::NodeMask;

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "policy_errors",
    tests: &[
        Test {
            name: "set_mempolicy_einval",
            run: set_mempolicy_einval,
        },
        Test {
            name: "user_nodemask",
            run: user_nodemask,
        },
        Test {
            name: "refused_call_keeps_the_policy",
            run: refused_call_keeps_the_policy,
        },
        Test {
            name: "get_mempolicy_errors",
            run: get_mempolicy_errors,
        },
        Test {
            name: "mbind_errors",
            run: mbind_errors,
        },
        Test {
            name: "home_node_errors",
            run: home_node_errors,
        },
    ],
};

fn first_memory_node(g: &Guest) -> Result<u32, crate::ktest::TestError> {
    mm(g)?
        .memory_nodes()
        .first_node()
        .ok_or_else(|| "no memory".into())
}

/// A node id a mask holds that has no memory here (memoryless, CPU-less,
/// or absent).
fn node_without_memory(g: &Guest) -> Result<u32, crate::ktest::TestError> {
    let mm = mm(g)?;
    Ok((0..NodeMask::MAX_NODES)
        .find(|&n| !mm.memory_nodes().contains(n))
        .unwrap_or(63))
}

/// Mode, nodes, expected result; in a fresh task each time.
fn set_mempolicy_einval(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    let a = NodeMask::single(first_memory_node(g)?);
    let x = NodeMask::single(node_without_memory(g)?);
    let none = NodeMask::NONE;
    let st = MPOL_F_STATIC_NODES;
    let rel = MPOL_F_RELATIVE_NODES;
    let nb = MPOL_F_NUMA_BALANCING;
    let cases: [(&str, i32, NodeMask, Result<(), Errno>); 28] = [
        ("mode MPOL_MAX", MPOL_MAX, a, Err(Errno::EINVAL)),
        ("mode -1", -1, a, Err(Errno::EINVAL)),
        (
            "unknown flag bit 12",
            MPOL_BIND | 1 << 12,
            a,
            Err(Errno::EINVAL),
        ),
        (
            "static and relative",
            MPOL_BIND | st | rel,
            a,
            Err(Errno::EINVAL),
        ),
        (
            "balancing with interleave",
            MPOL_INTERLEAVE | nb,
            a,
            Err(Errno::EINVAL),
        ),
        (
            "balancing with preferred",
            MPOL_PREFERRED | nb,
            a,
            Err(Errno::EINVAL),
        ),
        (
            "balancing with local",
            MPOL_LOCAL | nb,
            none,
            Err(Errno::EINVAL),
        ),
        ("balancing with bind", MPOL_BIND | nb, a, Ok(())),
        (
            "balancing with preferred-many",
            MPOL_PREFERRED_MANY | nb,
            a,
            Ok(()),
        ),
        ("default with nodes", MPOL_DEFAULT, a, Err(Errno::EINVAL)),
        (
            "default with static, no nodes",
            MPOL_DEFAULT | st,
            none,
            Ok(()),
        ),
        ("local with nodes", MPOL_LOCAL, a, Err(Errno::EINVAL)),
        (
            "local with static",
            MPOL_LOCAL | st,
            none,
            Err(Errno::EINVAL),
        ),
        (
            "local with relative",
            MPOL_LOCAL | rel,
            none,
            Err(Errno::EINVAL),
        ),
        (
            "preferred, no nodes, static",
            MPOL_PREFERRED | st,
            none,
            Err(Errno::EINVAL),
        ),
        (
            "preferred, no nodes, relative",
            MPOL_PREFERRED | rel,
            none,
            Err(Errno::EINVAL),
        ),
        ("preferred, no nodes", MPOL_PREFERRED, none, Ok(())),
        ("bind, no nodes", MPOL_BIND, none, Err(Errno::EINVAL)),
        (
            "interleave, no nodes",
            MPOL_INTERLEAVE,
            none,
            Err(Errno::EINVAL),
        ),
        (
            "preferred-many, no nodes",
            MPOL_PREFERRED_MANY,
            none,
            Err(Errno::EINVAL),
        ),
        (
            "weighted interleave, no nodes",
            MPOL_WEIGHTED_INTERLEAVE,
            none,
            Err(Errno::EINVAL),
        ),
        (
            "bind to a node without memory",
            MPOL_BIND,
            x,
            Err(Errno::EINVAL),
        ),
        (
            "preferred on a node without memory",
            MPOL_PREFERRED,
            x,
            Err(Errno::EINVAL),
        ),
        (
            "static bind to a node without memory",
            MPOL_BIND | st,
            x,
            Err(Errno::EINVAL),
        ),
        (
            "bind with one node without memory",
            MPOL_BIND,
            a.or(x),
            Ok(()),
        ),
        (
            "relative bind to node 63",
            MPOL_BIND | rel,
            NodeMask::single(63),
            Ok(()),
        ),
        ("interleave", MPOL_INTERLEAVE, a, Ok(())),
        ("weighted interleave", MPOL_WEIGHTED_INTERLEAVE, a, Ok(())),
    ];
    let mut bad = Vec::new();
    for (what, mode, nodes, want) in cases {
        let mut t = sys.new_task();
        let r = sys.set_mempolicy(&mut t, mode, nodes);
        if r != want {
            bad.push(format!("{what}: {r:?}, expected {want:?}"));
        }
    }
    // Outside the cpuset: EINVAL, static or not.
    let memory = mm.memory_nodes();
    if let (Some(f), true) = (memory.first_node(), memory.weight() >= 2) {
        let mut t = sys.new_task();
        let others = memory.andnot(NodeMask::single(f));
        let _ = sys.cpuset_set_mems(&mut t, NodeMask::single(f));
        for mode in [MPOL_BIND, MPOL_BIND | st, MPOL_INTERLEAVE, MPOL_PREFERRED] {
            let r = sys.set_mempolicy(&mut t, mode, others);
            if r != Err(Errno::EINVAL) {
                bad.push(format!("mode {mode:#x} outside the cpuset: {r:?}"));
            }
        }
    }
    if Errno::EINVAL.to_ret() != -22 || Errno::EFAULT.to_ret() != -14 {
        bad.push("errno values".into());
    }
    problems(bad)
}

/// `get_nodes`: `maxnode` counts bits plus one; more than a page of bits is
/// `EINVAL`; bits of nodes 64 and up must be clear; a short array is
/// `EFAULT`; no array or `maxnode` 1 is the empty mask; `maxnode` 0 with
/// an array is more than a page of bits.
fn user_nodemask(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    let a = first_memory_node(g)?;
    let abit = 1u64 << a;
    let mut bad = Vec::new();
    type Case<'a> = (&'a str, i32, Option<&'a [u64]>, u64, Result<(), Errno>);
    let cases: [Case; 10] = [
        ("bind, 65 bits", MPOL_BIND, Some(&[abit]), 65, Ok(())),
        (
            "bind, maxnode a+1 drops node a",
            MPOL_BIND,
            Some(&[abit]),
            u64::from(a) + 1,
            Err(Errno::EINVAL),
        ),
        (
            "bind, 32769 bits",
            MPOL_BIND,
            Some(&[abit; 513]),
            32 * 1024 + 2,
            Err(Errno::EINVAL),
        ),
        (
            "bind, node 64 set",
            MPOL_BIND,
            Some(&[abit, 1]),
            129,
            Err(Errno::EINVAL),
        ),
        (
            "bind, node 127 set",
            MPOL_BIND,
            Some(&[abit, 1 << 63]),
            129,
            Err(Errno::EINVAL),
        ),
        (
            "bind, 128 bits, high long clear",
            MPOL_BIND,
            Some(&[abit, 0]),
            129,
            Ok(()),
        ),
        (
            "bind, array too short",
            MPOL_BIND,
            Some(&[abit]),
            129,
            Err(Errno::EFAULT),
        ),
        (
            "bind, maxnode 0",
            MPOL_BIND,
            Some(&[abit]),
            0,
            Err(Errno::EINVAL),
        ),
        ("default, maxnode 1", MPOL_DEFAULT, Some(&[abit]), 1, Ok(())),
        ("local, no array", MPOL_LOCAL, None, 64, Ok(())),
    ];
    for (what, mode, nmask, maxnode, want) in cases {
        let mut t = sys.new_task();
        let r = sys.sys_set_mempolicy(&mut t, mode, nmask, maxnode);
        if r != want {
            bad.push(format!("{what}: {r:?}, expected {want:?}"));
        }
    }
    problems(bad)
}

/// A refused `set_mempolicy` keeps the task's policy and its interleave
/// state.
fn refused_call_keeps_the_policy(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    let a = NodeMask::single(first_memory_node(g)?);
    let mut t = sys.new_task();
    sys.set_mempolicy(&mut t, MPOL_INTERLEAVE, a)
        .map_err(|e| format!("{e}"))?;
    let before = (t.mempolicy().copied(), t.il_prev());
    let mut bad = Vec::new();
    for (mode, nodes) in [
        (MPOL_BIND, NodeMask::NONE),
        (MPOL_LOCAL, a),
        (MPOL_MAX, a),
        (MPOL_BIND | MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES, a),
    ] {
        let _ = sys.set_mempolicy(&mut t, mode, nodes);
        if (t.mempolicy().copied(), t.il_prev()) != before {
            bad.push(format!(
                "mode {mode:#x} changed the policy to {:?}",
                t.mempolicy()
            ));
        }
    }
    problems(bad)
}

/// `get_mempolicy`'s checks.
fn get_mempolicy_errors(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    let a = NodeMask::single(first_memory_node(g)?);
    let mut t = sys.new_task();
    let mut bad = Vec::new();
    let mapped = sys.mmap(&mut t, 4096).map_err(|e| format!("{e}"))?;
    let cases: [(&str, u64, u64, Result<(), Errno>); 7] = [
        ("unknown flag", 0, 1 << 3, Err(Errno::EINVAL)),
        (
            "MEMS_ALLOWED with NODE",
            0,
            MPOL_F_MEMS_ALLOWED | MPOL_F_NODE,
            Err(Errno::EINVAL),
        ),
        (
            "MEMS_ALLOWED with ADDR",
            0,
            MPOL_F_MEMS_ALLOWED | MPOL_F_ADDR,
            Err(Errno::EINVAL),
        ),
        ("an address without ADDR", mapped, 0, Err(Errno::EINVAL)),
        (
            "NODE without interleave",
            0,
            MPOL_F_NODE,
            Err(Errno::EINVAL),
        ),
        (
            "ADDR unmapped",
            mapped + 8192,
            MPOL_F_ADDR,
            Err(Errno::EFAULT),
        ),
        ("ADDR mapped", mapped, MPOL_F_ADDR, Ok(())),
    ];
    for (what, addr, flags, want) in cases {
        let r = sys.get_mempolicy(&mut t, addr, flags).map(|_| ());
        if r != want {
            bad.push(format!("{what}: {r:?}, expected {want:?}"));
        }
    }
    match sys.get_mempolicy(&mut t, 0, MPOL_F_MEMS_ALLOWED) {
        Ok((0, m)) if m == mm.memory_nodes() => {}
        r => bad.push(format!("MEMS_ALLOWED: {r:?}")),
    }
    // A nodemask needs maxnode >= nr_node_ids.
    let mut words = [0u64; 2];
    let r = sys.sys_get_mempolicy(
        &mut t,
        None,
        Some(&mut words),
        u64::from(mm.nr_nodes()) - 1,
        0,
        0,
    );
    if r != Err(Errno::EINVAL) {
        bad.push(format!("maxnode below nr_node_ids: {r:?}"));
    }
    let _ = sys.set_mempolicy(&mut t, MPOL_BIND, a);
    let mut mode = -1;
    words = [u64::MAX; 2];
    let r = sys.sys_get_mempolicy(&mut t, Some(&mut mode), Some(&mut words), 128, 0, 0);
    if r != Ok(()) || mode != MPOL_BIND || words != [a.bits(), 0] {
        bad.push(format!(
            "get_mempolicy(128 bits): {r:?}, mode {mode}, words {words:x?}"
        ));
    }
    bad.extend(exit(&sys, &mut t));
    problems(bad)
}

/// `mbind`'s checks, in Linux's order.
fn mbind_errors(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    let a = NodeMask::single(first_memory_node(g)?);
    let mut t = sys.new_task();
    let mut bad = Vec::new();
    let base = sys.mmap(&mut t, 4 << 12).map_err(|e| format!("{e}"))?;
    // A hole in the middle: unmap the second page.
    sys.munmap(&mut t, base + 4096, 4096)
        .map_err(|e| format!("{e}"))?;
    let page = 4096;
    type Case<'a> = (&'a str, u64, u64, i32, NodeMask, u32, Result<(), Errno>);
    let cases: [Case; 14] = [
        (
            "unknown flag",
            base,
            page,
            MPOL_BIND,
            a,
            MPOL_MF_LAZY,
            Err(Errno::EINVAL),
        ),
        (
            "MOVE_ALL without CAP_SYS_NICE",
            base,
            page,
            MPOL_BIND,
            a,
            MPOL_MF_MOVE_ALL,
            Err(Errno::EPERM),
        ),
        (
            "unaligned start",
            base + 1,
            page,
            MPOL_BIND,
            a,
            0,
            Err(Errno::EINVAL),
        ),
        (
            "range wraps",
            base,
            u64::MAX - page,
            MPOL_BIND,
            a,
            0,
            Err(Errno::EINVAL),
        ),
        (
            "empty range, bad nodes",
            base,
            0,
            MPOL_BIND,
            NodeMask::NONE,
            0,
            Ok(()),
        ),
        (
            "empty range, bad mode",
            base,
            0,
            MPOL_MAX,
            a,
            0,
            Err(Errno::EINVAL),
        ),
        (
            "bind, no nodes",
            base,
            page,
            MPOL_BIND,
            NodeMask::NONE,
            0,
            Err(Errno::EINVAL),
        ),
        (
            "unmapped range",
            base + (64 << 12),
            page,
            MPOL_BIND,
            a,
            0,
            Err(Errno::EFAULT),
        ),
        (
            "hole in the middle",
            base,
            4 * page,
            MPOL_BIND,
            a,
            0,
            Err(Errno::EFAULT),
        ),
        (
            "hole at the head",
            base + page,
            2 * page,
            MPOL_BIND,
            a,
            0,
            Err(Errno::EFAULT),
        ),
        (
            "hole at the tail",
            base,
            2 * page,
            MPOL_BIND,
            a,
            0,
            Err(Errno::EFAULT),
        ),
        (
            "default over a hole",
            base,
            4 * page,
            MPOL_DEFAULT,
            NodeMask::NONE,
            0,
            Ok(()),
        ),
        (
            "bind, one page",
            base,
            page,
            MPOL_BIND,
            a,
            MPOL_MF_STRICT,
            Ok(()),
        ),
        (
            "length rounded up",
            base + 2 * page,
            1,
            MPOL_INTERLEAVE,
            a,
            0,
            Ok(()),
        ),
    ];
    for (what, start, len, mode, nodes, flags, want) in cases {
        let r = sys.mbind(&mut t, start, len, mode, nodes, flags);
        if r != want {
            bad.push(format!("{what}: {r:?}, expected {want:?}"));
        }
    }
    t.cap_sys_nice = true;
    let r = sys.mbind(&mut t, base, 4096, MPOL_BIND, a, MPOL_MF_MOVE_ALL);
    if r != Ok(()) {
        bad.push(format!("MOVE_ALL with CAP_SYS_NICE: {r:?}"));
    }
    // The interleave mbind covered exactly the third page.
    match sys.get_mempolicy(&mut t, base + 2 * page, MPOL_F_ADDR) {
        Ok((MPOL_INTERLEAVE, _)) => {}
        r => bad.push(format!("third page: {r:?}")),
    }
    match sys.get_mempolicy(&mut t, base + 3 * page, MPOL_F_ADDR) {
        Ok((MPOL_DEFAULT, _)) => {}
        r => bad.push(format!("fourth page: {r:?}")),
    }
    bad.extend(exit(&sys, &mut t));
    problems(bad)
}

/// `set_mempolicy_home_node`: flags, an offline node, an interleave VMA
/// (`EOPNOTSUPP`), no policy in the range (`ENOENT`), and success.
fn home_node_errors(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let sys = Mempolicies::new(mm);
    let a = first_memory_node(g)?;
    let offline = (0..NodeMask::MAX_NODES)
        .find(|&n| !mm.online_nodes().contains(n))
        .unwrap_or(63);
    let mut t = sys.new_task();
    let mut bad = Vec::new();
    let base = sys.mmap(&mut t, 3 << 12).map_err(|e| format!("{e}"))?;
    let page = 4096u64;
    let ma = NodeMask::single(a);
    let _ = sys.mbind(&mut t, base, page, MPOL_BIND, ma, 0);
    let _ = sys.mbind(&mut t, base + page, page, MPOL_INTERLEAVE, ma, 0);
    let a64 = u64::from(a);
    type Case<'a> = (&'a str, u64, u64, u64, u64, Result<(), Errno>);
    let cases: [Case; 7] = [
        ("flags", base, page, a64, 1, Err(Errno::EINVAL)),
        ("unaligned", base + 1, page, a64, 0, Err(Errno::EINVAL)),
        (
            "offline node",
            base,
            page,
            u64::from(offline),
            0,
            Err(Errno::EINVAL),
        ),
        ("node 64", base, page, 64, 0, Err(Errno::EINVAL)),
        (
            "interleave VMA",
            base + page,
            page,
            a64,
            0,
            Err(Errno::EOPNOTSUPP),
        ),
        (
            "no policy",
            base + 2 * page,
            page,
            a64,
            0,
            Err(Errno::ENOENT),
        ),
        ("bind VMA", base, page, a64, 0, Ok(())),
    ];
    for (what, start, len, home, flags, want) in cases {
        let r = sys.set_mempolicy_home_node(&mut t, start, len, home, flags);
        if r != want {
            bad.push(format!("{what}: {r:?}, expected {want:?}"));
        }
    }
    let home = t
        .vma(base)
        .and_then(|v| v.policy)
        .and_then(|p| p.home_node());
    if home != Some(a) {
        bad.push(format!("home node {home:?}, expected {a}"));
    }
    bad.extend(exit(&sys, &mut t));
    problems(bad)
}

//! Suite `zonelists`: the zonelists the guest built (and printed) equal
//! those of a literal transcription of Linux's `build_all_zonelists`
//! (`mm::linux_ref`) run on the same distances and zones, in node order and
//! in the legacy zone order; no-fallback lists hold only their node; the
//! default-order heuristic agrees with Linux's; `local_memory_node` too.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::mm_util::{linux_build, linux_machine, mm};
use crate::boot::Guest;
use crate::ktest::{ensure, problems, Suite, Test, TestResult};
use crate::mm::linux_ref::{ZONELIST_FALLBACK, ZONELIST_NOFALLBACK, ZONELIST_ORDER_NODE};
use crate::mm::zonelist::{
    build_all_zonelists, built_line, default_zonelist_order, fallback_line, CpuPenalty, ZoneSizes,
    ZonelistInput,
};
use crate::mm::{Mm, ZoneRef, ZoneType, ZonelistKind, ZonelistOrder};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "zonelists",
    tests: &[
        Test {
            name: "printed_lines_match_linux",
            run: printed_lines_match_linux,
        },
        Test {
            name: "zonerefs_match_linux",
            run: zonerefs_match_linux,
        },
        Test {
            name: "nofallback_only_this_node",
            run: nofallback_only_this_node,
        },
        Test {
            name: "fallback_has_every_zone_once",
            run: fallback_has_every_zone_once,
        },
        Test {
            name: "zone_and_node_order_variants",
            run: zone_and_node_order_variants,
        },
        Test {
            name: "default_order_heuristic",
            run: default_order_heuristic,
        },
        Test {
            name: "local_memory_node_matches_linux",
            run: local_memory_node_matches_linux,
        },
    ],
};

/// The "Fallback order" and "Built" lines the guest printed at boot.
fn printed(mm: &Mm) -> String {
    let mut s = String::new();
    for n in mm.nodes().iter().filter(|n| n.online()) {
        s.push_str(&fallback_line(n.id(), n.node_order()));
        s.push('\n');
    }
    s.push_str(&built_line(
        mm.nr_online_nodes(),
        mm.zonelist_order(),
        mm.total_pages(),
    ));
    s.push('\n');
    s
}

fn refs(v: &[(usize, usize)]) -> Vec<ZoneRef> {
    v.iter()
        .filter_map(|&(n, z)| {
            ZoneType::from_index(z).map(|zone| ZoneRef {
                nid: n as u32,
                zone,
            })
        })
        .collect()
}

/// What the guest printed at boot, byte for byte, is what Linux's code
/// prints on the same machine.
fn printed_lines_match_linux(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let m = linux_machine(mm);
    let k = linux_build(&m, mm.zonelist_order());
    let ours = printed(mm);
    ensure!(
        ours == k.log,
        "guest printed:\n{ours}Linux's code prints:\n{}",
        k.log
    );
    Ok(())
}

/// Every online node's fallback and no-fallback lists, zone by zone.
fn zonerefs_match_linux(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let m = linux_machine(mm);
    let k = linux_build(&m, mm.zonelist_order());
    let mut bad = Vec::new();
    for n in mm.nodes().iter().filter(|n| n.online()) {
        let id = n.id() as usize;
        for (kind, which) in [
            (ZonelistKind::Fallback, ZONELIST_FALLBACK),
            (ZonelistKind::NoFallback, ZONELIST_NOFALLBACK),
        ] {
            let ours = n.zonelist(kind).refs();
            let linux = refs(&k.zonerefs(id, which));
            if ours != linux.as_slice() {
                bad.push(format!(
                    "node {id} {kind:?}: ours {}, Linux {}",
                    n.zonelist(kind),
                    crate::mm::Zonelist::new(linux)
                ));
            }
        }
    }
    problems(bad)
}

/// `__GFP_THISNODE` lists: the node's populated zones, highest first;
/// empty for a memoryless node.
fn nofallback_only_this_node(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    for n in mm.nodes() {
        let want: Vec<ZoneRef> = ZoneType::ALL
            .iter()
            .rev()
            .filter(|&&z| n.zone(z).populated())
            .map(|&zone| ZoneRef { nid: n.id(), zone })
            .collect();
        let got = n.zonelist(ZonelistKind::NoFallback).refs();
        if got != want.as_slice() {
            bad.push(format!(
                "node {}: no-fallback list {}",
                n.id(),
                n.zonelist(ZonelistKind::NoFallback)
            ));
        }
        if !n.has_memory() && !got.is_empty() {
            bad.push(format!(
                "memoryless node {} has zones to fall back on",
                n.id()
            ));
        }
    }
    problems(bad)
}

/// Each fallback list holds every populated zone of the machine exactly
/// once; in node order a node with memory comes first in its own list.
fn fallback_has_every_zone_once(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let all: Vec<ZoneRef> = mm
        .zones()
        .filter(|z| z.populated())
        .map(|z| ZoneRef {
            nid: z.nid(),
            zone: z.zone_type(),
        })
        .collect();
    let mut bad = Vec::new();
    for n in mm.nodes() {
        let zl = n.zonelist(ZonelistKind::Fallback);
        let mut got = zl.refs().to_vec();
        got.sort_by_key(|z| (z.nid, z.zone));
        let mut want = all.clone();
        want.sort_by_key(|z| (z.nid, z.zone));
        if got != want {
            bad.push(format!("node {}: fallback list {zl}", n.id()));
        }
        if mm.zonelist_order() == ZonelistOrder::Node
            && n.has_memory()
            && zl.refs().first().map(|z| z.nid) != Some(n.id())
        {
            bad.push(format!("node {}: its list starts elsewhere: {zl}", n.id()));
        }
        if n.node_order().first() != Some(&n.id()) {
            bad.push(format!("node {}: node order {:?}", n.id(), n.node_order()));
        }
    }
    problems(bad)
}

/// Both orders, built from this machine's zones, equal Linux's; in zone
/// order zone types never go up along a list.
fn zone_and_node_order_variants(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let m = linux_machine(mm);
    let n = mm.nr_nodes() as usize;
    let distances: Vec<u32> = (0..n as u32)
        .flat_map(|a| (0..n as u32).map(move |b| (a, b)))
        .map(|(a, b)| mm.node_distance(a, b))
        .collect();
    let populated: Vec<[bool; 3]> = mm
        .nodes()
        .iter()
        .map(|x| core::array::from_fn(|z| x.zones()[z].populated()))
        .collect();
    let inp = ZonelistInput {
        nr_nodes: n,
        distances: &distances,
        populated: &populated,
        cpus: CpuPenalty::X86,
    };
    let mut bad = Vec::new();
    for order in [ZonelistOrder::Node, ZonelistOrder::Zone] {
        let ours = build_all_zonelists(&inp, order);
        let k = linux_build(&m, order);
        for id in (0..n).filter(|&i| m.online[i]) {
            let linux = refs(&k.zonerefs(id, ZONELIST_FALLBACK));
            if ours.fallback[id].refs() != linux.as_slice() {
                bad.push(format!(
                    "{order:?} order, node {id}: ours {}, Linux {}",
                    ours.fallback[id],
                    crate::mm::Zonelist::new(linux)
                ));
            }
            if order == ZonelistOrder::Zone
                && ours.fallback[id]
                    .refs()
                    .windows(2)
                    .any(|w| w[1].zone > w[0].zone)
            {
                bad.push(format!(
                    "zone order, node {id}: a higher zone after a lower one: {}",
                    ours.fallback[id]
                ));
            }
        }
    }
    problems(bad)
}

/// `numa_zonelist_order=default`'s heuristic agrees with Linux's on this
/// machine, and the order in use is the one the command line asked for.
fn default_order_heuristic(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let m = linux_machine(mm);
    let k = linux_build(&m, ZonelistOrder::Node);
    let sizes: Vec<[ZoneSizes; 3]> = mm
        .nodes()
        .iter()
        .filter(|n| n.online())
        .map(|n| {
            core::array::from_fn(|z| ZoneSizes {
                present: n.zones()[z].present(),
                managed: n.zones()[z].managed(),
            })
        })
        .collect();
    let ours = default_zonelist_order(&sizes);
    let linux = if k.default_zonelist_order() == ZONELIST_ORDER_NODE {
        ZonelistOrder::Node
    } else {
        ZonelistOrder::Zone
    };
    ensure!(ours == linux, "heuristic says {ours:?}, Linux's {linux:?}");
    let want = match g.cmdline.numa_zonelist_order {
        None | Some(crate::mm::OrderChoice::Node) => ZonelistOrder::Node,
        Some(crate::mm::OrderChoice::Zone) => ZonelistOrder::Zone,
        Some(crate::mm::OrderChoice::Default) => ours,
    };
    ensure!(
        mm.zonelist_order() == want,
        "zonelists are in {:?} order, the command line asks for {want:?}",
        mm.zonelist_order()
    );
    Ok(())
}

/// `cpu_to_mem` of every CPU is Linux's `local_memory_node` of its node.
fn local_memory_node_matches_linux(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let m = linux_machine(mm);
    let k = linux_build(&m, mm.zonelist_order());
    let mut bad = Vec::new();
    for cpu in 0..mm.nr_cpus() {
        let node = mm.cpu_to_node(cpu);
        let linux = k.local_memory_node(node as usize);
        if mm.cpu_to_mem(cpu) as i32 != linux {
            bad.push(format!(
                "cpu {cpu} (node {node}): local memory node {}, Linux {linux}",
                mm.cpu_to_mem(cpu)
            ));
        }
    }
    problems(bad)
}

//! Helpers the memory-manager suites share: the `Mm` of the boot, draining
//! a node and giving it back, counter deltas, Linux's reference build on
//! the booted machine.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::boot::Guest;
use crate::ktest::TestError;
use crate::mm::linux_ref::{self, Kernel, Machine};
use crate::mm::{Gfp, Mm, NumaStat, NumaStats, Page, ZoneInfo, ZoneType, ZonelistOrder, MAX_ORDER};

/// The memory manager built at boot, or a failure.
pub fn mm(g: &Guest) -> Result<&Mm, TestError> {
    g.mm.as_deref()
        .ok_or_else(|| TestError::Fail("the memory manager was not built at boot".into()))
}

/// Allocates every page `nid`'s zones have (`THISNODE`, largest blocks
/// first, then smaller), from the current CPU.
pub fn exhaust_node(mm: &Mm, nid: u32, gfp: Gfp) -> Vec<Page> {
    let mut got = Vec::new();
    for order in (0..=MAX_ORDER).rev() {
        while let Ok(p) = mm.alloc_pages_node(nid, gfp | Gfp::THISNODE | Gfp::NOWARN, order) {
            got.push(p);
        }
    }
    got
}

/// Allocates every page of the machine (any node), largest blocks first.
pub fn exhaust_all(mm: &Mm) -> Vec<Page> {
    let mut got = Vec::new();
    for order in (0..=MAX_ORDER).rev() {
        while let Ok(p) = mm.alloc_pages(Gfp::NOWARN, order) {
            got.push(p);
        }
    }
    got
}

/// Frees every block; the problems.
pub fn give_back(mm: &Mm, pages: Vec<Page>) -> Vec<String> {
    pages
        .into_iter()
        .filter_map(|p| mm.free(p).err().map(|e| format!("freeing {p:?}: {e}")))
        .collect()
}

/// Every zone's counters, node by node.
pub fn zone_infos(mm: &Mm) -> Vec<ZoneInfo> {
    mm.zones().map(|z| z.info()).collect()
}

/// Checks that counters moved by exactly `expected` (node, counter, n)
/// since `before`, and nothing else moved.
pub fn expect_stats(
    mm: &Mm,
    before: &[NumaStats],
    expected: &[(u32, NumaStat, u64)],
) -> Result<(), String> {
    let now = mm.all_numa_stats();
    let mut want = vec![NumaStats::default(); now.len()];
    for &(nid, s, n) in expected {
        if let Some(w) = want.get_mut(nid as usize) {
            w.add(s, n);
        }
    }
    let mut bad = Vec::new();
    for (nid, (a, b)) in now.iter().zip(before).enumerate() {
        let d = a.since(b);
        if d != want[nid] {
            bad.push(format!("node {nid}: moved {d}, expected {}", want[nid]));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("\n"))
    }
}

/// The booted machine as Linux's zonelist code sees it at boot: online
/// nodes, distances, no CPU in any node mask yet (x86), the zones' present
/// and managed pages, the boot CPU's node.
pub fn linux_machine(mm: &Mm) -> Machine {
    let n = mm.nr_nodes() as usize;
    let sizes = |f: fn(&ZoneInfo) -> u64| -> Vec<[i64; linux_ref::MAX_NR_ZONES]> {
        mm.nodes()
            .iter()
            .map(|node| {
                core::array::from_fn(|z| {
                    ZoneType::from_index(z).map_or(0, |t| f(&node.zone(t).info()) as i64)
                })
            })
            .collect()
    };
    Machine {
        nr_node_ids: n,
        distance: (0..n as u32)
            .map(|a| {
                (0..n as u32)
                    .map(|b| mm.node_distance(a, b) as i32)
                    .collect()
            })
            .collect(),
        possible: mm.nodes().iter().map(|x| x.online()).collect(),
        online: mm.nodes().iter().map(|x| x.online()).collect(),
        cpus: vec![false; n],
        present_pages: sizes(|i| i.present),
        managed_pages: sizes(|i| i.managed),
        boot_node: mm.cpu_to_node(0) as usize,
    }
}

/// Runs Linux's `build_all_zonelists` on `m` in `order`.
pub fn linux_build(m: &Machine, order: ZonelistOrder) -> Kernel<'_> {
    let mut k = Kernel::new(m);
    k.current_zonelist_order = match order {
        ZonelistOrder::Node => linux_ref::ZONELIST_ORDER_NODE,
        ZonelistOrder::Zone => linux_ref::ZONELIST_ORDER_ZONE,
    };
    k.build_all_zonelists();
    k
}

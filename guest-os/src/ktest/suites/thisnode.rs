//! Suite `thisnode`: `__GFP_THISNODE` allocations never leave their node;
//! when the node is drained they fail instead of falling back (where a
//! plain allocation does fall back, counted as a miss and a foreign
//! allocation); everything given back leaves the node as it was.

use alloc::format;
use alloc::vec::Vec;

use super::mm_util::{exhaust_node, expect_stats, give_back, mm};
use crate::boot::Guest;
use crate::ktest::{problems, skip, Suite, Test, TestResult};
use crate::mm::zone::DMA32_LIMIT;
use crate::mm::{AllocError, Gfp, NumaStat, ZoneType, ZonelistKind};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "thisnode",
    tests: &[
        Test {
            name: "stays_on_node",
            run: stays_on_node,
        },
        Test {
            name: "drained_node_fails_not_falls_back",
            run: drained_node_fails_not_falls_back,
        },
        Test {
            name: "dma32_on_node",
            run: dma32_on_node,
        },
    ],
};

/// Several orders on every node with memory: each block is on the node, in
/// one of its zones.
fn stays_on_node(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    for n in mm.nodes().iter().filter(|n| n.has_memory()) {
        for order in [0, 1, 3, 9] {
            match mm.alloc_pages_node(n.id(), Gfp::THISNODE | Gfp::NOWARN, order) {
                Ok(p) => {
                    if p.nid != n.id() || mm.page_to_nid(p.gfn) != Some(n.id()) {
                        bad.push(format!("node {} order {order}: {p:?}", n.id()));
                    }
                    if let Err(e) = mm.free(p) {
                        bad.push(format!("{e}"));
                    }
                }
                Err(e) => bad.push(format!("node {} order {order}: {e}", n.id())),
            }
        }
    }
    problems(bad)
}

/// Per node with memory: take all of it with `THISNODE`; then `THISNODE`
/// fails with `NoMemory` and changes no counter, while a plain allocation
/// preferring the node lands on the next node of its zonelist (a miss
/// there, foreign here); give everything back: the node's zones are whole.
fn drained_node_fails_not_falls_back(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    let mut tested = 0;
    for n in mm.nodes().iter().filter(|n| n.has_memory()) {
        let nid = n.id();
        let pages = exhaust_node(mm, nid, Gfp::KERNEL);
        let got: u64 = pages.iter().map(|p| p.pages()).sum();
        if got != n.managed_pages() {
            bad.push(format!(
                "node {nid}: drained {got} pages of {}",
                n.managed_pages()
            ));
        }
        if pages.iter().any(|p| p.nid != nid) {
            bad.push(format!("node {nid}: a THISNODE page from another node"));
        }
        let before = mm.all_numa_stats();
        let r = mm.alloc_pages_node(nid, Gfp::THISNODE | Gfp::NOWARN, 0);
        if r != Err(AllocError::NoMemory) {
            bad.push(format!("node {nid} drained: THISNODE gave {r:?}"));
        }
        if let Err(e) = expect_stats(mm, &before, &[]) {
            bad.push(format!(
                "node {nid}: a failed allocation moved counters: {e}"
            ));
        }
        // The same request without THISNODE falls back.
        mm.drain_all_pages();
        let next = n
            .zonelist(ZonelistKind::Fallback)
            .refs()
            .iter()
            .find(|z| z.nid != nid && mm.zone(**z).info().free > 0)
            .map(|z| z.nid);
        if let Some(next) = next {
            tested += 1;
            let local = mm.numa_node_id();
            let before = mm.all_numa_stats();
            match mm.alloc_pages_node(nid, Gfp::NOWARN, 0) {
                Ok(p) => {
                    if p.nid != next {
                        bad.push(format!(
                            "node {nid} drained: fell back to {}, expected {next}",
                            p.nid
                        ));
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
                            (nid, NumaStat::Foreign, 1),
                            (p.nid, lo, 1),
                        ],
                    ) {
                        bad.push(format!("node {nid} fallback: {e}"));
                    }
                    if let Err(e) = mm.free(p) {
                        bad.push(format!("{e}"));
                    }
                }
                Err(e) => bad.push(format!("node {nid} drained: no fallback: {e}")),
            }
        }
        bad.extend(give_back(mm, pages));
        mm.drain_all_pages();
        for t in ZoneType::ALL {
            let i = n.zone(t).info();
            if i.free != i.managed {
                bad.push(format!(
                    "node {nid} {t}: {} free of {} after giving back",
                    i.free, i.managed
                ));
            }
        }
    }
    if tested == 0 && bad.is_empty() {
        skip!("one node with memory: nothing to fall back to");
    }
    problems(bad)
}

/// `THISNODE | DMA32` on each node: a page below 4 GiB machine on that node
/// if it has low memory, else `NoMemory` at once.
fn dma32_on_node(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    for n in mm.nodes() {
        let low = n.zone(ZoneType::Dma).managed() + n.zone(ZoneType::Dma32).managed() > 0;
        match mm.alloc_pages_node(n.id(), Gfp::THISNODE | Gfp::DMA32 | Gfp::NOWARN, 0) {
            Ok(p) => {
                if !low || p.nid != n.id() || p.maddr.0 >= DMA32_LIMIT {
                    bad.push(format!("node {}: {p:?}", n.id()));
                }
                let _ = mm.free(p);
            }
            Err(AllocError::NoMemory) if !low => {}
            Err(e) => bad.push(format!("node {}: {e}", n.id())),
        }
    }
    problems(bad)
}

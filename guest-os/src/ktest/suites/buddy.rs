//! Suite `buddy`: splitting and merging, alignment and machine
//! contiguity of blocks, per-CPU list refill/bulk free/drain, clean
//! failures (exhaustion, bad orders, flags and nodes, bad frees), and that
//! pages handed out are real memory.

use alloc::format;
use alloc::vec::Vec;

use pv_abi::{Gfn, Gpa, PAGE_SIZE};

use super::mm_util::{exhaust_all, give_back, mm};
use crate::boot::Guest;
use crate::ktest::{ensure, problems, skip, Suite, Test, TestResult};
use crate::mm::{AllocError, FreeError, Gfp, PageState, ZonelistKind, MAX_ORDER};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "buddy",
    tests: &[
        Test {
            name: "split_and_merge",
            run: split_and_merge,
        },
        Test {
            name: "blocks_aligned_and_contiguous",
            run: blocks_aligned_and_contiguous,
        },
        Test {
            name: "pcp_refill_bulk_free_drain",
            run: pcp_refill_bulk_free_drain,
        },
        Test {
            name: "exhaustion_fails_cleanly",
            run: exhaustion_fails_cleanly,
        },
        Test {
            name: "bad_requests_refused",
            run: bad_requests_refused,
        },
        Test {
            name: "pages_are_memory",
            run: pages_are_memory,
        },
        Test {
            name: "invariants_hold",
            run: invariants_hold,
        },
    ],
};

/// An order-3 allocation splits the smallest larger free block (one block
/// fewer at that order, one more at each order from 3 up to it); freeing
/// it merges everything back to the same free lists.
fn split_and_merge(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    mm.drain_all_pages();
    let nid = mm.numa_mem_id();
    let Some(zr) = mm
        .zonelist(nid, ZonelistKind::NoFallback)
        .and_then(|l| l.refs().first().copied())
    else {
        skip!("node {nid} has no memory");
    };
    let zone = mm.zone(zr);
    let before = zone.info().free_area;
    let Some(j) = (3..=MAX_ORDER as usize).find(|&o| before[o] > 0) else {
        skip!("no free block of order 3 or more in node {nid} {}", zr.zone);
    };
    let p = mm
        .alloc_pages_node(nid, Gfp::THISNODE, 3)
        .map_err(|e| format!("order 3 on node {nid}: {e}"))?;
    let after = zone.info().free_area;
    let mut want = before;
    want[j] -= 1;
    for w in want.iter_mut().take(j).skip(3) {
        *w += 1;
    }
    let free = mm.free(p);
    let back = zone.info().free_area;
    ensure!(p.zone == zr.zone && p.nid == nid, "block from {p:?}");
    ensure!(
        after == want,
        "after the split {after:?}, expected {want:?} (from {before:?})"
    );
    ensure!(free.is_ok(), "free: {free:?}");
    ensure!(back == before, "after the free {back:?}, before {before:?}");
    Ok(())
}

/// Every order: aligned to its size, inside one span (contiguous in
/// machine memory), marked allocated with its order.
fn blocks_aligned_and_contiguous(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    let mut got = Vec::new();
    for order in 0..=MAX_ORDER {
        let p = match mm.alloc_pages(Gfp::NOWARN, order) {
            Ok(p) => p,
            Err(e) => {
                bad.push(format!("order {order}: {e}"));
                continue;
            }
        };
        got.push(p);
        let last = Gfn(p.gfn.0 + p.pages() - 1);
        if p.gfn.0 % p.pages() != 0 {
            bad.push(format!("order {order}: gfn {} not aligned", p.gfn));
        }
        let want_last = pv_abi::Maddr(p.maddr.0 + (p.pages() - 1) * PAGE_SIZE);
        let z = mm.zone(crate::mm::ZoneRef {
            nid: p.nid,
            zone: p.zone,
        });
        if z.span_of(p.gfn).map(|s| s.idx) != z.span_of(last).map(|s| s.idx)
            || mm.page_maddr(last) != Some(want_last)
        {
            bad.push(format!(
                "order {order}: {p:?} is not contiguous in machine memory"
            ));
        }
        if mm.page_state(p.gfn) != Some((PageState::Allocated, order)) {
            bad.push(format!("order {order}: state {:?}", mm.page_state(p.gfn)));
        }
    }
    bad.extend(give_back(mm, got));
    problems(bad)
}

/// An order-0 allocation from an empty per-CPU list takes `batch` pages
/// from the buddy lists; frees keep the list below `high` (a bulk free of
/// `batch` at `high`); a drain returns every page.
fn pcp_refill_bulk_free_drain(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    mm.drain_all_pages();
    let nid = mm.numa_mem_id();
    let Some(zr) = mm
        .zonelist(nid, ZonelistKind::NoFallback)
        .and_then(|l| l.refs().first().copied())
    else {
        skip!("node {nid} has no memory");
    };
    let zone = mm.zone(zr);
    let cpu = mm.current_cpu();
    let i0 = zone.info();
    let pp = i0.pcp_params;
    ensure!(
        i0.free > u64::from(pp.high) * 2,
        "zone too small for the test"
    );
    let first = mm
        .alloc_pages_node(nid, Gfp::THISNODE, 0)
        .map_err(|e| format!("{e}"))?;
    let mut bad = Vec::new();
    if zone.pcp_count(cpu) != pp.batch - 1 {
        bad.push(format!(
            "after one allocation the list holds {}, expected batch - 1 = {}",
            zone.pcp_count(cpu),
            pp.batch - 1
        ));
    }
    let mut pages = alloc::vec![first];
    for _ in 0..pp.high * 2 {
        match mm.alloc_pages_node(nid, Gfp::THISNODE, 0) {
            Ok(p) => pages.push(p),
            Err(e) => bad.push(format!("{e}")),
        }
    }
    for p in pages {
        if let Err(e) = mm.free(p) {
            bad.push(format!("{e}"));
        }
        let c = zone.pcp_count(cpu);
        if c >= pp.high.max(1) {
            bad.push(format!("the list holds {c}, high is {}", pp.high));
            break;
        }
    }
    let on_list = u64::from(zone.pcp_count(cpu));
    let drained = mm.drain_local_pages();
    if drained < on_list || zone.pcp_count(cpu) != 0 {
        bad.push(format!("drained {drained} of {on_list}"));
    }
    let i1 = zone.info();
    if i1.free != i0.free || i1.free_area != i0.free_area {
        bad.push(format!(
            "free lists {:?}, before {:?}",
            i1.free_area, i0.free_area
        ));
    }
    problems(bad)
}

/// Allocating the whole machine ends in a clean `NoMemory` with every zone
/// empty; giving everything back restores it.
fn exhaustion_fails_cleanly(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let failures = mm.failures();
    let pages = exhaust_all(mm);
    let mut bad = Vec::new();
    let r = mm.alloc_pages(Gfp::NOWARN, 0);
    if r != Err(AllocError::NoMemory) {
        bad.push(format!("after exhaustion: {r:?}"));
    }
    for z in mm.zones() {
        let i = z.info();
        if i.free != 0 || i.pcp != 0 || i.used != i.managed {
            bad.push(format!("node {} {} not exhausted: {i:?}", i.nid, i.zone));
        }
    }
    let total: u64 = pages.iter().map(|p| p.pages()).sum();
    let managed: u64 = mm.zones().map(|z| z.managed()).sum();
    if total != managed {
        bad.push(format!("got {total} pages of {managed} managed"));
    }
    bad.extend(mm.check());
    bad.extend(give_back(mm, pages));
    mm.drain_all_pages();
    for z in mm.zones() {
        if z.info().free != z.managed() {
            bad.push(format!("node {} {}: not all back", z.nid(), z.zone_type()));
        }
    }
    if mm.failures() <= failures {
        bad.push("failures were not counted".into());
    }
    problems(bad)
}

/// Orders above MAX_ORDER, DMA with DMA32, unknown nodes; freeing twice,
/// a page inside a block, a reserved page, memory that is not guest memory,
/// a wrong order: each an error, nothing changed.
fn bad_requests_refused(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    let nowarn = Gfp::NOWARN;
    let checks = [
        (
            mm.alloc_pages(nowarn, MAX_ORDER + 1),
            AllocError::InvalidOrder(MAX_ORDER + 1),
        ),
        (
            mm.alloc_pages(nowarn | Gfp::DMA | Gfp::DMA32, 0),
            AllocError::InvalidGfp(nowarn | Gfp::DMA | Gfp::DMA32),
        ),
        (
            mm.alloc_pages_node(mm.nr_nodes(), nowarn, 0),
            AllocError::InvalidNode(mm.nr_nodes()),
        ),
    ];
    for (r, want) in checks {
        if r != Err(want) {
            bad.push(format!("{r:?}, expected {want:?}"));
        }
    }
    let p = mm.alloc_pages(nowarn, 2).map_err(|e| format!("{e}"))?;
    let inner = Gpa(p.gpa().0 + PAGE_SIZE);
    let frees = [
        (mm.free_pages(inner, 0), FreeError::NotAllocated(inner)),
        (
            mm.free_pages(p.gpa(), 1),
            FreeError::WrongOrder {
                gpa: p.gpa(),
                allocated: 2,
                freed: 1,
            },
        ),
        (mm.free_pages(g.hole, 0), FreeError::NotManaged(g.hole)),
        (
            mm.free_pages(g.si.image_start, 0),
            FreeError::Reserved(g.si.image_start),
        ),
    ];
    for (r, want) in frees {
        if r != Err(want) {
            bad.push(format!("{r:?}, expected {want:?}"));
        }
    }
    if let Err(e) = mm.free(p) {
        bad.push(format!("free: {e}"));
    }
    let again = mm.free(p);
    if again != Err(FreeError::NotAllocated(p.gpa())) {
        bad.push(format!("second free: {again:?}"));
    }
    bad.extend(mm.check());
    problems(bad)
}

/// The first and last 8 bytes of an order-0 and an order-4 block hold a
/// pattern written through the identity map.
fn pages_are_memory(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    for order in [0, 4] {
        let p = mm
            .alloc_pages(Gfp::KERNEL, order)
            .map_err(|e| format!("{e}"))?;
        for at in [p.gpa().0, p.gpa().0 + p.bytes() - 8] {
            let pattern = 0xa110_c000_0000_0000 ^ at;
            let got = g.p.probe_phys_u64(Gpa(at), pattern);
            if got != pattern {
                bad.push(format!("{at:#x}: wrote {pattern:#x}, read {got:#x}"));
            }
        }
        if let Err(e) = mm.free(p) {
            bad.push(format!("{e}"));
        }
    }
    problems(bad)
}

/// Every zone's lists, blocks and counters are consistent.
fn invariants_hold(g: &Guest) -> TestResult {
    problems(mm(g)?.check())
}

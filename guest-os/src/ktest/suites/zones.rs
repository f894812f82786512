//! Suite `zones`: zones follow machine addresses (what a device sees), not
//! guest-physical ones; every page of guest memory is in exactly one zone
//! of its node; managed memory is the free memory (page 0, the image, the
//! boot data, the heap and the secondary vCPUs' stacks are reserved); a
//! domain whose machine memory is all above 4 GiB has empty DMA and DMA32
//! zones; DMA allocations land below their limits.

use alloc::format;
use alloc::vec::Vec;

use pv_abi::{Gfn, Gpa, PAGE_SHIFT, PAGE_SIZE};

use super::mm_util::mm;
use crate::boot::start_info::taken;
use crate::boot::Guest;
use crate::ktest::{ensure, problems, skip, Suite, Test, TestResult};
use crate::mm::zone::DMA32_LIMIT;
use crate::mm::{AllocError, Gfp, Node, PageState, ZoneType};
use crate::numa::coalesce;

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "zones",
    tests: &[
        Test {
            name: "spans_follow_machine_addresses",
            run: spans_follow_machine_addresses,
        },
        Test {
            name: "zone_sizes_from_start_info",
            run: zone_sizes_from_start_info,
        },
        Test {
            name: "reserved_pages_not_managed",
            run: reserved_pages_not_managed,
        },
        Test {
            name: "all_high_memory_no_low_zones",
            run: all_high_memory_no_low_zones,
        },
        Test {
            name: "dma_flags_respect_limits",
            run: dma_flags_respect_limits,
        },
        Test {
            name: "counters_add_up",
            run: counters_add_up,
        },
    ],
};

/// Every span of every zone: machine addresses inside the zone's limits,
/// and the guest-to-machine offset the start-info range reports.
fn spans_follow_machine_addresses(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    for z in mm.zones() {
        for s in z.spans() {
            let (a, b) = s.gpa_range();
            let m_end = s.maddr.0 + (b - a);
            let t = z.zone_type();
            if s.maddr.0 < t.machine_start() || m_end > t.machine_end() {
                bad.push(format!(
                    "node {} {t}: machine [{:#x}..{m_end:#x}) outside the zone",
                    z.nid(),
                    s.maddr.0
                ));
            }
            let r = g.si.mem_ranges().iter().find(|r| r.contains(Gpa(a)));
            match r {
                Some(r) if r.to_maddr(Gpa(a)) == Some(s.maddr) && r.contains(Gpa(b - 1)) => {}
                _ => bad.push(format!(
                    "node {} {t}: [{a:#x}..{b:#x}) at machine {} does not match start-info",
                    z.nid(),
                    s.maddr
                )),
            }
        }
    }
    problems(bad)
}

/// `(gpa, size, maddr)` of each start-info range of a node: its vnode's;
/// with `numa=fake` the parts of start-info's ranges inside its emulated
/// memory (fake nodes share vnodes, and may span two after Linux's
/// wrap-around).
fn node_ranges(g: &Guest, n: &Node) -> Vec<(u64, u64, u64)> {
    let fake = g
        .view
        .as_ref()
        .filter(|v| v.source == crate::numa::fake::SOURCE)
        .and_then(|v| v.nodes.get(n.id() as usize));
    match fake {
        Some(f) => crate::numa::fake::phys_ranges(&g.si, &f.memory)
            .iter()
            .map(|r| (r.gpa.0, r.size, r.maddr.0))
            .collect(),
        None => {
            g.si.vnode_ranges(n.vnode())
                .map(|r| (r.gpa.0, r.size, r.maddr.0))
                .collect()
        }
    }
}

/// Each zone's present pages, computed here from the start-info ranges of
/// the node's vnode and the zone's machine limits; the first and last page
/// of every range are in a zone of the right node ([`node_ranges`]).
fn zone_sizes_from_start_info(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    for n in mm.nodes() {
        let ranges = node_ranges(g, n);
        for t in ZoneType::ALL {
            let want: u64 = ranges
                .iter()
                .map(|&(_, size, maddr)| {
                    let s = maddr.max(t.machine_start());
                    let e = maddr.saturating_add(size).min(t.machine_end());
                    e.saturating_sub(s) / PAGE_SIZE
                })
                .sum();
            let got = n.zone(t).present();
            if got != want {
                bad.push(format!(
                    "node {} {t}: {got} pages present, start-info says {want}",
                    n.id()
                ));
            }
        }
        for &(gpa0, size, maddr) in &ranges {
            for gpa in [gpa0, gpa0 + size - PAGE_SIZE] {
                let z = mm.page_zone(Gfn(gpa >> PAGE_SHIFT));
                let want = ZoneType::of(pv_abi::Maddr(maddr + (gpa - gpa0)));
                if z.map(|z| (z.nid, z.zone)) != Some((n.id(), want)) {
                    bad.push(format!(
                        "page {gpa:#x}: zone {z:?}, expected node {} {want:?}",
                        n.id()
                    ));
                }
            }
        }
    }
    problems(bad)
}

/// Reserved pages are exactly the pages of page 0, the image, the boot
/// data, the heap and the secondary vCPUs' stacks that are guest memory;
/// each is marked reserved.
fn reserved_pages_not_managed(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut used: Vec<(u64, u64)> = taken(&g.si).to_vec();
    used.push((g.heap.0 .0, g.heap.0 .0 + g.heap.1));
    used.extend(
        mm.cpu_blocks()
            .map(|(_, p)| (p.gpa().0, p.gpa().0 + p.bytes())),
    );
    let pages = coalesce(
        used.iter()
            .map(|&(s, e)| (s >> PAGE_SHIFT, e.div_ceil(PAGE_SIZE))),
    );
    let mut want = 0u64;
    let mut bad = Vec::new();
    for &(s, e) in &pages {
        for r in g.si.mem_ranges() {
            let rs = r.gpa.0 >> PAGE_SHIFT;
            let re = rs + r.size / PAGE_SIZE;
            want += e.min(re).saturating_sub(s.max(rs));
        }
        for f in [s, e - 1] {
            if let Some(st) = mm.page_state(Gfn(f)) {
                if st.0 != PageState::Reserved {
                    bad.push(format!("gfn {f:#x} is in use but {st:?}"));
                }
            }
        }
    }
    let got: u64 = mm.zones().map(|z| z.present() - z.managed()).sum();
    if got != want {
        bad.push(format!(
            "{got} pages reserved, {want} pages of guest memory are in use"
        ));
    }
    problems(bad)
}

/// On a domain whose machine memory is all above 4 GiB (`high-mem`), DMA
/// and DMA32 are empty everywhere and a DMA32 allocation fails at once;
/// nodes whose own memory is all high have empty low zones on any domain.
fn all_high_memory_no_low_zones(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    let mut all_high_nodes = 0;
    for n in mm.nodes().iter().filter(|n| n.has_memory()) {
        let high = node_ranges(g, n).iter().all(|r| r.2 >= DMA32_LIMIT);
        if high {
            all_high_nodes += 1;
            for t in [ZoneType::Dma, ZoneType::Dma32] {
                if n.zone(t).populated() {
                    bad.push(format!(
                        "node {}: all memory is high, but {t} has pages",
                        n.id()
                    ));
                }
            }
        }
    }
    let domain_high = g.si.mem_ranges().iter().all(|r| r.maddr.0 >= DMA32_LIMIT);
    if domain_high {
        for z in mm.zones() {
            if z.zone_type() != ZoneType::Normal && z.populated() {
                bad.push(format!("node {} {} has pages", z.nid(), z.zone_type()));
            }
        }
        let r = mm.alloc_pages(Gfp::DMA32 | Gfp::NOWARN, 0);
        if r != Err(AllocError::NoMemory) {
            bad.push(format!("a DMA32 allocation gave {r:?}"));
        }
        if let Ok(p) = r {
            let _ = mm.free(p);
        }
    } else if all_high_nodes == 0 {
        skip!("no node's machine memory is all above 4 GiB (try --topology high-mem)");
    }
    problems(bad)
}

/// `DMA32` pages are below 4 GiB machine, `DMA` pages below 16 MiB; each
/// fails only if no zone that low has pages.
fn dma_flags_respect_limits(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = Vec::new();
    for (gfp, t) in [(Gfp::DMA32, ZoneType::Dma32), (Gfp::DMA, ZoneType::Dma)] {
        let any_low = mm.zones().any(|z| z.zone_type() <= t && z.managed() > 0);
        match mm.alloc_pages(gfp | Gfp::NOWARN, 1) {
            Ok(p) => {
                let last = p.maddr.0 + p.bytes() - 1;
                if p.zone > t || last >= t.machine_end() {
                    bad.push(format!("{gfp}: block at machine {} in {}", p.maddr, p.zone));
                }
                if mm.page_maddr(p.gfn) != Some(p.maddr) {
                    bad.push(format!("{gfp}: page_maddr disagrees with {p:?}"));
                }
                if let Err(e) = mm.free(p) {
                    bad.push(format!("{gfp}: free: {e}"));
                }
            }
            Err(e) if any_low => bad.push(format!("{gfp}: {e} although a low zone has pages")),
            Err(_) => {}
        }
    }
    problems(bad)
}

/// free + per-CPU + used = managed in every zone; the allocator's own
/// invariants hold.
fn counters_add_up(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let mut bad = mm.check();
    for z in mm.zones() {
        let i = z.info();
        if i.free + i.pcp + i.used != i.managed || i.managed > i.present {
            bad.push(format!("node {} {}: {i:?}", i.nid, i.zone));
        }
    }
    ensure!(mm.nodes().len() as u32 == mm.nr_nodes(), "node count");
    problems(bad)
}

//! Suite `memory`: all of guest memory is mapped (the guest's identity map
//! and the hypervisor's nested tables), the heap lies in free memory, and
//! `DOMAIN_NODE_PAGES` accounts for exactly the domain's memory.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use pv_abi::{DomainNodePages, Error, Gpa, PAGE_SIZE};

use crate::boot::start_info::{inside_ranges, overlaps, taken};
use crate::boot::Guest;
use crate::hypercall::{self, gpa_of};
use crate::ktest::{ensure, problems, Suite, Test, TestError, TestResult};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "memory",
    tests: &[
        Test {
            name: "every_range_mapped",
            run: every_range_mapped,
        },
        Test {
            name: "heap_in_free_memory",
            run: heap_in_free_memory,
        },
        Test {
            name: "domain_node_pages_protocol",
            run: domain_node_pages_protocol,
        },
        Test {
            name: "domain_node_pages_sum",
            run: domain_node_pages_sum,
        },
    ],
};

/// The 8 bytes at the start and at the end of every memory range: written
/// with a pattern, read back and restored where the memory is free; read
/// where it is in use (image, boot data, page 0, heap, the secondary
/// vCPUs' stacks). An unmapped address would fault the guest (an NPF the
/// hypervisor reports).
fn every_range_mapped(g: &Guest) -> TestResult {
    let mut in_use: Vec<(u64, u64)> = taken(&g.si).to_vec();
    in_use.push((g.heap.0 .0, g.heap.0 .0 + g.heap.1));
    if let Some(mm) = &g.mm {
        in_use.extend(
            mm.cpu_blocks()
                .map(|(_, p)| (p.gpa().0, p.gpa().0 + p.bytes())),
        );
    }
    let mut bad = Vec::new();
    for r in g.si.mem_ranges() {
        let end = r.gpa.0.saturating_add(r.size);
        for addr in [r.gpa.0, end - 8] {
            if in_use.iter().any(|&u| overlaps((addr, addr + 8), u)) {
                let _ = g.p.read_phys_u64(Gpa(addr));
                continue;
            }
            let pattern = 0x5a5a_0000_0000_0000 ^ addr ^ (u64::from(r.vnode) << 40);
            let got = g.p.probe_phys_u64(Gpa(addr), pattern);
            if got != pattern {
                bad.push(format!(
                    "{addr:#x} (vnode {}): wrote {pattern:#x}, read {got:#x}",
                    r.vnode
                ));
            }
        }
    }
    problems(bad)
}

/// The heap is guest memory outside the image and the boot data, and what
/// it hands out lies inside it and holds what is written.
fn heap_in_free_memory(g: &Guest) -> TestResult {
    let (start, size) = (g.heap.0 .0, g.heap.1);
    ensure!(
        inside_ranges(g.si.mem_ranges(), start, size),
        "heap [{start:#x}..{:#x}) is not inside guest memory",
        start + size
    );
    for t in taken(&g.si) {
        ensure!(
            !overlaps((start, start + size), t),
            "heap [{start:#x}..{:#x}) overlaps [{:#x}..{:#x})",
            start + size,
            t.0,
            t.1
        );
    }
    if !g.heap_is_global {
        // Host tests: allocations come from the host's allocator.
        return Ok(());
    }
    let mut v = vec![0u64; 8192];
    for (i, w) in v.iter_mut().enumerate() {
        *w = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    let at = gpa_of(g.p, v.as_mut_ptr()).0;
    ensure!(
        at >= start && at + 65536 <= start + size,
        "a 64 KiB allocation at {at:#x} is outside the heap"
    );
    ensure!(
        v.iter()
            .enumerate()
            .all(|(i, &w)| w == (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        "the heap did not keep a pattern"
    );
    Ok(())
}

fn node_pages(g: &Guest) -> Result<&Vec<u64>, TestError> {
    match &g.node_pages {
        None => Err(TestError::Skip("no DOMAIN_NODE_PAGES feature".into())),
        Some(Err(e)) => Err(TestError::Fail(format!("domain_node_pages at boot: {e}"))),
        Some(Ok(p)) => Ok(p),
    }
}

/// Capacity 0 and capacity one short: `BufferTooSmall` with the node count
/// written back and the buffer untouched; exact: the count returned.
fn domain_node_pages_protocol(g: &Guest) -> TestResult {
    let pages = node_pages(g)?;
    let n = pages.len() as u32;
    let mut bad = Vec::new();
    let mut probe = DomainNodePages::new(0, Gpa::NULL);
    let r = hypercall::domain_node_pages(g.p, &mut probe);
    if r != Err(Error::BufferTooSmall) || probe.nr_nodes != n {
        bad.push(format!(
            "capacity 0: {r:?} with nr_nodes {}, expected buffer too small with {n}",
            probe.nr_nodes
        ));
    }
    if n > 0 {
        let mut buf = vec![u64::MAX; n as usize];
        let mut info = DomainNodePages::new(n - 1, gpa_of(g.p, buf.as_mut_ptr()));
        let r = hypercall::domain_node_pages(g.p, &mut info);
        if r != Err(Error::BufferTooSmall) || info.nr_nodes != n {
            bad.push(format!(
                "capacity {}: {r:?} with nr_nodes {}, expected buffer too small with {n}",
                n - 1,
                info.nr_nodes
            ));
        }
        if buf.iter().any(|&p| p != u64::MAX) {
            bad.push(format!("capacity {}: the buffer was written", n - 1));
        }
        let mut info = DomainNodePages::new(n, gpa_of(g.p, buf.as_mut_ptr()));
        let r = hypercall::domain_node_pages(g.p, &mut info);
        if r != Ok(u64::from(n)) {
            bad.push(format!("exact capacity: {r:?}, expected Ok({n})"));
        } else if buf != *pages {
            bad.push(format!("a second call says {buf:?}, the first {pages:?}"));
        }
    }
    problems(bad)
}

/// pv-abi: entry N = pages of the calling domain's memory backed by physical
/// node N. The domain's memory is its memory ranges, so the entries add up
/// to their pages; with `PHYSINFO`, there is one entry per physical node and
/// no node backs more than it has.
fn domain_node_pages_sum(g: &Guest) -> TestResult {
    let pages = node_pages(g)?;
    let total = crate::numa::sum(g.si.mem_ranges().iter().map(|r| r.size / PAGE_SIZE));
    let sum = crate::numa::sum(pages.iter().copied());
    let mut bad = Vec::new();
    if sum != total {
        bad.push(format!(
            "domain_node_pages adds up to {sum} pages, the memory ranges hold {total}"
        ));
    }
    if let Some(Ok(t)) = &g.physinfo {
        if pages.len() != t.node_mem.len() {
            bad.push(format!(
                "domain_node_pages reports {} nodes, physinfo {}",
                pages.len(),
                t.node_mem.len()
            ));
        }
        for (n, (&p, m)) in pages.iter().zip(&t.node_mem).enumerate() {
            if p > m.size_pages {
                bad.push(format!(
                    "physical node {n} backs {p} pages of this domain but has {}",
                    m.size_pages
                ));
            }
        }
    }
    problems(bad)
}

//! Suite `slab`: `kmalloc_node` puts objects on the node asked for (every
//! size class, and large allocations), reuses that node's partial slabs
//! even when the node has no free page left, falls back along the node's
//! zonelist when it has neither, treats a node without memory as no node
//! (the object comes from the CPU's `numa_mem_id()`); `kfree` returns
//! objects to their slabs and empty slabs to the page allocator
//! (`min_partial` kept per node until a shrink); bad frees are refused;
//! nothing leaks: every page the suite used is free again.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use pv_abi::Gpa;

use super::mm_util::{exhaust_node, give_back, mm};
use super::policy_util::{memory_nodes, two_memory_nodes};
use crate::boot::Guest;
use crate::ktest::{problems, skip, Suite, Test, TestResult};
use crate::mm::slab::{Kmalloc, SlabError, KMALLOC_MAX_SIZE, KMALLOC_SIZES, ZERO_SIZE_PTR};
use crate::mm::{Gfp, Mm, ZonelistKind, NUMA_NO_NODE};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "slab",
    tests: &[
        Test {
            name: "objects_on_the_node_asked",
            run: objects_on_the_node_asked,
        },
        Test {
            name: "memoryless_node_means_numa_mem_id",
            run: memoryless_node_means_numa_mem_id,
        },
        Test {
            name: "partial_slab_first_then_zonelist_fallback",
            run: partial_slab_first_then_zonelist_fallback,
        },
        Test {
            name: "kfree_and_empty_slabs",
            run: kfree_and_empty_slabs,
        },
        Test {
            name: "bad_requests",
            run: bad_requests,
        },
    ],
};

/// Free pages of every node, per-CPU lists drained.
fn free_pages(mm: &Mm) -> Vec<u64> {
    mm.drain_all_pages();
    mm.nodes()
        .iter()
        .map(|n| n.zones().iter().map(|z| z.info().free).sum())
        .collect()
}

/// After a test: no object in use, the bookkeeping consistent, and once
/// the caches are gone every page is back.
fn no_leaks(mm: &Mm, k: Kmalloc<'_>, before: &[u64]) -> Vec<String> {
    let mut bad = k.check();
    if k.objects_in_use() != 0 {
        bad.push(format!("{} objects still in use", k.objects_in_use()));
    }
    drop(k);
    let after = free_pages(mm);
    if after != before {
        bad.push(format!("free pages per node {after:?}, before {before:?}"));
    }
    bad
}

/// Every node with memory, every size class and 8 KiB: two objects each,
/// on the node, `ksize` the class size, not overlapping; per-node
/// accounting counts them; freed, nothing is in use.
fn objects_on_the_node_asked(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let before = free_pages(mm);
    let k = Kmalloc::new(mm);
    let mut bad = Vec::new();
    let mut objs: Vec<(Gpa, usize)> = Vec::new();
    for n in memory_nodes(mm) {
        let mut count = 0;
        for size in KMALLOC_SIZES.iter().copied().chain([5000, 8192]) {
            for _ in 0..2 {
                match k.kmalloc_node(size, Gfp::KERNEL, n) {
                    Ok(o) => {
                        let nid = k.obj_nid(o);
                        let ks = k.ksize(o).unwrap_or(0);
                        let want = KMALLOC_SIZES
                            .iter()
                            .copied()
                            .find(|&s| s >= size)
                            .unwrap_or(size.next_power_of_two());
                        if nid != Some(n) || ks != want {
                            bad.push(format!(
                                "kmalloc_node({size}, {n}): node {nid:?}, ksize {ks}, expected {want}"
                            ));
                        }
                        objs.push((o, ks));
                        count += 1;
                    }
                    Err(e) => bad.push(format!("kmalloc_node({size}, {n}): {e}")),
                }
            }
        }
        let info = k.node_info(n);
        if info.inuse + info.large != count {
            bad.push(format!("node {n}: accounting {info:?}, {count} objects"));
        }
    }
    let mut sorted = objs.clone();
    sorted.sort_unstable_by_key(|o| o.0 .0);
    for w in sorted.windows(2) {
        if w[0].0 .0 + w[0].1 as u64 > w[1].0 .0 {
            bad.push(format!("objects {} and {} overlap", w[0].0, w[1].0));
        }
    }
    for (o, _) in objs {
        if let Err(e) = k.kfree(o) {
            bad.push(format!("kfree({o}): {e}"));
        }
    }
    k.shrink();
    bad.extend(no_leaks(mm, k, &before));
    problems(bad)
}

/// A node without memory is no constraint: as each CPU, `kmalloc_node` on
/// every node without memory (and `kmalloc` with no node) gives an object
/// on the CPU's `numa_mem_id()`.
fn memoryless_node_means_numa_mem_id(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let memoryless: Vec<u32> = mm
        .nodes()
        .iter()
        .filter(|n| !n.has_memory())
        .map(|n| n.id())
        .collect();
    let before = free_pages(mm);
    let k = Kmalloc::new(mm);
    let mut bad = Vec::new();
    for cpu in 0..mm.nr_cpus() {
        let r = mm.with_cpu(cpu, |m| {
            let want = m.numa_mem_id();
            let mut out = Vec::new();
            for node in memoryless.iter().copied().chain([NUMA_NO_NODE]) {
                // A fresh cache per CPU so that no partial slab of another
                // node is in the way.
                let k = Kmalloc::new(m);
                match k.kmalloc_node(64, Gfp::KERNEL, node) {
                    Ok(o) => {
                        if k.obj_nid(o) != Some(want) {
                            out.push(format!(
                                "node {node:#x}: object on {:?}, numa_mem_id {want}",
                                k.obj_nid(o)
                            ));
                        }
                        let _ = k.kfree(o);
                    }
                    Err(e) => out.push(format!("node {node:#x}: {e}")),
                }
            }
            (!out.is_empty()).then(|| format!("cpu {cpu}: {}", out.join("; ")))
        });
        bad.extend(r.flatten());
    }
    bad.extend(no_leaks(mm, k, &before));
    if memoryless.is_empty() && bad.is_empty() {
        skip!("no node without memory (kmalloc with no node checked)");
    }
    problems(bad)
}

/// One object on node x makes a partial slab; x's pages are then drained:
/// `kmalloc_node(x)` still lands on x (the partial slab has room); once
/// that slab is full, the next object comes from x's zonelist, the nearest
/// node with free memory, and `__GFP_THISNODE` fails instead.
fn partial_slab_first_then_zonelist_fallback(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let (x, _) = two_memory_nodes(mm)?;
    let before = free_pages(mm);
    let k = Kmalloc::new(mm);
    let mut bad = Vec::new();
    let size = 1024;
    let first = k
        .kmalloc_node(size, Gfp::KERNEL, x)
        .map_err(|e| format!("{e}"))?;
    let per_slab = k
        .caches()
        .iter()
        .find(|c| c.size == size)
        .map_or(1, |c| c.objects);
    let drained = exhaust_node(mm, x, Gfp::KERNEL);
    mm.drain_all_pages();
    let mut objs = alloc::vec![first];
    for i in 1..per_slab {
        match k.kmalloc_node(size, Gfp::KERNEL, x) {
            Ok(o) => {
                if k.obj_nid(o) != Some(x) {
                    bad.push(format!(
                        "object {i} of the partial slab on {:?}",
                        k.obj_nid(o)
                    ));
                }
                objs.push(o);
            }
            Err(e) => bad.push(format!("object {i}: {e}")),
        }
    }
    let r = k.kmalloc_node(size, Gfp::THISNODE | Gfp::NOWARN, x);
    if r != Err(SlabError::NoMemory) {
        bad.push(format!("THISNODE with node {x} full: {r:?}"));
    }
    let next = mm.zonelist(x, ZonelistKind::Fallback).and_then(|zl| {
        zl.refs()
            .iter()
            .find(|z| z.nid != x && mm.zone(**z).info().free > 0)
            .map(|z| z.nid)
    });
    let fallbacks = k.stats().node_fallback;
    match k.kmalloc_node(size, Gfp::KERNEL, x) {
        Ok(o) => {
            if k.obj_nid(o) != next || next.is_none() {
                bad.push(format!(
                    "fallback object on {:?}, expected {next:?}",
                    k.obj_nid(o)
                ));
            }
            if k.stats().node_fallback != fallbacks + 1 {
                bad.push("the fallback was not counted".into());
            }
            objs.push(o);
        }
        Err(e) => bad.push(format!("fallback: {e}")),
    }
    for o in objs {
        if let Err(e) = k.kfree(o) {
            bad.push(format!("{e}"));
        }
    }
    bad.extend(give_back(mm, drained));
    k.shrink();
    bad.extend(no_leaks(mm, k, &before));
    problems(bad)
}

/// 20 slabs of 512-byte objects on one node, then everything freed slab by
/// slab: an empty slab is kept only while its node has fewer than
/// `min_partial` partial slabs counting itself, so `min_partial - 1` stay
/// and the rest went back at once; a shrink returns those too. Accounting
/// follows every step.
fn kfree_and_empty_slabs(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let n = memory_nodes(mm).last().copied().ok_or("no memory")?;
    let before = free_pages(mm);
    let k = Kmalloc::new(mm);
    let mut bad = Vec::new();
    let cache = k
        .caches()
        .into_iter()
        .find(|c| c.name == "kmalloc-512")
        .ok_or("no kmalloc-512")?;
    let total = 20 * cache.objects as usize;
    let mut objs = Vec::new();
    for _ in 0..total {
        match k.kmalloc_node(512, Gfp::KERNEL, n) {
            Ok(o) => objs.push(o),
            Err(e) => {
                bad.push(format!("{e}"));
                break;
            }
        }
    }
    let info = k.cache_node_info("kmalloc-512", n).unwrap_or_default();
    if info.slabs != 20 || info.inuse != total as u64 || info.partial != 0 {
        bad.push(format!(
            "after {total} objects: {info:?}, expected 20 full slabs"
        ));
    }
    if k.node_info(n).slab_pages != 20 << cache.order {
        bad.push(format!("slab pages {:?}", k.node_info(n)));
    }
    for o in objs {
        if let Err(e) = k.kfree(o) {
            bad.push(format!("{e}"));
        }
    }
    let info = k.cache_node_info("kmalloc-512", n).unwrap_or_default();
    let kept = cache.min_partial as u64 - 1;
    if info.slabs != kept || info.partial != kept || info.inuse != 0 {
        bad.push(format!(
            "after freeing: {info:?}, expected {kept} empty slabs kept"
        ));
    }
    let freed = k.shrink();
    if freed != kept << cache.order {
        bad.push(format!("shrink freed {freed} pages"));
    }
    if k.node_info(n).slabs != 0 {
        bad.push(format!("after shrink: {:?}", k.node_info(n)));
    }
    bad.extend(no_leaks(mm, k, &before));
    problems(bad)
}

/// `kmalloc(0)` is `ZERO_SIZE_PTR`; freeing it or NULL does nothing; a
/// double free, a pointer into an object, an unknown address, a request
/// above `KMALLOC_MAX_SIZE` and a node that does not exist are refused;
/// `__GFP_DMA32` is dropped (not a kmalloc type).
fn bad_requests(g: &Guest) -> TestResult {
    let mm = mm(g)?;
    let before = free_pages(mm);
    let k = Kmalloc::new(mm);
    let mut checks: Vec<(&str, bool)> = alloc::vec![
        ("kmalloc(0)", k.kmalloc(0, Gfp::KERNEL) == Ok(ZERO_SIZE_PTR)),
        ("ksize(ZERO_SIZE_PTR)", k.ksize(ZERO_SIZE_PTR) == Some(0)),
        ("kfree(ZERO_SIZE_PTR)", k.kfree(ZERO_SIZE_PTR).is_ok()),
        ("kfree(NULL)", k.kfree(Gpa(0)).is_ok()),
    ];
    let mut bad = Vec::new();
    match k.kmalloc(100, Gfp::KERNEL) {
        Ok(o) => {
            let inside = Gpa(o.0 + 8);
            checks.extend([
                ("ksize(100 bytes) is 128", k.ksize(o) == Some(128)),
                (
                    "kfree inside an object",
                    k.kfree(inside) == Err(SlabError::NotAnObject(inside)),
                ),
                ("kfree", k.kfree(o).is_ok()),
                ("double free", k.kfree(o) == Err(SlabError::DoubleFree(o))),
                ("ksize of a freed object", k.ksize(o).is_none()),
            ]);
        }
        Err(e) => bad.push(format!("kmalloc(100): {e}")),
    }
    checks.extend([
        (
            "kfree of an unknown address",
            matches!(k.kfree(Gpa(0x1234_5000)), Err(SlabError::NotAnObject(_))),
        ),
        (
            "too large",
            k.kmalloc(KMALLOC_MAX_SIZE + 1, Gfp::KERNEL)
                == Err(SlabError::TooLarge(KMALLOC_MAX_SIZE + 1)),
        ),
        (
            "no such node",
            k.kmalloc_node(8, Gfp::KERNEL, 64) == Err(SlabError::InvalidNode(64)),
        ),
    ]);
    match k.kmalloc(32, Gfp::DMA32) {
        Ok(o) => {
            checks.push(("DMA32 dropped", k.stats().fixed_flags == 1));
            checks.push((
                "DMA32 object in kmalloc-32",
                k.cache_of(o).as_deref() == Some("kmalloc-32"),
            ));
            let _ = k.kfree(o);
        }
        Err(e) => bad.push(format!("kmalloc(GFP_DMA32): {e}")),
    }
    bad.extend(
        checks
            .into_iter()
            .filter(|c| !c.1)
            .map(|c| String::from(c.0)),
    );
    k.shrink();
    bad.extend(no_leaks(mm, k, &before));
    problems(bad)
}

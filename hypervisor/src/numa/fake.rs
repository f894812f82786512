//! NUMA emulation (`numa=fake=N`): split the machine's memory into N fake
//! nodes, so NUMA code paths can be exercised on a machine (or QEMU setup)
//! with fewer nodes.
//!
//! Mirrors Linux's `split_nodes_interleave()` (mm/numa_emulation.c) so that
//! `numa=fake=N` gives the same nodes here as in Linux: equal node sizes in
//! 32 MiB units, fake nodes dealt round-robin over the physical nodes, each
//! carved from the lowest remaining memory of its physical node.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use super::topology::{intersect, normalize, CpuInfo, NodeInfo, Topology, TopologySource};
use super::{CpuId, NodeId, LOCAL_DISTANCE, MAX_NODES};
use crate::mm::addr::{Maddr, MemRange, PAGE_SHIFT};

/// Fake node sizes are multiples of this (Linux's `FAKE_NODE_MIN_SIZE`).
pub const FAKE_NODE_MIN_SIZE: u64 = 32 << 20;
/// Linux stretches a fake node to 4 GiB rather than leave a sliver of
/// ZONE_DMA32 too small for the next node; so do we, to match its layout.
const DMA32_END: u64 = 1 << 32;
const MIB: u64 = 1 << 20;

/// Bytes of `ram` (sorted, disjoint) inside `[a, b)`.
fn ram_in(ram: &[MemRange], a: u64, b: u64) -> u64 {
    let span = MemRange::new(Maddr(a), Maddr(b));
    ram.iter().map(|r| r.intersect(&span).len()).sum()
}

/// The lowest address `e` with `ram_in(start, e) >= need`, if there is one.
fn reach(ram: &[MemRange], start: u64, need: u64) -> Option<u64> {
    let mut need = need;
    for r in ram.iter().filter(|r| r.end.0 > start) {
        let s = r.start.0.max(start);
        let avail = r.end.0 - s;
        if avail >= need {
            return Some(s + need);
        }
        need -= avail;
    }
    None
}

/// Per physical node, its memory as Linux's `numa_meminfo` blocks: runs of
/// the node's ranges with no other node's memory between them (holes are
/// inside blocks and skipped when carving).
fn phys_blocks(phys: &Topology) -> Vec<Vec<MemRange>> {
    let mut all: Vec<(MemRange, usize)> = phys
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.memory.iter().map(move |&r| (r, i)))
        .collect();
    all.sort();
    let mut blocks: Vec<Vec<MemRange>> = vec![Vec::new(); phys.nr_nodes()];
    let mut prev: Option<usize> = None;
    for (r, node) in all {
        if let Some(b) = blocks.get_mut(node) {
            match b.last_mut() {
                Some(last) if prev == Some(node) => *last = MemRange::new(last.start, r.end),
                _ => b.push(r),
            }
        }
        prev = Some(node);
    }
    blocks
}

/// Emulates `n` nodes on top of `phys` (the physical topology).
///
/// `n` is clamped to `1..=MAX_NODES`, and lowered (with a warning) until
/// each node gets at least [`FAKE_NODE_MIN_SIZE`]; with less memory than one
/// such node, emulation is off and `phys` is returned as it is. A fake node
/// that ends up without memory (a physical node's tail went to its
/// predecessor) is dropped, as Linux leaves it offline, with a warning.
///
/// Distances: LOCAL_DISTANCE on the diagonal, else the distance of the
/// physical nodes. Two fake nodes on the same physical node are 10 apart,
/// as in Linux (the physical node's distance to itself). CPUs go to the
/// first fake node on their physical node, or fake node 0 if it has none.
pub fn emulate(phys: &Topology, n: u32, warn: &mut dyn FnMut(&str)) -> Topology {
    let mut n = n as usize;
    if n == 0 {
        warn("NUMA: numa=fake=0 makes no nodes; using 1");
        n = 1;
    }
    if n > MAX_NODES {
        warn(&format!(
            "NUMA: numa=fake={n} too large, reducing to {MAX_NODES}"
        ));
        n = MAX_NODES;
    }
    let ram = normalize(phys.nodes.iter().flat_map(|x| x.memory.iter().copied()));
    let total: u64 = ram.iter().map(MemRange::len).sum();
    let fit = usize::try_from(total / FAKE_NODE_MIN_SIZE).unwrap_or(usize::MAX);
    if fit == 0 {
        warn(&format!(
            "NUMA: numa=fake: {} MiB is too little for a {} MiB node; emulation disabled",
            total / MIB,
            FAKE_NODE_MIN_SIZE / MIB
        ));
        return phys.clone();
    }
    if n > fit {
        warn(&format!(
            "NUMA: numa=fake={n}: {} MiB holds only {fit} nodes of {} MiB; using {fit}",
            total / MIB,
            FAKE_NODE_MIN_SIZE / MIB
        ));
        n = fit;
    }
    let n64 = n as u64;
    // Linux: per-node size in pages, then rounded down to 32 MiB; the
    // rounding remainder of all nodes, in 32 MiB units, makes the first
    // `big` nodes one unit larger.
    let size = ((total >> PAGE_SHIFT) / n64) << PAGE_SHIFT;
    let big = (size % FAKE_NODE_MIN_SIZE) * n64 / FAKE_NODE_MIN_SIZE;
    let size = size & !(FAKE_NODE_MIN_SIZE - 1);

    let mut blocks = phys_blocks(phys);
    let mut fake_mem: Vec<Vec<MemRange>> = vec![Vec::new(); n];
    let mut fake_phys: Vec<Option<usize>> = vec![None; n];
    let mut nid: u64 = 0;
    // Deal fake nodes over physical nodes with memory left, round-robin,
    // until all memory is dealt; fake ids wrap (Linux's `nid++ % nr_nodes`),
    // so leftovers join existing fake nodes. Each step consumes a block or
    // at least `size` bytes of RAM, so this ends.
    loop {
        let mut dealt = false;
        for (p, pblocks) in blocks.iter_mut().enumerate() {
            let Some(blk) = pblocks.first_mut() else {
                continue;
            };
            dealt = true;
            let (start, limit) = (blk.start.0, blk.end.0);
            let mut end = start.saturating_add(size);
            if nid < big {
                end = end.saturating_add(FAKE_NODE_MIN_SIZE);
            }
            // Grow in 32 MiB steps until the node holds `size` bytes of RAM
            // (holes do not count). Linux loops; the step count is computed
            // here so a huge hole cannot stall the boot.
            if ram_in(&ram, start, end) < size {
                end = reach(&ram, start, size)
                    .and_then(|e| {
                        let steps = (e - end).div_ceil(FAKE_NODE_MIN_SIZE);
                        end.checked_add(steps.checked_mul(FAKE_NODE_MIN_SIZE)?)
                    })
                    .filter(|&e| e <= limit)
                    .unwrap_or(limit);
            }
            if end < DMA32_END && ram_in(&ram, end, DMA32_END) < FAKE_NODE_MIN_SIZE {
                end = DMA32_END;
            }
            // Too little left on this physical node for another fake node:
            // this one takes the rest.
            if end < limit && ram_in(&ram, end, limit) < size {
                end = limit;
            }
            let end = end.min(limit);
            let f = (nid % n64) as usize;
            nid += 1;
            let carved = MemRange::new(Maddr(start), Maddr(end));
            if let (Some(mem), Some(fp)) = (fake_mem.get_mut(f), fake_phys.get_mut(f)) {
                if let Some(pn) = phys.nodes.get(p) {
                    mem.extend(intersect(&[carved], &pn.memory));
                }
                fp.get_or_insert(p);
            }
            if end >= limit {
                pblocks.remove(0);
            } else {
                blk.start = Maddr(end);
            }
        }
        if !dealt {
            break;
        }
    }

    // Fake nodes that received nothing do not exist.
    let kept: Vec<(Vec<MemRange>, usize)> = fake_mem
        .into_iter()
        .zip(fake_phys)
        .filter_map(|(m, p)| Some((normalize(m), p?)))
        .collect();
    if kept.len() < n {
        warn(&format!(
            "NUMA: numa=fake={n}: only {} nodes received memory",
            kept.len()
        ));
    }
    let nr = kept.len();
    let mut distances = vec![LOCAL_DISTANCE; nr * nr];
    for (i, (_, pi)) in kept.iter().enumerate() {
        for (j, (_, pj)) in kept.iter().enumerate() {
            if i != j {
                if let Some(d) = distances.get_mut(i * nr + j) {
                    *d = phys.distance(NodeId(*pi as u8), NodeId(*pj as u8));
                }
            }
        }
    }
    let first_on = |p: NodeId| kept.iter().position(|(_, q)| *q == p.index());
    let cpus: Vec<CpuInfo> = phys
        .cpus
        .iter()
        .map(|c| CpuInfo {
            node: NodeId(first_on(c.node).unwrap_or(0) as u8),
            ..*c
        })
        .collect();
    let nodes: Vec<NodeInfo> = kept
        .iter()
        .enumerate()
        .map(|(i, (mem, p))| {
            let pn = phys.nodes.get(*p);
            let first = first_on(NodeId(*p as u8)) == Some(i);
            NodeInfo {
                id: NodeId(i as u8),
                pxm: pn.map_or(0, |x| x.pxm),
                memory: mem.clone(),
                // Hot-plug ranges stay with the first fake node of their
                // physical node, like its CPUs.
                hotplug: match pn {
                    Some(pn) if first => pn.hotplug.clone(),
                    _ => Vec::new(),
                },
                cpus: cpus
                    .iter()
                    .filter(|c| c.node.index() == i)
                    .map(|c| c.id)
                    .collect::<Vec<CpuId>>(),
            }
        })
        .collect();
    Topology::from_parts(nodes, cpus, distances, TopologySource::Fake { nodes: nr })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numa::topology::tests::{input, r, run, MIB};
    use crate::numa::topology::ApicIdLayout;
    use acpi_numa::build::{slit, MadtBuilder, SratBuilder};
    use alloc::string::String;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    /// QEMU-like 2-node machine: `-m 1G`, 512M per node, cpus 0-1 and 2-3.
    fn two_nodes() -> (Vec<MemRange>, Vec<u8>, Vec<u8>, Vec<u8>) {
        let ram = vec![r(0, 0x9_fc00), r(MIB, 0x3ffd_d000)];
        let srat = SratBuilder::new()
            .cpu(0, 0)
            .cpu(0, 1)
            .cpu(1, 2)
            .cpu(1, 3)
            .mem(0, 0, 0xA_0000)
            .mem(0, MIB, 511 * MIB)
            .mem(1, 512 * MIB, 512 * MIB)
            .mem_flags(0, 0, 0, 0)
            .build();
        let slit = slit(2, &[10, 21, 21, 10]);
        let madt = MadtBuilder::new()
            .lapic(0, 0, 1)
            .lapic(1, 1, 1)
            .lapic(2, 2, 1)
            .lapic(3, 3, 1)
            .build();
        (ram, srat, slit, madt)
    }

    fn fake_run(
        ram: &[MemRange],
        srat: &[u8],
        slit: &[u8],
        madt: &[u8],
        n: u32,
    ) -> (Topology, Vec<String>) {
        let mut i = input(ram, Some(srat), Some(slit), Some(madt));
        i.options.fake = Some(n);
        run(&i)
    }

    #[test]
    fn four_fake_nodes_on_two_physical_nodes() {
        let (ram, srat, slit, madt) = two_nodes();
        let (t, w) = fake_run(&ram, &srat, &slit, &madt, 4);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(t.source, TopologySource::Fake { nodes: 4 });
        // RAM 0x3ff7c000 bytes: 4 x 224 MiB, 3 of them 32 MiB bigger.
        // Fake 0 and 2 on physical node 0, 1 and 3 on node 1; fake 3
        // stretches to the end (no 32 MiB of DMA32 would be left after it).
        assert_eq!(t.nodes[0].memory, [r(0, 0x9_f000), r(MIB, 256 * MIB)]);
        assert_eq!(t.nodes[1].memory, [r(512 * MIB, 768 * MIB)]);
        assert_eq!(t.nodes[2].memory, [r(256 * MIB, 512 * MIB)]);
        assert_eq!(t.nodes[3].memory, [r(768 * MIB, 0x3ffd_d000)]);
        let pxms: Vec<_> = t.nodes.iter().map(|n| n.pxm).collect();
        assert_eq!(pxms, [0, 1, 0, 1]);
        #[rustfmt::skip]
        assert_eq!(t.distances(), [
            10, 21, 10, 21,
            21, 10, 21, 10,
            10, 21, 10, 21,
            21, 10, 21, 10,
        ]);
        assert_eq!(t.nodes[0].cpus, [CpuId(0), CpuId(1)]);
        assert_eq!(t.nodes[1].cpus, [CpuId(2), CpuId(3)]);
        assert!(t.nodes[2].cpus.is_empty() && t.nodes[3].cpus.is_empty());
        assert_eq!(
            t.fallback_order(NodeId(0)),
            [NodeId(0), NodeId(2), NodeId(1), NodeId(3)]
        );
    }

    #[test]
    fn even_split() {
        // Two 1 GiB nodes, no holes.
        let ram = [r(0, 2 * GIB)];
        let srat = SratBuilder::new()
            .cpu(0, 0)
            .cpu(1, 1)
            .mem(0, 0, GIB)
            .mem(1, GIB, GIB)
            .build();
        let slit = slit(2, &[10, 20, 20, 10]);
        let madt = MadtBuilder::new().lapic(0, 0, 1).lapic(1, 1, 1).build();
        let (t, w) = fake_run(&ram, &srat, &slit, &madt, 4);
        assert!(w.is_empty(), "{w:?}");
        let mem: Vec<_> = t.nodes.iter().map(|n| n.memory.clone()).collect();
        assert_eq!(
            mem,
            [
                vec![r(0, 512 * MIB)],
                vec![r(GIB, GIB + 512 * MIB)],
                vec![r(512 * MIB, GIB)],
                vec![r(GIB + 512 * MIB, 2 * GIB)],
            ]
        );
        // 3 nodes of 672 MiB: each physical node's 352 MiB tail joins the
        // fake node before it, and the third fake node gets nothing.
        let (t, w) = fake_run(&ram, &srat, &slit, &madt, 3);
        assert_eq!(w, ["NUMA: numa=fake=3: only 2 nodes received memory"]);
        assert_eq!(t.source, TopologySource::Fake { nodes: 2 });
        assert_eq!(t.nodes[0].memory, [r(0, GIB)]);
        assert_eq!(t.nodes[1].memory, [r(GIB, 2 * GIB)]);
        assert_eq!(t.distance(NodeId(0), NodeId(1)), 20);
        // One fake node: everything.
        let (t, _) = fake_run(&ram, &srat, &slit, &madt, 1);
        assert_eq!(t.nodes[0].memory, [r(0, 2 * GIB)]);
        assert_eq!(t.cpus[1].node, NodeId(0));
    }

    #[test]
    fn clamps_and_small_memory() {
        let (ram, srat, slit, madt) = two_nodes();
        let (t, w) = fake_run(&ram, &srat, &slit, &madt, 0);
        assert_eq!(w, ["NUMA: numa=fake=0 makes no nodes; using 1"]);
        assert_eq!(t.nr_nodes(), 1);
        let (t, w) = fake_run(&ram, &srat, &slit, &madt, 100);
        assert_eq!(w[0], "NUMA: numa=fake=100 too large, reducing to 64");
        assert_eq!(
            w[1],
            "NUMA: numa=fake=64: 1023 MiB holds only 31 nodes of 32 MiB; using 31"
        );
        // 15 nodes fit on each physical node: fake 0 grows to 64 MiB to hold
        // 32 MiB of RAM past the 640K hole, and fake 29 takes node 1's
        // sub-32 MiB tail.
        assert_eq!(w[2], "NUMA: numa=fake=31: only 30 nodes received memory");
        assert_eq!(t.nr_nodes(), 30);
        assert_eq!(t.nodes[0].memory, [r(0, 0x9_f000), r(MIB, 64 * MIB)]);
        assert_eq!(t.nodes[28].memory, [r(480 * MIB, 512 * MIB)]);
        assert_eq!(t.nodes[29].memory, [r(960 * MIB, 0x3ffd_d000)]);
        let ram = [r(0, 16 * MIB)];
        let srat = SratBuilder::new().cpu(0, 0).mem(0, 0, 16 * MIB).build();
        let madt = MadtBuilder::new().lapic(0, 0, 1).build();
        let (t, w) = fake_run(&ram, &srat, &slit, &madt, 2);
        assert_eq!(
            w,
            ["NUMA: numa=fake: 16 MiB is too little for a 32 MiB node; emulation disabled"]
        );
        assert_eq!(t.source, TopologySource::Firmware);
    }

    #[test]
    fn memoryless_physical_node_cpus_go_to_fake_0() {
        // Physical node 1 (pxm 1) has CPUs but no memory.
        let ram = [r(0, GIB)];
        let srat = SratBuilder::new()
            .cpu(0, 0)
            .cpu(1, 1)
            .mem(0, 0, GIB)
            .build();
        let slit = slit(2, &[10, 20, 20, 10]);
        let madt = MadtBuilder::new().lapic(0, 0, 1).lapic(1, 1, 1).build();
        let mut i = input(&ram, Some(&srat), Some(&slit), Some(&madt));
        i.options.fake = Some(2);
        i.bsp_apic_id = 1;
        i.apic_id_layout = ApicIdLayout::default();
        let (t, w) = run(&i);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(t.nr_nodes(), 2);
        assert_eq!(t.nodes[0].memory, [r(0, 512 * MIB)]);
        assert_eq!(t.nodes[1].memory, [r(512 * MIB, GIB)]);
        assert_eq!(t.nodes[0].cpus, [CpuId(0), CpuId(1)]);
        assert_eq!(t.distance(NodeId(0), NodeId(1)), 10);
    }

    #[test]
    fn fake_on_single_node_fallback() {
        let ram = [r(0, 0x9_fc00), r(MIB, 3 * GIB), r(4 * GIB, 5 * GIB)];
        let mut i = input(&ram, None, None, None);
        i.options.fake = Some(8);
        let (t, w) = run(&i);
        assert_eq!(
            w,
            ["MADT: none; only the boot CPU", "NUMA: no SRAT: one node"]
        );
        assert_eq!(t.source, TopologySource::Fake { nodes: 8 });
        for n in &t.nodes {
            assert_eq!(n.pxm, 0);
        }
        assert!(t.distances().iter().all(|&d| d == 10));
    }

    proptest! {
        #[test]
        fn random_machines(
            nodes in proptest::collection::vec((0u64..4, 0u64..80), 1..5),
            n in 0u32..80,
        ) {
            // Consecutive physical nodes of random sizes (in 16 MiB units),
            // with a hole between some of them.
            let mut b = SratBuilder::new();
            let mut ram = Vec::new();
            let mut at = 0;
            for (i, &(hole, len)) in nodes.iter().enumerate() {
                at += hole * 16 * MIB;
                b = b.cpu(i as u32, i as u8).mem(i as u32, at, len * 16 * MIB + 16 * MIB);
                ram.push(MemRange::from_base_len(at, len * 16 * MIB + 16 * MIB));
                at += len * 16 * MIB + 16 * MIB;
            }
            let srat = b.build();
            let mut i = input(&ram, Some(&srat), None, None);
            i.options.fake = Some(n);
            let (t, _) = run(&i);
            if let TopologySource::Fake { nodes } = t.source {
                prop_assert_eq!(nodes, t.nr_nodes());
                prop_assert!(nodes <= n.max(1) as usize);
                for node in &t.nodes {
                    prop_assert!(!node.memory.is_empty());
                }
            }
        }
    }
}

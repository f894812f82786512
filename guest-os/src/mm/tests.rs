//! Host tests of the memory manager as a whole: zonelists of random
//! topologies (up to 64 nodes) against the literal transcription of
//! Linux's code (`linux_ref`), `numa_mem_id` rules, the allocator under
//! random traffic against a model, and odd configurations.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;
use pv_abi::{Gfn, Gpa, Maddr, PAGE_SHIFT};

use super::linux_ref::{self, Kernel, Machine};
use super::stats::zone_statistics;
use super::zone::{ZoneType, NR_ZONES};
use super::zonelist::{
    build_all_zonelists, default_zonelist_order, CpuPenalty, ZoneSizes, ZonelistInput,
};
use super::*;

const MB: u64 = 1 << 20;

/// A random topology: distances (10 on the diagonal, 11..=255 elsewhere,
/// possibly asymmetric), zones populated per node, CPUs per node.
#[derive(Clone, Debug)]
struct Topo {
    n: usize,
    distances: Vec<u32>,
    populated: Vec<[bool; NR_ZONES]>,
    cpus: Vec<bool>,
}

fn topo(max_nodes: usize) -> impl Strategy<Value = Topo> {
    (1..=max_nodes).prop_flat_map(|n| {
        (
            Just(n),
            // Few distinct values make ties (and node_load) matter.
            proptest::collection::vec(prop_oneof![Just(20u32), Just(30), 11u32..=255], n * n),
            any::<bool>(),
            proptest::collection::vec(
                prop_oneof![
                    2 => Just([false, true, false]),
                    1 => Just([false, false, false]),
                    1 => Just([false, false, true]),
                    1 => Just([true, true, true]),
                    1 => any::<[bool; 3]>(),
                ],
                n,
            ),
            proptest::collection::vec(any::<bool>(), n),
        )
            .prop_map(|(n, mut d, symmetric, populated, cpus)| {
                for a in 0..n {
                    d[a * n + a] = 10;
                    if symmetric {
                        for b in 0..a {
                            d[a * n + b] = d[b * n + a];
                        }
                    }
                }
                Topo {
                    n,
                    distances: d,
                    populated,
                    cpus,
                }
            })
    })
}

fn machine(t: &Topo, cpus_in_masks: bool) -> Machine {
    let pages =
        |p: &[bool; 3]| -> [i64; 3] { core::array::from_fn(|z| if p[z] { 1000 } else { 0 }) };
    Machine {
        nr_node_ids: t.n,
        distance: (0..t.n)
            .map(|a| (0..t.n).map(|b| t.distances[a * t.n + b] as i32).collect())
            .collect(),
        possible: vec![true; t.n],
        online: vec![true; t.n],
        cpus: if cpus_in_masks {
            t.cpus.clone()
        } else {
            vec![false; t.n]
        },
        present_pages: t.populated.iter().map(pages).collect(),
        managed_pages: t.populated.iter().map(pages).collect(),
        boot_node: 0,
    }
}

fn refs_of(k: &Kernel<'_>, node: usize, which: usize) -> Vec<ZoneRef> {
    k.zonerefs(node, which)
        .into_iter()
        .map(|(nid, z)| ZoneRef {
            nid: nid as u32,
            zone: ZoneType::from_index(z).unwrap(),
        })
        .collect()
}

fn compare(t: &Topo, order: ZonelistOrder, cpus_in_masks: bool) -> Result<(), TestCaseError> {
    let m = machine(t, cpus_in_masks);
    let mut k = Kernel::new(&m);
    k.current_zonelist_order = match order {
        ZonelistOrder::Node => linux_ref::ZONELIST_ORDER_NODE,
        ZonelistOrder::Zone => linux_ref::ZONELIST_ORDER_ZONE,
    };
    k.build_all_zonelists();
    let ours = build_all_zonelists(
        &ZonelistInput {
            nr_nodes: t.n,
            distances: &t.distances,
            populated: &t.populated,
            cpus: if cpus_in_masks {
                CpuPenalty::Masks(&t.cpus)
            } else {
                CpuPenalty::X86
            },
        },
        order,
    );
    for node in 0..t.n {
        let want: Vec<u32> = k.printed_order[node].iter().map(|&x| x as u32).collect();
        prop_assert_eq!(&ours.node_order[node], &want, "node {} order", node);
        prop_assert_eq!(ours.fallback[node].refs().to_vec(), refs_of(&k, node, 0));
        prop_assert_eq!(ours.nofallback[node].refs().to_vec(), refs_of(&k, node, 1));
        prop_assert_eq!(
            zonelist::local_memory_node(&ours.fallback[node], node as u32) as i32,
            k.local_memory_node(node)
        );
    }
    // The printed text, line for line.
    let mut text = String::new();
    for node in 0..t.n {
        text.push_str(&zonelist::fallback_line(
            node as u32,
            &ours.node_order[node],
        ));
        text.push('\n');
    }
    let total: i64 = refs_of(&k, 0, 0).len() as i64 * 1000;
    text.push_str(&zonelist::built_line(t.n, order, total as u64));
    text.push('\n');
    prop_assert_eq!(text, k.log.clone());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Node order, as x86 builds it (no CPU penalty).
    #[test]
    fn zonelists_match_linux_node_order(t in topo(64)) {
        compare(&t, ZonelistOrder::Node, false)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The legacy zone order.
    #[test]
    fn zonelists_match_linux_zone_order(t in topo(64)) {
        compare(&t, ZonelistOrder::Zone, false)?;
    }

    /// With CPU masks filled (other architectures, rebuilds): the penalty
    /// code path agrees too.
    #[test]
    fn zonelists_match_linux_with_cpu_penalty(t in topo(64)) {
        compare(&t, ZonelistOrder::Node, true)?;
    }

    /// The default-order heuristic agrees with Linux's on random zone sizes.
    #[test]
    fn default_order_matches_linux(
        sizes in proptest::collection::vec(
            proptest::array::uniform3((0u64..3, 0u64..5000)), 1..8)
    ) {
        let nodes: Vec<[ZoneSizes; 3]> = sizes
            .iter()
            .map(|n| core::array::from_fn(|z| {
                let present = if n[z].0 == 0 { 0 } else { n[z].1 + 1 };
                ZoneSizes { present, managed: present - present / (n[z].0 + 2) }
            }))
            .collect();
        let m = Machine {
            nr_node_ids: nodes.len(),
            distance: vec![vec![10; nodes.len()]; nodes.len()],
            possible: vec![true; nodes.len()],
            online: vec![true; nodes.len()],
            cpus: vec![false; nodes.len()],
            present_pages: nodes.iter().map(|n| core::array::from_fn(|z| n[z].present as i64)).collect(),
            managed_pages: nodes.iter().map(|n| core::array::from_fn(|z| n[z].managed as i64)).collect(),
            boot_node: 0,
        };
        let k = Kernel::new(&m);
        let linux = if k.default_zonelist_order() == linux_ref::ZONELIST_ORDER_NODE {
            ZonelistOrder::Node
        } else {
            ZonelistOrder::Zone
        };
        prop_assert_eq!(default_zonelist_order(&nodes), linux);
    }
}

/// A config from a topology: node k has memory in each populated zone
/// (DMA: 16 MiB / n below 16 MiB machine; DMA32 and Normal: 4 MiB below and
/// above 4 GiB), guest memory laid out 16 MiB apart from 1 MiB on; `cpus[k]`
/// puts one CPU on node k (node 0 always gets one).
fn config(t: &Topo) -> MmConfig {
    let mut gpa = MB;
    let mut nodes = Vec::new();
    let mut nr_cpus = 0;
    let dma = (16 * MB / t.n as u64) & !0xfff;
    for k in 0..t.n {
        let k64 = k as u64;
        let mut memory = Vec::new();
        for (z, maddr, size) in [
            (0, dma * k64, dma),
            (1, 0x8000_0000 + 4 * MB * k64, 4 * MB),
            (2, (1 << 32) + 4 * MB * k64, 4 * MB),
        ] {
            if t.populated[k][z] {
                memory.push(PhysRange {
                    gpa: Gpa(gpa),
                    size,
                    maddr: Maddr(maddr),
                });
                gpa += 16 * MB;
            }
        }
        let cpus = if t.cpus[k] || k == 0 {
            nr_cpus += 1;
            vec![nr_cpus - 1]
        } else {
            vec![]
        };
        nodes.push(NodeConfig {
            vnode: k as u32,
            cpus,
            memory,
        });
    }
    MmConfig {
        nodes,
        distances: t.distances.clone(),
        nr_cpus,
        reserved: vec![(MB, MB + 0x3000)],
        order: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// numa_mem_id: a CPU's local memory node is the node of the first zone
    /// of its node's fallback list, Linux's `local_memory_node`: its own
    /// node if that has memory, else the first node with memory in its
    /// fallback order; it always has memory when any node has.
    #[test]
    fn numa_mem_id_rules(t in topo(16)) {
        let mm = Mm::new(config(&t)).unwrap();
        let m = machine(&t, false);
        let mut k = Kernel::new(&m);
        k.build_all_zonelists();
        let any_memory = mm.memory_nodes().weight() > 0;
        for cpu in 0..mm.nr_cpus() {
            let node = mm.cpu_to_node(cpu);
            let mem = mm.cpu_to_mem(cpu);
            prop_assert_eq!(mem as i32, k.local_memory_node(node as usize));
            let n = mm.node(node).unwrap();
            if n.has_memory() {
                prop_assert_eq!(mem, node);
            } else if any_memory {
                let first = n.node_order().iter().copied()
                    .find(|&x| mm.node(x).unwrap().has_memory());
                prop_assert_eq!(Some(mem), first);
            }
            prop_assert_eq!(mm.with_cpu(cpu, |m| (m.numa_node_id(), m.numa_mem_id())), Some((node, mem)));
        }
    }

    /// Random allocations and frees on random topologies: blocks never
    /// overlap, THISNODE stays on its node and fails only when the node has
    /// no block of the order, nodemasks are respected, an allocation fails
    /// only when no allowed zone has a large enough block, counters move as
    /// `zone_statistics` says, and everything adds up.
    #[test]
    fn allocator_against_a_model(
        t in topo(6),
        ops in proptest::collection::vec(
            (0u8..5, 0u32..8, 0u32..5, any::<u64>(), 0u32..4), 1..200),
    ) {
        let mm = Mm::new(config(&t)).unwrap();
        let n = mm.nr_nodes();
        let mut live: BTreeMap<u64, Page> = BTreeMap::new();
        let mut frames: BTreeSet<u64> = BTreeSet::new();
        for (op, nid, order, bits, cpu) in ops {
            let nid = nid % n;
            let cpu = cpu % mm.nr_cpus();
            let order = [0, 0, 1, 3, 10][order as usize];
            if op == 4 && !live.is_empty() {
                let k = (bits % live.len() as u64) as usize;
                let (&g, &p) = live.iter().nth(k).unwrap();
                prop_assert_eq!(mm.with_cpu(cpu, |m| m.free(p)), Some(Ok(())));
                live.remove(&g);
                for f in g..g + p.pages() { frames.remove(&f); }
                continue;
            }
            let mask = NodeMask::from_bits(bits & ((1 << n) - 1));
            let (gfp, mask) = match op {
                0 => (Gfp::NOWARN, None),
                1 => (Gfp::NOWARN | Gfp::THISNODE, None),
                2 => (Gfp::NOWARN | Gfp::DMA32, None),
                _ => (Gfp::NOWARN, Some(mask)),
            };
            let before = mm.all_numa_stats();
            let highest = gfp.zone().unwrap();
            let zl = mm.node_zonelist(nid, gfp).unwrap().clone();
            let allowed: Vec<ZoneRef> = zl.allowed(highest, mask.as_ref()).collect();
            let r = mm.with_cpu(cpu, |m| m.__alloc_pages(gfp, order, nid, mask.as_ref())).unwrap();
            match r {
                Ok(p) => {
                    prop_assert!(allowed.contains(&ZoneRef { nid: p.nid, zone: p.zone }), "{:?} not allowed", p);
                    if gfp.contains(Gfp::THISNODE) { prop_assert_eq!(p.nid, nid); }
                    prop_assert_eq!(p.gfn.0 % p.pages(), 0);
                    prop_assert_eq!(mm.page_to_nid(p.gfn), Some(p.nid));
                    prop_assert_eq!(mm.page_maddr(p.gfn), Some(p.maddr));
                    prop_assert_eq!(ZoneType::of(p.maddr), p.zone);
                    for f in p.gfn.0..p.gfn.0 + p.pages() {
                        prop_assert!(frames.insert(f), "frame {:#x} handed out twice", f);
                    }
                    live.insert(p.gfn.0, p);
                    // The first allowed zone that can give the block: every
                    // zone before it in the list had none.
                    let pos = allowed.iter().position(|z| z.nid == p.nid && z.zone == p.zone).unwrap();
                    for z in &allowed[..pos] {
                        let i = mm.zone(*z).info();
                        prop_assert!(i.free_area[order as usize..].iter().all(|&c| c == 0) && (order > 0 || i.pcp == 0),
                            "skipped {} which has {:?}", z, i);
                    }
                    let mut want = vec![NumaStats::default(); n as usize];
                    for (x, s) in zone_statistics(allowed[0].nid, p.nid, mm.cpu_to_node(cpu)) {
                        want[x as usize].add(s, 1);
                    }
                    let got: Vec<NumaStats> = mm.all_numa_stats().iter().zip(&before).map(|(a, b)| a.since(b)).collect();
                    prop_assert_eq!(got, want);
                }
                Err(e) => {
                    prop_assert_eq!(e, AllocError::NoMemory);
                    prop_assert_eq!(mm.all_numa_stats(), before);
                    for z in &allowed {
                        let i = mm.zone(*z).info();
                        prop_assert!(i.free_area[order as usize..].iter().all(|&c| c == 0) && i.pcp == 0,
                            "failed although {} has {:?}", z, i);
                    }
                }
            }
            let bad = mm.check();
            prop_assert!(bad.is_empty(), "{:?}", bad);
        }
        for (_, p) in live {
            prop_assert_eq!(mm.free(p), Ok(()));
        }
        mm.drain_all_pages();
        for z in mm.zones() {
            prop_assert_eq!(z.info().free, z.managed());
        }
    }
}

#[test]
fn zones_cut_by_machine_address() {
    // One node, one range crossing 16 MiB and 4 GiB in machine memory.
    let cfg = MmConfig {
        nodes: vec![NodeConfig {
            vnode: 0,
            cpus: vec![0],
            memory: vec![PhysRange {
                gpa: Gpa(0),
                size: (1 << 32) + 32 * MB,
                maddr: Maddr(0),
            }],
        }],
        distances: vec![10],
        nr_cpus: 1,
        reserved: vec![(0, 1), (0x20_0000, 0x30_0001)],
        order: Some(OrderChoice::Default),
    };
    let mm = Mm::new(cfg).unwrap();
    let n = mm.node(0).unwrap();
    assert_eq!(n.zone(ZoneType::Dma).present(), (16 * MB) >> PAGE_SHIFT);
    assert_eq!(
        n.zone(ZoneType::Dma).managed(),
        ((16 * MB) >> PAGE_SHIFT) - 1 - 257
    );
    assert_eq!(
        n.zone(ZoneType::Dma32).present(),
        ((1 << 32) - 16 * MB) >> PAGE_SHIFT
    );
    assert_eq!(n.zone(ZoneType::Normal).present(), (32 * MB) >> PAGE_SHIFT);
    assert_eq!(
        mm.page_zone(Gfn(0xfff)).map(|z| z.zone),
        Some(ZoneType::Dma)
    );
    assert_eq!(
        mm.page_zone(Gfn(0x1000)).map(|z| z.zone),
        Some(ZoneType::Dma32)
    );
    assert_eq!(
        mm.page_zone(Gfn(0x10_0000)).map(|z| z.zone),
        Some(ZoneType::Normal)
    );
    assert_eq!(mm.page_state(Gfn(0x300)), Some((PageState::Reserved, 0)));
    // DMA/DMA32 is most of memory: the heuristic picks node order.
    assert_eq!(mm.zonelist_order(), ZonelistOrder::Node);
    assert_eq!(
        mm.zonelist(0, ZonelistKind::Fallback).unwrap().to_string(),
        "0:Normal 0:DMA32 0:DMA"
    );
    let p = mm.alloc_pages(Gfp::DMA, 0).unwrap();
    assert!(p.maddr.0 < 16 * MB && p.zone == ZoneType::Dma);
    let q = mm.alloc_pages(Gfp::KERNEL, 5).unwrap();
    assert_eq!(q.zone, ZoneType::Normal);
    mm.free(p).unwrap();
    mm.free(q).unwrap();
    assert!(mm.check().is_empty());
}

#[test]
fn odd_configs_are_worked_around() {
    let cfg = MmConfig {
        nodes: vec![
            NodeConfig {
                vnode: 0,
                cpus: vec![0, 7],
                memory: vec![PhysRange {
                    gpa: Gpa(0x1800),
                    size: 8 * MB,
                    maddr: Maddr(0x1_0000_1800),
                }],
            },
            NodeConfig {
                vnode: 1,
                cpus: vec![0],
                memory: vec![PhysRange {
                    gpa: Gpa(4 * MB),
                    size: 8 * MB,
                    maddr: Maddr(0x2_0000_0000),
                }],
            },
        ],
        distances: vec![10],
        nr_cpus: 2,
        reserved: vec![],
        order: None,
    };
    let mm = Mm::new(cfg).unwrap();
    let w = mm.warnings().join("\n");
    assert!(w.contains("1 distances for 2 nodes"), "{w}");
    assert!(w.contains("node 0 names cpu 7"), "{w}");
    assert!(w.contains("cpu 0 named by nodes 0 and 1"), "{w}");
    assert!(w.contains("cpu 1 is on no node"), "{w}");
    assert!(w.contains("overlaps"), "{w}");
    assert_eq!(mm.node_distance(0, 1), 20);
    // Unaligned start trimmed to the next page.
    assert_eq!(mm.page_zone(Gfn(1)), None);
    assert_eq!(mm.page_to_nid(Gfn(2)), Some(0));
    assert!(mm.check().is_empty());
    assert_eq!(Mm::new(MmConfig::default()).err(), Some(MmError::Nodes(0)));
    let huge = MmConfig {
        nodes: vec![NodeConfig {
            vnode: 0,
            cpus: vec![0],
            memory: vec![PhysRange {
                gpa: Gpa(0),
                size: 1 << 46,
                maddr: Maddr(1 << 40),
            }],
        }],
        distances: vec![10],
        nr_cpus: 1,
        reserved: vec![],
        order: None,
    };
    assert!(matches!(
        Mm::new(huge),
        Err(MmError::Zone {
            error: buddy::BuildError::TooLarge,
            ..
        })
    ));
}

#[test]
fn memoryless_node_and_thisnode() {
    // Node 1 memoryless with the CPU; node 0 and 2 with memory.
    let t = Topo {
        n: 3,
        distances: vec![10, 20, 40, 20, 10, 20, 40, 20, 10],
        populated: vec![[false, true, false], [false; 3], [false, true, false]],
        cpus: vec![false, true, false],
    };
    let mm = Mm::new(config(&t)).unwrap();
    // CPU 1 is on node 1: (n < local) prefers node 2 over node 0.
    assert_eq!(mm.cpu_to_node(1), 1);
    assert_eq!(mm.cpu_to_mem(1), 2);
    assert_eq!(
        mm.alloc_pages_node(1, Gfp::THISNODE | Gfp::NOWARN, 0),
        Err(AllocError::NoMemory)
    );
    assert_eq!(mm.failures(), 1);
    let p = mm
        .with_cpu(1, |m| m.alloc_pages(Gfp::KERNEL, 0))
        .unwrap()
        .unwrap();
    assert_eq!(p.nid, 2);
    let s = mm.numa_stats(2).unwrap();
    assert_eq!((s.numa_hit, s.other_node, s.local_node), (1, 1, 0));
    assert!(mm.count_interleave_hit(&p, 2));
    assert!(!mm.count_interleave_hit(&p, 0));
    assert_eq!(mm.numa_stats(2).unwrap().interleave_hit, 1);
    assert_eq!(mm.with_cpu(5, |_| ()), None);
    assert_eq!(mm.free(p), Ok(()));
    assert_eq!(mm.free(p), Err(FreeError::NotAllocated(p.gpa())));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Per-CPU blocks taken at boot: every CPU but 0 gets one on its local
    /// memory node when that node has room, else on a later zone of its
    /// node's fallback list; the blocks are reserved (not managed, never
    /// freed, never merged) and everything still adds up.
    #[test]
    fn cpu_blocks_on_local_memory(t in topo(12), order in 0u32..4) {
        let plain = Mm::new(config(&t)).unwrap();
        let mm = Mm::with_cpu_blocks(config(&t), order).unwrap();
        prop_assert_eq!(mm.cpu_block(0), None);
        let mut taken: BTreeMap<u32, u64> = BTreeMap::new();
        for cpu in 1..mm.nr_cpus() {
            let Some(b) = mm.cpu_block(cpu) else {
                // Only when no zone of the list has a block that large.
                let node = mm.cpu_to_node(cpu);
                let zl = plain.zonelist(node, ZonelistKind::Fallback).unwrap();
                prop_assert!(zl.refs().iter().all(|z| plain.zone(*z).managed() < 1 << order));
                continue;
            };
            prop_assert_eq!(b.order, order);
            prop_assert!(b.gfn.0.is_multiple_of(1 << order));
            let first = mm
                .zonelist(mm.cpu_to_node(cpu), ZonelistKind::Fallback)
                .unwrap()
                .refs()[0];
            if plain.zone(first).managed() >= 16 << order {
                prop_assert_eq!(b.nid, mm.cpu_to_mem(cpu));
            }
            for f in b.gfn.0..b.gfn.0 + b.pages() {
                prop_assert_eq!(mm.page_state(Gfn(f)), Some((PageState::Reserved, 0)));
            }
            prop_assert_eq!(mm.free(b), Err(FreeError::Reserved(b.gpa())));
            *taken.entry(b.nid).or_default() += b.pages();
        }
        prop_assert_eq!(
            mm.cpu_blocks().map(|(_, b)| b.pages()).sum::<u64>(),
            taken.values().sum::<u64>()
        );
        for n in mm.nodes() {
            let t = taken.get(&n.id()).copied().unwrap_or(0);
            let was = plain.node(n.id()).unwrap().managed_pages();
            prop_assert_eq!(n.managed_pages() + t, was);
            prop_assert_eq!(n.present_pages(), plain.node(n.id()).unwrap().present_pages());
        }
        prop_assert!(mm.check().is_empty(), "{:?}", mm.check());
        // Everything managed can still be allocated, and nothing more.
        let mut got = 0;
        for o in (0..=MAX_ORDER).rev() {
            while let Ok(p) = mm.alloc_pages(Gfp::NOWARN, o) {
                got += p.pages();
            }
        }
        let managed: u64 = mm.zones().map(|z| z.managed()).sum();
        prop_assert_eq!(got, managed);
    }
}

/// Each thread (a vCPU in host tests) is its own CPU: its per-CPU lists,
/// its node; `with_cpu` on one leaves the others as they are; many
/// allocating at once keep the allocator sound.
#[test]
fn every_vcpu_is_its_own_cpu() {
    let t = Topo {
        n: 2,
        distances: vec![10, 20, 20, 10],
        populated: vec![[false, true, true], [false, true, true]],
        cpus: vec![true, true],
    };
    let mut cfg = config(&t);
    cfg.nr_cpus = 4;
    cfg.nodes[0].cpus = vec![0, 1];
    cfg.nodes[1].cpus = vec![2, 3];
    let mm = Mm::with_cpu_blocks(cfg, crate::percpu::STACK_ORDER).unwrap();
    assert_eq!(mm.current_cpu(), 0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (1..4u32)
            .map(|cpu| {
                let mm = &mm;
                s.spawn(move || {
                    crate::percpu::set_this_cpu(cpu);
                    let mut bad = Vec::new();
                    for round in 0..200 {
                        if mm.current_cpu() != cpu {
                            bad.push(format!("cpu {cpu} runs as {}", mm.current_cpu()));
                        }
                        let mut pages = Vec::new();
                        for _ in 0..8 {
                            match mm.alloc_pages(Gfp::KERNEL | Gfp::NOWARN, round % 2) {
                                Ok(p) if p.nid == mm.cpu_to_mem(cpu) => pages.push(p),
                                other => bad.push(format!("cpu {cpu}: {other:?}")),
                            }
                        }
                        for p in pages {
                            if let Err(e) = mm.free(p) {
                                bad.push(format!("cpu {cpu}: free: {e}"));
                            }
                        }
                    }
                    mm.drain_local_pages();
                    bad
                })
            })
            .collect();
        // Meanwhile this thread acts as CPU 2 for a while, which moves no
        // other thread.
        for _ in 0..200 {
            let r = mm.with_cpu(2, |m| (m.current_cpu(), m.alloc_pages(Gfp::KERNEL, 0)));
            let (cpu, p) = r.unwrap();
            assert_eq!(cpu, 2);
            let p = p.unwrap();
            assert_eq!(p.nid, 1);
            mm.with_cpu(2, |m| m.free(p)).unwrap().unwrap();
        }
        for w in workers {
            let bad = w.join().unwrap();
            assert!(bad.is_empty(), "{bad:?}");
        }
    });
    assert_eq!(mm.current_cpu(), 0);
    mm.drain_all_pages();
    assert!(mm.check().is_empty(), "{:?}", mm.check());
    for z in mm.zones() {
        let i = z.info();
        assert_eq!((i.free, i.pcp, i.used), (i.managed, 0, 0), "{i:?}");
    }
}

//! Host tests of the NUMA heap: fixed scenarios and property tests against a
//! simple model (a map of allocated blocks).

use super::*;
use crate::mm::addr::Maddr;
use crate::mm::frame_table::NR_ZONES;
use alloc::collections::BTreeMap;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn r(base: u64, len: u64) -> MemRange {
    MemRange::from_base_len(base, len)
}

/// Symmetric distances from an upper-triangle list, 10 on the diagonal.
fn distances(n: usize, pairs: &[(usize, usize, u8)]) -> Vec<u8> {
    let mut d = vec![20u8; n * n];
    for i in 0..n {
        d[i * n + i] = 10;
    }
    for &(a, b, v) in pairs {
        d[a * n + b] = v;
        d[b * n + a] = v;
    }
    d
}

/// A heap over `ranges`, every range added.
fn heap(ranges: &[(MemRange, NodeId)], n: usize, dist: Vec<u8>, cpus: Vec<NodeId>) -> Heap {
    let ft = FrameTable::new(ranges).unwrap();
    let h = Heap::new(
        ft,
        HeapTopology {
            nr_nodes: n,
            distances: dist,
            cpu_nodes: cpus,
        },
    )
    .unwrap();
    for &(rg, _) in ranges {
        h.add_free_range(rg).unwrap();
    }
    h.check_invariants().unwrap();
    h
}

fn node_of(h: &Heap, mfn: Mfn) -> NodeId {
    h.frame_table().node_of(mfn).unwrap()
}

/// The Xen-like 4-node box of the brief: 0-1 20, 0-2 30, 0-3 40.
fn four_node_distances() -> Vec<u8> {
    distances(
        4,
        &[
            (0, 1, 20),
            (0, 2, 30),
            (0, 3, 40),
            (1, 2, 20),
            (1, 3, 30),
            (2, 3, 20),
        ],
    )
}

#[test]
fn fallback_follows_distance() {
    let ranges: Vec<_> = (0..4u64)
        .map(|n| (r(GIB + n * MIB, MIB), NodeId(n as u8)))
        .collect();
    let h = heap(&ranges, 4, four_node_distances(), vec![NodeId(0)]);
    assert_eq!(
        h.fallback_order(NodeId(0)).unwrap(),
        &[NodeId(0), NodeId(1), NodeId(2), NodeId(3)]
    );
    assert_eq!(
        h.fallback_order(NodeId(3)).unwrap(),
        &[NodeId(3), NodeId(2), NodeId(1), NodeId(0)]
    );
    // Fill node 0 exactly.
    for _ in 0..256 {
        let m = h.alloc(0, AllocRequest::exact(NodeId(0))).unwrap();
        assert_eq!(node_of(&h, m), NodeId(0));
    }
    assert_eq!(
        h.alloc(0, AllocRequest::exact(NodeId(0))),
        Err(HeapError::NoMemory)
    );
    // Then node 0's requests spill to 1, 2, 3 in turn.
    for want in 1..4u8 {
        for _ in 0..256 {
            let m = h.alloc(0, AllocRequest::node(NodeId(0))).unwrap();
            assert_eq!(node_of(&h, m), NodeId(want));
        }
    }
    assert_eq!(
        h.alloc(0, AllocRequest::node(NodeId(0))),
        Err(HeapError::NoMemory)
    );
    assert_eq!(h.alloc(0, AllocRequest::any()), Err(HeapError::NoMemory));
    h.check_invariants().unwrap();
}

#[test]
fn memoryless_node_falls_through() {
    // Node 1 has CPUs but no memory.
    let ranges = [
        (r(GIB, MIB), NodeId(0)),
        (r(GIB + 2 * MIB, MIB), NodeId(2)),
        (r(GIB + 4 * MIB, MIB), NodeId(3)),
    ];
    let cpus = vec![NodeId(0), NodeId(1), NodeId(2), NodeId(3)];
    let h = heap(&ranges, 4, four_node_distances(), cpus);
    assert_eq!(h.total_pages(NodeId(1)), 0);
    assert_eq!(
        h.alloc(0, AllocRequest::exact(NodeId(1))),
        Err(HeapError::NoMemory)
    );
    // Node 1's nearest with memory: 0 and 2 are both at 20, 0 wins the tie.
    let m = h.alloc(0, AllocRequest::node(NodeId(1))).unwrap();
    assert_eq!(node_of(&h, m), NodeId(0));
    let m = h.alloc(0, AllocRequest::cpu(CpuId(1))).unwrap();
    assert_eq!(node_of(&h, m), NodeId(0));
    for _ in 0..254 {
        h.alloc(0, AllocRequest::exact(NodeId(0))).unwrap();
    }
    assert_eq!(
        h.alloc(0, AllocRequest::exact(NodeId(0))),
        Err(HeapError::NoMemory)
    );
    // Node 0 full: skip memoryless node 1, land on 2, then 3.
    let m = h.alloc(8, AllocRequest::node(NodeId(0))).unwrap();
    assert_eq!(node_of(&h, m), NodeId(2));
    let m = h.alloc(8, AllocRequest::cpu(CpuId(0))).unwrap();
    assert_eq!(node_of(&h, m), NodeId(3));
    h.check_invariants().unwrap();
}

#[test]
fn bad_requests_are_errors() {
    let h = heap(&[(r(GIB, MIB), NodeId(0))], 1, vec![10], vec![NodeId(0)]);
    let bad = [
        (MAX_ORDER + 1, AllocRequest::any()),
        (0, AllocRequest::node(NodeId(1))),
        (0, AllocRequest::exact(NodeId(7))),
        (0, AllocRequest::cpu(CpuId(1))),
        (0, AllocRequest::any().below_bits(11)),
        (0, AllocRequest::any().below_bits(65)),
        (
            0,
            AllocRequest {
                exact_node: true,
                ..AllocRequest::any()
            },
        ),
    ];
    for (order, req) in bad {
        assert_eq!(
            h.alloc(order, req),
            Err(HeapError::InvalidArgument),
            "{req:?}"
        );
    }
    // Valid but unsatisfiable.
    assert_eq!(h.alloc(9, AllocRequest::any()), Err(HeapError::NoMemory));
    assert_eq!(
        h.alloc(0, AllocRequest::any().below_bits(30)),
        Err(HeapError::NoMemory)
    );
    assert_eq!(
        h.alloc(0, AllocRequest::any().below_bits(12)),
        Err(HeapError::NoMemory)
    );
    assert!(h.alloc(0, AllocRequest::any().below_bits(64)).is_ok());
    assert!(h.alloc(0, AllocRequest::any().below_bits(31)).is_ok());

    // Topologies.
    let topo = |n, d: Vec<u8>, c: Vec<NodeId>| HeapTopology {
        nr_nodes: n,
        distances: d,
        cpu_nodes: c,
    };
    let ft = || FrameTable::new(&[(r(GIB, MIB), NodeId(1))]).unwrap();
    assert!(Heap::new(ft(), topo(0, vec![], vec![])).is_err());
    assert!(Heap::new(ft(), topo(2, vec![10; 3], vec![])).is_err());
    assert!(Heap::new(ft(), topo(1, vec![10], vec![])).is_err()); // RAM on node 1
    assert!(Heap::new(ft(), topo(2, vec![10; 4], vec![NodeId(2)])).is_err());
    assert!(Heap::new(ft(), topo(65, vec![10; 65 * 65], vec![])).is_err());
    assert!(Heap::new(ft(), topo(2, vec![10; 4], vec![NodeId(1)])).is_ok());
}

#[test]
fn bad_frees_change_nothing() {
    let h = heap(&[(r(GIB, MIB), NodeId(0))], 1, vec![10], vec![]);
    let a = h.alloc(3, AllocRequest::any()).unwrap();
    let b = h.alloc(0, AllocRequest::any()).unwrap();
    let snap = h.probe();
    assert_eq!(
        h.free(a, 2),
        Err(HeapError::WrongOrder {
            mfn: a,
            allocated: 3
        })
    );
    assert_eq!(h.free(a.add(1), 0), Err(HeapError::NotAllocated(a.add(1))));
    assert_eq!(h.free(a.add(4), 2), Err(HeapError::NotAllocated(a.add(4))));
    assert_eq!(h.free(Mfn(5), 0), Err(HeapError::NotRam(Mfn(5))));
    assert_eq!(h.free(a, MAX_ORDER + 1), Err(HeapError::InvalidArgument));
    let free_one = Maddr(GIB + MIB - PAGE_SIZE).mfn();
    assert!(matches!(h.state(free_one), Some(PageState::Free { .. })));
    assert_eq!(h.free(free_one, 0), Err(HeapError::NotAllocated(free_one)));
    assert_eq!(h.probe(), snap);
    h.check_invariants().unwrap();

    assert_eq!(
        h.state(a.add(5)),
        Some(PageState::Allocated { head: a, order: 3 })
    );
    h.set_owner(a, 7).unwrap();
    assert_eq!(h.owner(a.add(5)), Some(7));
    assert_eq!(
        h.set_owner(a.add(1), 7),
        Err(HeapError::NotAllocated(a.add(1)))
    );
    h.free(a, 3).unwrap();
    assert_eq!(h.owner(a), None);
    assert_eq!(h.free(a, 3), Err(HeapError::NotAllocated(a)), "double free");
    h.free(b, 0).unwrap();
    assert_eq!(h.free(b, 0), Err(HeapError::NotAllocated(b)), "double free");
    h.check_invariants().unwrap();
    // Everything merged back: one 1 MiB block.
    assert_eq!(h.probe().rows.len(), 1);
    assert_eq!(h.probe().rows[0].order, 8);
}

#[test]
fn split_blocks_free_in_parts() {
    let h = heap(&[(r(GIB, MIB), NodeId(0))], 1, vec![10], vec![]);
    let before = h.probe();
    let a = h.alloc(3, AllocRequest::any()).unwrap();
    h.set_owner(a, 9).unwrap();
    let snap = h.probe();
    // Refusals change nothing.
    assert_eq!(h.split(a, 0), Err(HeapError::InvalidArgument));
    assert_eq!(
        h.split(a, 2),
        Err(HeapError::WrongOrder {
            mfn: a,
            allocated: 3
        })
    );
    assert_eq!(h.split(a.add(4), 2), Err(HeapError::NotAllocated(a.add(4))));
    assert_eq!(h.split(Mfn(5), 1), Err(HeapError::NotRam(Mfn(5))));
    assert_eq!(h.probe(), snap);
    h.check_invariants().unwrap();
    // 8 pages -> 4 + 4 -> 4 + 2 + 2.
    h.split(a, 3).unwrap();
    h.check_invariants().unwrap();
    assert_eq!(
        h.state(a.add(5)),
        Some(PageState::Allocated {
            head: a.add(4),
            order: 2
        })
    );
    assert_eq!(h.owner(a.add(6)), Some(9), "the upper half keeps the owner");
    h.split(a.add(4), 2).unwrap();
    h.check_invariants().unwrap();
    assert_eq!(h.probe(), snap, "splitting frees nothing");
    assert_eq!(
        h.free(a, 3),
        Err(HeapError::WrongOrder {
            mfn: a,
            allocated: 2
        })
    );
    h.free(a.add(6), 1).unwrap();
    h.check_invariants().unwrap();
    h.free(a, 2).unwrap();
    h.free(a.add(4), 1).unwrap();
    h.check_invariants().unwrap();
    assert_eq!(h.probe(), before, "the halves merge back");
}

#[test]
fn dma_limits_and_high_memory_first() {
    // 16 MiB low (with page 0), 16 MiB above 4 GiB, one node.
    let ranges = [
        (r(0, 16 * MIB), NodeId(0)),
        (r(4 * GIB, 16 * MIB), NodeId(0)),
    ];
    let h = heap(&ranges, 1, vec![10], vec![NodeId(0)]);
    assert_eq!(h.total_pages(NodeId(0)), 8192 - 1, "page 0 never enters");
    assert_eq!(h.state(Mfn(0)), Some(PageState::Reserved));
    let m = h.alloc(4, AllocRequest::any()).unwrap();
    assert!(m.maddr().0 >= 4 * GIB, "prefers high memory");
    let m = h.alloc(4, AllocRequest::any().below_bits(32)).unwrap();
    assert!(m.add(16).maddr().0 <= 1 << 32);
    // Below 1 MiB: zones <= 8, i.e. frames 1..256; order 8 cannot fit there.
    assert_eq!(
        h.alloc(8, AllocRequest::any().below_bits(20)),
        Err(HeapError::NoMemory)
    );
    let m = h.alloc(7, AllocRequest::any().below_bits(20)).unwrap();
    assert_eq!(m, Mfn(128));
    // Order 7 below 1 MiB again takes the highest zone that still fits it:
    // zone 7 holds frames 64..128, one order-6 block at most.
    assert_eq!(
        h.alloc(7, AllocRequest::any().below_bits(20)),
        Err(HeapError::NoMemory)
    );
    h.check_invariants().unwrap();
}

#[test]
fn add_is_blockwise_merges_and_never_crosses_nodes() {
    // 2 GiB of one zone (64 GiB .. 66 GiB): two 1 GiB blocks.
    let h = heap(&[(r(64 * GIB, 2 * GIB), NodeId(0))], 1, vec![10], vec![]);
    let p = h.probe();
    assert_eq!(p.rows.len(), 1);
    assert_eq!((p.rows[0].order, p.rows[0].blocks), (MAX_ORDER, 2));
    // Whole 1 GiB blocks come out and go back.
    let small = h.alloc(0, AllocRequest::any()).unwrap();
    let big = h.alloc(MAX_ORDER, AllocRequest::any()).unwrap();
    assert_eq!(
        h.alloc(MAX_ORDER, AllocRequest::any()),
        Err(HeapError::NoMemory)
    );
    h.free(small, 0).unwrap();
    let big2 = h.alloc(MAX_ORDER, AllocRequest::any()).unwrap();
    assert_ne!(big, big2);
    h.free(big, MAX_ORDER).unwrap();
    h.free(big2, MAX_ORDER).unwrap();
    assert_eq!(h.probe(), p);

    // Added in two pieces: merged across the calls.
    let ft = FrameTable::new(&[(r(GIB, 4 * MIB), NodeId(0))]).unwrap();
    let topo = HeapTopology {
        nr_nodes: 1,
        distances: vec![10],
        cpu_nodes: vec![],
    };
    let h2 = Heap::new(ft, topo).unwrap();
    h2.add_free_range(r(GIB + 3 * PAGE_SIZE, 4 * MIB - 3 * PAGE_SIZE))
        .unwrap();
    assert!(h2.probe().rows.len() > 1);
    assert_eq!(
        h2.add_free_range(r(GIB, 4 * PAGE_SIZE)),
        Err(HeapError::AlreadyAdded(r(GIB, 4 * PAGE_SIZE)))
    );
    assert_eq!(
        h2.add_free_range(r(GIB, 5)),
        Err(HeapError::InvalidArgument)
    );
    h2.add_free_range(r(GIB, 3 * PAGE_SIZE)).unwrap();
    let p = h2.probe();
    assert_eq!(p.rows.len(), 1);
    assert_eq!((p.rows[0].order, p.rows[0].blocks), (10, 1));
    h2.check_invariants().unwrap();

    // Two nodes meeting at an aligned boundary inside one zone: no merge.
    let ranges = [
        (r(GIB, 4 * MIB), NodeId(0)),
        (r(GIB + 4 * MIB, 4 * MIB), NodeId(1)),
    ];
    let h3 = heap(&ranges, 2, vec![10, 20, 20, 10], vec![]);
    h3.add_free_range(r(0, GIB)).unwrap(); // no RAM there: nothing added
    let p = h3.probe();
    assert_eq!(p.rows.len(), 2);
    assert!(p.rows.iter().all(|r| r.order == 10 && r.blocks == 1));
    let a = h3.alloc(10, AllocRequest::exact(NodeId(0))).unwrap();
    let b = h3.alloc(10, AllocRequest::exact(NodeId(1))).unwrap();
    h3.free(a, 10).unwrap();
    h3.free(b, 10).unwrap();
    assert_eq!(h3.probe(), p);

    // A probe prints in its documented format.
    let text = alloc::format!("{p}");
    assert!(text.starts_with("heap probe: node 0 total 1024 free 1024\n"));
    assert!(text.contains("heap probe: node 1 zone 19 order 10 blocks 1 pages 1024\n"));
}

#[test]
fn never_added_stays_reserved() {
    let ft = FrameTable::new(&[(r(GIB, 2 * MIB), NodeId(0))]).unwrap();
    let topo = HeapTopology {
        nr_nodes: 1,
        distances: vec![10],
        cpu_nodes: vec![],
    };
    let h = Heap::new(ft, topo).unwrap();
    h.add_free_range(r(GIB, MIB)).unwrap();
    let hi = Maddr(GIB + MIB).mfn();
    assert_eq!(h.state(hi), Some(PageState::Reserved));
    assert_eq!(h.free(hi, 0), Err(HeapError::NotAllocated(hi)));
    for _ in 0..256 {
        let m = h.alloc(0, AllocRequest::any()).unwrap();
        assert!(m < hi);
    }
    assert_eq!(h.alloc(0, AllocRequest::any()), Err(HeapError::NoMemory));
    h.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------
// Property tests against a model.

#[derive(Clone, Debug)]
struct Layout {
    nr_nodes: usize,
    /// (range, node, split point in pages, skip first part, skip second part)
    ranges: Vec<(MemRange, NodeId, u64, bool, bool)>,
    distances: Vec<u8>,
    cpu_nodes: Vec<NodeId>,
}

fn layout() -> impl Strategy<Value = Layout> {
    (1usize..=4).prop_flat_map(|n| {
        (
            Just(n),
            // Base: low (many small zones), across 4 GiB, or Altix-like high.
            prop_oneof![Just(1u64), Just((1u64 << 20) - 700), Just(0x30_0000u64)],
            proptest::collection::vec(
                (
                    0u64..300,
                    1u64..700,
                    0..n,
                    0u64..700,
                    prop::bool::weighted(0.1),
                    prop::bool::weighted(0.1),
                ),
                1..7,
            ),
            proptest::collection::vec(11u8..60, n * n),
            proptest::collection::vec(0..n, 1..6),
        )
            .prop_map(|(n, base, parts, mut dist, cpus)| {
                for i in 0..n {
                    dist[i * n + i] = 10;
                }
                let mut at = base;
                let mut ranges = Vec::new();
                for (gap, len, node, split, s1, s2) in parts {
                    at += gap;
                    let rg = MemRange::from_base_len(at * PAGE_SIZE, len * PAGE_SIZE);
                    ranges.push((rg, NodeId(node as u8), split % len, s1, s2));
                    at += len;
                }
                Layout {
                    nr_nodes: n,
                    ranges,
                    distances: dist,
                    cpu_nodes: cpus.into_iter().map(|c| NodeId(c as u8)).collect(),
                }
            })
    })
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        order: u8,
        loc: u8,
        target: usize,
        exact: bool,
        bits: Option<u32>,
    },
    Free(usize),
    /// Free a random frame with a random order: must fail unless it is an
    /// allocated head of that order.
    BadFree(u64, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            prop_oneof![4 => 0u8..4, 2 => 4u8..9, 1 => 9u8..=MAX_ORDER + 1],
            0u8..5,
            0usize..6,
            prop::bool::weighted(0.3),
            prop_oneof![3 => Just(None), 2 => (11u32..44).prop_map(Some), 1 => Just(Some(70))],
        )
            .prop_map(|(order, loc, target, exact, bits)| Op::Alloc {
                order,
                loc,
                target,
                exact,
                bits
            }),
        4 => (0usize..1000).prop_map(Op::Free),
        1 => (0u64..0x30_1000, 0u8..4).prop_map(|(m, o)| Op::BadFree(m, o)),
    ]
}

/// The reference fallback order: self, then by distance, ties to lower id.
fn model_fallback(l: &Layout, from: usize) -> Vec<usize> {
    let n = l.nr_nodes;
    let mut v: Vec<usize> = (0..n).collect();
    v.sort_by_key(|&to| (to != from, l.distances[from * n + to], to));
    v
}

/// Where a correct heap must serve a request: the first node (in the
/// model's order) with a free block of at least `order` in an allowed zone,
/// and there its highest such zone.
fn expected(h: &Heap, nodes: &[usize], order: u8, max_zone: u8) -> Option<(usize, u8)> {
    for &n in nodes {
        for z in (0..=max_zone).rev() {
            if (order..=MAX_ORDER).any(|o| h.free_blocks(NodeId(n as u8), z, o) > 0) {
                return Some((n, z));
            }
        }
    }
    None
}

fn run(l: Layout, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let ft_ranges: Vec<_> = l.ranges.iter().map(|x| (x.0, x.1)).collect();
    let ft = FrameTable::new(&ft_ranges).unwrap();
    let h = Heap::new(
        ft,
        HeapTopology {
            nr_nodes: l.nr_nodes,
            distances: l.distances.clone(),
            cpu_nodes: l.cpu_nodes.clone(),
        },
    )
    .unwrap();
    // Pages the model says were added, per node.
    let mut added_pages = vec![0u64; l.nr_nodes];
    let mut added: Vec<MemRange> = Vec::new();
    for &(rg, node, split, s1, s2) in &l.ranges {
        let cut = rg.start.0 + split * PAGE_SIZE;
        for (part, skip) in [
            (MemRange::new(rg.start, Maddr(cut)), s1),
            (MemRange::new(Maddr(cut), rg.end), s2),
        ] {
            if skip || part.is_empty() {
                continue;
            }
            h.add_free_range(part).unwrap();
            added.push(part);
            let pages = part.len() / PAGE_SIZE - u64::from(part.start.0 == 0);
            added_pages[node.index()] += pages;
        }
    }
    h.check_invariants().map_err(TestCaseError::fail)?;
    let init = h.probe();
    for (n, &pages) in added_pages.iter().enumerate() {
        prop_assert_eq!(h.total_pages(NodeId(n as u8)), pages);
    }

    // mfn -> (order, node)
    let mut model: BTreeMap<u64, (u8, usize)> = BTreeMap::new();
    let mut allocated = vec![0u64; l.nr_nodes];
    for op in ops {
        match op {
            Op::Alloc {
                order,
                loc,
                target,
                exact,
                bits,
            } => {
                let (locality, node) = match loc {
                    0 | 1 => (Locality::Node(NodeId(target as u8)), Some(target)),
                    2 | 3 => (
                        Locality::Cpu(CpuId(target as u32)),
                        l.cpu_nodes.get(target).map(|c| c.index()),
                    ),
                    _ => (Locality::Any, Some(0)),
                };
                let req = AllocRequest {
                    locality,
                    exact_node: exact,
                    max_address_bits: bits,
                };
                let invalid = order > MAX_ORDER
                    || node.is_none_or(|n| n >= l.nr_nodes)
                    || (exact && locality == Locality::Any)
                    || bits.is_some_and(|b| !(12..=64).contains(&b));
                let got = h.alloc(order, req);
                if invalid {
                    prop_assert_eq!(got, Err(HeapError::InvalidArgument));
                    continue;
                }
                let node = node.unwrap_or(0);
                let max_zone = bits.map_or(NR_ZONES as u8 - 1, |b| (b - PAGE_SHIFT).min(52) as u8);
                let order_nodes = if exact {
                    vec![node]
                } else {
                    model_fallback(&l, node)
                };
                // A failed allocation changed nothing, so the heap must truly
                // have had no fitting block.
                let mfn = match got {
                    Err(e) => {
                        prop_assert_eq!(e, HeapError::NoMemory);
                        prop_assert_eq!(expected(&h, &order_nodes, order, max_zone), None);
                        continue;
                    }
                    Ok(m) => m,
                };
                let size = 1u64 << order;
                prop_assert_eq!(mfn.0 % size, 0);
                let ft = h.frame_table();
                let first = ft.chunk_of(mfn);
                prop_assert!(first.is_some());
                prop_assert_eq!(
                    first,
                    ft.chunk_of(Mfn(mfn.0 + size - 1)),
                    "block spans chunks"
                );
                prop_assert_eq!(
                    zone_of(mfn),
                    zone_of(Mfn(mfn.0 + size - 1)),
                    "block spans zones"
                );
                let got_node = ft.node_of(mfn).unwrap().index();
                if exact {
                    prop_assert_eq!(got_node, node);
                }
                if let Some(b) = bits {
                    prop_assert!(((mfn.0 + size) as u128) << PAGE_SHIFT <= 1u128 << b);
                }
                prop_assert!(mfn.0 != 0);
                prop_assert!(
                    added.iter().any(|a| a.contains(mfn.maddr()))
                        && added
                            .iter()
                            .any(|a| a.contains(Mfn(mfn.0 + size - 1).maddr())),
                    "block outside added memory"
                );
                // No overlap with any live allocation.
                if let Some((&m, &(o, _))) = model.range(..mfn.0 + size).next_back() {
                    prop_assert!(m + (1 << o) <= mfn.0, "overlaps {:#x} order {}", m, o);
                }
                // Placement: after the allocation, every node before the one
                // used (in the model's order) still has no block that fits
                // (allocating elsewhere cannot have created one there), and the
                // zone used was the highest fitting one on its node: any higher
                // fitting zone would still hold its block.
                let pos = order_nodes.iter().position(|&n| n == got_node);
                prop_assert!(pos.is_some(), "landed on a node outside the order");
                let pos = pos.unwrap_or(0);
                prop_assert_eq!(expected(&h, &order_nodes[..pos], order, max_zone), None);
                let z = zone_of(mfn);
                for hz in z + 1..=max_zone {
                    prop_assert!(
                        (order..=MAX_ORDER)
                            .all(|o| h.free_blocks(NodeId(got_node as u8), hz, o) == 0),
                        "zone {} had room but {} was used",
                        hz,
                        z
                    );
                }
                model.insert(mfn.0, (order, got_node));
                allocated[got_node] += size;
            }
            Op::Free(i) => {
                if model.is_empty() {
                    continue;
                }
                let (&m, &(o, n)) = model.iter().nth(i % model.len()).unwrap();
                h.free(Mfn(m), o)
                    .map_err(|e| TestCaseError::fail(format!("{e}")))?;
                model.remove(&m);
                allocated[n] -= 1 << o;
                // Double free is refused.
                prop_assert!(h.free(Mfn(m), o).is_err());
            }
            Op::BadFree(m, o) => {
                if model.get(&m).is_some_and(|x| x.0 == o) {
                    continue;
                }
                let before = h.probe();
                prop_assert!(h.free(Mfn(m), o).is_err());
                prop_assert_eq!(h.probe(), before);
            }
        }
        h.check_invariants().map_err(TestCaseError::fail)?;
        for n in 0..l.nr_nodes {
            let node = NodeId(n as u8);
            prop_assert_eq!(
                h.free_pages(node) + allocated[n],
                added_pages[n],
                "page lost on node {}",
                n
            );
        }
    }

    // Free everything: the lists return exactly to their state after init.
    for (m, (o, _)) in core::mem::take(&mut model) {
        h.free(Mfn(m), o)
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
    }
    h.check_invariants().map_err(TestCaseError::fail)?;
    prop_assert_eq!(h.probe(), init);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_alloc_free_matches_model(l in layout(), ops in proptest::collection::vec(op(), 1..120)) {
        run(l, ops)?;
    }
}

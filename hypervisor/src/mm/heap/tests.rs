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
// Claims and owners.

/// Three nodes of 256 pages each, high enough that page 0 plays no part.
fn three_nodes() -> Heap {
    let ranges: Vec<_> = (0..3u64)
        .map(|n| (r(GIB + n * MIB, MIB), NodeId(n as u8)))
        .collect();
    heap(&ranges, 3, distances(3, &[]), vec![NodeId(0)])
}

#[test]
fn claims_are_all_or_nothing_and_name_every_short_node() {
    let h = three_nodes();
    let before = h.probe();
    // Node 1 is short: nothing is claimed anywhere.
    let e = h
        .claim(1, &[(NodeId(0), 100), (NodeId(1), 300), (NodeId(2), 50)])
        .unwrap_err();
    assert_eq!(
        e,
        ClaimError::Short(vec![Shortfall {
            node: NodeId(1),
            wanted: 300,
            available: 256
        }])
    );
    assert_eq!(
        alloc::format!("{e}"),
        "node 1: wants 300 pages, 256 unclaimed free (short by 44)"
    );
    for n in 0..3 {
        assert_eq!(h.claimed_pages(NodeId(n)), 0);
    }
    // Every short node is listed, ascending; a node named twice asks the sum.
    let c = h.claim(2, &[(NodeId(1), 120)]).unwrap();
    let e = h
        .claim(
            3,
            &[
                (NodeId(2), 200),
                (NodeId(1), 100),
                (NodeId(2), 100),
                (NodeId(0), 1),
            ],
        )
        .unwrap_err();
    assert_eq!(
        alloc::format!("{e}"),
        "node 2: wants 300 pages, 256 unclaimed free (short by 44)"
    );
    let e = h
        .claim(3, &[(NodeId(1), 200), (NodeId(2), 300)])
        .unwrap_err();
    assert_eq!(
        alloc::format!("{e}"),
        "node 1: wants 200 pages, 136 unclaimed free (short by 64); \
         node 2: wants 300 pages, 256 unclaimed free (short by 44)"
    );
    assert_eq!(
        h.claim(3, &[(NodeId(3), 1)]),
        Err(ClaimError::NoSuchNode(NodeId(3)))
    );
    assert_eq!(h.claimed_pages(NodeId(1)), 120);
    assert_eq!(h.claimed_pages(NodeId(2)), 0);
    // Claims are not free-list state: the probe does not change.
    assert_eq!(h.probe(), before);
    h.check_invariants().unwrap();
    assert_eq!(h.release(c), 120);
    assert_eq!(h.claimed_pages(NodeId(1)), 0);
    // An empty claim is fine and holds nothing.
    let c = h.claim(4, &[]).unwrap();
    assert_eq!(c.total_remaining(), 0);
    assert_eq!(h.release(c), 0);
}

#[test]
fn others_cannot_eat_claimed_memory() {
    let h = three_nodes();
    let c = h.claim(5, &[(NodeId(0), 200)]).unwrap();
    assert_eq!((c.owner(), c.remaining(NodeId(0))), (5, 200));
    assert_eq!(c.remaining(NodeId(1)), 0);
    assert_eq!(h.unclaimed_free_pages(NodeId(0)), 56);
    assert_eq!(h.free_pages(NodeId(0)), 256);
    // A 64-page block would eat into the claim; 32 pages do not.
    assert_eq!(
        h.alloc(6, AllocRequest::exact(NodeId(0))),
        Err(HeapError::NoMemory)
    );
    let big = h.alloc(5, AllocRequest::exact(NodeId(0))).unwrap();
    let mut small = Vec::new();
    for _ in 0..24 {
        small.push(h.alloc(0, AllocRequest::exact(NodeId(0))).unwrap());
    }
    assert_eq!(h.unclaimed_free_pages(NodeId(0)), 0);
    assert_eq!(
        h.alloc(0, AllocRequest::exact(NodeId(0))),
        Err(HeapError::NoMemory)
    );
    // Without exact_node the request falls back to node 1 instead.
    let m = h.alloc(0, AllocRequest::node(NodeId(0))).unwrap();
    assert_eq!(node_of(&h, m), NodeId(1));
    // Nobody else can claim it either.
    assert_eq!(
        h.claim(6, &[(NodeId(0), 1)]),
        Err(ClaimError::Short(vec![Shortfall {
            node: NodeId(0),
            wanted: 1,
            available: 0
        }]))
    );
    h.check_invariants().unwrap();
    // Released, the pages serve anyone again.
    assert_eq!(h.release(c), 200);
    assert_eq!(h.unclaimed_free_pages(NodeId(0)), 200);
    let m2 = h.alloc(6, AllocRequest::exact(NodeId(0))).unwrap();
    for b in small.into_iter().chain([m]) {
        h.free(b, 0).unwrap();
    }
    h.free(big, 5).unwrap();
    h.free(m2, 6).unwrap();
    h.check_invariants().unwrap();
    assert_eq!(h.total_free_pages(), 3 * 256);
}

#[test]
fn alloc_claimed_draws_the_claim_down() {
    let h = three_nodes();
    let mut c = h.claim(7, &[(NodeId(0), 10), (NodeId(1), 4)]).unwrap();
    let a = h
        .alloc_claimed(&mut c, 0, AllocRequest::exact(NodeId(0)))
        .unwrap();
    assert_eq!(h.owner(a), Some(7), "the claim's owner owns the block");
    assert_eq!((c.remaining(NodeId(0)), h.claimed_pages(NodeId(0))), (9, 9));
    // 16 pages against 9 claimed: the claim pays 9, unclaimed pages the rest.
    let b = h
        .alloc_claimed(&mut c, 4, AllocRequest::exact(NodeId(0)))
        .unwrap();
    assert_eq!((c.remaining(NodeId(0)), h.claimed_pages(NodeId(0))), (0, 0));
    assert_eq!(h.free_pages(NodeId(0)), 256 - 17);
    assert_eq!(
        h.owned(7),
        Owned {
            blocks: 2,
            pages: 17
        }
    );
    // A block from a node the claim does not cover leaves the claim alone.
    let d = h
        .alloc_claimed(&mut c, 0, AllocRequest::exact(NodeId(2)))
        .unwrap();
    assert_eq!(c.total_remaining(), 4);
    assert_eq!(h.owner(d), Some(7));

    // Node 1: 4 claimed pages, everything else taken by others. An 8-page
    // block needs 4 unclaimed pages on top of the claim: refused, and the
    // claim is untouched; 4 pages fit exactly.
    let mut others = Vec::new();
    while let Ok(m) = h.alloc(0, AllocRequest::exact(NodeId(1))) {
        others.push(m);
    }
    assert_eq!(others.len(), 252);
    assert_eq!(
        h.alloc_claimed(&mut c, 3, AllocRequest::exact(NodeId(1))),
        Err(HeapError::NoMemory)
    );
    assert_eq!(c.remaining(NodeId(1)), 4);
    h.check_invariants().unwrap();
    let e = h
        .alloc_claimed(&mut c, 2, AllocRequest::exact(NodeId(1)))
        .unwrap();
    assert_eq!(c.total_remaining(), 0);
    assert_eq!(
        h.owned(7),
        Owned {
            blocks: 4,
            pages: 22
        }
    );
    assert_eq!(h.owned(8), Owned::default());
    assert_eq!(h.release(c), 0);

    // A claim only works on the heap that granted it.
    let other = three_nodes();
    let mut foreign = other.claim(9, &[(NodeId(0), 8)]).unwrap();
    assert_eq!(
        h.alloc_claimed(&mut foreign, 0, AllocRequest::any()),
        Err(HeapError::InvalidArgument)
    );
    assert_eq!(h.release(foreign), 0);
    assert_eq!(other.claimed_pages(NodeId(0)), 8);

    for m in others {
        h.free(m, 0).unwrap();
    }
    for (m, o) in [(a, 0), (b, 4), (d, 0), (e, 2)] {
        h.free(m, o).unwrap();
    }
    assert_eq!(h.owned(7), Owned::default());
    h.check_invariants().unwrap();
}

#[test]
fn owned_counts_blocks_by_their_head() {
    let h = three_nodes();
    let a = h.alloc(3, AllocRequest::exact(NodeId(0))).unwrap();
    let b = h.alloc(0, AllocRequest::exact(NodeId(2))).unwrap();
    let c = h.alloc(1, AllocRequest::exact(NodeId(1))).unwrap();
    h.set_owner(a, 3).unwrap();
    h.set_owner(b, 3).unwrap();
    h.set_owner(c, 4).unwrap();
    assert_eq!(
        h.owned(3),
        Owned {
            blocks: 2,
            pages: 9
        }
    );
    // Splitting keeps the owner on both halves: one block more, same pages.
    h.split(a, 3).unwrap();
    assert_eq!(
        h.owned(3),
        Owned {
            blocks: 3,
            pages: 9
        }
    );
    h.free(a.add(4), 2).unwrap();
    assert_eq!(
        h.owned(3),
        Owned {
            blocks: 2,
            pages: 5
        }
    );
    h.free(a, 2).unwrap();
    h.free(b, 0).unwrap();
    assert_eq!(h.owned(3), Owned::default());
    assert_eq!(
        h.owned(4),
        Owned {
            blocks: 1,
            pages: 2
        }
    );
    assert_eq!(h.owned(OWNER_NONE), Owned::default());
}

#[test]
fn racing_claimers_for_the_last_pages_exactly_one_wins() {
    use std::sync::Barrier;
    let h = three_nodes();
    // Leave 40 unclaimed pages on node 1.
    let held = h.alloc(7, AllocRequest::exact(NodeId(1))).unwrap();
    let keep = h.claim(1, &[(NodeId(1), 88)]).unwrap();
    for round in 0..50 {
        let barrier = Barrier::new(4);
        let won: Vec<Option<Claim>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4u32)
                .map(|t| {
                    let (h, barrier) = (&h, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        // Each wants 30 of the 40 pages, and a page of node 2
                        // (plenty), all or nothing.
                        h.claim(10 + t, &[(NodeId(2), 1), (NodeId(1), 30)]).ok()
                    })
                })
                .collect();
            hs.into_iter().map(|j| j.join().unwrap()).collect()
        });
        let winners: Vec<Claim> = won.into_iter().flatten().collect();
        assert_eq!(winners.len(), 1, "round {round}");
        assert_eq!(h.claimed_pages(NodeId(1)), 88 + 30);
        assert_eq!(h.claimed_pages(NodeId(2)), 1, "losers claimed nothing");
        h.check_invariants().unwrap();
        for w in winners {
            assert_eq!(h.release(w), 31);
        }
    }
    assert_eq!(h.release(keep), 88);
    h.free(held, 7).unwrap();
    h.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------
// Several CPUs at once.

/// xorshift64*: a deterministic generator per thread, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one thread holds: its blocks (and whether they came from its claims,
/// so carry its owner) and its claims.
#[derive(Default)]
struct Held {
    blocks: Vec<(Mfn, u8, bool)>,
    claims: Vec<Claim>,
    /// Successful alloc, free, split, claim, alloc_claimed, release.
    done: [u32; 6],
}

/// Threads hammer one heap with every operation on random nodes, each
/// remembering what it holds; then no block is held twice, the invariants
/// hold, owners and claims add up, and freeing everything restores the probe.
#[test]
fn concurrent_threads_keep_the_heap_whole() {
    const THREADS: u32 = 4;
    const OPS: usize = 25_000;
    // Node 0 low (with page 0 and small zones), node 1 across 4 GiB's zones,
    // node 2 high, node 3 memoryless; small, so threads collide and run dry.
    let ranges = [
        (r(0, 2 * MIB), NodeId(0)),
        (r(2 * MIB, 2 * MIB), NodeId(1)),
        (r(4 * GIB, 4 * MIB), NodeId(2)),
    ];
    let cpus = vec![NodeId(0), NodeId(1), NodeId(2), NodeId(3)];
    let h = heap(&ranges, 4, four_node_distances(), cpus);
    let init = h.probe();
    let start = std::sync::Barrier::new(THREADS as usize);

    let held: Vec<Held> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let (h, start) = (&h, &start);
                s.spawn(move || {
                    start.wait();
                    let owner = 100 + t;
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((u64::from(t) + 1) * 0x1234_5678));
                    let mut me = Held::default();
                    for i in 0..OPS {
                        let node = NodeId(rng.below(4) as u8);
                        let order = [0, 0, 0, 1, 2, 3, 5, 8][rng.below(8) as usize];
                        let req = match rng.below(4) {
                            0 => AllocRequest::exact(node),
                            1 => AllocRequest::node(node),
                            2 => AllocRequest::cpu(CpuId(rng.below(4) as u32)),
                            _ => AllocRequest::any().below_bits(21 + rng.below(3) as u32),
                        };
                        match rng.below(10) {
                            0..=2 => {
                                if let Ok(m) = h.alloc(order, req) {
                                    me.blocks.push((m, order, false));
                                    me.done[0] += 1;
                                }
                            }
                            3..=5 if !me.blocks.is_empty() => {
                                let k = rng.below(me.blocks.len() as u64) as usize;
                                let (m, o, mine) = me.blocks.swap_remove(k);
                                assert_eq!(h.owner(m), mine.then_some(owner));
                                h.free(m, o).unwrap();
                                me.done[1] += 1;
                            }
                            6 if !me.blocks.is_empty() => {
                                let k = rng.below(me.blocks.len() as u64) as usize;
                                let (m, o, mine) = me.blocks[k];
                                if o > 0 {
                                    h.split(m, o).unwrap();
                                    me.blocks[k].1 = o - 1;
                                    me.blocks.push((m.add(1 << (o - 1)), o - 1, mine));
                                    me.done[2] += 1;
                                }
                            }
                            7 if me.claims.len() < 2 => {
                                let want = [
                                    (node, 1 + rng.below(40)),
                                    (NodeId(rng.below(3) as u8), rng.below(20)),
                                ];
                                if let Ok(c) = h.claim(owner, &want) {
                                    me.claims.push(c);
                                    me.done[3] += 1;
                                }
                            }
                            8 if !me.claims.is_empty() => {
                                let k = rng.below(me.claims.len() as u64) as usize;
                                if let Ok(m) = h.alloc_claimed(&mut me.claims[k], order, req) {
                                    me.blocks.push((m, order, true));
                                    me.done[4] += 1;
                                }
                            }
                            9 if !me.claims.is_empty() => {
                                let k = rng.below(me.claims.len() as u64) as usize;
                                let c = me.claims.swap_remove(k);
                                let left = c.total_remaining();
                                assert_eq!(h.release(c), left);
                                me.done[5] += 1;
                            }
                            _ => {}
                        }
                        // The checker locks one node at a time while the others run.
                        if t == 0 && i % 2500 == 0 {
                            h.check_invariants().unwrap();
                        }
                    }
                    me
                })
            })
            .collect();
        hs.into_iter().map(|j| j.join().unwrap()).collect()
    });

    // Every kind of operation really happened.
    let done: Vec<u32> = (0..6)
        .map(|k| held.iter().map(|x| x.done[k]).sum())
        .collect();
    std::println!("alloc, free, split, claim, alloc_claimed, release: {done:?}");
    assert!(done.iter().all(|&d| d > 50), "{done:?}");

    // No block is held twice, and each is what the heap says it is.
    let mut all: Vec<(u64, u8)> = held
        .iter()
        .flat_map(|x| x.blocks.iter().map(|&(m, o, _)| (m.0, o)))
        .collect();
    assert!(!all.is_empty());
    all.sort_unstable();
    for w in all.windows(2) {
        assert!(w[0].0 + (1 << w[0].1) <= w[1].0, "{w:x?} overlap");
    }
    for &(m, o) in &all {
        assert_eq!(
            h.state(Mfn(m)),
            Some(PageState::Allocated {
                head: Mfn(m),
                order: o
            })
        );
    }
    h.check_invariants().unwrap();
    // Owners and claims add up.
    for (t, x) in held.iter().enumerate() {
        let mine = x.blocks.iter().filter(|b| b.2);
        let pages = mine.clone().map(|b| 1u64 << b.1).sum();
        assert_eq!(
            h.owned(100 + t as u32),
            Owned {
                blocks: mine.count() as u64,
                pages
            }
        );
    }
    for n in 0..4u8 {
        let node = NodeId(n);
        let claimed: u64 = held
            .iter()
            .flat_map(|x| &x.claims)
            .map(|c| c.remaining(node))
            .sum();
        assert_eq!(h.claimed_pages(node), claimed, "node {n}");
    }
    // Give everything back: nothing was lost.
    for x in held {
        for (m, o, _) in x.blocks {
            h.free(m, o).unwrap();
        }
        for c in x.claims {
            h.release(c);
        }
    }
    h.check_invariants().unwrap();
    assert_eq!(h.probe(), init);
    for n in 0..4u8 {
        assert_eq!(h.claimed_pages(NodeId(n)), 0);
    }
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

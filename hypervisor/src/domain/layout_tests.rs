//! Tests of the guest-physical layout for every kind.

use super::*;
use alloc::string::ToString;
use alloc::vec;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn vn(pnode: u8, size_mib: u64) -> VnodeConfig {
    VnodeConfig {
        pnode: NodeId(pnode),
        size_mib,
        vcpus: Vec::new(),
        vdistances: Vec::new(),
    }
}

/// vnode 0: 4 MiB on node 0 in three runs (two adjacent, given out of
/// order); vnode 1: memoryless on node 2; vnode 2: 3 MiB on node 1; vnode 3:
/// 2 MiB on node 3.
fn sample() -> (Vec<VnodeConfig>, Vec<Vec<(Mfn, u64)>>) {
    (
        vec![vn(0, 4), vn(2, 0), vn(1, 3), vn(3, 2)],
        vec![
            vec![(Mfn(0x1000), 512), (Mfn(0x900), 256), (Mfn(0x800), 256)],
            vec![],
            vec![(Mfn(0x20000), 768)],
            vec![(Mfn(0x40000), 512)],
        ],
    )
}

/// Machine node of a frame in `sample()`'s machine: node 0 below 0x20000,
/// node 1 below 0x40000, node 3 below 0x60000.
fn sample_node(mfn: Mfn) -> Option<NodeId> {
    match mfn.0 {
        0..0x20000 => Some(NodeId(0)),
        0x20000..0x40000 => Some(NodeId(1)),
        0x40000..0x60000 => Some(NodeId(3)),
        _ => None,
    }
}

const PNODES: [NodeId; 4] = [NodeId(0), NodeId(2), NodeId(1), NodeId(3)];

fn m(gpa: u64, mfn: u64, pages: u64, vnode: u32) -> Mapping {
    Mapping {
        gpa: Gpa(gpa),
        mfn: Mfn(mfn),
        pages,
        vnode,
    }
}

fn r(start: u64, end: u64) -> GpaRange {
    GpaRange {
        start: Gpa(start),
        end: Gpa(end),
    }
}

fn layout(kind: LayoutKind) -> DomainLayout {
    let (v, e) = sample();
    let l = DomainLayout::compute(kind, &v, &e).unwrap();
    l.verify(sample_node, &PNODES).unwrap();
    l.verify_every_page(sample_node, &PNODES).unwrap();
    assert_eq!(l.total_pages(), 9 * 256);
    assert_eq!(l.kind, kind);
    l
}

#[test]
fn compact() {
    let l = layout(LayoutKind::Compact);
    assert_eq!(
        l.mappings,
        [
            m(0, 0x800, 512, 0),
            m(2 * MIB, 0x1000, 512, 0),
            m(4 * MIB, 0x20000, 768, 2),
            m(8 * MIB, 0x40000, 512, 3),
        ]
    );
    assert_eq!(l.vnodes[0].ranges, [r(0, 4 * MIB)]);
    assert!(l.vnodes[1].ranges.is_empty());
    assert_eq!(l.vnodes[1].pages, 0);
    assert_eq!(l.vnodes[1].pnode, NodeId(2));
    // 3 MiB vnode: the next starts on the following 2 MiB boundary.
    assert_eq!(l.vnodes[2].ranges, [r(4 * MIB, 7 * MIB)]);
    assert_eq!(l.vnodes[3].ranges, [r(8 * MIB, 10 * MIB)]);
    assert_eq!(
        l.memory_ranges(),
        [
            MemoryRange {
                gpa: Gpa(0),
                size: 2 * MIB,
                vnode: 0,
                maddr: Maddr(0x80_0000)
            },
            MemoryRange {
                gpa: Gpa(2 * MIB),
                size: 2 * MIB,
                vnode: 0,
                maddr: Maddr(0x100_0000)
            },
            MemoryRange {
                gpa: Gpa(4 * MIB),
                size: 3 * MIB,
                vnode: 2,
                maddr: Maddr(0x2000_0000)
            },
            MemoryRange {
                gpa: Gpa(8 * MIB),
                size: 2 * MIB,
                vnode: 3,
                maddr: Maddr(0x4000_0000)
            },
        ]
    );
    assert_eq!(
        l.to_string(),
        "domain layout: vnode 0 gpa [0x0-0x200000) -> machine [0x800000-0xa00000) node 0\n\
         domain layout: vnode 0 gpa [0x200000-0x400000) -> machine [0x1000000-0x1200000) node 0\n\
         domain layout: vnode 1 no memory node 2\n\
         domain layout: vnode 2 gpa [0x400000-0x700000) -> machine [0x20000000-0x20300000) node 1\n\
         domain layout: vnode 3 gpa [0x800000-0xa00000) -> machine [0x40000000-0x40200000) node 3"
    );
    assert_eq!(l.translate(Gfn(0)), Some((Mfn(0x800), 0)));
    assert_eq!(l.translate(Gfn(0x1ff)), Some((Mfn(0x9ff), 0)));
    assert_eq!(l.translate(Gfn(0x2ff)), Some((Mfn(0x10ff), 0)));
    assert_eq!(l.translate(Gfn(0x400)), Some((Mfn(0x20000), 2)));
    assert_eq!(l.translate(Gfn(0x700)), None); // the hole after vnode 2
    assert_eq!(l.translate(Gfn(0xa00)), None);
    assert!(l.covers(Gpa(0x1000), 4 * MIB - 0x1000)); // across a machine split
    assert!(l.covers(Gpa(0), 7 * MIB));
    assert!(!l.covers(Gpa(0), 7 * MIB + 1));
    assert!(l.covers(Gpa(0x9f_ffff), 1));
    assert!(!l.covers(Gpa(0xa0_0000), 1));
    assert!(l.covers(Gpa(0xa0_0000), 0));
    assert!(!l.covers(Gpa(u64::MAX), 2));
}

#[test]
fn runs_and_remap_for_the_dma_exchange() {
    let mut l = layout(LayoutKind::Compact);
    // Across the machine split of vnode 0.
    assert_eq!(
        l.runs(Gpa(2 * MIB - 0x2000), 4),
        Ok((
            0,
            vec![
                (Gpa(2 * MIB - 0x2000), Mfn(0x9fe), 2),
                (Gpa(2 * MIB), Mfn(0x1000), 2)
            ]
        ))
    );
    assert_eq!(
        l.runs(Gpa(4 * MIB - 0x1000), 2),
        Err(RangeError::SpansVnodes)
    );
    assert_eq!(
        l.runs(Gpa(7 * MIB - 0x1000), 2),
        Err(RangeError::NotMapped(Gpa(7 * MIB)))
    );
    assert_eq!(l.runs(Gpa(0), 0), Err(RangeError::NotMapped(Gpa(0))));
    assert_eq!(l.runs(Gpa(0), u64::MAX), Err(RangeError::NotMapped(Gpa(0))));
    let before = l.clone();
    assert_eq!(
        l.remap(Gpa(4 * MIB - 0x1000), 2, Mfn(0x5_0000)),
        Err(RangeError::SpansVnodes)
    );
    assert_eq!(l, before, "a refused remap changes nothing");

    // The middle of vnode 0 moves to frames 0x70000..0x70004.
    l.remap(Gpa(2 * MIB - 0x2000), 4, Mfn(0x7_0000)).unwrap();
    assert_eq!(
        l.mappings,
        [
            m(0, 0x800, 510, 0),
            m(2 * MIB - 0x2000, 0x7_0000, 4, 0),
            m(2 * MIB + 0x2000, 0x1002, 510, 0),
            m(4 * MIB, 0x20000, 768, 2),
            m(8 * MIB, 0x40000, 512, 3),
        ]
    );
    assert_eq!(
        l.vnodes, before.vnodes,
        "vnodes keep their ranges and sizes"
    );
    assert_eq!(l.translate(Gfn(0x1ff)), Some((Mfn(0x7_0001), 0)));
    assert_eq!(l.translate(Gfn(0x202)), Some((Mfn(0x1002), 0)));
    // Moving it back where it was merges the mappings again.
    l.remap(Gpa(2 * MIB - 0x2000), 2, Mfn(0x9fe)).unwrap();
    l.remap(Gpa(2 * MIB), 2, Mfn(0x1000)).unwrap();
    assert_eq!(l, before);
    // A whole mapping, then one that joins its neighbour in both spaces.
    l.remap(Gpa(8 * MIB), 512, Mfn(0x40200)).unwrap();
    assert_eq!(l.mappings[3], m(8 * MIB, 0x40200, 512, 3));
    l.verify(
        |f| {
            Some(if f.0 >= 0x40000 {
                NodeId(3)
            } else {
                sample_node(f)?
            })
        },
        &PNODES,
    )
    .unwrap();
}

#[test]
fn node_bits() {
    let l = layout(LayoutKind::NodeBits);
    assert_eq!(
        l.mappings,
        [
            m(0, 0x800, 512, 0),
            m(2 * MIB, 0x1000, 512, 0),
            m(2 << 36, 0x20000, 768, 2),
            m(3 << 36, 0x40000, 512, 3),
        ]
    );
    assert_eq!(l.vnodes[2].ranges, [r(0x20_0000_0000, 0x20_0030_0000)]);
    assert!(l.vnodes[1].ranges.is_empty());
    assert!(l.to_string().contains(
        "vnode 3 gpa [0x3000000000-0x3000200000) -> machine [0x40000000-0x40200000) node 3"
    ));
    assert_eq!(
        l.translate(Gfn((3 << 36 >> 12) + 5)),
        Some((Mfn(0x40005), 3))
    );
    assert_eq!(l.translate(Gfn(1 << 24)), None); // vnode 1's empty slot
}

#[test]
fn high_only() {
    let l = layout(LayoutKind::HighOnly);
    assert_eq!(
        l.mappings,
        [
            m(4 * GIB, 0x800, 512, 0),
            m(4 * GIB + 2 * MIB, 0x1000, 512, 0),
            m(4 * GIB + 4 * MIB, 0x20000, 768, 2),
            m(4 * GIB + 8 * MIB, 0x40000, 512, 3),
        ]
    );
    assert!(l.memory_ranges().iter().all(|r| r.gpa.0 >= 4 * GIB));
    assert!(!l.covers(Gpa(0), 1));
}

#[test]
fn identity() {
    let l = layout(LayoutKind::Identity);
    assert_eq!(
        l.mappings,
        [
            m(0x80_0000, 0x800, 512, 0),
            m(0x100_0000, 0x1000, 512, 0),
            m(0x2000_0000, 0x20000, 768, 2),
            m(0x4000_0000, 0x40000, 512, 3),
        ]
    );
    assert_eq!(
        l.vnodes[0].ranges,
        [r(0x80_0000, 0xa0_0000), r(0x100_0000, 0x120_0000)]
    );
    for mp in &l.mappings {
        assert_eq!(mp.gpa.0, mp.maddr().0);
    }
}

#[test]
fn runs_of_different_vnodes_never_merge() {
    // Identity: vnode 0's run ends where vnode 1's begins, in both spaces.
    let v = [vn(0, 2), vn(0, 2)];
    let e = [vec![(Mfn(0x200), 512)], vec![(Mfn(0x400), 512)]];
    let l = DomainLayout::compute(LayoutKind::Identity, &v, &e).unwrap();
    assert_eq!(l.mappings.len(), 2);
    let l = DomainLayout::compute(LayoutKind::Compact, &v, &e).unwrap();
    assert_eq!(l.mappings, [m(0, 0x200, 512, 0), m(2 * MIB, 0x400, 512, 1)]);
    assert_eq!(l.memory_ranges().len(), 2);
}

#[test]
fn bad_inputs_are_refused() {
    let (v, e) = sample();
    let c = |v: &[VnodeConfig], e: &[Vec<(Mfn, u64)>]| {
        DomainLayout::compute(LayoutKind::Compact, v, e).unwrap_err()
    };
    assert_eq!(c(&v, &e[..3]), "3 machine extent lists for 4 vnodes");
    let mut short = e.clone();
    short[2] = vec![(Mfn(0x20000), 767)];
    assert_eq!(
        c(&v, &short),
        "vnode 2: 767 pages of machine memory for 3 MiB (768 pages)"
    );
    let mut more = e.clone();
    more[1] = vec![(Mfn(0x50000), 1)];
    assert_eq!(
        c(&v, &more),
        "vnode 1: 1 pages of machine memory for 0 MiB (0 pages)"
    );
    let mut empty = e.clone();
    empty[2] = vec![(Mfn(0x20000), 768), (Mfn(0x30000), 0)];
    assert_eq!(
        c(&v, &empty),
        "vnode 2: empty machine extent at frame 0x30000"
    );
    let mut overlap = e.clone();
    overlap[3] = vec![(Mfn(0x202ff), 512)];
    assert_eq!(
        c(&v, &overlap),
        "machine extents overlap: [0x20000000-0x20300000) of vnode 2 and \
         [0x202ff000-0x204ff000) of vnode 3"
    );
    let mut same = e.clone();
    same[0] = vec![(Mfn(0x800), 512), (Mfn(0x800), 512)];
    assert!(c(&v, &same).starts_with("machine extents overlap"));
    let mut far = e.clone();
    far[3] = vec![(Mfn((1 << 40) - 1), 512)];
    assert_eq!(
        c(&v, &far),
        "vnode 3: machine extent at frame 0xffffffffff (+0x200 pages) is beyond the physical \
         address space"
    );
    let mut wrap = e.clone();
    wrap[3] = vec![(Mfn(u64::MAX), 512)];
    assert!(c(&v, &wrap).contains("beyond the physical address space"));

    // node-bits: 64 GiB per vnode.
    let big = [vn(0, 65 * 1024)];
    let big_e = [vec![(Mfn(0), 65 << 18)]];
    assert_eq!(
        DomainLayout::compute(LayoutKind::NodeBits, &big, &big_e).unwrap_err(),
        "vnode 0: 66560 MiB do not fit the node-bits layout's 64 GiB per vnode"
    );
    DomainLayout::compute(LayoutKind::Compact, &big, &big_e).unwrap();
    // Compact past 2^48: 5 vnodes of 64 TiB.
    let huge: Vec<VnodeConfig> = (0..5).map(|_| vn(0, 1 << 26)).collect();
    let huge_e: Vec<Vec<(Mfn, u64)>> = (0..5).map(|k| vec![(Mfn(k << 34), 1 << 34)]).collect();
    assert_eq!(
        DomainLayout::compute(LayoutKind::Compact, &huge, &huge_e).unwrap_err(),
        "vnode 4: 67108864 MiB do not fit below the 48-bit guest-physical limit in the \
         compact layout"
    );
    // Identity above 2^48.
    let hi = [vn(0, 2)];
    let hi_e = [vec![(Mfn(1 << 36), 512)]];
    assert!(DomainLayout::compute(LayoutKind::Identity, &hi, &hi_e)
        .unwrap_err()
        .contains("48-bit"));
    DomainLayout::compute(LayoutKind::Compact, &hi, &hi_e).unwrap();
    // Too many vnodes.
    let many: Vec<VnodeConfig> = (0..65).map(|_| vn(0, 0)).collect();
    let many_e: Vec<Vec<(Mfn, u64)>> = vec![Vec::new(); 65];
    assert_eq!(c(&many, &many_e), "65 vnodes; at most 64");
}

#[test]
fn verify_catches_wrong_nodes() {
    let l = layout(LayoutKind::Compact);
    // One page in the middle of vnode 2's run is on node 3: only the
    // per-page walk sees it.
    let one_bad = |mfn: Mfn| {
        if mfn == Mfn(0x20100) {
            Some(NodeId(3))
        } else {
            sample_node(mfn)
        }
    };
    l.verify(one_bad, &PNODES).unwrap();
    assert_eq!(
        l.verify_every_page(one_bad, &PNODES).unwrap_err(),
        "vnode 2 (pnode 1): gpa 0x500000 -> machine 0x20100000 is on node 3"
    );
    // The last page of a run: both see it.
    let last_bad = |mfn: Mfn| {
        if mfn == Mfn(0x9ff) {
            None
        } else {
            sample_node(mfn)
        }
    };
    let want = "vnode 0 (pnode 0): gpa 0x1ff000 -> machine 0x9ff000 is not RAM of any node";
    assert_eq!(l.verify(last_bad, &PNODES).unwrap_err(), want);
    assert_eq!(l.verify_every_page(last_bad, &PNODES).unwrap_err(), want);
    // The wrong physical node for a vnode.
    assert_eq!(
        l.verify(sample_node, &[NodeId(0), NodeId(2), NodeId(3), NodeId(3)])
            .unwrap_err(),
        "vnode 2 (pnode 3): gpa 0x400000 -> machine 0x20000000 is on node 1"
    );
    assert_eq!(
        l.verify(sample_node, &PNODES[..3]).unwrap_err(),
        "3 physical nodes given for 4 vnodes"
    );
    // A damaged map.
    let mut d = l.clone();
    d.mappings[3].mfn = Mfn(0x20100);
    assert_eq!(
        d.verify(|_| Some(NodeId(0)), &[NodeId(0); 4]).unwrap_err(),
        "machine frame 0x20100 is mapped twice (gpa 0x400000 and gpa 0x800000)"
    );
    let mut d = l.clone();
    d.mappings.swap(0, 1);
    assert!(d
        .verify(sample_node, &PNODES)
        .unwrap_err()
        .starts_with("mappings unsorted or overlapping"));
    let mut d = l.clone();
    d.mappings[0].vnode = 7;
    assert_eq!(
        d.verify(sample_node, &PNODES).unwrap_err(),
        "mapping at 0x0 names vnode 7, which does not exist"
    );
    let mut d = l.clone();
    d.vnodes[3].pages += 1;
    assert_eq!(
        d.verify(sample_node, &PNODES).unwrap_err(),
        "vnode 3: 512 pages in its mappings for 513 pages"
    );
    let mut d = l;
    d.mappings[3].pages = u64::MAX;
    assert!(d
        .verify(sample_node, &PNODES)
        .unwrap_err()
        .contains("runs past the address space"));
}

/// Random vnodes, each backed by 1-4 runs placed at random in machine
/// memory (sometimes touching runs of other vnodes or their own).
fn arb_domain() -> impl Strategy<Value = (Vec<VnodeConfig>, Vec<Vec<(Mfn, u64)>>)> {
    proptest::collection::vec((0u64..6, 1usize..5), 1..7)
        .prop_flat_map(|v| {
            let n_runs: usize = v.iter().map(|x| x.1).sum();
            (
                Just(v),
                proptest::collection::vec(0u64..3, n_runs),
                proptest::collection::vec(any::<u32>(), n_runs),
                Just(()).prop_perturb(|_, mut rng| rng.next_u64()),
            )
        })
        .prop_map(|(v, gaps, cuts, seed)| {
            let vnodes: Vec<VnodeConfig> = v
                .iter()
                .enumerate()
                .map(|(k, &(size, _))| vn((k % 3) as u8, size))
                .collect();
            // Split each vnode's pages into runs (empty runs dropped).
            let mut runs: Vec<(usize, u64)> = Vec::new();
            let mut ci = 0;
            for (k, &(size, nr)) in v.iter().enumerate() {
                let mut left = size * 256;
                for j in 0..nr {
                    let take = if j + 1 == nr {
                        left
                    } else {
                        u64::from(cuts[ci]) % (left + 1)
                    };
                    ci += 1;
                    left -= take;
                    if take > 0 {
                        runs.push((k, take));
                    }
                }
            }
            // Shuffle the runs (a small LCG from the seed), then lay them out
            // with gaps of 0, 1 or 2 x 512 pages.
            let mut s = seed;
            for i in (1..runs.len()).rev() {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                runs.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut extents = vec![Vec::new(); vnodes.len()];
            let mut at = 0x100u64;
            for (i, (k, pages)) in runs.into_iter().enumerate() {
                at += gaps[i] * 512;
                extents[k].push((Mfn(at), pages));
                at += pages;
            }
            (vnodes, extents)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_layouts_are_consistent((vnodes, extents) in arb_domain()) {
        let owner = |mfn: Mfn| -> Option<usize> {
            extents.iter().position(|ex| ex.iter().any(|&(s, n)| s.0 <= mfn.0 && mfn.0 < s.0 + n))
        };
        let node_of = |mfn: Mfn| owner(mfn).map(|k| vnodes[k].pnode);
        let pnodes: Vec<NodeId> = vnodes.iter().map(|v| v.pnode).collect();
        for kind in LayoutKind::ALL {
            let l = DomainLayout::compute(kind, &vnodes, &extents).unwrap();
            l.verify(node_of, &pnodes).unwrap();
            l.verify_every_page(node_of, &pnodes).unwrap();
            // Every given page is mapped exactly once, to its own vnode.
            let mut pages: Vec<(u64, u64, u32)> = Vec::new();
            for mp in &l.mappings {
                for i in 0..mp.pages {
                    pages.push(((mp.gpa.0 >> 12) + i, mp.mfn.0 + i, mp.vnode));
                }
            }
            let want: u64 = vnodes.iter().map(|v| v.size_mib * 256).sum();
            prop_assert_eq!(pages.len() as u64, want);
            prop_assert_eq!(l.total_pages(), want);
            let mut mfns: Vec<u64> = pages.iter().map(|p| p.1).collect();
            mfns.sort_unstable();
            mfns.dedup();
            prop_assert_eq!(mfns.len() as u64, want);
            for &(gfn, mfn, k) in &pages {
                prop_assert_eq!(owner(Mfn(mfn)), Some(k as usize));
                prop_assert_eq!(l.translate(Gfn(gfn)), Some((Mfn(mfn), k)));
                if kind == LayoutKind::Identity {
                    prop_assert_eq!(gfn, mfn);
                }
            }
            // Mappings sorted, disjoint, maximal.
            for w in l.mappings.windows(2) {
                prop_assert!(w[0].gpa_end() <= w[1].gpa);
                prop_assert!(!(w[0].vnode == w[1].vnode
                    && w[0].gpa_end() == w[1].gpa
                    && w[0].mfn.0 + w[0].pages == w[1].mfn.0));
            }
            // Per-kind placement of each vnode.
            let mut next = if kind == LayoutKind::HighOnly { HIGH_ONLY_BASE } else { 0 };
            for (k, v) in l.vnodes.iter().enumerate() {
                let bytes: u64 = v.ranges.iter().map(GpaRange::len).sum();
                prop_assert_eq!(bytes, v.pages * PAGE_SIZE);
                let Some(first) = v.ranges.first() else {
                    prop_assert_eq!(v.pages, 0);
                    continue;
                };
                match kind {
                    LayoutKind::Compact | LayoutKind::HighOnly => {
                        prop_assert_eq!(v.ranges.len(), 1);
                        prop_assert_eq!(first.start.0, next.div_ceil(VNODE_ALIGN) * VNODE_ALIGN);
                        next = first.end.0;
                    }
                    LayoutKind::NodeBits => {
                        prop_assert_eq!(v.ranges.len(), 1);
                        prop_assert_eq!(first.start.0, (k as u64) << NODE_SHIFT);
                    }
                    LayoutKind::Identity => {}
                }
            }
            // Start-info ranges: the mappings, split only at machine breaks.
            let ranges = l.memory_ranges();
            prop_assert_eq!(ranges.len(), l.mappings.len());
            prop_assert_eq!(ranges.iter().map(|r| r.size).sum::<u64>(), want * PAGE_SIZE);
            prop_assert_eq!(l.to_string().lines().count(),
                ranges.len() + l.vnodes.iter().filter(|v| v.pages == 0).count());
        }
    }
}

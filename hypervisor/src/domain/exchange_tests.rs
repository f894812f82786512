//! Tests of the DMA exchange on a domain built by the real builder over the
//! real heap: contents kept, mappings and bookkeeping moved, atomic
//! refusals, node choice, and a teardown that gives every page back.

use alloc::collections::BTreeMap;
use proptest::prelude::*;

use super::*;
use crate::domain::config::{DomainConfig, LayoutKind, VnodeConfig};
use crate::domain::testutil::{allocate_for, DOMAIN};
use crate::mm::addr::{Maddr, MemRange};
use crate::mm::frame_table::FrameTable;
use crate::mm::heap::{HeapProbe, HeapTopology};
use crate::svm::paging::{USER, WRITABLE};

const MIB: u64 = 1 << 20;

/// Machine memory as a sparse map of pages (untouched pages read 0xAA).
#[derive(Default)]
struct FakeMachine {
    pages: BTreeMap<u64, Vec<u8>>,
}

impl MachineMemory for FakeMachine {
    fn read(&self, at: Maddr, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = at.0 + i as u64;
            *b = self
                .pages
                .get(&(a >> 12))
                .map_or(0xAA, |p| p[(a & 0xfff) as usize]);
        }
    }
    fn write(&mut self, at: Maddr, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let a = at.0 + i as u64;
            self.pages
                .entry(a >> 12)
                .or_insert_with(|| vec![0xAA; 4096])[(a & 0xfff) as usize] = b;
        }
    }
    fn zero(&mut self, at: Maddr, len: u64) {
        self.write(at, &vec![0; len as usize]);
    }
}

/// Nested tables in a map, the heap beside them.
struct FakeTables {
    heap: Heap,
    tables: BTreeMap<u64, Vec<u64>>,
    next: u64,
    /// Table pages it may still hand out.
    left: usize,
}

impl TableMemory for FakeTables {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.next += 0x1000;
        self.tables.insert(self.next, vec![0; 512]);
        Some(self.next)
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        self.tables[&table][index]
    }
    fn write(&mut self, table: u64, index: usize, entry: u64) {
        self.tables.get_mut(&table).unwrap()[index] = entry;
    }
}

impl HeapTableMemory for FakeTables {
    fn heap(&self) -> &Heap {
        &self.heap
    }
    fn owner(&self) -> u32 {
        DOMAIN
    }
}

/// Node 0: 16 MiB at 16 MiB and 64 MiB at 512 MiB; node 1: 64 MiB at
/// 1 GiB (nothing below 2^30). Distance 20.
fn heap() -> Heap {
    let ranges = [
        (MemRange::from_base_len(16 * MIB, 16 * MIB), NodeId(0)),
        (MemRange::from_base_len(512 * MIB, 64 * MIB), NodeId(0)),
        (MemRange::from_base_len(1024 * MIB, 64 * MIB), NodeId(1)),
    ];
    let ft = FrameTable::new(&ranges).unwrap();
    let topo = HeapTopology {
        nr_nodes: 2,
        distances: vec![10, 20, 20, 10],
        cpu_nodes: vec![NodeId(0), NodeId(1)],
    };
    let h = Heap::new(ft, topo).unwrap();
    for (r, _) in ranges {
        h.add_free_range(r).unwrap();
    }
    h
}

fn config(kind: LayoutKind) -> DomainConfig {
    let vn = |pnode, vcpus: Vec<u32>, d: Vec<u8>| VnodeConfig {
        pnode: NodeId(pnode),
        size_mib: 8,
        vcpus,
        vdistances: d,
    };
    DomainConfig {
        name: "x".into(),
        memory_mib: 16,
        vcpus: 2,
        cpus: None,
        vnodes: vec![vn(0, vec![0], vec![10, 20]), vn(1, vec![1], vec![20, 10])],
        layout: kind,
        cmdline: String::new(),
        kernel: None,
        pci: Vec::new(),
        ..DomainConfig::default()
    }
}

struct Domain {
    p2m: P2m<FakeTables, FakeMachine>,
    before: HeapProbe,
}

/// A domain of two 8 MiB vnodes (node 0, node 1), every page tagged with
/// its guest frame number.
fn domain(kind: LayoutKind, table_pages: usize) -> Domain {
    let heap = heap();
    let before = heap.probe();
    let cfg = config(kind);
    let alloc = allocate_for(&heap, &cfg).unwrap();
    let layout = DomainLayout::compute(kind, &cfg.vnodes, &alloc.extents).unwrap();
    let tables = FakeTables {
        heap,
        tables: BTreeMap::new(),
        next: 0,
        left: table_pages,
    };
    let mut npt = PageTables::new(tables, WRITABLE | USER).unwrap();
    for m in &layout.mappings {
        npt.map(m.gpa.0, m.maddr().0, m.bytes()).unwrap();
    }
    let mut node_pages = vec![0u64; 2];
    for v in &layout.vnodes {
        node_pages[v.pnode.index()] += v.pages;
    }
    let mut p2m = P2m {
        layout,
        alloc,
        npt,
        machine: FakeMachine::default(),
        vnode_pnode: vec![NodeId(0), NodeId(1)],
        node_pages,
        flush_tlb: false,
    };
    for gfn in all_gfns(&p2m) {
        p2m.write(Gpa(gfn << 12), &gfn.to_le_bytes()).unwrap();
    }
    Domain { p2m, before }
}

fn all_gfns(p2m: &P2m<FakeTables, FakeMachine>) -> Vec<u64> {
    p2m.layout
        .mappings
        .iter()
        .flat_map(|m| (m.gpa.0 >> 12)..(m.gpa.0 >> 12) + m.pages)
        .collect()
}

/// Every page still holds its tag, the nested tables agree with the
/// layout, the heap is consistent, and the per-node counts add up.
fn check(p2m: &P2m<FakeTables, FakeMachine>) {
    for gfn in all_gfns(p2m) {
        let mut b = [0u8; 8];
        p2m.read(Gpa(gfn << 12), &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), gfn, "contents of gfn {gfn:#x}");
        let (mfn, _) = p2m.layout.translate(Gfn(gfn)).unwrap();
        assert_eq!(p2m.npt.translate(gfn << 12), Some(mfn.maddr().0));
    }
    p2m.heap().check_invariants().unwrap();
    let total: u64 = p2m.layout.vnodes.iter().map(|v| v.pages).sum();
    assert_eq!(p2m.alloc.total_pages(), total);
    assert_eq!(p2m.node_pages.iter().sum::<u64>(), total);
    let mut per_node = [0u64; 2];
    for &(m, o) in &p2m.alloc.blocks {
        let n = p2m.heap().frame_table().node_of(m).unwrap();
        per_node[n.index()] += 1 << o;
        assert_eq!(
            p2m.heap().owner(m),
            Some(DOMAIN),
            "block {m} is the domain's"
        );
    }
    assert_eq!(per_node.to_vec(), p2m.node_pages);
    let owned = p2m.heap().owned(DOMAIN);
    assert_eq!(
        (owned.blocks, owned.pages),
        (p2m.alloc.blocks.len() as u64, total),
        "the frame table's owners count exactly the domain's blocks"
    );
}

/// Tears the domain down as the hypervisor does: every page comes back.
fn teardown(d: Domain) {
    let Domain { p2m, before } = d;
    let (tables, _) = p2m.npt.into_memory();
    let heap = tables.heap;
    p2m.alloc.free(&heap).unwrap();
    heap.check_invariants().unwrap();
    assert_eq!(heap.owned(DOMAIN).pages, 0, "nothing left owned");
    assert_eq!(heap.probe(), before, "teardown gives every page back");
}

fn req(gpa: u64, pages: u64, bits: u32, exact: bool) -> ExchangeRequest {
    ExchangeRequest {
        gpa: Gpa(gpa),
        pages,
        address_bits: bits,
        exact_node: exact,
    }
}

#[test]
fn exchange_on_the_vnodes_node() {
    let mut d = domain(LayoutKind::Compact, 64);
    check(&d.p2m);
    let pages_2m = d.p2m.npt.pages_2m;
    let r = d.p2m.exchange(&req(0x10_3000, 5, 28, true)).unwrap();
    assert_eq!((r.vnode, r.node, r.off_node()), (0, NodeId(0), false));
    assert!(r.new.maddr().0 + 5 * 4096 <= 1 << 28, "below the limit");
    assert!(d.p2m.flush_tlb);
    assert_eq!(d.p2m.npt.pages_2m, pages_2m - 1, "one 2 MiB page split");
    for k in 0..5 {
        assert_eq!(
            d.p2m.npt.translate(0x10_3000 + k * 4096),
            Some(r.new.maddr().0 + k * 4096)
        );
    }
    assert_eq!(d.p2m.node_pages, vec![2048, 2048]);
    let line = format!("{r}");
    assert!(
        line.starts_with("dma exchange: gpa [0x103000-0x108000) (5 pages, vnode 0): machine [0x"),
        "{line}"
    );
    assert!(line.ends_with("below 2^28, node 0"), "{line}");
    check(&d.p2m);
    // Again, overlapping the first: moved again, still intact.
    d.p2m.exchange(&req(0x10_0000, 16, 28, true)).unwrap();
    check(&d.p2m);
    teardown(d);
}

#[test]
fn off_node_when_the_node_has_no_such_memory() {
    let mut d = domain(LayoutKind::HighOnly, 64);
    let vnode1 = d.p2m.layout.vnodes[1].ranges[0].start.0;
    let probe = d.p2m.heap().probe();
    let layout = d.p2m.layout.clone();
    // Exact node: node 1 has nothing below 2^30; nothing changes.
    assert_eq!(
        d.p2m.exchange(&req(vnode1, 4, 30, true)),
        Err(ExchangeError::NoMemory {
            nodes: vec![NodeId(1)]
        })
    );
    assert_eq!(d.p2m.heap().probe(), probe);
    assert_eq!(d.p2m.layout, layout);
    // Not exact: node 0, the nearest with such memory, and it says so.
    let r = d.p2m.exchange(&req(vnode1, 4, 30, false)).unwrap();
    assert_eq!(
        (r.node, r.vnode_pnode, r.off_node()),
        (NodeId(0), NodeId(1), true)
    );
    assert!(format!("{r}").contains(
        "; off node: vnode 1's node 1 has no such memory free, node 0 is the nearest that has"
    ));
    assert_eq!(d.p2m.node_pages, vec![2048 + 4, 2048 - 4]);
    check(&d.p2m);
    // Below 16 MiB there is nothing anywhere.
    assert_eq!(
        d.p2m.exchange(&req(vnode1, 1, 24, false)),
        Err(ExchangeError::NoMemory {
            nodes: vec![NodeId(1), NodeId(0)]
        })
    );
    check(&d.p2m);
    teardown(d);
}

#[test]
fn refusals_change_nothing() {
    let mut d = domain(LayoutKind::Compact, 64);
    let probe = d.p2m.heap().probe();
    let layout = d.p2m.layout.clone();
    let end0 = d.p2m.layout.vnodes[0].ranges[0].end.0;
    let start1 = d.p2m.layout.vnodes[1].ranges[0].start.0;
    let cases = [
        (req(end0 - 4096, 2, 32, false), Error::InvalidArgument),
        (req(1 << 40, 1, 32, false), Error::Fault),
        (req(start1, 1 << 16, 32, false), Error::Fault),
        // Nothing below 16 MiB on either node.
        (req(0, 16, 24, false), Error::OutOfMemory),
    ];
    for (r, e) in cases {
        let got = d.p2m.exchange(&r).unwrap_err();
        assert_eq!(got.abi_error(), e, "{r:?}: {got}");
        assert_eq!(d.p2m.heap().probe(), probe, "{r:?}");
        assert_eq!(d.p2m.layout, layout, "{r:?}");
        check(&d.p2m);
    }
    assert!(!d.p2m.flush_tlb);
    teardown(d);
}

#[test]
fn no_table_memory_is_a_clean_failure() {
    // The initial tables take 1 + 1 + 1 pages (PML4, PDPT, PD); none left.
    let mut d = domain(LayoutKind::Compact, 3);
    let probe = d.p2m.heap().probe();
    let layout = d.p2m.layout.clone();
    assert_eq!(
        d.p2m.exchange(&req(0x1000, 1, 32, false)),
        Err(ExchangeError::NoTableMemory)
    );
    assert_eq!(d.p2m.heap().probe(), probe);
    assert_eq!(d.p2m.layout, layout);
    check(&d.p2m);
    teardown(d);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Any sequence of exchanges, refused or not, keeps every page's
    /// contents, the tables, the layout and the heap consistent, and the
    /// teardown gives every page back.
    #[test]
    fn random_exchanges_keep_everything(
        kind in prop_oneof![Just(LayoutKind::Compact), Just(LayoutKind::NodeBits), Just(LayoutKind::Identity)],
        ops in proptest::collection::vec((0u64..4096, 1u64..300, 24u32..=64, any::<bool>()), 1..6),
    ) {
        let mut d = domain(kind, 4096);
        let gfns = all_gfns(&d.p2m);
        for (start, pages, bits, exact) in ops {
            let gfn = gfns[start as usize % gfns.len()];
            let r = req(gfn << 12, pages, bits, exact);
            let probe = d.p2m.heap().probe();
            let layout = d.p2m.layout.clone();
            match d.p2m.exchange(&r) {
                Ok(rep) => {
                    let limit = if bits >= 64 { u64::MAX } else { 1u64 << bits };
                    prop_assert!(rep.new.maddr().0 + (pages << 12) <= limit);
                    if exact {
                        prop_assert!(!rep.off_node());
                    }
                }
                Err(_) => {
                    prop_assert_eq!(d.p2m.heap().probe(), probe);
                    prop_assert_eq!(&d.p2m.layout, &layout);
                }
            }
            check(&d.p2m);
        }
        teardown(d);
    }
}

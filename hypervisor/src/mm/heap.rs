//! The NUMA heap: a buddy allocator of machine pages per node, zone and order.
//!
//! Modelled on Xen's `page_alloc.c`: free blocks live on lists
//! `heap[node][zone][order]`, where a zone is an address-width bucket (zone of
//! a frame = its bit width, see [`zone_of`]), so "memory below `2^n` bytes" is
//! a set of whole zones and DMA-limited requests need no scanning. Blocks never
//! merge across a node or zone boundary, so every block, free or allocated,
//! lies on one node and in one zone.
//!
//! The lists are threaded through the frame table's [`PageInfo`] entries
//! (`u32` page indices), so insertion and removal are `O(1)`, and bitmasks of
//! non-empty orders (per node and zone) and non-empty zones (per node) let an
//! allocation find its list with a few bit operations.
//!
//! The heap is a plain `&mut self` structure: the caller wraps it in a lock.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::addr::{MemRange, Mfn, PAGE_SHIFT, PAGE_SIZE};
use super::frame_table::{zone_of, Chunk, FrameTable, PageState, RawState, NO_INDEX, OWNER_NONE};
use crate::numa::{CpuId, NodeId, MAX_NODES};

/// Largest block order: 2^18 pages of 4 KiB = 1 GiB.
pub const MAX_ORDER: u8 = 18;
/// Number of distinct orders, `0..=MAX_ORDER`.
pub const NR_ORDERS: usize = MAX_ORDER as usize + 1;

/// The machine's NUMA topology as far as the heap needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeapTopology {
    pub nr_nodes: usize,
    /// `nr_nodes * nr_nodes` SLIT-style distances, row-major (`[from * n + to]`).
    pub distances: Vec<u8>,
    /// Node of each logical CPU, indexed by [`CpuId`].
    pub cpu_nodes: Vec<NodeId>,
}

/// Where an allocation should come from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Locality {
    Node(NodeId),
    /// The node of this CPU.
    Cpu(CpuId),
    /// No preference: node 0's fallback order.
    Any,
}

/// What an allocation asks for besides its order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AllocRequest {
    pub locality: Locality,
    /// Only the named node (Xen's `MEMF_exact_node`): fail rather than fall back.
    /// Meaningless, and rejected, with [`Locality::Any`].
    pub exact_node: bool,
    /// The whole block must lie below `2^bits` bytes (a device's DMA mask);
    /// `None` for anywhere. Valid values are `PAGE_SHIFT..=64`.
    pub max_address_bits: Option<u32>,
}

impl AllocRequest {
    /// Anywhere, node 0 first.
    pub const fn any() -> AllocRequest {
        AllocRequest {
            locality: Locality::Any,
            exact_node: false,
            max_address_bits: None,
        }
    }

    /// Prefer `node`, fall back by distance.
    pub const fn node(node: NodeId) -> AllocRequest {
        AllocRequest {
            locality: Locality::Node(node),
            exact_node: false,
            max_address_bits: None,
        }
    }

    /// On `node` or not at all.
    pub const fn exact(node: NodeId) -> AllocRequest {
        AllocRequest {
            locality: Locality::Node(node),
            exact_node: true,
            max_address_bits: None,
        }
    }

    /// Prefer the node of `cpu`, fall back by distance.
    pub const fn cpu(cpu: CpuId) -> AllocRequest {
        AllocRequest {
            locality: Locality::Cpu(cpu),
            exact_node: false,
            max_address_bits: None,
        }
    }

    /// The same request, limited to machine addresses below `2^bits`.
    pub const fn below_bits(self, bits: u32) -> AllocRequest {
        AllocRequest {
            max_address_bits: Some(bits),
            ..self
        }
    }
}

/// Why a heap operation failed. A failed operation changes nothing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HeapError {
    /// A bad order, node, CPU, address width, range or topology.
    InvalidArgument,
    /// No free block satisfies the request.
    NoMemory,
    /// The frame is not RAM.
    NotRam(Mfn),
    /// The frame is not the head of an allocated block (free, reserved,
    /// already freed, or inside a block).
    NotAllocated(Mfn),
    /// The frame heads an allocated block of another order.
    WrongOrder { mfn: Mfn, allocated: u8 },
    /// Part of the range was already given to the heap.
    AlreadyAdded(MemRange),
}

impl fmt::Display for HeapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeapError::InvalidArgument => write!(f, "invalid argument"),
            HeapError::NoMemory => write!(f, "out of memory"),
            HeapError::NotRam(m) => write!(f, "mfn {m} is not RAM"),
            HeapError::NotAllocated(m) => write!(f, "mfn {m} is not an allocated block head"),
            HeapError::WrongOrder { mfn, allocated } => {
                write!(f, "mfn {mfn} was allocated with order {allocated}")
            }
            HeapError::AlreadyAdded(r) => {
                write!(f, "range {r} overlaps memory already in the heap")
            }
        }
    }
}

/// Head of one free list and how many blocks it holds.
#[derive(Clone, Copy, Debug)]
struct FreeList {
    head: u32,
    count: u32,
}

const EMPTY_LIST: FreeList = FreeList {
    head: NO_INDEX,
    count: 0,
};

/// The zones a node's RAM spans and where its per-zone slots start, so that
/// lists exist only for zones a node can hold (an Altix-like node with RAM in
/// 3 zones gets 3 * NR_ORDERS lists, not NR_ZONES * NR_ORDERS).
#[derive(Clone, Copy, Debug, Default)]
struct NodeZones {
    lo: u8,
    nr: u8,
    first_slot: usize,
}

/// One non-empty free list in a [`HeapProbe`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProbeRow {
    pub node: NodeId,
    pub zone: u8,
    pub order: u8,
    pub blocks: u32,
    pub pages: u64,
}

/// One node's totals in a [`HeapProbe`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProbeNode {
    pub node: NodeId,
    pub total_pages: u64,
    pub free_pages: u64,
}

/// A snapshot of the heap's free lists.
///
/// Its `Display` is the stable "heap probe" log format, one line each:
/// `heap probe: node N total T free F` for every node, then
/// `heap probe: node N zone Z order O blocks B pages P` for every non-empty
/// list, by node, zone and order ascending.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct HeapProbe {
    pub nodes: Vec<ProbeNode>,
    pub rows: Vec<ProbeRow>,
}

impl fmt::Display for HeapProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for n in &self.nodes {
            writeln!(
                f,
                "heap probe: node {} total {} free {}",
                n.node, n.total_pages, n.free_pages
            )?;
        }
        for r in &self.rows {
            writeln!(
                f,
                "heap probe: node {} zone {} order {} blocks {} pages {}",
                r.node, r.zone, r.order, r.blocks, r.pages
            )?;
        }
        Ok(())
    }
}

/// The NUMA heap. See the module documentation.
pub struct Heap {
    ft: FrameTable,
    nr_nodes: usize,
    distances: Vec<u8>,
    cpu_nodes: Vec<NodeId>,
    /// Row `n` (`nr_nodes` entries) is node `n`'s fallback order.
    fallback: Vec<NodeId>,
    zones: Vec<NodeZones>,
    /// `NR_ORDERS` lists per (node, zone) slot.
    lists: Vec<FreeList>,
    /// Per slot: bit `o` set iff the order-`o` list is non-empty.
    order_mask: Vec<u32>,
    /// Per node: bit `z` set iff some list of zone `z` is non-empty.
    zone_mask: Vec<u64>,
    free_pages: Vec<u64>,
    total_pages: Vec<u64>,
    /// Ranges given by `add_free_range`, sorted and disjoint.
    added: Vec<MemRange>,
}

impl Heap {
    /// An empty heap over `ft`: every page stays Reserved until added.
    ///
    /// Checks the topology (1..=MAX_NODES nodes, an `n * n` distance matrix,
    /// CPU and frame-table nodes below `n`) and precomputes each node's
    /// fallback order: itself, then the others by increasing distance, ties to
    /// the lower node id (Linux's and Xen's choice).
    pub fn new(ft: FrameTable, topo: HeapTopology) -> Result<Heap, HeapError> {
        let n = topo.nr_nodes;
        if n == 0 || n > MAX_NODES || topo.distances.len() != n * n {
            return Err(HeapError::InvalidArgument);
        }
        if topo.cpu_nodes.iter().any(|c| c.index() >= n)
            || ft.chunks().iter().any(|c| c.node.index() >= n)
        {
            return Err(HeapError::InvalidArgument);
        }

        let mut fallback = Vec::with_capacity(n * n);
        for from in 0..n {
            let mut row: Vec<NodeId> = (0..n).map(|i| NodeId(i as u8)).collect();
            row.sort_by_key(|to| {
                (
                    to.index() != from,
                    topo.distances[from * n + to.index()],
                    *to,
                )
            });
            fallback.extend_from_slice(&row);
        }

        let mut span: Vec<Option<(u8, u8)>> = vec![None; n];
        for c in ft.chunks() {
            let (lo, hi) = (zone_of(c.base_mfn), zone_of(Mfn(c.end_mfn().0 - 1)));
            let s = &mut span[c.node.index()];
            *s = Some(s.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
        let mut zones = Vec::with_capacity(n);
        let mut slots = 0;
        for s in &span {
            let (lo, nr) = s.map_or((0, 0), |(lo, hi)| (lo, hi - lo + 1));
            zones.push(NodeZones {
                lo,
                nr,
                first_slot: slots,
            });
            slots += usize::from(nr);
        }

        Ok(Heap {
            ft,
            nr_nodes: n,
            distances: topo.distances,
            cpu_nodes: topo.cpu_nodes,
            fallback,
            zones,
            lists: vec![EMPTY_LIST; slots * NR_ORDERS],
            order_mask: vec![0; slots],
            zone_mask: vec![0; n],
            free_pages: vec![0; n],
            total_pages: vec![0; n],
            added: Vec::new(),
        })
    }

    /// The frame table, for lookups (node, state, chunks).
    pub fn frame_table(&self) -> &FrameTable {
        &self.ft
    }

    pub fn nr_nodes(&self) -> usize {
        self.nr_nodes
    }

    /// Distance between two nodes, if both exist.
    pub fn distance(&self, from: NodeId, to: NodeId) -> Option<u8> {
        (from.index() < self.nr_nodes && to.index() < self.nr_nodes)
            .then(|| self.distances[from.index() * self.nr_nodes + to.index()])
    }

    /// The node of a CPU, if the CPU exists.
    pub fn node_of_cpu(&self, cpu: CpuId) -> Option<NodeId> {
        self.cpu_nodes.get(cpu.index()).copied()
    }

    /// The order in which a non-exact allocation for `node` tries nodes.
    pub fn fallback_order(&self, node: NodeId) -> Option<&[NodeId]> {
        let n = self.nr_nodes;
        (node.index() < n).then(|| &self.fallback[node.index() * n..(node.index() + 1) * n])
    }

    /// Hands the RAM pages of `range` to the heap.
    ///
    /// `range` must be page-aligned (trim firmware ranges with
    /// [`MemRange::pages_within`]); parts that are not RAM are skipped, and
    /// frame 0 never enters (a zero machine address means "none" too often).
    /// Pages go in as maximal aligned blocks per chunk and zone, merged with
    /// free neighbours, so the cost is `O(range / 2^MAX_ORDER + log)` block
    /// insertions, not one per page. A range that overlaps an earlier one is
    /// refused whole.
    pub fn add_free_range(&mut self, range: MemRange) -> Result<(), HeapError> {
        if range.end.0 < range.start.0
            || !range.start.0.is_multiple_of(PAGE_SIZE)
            || !range.end.0.is_multiple_of(PAGE_SIZE)
        {
            return Err(HeapError::InvalidArgument);
        }
        if range.is_empty() {
            return Ok(());
        }
        let pos = self.added.partition_point(|r| r.end.0 <= range.start.0);
        if let Some(r) = self.added.get(pos) {
            if r.overlaps(&range) {
                return Err(HeapError::AlreadyAdded(range));
            }
        }
        self.added.insert(pos, range);

        let (start, end) = (range.start.mfn().0.max(1), range.end.mfn().0);
        let mut ci = self.ft.chunks().partition_point(|c| c.end_mfn().0 <= start);
        while let Some(&c) = self.ft.chunks().get(ci) {
            if c.base_mfn.0 >= end {
                break;
            }
            let mut a = start.max(c.base_mfn.0);
            let b = end.min(c.end_mfn().0);
            self.total_pages[c.node.index()] += b.saturating_sub(a);
            while a < b {
                // `a >= 1`, so its zone ends at 2^zone_of(a) <= 2^52.
                let seg_end = b.min(1u64 << zone_of(Mfn(a)));
                while a < seg_end {
                    let fits = 63 - (seg_end - a).leading_zeros();
                    let order = a.trailing_zeros().min(fits).min(u32::from(MAX_ORDER)) as u8;
                    self.free_pages[c.node.index()] += 1 << order;
                    self.insert_merged(&c, Mfn(a), order);
                    a += 1 << order;
                }
            }
            ci += 1;
        }
        Ok(())
    }

    /// Allocates `2^order` contiguous pages and returns the first frame.
    ///
    /// Per node, zones are tried from the highest the request allows down,
    /// so low memory stays for DMA; larger blocks are split. Without
    /// `exact_node` the nodes are tried in the requested node's fallback
    /// order (a memoryless node simply has nothing to give).
    pub fn alloc(&mut self, order: u8, req: AllocRequest) -> Result<Mfn, HeapError> {
        if order > MAX_ORDER {
            return Err(HeapError::InvalidArgument);
        }
        let zone_limit = match req.max_address_bits {
            None => u64::MAX,
            Some(bits) if !(PAGE_SHIFT..=64).contains(&bits) => {
                return Err(HeapError::InvalidArgument)
            }
            // Zones <= bits - PAGE_SHIFT lie below 2^bits; bits - PAGE_SHIFT <= 52.
            Some(bits) => (1u64 << (bits - PAGE_SHIFT + 1)) - 1,
        };
        let node = match req.locality {
            Locality::Node(n) if n.index() < self.nr_nodes => n,
            Locality::Cpu(c) => self.node_of_cpu(c).ok_or(HeapError::InvalidArgument)?,
            Locality::Any if !req.exact_node => NodeId(0),
            _ => return Err(HeapError::InvalidArgument),
        };
        if req.exact_node {
            return self
                .alloc_on(node, order, zone_limit)
                .ok_or(HeapError::NoMemory);
        }
        let n = self.nr_nodes;
        for i in 0..n {
            let candidate = self.fallback[node.index() * n + i];
            if let Some(mfn) = self.alloc_on(candidate, order, zone_limit) {
                return Ok(mfn);
            }
        }
        Err(HeapError::NoMemory)
    }

    /// Frees the block `[mfn, mfn + 2^order)` and merges it with free buddies.
    ///
    /// `mfn` must head an allocated block of exactly `order`; anything else
    /// (double free, wrong order, interior page, not RAM) is an error that
    /// changes nothing.
    pub fn free(&mut self, mfn: Mfn, order: u8) -> Result<(), HeapError> {
        if order > MAX_ORDER {
            return Err(HeapError::InvalidArgument);
        }
        let ci = self.ft.chunk_of(mfn).ok_or(HeapError::NotRam(mfn))?;
        let c = self.ft.chunks()[ci];
        let p = self.ft.page_at_mut(index_in(&c, mfn));
        if p.raw_state() != RawState::AllocHead {
            return Err(HeapError::NotAllocated(mfn));
        }
        if p.order != order {
            return Err(HeapError::WrongOrder {
                mfn,
                allocated: p.order,
            });
        }
        self.free_pages[c.node.index()] += 1 << order;
        self.insert_merged(&c, mfn, order);
        Ok(())
    }

    /// Splits the allocated block `[mfn, mfn + 2^order)` into two allocated
    /// blocks of `order - 1` (the upper one headed by `mfn + 2^(order-1)`),
    /// both keeping the owner, so that its halves can be freed separately
    /// (the DMA exchange gives back part of a domain's block). Nothing
    /// changes on error: `order` 0, a frame that does not head an allocated
    /// block of exactly `order`.
    pub fn split(&mut self, mfn: Mfn, order: u8) -> Result<(), HeapError> {
        if order == 0 || order > MAX_ORDER {
            return Err(HeapError::InvalidArgument);
        }
        let ci = self.ft.chunk_of(mfn).ok_or(HeapError::NotRam(mfn))?;
        let c = self.ft.chunks()[ci];
        let head = index_in(&c, mfn);
        let (state, allocated, owner) = {
            let p = self.ft.page_at_mut(head);
            (p.raw_state(), p.order, p.owner)
        };
        if state != RawState::AllocHead {
            return Err(HeapError::NotAllocated(mfn));
        }
        if allocated != order {
            return Err(HeapError::WrongOrder { mfn, allocated });
        }
        // The block lies in one chunk, so its upper half does too. Its
        // interior pages hold no head state (live heads are disjoint), so
        // marking the upper half's first page is all it takes.
        let upper = head + (1u32 << (order - 1));
        self.ft.page_at_mut(head).order = order - 1;
        let p = self.ft.page_at_mut(upper);
        p.set_raw_state(RawState::AllocHead);
        p.order = order - 1;
        p.owner = owner;
        p.next = NO_INDEX;
        p.prev = NO_INDEX;
        Ok(())
    }

    /// Records the owning domain of the allocated block headed by `mfn`.
    /// [`free`](Self::free) clears it.
    pub fn set_owner(&mut self, mfn: Mfn, owner: u32) -> Result<(), HeapError> {
        let idx = self.ft.index_of(mfn).ok_or(HeapError::NotRam(mfn))?;
        let p = self.ft.page_at_mut(idx);
        if p.raw_state() != RawState::AllocHead {
            return Err(HeapError::NotAllocated(mfn));
        }
        p.owner = owner;
        Ok(())
    }

    /// The owner of the allocated block containing `mfn`, if any was set.
    pub fn owner(&self, mfn: Mfn) -> Option<u32> {
        match self.ft.state(mfn)? {
            PageState::Allocated { head, .. } => {
                let o = self.ft.page(head)?.owner();
                (o != OWNER_NONE).then_some(o)
            }
            _ => None,
        }
    }

    /// Free pages on `node` (0 for an unknown node).
    pub fn free_pages(&self, node: NodeId) -> u64 {
        self.free_pages.get(node.index()).copied().unwrap_or(0)
    }

    /// Free pages on all nodes.
    pub fn total_free_pages(&self) -> u64 {
        self.free_pages.iter().sum()
    }

    /// Pages ever given to the heap on `node`, free or allocated.
    pub fn total_pages(&self, node: NodeId) -> u64 {
        self.total_pages.get(node.index()).copied().unwrap_or(0)
    }

    /// Free pages on `node` in `zone`.
    pub fn free_pages_in_zone(&self, node: NodeId, zone: u8) -> u64 {
        (0..=MAX_ORDER)
            .map(|o| u64::from(self.free_blocks(node, zone, o)) << o)
            .sum()
    }

    /// Free blocks of `order` on `node` in `zone`.
    pub fn free_blocks(&self, node: NodeId, zone: u8, order: u8) -> u32 {
        match self.slot(node, zone) {
            Some(s) if order <= MAX_ORDER => self.lists[s * NR_ORDERS + usize::from(order)].count,
            _ => 0,
        }
    }

    /// All nodes' totals and every non-empty free list.
    pub fn probe(&self) -> HeapProbe {
        let mut p = HeapProbe::default();
        for n in 0..self.nr_nodes {
            let node = NodeId(n as u8);
            p.nodes.push(ProbeNode {
                node,
                total_pages: self.total_pages[n],
                free_pages: self.free_pages[n],
            });
            let nz = self.zones[n];
            for z in nz.lo..nz.lo + nz.nr {
                for order in 0..=MAX_ORDER {
                    let blocks = self.free_blocks(node, z, order);
                    if blocks != 0 {
                        p.rows.push(ProbeRow {
                            node,
                            zone: z,
                            order,
                            blocks,
                            pages: u64::from(blocks) << order,
                        });
                    }
                }
            }
        }
        p
    }

    /// Walks every list and every page; for tests and debug builds.
    ///
    /// Checks: list links and counts, bitmasks against lists, per-node free
    /// counts, each block aligned, in RAM, on one node and in one zone, no
    /// page in two blocks, no stray free head, every block inside added
    /// memory, and free + allocated == total per node.
    pub fn check_invariants(&self) -> Result<(), String> {
        // 0 = in no block, 1 = in a free block, 2 = in an allocated block.
        let mut cover = vec![0u8; self.ft.nr_pages()];
        let mut in_lists = 0u64;
        let mut covered = Vec::with_capacity(self.nr_nodes);
        for n in 0..self.nr_nodes {
            let node = NodeId(n as u8);
            let nz = self.zones[n];
            let mut free = 0u64;
            let mut zmask = 0u64;
            for z in nz.lo..nz.lo + nz.nr {
                let slot = nz.first_slot + usize::from(z - nz.lo);
                let mut omask = 0u32;
                for o in 0..=MAX_ORDER {
                    let list = self.lists[slot * NR_ORDERS + usize::from(o)];
                    let (mut cur, mut prev, mut seen) = (list.head, NO_INDEX, 0u32);
                    while cur != NO_INDEX {
                        let at = format!("node {n} zone {z} order {o} index {cur}");
                        if seen >= list.count {
                            return Err(format!("{at}: more entries than count {}", list.count));
                        }
                        let p = self.ft.page_at(cur).ok_or(format!("{at}: bad index"))?;
                        if p.prev != prev {
                            return Err(format!("{at}: prev {} != {prev}", p.prev));
                        }
                        if p.raw_state() != RawState::FreeHead || p.order != o {
                            return Err(format!(
                                "{at}: state {:?} order {}",
                                p.raw_state(),
                                p.order
                            ));
                        }
                        let mfn = self.ft.mfn_at(cur).ok_or(format!("{at}: no mfn"))?;
                        self.check_block(mfn, o, node, Some(z), 1, &mut cover)
                            .map_err(|e| format!("{at}: {e}"))?;
                        free += 1 << o;
                        seen += 1;
                        prev = cur;
                        cur = p.next;
                    }
                    if seen != list.count {
                        return Err(format!("node {n} zone {z} order {o}: {seen} != count"));
                    }
                    in_lists += u64::from(seen);
                    if seen != 0 {
                        omask |= 1 << o;
                    }
                }
                if omask != self.order_mask[slot] {
                    return Err(format!(
                        "node {n} zone {z}: order mask {omask:#x} != {:#x}",
                        self.order_mask[slot]
                    ));
                }
                if omask != 0 {
                    zmask |= 1 << z;
                }
            }
            if zmask != self.zone_mask[n] {
                return Err(format!(
                    "node {n}: zone mask {zmask:#x} != {:#x}",
                    self.zone_mask[n]
                ));
            }
            if free != self.free_pages[n] {
                return Err(format!(
                    "node {n}: lists hold {free} free pages, count says {}",
                    self.free_pages[n]
                ));
            }
            covered.push(free);
        }

        let mut heads = 0u64;
        for i in 0..self.ft.nr_pages() as u32 {
            let p = self.ft.page_at(i).ok_or("bad page index")?;
            match p.raw_state() {
                RawState::FreeHead => heads += 1,
                RawState::AllocHead => {
                    let mfn = self.ft.mfn_at(i).ok_or("no mfn")?;
                    self.check_block(mfn, p.order, p.node(), None, 2, &mut cover)
                        .map_err(|e| format!("allocated {mfn}: {e}"))?;
                    covered[p.node().index()] += 1 << p.order;
                }
                RawState::Reserved | RawState::Merged => {}
            }
        }
        if heads != in_lists {
            return Err(format!("{heads} free heads but {in_lists} blocks in lists"));
        }
        for (n, (c, t)) in covered.iter().zip(&self.total_pages).enumerate() {
            if c != t {
                return Err(format!("node {n}: free + allocated = {c} != total {t}"));
            }
        }
        Ok(())
    }

    /// Checks one block for [`check_invariants`](Self::check_invariants) and
    /// marks its pages in `cover` with `mark`.
    fn check_block(
        &self,
        mfn: Mfn,
        order: u8,
        node: NodeId,
        zone: Option<u8>,
        mark: u8,
        cover: &mut [u8],
    ) -> Result<(), String> {
        let size = 1u64 << order;
        if !mfn.0.is_multiple_of(size) {
            return Err(format!("not aligned to order {order}"));
        }
        let c = &self.ft.chunks()[self.ft.chunk_of(mfn).ok_or("head not RAM")?];
        let last = Mfn(mfn.0 + size - 1);
        if !c.contains(last) {
            return Err("block leaves its chunk".into());
        }
        if c.node != node {
            return Err(format!("on node {} not {node}", c.node));
        }
        if zone_of(mfn) != zone_of(last) || zone.is_some_and(|z| z != zone_of(mfn)) {
            return Err("block spans zones or sits in the wrong zone".into());
        }
        if mfn.0 == 0 {
            return Err("frame 0 in the heap".into());
        }
        let r = MemRange::new(mfn.maddr(), last.add(1).maddr());
        // Adjacent added ranges merge into one block: accept a contiguous run of them.
        let pos = self.added.partition_point(|a| a.end.0 <= r.start.0);
        let mut at = r.start.0;
        for a in &self.added[pos..] {
            if a.start.0 > at || at >= r.end.0 {
                break;
            }
            at = a.end.0;
        }
        if at < r.end.0 {
            return Err("block outside added memory".into());
        }
        let first = index_in(c, mfn) as usize;
        for slot in &mut cover[first..first + size as usize] {
            if *slot != 0 {
                return Err("page in two blocks".into());
            }
            *slot = mark;
        }
        Ok(())
    }

    /// Index of the (node, zone) slot, if the node's RAM reaches that zone.
    fn slot(&self, node: NodeId, zone: u8) -> Option<usize> {
        let nz = self.zones.get(node.index())?;
        (zone >= nz.lo && zone - nz.lo < nz.nr).then(|| nz.first_slot + usize::from(zone - nz.lo))
    }

    /// Takes a block of at least `order` from `node`'s highest allowed zone.
    fn alloc_on(&mut self, node: NodeId, order: u8, zone_limit: u64) -> Option<Mfn> {
        let nz = self.zones[node.index()];
        let mut zones = self.zone_mask[node.index()] & zone_limit;
        while zones != 0 {
            let z = (63 - zones.leading_zeros()) as u8;
            let slot = nz.first_slot + usize::from(z - nz.lo);
            let orders = self.order_mask[slot] & (u32::MAX << order);
            if orders != 0 {
                return Some(self.take(node, slot, z, orders.trailing_zeros() as u8, order));
            }
            zones &= !(1 << z);
        }
        None
    }

    /// Removes the first block of the order-`have` list of `slot`, returns
    /// its first `2^want` pages allocated and the rest to the lists.
    fn take(&mut self, node: NodeId, slot: usize, zone: u8, have: u8, want: u8) -> Mfn {
        let idx = self.lists[slot * NR_ORDERS + usize::from(have)].head;
        self.unlink(node, slot, zone, have, idx);
        let mut o = have;
        while o > want {
            o -= 1;
            let upper = idx + (1 << o);
            let p = self.ft.page_at_mut(upper);
            p.set_raw_state(RawState::FreeHead);
            p.order = o;
            self.link(node, slot, zone, o, upper);
        }
        let p = self.ft.page_at_mut(idx);
        p.set_raw_state(RawState::AllocHead);
        p.order = want;
        p.owner = OWNER_NONE;
        self.free_pages[node.index()] -= 1 << want;
        let ci = self
            .ft
            .chunks()
            .partition_point(|c| c.first_index <= idx)
            .saturating_sub(1);
        let c = self.ft.chunks()[ci];
        c.base_mfn.add(u64::from(idx - c.first_index))
    }

    /// Puts the block `[mfn, mfn + 2^order)` of chunk `c` on its free list,
    /// first merging it with its buddy for as long as the buddy is a free
    /// head of the same order, node and zone. The block's pages must be in `c`.
    fn insert_merged(&mut self, c: &Chunk, mfn: Mfn, order: u8) {
        let zone = zone_of(mfn);
        let slot = self.slot(c.node, zone).unwrap_or(0);
        let (mut head, mut o) = (mfn, order);
        while o < MAX_ORDER {
            let buddy = Mfn(head.0 ^ (1 << o));
            // Blocks stay inside one chunk (hence one node: same-node
            // neighbours are one chunk) and one zone.
            if !c.contains(buddy) || zone_of(buddy) != zone {
                break;
            }
            let bi = index_in(c, buddy);
            let Some(b) = self.ft.page_at(bi) else { break };
            if b.raw_state() != RawState::FreeHead || b.order != o || b.node() != c.node {
                break;
            }
            self.unlink(c.node, slot, zone, o, bi);
            let upper = head.max(buddy);
            self.ft
                .page_at_mut(index_in(c, upper))
                .set_raw_state(RawState::Merged);
            head = head.min(buddy);
            o += 1;
        }
        let idx = index_in(c, head);
        let p = self.ft.page_at_mut(idx);
        p.set_raw_state(RawState::FreeHead);
        p.order = o;
        p.owner = OWNER_NONE;
        self.link(c.node, slot, zone, o, idx);
    }

    fn link(&mut self, node: NodeId, slot: usize, zone: u8, order: u8, idx: u32) {
        let li = slot * NR_ORDERS + usize::from(order);
        let old = self.lists[li].head;
        {
            let p = self.ft.page_at_mut(idx);
            p.next = old;
            p.prev = NO_INDEX;
        }
        if old != NO_INDEX {
            self.ft.page_at_mut(old).prev = idx;
        }
        self.lists[li].head = idx;
        self.lists[li].count += 1;
        self.order_mask[slot] |= 1 << order;
        self.zone_mask[node.index()] |= 1 << zone;
    }

    fn unlink(&mut self, node: NodeId, slot: usize, zone: u8, order: u8, idx: u32) {
        let li = slot * NR_ORDERS + usize::from(order);
        let (next, prev) = {
            let p = self.ft.page_at_mut(idx);
            let np = (p.next, p.prev);
            p.next = NO_INDEX;
            p.prev = NO_INDEX;
            np
        };
        if prev == NO_INDEX {
            self.lists[li].head = next;
        } else {
            self.ft.page_at_mut(prev).next = next;
        }
        if next != NO_INDEX {
            self.ft.page_at_mut(next).prev = prev;
        }
        self.lists[li].count -= 1;
        if self.lists[li].count == 0 {
            self.order_mask[slot] &= !(1 << order);
            if self.order_mask[slot] == 0 {
                self.zone_mask[node.index()] &= !(1 << zone);
            }
        }
    }
}

/// A summary; [`Heap::probe`] has the details.
impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap")
            .field("frame_table", &self.ft)
            .field("nr_nodes", &self.nr_nodes)
            .field("total_pages", &self.total_pages)
            .field("free_pages", &self.free_pages)
            .finish_non_exhaustive()
    }
}

/// Page index of `mfn`, which must lie in chunk `c`.
fn index_in(c: &Chunk, mfn: Mfn) -> u32 {
    c.first_index + (mfn.0 - c.base_mfn.0) as u32
}

#[cfg(test)]
mod tests;

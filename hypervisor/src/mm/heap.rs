//! The NUMA heap: a buddy allocator of machine pages per node, zone and order.
//!
//! Modelled on Xen's `page_alloc.c`: free blocks live on lists
//! `heap[node][zone][order]`, where a zone is an address-width bucket (zone of
//! a frame = its bit width, see [`zone_of`]), so "memory below `2^n` bytes" is
//! a set of whole zones and DMA-limited requests need no scanning. Blocks never
//! merge across a node or zone boundary, so every block, free or allocated,
//! lies on one node and in one zone.
//!
//! The lists are threaded through the pages' [`PageInfo`] entries (`u32`
//! indices into the node's entries), so insertion and removal are `O(1)`, and
//! bitmasks of non-empty orders (per node and zone) and non-empty zones (per
//! node) let an allocation find its list with a few bit operations.
//!
//! # Locking
//!
//! Every CPU allocates from the same heap at once, so every operation takes
//! `&self` and the heap is `Send + Sync`. There is one lock per node, not one
//! for the heap (Xen has a single `heap_lock`): it guards that node's free
//! lists, masks, counters, claims and the [`PageInfo`] entries of its pages.
//! Since a block never crosses nodes, an operation on a block needs exactly
//! its node's lock, and an allocation on node 0 never waits for node 3. What
//! `Heap::new` fixes (the frame table's chunk index, distances, fallback
//! orders, CPU nodes) is read without a lock, so `frame_table().node_of()`
//! never waits either. The rules that keep this free of deadlocks:
//!
//! - An operation holds at most one node lock at a time. A fallback
//!   allocation tries node after node, dropping each lock before taking the
//!   next (so a node that gains memory meanwhile may be passed over, as in
//!   Xen).
//! - The one exception is [`Heap::claim`], which must see all the nodes it
//!   claims at one instant to be all-or-nothing: it takes their locks in
//!   ascending node order. Nothing else holds two, so no cycle can form.
//! - The lock on the list of added ranges is never held with a node lock.
//!
//! Queries that span nodes ([`Heap::probe`], [`Heap::total_free_pages`],
//! [`Heap::owned`], [`Heap::check_invariants`]) lock one node at a time: each
//! node is consistent, the whole is only a snapshot while others allocate.
//!
//! # Claims
//!
//! Xen's `XENMEM_claim_pages`, per node. Building a domain takes many
//! allocations; when several domains are built at once, each could get
//! halfway and then fail for want of memory the other took. A builder instead
//! first [`claim`](Heap::claim)s what it needs per node, all nodes or none,
//! then allocates against its [`Claim`] with [`Heap::alloc_claimed`]. A claim
//! is a number of pages per node, not particular pages, so claiming costs
//! nothing but a counter: each node counts its outstanding claims
//! (`claimed`, invariant: `claimed <= free`), an ordinary allocation may only
//! use the node's unclaimed free pages (`free - claimed`), and an allocation
//! against a claim draws it down on the node its block came from. What is
//! left of a claim goes back with [`Heap::release`]. A `Claim` is not `Clone`
//! (its pages are counted once); dropping one unreleased keeps its pages
//! claimed for good.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use spin::{Mutex, MutexGuard};

use super::addr::{MemRange, Mfn, PAGE_SHIFT, PAGE_SIZE};
use super::frame_table::{
    zone_of, Chunk, FrameTable, PageInfo, PageState, RawState, NO_INDEX, OWNER_NONE,
};
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

/// Why a [`Heap::claim`] failed. Nothing was claimed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ClaimError {
    /// The request names a node the heap does not have.
    NoSuchNode(NodeId),
    /// Every node that lacks unclaimed free pages, ascending.
    Short(Vec<Shortfall>),
}

/// One node a claim could not be met on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Shortfall {
    pub node: NodeId,
    /// Pages the claim asked of the node.
    pub wanted: u64,
    /// The node's unclaimed free pages when it was asked.
    pub available: u64,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {}: wants {} pages, {} unclaimed free (short by {})",
            self.node,
            self.wanted,
            self.available,
            self.wanted - self.available
        )
    }
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimError::NoSuchNode(n) => write!(f, "node {n} does not exist"),
            ClaimError::Short(v) => {
                for (i, s) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{s}")?;
                }
                Ok(())
            }
        }
    }
}

/// Pages reserved per node by [`Heap::claim`] and not yet allocated with
/// [`Heap::alloc_claimed`] or given back with [`Heap::release`].
#[must_use = "a claim keeps its pages from everyone else until Heap::release"]
#[derive(PartialEq, Eq, Debug)]
pub struct Claim {
    owner: u32,
    /// The heap that granted it ([`Heap`]'s `id`).
    heap: u32,
    /// Pages still claimed, indexed by node.
    remaining: Vec<u64>,
}

impl Claim {
    /// The domain the claim (and every block allocated against it) belongs to.
    pub fn owner(&self) -> u32 {
        self.owner
    }

    /// Pages still claimed on `node`.
    pub fn remaining(&self, node: NodeId) -> u64 {
        self.remaining.get(node.index()).copied().unwrap_or(0)
    }

    /// Pages still claimed on all nodes.
    pub fn total_remaining(&self) -> u64 {
        self.remaining.iter().sum()
    }
}

/// What [`Heap::owned`] counts: allocated blocks whose head names an owner.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Owned {
    pub blocks: u64,
    pub pages: u64,
}

/// Head of one free list and how many blocks it holds.
#[derive(Clone, Copy, Debug)]
struct FreeList {
    /// Node-relative index of the first block, or [`NO_INDEX`].
    head: u32,
    count: u32,
}

const EMPTY_LIST: FreeList = FreeList {
    head: NO_INDEX,
    count: 0,
};

/// One zone's free lists on one node. Cache-line aligned: nodes' small
/// allocations would otherwise sit side by side, and CPUs working on two
/// nodes under two locks would still bounce one line between them.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
struct ZoneLists {
    /// Bit `o` set iff the order-`o` list is non-empty.
    order_mask: u32,
    lists: [FreeList; NR_ORDERS],
}

const EMPTY_ZONE: ZoneLists = ZoneLists {
    order_mask: 0,
    lists: [EMPTY_LIST; NR_ORDERS],
};

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

/// Tells heaps apart, so that a [`Claim`] only ever works on the heap that
/// granted it. An atomic counter: it needs no lock.
static NEXT_HEAP_ID: AtomicU32 = AtomicU32::new(0);

/// One node's part of the heap: everything its lock guards.
///
/// Lists exist only for the zones the node's RAM spans (an Altix-like node
/// with RAM in 3 zones gets 3 * NR_ORDERS lists, not NR_ZONES * NR_ORDERS).
struct NodeHeap {
    node: NodeId,
    /// Page index of `pages[0]`: the node's pages are `base .. base + pages.len()`.
    base: u32,
    /// The entries of the node's pages, in page-index order.
    pages: Box<[PageInfo]>,
    /// Lowest zone the node's RAM reaches; `nr_zones` zones from there have lists.
    zone_lo: u8,
    nr_zones: u8,
    /// The lists of each zone, ascending from `zone_lo`.
    zones: Vec<ZoneLists>,
    /// Bit `z` set iff some list of zone `z` is non-empty.
    zone_mask: u64,
    free: u64,
    /// Pages ever given to the heap, free or allocated.
    total: u64,
    /// Pages claimed and not yet allocated against their claims: at most `free`.
    claimed: u64,
}

/// A node's lock alone on its cache line(s), so that CPUs working on
/// different nodes do not bounce one line between them.
#[repr(align(64))]
struct NodeLock(
    /// Guards the node's free lists, masks, counters, claims and the
    /// [`PageInfo`] entries of its pages.
    Mutex<NodeHeap>,
);

/// The NUMA heap. See the module documentation.
pub struct Heap {
    /// The chunk index: immutable, read without a lock.
    ft: FrameTable,
    nr_nodes: usize,
    distances: Vec<u8>,
    cpu_nodes: Vec<NodeId>,
    /// Row `n` (`nr_nodes` entries) is node `n`'s fallback order.
    fallback: Vec<NodeId>,
    /// Indexed by node id.
    nodes: Box<[NodeLock]>,
    /// Guards the ranges given by `add_free_range` (sorted, disjoint); never
    /// held together with a node lock.
    added: Mutex<Vec<MemRange>>,
    /// Which heap this is, for [`Claim`]s.
    id: u32,
}

/// The point of the locks: one heap serves every CPU.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Heap>();
};

impl Heap {
    /// An empty heap over `ft`: every page stays Reserved until added.
    ///
    /// Checks the topology (1..=MAX_NODES nodes, an `n * n` distance matrix,
    /// CPU and frame-table nodes below `n`) and precomputes each node's
    /// fallback order: itself, then the others by increasing distance, ties to
    /// the lower node id (Linux's and Xen's choice). Allocates every node's
    /// page entries ([`FrameTable::node_entries`], 16 bytes a page);
    /// [`HeapError::NoMemory`] if the global allocator cannot.
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
        let mut nodes = Vec::with_capacity(n);
        for (i, s) in span.iter().enumerate() {
            let node = NodeId(i as u8);
            let (zone_lo, nr_zones) = s.map_or((0, 0), |(lo, hi)| (lo, hi - lo + 1));
            let pages = ft.node_entries(node).map_err(|_| HeapError::NoMemory)?;
            nodes.push(NodeLock(Mutex::new(NodeHeap {
                node,
                base: ft.node_pages(node).start,
                pages,
                zone_lo,
                nr_zones,
                zones: vec![EMPTY_ZONE; usize::from(nr_zones)],
                zone_mask: 0,
                free: 0,
                total: 0,
                claimed: 0,
            })));
        }

        Ok(Heap {
            ft,
            nr_nodes: n,
            distances: topo.distances,
            cpu_nodes: topo.cpu_nodes,
            fallback,
            nodes: nodes.into_boxed_slice(),
            added: Mutex::new(Vec::new()),
            id: NEXT_HEAP_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The frame table's chunk index, for lock-free lookups (`node_of`,
    /// `is_ram`, `chunks`). Page states are the heap's: [`state`](Self::state).
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

    /// Node `node`'s lock, if the node exists.
    fn node(&self, node: NodeId) -> Option<&Mutex<NodeHeap>> {
        self.nodes.get(node.index()).map(|l| &l.0)
    }

    /// The lock of the node holding chunk `c` (every chunk's node exists:
    /// [`new`](Self::new) checked).
    fn lock_chunk(&self, c: &Chunk) -> MutexGuard<'_, NodeHeap> {
        self.nodes[c.node.index()].0.lock()
    }

    /// The chunk holding `mfn`.
    fn chunk(&self, mfn: Mfn) -> Result<Chunk, HeapError> {
        self.ft
            .chunk_of(mfn)
            .map(|i| self.ft.chunks()[i])
            .ok_or(HeapError::NotRam(mfn))
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
    pub fn add_free_range(&self, range: MemRange) -> Result<(), HeapError> {
        if range.end.0 < range.start.0
            || !range.start.0.is_multiple_of(PAGE_SIZE)
            || !range.end.0.is_multiple_of(PAGE_SIZE)
        {
            return Err(HeapError::InvalidArgument);
        }
        if range.is_empty() {
            return Ok(());
        }
        {
            let mut added = self.added.lock();
            let pos = added.partition_point(|r| r.end.0 <= range.start.0);
            if let Some(r) = added.get(pos) {
                if r.overlaps(&range) {
                    return Err(HeapError::AlreadyAdded(range));
                }
            }
            added.insert(pos, range);
        }

        let (start, end) = (range.start.mfn().0.max(1), range.end.mfn().0);
        let mut ci = self.ft.chunks().partition_point(|c| c.end_mfn().0 <= start);
        while let Some(&c) = self.ft.chunks().get(ci) {
            if c.base_mfn.0 >= end {
                break;
            }
            let mut a = start.max(c.base_mfn.0);
            let b = end.min(c.end_mfn().0);
            let mut nh = self.lock_chunk(&c);
            nh.total += b.saturating_sub(a);
            while a < b {
                // `a >= 1`, so its zone ends at 2^zone_of(a) <= 2^52.
                let seg_end = b.min(1u64 << zone_of(Mfn(a)));
                while a < seg_end {
                    let fits = 63 - (seg_end - a).leading_zeros();
                    let order = a.trailing_zeros().min(fits).min(u32::from(MAX_ORDER)) as u8;
                    nh.free += 1 << order;
                    nh.insert_merged(&c, Mfn(a), order);
                    a += 1 << order;
                }
            }
            drop(nh);
            ci += 1;
        }
        Ok(())
    }

    /// Allocates `2^order` contiguous pages and returns the first frame.
    ///
    /// Per node, zones are tried from the highest the request allows down,
    /// so low memory stays for DMA; larger blocks are split. Without
    /// `exact_node` the nodes are tried in the requested node's fallback
    /// order (a memoryless node simply has nothing to give). Only a node's
    /// unclaimed free pages are available: a node whose free pages minus its
    /// outstanding claims are fewer than `2^order` is skipped.
    pub fn alloc(&self, order: u8, req: AllocRequest) -> Result<Mfn, HeapError> {
        self.alloc_inner(order, req, None)
    }

    /// Allocates as [`alloc`](Self::alloc) does, against `claim`: on the node
    /// the block comes from, the claim pays for as much of the block as it
    /// has left there and the node's unclaimed free pages for the rest; the
    /// claim shrinks accordingly. The block's owner is the claim's owner.
    /// A claim from another heap is [`HeapError::InvalidArgument`].
    pub fn alloc_claimed(
        &self,
        claim: &mut Claim,
        order: u8,
        req: AllocRequest,
    ) -> Result<Mfn, HeapError> {
        if claim.heap != self.id || claim.remaining.len() != self.nr_nodes {
            return Err(HeapError::InvalidArgument);
        }
        self.alloc_inner(order, req, Some(claim))
    }

    fn alloc_inner(
        &self,
        order: u8,
        req: AllocRequest,
        mut claim: Option<&mut Claim>,
    ) -> Result<Mfn, HeapError> {
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
        let candidates = if req.exact_node {
            core::slice::from_ref(&node)
        } else {
            self.fallback_order(node)
                .ok_or(HeapError::InvalidArgument)?
        };
        let size = 1u64 << order;
        for &cand in candidates {
            let ni = cand.index();
            let from_claim = claim.as_deref().map_or(0, |c| c.remaining[ni].min(size));
            // One node lock at a time: this one is dropped before the next.
            let mut nh = self.nodes[ni].0.lock();
            let Some(idx) = nh.alloc(order, zone_limit, from_claim) else {
                continue;
            };
            if let Some(c) = claim.as_deref_mut() {
                c.remaining[ni] -= from_claim;
                nh.pages[idx as usize].owner = c.owner;
            }
            let index = nh.base + idx;
            drop(nh);
            let mfn = self.ft.mfn_at(index);
            // Every index of a node's pages has a frame (FrameTable::new).
            debug_assert!(mfn.is_some(), "page index {index} has no frame");
            return mfn.ok_or(HeapError::NoMemory);
        }
        Err(HeapError::NoMemory)
    }

    /// Frees the block `[mfn, mfn + 2^order)` and merges it with free buddies.
    ///
    /// `mfn` must head an allocated block of exactly `order`; anything else
    /// (double free, wrong order, interior page, not RAM) is an error that
    /// changes nothing.
    pub fn free(&self, mfn: Mfn, order: u8) -> Result<(), HeapError> {
        if order > MAX_ORDER {
            return Err(HeapError::InvalidArgument);
        }
        let c = self.chunk(mfn)?;
        let mut nh = self.lock_chunk(&c);
        let p = &nh.pages[nh.local(&c, mfn) as usize];
        if p.raw_state() != RawState::AllocHead {
            return Err(HeapError::NotAllocated(mfn));
        }
        if p.order != order {
            return Err(HeapError::WrongOrder {
                mfn,
                allocated: p.order,
            });
        }
        nh.free += 1 << order;
        nh.insert_merged(&c, mfn, order);
        Ok(())
    }

    /// Splits the allocated block `[mfn, mfn + 2^order)` into two allocated
    /// blocks of `order - 1` (the upper one headed by `mfn + 2^(order-1)`),
    /// both keeping the owner, so that its halves can be freed separately
    /// (the DMA exchange gives back part of a domain's block). Nothing
    /// changes on error: `order` 0, a frame that does not head an allocated
    /// block of exactly `order`.
    pub fn split(&self, mfn: Mfn, order: u8) -> Result<(), HeapError> {
        if order == 0 || order > MAX_ORDER {
            return Err(HeapError::InvalidArgument);
        }
        let c = self.chunk(mfn)?;
        let mut nh = self.lock_chunk(&c);
        let head = nh.local(&c, mfn) as usize;
        let p = nh.pages[head];
        if p.raw_state() != RawState::AllocHead {
            return Err(HeapError::NotAllocated(mfn));
        }
        if p.order != order {
            return Err(HeapError::WrongOrder {
                mfn,
                allocated: p.order,
            });
        }
        // The block lies in one chunk, so its upper half does too. Its
        // interior pages hold no head state (live heads are disjoint), so
        // marking the upper half's first page is all it takes.
        nh.pages[head].order = order - 1;
        let u = &mut nh.pages[head + (1usize << (order - 1))];
        u.set_raw_state(RawState::AllocHead);
        u.order = order - 1;
        u.owner = p.owner;
        u.next = NO_INDEX;
        u.prev = NO_INDEX;
        Ok(())
    }

    /// Records the owning domain of the allocated block headed by `mfn`.
    /// [`free`](Self::free) clears it.
    pub fn set_owner(&self, mfn: Mfn, owner: u32) -> Result<(), HeapError> {
        let c = self.chunk(mfn)?;
        let mut nh = self.lock_chunk(&c);
        let i = nh.local(&c, mfn) as usize;
        let p = &mut nh.pages[i];
        if p.raw_state() != RawState::AllocHead {
            return Err(HeapError::NotAllocated(mfn));
        }
        p.owner = owner;
        Ok(())
    }

    /// The owner of the allocated block containing `mfn`, if any was set.
    pub fn owner(&self, mfn: Mfn) -> Option<u32> {
        let c = self.chunk(mfn).ok()?;
        let nh = self.lock_chunk(&c);
        match nh.state(&c, mfn) {
            PageState::Allocated { head, .. } => {
                let o = nh.pages[nh.local(&c, head) as usize].owner();
                (o != OWNER_NONE).then_some(o)
            }
            _ => None,
        }
    }

    /// The state of `mfn` (`None` if not RAM), found through the head of the
    /// block that contains it: `O(MAX_ORDER)` probes.
    ///
    /// Free blocks are inserted and merged without touching their interior
    /// pages (that keeps boot and merging cheap), so a page's own raw state is
    /// only authoritative for heads. Every page marked as a head is a live
    /// head, and live blocks are disjoint, so the block of `mfn` is the one
    /// whose head is `mfn` aligned down to some order `o` and has order `o`.
    pub fn state(&self, mfn: Mfn) -> Option<PageState> {
        let c = self.chunk(mfn).ok()?;
        Some(self.lock_chunk(&c).state(&c, mfn))
    }

    /// A copy of the entry of `mfn`, if RAM. Interior pages of blocks carry
    /// stale raw states; use [`state`](Self::state) for the real one.
    pub fn page(&self, mfn: Mfn) -> Option<PageInfo> {
        let c = self.chunk(mfn).ok()?;
        let nh = self.lock_chunk(&c);
        Some(nh.pages[nh.local(&c, mfn) as usize])
    }

    /// Allocated blocks (and their pages) whose owner is `owner`: what a
    /// domain still holds. Walks every page, one node at a time.
    pub fn owned(&self, owner: u32) -> Owned {
        let mut o = Owned::default();
        for l in self.nodes.iter() {
            let nh = l.0.lock();
            for p in nh.pages.iter() {
                if p.raw_state() == RawState::AllocHead && p.owner == owner {
                    o.blocks += 1;
                    o.pages += 1 << p.order;
                }
            }
        }
        o
    }

    /// Reserves `pages` on each named node for `owner`, on all of them or
    /// none (a node named twice is asked the sum). A node can give its
    /// unclaimed free pages: free pages minus everyone's outstanding claims.
    /// On failure nothing is claimed and the error names every node that
    /// fell short.
    ///
    /// Locking: the nodes' locks are taken in ascending node order and held
    /// together, so every node is checked and charged at one instant (the
    /// only place that holds two node locks; see the module documentation).
    pub fn claim(&self, owner: u32, want: &[(NodeId, u64)]) -> Result<Claim, ClaimError> {
        let mut per = vec![0u64; self.nr_nodes];
        for &(node, pages) in want {
            let slot = per
                .get_mut(node.index())
                .ok_or(ClaimError::NoSuchNode(node))?;
            *slot = slot.saturating_add(pages);
        }
        let mut held = Vec::with_capacity(per.iter().filter(|&&p| p != 0).count());
        for (n, &pages) in per.iter().enumerate() {
            if pages != 0 {
                held.push((n, self.nodes[n].0.lock()));
            }
        }
        let short: Vec<Shortfall> = held
            .iter()
            .filter(|(n, nh)| per[*n] > nh.unclaimed())
            .map(|(n, nh)| Shortfall {
                node: NodeId(*n as u8),
                wanted: per[*n],
                available: nh.unclaimed(),
            })
            .collect();
        if !short.is_empty() {
            return Err(ClaimError::Short(short));
        }
        for (n, nh) in &mut held {
            nh.claimed += per[*n];
        }
        drop(held);
        Ok(Claim {
            owner,
            heap: self.id,
            remaining: per,
        })
    }

    /// Gives back what is left of `claim`; returns the pages released (0 for
    /// a claim of another heap, which this heap never counted).
    pub fn release(&self, claim: Claim) -> u64 {
        if claim.heap != self.id {
            return 0;
        }
        let mut released = 0;
        for (n, &pages) in claim.remaining.iter().enumerate() {
            if pages == 0 {
                continue;
            }
            let Some(l) = self.nodes.get(n) else { break };
            let mut nh = l.0.lock();
            // The node counted this claim when it was made and every draw
            // from it since, so it holds at least `pages`.
            debug_assert!(nh.claimed >= pages);
            nh.claimed = nh.claimed.saturating_sub(pages);
            released += pages;
        }
        released
    }

    /// Pages claimed on `node` and not yet allocated (0 for an unknown node).
    pub fn claimed_pages(&self, node: NodeId) -> u64 {
        self.node(node).map_or(0, |l| l.lock().claimed)
    }

    /// Free pages on `node` that nobody has claimed: what a new claim or an
    /// ordinary allocation can have (0 for an unknown node).
    pub fn unclaimed_free_pages(&self, node: NodeId) -> u64 {
        self.node(node).map_or(0, |l| l.lock().unclaimed())
    }

    /// Free pages on `node` (0 for an unknown node), claimed or not.
    pub fn free_pages(&self, node: NodeId) -> u64 {
        self.node(node).map_or(0, |l| l.lock().free)
    }

    /// Free pages on all nodes.
    pub fn total_free_pages(&self) -> u64 {
        self.nodes.iter().map(|l| l.0.lock().free).sum()
    }

    /// Pages ever given to the heap on `node`, free or allocated.
    pub fn total_pages(&self, node: NodeId) -> u64 {
        self.node(node).map_or(0, |l| l.lock().total)
    }

    /// Free pages on `node` in `zone`.
    pub fn free_pages_in_zone(&self, node: NodeId, zone: u8) -> u64 {
        self.node(node).map_or(0, |l| {
            let nh = l.lock();
            (0..=MAX_ORDER)
                .map(|o| u64::from(nh.free_blocks(zone, o)) << o)
                .sum()
        })
    }

    /// Free blocks of `order` on `node` in `zone`.
    pub fn free_blocks(&self, node: NodeId, zone: u8, order: u8) -> u32 {
        self.node(node)
            .map_or(0, |l| l.lock().free_blocks(zone, order))
    }

    /// All nodes' totals and every non-empty free list (claims are not
    /// free-list state and do not show).
    pub fn probe(&self) -> HeapProbe {
        let mut p = HeapProbe::default();
        for l in self.nodes.iter() {
            let nh = l.0.lock();
            p.nodes.push(ProbeNode {
                node: nh.node,
                total_pages: nh.total,
                free_pages: nh.free,
            });
            for z in nh.zone_lo..nh.zone_lo + nh.nr_zones {
                for order in 0..=MAX_ORDER {
                    let blocks = nh.free_blocks(z, order);
                    if blocks != 0 {
                        p.rows.push(ProbeRow {
                            node: nh.node,
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

    /// Walks every list and every page, one node at a time under its lock;
    /// for tests and debug builds.
    ///
    /// Checks per node: list links and counts, bitmasks against lists, the
    /// free count, each block aligned, in RAM, on the node and in one zone, no
    /// page in two blocks, no stray free head, every block inside added
    /// memory, free + allocated == total, and claimed <= free.
    pub fn check_invariants(&self) -> Result<(), String> {
        let added = self.added.lock().clone();
        for l in self.nodes.iter() {
            let nh = l.0.lock();
            self.check_node(&nh, &added)?;
        }
        Ok(())
    }

    fn check_node(&self, nh: &NodeHeap, added: &[MemRange]) -> Result<(), String> {
        let n = nh.node;
        let range = self.ft.node_pages(n);
        if nh.base != range.start || nh.pages.len() != range.len() {
            return Err(format!("node {n}: entries do not match {range:?}"));
        }
        // 0 = in no block, 1 = in a free block, 2 = in an allocated block.
        let mut cover = vec![0u8; nh.pages.len()];
        let (mut in_lists, mut free, mut zmask) = (0u64, 0u64, 0u64);
        for zi in 0..nh.nr_zones {
            let z = nh.zone_lo + zi;
            let mut omask = 0u32;
            for o in 0..=MAX_ORDER {
                let list = nh.zones[usize::from(zi)].lists[usize::from(o)];
                let (mut cur, mut prev, mut seen) = (list.head, NO_INDEX, 0u32);
                while cur != NO_INDEX {
                    let at = format!("node {n} zone {z} order {o} index {cur}");
                    if seen >= list.count {
                        return Err(format!("{at}: more entries than count {}", list.count));
                    }
                    let p = nh
                        .pages
                        .get(cur as usize)
                        .ok_or(format!("{at}: bad index"))?;
                    if p.prev != prev {
                        return Err(format!("{at}: prev {} != {prev}", p.prev));
                    }
                    if p.raw_state() != RawState::FreeHead || p.order != o {
                        return Err(format!("{at}: state {:?} order {}", p.raw_state(), p.order));
                    }
                    let mfn = self
                        .ft
                        .mfn_at(nh.base + cur)
                        .ok_or(format!("{at}: no mfn"))?;
                    self.check_block(nh, added, mfn, o, Some(z), 1, &mut cover)
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
            if omask != nh.zones[usize::from(zi)].order_mask {
                return Err(format!(
                    "node {n} zone {z}: order mask {omask:#x} != {:#x}",
                    nh.zones[usize::from(zi)].order_mask
                ));
            }
            if omask != 0 {
                zmask |= 1 << z;
            }
        }
        if zmask != nh.zone_mask {
            return Err(format!(
                "node {n}: zone mask {zmask:#x} != {:#x}",
                nh.zone_mask
            ));
        }
        if free != nh.free {
            return Err(format!(
                "node {n}: lists hold {free} free pages, count says {}",
                nh.free
            ));
        }

        let (mut heads, mut covered) = (0u64, free);
        for (i, p) in nh.pages.iter().enumerate() {
            if p.node() != n {
                return Err(format!("node {n}: entry {i} says node {}", p.node()));
            }
            match p.raw_state() {
                RawState::FreeHead => heads += 1,
                RawState::AllocHead => {
                    let mfn = self.ft.mfn_at(nh.base + i as u32).ok_or("no mfn")?;
                    self.check_block(nh, added, mfn, p.order, None, 2, &mut cover)
                        .map_err(|e| format!("allocated {mfn}: {e}"))?;
                    covered += 1 << p.order;
                }
                RawState::Reserved | RawState::Merged => {}
            }
        }
        if heads != in_lists {
            return Err(format!(
                "node {n}: {heads} free heads but {in_lists} blocks in lists"
            ));
        }
        if covered != nh.total {
            return Err(format!(
                "node {n}: free + allocated = {covered} != total {}",
                nh.total
            ));
        }
        if nh.claimed > nh.free {
            return Err(format!(
                "node {n}: {} pages claimed but only {} free",
                nh.claimed, nh.free
            ));
        }
        Ok(())
    }

    /// Checks one block of `nh` for [`check_invariants`](Self::check_invariants)
    /// and marks its pages in `cover` with `mark`.
    #[allow(clippy::too_many_arguments)]
    fn check_block(
        &self,
        nh: &NodeHeap,
        added: &[MemRange],
        mfn: Mfn,
        order: u8,
        zone: Option<u8>,
        mark: u8,
        cover: &mut [u8],
    ) -> Result<(), String> {
        let size = 1u64 << order;
        if !mfn.0.is_multiple_of(size) {
            return Err(format!("not aligned to order {order}"));
        }
        let c = self.chunk(mfn).map_err(|_| "head not RAM")?;
        let last = Mfn(mfn.0 + size - 1);
        if !c.contains(last) {
            return Err("block leaves its chunk".into());
        }
        if c.node != nh.node {
            return Err(format!("on node {} not {}", c.node, nh.node));
        }
        if zone_of(mfn) != zone_of(last) || zone.is_some_and(|z| z != zone_of(mfn)) {
            return Err("block spans zones or sits in the wrong zone".into());
        }
        if mfn.0 == 0 {
            return Err("frame 0 in the heap".into());
        }
        let r = MemRange::new(mfn.maddr(), last.add(1).maddr());
        // Adjacent added ranges merge into one block: accept a contiguous run of them.
        let pos = added.partition_point(|a| a.end.0 <= r.start.0);
        let mut at = r.start.0;
        for a in &added[pos..] {
            if a.start.0 > at || at >= r.end.0 {
                break;
            }
            at = a.end.0;
        }
        if at < r.end.0 {
            return Err("block outside added memory".into());
        }
        let first = nh.local(&c, mfn) as usize;
        for slot in &mut cover[first..first + size as usize] {
            if *slot != 0 {
                return Err("page in two blocks".into());
            }
            *slot = mark;
        }
        Ok(())
    }
}

impl NodeHeap {
    /// Index into `pages` of `mfn`, which must lie in chunk `c` of this node.
    fn local(&self, c: &Chunk, mfn: Mfn) -> u32 {
        c.first_index - self.base + (mfn.0 - c.base_mfn.0) as u32
    }

    /// Free pages nobody has claimed. Relies on `claimed <= free`, which
    /// `claim` and `alloc` keep and `check_invariants` checks (a violation
    /// panics here in debug builds).
    fn unclaimed(&self) -> u64 {
        self.free - self.claimed
    }

    /// Index of `zone`'s lists, if the node's RAM reaches that zone.
    fn zone_slot(&self, zone: u8) -> Option<usize> {
        (zone >= self.zone_lo && zone - self.zone_lo < self.nr_zones)
            .then(|| usize::from(zone - self.zone_lo))
    }

    fn free_blocks(&self, zone: u8, order: u8) -> u32 {
        match self.zone_slot(zone) {
            Some(s) if order <= MAX_ORDER => self.zones[s].lists[usize::from(order)].count,
            _ => 0,
        }
    }

    /// The state of `mfn` in chunk `c` (see [`Heap::state`]).
    fn state(&self, c: &Chunk, mfn: Mfn) -> PageState {
        for order in 0..=MAX_ORDER {
            let head = Mfn(mfn.0 & !((1u64 << order) - 1));
            if !c.contains(head) {
                break;
            }
            let p = &self.pages[self.local(c, head) as usize];
            if p.order == order {
                match p.raw_state() {
                    RawState::FreeHead => return PageState::Free { head, order },
                    RawState::AllocHead => return PageState::Allocated { head, order },
                    RawState::Reserved | RawState::Merged => {}
                }
            }
        }
        PageState::Reserved
    }

    /// Takes a block of `2^order` pages from the highest allowed zone, if the
    /// node can spare it: `from_claim` (at most `2^order`, at most `claimed`)
    /// of its pages come out of a claim, the rest must be unclaimed. Returns
    /// the block's index in `pages`, its head marked allocated with no owner.
    fn alloc(&mut self, order: u8, zone_limit: u64, from_claim: u64) -> Option<u32> {
        let size = 1u64 << order;
        // Keeps `claimed <= free`: free - size >= claimed - from_claim.
        if self.unclaimed() < size - from_claim {
            return None;
        }
        let mut zones = self.zone_mask & zone_limit;
        while zones != 0 {
            let z = (63 - zones.leading_zeros()) as u8;
            let slot = usize::from(z - self.zone_lo);
            let orders = self.zones[slot].order_mask & (u32::MAX << order);
            if orders != 0 {
                let idx = self.take(slot, z, orders.trailing_zeros() as u8, order);
                self.free -= size;
                self.claimed -= from_claim;
                return Some(idx);
            }
            zones &= !(1 << z);
        }
        None
    }

    /// Removes the first block of the order-`have` list of zone slot `slot`,
    /// returns its first `2^want` pages allocated and the rest to the lists.
    fn take(&mut self, slot: usize, zone: u8, have: u8, want: u8) -> u32 {
        let idx = self.zones[slot].lists[usize::from(have)].head;
        self.unlink(slot, zone, have, idx);
        let mut o = have;
        while o > want {
            o -= 1;
            let upper = idx + (1 << o);
            let p = &mut self.pages[upper as usize];
            p.set_raw_state(RawState::FreeHead);
            p.order = o;
            self.link(slot, zone, o, upper);
        }
        let p = &mut self.pages[idx as usize];
        p.set_raw_state(RawState::AllocHead);
        p.order = want;
        p.owner = OWNER_NONE;
        idx
    }

    /// Puts the block `[mfn, mfn + 2^order)` of chunk `c` on its free list,
    /// first merging it with its buddy for as long as the buddy is a free
    /// head of the same order and zone. The block's pages must be in `c`,
    /// a chunk of this node.
    fn insert_merged(&mut self, c: &Chunk, mfn: Mfn, order: u8) {
        let zone = zone_of(mfn);
        let slot = self.zone_slot(zone).unwrap_or(0);
        let (mut head, mut o) = (mfn, order);
        while o < MAX_ORDER {
            let buddy = Mfn(head.0 ^ (1 << o));
            // Blocks stay inside one chunk (hence one node: same-node
            // neighbours are one chunk) and one zone.
            if !c.contains(buddy) || zone_of(buddy) != zone {
                break;
            }
            let bi = self.local(c, buddy);
            let b = &self.pages[bi as usize];
            if b.raw_state() != RawState::FreeHead || b.order != o {
                break;
            }
            self.unlink(slot, zone, o, bi);
            let upper = self.local(c, head.max(buddy));
            self.pages[upper as usize].set_raw_state(RawState::Merged);
            head = head.min(buddy);
            o += 1;
        }
        let idx = self.local(c, head);
        let p = &mut self.pages[idx as usize];
        p.set_raw_state(RawState::FreeHead);
        p.order = o;
        p.owner = OWNER_NONE;
        self.link(slot, zone, o, idx);
    }

    fn link(&mut self, slot: usize, zone: u8, order: u8, idx: u32) {
        let li = usize::from(order);
        let old = self.zones[slot].lists[li].head;
        let p = &mut self.pages[idx as usize];
        p.next = old;
        p.prev = NO_INDEX;
        if old != NO_INDEX {
            self.pages[old as usize].prev = idx;
        }
        self.zones[slot].lists[li].head = idx;
        self.zones[slot].lists[li].count += 1;
        self.zones[slot].order_mask |= 1 << order;
        self.zone_mask |= 1 << zone;
    }

    fn unlink(&mut self, slot: usize, zone: u8, order: u8, idx: u32) {
        let li = usize::from(order);
        let p = &mut self.pages[idx as usize];
        let (next, prev) = (p.next, p.prev);
        p.next = NO_INDEX;
        p.prev = NO_INDEX;
        if prev == NO_INDEX {
            self.zones[slot].lists[li].head = next;
        } else {
            self.pages[prev as usize].next = next;
        }
        if next != NO_INDEX {
            self.pages[next as usize].prev = prev;
        }
        self.zones[slot].lists[li].count -= 1;
        if self.zones[slot].lists[li].count == 0 {
            self.zones[slot].order_mask &= !(1 << order);
            if self.zones[slot].order_mask == 0 {
                self.zone_mask &= !(1 << zone);
            }
        }
    }
}

/// A summary; [`Heap::probe`] has the details. Locks one node at a time.
impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<(u64, u64, u64)> = self
            .nodes
            .iter()
            .map(|l| {
                let nh = l.0.lock();
                (nh.total, nh.free, nh.claimed)
            })
            .collect();
        f.debug_struct("Heap")
            .field("frame_table", &self.ft)
            .field("nr_nodes", &self.nr_nodes)
            .field("total_free_claimed", &counts)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;

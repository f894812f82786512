//! The frame table: one [`PageInfo`] per page of RAM, indexed densely.
//!
//! Machines like SGI Altix put each node's memory at a node-id-dependent high
//! address, so a table indexed by frame number would cost memory for the
//! whole address span. Like Xen's `pdx`, this table instead compresses RAM
//! into a dense *page index*: RAM is a sorted list of [`Chunk`]s, each
//! covering contiguous frames of one node and owning a contiguous run of
//! indices, and frame ↔ index conversion is a binary search over the chunks
//! (`O(log chunks)`). Indices are numbered node by node (all of node 0's
//! chunks in address order, then node 1's, ...), so each node's pages own one
//! contiguous index range ([`FrameTable::node_pages`]).
//!
//! This table is the immutable part: the chunk index, built once and read
//! without a lock by anyone (`node_of`, `is_ram`, `index_of`). The per-page
//! [`PageInfo`] entries change with every allocation, so they live with the
//! heap (`mm::heap`), one array per node inside that node's lock, made by
//! [`FrameTable::node_entries`]; the heap keeps its free lists in them.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::mem::size_of;
use core::ops::Range;

use super::addr::{MemRange, Mfn, PAGE_SHIFT, PAGE_SIZE};
use crate::numa::{NodeId, MAX_NODES};

/// "No page" in a [`PageInfo`] link, and "nobody" as an owner.
pub const NO_INDEX: u32 = u32::MAX;
/// Owner id of a page that belongs to no domain.
pub const OWNER_NONE: u32 = u32::MAX;

/// Number of zones: a frame below 2^52 (64-bit addresses) has a bit width of at most 52.
pub const NR_ZONES: usize = (64 - PAGE_SHIFT) as usize + 1;

/// The zone of a frame: its bit width (`fls`), as Xen defines zones.
///
/// Zone `z` holds frames in `[2^(z-1), 2^z)`, i.e. machine addresses below
/// `2^(z + PAGE_SHIFT)`, so "memory a device with `n` address bits can reach"
/// is exactly the zones `<= n - PAGE_SHIFT`. Zone 0 is frame 0 alone.
pub const fn zone_of(mfn: Mfn) -> u8 {
    (64 - mfn.0.leading_zeros()) as u8
}

/// Raw state byte of a [`PageInfo`]. Only block *heads* carry a meaningful
/// state; see [`Heap::state`](crate::mm::heap::Heap::state) for the state of any page.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum RawState {
    /// Not (or not yet) given to the heap; also what never-touched interior
    /// pages of free blocks still hold, since free blocks are inserted whole.
    Reserved = 0,
    /// Head of a free block of `order` pages, linked into a heap free list.
    FreeHead = 1,
    /// A former head that was merged into a larger block (now interior).
    Merged = 2,
    /// Head of an allocated block of `order` pages.
    AllocHead = 3,
}

/// One page's bookkeeping: 16 bytes, so the entries cost 1/256 of RAM.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C)]
pub struct PageInfo {
    /// Next free block in the same free list, as an index into its node's
    /// entries (page index minus the node's first), or [`NO_INDEX`].
    pub(crate) next: u32,
    /// Previous free block in the same free list (node-relative), or [`NO_INDEX`].
    pub(crate) prev: u32,
    /// Owning domain of an allocated block (kept in its head), or [`OWNER_NONE`].
    pub(crate) owner: u32,
    /// log2 of the block size, meaningful in heads.
    pub(crate) order: u8,
    /// A [`RawState`] as a byte.
    pub(crate) state: u8,
    /// Node of the page, fixed at construction.
    node: u8,
    /// Zone of the page ([`zone_of`]), fixed at construction.
    zone: u8,
}

const _: () = assert!(size_of::<PageInfo>() <= 16);

impl PageInfo {
    const fn new(node: NodeId, zone: u8) -> PageInfo {
        PageInfo {
            next: NO_INDEX,
            prev: NO_INDEX,
            owner: OWNER_NONE,
            order: 0,
            state: RawState::Reserved as u8,
            node: node.0,
            zone,
        }
    }

    pub const fn node(&self) -> NodeId {
        NodeId(self.node)
    }

    pub const fn zone(&self) -> u8 {
        self.zone
    }

    pub const fn order(&self) -> u8 {
        self.order
    }

    pub const fn owner(&self) -> u32 {
        self.owner
    }

    pub const fn raw_state(&self) -> RawState {
        match self.state {
            1 => RawState::FreeHead,
            2 => RawState::Merged,
            3 => RawState::AllocHead,
            _ => RawState::Reserved,
        }
    }

    pub(crate) fn set_raw_state(&mut self, s: RawState) {
        self.state = s as u8;
    }
}

/// A run of contiguous RAM frames on one node and the indices they occupy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Chunk {
    pub base_mfn: Mfn,
    pub nr_pages: u32,
    /// Page index of `base_mfn`; the chunk owns `first_index .. first_index + nr_pages`.
    pub first_index: u32,
    pub node: NodeId,
}

impl Chunk {
    /// One past the last frame.
    pub const fn end_mfn(&self) -> Mfn {
        Mfn(self.base_mfn.0 + self.nr_pages as u64)
    }

    pub const fn contains(&self, mfn: Mfn) -> bool {
        self.base_mfn.0 <= mfn.0 && mfn.0 < self.base_mfn.0 + self.nr_pages as u64
    }

    /// The chunk as a machine address range.
    pub const fn range(&self) -> MemRange {
        MemRange::new(self.base_mfn.maddr(), self.end_mfn().maddr())
    }
}

/// The state of a page as the heap sees it, resolved through its block head.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PageState {
    /// RAM that was never given to the heap.
    Reserved,
    /// Inside the free block `[head, head + 2^order)`.
    Free { head: Mfn, order: u8 },
    /// Inside the allocated block `[head, head + 2^order)`.
    Allocated { head: Mfn, order: u8 },
}

/// Why a frame table could not be built.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FrameTableError {
    /// A range does not start or end on a page boundary (trim it with
    /// [`MemRange::pages_within`] first).
    Unaligned(MemRange),
    /// Start above end.
    Inverted(MemRange),
    /// Two ranges share memory.
    Overlap(MemRange, MemRange),
    /// A node id at or above [`MAX_NODES`].
    BadNode(NodeId),
    /// More RAM pages than a 32-bit page index can name.
    TooManyPages,
    /// The global allocator could not provide the table.
    OutOfMemory,
}

impl fmt::Display for FrameTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameTableError::Unaligned(r) => write!(f, "RAM range {r} is not page-aligned"),
            FrameTableError::Inverted(r) => write!(f, "RAM range {r} ends before it starts"),
            FrameTableError::Overlap(a, b) => write!(f, "RAM ranges {a} and {b} overlap"),
            FrameTableError::BadNode(n) => write!(f, "node {n} is not below {MAX_NODES}"),
            FrameTableError::TooManyPages => write!(f, "too many RAM pages for a 32-bit index"),
            FrameTableError::OutOfMemory => write!(f, "no memory for the frame table"),
        }
    }
}

/// The dense page index of RAM: which frames are RAM, on which node, and
/// where each frame's [`PageInfo`] sits. Immutable once built.
pub struct FrameTable {
    /// Sorted by address.
    chunks: Box<[Chunk]>,
    /// Positions in `chunks`, sorted by `first_index` (for [`mfn_at`](Self::mfn_at)).
    by_index: Box<[u32]>,
    /// Node `n`'s pages are the indices `node_start[n] .. node_start[n + 1]`.
    node_start: [u32; MAX_NODES + 1],
}

/// A summary: the chunks say it all.
impl fmt::Debug for FrameTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameTable")
            .field("nr_pages", &self.nr_pages())
            .field("chunks", &self.chunks)
            .finish()
    }
}

impl FrameTable {
    /// Builds the table from RAM ranges tagged with their node.
    ///
    /// The input may come in any order; empty ranges are ignored, adjacent
    /// ranges of the same node become one chunk. Ranges must be page-aligned
    /// and disjoint. Costs `O(pages)` time once (every entry is initialised)
    /// and `16 * pages` bytes from the global allocator; an allocation failure
    /// is reported, not aborted on.
    pub fn new(ranges: &[(MemRange, NodeId)]) -> Result<FrameTable, FrameTableError> {
        let mut sorted: Vec<(MemRange, NodeId)> = Vec::new();
        sorted
            .try_reserve_exact(ranges.len())
            .map_err(|_| FrameTableError::OutOfMemory)?;
        for &(r, node) in ranges {
            if r.end.0 < r.start.0 {
                return Err(FrameTableError::Inverted(r));
            }
            if !r.start.0.is_multiple_of(PAGE_SIZE) || !r.end.0.is_multiple_of(PAGE_SIZE) {
                return Err(FrameTableError::Unaligned(r));
            }
            if node.index() >= MAX_NODES {
                return Err(FrameTableError::BadNode(node));
            }
            if !r.is_empty() {
                sorted.push((r, node));
            }
        }
        sorted.sort_unstable_by_key(|&(r, _)| r.start);
        for w in sorted.windows(2) {
            if w[0].0.overlaps(&w[1].0) {
                return Err(FrameTableError::Overlap(w[0].0, w[1].0));
            }
        }

        // Coalesce adjacent same-node ranges, so that a buddy block can only
        // cross a chunk boundary where the node changes (which the heap refuses).
        let mut chunks: Vec<Chunk> = Vec::new();
        chunks
            .try_reserve_exact(sorted.len())
            .map_err(|_| FrameTableError::OutOfMemory)?;
        let mut total: u64 = 0;
        for &(r, node) in &sorted {
            let base = r.start.mfn();
            let n = r.len() >> PAGE_SHIFT;
            total = total.saturating_add(n);
            if total >= u64::from(NO_INDEX) {
                return Err(FrameTableError::TooManyPages);
            }
            // `total < u32::MAX`, so every count and index below fits a u32.
            match chunks.last_mut() {
                Some(last) if last.node == node && last.end_mfn() == base => {
                    last.nr_pages += n as u32;
                }
                _ => chunks.push(Chunk {
                    base_mfn: base,
                    nr_pages: n as u32,
                    first_index: 0,
                    node,
                }),
            }
        }

        // Number the pages node by node, each node's chunks in address order.
        let mut per_node = [0u32; MAX_NODES];
        for c in &chunks {
            per_node[c.node.index()] += c.nr_pages;
        }
        let mut node_start = [0u32; MAX_NODES + 1];
        for n in 0..MAX_NODES {
            node_start[n + 1] = node_start[n] + per_node[n];
        }
        let mut next = node_start;
        for c in &mut chunks {
            c.first_index = next[c.node.index()];
            next[c.node.index()] += c.nr_pages;
        }
        let mut by_index: Vec<u32> = Vec::new();
        by_index
            .try_reserve_exact(chunks.len())
            .map_err(|_| FrameTableError::OutOfMemory)?;
        by_index.extend(0..chunks.len() as u32);
        by_index.sort_unstable_by_key(|&i| chunks[i as usize].first_index);
        Ok(FrameTable {
            chunks: chunks.into_boxed_slice(),
            by_index: by_index.into_boxed_slice(),
            node_start,
        })
    }

    /// Fresh (Reserved) entries for every page of `node`, in index order:
    /// entry `i` describes page index `node_pages(node).start + i`. Costs
    /// `16 * pages` bytes from the global allocator; a failure is reported.
    pub fn node_entries(&self, node: NodeId) -> Result<Box<[PageInfo]>, FrameTableError> {
        let range = self.node_pages(node);
        let mut pages: Vec<PageInfo> = Vec::new();
        pages
            .try_reserve_exact(range.len())
            .map_err(|_| FrameTableError::OutOfMemory)?;
        for c in self.chunks.iter().filter(|c| c.node == node) {
            for mfn in c.base_mfn.0..c.end_mfn().0 {
                pages.push(PageInfo::new(c.node, zone_of(Mfn(mfn))));
            }
        }
        Ok(pages.into_boxed_slice())
    }

    /// The page indices of `node`'s RAM (empty for a memoryless or unknown node).
    pub fn node_pages(&self, node: NodeId) -> Range<u32> {
        match node.index() {
            n if n < MAX_NODES => self.node_start[n]..self.node_start[n + 1],
            _ => 0..0,
        }
    }

    /// The RAM chunks, sorted by address.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// Number of RAM pages (and of entries).
    pub fn nr_pages(&self) -> usize {
        self.node_start[MAX_NODES] as usize
    }

    /// Bytes of memory the page bookkeeping really occupies: the entries
    /// (which the heap holds, per node), the chunk index and this header.
    pub fn bytes_used(&self) -> usize {
        size_of::<FrameTable>()
            + self.nr_pages() * size_of::<PageInfo>()
            + self.chunks.len() * (size_of::<Chunk>() + size_of::<u32>())
    }

    /// Position in [`chunks`](Self::chunks) of the chunk holding `mfn`.
    pub fn chunk_of(&self, mfn: Mfn) -> Option<usize> {
        let i = self
            .chunks
            .partition_point(|c| c.base_mfn <= mfn)
            .checked_sub(1)?;
        self.chunks[i].contains(mfn).then_some(i)
    }

    /// The dense page index of `mfn`, or `None` if it is not RAM.
    pub fn index_of(&self, mfn: Mfn) -> Option<u32> {
        let c = &self.chunks[self.chunk_of(mfn)?];
        Some(c.first_index + (mfn.0 - c.base_mfn.0) as u32)
    }

    /// The frame at page index `index`, or `None` past the end.
    pub fn mfn_at(&self, index: u32) -> Option<Mfn> {
        let i = self
            .by_index
            .partition_point(|&c| self.chunks[c as usize].first_index <= index)
            .checked_sub(1)?;
        let c = &self.chunks[self.by_index[i] as usize];
        (index - c.first_index < c.nr_pages)
            .then(|| c.base_mfn.add(u64::from(index - c.first_index)))
    }

    pub fn is_ram(&self, mfn: Mfn) -> bool {
        self.chunk_of(mfn).is_some()
    }

    pub fn node_of(&self, mfn: Mfn) -> Option<NodeId> {
        self.chunk_of(mfn).map(|i| self.chunks[i].node)
    }

    /// What a table indexed by frame number (from frame 0 to the last RAM
    /// frame) would cost, for comparison with [`bytes_used`](Self::bytes_used).
    pub fn flat_table_bytes(&self) -> u64 {
        self.chunks.last().map_or(0, |c| {
            c.end_mfn().0.saturating_mul(size_of::<PageInfo>() as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::addr::Maddr;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    fn r(base: u64, len: u64) -> MemRange {
        MemRange::from_base_len(base, len)
    }

    #[test]
    fn zones_are_bit_widths() {
        assert_eq!(zone_of(Mfn(0)), 0);
        assert_eq!(zone_of(Mfn(1)), 1);
        assert_eq!(zone_of(Mfn(2)), 2);
        assert_eq!(zone_of(Mfn(3)), 2);
        // Everything below 4 GiB is in zones <= 32 - PAGE_SHIFT.
        assert_eq!(zone_of(Maddr((1 << 32) - PAGE_SIZE).mfn()), 20);
        assert_eq!(zone_of(Maddr(1 << 32).mfn()), 21);
        assert_eq!(zone_of(Mfn((1 << 52) - 1)) as usize, NR_ZONES - 1);
    }

    #[test]
    fn sorts_coalesces_and_maps() {
        let ft = FrameTable::new(&[
            (r(0x10_0000, MIB), NodeId(1)),
            (r(0, MIB), NodeId(0)),
            (r(MIB, MIB), NodeId(0)),      // adjacent, same node: coalesced
            (r(0x100_0000, 0), NodeId(3)), // empty: ignored
            (r(2 * MIB, MIB), NodeId(1)),  // adjacent, other node: own chunk
        ])
        .unwrap_err();
        // 0x10_0000 == MIB overlaps [MIB, 2 MiB).
        assert!(matches!(ft, FrameTableError::Overlap(..)));

        let ft = FrameTable::new(&[
            (r(4 * MIB, MIB), NodeId(1)),
            (r(0, MIB), NodeId(0)),
            (r(MIB, MIB), NodeId(0)),
            (r(0x100_0000, 0), NodeId(3)),
            (r(2 * MIB, MIB), NodeId(1)),
        ])
        .unwrap();
        assert_eq!(ft.chunks().len(), 3);
        assert_eq!(ft.chunks()[0].nr_pages, 512);
        assert_eq!(ft.chunks()[1].first_index, 512);
        assert_eq!(ft.nr_pages(), 1024);
        assert_eq!(ft.node_of(Maddr(MIB + 5).mfn()), Some(NodeId(0)));
        assert_eq!(ft.node_of(Maddr(2 * MIB).mfn()), Some(NodeId(1)));
        assert_eq!(ft.node_of(Maddr(3 * MIB).mfn()), None);
        assert!(!ft.is_ram(Maddr(5 * MIB).mfn()));
        assert!(ft.is_ram(Maddr(5 * MIB - 1).mfn()));
        assert_eq!(ft.node_pages(NodeId(0)), 0..512);
        assert_eq!(ft.node_pages(NodeId(1)), 512..1024);
        assert_eq!(ft.node_pages(NodeId(2)), 1024..1024);
        assert_eq!(ft.node_pages(NodeId(200)), 0..0);
        for node in [NodeId(0), NodeId(1)] {
            let range = ft.node_pages(node);
            let entries = ft.node_entries(node).unwrap();
            assert_eq!(entries.len(), range.len());
            for (i, e) in range.zip(entries.iter()) {
                let mfn = ft.mfn_at(i).unwrap();
                assert_eq!(ft.index_of(mfn), Some(i));
                assert_eq!(e.zone(), zone_of(mfn));
                assert_eq!(e.node(), node);
                assert_eq!(e.raw_state(), RawState::Reserved);
            }
        }
        assert_eq!(ft.mfn_at(1024), None);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            FrameTable::new(&[(r(0x800, MIB), NodeId(0))]),
            Err(FrameTableError::Unaligned(_))
        ));
        assert!(matches!(
            FrameTable::new(&[(r(0, MIB + 1), NodeId(0))]),
            Err(FrameTableError::Unaligned(_))
        ));
        assert!(matches!(
            FrameTable::new(&[(r(0, MIB), NodeId(64))]),
            Err(FrameTableError::BadNode(_))
        ));
        let inverted = MemRange {
            start: Maddr(2 * MIB),
            end: Maddr(MIB),
        };
        assert!(matches!(
            FrameTable::new(&[(inverted, NodeId(0))]),
            Err(FrameTableError::Inverted(_))
        ));
        assert!(matches!(
            FrameTable::new(&[(r(0, 2 * MIB), NodeId(0)), (r(MIB, MIB), NodeId(1))]),
            Err(FrameTableError::Overlap(..))
        ));
        let empty = FrameTable::new(&[]).unwrap();
        assert_eq!(empty.nr_pages(), 0);
        assert_eq!(empty.node_of(Mfn(0)), None);
        assert_eq!(empty.mfn_at(0), None);
    }

    /// The point of the page index: an Altix-like sparse map costs what the
    /// same RAM costs at address 0, not what its address span would.
    #[test]
    fn sparse_costs_what_dense_costs() {
        let bases = [
            0x30_0000_0000u64,
            0xB0_0000_0000,
            0x130_0000_0000,
            0x1B0_0000_0000,
        ];
        let sparse: Vec<_> = bases
            .iter()
            .enumerate()
            .map(|(n, &b)| (r(b, 64 * MIB), NodeId(n as u8)))
            .collect();
        let dense: Vec<_> = (0..4)
            .map(|n| (r(n * 64 * MIB, 64 * MIB), NodeId(n as u8)))
            .collect();
        let s = FrameTable::new(&sparse).unwrap();
        let d = FrameTable::new(&dense).unwrap();
        assert_eq!(s.nr_pages(), 65536);
        assert!(s.bytes_used() <= d.bytes_used());
        // About 1 MiB, i.e. 16 bytes per 4 KiB page.
        assert!(s.bytes_used() <= 65536 * 16 + 4096);
        // A frame-number-indexed table would need ~6.75 GiB for the same
        // machine, ~6900 times as much.
        assert!(s.flat_table_bytes() > 6 * (1 << 30));
        assert!(s.flat_table_bytes() > 6000 * s.bytes_used() as u64);
        assert_eq!(
            s.node_of(Maddr(0x130_0000_0000 + 5 * MIB).mfn()),
            Some(NodeId(2))
        );
        assert_eq!(s.node_of(Maddr(0x130_0000_0000 - PAGE_SIZE).mfn()), None);
    }

    proptest! {
        /// Random disjoint ranges: every page maps to an index and back, and
        /// nothing outside the ranges is RAM.
        #[test]
        fn index_roundtrip(gaps in proptest::collection::vec((0u64..40, 1u64..40, 0u8..4), 0..12),
                           probes in proptest::collection::vec(0u64..2000, 0..50)) {
            let mut ranges = Vec::new();
            let mut at = 0u64;
            for &(gap, len, node) in &gaps {
                at += gap;
                ranges.push((r(at * PAGE_SIZE, len * PAGE_SIZE), NodeId(node)));
                at += len;
            }
            ranges.reverse();
            let ft = FrameTable::new(&ranges).unwrap();
            let total: u64 = gaps.iter().map(|g| g.1).sum();
            prop_assert_eq!(ft.nr_pages() as u64, total);
            for i in 0..ft.nr_pages() as u32 {
                let mfn = ft.mfn_at(i).unwrap();
                prop_assert_eq!(ft.index_of(mfn), Some(i));
                // Each node's pages are one contiguous run of indices.
                prop_assert!(ft.node_pages(ft.node_of(mfn).unwrap()).contains(&i));
            }
            for &p in &probes {
                let want = ranges.iter().find(|(rg, _)| rg.contains(Mfn(p).maddr())).map(|x| x.1);
                prop_assert_eq!(ft.node_of(Mfn(p)), want);
            }
        }
    }
}

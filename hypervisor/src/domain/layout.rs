//! A domain's guest-physical ("metaphysical") memory map.
//!
//! Input: the config's vnodes and, for each vnode, the machine memory the
//! builder got from the heap on the vnode's physical node (exact-node
//! allocations): any number of contiguous runs `(first frame, pages)`, in any
//! order. Their pages must add up to the vnode's size exactly: a vnode never
//! gets more or less than asked for. Each vnode's runs are used in machine
//! address order, so adjacent runs merge and the map has as few pieces as
//! the memory allows.
//!
//! Layouts ([`LayoutKind`]):
//! - `compact`: the guest's memory starts at guest-physical 0; vnode `k`
//!   follows vnode `k - 1`, each vnode starting on a 2 MiB boundary
//!   ([`VNODE_ALIGN`]; a vnode whose size is not a multiple of 2 MiB leaves a
//!   hole before the next). No hole is left for a legacy (below 1 MiB) area.
//! - `node-bits`: like the SGI Altix map: vnode `k` starts at
//!   `k << NODE_SHIFT` ([`NODE_SHIFT`] = 36: 64 GiB of address space per
//!   vnode; a larger vnode is refused). The map is sparse.
//! - `high-only`: `compact`, but starting at 4 GiB ([`HIGH_ONLY_BASE`]):
//!   nothing below 4 GiB, as on machines without low memory.
//! - `identity`: every page's guest-physical address is its machine
//!   address; a vnode's ranges are wherever the heap put its memory.
//!
//! A memoryless vnode (size 0) gets no range (and, in `node-bits`, keeps its
//! empty slot). Guest-physical addresses stay below [`GPA_LIMIT`].
//!
//! [`DomainLayout::verify`] checks P->node == M->node (each page's machine
//! node is its vnode's physical node) after building;
//! [`DomainLayout::memory_ranges`] gives the start-info ranges.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::config::{LayoutKind, VnodeConfig};
use super::{Gfn, Gpa, GPA_LIMIT};
use crate::mm::addr::{Maddr, Mfn, PAGE_SHIFT, PAGE_SIZE};
use crate::numa::{NodeId, MAX_NODES};

/// `node-bits`: the vnode id starts at this address bit.
pub const NODE_SHIFT: u32 = 36;
/// `high-only`: where guest memory starts (4 GiB).
pub const HIGH_ONLY_BASE: u64 = 4 << 30;
/// `compact`/`high-only`: each vnode starts on this boundary (2 MiB).
pub const VNODE_ALIGN: u64 = 2 << 20;
/// Machine frames handed in must lie below 2^52 bytes (x86_64's physical
/// address width).
const MFN_LIMIT: u64 = 1 << (52 - PAGE_SHIFT);
const PAGES_PER_MIB: u64 = (1 << 20) / PAGE_SIZE;

/// A run of pages contiguous in both guest-physical and machine memory, on
/// one vnode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub gpa: Gpa,
    pub mfn: Mfn,
    pub pages: u64,
    pub vnode: u32,
}

impl Mapping {
    /// One past the last guest-physical byte.
    pub const fn gpa_end(&self) -> Gpa {
        Gpa(self.gpa.0.saturating_add(self.bytes()))
    }

    /// The machine address of the first byte.
    pub const fn maddr(&self) -> Maddr {
        self.mfn.maddr()
    }

    pub const fn bytes(&self) -> u64 {
        self.pages.saturating_mul(PAGE_SIZE)
    }
}

/// A half-open range of guest-physical addresses, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GpaRange {
    pub start: Gpa,
    pub end: Gpa,
}

impl GpaRange {
    pub const fn len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }

    pub const fn is_empty(&self) -> bool {
        self.end.0 <= self.start.0
    }

    pub const fn contains(&self, a: Gpa) -> bool {
        self.start.0 <= a.0 && a.0 < self.end.0
    }
}

impl fmt::Display for GpaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}-{:#x})", self.start.0, self.end.0)
    }
}

/// One vnode's part of the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VnodeLayout {
    pub pnode: NodeId,
    pub pages: u64,
    /// Its guest-physical ranges, sorted, maximal (contiguous in
    /// guest-physical space; the machine memory behind one may be in several
    /// pieces). One range except for `identity`; none when memoryless.
    pub ranges: Vec<GpaRange>,
}

/// One start-info memory range: guest-physical memory of one vnode backed by
/// contiguous machine memory, with the machine (bus) address a device would
/// see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    pub gpa: Gpa,
    pub size: u64,
    pub vnode: u32,
    pub maddr: Maddr,
}

/// Machine runs behind a guest-physical range: `(gpa, first frame, pages)`.
pub type Runs = Vec<(Gpa, Mfn, u64)>;

/// Why a guest-physical range cannot be exchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// This address (or the range's end) is not guest memory.
    NotMapped(Gpa),
    /// The range holds memory of more than one vnode.
    SpansVnodes,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeError::NotMapped(g) => write!(f, "guest-physical {g} is not guest memory"),
            RangeError::SpansVnodes => write!(f, "the range spans vnodes"),
        }
    }
}

/// A domain's guest-physical map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainLayout {
    pub kind: LayoutKind,
    /// Sorted by guest-physical address, disjoint, maximal runs (two
    /// mappings are merged when contiguous in both spaces and on one vnode).
    pub mappings: Vec<Mapping>,
    /// Indexed by vnode.
    pub vnodes: Vec<VnodeLayout>,
}

fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

impl DomainLayout {
    /// The map for `vnodes` backed by `extents[k]` = vnode `k`'s machine
    /// runs `(first frame, pages)`. Refuses (with the reason) runs that do
    /// not add up to their vnode's size, empty or overlapping runs, runs
    /// beyond the physical address space, a vnode too large for
    /// `node-bits`, or a map reaching [`GPA_LIMIT`].
    pub fn compute<E: AsRef<[(Mfn, u64)]>>(
        kind: LayoutKind,
        vnodes: &[VnodeConfig],
        extents: &[E],
    ) -> Result<DomainLayout, String> {
        if extents.len() != vnodes.len() {
            return Err(format!(
                "{} machine extent lists for {} vnodes",
                extents.len(),
                vnodes.len()
            ));
        }
        if vnodes.len() > MAX_NODES {
            return Err(format!("{} vnodes; at most {MAX_NODES}", vnodes.len()));
        }

        // Every run valid; each vnode gets exactly its size; no two overlap.
        let mut all: Vec<(u64, u64, usize)> = Vec::new();
        let mut sorted: Vec<Vec<(Mfn, u64)>> = Vec::with_capacity(vnodes.len());
        for (k, (v, ex)) in vnodes.iter().zip(extents).enumerate() {
            let ex = ex.as_ref();
            let want = v
                .size_mib
                .checked_mul(PAGES_PER_MIB)
                .ok_or_else(|| format!("vnode {k}: size {} MiB too large", v.size_mib))?;
            let mut total: u64 = 0;
            for &(mfn, pages) in ex {
                if pages == 0 {
                    return Err(format!("vnode {k}: empty machine extent at frame {mfn}"));
                }
                let end = mfn
                    .0
                    .checked_add(pages)
                    .filter(|&e| e <= MFN_LIMIT)
                    .ok_or_else(|| {
                        format!(
                            "vnode {k}: machine extent at frame {mfn} (+{pages:#x} pages) is \
                             beyond the physical address space"
                        )
                    })?;
                total = total.saturating_add(pages);
                all.push((mfn.0, end, k));
            }
            if total != want {
                return Err(format!(
                    "vnode {k}: {total} pages of machine memory for {} MiB ({want} pages)",
                    v.size_mib
                ));
            }
            let mut ex = ex.to_vec();
            ex.sort_unstable_by_key(|e| e.0);
            sorted.push(ex);
        }
        all.sort_unstable();
        for w in all.windows(2) {
            if let [a, b] = w {
                if a.1 > b.0 {
                    return Err(format!(
                        "machine extents overlap: [{:#x}-{:#x}) of vnode {} and [{:#x}-{:#x}) \
                         of vnode {}",
                        a.0 << PAGE_SHIFT,
                        a.1 << PAGE_SHIFT,
                        a.2,
                        b.0 << PAGE_SHIFT,
                        b.1 << PAGE_SHIFT,
                        b.2
                    ));
                }
            }
        }

        let mut mappings: Vec<Mapping> = Vec::new();
        let mut out_vnodes: Vec<VnodeLayout> = Vec::with_capacity(vnodes.len());
        let mut next: u64 = match kind {
            LayoutKind::HighOnly => HIGH_ONLY_BASE,
            _ => 0,
        };
        for (k, (v, ex)) in vnodes.iter().zip(&sorted).enumerate() {
            let pages: u64 = ex.iter().map(|e| e.1).sum();
            let bytes = pages << PAGE_SHIFT;
            let beyond = || {
                format!(
                    "vnode {k}: {} MiB do not fit below the {}-bit guest-physical limit in \
                     the {kind} layout",
                    v.size_mib,
                    GPA_LIMIT.trailing_zeros()
                )
            };
            let first = mappings.len();
            if pages > 0 {
                let base = match kind {
                    LayoutKind::Compact | LayoutKind::HighOnly => {
                        align_up(next, VNODE_ALIGN).ok_or_else(beyond)?
                    }
                    LayoutKind::NodeBits => {
                        if bytes > 1 << NODE_SHIFT {
                            return Err(format!(
                                "vnode {k}: {} MiB do not fit the node-bits layout's {} GiB \
                                 per vnode",
                                v.size_mib,
                                1u64 << (NODE_SHIFT - 30)
                            ));
                        }
                        (k as u64) << NODE_SHIFT
                    }
                    LayoutKind::Identity => 0,
                };
                let mut gpa = base;
                for &(mfn, n) in ex {
                    if kind == LayoutKind::Identity {
                        gpa = mfn.0 << PAGE_SHIFT;
                    }
                    let end = gpa
                        .checked_add(n << PAGE_SHIFT)
                        .filter(|&e| e <= GPA_LIMIT)
                        .ok_or_else(beyond)?;
                    mappings.push(Mapping {
                        gpa: Gpa(gpa),
                        mfn,
                        pages: n,
                        vnode: k as u32,
                    });
                    gpa = end;
                }
                next = gpa;
            }
            let mut ranges: Vec<GpaRange> = Vec::new();
            for m in mappings.get(first..).unwrap_or_default() {
                match ranges.last_mut() {
                    Some(r) if r.end == m.gpa => r.end = m.gpa_end(),
                    _ => ranges.push(GpaRange {
                        start: m.gpa,
                        end: m.gpa_end(),
                    }),
                }
            }
            out_vnodes.push(VnodeLayout {
                pnode: v.pnode,
                pages,
                ranges,
            });
        }

        mappings.sort_unstable_by_key(|m| m.gpa);
        let mut merged: Vec<Mapping> = Vec::with_capacity(mappings.len());
        for m in mappings {
            match merged.last_mut() {
                Some(l)
                    if l.vnode == m.vnode
                        && l.gpa_end() == m.gpa
                        && l.mfn.0.checked_add(l.pages) == Some(m.mfn.0) =>
                {
                    l.pages += m.pages;
                }
                Some(l) if l.gpa_end() > m.gpa => {
                    return Err(format!(
                        "guest-physical overlap at {} (vnodes {} and {})",
                        m.gpa, l.vnode, m.vnode
                    ));
                }
                _ => merged.push(m),
            }
        }
        Ok(DomainLayout {
            kind,
            mappings: merged,
            vnodes: out_vnodes,
        })
    }

    /// All pages of the domain.
    pub fn total_pages(&self) -> u64 {
        self.vnodes.iter().map(|v| v.pages).sum()
    }

    /// The start-info memory ranges: guest-physical memory split wherever
    /// the machine memory behind it is not contiguous (or the vnode
    /// changes), sorted by guest-physical address.
    pub fn memory_ranges(&self) -> Vec<MemoryRange> {
        self.mappings
            .iter()
            .map(|m| MemoryRange {
                gpa: m.gpa,
                size: m.bytes(),
                vnode: m.vnode,
                maddr: m.maddr(),
            })
            .collect()
    }

    /// The mapping holding guest frame `gfn`.
    pub fn mapping_of(&self, gfn: Gfn) -> Option<&Mapping> {
        let i = self
            .mappings
            .partition_point(|m| (m.gpa.0 >> PAGE_SHIFT).saturating_add(m.pages) <= gfn.0);
        self.mappings
            .get(i)
            .filter(|m| (m.gpa.0 >> PAGE_SHIFT) <= gfn.0)
    }

    /// The machine frame behind guest frame `gfn`, and its vnode.
    pub fn translate(&self, gfn: Gfn) -> Option<(Mfn, u32)> {
        let m = self.mapping_of(gfn)?;
        let offset = gfn.0.saturating_sub(m.gpa.0 >> PAGE_SHIFT);
        Some((Mfn(m.mfn.0.saturating_add(offset)), m.vnode))
    }

    /// The machine runs behind `pages` pages at `gpa`: `(gpa, first frame,
    /// pages)` in guest-physical order, and the vnode they belong to.
    /// Refuses a range that is not entirely guest memory or that spans
    /// vnodes (what a DMA exchange may take).
    pub fn runs(&self, gpa: Gpa, pages: u64) -> Result<(u32, Runs), RangeError> {
        let first = gpa.frame();
        let end = first
            .0
            .checked_add(pages)
            .filter(|&e| pages > 0 && e <= GPA_LIMIT >> PAGE_SHIFT)
            .ok_or(RangeError::NotMapped(gpa))?;
        let mut out = Vec::new();
        let mut vnode = None;
        let mut at = first.0;
        while at < end {
            let m = self
                .mapping_of(Gfn(at))
                .ok_or(RangeError::NotMapped(Gpa(at << PAGE_SHIFT)))?;
            if vnode.is_some_and(|v| v != m.vnode) {
                return Err(RangeError::SpansVnodes);
            }
            vnode = Some(m.vnode);
            let m_first = m.gpa.0 >> PAGE_SHIFT;
            let run_end = (m_first + m.pages).min(end);
            out.push((
                Gpa(at << PAGE_SHIFT),
                Mfn(m.mfn.0 + (at - m_first)),
                run_end - at,
            ));
            at = run_end;
        }
        Ok((vnode.unwrap_or(0), out))
    }

    /// Backs `pages` pages at `gpa` with the machine frames from `new`
    /// (contiguous) instead: the DMA exchange's bookkeeping. The range must
    /// pass [`runs`](Self::runs) (nothing changes otherwise). Vnode sizes
    /// and guest-physical ranges stay as they are; mappings are split and
    /// merged again so that the map stays sorted and maximal.
    pub fn remap(&mut self, gpa: Gpa, pages: u64, new: Mfn) -> Result<(), RangeError> {
        let (vnode, _) = self.runs(gpa, pages)?;
        let start = gpa.0;
        let end = start + (pages << PAGE_SHIFT);
        let mut out: Vec<Mapping> = Vec::with_capacity(self.mappings.len() + 2);
        for m in &self.mappings {
            let (a, b) = (m.gpa.0, m.gpa_end().0);
            if b <= start || a >= end {
                out.push(*m);
                continue;
            }
            if a < start {
                out.push(Mapping {
                    pages: (start - a) >> PAGE_SHIFT,
                    ..*m
                });
            }
            if b > end {
                let skip = (end - a) >> PAGE_SHIFT;
                out.push(Mapping {
                    gpa: Gpa(end),
                    mfn: Mfn(m.mfn.0 + skip),
                    pages: m.pages - skip,
                    vnode: m.vnode,
                });
            }
        }
        out.push(Mapping {
            gpa,
            mfn: new,
            pages,
            vnode,
        });
        out.sort_unstable_by_key(|m| m.gpa);
        let mut merged: Vec<Mapping> = Vec::with_capacity(out.len());
        for m in out {
            match merged.last_mut() {
                Some(l)
                    if l.vnode == m.vnode
                        && l.gpa_end() == m.gpa
                        && l.mfn.0.checked_add(l.pages) == Some(m.mfn.0) =>
                {
                    l.pages += m.pages;
                }
                _ => merged.push(m),
            }
        }
        self.mappings = merged;
        Ok(())
    }

    /// Whether every byte of `[start, start + len)` is guest memory (for
    /// example, where the guest image must be loaded).
    pub fn covers(&self, start: Gpa, len: u64) -> bool {
        let Some(end) = start.0.checked_add(len) else {
            return false;
        };
        let mut at = start.0;
        while at < end {
            match self.mapping_of(Gpa(at).frame()) {
                Some(m) => at = m.gpa_end().0,
                None => return false,
            }
        }
        true
    }

    /// P->node == M->node, checked at each mapping's first and last page,
    /// plus the map's own consistency (sorted, disjoint in both spaces, page
    /// counts per vnode). `node_of_mfn` is the frame table's lookup;
    /// `vnode_pnode[k]` the node vnode `k` must be on. Heap blocks never
    /// span nodes, so the ends of a run speak for it; use
    /// [`DomainLayout::verify_every_page`] to walk every page.
    pub fn verify(
        &self,
        node_of_mfn: impl Fn(Mfn) -> Option<NodeId>,
        vnode_pnode: &[NodeId],
    ) -> Result<(), String> {
        self.verify_impl(&node_of_mfn, vnode_pnode, false)
    }

    /// [`DomainLayout::verify`], looking up every page: O(pages).
    pub fn verify_every_page(
        &self,
        node_of_mfn: impl Fn(Mfn) -> Option<NodeId>,
        vnode_pnode: &[NodeId],
    ) -> Result<(), String> {
        self.verify_impl(&node_of_mfn, vnode_pnode, true)
    }

    fn verify_impl(
        &self,
        node_of_mfn: &dyn Fn(Mfn) -> Option<NodeId>,
        vnode_pnode: &[NodeId],
        every_page: bool,
    ) -> Result<(), String> {
        if vnode_pnode.len() != self.vnodes.len() {
            return Err(format!(
                "{} physical nodes given for {} vnodes",
                vnode_pnode.len(),
                self.vnodes.len()
            ));
        }
        let mut pages = alloc::vec![0u64; self.vnodes.len()];
        let mut prev_end: Option<Gpa> = None;
        for m in &self.mappings {
            let k = m.vnode as usize;
            let (Some(&pnode), Some(count)) = (vnode_pnode.get(k), pages.get_mut(k)) else {
                return Err(format!(
                    "mapping at {} names vnode {k}, which does not exist",
                    m.gpa
                ));
            };
            if m.pages == 0 {
                return Err(format!("empty mapping at {}", m.gpa));
            }
            if prev_end.is_some_and(|e| e > m.gpa) {
                return Err(format!("mappings unsorted or overlapping at {}", m.gpa));
            }
            let gpa_end = m.gpa.0.checked_add(m.pages << PAGE_SHIFT);
            let mfn_end = m.mfn.0.checked_add(m.pages);
            let (Some(gpa_end), Some(_)) = (gpa_end.filter(|&e| e <= GPA_LIMIT), mfn_end) else {
                return Err(format!("mapping at {} runs past the address space", m.gpa));
            };
            prev_end = Some(Gpa(gpa_end));
            *count += m.pages;
            let check = |i: u64| -> Result<(), String> {
                let mfn = Mfn(m.mfn.0 + i);
                match node_of_mfn(mfn) {
                    Some(n) if n == pnode => Ok(()),
                    found => Err(format!(
                        "vnode {k} (pnode {pnode}): gpa {:#x} -> machine {:#x} is {}",
                        m.gpa.0 + (i << PAGE_SHIFT),
                        mfn.maddr().0,
                        match found {
                            Some(n) => format!("on node {n}"),
                            None => String::from("not RAM of any node"),
                        }
                    )),
                }
            };
            if every_page {
                for i in 0..m.pages {
                    check(i)?;
                }
            } else {
                check(0)?;
                check(m.pages - 1)?;
            }
        }
        for (k, (v, &n)) in self.vnodes.iter().zip(&pages).enumerate() {
            if v.pages != n {
                return Err(format!(
                    "vnode {k}: {} pages in its mappings for {} pages",
                    n, v.pages
                ));
            }
        }
        let mut by_mfn: Vec<&Mapping> = self.mappings.iter().collect();
        by_mfn.sort_unstable_by_key(|m| m.mfn);
        for w in by_mfn.windows(2) {
            if let [a, b] = w {
                if a.mfn.0.saturating_add(a.pages) > b.mfn.0 {
                    return Err(format!(
                        "machine frame {} is mapped twice (gpa {} and gpa {})",
                        b.mfn, a.gpa, b.gpa
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One line per start-info range, grouped by vnode:
/// `domain layout: vnode 0 gpa [0x0-0x20000000) -> machine [0x40000000-0x60000000) node 1`,
/// and for a memoryless vnode `domain layout: vnode 2 no memory node 2`.
/// Lines are separated by `\n`, with none after the last.
impl fmt::Display for DomainLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut line = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if !core::mem::replace(&mut first, false) {
                f.write_str("\n")?;
            }
            f.write_str("domain layout: ")
        };
        for (k, v) in self.vnodes.iter().enumerate() {
            let mut any = false;
            for m in self.mappings.iter().filter(|m| m.vnode as usize == k) {
                any = true;
                line(f)?;
                write!(
                    f,
                    "vnode {k} gpa [{:#x}-{:#x}) -> machine [{:#x}-{:#x}) node {}",
                    m.gpa.0,
                    m.gpa_end().0,
                    m.maddr().0,
                    m.maddr().0.saturating_add(m.bytes()),
                    v.pnode
                )?;
            }
            if !any {
                line(f)?;
                write!(f, "vnode {k} no memory node {}", v.pnode)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;

//! A running domain's guest-physical to machine state ([`P2m`]: its
//! layout, its heap blocks, its nested page tables, its pages per node)
//! and the DMA exchange on it (ABI 1.2, `pv_abi::dma`), in the spirit of
//! Xen's `XENMEM_exchange`.
//!
//! [`P2m::exchange`] gives back a guest-physical range of the domain and
//! backs it with machine-contiguous memory below `2^address_bits` instead,
//! mapped at the same guest-physical addresses, contents copied. It is
//! atomic: every step that can fail (the range, the new memory, the page
//! tables the remap needs, the bookkeeping splits) runs before anything
//! the guest can see changes, and a failure undoes what was done, so the
//! domain keeps its old pages, mapping and contents, and the heap gets
//! back exactly what was taken:
//!
//! 1. the range: whole pages of one vnode's memory ([`DomainLayout::runs`]);
//! 2. the new memory: one buddy block of the next power of two below the
//!    limit, exact-node, on the vnode's physical node first, then (unless
//!    the guest asked for its node only) the other nodes in the heap's
//!    fallback order (nearest first); the block is split and its tail
//!    freed, so exactly the pages asked for are kept;
//! 3. the nested page tables: the 2 MiB pages over the range become 4 KiB
//!    page tables with the same translations (harmless if kept);
//! 4. the domain's heap blocks are split so that the old range is whole
//!    blocks (the domain still owns every half);
//! 5. then, with nothing left to fail: copy the old pages into the new
//!    ones, point the 4 KiB leaves at the new frames, update the layout
//!    (teardown frees what it says), free the old blocks to the heap,
//!    count pages per node again, and ask for a TLB flush before the next
//!    VMRUN.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

#[cfg(test)]
use pv_abi::Gfn;
use pv_abi::{Error, Gpa};

use super::build::{pieces, Allocation, MachineMemory};
use super::layout::{DomainLayout, RangeError};
use crate::hypercall::{ExchangeRequest, GuestAccess};
use crate::mm::addr::{Mfn, PAGE_SHIFT, PAGE_SIZE};
use crate::mm::heap::{AllocRequest, Heap, HeapError, MAX_ORDER};
use crate::numa::NodeId;
use crate::svm::paging::{PageTables, TableMemory};

/// Nested page-table memory that comes from (and so can reach) the heap.
pub trait HeapTableMemory: TableMemory {
    fn heap(&self) -> &Heap;
    /// The domain that owns the tables (and every block an exchange gives it).
    fn owner(&self) -> u32;
}

/// Why an exchange was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExchangeError {
    /// The range is not (entirely) guest memory.
    NotMapped(Gpa),
    /// The range spans vnodes.
    SpansVnodes,
    /// More pages than one buddy block holds.
    TooLarge(u64),
    /// No allowed node has the memory below the limit: the nodes tried.
    NoMemory { nodes: Vec<NodeId> },
    /// No memory for the page tables the remap needs.
    NoTableMemory,
    /// The hypervisor's own bookkeeping refused a step (a bug): undone.
    Internal(String),
}

impl ExchangeError {
    /// The error the guest gets.
    pub fn abi_error(&self) -> Error {
        match self {
            ExchangeError::NotMapped(_) => Error::Fault,
            ExchangeError::SpansVnodes | ExchangeError::TooLarge(_) => Error::InvalidArgument,
            ExchangeError::NoMemory { .. }
            | ExchangeError::NoTableMemory
            | ExchangeError::Internal(_) => Error::OutOfMemory,
        }
    }
}

impl From<RangeError> for ExchangeError {
    fn from(e: RangeError) -> Self {
        match e {
            RangeError::NotMapped(g) => ExchangeError::NotMapped(g),
            RangeError::SpansVnodes => ExchangeError::SpansVnodes,
        }
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::NotMapped(g) => write!(f, "guest-physical {g} is not guest memory"),
            ExchangeError::SpansVnodes => write!(f, "the range spans vnodes"),
            ExchangeError::TooLarge(p) => write!(f, "{p} pages are more than one block"),
            ExchangeError::NoMemory { nodes } => {
                write!(f, "no machine-contiguous memory below the limit on node")?;
                if nodes.len() != 1 {
                    write!(f, "s")?;
                }
                for (i, n) in nodes.iter().enumerate() {
                    write!(f, "{}{n}", if i == 0 { " " } else { ", " })?;
                }
                Ok(())
            }
            ExchangeError::NoTableMemory => write!(f, "no memory for nested page tables"),
            ExchangeError::Internal(m) => write!(f, "internal error, undone: {m}"),
        }
    }
}

/// What an exchange did, for the domain's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeReport {
    pub gpa: Gpa,
    pub pages: u64,
    pub address_bits: u32,
    pub vnode: u32,
    /// The vnode's physical node.
    pub vnode_pnode: NodeId,
    /// The machine runs given back: `(gpa, first frame, pages)`.
    pub old: Vec<(Gpa, Mfn, u64)>,
    /// The new memory's first frame (contiguous).
    pub new: Mfn,
    /// Its node.
    pub node: NodeId,
}

impl ExchangeReport {
    pub fn off_node(&self) -> bool {
        self.node != self.vnode_pnode
    }
}

/// One log line: `dma exchange: gpa [A-B) (P pages, vnode V): machine
/// [X-Y) -> [U-W) below 2^N, node K`, then `; off node: vnode V's node M
/// has no memory below 2^N` when the memory is on another node.
impl fmt::Display for ExchangeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.pages << PAGE_SHIFT;
        write!(
            f,
            "dma exchange: gpa [{:#x}-{:#x}) ({} pages, vnode {}): machine",
            self.gpa.0,
            self.gpa.0 + bytes,
            self.pages,
            self.vnode
        )?;
        for (i, &(_, mfn, pages)) in self.old.iter().enumerate() {
            let a = mfn.maddr().0;
            write!(
                f,
                "{}[{a:#x}-{:#x})",
                if i == 0 { " " } else { "+" },
                a + (pages << PAGE_SHIFT)
            )?;
        }
        let a = self.new.maddr().0;
        write!(
            f,
            " -> [{a:#x}-{:#x}) below 2^{}, node {}",
            a + bytes,
            self.address_bits,
            self.node
        )?;
        if self.off_node() {
            write!(
                f,
                "; off node: vnode {}'s node {} has no such memory free, node {} is the nearest that has",
                self.vnode, self.vnode_pnode, self.node
            )?;
        }
        Ok(())
    }
}

/// A running domain's guest-physical to machine state.
pub struct P2m<T: HeapTableMemory, M: MachineMemory> {
    pub layout: DomainLayout,
    /// Every heap block the domain owns (teardown frees them).
    pub alloc: Allocation,
    /// The nested page tables.
    pub npt: PageTables<T>,
    /// The domain's machine memory.
    pub machine: M,
    /// Each vnode's physical node.
    pub vnode_pnode: Vec<NodeId>,
    /// Pages of the domain on each physical node (`DOMAIN_NODE_PAGES`).
    pub node_pages: Vec<u64>,
    /// A mapping changed: flush the guest's TLB before the next VMRUN.
    pub flush_tlb: bool,
}

impl<T: HeapTableMemory, M: MachineMemory> GuestAccess for P2m<T, M> {
    fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), Error> {
        let mut done = 0;
        for (maddr, n) in pieces(&self.layout, gpa, buf.len())? {
            self.machine.read(maddr, &mut buf[done..done + n]);
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, gpa: Gpa, bytes: &[u8]) -> Result<(), Error> {
        let mut done = 0;
        for (maddr, n) in pieces(&self.layout, gpa, bytes.len())? {
            self.machine.write(maddr, &bytes[done..done + n]);
            done += n;
        }
        Ok(())
    }
}

/// `pages` contiguous frames below `2^bits` on `node` (exact), as the
/// blocks kept after freeing the tail of the next power of two.
fn alloc_contiguous(
    heap: &Heap,
    owner: u32,
    node: NodeId,
    pages: u64,
    bits: u32,
) -> Result<Vec<(Mfn, u8)>, HeapError> {
    let order = pages.next_power_of_two().trailing_zeros();
    let order = u8::try_from(order)
        .ok()
        .filter(|&o| o <= MAX_ORDER)
        .ok_or(HeapError::InvalidArgument)?;
    let head = heap.alloc(order, AllocRequest::exact(node).below_bits(bits))?;
    // Its halves keep the owner as the block is split.
    if let Err(e) = heap.set_owner(head, owner) {
        let _ = heap.free(head, order);
        return Err(e);
    }
    let mut kept = Vec::new();
    let (mut h, mut o, mut need) = (head, order, pages);
    loop {
        if need == 1u64 << o {
            kept.push((h, o));
            return Ok(kept);
        }
        // `need < 2^o`, so `o >= 1`.
        let trimmed = heap.split(h, o).and_then(|()| {
            let half = 1u64 << (o - 1);
            if need <= half {
                heap.free(h.add(half), o - 1)
            } else {
                Ok(())
            }
        });
        if let Err(e) = trimmed {
            // Give back what was taken (the block as it is now).
            kept.push((h, o));
            for (m, ko) in kept {
                let _ = heap.free(m, ko);
            }
            return Err(e);
        }
        o -= 1;
        let half = 1u64 << o;
        if need > half {
            kept.push((h, o));
            h = h.add(half);
            need -= half;
        }
    }
}

/// Takes the blocks covering frames `[a, b)` out of `blocks`, splitting
/// blocks that straddle an end; they come back in the result. Blocks
/// outside stay. On a heap error every block (split or not) is put back.
fn carve(
    heap: &Heap,
    blocks: &mut Vec<(Mfn, u8)>,
    a: u64,
    b: u64,
) -> Result<Vec<(Mfn, u8)>, String> {
    let overlaps = |&(h, o): &(Mfn, u8)| h.0 < b && a < h.0 + (1u64 << o);
    let mut work: Vec<(Mfn, u8)> = blocks.iter().copied().filter(overlaps).collect();
    blocks.retain(|blk| !overlaps(blk));
    let mut inside = Vec::new();
    while let Some((h, o)) = work.pop() {
        let (s, e) = (h.0, h.0 + (1u64 << o));
        if e <= a || s >= b {
            blocks.push((h, o));
        } else if a <= s && e <= b {
            inside.push((h, o));
        } else if let Err(err) = heap.split(h, o) {
            blocks.push((h, o));
            blocks.extend(work);
            blocks.extend(inside);
            return Err(format!("splitting block {h} of order {o}: {err}"));
        } else {
            work.push((h, o - 1));
            work.push((h.add(1u64 << (o - 1)), o - 1));
        }
    }
    let covered: u64 = inside.iter().map(|&(_, o)| 1u64 << o).sum();
    if covered != b - a {
        let msg =
            format!("frames [{a:#x}-{b:#x}) are covered by {covered} pages of the domain's blocks");
        blocks.extend(inside);
        return Err(msg);
    }
    Ok(inside)
}

impl<T: HeapTableMemory, M: MachineMemory> P2m<T, M> {
    /// The heap (through the page-table memory, which holds it).
    pub fn heap(&self) -> &Heap {
        self.npt.memory().heap()
    }

    /// Moves `request`'s range to machine-contiguous memory below its
    /// limit; see the [module docs](self). Nothing changes on error.
    pub fn exchange(&mut self, request: &ExchangeRequest) -> Result<ExchangeReport, ExchangeError> {
        let pages = request.pages;
        let (vnode, old) = self.layout.runs(request.gpa, pages)?;
        if pages > 1u64 << MAX_ORDER {
            return Err(ExchangeError::TooLarge(pages));
        }
        let vnode_pnode = self
            .vnode_pnode
            .get(vnode as usize)
            .copied()
            .ok_or_else(|| ExchangeError::Internal(format!("vnode {vnode} has no node")))?;

        // 2. The new memory.
        let mut candidates = vec![vnode_pnode];
        if !request.exact_node {
            if let Some(order) = self.heap().fallback_order(vnode_pnode) {
                candidates.extend(order.iter().copied().filter(|&n| n != vnode_pnode));
            }
        }
        let mut new = None;
        for &node in &candidates {
            let tables = self.npt.memory();
            match alloc_contiguous(
                tables.heap(),
                tables.owner(),
                node,
                pages,
                request.address_bits,
            ) {
                Ok(blocks) => {
                    new = Some((node, blocks));
                    break;
                }
                Err(HeapError::NoMemory) => {}
                Err(e) => {
                    return Err(ExchangeError::Internal(format!(
                        "allocating {pages} pages on node {node}: {e}"
                    )))
                }
            }
        }
        let Some((node, new_blocks)) = new else {
            return Err(ExchangeError::NoMemory { nodes: candidates });
        };
        let new_head = new_blocks.first().map_or(Mfn(0), |b| b.0);
        let undo_new = |p2m: &mut Self| {
            for &(m, o) in &new_blocks {
                let _ = p2m.npt.memory().heap().free(m, o);
            }
        };

        // 3. Page tables with a 4 KiB leaf for every page of the range.
        let len = pages << PAGE_SHIFT;
        if let Err(e) = self.npt.split_to_4k(request.gpa.0, len) {
            undo_new(self);
            return Err(match e {
                crate::svm::paging::MapError::OutOfMemory => ExchangeError::NoTableMemory,
                e => ExchangeError::Internal(format!("nested page tables: {e}")),
            });
        }

        // 4. The old range as whole blocks of the domain.
        let mut to_free: Vec<(Mfn, u8)> = Vec::new();
        for &(_, mfn, n) in &old {
            let heap = self.npt.memory().heap();
            match carve(heap, &mut self.alloc.blocks, mfn.0, mfn.0 + n) {
                Ok(blocks) => to_free.extend(blocks),
                Err(e) => {
                    self.alloc.blocks.append(&mut to_free);
                    undo_new(self);
                    return Err(ExchangeError::Internal(e));
                }
            }
        }

        // 5. Nothing left to fail. Copy, remap, account.
        let mut page = [0u8; PAGE_SIZE as usize];
        let mut i = 0u64;
        for &(_, mfn, n) in &old {
            for k in 0..n {
                self.machine.read(mfn.add(k).maddr(), &mut page);
                self.machine.write(new_head.add(i).maddr(), &page);
                i += 1;
            }
        }
        let mut remapped = 0u64;
        let mut failed = None;
        for k in 0..pages {
            let va = request.gpa.0 + (k << PAGE_SHIFT);
            if let Err(e) = self.npt.remap_4k(va, new_head.add(k).maddr().0) {
                failed = Some(e);
                break;
            }
            remapped += 1;
        }
        let relaid = match failed {
            None => self
                .layout
                .remap(request.gpa, pages, new_head)
                .map_err(|e| format!("{e}")),
            Some(e) => Err(format!("remapping: {e}")),
        };
        if let Err(e) = relaid {
            // Point what was remapped back at the old frames.
            let mut k = 0u64;
            for &(_, mfn, n) in &old {
                for j in 0..n {
                    if k < remapped {
                        let _ = self
                            .npt
                            .remap_4k(request.gpa.0 + (k << PAGE_SHIFT), mfn.add(j).maddr().0);
                    }
                    k += 1;
                }
            }
            self.flush_tlb = true;
            self.alloc.blocks.append(&mut to_free);
            undo_new(self);
            return Err(ExchangeError::Internal(e));
        }
        for &(m, o) in &to_free {
            let heap = self.npt.memory().heap();
            let on = heap.frame_table().node_of(m);
            // Blocks the domain owns: freeing cannot fail.
            let _ = heap.free(m, o);
            if let Some(slot) = on.and_then(|n| self.node_pages.get_mut(n.index())) {
                *slot = slot.saturating_sub(1u64 << o);
            }
        }
        if let Some(slot) = self.node_pages.get_mut(node.index()) {
            *slot += pages;
        }
        self.alloc.blocks.extend(new_blocks.iter().copied());
        self.flush_tlb = true;
        Ok(ExchangeReport {
            gpa: request.gpa,
            pages,
            address_bits: request.address_bits,
            vnode,
            vnode_pnode,
            old,
            new: new_head,
            node,
        })
    }
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;

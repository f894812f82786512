//! Machine memory through the identity map: page-table pages for nested
//! paging allocated from the NUMA heap, and raw access to machine frames.

use alloc::vec::Vec;

use crate::domain::exchange::HeapTableMemory;
use crate::mm::addr::{Maddr, Mfn, PAGE_SIZE};
use crate::mm::heap::{AllocRequest, Heap};
use crate::numa::NodeId;
use crate::svm::paging::TableMemory;

/// Zeroes one machine page.
///
/// # Safety
/// `page` must be a page of RAM inside the identity map that nothing else
/// uses (a page just taken from the heap, for instance).
pub unsafe fn zero_page(page: Maddr) {
    // SAFETY: guaranteed by the caller.
    unsafe { core::ptr::write_bytes(page.0 as *mut u8, 0, PAGE_SIZE as usize) };
}

/// Copies bytes into machine memory.
///
/// # Safety
/// `[dst, dst + src.len())` must be RAM inside the identity map owned by the
/// caller (a domain's pages) and must not overlap `src`.
pub unsafe fn copy_to_machine(dst: Maddr, src: &[u8]) {
    // SAFETY: guaranteed by the caller.
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst.0 as *mut u8, src.len()) };
}

/// Copies bytes out of machine memory.
///
/// # Safety
/// `[src, src + dst.len())` must be RAM inside the identity map.
pub unsafe fn copy_from_machine(src: Maddr, dst: &mut [u8]) {
    // SAFETY: guaranteed by the caller.
    unsafe { core::ptr::copy_nonoverlapping(src.0 as *const u8, dst.as_mut_ptr(), dst.len()) };
}

/// Nested page-table pages taken from the NUMA heap near `node`.
pub struct HeapTables<'h> {
    pub heap: &'h Heap,
    pub node: NodeId,
    /// The domain the pages belong to (`OWNER_NONE` for the hypervisor's own).
    pub owner: u32,
    /// Pages taken, so that a failure midway can still free them all.
    pub taken: Vec<Mfn>,
}

impl TableMemory for HeapTables<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let mfn = self.heap.alloc(0, AllocRequest::node(self.node)).ok()?;
        if self.heap.set_owner(mfn, self.owner).is_err() {
            let _ = self.heap.free(mfn, 0);
            return None;
        }
        // SAFETY: the page was just allocated from the heap for this table.
        unsafe { zero_page(mfn.maddr()) };
        self.taken.push(mfn);
        Some(mfn.maddr().0)
    }

    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `table` is a page this allocator handed out (index < 512
        // by construction in the page-table builder), inside the identity map.
        unsafe { (table as *const u64).add(index & 511).read_volatile() }
    }

    fn write(&mut self, table: u64, index: usize, entry: u64) {
        // SAFETY: as for `read`; the page belongs to these tables.
        unsafe { (table as *mut u64).add(index & 511).write_volatile(entry) }
    }
}

impl HeapTableMemory for HeapTables<'_> {
    fn heap(&self) -> &Heap {
        self.heap
    }

    fn owner(&self) -> u32 {
        self.owner
    }
}

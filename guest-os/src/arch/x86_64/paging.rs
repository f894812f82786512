//! Page-table walks, and the one mapping the guest adds itself.
//!
//! The hypervisor's initial tables (in the boot data, identity-mapped like
//! all guest memory) map every memory range at virtual == guest-physical and
//! the image at its link address; nothing else.

use alloc::alloc::{alloc_zeroed, Layout};

use super::cpu::{flush_tlb, read_cr3};
use super::phys::{read_u64, write_u64};

/// Physical-address bits of an entry.
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const HUGE: u64 = 1 << 7;
/// Write-through and cache-disable: uncached with the default PAT.
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;

/// Translates `va` through the current page tables (4-level; 1 GiB, 2 MiB
/// and 4 KiB pages).
pub fn translate(va: u64) -> Option<u64> {
    let mut table = read_cr3() & ADDR_MASK;
    for shift in [39u32, 30, 21, 12] {
        let slot = table + ((va >> shift) & 511) * 8;
        // SAFETY: page tables live in the boot data, which is guest memory
        // and so identity-mapped (pv-abi entry contract).
        let entry = unsafe { read_u64(slot) };
        if entry & PRESENT == 0 {
            return None;
        }
        let page = 1u64 << shift;
        if shift == 12 || ((shift == 30 || shift == 21) && entry & HUGE != 0) {
            return Some((entry & ADDR_MASK & !(page - 1)) + (va & (page - 1)));
        }
        table = entry & ADDR_MASK;
    }
    None
}

fn zeroed_page() -> Option<u64> {
    let layout = Layout::from_size_align(4096, 4096).ok()?;
    // SAFETY: a non-zero-sized layout.
    let p = unsafe { alloc_zeroed(layout) };
    // Heap memory is identity-mapped: the pointer is the guest-physical
    // address. The page is leaked: the domain ends right after.
    (!p.is_null()).then_some(p as u64)
}

/// The entry of the next-level table at slot `index` of `table`, created
/// (zeroed, from the heap) if absent. `Err` if the slot holds a large page.
fn next_table(table: u64, index: u64) -> Result<u64, &'static str> {
    let slot = table + index * 8;
    // SAFETY: `table` is a page-table page: the hypervisor's (boot data,
    // identity-mapped) or one taken from the heap below.
    let entry = unsafe { read_u64(slot) };
    if entry & PRESENT != 0 {
        if entry & HUGE != 0 {
            return Err("a large page is mapped there");
        }
        return Ok(entry & ADDR_MASK);
    }
    let t = zeroed_page().ok_or("no memory for a page table")?;
    // SAFETY: the slot was empty, so no live mapping changes; `t` is a
    // fresh, zeroed heap page.
    unsafe { write_u64(slot, t | PRESENT | WRITABLE) };
    Ok(t)
}

/// Maps device memory `[gpa, gpa + len)` at virtual == guest-physical with
/// 4 KiB pages, uncached, creating page tables from the heap as needed. A
/// page already mapped to the same address is left as it is; one mapped
/// elsewhere, or inside a large page, is an error (nothing of guest memory
/// is ever remapped). Flushes the TLB.
pub fn map_mmio(gpa: u64, len: u64) -> Result<(), &'static str> {
    if !(gpa | len).is_multiple_of(4096) || len == 0 {
        return Err("device memory not page-aligned");
    }
    let end = gpa.checked_add(len).ok_or("device memory wraps")?;
    if end > 1 << 47 {
        return Err("device memory above 2^47");
    }
    let pml4 = read_cr3() & ADDR_MASK;
    let mut va = gpa;
    while va < end {
        let pdpt = next_table(pml4, (va >> 39) & 511)?;
        let pd = next_table(pdpt, (va >> 30) & 511)?;
        let pt = next_table(pd, (va >> 21) & 511)?;
        let slot = pt + ((va >> 12) & 511) * 8;
        // SAFETY: `pt` is a page table reached above.
        let old = unsafe { read_u64(slot) };
        if old & PRESENT != 0 {
            if old & ADDR_MASK != va {
                return Err("the address is already mapped elsewhere");
            }
        } else {
            // SAFETY: an empty slot: no live mapping changes.
            unsafe { write_u64(slot, va | PRESENT | WRITABLE | PWT | PCD) };
        }
        va += 4096;
    }
    flush_tlb();
    Ok(())
}

/// `fail=npf`: maps the 2 MiB guest-physical page holding `gpa` (outside
/// every memory range) at the start of a free lower-half PML4 slot, through
/// a new PDPT and page directory taken from the heap, flushes the TLB and
/// reads it. The guest's page walk succeeds; the hypervisor's nested walk
/// finds nothing: a nested page fault (exit 0x400, EXITINFO2 = `gpa`).
/// Returns only if the read did not fault: the value read, or why the
/// mapping could not be made.
pub fn touch_unbacked(gpa: u64) -> Result<u64, &'static str> {
    let pml4 = read_cr3() & ADDR_MASK;
    let free = |i: u64| {
        // SAFETY: the PML4 is in the identity-mapped boot data.
        let entry = unsafe { read_u64(pml4 + i * 8) };
        entry & PRESENT == 0
    };
    let slot = (1..256u64)
        .rev()
        .find(|&i| free(i))
        .ok_or("no free PML4 slot in the lower half")?;
    let pdpt = zeroed_page().ok_or("no memory for a PDPT")?;
    let pd = zeroed_page().ok_or("no memory for a page directory")?;
    let big = 2u64 << 20;
    // SAFETY: `pd` and `pdpt` are fresh heap pages (identity-mapped); the
    // PML4 slot was empty, so no live mapping changes.
    unsafe {
        write_u64(pd, (gpa & !(big - 1)) | PRESENT | WRITABLE | HUGE);
        write_u64(pdpt, pd | PRESENT | WRITABLE);
        write_u64(pml4 + slot * 8, pdpt | PRESENT | WRITABLE);
    }
    flush_tlb();
    let va = (slot << 39) | (gpa & (big - 1));
    // SAFETY: not safe, on purpose: the read exits with a nested page fault
    // and the hypervisor ends the domain. If it returns, the value is only
    // printed.
    Ok(unsafe { read_u64(va) })
}

//! The hypervisor's own page tables: an identity map of machine memory.
//!
//! The boot stub maps 0..4 GiB with 2 MiB pages. [`extend_identity_map`] adds
//! everything up to the end of RAM, with 1 GiB pages when the CPU has them,
//! so that the hypervisor can touch any machine frame at its own address.

use alloc::alloc::{alloc_zeroed, Layout};

use super::cpu;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const GIB: u64 = 1 << 30;
const TWO_MIB: u64 = 1 << 21;

/// What the boot stub mapped.
pub const BOOT_MAPPED_LIMIT: u64 = 4 * GIB;

/// Highest address the identity map can reach (the 512 GiB of one PML4 slot
/// times 512 slots would be 256 TiB; 48-bit physical addressing caps it).
pub const MAX_IDENTITY_LIMIT: u64 = 1 << 46;

/// A page-table page, found through the identity map.
fn table(phys: u64) -> *mut u64 {
    phys as *mut u64
}

fn new_table() -> Option<u64> {
    let layout = Layout::from_size_align(4096, 4096).ok()?;
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { alloc_zeroed(layout) };
    if ptr.is_null() {
        None
    } else {
        // The allocator's memory lies inside the boot identity map, so the
        // pointer is also the table's machine address. It is never freed.
        Some(ptr as u64)
    }
}

/// Returns the next-level table under `entry`, creating it if absent.
///
/// # Safety
/// `entry` must point at a live page-table entry of the current map.
unsafe fn next_level(entry: *mut u64) -> Option<u64> {
    // SAFETY: the caller guarantees `entry` is a valid page-table entry.
    let value = unsafe { entry.read_volatile() };
    if value & PRESENT != 0 {
        if value & HUGE != 0 {
            return None; // already mapped by a large page: nothing below
        }
        return Some(value & ADDR_MASK);
    }
    let fresh = new_table()?;
    // SAFETY: as above; the new table is zeroed (all entries not present).
    unsafe { entry.write_volatile(fresh | PRESENT | WRITABLE) };
    Some(fresh)
}

/// Identity-maps `[BOOT_MAPPED_LIMIT, limit)` and returns the new mapped limit.
pub fn extend_identity_map(limit: u64) -> Result<u64, &'static str> {
    let limit = limit.min(MAX_IDENTITY_LIMIT);
    if limit <= BOOT_MAPPED_LIMIT {
        return Ok(BOOT_MAPPED_LIMIT);
    }
    let use_1g = cpu::has_1g_pages();
    let pml4 = cpu::read_cr3() & ADDR_MASK;
    let mut addr = BOOT_MAPPED_LIMIT;
    while addr < limit {
        let pml4e = table(pml4).wrapping_add(((addr >> 39) & 511) as usize);
        // SAFETY: `pml4` is the live top-level table from CR3, indices < 512.
        let pdpt = unsafe { next_level(pml4e) }.ok_or("out of memory for page tables")?;
        let pdpte = table(pdpt).wrapping_add(((addr >> 30) & 511) as usize);
        if use_1g {
            // SAFETY: `pdpte` is an entry of a live table reached through the map.
            unsafe { pdpte.write_volatile(addr | PRESENT | WRITABLE | HUGE) };
            addr += GIB;
            continue;
        }
        // SAFETY: as above.
        let pd = unsafe { next_level(pdpte) }.ok_or("out of memory for page tables")?;
        for i in 0..512u64 {
            let a = addr + i * TWO_MIB;
            // SAFETY: `pd` is a live page directory; `i` < 512.
            unsafe {
                table(pd)
                    .wrapping_add(i as usize)
                    .write_volatile(a | PRESENT | WRITABLE | HUGE)
            };
        }
        addr += GIB;
    }
    cpu::flush_tlb();
    Ok(addr)
}

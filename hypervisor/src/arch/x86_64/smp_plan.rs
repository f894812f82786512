//! The pure part of bringing up the application processors: local APIC
//! interrupt-command encodings, the layout of the real-mode trampoline and
//! how it is patched for the page it is copied to, where that page goes,
//! and PIT arithmetic. No hardware access and no dependencies beyond `core`,
//! so that the host tests (`tests/tests/smp.rs` includes this file) check
//! exactly the code the hypervisor runs.

/// ICR bit 15: level-triggered.
pub const ICR_LEVEL: u32 = 1 << 15;
/// ICR bit 14: level asserted.
pub const ICR_ASSERT: u32 = 1 << 14;
/// ICR bit 12: the previous IPI has not been accepted yet.
pub const ICR_SEND_PENDING: u32 = 1 << 12;
/// Delivery mode INIT.
pub const ICR_DM_INIT: u32 = 0b101 << 8;
/// Delivery mode start-up (SIPI).
pub const ICR_DM_STARTUP: u32 = 0b110 << 8;

/// ICR low word of an INIT IPI, level asserted (Linux: 0xC500).
pub const fn icr_init_assert() -> u32 {
    ICR_DM_INIT | ICR_LEVEL | ICR_ASSERT
}

/// ICR low word of the INIT level de-assert that follows (Linux: 0x8500).
pub const fn icr_init_deassert() -> u32 {
    ICR_DM_INIT | ICR_LEVEL
}

/// ICR low word of a start-up IPI that starts the CPU in real mode at
/// `page` (CS = page >> 4, IP = 0): the vector is the page number, so the
/// page must be 4 KiB-aligned and below 1 MiB.
pub const fn icr_startup(page: u64) -> Option<u32> {
    if !page.is_multiple_of(PAGE) || page >= LOW_MEMORY_END {
        return None;
    }
    Some(ICR_DM_STARTUP | (page >> 12) as u32)
}

/// ICR high word: the destination APIC id (xAPIC: 8 bits, in bits 24-31).
pub const fn icr_destination(apic_id: u32) -> Option<u32> {
    if apic_id > 0xff {
        None
    } else {
        Some(apic_id << 24)
    }
}

const PAGE: u64 = 4096;
/// Start-up IPIs can only point below 1 MiB.
pub const LOW_MEMORY_END: u64 = 1 << 20;

/// Offsets in the trampoline, mirrored by the `.org` directives of the
/// assembly in `smp.rs` (which fail to assemble if the code outgrows them).
pub mod layout {
    /// The GDT pointer: a 16-bit limit, then the 32-bit base (patched).
    pub const GDTR: usize = 0x08;
    /// The GDT pointer's base field.
    pub const GDTR_BASE: usize = GDTR + 2;
    /// The far pointer to the 32-bit code: a 32-bit offset (patched), then
    /// the selector.
    pub const PM_JUMP: usize = 0x10;
    /// The page-table root (32 bits, patched).
    pub const CR3: usize = 0x18;
    /// The trampoline's own GDT (null, 64-bit code, data, 32-bit code).
    pub const GDT: usize = 0x20;
    /// The 32-bit protected-mode code.
    pub const PM_ENTRY: usize = 0x80;
    /// Bytes that must be present for the patches.
    pub const MIN_LEN: usize = PM_ENTRY + 1;
}

/// Why a trampoline cannot be patched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchError {
    /// The code is shorter than the fixed layout.
    TooShort,
    /// The code does not fit in one page.
    TooLong,
    /// The page is not 4 KiB-aligned below 1 MiB.
    BadPage,
    /// The page-table root is not below 4 GiB (the 32-bit code loads it).
    Cr3Above4GiB,
}

/// Fills in the addresses the trampoline needs once copied to `page`: its
/// GDT's linear address, the 32-bit entry's linear address, and `cr3`.
pub fn patch_trampoline(code: &mut [u8], page: u64, cr3: u64) -> Result<(), PatchError> {
    if code.len() < layout::MIN_LEN {
        return Err(PatchError::TooShort);
    }
    if icr_startup(page).is_none() {
        return Err(PatchError::BadPage);
    }
    let cr3 = u32::try_from(cr3).map_err(|_| PatchError::Cr3Above4GiB)?;
    let page = page as u32;
    let mut put = |at: usize, v: u32| code[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put(layout::GDTR_BASE, page + layout::GDT as u32);
    put(layout::PM_JUMP, page + layout::PM_ENTRY as u32);
    put(layout::CR3, cr3);
    Ok(())
}

/// The page the trampoline goes to: the highest 4 KiB page at or above
/// 4 KiB and below 1 MiB that lies inside one of the `usable` RAM ranges
/// and overlaps none of the `taken` ones (ranges are `[start, end)`).
/// Page 0 (the real-mode interrupt table) is never chosen.
pub fn choose_trampoline_page(usable: &[(u64, u64)], taken: &[(u64, u64)]) -> Option<u64> {
    let mut page = LOW_MEMORY_END - PAGE;
    while page >= PAGE {
        let end = page + PAGE;
        let inside = usable.iter().any(|&(s, e)| s <= page && end <= e);
        let free = taken.iter().all(|&(s, e)| e <= page || end <= s);
        if inside && free {
            return Some(page);
        }
        page -= PAGE;
    }
    None
}

/// The PIT's input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// PIT ticks in `us` microseconds, rounded up (at least 1).
pub const fn pit_ticks(us: u64) -> u64 {
    let t = (us * PIT_HZ).div_ceil(1_000_000);
    if t == 0 {
        1
    } else {
        t
    }
}

/// TSC ticks per microsecond from a calibration: `tsc_delta` TSC ticks
/// during `pit_ticks` PIT ticks (at least 1).
pub const fn tsc_per_us(tsc_delta: u64, pit_ticks: u64) -> u64 {
    if pit_ticks == 0 {
        return 1;
    }
    // tsc_delta / (pit_ticks / PIT_HZ s) / 1e6 = tsc_delta * PIT_HZ / (pit_ticks * 1e6)
    let v = (tsc_delta as u128 * PIT_HZ as u128) / (pit_ticks as u128 * 1_000_000);
    if v == 0 {
        1
    } else if v > u64::MAX as u128 {
        u64::MAX
    } else {
        v as u64
    }
}

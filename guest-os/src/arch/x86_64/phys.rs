//! Raw access to identity-mapped guest memory (virtual == guest-physical).
//!
//! Through asm, so that address 0 (guest memory in a `compact` layout) and
//! memory Rust knows nothing about can be read and written without
//! undefined behaviour on the Rust side.

use core::arch::asm;

/// Reads the 8 bytes at `addr`.
///
/// # Safety
///
/// `[addr, addr + 8)` is mapped and readable.
pub unsafe fn read_u64(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: the caller guarantees the 8 bytes are mapped.
    unsafe {
        asm!(
            "mov {v}, qword ptr [{a}]",
            v = out(reg) v,
            a = in(reg) addr,
            options(nostack, readonly, preserves_flags),
        )
    };
    v
}

/// Writes the 8 bytes at `addr`.
///
/// # Safety
///
/// `[addr, addr + 8)` is mapped, writable, and holds nothing live.
pub unsafe fn write_u64(addr: u64, value: u64) {
    // SAFETY: the caller guarantees the 8 bytes are mapped and free.
    unsafe {
        asm!(
            "mov qword ptr [{a}], {v}",
            a = in(reg) addr,
            v = in(reg) value,
            options(nostack, preserves_flags),
        )
    };
}

/// Copies `buf.len()` bytes from `addr` into `buf`.
///
/// # Safety
///
/// `[addr, addr + buf.len())` is mapped and readable and does not overlap
/// `buf`.
pub unsafe fn copy_from(addr: u64, buf: &mut [u8]) {
    // SAFETY: the caller guarantees the source is mapped; `buf` is ours and
    // exactly `len` bytes long; DF is clear (entry state, never set).
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") buf.len() => _,
            inout("rsi") addr => _,
            inout("rdi") buf.as_mut_ptr() => _,
            options(nostack, preserves_flags),
        )
    };
}

/// Copies `buf` to `addr`.
///
/// # Safety
///
/// `[addr, addr + buf.len())` is mapped, writable, owned by the caller (no
/// Rust reference to it is live) and does not overlap `buf`.
pub unsafe fn copy_to(addr: u64, buf: &[u8]) {
    // SAFETY: the caller guarantees the destination; `buf` is ours; DF is
    // clear (entry state, never set).
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") buf.len() => _,
            inout("rsi") buf.as_ptr() => _,
            inout("rdi") addr => _,
            options(nostack, preserves_flags),
        )
    };
}

/// Reads a 32-bit device register.
///
/// # Safety
///
/// `addr` is a mapped device register (uncached mapping).
pub unsafe fn mmio_read32(addr: u64) -> u32 {
    let v: u32;
    // SAFETY: the caller guarantees the register is mapped.
    unsafe {
        asm!("mov {v:e}, dword ptr [{a}]", v = out(reg) v, a = in(reg) addr, options(nostack, preserves_flags))
    };
    v
}

/// Reads a 64-bit device register.
///
/// # Safety
///
/// As [`mmio_read32`].
pub unsafe fn mmio_read64(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: the caller guarantees the register is mapped.
    unsafe {
        asm!("mov {v}, qword ptr [{a}]", v = out(reg) v, a = in(reg) addr, options(nostack, preserves_flags))
    };
    v
}

/// Writes a 32-bit device register.
///
/// # Safety
///
/// As [`mmio_read32`]; the write's effect on the device is the caller's
/// business (it may start DMA into memory the caller owns).
pub unsafe fn mmio_write32(addr: u64, value: u32) {
    // SAFETY: the caller guarantees the register is mapped.
    unsafe {
        asm!("mov dword ptr [{a}], {v:e}", a = in(reg) addr, v = in(reg) value, options(nostack, preserves_flags))
    };
}

/// Writes a 64-bit device register.
///
/// # Safety
///
/// As [`mmio_write32`].
pub unsafe fn mmio_write64(addr: u64, value: u64) {
    // SAFETY: the caller guarantees the register is mapped.
    unsafe {
        asm!("mov qword ptr [{a}], {v}", a = in(reg) addr, v = in(reg) value, options(nostack, preserves_flags))
    };
}

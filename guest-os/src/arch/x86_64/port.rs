//! Port I/O: PCI configuration space through `0xCF8`/`0xCFC` (which the
//! hypervisor emulates: only the devices assigned to the domain show).

use core::arch::asm;

const ADDRESS: u16 = 0xCF8;
const DATA: u16 = 0xCFC;

fn outl(port: u16, value: u32) {
    // SAFETY: a port write has no effect on memory Rust knows about; the
    // configuration ports are emulated by the hypervisor for this domain.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as for `outl`; a read has no side effect on memory.
    unsafe {
        asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    v
}

fn outw(port: u16, value: u16) {
    // SAFETY: as for `outl`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    }
}

fn outb(port: u16, value: u8) {
    // SAFETY: as for `outl`.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// The configuration dword `address` (the `0xCF8` value) selects.
pub fn pci_read(address: u32) -> u32 {
    outl(ADDRESS, address & !3);
    inl(DATA)
}

/// Writes `size` bytes at the selected dword plus `offset`.
pub fn pci_write(address: u32, offset: u8, size: u8, value: u32) {
    outl(ADDRESS, address & !3);
    let port = DATA + u16::from(offset & 3);
    match size {
        1 => outb(port, value as u8),
        2 => outw(port, value as u16),
        _ => outl(DATA, value),
    }
}

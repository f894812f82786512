//! What the boot sequence needs from the machine, as a trait: the bare-metal
//! kernel implements it with `VMMCALL`, CPUID, page-table walks and the
//! identity map (`main.rs`); host tests implement it with a model hypervisor.
//!
//! Addresses: the guest runs its image in the top 2 GiB (linked at
//! `0xFFFF_FFFF_8020_0000`) and sees all of guest memory identity-mapped
//! (virtual == guest-physical), as `pv_abi::start_info` promises. So a
//! pointer into the image (stack, `.bss`, `.rodata`) is converted with
//! `__pa(va) = va - __image_start + start_info.image_start`
//! ([`Platform::gpa_of`]), and a pointer into RAM (the heap) already is a
//! guest-physical address.

use pv_abi::cpuid::CpuidRegs;
use pv_abi::{Gpa, HypercallArgs};

/// Failure modes for the hypervisor's isolation tests (`fail=` on the guest
/// command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Touch a guest-physical address outside every memory range.
    Npf,
    /// Load an empty IDT and raise an exception: a triple fault.
    Triple,
    /// Issue garbage hypercalls and check every answer (a test, not a crash).
    Hypercall,
    /// `cli; hlt`: the vCPU can never wake up.
    Halt,
    /// `cli` and a loop with no exit: the vCPU spins for ever on its CPU.
    Spin,
}

impl FailMode {
    /// The command-line spelling.
    pub const fn name(self) -> &'static str {
        match self {
            FailMode::Npf => "npf",
            FailMode::Triple => "triple",
            FailMode::Hypercall => "hypercall",
            FailMode::Halt => "halt",
            FailMode::Spin => "spin",
        }
    }
}

/// Where the image is linked and where it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// `__image_start`: the image's first virtual address.
    pub va_start: u64,
    /// `__image_end`: one past its last virtual address (page-aligned).
    pub va_end: u64,
}

impl ImageInfo {
    /// Bytes from `__image_start` to `__image_end`.
    pub const fn size(&self) -> u64 {
        self.va_end - self.va_start
    }

    /// Whether `va` is inside the image.
    pub const fn contains(&self, va: u64) -> bool {
        va >= self.va_start && va < self.va_end
    }
}

/// Where a secondary vCPU starts (ABI 1.3): [`pv_abi::VcpuContext`] but for
/// its stack and argument, which are the vCPU's own.
#[cfg(not(feature = "abi-1-2"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecondaryStart {
    /// The secondary entry stub (a virtual address in the image).
    pub rip: u64,
    /// The page tables vCPU 0 runs on: every vCPU shares them.
    pub cr3: Gpa,
    /// The GDT vCPU 0 runs on (its selectors 0x08 and 0x10 are the ones
    /// the hypervisor loads).
    pub gdt_base: u64,
    /// Its limit.
    pub gdt_limit: u32,
}

/// The machine, as the boot sequence and the test suites see it. Every
/// vCPU uses it at once (ABI 1.3), so it is `Sync`.
pub trait Platform: Sync {
    /// Executes `VMMCALL` with these registers and returns RAX.
    fn hypercall(&self, regs: &HypercallArgs) -> u64;

    /// The guest-physical address of a guest-virtual address the guest owns
    /// (inside the image, or identity-mapped RAM); `None` for anything else.
    fn gpa_of(&self, va: u64) -> Option<Gpa>;

    /// Copies guest-physical memory through the identity map. The caller
    /// keeps `[gpa, gpa + buf.len())` inside the domain's memory ranges.
    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]);

    /// Reads the 8 bytes at `gpa` through the identity map.
    fn read_phys_u64(&self, gpa: Gpa) -> u64;

    /// Writes `pattern` to the 8 bytes at `gpa`, reads them back and restores
    /// the old value; returns what was read back. The caller makes sure no
    /// live data is there.
    fn probe_phys_u64(&self, gpa: Gpa, pattern: u64) -> u64;

    /// Reads the 8 bytes at virtual address `va` (inside the image).
    fn read_virt_u64(&self, va: u64) -> u64;

    /// Translates a virtual address through the current page tables.
    fn translate(&self, va: u64) -> Option<Gpa>;

    /// The image's link addresses.
    fn image(&self) -> ImageInfo;

    /// CPUID, if the platform has one.
    fn cpuid(&self, leaf: u32) -> Option<CpuidRegs>;

    /// A cycle counter (the TSC on x86), for the benchmarks; `None` where
    /// there is none.
    fn cycles(&self) -> Option<u64> {
        None
    }

    /// Where a secondary vCPU starts, read on the calling vCPU (its CR3
    /// and GDTR); `None` where none can.
    #[cfg(not(feature = "abi-1-2"))]
    fn secondary_start(&self) -> Option<SecondaryStart> {
        None
    }

    /// A moment's pause in a loop that waits for another vCPU (`PAUSE`; a
    /// thread yield on the host, where vCPUs are threads).
    fn relax(&self) {
        core::hint::spin_loop();
    }

    /// Hands `[start, start + size)` (free, identity-mapped RAM) to the
    /// global allocator. `false` if the platform's allocator is another one
    /// (host tests).
    fn init_heap(&self, start: Gpa, size: u64) -> bool;

    /// Fails on purpose (`Npf` at `hole`, `Triple`, `Halt`). Returns only if
    /// the failure did not happen, with the reason.
    fn fail(&self, mode: FailMode, hole: Gpa) -> alloc::string::String;

    /// Copies `bytes` to guest-physical memory through the identity map
    /// (the DMA layer's bounce copies). The caller owns the span. A
    /// platform without guest memory of its own ignores it.
    fn write_phys(&self, gpa: Gpa, bytes: &[u8]) {
        let _ = (gpa, bytes);
    }

    /// Reads the dword of PCI configuration space that `address` (the
    /// `0xCF8` value) selects, through `0xCF8`/`0xCFC`. A platform without
    /// PCI reads all ones (no device).
    fn pci_read(&self, address: u32) -> u32 {
        let _ = address;
        u32::MAX
    }

    /// Writes `size` bytes (1, 2 or 4) of `value` at the register `address`
    /// selects plus `offset` (0 to 3, within the dword).
    fn pci_write(&self, address: u32, offset: u8, size: u8, value: u32) {
        let _ = (address, offset, size, value);
    }

    /// Maps `len` bytes of device memory at guest-physical `gpa` into the
    /// guest's page tables at virtual == guest-physical, uncached.
    fn map_mmio(&self, gpa: Gpa, len: u64) -> Result<(), alloc::string::String> {
        let _ = (gpa, len);
        Err("this platform has no device memory".into())
    }

    /// A 32-bit device register at `gpa` (mapped with [`Platform::map_mmio`]).
    fn mmio_read32(&self, gpa: Gpa) -> u32 {
        let _ = gpa;
        u32::MAX
    }

    /// A 64-bit device register.
    fn mmio_read64(&self, gpa: Gpa) -> u64 {
        let _ = gpa;
        u64::MAX
    }

    /// Writes a 32-bit device register.
    fn mmio_write32(&self, gpa: Gpa, value: u32) {
        let _ = (gpa, value);
    }

    /// Writes a 64-bit device register.
    fn mmio_write64(&self, gpa: Gpa, value: u64) {
        let _ = (gpa, value);
    }
}

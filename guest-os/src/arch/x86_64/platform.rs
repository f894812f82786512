//! The bare-metal [`Platform`]: `VMMCALL`, CPUID, the identity map, the
//! image's link addresses (`__image_start`/`__image_end` from the linker
//! script) and where the hypervisor loaded it.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_abi::cpuid::CpuidRegs;
use pv_abi::start_info::GPA_LIMIT;
use pv_abi::{Gpa, HypercallArgs, PAGE_SIZE};

use super::{cpu, paging, phys, port};
use crate::platform::{FailMode, ImageInfo, Platform};

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Where the image's first page is in guest-physical memory (`u64::MAX`
/// until [`init_image_gpa`]).
static IMAGE_GPA: AtomicU64 = AtomicU64::new(u64::MAX);

/// The image's link addresses.
pub fn image() -> ImageInfo {
    // Only the addresses of the linker-defined symbols are taken.
    ImageInfo {
        va_start: &raw const __image_start as u64,
        va_end: &raw const __image_end as u64,
    }
}

/// Learns where the image was loaded by walking the page tables for
/// `__image_start` (before the start-info page is trusted, so that the
/// console works from the first line). Falls back to the page's
/// `image_start` field (offset 40) if the walk fails.
pub fn init_image_gpa(start_info: u64) {
    let gpa = paging::translate(image().va_start).or_else(|| {
        (start_info != 0 && start_info.is_multiple_of(PAGE_SIZE) && start_info < GPA_LIMIT)
            // SAFETY: the start-info page is identity-mapped (entry contract).
            .then(|| unsafe { phys::read_u64(start_info + 40) })
    });
    if let Some(g) = gpa {
        IMAGE_GPA.store(g, Ordering::Relaxed);
    }
}

/// The guest on numavisor.
pub struct BareMetal {
    /// Hands a region to the global allocator (the binary owns it).
    pub heap_init: fn(u64, u64),
    /// The secondary vCPUs' entry stub (the binary's).
    #[cfg(not(feature = "abi-1-2"))]
    pub secondary_entry: unsafe extern "C" fn() -> !,
}

/// Physical-address bits of CR3 (the PML4's address).
#[cfg(not(feature = "abi-1-2"))]
const CR3_ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

impl Platform for BareMetal {
    fn hypercall(&self, regs: &HypercallArgs) -> u64 {
        cpu::vmmcall(regs)
    }

    fn cycles(&self) -> Option<u64> {
        Some(cpu::rdtsc())
    }

    fn gpa_of(&self, va: u64) -> Option<Gpa> {
        let img = image();
        if img.contains(va) {
            let base = IMAGE_GPA.load(Ordering::Relaxed);
            return (base != u64::MAX).then(|| Gpa(base + (va - img.va_start)));
        }
        (va < GPA_LIMIT).then_some(Gpa(va))
    }

    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) {
        // SAFETY: callers keep the span inside the domain's memory ranges
        // (or read the start-info page), all identity-mapped.
        unsafe { phys::copy_from(gpa.0, buf) }
    }

    fn read_phys_u64(&self, gpa: Gpa) -> u64 {
        // SAFETY: as in `read_phys`.
        unsafe { phys::read_u64(gpa.0) }
    }

    fn probe_phys_u64(&self, gpa: Gpa, pattern: u64) -> u64 {
        // SAFETY: the memory suite probes only guest memory that holds
        // nothing live (outside the image, boot data, heap and the
        // secondary vCPUs' stacks: no vCPU touches it), interrupts off;
        // the old value is put back.
        unsafe {
            let old = phys::read_u64(gpa.0);
            phys::write_u64(gpa.0, pattern);
            let back = phys::read_u64(gpa.0);
            phys::write_u64(gpa.0, old);
            back
        }
    }

    fn read_virt_u64(&self, va: u64) -> u64 {
        // SAFETY: callers pass addresses inside the mapped image.
        unsafe { phys::read_u64(va) }
    }

    fn translate(&self, va: u64) -> Option<Gpa> {
        paging::translate(va).map(Gpa)
    }

    fn image(&self) -> ImageInfo {
        image()
    }

    fn cpuid(&self, leaf: u32) -> Option<CpuidRegs> {
        Some(cpu::cpuid(leaf))
    }

    #[cfg(not(feature = "abi-1-2"))]
    fn secondary_start(&self) -> Option<crate::platform::SecondaryStart> {
        let (gdt_base, gdt_limit) = cpu::read_gdtr();
        Some(crate::platform::SecondaryStart {
            rip: self.secondary_entry as usize as u64,
            cr3: Gpa(cpu::read_cr3() & CR3_ADDR_MASK),
            gdt_base,
            gdt_limit: u32::from(gdt_limit),
        })
    }

    fn init_heap(&self, start: Gpa, size: u64) -> bool {
        (self.heap_init)(start.0, size);
        true
    }

    fn write_phys(&self, gpa: Gpa, bytes: &[u8]) {
        // SAFETY: callers (the DMA layer's bounce copies) write only
        // buffers the guest owns and has handed to the DMA API, inside the
        // domain's identity-mapped memory; no Rust reference to them is
        // live during the copy.
        unsafe { phys::copy_to(gpa.0, bytes) }
    }

    fn pci_read(&self, address: u32) -> u32 {
        port::pci_read(address)
    }

    fn pci_write(&self, address: u32, offset: u8, size: u8, value: u32) {
        port::pci_write(address, offset, size, value);
    }

    fn map_mmio(&self, gpa: Gpa, len: u64) -> Result<(), String> {
        paging::map_mmio(gpa.0, len).map_err(String::from)
    }

    fn mmio_read32(&self, gpa: Gpa) -> u32 {
        // SAFETY: drivers pass registers of a BAR they mapped with
        // `map_mmio` (uncached, at virtual == guest-physical).
        unsafe { phys::mmio_read32(gpa.0) }
    }

    fn mmio_read64(&self, gpa: Gpa) -> u64 {
        // SAFETY: as for `mmio_read32`.
        unsafe { phys::mmio_read64(gpa.0) }
    }

    fn mmio_write32(&self, gpa: Gpa, value: u32) {
        // SAFETY: as for `mmio_read32`.
        unsafe { phys::mmio_write32(gpa.0, value) }
    }

    fn mmio_write64(&self, gpa: Gpa, value: u64) {
        // SAFETY: as for `mmio_read32`.
        unsafe { phys::mmio_write64(gpa.0, value) }
    }

    fn fail(&self, mode: FailMode, hole: Gpa) -> String {
        match mode {
            FailMode::Npf => match paging::touch_unbacked(hole.0) {
                Ok(v) => format!("read {v:#x} at guest-physical {hole} without a fault"),
                Err(e) => format!("could not map {hole}: {e}"),
            },
            FailMode::Triple => cpu::triple_fault(),
            FailMode::Halt => cpu::halt_forever(),
            FailMode::Spin => cpu::spin_forever(),
            FailMode::Hypercall => "fail=hypercall is a test, not a crash".into(),
        }
    }
}

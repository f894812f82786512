//! CPU identification and control registers.

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, CpuidResult};

use crate::numa::topology::ApicIdLayout;

/// Executes CPUID.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    __cpuid_count(leaf, subleaf)
}

/// Highest basic and extended CPUID leaves.
fn max_leaves() -> (u32, u32) {
    (cpuid(0, 0).eax, cpuid(0x8000_0000, 0).eax)
}

/// The initial APIC id of the CPU running this code (CPUID.1:EBX[31:24]).
pub fn apic_id() -> u32 {
    cpuid(1, 0).ebx >> 24
}

/// How APIC ids split into thread, core and package fields.
///
/// Uses the extended topology leaf 0xB when present (the shift of each level
/// is the width of the fields below it), otherwise AMD's leaf 0x8000_0008
/// (ApicIdCoreIdSize), otherwise one thread per package.
pub fn apic_id_layout() -> ApicIdLayout {
    let (max_basic, max_ext) = max_leaves();
    if max_basic >= 0xB {
        let mut smt_bits = 0;
        let mut pkg_bits = None;
        for level in 0..8 {
            let r = cpuid(0xB, level);
            let level_type = (r.ecx >> 8) & 0xff;
            if level_type == 0 {
                break;
            }
            let shift = r.eax & 0x1f;
            match level_type {
                1 => smt_bits = shift,
                2 => pkg_bits = Some(shift),
                _ => {}
            }
        }
        if let Some(pkg_bits) = pkg_bits {
            return ApicIdLayout {
                smt_bits,
                core_bits: pkg_bits.saturating_sub(smt_bits),
            };
        }
    }
    if max_ext >= 0x8000_0008 {
        let core_bits = (cpuid(0x8000_0008, 0).ecx >> 12) & 0xf;
        return ApicIdLayout {
            smt_bits: 0,
            core_bits,
        };
    }
    ApicIdLayout {
        smt_bits: 0,
        core_bits: 0,
    }
}

/// Whether the CPU can map 1 GiB pages.
pub fn has_1g_pages() -> bool {
    max_leaves().1 >= 0x8000_0001 && cpuid(0x8000_0001, 0).edx & (1 << 26) != 0
}

/// Reads CR3.
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effects; the hypervisor runs at CPL 0.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) }
    value
}

/// Flushes the whole TLB (non-global entries) by reloading CR3.
pub fn flush_tlb() {
    let cr3 = read_cr3();
    // SAFETY: writing back the current CR3 keeps the same address space and
    // only drops cached translations.
    unsafe { asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags)) }
}

/// Halts until an interrupt arrives, with interrupts on only for the halt:
/// STI's one-instruction shadow makes `sti; hlt` atomic, so a wake-up sent
/// after the caller's last check cannot be lost. Returns with interrupts
/// off, the interrupt handled.
pub fn wait_for_interrupt() {
    // SAFETY: the IDT handles every vector a device or IPI can raise here
    // (the local APIC's, see `apic`); the legacy PIC is masked.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) }
}

/// Lets interrupts that arrived while they were off be handled now (after
/// a guest's INTR exit), then turns them off again.
pub fn take_pending_interrupts() {
    // SAFETY: as for `wait_for_interrupt`.
    unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) }
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: with interrupts off, HLT parks the CPU; nothing else runs.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// Reads a model-specific register.
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the hypervisor only reads architectural MSRs it has checked
    // for (EFER, the SVM MSRs); RDMSR has no memory effects.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// The write must be valid for this MSR and must not break the invariants
/// the rest of the hypervisor relies on (e.g. clearing EFER.LME).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

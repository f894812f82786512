//! The SVM instructions: turning SVM on and running a guest.

use alloc::alloc::{alloc_zeroed, Layout};
use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use super::cpu::{cpuid, rdmsr, wrmsr};
use crate::svm::vcpu::GuestRegs;

const MSR_EFER: u32 = 0xC000_0080;
const MSR_VM_CR: u32 = 0xC001_0114;
const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;
const EFER_SVME: u64 = 1 << 12;
const VM_CR_SVMDIS: u64 = 1 << 4;

/// Why SVM cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmError {
    /// CPUID says no SVM (QEMU needs `-cpu ...,+svm`).
    NoSvm,
    /// The firmware disabled SVM (VM_CR.SVMDIS).
    Disabled,
    /// No nested paging (QEMU needs `+npt`). QEMU honours NP_ENABLE even
    /// without it, so the CPUID bit is checked here.
    NoNestedPaging,
}

impl core::fmt::Display for SvmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SvmError::NoSvm => write!(f, "the CPU has no AMD SVM (QEMU: -cpu qemu64,+svm,+npt)"),
            SvmError::Disabled => write!(f, "SVM is disabled by the firmware (VM_CR.SVMDIS)"),
            SvmError::NoNestedPaging => write!(
                f,
                "the CPU has no nested paging (QEMU: -cpu qemu64,+svm,+npt)"
            ),
        }
    }
}

/// What the CPU's SVM offers.
#[derive(Clone, Copy, Debug)]
pub struct SvmInfo {
    pub revision: u32,
    pub nr_asids: u32,
    pub next_rip_save: bool,
}

#[repr(C, align(4096))]
struct HostSaveArea(UnsafeCell<[u8; 4096]>);

// SAFETY: the page is only ever handed to the CPU (VM_HSAVE_PA); Rust code
// never reads or writes it.
unsafe impl Sync for HostSaveArea {}

/// The boot CPU's host save area.
static BOOT_CPU_HOST_SAVE: HostSaveArea = HostSaveArea(UnsafeCell::new([0; 4096]));
static BOOT_CPU_HOST_SAVE_TAKEN: AtomicBool = AtomicBool::new(false);

/// A page the CPU saves host state into on VMRUN (VM_HSAVE_PA): one per
/// CPU, owned by that CPU for the rest of the run.
#[derive(Debug)]
pub struct HostSavePage(u64);

impl HostSavePage {
    /// The boot CPU's page (a static); `None` after the first call.
    pub fn boot_cpu() -> Option<Self> {
        if BOOT_CPU_HOST_SAVE_TAKEN.swap(true, Ordering::SeqCst) {
            return None;
        }
        Some(HostSavePage(BOOT_CPU_HOST_SAVE.0.get() as u64))
    }

    /// A fresh page from the hypervisor's heap (for an application
    /// processor); it is never freed.
    pub fn allocate() -> Option<Self> {
        let layout = Layout::from_size_align(4096, 4096).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        // The hypervisor heap lies in the identity map: the pointer is the
        // page's machine address.
        (!ptr.is_null()).then_some(HostSavePage(ptr as u64))
    }
}

/// Checks for SVM with nested paging and turns it on for this CPU, with
/// `host_save` (this CPU's own page) as its host save area.
pub fn enable(host_save: HostSavePage) -> Result<SvmInfo, SvmError> {
    let max_ext = cpuid(0x8000_0000, 0).eax;
    if max_ext < 0x8000_000A || cpuid(0x8000_0001, 0).ecx & (1 << 2) == 0 {
        return Err(SvmError::NoSvm);
    }
    if rdmsr(MSR_VM_CR) & VM_CR_SVMDIS != 0 {
        return Err(SvmError::Disabled);
    }
    let features = cpuid(0x8000_000A, 0);
    if features.edx & 1 == 0 {
        return Err(SvmError::NoNestedPaging);
    }
    // SAFETY: setting EFER.SVME only makes the SVM instructions available;
    // the host save area is a page given to this CPU alone (`HostSavePage`
    // values are never duplicated), owned by the CPU from now on (the
    // identity map makes its address the machine address).
    unsafe {
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SVME);
        wrmsr(MSR_VM_HSAVE_PA, host_save.0);
    }
    Ok(SvmInfo {
        revision: features.eax & 0xff,
        nr_asids: features.ebx,
        next_rip_save: features.edx & (1 << 3) != 0,
    })
}

// svm_vmrun(vmcb_pa: u64 /* rdi */, regs: *mut GuestRegs /* rsi */)
//
// VMRUN switches only RAX, RSP and RIP (plus the state in the VMCB); every
// other general-purpose register comes back holding the guest's value. So
// the stub saves the host's callee-saved registers, loads the guest's from
// `regs`, runs the guest, stores them back, and restores the host's.
//
// Host interrupts, as KVM's svm_vcpu_enter_exit: CLGI holds them off, STI
// sets the host's interrupt flag that VMRUN saves, so that (with the VMCB's
// V_INTR_MASKING and INTR intercept) a physical interrupt in the guest ends
// it with an INTR exit; after the exit (GIF clear again) CLI, then STGI.
// The interrupt stays pending until the host next opens interrupts
// (`cpu::take_pending_interrupts` or `cpu::wait_for_interrupt`).
global_asm!(
    r#"
    .section .text
    .global svm_vmrun
svm_vmrun:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rsi
    mov rax, rdi
    mov rbx, [rsi + 0]
    mov rcx, [rsi + 8]
    mov rdx, [rsi + 16]
    mov rdi, [rsi + 32]
    mov rbp, [rsi + 40]
    mov r8,  [rsi + 48]
    mov r9,  [rsi + 56]
    mov r10, [rsi + 64]
    mov r11, [rsi + 72]
    mov r12, [rsi + 80]
    mov r13, [rsi + 88]
    mov r14, [rsi + 96]
    mov r15, [rsi + 104]
    mov rsi, [rsi + 24]
    clgi
    sti
    vmrun rax
    cli
    stgi
    push rsi
    mov rsi, [rsp + 8]
    mov [rsi + 0], rbx
    mov [rsi + 8], rcx
    mov [rsi + 16], rdx
    mov [rsi + 32], rdi
    mov [rsi + 40], rbp
    mov [rsi + 48], r8
    mov [rsi + 56], r9
    mov [rsi + 64], r10
    mov [rsi + 72], r11
    mov [rsi + 80], r12
    mov [rsi + 88], r13
    mov [rsi + 96], r14
    mov [rsi + 104], r15
    pop rax
    mov [rsi + 24], rax
    pop rsi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
"#
);

extern "C" {
    fn svm_vmrun(vmcb_pa: u64, regs: *mut GuestRegs);
}

/// Runs the guest described by the VMCB at `vmcb_pa` until its next #VMEXIT.
///
/// # Safety
/// `vmcb_pa` must be the machine address of a valid, 4 KiB-aligned VMCB that
/// nothing else uses during the call, whose nested page tables map only
/// memory the guest may own; SVM must be enabled on this CPU.
pub unsafe fn vmrun(vmcb_pa: u64, regs: &mut GuestRegs) {
    // SAFETY: guaranteed by the caller; the stub preserves every host
    // register the ABI requires and the guest cannot reach host memory
    // outside its nested page tables.
    unsafe { svm_vmrun(vmcb_pa, regs) }
}

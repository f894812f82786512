//! Starting the application processors: the real-mode trampoline, the
//! local APIC (xAPIC, memory-mapped at the base IA32_APIC_BASE names) and
//! INIT-SIPI-SIPI.
//!
//! An AP starts in real mode at the trampoline page (CS = page >> 4). The
//! trampoline loads its own GDT, enters 32-bit protected mode, loads the boot
//! CPU's CR3, enables PAE and EFER.LME, turns paging on and far-jumps into
//! `ap_long_mode_entry` in the image. That code loads the boot CPU's GDT,
//! takes the boot block the boot CPU offered (an atomic exchange with zero,
//! so that one block starts one CPU at most), switches to the block's stack
//! and calls the block's entry function.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

pub use super::apic::LocalApic;
use super::smp_plan::{icr_startup, patch_trampoline, PatchError};
use super::timer::delay_us;

/// What an AP needs once in long mode. `stack_top` must stay at offset 0:
/// the assembly reads it there.
#[repr(C)]
pub struct ApBoot {
    /// Top of the AP's stack (16-byte aligned).
    pub stack_top: u64,
    /// Called on the new stack with `arg`; never returns.
    pub entry: fn(usize) -> !,
    pub arg: usize,
}

/// The boot block offered to the next AP that reaches long mode (0: none).
static AP_BOOT_BLOCK: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .set APT_GDTR, 0x08
    .set APT_PM_JUMP, 0x10
    .set APT_CR3, 0x18
    .set APT_GDT, 0x20
    .set APT_PM_ENTRY, 0x80

    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_trampoline_start
    .global ap_trampoline_end
    .code16
ap_trampoline_start:
    jmp ap_tramp_real
    .org ap_trampoline_start + APT_GDTR
    .word ap_tramp_gdt_end - ap_tramp_gdt - 1
    .long 0                         /* patched: page + APT_GDT */
    .org ap_trampoline_start + APT_PM_JUMP
    .long 0                         /* patched: page + APT_PM_ENTRY */
    .word 0x18
    .org ap_trampoline_start + APT_CR3
    .long 0                         /* patched: the boot CPU's CR3 */
    .org ap_trampoline_start + APT_GDT
ap_tramp_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF        /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF        /* 0x10: data */
    .quad 0x00CF9A000000FFFF        /* 0x18: 32-bit code */
ap_tramp_gdt_end:
ap_tramp_real:
    cli
    cld
    mov ax, cs
    mov ds, ax
    mov ebx, dword ptr [APT_CR3]
    lgdt [APT_GDTR]
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    /* jmp far m16:32 [APT_PM_JUMP] (operand-size prefix, FF /5, disp16) */
    .byte 0x66, 0xFF, 0x2E
    .word APT_PM_JUMP

    .org ap_trampoline_start + APT_PM_ENTRY
    .code32
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov cr3, ebx
    mov eax, cr4
    or eax, 0x20                    /* PAE */
    mov cr4, eax
    mov ecx, 0xC0000080             /* EFER */
    rdmsr
    or eax, 0x100                   /* LME */
    wrmsr
    mov eax, cr0
    or eax, 0x80010001              /* PG | WP | PE */
    mov cr0, eax
    /* jmp far 0x08:ap_long_mode_entry */
    .byte 0xEA
    .long ap_long_mode_entry
    .word 0x08
ap_trampoline_end:

    .section .text
    .code64
ap_long_mode_entry:
    lgdt [rip + ap_boot_gdtr]
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    xor edi, edi
    xchg rdi, qword ptr [rip + {block}]
    test rdi, rdi
    jz ap_park
    mov rsp, qword ptr [rdi]
    xor ebp, ebp
    push 0x08
    lea rax, [rip + ap_cs_loaded]
    push rax
    retfq
ap_cs_loaded:
    call {rust_entry}
ap_park:
    cli
    hlt
    jmp ap_park

    .section .rodata
    .balign 8
ap_boot_gdtr:
    .word 23
    .quad boot_gdt
"#,
    block = sym AP_BOOT_BLOCK,
    rust_entry = sym ap_rust_entry,
);

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

extern "C" fn ap_rust_entry(boot: &'static ApBoot) -> ! {
    (boot.entry)(boot.arg)
}

/// The trampoline's code, as linked.
fn trampoline_code() -> &'static [u8] {
    let start = &raw const ap_trampoline_start as usize;
    let end = &raw const ap_trampoline_end as usize;
    // SAFETY: both symbols delimit the trampoline in the image's read-only
    // data, which lives (unchanged) for the whole run.
    unsafe { core::slice::from_raw_parts(start as *const u8, end - start) }
}

/// The trampoline, installed in its low page.
#[derive(Clone, Copy, Debug)]
pub struct Trampoline {
    page: u64,
}

impl Trampoline {
    /// Copies the trampoline to `page` and patches it for that page and
    /// the current CR3.
    ///
    /// # Safety
    /// `page` must be a 4 KiB page of RAM below 1 MiB that nothing else uses
    /// for as long as APs may start from it.
    pub unsafe fn install(page: u64) -> Result<Self, PatchError> {
        let code = trampoline_code();
        if code.len() > 4096 {
            return Err(PatchError::TooLong);
        }
        let mut buf = [0u8; 4096];
        buf[..code.len()].copy_from_slice(code);
        patch_trampoline(&mut buf[..code.len()], page, super::cpu::read_cr3())?;
        // SAFETY: the caller gives us the page; it is identity-mapped (below
        // 4 GiB) and does not overlap `buf` (a stack array).
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), page as *mut u8, code.len()) };
        Ok(Trampoline { page })
    }

    pub fn page(self) -> u64 {
        self.page
    }
}

/// Offers `boot` to the next AP that reaches long mode.
///
/// # Safety
/// `boot` and its stack must stay valid and unused by anything else until
/// [`withdraw`] returns `false` (an AP took it: then forever).
unsafe fn offer(boot: &ApBoot) {
    AP_BOOT_BLOCK.store(boot as *const ApBoot as u64, Ordering::SeqCst);
}

/// Takes back the offered block; `true` if no AP had taken it.
pub fn withdraw() -> bool {
    AP_BOOT_BLOCK.swap(0, Ordering::SeqCst) != 0
}

/// Starts the AP `apic_id` from `trampoline` with `boot`, as the Intel SDM
/// (8.4.4.1) and Linux's `wakeup_secondary_cpu_via_init` do: INIT assert,
/// 10 ms, INIT de-assert, then two start-up IPIs 200 µs apart. Returns once
/// the IPIs are sent; the caller watches for the AP itself and calls
/// [`withdraw`] if it gives up.
///
/// # Safety
/// As for [`offer`]; `trampoline` must still be installed.
pub unsafe fn start_ap(
    lapic: LocalApic,
    trampoline: Trampoline,
    apic_id: u32,
    boot: &ApBoot,
) -> Result<(), &'static str> {
    let sipi = icr_startup(trampoline.page).ok_or("trampoline page above 1 MiB")?;
    // SAFETY: guaranteed by the caller.
    unsafe { offer(boot) };
    lapic.send_init(apic_id)?;
    for _ in 0..2 {
        lapic.send(apic_id, sipi)?;
        delay_us(200);
    }
    Ok(())
}

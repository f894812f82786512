//! Exception handling: an IDT whose 32 exception vectors report the vector,
//! error code, RIP and CR2 on the console and end the run with
//! `ExitCode::Exception`, instead of letting a fault triple-fault the machine
//! into a silent reset. Beyond them, the local APIC's vectors
//! ([`super::apic`]): the wake-up IPI and the time-slice timer only need an
//! EOI (their work is done by the code they wake), the spurious vector
//! nothing. Every other vector stays empty: the legacy PIC is masked and
//! nothing else is programmed to interrupt.

use core::arch::{asm, global_asm};
use core::mem::size_of;

use pv_abi::exit::ExitCode;

/// What the entry stubs push, lowest address first.
#[repr(C)]
pub struct ExceptionFrame {
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 floating point",
    "alignment check",
    "machine check",
    "SIMD floating point",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

// One stub per vector. Vectors 8, 10-14, 17, 21, 29 and 30 push an error
// code; the others push a zero so that every frame has the same shape.
global_asm!(
    r#"
    .macro EXC_NOERR n
    .balign 16
exc_stub_\n:
    push 0
    push \n
    jmp exc_common
    .endm
    .macro EXC_ERR n
    .balign 16
exc_stub_\n:
    push \n
    jmp exc_common
    .endm

    .section .text
    EXC_NOERR 0
    EXC_NOERR 1
    EXC_NOERR 2
    EXC_NOERR 3
    EXC_NOERR 4
    EXC_NOERR 5
    EXC_NOERR 6
    EXC_NOERR 7
    EXC_ERR 8
    EXC_NOERR 9
    EXC_ERR 10
    EXC_ERR 11
    EXC_ERR 12
    EXC_ERR 13
    EXC_ERR 14
    EXC_NOERR 15
    EXC_NOERR 16
    EXC_ERR 17
    EXC_NOERR 18
    EXC_NOERR 19
    EXC_NOERR 20
    EXC_ERR 21
    EXC_NOERR 22
    EXC_NOERR 23
    EXC_NOERR 24
    EXC_NOERR 25
    EXC_NOERR 26
    EXC_NOERR 27
    EXC_NOERR 28
    EXC_ERR 29
    EXC_ERR 30
    EXC_NOERR 31

exc_common:
    mov rdi, rsp
    and rsp, -16
    call exception_report

    /* A local APIC interrupt whose only job is to wake the CPU (or end
       its guest's time slice): acknowledge it and return. */
    .balign 16
    .global apic_eoi_stub
apic_eoi_stub:
    push rax
    mov rax, [rip + APIC_EOI_REGISTER]
    mov dword ptr [rax], 0
    pop rax
    iretq

    /* The spurious vector takes no EOI. */
    .balign 16
    .global apic_spurious_stub
apic_spurious_stub:
    iretq

    .section .rodata
    .balign 8
    .global exc_stub_table
exc_stub_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exc_stub_\n
    .endr
"#
);

extern "C" {
    static exc_stub_table: [u64; 32];
    fn apic_eoi_stub();
    fn apic_spurious_stub();
}

#[repr(C, packed)]
struct IdtPointer {
    limit: u16,
    base: u64,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const EMPTY_GATE: Gate = Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    type_attr: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
};

static IDT: spin::Mutex<[Gate; 256]> = spin::Mutex::new([EMPTY_GATE; 256]);

/// Code segment selector of the boot GDT.
const KERNEL_CS: u16 = 0x08;
/// Present, DPL 0, 64-bit interrupt gate.
const INTERRUPT_GATE: u8 = 0x8E;

const fn gate(handler: u64) -> Gate {
    Gate {
        offset_low: handler as u16,
        selector: KERNEL_CS,
        ist: 0,
        type_attr: INTERRUPT_GATE,
        offset_mid: (handler >> 16) as u16,
        offset_high: (handler >> 32) as u32,
        reserved: 0,
    }
}

/// Installs the exception and local APIC vectors on this CPU. The first
/// call (the boot CPU) fills the table; every CPU loads the same table.
pub fn init() {
    let mut idt = IDT.lock();
    let filled = idt[0].type_attr != 0;
    if !filled {
        for (vector, g) in idt.iter_mut().take(32).enumerate() {
            // SAFETY: `exc_stub_table` is an immutable table of 32 addresses
            // defined in the assembly above.
            *g = gate(unsafe { exc_stub_table[vector] });
        }
        let eoi = gate(apic_eoi_stub as *const () as u64);
        idt[usize::from(super::apic::WAKE_VECTOR)] = eoi;
        idt[usize::from(super::apic::TIMER_VECTOR)] = eoi;
        idt[usize::from(super::apic::SPURIOUS_VECTOR)] =
            gate(apic_spurious_stub as *const () as u64);
    }
    let pointer = IdtPointer {
        limit: (size_of::<[Gate; 256]>() - 1) as u16,
        base: idt.as_ptr() as u64,
    };
    // SAFETY: the IDT lives in a static for the rest of the run; every
    // exception gate points at a stub above that never returns, every
    // interrupt gate at one that returns with IRETQ having changed nothing
    // but the local APIC's in-service bit.
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) }
}

fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) }
    value
}

/// Called by the stubs with the frame they built. Never returns.
#[no_mangle]
extern "C" fn exception_report(frame: &ExceptionFrame) -> ! {
    let name = NAMES
        .get(frame.vector as usize)
        .copied()
        .unwrap_or("unknown");
    crate::console::print_fmt_unlocked(format_args!(
        "\nnumavisor: FATAL: CPU exception {} ({}) error code {:#x} at rip {:#x} rsp {:#x} cr2 {:#x}\n",
        frame.vector,
        name,
        frame.error_code,
        frame.rip,
        frame.rsp,
        read_cr2()
    ));
    super::exit::exit(ExitCode::Exception)
}

//! The guest on bare metal (see `main.rs`): entry stubs (vCPU 0's and the
//! secondary vCPUs'), ELF note, global allocator, console sink, panic
//! handler, shutdown.

use core::arch::global_asm;
use core::panic::PanicInfo;

use buddy_system_allocator::LockedHeap;
use guest_os::arch::x86_64::cpu::halt_forever;
use guest_os::arch::x86_64::platform::{init_image_gpa, BareMetal};
use guest_os::percpu::STACK_SIZE;
use guest_os::{console, hypercall, println};
use pv_abi::elf_note::ELF_NOTE_ABI_VERSION;
use pv_abi::{ShutdownStatus, ABI_MAJOR, ABI_MINOR};

// The entry stub: a stack, then `guest_main(RSI)`. The hypervisor zeroes
// `.bss`; nothing else needs setting up (no SSE on this target, DF clear,
// interrupts off, no IDT until the guest installs one). The stack is a
// per-CPU stack as `guest_os::percpu` wants them: aligned to its size, its
// header (zeroed: vCPU 0) at the base.
global_asm!(
    r#"
    .section .text._start, "ax"
    .global _start
_start:
    lea rsp, [rip + boot_stack_top]
    xor ebp, ebp
    cld
    mov rdi, rsi
    call guest_main
2:  cli
    hlt
    jmp 2b

    .section .bss.boot_stack, "aw", @nobits
    .balign {stack_size}
boot_stack:
    .skip {stack_size}
boot_stack_top:
"#,
    stack_size = const STACK_SIZE,
);

// A secondary vCPU's entry (ABI 1.3, `VCPU_OP` UP): the hypervisor loaded
// RSP (its own stack, header at the base), CR3, the GDT and its selectors,
// RDI = its id and RSI = its boot block, which `secondary_main` takes as
// they are. Interrupts are off and there is no IDT, as on vCPU 0.
#[cfg(not(feature = "abi-1-2"))]
global_asm!(
    r#"
    .section .text.secondary_start, "ax"
    .global secondary_start
secondary_start:
    xor ebp, ebp
    cld
    call secondary_main
2:  pause
    jmp 2b
"#
);

#[cfg(not(feature = "abi-1-2"))]
extern "C" {
    fn secondary_start() -> !;
}

// The pv-abi ELF note: name "NumaVisor", type ELF_NOTE_ABI_VERSION,
// descriptor = the AbiVersion this guest speaks (u16 major, u16 minor).
global_asm!(
    r#"
    .section .note.numavisor, "a", @note
    .balign 4
    .long 10
    .long 4
    .long {note_type}
    .asciz "NumaVisor"
    .balign 4
    .short {major}
    .short {minor}
    .balign 4
"#,
    note_type = const ELF_NOTE_ABI_VERSION,
    major = const ABI_MAJOR,
    minor = const ABI_MINOR,
);

/// The guest's heap: a buddy allocator on free guest memory, identity-mapped
/// so that a heap pointer is also the guest-physical address hypercalls
/// take. It exists once `boot::run` has read start-info and chosen the
/// region; nothing before that allocates.
#[global_allocator]
static ALLOCATOR: LockedHeap<32> = LockedHeap::empty();

fn heap_init(start: u64, size: u64) {
    // SAFETY: `boot::start_info::choose_heap` picked free, identity-mapped
    // guest RAM outside page 0, the image and the boot data; it is handed
    // over once and used by nothing else.
    unsafe { ALLOCATOR.lock().init(start as usize, size as usize) };
}

static PLATFORM: BareMetal = BareMetal {
    heap_init,
    #[cfg(not(feature = "abi-1-2"))]
    secondary_entry: secondary_start,
};

/// Each whole console line is one CONSOLE_WRITE hypercall.
fn console_sink(bytes: &[u8]) {
    let _ = hypercall::console_write(&PLATFORM, bytes);
}

fn shutdown(status: ShutdownStatus) -> ! {
    console::flush();
    let r = hypercall::shutdown(&PLATFORM, status);
    println!("guest: SHUTDOWN({status}) returned {r:?}; halting");
    halt_forever()
}

#[no_mangle]
extern "C" fn guest_main(start_info: u64) -> ! {
    init_image_gpa(start_info);
    console::set_sink(console_sink);
    let status = guest_os::boot::run(&PLATFORM, start_info);
    shutdown(status)
}

/// A secondary vCPU (see `secondary_start`). Its work returns only if
/// there was nothing to do or `VCPU_OP` DOWN was refused: it tries DOWN
/// once more and then spins, since `HLT` on any vCPU ends the domain.
#[cfg(not(feature = "abi-1-2"))]
#[no_mangle]
extern "C" fn secondary_main(vcpu: u64, boot_block: u64) -> ! {
    guest_os::smp::secondary_main(vcpu, boot_block);
    let _ = hypercall::vcpu_down(&PLATFORM, u32::try_from(vcpu).unwrap_or(u32::MAX));
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let location = info.location();
    console::print_panic(format_args!(
        "guest: PANIC at {}:{}: {}\n",
        location.map(|l| l.file()).unwrap_or("?"),
        location.map(|l| l.line()).unwrap_or(0),
        info.message()
    ));
    let _ = hypercall::shutdown(&PLATFORM, ShutdownStatus::PANIC);
    halt_forever()
}

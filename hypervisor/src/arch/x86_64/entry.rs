//! The first instructions: Multiboot v1 entry in 32-bit protected mode, the
//! switch to long mode, and the call into Rust.
//!
//! Why Multiboot and not PVH: Multiboot passes several boot modules (guest
//! images and domain configs), PVH only one. QEMU loads an ELF64 as Multiboot
//! only through the "a.out kludge" (header flag bit 16 with explicit load
//! addresses), which the linker script makes possible by keeping the file
//! layout equal to the memory layout.
//!
//! The stub identity-maps the first 4 GiB with 2 MiB pages (enough for the
//! image, the Multiboot data, the ACPI tables and the local APIC); Rust code
//! extends the map to all RAM once it has read the memory map.

use core::arch::global_asm;

/// Multiboot v1 magic value the loader leaves in EAX.
pub const MULTIBOOT_LOADER_MAGIC: u32 = 0x2BAD_B002;

global_asm!(
    r#"
    .set MB_MAGIC, 0x1BADB002
    /* bit 0: page-align modules, bit 1: memory map, bit 16: load addresses below */
    .set MB_FLAGS, 0x00010003

    .section .multiboot_header, "a"
    .balign 4
multiboot_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long multiboot_header
    .long __image_start
    .long __load_end
    .long __image_end
    .long multiboot_entry

    .section .text.boot, "ax"
    .code32
    .global multiboot_entry
multiboot_entry:
    cli
    cld
    mov dword ptr [boot_magic], eax
    mov dword ptr [boot_info], ebx
    mov esp, offset boot_stack_top

    /* Long mode needs CPUID leaf 0x80000001 EDX bit 29. */
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb no_long_mode
    mov eax, 0x80000001
    cpuid
    test edx, 0x20000000
    jz no_long_mode

    /* 4 page directories: 2048 entries of 2 MiB cover 0..4 GiB. */
    mov edi, offset boot_pd
    mov eax, 0x83
    mov ecx, 2048
fill_pd:
    mov dword ptr [edi], eax
    mov dword ptr [edi + 4], 0
    add eax, 0x200000
    add edi, 8
    dec ecx
    jnz fill_pd

    mov edi, offset boot_pdpt
    mov eax, offset boot_pd
    or eax, 3
    mov ecx, 4
fill_pdpt:
    mov dword ptr [edi], eax
    mov dword ptr [edi + 4], 0
    add eax, 4096
    add edi, 8
    dec ecx
    jnz fill_pdpt

    mov eax, offset boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax
    mov dword ptr [boot_pml4 + 4], 0

    mov eax, offset boot_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x20                /* PAE */
    mov cr4, eax
    mov ecx, 0xC0000080         /* EFER */
    rdmsr
    or eax, 0x100               /* LME */
    wrmsr
    mov eax, cr0
    or eax, 0x80010001          /* PG | WP | PE */
    mov cr0, eax

    lgdt [boot_gdt_ptr]
    mov eax, offset long_mode_entry
    push 0x08
    push eax
    retf

no_long_mode:
    mov esi, offset no_long_mode_msg
print_loop:
    lodsb
    test al, al
    jz print_done
    mov dx, 0x3F8
    out dx, al
    jmp print_loop
print_done:
    mov dx, 0xf4
    mov eax, 0x13               /* ExitCode::BadBoot */
    out dx, eax
halt32:
    hlt
    jmp halt32

    .code64
long_mode_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset boot_stack_top
    xor ebp, ebp
    mov edi, dword ptr [boot_magic]
    mov esi, dword ptr [boot_info]
    call hypervisor_main
halt64:
    cli
    hlt
    jmp halt64

    .section .rodata.boot, "a"
no_long_mode_msg:
    .asciz "numavisor: this CPU has no long mode; cannot boot\r\n"

    .balign 16
    .global boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF    /* 0x10: data */
boot_gdt_end:
    .balign 8
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .data.boot, "aw"
    .balign 4
boot_magic:
    .long 0
boot_info:
    .long 0

    .section .bss.page_tables, "aw"
    .balign 4096
    .global boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4

    .section .bss.boot_stack, "aw"
    .balign 16
boot_stack:
    .skip 65536
boot_stack_top:
"#
);

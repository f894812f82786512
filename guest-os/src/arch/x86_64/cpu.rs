//! `VMMCALL`, CPUID, CR3, the GDTR, the stack's vCPU id, and the
//! deliberate ways to stop the vCPU.

use core::arch::asm;

use pv_abi::cpuid::CpuidRegs;
use pv_abi::HypercallArgs;

/// Issues `VMMCALL` with `regs` (RAX = number, RDI, RSI, RDX, R10, R8 =
/// arguments) and returns RAX. pv-abi: every other register is preserved.
pub fn vmmcall(regs: &HypercallArgs) -> u64 {
    let rax: u64;
    // SAFETY: VMMCALL at CPL 0 exits to the hypervisor, which preserves
    // every register but RAX (pv-abi calling convention). It may write guest
    // memory only through addresses passed in the arguments, which callers
    // derive from pointers with write provenance (so `nomem` is not given).
    unsafe {
        asm!(
            "vmmcall",
            inlateout("rax") regs.nr => rax,
            in("rdi") regs.args[0],
            in("rsi") regs.args[1],
            in("rdx") regs.args[2],
            in("r10") regs.args[3],
            in("r8") regs.args[4],
            options(nostack),
        );
    }
    rax
}

/// CPUID leaf `leaf`, subleaf 0.
pub fn cpuid(leaf: u32) -> CpuidRegs {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    CpuidRegs {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// CR3.
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 at CPL 0 has no side effect.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The GDTR: base and limit.
pub fn read_gdtr() -> (u64, u16) {
    let mut gdtr = [0u8; 10];
    // SAFETY: SGDT stores the 10-byte GDTR into `gdtr` and nothing else.
    unsafe {
        asm!("sgdt [{}]", in(reg) gdtr.as_mut_ptr(), options(nostack, preserves_flags));
    }
    let limit = u16::from_le_bytes([gdtr[0], gdtr[1]]);
    let mut base = [0u8; 8];
    base.copy_from_slice(&gdtr[2..]);
    (u64::from_le_bytes(base), limit)
}

/// Reloads CR3 with its own value: flushes the non-global TLB entries.
pub fn flush_tlb() {
    // SAFETY: writing CR3 back unchanged keeps the same address space.
    unsafe {
        asm!(
            "mov {tmp}, cr3",
            "mov cr3, {tmp}",
            tmp = out(reg) _,
            options(nostack, preserves_flags),
        )
    };
}

/// `cli; hlt` forever: nothing can wake the vCPU (`fail=halt`, and the end
/// of the road after a refused shutdown).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: disabling interrupts and halting touches no memory.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// `cli` and a loop that never leaves the guest (`fail=spin`): only the
/// hypervisor's time limit ends it.
pub fn spin_forever() -> ! {
    // SAFETY: disabling interrupts touches no memory.
    unsafe { asm!("cli", options(nomem, nostack)) };
    loop {
        core::hint::black_box(());
    }
}

/// Loads an empty IDT (limit 0) and executes `ud2`: #UD cannot be
/// delivered, nor the #GP, nor the #DF: a triple fault (`fail=triple`).
pub fn triple_fault() -> ! {
    let idtr = [0u16; 5];
    // SAFETY: deliberately fatal: the domain ends in a triple fault and
    // nothing after `ud2` runs.
    unsafe {
        asm!(
            "lidt [{}]",
            "ud2",
            in(reg) idtr.as_ptr(),
            options(noreturn, nostack),
        )
    }
}

/// The vCPU id in the header at the base of the current stack: RSP rounded
/// down to `stack_size` (a power of two), see `crate::percpu`.
#[inline(always)]
pub fn stack_header_cpu(stack_size: u64) -> u32 {
    let cpu: u32;
    // SAFETY: every stack the guest runs on is `stack_size` bytes, aligned
    // to its size, mapped, and starts with its header (`crate::percpu`), so
    // the load reads that header and nothing else; it writes no memory.
    unsafe {
        asm!(
            "mov {p}, rsp",
            "and {p}, {mask}",
            "mov {c:e}, dword ptr [{p}]",
            p = out(reg) _,
            mask = in(reg) !(stack_size - 1),
            c = lateout(reg) cpu,
            options(nostack, readonly),
        )
    };
    cpu
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter (CR4.TSD is clear at CPL 0).
    unsafe { core::arch::x86_64::_rdtsc() }
}

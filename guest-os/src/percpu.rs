//! Which vCPU this code runs on ([`this_cpu`]), without an MSR or a VM
//! exit on the page allocator's hot path.
//!
//! As Linux's old `current_thread_info()`: every stack a vCPU runs on is
//! [`STACK_SIZE`] bytes, aligned to its size, and begins with a
//! [`StackHeader`] naming its vCPU; rounding RSP down finds it. vCPU 0's
//! boot stack is in `.bss` (header zeroed: vCPU 0); a secondary vCPU's stack
//! is a block the memory manager reserved at boot on the vCPU's local
//! memory node ([`crate::mm::Mm::cpu_block`]), its header written by vCPU 0
//! before `VCPU_OP` UP. The guest has no interrupts and no threads, so
//! nothing else ever runs on these stacks. (GS bases would need MSR writes,
//! which the hypervisor intercepts; `RDTSCP`'s `TSC_AUX` is not in the ABI.)
//!
//! Host tests run secondary vCPUs as threads and keep the id in a thread
//! local; other host builds (the benchmarks) run on CPU 0 only.

/// Order (in pages) of every vCPU stack.
pub const STACK_ORDER: u32 = 4;
/// Bytes of every vCPU stack (64 KiB), and its alignment.
pub const STACK_SIZE: u64 = 4096 << STACK_ORDER;

/// The first bytes of every vCPU stack, below anything the stack holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackHeader {
    /// The vCPU that runs on this stack.
    pub cpu: u32,
    /// [`STACK_MAGIC`] on a secondary vCPU's stack (0 on vCPU 0's, which
    /// `.bss` zeroes).
    pub magic: u32,
}

/// [`StackHeader::magic`] of a secondary vCPU's stack: `"STAK"`.
pub const STACK_MAGIC: u32 = u32::from_le_bytes(*b"STAK");

impl StackHeader {
    /// The header of vCPU `cpu`'s stack.
    pub const fn new(cpu: u32) -> Self {
        StackHeader {
            cpu,
            magic: STACK_MAGIC,
        }
    }

    /// Its bytes, as written at the stack's base.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.cpu.to_le_bytes());
        b[4..].copy_from_slice(&self.magic.to_le_bytes());
        b
    }
}

/// The top of the stack whose block starts at `base` (what RSP starts at).
pub const fn stack_top(base: u64) -> u64 {
    base + STACK_SIZE
}

/// The vCPU this code runs on.
#[cfg(target_os = "none")]
#[inline(always)]
pub fn this_cpu() -> u32 {
    crate::arch::x86_64::cpu::stack_header_cpu(STACK_SIZE)
}

#[cfg(all(test, not(target_os = "none")))]
std::thread_local! {
    static CPU: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

/// The vCPU this code runs on (host tests: the thread's, 0 unless
/// [`set_this_cpu`] said otherwise).
#[cfg(all(test, not(target_os = "none")))]
#[inline]
pub fn this_cpu() -> u32 {
    CPU.with(core::cell::Cell::get)
}

/// Makes the calling thread vCPU `cpu` (host tests: the mock hypervisor's
/// secondary vCPUs).
#[cfg(all(test, not(target_os = "none")))]
pub fn set_this_cpu(cpu: u32) {
    CPU.with(|c| c.set(cpu));
}

/// The vCPU this code runs on: 0 (host builds run on one CPU).
#[cfg(all(not(test), not(target_os = "none")))]
#[inline(always)]
pub fn this_cpu() -> u32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        assert_eq!(STACK_SIZE, 64 << 10);
        assert_eq!(core::mem::size_of::<StackHeader>(), 8);
        assert_eq!(&StackHeader::new(3).to_bytes(), b"\x03\0\0\0STAK");
        assert_eq!(stack_top(0x40_0000), 0x41_0000);
    }

    #[test]
    fn threads_have_their_own_cpu() {
        assert_eq!(this_cpu(), 0);
        let t = std::thread::spawn(|| {
            set_this_cpu(5);
            this_cpu()
        });
        assert_eq!(t.join().ok(), Some(5));
        assert_eq!(this_cpu(), 0);
    }
}

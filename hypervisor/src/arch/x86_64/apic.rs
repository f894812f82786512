//! The local APIC (xAPIC, memory-mapped at the base IA32_APIC_BASE names):
//! IPIs, the wake-up and time-slice interrupts, and the legacy PIC kept
//! quiet.
//!
//! The hypervisor runs with interrupts off except where it waits for them:
//! an idle CPU halts with interrupts on until a wake-up IPI
//! ([`WAKE_VECTOR`]) arrives, and a CPU running a guest keeps the host's
//! interrupt flag set across VMRUN so that a wake-up IPI or its time-slice
//! timer ([`TIMER_VECTOR`]) ends the guest's turn with an INTR exit. Both
//! vectors' handlers only acknowledge the interrupt (`idt.rs`); the code
//! they wake does the work.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::cpu::{cpuid, rdmsr};
use super::paging::BOOT_MAPPED_LIMIT;
use super::port::outb;
use super::smp_plan::{icr_destination, icr_init_assert, icr_init_deassert, ICR_SEND_PENDING};
use super::timer::{delay_us, Deadline};

/// Wakes a CPU: from its idle halt, or out of the guest it runs.
pub const WAKE_VECTOR: u8 = 0xF0;
/// Ends the running guest's time slice.
pub const TIMER_VECTOR: u8 = 0xF1;
/// Delivered when an interrupt vanishes before it is taken; needs no EOI.
pub const SPURIOUS_VECTOR: u8 = 0xFF;

const REG_TPR: u64 = 0x80;
const REG_EOI: u64 = 0xB0;
const REG_SVR: u64 = 0xF0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_TIMER_INITIAL: u64 = 0x380;
const REG_TIMER_CURRENT: u64 = 0x390;
const REG_TIMER_DIVIDE: u64 = 0x3E0;
const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
/// Divide configuration 0b0011: the timer counts at bus clock / 16.
const TIMER_DIVIDE_16: u32 = 0b0011;
/// ICR: fixed delivery, physical destination, level assert.
const ICR_FIXED_ASSERT: u32 = 1 << 14;

/// The EOI register's address, read by the interrupt stubs in `idt.rs`
/// (every CPU's local APIC sits at the same address).
#[no_mangle]
static APIC_EOI_REGISTER: AtomicU64 = AtomicU64::new(0);

/// Timer ticks (at divide 16) per millisecond, measured once at boot.
static TIMER_TICKS_PER_MS: AtomicU32 = AtomicU32::new(0);

/// Masks every line of both legacy 8259 PICs: the firmware may have left
/// the PIT's IRQ 0 unmasked, and with interrupts on it would arrive at an
/// exception vector.
pub fn mask_legacy_pic() {
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
}

const MSR_APIC_BASE: u32 = 0x1B;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ADDR: u64 = 0x000F_FFFF_FFFF_F000;
const REG_ICR_LOW: u64 = 0x300;
const REG_ICR_HIGH: u64 = 0x310;

/// This CPU's local APIC in xAPIC mode.
#[derive(Clone, Copy, Debug)]
pub struct LocalApic {
    base: u64,
}

impl LocalApic {
    /// The local APIC of the CPU running this code, if it is enabled, in
    /// xAPIC mode and inside the boot identity map.
    pub fn this_cpu() -> Result<Self, &'static str> {
        if cpuid(1, 0).edx & (1 << 9) == 0 {
            return Err("the CPU has no local APIC");
        }
        let msr = rdmsr(MSR_APIC_BASE);
        if msr & APIC_BASE_ENABLE == 0 {
            return Err("the local APIC is disabled");
        }
        if msr & APIC_BASE_X2APIC != 0 {
            return Err("the local APIC is in x2APIC mode");
        }
        let base = msr & APIC_BASE_ADDR;
        if base + 4096 > BOOT_MAPPED_LIMIT {
            return Err("the local APIC is above the boot identity map");
        }
        Ok(LocalApic { base })
    }

    fn read(self, reg: u64) -> u32 {
        // SAFETY: `base` is the local APIC's register page (from
        // IA32_APIC_BASE), identity-mapped; registers are 32-bit, aligned.
        unsafe { ((self.base + reg) as *const u32).read_volatile() }
    }

    fn write(self, reg: u64, value: u32) {
        // SAFETY: as for `read`; the ICR registers only send IPIs.
        unsafe { ((self.base + reg) as *mut u32).write_volatile(value) }
    }

    /// Waits (up to 100 ms) for the previous IPI to be accepted.
    fn wait_sent(self) -> bool {
        let deadline = Deadline::after_us(100_000);
        while self.read(REG_ICR_LOW) & ICR_SEND_PENDING != 0 {
            if deadline.passed() {
                return false;
            }
            core::hint::spin_loop();
        }
        true
    }

    /// Sends an IPI with ICR low word `icr` to `apic_id`.
    pub fn send(self, apic_id: u32, icr: u32) -> Result<(), &'static str> {
        let dest = icr_destination(apic_id).ok_or("APIC id above 255 (needs x2APIC)")?;
        self.write(REG_ICR_HIGH, dest);
        self.write(REG_ICR_LOW, icr);
        if self.wait_sent() {
            Ok(())
        } else {
            Err("the local APIC did not send the IPI")
        }
    }

    /// Puts `apic_id` back into wait-for-SIPI (INIT asserted, de-asserted).
    pub fn send_init(self, apic_id: u32) -> Result<(), &'static str> {
        self.send(apic_id, icr_init_assert())?;
        delay_us(10_000);
        self.send(apic_id, icr_init_deassert())
    }
}

impl LocalApic {
    /// Turns this CPU's local APIC on for interrupts (software enable with
    /// [`SPURIOUS_VECTOR`], every priority accepted, its timer masked) and
    /// returns it. Needed on every CPU before it can be woken: INIT leaves
    /// an AP's local APIC software-disabled.
    pub fn enable_this_cpu() -> Result<Self, &'static str> {
        let apic = Self::this_cpu()?;
        apic.write(REG_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
        apic.write(REG_TPR, 0);
        apic.write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
        apic.write(REG_TIMER_INITIAL, 0);
        APIC_EOI_REGISTER.store(apic.base + REG_EOI, Ordering::Release);
        Ok(apic)
    }

    /// Sends [`WAKE_VECTOR`] to `apic_id`.
    pub fn send_wake(self, apic_id: u32) -> Result<(), &'static str> {
        self.send(apic_id, ICR_FIXED_ASSERT | u32::from(WAKE_VECTOR))
    }

    /// Measures the timer against the TSC (10 ms) and remembers the rate.
    /// Returns ticks per millisecond.
    pub fn calibrate_timer(self) -> u32 {
        self.write(REG_TIMER_DIVIDE, TIMER_DIVIDE_16);
        self.write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
        self.write(REG_TIMER_INITIAL, u32::MAX);
        delay_us(10_000);
        let left = self.read(REG_TIMER_CURRENT);
        self.write(REG_TIMER_INITIAL, 0);
        let per_ms = (u32::MAX - left) / 10;
        // A timer that did not count (no TSC rate known): QEMU's counts at
        // 1 GHz / 16.
        let per_ms = if per_ms == 0 { 62_500 } else { per_ms };
        TIMER_TICKS_PER_MS.store(per_ms, Ordering::Relaxed);
        per_ms
    }

    /// Interrupts this CPU with [`TIMER_VECTOR`] in about `ms` milliseconds
    /// (once).
    pub fn arm_timer_ms(self, ms: u32) {
        let per_ms = match TIMER_TICKS_PER_MS.load(Ordering::Relaxed) {
            0 => 62_500,
            n => n,
        };
        self.write(REG_TIMER_DIVIDE, TIMER_DIVIDE_16);
        self.write(REG_LVT_TIMER, u32::from(TIMER_VECTOR));
        self.write(REG_TIMER_INITIAL, per_ms.saturating_mul(ms).max(1));
    }

    /// Stops the timer (a pending interrupt may still arrive).
    pub fn stop_timer(self) {
        self.write(REG_TIMER_INITIAL, 0);
    }
}

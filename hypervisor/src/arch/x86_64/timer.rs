//! Busy-wait delays: the TSC, calibrated once against the PIT's channel 2
//! (ports 0x42/0x43, gated through port 0x61, as Linux's
//! `pit_calibrate_tsc` does). Only the boot CPU uses it.

use core::arch::x86_64::_rdtsc;
use core::sync::atomic::{AtomicU64, Ordering};

use super::port::{inb, outb};
use super::smp_plan::{pit_ticks, tsc_per_us};

const PIT_CH2: u16 = 0x42;
const PIT_MODE: u16 = 0x43;
const PORT_B: u16 = 0x61;
/// Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count), binary.
const CH2_MODE0: u8 = 0xB0;
const PORT_B_GATE2: u8 = 0x01;
const PORT_B_SPEAKER: u8 = 0x02;
const PORT_B_OUT2: u8 = 0x20;
/// Used when the PIT does not count: a deliberately generous guess (a
/// slower real clock only makes waits longer).
const FALLBACK_TSC_PER_US: u64 = 4000;

static TSC_PER_US: AtomicU64 = AtomicU64::new(0);

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { _rdtsc() }
}

/// TSC ticks as nanoseconds, at the calibrated rate.
pub fn tsc_to_ns(ticks: u64) -> u64 {
    (u128::from(ticks) * 1000 / u128::from(per_us())) as u64
}

/// Calibrates the TSC over 10 ms of PIT channel 2; returns TSC ticks per
/// microsecond, or `None` if the PIT did not count (then a fixed guess is
/// used by the delays).
pub fn calibrate() -> Option<u64> {
    const WINDOW_US: u64 = 10_000;
    let ticks = pit_ticks(WINDOW_US);
    outb(PORT_B, (inb(PORT_B) & !PORT_B_SPEAKER) | PORT_B_GATE2);
    outb(PIT_MODE, CH2_MODE0);
    outb(PIT_CH2, ticks as u8);
    outb(PIT_CH2, (ticks >> 8) as u8);
    let start = rdtsc();
    if inb(PORT_B) & PORT_B_OUT2 != 0 {
        // OUT2 is high right after a mode-0 count was loaded: no PIT here.
        TSC_PER_US.store(FALLBACK_TSC_PER_US, Ordering::Relaxed);
        return None;
    }
    let mut polls: u64 = 0;
    while inb(PORT_B) & PORT_B_OUT2 == 0 {
        polls += 1;
        if polls > 100_000_000 {
            TSC_PER_US.store(FALLBACK_TSC_PER_US, Ordering::Relaxed);
            return None;
        }
    }
    let per_us = tsc_per_us(rdtsc().wrapping_sub(start), ticks);
    TSC_PER_US.store(per_us, Ordering::Relaxed);
    Some(per_us)
}

fn per_us() -> u64 {
    match TSC_PER_US.load(Ordering::Relaxed) {
        0 => FALLBACK_TSC_PER_US,
        v => v,
    }
}

/// A point in time, `us` microseconds from now.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(u64);

impl Deadline {
    pub fn after_us(us: u64) -> Self {
        Deadline(rdtsc().saturating_add(us.saturating_mul(per_us())))
    }

    pub fn passed(self) -> bool {
        rdtsc() >= self.0
    }

    /// Microseconds left (0 once passed).
    pub fn remaining_us(self) -> u64 {
        self.0.saturating_sub(rdtsc()) / per_us()
    }
}

/// Busy-waits at least `us` microseconds.
pub fn delay_us(us: u64) {
    let d = Deadline::after_us(us);
    while !d.passed() {
        core::hint::spin_loop();
    }
}

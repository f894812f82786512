//! Rate limiting of log lines a guest can make the hypervisor print, in the
//! spirit of Xen's `gdprintk` (guest-triggered lines go through
//! `printk_ratelimit`: 10 lines per 5 s by default) and Linux's
//! `___ratelimit` (whose window this follows).
//!
//! A [`RateLimit`] lets a burst of `burst` lines through per window of
//! `interval_ms`; the window starts at the first line after the previous one
//! ended. Lines beyond the burst are suppressed and counted, and the next
//! line let through carries the count, as ` (K similar messages suppressed)`
//! at its end (always plural, as Linux's `N callbacks suppressed`, so that
//! tools read one form):
//!
//! ```text
//! numavisor: domain 1: dma exchange: gpa [...] ... (5244 similar messages suppressed)
//! ```
//!
//! What is still suppressed when the source goes away (a domain torn down)
//! is taken with [`RateLimit::take_suppressed`] and printed on its own line.
//!
//! The caller passes the time (`now_ms`, any monotonic millisecond clock,
//! for example the TSC through `timer::tsc_to_ns(rdtsc()) / 1_000_000`), so
//! the limiter needs no clock, no lock and no allocation: it lives inside
//! whatever already serialises its lines (a domain's state, behind its lock).

use core::fmt;

/// Xen's `printk_ratelimit_ms`: a window of 5 s.
pub const DEFAULT_INTERVAL_MS: u64 = 5_000;
/// Xen's `printk_ratelimit_burst`: 10 lines per window.
pub const DEFAULT_BURST: u32 = 10;

/// A burst of lines per interval, then silence, counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    interval_ms: u64,
    burst: u32,
    /// Start of the current window; `None` before the first line.
    window_start: Option<u64>,
    /// Lines let through in the current window.
    printed: u32,
    /// Lines suppressed since the last one let through.
    pending: u64,
    /// Lines suppressed since the limiter was made.
    total: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::new(DEFAULT_INTERVAL_MS, DEFAULT_BURST)
    }
}

impl RateLimit {
    /// `burst` lines per `interval_ms`. An interval of 0 never suppresses;
    /// a burst of 0 suppresses everything (and still counts it).
    pub const fn new(interval_ms: u64, burst: u32) -> RateLimit {
        RateLimit {
            interval_ms,
            burst,
            window_start: None,
            printed: 0,
            pending: 0,
            total: 0,
        }
    }

    /// Whether a line that would be printed at `now_ms` may be: `Some` with
    /// the count of lines suppressed since the last one let through (print
    /// it at the line's end; it shows nothing when the count is 0), or
    /// `None`: drop the line (it is counted).
    ///
    /// A clock that goes back (another CPU's TSC, a wrap) starts a new
    /// window rather than holding the old one open.
    pub fn check(&mut self, now_ms: u64) -> Option<Suppressed> {
        let new_window = match self.window_start {
            None => true,
            Some(start) => now_ms < start || now_ms - start >= self.interval_ms,
        };
        if new_window {
            self.window_start = Some(now_ms);
            self.printed = 0;
        }
        if self.printed < self.burst {
            self.printed += 1;
            Some(Suppressed(core::mem::take(&mut self.pending)))
        } else {
            self.pending += 1;
            self.total += 1;
            None
        }
    }

    /// The lines suppressed since the last one let through, if any, now
    /// counted as reported: for a last line when the source goes away, e.g.
    /// `numavisor: domain 1: 7 similar messages suppressed`.
    pub fn take_suppressed(&mut self) -> Option<u64> {
        match core::mem::take(&mut self.pending) {
            0 => None,
            n => Some(n),
        }
    }

    /// Every line suppressed since the limiter was made.
    pub fn total_suppressed(&self) -> u64 {
        self.total
    }
}

/// How many lines were suppressed before this one: displays as
/// ` (K similar messages suppressed)`, or as nothing when K is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suppressed(pub u64);

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} similar messages suppressed)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// Runs `limit` over lines at `times`, returning what would be printed.
    fn lines(limit: &mut RateLimit, times: &[u64]) -> Vec<String> {
        times
            .iter()
            .filter_map(|&t| limit.check(t).map(|s| format!("line at {t}{s}")))
            .collect()
    }

    #[test]
    fn a_burst_per_interval_then_the_count_on_the_next_line() {
        let mut l = RateLimit::new(1_000, 3);
        let times: Vec<u64> = (0..10).chain([1_000, 1_001]).collect();
        assert_eq!(
            lines(&mut l, &times),
            [
                "line at 0",
                "line at 1",
                "line at 2",
                "line at 1000 (7 similar messages suppressed)",
                "line at 1001",
            ]
        );
        assert_eq!(l.total_suppressed(), 7);
        assert_eq!(l.take_suppressed(), None, "already reported");
    }

    #[test]
    fn the_window_starts_at_the_first_line_after_the_last_window() {
        let mut l = RateLimit::new(1_000, 1);
        assert!(l.check(10).is_some());
        assert!(l.check(1_009).is_none(), "still the window of 10");
        // A quiet spell: the next window starts at 5000, not at 4010.
        assert_eq!(l.check(5_000), Some(Suppressed(1)));
        assert!(l.check(5_999).is_none());
        assert_eq!(l.check(6_000), Some(Suppressed(1)));
    }

    #[test]
    fn a_clock_going_back_starts_a_new_window() {
        let mut l = RateLimit::new(1_000, 1);
        assert!(l.check(u64::MAX - 5).is_some());
        assert!(l.check(u64::MAX).is_none());
        assert_eq!(l.check(3), Some(Suppressed(1)));
    }

    #[test]
    fn suppressed_lines_left_at_the_end_are_taken_once() {
        let mut l = RateLimit::new(DEFAULT_INTERVAL_MS, 2);
        assert_eq!(lines(&mut l, &[0, 0, 0, 1, 2]).len(), 2);
        assert_eq!(l.take_suppressed(), Some(3));
        assert_eq!(l.take_suppressed(), None);
        assert_eq!(l.total_suppressed(), 3);
        // Taken means reported: the next line does not repeat the count.
        assert_eq!(l.check(DEFAULT_INTERVAL_MS), Some(Suppressed(0)));
    }

    #[test]
    fn interval_zero_never_suppresses_and_burst_zero_always_does() {
        let mut open = RateLimit::new(0, 1);
        assert_eq!(lines(&mut open, &[0; 100]).len(), 100);
        let mut shut = RateLimit::new(1_000, 0);
        assert!(lines(&mut shut, &[0, 1_000, 1_000_000]).is_empty());
        assert_eq!(shut.take_suppressed(), Some(3));
    }

    #[test]
    fn suppressed_displays_as_xen_and_linux_readers_expect() {
        assert_eq!(format!("x{}", Suppressed(0)), "x");
        assert_eq!(
            format!("x{}", Suppressed(1)),
            "x (1 similar messages suppressed)"
        );
        assert_eq!(
            format!("x{}", Suppressed(5_244)),
            "x (5244 similar messages suppressed)"
        );
    }

    /// The case issue 12 found (a million-call run printed 5,254 DMA
    /// exchange lines): a million lines, one a millisecond, with the
    /// defaults (10 lines per 5 s).
    #[test]
    fn a_million_calls_print_one_burst_per_interval() {
        let mut l = RateLimit::default();
        let mut printed = 0u64;
        let mut reported = 0u64;
        for i in 0..1_000_000u64 {
            if let Some(Suppressed(n)) = l.check(i) {
                printed += 1;
                reported += n;
            }
        }
        // 1,000 s of calls: 200 windows of 5 s, 10 lines each.
        assert_eq!(printed, 200 * u64::from(DEFAULT_BURST));
        reported += l.take_suppressed().unwrap_or(0);
        assert_eq!(printed + reported, 1_000_000, "every line accounted for");
        assert_eq!(l.total_suppressed(), reported);
    }

    proptest! {
        /// Every line is either printed or counted exactly once; no span
        /// of `interval` holds more than two bursts (the end of one window
        /// and the start of the next); and a line comes through whenever
        /// none did for a whole interval.
        #[test]
        fn bounded_live_and_nothing_lost(
            interval in 0u64..50,
            burst in 0u32..5,
            gaps in proptest::collection::vec(0u64..30, 0..200),
        ) {
            let mut l = RateLimit::new(interval, burst);
            let mut t = 0u64;
            let mut passed: Vec<u64> = Vec::new();
            let mut counted = 0u64;
            for g in &gaps {
                t += g;
                let quiet = passed.last().is_none_or(|&p| t - p >= interval);
                match l.check(t) {
                    Some(Suppressed(n)) => {
                        passed.push(t);
                        counted += n;
                    }
                    None => prop_assert!(!quiet || burst == 0, "line at {} held back", t),
                }
            }
            counted += l.take_suppressed().unwrap_or(0);
            prop_assert_eq!(passed.len() as u64 + counted, gaps.len() as u64);
            prop_assert_eq!(l.total_suppressed(), counted);
            for (i, &start) in passed.iter().enumerate() {
                let span = passed[i..].iter().take_while(|&&p| p < start + interval).count();
                prop_assert!(span <= 2 * burst as usize);
            }
        }
    }
}

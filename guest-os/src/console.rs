//! The early console: `print!`/`println!` through the `CONSOLE_WRITE`
//! hypercall.
//!
//! Output is buffered until a newline so that each hypercall carries one
//! whole line (the hypervisor prefixes each line with the domain's name; a
//! line is split only if it is longer than `CONSOLE_WRITE_MAX`). Guest lines
//! carry no prefix of their own beyond the `guest: ` that the boot code
//! writes; KTAP lines carry none at all, so a parser only has to strip the
//! hypervisor's prefix.
//!
//! The bytes go to a sink registered at boot ([`set_sink`]): on bare metal a
//! function that issues the hypercall, in host tests a capture.

use core::fmt::{self, Write};

use pv_abi::hypercall::CONSOLE_WRITE_MAX;
use spin::Mutex;

/// Where whole lines go.
pub type Sink = fn(&[u8]);

/// Bytes buffered before a flush: the most one `CONSOLE_WRITE` takes.
pub const LINE_MAX: usize = CONSOLE_WRITE_MAX as usize;

/// A line buffer in front of a sink.
pub struct LineBuffer {
    sink: Option<Sink>,
    buf: [u8; LINE_MAX],
    len: usize,
}

impl LineBuffer {
    /// An empty buffer with no sink (output is dropped until one is set).
    pub const fn new() -> Self {
        LineBuffer {
            sink: None,
            buf: [0; LINE_MAX],
            len: 0,
        }
    }

    /// Sends what is buffered, if anything.
    pub fn flush(&mut self) {
        if self.len > 0 {
            if let Some(sink) = self.sink {
                sink(&self.buf[..self.len]);
            }
            self.len = 0;
        }
    }

    /// Appends bytes, sending each completed line (newline included) and
    /// each full buffer.
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' || self.len == LINE_MAX {
                self.flush();
            }
        }
    }
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

static CONSOLE: Mutex<LineBuffer> = Mutex::new(LineBuffer::new());

/// Sends console output to `sink` (replacing any previous one), after
/// flushing what the previous sink had pending.
pub fn set_sink(sink: Sink) {
    let mut c = CONSOLE.lock();
    c.flush();
    c.sink = Some(sink);
}

/// Formats and writes; used by the macros.
pub fn print_fmt(args: fmt::Arguments<'_>) {
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Sends a partial line now (before a shutdown, for example).
pub fn flush() {
    CONSOLE.lock().flush();
}

/// Tries to take the console lock before [`print_panic`] breaks it.
const PANIC_LOCK_TRIES: u32 = 1 << 22;

/// The panic path: writes even if the console lock is held (a panic while
/// printing), after flushing whatever partial line was pending. Another
/// vCPU printing a line gets a moment to finish it first.
pub fn print_panic(args: fmt::Arguments<'_>) {
    let mut tries = 0;
    let mut c = loop {
        if let Some(c) = CONSOLE.try_lock() {
            break c;
        }
        tries += 1;
        if tries >= PANIC_LOCK_TRIES {
            // SAFETY: interrupts are off, so the holder is either the code
            // that panicked on this vCPU, which never resumes, or another
            // vCPU that has held the lock for millions of tries (stuck, or
            // dead); the domain ends right after this line, so at worst
            // the two lines mix.
            unsafe { CONSOLE.force_unlock() };
            break CONSOLE.lock();
        }
        core::hint::spin_loop();
    };
    if c.len > 0 {
        c.push(b"\n");
    }
    let _ = c.write_fmt(args);
    c.flush();
}

/// Prints to the guest console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the guest console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => {
        $crate::console::print_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
pub(crate) mod capture {
    //! A global capture sink for host tests, with a lock that serializes the
    //! tests that use the global console.
    use std::string::String;
    use std::sync::{Mutex, MutexGuard};
    use std::vec::Vec;

    static LINES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    static LOCK: Mutex<()> = Mutex::new(());

    fn sink(bytes: &[u8]) {
        LINES.lock().unwrap().push(bytes.to_vec());
    }

    /// Takes the console for one test: installs the capture and clears it.
    pub fn begin() -> MutexGuard<'static, ()> {
        let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        super::set_sink(sink);
        LINES.lock().unwrap().clear();
        guard
    }

    /// Every write so far, one entry per sink call.
    pub fn writes() -> Vec<Vec<u8>> {
        super::flush();
        LINES.lock().unwrap().clone()
    }

    /// Everything written so far, as text.
    pub fn text() -> String {
        writes()
            .iter()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_write_per_line() {
        let _g = capture::begin();
        print!("guest: a");
        print!("b {}", 1);
        println!();
        println!("guest: second {}", "line");
        print!("partial");
        let w = capture::writes();
        assert_eq!(
            w,
            vec![
                b"guest: ab 1\n".to_vec(),
                b"guest: second line\n".to_vec(),
                b"partial".to_vec()
            ]
        );
    }

    #[test]
    fn long_lines_split_at_the_hypercall_limit() {
        let mut b = LineBuffer::new();
        static SEEN: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
        fn sink(bytes: &[u8]) {
            SEEN.lock().unwrap().push(bytes.len());
        }
        b.sink = Some(sink);
        let long = vec![b'x'; LINE_MAX + 10];
        b.push(&long);
        b.push(b"\n");
        assert_eq!(*SEEN.lock().unwrap(), vec![LINE_MAX, 11]);
    }
}

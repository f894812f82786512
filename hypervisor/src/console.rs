//! The hypervisor console: `print!`/`println!` and the log-line conventions.
//!
//! The console writes through a sink registered at boot (the serial port on
//! bare metal). Lines that tools read have stable prefixes, documented in the
//! README: `(XEN)`-style prefixes are not used; instead every line of the
//! hypervisor starts with `numavisor: ` except the `xl info -n` tables, which
//! follow Xen's own format so that scripts written for Xen read them.

use core::fmt::{self, Write};

use spin::Mutex;

/// Where console bytes go.
pub type Sink = fn(&[u8]);

/// Set once at boot; read without a lock so that the panic path never waits.
static SINK: spin::Once<Sink> = spin::Once::new();
/// Keeps whole `print!` calls together when several CPUs print.
static LINE_LOCK: Mutex<()> = Mutex::new(());

/// Sends console output to `sink`. Only the first call takes effect.
pub fn set_sink(sink: Sink) {
    SINK.call_once(|| sink);
}

struct SinkWriter(Sink);

impl Write for SinkWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        (self.0)(s.as_bytes());
        Ok(())
    }
}

/// Formats and writes; used by the macros.
pub fn print_fmt(args: fmt::Arguments<'_>) {
    let _line = LINE_LOCK.lock();
    print_fmt_unlocked(args);
}

/// Writes without taking the line lock: for the panic path, where the lock
/// may be held by the code that panicked.
pub fn print_fmt_unlocked(args: fmt::Arguments<'_>) {
    if let Some(&sink) = SINK.get() {
        let _ = SinkWriter(sink).write_fmt(args);
    }
}

/// Prints to the hypervisor console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the hypervisor console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

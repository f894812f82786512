//! Ending the run through QEMU's `isa-debug-exit` device.

use pv_abi::exit::{ExitCode, DEBUG_EXIT_PORT};

use super::{cpu, port};

/// Ends the QEMU run with `code`. On a machine without the debug-exit device
/// the write does nothing and the CPU halts instead.
pub fn exit(code: ExitCode) -> ! {
    port::outl(DEBUG_EXIT_PORT, code as u32);
    cpu::halt_forever()
}

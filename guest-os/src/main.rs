//! Bare-metal entry point of the guest kernel: the path of one boot.
//!
//! The hypervisor starts vCPU 0 at `_start` in 64-bit mode with RSI = the
//! guest-physical address of the start-info page and RSP undefined
//! (`pv_abi::start_info`). `_start` loads a 64 KiB boot stack from `.bss`
//! and calls `guest_main`, which registers the console, runs the boot
//! sequence (`guest_os::boot::run`: ABI check, start-info, heap, vNUMA,
//! ACPI, the printed view, the KTAP suites) and shuts the domain down with
//! its status.

#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "the guest OS runs inside a numavisor domain: build and boot it with `cargo xtask run`"
    );
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod bare_metal;

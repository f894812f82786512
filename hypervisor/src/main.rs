//! Bare-metal entry point of the hypervisor: the path of one boot.
//!
//! `multiboot_entry` (arch/x86_64/entry.rs) switches to long mode and calls
//! [`hypervisor_main`], which reads the boot information, discovers the
//! machine's NUMA topology from ACPI, builds the frame table and the NUMA
//! heap, prints the machine as `xl info -n` does, checks the heap, and ends
//! the QEMU run with an exit code (see `pv_abi::exit`).

#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hypervisor runs on bare metal: build and boot it with `cargo xtask run`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod bare_metal;

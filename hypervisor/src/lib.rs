//! numavisor's hypervisor, as a library.
//!
//! Everything that is not hardware access (table parsers, the topology
//! builder, the frame table and the NUMA heap, the boot-protocol parser) lives
//! here in plain modules that compile and are unit-tested on the host. The
//! hardware side (`arch`) only builds for `x86_64-unknown-none`; `main.rs` is
//! the bare-metal entry point that strings everything together.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod console;

pub mod acpi;
#[cfg(target_os = "none")]
pub mod arch;
pub mod boot;
pub mod domain;
pub mod hypercall;
pub mod mm;
pub mod numa;
pub mod pci;
pub mod ratelimit;
pub mod report;
pub mod svm;

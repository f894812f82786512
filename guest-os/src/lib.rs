//! numavisor's guest OS, as a library.
//!
//! The path of one boot, in the order the modules run (see `main.rs` for the
//! bare-metal entry):
//!
//! 1. [`console`]: `print!`/`println!`, one `CONSOLE_WRITE` hypercall per line.
//! 2. [`hypercall`]: typed wrappers over `pv-abi`, the query protocol
//!    (probe the counts, then fetch), one place for every hypercall.
//! 3. [`boot`]: the boot sequence itself ([`boot::run`]): ABI check, the
//!    start-info page, the heap, vNUMA, ACPI, the printed view, failure modes
//!    ([`cmdline`]), the test suites, the shutdown status.
//! 4. [`numa`]: the vNUMA topology, the virtual SRAT/SLIT/MADT, Linux's node
//!    numbering and the cross-check between the two sources.
//! 5. [`mm`]: the memory manager built on that view: nodes, zones by machine
//!    address, buddy allocators, zonelists, `numa_mem_id`, numastat.
//! 6. `smp` (ABI 1.3): the secondary vCPUs, brought up with `VCPU_OP`, each
//!    running as its own CPU ([`percpu`]) until vCPU 0 takes it down.
//! 7. [`ktest`]: the in-guest test framework, its KTAP printer and the suites.
//!
//! Everything that is not hardware access runs on the host too: the boot
//! sequence talks to the machine only through [`platform::Platform`], which
//! the bare-metal kernel implements with `VMMCALL` and the identity map, and
//! the host tests implement with a model hypervisor that follows `pv-abi`'s
//! documentation. Hardware access lives in [`arch`] (bare metal only).

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod console;

#[cfg(target_os = "none")]
pub mod arch;
pub mod boot;
pub mod cmdline;
pub mod dma;
pub mod drivers;
pub mod hypercall;
pub mod ktest;
pub mod mm;
pub mod numa;
pub mod percpu;
pub mod platform;
#[cfg(not(feature = "abi-1-2"))]
pub mod smp;

#[cfg(test)]
mod mock;

#[cfg(test)]
mod boot_tests;

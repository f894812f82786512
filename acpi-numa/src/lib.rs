//! The ACPI tables NUMA discovery needs, shared by both kernels: the
//! hypervisor reads the machine's tables, the guest reads the virtual ones the
//! hypervisor wrote for its domain (with [`build`]).
//!
//! Only what NUMA discovery needs: finding the RSDP, walking the RSDT/XSDT,
//! and parsing SRAT, SLIT and MADT. Firmware tables are untrusted input: every
//! parser works on a copied byte slice, checks every length and offset, and
//! reports problems as [`AcpiError`] (table unusable) or as warning strings
//! (table usable, something skipped). Nothing here can panic on table data.
//!
//! Addresses are ACPI "physical" addresses: machine addresses when the
//! hypervisor reads firmware tables, guest-physical ones inside a domain.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod build;
pub mod madt;
pub mod slit;
pub mod srat;
pub mod tables;

use core::fmt;

pub use madt::{Madt, MadtCpu};
pub use slit::Slit;
pub use srat::{Srat, SratCpu, SratEntry, SratMemory};
pub use tables::{find_rsdp, AcpiError, AcpiTables, PhysMemory, Rsdp, SdtHeader, TableRef};

/// A physical address as ACPI tables hold them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysAddr(pub u64);

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

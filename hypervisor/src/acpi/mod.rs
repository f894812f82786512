//! ACPI table discovery and parsing.
//!
//! Only what NUMA discovery needs: finding the RSDP, walking the RSDT/XSDT,
//! and parsing SRAT, SLIT and MADT. Firmware tables are untrusted input: every
//! parser works on a copied byte slice, checks every length and offset, and
//! reports problems as [`AcpiError`] (table unusable) or as warning strings
//! (table usable, something skipped). Nothing here can panic on table data.

pub mod madt;
pub mod slit;
pub mod srat;
pub mod tables;

#[cfg(test)]
pub(crate) mod testutil;

pub use madt::{Madt, MadtCpu};
pub use slit::Slit;
pub use srat::{Srat, SratCpu, SratEntry, SratMemory};
pub use tables::{find_rsdp, AcpiError, AcpiTables, PhysMemory, Rsdp, SdtHeader, TableRef};

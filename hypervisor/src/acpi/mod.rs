//! ACPI table discovery and parsing: the shared `acpi-numa` crate, reading
//! the machine's firmware tables through the identity map.

pub use acpi_numa::*;

//! Domains: what a guest is given, before anything is allocated or run.
//!
//! - [`config`]: the domain config (a boot module in the spirit of Xen's
//!   `xl.cfg`), its parser, and the machine-mirroring default.
//! - [`layout`]: the guest-physical ("metaphysical") map of a domain, from its
//!   vnodes and the machine memory the builder got for each, for every
//!   [`LayoutKind`]; the P->node == M->node check; the start-info ranges.
//! - [`elf`]: parsing and validation of the guest's ELF64 image.
//! - [`abi`]: the ABI version the image declares in its ELF note, and the
//!   refusal of another major.
//! - [`exchange`]: a running domain's guest-physical to machine state and
//!   the DMA exchange on it (ABI 1.2).
//!
//! All three take untrusted input (a config file, an image, firmware-derived
//! topology) and answer with an error message, never a panic.
//!
//! Guest-physical addresses are `pv-abi`'s [`Gpa`] and [`Gfn`], the same
//! types the guest uses; machine ones have theirs in `mm::addr`. They never
//! mix through a bare `u64`.

pub mod abi;
pub mod build;
pub mod config;
pub mod elf;
pub mod exchange;
pub mod layout;
pub mod placement;
pub mod run;
#[cfg(test)]
pub(crate) mod testutil;

pub use config::{ConfigError, DomainConfig, LayoutKind, VnodeConfig};
pub use elf::{ElfError, GuestImage, Segment};
pub use layout::{DomainLayout, GpaRange, Mapping, MemoryRange, VnodeLayout};

/// One past the highest guest-physical address a domain may use: 48 bits,
/// what 4-level nested paging translates.
pub const GPA_LIMIT: u64 = 1 << 48;

pub use pv_abi::{Gfn, Gpa};

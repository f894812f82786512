//! x86_64: `VMMCALL`, CPUID, control registers ([`cpu`]), raw access to
//! identity-mapped guest memory ([`phys`]), page-table walks and the one
//! mapping the guest adds itself ([`paging`]), and the [`platform`] the boot
//! sequence runs on.

pub mod cpu;
pub mod paging;
pub mod phys;
pub mod platform;

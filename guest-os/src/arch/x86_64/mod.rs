//! x86_64: `VMMCALL`, CPUID, control registers ([`cpu`]), raw access to
//! identity-mapped guest memory ([`phys`]), page-table walks and the one
//! mappings the guest adds itself ([`paging`]: a test page, device memory),
//! PCI configuration ports ([`port`]), and the [`platform`] the boot
//! sequence runs on.

pub mod cpu;
pub mod paging;
pub mod phys;
pub mod platform;
pub mod port;

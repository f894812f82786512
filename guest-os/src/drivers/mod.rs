//! Device drivers: PCI enumeration ([`pci`]) and QEMU's educational device
//! ([`edu`]).

pub mod edu;
pub mod pci;

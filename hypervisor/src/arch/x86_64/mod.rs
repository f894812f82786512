//! x86_64 (AMD64) hardware access for the bare-metal hypervisor.

pub mod apic;
pub mod cpu;
pub mod entry;
pub mod exit;
pub mod idt;
pub mod memory;
pub mod paging;
pub mod pci;
pub mod port;
pub mod serial;
pub mod smp;
pub mod smp_plan;
pub mod svm;
pub mod timer;

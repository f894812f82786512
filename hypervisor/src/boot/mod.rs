//! Boot protocol (Multiboot v1) and the hypervisor command line.

pub mod cmdline;
pub mod multiboot;

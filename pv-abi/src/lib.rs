//! numavisor's paravirtual ABI: the contract shared by the hypervisor, the
//! guest OS and the host tools.
//!
//! `no_std`, `#[repr(C)]` and fixed-width types only. This crate grows one file
//! per concept (hypercalls, start-info, vNUMA, physinfo); today it holds the
//! status codes that end a QEMU run.

#![no_std]

pub mod exit;

//! The machine's NUMA topology: nodes, their memory and CPUs, and distances.
//!
//! `topology` turns the firmware's description (memory map, SRAT, SLIT, MADT)
//! into a [`topology::Topology`], with Linux's node numbering and safe
//! fallbacks for broken tables; `fake` implements `numa=fake=N`.

use core::fmt;

/// Most nodes the hypervisor supports (Xen and Linux x86 defaults are 64).
pub const MAX_NODES: usize = 64;
/// Distance of a node to itself, as ACPI defines it.
pub const LOCAL_DISTANCE: u8 = 10;
/// Distance assumed between two nodes when the firmware gives none.
pub const REMOTE_DISTANCE: u8 = 20;

/// A node id, numbered the way Linux numbers them (see `topology`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct NodeId(pub u8);

/// A logical CPU number: 0 is the boot CPU, the rest follow the MADT's order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct CpuId(pub u32);

impl NodeId {
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl CpuId {
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for CpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

pub mod fake;
pub mod topology;

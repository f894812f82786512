//! The machine's topology and the calling domain's placement on it, modelled
//! on Xen's `XEN_SYSCTL_physinfo` / `XEN_SYSCTL_numainfo` (what `xl info -n`
//! prints), following the [query protocol](crate::query).
//!
//! [`PhysInfo`] ([`Hypercall::PhysInfo`](crate::Hypercall::PhysInfo)) reports
//! nodes, CPUs and memory. Its buffers:
//! - `node_mem`: `nr_nodes` [`NodeMemInfo`]s (8-byte aligned);
//! - `node_distance`: `nr_nodes * nr_nodes` `u32`s, row-major (4-byte aligned);
//! - `cpu_to_node`: `nr_cpus` `u32`s (4-byte aligned), the node of each CPU,
//!   or [`INVALID_NODE`](crate::node::INVALID_NODE).
//!
//! [`DomainNodePages`] ([`Hypercall::DomainNodePages`](crate::Hypercall::DomainNodePages))
//! reports how many pages of the calling domain each physical node backs,
//! which proves placement from inside the guest.
//!
//! Node ids follow Linux ([`node`](crate::node)); CPU ids are the
//! hypervisor's, which are Linux's on the same machine (boot CPU first, then
//! MADT order). Page counts are in [`PAGE_SIZE`](crate::PAGE_SIZE) pages.

use core::mem::size_of;

use crate::addr::Gpa;
use crate::error::Error;
use crate::node::distance_entries;
use crate::query::{check_capacity, Query};

abi_struct! {
    /// Memory of one physical node (`xen_sysctl_meminfo`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct NodeMemInfo(size = 16, align = 8) {
        /// Pages the node has (0 for a memoryless node).
        pub size_pages: u64 => 0,
        /// Pages free in the hypervisor's heap on that node.
        pub free_pages: u64 => 8,
    }
}

abi_struct! {
    /// `PHYSINFO`'s in/out structure.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PhysInfo(size = 56, align = 8, sized_by = size) {
        /// In: `size_of` the caller knows. Out: bytes the hypervisor handled.
        pub size: u32 => 0,
        /// Must be 0.
        pub flags: u32 => 4,
        /// In: capacity of `node_mem` (and of `node_distance`, squared). Out: nodes.
        pub nr_nodes: u32 => 8,
        /// In: capacity of `cpu_to_node`. Out: CPUs.
        pub nr_cpus: u32 => 12,
        /// Out: pages of machine memory the hypervisor manages.
        pub total_pages: u64 => 16,
        /// Out: of those, pages free now.
        pub free_pages: u64 => 24,
        /// Buffer of `nr_nodes` [`NodeMemInfo`]s.
        pub node_mem: Gpa => 32,
        /// Buffer of `nr_nodes * nr_nodes` `u32` distances.
        pub node_distance: Gpa => 40,
        /// Buffer of `nr_cpus` `u32` node ids.
        pub cpu_to_node: Gpa => 48,
    }
}

/// The counts of a machine topology (not an ABI structure).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PhysCounts {
    /// Physical nodes.
    pub nr_nodes: u32,
    /// CPUs.
    pub nr_cpus: u32,
}

impl PhysCounts {
    /// Entries of the distance matrix.
    pub const fn distance_entries(&self) -> u64 {
        distance_entries(self.nr_nodes)
    }
}

impl PhysInfo {
    /// A request with these capacities and buffers.
    pub const fn new(
        capacity: PhysCounts,
        node_mem: Gpa,
        node_distance: Gpa,
        cpu_to_node: Gpa,
    ) -> Self {
        PhysInfo {
            size: size_of::<Self>() as u32,
            flags: 0,
            nr_nodes: capacity.nr_nodes,
            nr_cpus: capacity.nr_cpus,
            total_pages: 0,
            free_pages: 0,
            node_mem,
            node_distance,
            cpu_to_node,
        }
    }

    /// A request with no buffers, to learn the counts (and totals).
    pub const fn probe() -> Self {
        Self::new(
            PhysCounts {
                nr_nodes: 0,
                nr_cpus: 0,
            },
            Gpa::NULL,
            Gpa::NULL,
            Gpa::NULL,
        )
    }

    /// The counts fields.
    pub const fn counts(&self) -> PhysCounts {
        PhysCounts {
            nr_nodes: self.nr_nodes,
            nr_cpus: self.nr_cpus,
        }
    }

    /// The hypervisor's side of the too-small rule: writes `actual` into the
    /// counts and returns [`Error::BufferTooSmall`] if any capacity was
    /// smaller (then no buffer may be written). The totals are the
    /// hypervisor's to set either way.
    pub fn reply(&mut self, actual: PhysCounts) -> Result<(), Error> {
        let fits = check_capacity(self.nr_nodes, actual.nr_nodes)
            .and(check_capacity(self.nr_cpus, actual.nr_cpus));
        self.nr_nodes = actual.nr_nodes;
        self.nr_cpus = actual.nr_cpus;
        fits
    }
}

impl Default for PhysInfo {
    fn default() -> Self {
        Self::probe()
    }
}

impl Query for PhysInfo {
    const SIZE_V1_0: u32 = 56;

    fn size(&self) -> u32 {
        self.size
    }

    fn set_size(&mut self, size: u32) {
        self.size = size;
    }

    fn reserved_are_zero(&self) -> bool {
        self.flags == 0
    }
}

abi_struct! {
    /// `DOMAIN_NODE_PAGES`'s in/out structure.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct DomainNodePages(size = 24, align = 8, sized_by = size) {
        /// In: `size_of` the caller knows. Out: bytes the hypervisor handled.
        pub size: u32 => 0,
        /// Must be 0.
        pub flags: u32 => 4,
        /// In: capacity of `pages`. Out: physical nodes.
        pub nr_nodes: u32 => 8,
        /// Must be 0.
        pub reserved: u32 => 12,
        /// Buffer of `nr_nodes` `u64`s (8-byte aligned): entry N = pages of
        /// the calling domain's memory backed by physical node N.
        pub pages: Gpa => 16,
    }
}

impl DomainNodePages {
    /// A request for up to `capacity` nodes into `pages`.
    pub const fn new(capacity: u32, pages: Gpa) -> Self {
        DomainNodePages {
            size: size_of::<Self>() as u32,
            flags: 0,
            nr_nodes: capacity,
            reserved: 0,
            pages,
        }
    }

    /// The hypervisor's side of the too-small rule: writes `actual_nodes`
    /// and returns [`Error::BufferTooSmall`] if the capacity was smaller.
    pub fn reply(&mut self, actual_nodes: u32) -> Result<(), Error> {
        let fits = check_capacity(self.nr_nodes, actual_nodes);
        self.nr_nodes = actual_nodes;
        fits
    }
}

impl Default for DomainNodePages {
    fn default() -> Self {
        Self::new(0, Gpa::NULL)
    }
}

impl Query for DomainNodePages {
    const SIZE_V1_0: u32 = 24;

    fn size(&self) -> u32 {
        self.size
    }

    fn set_size(&mut self, size: u32) {
        self.size = size;
    }

    fn reserved_are_zero(&self) -> bool {
        self.flags == 0 && self.reserved == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::accept_size;
    use crate::Pod;
    use core::mem::offset_of;

    #[test]
    fn layouts() {
        assert_eq!(size_of::<NodeMemInfo>(), 16);
        assert_eq!(offset_of!(NodeMemInfo, free_pages), 8);
        assert_eq!(size_of::<PhysInfo>(), 56);
        assert_eq!(offset_of!(PhysInfo, nr_cpus), 12);
        assert_eq!(offset_of!(PhysInfo, total_pages), 16);
        assert_eq!(offset_of!(PhysInfo, node_mem), 32);
        assert_eq!(offset_of!(PhysInfo, cpu_to_node), 48);
        assert_eq!(size_of::<DomainNodePages>(), 24);
        assert_eq!(offset_of!(DomainNodePages, nr_nodes), 8);
        assert_eq!(offset_of!(DomainNodePages, pages), 16);
    }

    #[test]
    fn too_small_protocol() {
        let actual = PhysCounts {
            nr_nodes: 4,
            nr_cpus: 6,
        };
        let mut p = PhysInfo::probe();
        assert_eq!(p.reply(actual), Err(Error::BufferTooSmall));
        assert_eq!(p.counts(), actual);
        assert_eq!(p.counts().distance_entries(), 16);
        let cap = PhysCounts {
            nr_nodes: 4,
            nr_cpus: 8,
        };
        let mut p = PhysInfo::new(cap, Gpa(0x1000), Gpa(0x2000), Gpa(0x3000));
        assert_eq!(p.reply(actual), Ok(()));
        assert_eq!(p.counts(), actual);

        let mut d = DomainNodePages::new(2, Gpa(0x4000));
        assert_eq!(d.reply(4), Err(Error::BufferTooSmall));
        assert_eq!(d.nr_nodes, 4);
        let mut d = DomainNodePages::new(4, Gpa(0x4000));
        assert_eq!(d.reply(4), Ok(()));
    }

    #[test]
    fn encoding_round_trip() {
        let mut p = PhysInfo::new(
            PhysCounts {
                nr_nodes: 2,
                nr_cpus: 4,
            },
            Gpa(0x1000),
            Gpa(0x2000),
            Gpa(0x3000),
        );
        p.total_pages = 0x12_3456;
        let bytes = p.as_bytes();
        assert_eq!(&bytes[16..24], &0x12_3456u64.to_le_bytes());
        assert_eq!(PhysInfo::read_from(bytes), Some(p));
        let m = NodeMemInfo {
            size_pages: 7,
            free_pages: 3,
        };
        assert_eq!(NodeMemInfo::read_from(m.as_bytes()), Some(m));
        let d = DomainNodePages::new(3, Gpa(0x5000));
        assert_eq!(DomainNodePages::read_from(d.as_bytes()), Some(d));
        assert!(d.reserved_are_zero());
        assert_eq!(accept_size::<PhysInfo>(8), Err(Error::InvalidArgument));
        assert_eq!(accept_size::<DomainNodePages>(4096), Ok(24));
    }
}

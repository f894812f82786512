//! The domain's virtual NUMA topology, as [`Hypercall::GetVnuma`](crate::Hypercall::GetVnuma)
//! reports it: the Rust form of Xen's `XENMEM_get_vnumainfo`
//! (`struct xen_vnuma_topology_info`, `struct xen_vmemrange`), for the
//! calling domain only, following the [query protocol](crate::query).
//!
//! The caller passes capacities and buffers:
//! - `vdistance`: `nr_vnodes * nr_vnodes` `u32`s, row-major
//!   ([`node::distance_index`](crate::node::distance_index));
//! - `vcpu_to_vnode`: `nr_vcpus` `u32`s, the vnode of each vCPU;
//! - `vmemrange`: `nr_vmemranges` [`VmemRange`]s, sorted by `start`, not
//!   overlapping; a memoryless vnode has none, a vnode may have several.
//!
//! - `vnode_mem` (ABI 1.1, [`Features::VNODE_MEM`](crate::Features::VNODE_MEM)):
//!   `nr_vnodes` [`VnodeMemInfo`]s, or [`Gpa::NULL`] for none.
//!
//! If any capacity is too small the hypervisor writes the needed counts back
//! and returns [`Error::BufferTooSmall`]; on success it writes the actual
//! counts. `u32` arrays must be 4-byte aligned, `vmemrange` and `vnode_mem`
//! 8-byte aligned.
//!
//! # ABI 1.1: `vnode_mem`, a field appended compatibly
//!
//! ABI 1.1 appended `vnode_mem` to [`VnumaTopologyInfo`] (48 bytes in 1.0,
//! 56 in 1.1), which works because the structure carries its own size: a
//! 1.1 guest passes `size` = 56; a 1.0 hypervisor handles the 48 bytes it
//! knows, writes `size` = 48 back and never touches the `vnode_mem` buffer,
//! so the guest sees the field was not handled (and the feature bit was
//! clear to begin with). A 1.0 guest passes 48; a 1.1 hypervisor reads the
//! missing field as [`Gpa::NULL`] and answers exactly as 1.0 did.

use core::mem::size_of;

use crate::addr::Gpa;
use crate::error::Error;
use crate::node::distance_entries;
use crate::query::{check_capacity, Query};
use crate::version::{AbiVersion, ABI_MAJOR, ABI_MINOR};

/// Most vnodes a domain has; a guest may size static tables with it.
pub const MAX_VNODES: u32 = 64;

abi_struct! {
    /// One guest-physical memory range of a vnode (`xen_vmemrange`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct VmemRange(size = 24, align = 8) {
        /// First address (page-aligned).
        pub start: Gpa => 0,
        /// One past the last address (page-aligned, greater than `start`).
        pub end: Gpa => 8,
        /// None defined in 1.0; the guest ignores unknown bits.
        pub flags: u32 => 16,
        /// The vnode the range belongs to.
        pub nid: u32 => 20,
    }
}

impl VmemRange {
    /// A range `[start, end)` of vnode `nid`.
    pub const fn new(start: Gpa, end: Gpa, nid: u32) -> Self {
        VmemRange {
            start,
            end,
            flags: 0,
            nid,
        }
    }

    /// Bytes in the range (0 if malformed, `end <= start`).
    pub const fn byte_len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }

    /// Whether `gpa` is inside.
    pub const fn contains(&self, gpa: Gpa) -> bool {
        self.start.0 <= gpa.0 && gpa.0 < self.end.0
    }
}

abi_struct! {
    /// Memory of one vnode and of the physical node behind it: one entry per
    /// vnode of `GET_VNUMA`'s `vnode_mem` buffer (ABI 1.1,
    /// [`Features::VNODE_MEM`](crate::Features::VNODE_MEM)).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct VnodeMemInfo(size = 24, align = 8) {
        /// The physical node the vnode is placed on (its memory comes from
        /// there, and its vCPUs are meant to run there).
        pub pnode: u32 => 0,
        /// None defined; the guest ignores unknown bits.
        pub flags: u32 => 4,
        /// Pages of the domain's memory on this vnode (0 for a memoryless
        /// vnode).
        pub size_pages: u64 => 8,
        /// Pages free in the hypervisor's heap on `pnode` at the time of the
        /// call: how much more memory this vnode's node could supply.
        pub free_pages: u64 => 16,
    }
}

abi_struct! {
    /// `GET_VNUMA`'s in/out structure (`xen_vnuma_topology_info`): 48 bytes
    /// in ABI 1.0, 56 from 1.1 on (`vnode_mem` appended).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct VnumaTopologyInfo(
        size = if cfg!(feature = "abi-1-0") { 48 } else { 56 },
        align = 8,
        sized_by = size
    ) {
        /// In: `size_of` the caller knows. Out: bytes the hypervisor handled.
        pub size: u32 => 0,
        /// Must be 0.
        pub flags: u32 => 4,
        /// In: capacity of `vdistance` (it holds this squared). Out: vnodes.
        pub nr_vnodes: u32 => 8,
        /// In: capacity of `vcpu_to_vnode`. Out: vCPUs.
        pub nr_vcpus: u32 => 12,
        /// In: capacity of `vmemrange`. Out: memory ranges.
        pub nr_vmemranges: u32 => 16,
        /// Must be 0.
        pub reserved: u32 => 20,
        /// Buffer of `nr_vnodes * nr_vnodes` `u32` distances.
        pub vdistance: Gpa => 24,
        /// Buffer of `nr_vcpus` `u32` vnode ids.
        pub vcpu_to_vnode: Gpa => 32,
        /// Buffer of `nr_vmemranges` [`VmemRange`]s.
        pub vmemrange: Gpa => 40,
        /// ABI 1.1: buffer of `nr_vnodes` [`VnodeMemInfo`]s, or
        /// [`Gpa::NULL`] for none. Filled only by a hypervisor that offers
        /// [`Features::VNODE_MEM`](crate::Features::VNODE_MEM); see the
        /// [module docs](self) for how 1.0 and 1.1 builds meet.
        #[cfg(not(feature = "abi-1-0"))]
        pub vnode_mem: Gpa => 48,
    }
}

/// The three counts of a vNUMA topology (not an ABI structure: the
/// hypervisor's answer, or a caller's capacities).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VnumaCounts {
    /// vnodes.
    pub nr_vnodes: u32,
    /// vCPUs.
    pub nr_vcpus: u32,
    /// Memory ranges.
    pub nr_vmemranges: u32,
}

impl VnumaCounts {
    /// Entries of the distance matrix.
    pub const fn distance_entries(&self) -> u64 {
        distance_entries(self.nr_vnodes)
    }
}

impl VnumaTopologyInfo {
    /// A request with these capacities and buffers.
    pub const fn new(
        capacity: VnumaCounts,
        vdistance: Gpa,
        vcpu_to_vnode: Gpa,
        vmemrange: Gpa,
    ) -> Self {
        VnumaTopologyInfo {
            size: size_of::<Self>() as u32,
            flags: 0,
            nr_vnodes: capacity.nr_vnodes,
            nr_vcpus: capacity.nr_vcpus,
            nr_vmemranges: capacity.nr_vmemranges,
            reserved: 0,
            vdistance,
            vcpu_to_vnode,
            vmemrange,
            #[cfg(not(feature = "abi-1-0"))]
            vnode_mem: Gpa::NULL,
        }
    }

    /// The bytes of this structure a hypervisor of ABI `version` handles
    /// (and writes back as `size`): 48 in 1.0, 56 in 1.1. `None` for a
    /// version this crate does not know (a newer minor, another major).
    pub const fn size_in(version: AbiVersion) -> Option<u32> {
        if version.major != ABI_MAJOR || version.minor > ABI_MINOR {
            return None;
        }
        Some(match version.minor {
            0 => <Self as Query>::SIZE_V1_0,
            _ => size_of::<Self>() as u32,
        })
    }

    /// A request with no buffers: it returns [`Error::BufferTooSmall`] with
    /// the counts filled in (or succeeds for an empty topology).
    pub const fn probe() -> Self {
        Self::new(
            VnumaCounts {
                nr_vnodes: 0,
                nr_vcpus: 0,
                nr_vmemranges: 0,
            },
            Gpa::NULL,
            Gpa::NULL,
            Gpa::NULL,
        )
    }

    /// The counts fields (capacities before the call, counts after it).
    pub const fn counts(&self) -> VnumaCounts {
        VnumaCounts {
            nr_vnodes: self.nr_vnodes,
            nr_vcpus: self.nr_vcpus,
            nr_vmemranges: self.nr_vmemranges,
        }
    }

    /// The hypervisor's side of the too-small rule: writes `actual` into the
    /// counts and returns [`Error::BufferTooSmall`] if any capacity was
    /// smaller (then no buffer may be written).
    pub fn reply(&mut self, actual: VnumaCounts) -> Result<(), Error> {
        let fits = check_capacity(self.nr_vnodes, actual.nr_vnodes)
            .and(check_capacity(self.nr_vcpus, actual.nr_vcpus))
            .and(check_capacity(self.nr_vmemranges, actual.nr_vmemranges));
        self.nr_vnodes = actual.nr_vnodes;
        self.nr_vcpus = actual.nr_vcpus;
        self.nr_vmemranges = actual.nr_vmemranges;
        fits
    }
}

impl Default for VnumaTopologyInfo {
    fn default() -> Self {
        Self::probe()
    }
}

impl Query for VnumaTopologyInfo {
    const SIZE_V1_0: u32 = 48;

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
        assert_eq!(size_of::<VmemRange>(), 24);
        assert_eq!(offset_of!(VmemRange, nid), 20);
        #[cfg(feature = "abi-1-0")]
        assert_eq!(size_of::<VnumaTopologyInfo>(), 48);
        #[cfg(not(feature = "abi-1-0"))]
        {
            assert_eq!(size_of::<VnumaTopologyInfo>(), 56);
            assert_eq!(offset_of!(VnumaTopologyInfo, vnode_mem), 48);
            assert_eq!(size_of::<VnodeMemInfo>(), 24);
            assert_eq!(offset_of!(VnodeMemInfo, free_pages), 16);
        }
        assert_eq!(
            VnumaTopologyInfo::size_in(AbiVersion::new(ABI_MAJOR, 0)),
            Some(48)
        );
        assert_eq!(
            VnumaTopologyInfo::size_in(AbiVersion::CURRENT),
            Some(size_of::<VnumaTopologyInfo>() as u32)
        );
        assert_eq!(
            VnumaTopologyInfo::size_in(AbiVersion::new(ABI_MAJOR, 99)),
            None
        );
        assert_eq!(VnumaTopologyInfo::size_in(AbiVersion::new(9, 0)), None);
        assert_eq!(offset_of!(VnumaTopologyInfo, nr_vnodes), 8);
        assert_eq!(offset_of!(VnumaTopologyInfo, vdistance), 24);
        assert_eq!(offset_of!(VnumaTopologyInfo, vmemrange), 40);
    }

    #[test]
    fn too_small_protocol() {
        let actual = VnumaCounts {
            nr_vnodes: 4,
            nr_vcpus: 6,
            nr_vmemranges: 5,
        };
        let mut probe = VnumaTopologyInfo::probe();
        assert_eq!(probe.reply(actual), Err(Error::BufferTooSmall));
        assert_eq!(probe.counts(), actual);
        assert_eq!(probe.counts().distance_entries(), 16);

        // One count short is enough to fail, and all needed counts come back.
        let short = VnumaCounts {
            nr_vnodes: 4,
            nr_vcpus: 5,
            nr_vmemranges: 8,
        };
        let mut req = VnumaTopologyInfo::new(short, Gpa(0x1000), Gpa(0x2000), Gpa(0x3000));
        assert_eq!(req.reply(actual), Err(Error::BufferTooSmall));
        assert_eq!(req.counts(), actual);

        let big = VnumaCounts {
            nr_vnodes: 8,
            nr_vcpus: 8,
            nr_vmemranges: 8,
        };
        let mut req = VnumaTopologyInfo::new(big, Gpa(0x1000), Gpa(0x2000), Gpa(0x3000));
        assert_eq!(req.reply(actual), Ok(()));
        assert_eq!(req.counts(), actual);
    }

    #[test]
    fn encoding_round_trip() {
        let info = VnumaTopologyInfo::new(
            VnumaCounts {
                nr_vnodes: 2,
                nr_vcpus: 3,
                nr_vmemranges: 4,
            },
            Gpa(0x1000),
            Gpa(0x2000),
            Gpa(0x3000),
        );
        let bytes = info.as_bytes();
        assert_eq!(
            &bytes[0..4],
            &(size_of::<VnumaTopologyInfo>() as u32).to_le_bytes()
        );
        assert_eq!(&bytes[8..12], &2u32.to_le_bytes());
        assert_eq!(&bytes[40..48], &0x3000u64.to_le_bytes());
        assert_eq!(VnumaTopologyInfo::read_from(bytes), Some(info));
        assert!(info.reserved_are_zero());

        let r = VmemRange::new(Gpa(0x10_0000), Gpa(0x20_0000), 1);
        assert_eq!(VmemRange::read_from(r.as_bytes()), Some(r));
        assert_eq!(r.byte_len(), 0x10_0000);
        assert!(r.contains(Gpa(0x10_0000)) && !r.contains(Gpa(0x20_0000)));
    }

    #[test]
    fn size_negotiation() {
        assert_eq!(
            accept_size::<VnumaTopologyInfo>(47),
            Err(Error::InvalidArgument)
        );
        assert_eq!(accept_size::<VnumaTopologyInfo>(48), Ok(48));
        let ours = size_of::<VnumaTopologyInfo>() as u32;
        // A newer guest's longer structure: only the known part is handled.
        assert_eq!(accept_size::<VnumaTopologyInfo>(ours + 16), Ok(ours));
        // An older, shorter writer: the missing tail reads as zero.
        let info = VnumaTopologyInfo::read_zero_extended(&[48, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(info.nr_vnodes, 3);
        assert_eq!(info.vmemrange, Gpa::NULL);
    }

    /// How 1.0 and 1.1 meet (the module docs): a 1.0 caller's 48 bytes read
    /// by a 1.1 side leave `vnode_mem` null; a 1.1 caller's 56 bytes are cut
    /// to 48 by a side that knows 1.0's size.
    #[cfg(not(feature = "abi-1-0"))]
    #[test]
    fn vnode_mem_between_versions() {
        let mut v11 = VnumaTopologyInfo::probe();
        v11.vnode_mem = Gpa(0x8000);
        assert_eq!(v11.size, 56);
        let old_caller = &v11.as_bytes()[..48];
        let read = VnumaTopologyInfo::read_zero_extended(old_caller);
        assert_eq!(read.vnode_mem, Gpa::NULL);
        assert_eq!(read.vmemrange, v11.vmemrange);
        // A 1.0 hypervisor accepts min(56, 48) = 48 bytes.
        assert_eq!(56u32.min(VnumaTopologyInfo::SIZE_V1_0), 48);
        let m = VnodeMemInfo {
            pnode: 3,
            flags: 0,
            size_pages: 16384,
            free_pages: 1000,
        };
        assert_eq!(VnodeMemInfo::read_from(m.as_bytes()), Some(m));
        assert_eq!(&m.as_bytes()[0..4], &3u32.to_le_bytes());
    }
}

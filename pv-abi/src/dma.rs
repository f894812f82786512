//! DMA without an IOMMU (ABI 1.2): the `DMA_EXCHANGE` hypercall, in the
//! spirit of Xen's `XENMEM_exchange`.
//!
//! A device sees machine addresses ([`Maddr`]), and a device with a limited
//! DMA mask (a 28- or 32-bit device) cannot reach a domain whose machine
//! memory lies above it. [`Hypercall::DmaExchange`](crate::Hypercall::DmaExchange)
//! lets a domain give back `nr_pages` of its pages (a guest-physical range,
//! whole pages, all in one vnode) and receive the same number of
//! **machine-contiguous** pages **below `2^address_bits`**, mapped at the
//! same guest-physical addresses. The hypervisor returns their machine
//! address: the bus address a device uses for `gpa` from then on (a guest
//! builds its swiotlb bounce pool there).
//!
//! # Semantics
//!
//! - **Contents are kept**: the hypervisor copies the old pages into the
//!   new ones before it switches the mapping, so the exchange is invisible
//!   to the CPU (and nothing of another domain's data can show through).
//! - **Atomic**: it succeeds whole or fails with nothing changed: no page
//!   lost, none half-exchanged, the old mapping intact. On failure the
//!   structure is not written.
//! - **Node** (P->node == M->node): the new memory comes from the physical
//!   node the vnode lives on when that node has such memory. Otherwise,
//!   unless the caller set [`DMA_EXCHANGE_EXACT_NODE`], it comes from the
//!   nearest node that has it (by distance, as the hypervisor's heap falls
//!   back), `pnode` says which, and [`DMA_EXCHANGE_OFF_NODE`] is set in
//!   `out_flags`: on a machine without low memory (SGI Altix) a pool below
//!   4 GiB necessarily lives on another node. The hypervisor logs every
//!   exchange, off-node ones with the reason. The domain's vNUMA topology
//!   does not change (`GET_VNUMA`'s ranges and `vnode_mem` still give the
//!   vnode's physical node and size); `DOMAIN_NODE_PAGES` reports where the
//!   domain's pages really are, exchanged ones included. The start-info
//!   page is not rewritten: it describes the domain at boot, and the guest
//!   keeps its own record of what it exchanged.
//! - Pages may be exchanged again (a later exchange of the same range
//!   moves it again); the domain's teardown frees whatever backs it.
//!
//! # Protocol
//!
//! RDI = the [`Gpa`] of a [`DmaExchange`] ([`QUERY_ALIGN`](crate::hypercall::QUERY_ALIGN)-aligned).
//! The caller sets `size` (at least [`DmaExchange::SIZE_V1_2`]), `flags`
//! (only [`DMA_EXCHANGE_EXACT_NODE`]), `gpa`, `nr_pages`, `address_bits`,
//! and zeroes the rest. On success the hypervisor writes back the accepted
//! bytes with `size`, `pnode`, `maddr` and `out_flags` filled, and returns
//! `maddr` in RAX as well.
//!
//! Errors: [`Error::InvalidArgument`] (size too small, unknown flags,
//! non-zero `reserved` or out fields, `gpa` not page-aligned, `nr_pages` 0
//! or above [`DMA_EXCHANGE_MAX_PAGES`], `address_bits` outside
//! [`DMA_EXCHANGE_MIN_BITS`]`..=64`, a range that spans vnodes),
//! [`Error::Fault`] (the structure or the range is not inside the domain's
//! memory: an assigned device's MMIO is not memory),
//! [`Error::OutOfMemory`] (no machine-contiguous memory below the limit on
//! an allowed node, or none for the hypervisor's own bookkeeping),
//! [`Error::Unsupported`] (no [`Features::DMA_EXCHANGE`](crate::Features)).
//!
//! [`Error::InvalidArgument`]: crate::Error::InvalidArgument
//! [`Error::Fault`]: crate::Error::Fault
//! [`Error::OutOfMemory`]: crate::Error::OutOfMemory
//! [`Error::Unsupported`]: crate::Error::Unsupported

use core::mem::size_of;

use crate::addr::{Gpa, Maddr};
use crate::error::Error;

/// `flags`: take the memory from the vnode's own physical node or fail with
/// [`Error::OutOfMemory`]; never from another node.
pub const DMA_EXCHANGE_EXACT_NODE: u32 = 1 << 0;
/// `out_flags`: the new memory is not on the vnode's physical node (it had
/// none below the limit); `pnode` is where it is.
pub const DMA_EXCHANGE_OFF_NODE: u32 = 1 << 0;
/// Most pages one exchange moves (256 MiB).
pub const DMA_EXCHANGE_MAX_PAGES: u64 = 1 << 16;
/// Smallest `address_bits`: 24, ISA DMA's 16 MiB.
pub const DMA_EXCHANGE_MIN_BITS: u32 = 24;

abi_struct! {
    /// `DMA_EXCHANGE`'s in/out structure (see the [module docs](self)).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct DmaExchange(size = 48, align = 8, sized_by = size) {
        /// In: `size_of` the caller knows. Out: bytes the hypervisor handled.
        pub size: u32 => 0,
        /// In: [`DMA_EXCHANGE_EXACT_NODE`] or 0.
        pub flags: u32 => 4,
        /// In: the first page to give back (page-aligned).
        pub gpa: Gpa => 8,
        /// In: how many pages (1 to [`DMA_EXCHANGE_MAX_PAGES`]).
        pub nr_pages: u64 => 16,
        /// In: the new memory lies entirely below `2^address_bits` (a device's
        /// DMA mask width, [`DMA_EXCHANGE_MIN_BITS`] to 64).
        pub address_bits: u32 => 24,
        /// Out: the physical node the new memory is on (0 in).
        pub pnode: u32 => 28,
        /// Out: the machine (bus) address of `gpa` after the exchange (0 in).
        pub maddr: Maddr => 32,
        /// Out: [`DMA_EXCHANGE_OFF_NODE`] (0 in).
        pub out_flags: u32 => 40,
        /// Must be 0.
        pub reserved: u32 => 44,
    }
}

impl DmaExchange {
    /// The structure's size in ABI 1.2, where it first appeared: the
    /// smallest `size` a caller may pass.
    pub const SIZE_V1_2: u32 = 48;

    /// A request for `nr_pages` pages at `gpa`, below `2^address_bits`.
    pub const fn new(gpa: Gpa, nr_pages: u64, address_bits: u32, flags: u32) -> Self {
        DmaExchange {
            size: size_of::<Self>() as u32,
            flags,
            gpa,
            nr_pages,
            address_bits,
            pnode: 0,
            maddr: Maddr(0),
            out_flags: 0,
            reserved: 0,
        }
    }

    /// The request as the hypervisor accepts it: every input in range,
    /// every output and reserved field zero. `Ok` gives the bytes of the
    /// caller's structure the hypervisor reads and writes back.
    pub const fn check(&self) -> Result<u32, Error> {
        if self.size < Self::SIZE_V1_2
            || self.flags & !DMA_EXCHANGE_EXACT_NODE != 0
            || self.pnode != 0
            || self.maddr.0 != 0
            || self.out_flags != 0
            || self.reserved != 0
            || !self.gpa.is_page_aligned()
            || self.nr_pages == 0
            || self.nr_pages > DMA_EXCHANGE_MAX_PAGES
            || self.address_bits < DMA_EXCHANGE_MIN_BITS
            || self.address_bits > 64
        {
            return Err(Error::InvalidArgument);
        }
        let ours = size_of::<Self>() as u32;
        Ok(if self.size < ours { self.size } else { ours })
    }

    /// Whether the caller asked for its vnode's node only.
    pub const fn exact_node(&self) -> bool {
        self.flags & DMA_EXCHANGE_EXACT_NODE != 0
    }

    /// Whether the answer says the memory is on another node.
    pub const fn off_node(&self) -> bool {
        self.out_flags & DMA_EXCHANGE_OFF_NODE != 0
    }

    /// The highest machine address below the limit: `2^address_bits - 1`.
    pub const fn limit(&self) -> u64 {
        if self.address_bits >= 64 {
            u64::MAX
        } else {
            (1u64 << self.address_bits) - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pod;

    #[test]
    fn requests_are_checked() {
        let ok = DmaExchange::new(Gpa(0x10_0000), 16, 32, 0);
        assert_eq!(ok.check(), Ok(48));
        assert!(!ok.exact_node());
        assert_eq!(ok.limit(), 0xffff_ffff);
        let mut bigger = ok;
        bigger.size = 64;
        assert_eq!(bigger.check(), Ok(48));
        let bad: [fn(&mut DmaExchange); 11] = [
            |r| r.size = 47,
            |r| r.flags = 2,
            |r| r.pnode = 1,
            |r| r.maddr = Maddr(1),
            |r| r.out_flags = 1,
            |r| r.reserved = 1,
            |r| r.gpa = Gpa(0x10_0800),
            |r| r.nr_pages = 0,
            |r| r.nr_pages = DMA_EXCHANGE_MAX_PAGES + 1,
            |r| r.address_bits = DMA_EXCHANGE_MIN_BITS - 1,
            |r| r.address_bits = 65,
        ];
        for (i, f) in bad.iter().enumerate() {
            let mut r = ok;
            f(&mut r);
            assert_eq!(r.check(), Err(Error::InvalidArgument), "case {i}");
        }
        let exact = DmaExchange::new(Gpa(0), 1, 64, DMA_EXCHANGE_EXACT_NODE);
        assert_eq!(exact.check(), Ok(48));
        assert!(exact.exact_node());
        assert_eq!(exact.limit(), u64::MAX);
    }

    #[test]
    fn layout() {
        let r = DmaExchange::new(Gpa(0x1000), 2, 28, 0);
        let bytes = r.as_bytes();
        assert_eq!(bytes.len(), 48);
        assert_eq!(&bytes[0..4], &48u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &0x1000u64.to_le_bytes());
        assert_eq!(&bytes[24..28], &28u32.to_le_bytes());
    }
}

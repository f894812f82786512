//! Bounce-buffer pool (swiotlb) for DMA devices that cannot reach all of a
//! domain's memory.
//!
//! Without an IOMMU a device sees machine addresses. A device with a 32-bit
//! (or smaller) DMA mask cannot reach a domain whose memory is all high (the
//! SGI Altix case), so its buffers are copied ("bounced") through a pool of
//! memory it can reach. The guest's DMA API owns the decision *whether* to
//! bounce (`swiotlb=force` included); this crate is the pool it bounces
//! through, modelled on Linux's `kernel/dma/swiotlb.c`:
//!
//! * the pool is cut into [`SLOT_SIZE`] (2 KiB) slots, grouped in segments of
//!   [`SEGMENT_SLOTS`] (128) slots; a mapping never crosses a segment, so the
//!   largest mapping is [`MAX_MAPPING_SIZE`] (256 KiB);
//! * the pool is split into areas, each with its own lock and next-fit search
//!   index, and a CPU starts in "its" area, so CPUs rarely contend;
//! * each slot carries a `list` count of the free slots from it to the end of
//!   its free run (never past its segment), so checking a candidate is O(1);
//! * Linux's placement rules: page alignment for mappings of a page or more,
//!   the device's `min_align_mask` (the low bits of the original address are
//!   kept in the bounce address) and an explicit allocation alignment.
//!
//! The crate is `no_std` + `alloc` and free of `unsafe`: the pool owns its
//! memory as a slice split among the areas, and the caller's buffers are
//! reached through [`OrigMemory`], which the guest implements over its own
//! memory and the host tests over vectors.
//!
//! ```
//! use swiotlb::{bench::SliceMemory, Direction, DmaAddr, MapAttrs, OrigAddr, Pool};
//!
//! let mut backing = vec![0u8; swiotlb::SEGMENT_SIZE];
//! let pool = Pool::new(&mut backing, DmaAddr::new(0x1000_0000), 1).unwrap();
//! let mut ram = vec![7u8; 8192];
//! let mut mem = SliceMemory::new(OrigAddr::new(0x4_0000_0000), &mut ram);
//! let orig = OrigAddr::new(0x4_0000_0100);
//! let dma = pool.map(0, &mem, orig, 512, Direction::ToDevice, MapAttrs::default()).unwrap();
//! // ... the device reads 512 bytes at `dma` ...
//! pool.unmap(&mut mem, dma, 512, Direction::ToDevice).unwrap();
//! assert_eq!(pool.stats().used_slots, 0);
//! ```

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod addr;
pub mod bench;
mod error;
mod param;
mod pool;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use addr::{CpuAddr, DmaAddr, OrigAddr};
pub use error::{HandleError, MapError, PoolError};
pub use param::{
    default_nr_areas, max_mapping_size, pool_bytes_for_slots, ParamError, SwiotlbParam,
};
pub use pool::{Direction, MapAttrs, OrigMemory, Pool, Stats};

/// log2 of the slot size (Linux's `IO_TLB_SHIFT`).
pub const SLOT_SHIFT: u32 = 11;
/// Bytes per slot, the pool's allocation unit (Linux's `IO_TLB_SIZE`).
pub const SLOT_SIZE: usize = 1 << SLOT_SHIFT;
/// Slots per segment (Linux's `IO_TLB_SEGSIZE`): no mapping crosses a segment.
pub const SEGMENT_SLOTS: usize = 128;
/// Bytes per segment; pool sizes are multiples of it.
pub const SEGMENT_SIZE: usize = SLOT_SIZE * SEGMENT_SLOTS;
/// The largest mapping, padding for alignment included.
pub const MAX_MAPPING_SIZE: usize = SEGMENT_SIZE;
/// The page size the "page-sized mappings are page aligned" rule uses.
pub const PAGE_SIZE: usize = 4096;
/// Linux's default pool size (`IO_TLB_DEFAULT_SIZE`), used without `swiotlb=N`.
pub const DEFAULT_POOL_SIZE: usize = 64 << 20;

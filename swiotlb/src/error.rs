//! Error values. Nothing in the pool panics on bad input: every misuse comes
//! back as one of these, and the pool is left exactly as it was.

use crate::addr::{DmaAddr, OrigAddr};
use crate::pool::Direction;
use core::fmt;

/// Why [`Pool::new`](crate::Pool::new) refused its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// The memory is empty or not a multiple of [`SEGMENT_SIZE`](crate::SEGMENT_SIZE).
    BadSize { len: usize },
    /// The bus base is not page aligned, so page-sized mappings could not be
    /// page aligned on the bus.
    UnalignedBusBase { bus_base: DmaAddr },
    /// `bus_base + len` does not fit in 64 bits.
    BusRangeOverflow { bus_base: DmaAddr, len: usize },
    /// The pool has too many slots to index with 32 bits.
    TooManySlots { slots: usize },
    /// The area count is zero, not a power of two, or more than the segments.
    BadAreas { areas: usize, segments: usize },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadSize { len } => write!(
                f,
                "swiotlb: pool size {len} bytes is not a non-zero multiple of {} bytes",
                crate::SEGMENT_SIZE
            ),
            Self::UnalignedBusBase { bus_base } => {
                write!(
                    f,
                    "swiotlb: pool bus address {bus_base} is not page aligned"
                )
            }
            Self::BusRangeOverflow { bus_base, len } => write!(
                f,
                "swiotlb: pool at bus address {bus_base} with {len} bytes wraps the address space"
            ),
            Self::TooManySlots { slots } => write!(f, "swiotlb: {slots} slots are too many"),
            Self::BadAreas { areas, segments } => write!(
                f,
                "swiotlb: {areas} areas: need a power of two between 1 and the {segments} segments"
            ),
        }
    }
}

impl core::error::Error for PoolError {}

/// Why [`Pool::map`](crate::Pool::map) failed. Nothing was allocated or copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// [`Direction::None`] cannot be mapped.
    BadDirection,
    /// A zero-byte mapping.
    ZeroSize,
    /// An alignment mask that is not of the form `2^k - 1`.
    BadAlignMask { mask: u32 },
    /// `orig + size` wraps the address space.
    AddressOverflow { orig: OrigAddr, size: usize },
    /// The mapping, with its alignment padding (`alloc_size`), is larger than
    /// one segment: no pool could ever hold it.
    TooLarge {
        size: usize,
        alloc_size: usize,
        max: usize,
    },
    /// No free, suitably aligned run of slots in any area. `size` is the
    /// allocation size with padding, as in Linux's message.
    PoolFull {
        size: usize,
        total_slots: usize,
        used_slots: usize,
    },
}

impl fmt::Display for MapError {
    /// One line. For [`MapError::PoolFull`] it is Linux's line, which tools
    /// read: `swiotlb buffer is full (sz: N bytes), total T (slots), used U (slots)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadDirection => write!(f, "swiotlb: DMA direction none cannot be mapped"),
            Self::ZeroSize => write!(f, "swiotlb: zero-byte mapping"),
            Self::BadAlignMask { mask } => {
                write!(f, "swiotlb: alignment mask {mask:#x} is not 2^k-1")
            }
            Self::AddressOverflow { orig, size } => {
                write!(f, "swiotlb: buffer at {orig} with {size} bytes wraps the address space")
            }
            Self::TooLarge { size, alloc_size, max } => write!(
                f,
                "swiotlb: mapping of {size} bytes needs {alloc_size} bytes, more than the largest mapping ({max} bytes)"
            ),
            Self::PoolFull { size, total_slots, used_slots } => write!(
                f,
                "swiotlb buffer is full (sz: {size} bytes), total {total_slots} (slots), used {used_slots} (slots)"
            ),
        }
    }
}

impl core::error::Error for MapError {}

/// Why an unmap or sync on a bus address was refused. Nothing was copied or
/// freed. The checks follow Linux's dma-debug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleError {
    /// [`Direction::None`] was passed.
    BadDirection,
    /// The address (or range) is not in the pool at all.
    NotInPool { addr: DmaAddr },
    /// The address is in the pool but no mapping owns it: never mapped, or
    /// already unmapped (a double unmap).
    NotMapped { addr: DmaAddr },
    /// Unmap of an address inside a mapping that is not where it starts.
    NotMappingStart { addr: DmaAddr, start: DmaAddr },
    /// Unmap with a size other than the one mapped.
    SizeMismatch {
        addr: DmaAddr,
        mapped: usize,
        requested: usize,
    },
    /// Unmap with another direction than mapped, or a sync whose direction
    /// differs from a non-bidirectional mapping's.
    DirectionMismatch {
        addr: DmaAddr,
        mapped: Direction,
        requested: Direction,
    },
    /// A sync range that is not inside the mapping `[start, start + mapped)`.
    OutOfRange {
        addr: DmaAddr,
        size: usize,
        start: DmaAddr,
        mapped: usize,
    },
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadDirection => write!(f, "swiotlb: DMA direction none is not valid here"),
            Self::NotInPool { addr } => write!(f, "swiotlb: {addr} is not in the pool"),
            Self::NotMapped { addr } => {
                write!(f, "swiotlb: {addr} is not mapped (never mapped or already unmapped)")
            }
            Self::NotMappingStart { addr, start } => {
                write!(f, "swiotlb: {addr} is inside the mapping at {start}, not its start")
            }
            Self::SizeMismatch { addr, mapped, requested } => write!(
                f,
                "swiotlb: {addr} was mapped with {mapped} bytes, not {requested}"
            ),
            Self::DirectionMismatch { addr, mapped, requested } => write!(
                f,
                "swiotlb: {addr} was mapped {mapped:?}, not {requested:?}"
            ),
            Self::OutOfRange { addr, size, start, mapped } => write!(
                f,
                "swiotlb: {size} bytes at {addr} are outside the mapping of {mapped} bytes at {start}"
            ),
        }
    }
}

impl core::error::Error for HandleError {}

//! Benchmark workloads, without timing: `cargo xtask bench` (host) or a guest
//! suite (cycle counter) times [`Workload::bounce`] against
//! [`Workload::memcpy`] for the same size. `no_std`, so it runs in the guest.

use crate::addr::{DmaAddr, OrigAddr};
use crate::error::{HandleError, MapError, PoolError};
use crate::pool::{Direction, MapAttrs, OrigMemory, Pool};
use crate::{MAX_MAPPING_SIZE, SEGMENT_SIZE};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::hint::black_box;

/// [`OrigMemory`] over a byte slice that stands for the memory at
/// `base..base + len`. For tests and benchmarks: an access outside the slice
/// panics.
pub struct SliceMemory<'a> {
    base: OrigAddr,
    bytes: &'a mut [u8],
}

impl<'a> SliceMemory<'a> {
    /// `bytes` seen at address `base`.
    pub fn new(base: OrigAddr, bytes: &'a mut [u8]) -> Self {
        Self { base, bytes }
    }

    /// The underlying bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }

    /// The underlying bytes, mutable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.bytes
    }

    fn range(&self, addr: OrigAddr, len: usize) -> core::ops::Range<usize> {
        let start = addr
            .offset_from(self.base)
            .and_then(|offset| usize::try_from(offset).ok())
            .filter(|&start| start <= self.bytes.len() && len <= self.bytes.len() - start)
            .unwrap_or_else(|| panic!("SliceMemory: {len} bytes at {addr} are outside the slice"));
        start..start + len
    }
}

impl OrigMemory for SliceMemory<'_> {
    fn read(&self, addr: OrigAddr, buf: &mut [u8]) {
        let range = self.range(addr, buf.len());
        buf.copy_from_slice(&self.bytes[range]);
    }

    fn write(&mut self, addr: OrigAddr, buf: &[u8]) {
        let range = self.range(addr, buf.len());
        self.bytes[range].copy_from_slice(buf);
    }
}

/// A benchmark step that failed (it should not: the workload is sized so
/// that every map fits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchError {
    Pool(PoolError),
    Map(MapError),
    Handle(HandleError),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pool(e) => e.fmt(f),
            Self::Map(e) => e.fmt(f),
            Self::Handle(e) => e.fmt(f),
        }
    }
}

impl From<MapError> for BenchError {
    fn from(e: MapError) -> Self {
        Self::Map(e)
    }
}

impl From<HandleError> for BenchError {
    fn from(e: HandleError) -> Self {
        Self::Handle(e)
    }
}

/// `iterations` cycles of map (bounce in) + unmap (bounce out when the
/// direction asks) of `size` bytes at `orig`, as a driver doing streaming DMA
/// would. Returns the bytes bounced, both directions together.
pub fn map_bounce_unmap<M: OrigMemory + ?Sized>(
    pool: &Pool<'_>,
    mem: &mut M,
    orig: OrigAddr,
    size: usize,
    dir: Direction,
    iterations: u64,
) -> Result<u64, BenchError> {
    let before = pool.stats().bounced_bytes();
    for _ in 0..iterations {
        let dma = pool.map(0, &*mem, black_box(orig), size, dir, MapAttrs::default())?;
        pool.unmap(mem, black_box(dma), size, dir)?;
    }
    Ok(pool.stats().bounced_bytes() - before)
}

/// The baseline: `iterations` plain copies of `src` into `dst` (same
/// length). Returns the bytes copied.
pub fn memcpy(dst: &mut [u8], src: &[u8], iterations: u64) -> u64 {
    for _ in 0..iterations {
        black_box(&mut *dst).copy_from_slice(black_box(src));
    }
    iterations * src.len() as u64
}

/// A ready-made workload for one buffer size: a one-segment pool (the
/// smallest legal one, so the bounce side is not penalised by a pool that
/// does not fit in cache), an original buffer and a memcpy destination.
pub struct Workload {
    size: usize,
    pool_mem: Vec<u8>,
    orig: Vec<u8>,
    dst: Vec<u8>,
}

impl Workload {
    /// Where the workload's original buffer pretends to live.
    pub const ORIG_BASE: OrigAddr = OrigAddr::new(0x1_0000_0000);
    /// Where the workload's pool pretends to be on the bus.
    pub const BUS_BASE: DmaAddr = DmaAddr::new(0x1000_0000);

    /// A workload for `size`-byte buffers, `1..=MAX_MAPPING_SIZE`.
    pub fn new(size: usize) -> Result<Self, MapError> {
        if size == 0 {
            return Err(MapError::ZeroSize);
        }
        if size > MAX_MAPPING_SIZE {
            return Err(MapError::TooLarge {
                size,
                alloc_size: size,
                max: MAX_MAPPING_SIZE,
            });
        }
        let orig = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        Ok(Self {
            size,
            pool_mem: vec![0; SEGMENT_SIZE],
            orig,
            dst: vec![0; size],
        })
    }

    /// Buffer size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// `iterations` map + bounce + unmap cycles in direction `dir`
    /// ([`Direction::ToDevice`] bounces once per cycle, like one memcpy;
    /// the others twice). Returns the bytes bounced.
    pub fn bounce(&mut self, dir: Direction, iterations: u64) -> Result<u64, BenchError> {
        let pool = Pool::new(&mut self.pool_mem, Self::BUS_BASE, 1).map_err(BenchError::Pool)?;
        let mut mem = SliceMemory::new(Self::ORIG_BASE, &mut self.orig);
        map_bounce_unmap(&pool, &mut mem, Self::ORIG_BASE, self.size, dir, iterations)
    }

    /// `iterations` plain copies of the same buffer. Returns the bytes copied.
    pub fn memcpy(&mut self, iterations: u64) -> u64 {
        memcpy(&mut self.dst, &self.orig, iterations)
    }
}

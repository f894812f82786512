//! The DMA API, after Linux's (`Documentation/core-api/dma-api.rst`,
//! `kernel/dma/direct.c`, `kernel/dma/swiotlb.c`), for a domain without an
//! IOMMU: a device sees machine addresses.
//!
//! - [`Dma::map_single`] / [`Dma::unmap_single`]: a streaming mapping of a
//!   buffer the guest owns (a guest-physical address and a length). The
//!   device address is the buffer's machine address ([`MachineMap`]) when
//!   the whole buffer is machine-contiguous and below the device's
//!   `dma_mask`; otherwise the buffer is bounced through the swiotlb pool
//!   (the `swiotlb` crate), whose memory the hypervisor's `DMA_EXCHANGE`
//!   placed below the limit. `swiotlb=force` bounces every mapping.
//! - [`Dma::sync_single_for_cpu`] / [`Dma::sync_single_for_device`]: hand a
//!   mapped buffer back and forth (copies for bounced mappings; direct ones
//!   need nothing on x86, which is cache-coherent).
//! - [`Dma::alloc_coherent`] / [`Dma::free_coherent`]: memory both sides
//!   use at once without syncs, below the device's `coherent_mask`, from a
//!   region set aside at boot (exchanged into low memory with the pool).
//! - Per device ([`DmaDevice`]): `dma_mask`, `coherent_mask`,
//!   `min_align_mask`.
//!
//! The rule that matters: **a device is never given an address where the
//! buffer is not.** A mapping the device cannot reach and that cannot be
//! bounced (no pool: the hypervisor has no `DMA_EXCHANGE`; `dma=direct`,
//! which never bounces; a pool the device cannot reach) is refused with
//! [`DmaError::Unreachable`], never handed out truncated or as is.
//!
//! [`setup`] builds all of it at boot. The logic here is host-tested over
//! any [`OrigMemory`]; the guest's is [`PhysMem`] (its identity map).

pub mod map;
pub mod setup;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use pv_abi::{Gpa, PAGE_SIZE};
pub use swiotlb::Direction;
use swiotlb::{DmaAddr, HandleError, MapAttrs, MapError, OrigAddr, OrigMemory, Pool};

pub use map::{MachineMap, Translate};

use crate::platform::Platform;

/// The mask of `bits` address bits (`2^bits - 1`; all ones for 64).
pub const fn mask_of_bits(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// How many address bits a mask covers (`64 - leading zeros`).
pub const fn bits_of_mask(mask: u64) -> u32 {
    64 - mask.leading_zeros()
}

/// A device's DMA constraints (Linux's `dma_mask`, `coherent_dma_mask`,
/// `min_align_mask`). Masks are `2^n - 1`: the highest bus address the
/// device can put on the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaDevice {
    pub name: String,
    pub dma_mask: u64,
    pub coherent_mask: u64,
    pub min_align_mask: u32,
}

impl DmaDevice {
    /// A device that drives `bits` address lines, for both masks.
    pub fn with_bits(name: &str, bits: u32) -> DmaDevice {
        DmaDevice {
            name: name.into(),
            dma_mask: mask_of_bits(bits),
            coherent_mask: mask_of_bits(bits),
            min_align_mask: 0,
        }
    }

    /// Whether the device can reach `[maddr, maddr + size)` with streaming
    /// DMA.
    pub fn reaches(&self, maddr: u64, size: u64) -> bool {
        size > 0
            && maddr
                .checked_add(size - 1)
                .is_some_and(|last| last <= self.dma_mask)
    }
}

/// When mappings bounce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// When the device cannot reach the buffer (Linux's default).
    Normal,
    /// Always (`swiotlb=force`).
    Force,
    /// Never (`dma=direct`, or `swiotlb=noforce`): an unreachable buffer is
    /// refused.
    Direct,
}

impl Mode {
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Force => "swiotlb=force",
            Mode::Direct => "dma=direct",
        }
    }
}

/// Why a DMA operation was refused. Nothing was mapped, copied or freed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DmaError {
    /// A zero-byte mapping or allocation.
    ZeroSize,
    /// `Direction::None`.
    BadDirection,
    /// The buffer is not guest memory.
    NotMemory { gpa: u64 },
    /// The device cannot reach the buffer and it cannot be bounced (the
    /// reason is `why`): refused rather than handed to the device.
    Unreachable {
        gpa: u64,
        /// The buffer's machine address, if contiguous.
        maddr: Option<u64>,
        size: u64,
        mask: u64,
        why: &'static str,
    },
    /// The pool refused the mapping (full, too large, bad alignment).
    Pool(MapError),
    /// The bounce pool (at `dma`) lies beyond this device's mask (a device
    /// with a smaller mask than the pool was placed for).
    PoolUnreachable { dma: u64, mask: u64 },
    /// An unmap or sync the pool refused (not mapped, double unmap, ...).
    Handle(HandleError),
    /// No coherent memory of this size below the device's coherent mask.
    NoCoherentMemory { size: u64 },
    /// A coherent buffer that was not allocated (or was freed already).
    NotCoherent { gpa: u64 },
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmaError::ZeroSize => write!(f, "dma: zero-byte request"),
            DmaError::BadDirection => write!(f, "dma: direction none"),
            DmaError::NotMemory { gpa } => write!(f, "dma: {gpa:#x} is not guest memory"),
            DmaError::Unreachable {
                gpa,
                maddr,
                size,
                mask,
                why,
            } => {
                write!(f, "dma: {size} bytes at guest-physical {gpa:#x} (")?;
                match maddr {
                    Some(m) => write!(f, "machine {m:#x}")?,
                    None => write!(f, "not machine-contiguous")?,
                }
                write!(
                    f,
                    ") are beyond the device's mask {mask:#x} and {why}: refused"
                )
            }
            DmaError::Pool(e) => write!(f, "{e}"),
            DmaError::PoolUnreachable { dma, mask } => write!(
                f,
                "dma: the bounce pool at {dma:#x} is beyond the device's mask {mask:#x}: refused"
            ),
            DmaError::Handle(e) => write!(f, "{e}"),
            DmaError::NoCoherentMemory { size } => {
                write!(
                    f,
                    "dma: no coherent memory for {size} bytes below the device's mask"
                )
            }
            DmaError::NotCoherent { gpa } => {
                write!(f, "dma: {gpa:#x} is not a live coherent buffer")
            }
        }
    }
}

/// A streaming mapping: the address to give the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The bus (machine) address the device must use.
    pub dma: u64,
    /// Whether it points into the bounce pool.
    pub bounced: bool,
}

/// A coherent buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coherent {
    /// Where the CPU uses it (identity-mapped: also its virtual address).
    pub gpa: u64,
    /// Where the device uses it.
    pub dma: u64,
    /// Bytes (whole pages).
    pub size: u64,
}

/// The bounce pool and where it lives.
pub struct BouncePool {
    pub pool: Pool<'static>,
    /// Guest-physical address of its first byte.
    pub gpa: u64,
    /// Machine address of its first byte (its bus base).
    pub maddr: u64,
    pub bytes: u64,
    /// It lies below `2^bits`.
    pub bits: u32,
    /// The physical node the hypervisor took it from.
    pub pnode: u32,
    /// Whether that is not the vnode's own node.
    pub off_node: bool,
}

/// Memory set aside for coherent buffers, handed out in whole pages.
pub struct CoherentRegion {
    pub gpa: u64,
    pub maddr: u64,
    pub pages: u64,
    /// Per page: `Some(pages)` at the first page of a live buffer.
    used: spin::Mutex<Vec<Option<u64>>>,
}

impl CoherentRegion {
    /// A region of `pages` pages at `gpa`, machine address `maddr`.
    pub fn new(gpa: u64, maddr: u64, pages: u64) -> CoherentRegion {
        CoherentRegion {
            gpa,
            maddr,
            pages,
            used: spin::Mutex::new(vec![None; pages as usize]),
        }
    }

    /// Pages in use.
    pub fn used_pages(&self) -> u64 {
        let used = self.used.lock();
        let mut n = 0;
        let mut i = 0;
        while i < used.len() {
            match used[i] {
                Some(p) if p > 0 => {
                    n += p;
                    i += p as usize;
                }
                _ => i += 1,
            }
        }
        n
    }
}

/// The guest's memory, through its identity map: what bounce copies read
/// and write.
#[derive(Clone, Copy)]
pub struct PhysMem(pub &'static dyn Platform);

impl OrigMemory for PhysMem {
    fn read(&self, addr: OrigAddr, buf: &mut [u8]) {
        self.0.read_phys(Gpa(addr.as_u64()), buf);
    }
    fn write(&mut self, addr: OrigAddr, buf: &[u8]) {
        self.0.write_phys(Gpa(addr.as_u64()), buf);
    }
}

/// Counters of the DMA layer itself (the pool keeps its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaStats {
    /// Streaming mappings made, directly or bounced.
    pub direct: u64,
    pub bounced: u64,
    /// Mappings refused (for any reason).
    pub refused: u64,
    /// Of those, bounces refused because the pool lies beyond the device's
    /// mask (a device with a smaller mask than the pool was placed for).
    pub pool_unreachable: u64,
    /// Bytes mapped directly (the device reached the buffer itself).
    pub direct_bytes: u64,
    /// Bytes mapped through the pool.
    pub bounced_bytes: u64,
    /// Unmaps of direct and bounced mappings.
    pub unmaps: u64,
    pub coherent_allocs: u64,
    pub coherent_frees: u64,
    /// The pool's statistics, if there is a pool.
    pub pool: Option<swiotlb::Stats>,
}

/// One device's share of the mappings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    pub direct: u64,
    pub direct_bytes: u64,
    pub bounced: u64,
    pub bounced_bytes: u64,
    pub refused: u64,
}

/// `direct D (X bytes), bounced B (Y bytes), refused R`.
impl fmt::Display for DeviceStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "direct {} ({} bytes), bounced {} ({} bytes), refused {}",
            self.direct, self.direct_bytes, self.bounced, self.bounced_bytes, self.refused
        )
    }
}

/// One line, stable for tools: `dma: mode M; maps direct D (X bytes),
/// bounced B (Y bytes), refused R; unmaps U; coherent A/F;` then the
/// pool's `swiotlb: ...` line or `no bounce pool`.
impl fmt::Display for DmaStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "maps direct {} ({} bytes), bounced {} ({} bytes), refused {}; unmaps {}; coherent allocs {} frees {}; ",
            self.direct,
            self.direct_bytes,
            self.bounced,
            self.bounced_bytes,
            self.refused,
            self.unmaps,
            self.coherent_allocs,
            self.coherent_frees
        )?;
        match &self.pool {
            Some(p) => write!(f, "{p}"),
            None => write!(f, "no bounce pool"),
        }
    }
}

#[derive(Default)]
struct Counters {
    direct: AtomicU64,
    bounced: AtomicU64,
    refused: AtomicU64,
    direct_bytes: AtomicU64,
    bounced_bytes: AtomicU64,
    unmaps: AtomicU64,
    coherent_allocs: AtomicU64,
    coherent_frees: AtomicU64,
    pool_full: AtomicU64,
    pool_unreachable: AtomicU64,
}

/// The DMA layer.
pub struct Dma<M: OrigMemory> {
    pub mode: Mode,
    pub map: MachineMap,
    pub pool: Option<BouncePool>,
    pub coherent: Option<CoherentRegion>,
    mem: spin::Mutex<M>,
    counters: Counters,
    /// Per device (by name).
    devices: spin::Mutex<Vec<(String, DeviceStats)>>,
}

/// The CPU whose pool area mappings start in (the guest runs vCPU 0).
const CPU: usize = 0;

impl<M: OrigMemory> Dma<M> {
    /// A DMA layer over `map`, reaching buffers through `mem`.
    pub fn new(
        mode: Mode,
        map: MachineMap,
        pool: Option<BouncePool>,
        coherent: Option<CoherentRegion>,
        mem: M,
    ) -> Self {
        Dma {
            mode,
            map,
            pool,
            coherent,
            mem: spin::Mutex::new(mem),
            counters: Counters::default(),
            devices: spin::Mutex::new(Vec::new()),
        }
    }

    fn count(&self, dev: &DmaDevice, f: impl FnOnce(&mut DeviceStats)) {
        let mut devices = self.devices.lock();
        match devices.iter_mut().find(|(n, _)| *n == dev.name) {
            Some((_, s)) => f(s),
            None => {
                let mut s = DeviceStats::default();
                f(&mut s);
                devices.push((dev.name.clone(), s));
            }
        }
    }

    /// The mappings made for the device called `name`.
    pub fn device_stats(&self, name: &str) -> DeviceStats {
        self.devices
            .lock()
            .iter()
            .find(|(n, _)| n == name)
            .map_or(DeviceStats::default(), |(_, s)| *s)
    }

    fn refuse_for<T>(&self, dev: &DmaDevice, e: DmaError) -> Result<T, DmaError> {
        self.count(dev, |s| s.refused += 1);
        self.refuse(e)
    }

    fn refuse<T>(&self, e: DmaError) -> Result<T, DmaError> {
        self.counters.refused.fetch_add(1, Relaxed);
        Err(e)
    }

    /// Maps `size` bytes at guest-physical `gpa` for `dev`: the buffer's
    /// own machine address when the device reaches all of it (and the mode
    /// is not `Force`), else a bounce slot; refused when neither works.
    pub fn map_single(
        &self,
        dev: &DmaDevice,
        gpa: u64,
        size: u64,
        dir: Direction,
    ) -> Result<Mapping, DmaError> {
        if size == 0 {
            return self.refuse_for(dev, DmaError::ZeroSize);
        }
        if dir == Direction::None {
            return self.refuse_for(dev, DmaError::BadDirection);
        }
        let (maddr, contiguous) = match self.map.contiguous(gpa, size) {
            Ok(m) => (Some(m), true),
            Err(Translate::NotMemory(at)) => {
                return self.refuse_for(dev, DmaError::NotMemory { gpa: at })
            }
            Err(Translate::NotContiguous(_)) => (self.map.maddr(gpa), false),
        };
        let reachable = contiguous && maddr.is_some_and(|m| dev.reaches(m, size));
        let bounce = match self.mode {
            Mode::Force => true,
            Mode::Normal => !reachable,
            Mode::Direct => {
                if reachable {
                    false
                } else {
                    return self.refuse_for(
                        dev,
                        DmaError::Unreachable {
                            gpa,
                            maddr: maddr.filter(|_| contiguous),
                            size,
                            mask: dev.dma_mask,
                            why: "dma=direct never bounces",
                        },
                    );
                }
            }
        };
        if !bounce {
            let m = maddr.unwrap_or(0);
            self.counters.direct.fetch_add(1, Relaxed);
            self.counters.direct_bytes.fetch_add(size, Relaxed);
            self.count(dev, |s| {
                s.direct += 1;
                s.direct_bytes += size;
            });
            return Ok(Mapping {
                dma: m,
                bounced: false,
            });
        }
        if self.pool.is_none() {
            return self.refuse_for(
                dev,
                DmaError::Unreachable {
                    gpa,
                    maddr: maddr.filter(|_| contiguous),
                    size,
                    mask: dev.dma_mask,
                    why: "there is no bounce pool",
                },
            );
        }
        self.bounce(dev, gpa, size, dir)
    }

    /// Maps through the bounce pool whatever the buffer's placement (what
    /// `swiotlb=force` does to every mapping; tests use it to exercise the
    /// pool on any domain). Refused without a pool.
    pub fn map_single_bounced(
        &self,
        dev: &DmaDevice,
        gpa: u64,
        size: u64,
        dir: Direction,
    ) -> Result<Mapping, DmaError> {
        if size == 0 {
            return self.refuse_for(dev, DmaError::ZeroSize);
        }
        if dir == Direction::None {
            return self.refuse_for(dev, DmaError::BadDirection);
        }
        if let Err(Translate::NotMemory(at)) = self.map.contiguous(gpa, size) {
            return self.refuse_for(dev, DmaError::NotMemory { gpa: at });
        }
        if self.pool.is_none() {
            return self.refuse_for(
                dev,
                DmaError::Unreachable {
                    gpa,
                    maddr: self.map.contiguous(gpa, size).ok(),
                    size,
                    mask: dev.dma_mask,
                    why: "there is no bounce pool",
                },
            );
        }
        self.bounce(dev, gpa, size, dir)
    }

    fn bounce(
        &self,
        dev: &DmaDevice,
        gpa: u64,
        size: u64,
        dir: Direction,
    ) -> Result<Mapping, DmaError> {
        let Some(bp) = &self.pool else {
            return self.refuse_for(
                dev,
                DmaError::Unreachable {
                    gpa,
                    maddr: None,
                    size,
                    mask: dev.dma_mask,
                    why: "there is no bounce pool",
                },
            );
        };
        // A pool the device cannot reach all of is no use to it.
        if !dev.reaches(bp.maddr, bp.bytes) {
            self.counters.pool_unreachable.fetch_add(1, Relaxed);
            return self.refuse_for(
                dev,
                DmaError::PoolUnreachable {
                    dma: bp.maddr,
                    mask: dev.dma_mask,
                },
            );
        }
        let Ok(len) = usize::try_from(size) else {
            return self.refuse_for(
                dev,
                DmaError::Pool(MapError::AddressOverflow {
                    orig: OrigAddr::new(gpa),
                    size: usize::MAX,
                }),
            );
        };
        let attrs = MapAttrs {
            min_align_mask: dev.min_align_mask,
            alloc_align_mask: 0,
        };
        let dma = {
            let mem = self.mem.lock();
            bp.pool.map(CPU, &*mem, OrigAddr::new(gpa), len, dir, attrs)
        };
        let dma = match dma {
            Ok(d) => d,
            Err(e) => {
                if let MapError::PoolFull { .. } = e {
                    // Linux's line, rate-limited: the 1st, 2nd, 4th, ... time.
                    let n = self.counters.pool_full.fetch_add(1, Relaxed) + 1;
                    if n.is_power_of_two() {
                        crate::println!("guest: dma: {} {e} ({n} times so far)", dev.name);
                    }
                }
                return self.refuse_for(dev, DmaError::Pool(e));
            }
        };
        self.counters.bounced.fetch_add(1, Relaxed);
        self.counters.bounced_bytes.fetch_add(size, Relaxed);
        self.count(dev, |s| {
            s.bounced += 1;
            s.bounced_bytes += size;
        });
        Ok(Mapping {
            dma: dma.as_u64(),
            bounced: true,
        })
    }

    /// What [`map_single`](Self::map_single) will do with this buffer for
    /// `dev`: `Some(true)` bounce, `Some(false)` map directly, `None`
    /// refuse (it cannot be reached and cannot be bounced).
    pub fn decision(&self, dev: &DmaDevice, gpa: u64, size: u64) -> Option<bool> {
        let reachable = self
            .map
            .contiguous(gpa, size)
            .ok()
            .is_some_and(|m| dev.reaches(m, size));
        let pool = self
            .pool
            .as_ref()
            .is_some_and(|p| dev.reaches(p.maddr, p.bytes));
        match self.mode {
            Mode::Force => pool.then_some(true),
            Mode::Normal if reachable => Some(false),
            Mode::Normal => pool.then_some(true),
            Mode::Direct => reachable.then_some(false),
        }
    }

    /// The pool, if `dma` is one of its addresses.
    fn pool_of(&self, dma: u64) -> Option<&BouncePool> {
        self.pool
            .as_ref()
            .filter(|p| p.pool.contains(DmaAddr::new(dma)))
    }

    /// Ends a mapping (copies the device's data back for a bounced
    /// `FromDevice` or `Bidirectional` mapping). `dma`, `size` and `dir`
    /// must be those of the map; a bounced mapping's are checked.
    pub fn unmap_single(
        &self,
        dev: &DmaDevice,
        dma: u64,
        size: u64,
        dir: Direction,
    ) -> Result<(), DmaError> {
        let _ = dev;
        if let Some(bp) = self.pool_of(dma) {
            let len = usize::try_from(size).map_err(|_| DmaError::ZeroSize)?;
            let mut mem = self.mem.lock();
            bp.pool
                .unmap(&mut *mem, DmaAddr::new(dma), len, dir)
                .map_err(DmaError::Handle)?;
        } else if dir == Direction::None {
            return Err(DmaError::BadDirection);
        }
        self.counters.unmaps.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Hands `size` bytes at `dma` back to the CPU (copies them from the
    /// bounce slot for `FromDevice` and `Bidirectional` mappings).
    pub fn sync_single_for_cpu(
        &self,
        dev: &DmaDevice,
        dma: u64,
        size: u64,
        dir: Direction,
    ) -> Result<(), DmaError> {
        let _ = dev;
        if let Some(bp) = self.pool_of(dma) {
            let len = usize::try_from(size).map_err(|_| DmaError::ZeroSize)?;
            let mut mem = self.mem.lock();
            bp.pool
                .sync_for_cpu(&mut *mem, DmaAddr::new(dma), len, dir)
                .map_err(DmaError::Handle)?;
        }
        Ok(())
    }

    /// Hands `size` bytes at `dma` back to the device (copies them into the
    /// bounce slot for `ToDevice` and `Bidirectional` mappings).
    pub fn sync_single_for_device(
        &self,
        dev: &DmaDevice,
        dma: u64,
        size: u64,
        dir: Direction,
    ) -> Result<(), DmaError> {
        let _ = dev;
        if let Some(bp) = self.pool_of(dma) {
            let len = usize::try_from(size).map_err(|_| DmaError::ZeroSize)?;
            let mem = self.mem.lock();
            bp.pool
                .sync_for_device(&*mem, DmaAddr::new(dma), len, dir)
                .map_err(DmaError::Handle)?;
        }
        Ok(())
    }

    /// A zeroed coherent buffer of at least `size` bytes (whole pages),
    /// below the device's coherent mask.
    pub fn alloc_coherent(&self, dev: &DmaDevice, size: u64) -> Result<Coherent, DmaError> {
        if size == 0 {
            return Err(DmaError::ZeroSize);
        }
        let pages = size.div_ceil(PAGE_SIZE);
        let none = DmaError::NoCoherentMemory { size };
        let Some(r) = &self.coherent else {
            return Err(none);
        };
        let bytes = pages * PAGE_SIZE;
        let first = {
            let mut used = r.used.lock();
            let n = pages as usize;
            let mut i = 0usize;
            let mut found = None;
            while i + n <= used.len() {
                match used[i..i + n].iter().position(Option::is_some) {
                    None => {
                        found = Some(i);
                        break;
                    }
                    Some(k) => {
                        let at = i + k;
                        i = at + used[at].map_or(1, |p| (p as usize).max(1));
                    }
                }
            }
            // The mask check before taking anything.
            let fits = |i: usize| {
                let dma = r.maddr + i as u64 * PAGE_SIZE;
                dma.checked_add(bytes - 1)
                    .is_some_and(|last| last <= dev.coherent_mask)
            };
            match found.filter(|&i| fits(i)) {
                Some(i) => {
                    used[i] = Some(pages);
                    for u in &mut used[i + 1..i + n] {
                        // Interior pages: taken, not heads.
                        *u = Some(0);
                    }
                    i
                }
                None => return Err(none),
            }
        };
        let gpa = r.gpa + first as u64 * PAGE_SIZE;
        let zero = [0u8; PAGE_SIZE as usize];
        {
            let mut mem = self.mem.lock();
            for k in 0..pages {
                mem.write(OrigAddr::new(gpa + k * PAGE_SIZE), &zero);
            }
        }
        self.counters.coherent_allocs.fetch_add(1, Relaxed);
        Ok(Coherent {
            gpa,
            dma: r.maddr + first as u64 * PAGE_SIZE,
            size: bytes,
        })
    }

    /// Frees a coherent buffer; a buffer that is not live is refused.
    pub fn free_coherent(&self, dev: &DmaDevice, buf: Coherent) -> Result<(), DmaError> {
        let _ = dev;
        let bad = DmaError::NotCoherent { gpa: buf.gpa };
        let Some(r) = &self.coherent else {
            return Err(bad);
        };
        let Some(off) = buf
            .gpa
            .checked_sub(r.gpa)
            .filter(|o| o % PAGE_SIZE == 0 && o / PAGE_SIZE < r.pages)
        else {
            return Err(bad);
        };
        let i = (off / PAGE_SIZE) as usize;
        let mut used = r.used.lock();
        match used.get(i).copied().flatten() {
            Some(p) if p > 0 && p * PAGE_SIZE == buf.size => {
                for u in &mut used[i..i + p as usize] {
                    *u = None;
                }
            }
            _ => return Err(bad),
        }
        self.counters.coherent_frees.fetch_add(1, Relaxed);
        Ok(())
    }

    /// The counters, with the pool's.
    pub fn stats(&self) -> DmaStats {
        let c = &self.counters;
        DmaStats {
            direct: c.direct.load(Relaxed),
            bounced: c.bounced.load(Relaxed),
            refused: c.refused.load(Relaxed),
            pool_unreachable: c.pool_unreachable.load(Relaxed),
            direct_bytes: c.direct_bytes.load(Relaxed),
            bounced_bytes: c.bounced_bytes.load(Relaxed),
            unmaps: c.unmaps.load(Relaxed),
            coherent_allocs: c.coherent_allocs.load(Relaxed),
            coherent_frees: c.coherent_frees.load(Relaxed),
            pool: self.pool.as_ref().map(|p| p.pool.stats()),
        }
    }

    /// Whether `dma` is a bounce address.
    pub fn is_bounce(&self, dma: u64) -> bool {
        self.pool_of(dma).is_some()
    }
}

#[cfg(test)]
mod tests;

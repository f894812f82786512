//! The pool: areas of slots, the free-run search, map/unmap/sync.

use crate::addr::{CpuAddr, DmaAddr, OrigAddr};
use crate::error::{HandleError, MapError, PoolError};
use crate::{MAX_MAPPING_SIZE, PAGE_SIZE, SEGMENT_SIZE, SEGMENT_SLOTS, SLOT_SHIFT, SLOT_SIZE};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use spin::Mutex;

const SLOT_MASK: u64 = SLOT_SIZE as u64 - 1;
const PAGE_MASK: u64 = PAGE_SIZE as u64 - 1;
/// `Slot::owner` of a free slot.
const FREE: u32 = u32::MAX;

/// Direction of a DMA transfer, with Linux's `dma_data_direction` values.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The device reads and writes the buffer.
    Bidirectional = 0,
    /// The device reads the buffer.
    ToDevice = 1,
    /// The device writes the buffer.
    FromDevice = 2,
    /// Linux's `DMA_NONE`: a debugging value, refused everywhere.
    None = 3,
}

impl Direction {
    /// Whether device data must be copied back to the original buffer.
    const fn copies_to_cpu(self) -> bool {
        matches!(self, Self::FromDevice | Self::Bidirectional)
    }

    /// Whether the original buffer must be copied out to the device's view.
    const fn copies_to_device(self) -> bool {
        matches!(self, Self::ToDevice | Self::Bidirectional)
    }
}

/// Per-device placement constraints of a mapping (Linux takes them from the
/// `struct device` and the call). Both masks must be `2^k - 1` (0 = none).
///
/// There is no `force` flag: whether to bounce at all (`swiotlb=force`, see
/// [`SwiotlbParam`](crate::SwiotlbParam)) is the DMA layer's decision; once
/// it calls [`Pool::map`], the mapping bounces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapAttrs {
    /// The device's `min_align_mask`: the bounce address keeps the original
    /// address's bits under this mask (NVMe needs the offset in its 4 KiB
    /// "page" to survive bouncing).
    pub min_align_mask: u32,
    /// Alignment of the allocation itself (coherent allocations and callers
    /// that need more than the default). 0 for ordinary streaming mappings,
    /// which get page alignment when a page or larger.
    pub alloc_align_mask: u32,
}

/// Access to the memory that holds the caller's original buffers.
///
/// The guest implements it over its own memory, host tests over vectors.
/// The pool calls it while holding an area lock: an implementation must not
/// call back into the pool.
pub trait OrigMemory {
    /// Fills `buf` with the bytes at `addr..addr + buf.len()`.
    fn read(&self, addr: OrigAddr, buf: &mut [u8]);
    /// Stores `buf` at `addr..addr + buf.len()`.
    fn write(&mut self, addr: OrigAddr, buf: &[u8]);
}

/// Per-slot metadata, Linux's `io_tlb_slot` (its `list` lives apart, see
/// [`AreaState::lists`]) plus what detecting a bad unmap needs. The mapping
/// fields are meaningful in a mapping's first slot only.
#[derive(Clone, Copy)]
struct Slot {
    /// Original address of the mapping's first byte.
    orig: u64,
    /// Bytes mapped.
    mapping_size: u32,
    /// Bytes from the first slot's start to the mapping's first byte
    /// (`min_align_mask` offset, pad slots included).
    data_offset: u32,
    /// Area-relative index of the first slot of the allocation that holds
    /// this slot, or `FREE`.
    owner: u32,
    /// Slots in the allocation.
    nslots: u8,
    dir: Direction,
}

impl Slot {
    const FREE: Self = Self {
        orig: 0,
        mapping_size: 0,
        data_offset: 0,
        owner: FREE,
        nslots: 0,
        dir: Direction::None,
    };
}

/// Everything an area's lock protects: its share of the pool memory and of
/// the slot table, the next-fit index and the area's counters.
struct AreaState<'a> {
    mem: &'a mut [u8],
    /// Per slot, the free slots from it to the end of its free run, which
    /// never extends past the segment; 0 when allocated (Linux's
    /// `io_tlb_slot.list`). The search tests a candidate in O(1):
    /// `list >= nslots` means the whole run fits. Kept dense, apart from
    /// `slots`, because the search and the run recounts touch only this.
    lists: Vec<u8>,
    slots: Vec<Slot>,
    /// Where the next search starts (next fit, like Linux's `area->index`).
    index: usize,
    used: usize,
    maps: u64,
    unmaps: u64,
    to_device: u64,
    from_device: u64,
}

/// One area, on its own cache line so that CPUs locking neighbouring areas
/// do not bounce a shared line.
#[repr(align(64))]
struct Area<'a> {
    /// Pool-wide index of the area's first slot (a multiple of a segment).
    first_slot: usize,
    /// Bus address of the area's first slot.
    bus_base: u64,
    state: Mutex<AreaState<'a>>,
}

/// Pool-wide counters, touched by every CPU: kept off the areas' lines.
#[repr(align(64))]
#[derive(Default)]
struct Counters {
    used: AtomicUsize,
    high_water: AtomicUsize,
    map_failures: AtomicU64,
    handle_errors: AtomicU64,
}

/// A snapshot of the pool's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Slots in the pool.
    pub total_slots: usize,
    /// Slots held by live mappings (padding included).
    pub used_slots: usize,
    /// The most slots ever used at once.
    pub high_water_slots: usize,
    /// Successful maps.
    pub maps: u64,
    /// Successful unmaps.
    pub unmaps: u64,
    /// Failed maps (a full pool or bad arguments).
    pub map_failures: u64,
    /// Refused unmaps and syncs (unknown address, double unmap, wrong size...).
    pub handle_errors: u64,
    /// Bytes copied from original buffers into the pool (map, sync for device).
    pub bounced_to_device: u64,
    /// Bytes copied from the pool back to original buffers (unmap, sync for CPU).
    pub bounced_from_device: u64,
}

impl Stats {
    /// Bytes bounced in both directions.
    pub const fn bounced_bytes(&self) -> u64 {
        self.bounced_to_device + self.bounced_from_device
    }
}

impl fmt::Display for Stats {
    /// One line, stable for tools: `swiotlb: slots total T used U high-water H;
    /// maps M unmaps N failures F bad-handles B; bounced X bytes (to-device D,
    /// from-device C)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "swiotlb: slots total {} used {} high-water {}; maps {} unmaps {} failures {} bad-handles {}; bounced {} bytes (to-device {}, from-device {})",
            self.total_slots,
            self.used_slots,
            self.high_water_slots,
            self.maps,
            self.unmaps,
            self.map_failures,
            self.handle_errors,
            self.bounced_bytes(),
            self.bounced_to_device,
            self.bounced_from_device
        )
    }
}

/// Where and how a mapping must be placed, worked out before any lock.
struct Plan {
    /// Bytes between the allocation's start and the mapping's first byte.
    offset: usize,
    /// Bytes allocated (offset and alignment padding included).
    alloc_size: usize,
    nslots: usize,
    /// Bus-address bits a candidate slot's address is tested under; `2^k - 1`
    /// with `k >= SLOT_SHIFT`.
    mask: u64,
    /// The value those bits must have.
    target: u64,
}

impl Plan {
    /// Linux's `swiotlb_tbl_map_single` + `swiotlb_search_pool_area` rules.
    fn new(orig: OrigAddr, size: usize, attrs: MapAttrs) -> Result<Self, MapError> {
        if size == 0 {
            return Err(MapError::ZeroSize);
        }
        for mask in [attrs.min_align_mask, attrs.alloc_align_mask] {
            if mask & mask.wrapping_add(1) != 0 {
                return Err(MapError::BadAlignMask { mask });
            }
        }
        if orig.checked_add(size as u64).is_none() {
            return Err(MapError::AddressOverflow { orig, size });
        }
        let min_mask = u64::from(attrs.min_align_mask);
        let alloc_mask = u64::from(attrs.alloc_align_mask);

        // The original's bits under `min_align_mask` that fall inside the
        // allocation's own alignment become an offset into the allocation
        // (whole pad slots when above a slot); the higher ones are matched
        // by choosing a slot whose bus address has them (below).
        let offset = orig.as_u64() & min_mask & (alloc_mask | SLOT_MASK);
        let alloc_size = (size as u64 + offset).next_multiple_of(alloc_mask + 1);
        if alloc_size > MAX_MAPPING_SIZE as u64 {
            return Err(MapError::TooLarge {
                size,
                alloc_size: usize::try_from(alloc_size).unwrap_or(usize::MAX),
                max: MAX_MAPPING_SIZE,
            });
        }
        let alloc_size = alloc_size as usize;

        // Streaming mappings of a page or more have always been page aligned
        // in Linux and drivers rely on it, unless the device asked for
        // something else: with a `min_align_mask` the kept offset rules (a
        // page-aligned slot could not also keep bit 11 of the original).
        let mut search_mask = alloc_mask;
        if alloc_mask == 0 && min_mask == 0 && alloc_size >= PAGE_SIZE {
            search_mask = PAGE_MASK;
        }
        search_mask |= SLOT_MASK;
        let keep_mask = min_mask & !search_mask;
        Ok(Self {
            offset: offset as usize,
            alloc_size,
            nslots: alloc_size.div_ceil(SLOT_SIZE),
            mask: search_mask | keep_mask,
            target: orig.as_u64() & keep_mask,
        })
    }
}

impl AreaState<'_> {
    /// First free run of `plan.nslots` slots at a candidate slot, searching
    /// from the next-fit index and wrapping once. Candidates are exactly the
    /// slots whose bus address has `plan.target` under `plan.mask`; they
    /// recur every `(mask + 1) / SLOT_SIZE` slots, so the search steps from
    /// one to the next and tests each with one `list` read.
    fn find(&self, bus_base: u64, plan: &Plan) -> Option<usize> {
        let total = self.slots.len();
        if plan.nslots > total - self.used {
            return None;
        }
        let stride_shift = (plan.mask + 1).trailing_zeros() - SLOT_SHIFT;
        let first = ((plan.target.wrapping_sub(bus_base) & plan.mask) >> SLOT_SHIFT) as usize;
        if first >= total {
            return None;
        }
        let count = ((total - 1 - first) >> stride_shift) + 1;
        let mut k = match self.index.checked_sub(first) {
            Some(ahead) => ahead.div_ceil(1 << stride_shift),
            None => 0,
        };
        for _ in 0..count {
            if k >= count {
                k = 0;
            }
            let candidate = first + (k << stride_shift);
            // `list` never counts past the segment, so a hit also means the
            // run does not cross a segment boundary.
            if usize::from(self.lists[candidate]) >= plan.nslots {
                return Some(candidate);
            }
            k += 1;
        }
        None
    }

    /// Marks `nslots` slots from `first` as one allocation and records the
    /// mapping in its first slot.
    fn allocate(&mut self, first: usize, plan: &Plan, orig: OrigAddr, size: usize, dir: Direction) {
        let end = first + plan.nslots;
        self.lists[first..end].fill(0);
        for slot in &mut self.slots[first..end] {
            slot.owner = first as u32;
        }
        self.relink_before(first, 0);
        let head = &mut self.slots[first];
        head.orig = orig.as_u64();
        head.mapping_size = size as u32;
        head.data_offset = plan.offset as u32;
        head.nslots = plan.nslots as u8;
        head.dir = dir;
        self.index = if end == self.slots.len() { 0 } else { end };
        self.used += plan.nslots;
    }

    /// Frees an allocation, merging it with the free runs around it inside
    /// its segment (Linux's `swiotlb_release_slots`).
    fn release(&mut self, first: usize, nslots: usize) {
        let end = first + nslots;
        let segment_end = (first | (SEGMENT_SLOTS - 1)) + 1;
        let after = if end < segment_end {
            self.lists[end]
        } else {
            0
        };
        for (i, list) in self.lists[first..end].iter_mut().enumerate() {
            *list = after + (nslots - i) as u8;
        }
        for slot in &mut self.slots[first..end] {
            slot.owner = FREE;
        }
        self.relink_before(first, after + nslots as u8);
        self.used -= nslots;
    }

    /// Recounts the free run that ends just before slot `first` (within its
    /// segment) now that `first` starts `free_from_first` free slots.
    fn relink_before(&mut self, first: usize, free_from_first: u8) {
        let segment_start = first & !(SEGMENT_SLOTS - 1);
        let before = &mut self.lists[segment_start..first];
        let run = trailing_free(before);
        let run_start = before.len() - run;
        for (i, list) in before[run_start..].iter_mut().enumerate() {
            *list = free_from_first + (run - i) as u8;
        }
    }

    /// The live mapping owning area-relative byte `offset`, if any.
    fn mapping_at(&self, offset: usize) -> Option<Live> {
        let slot = self.slots[offset >> SLOT_SHIFT];
        if slot.owner == FREE {
            return None;
        }
        let first = slot.owner as usize;
        let head = self.slots[first];
        Some(Live {
            first,
            nslots: usize::from(head.nslots),
            start: first * SLOT_SIZE + head.data_offset as usize,
            size: head.mapping_size as usize,
            orig: OrigAddr::new(head.orig),
            dir: head.dir,
        })
    }
}

/// Length of the run of free (non-zero) `lists` entries at the end of
/// `lists`. Runs reach back up to a segment, so it tests 16 entries at a
/// time (a branch-free minimum the compiler vectorizes) before looking at
/// single entries.
fn trailing_free(lists: &[u8]) -> usize {
    let mut run = 0;
    for chunk in lists.rchunks(16) {
        if chunk.iter().fold(u8::MAX, |min, &list| min.min(list)) != 0 {
            run += chunk.len();
        } else {
            return run + chunk.iter().rev().take_while(|&&list| list != 0).count();
        }
    }
    run
}

/// A live mapping as found from one of its addresses.
struct Live {
    first: usize,
    nslots: usize,
    /// Area-relative byte offset of the mapping's first byte.
    start: usize,
    size: usize,
    orig: OrigAddr,
    dir: Direction,
}

/// A bounce-buffer pool. Share it by reference between CPUs: every method
/// takes `&self`, and each area has its own lock.
///
/// The backing memory is borrowed for `'a` (`'static` in the guest, where it
/// is the low memory the DMA exchange hypercall returned). The copies run
/// under the area's lock, which is what lets the areas own their memory
/// without `unsafe`; CPUs mostly use their own area, so they rarely wait.
/// The locks are plain spinlocks: a kernel that maps from interrupt context
/// must disable interrupts around the calls, as Linux's `spin_lock_irqsave`.
pub struct Pool<'a> {
    areas: Vec<Area<'a>>,
    area_mask: usize,
    total_slots: usize,
    len: usize,
    bus_base: DmaAddr,
    cpu_base: CpuAddr,
    counters: Counters,
}

impl<'a> Pool<'a> {
    /// A pool over `memory`, which devices reach at `bus_base`, split into
    /// `nr_areas` areas.
    ///
    /// `memory` must be a non-zero multiple of [`SEGMENT_SIZE`] and
    /// `bus_base` page aligned; `nr_areas` a power of two no larger than the
    /// number of segments, so each area holds whole segments (a run that
    /// straddled two areas would be protected by two locks). When the
    /// segments do not divide evenly, areas differ by at most one segment.
    pub fn new(
        memory: &'a mut [u8],
        bus_base: DmaAddr,
        nr_areas: usize,
    ) -> Result<Self, PoolError> {
        let len = memory.len();
        if len == 0 || !len.is_multiple_of(SEGMENT_SIZE) {
            return Err(PoolError::BadSize { len });
        }
        if bus_base.as_u64() & PAGE_MASK != 0 {
            return Err(PoolError::UnalignedBusBase { bus_base });
        }
        if bus_base.checked_add(len as u64).is_none() {
            return Err(PoolError::BusRangeOverflow { bus_base, len });
        }
        let total_slots = len / SLOT_SIZE;
        if total_slots >= FREE as usize {
            return Err(PoolError::TooManySlots { slots: total_slots });
        }
        let segments = len / SEGMENT_SIZE;
        if !nr_areas.is_power_of_two() || nr_areas > segments {
            return Err(PoolError::BadAreas {
                areas: nr_areas,
                segments,
            });
        }

        let cpu_base = CpuAddr::new(memory.as_ptr().addr() as u64);
        let mut rest = memory;
        let mut areas = Vec::with_capacity(nr_areas);
        let segment_of =
            |area: usize| (area as u128 * segments as u128 / nr_areas as u128) as usize;
        for area in 0..nr_areas {
            let first_segment = segment_of(area);
            let area_slots = (segment_of(area + 1) - first_segment) * SEGMENT_SLOTS;
            let (mem, tail) = core::mem::take(&mut rest).split_at_mut(area_slots * SLOT_SIZE);
            rest = tail;
            let lists = (0..area_slots)
                .map(|i| (SEGMENT_SLOTS - i % SEGMENT_SLOTS) as u8)
                .collect();
            let first_slot = first_segment * SEGMENT_SLOTS;
            areas.push(Area {
                first_slot,
                bus_base: bus_base.as_u64() + (first_slot * SLOT_SIZE) as u64,
                state: Mutex::new(AreaState {
                    mem,
                    lists,
                    slots: alloc::vec![Slot::FREE; area_slots],
                    index: 0,
                    used: 0,
                    maps: 0,
                    unmaps: 0,
                    to_device: 0,
                    from_device: 0,
                }),
            });
        }
        Ok(Self {
            areas,
            area_mask: nr_areas - 1,
            total_slots,
            len,
            bus_base,
            cpu_base,
            counters: Counters::default(),
        })
    }

    /// Maps `size` bytes of the original buffer at `orig` for a device:
    /// allocates slots, copies the buffer in and returns the bus address the
    /// device must use.
    ///
    /// The search starts in area `cpu % nr_areas` and falls back to the
    /// others in turn, like Linux. On [`MapError::PoolFull`] the error's
    /// `Display` is the one line to log.
    pub fn map<M: OrigMemory + ?Sized>(
        &self,
        cpu: usize,
        mem: &M,
        orig: OrigAddr,
        size: usize,
        dir: Direction,
        attrs: MapAttrs,
    ) -> Result<DmaAddr, MapError> {
        let plan = match dir {
            Direction::None => Err(MapError::BadDirection),
            _ => Plan::new(orig, size, attrs),
        };
        let plan = plan.inspect_err(|_| {
            self.counters.map_failures.fetch_add(1, Relaxed);
        })?;

        let start = cpu & self.area_mask;
        for i in 0..self.areas.len() {
            let area = &self.areas[(start + i) & self.area_mask];
            let mut guard = area.state.lock();
            let state = &mut *guard;
            let Some(first) = state.find(area.bus_base, &plan) else {
                continue;
            };
            state.allocate(first, &plan, orig, size, dir);
            // Count before copying: a locked add right after a large copy
            // waits for the copy's stores to drain, costing tens of ns.
            let used = self.counters.used.fetch_add(plan.nslots, Relaxed) + plan.nslots;
            if used > self.counters.high_water.load(Relaxed) {
                self.counters.high_water.fetch_max(used, Relaxed);
            }
            let begin = first * SLOT_SIZE + plan.offset;
            // Copy in whatever the direction, FromDevice included. A device
            // may write less than the whole buffer; unmap then copies the
            // whole buffer back, and without this copy the bytes the device
            // did not write would be whatever an earlier mapping left in
            // these slots: another buffer's data leaked into this one and
            // the original's bytes clobbered. Bouncing the original first
            // makes the unwritten bytes come back unchanged, as they would
            // with no bounce at all (Linux does the same since its
            // "fix info leak with DMA_FROM_DEVICE").
            mem.read(orig, &mut state.mem[begin..begin + size]);
            state.maps += 1;
            state.to_device += size as u64;
            drop(guard);
            return Ok(DmaAddr::new(area.bus_base + begin as u64));
        }
        self.counters.map_failures.fetch_add(1, Relaxed);
        Err(MapError::PoolFull {
            size: plan.alloc_size,
            total_slots: self.total_slots,
            used_slots: self.counters.used.load(Relaxed),
        })
    }

    /// Ends a mapping: copies the device's data back for
    /// [`Direction::FromDevice`] and [`Direction::Bidirectional`], then frees
    /// the slots. `dma`, `size` and `dir` must be exactly those of the map;
    /// anything else (an address never mapped, a double unmap, another size
    /// or direction) is refused and changes nothing.
    pub fn unmap<M: OrigMemory + ?Sized>(
        &self,
        mem: &mut M,
        dma: DmaAddr,
        size: usize,
        dir: Direction,
    ) -> Result<(), HandleError> {
        self.count_error(self.unmap_inner(mem, dma, size, dir))
    }

    fn unmap_inner<M: OrigMemory + ?Sized>(
        &self,
        mem: &mut M,
        dma: DmaAddr,
        size: usize,
        dir: Direction,
    ) -> Result<(), HandleError> {
        if dir == Direction::None {
            return Err(HandleError::BadDirection);
        }
        let (area, offset) = self
            .locate(dma)
            .ok_or(HandleError::NotInPool { addr: dma })?;
        let mut guard = area.state.lock();
        let state = &mut *guard;
        let live = state
            .mapping_at(offset)
            .ok_or(HandleError::NotMapped { addr: dma })?;
        if offset != live.start {
            let start = DmaAddr::new(area.bus_base + live.start as u64);
            return Err(HandleError::NotMappingStart { addr: dma, start });
        }
        if size != live.size {
            return Err(HandleError::SizeMismatch {
                addr: dma,
                mapped: live.size,
                requested: size,
            });
        }
        if dir != live.dir {
            return Err(HandleError::DirectionMismatch {
                addr: dma,
                mapped: live.dir,
                requested: dir,
            });
        }
        // Before the copy, as in `map`.
        self.counters.used.fetch_sub(live.nslots, Relaxed);
        if dir.copies_to_cpu() {
            mem.write(live.orig, &state.mem[offset..offset + size]);
            state.from_device += size as u64;
        }
        state.release(live.first, live.nslots);
        state.unmaps += 1;
        Ok(())
    }

    /// Hands `size` bytes at `dma` (anywhere inside a live mapping) back to
    /// the CPU: copies them to the original buffer for
    /// [`Direction::FromDevice`] and [`Direction::Bidirectional`].
    pub fn sync_for_cpu<M: OrigMemory + ?Sized>(
        &self,
        mem: &mut M,
        dma: DmaAddr,
        size: usize,
        dir: Direction,
    ) -> Result<(), HandleError> {
        let result = self.with_range(dma, size, dir, |state, orig, range| {
            if dir.copies_to_cpu() {
                mem.write(orig, &state.mem[range.clone()]);
                state.from_device += range.len() as u64;
            }
        });
        self.count_error(result)
    }

    /// Hands `size` bytes at `dma` (anywhere inside a live mapping) back to
    /// the device: copies them from the original buffer for
    /// [`Direction::ToDevice`] and [`Direction::Bidirectional`].
    pub fn sync_for_device<M: OrigMemory + ?Sized>(
        &self,
        mem: &M,
        dma: DmaAddr,
        size: usize,
        dir: Direction,
    ) -> Result<(), HandleError> {
        let result = self.with_range(dma, size, dir, |state, orig, range| {
            if dir.copies_to_device() {
                let len = range.len() as u64;
                mem.read(orig, &mut state.mem[range]);
                state.to_device += len;
            }
        });
        self.count_error(result)
    }

    /// Checks a sync request the way dma-debug does (inside one mapping; the
    /// mapping's direction, unless it is bidirectional) and runs `sync` under
    /// the area lock with the original address and area-relative byte range.
    fn with_range(
        &self,
        dma: DmaAddr,
        size: usize,
        dir: Direction,
        sync: impl FnOnce(&mut AreaState<'a>, OrigAddr, core::ops::Range<usize>),
    ) -> Result<(), HandleError> {
        if dir == Direction::None {
            return Err(HandleError::BadDirection);
        }
        let (area, offset) = self
            .locate(dma)
            .ok_or(HandleError::NotInPool { addr: dma })?;
        let mut guard = area.state.lock();
        let state = &mut *guard;
        let live = state
            .mapping_at(offset)
            .ok_or(HandleError::NotMapped { addr: dma })?;
        let end = live.start + live.size;
        if offset < live.start || offset >= end || size > end - offset {
            return Err(HandleError::OutOfRange {
                addr: dma,
                size,
                start: DmaAddr::new(area.bus_base + live.start as u64),
                mapped: live.size,
            });
        }
        if live.dir != Direction::Bidirectional && dir != live.dir {
            return Err(HandleError::DirectionMismatch {
                addr: dma,
                mapped: live.dir,
                requested: dir,
            });
        }
        let orig = OrigAddr::new(live.orig.as_u64() + (offset - live.start) as u64);
        sync(state, orig, offset..offset + size);
        Ok(())
    }

    fn count_error(&self, result: Result<(), HandleError>) -> Result<(), HandleError> {
        if result.is_err() {
            self.counters.handle_errors.fetch_add(1, Relaxed);
        }
        result
    }

    /// The area holding `dma` and the area-relative byte offset.
    fn locate(&self, dma: DmaAddr) -> Option<(&Area<'a>, usize)> {
        let offset = dma.offset_from(self.bus_base)?;
        if offset >= self.len as u64 {
            return None;
        }
        let offset = offset as usize;
        let slot = offset / SLOT_SIZE;
        let index = self.areas.partition_point(|area| area.first_slot <= slot) - 1;
        let area = &self.areas[index];
        Some((area, offset - area.first_slot * SLOT_SIZE))
    }

    /// Reads pool memory at `dma` as a device would, ignoring mappings: for
    /// tests and emulated devices.
    pub fn bus_read(&self, dma: DmaAddr, buf: &mut [u8]) -> Result<(), HandleError> {
        let mut done = 0;
        self.bus_access(dma, buf.len(), |state, range| {
            let n = range.len();
            buf[done..done + n].copy_from_slice(&state.mem[range]);
            done += n;
        })
    }

    /// Writes pool memory at `dma` as a device would, ignoring mappings: for
    /// tests and emulated devices.
    pub fn bus_write(&self, dma: DmaAddr, data: &[u8]) -> Result<(), HandleError> {
        let mut done = 0;
        self.bus_access(dma, data.len(), |state, range| {
            let n = range.len();
            state.mem[range].copy_from_slice(&data[done..done + n]);
            done += n;
        })
    }

    fn bus_access(
        &self,
        dma: DmaAddr,
        len: usize,
        mut access: impl FnMut(&mut AreaState<'a>, core::ops::Range<usize>),
    ) -> Result<(), HandleError> {
        let fits = dma
            .offset_from(self.bus_base)
            .and_then(|offset| offset.checked_add(len as u64))
            .is_some_and(|end| end <= self.len as u64);
        if !fits {
            return Err(HandleError::NotInPool { addr: dma });
        }
        let mut done = 0;
        while done < len {
            let at = DmaAddr::new(dma.as_u64() + done as u64);
            let (area, offset) = self.locate(at).ok_or(HandleError::NotInPool { addr: at })?;
            let mut state = area.state.lock();
            let n = (len - done).min(state.mem.len() - offset);
            access(&mut state, offset..offset + n);
            done += n;
        }
        Ok(())
    }

    /// Whether `dma` lies in this pool (Linux's `is_swiotlb_buffer`): the DMA
    /// layer asks it to route an unmap or sync here.
    pub fn contains(&self, dma: DmaAddr) -> bool {
        self.locate(dma).is_some()
    }

    /// The CPU address of pool byte `dma`, if it is in the pool.
    pub fn cpu_addr(&self, dma: DmaAddr) -> Option<CpuAddr> {
        let offset = dma
            .offset_from(self.bus_base)
            .filter(|&o| o < self.len as u64)?;
        self.cpu_base.checked_add(offset)
    }

    /// Bus address of the pool's first byte.
    pub fn bus_base(&self) -> DmaAddr {
        self.bus_base
    }

    /// CPU address of the pool's first byte.
    pub fn cpu_base(&self) -> CpuAddr {
        self.cpu_base
    }

    /// Pool size in bytes.
    pub fn size(&self) -> usize {
        self.len
    }

    /// Slots in the pool.
    pub fn total_slots(&self) -> usize {
        self.total_slots
    }

    /// Number of areas.
    pub fn nr_areas(&self) -> usize {
        self.areas.len()
    }

    /// A snapshot of the statistics. Each area is read under its lock; with
    /// concurrent users the areas are read one after the other.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            total_slots: self.total_slots,
            map_failures: self.counters.map_failures.load(Relaxed),
            handle_errors: self.counters.handle_errors.load(Relaxed),
            ..Stats::default()
        };
        for area in &self.areas {
            let state = area.state.lock();
            stats.used_slots += state.used;
            stats.maps += state.maps;
            stats.unmaps += state.unmaps;
            stats.bounced_to_device += state.to_device;
            stats.bounced_from_device += state.from_device;
        }
        stats.high_water_slots = self.counters.high_water.load(Relaxed).max(stats.used_slots);
        stats
    }
}

impl fmt::Debug for Pool<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("bus_base", &self.bus_base)
            .field("cpu_base", &self.cpu_base)
            .field("size", &self.len)
            .field("areas", &self.areas.len())
            .finish_non_exhaustive()
    }
}

/// Introspection for the crate's tests: allocation placement and the free-run
/// invariant.
#[cfg(test)]
impl Pool<'_> {
    /// `(first pool slot, slot count)` of the allocation holding `dma`.
    pub(crate) fn allocation_of(&self, dma: DmaAddr) -> Option<(usize, usize)> {
        let (area, offset) = self.locate(dma)?;
        let state = area.state.lock();
        let live = state.mapping_at(offset)?;
        Some((area.first_slot + live.first, live.nslots))
    }

    /// The area index whose slots hold `dma`.
    pub(crate) fn area_of(&self, dma: DmaAddr) -> Option<usize> {
        let offset = dma.offset_from(self.bus_base)? as usize;
        let slot = offset / SLOT_SIZE;
        Some(self.areas.partition_point(|area| area.first_slot <= slot) - 1)
    }

    /// Panics unless every slot's `list` equals the length of the free run
    /// from it to the next used slot or segment end, owners are consistent
    /// and the used counts agree.
    pub(crate) fn check_invariants(&self) {
        let mut used_total = 0;
        for (a, area) in self.areas.iter().enumerate() {
            let state = area.state.lock();
            assert_eq!(area.first_slot % SEGMENT_SLOTS, 0);
            assert_eq!(state.mem.len(), state.slots.len() * SLOT_SIZE);
            assert_eq!(state.lists.len(), state.slots.len());
            let mut used = 0;
            let mut run = 0u8;
            for i in (0..state.slots.len()).rev() {
                if i % SEGMENT_SLOTS == SEGMENT_SLOTS - 1 {
                    run = 0;
                }
                let slot = &state.slots[i];
                if slot.owner == FREE {
                    run += 1;
                    assert_eq!(state.lists[i], run, "area {a} slot {i}: list");
                } else {
                    run = 0;
                    used += 1;
                    assert_eq!(state.lists[i], 0, "area {a} slot {i}: used slot with list");
                    let head = &state.slots[slot.owner as usize];
                    let first = slot.owner as usize;
                    assert!(i >= first && i < first + usize::from(head.nslots));
                    assert_eq!(head.owner as usize, first);
                    assert_eq!(
                        first / SEGMENT_SLOTS,
                        (first + usize::from(head.nslots) - 1) / SEGMENT_SLOTS
                    );
                }
            }
            assert_eq!(used, state.used, "area {a}: used count");
            used_total += used;
        }
        assert_eq!(used_total, self.counters.used.load(Relaxed));
    }
}

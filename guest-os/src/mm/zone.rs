//! Zones: which memory a device can reach. A page's zone is decided by its
//! **machine** address (what a DMA device sees on the bus, reported per
//! range by start-info), not by its guest-physical address: DMA below
//! 16 MiB, DMA32 below 4 GiB, Normal above. A guest-physical range is cut
//! where its machine addresses cross 16 MiB or 4 GiB ([`split_by_machine`]);
//! a node whose machine memory is all above 4 GiB has empty DMA and DMA32
//! zones, as Linux on an SGI Altix.
//!
//! A [`Zone`] holds its spans, its page counts (present: guest memory in
//! the zone; managed: what the buddy allocator got, i.e. present minus
//! page 0, the image, the boot data, the kernel heap and the per-CPU
//! blocks taken at boot), its buddy
//! allocator and one per-CPU list per vCPU, behind one lock (`zone->lock`).

use alloc::vec::Vec;
use core::fmt;

use pv_abi::{Gfn, Gpa, Maddr};
use spin::Mutex;

use super::buddy::{Buddy, BuddyCounts, FreeError, List, PageState, Span, NR_ORDERS};
use super::pcp::{self, PcpParams};
use super::stats::{NumaStat, NumaStats, NR_NUMA_STATS};

/// Zone types, lowest first (Linux's `enum zone_type` on x86-64, without
/// `ZONE_MOVABLE` and `ZONE_DEVICE`, which this guest never populates).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZoneType {
    /// Machine addresses below 16 MiB (ISA DMA).
    Dma = 0,
    /// Machine addresses below 4 GiB (32-bit DMA).
    Dma32 = 1,
    /// Everything else.
    Normal = 2,
}

/// Number of zone types.
pub const NR_ZONES: usize = 3;

impl ZoneType {
    /// All zone types, lowest first.
    pub const ALL: [ZoneType; NR_ZONES] = [ZoneType::Dma, ZoneType::Dma32, ZoneType::Normal];

    /// Linux's name (`/proc/zoneinfo`, boot messages).
    pub const fn name(self) -> &'static str {
        match self {
            ZoneType::Dma => "DMA",
            ZoneType::Dma32 => "DMA32",
            ZoneType::Normal => "Normal",
        }
    }

    /// Index (0 for DMA).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The zone of index `i`.
    pub const fn from_index(i: usize) -> Option<ZoneType> {
        match i {
            0 => Some(ZoneType::Dma),
            1 => Some(ZoneType::Dma32),
            2 => Some(ZoneType::Normal),
            _ => None,
        }
    }

    /// First machine address of the zone.
    pub const fn machine_start(self) -> u64 {
        match self {
            ZoneType::Dma => 0,
            ZoneType::Dma32 => DMA_LIMIT,
            ZoneType::Normal => DMA32_LIMIT,
        }
    }

    /// One past the zone's last machine address (`u64::MAX` for Normal).
    pub const fn machine_end(self) -> u64 {
        match self {
            ZoneType::Dma => DMA_LIMIT,
            ZoneType::Dma32 => DMA32_LIMIT,
            ZoneType::Normal => u64::MAX,
        }
    }

    /// The zone of a machine address.
    pub const fn of(maddr: Maddr) -> ZoneType {
        if maddr.0 < DMA_LIMIT {
            ZoneType::Dma
        } else if maddr.0 < DMA32_LIMIT {
            ZoneType::Dma32
        } else {
            ZoneType::Normal
        }
    }
}

impl fmt::Display for ZoneType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// End of `ZONE_DMA` (machine): 16 MiB.
pub const DMA_LIMIT: u64 = 16 << 20;
/// End of `ZONE_DMA32` (machine): 4 GiB.
pub const DMA32_LIMIT: u64 = 1 << 32;

/// One piece of a guest range that lies in one zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Its zone.
    pub zone: ZoneType,
    /// First guest-physical address.
    pub gpa: Gpa,
    /// Bytes.
    pub size: u64,
    /// Machine address of `gpa`.
    pub maddr: Maddr,
}

/// Cuts `[gpa, gpa + size)`, backed contiguously from `maddr`, where its
/// machine addresses cross a zone boundary. Empty pieces are left out; a
/// range whose machine end would overflow is cut at `u64::MAX`.
pub fn split_by_machine(gpa: Gpa, size: u64, maddr: Maddr) -> Vec<Piece> {
    let mut out = Vec::new();
    let m_end = maddr.0.saturating_add(size);
    for z in ZoneType::ALL {
        let s = maddr.0.max(z.machine_start());
        let e = m_end.min(z.machine_end());
        if s < e {
            out.push(Piece {
                zone: z,
                gpa: Gpa(gpa.0 + (s - maddr.0)),
                size: e - s,
                maddr: Maddr(s),
            });
        }
    }
    out
}

/// A snapshot of a zone's counters (`/proc/zoneinfo`-like).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneInfo {
    /// The node.
    pub nid: u32,
    /// The zone type.
    pub zone: ZoneType,
    /// Guest pages in the zone.
    pub present: u64,
    /// Pages given to the buddy allocator.
    pub managed: u64,
    /// Pages on the free lists.
    pub free: u64,
    /// Free pages on per-CPU lists (all CPUs).
    pub pcp: u64,
    /// Pages allocated: `managed - free - pcp`.
    pub used: u64,
    /// Free blocks per order.
    pub free_area: [u32; NR_ORDERS],
    /// Per-CPU list parameters.
    pub pcp_params: PcpParams,
}

impl ZoneInfo {
    /// `present - managed`.
    pub const fn reserved(&self) -> u64 {
        self.present - self.managed
    }
}

struct ZoneInner {
    buddy: Buddy,
    /// One list per vCPU.
    pcp: Vec<List>,
    /// The numastat counters the zone's allocations add to its node
    /// (`numa_hit`, `numa_miss`, `local_node`, `other_node`), counted under
    /// the zone lock the allocation holds anyway, as Linux counts them in
    /// per-CPU zone counters without atomics; [`super::Node::numa_stats`]
    /// sums them with the node's own counters.
    numa: [u64; NR_NUMA_STATS],
}

/// One zone of one node.
pub struct Zone {
    nid: u32,
    kind: ZoneType,
    spans: Vec<Span>,
    present: u64,
    managed: u64,
    pcp_params: PcpParams,
    inner: Mutex<ZoneInner>,
}

impl Zone {
    /// A zone of node `nid` over `buddy`'s spans, with one per-CPU list
    /// per vCPU.
    pub(super) fn new(nid: u32, kind: ZoneType, buddy: Buddy, nr_cpus: u32) -> Self {
        let present = buddy.pages();
        let managed = buddy.nr_free();
        let spans = buddy.spans().to_vec();
        Zone {
            nid,
            kind,
            spans,
            present,
            managed,
            pcp_params: PcpParams::for_zone(managed),
            inner: Mutex::new(ZoneInner {
                buddy,
                pcp: alloc::vec![List::EMPTY; nr_cpus.max(1) as usize],
                numa: [0; NR_NUMA_STATS],
            }),
        }
    }

    /// The node.
    pub const fn nid(&self) -> u32 {
        self.nid
    }

    /// The zone type.
    pub const fn zone_type(&self) -> ZoneType {
        self.kind
    }

    /// Guest pages in the zone (`present_pages`).
    pub const fn present(&self) -> u64 {
        self.present
    }

    /// Pages the buddy allocator manages (`managed_pages`).
    pub const fn managed(&self) -> u64 {
        self.managed
    }

    /// Whether the zone has pages (`populated_zone`).
    pub const fn populated(&self) -> bool {
        self.present > 0
    }

    /// Per-CPU list parameters.
    pub const fn pcp_params(&self) -> PcpParams {
        self.pcp_params
    }

    /// The zone's spans, by guest frame.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The span holding `gfn`.
    #[inline]
    pub fn span_of(&self, gfn: Gfn) -> Option<&Span> {
        let k = self.spans.partition_point(|s| s.end() <= gfn.0);
        self.spans.get(k).filter(|s| s.gfn.0 <= gfn.0)
    }

    /// Whether the zone has frame `gfn`.
    #[inline]
    pub fn contains(&self, gfn: Gfn) -> bool {
        self.span_of(gfn).is_some()
    }

    /// The machine address of `gfn`, if the zone has it.
    pub fn maddr_of(&self, gfn: Gfn) -> Option<Maddr> {
        self.span_of(gfn)
            .map(|s| Maddr(s.maddr.0 + ((gfn.0 - s.gfn.0) << pv_abi::PAGE_SHIFT)))
    }

    /// `rmqueue`: a block of `order` for `cpu` (order 0 through its per-CPU
    /// list), as its first frame and that frame's machine address. A
    /// successful allocation counts `numa_hit` (the zone is on `preferred`)
    /// or `numa_miss`, and `local_node` (the zone is on `local`, the CPU's
    /// node) or `other_node`, on the zone's node (Linux's
    /// `zone_statistics`; `numa_foreign` on the preferred node is the
    /// caller's).
    #[inline(always)]
    pub(super) fn rmqueue(
        &self,
        cpu: u32,
        order: u32,
        preferred: u32,
        local: u32,
    ) -> Option<(Gfn, Maddr)> {
        let mut z = self.inner.lock();
        let ZoneInner { buddy, pcp, numa } = &mut *z;
        let i = if order == 0 {
            let list = pcp.get_mut(cpu as usize)?;
            pcp::alloc(buddy, list, self.pcp_params)?
        } else {
            buddy.alloc(order)?
        };
        let hit = if self.nid == preferred {
            NumaStat::Hit
        } else {
            NumaStat::Miss
        };
        let loc = if self.nid == local {
            NumaStat::LocalNode
        } else {
            NumaStat::OtherNode
        };
        numa[hit as usize] += 1;
        numa[loc as usize] += 1;
        Some(buddy.gfn_maddr_of(i))
    }

    /// Frees the block of `order` at `gfn` (order 0 to `cpu`'s list).
    #[inline]
    pub(super) fn free(&self, cpu: u32, gfn: Gfn, order: u32) -> Result<(), FreeError> {
        let mut z = self.inner.lock();
        let ZoneInner { buddy, pcp, .. } = &mut *z;
        let i = buddy.validate_free(gfn, order)?;
        Self::free_at(buddy, pcp, self.pcp_params, cpu, i, order);
        Ok(())
    }

    /// [`Zone::free`] if the zone has frame `gfn`; `None` (nothing done) if
    /// not.
    #[inline]
    pub(super) fn free_if_here(
        &self,
        cpu: u32,
        gfn: Gfn,
        order: u32,
    ) -> Option<Result<(), FreeError>> {
        // The zone's spans are its buddy allocator's, so this is the index
        // `Buddy::validate_free` would find.
        let s = self.span_of(gfn)?;
        let i = s.idx + (gfn.0 - s.gfn.0) as u32;
        let mut z = self.inner.lock();
        let ZoneInner { buddy, pcp, .. } = &mut *z;
        Some(buddy.validate_free_at(i, gfn, order).map(|i| {
            Self::free_at(buddy, pcp, self.pcp_params, cpu, i, order);
        }))
    }

    #[inline]
    fn free_at(buddy: &mut Buddy, pcp: &mut [List], p: PcpParams, cpu: u32, i: u32, order: u32) {
        match pcp.get_mut(cpu as usize) {
            Some(list) if order == 0 => pcp::free(buddy, list, i, p),
            _ => buddy.free(i, order),
        }
    }

    /// The numastat counters this zone's allocations added to its node.
    pub(super) fn numa_counts(&self) -> NumaStats {
        let z = self.inner.lock();
        let mut s = NumaStats::default();
        for st in NumaStat::ALL {
            s.add(st, z.numa[st as usize]);
        }
        s
    }

    /// Returns the per-CPU pages of `cpu` (every CPU for `None`) to the
    /// buddy lists; the number of pages.
    pub fn drain(&self, cpu: Option<u32>) -> u64 {
        let mut z = self.inner.lock();
        let ZoneInner { buddy, pcp, .. } = &mut *z;
        let mut n = 0;
        for (c, list) in pcp.iter_mut().enumerate() {
            if cpu.is_none_or(|x| x as usize == c) {
                n += u64::from(pcp::drain(buddy, list));
            }
        }
        n
    }

    /// Pages on `cpu`'s per-CPU list.
    pub fn pcp_count(&self, cpu: u32) -> u32 {
        self.inner.lock().pcp.get(cpu as usize).map_or(0, List::len)
    }

    /// Whether a per-CPU list of the zone holds pages.
    pub(super) fn has_pcp_pages(&self) -> bool {
        self.inner.lock().pcp.iter().any(|l| !l.is_empty())
    }

    /// State and order of the block head at `gfn`, if the zone has it.
    pub fn page_state(&self, gfn: Gfn) -> Option<(PageState, u32)> {
        let z = self.inner.lock();
        z.buddy.idx_of(gfn).map(|i| z.buddy.state(i))
    }

    /// The counters now.
    pub fn info(&self) -> ZoneInfo {
        let z = self.inner.lock();
        let free = z.buddy.nr_free();
        let pcp: u64 = z.pcp.iter().map(|l| u64::from(l.len())).sum();
        ZoneInfo {
            nid: self.nid,
            zone: self.kind,
            present: self.present,
            managed: self.managed,
            free,
            pcp,
            used: self.managed.saturating_sub(free + pcp),
            free_area: z.buddy.free_counts(),
            pcp_params: self.pcp_params,
        }
    }

    /// Checks the zone's invariants (see [`Buddy::check`]) and that free,
    /// per-CPU, allocated and reserved pages add up to present and free,
    /// per-CPU and allocated pages to managed. Every problem, prefixed with
    /// the zone's name.
    pub fn check(&self) -> Vec<alloc::string::String> {
        let z = self.inner.lock();
        let (c, mut bad): (BuddyCounts, _) = z.buddy.check(&z.pcp);
        if c.free + c.pcp + c.allocated != self.managed {
            bad.push(alloc::format!(
                "free {} + per-CPU {} + allocated {} != managed {}",
                c.free,
                c.pcp,
                c.allocated,
                self.managed
            ));
        }
        if c.free + c.pcp + c.allocated + c.reserved != self.present {
            bad.push(alloc::format!(
                "free {} + per-CPU {} + allocated {} + reserved {} != present {}",
                c.free,
                c.pcp,
                c.allocated,
                c.reserved,
                self.present
            ));
        }
        bad.into_iter()
            .map(|b| alloc::format!("node {} zone {}: {b}", self.nid, self.kind))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_boundaries_cut_ranges() {
        let mb = 1u64 << 20;
        // Machine [8 MiB, 4 GiB + 8 MiB) at guest 1 GiB: three pieces.
        let p = split_by_machine(Gpa(1 << 30), 1 << 32, Maddr(8 * mb));
        assert_eq!(
            p,
            vec![
                Piece {
                    zone: ZoneType::Dma,
                    gpa: Gpa(1 << 30),
                    size: 8 * mb,
                    maddr: Maddr(8 * mb)
                },
                Piece {
                    zone: ZoneType::Dma32,
                    gpa: Gpa((1 << 30) + 8 * mb),
                    size: (1 << 32) - 16 * mb,
                    maddr: Maddr(16 * mb)
                },
                Piece {
                    zone: ZoneType::Normal,
                    gpa: Gpa((1 << 30) + (1 << 32) - 8 * mb),
                    size: 8 * mb,
                    maddr: Maddr(1 << 32)
                },
            ]
        );
        // All high: one Normal piece, whatever the guest address.
        let p = split_by_machine(Gpa(0), 64 * mb, Maddr(0x1_0400_0000));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].zone, ZoneType::Normal);
        assert_eq!(ZoneType::of(Maddr(DMA32_LIMIT - 1)), ZoneType::Dma32);
        assert_eq!(ZoneType::of(Maddr(DMA_LIMIT)), ZoneType::Dma32);
        assert!(split_by_machine(Gpa(0), 0, Maddr(0)).is_empty());
        assert_eq!(split_by_machine(Gpa(0), 10, Maddr(u64::MAX - 4))[0].size, 4);
    }
}

//! NUMA allocation counters per node, with the meaning of Linux's
//! `/sys/devices/system/node/nodeN/numastat` (and the `numastat` tool):
//!
//! | counter | incremented on | when |
//! | --- | --- | --- |
//! | `numa_hit` | the page's node | the page is on the preferred node |
//! | `numa_miss` | the page's node | the page is not on the preferred node |
//! | `numa_foreign` | the preferred node | the page is not on the preferred node |
//! | `interleave_hit` | the page's node | an interleave policy wanted this node and got it |
//! | `local_node` | the page's node | the page is on the allocating CPU's node |
//! | `other_node` | the page's node | the page is not on the allocating CPU's node |
//!
//! As Linux's `zone_statistics()` (mm/vmstat.h, mm/page_alloc.c):
//! - each *allocation* counts once, whatever its order;
//! - the *preferred node* is the node of the preferred zone, the first zone
//!   of the zonelist that the allocation may use (`ac->preferred_zoneref`:
//!   allowed by the zone modifier and the nodemask). For a node with memory
//!   and no restriction that is the node itself; for a memoryless node it
//!   is its nearest node with memory, so local allocations of a CPU on a
//!   memoryless node count as hits there, not as misses;
//! - local/other compare with `numa_node_id()`, the CPU's own node, **not**
//!   `numa_mem_id()`: every allocation of a CPU on a memoryless node counts
//!   as `other_node` (Linux: `if (zone_to_nid(z) != numa_node_id())
//!   local_stat = NUMA_OTHER`).
//!
//! `interleave_hit` is counted by the memory-policy code through
//! [`super::Mm::count_interleave_hit`], as Linux's `alloc_pages_mpol` does
//! after an interleaved allocation (`page_to_nid(page) == nid`).

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// One numastat counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NumaStat {
    /// `numa_hit`.
    Hit = 0,
    /// `numa_miss`.
    Miss = 1,
    /// `numa_foreign`.
    Foreign = 2,
    /// `interleave_hit`.
    InterleaveHit = 3,
    /// `local_node`.
    LocalNode = 4,
    /// `other_node`.
    OtherNode = 5,
}

/// Number of counters.
pub const NR_NUMA_STATS: usize = 6;

impl NumaStat {
    /// Every counter, in numastat's order.
    pub const ALL: [NumaStat; NR_NUMA_STATS] = [
        NumaStat::Hit,
        NumaStat::Miss,
        NumaStat::Foreign,
        NumaStat::InterleaveHit,
        NumaStat::LocalNode,
        NumaStat::OtherNode,
    ];

    /// numastat's name.
    pub const fn name(self) -> &'static str {
        match self {
            NumaStat::Hit => "numa_hit",
            NumaStat::Miss => "numa_miss",
            NumaStat::Foreign => "numa_foreign",
            NumaStat::InterleaveHit => "interleave_hit",
            NumaStat::LocalNode => "local_node",
            NumaStat::OtherNode => "other_node",
        }
    }
}

/// The counters of one node.
#[derive(Default)]
pub struct NodeStats([AtomicU64; NR_NUMA_STATS]);

impl NodeStats {
    /// Adds `n` to `stat`.
    pub fn add(&self, stat: NumaStat, n: u64) {
        self.0[stat as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> NumaStats {
        let g = |s: NumaStat| self.0[s as usize].load(Ordering::Relaxed);
        NumaStats {
            numa_hit: g(NumaStat::Hit),
            numa_miss: g(NumaStat::Miss),
            numa_foreign: g(NumaStat::Foreign),
            interleave_hit: g(NumaStat::InterleaveHit),
            local_node: g(NumaStat::LocalNode),
            other_node: g(NumaStat::OtherNode),
        }
    }
}

/// A node's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NumaStats {
    /// `numa_hit`.
    pub numa_hit: u64,
    /// `numa_miss`.
    pub numa_miss: u64,
    /// `numa_foreign`.
    pub numa_foreign: u64,
    /// `interleave_hit`.
    pub interleave_hit: u64,
    /// `local_node`.
    pub local_node: u64,
    /// `other_node`.
    pub other_node: u64,
}

impl NumaStats {
    /// One counter.
    pub const fn get(&self, s: NumaStat) -> u64 {
        match s {
            NumaStat::Hit => self.numa_hit,
            NumaStat::Miss => self.numa_miss,
            NumaStat::Foreign => self.numa_foreign,
            NumaStat::InterleaveHit => self.interleave_hit,
            NumaStat::LocalNode => self.local_node,
            NumaStat::OtherNode => self.other_node,
        }
    }

    /// Adds `n` to one counter.
    pub fn add(&mut self, s: NumaStat, n: u64) {
        let f = match s {
            NumaStat::Hit => &mut self.numa_hit,
            NumaStat::Miss => &mut self.numa_miss,
            NumaStat::Foreign => &mut self.numa_foreign,
            NumaStat::InterleaveHit => &mut self.interleave_hit,
            NumaStat::LocalNode => &mut self.local_node,
            NumaStat::OtherNode => &mut self.other_node,
        };
        *f = f.wrapping_add(n);
    }

    /// `self - before`, counter by counter.
    pub fn since(&self, before: &NumaStats) -> NumaStats {
        let mut d = NumaStats::default();
        for s in NumaStat::ALL {
            d.add(s, self.get(s).wrapping_sub(before.get(s)));
        }
        d
    }
}

/// `numa_hit=1 numa_miss=0 ...`
impl fmt::Display for NumaStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, s) in NumaStat::ALL.iter().enumerate() {
            let sep = if k == 0 { "" } else { " " };
            write!(f, "{sep}{}={}", s.name(), self.get(*s))?;
        }
        Ok(())
    }
}

/// Linux's `zone_statistics(preferred_zone, z)` for one allocation: the
/// `(node, counter)` pairs to increment by one, given the preferred zone's
/// node, the page's node and the allocating CPU's node (`numa_node_id()`).
pub fn zone_statistics(
    preferred: u32,
    page: u32,
    local: u32,
) -> impl Iterator<Item = (u32, NumaStat)> {
    let local_stat = if page == local {
        NumaStat::LocalNode
    } else {
        NumaStat::OtherNode
    };
    let (first, second) = if page == preferred {
        ((page, NumaStat::Hit), None)
    } else {
        ((page, NumaStat::Miss), Some((preferred, NumaStat::Foreign)))
    };
    core::iter::once(first)
        .chain(second)
        .chain(core::iter::once((page, local_stat)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    #[test]
    fn zone_statistics_rules() {
        let v = |p, g, l| zone_statistics(p, g, l).collect::<Vec<_>>();
        assert_eq!(v(0, 0, 0), [(0, NumaStat::Hit), (0, NumaStat::LocalNode)]);
        assert_eq!(v(1, 1, 0), [(1, NumaStat::Hit), (1, NumaStat::OtherNode)]);
        assert_eq!(
            v(0, 1, 0),
            [
                (1, NumaStat::Miss),
                (0, NumaStat::Foreign),
                (1, NumaStat::OtherNode)
            ]
        );
        assert_eq!(
            v(0, 1, 1),
            [
                (1, NumaStat::Miss),
                (0, NumaStat::Foreign),
                (1, NumaStat::LocalNode)
            ]
        );
    }

    #[test]
    fn snapshots() {
        let s = NodeStats::default();
        s.add(NumaStat::Hit, 2);
        s.add(NumaStat::OtherNode, 1);
        let a = s.snapshot();
        s.add(NumaStat::Hit, 1);
        let d = s.snapshot().since(&a);
        assert_eq!(d.numa_hit, 1);
        assert_eq!(d.other_node, 0);
        assert_eq!(
            a.to_string(),
            "numa_hit=2 numa_miss=0 numa_foreign=0 interleave_hit=0 local_node=0 other_node=1"
        );
    }
}

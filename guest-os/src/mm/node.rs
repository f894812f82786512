//! [`Node`]: Linux's `pglist_data`, one per node of the view, memoryless
//! ones included (their zones have no pages).

use alloc::vec::Vec;

use super::stats::{NodeStats, NumaStat, NumaStats};
use super::zone::{Zone, ZoneType, NR_ZONES};
use super::zonelist::{Zonelist, ZonelistKind};

/// One node.
pub struct Node {
    pub(super) id: u32,
    pub(super) vnode: u32,
    pub(super) cpus: Vec<u32>,
    pub(super) zones: [Zone; NR_ZONES],
    pub(super) node_order: Vec<u32>,
    pub(super) zonelists: [Zonelist; 2],
    pub(super) stats: NodeStats,
}

impl Node {
    /// Linux's node id.
    pub const fn id(&self) -> u32 {
        self.id
    }

    /// The vnode (proximity domain).
    pub const fn vnode(&self) -> u32 {
        self.vnode
    }

    /// Its CPUs.
    pub fn cpus(&self) -> &[u32] {
        &self.cpus
    }

    /// One zone.
    #[inline]
    pub fn zone(&self, t: ZoneType) -> &Zone {
        &self.zones[t.index()]
    }

    /// Its zones, lowest first.
    pub fn zones(&self) -> &[Zone; NR_ZONES] {
        &self.zones
    }

    /// Guest pages on the node (`node_present_pages`).
    pub fn present_pages(&self) -> u64 {
        self.zones.iter().map(Zone::present).sum()
    }

    /// Pages the allocator manages on the node.
    pub fn managed_pages(&self) -> u64 {
        self.zones.iter().map(Zone::managed).sum()
    }

    /// Whether the node has memory (`N_MEMORY`).
    pub fn has_memory(&self) -> bool {
        self.present_pages() > 0
    }

    /// Whether the node has CPUs.
    pub fn has_cpus(&self) -> bool {
        !self.cpus.is_empty()
    }

    /// Whether Linux would have this node online: it has CPUs or memory
    /// (a vnode with neither is no node to Linux at all).
    pub fn online(&self) -> bool {
        self.has_cpus() || self.has_memory()
    }

    /// A zonelist.
    #[inline]
    pub fn zonelist(&self, kind: ZonelistKind) -> &Zonelist {
        &self.zonelists[kind as usize]
    }

    /// The node order of the fallback list (this node first), as
    /// "Fallback order for Node N" prints it.
    pub fn node_order(&self) -> &[u32] {
        &self.node_order
    }

    /// The numastat counters now.
    pub fn numa_stats(&self) -> NumaStats {
        let mut s = self.stats.snapshot();
        for z in &self.zones {
            let c = z.numa_counts();
            for st in NumaStat::ALL {
                s.add(st, c.get(st));
            }
        }
        s
    }
}

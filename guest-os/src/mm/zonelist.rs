//! Zonelists: for each node, the zones an allocation that prefers the node
//! tries, in order (Linux's `build_all_zonelists`, mm/page_alloc.c).
//!
//! The node order of a node's fallback list comes from repeated
//! `find_next_best_node`: the node itself first (even if it has no
//! memory), then every node with memory, cheapest first, where the cost of
//! node `n` seen from `local` is
//!
//! ```text
//! (distance(local, n) + (n < local) + penalty(n)) * MAX_NUMNODES + node_load[n]
//! ```
//!
//! with ties going to the lowest node id. `(n < local)` prefers the next
//! node number over the previous one at equal distance. `node_load[n]` is
//! raised by one each time `n` is the first node of a new distance group
//! in some node's order; it starts at zero for the whole build and is kept
//! across the nodes (a static array in Linux), so the nodes of one
//! distance group take turns being first. `penalty(n)` is
//! `PENALTY_FOR_NODE_WITH_CPUS` (1) for nodes whose CPU mask is not empty
//! **when the zonelists are built**. On x86 that is never: Linux builds its
//! zonelists in `start_kernel` before any CPU is added to a node's mask
//! (`numa_add_cpu` runs when each CPU is identified, later), so the penalty
//! has no effect there, and this guest matches x86 ([`CpuPenalty::X86`]).
//!
//! Within one node's build the candidates' costs do not change (only the
//! node just chosen gets more load), so the order is a sort by cost; this
//! module sorts instead of rescanning (O(n² log n) for all nodes, where
//! Linux's rescans are O(n³)). [`super::linux_ref`] is the literal
//! transcription it is tested against.
//!
//! Zones of a node go in the list highest first (Normal, DMA32, DMA), only
//! populated ones (`build_zonerefs_node`). In **node order** (Linux's only
//! order since 4.14, the default here) each node contributes all its zones
//! before the next node; in the legacy **zone order** (Linux up to 4.13)
//! every node's Normal zone comes first, then every DMA32 zone, then DMA,
//! each in node order, which keeps the scarce low zones for last.
//! The **no-fallback** list (`__GFP_THISNODE`) holds the node's own zones.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::nodemask::NodeMask;
use super::zone::{ZoneType, NR_ZONES};

/// Linux's `MAX_NUMNODES` on Debian's x86-64 kernels (`CONFIG_NODES_SHIFT`
/// = 10): the multiplier that makes distance dominate load in the cost.
pub const MAX_NUMNODES: u64 = 1024;
/// Linux's `PENALTY_FOR_NODE_WITH_CPUS`.
pub const PENALTY_FOR_NODE_WITH_CPUS: u64 = 1;

/// One zone in a zonelist (`struct zoneref`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ZoneRef {
    /// Its node.
    pub nid: u32,
    /// Its type.
    pub zone: ZoneType,
}

/// `1:DMA32`.
impl fmt::Display for ZoneRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.nid, self.zone)
    }
}

/// An ordered list of zones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zonelist(Vec<ZoneRef>);

impl Zonelist {
    /// From zone references, in order.
    pub fn new(refs: Vec<ZoneRef>) -> Self {
        Zonelist(refs)
    }

    /// The zones, in order.
    pub fn refs(&self) -> &[ZoneRef] {
        &self.0
    }

    /// Whether it holds no zone.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The zones an allocation may use (`for_each_zone_zonelist_nodemask`):
    /// type at most `highest`, node in `nodemask` if one is given.
    #[inline]
    pub fn allowed<'a>(
        &'a self,
        highest: ZoneType,
        nodemask: Option<&'a NodeMask>,
    ) -> impl Iterator<Item = ZoneRef> + 'a {
        self.0
            .iter()
            .copied()
            .filter(move |z| z.zone <= highest && nodemask.is_none_or(|m| m.contains(z.nid)))
    }

    /// The first of those (`first_zones_zonelist`): the preferred zone.
    #[inline]
    pub fn first_zone(&self, highest: ZoneType, nodemask: Option<&NodeMask>) -> Option<ZoneRef> {
        self.allowed(highest, nodemask).next()
    }

    /// The nodes in the list, each once, in order of first appearance.
    pub fn nodes(&self) -> Vec<u32> {
        let mut v: Vec<u32> = Vec::new();
        for z in &self.0 {
            if !v.contains(&z.nid) {
                v.push(z.nid);
            }
        }
        v
    }
}

/// `1:DMA32 3:DMA32`, or `(empty)`.
impl fmt::Display for Zonelist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(empty)");
        }
        for (k, z) in self.0.iter().enumerate() {
            let sep = if k == 0 { "" } else { " " };
            write!(f, "{sep}{z}")?;
        }
        Ok(())
    }
}

/// Which of a node's zonelists (`ZONELIST_FALLBACK`, `ZONELIST_NOFALLBACK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZonelistKind {
    /// Every node with memory, nearest first.
    Fallback = 0,
    /// The node alone (`__GFP_THISNODE`).
    NoFallback = 1,
}

/// How zones are ordered in fallback lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZonelistOrder {
    /// All zones of a node, then the next node.
    Node,
    /// Every node's highest zone type first (legacy, Linux up to 4.13).
    Zone,
}

impl ZonelistOrder {
    /// Linux 4.13's name (`zonelist_order_name`).
    pub const fn name(self) -> &'static str {
        match self {
            ZonelistOrder::Node => "Node",
            ZonelistOrder::Zone => "Zone",
        }
    }
}

/// `numa_zonelist_order=` on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderChoice {
    /// `node`: node order.
    Node,
    /// `zone`: the legacy zone order.
    Zone,
    /// `default`: the pre-4.14 heuristic ([`default_zonelist_order`]).
    Default,
}

impl OrderChoice {
    /// Linux 4.13's `__parse_numa_zonelist_order`: the first letter decides
    /// (`d`/`D`, `n`/`N`, `z`/`Z`); anything else is `None`.
    pub fn parse(s: &str) -> Option<OrderChoice> {
        match s.bytes().next() {
            Some(b'd' | b'D') => Some(OrderChoice::Default),
            Some(b'n' | b'N') => Some(OrderChoice::Node),
            Some(b'z' | b'Z') => Some(OrderChoice::Zone),
            _ => None,
        }
    }

    /// The command-line spelling.
    pub const fn name(self) -> &'static str {
        match self {
            OrderChoice::Node => "node",
            OrderChoice::Zone => "zone",
            OrderChoice::Default => "default",
        }
    }
}

/// Whose CPU masks count for `PENALTY_FOR_NODE_WITH_CPUS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuPenalty<'a> {
    /// x86 at boot: no CPU is in any node's mask yet, no penalty.
    X86,
    /// CPU masks already filled: `true` for nodes with CPUs (other
    /// architectures, or a rebuild after boot).
    Masks(&'a [bool]),
}

/// What the zonelists are built from.
#[derive(Clone, Copy, Debug)]
pub struct ZonelistInput<'a> {
    /// Nodes (ids `0..nr_nodes`).
    pub nr_nodes: usize,
    /// `nr_nodes²` distances, row-major (`distance(from, to)` at
    /// `from * nr_nodes + to`); missing entries read as 0.
    pub distances: &'a [u32],
    /// Per node, per zone type: whether the zone has pages
    /// (`populated_zone`). A node with any is in `N_MEMORY`.
    pub populated: &'a [[bool; NR_ZONES]],
    /// The CPU penalty rule.
    pub cpus: CpuPenalty<'a>,
}

impl ZonelistInput<'_> {
    fn distance(&self, a: usize, b: usize) -> u64 {
        u64::from(
            self.distances
                .get(a * self.nr_nodes + b)
                .copied()
                .unwrap_or(0),
        )
    }

    fn has_memory(&self, n: usize) -> bool {
        self.populated.get(n).is_some_and(|z| z.iter().any(|&p| p))
    }

    fn populated(&self, n: usize, z: ZoneType) -> bool {
        self.populated.get(n).is_some_and(|p| p[z.index()])
    }
}

/// Every node's zonelists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zonelists {
    /// Per node: the node order of its fallback list (the node first, then
    /// every other node with memory), as "Fallback order" prints it.
    pub node_order: Vec<Vec<u32>>,
    /// Per node: `ZONELIST_FALLBACK`.
    pub fallback: Vec<Zonelist>,
    /// Per node: `ZONELIST_NOFALLBACK`.
    pub nofallback: Vec<Zonelist>,
}

/// The node's populated zones, highest first (`build_zonerefs_node`).
fn zonerefs_node(inp: &ZonelistInput<'_>, n: usize, out: &mut Vec<ZoneRef>) {
    for z in ZoneType::ALL.iter().rev() {
        if inp.populated(n, *z) {
            out.push(ZoneRef {
                nid: n as u32,
                zone: *z,
            });
        }
    }
}

/// Builds every node's zonelists, nodes in id order, with one `node_load`
/// for the whole build (`__build_all_zonelists`).
pub fn build_all_zonelists(inp: &ZonelistInput<'_>, order: ZonelistOrder) -> Zonelists {
    let n = inp.nr_nodes;
    let memory: Vec<usize> = (0..n).filter(|&m| inp.has_memory(m)).collect();
    let mut node_load = vec![0u64; n];
    let mut out = Zonelists::default();
    let mut cand: Vec<(u64, usize)> = Vec::with_capacity(memory.len());
    for local in 0..n {
        cand.clear();
        cand.extend(memory.iter().filter(|&&m| m != local).map(|&m| {
            let mut val = inp.distance(local, m) + u64::from(m < local);
            if let CpuPenalty::Masks(c) = inp.cpus {
                if c.get(m).copied().unwrap_or(false) {
                    val += PENALTY_FOR_NODE_WITH_CPUS;
                }
            }
            (
                val.saturating_mul(MAX_NUMNODES)
                    .saturating_add(node_load[m]),
                m,
            )
        }));
        cand.sort_unstable();
        let mut nodes = Vec::with_capacity(cand.len() + 1);
        nodes.push(local as u32);
        let mut prev = local;
        for &(_, m) in &cand {
            if inp.distance(local, m) != inp.distance(local, prev) {
                node_load[m] += 1;
            }
            nodes.push(m as u32);
            prev = m;
        }
        let mut fallback = Vec::new();
        match order {
            ZonelistOrder::Node => {
                for &m in &nodes {
                    zonerefs_node(inp, m as usize, &mut fallback);
                }
            }
            ZonelistOrder::Zone => {
                for z in ZoneType::ALL.iter().rev() {
                    for &m in &nodes {
                        if inp.populated(m as usize, *z) {
                            fallback.push(ZoneRef { nid: m, zone: *z });
                        }
                    }
                }
            }
        }
        let mut nofallback = Vec::new();
        zonerefs_node(inp, local, &mut nofallback);
        out.node_order.push(nodes);
        out.fallback.push(Zonelist(fallback));
        out.nofallback.push(Zonelist(nofallback));
    }
    out
}

/// Present and managed pages of one zone, for [`default_zonelist_order`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneSizes {
    /// `present_pages`.
    pub present: u64,
    /// `managed_pages`.
    pub managed: u64,
}

/// The pre-4.14 default order, as Linux computed it from 2.6.23 until 2016
/// on every architecture (Kamezawa's heuristic in `default_zonelist_order`;
/// from then on 64-bit kernels up to 4.13 returned node order outright and
/// 32-bit ones zone order). Over the online nodes' zones:
///
/// 1. node order if any online node has no populated Normal zone (a node
///    with only low memory, or none, should allocate locally);
/// 2. node order if there is no DMA/DMA32 memory at all, or if it is more
///    than half of all memory (managed pages);
/// 3. node order if some node larger than the average (total /
///    (nodes with memory + 1), present pages) has more than 70% of its
///    memory in DMA/DMA32;
/// 4. zone order otherwise: the low zones are small, keep them for last.
pub fn default_zonelist_order(online: &[[ZoneSizes; NR_ZONES]]) -> ZonelistOrder {
    let normal = ZoneType::Normal.index();
    let mut low_kmem_size = 0u64;
    let mut total_size = 0u64;
    for node in online {
        for (t, z) in node.iter().enumerate() {
            if z.present > 0 {
                if t < normal {
                    low_kmem_size += z.managed;
                }
                total_size += z.managed;
            } else if t == normal {
                return ZonelistOrder::Node;
            }
        }
    }
    if low_kmem_size == 0 || low_kmem_size > total_size / 2 {
        return ZonelistOrder::Node;
    }
    let with_memory = online
        .iter()
        .filter(|n| n.iter().any(|z| z.present > 0))
        .count() as u64;
    let average_size = total_size / (with_memory + 1);
    for node in online {
        let mut low = 0u64;
        let mut total = 0u64;
        for (t, z) in node.iter().enumerate() {
            if z.present > 0 {
                if t < normal {
                    low += z.present;
                }
                total += z.present;
            }
        }
        if low > 0 && total > average_size && low > total * 70 / 100 {
            return ZonelistOrder::Node;
        }
    }
    ZonelistOrder::Zone
}

/// Linux's `local_memory_node(node)`: the node of the first zone of the
/// node's fallback list that `GFP_KERNEL` may use (any zone here), or the
/// node itself if the list is empty (no memory anywhere).
pub fn local_memory_node(fallback: &Zonelist, nid: u32) -> u32 {
    fallback
        .first_zone(ZoneType::Normal, None)
        .map_or(nid, |z| z.nid)
}

/// `Fallback order for Node N: a b c ` exactly as Linux prints it (each
/// node as `"%d "`, so with a trailing space).
pub fn fallback_line(nid: u32, order: &[u32]) -> String {
    let mut s = format!("Fallback order for Node {nid}: ");
    for n in order {
        s.push_str(&format!("{n} "));
    }
    s
}

/// Linux's `pageblock_nr_pages * MIGRATE_TYPES` on x86-64 (2 MiB
/// pageblocks, six migrate types with CMA and memory isolation): below
/// this many pages Linux turns mobility grouping off.
pub const MOBILITY_MIN_PAGES: u64 = 512 * 6;

/// `Built N zonelists, mobility grouping on.  Total pages: T` (Linux 4.14
/// and later; two spaces before `Total`). In zone order, Linux 4.13's
/// `Built N zonelists in Zone order, mobility grouping on.  Total pages: T`,
/// the last kernels that had that order.
pub fn built_line(nr_online: usize, order: ZonelistOrder, total_pages: u64) -> String {
    let mobility = if total_pages < MOBILITY_MIN_PAGES {
        "off"
    } else {
        "on"
    };
    match order {
        ZonelistOrder::Node => format!(
            "Built {nr_online} zonelists, mobility grouping {mobility}.  Total pages: {total_pages}"
        ),
        ZonelistOrder::Zone => format!(
            "Built {nr_online} zonelists in {} order, mobility grouping {mobility}.  Total pages: {total_pages}",
            order.name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(n: usize, d: &'a [u32], p: &'a [[bool; NR_ZONES]]) -> ZonelistInput<'a> {
        ZonelistInput {
            nr_nodes: n,
            distances: d,
            populated: p,
            cpus: CpuPenalty::X86,
        }
    }

    const DMA32: [bool; 3] = [false, true, false];
    const NONE: [bool; 3] = [false, false, false];

    #[test]
    fn default_machine() {
        // Node 2 memoryless: 2 first, then 3 (20, next), 1 (20 + 1), 0.
        let d = [
            10, 20, 30, 40, 20, 10, 20, 30, 30, 20, 10, 20, 40, 30, 20, 10,
        ];
        let p = [DMA32, DMA32, NONE, DMA32];
        let z = build_all_zonelists(&input(4, &d, &p), ZonelistOrder::Node);
        assert_eq!(
            z.node_order,
            vec![
                vec![0, 1, 3],
                vec![1, 0, 3],
                vec![2, 3, 1, 0],
                vec![3, 1, 0]
            ]
        );
        assert_eq!(
            fallback_line(2, &z.node_order[2]),
            "Fallback order for Node 2: 2 3 1 0 "
        );
        assert_eq!(z.fallback[2].to_string(), "3:DMA32 1:DMA32 0:DMA32");
        assert!(z.nofallback[2].is_empty());
        assert_eq!(local_memory_node(&z.fallback[2], 2), 3);
        assert_eq!(z.nofallback[0].to_string(), "0:DMA32");
    }

    #[test]
    fn equal_distances_rotate() {
        // Four nodes all at 20: node_load makes the first remote node rotate.
        let mut d = [20u32; 16];
        for i in 0..4 {
            d[i * 5] = 10;
        }
        let p = [DMA32; 4];
        let z = build_all_zonelists(&input(4, &d, &p), ZonelistOrder::Node);
        assert_eq!(
            z.node_order,
            vec![
                vec![0, 1, 2, 3],
                vec![1, 2, 3, 0],
                vec![2, 3, 0, 1],
                vec![3, 0, 1, 2]
            ]
        );
    }

    #[test]
    fn zone_order_puts_low_zones_last() {
        let d = [10, 20, 20, 10];
        let p = [[true, true, true], [false, true, true]];
        let z = build_all_zonelists(&input(2, &d, &p), ZonelistOrder::Zone);
        assert_eq!(
            z.fallback[1].to_string(),
            "1:Normal 0:Normal 1:DMA32 0:DMA32 0:DMA"
        );
        let z = build_all_zonelists(&input(2, &d, &p), ZonelistOrder::Node);
        assert_eq!(
            z.fallback[1].to_string(),
            "1:Normal 1:DMA32 0:Normal 0:DMA32 0:DMA"
        );
        assert_eq!(z.nofallback[0].to_string(), "0:Normal 0:DMA32 0:DMA");
    }

    #[test]
    fn parse_order() {
        assert_eq!(OrderChoice::parse("Zone"), Some(OrderChoice::Zone));
        assert_eq!(OrderChoice::parse("n"), Some(OrderChoice::Node));
        assert_eq!(OrderChoice::parse("default"), Some(OrderChoice::Default));
        assert_eq!(OrderChoice::parse("x"), None);
        assert_eq!(OrderChoice::parse(""), None);
    }

    #[test]
    fn default_order_rules() {
        let z = |p, m| ZoneSizes {
            present: p,
            managed: m,
        };
        let e = ZoneSizes::default();
        // A node without Normal: node order.
        assert_eq!(
            default_zonelist_order(&[[e, z(100, 100), e]]),
            ZonelistOrder::Node
        );
        // No low memory: node order.
        assert_eq!(
            default_zonelist_order(&[[e, e, z(100, 100)]]),
            ZonelistOrder::Node
        );
        // Low memory more than half: node order.
        assert_eq!(
            default_zonelist_order(&[[e, z(60, 60), z(40, 40)], [e, e, z(10, 10)]]),
            ZonelistOrder::Node
        );
        // Small low zones on big nodes: zone order.
        assert_eq!(
            default_zonelist_order(&[[z(4, 4), z(100, 100), z(1000, 1000)], [e, e, z(1000, 1000)]]),
            ZonelistOrder::Zone
        );
        // A big node mostly low: node order.
        assert_eq!(
            default_zonelist_order(&[
                [e, z(900, 900), z(100, 100)],
                [e, e, z(1000, 1000)],
                [e, e, z(1000, 1000)]
            ]),
            ZonelistOrder::Node
        );
    }

    #[test]
    fn printed_lines() {
        assert_eq!(
            built_line(4, ZonelistOrder::Node, 44000),
            "Built 4 zonelists, mobility grouping on.  Total pages: 44000"
        );
        assert_eq!(
            built_line(1, ZonelistOrder::Zone, 100),
            "Built 1 zonelists in Zone order, mobility grouping off.  Total pages: 100"
        );
    }
}

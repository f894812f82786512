//! NUMA emulation (`numa=fake=N` on the guest command line), Linux's
//! `mm/numa_emulation.c` (`split_nodes_interleave`, `numa_emulation`): the
//! node view is replaced by N fake nodes before the memory manager is
//! built, so the nodes, zones, zonelists, `numa_mem_id` and every suite see
//! the emulated machine.
//!
//! The split, as Linux's:
//!
//! - The target size is the guest's RAM divided by N (in pages), rounded
//!   down to [`FAKE_NODE_MIN_SIZE`] (32 MiB); the remainders of all N
//!   nodes, in 32 MiB units, make the first `big` nodes 32 MiB larger.
//!   Without 32 MiB per node, emulation is off ("Not enough memory for each
//!   node.  NUMA emulation disabled.").
//! - Fake nodes are dealt round-robin over the nodes with memory, in node
//!   order, each carved from the lowest remaining memory block of its node
//!   (a block is a run of the node's memory with no other node's between;
//!   holes inside count for nothing): the node grows in 32 MiB steps until
//!   it holds the target in RAM; it stretches to 4 GiB if less than 32 MiB
//!   of RAM would be left below 4 GiB (Linux keeps ZONE_DMA32 from being
//!   split into slivers; the limit is a guest-physical address here, the
//!   guest's "physical" address space); and to the end of the block if
//!   less than the target would be left. Fake ids wrap (`nid++ %
//!   nr_nodes`), so leftovers join earlier fake nodes.
//! - Distances: a fake node has the distance of the node it was first
//!   carved from (`emu_nid_to_phys`): two fake nodes of the same node are
//!   at that node's distance to itself, `LOCAL_DISTANCE`.
//! - CPUs go to the first fake node of their node, or to fake node 0 if it
//!   has none (a memoryless node's CPUs, as Linux's `__apicid_to_node`
//!   transform).
//!
//! Each fake node keeps its node's vnode, and its memory is guest-physical
//! ranges of that vnode, so the memory manager finds their machine
//! addresses in start-info as for real nodes ([`phys_ranges`]).
//!
//! Printed at boot: Linux's `Faking node N at [mem A-B] (SMB)` lines as
//! they are, then the emulated view with the prefix `guest: numa=fake: `.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use pv_abi::node::LOCAL_DISTANCE;
use pv_abi::{StartInfo, PAGE_SHIFT};

use super::coalesce;
use super::view::{Node, NodeView};
use crate::mm::init::PhysRange;

/// Fake node sizes are multiples of this (`FAKE_NODE_MIN_SIZE`).
pub const FAKE_NODE_MIN_SIZE: u64 = 32 << 20;
/// The end of ZONE_DMA32 (`PFN_PHYS(MAX_DMA32_PFN)`).
pub const DMA32_END: u64 = 1 << 32;
/// The most nodes (`MAX_NUMNODES`, what a node mask holds).
pub const MAX_NUMNODES: u32 = crate::mm::NodeMask::MAX_NODES;
/// [`NodeView::source`] of an emulated view.
pub const SOURCE: &str = "numa=fake";

/// One carved piece (an `emu_setup_memblk`): what a `Faking node` line
/// says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// The fake node.
    pub nid: u32,
    /// The node (index in the physical view) it was carved from.
    pub phys: usize,
    /// First address.
    pub start: u64,
    /// One past the last.
    pub end: u64,
}

impl Block {
    /// Linux's line: `Faking node 0 at [mem 0x0000000000000000-0x0000000001ffffff] (32MB)`.
    pub fn line(&self) -> String {
        format!(
            "Faking node {} at [mem {:#018x}-{:#018x}] ({}MB)",
            self.nid,
            self.start,
            self.end.saturating_sub(1),
            (self.end - self.start) >> 20
        )
    }
}

/// The emulated machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emulation {
    /// The fake nodes ([`SOURCE`]).
    pub view: NodeView,
    /// The carved pieces, in carving order.
    pub blocks: Vec<Block>,
    /// Per fake node, the physical node (view index) it maps to
    /// (`emu_nid_to_phys`).
    pub phys_of: Vec<usize>,
    /// The target size of a node (a multiple of 32 MiB).
    pub size: u64,
    /// How many nodes were meant to be 32 MiB larger.
    pub big: u64,
    /// The RAM split.
    pub total: u64,
}

/// Why emulation is off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeError {
    /// `numa=fake=0`.
    NoNodes,
    /// No memory at all.
    NoMemory,
    /// Less than 32 MiB per node.
    NotEnoughMemory {
        /// The RAM.
        total: u64,
        /// The nodes asked for.
        nodes: u32,
    },
}

impl fmt::Display for FakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FakeError::NoNodes => f.write_str("no nodes asked for; NUMA emulation disabled."),
            FakeError::NoMemory => f.write_str("no memory; NUMA emulation disabled."),
            FakeError::NotEnoughMemory { total, nodes } => write!(
                f,
                "{} MiB for {nodes} nodes: Not enough memory for each node.  NUMA emulation disabled.",
                total >> 20
            ),
        }
    }
}

/// Bytes of `ram` (sorted, disjoint) inside `[a, b)`.
fn ram_in(ram: &[(u64, u64)], a: u64, b: u64) -> u64 {
    if a >= b {
        return 0;
    }
    ram.iter()
        .map(|&(s, e)| e.min(b).saturating_sub(s.max(a)))
        .sum()
}

/// The lowest `e` with `ram_in(start, e) >= need`, if there is one.
fn reach(ram: &[(u64, u64)], start: u64, need: u64) -> Option<u64> {
    let mut need = need;
    for &(s, e) in ram.iter().filter(|r| r.1 > start) {
        let s = s.max(start);
        if e - s >= need {
            return Some(s + need);
        }
        need -= e - s;
    }
    None
}

/// Per node of `phys`, its memory blocks (Linux's `numa_meminfo` after
/// `numa_cleanup_meminfo`): runs of the node's ranges with no other node's
/// memory between, holes inside included.
fn phys_blocks(phys: &NodeView) -> Vec<VecDeque<(u64, u64)>> {
    let mut all: Vec<(u64, u64, usize)> = phys
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.memory.iter().map(move |&(s, e)| (s, e, i)))
        .filter(|r| r.0 < r.1)
        .collect();
    all.sort_unstable();
    let mut blocks: Vec<VecDeque<(u64, u64)>> = vec![VecDeque::new(); phys.nodes.len()];
    let mut prev: Option<usize> = None;
    for (s, e, i) in all {
        match blocks[i].back_mut() {
            Some(last) if prev == Some(i) => last.1 = last.1.max(e),
            _ => blocks[i].push_back((s, e)),
        }
        prev = Some(i);
    }
    blocks
}

/// Linux's `split_nodes_interleave(ei, pi, 0, max_addr, nr_nodes)` on the
/// node view `phys`, and the emulated view it makes (see the module
/// documentation). `warn` hears what Linux prints on the way.
pub fn split_nodes_interleave(
    phys: &NodeView,
    nr_nodes: u32,
    warn: &mut dyn FnMut(String),
) -> Result<Emulation, FakeError> {
    if nr_nodes == 0 {
        return Err(FakeError::NoNodes);
    }
    let mut n = nr_nodes;
    if n > MAX_NUMNODES {
        warn(format!(
            "numa=fake={n} too large, reducing to {MAX_NUMNODES}"
        ));
        n = MAX_NUMNODES;
    }
    let ram = coalesce(phys.nodes.iter().flat_map(|x| x.memory.iter().copied()));
    let total: u64 = ram.iter().map(|r| r.1 - r.0).sum();
    if total == 0 {
        return Err(FakeError::NoMemory);
    }
    let n64 = u64::from(n);
    let size = ((total >> PAGE_SHIFT) / n64) << PAGE_SHIFT;
    let big = (size & (FAKE_NODE_MIN_SIZE - 1)) * n64 / FAKE_NODE_MIN_SIZE;
    let size = size & !(FAKE_NODE_MIN_SIZE - 1);
    if size == 0 {
        return Err(FakeError::NotEnoughMemory {
            total,
            nodes: nr_nodes,
        });
    }

    let mut blocks = phys_blocks(phys);
    let mut carved: Vec<Block> = Vec::new();
    let mut phys_of: Vec<Option<usize>> = vec![None; n as usize];
    let mut nid: u64 = 0;
    // Every pass gives each node with memory left one fake node; each carve
    // takes at least `size` bytes of address space or the rest of a block.
    while blocks.iter().any(|b| !b.is_empty()) {
        for (p, pblocks) in blocks.iter_mut().enumerate() {
            let Some(&(start, limit)) = pblocks.front() else {
                continue;
            };
            let mut end = start.saturating_add(size);
            if nid < big {
                end = end.saturating_add(FAKE_NODE_MIN_SIZE);
            }
            // Grow in 32 MiB steps until the node holds `size` of RAM; the
            // number of steps is computed, so a huge hole cannot stall.
            if ram_in(&ram, start, end) < size {
                end = reach(&ram, start, size)
                    .and_then(|e| {
                        let steps = (e - end).div_ceil(FAKE_NODE_MIN_SIZE).max(1);
                        end.checked_add(steps.checked_mul(FAKE_NODE_MIN_SIZE)?)
                    })
                    .filter(|&e| e <= limit)
                    .unwrap_or(limit);
            }
            if end < DMA32_END && ram_in(&ram, end, DMA32_END) < FAKE_NODE_MIN_SIZE {
                end = DMA32_END;
            }
            if ram_in(&ram, end, limit) < size {
                end = limit;
            }
            let end = end.min(limit);
            let f = (nid % n64) as u32;
            nid += 1;
            carved.push(Block {
                nid: f,
                phys: p,
                start,
                end,
            });
            phys_of[f as usize].get_or_insert(p);
            if end >= limit {
                pblocks.pop_front();
            } else if let Some(b) = pblocks.front_mut() {
                b.0 = end;
            }
        }
    }

    // Fake nodes 0..=the highest that got a block (ids are dealt in order,
    // so only the tail can be missing).
    let count = phys_of
        .iter()
        .rposition(Option::is_some)
        .map_or(0, |k| k + 1);
    let phys_of: Vec<usize> = phys_of[..count].iter().map(|p| p.unwrap_or(0)).collect();
    if (count as u32) < n {
        warn(format!("numa=fake={n}: only {count} nodes received memory"));
    }
    let first_fake_of = |p: usize| phys_of.iter().position(|&q| q == p);
    let nodes: Vec<Node> = (0..count)
        .map(|f| {
            let p = phys_of[f];
            let memory = coalesce(carved.iter().filter(|b| b.nid as usize == f).flat_map(|b| {
                let pm = &phys.nodes[b.phys].memory;
                pm.iter().map(move |&(s, e)| (s.max(b.start), e.min(b.end)))
            }));
            let mut cpus: Vec<u32> = phys
                .nodes
                .iter()
                .enumerate()
                .filter(|(q, _)| first_fake_of(*q).unwrap_or(0) == f)
                .flat_map(|(_, x)| x.cpus.iter().copied())
                .collect();
            cpus.sort_unstable();
            Node {
                id: f as u32,
                vnode: phys.nodes[p].vnode,
                cpus,
                memory,
            }
        })
        .collect();
    let distances = (0..count)
        .flat_map(|i| (0..count).map(move |j| (i, j)))
        .map(|(i, j)| {
            if i == j {
                LOCAL_DISTANCE
            } else {
                phys.distance(phys_of[i], phys_of[j])
            }
        })
        .collect();
    Ok(Emulation {
        view: NodeView {
            nodes,
            distances,
            source: SOURCE,
        },
        blocks: carved,
        phys_of,
        size,
        big,
        total,
    })
}

/// The guest-physical ranges of start-info inside `memory`, each with its
/// machine address: a fake node's memory as the memory manager takes it.
pub fn phys_ranges(si: &StartInfo, memory: &[(u64, u64)]) -> Vec<PhysRange> {
    let mut out: Vec<PhysRange> = Vec::new();
    for r in si.mem_ranges() {
        let (rs, re) = (r.gpa.0, r.gpa.0.saturating_add(r.size));
        for &(a, b) in memory {
            let (s, e) = (rs.max(a), re.min(b));
            if s < e {
                out.push(PhysRange {
                    gpa: pv_abi::Gpa(s),
                    size: e - s,
                    maddr: pv_abi::Maddr(r.maddr.0.wrapping_add(s - rs)),
                });
            }
        }
    }
    out.sort_unstable_by_key(|r| r.gpa.0);
    out
}

/// The view to emulate on when there is none: one node with every CPU and
/// all memory (Linux's `dummy_numa_init`).
fn dummy_view(si: &StartInfo) -> NodeView {
    NodeView {
        nodes: vec![Node {
            id: 0,
            vnode: 0,
            cpus: (0..si.nr_vcpus).collect(),
            memory: coalesce(
                si.mem_ranges()
                    .iter()
                    .map(|r| (r.gpa.0, r.gpa.0.saturating_add(r.size))),
            ),
        }],
        distances: vec![LOCAL_DISTANCE],
        source: "one node",
    }
}

/// At boot, before the memory manager: with `numa=fake=N`, the emulated
/// view (printed), else `view` as it is. When emulation is off the reason
/// is printed and `view` stays.
pub fn boot(
    si: &StartInfo,
    view: Option<NodeView>,
    fake: Option<u32>,
    out: &mut dyn Write,
) -> Option<NodeView> {
    let Some(n) = fake else {
        return view;
    };
    let phys = view.clone().unwrap_or_else(|| dummy_view(si));
    let mut warnings = Vec::new();
    let r = split_nodes_interleave(&phys, n, &mut |w| warnings.push(w));
    for w in &warnings {
        let _ = writeln!(out, "guest: {w}");
    }
    match r {
        Ok(e) => {
            let with_memory = phys.nodes.iter().filter(|x| !x.memory.is_empty()).count();
            let _ = writeln!(
                out,
                "guest: numa=fake={n}: {} MiB in nodes of {} MiB ({} of them {} MiB more), dealt over {with_memory} nodes with memory",
                e.total >> 20,
                e.size >> 20,
                e.big,
                FAKE_NODE_MIN_SIZE >> 20
            );
            for b in &e.blocks {
                let _ = writeln!(out, "{}", b.line());
            }
            let _ = writeln!(
                out,
                "guest: NUMA: {} nodes (from {SOURCE})",
                e.view.nodes.len()
            );
            let _ = e.view.write("guest: numa=fake: ", out);
            Some(e.view)
        }
        Err(e) => {
            let _ = writeln!(out, "guest: numa=fake={n}: {e}");
            view
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn node(id: u32, cpus: &[u32], memory: &[(u64, u64)]) -> Node {
        Node {
            id,
            vnode: id,
            cpus: cpus.to_vec(),
            memory: memory.to_vec(),
        }
    }

    fn view(nodes: Vec<Node>, distances: Vec<u32>) -> NodeView {
        NodeView {
            nodes,
            distances,
            source: "test",
        }
    }

    fn split(v: &NodeView, n: u32) -> (Result<Emulation, FakeError>, Vec<String>) {
        let mut w = Vec::new();
        let r = split_nodes_interleave(v, n, &mut |s| w.push(s));
        (r, w)
    }

    fn mem(e: &Emulation) -> Vec<Vec<(u64, u64)>> {
        e.view.nodes.iter().map(|n| n.memory.clone()).collect()
    }

    /// The guest of `--topology two-nodes`: 64 MiB per vnode, compact.
    #[test]
    fn two_nodes_of_64_mib_into_four() {
        let v = view(
            vec![
                node(0, &[0, 1], &[(0, 64 * MIB)]),
                node(1, &[2, 3], &[(64 * MIB, 128 * MIB)]),
            ],
            vec![10, 20, 20, 10],
        );
        let (e, w) = split(&v, 4);
        let e = e.unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!((e.size, e.big, e.total), (32 * MIB, 0, 128 * MIB));
        assert_eq!(
            mem(&e),
            [
                vec![(0, 32 * MIB)],
                vec![(64 * MIB, 96 * MIB)],
                vec![(32 * MIB, 64 * MIB)],
                vec![(96 * MIB, 128 * MIB)],
            ]
        );
        assert_eq!(e.phys_of, [0, 1, 0, 1]);
        #[rustfmt::skip]
        assert_eq!(e.view.distances, [
            10, 20, 10, 20,
            20, 10, 20, 10,
            10, 20, 10, 20,
            20, 10, 20, 10,
        ]);
        let cpus: Vec<_> = e.view.nodes.iter().map(|n| n.cpus.clone()).collect();
        assert_eq!(cpus, [vec![0, 1], vec![2, 3], vec![], vec![]]);
        let vnodes: Vec<_> = e.view.nodes.iter().map(|n| n.vnode).collect();
        assert_eq!(vnodes, [0, 1, 0, 1]);
        assert_eq!(
            e.blocks[0].line(),
            "Faking node 0 at [mem 0x0000000000000000-0x0000000001ffffff] (32MB)"
        );
        assert_eq!(
            e.blocks[3].line(),
            "Faking node 3 at [mem 0x0000000006000000-0x0000000007ffffff] (32MB)"
        );
    }

    /// The hypervisor's test machine (a QEMU 2-node, 1 GiB layout with the
    /// 640 KiB hole): the same nodes as Linux and the hypervisor's own
    /// `numa=fake`.
    #[test]
    fn qemu_two_nodes_with_the_low_hole() {
        let v = view(
            vec![
                node(0, &[0, 1], &[(0, 0x9_f000), (MIB, 512 * MIB)]),
                node(1, &[2, 3], &[(512 * MIB, 0x3ffd_d000)]),
            ],
            vec![10, 21, 21, 10],
        );
        let (e, w) = split(&v, 4);
        let e = e.unwrap();
        assert!(w.is_empty());
        // 4 x 224 MiB, 3 of them 32 MiB bigger.
        assert_eq!((e.size, e.big), (224 * MIB, 3));
        assert_eq!(
            mem(&e),
            [
                vec![(0, 0x9_f000), (MIB, 256 * MIB)],
                vec![(512 * MIB, 768 * MIB)],
                vec![(256 * MIB, 512 * MIB)],
                vec![(768 * MIB, 0x3ffd_d000)],
            ]
        );
        // Node 0's first block grew one 32 MiB step past the hole.
        assert_eq!(e.blocks[0].end, 256 * MIB);
    }

    #[test]
    fn leftovers_wrap_and_too_little_memory() {
        // Two 1 GiB nodes, 3 fake nodes of 672 MiB: each node's 352 MiB
        // tail joins the fake node carved before it; fake node 2 gets
        // nothing and does not exist.
        let v = view(
            vec![node(0, &[0], &[(0, GIB)]), node(1, &[1], &[(GIB, 2 * GIB)])],
            vec![10, 20, 20, 10],
        );
        let (e, w) = split(&v, 3);
        let e = e.unwrap();
        assert_eq!(w, ["numa=fake=3: only 2 nodes received memory"]);
        assert_eq!(mem(&e), [vec![(0, GIB)], vec![(GIB, 2 * GIB)]]);
        // 5 nodes of 384 MiB, 3 of them 32 MiB bigger: each node's tail
        // is too small for a fifth, so only 4 fake nodes get memory.
        let (e, w) = split(&v, 5);
        let e = e.unwrap();
        assert_eq!((e.size, e.big), (384 * MIB, 3));
        assert_eq!(w, ["numa=fake=5: only 4 nodes received memory"]);
        assert_eq!(
            mem(&e),
            [
                vec![(0, 416 * MIB)],
                vec![(GIB, GIB + 416 * MIB)],
                vec![(416 * MIB, GIB)],
                vec![(GIB + 416 * MIB, 2 * GIB)],
            ]
        );
        assert_eq!(split(&v, 0).0.unwrap_err(), FakeError::NoNodes);
        assert_eq!(split(&v, 65).1, ["numa=fake=65 too large, reducing to 64"]);
        let small = view(vec![node(0, &[0], &[(0, 60 * MIB)])], vec![10]);
        assert_eq!(
            split(&small, 2).0.unwrap_err(),
            FakeError::NotEnoughMemory {
                total: 60 * MIB,
                nodes: 2
            }
        );
        assert_eq!(
            split(&small, 2).0.unwrap_err().to_string(),
            "60 MiB for 2 nodes: Not enough memory for each node.  NUMA emulation disabled."
        );
    }

    /// The default 4-node machine: node 2 memoryless with CPUs 4-5, node 3
    /// CPU-less. Memoryless nodes get no fake node; their CPUs go to fake
    /// node 0; distances are those of the backing nodes.
    #[test]
    fn memoryless_and_cpuless_nodes() {
        let v = view(
            vec![
                node(0, &[0, 1], &[(0, 64 * MIB)]),
                node(1, &[2, 3], &[(64 * MIB, 128 * MIB)]),
                node(2, &[4, 5], &[]),
                node(3, &[], &[(128 * MIB, 192 * MIB)]),
            ],
            vec![
                10, 20, 30, 40, //
                20, 10, 20, 30, //
                30, 20, 10, 20, //
                40, 30, 20, 10,
            ],
        );
        let (e, w) = split(&v, 4);
        let e = e.unwrap();
        // 48 MiB per node: 32 MiB, the first two 64 MiB; node 3 makes two
        // fake nodes, the second stretched to its end.
        assert_eq!((e.size, e.big), (32 * MIB, 2));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            mem(&e),
            [
                vec![(0, 64 * MIB)],
                vec![(64 * MIB, 128 * MIB)],
                vec![(128 * MIB, 160 * MIB)],
                vec![(160 * MIB, 192 * MIB)],
            ]
        );
        assert_eq!(e.phys_of, [0, 1, 3, 3]);
        let cpus: Vec<_> = e.view.nodes.iter().map(|n| n.cpus.clone()).collect();
        assert_eq!(cpus, [vec![0, 1, 4, 5], vec![2, 3], vec![], vec![]]);
        #[rustfmt::skip]
        assert_eq!(e.view.distances, [
            10, 20, 40, 40,
            20, 10, 30, 30,
            40, 30, 10, 10,
            40, 30, 10, 10,
        ]);
        let (e, _) = split(&v, 6);
        let e = e.unwrap();
        assert_eq!(e.view.nodes.len(), 6);
        assert_eq!(e.phys_of, [0, 1, 3, 0, 1, 3]);
        assert_eq!(e.view.distance(0, 3), 10);
        assert_eq!(e.view.distance(2, 4), 30);
    }

    #[test]
    fn dma32_stretch_and_high_memory() {
        // One node, 1 GiB + 16 MiB below 4 GiB and 1 GiB above: two fake
        // nodes of 1 GiB. After the first only 16 MiB would be left below
        // 4 GiB: it stretches to 4 GiB.
        let v = view(
            vec![node(0, &[0], &[(0, GIB + 16 * MIB), (4 * GIB, 5 * GIB)])],
            vec![10],
        );
        let (e, w) = split(&v, 2);
        let e = e.unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!((e.size, e.big), (GIB, 0));
        assert_eq!(e.blocks[0].end, 4 * GIB);
        assert_eq!(
            mem(&e),
            [vec![(0, GIB + 16 * MIB)], vec![(4 * GIB, 5 * GIB)]]
        );
        // 4 nodes of 512 MiB: the second stretches to 4 GiB likewise.
        let (e, _) = split(&v, 4);
        let e = e.unwrap();
        assert_eq!(e.size, 512 * MIB);
        let ends: Vec<u64> = e.blocks.iter().map(|b| b.end).collect();
        assert_eq!(ends, [512 * MIB, 4 * GIB, 4 * GIB + 512 * MIB, 5 * GIB]);
    }

    #[test]
    fn phys_ranges_keep_machine_addresses() {
        let mut si = StartInfo::new();
        si.push_mem_range(pv_abi::MemRange::new(
            pv_abi::Gpa(0),
            64 * MIB,
            0,
            pv_abi::Maddr(0x1000_0000),
        ))
        .unwrap();
        let r = phys_ranges(&si, &[(32 * MIB, 48 * MIB)]);
        assert_eq!(
            r,
            [PhysRange {
                gpa: pv_abi::Gpa(32 * MIB),
                size: 16 * MIB,
                maddr: pv_abi::Maddr(0x1000_0000 + 32 * MIB)
            }]
        );
    }

    proptest! {
        /// Random machines: memory is preserved exactly, fake nodes never
        /// overlap, each fake node's memory is inside its nodes' memory, at
        /// most N nodes, every fake node has memory (no holes here), and
        /// carves are whole 32 MiB steps from their block's start unless
        /// they end a block or at 4 GiB.
        #[test]
        fn random_machines(
            sizes in proptest::collection::vec((0u64..3, 0u64..40), 1..6),
            n in 1u32..70,
        ) {
            let mut nodes = Vec::new();
            let mut at = 0;
            let mut d = Vec::new();
            for (i, &(gap, len)) in sizes.iter().enumerate() {
                at += gap * 16 * MIB;
                let len = len * 16 * MIB;
                let mem = if len == 0 { vec![] } else { vec![(at, at + len)] };
                nodes.push(node(i as u32, &[i as u32], &mem));
                at += len;
            }
            let k = nodes.len();
            for i in 0..k {
                for j in 0..k {
                    d.push(if i == j { 10 } else { 20 + (i + j) as u32 });
                }
            }
            let v = view(nodes, d);
            let total: u64 = v.nodes.iter().flat_map(|x| x.memory.iter()).map(|r| r.1 - r.0).sum();
            let (r, _) = split(&v, n);
            match r {
                Err(FakeError::NotEnoughMemory { .. }) => {
                    prop_assert!(total / u64::from(n.min(64)) < FAKE_NODE_MIN_SIZE);
                }
                Err(FakeError::NoMemory) => prop_assert_eq!(total, 0),
                Err(e) => prop_assert!(false, "{:?}", e),
                Ok(e) => {
                    prop_assert!(e.view.nodes.len() <= n.min(64) as usize);
                    let all = coalesce(e.view.nodes.iter().flat_map(|x| x.memory.iter().copied()));
                    let phys = coalesce(v.nodes.iter().flat_map(|x| x.memory.iter().copied()));
                    prop_assert_eq!(all, phys);
                    let sum: u64 = e.view.nodes.iter().flat_map(|x| x.memory.iter()).map(|r| r.1 - r.0).sum();
                    prop_assert_eq!(sum, total);
                    for f in &e.view.nodes {
                        prop_assert!(!f.memory.is_empty());
                        let p = &v.nodes[e.phys_of[f.id as usize]];
                        prop_assert_eq!(f.vnode, p.vnode);
                    }
                    for b in &e.blocks {
                        let p = &v.nodes[b.phys];
                        let (bs, be) = p.memory[0];
                        prop_assert!(bs <= b.start && b.end <= be);
                        prop_assert!(
                            (b.end - bs) % FAKE_NODE_MIN_SIZE == 0 || b.end == be || b.end == DMA32_END
                        );
                        prop_assert!(b.end - b.start >= e.size.min(be - b.start));
                    }
                    for (i, a) in e.view.nodes.iter().enumerate() {
                        for (j, c) in e.view.nodes.iter().enumerate() {
                            let want = if i == j { 10 } else { v.distance(e.phys_of[i], e.phys_of[j]) };
                            prop_assert_eq!(e.view.distance(i, j), want, "{} {}", a.id, c.id);
                        }
                    }
                }
            }
        }
    }
}

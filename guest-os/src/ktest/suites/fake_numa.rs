//! Suite `fake_numa` (with `numa=fake=N` on the command line; skipped
//! otherwise): the memory manager runs on Linux's emulated nodes
//! (`split_nodes_interleave`): at most N nodes, each backed by one vnode's
//! memory, all memory still managed; nodes in 32 MiB steps from the start
//! of their node's memory (or to its end, or to 4 GiB); distances those of
//! the backing nodes, `LOCAL_DISTANCE` between fake nodes of one node;
//! CPUs on the first fake node of their node; fallback lists in distance
//! order.

use alloc::format;
use alloc::vec::Vec;

use pv_abi::node::LOCAL_DISTANCE;
use pv_abi::PAGE_SIZE;

use super::mm_util::mm;
use crate::boot::Guest;
use crate::ktest::{problems, skip, Suite, Test, TestError, TestResult};
use crate::numa::fake::{phys_ranges, DMA32_END, FAKE_NODE_MIN_SIZE, SOURCE};
use crate::numa::view::NodeView;

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "fake_numa",
    tests: &[
        Test {
            name: "emulated_nodes",
            run: emulated_nodes,
        },
        Test {
            name: "memory_in_32_mib_steps",
            run: memory_in_32_mib_steps,
        },
        Test {
            name: "distances_of_backing_nodes",
            run: distances_of_backing_nodes,
        },
        Test {
            name: "cpus_on_first_fake_node",
            run: cpus_on_first_fake_node,
        },
        Test {
            name: "fallback_in_distance_order",
            run: fallback_in_distance_order,
        },
    ],
};

/// The emulated view, or a skip (no `numa=fake`), or a failure.
fn fake_view(g: &Guest) -> Result<(&NodeView, u32), TestError> {
    let Some(n) = g.cmdline.numa_fake else {
        skip!("numa=fake not given");
    };
    match &g.view {
        Some(v) if v.source == SOURCE => Ok((v, n)),
        _ => Err(TestError::Skip(format!("numa=fake={n}: emulation is off"))),
    }
}

/// The guest's memory in bytes.
fn total_memory(g: &Guest) -> u64 {
    g.si.mem_ranges().iter().map(|r| r.size).sum()
}

/// Emulation is on unless Linux would refuse (no nodes, or less than
/// 32 MiB each); at most N nodes (64 at most); the memory manager has
/// exactly the emulated nodes; each is backed by a vnode with memory.
fn emulated_nodes(g: &Guest) -> TestResult {
    let Some(n) = g.cmdline.numa_fake else {
        skip!("numa=fake not given");
    };
    let total = total_memory(g);
    let on = g.view.as_ref().is_some_and(|v| v.source == SOURCE);
    let size = (total / PAGE_SIZE / u64::from(n.clamp(1, 64))) * PAGE_SIZE;
    let linux_refuses = n == 0 || size < FAKE_NODE_MIN_SIZE;
    if !on {
        if linux_refuses {
            skip!(
                "numa=fake={n}: {} MiB is too little, emulation is off as in Linux",
                total >> 20
            );
        }
        return Err(format!("numa=fake={n} with {} MiB: emulation is off", total >> 20).into());
    }
    let (v, _) = fake_view(g)?;
    let mm = mm(g)?;
    let mut bad = Vec::new();
    if v.nodes.len() > n.min(64) as usize || v.nodes.is_empty() {
        bad.push(format!("{} fake nodes for numa=fake={n}", v.nodes.len()));
    }
    if mm.nr_nodes() as usize != v.nodes.len() {
        bad.push(format!(
            "the memory manager has {} nodes, the view {}",
            mm.nr_nodes(),
            v.nodes.len()
        ));
    }
    for node in &v.nodes {
        if g.si.vnode_ranges(node.vnode).next().is_none() {
            bad.push(format!(
                "fake node {} backed by vnode {} without memory",
                node.id, node.vnode
            ));
        }
    }
    problems(bad)
}

/// Every fake node manages exactly the start-info memory inside its
/// emulated ranges, and together they manage all of it; each fake node
/// ends 32 MiB steps from the start of its vnode's memory block, or at the
/// block's end, the end of a memory range, or 4 GiB; each holds at least
/// the target size (or all its block had).
fn memory_in_32_mib_steps(g: &Guest) -> TestResult {
    let (v, n) = fake_view(g)?;
    let mm = mm(g)?;
    let mut bad = Vec::new();
    // Blocks: runs of one vnode's ranges with no other vnode between.
    let mut ranges: Vec<(u64, u64, u32)> =
        g.si.mem_ranges()
            .iter()
            .map(|r| (r.gpa.0, r.gpa.0 + r.size, r.vnode))
            .collect();
    ranges.sort_unstable();
    let mut blocks: Vec<(u64, u64, u32)> = Vec::new();
    for r in &ranges {
        match blocks.last_mut() {
            Some(b) if b.2 == r.2 => b.1 = r.1,
            _ => blocks.push(*r),
        }
    }
    let total = total_memory(g);
    let size =
        ((total / PAGE_SIZE / u64::from(n.clamp(1, 64))) * PAGE_SIZE) & !(FAKE_NODE_MIN_SIZE - 1);
    let mut managed_total = 0;
    for node in &v.nodes {
        let ram: u64 = node.memory.iter().map(|r| r.1 - r.0).sum();
        let want: u64 = phys_ranges(&g.si, &node.memory)
            .iter()
            .map(|r| r.size / PAGE_SIZE)
            .sum();
        let got = mm.node(node.id).map_or(0, |x| x.present_pages());
        managed_total += got;
        if got != want {
            bad.push(format!(
                "fake node {}: {got} pages, its ranges hold {want}",
                node.id
            ));
        }
        let mut block_ram = 0;
        for &(_, e) in &node.memory {
            let Some(b) = blocks.iter().find(|b| b.0 < e && e <= b.1) else {
                bad.push(format!(
                    "fake node {}: memory ending at {e:#x} is in no block",
                    node.id
                ));
                continue;
            };
            block_ram = block_ram.max(b.1 - b.0);
            let step = (e - b.0) % FAKE_NODE_MIN_SIZE == 0;
            let range_end = ranges.iter().any(|r| r.1 == e);
            if !(step || e == b.1 || e == DMA32_END || range_end) {
                bad.push(format!(
                    "fake node {}: ends at {e:#x}, not 32 MiB steps from {:#x}",
                    node.id, b.0
                ));
            }
        }
        if ram < size.min(block_ram) {
            bad.push(format!(
                "fake node {}: {} MiB, target {} MiB",
                node.id,
                ram >> 20,
                size >> 20
            ));
        }
    }
    if managed_total != total / PAGE_SIZE {
        bad.push(format!(
            "fake nodes have {managed_total} pages, start-info {}",
            total / PAGE_SIZE
        ));
    }
    problems(bad)
}

/// Fake nodes of one vnode are `LOCAL_DISTANCE` apart; others are at their
/// vnodes' distance (`GET_VNUMA`'s).
fn distances_of_backing_nodes(g: &Guest) -> TestResult {
    let (v, _) = fake_view(g)?;
    let mm = mm(g)?;
    let Some(vn) = g.vnuma() else {
        skip!("no GET_VNUMA distances to compare with");
    };
    let mut bad = Vec::new();
    for a in &v.nodes {
        for b in &v.nodes {
            let want = if a.id == b.id || a.vnode == b.vnode {
                Some(LOCAL_DISTANCE)
            } else {
                vn.distance(a.vnode, b.vnode)
            };
            let got = mm.node_distance(a.id, b.id);
            if Some(got) != want {
                bad.push(format!(
                    "distance {} -> {}: {got}, expected {want:?}",
                    a.id, b.id
                ));
            }
        }
    }
    problems(bad)
}

/// Each CPU is on the first fake node of its vnode, or on node 0 if its
/// vnode has none (a memoryless node's CPUs).
fn cpus_on_first_fake_node(g: &Guest) -> TestResult {
    let (v, _) = fake_view(g)?;
    let mm = mm(g)?;
    let Some(vn) = g.vnuma() else {
        skip!("no GET_VNUMA CPU placement to compare with");
    };
    let mut bad = Vec::new();
    for (cpu, &vnode) in vn.vcpu_to_vnode.iter().enumerate() {
        let want = v
            .nodes
            .iter()
            .find(|x| x.vnode == vnode)
            .map_or(0, |x| x.id);
        let got = mm.cpu_to_node(cpu as u32);
        if got != want {
            bad.push(format!(
                "cpu {cpu} (vnode {vnode}): node {got}, expected {want}"
            ));
        }
    }
    problems(bad)
}

/// Every fallback order visits nodes in non-decreasing distance (fake
/// nodes of the same vnode first), up to the 1 that
/// `find_next_best_node` adds for a node below the one it builds for.
fn fallback_in_distance_order(g: &Guest) -> TestResult {
    fake_view(g)?;
    let mm = mm(g)?;
    let mut bad = Vec::new();
    for node in mm.nodes().iter().filter(|x| x.online()) {
        let d: Vec<u32> = node
            .node_order()
            .iter()
            .map(|&o| mm.node_distance(node.id(), o))
            .collect();
        if d.windows(2).any(|w| w[0] > w[1] + 1) {
            bad.push(format!(
                "node {}: order {:?}, distances {d:?}",
                node.id(),
                node.node_order()
            ));
        }
    }
    problems(bad)
}

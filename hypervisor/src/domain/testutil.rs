//! Test helpers shared by the domain tests: crafted topologies.

use alloc::vec::Vec;

use crate::mm::addr::{Maddr, MemRange};
use crate::numa::topology::{CpuInfo, NodeInfo, Topology, TopologySource};
use crate::numa::{CpuId, NodeId};

pub(crate) const MIB: u64 = 1 << 20;

/// A topology from per-node memory (`[start, end)` in bytes), the node of
/// each CPU in CPU order, and a row-major distance matrix.
pub(crate) fn topo(memory: &[&[(u64, u64)]], cpu_nodes: &[u8], distances: &[u8]) -> Topology {
    let nodes = memory
        .iter()
        .enumerate()
        .map(|(i, ranges)| NodeInfo {
            id: NodeId(i as u8),
            pxm: i as u32,
            memory: ranges
                .iter()
                .map(|&(s, e)| MemRange::new(Maddr(s), Maddr(e)))
                .collect(),
            hotplug: Vec::new(),
            cpus: cpu_nodes
                .iter()
                .enumerate()
                .filter(|(_, &n)| usize::from(n) == i)
                .map(|(c, _)| CpuId(c as u32))
                .collect(),
        })
        .collect();
    let cpus = cpu_nodes
        .iter()
        .enumerate()
        .map(|(c, &n)| CpuInfo {
            id: CpuId(c as u32),
            apic_id: c as u32,
            acpi_id: c as u32,
            node: NodeId(n),
            core: c as u32,
            socket: u32::from(n),
        })
        .collect();
    Topology::from_parts(nodes, cpus, distances.to_vec(), TopologySource::Firmware)
}

/// QEMU-like 4 nodes: node 0 [0, 512M) CPUs 0-1; node 1 [512M, 1G) CPUs
/// 2-3; node 2 memoryless, CPUs 4-5; node 3 [1G, 1.5G) CPU-less.
#[rustfmt::skip]
pub(crate) fn four_nodes() -> Topology {
    topo(
        &[&[(0, 0x9_f000), (MIB, 512 * MIB)], &[(512 * MIB, 1024 * MIB)], &[], &[(1024 * MIB, 1536 * MIB)]],
        &[0, 0, 1, 1, 2, 2],
        &[
            10, 20, 30, 40,
            20, 10, 20, 30,
            30, 20, 10, 20,
            40, 30, 20, 10,
        ],
    )
}

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

/// `n` nodes of `mib` MiB each, `cpus_per_node` CPUs each (CPU ids node by
/// node), and a row-major distance matrix.
pub(crate) fn uniform(n: usize, mib: u64, cpus_per_node: usize, distances: &[u8]) -> Topology {
    let ranges: Vec<[(u64, u64); 1]> = (0..n as u64)
        .map(|i| [(i * mib * MIB, (i + 1) * mib * MIB)])
        .collect();
    let memory: Vec<&[(u64, u64)]> = ranges.iter().map(|r| &r[..]).collect();
    let cpu_nodes: Vec<u8> = (0..n)
        .flat_map(|i| core::iter::repeat_n(i as u8, cpus_per_node))
        .collect();
    topo(&memory, &cpu_nodes, distances)
}

/// `n` nodes in a ring, distance 10 + 10 per hop (xtask's `ring8` for
/// `n = 8`, at most 255), each of `mib` MiB with one CPU.
pub(crate) fn ring(n: usize, mib: u64) -> Topology {
    let d: Vec<u8> = (0..n)
        .flat_map(|i| {
            (0..n).map(move |j| {
                let hops = i.abs_diff(j);
                (10 + 10 * hops.min(n - hops)).min(255) as u8
            })
        })
        .collect();
    uniform(n, mib, 1, &d)
}

/// The domain every test allocation belongs to.
pub const DOMAIN: u32 = 3;

/// Claims `cfg`'s memory and allocates it against the claim, as the
/// hypervisor does, then gives back what the claim did not use.
pub fn allocate_for(
    heap: &crate::mm::heap::Heap,
    cfg: &super::config::DomainConfig,
) -> Result<super::build::Allocation, alloc::string::String> {
    let mut claim = heap
        .claim(DOMAIN, &super::build::pages_per_node(cfg))
        .map_err(|e| alloc::format!("{e}"))?;
    let alloc = super::build::allocate(heap, &mut claim, cfg);
    heap.release(claim);
    alloc
}

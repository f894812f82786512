//! The guest's view of its nodes, as it prints it:
//!
//! ```text
//! guest: node 0 (vnode 0): cpus 0-1, memory [0x0..0x20000000)
//! guest: node 1 (vnode 1): cpus 2-3, memory [0x100000000..0x120000000)
//! guest: distances:
//! guest:   node   0   1
//! guest:     0:  10  20
//! guest:     1:  20  10
//! ```
//!
//! Node ids are Linux's (see [`crate::numa`]); the matrix is in node order.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use acpi_numa::{Slit, Srat};
use pv_abi::node::{LOCAL_DISTANCE, REMOTE_DISTANCE};

use super::acpi::{srat_cpus_of, srat_memory_of, NodeMap};
use super::topology::Vnuma;
use super::{format_cpus, format_ranges};

/// One node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Linux's node id.
    pub id: u32,
    /// The vnode (= proximity domain).
    pub vnode: u32,
    /// Its CPUs (vCPU numbers).
    pub cpus: Vec<u32>,
    /// Its memory, merged.
    pub memory: Vec<(u64, u64)>,
}

/// All nodes and their distances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// In node-id order.
    pub nodes: Vec<Node>,
    /// `nodes²` distances in node order, row-major.
    pub distances: Vec<u32>,
    /// Where the topology came from.
    pub source: &'static str,
}

impl NodeView {
    /// From `GET_VNUMA`, numbered by `order` (entry N = vnode of node N).
    pub fn from_vnuma(v: &Vnuma, order: &[u32]) -> Self {
        let nodes: Vec<Node> = order
            .iter()
            .enumerate()
            .map(|(id, &vnode)| Node {
                id: id as u32,
                vnode,
                cpus: v.vcpus_of(vnode),
                memory: v.memory_of(vnode),
            })
            .collect();
        let distances = nodes
            .iter()
            .flat_map(|a| nodes.iter().map(move |b| (a.vnode, b.vnode)))
            .map(|(a, b)| v.distance(a, b).unwrap_or(0))
            .collect();
        NodeView {
            nodes,
            distances,
            source: "get_vnuma",
        }
    }

    /// From the SRAT alone (no `GET_VNUMA`), with the SLIT's distances, or
    /// Linux's defaults (10 local, 20 remote) without a SLIT. CPU numbers
    /// are APIC ids (vCPU i has APIC id i).
    pub fn from_srat(srat: &Srat, slit: Option<&Slit>) -> Self {
        let map = NodeMap::from_srat(srat);
        let nodes: Vec<Node> = map
            .pxm_of_node
            .iter()
            .enumerate()
            .map(|(id, &pxm)| Node {
                id: id as u32,
                vnode: pxm,
                cpus: srat_cpus_of(srat, pxm),
                memory: srat_memory_of(srat, pxm),
            })
            .collect();
        let distances = nodes
            .iter()
            .flat_map(|a| nodes.iter().map(move |b| (a.vnode, b.vnode)))
            .map(|(a, b)| match slit.and_then(|s| s.distance(a, b)) {
                Some(d) => u32::from(d),
                None if a == b => LOCAL_DISTANCE,
                None => REMOTE_DISTANCE,
            })
            .collect();
        NodeView {
            nodes,
            distances,
            source: if slit.is_some() { "SRAT+SLIT" } else { "SRAT" },
        }
    }

    /// Distance between nodes `a` and `b` (node ids).
    pub fn distance(&self, a: usize, b: usize) -> u32 {
        self.distances
            .get(a * self.nodes.len() + b)
            .copied()
            .unwrap_or(0)
    }

    /// The lines the guest prints, each starting with `prefix`.
    pub fn write(&self, prefix: &str, w: &mut dyn Write) -> fmt::Result {
        for n in &self.nodes {
            writeln!(
                w,
                "{prefix}node {} (vnode {}): cpus {}, memory {}",
                n.id,
                n.vnode,
                format_cpus(&n.cpus),
                format_ranges(&n.memory)
            )?;
        }
        writeln!(w, "{prefix}distances:")?;
        let mut header = String::from("  node");
        for n in &self.nodes {
            header.push_str(&format!(" {:>3}", n.id));
        }
        writeln!(w, "{prefix}{header}")?;
        for a in 0..self.nodes.len() {
            let mut row = format!("  {a:>3}:");
            for b in 0..self.nodes.len() {
                row.push_str(&format!(" {:>3}", self.distance(a, b)));
            }
            writeln!(w, "{prefix}{row}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numa::topology::tests::two_nodes;
    use pv_abi::{Gpa, VmemRange};

    #[test]
    fn prints_linux_style() {
        let (v, _) = two_nodes();
        let view = NodeView::from_vnuma(&v, &v.linux_order());
        let mut s = String::new();
        view.write("guest: ", &mut s).unwrap();
        assert_eq!(
            s,
            "guest: node 0 (vnode 0): cpus 0-1, memory [0x0..0x20000000)\n\
             guest: node 1 (vnode 1): cpus 2-3, memory [0x100000000..0x120000000)\n\
             guest: distances:\n\
             guest:   node   0   1\n\
             guest:     0:  10  20\n\
             guest:     1:  20  10\n"
        );
    }

    #[test]
    fn renumbered_and_memoryless() {
        // vCPUs 0-1 on vnode 1 (memoryless), vnode 0 has memory only.
        let v = Vnuma {
            nr_vnodes: 2,
            nr_vcpus: 2,
            vdistance: vec![10, 30, 21, 10],
            vcpu_to_vnode: vec![1, 1],
            vmemranges: vec![VmemRange::new(Gpa(0), Gpa(0x1000_0000), 0)],
        };
        let view = NodeView::from_vnuma(&v, &v.linux_order());
        let mut s = String::new();
        view.write("", &mut s).unwrap();
        assert_eq!(
            s,
            "node 0 (vnode 1): cpus 0-1, memory none\n\
             node 1 (vnode 0): cpus none, memory [0x0..0x10000000)\n\
             distances:\n  node   0   1\n    0:  10  21\n    1:  30  10\n"
        );
    }
}

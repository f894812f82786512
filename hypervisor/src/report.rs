//! What the hypervisor prints about the machine, in the format of Xen's
//! `xl info -n`, so that scripts written for Xen read it unchanged:
//!
//! ```text
//! nr_cpus                : 6
//! nr_nodes               : 4
//! cores_per_socket       : 6
//! threads_per_core       : 1
//! total_memory           : 1535
//! free_memory            : 1490
//! cpu_topology           :
//! cpu:    core    socket     node
//!   0:       0        0        0
//! numa_info              :
//! node:    memsize    memfree    distances
//!    0:       511        490      10,20,30,40
//! ```
//!
//! Memory is in MiB, as `xl` prints it; `memsize` counts the RAM present on
//! the node (holes excluded), `memfree` what the heap holds free.

use alloc::collections::BTreeMap;
use core::fmt;

use crate::mm::addr::PAGE_SHIFT;
use crate::numa::topology::Topology;
use crate::numa::NodeId;

/// The machine as `xl info -n` shows it.
pub struct XlInfo<'a> {
    pub topology: &'a Topology,
    /// Free pages per node, indexed by node id.
    pub free_pages: &'a [u64],
}

const MIB_SHIFT: u32 = 20;

impl XlInfo<'_> {
    fn free_bytes(&self, node: NodeId) -> u64 {
        self.free_pages.get(node.index()).copied().unwrap_or(0) << PAGE_SHIFT
    }

    /// (cores per socket, threads per core), as the busiest socket/core has them.
    fn shape(&self) -> (usize, usize) {
        let mut per_core: BTreeMap<(u32, u32), usize> = BTreeMap::new();
        let mut per_socket: BTreeMap<u32, alloc::collections::BTreeSet<u32>> = BTreeMap::new();
        for c in &self.topology.cpus {
            *per_core.entry((c.socket, c.core)).or_default() += 1;
            per_socket.entry(c.socket).or_default().insert(c.core);
        }
        let threads = per_core.values().copied().max().unwrap_or(1);
        let cores = per_socket.values().map(|s| s.len()).max().unwrap_or(1);
        (cores, threads)
    }
}

impl fmt::Display for XlInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.topology;
        let (cores, threads) = self.shape();
        let total: u64 = t.nodes.iter().map(|n| t.memory_bytes(n.id)).sum();
        let free: u64 = t.nodes.iter().map(|n| self.free_bytes(n.id)).sum();
        writeln!(f, "nr_cpus                : {}", t.cpus.len())?;
        writeln!(f, "nr_nodes               : {}", t.nodes.len())?;
        writeln!(f, "cores_per_socket       : {cores}")?;
        writeln!(f, "threads_per_core       : {threads}")?;
        writeln!(f, "total_memory           : {}", total >> MIB_SHIFT)?;
        writeln!(f, "free_memory            : {}", free >> MIB_SHIFT)?;
        writeln!(f, "cpu_topology           :")?;
        writeln!(f, "cpu:    core    socket     node")?;
        for c in &t.cpus {
            writeln!(
                f,
                "{:3}:    {:4}     {:4}     {:4}",
                c.id.0, c.core, c.socket, c.node.0
            )?;
        }
        writeln!(f, "numa_info              :")?;
        writeln!(f, "node:    memsize    memfree    distances")?;
        for n in &t.nodes {
            write!(
                f,
                "{:4}:    {:6}     {:6}      ",
                n.id.0,
                t.memory_bytes(n.id) >> MIB_SHIFT,
                self.free_bytes(n.id) >> MIB_SHIFT
            )?;
            for (i, m) in t.nodes.iter().enumerate() {
                if i > 0 {
                    write!(f, ",")?;
                }
                write!(f, "{}", t.distance(n.id, m.id))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

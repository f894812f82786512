//! Where each vCPU of a domain runs: one physical CPU per vCPU, chosen when
//! the domain is built and kept for its life (pinning, as Xen's hard
//! affinity with one CPU each).
//!
//! - A pinned vCPU (`cpus` in the config) runs on the CPU it is pinned to;
//!   the config checker already made sure that CPU is on its vnode's node.
//!   The CPU must be running: otherwise the domain is refused, never run
//!   somewhere the config did not allow.
//! - An unpinned vCPU runs on a running CPU of its vnode's physical node or,
//!   when that node has none (a CPU-less node, or its CPUs did not start),
//!   of the nearest node that has one (`Topology::fallback_order`, the
//!   order memory falls back in). Among those, the CPU with the fewest vCPUs
//!   of this domain so far, then the lowest id: vCPUs spread before they
//!   share.
//!
//! vCPUs placed on the same CPU take turns on it (see the scheduler).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::config::DomainConfig;
use crate::numa::topology::Topology;
use crate::numa::{CpuId, NodeId};

/// The CPU each vCPU runs on, by vCPU id. `online[c]` says whether CPU `c`
/// of the topology is running (can run vCPUs).
pub fn place_vcpus(
    config: &DomainConfig,
    topology: &Topology,
    online: &[bool],
) -> Result<Vec<CpuId>, String> {
    let is_online = |c: CpuId| online.get(c.index()).copied().unwrap_or(false);
    if !topology.cpus.iter().any(|c| is_online(c.id)) {
        return Err(String::from("no CPU is running"));
    }
    let mut load = vec![0u32; topology.cpus.len()];
    let mut placed = Vec::with_capacity(config.vcpus as usize);
    for v in 0..config.vcpus {
        let cpu = match config.pcpu_of_vcpu(v) {
            Some(c) if is_online(c) => c,
            Some(c) => {
                return Err(format!(
                    "vcpu {v} is pinned to CPU {c}, which is not running (smp=off, or it did not start)"
                ))
            }
            None => {
                let home = config
                    .vnode_of_vcpu(v)
                    .and_then(|k| config.vnodes.get(k))
                    .map(|vn| vn.pnode);
                least_loaded(topology, home, &load, &is_online)
                    .ok_or_else(|| format!("vcpu {v}: no running CPU"))?
            }
        };
        if let Some(l) = load.get_mut(cpu.index()) {
            *l += 1;
        }
        placed.push(cpu);
    }
    Ok(placed)
}

/// The least loaded running CPU of the first node, in `home`'s fallback
/// order, that has one (any node for no `home`).
fn least_loaded(
    topology: &Topology,
    home: Option<NodeId>,
    load: &[u32],
    is_online: &dyn Fn(CpuId) -> bool,
) -> Option<CpuId> {
    let order = match home {
        Some(n) => topology.fallback_order(n),
        None => topology.nodes.iter().map(|n| n.id).collect(),
    };
    for node in order {
        let best = topology
            .cpus
            .iter()
            .filter(|c| c.node == node && is_online(c.id))
            .min_by_key(|c| (load.get(c.id.index()).copied().unwrap_or(0), c.id.0));
        if let Some(c) = best {
            return Some(c.id);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testutil;

    #[test]
    fn pinned_vcpus_run_where_pinned_or_the_domain_is_refused() {
        let t = testutil::four_nodes();
        let mut c = DomainConfig::mirror_machine(&t, 16);
        let all = vec![true; t.cpus.len()];
        let placed = place_vcpus(&c, &t, &all).expect("placed");
        assert_eq!(placed, t.cpus.iter().map(|c| c.id).collect::<Vec<_>>());
        let mut some = all.clone();
        some[1] = false;
        let e = place_vcpus(&c, &t, &some).expect_err("CPU 1 is down");
        assert!(
            e.contains("vcpu 1 is pinned to CPU 1, which is not running"),
            "{e}"
        );
        // Unpinned, the same domain runs on the running CPUs nearest its
        // vnodes.
        c.cpus = None;
        let placed = place_vcpus(&c, &t, &some).expect("placed");
        assert_eq!(placed.len(), t.cpus.len());
        for (v, cpu) in placed.iter().enumerate() {
            assert!(some[cpu.index()], "vcpu {v} on a stopped CPU");
        }
    }

    #[test]
    fn unpinned_vcpus_spread_over_their_node_then_share() {
        let t = testutil::four_nodes();
        let node_cpus = |n: u8| -> Vec<CpuId> {
            t.cpus
                .iter()
                .filter(|c| c.node == NodeId(n))
                .map(|c| c.id)
                .collect()
        };
        let n0 = node_cpus(0);
        assert!(n0.len() >= 2, "the test machine has 2 CPUs on node 0");
        let mut c = DomainConfig::mirror_machine(&t, 16);
        c.cpus = None;
        // Every vCPU on vnode 0 (node 0): round robin over node 0's CPUs.
        c.vcpus = 5;
        for (k, vn) in c.vnodes.iter_mut().enumerate() {
            vn.vcpus = if k == 0 { (0..5).collect() } else { Vec::new() };
        }
        let placed = place_vcpus(&c, &t, &vec![true; t.cpus.len()]).expect("placed");
        for (v, cpu) in placed.iter().enumerate() {
            assert_eq!(*cpu, n0[v % n0.len()], "vcpu {v}");
        }
        // Node 0's CPUs all stopped: the nearest node with a running CPU.
        let mut online = vec![true; t.cpus.len()];
        for cpu in &n0 {
            online[cpu.index()] = false;
        }
        let nearest = t
            .fallback_order(NodeId(0))
            .into_iter()
            .find(|&n| !node_cpus(n.0).is_empty() && n != NodeId(0))
            .expect("another node has CPUs");
        let placed = place_vcpus(&c, &t, &online).expect("placed");
        for cpu in placed {
            assert_eq!(t.cpu_node(cpu), Some(nearest));
        }
        assert!(place_vcpus(&c, &t, &[]).is_err());
    }
}

//! Where a domain goes on a machine shared with other domains: its nodes
//! (automatic NUMA placement, after libxl's) and the CPU each vCPU runs on.
//!
//! # Automatic placement ([`place_domain`])
//!
//! A domain without `vnuma` is placed as libxl places a domain without
//! pinning (`libxl__get_numa_candidate`, `docs/misc/xl-numa-placement`):
//!
//! - A *candidate* is a set of nodes whose free memory nobody has claimed
//!   ([`MachineState::unclaimed_free`]) holds the domain. Only the smallest
//!   sets that can are considered: a domain that fits in one node goes into
//!   one node; one that fits in none spans the fewest nodes it can.
//! - Among those: the smallest largest distance between two members (only
//!   differs for sets of several nodes: beyond libxl, which ignores
//!   distances), then the fewest vCPUs already running per CPU the domain's
//!   vCPUs would run on, then the most free memory, then the lowest node ids.
//! - Nodes hold memory or give CPUs: a memoryless node is never a member (it
//!   adds no memory), but its CPUs count for a candidate with a CPU-less
//!   node, whose vCPUs run on the CPUs of the nearest node that has running
//!   ones ([`Topology::fallback_order`]).
//! - For a set of several nodes each node but the last gives what it has
//!   free, rounded down to 2 MiB, fullest node first, and the last the rest.
//!   With `vnuma_auto = 1` (the default) the domain gets one vnode per node,
//!   in node order, sized by what that node gave, with the machine's
//!   distances between them (a distance of 10 or less between distinct
//!   nodes, which a SLIT cannot say, becomes 11, as in `mirror_machine`),
//!   and its vCPUs go to the vnodes on nodes with running CPUs in proportion
//!   to their memory (largest remainder, consecutive vCPU ids per vnode): a
//!   vnode on a CPU-less node is a CPU-less vnode, as on the machine.
//!   `vnuma_auto = 0` asks for one flat node; each vnode is backed by one
//!   physical node (P->node == M->node), so that domain must fit in one
//!   node and is refused otherwise: one flat node backed by several would be
//!   the lie the vNUMA exists to avoid.
//! - Subsets: all sets of `k` nodes are tried while there are at most
//!   [`MAX_SUBSETS`] of them (every `k` up to 16 eligible nodes, the limit
//!   libxl enumerates to; pairs up to 64). Beyond that the sets tried are,
//!   from each node, the set grown one nearest node at a time, and the `k`
//!   nodes with the most free memory (which always fits when any `k`-set
//!   does, so the node count stays minimal).
//! - A domain pinned with `cpus` (and no `vnuma`) is not placed: it goes on
//!   the node of its CPUs, which must be one node with the memory.
//!
//! A vnode with `pnode=auto` is placed alone, on one node (a vnode is backed
//! by one node): the node of its vcpus' pinned CPUs if they are pinned (the
//! config checker made sure that is one node), else the best node by the
//! rules above among those with its size free beyond the domain's other
//! vnodes, preferring nodes no other vnode of the domain uses. Its
//! `vdistances` stay as the config gave them. A domain whose vnodes all name
//! their node is not placed ([`Placed::decision`] is `None`).
//!
//! Every decision can be printed on one line ([`Decision`]'s `Display`):
//! `placed on node(s) 0,1: fits in no single node: spans 2 nodes;
//! candidates: ...; won on distance`.
//!
//! # vCPUs ([`place_vcpus_with_load`])
//!
//! One physical CPU per vCPU, chosen when the domain is built and kept for
//! its life (pinning, as Xen's hard affinity with one CPU each).
//!
//! - A pinned vCPU (`cpus` in the config) runs on the CPU it is pinned to;
//!   the config checker already made sure that CPU is on its vnode's node.
//!   The CPU must be running: otherwise the domain is refused, never run
//!   somewhere the config did not allow.
//! - An unpinned vCPU runs on a running CPU of its vnode's physical node or,
//!   when that node has none (a CPU-less node, or its CPUs did not start),
//!   of the nearest node that has one (`Topology::fallback_order`, the
//!   order memory falls back in). Among those, the CPU with the fewest vCPUs
//!   (other domains' from [`MachineState::vcpus_on_cpu`] plus this
//!   domain's so far), then the lowest id: vCPUs spread before they share.
//!
//! vCPUs placed on the same CPU take turns on it (see the scheduler).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Ordering;
use core::fmt;

use super::config::{format_id_list, DomainConfig, VnodeConfig};
use crate::mm::addr::PAGE_SHIFT;
use crate::mm::heap::Heap;
use crate::numa::topology::Topology;
use crate::numa::{CpuId, NodeId, LOCAL_DISTANCE};

const MIB: u64 = 1 << 20;

/// Most node sets of one size tried exhaustively; see the module doc.
pub const MAX_SUBSETS: u64 = 16384;

/// Candidates shown in a decision line; the rest are counted.
const SHOWN_CANDIDATES: usize = 8;

/// The machine as other domains left it, indexed by node id and CPU id.
#[derive(Clone, Copy, Debug)]
pub struct MachineState<'a> {
    /// Free memory per node that no domain has claimed, in bytes.
    pub unclaimed_free: &'a [u64],
    /// vCPUs of the domains already placed, per CPU.
    pub vcpus_on_cpu: &'a [u32],
    /// Whether each CPU is running (can run vCPUs).
    pub online: &'a [bool],
}

impl MachineState<'_> {
    fn free(&self, n: NodeId) -> u64 {
        self.unclaimed_free.get(n.index()).copied().unwrap_or(0)
    }

    fn load(&self, c: CpuId) -> u32 {
        self.vcpus_on_cpu.get(c.index()).copied().unwrap_or(0)
    }

    fn is_online(&self, c: CpuId) -> bool {
        self.online.get(c.index()).copied().unwrap_or(false)
    }
}

/// A set of nodes that could hold the domain (or a `pnode=auto` vnode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Ascending.
    pub nodes: Vec<NodeId>,
    /// The largest distance between two members, either way
    /// ([`LOCAL_DISTANCE`] for one node).
    pub max_distance: u8,
    /// vCPUs already on the CPUs the domain's vCPUs would run on.
    pub vcpus: u64,
    /// Those CPUs: the running CPUs of its nodes, and for a node without
    /// any, of the nearest node that has some.
    pub cpus: u64,
    /// Unclaimed free memory of its nodes, in bytes.
    pub free_bytes: u64,
}

/// The rule that made the winner win over the runner-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// No other candidate.
    Only,
    /// Fewer nodes (candidates of one decision all have as many: the
    /// fewest that fit).
    Nodes,
    /// Smaller largest distance between its nodes.
    Distance,
    /// Fewer vCPUs per CPU.
    Load,
    /// More free memory.
    FreeMemory,
    /// A tie on everything: the lowest node ids.
    NodeId,
    /// Not chosen: the vCPUs are pinned to CPUs of that node.
    Pinned,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Only => "the only candidate",
            Rule::Nodes => "won on fewer nodes",
            Rule::Distance => "won on distance",
            Rule::Load => "won on load",
            Rule::FreeMemory => "won on free memory",
            Rule::NodeId => "a tie, won on the lowest node id",
            Rule::Pinned => "pinned",
        })
    }
}

impl Candidate {
    /// Best first; the rule that decided.
    fn compare(&self, other: &Candidate) -> (Ordering, Rule) {
        // a/b < c/d without division; no CPU at all is the worst load.
        let load = |c: &Candidate| (c.cpus == 0, c.vcpus, c.cpus);
        let (za, va, ca) = load(self);
        let (zb, vb, cb) = load(other);
        let by_load = za.cmp(&zb).then_with(|| {
            u128::from(va)
                .saturating_mul(u128::from(cb))
                .cmp(&u128::from(vb).saturating_mul(u128::from(ca)))
        });
        let steps = [
            (self.nodes.len().cmp(&other.nodes.len()), Rule::Nodes),
            (self.max_distance.cmp(&other.max_distance), Rule::Distance),
            (by_load, Rule::Load),
            (other.free_bytes.cmp(&self.free_bytes), Rule::FreeMemory),
            (self.nodes.cmp(&other.nodes), Rule::NodeId),
        ];
        steps
            .into_iter()
            .find(|(o, _)| o.is_ne())
            .unwrap_or((Ordering::Equal, Rule::NodeId))
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}} ", node_list(&self.nodes))?;
        let k = self.nodes.len();
        if k == 1 {
            f.write_str("1 node")?;
        } else {
            write!(f, "{k} nodes, max distance {}", self.max_distance)?;
        }
        if self.cpus == 0 {
            f.write_str(", no running CPU")?;
        } else {
            // Hundredths, rounded half up.
            let h = (u128::from(self.vcpus) * 200 + u128::from(self.cpus))
                / (2 * u128::from(self.cpus));
            write!(f, ", {}.{:02} vcpus/cpu", h / 100, h % 100)?;
        }
        write!(f, ", {} MiB free", self.free_bytes / MIB)
    }
}

/// How one part of a domain was placed: the whole domain, or one
/// `pnode=auto` vnode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The `pnode=auto` vnode, or `None` for the whole domain.
    pub vnode: Option<usize>,
    /// The MiB it needed.
    pub memory_mib: u64,
    /// The nodes it got, ascending.
    pub nodes: Vec<NodeId>,
    /// Those considered, best first (empty when pinned).
    pub candidates: Vec<Candidate>,
    pub won_on: Rule,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(k) = self.vnode {
            write!(f, "vnode {k} (pnode=auto): ")?;
        }
        if self.won_on == Rule::Pinned {
            return write!(
                f,
                "its vcpus are pinned to CPUs of node {}",
                node_list(&self.nodes)
            );
        }
        match self.nodes.len() {
            _ if self.memory_mib == 0 => f.write_str("no memory, among nodes with CPUs")?,
            1 => f.write_str("fits in 1 node")?,
            k => write!(f, "fits in no single node: spans {k} nodes")?,
        }
        f.write_str("; candidates: ")?;
        for (i, c) in self.candidates.iter().take(SHOWN_CANDIDATES).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{c}")?;
        }
        if let Some(more) = self.candidates.len().checked_sub(SHOWN_CANDIDATES) {
            if more > 0 {
                write!(f, "; and {more} more")?;
            }
        }
        write!(f, "; {}", self.won_on)
    }
}

/// Why a domain is where it is. `Display` gives the one line
/// `placed on node(s) A,B: REASON` that follows `domain N (name): `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Every node the domain's vnodes are on, ascending.
    pub nodes: Vec<NodeId>,
    /// The whole domain's choice, or one per `pnode=auto` vnode.
    pub choices: Vec<Choice>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "placed on node(s) {}: ", node_list(&self.nodes))?;
        for (i, c) in self.choices.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// A placed domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The config with its vnodes filled in and every pnode resolved
    /// (`auto_vnodes` empty); it validates.
    pub config: DomainConfig,
    /// The CPU of each vCPU, by vCPU id.
    pub cpus: Vec<CpuId>,
    /// `None` when the config named every vnode's node.
    pub decision: Option<Decision>,
}

/// Places a domain on the machine as `state` describes it: its nodes (see
/// the module doc) and its vCPUs' CPUs. Checks the config against the
/// machine first ([`DomainConfig::check_against`]). Fails with a message
/// naming the shortfall when the domain fits nowhere; never places it
/// anywhere the rules do not allow.
pub fn place_domain(
    config: &DomainConfig,
    topology: &Topology,
    state: &MachineState,
) -> Result<Placed, String> {
    config.check_against(topology)?;
    let mut config = config.clone();
    let decision = if config.vnodes.is_empty() {
        let (vnodes, choice) = place_whole(&config, topology, state)?;
        config.vnodes = vnodes;
        Some(choice)
    } else if !config.auto_vnodes.is_empty() {
        Some(place_auto_vnodes(&mut config, topology, state)?)
    } else {
        None
    };
    let decision = decision.map(|choices| {
        let mut nodes: Vec<NodeId> = config.vnodes.iter().map(|v| v.pnode).collect();
        nodes.sort();
        nodes.dedup();
        Decision { nodes, choices }
    });
    config
        .validate()
        .map_err(|e| format!("placement made a bad config (a bug): {e}"))?;
    let cpus = place_vcpus_with_load(&config, topology, state)?;
    Ok(Placed {
        config,
        cpus,
        decision,
    })
}

/// A domain without vnodes: its vnodes and the choice made.
fn place_whole(
    config: &DomainConfig,
    topology: &Topology,
    state: &MachineState,
) -> Result<(Vec<VnodeConfig>, Vec<Choice>), String> {
    let want = config.memory_mib.saturating_mul(MIB);
    if config.cpus.is_some() {
        let mut nodes: Vec<NodeId> = (0..config.vcpus)
            .filter_map(|v| config.pcpu_of_vcpu(v))
            .filter_map(|c| topology.cpu_node(c))
            .collect();
        nodes.sort();
        nodes.dedup();
        let [node] = nodes[..] else {
            return Err(format!(
                "no vnuma given and the pinned CPUs are on nodes {}; give a vnuma line to \
                 split the domain",
                format_id_list(nodes.iter().map(|n| u32::from(n.0)))
            ));
        };
        let free = state.free(node);
        if free < want {
            return Err(format!(
                "no vnuma given and node {node} (of the pinned CPUs) has only {} MiB unclaimed \
                 free for {} MiB (short by {} MiB)",
                free / MIB,
                config.memory_mib,
                (want - free).div_ceil(MIB)
            ));
        }
        let choice = Choice {
            vnode: None,
            memory_mib: config.memory_mib,
            nodes: vec![node],
            candidates: Vec::new(),
            won_on: Rule::Pinned,
        };
        return Ok((one_vnode(config, node), vec![choice]));
    }

    let eligible: Vec<NodeId> = topology
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|&n| state.free(n) >= MIB)
        .collect();
    let Some(sets) = candidate_sets(topology, state, &eligible, config.memory_mib) else {
        // Spanning every node is the most the domain can have.
        let all: u64 = eligible.iter().map(|&n| share_cap_mib(state, n)).sum();
        return Err(format!(
            "{} MiB fits nowhere, even spanning every node: {all} MiB unclaimed free in all \
             (short by {} MiB)",
            config.memory_mib,
            config.memory_mib.saturating_sub(all)
        ));
    };
    let k = sets.first().map_or(0, Vec::len);
    if k > 1 && !config.vnuma_auto {
        let (most, node) = eligible
            .iter()
            .map(|&n| (state.free(n), n))
            .fold((0, NodeId(0)), |b, x| if x.0 > b.0 { x } else { b });
        return Err(format!(
            "{} MiB fits in no single node (the most unclaimed free memory is {} MiB, on node \
             {node}) and vnuma_auto = 0 asks for one flat node, which one node must back: \
             allow vnuma_auto = 1 or give a vnuma",
            config.memory_mib,
            most / MIB
        ));
    }
    let by_node = cpus_by_node(topology, state);
    let (candidates, won_on) = rank(
        sets.iter()
            .map(|s| candidate(topology, state, &by_node, s.clone()))
            .collect(),
    );
    let Some(best) = candidates.first() else {
        return Err(String::from("no candidate node (a bug)"));
    };
    let nodes = best.nodes.clone();
    let vnodes = match nodes[..] {
        [node] => one_vnode(config, node),
        _ => spanning_vnodes(config, topology, state, &nodes),
    };
    let choice = Choice {
        vnode: None,
        memory_mib: config.memory_mib,
        nodes,
        candidates,
        won_on,
    };
    Ok((vnodes, vec![choice]))
}

/// One vnode on `node` with all memory and vCPUs.
fn one_vnode(config: &DomainConfig, node: NodeId) -> Vec<VnodeConfig> {
    vec![VnodeConfig {
        pnode: node,
        size_mib: config.memory_mib,
        vcpus: (0..config.vcpus).collect(),
        vdistances: vec![LOCAL_DISTANCE],
    }]
}

/// What node `n` gives to a domain spanning several nodes, in MiB: its
/// unclaimed free memory rounded down to 2 MiB.
fn share_cap_mib(state: &MachineState, n: NodeId) -> u64 {
    (state.free(n) / MIB) & !1
}

/// The node sets of the smallest size that hold `want_mib`, or `None`
/// when even all of `eligible` do not. See the module doc for the cap.
fn candidate_sets(
    topology: &Topology,
    state: &MachineState,
    eligible: &[NodeId],
    want_mib: u64,
) -> Option<Vec<Vec<NodeId>>> {
    let want = want_mib.saturating_mul(MIB);
    let singles: Vec<Vec<NodeId>> = eligible
        .iter()
        .filter(|&&n| state.free(n) >= want)
        .map(|&n| vec![n])
        .collect();
    if !singles.is_empty() {
        return Some(singles);
    }
    // The fewest nodes that can hold it: the fullest ones say how many.
    let mut by_cap: Vec<NodeId> = eligible.to_vec();
    by_cap.sort_by_key(|&n| (core::cmp::Reverse(share_cap_mib(state, n)), n));
    let mut sum = 0u64;
    let k = by_cap.iter().position(|&n| {
        sum = sum.saturating_add(share_cap_mib(state, n));
        sum >= want_mib
    })? + 1;
    let fits = |s: &[NodeId]| {
        s.iter()
            .map(|&n| share_cap_mib(state, n))
            .fold(0u64, u64::saturating_add)
            >= want_mib
    };
    let mut sets: Vec<Vec<NodeId>> = Vec::new();
    if binomial(eligible.len() as u64, k as u64) <= MAX_SUBSETS {
        let e = eligible.len();
        let mut idx: Vec<usize> = (0..k).collect();
        loop {
            let s: Vec<NodeId> = idx
                .iter()
                .filter_map(|&i| eligible.get(i).copied())
                .collect();
            if fits(&s) {
                sets.push(s);
            }
            // Next k-combination in lexicographic order.
            let Some(i) = (0..k).rev().find(|&i| idx[i] < e - k + i) else {
                break;
            };
            idx[i] += 1;
            for j in i + 1..k {
                idx[j] = idx[j - 1] + 1;
            }
        }
    } else {
        let mut top: Vec<NodeId> = by_cap.iter().take(k).copied().collect();
        top.sort();
        sets.push(top);
        let apart = |a: NodeId, b: NodeId| topology.distance(a, b).max(topology.distance(b, a));
        for &seed in eligible {
            let mut s = vec![seed];
            // far[i]: the largest distance from eligible[i] to the set.
            let mut far: Vec<u8> = eligible.iter().map(|&m| apart(seed, m)).collect();
            while s.len() < k {
                let next = eligible
                    .iter()
                    .zip(&far)
                    .filter(|(n, _)| !s.contains(n))
                    .min_by_key(|&(&m, &d)| (d, core::cmp::Reverse(share_cap_mib(state, m)), m));
                let Some((&m, _)) = next else {
                    break;
                };
                s.push(m);
                for (f, &x) in far.iter_mut().zip(eligible) {
                    *f = (*f).max(apart(m, x));
                }
            }
            s.sort();
            if fits(&s) && !sets.contains(&s) {
                sets.push(s);
            }
        }
    }
    Some(sets)
}

/// n choose k, saturating.
fn binomial(n: u64, k: u64) -> u64 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut c: u64 = 1;
    for i in 0..k {
        // Exact at each step: c * (n - i) is divisible by i + 1.
        c = match c.checked_mul(n - i) {
            Some(x) => x / (i + 1),
            None => return u64::MAX,
        };
    }
    c
}

/// For each node (by id), the running CPUs the vCPUs of a domain there
/// would use: its own, or for a node without any, the nearest node's that
/// has some. Computed once per placement: candidates only look it up.
fn cpus_by_node(topology: &Topology, state: &MachineState) -> Vec<Vec<CpuId>> {
    let nodes = topology.nodes.iter().map(|n| n.id.index() + 1).max();
    (0..nodes.unwrap_or(0))
        .map(|i| {
            for m in topology.fallback_order(NodeId(i as u8)) {
                let cpus: Vec<CpuId> = topology
                    .cpus
                    .iter()
                    .filter(|c| c.node == m && state.is_online(c.id))
                    .map(|c| c.id)
                    .collect();
                if !cpus.is_empty() {
                    return cpus;
                }
            }
            Vec::new()
        })
        .collect()
}

fn candidate(
    topology: &Topology,
    state: &MachineState,
    cpus_by_node: &[Vec<CpuId>],
    nodes: Vec<NodeId>,
) -> Candidate {
    let mut cpus: Vec<CpuId> = nodes
        .iter()
        .filter_map(|n| cpus_by_node.get(n.index()))
        .flatten()
        .copied()
        .collect();
    cpus.sort();
    cpus.dedup();
    let max_distance = nodes
        .iter()
        .flat_map(|&a| nodes.iter().map(move |&b| (a, b)))
        .filter(|(a, b)| a != b)
        .map(|(a, b)| topology.distance(a, b))
        .max()
        .unwrap_or(LOCAL_DISTANCE);
    Candidate {
        max_distance,
        vcpus: cpus.iter().map(|&c| u64::from(state.load(c))).sum(),
        cpus: cpus.len() as u64,
        free_bytes: nodes.iter().map(|&n| state.free(n)).sum(),
        nodes,
    }
}

/// Candidates best first, and the rule that put the first ahead.
fn rank(mut candidates: Vec<Candidate>) -> (Vec<Candidate>, Rule) {
    candidates.sort_by(|a, b| a.compare(b).0);
    let rule = match candidates.as_slice() {
        [a, b, ..] => a.compare(b).1,
        _ => Rule::Only,
    };
    (candidates, rule)
}

/// The vnodes of a domain spanning `nodes`: see the module doc.
fn spanning_vnodes(
    config: &DomainConfig,
    topology: &Topology,
    state: &MachineState,
    nodes: &[NodeId],
) -> Vec<VnodeConfig> {
    let mut fill: Vec<NodeId> = nodes.to_vec();
    fill.sort_by_key(|&n| (core::cmp::Reverse(share_cap_mib(state, n)), n));
    let mut left = config.memory_mib;
    let mut sizes: Vec<(NodeId, u64)> = Vec::new();
    for n in fill {
        let take = share_cap_mib(state, n).min(left);
        left -= take;
        if take > 0 {
            sizes.push((n, take));
        }
    }
    sizes.sort();
    // vCPUs go to vnodes on nodes with running CPUs, or if none has, to
    // those nearest to one.
    let reach = |n: NodeId| {
        topology
            .cpus
            .iter()
            .filter(|c| state.is_online(c.id))
            .map(|c| topology.distance(n, c.node))
            .min()
            .unwrap_or(u8::MAX)
    };
    let nearest = sizes
        .iter()
        .map(|&(n, _)| reach(n))
        .min()
        .unwrap_or(u8::MAX);
    let weights: Vec<u64> = sizes
        .iter()
        .map(|&(n, s)| if reach(n) == nearest { s } else { 0 })
        .collect();
    let counts = largest_remainder(config.vcpus, &weights);
    let mut next = 0u32;
    sizes
        .iter()
        .zip(counts)
        .map(|(&(n, size_mib), count)| {
            let vcpus = (next..next + count).collect();
            next += count;
            VnodeConfig {
                pnode: n,
                size_mib,
                vcpus,
                vdistances: sizes
                    .iter()
                    .map(|&(m, _)| match topology.distance(n, m) {
                        _ if m == n => LOCAL_DISTANCE,
                        d if d <= LOCAL_DISTANCE => LOCAL_DISTANCE + 1,
                        d => d,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// `total` split in proportion to `weights` (Hamilton's method: floors,
/// then one more to the largest remainders, ties to the first).
fn largest_remainder(total: u32, weights: &[u64]) -> Vec<u32> {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let t = u128::from(total);
    let mut counts: Vec<u32> = weights
        .iter()
        .map(|&w| (t * u128::from(w) / sum) as u32)
        .collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| {
        let w = weights.get(i).map_or(0, |&w| u128::from(w));
        (core::cmp::Reverse(t * w % sum), i)
    });
    let mut left = total.saturating_sub(counts.iter().sum());
    for i in order {
        if left == 0 {
            break;
        }
        if let Some(c) = counts.get_mut(i) {
            *c += 1;
            left -= 1;
        }
    }
    counts
}

/// Resolves the `pnode=auto` vnodes of a config with vnodes, in order.
fn place_auto_vnodes(
    config: &mut DomainConfig,
    topology: &Topology,
    state: &MachineState,
) -> Result<Vec<Choice>, String> {
    let auto = core::mem::take(&mut config.auto_vnodes);
    // Memory the domain's own vnodes take, per node, as they are placed.
    let mut taken: Vec<u64> = vec![0; state.unclaimed_free.len().max(topology.nr_nodes())];
    let mut used: Vec<NodeId> = Vec::new();
    for (k, v) in config.vnodes.iter().enumerate() {
        if !auto.contains(&k) {
            if let Some(t) = taken.get_mut(v.pnode.index()) {
                *t = t.saturating_add(v.size_mib.saturating_mul(MIB));
            }
            used.push(v.pnode);
        }
    }
    let by_node = cpus_by_node(topology, state);
    let mut choices = Vec::new();
    for &k in &auto {
        let pinned = config.pinned_node_of_vnode(k, topology)?;
        let Some(vn) = config.vnodes.get(k) else {
            return Err(format!("vnode {k}: no such vnode"));
        };
        let want = vn.size_mib.saturating_mul(MIB);
        let left = |n: NodeId| {
            state
                .free(n)
                .saturating_sub(taken.get(n.index()).copied().unwrap_or(0))
        };
        let (node, choice) = if let Some(node) = pinned {
            if left(node) < want {
                return Err(format!(
                    "vnode {k} (pnode=auto) is pinned to CPUs of node {node}, which has only {} \
                     MiB unclaimed free for {} MiB (short by {} MiB)",
                    left(node) / MIB,
                    vn.size_mib,
                    (want - left(node)).div_ceil(MIB)
                ));
            }
            let choice = Choice {
                vnode: Some(k),
                memory_mib: vn.size_mib,
                nodes: vec![node],
                candidates: Vec::new(),
                won_on: Rule::Pinned,
            };
            (node, choice)
        } else {
            let fits: Vec<NodeId> = topology
                .nodes
                .iter()
                .map(|n| n.id)
                .filter(|&n| {
                    if want == 0 {
                        // A memoryless vnode is there for its vCPUs.
                        topology
                            .cpus
                            .iter()
                            .any(|c| c.node == n && state.is_online(c.id))
                    } else {
                        left(n) >= want
                    }
                })
                .collect();
            let fresh: Vec<NodeId> = fits.iter().copied().filter(|n| !used.contains(n)).collect();
            let pool = if fresh.is_empty() { fits } else { fresh };
            if pool.is_empty() {
                let (most, at) = topology
                    .nodes
                    .iter()
                    .map(|n| (left(n.id), n.id))
                    .fold((0, NodeId(0)), |b, x| if x.0 > b.0 { x } else { b });
                return Err(if want == 0 {
                    format!("vnode {k} (pnode=auto) has no memory and no node has a running CPU")
                } else {
                    format!(
                        "vnode {k} (pnode=auto) needs {} MiB on one node; the most unclaimed free \
                         is {} MiB, on node {at} (short by {} MiB)",
                        vn.size_mib,
                        most / MIB,
                        (want - most).div_ceil(MIB)
                    )
                });
            }
            let (candidates, won_on) = rank(
                pool.iter()
                    .map(|&n| candidate(topology, state, &by_node, vec![n]))
                    .collect(),
            );
            let Some(node) = candidates.first().and_then(|c| c.nodes.first().copied()) else {
                return Err(String::from("no candidate node (a bug)"));
            };
            let choice = Choice {
                vnode: Some(k),
                memory_mib: vn.size_mib,
                nodes: vec![node],
                candidates,
                won_on,
            };
            (node, choice)
        };
        if let Some(t) = taken.get_mut(node.index()) {
            *t = t.saturating_add(want);
        }
        used.push(node);
        if let Some(vn) = config.vnodes.get_mut(k) {
            vn.pnode = node;
        }
        choices.push(choice);
    }
    Ok(choices)
}

/// `0,1,3`.
fn node_list(nodes: &[NodeId]) -> String {
    let parts: Vec<String> = nodes.iter().map(|n| format!("{n}")).collect();
    parts.join(",")
}

/// Each node's free memory that no claim holds, in bytes, by node id: what
/// [`MachineState::unclaimed_free`] wants from the heap.
pub fn unclaimed_free_bytes(heap: &Heap, topology: &Topology) -> Vec<u64> {
    topology
        .nodes
        .iter()
        .map(|n| heap.unclaimed_free_pages(n.id) << PAGE_SHIFT)
        .collect()
}

/// The CPU each vCPU runs on, by vCPU id, counting the vCPUs other domains
/// already run on each CPU (see the module doc).
pub fn place_vcpus_with_load(
    config: &DomainConfig,
    topology: &Topology,
    state: &MachineState,
) -> Result<Vec<CpuId>, String> {
    if !topology.cpus.iter().any(|c| state.is_online(c.id)) {
        return Err(String::from("no CPU is running"));
    }
    let mut load: Vec<u32> = topology.cpus.iter().map(|c| state.load(c.id)).collect();
    let mut placed = Vec::with_capacity(config.vcpus as usize);
    for v in 0..config.vcpus {
        let cpu = match config.pcpu_of_vcpu(v) {
            Some(c) if state.is_online(c) => c,
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
                least_loaded(topology, home, &load, state)
                    .ok_or_else(|| format!("vcpu {v}: no running CPU"))?
            }
        };
        if let Some(l) = load.get_mut(cpu.index()) {
            *l = l.saturating_add(1);
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
    state: &MachineState,
) -> Option<CpuId> {
    let order = match home {
        Some(n) => topology.fallback_order(n),
        None => topology.nodes.iter().map(|n| n.id).collect(),
    };
    for node in order {
        let best = topology
            .cpus
            .iter()
            .filter(|c| c.node == node && state.is_online(c.id))
            .min_by_key(|c| (load.get(c.id.index()).copied().unwrap_or(0), c.id.0));
        if let Some(c) = best {
            return Some(c.id);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    /// The CPU each vCPU runs on, by vCPU id, on a machine where no other
    /// domain runs. `online[c]` says whether CPU `c` of the topology is running.
    fn place_vcpus(
        config: &DomainConfig,
        topology: &Topology,
        online: &[bool],
    ) -> Result<Vec<CpuId>, String> {
        let state = MachineState {
            unclaimed_free: &[],
            vcpus_on_cpu: &[],
            online,
        };
        place_vcpus_with_load(config, topology, &state)
    }
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

    // -----------------------------------------------------------------
    // Automatic placement, against libxl's documented rules.

    use crate::domain::testutil::MIB as TMIB;

    /// A machine state owned by a test; `view()` lends it.
    struct State {
        free: Vec<u64>,
        load: Vec<u32>,
        online: Vec<bool>,
    }

    impl State {
        /// `free` in MiB per node; no vCPU anywhere; all CPUs up.
        fn new(t: &Topology, free_mib: &[u64]) -> State {
            State {
                free: free_mib.iter().map(|m| m * TMIB).collect(),
                load: vec![0; t.cpus.len()],
                online: vec![true; t.cpus.len()],
            }
        }

        fn with_load(mut self, load: &[u32]) -> State {
            self.load = load.to_vec();
            self
        }

        fn view(&self) -> MachineState<'_> {
            MachineState {
                unclaimed_free: &self.free,
                vcpus_on_cpu: &self.load,
                online: &self.online,
            }
        }

        /// What a placed domain takes: its memory per node (claims) and its
        /// vCPUs' CPUs.
        fn take(&mut self, p: &Placed) {
            for v in &p.config.vnodes {
                self.free[v.pnode.index()] -= v.size_mib * TMIB;
            }
            for c in &p.cpus {
                self.load[c.index()] += 1;
            }
        }
    }

    fn dom(text: &str) -> DomainConfig {
        match DomainConfig::parse("t.cfg", text.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn place(text: &str, t: &Topology, s: &State) -> Placed {
        match place_domain(&dom(text), t, &s.view()) {
            Ok(p) => {
                p.config.validate().expect("placed config validates");
                p.config.check_against(t).expect("placed config fits");
                assert!(p.config.auto_vnodes.is_empty());
                p
            }
            Err(e) => panic!("{e}\n--- in ---\n{text}"),
        }
    }

    fn refused(text: &str, t: &Topology, s: &State) -> String {
        match place_domain(&dom(text), t, &s.view()) {
            Ok(p) => panic!("placed: {p:?}"),
            Err(e) => e,
        }
    }

    fn line(p: &Placed) -> String {
        match &p.decision {
            Some(d) => format!("{d}"),
            None => String::from("(not placed)"),
        }
    }

    fn pnodes(p: &Placed) -> Vec<u8> {
        p.config.vnodes.iter().map(|v| v.pnode.0).collect()
    }

    fn two_nodes() -> Topology {
        testutil::uniform(2, 512, 2, &[10, 20, 20, 10])
    }

    #[test]
    fn fits_in_one_node_tie_broken_by_load_then_free_memory() {
        let t = two_nodes();
        // Node 0 runs a vCPU on one of its two CPUs: node 1 wins on load,
        // though node 0 has more free memory.
        let s = State::new(&t, &[500, 446]).with_load(&[1, 0, 0, 0]);
        let p = place("name = a\nmemory = 256\nvcpus = 2\n", &t, &s);
        assert_eq!(pnodes(&p), [1]);
        assert_eq!(p.config.vnodes[0].vcpus, [0, 1]);
        assert_eq!(p.config.vnodes[0].vdistances, [10]);
        assert_eq!(p.cpus, [CpuId(2), CpuId(3)]);
        assert_eq!(
            line(&p),
            "placed on node(s) 1: fits in 1 node; candidates: {1} 1 node, 0.00 vcpus/cpu, \
             446 MiB free; {0} 1 node, 0.50 vcpus/cpu, 500 MiB free; won on load"
        );
        // Equal load (1 vCPU on each node): the most free memory.
        let s = State::new(&t, &[446, 511]).with_load(&[1, 0, 0, 1]);
        let p = place("name = a\nmemory = 256\n", &t, &s);
        assert_eq!(pnodes(&p), [1]);
        assert_eq!(p.cpus, [CpuId(2)], "the idle CPU of node 1");
        assert!(line(&p).ends_with("; won on free memory"), "{}", line(&p));
        // A tie on everything: the lowest node id.
        let s = State::new(&t, &[300, 300]);
        let p = place("name = a\nmemory = 256\n", &t, &s);
        assert_eq!(pnodes(&p), [0]);
        assert!(line(&p).ends_with("; a tie, won on the lowest node id"));
        // Only one node has the room: the only candidate, however loaded.
        let s = State::new(&t, &[100, 300]).with_load(&[0, 0, 5, 5]);
        let p = place("name = a\nmemory = 256\n", &t, &s);
        assert_eq!(pnodes(&p), [1]);
        assert_eq!(
            line(&p),
            "placed on node(s) 1: fits in 1 node; candidates: {1} 1 node, 5.00 vcpus/cpu, \
             300 MiB free; the only candidate"
        );
    }

    #[test]
    fn fits_in_none_spans_the_pair_with_the_smallest_largest_distance() {
        // Nodes 2 and 3 are the closest pair (15); 0-1 (20) comes first in
        // id order but is farther.
        #[rustfmt::skip]
        let t = testutil::uniform(4, 256, 1, &[
            10, 20, 30, 40,
            20, 10, 40, 30,
            30, 40, 10, 15,
            40, 30, 15, 10,
        ]);
        let s = State::new(&t, &[256, 256, 256, 200]);
        let p = place("name = a\nmemory = 400\nvcpus = 4\n", &t, &s);
        // The fuller node gives all it has, the other the rest; vCPUs in
        // proportion to memory (256:144 of 4 is 2.56:1.44 -> 3:1).
        assert_eq!(
            p.config.vnodes,
            [
                VnodeConfig {
                    pnode: NodeId(2),
                    size_mib: 256,
                    vcpus: vec![0, 1, 2],
                    vdistances: vec![10, 15],
                },
                VnodeConfig {
                    pnode: NodeId(3),
                    size_mib: 144,
                    vcpus: vec![3],
                    vdistances: vec![15, 10],
                },
            ]
        );
        assert_eq!(p.cpus, [CpuId(2), CpuId(2), CpuId(2), CpuId(3)]);
        let l = line(&p);
        assert!(
            l.starts_with(
                "placed on node(s) 2,3: fits in no single node: spans 2 nodes; candidates: \
                 {2,3} 2 nodes, max distance 15, 0.00 vcpus/cpu, 456 MiB free; {0,1} 2 nodes, \
                 max distance 20,"
            ),
            "{l}"
        );
        assert!(l.ends_with("; won on distance"), "{l}");
        // Three nodes when no pair holds it: the fewest nodes always win.
        let s = State::new(&t, &[200, 200, 200, 200]);
        let p = place("name = a\nmemory = 500\n", &t, &s);
        assert_eq!(pnodes(&p).len(), 3);
        assert_eq!(p.config.memory_mib, 500);
        // vnuma_auto = 0: one flat node cannot be backed by several.
        let e = refused("name = a\nmemory = 250\nvnuma_auto = 0\n", &t, &s);
        assert_eq!(
            e,
            "250 MiB fits in no single node (the most unclaimed free memory is 200 MiB, on \
             node 0) and vnuma_auto = 0 asks for one flat node, which one node must back: \
             allow vnuma_auto = 1 or give a vnuma"
        );
        // Fitting one node, vnuma_auto = 0 changes nothing.
        let p = place("name = a\nmemory = 150\nvnuma_auto = 0\n", &t, &s);
        assert_eq!(p.config.vnodes.len(), 1);
        // Fits nowhere even on every node: the shortfall.
        let e = refused("name = a\nmemory = 900\n", &t, &s);
        assert_eq!(
            e,
            "900 MiB fits nowhere, even spanning every node: 800 MiB unclaimed free in all \
             (short by 100 MiB)"
        );
    }

    #[test]
    fn pairs_tied_on_distance_are_broken_by_load() {
        // Four nodes all 20 apart: every pair ties on distance.
        #[rustfmt::skip]
        let t = testutil::uniform(4, 256, 2, &[
            10, 20, 20, 20,
            20, 10, 20, 20,
            20, 20, 10, 20,
            20, 20, 20, 10,
        ]);
        let s = State::new(&t, &[200, 200, 200, 200]).with_load(&[1, 1, 1, 0, 0, 0, 2, 0]);
        let p = place("name = a\nmemory = 300\nvcpus = 2\n", &t, &s);
        // vCPUs per node: 2, 1, 0, 2. {1,2} has 1 on its 4 CPUs, every
        // other pair more: {1,2} wins.
        assert_eq!(pnodes(&p), [1, 2]);
        assert!(line(&p).contains(
            "candidates: {1,2} 2 nodes, max distance 20, 0.25 vcpus/cpu, 400 MiB free; "
        ));
        assert!(line(&p).ends_with("; won on load"));
        // One vCPU per vnode (150:150), each on its node's idle CPU.
        assert_eq!(p.config.vnodes[0].vcpus, [0]);
        assert_eq!(p.config.vnodes[1].vcpus, [1]);
        assert_eq!(p.cpus, [CpuId(3), CpuId(4)]);
    }

    #[test]
    fn memoryless_and_cpu_less_nodes() {
        // Node 2: CPUs 4-5, no memory; node 3: memory, no CPU.
        let t = testutil::four_nodes();
        // Nodes 0 and 1 busy: node 3, whose vCPUs run on its nearest CPUs
        // (node 2's, idle), wins on load. Node 2 holds no memory: never a
        // candidate.
        let s = State::new(&t, &[511, 512, 0, 512]).with_load(&[1, 1, 1, 1, 0, 0]);
        let p = place("name = a\nmemory = 256\nvcpus = 2\n", &t, &s);
        assert_eq!(pnodes(&p), [3]);
        assert_eq!(p.cpus, [CpuId(4), CpuId(5)]);
        assert_eq!(
            line(&p),
            "placed on node(s) 3: fits in 1 node; candidates: {3} 1 node, 0.00 vcpus/cpu, \
             512 MiB free; {1} 1 node, 1.00 vcpus/cpu, 512 MiB free; {0} 1 node, 1.00 \
             vcpus/cpu, 511 MiB free; won on load"
        );
        // Spanning three nodes: a truthful vNUMA with the CPU-less node as
        // a CPU-less vnode, the machine's distances.
        let s = State::new(&t, &[400, 400, 0, 400]);
        let p = place("name = a\nmemory = 1000\nvcpus = 4\n", &t, &s);
        assert_eq!(pnodes(&p), [0, 1, 3]);
        let sizes: Vec<u64> = p.config.vnodes.iter().map(|v| v.size_mib).collect();
        assert_eq!(sizes, [400, 400, 200]);
        let vcpus: Vec<Vec<u32>> = p.config.vnodes.iter().map(|v| v.vcpus.clone()).collect();
        assert_eq!(vcpus, [vec![0, 1], vec![2, 3], vec![]]);
        assert_eq!(
            p.config.distance_matrix(),
            [10, 20, 40, 20, 10, 30, 40, 30, 10]
        );
        assert_eq!(p.cpus, [CpuId(0), CpuId(1), CpuId(2), CpuId(3)]);
        // Only CPU-less memory left: the vCPUs go to the nearest CPUs.
        let s = State::new(&t, &[0, 0, 0, 300]);
        let p = place("name = a\nmemory = 200\nvcpus = 3\n", &t, &s);
        assert_eq!(pnodes(&p), [3]);
        assert_eq!(p.cpus, [CpuId(4), CpuId(5), CpuId(4)]);
    }

    #[test]
    fn asymmetric_distances_count_both_ways() {
        // xtask's `asymmetric` machine: 0->1 is 20 but 1->0 is 30.
        #[rustfmt::skip]
        let t = testutil::uniform(3, 256, 1, &[
            10, 20, 40,
            30, 10, 20,
            25, 35, 10,
        ]);
        let s = State::new(&t, &[256, 256, 256]);
        let p = place("name = a\nmemory = 400\nvcpus = 2\n", &t, &s);
        // {0,1}: 30; {0,2}: 40; {1,2}: 35.
        assert_eq!(pnodes(&p), [0, 1]);
        // Each vnode keeps its own row: the vNUMA is as asymmetric as the
        // machine.
        assert_eq!(p.config.distance_matrix(), [10, 20, 30, 10]);
        assert!(line(&p).contains("{0,1} 2 nodes, max distance 30"));
        assert!(line(&p).contains("{1,2} 2 nodes, max distance 35"));
    }

    #[test]
    fn ring8_eight_domains_one_per_node() {
        // As `--topology ring8`: 8 nodes of 128 MiB and 1 CPU each.
        let t = testutil::ring(8, 128);
        let mut s = State::new(&t, &[120; 8]);
        for i in 0..8u8 {
            let p = place(&format!("name = d{i}\nmemory = 64\n"), &t, &s);
            assert_eq!(pnodes(&p), [i], "domain {i}: {}", line(&p));
            assert_eq!(p.cpus, [CpuId(u32::from(i))]);
            s.take(&p);
        }
        // A ninth: every node equally loaded and free: node 0 on the tie.
        let p = place("name = d8\nmemory = 56\n", &t, &s);
        assert_eq!(pnodes(&p), [0]);
        s.take(&p);
        // Too big for any node now: two neighbours (distance 20).
        let p = place("name = big\nmemory = 100\n", &t, &s);
        assert_eq!(pnodes(&p), [1, 2]);
        assert_eq!(p.config.distance_matrix(), [10, 20, 20, 10]);
        assert!(line(&p).contains("{1,2} 2 nodes, max distance 20, 1.00 vcpus/cpu, 112 MiB"));
    }

    #[test]
    fn many_nodes_search_stays_bounded_and_minimal() {
        // 40 nodes: C(40, 4) = 91390 sets of 4 is past the cap, so the
        // greedy sets are tried; the node count stays minimal and the
        // nearest arc wins.
        assert!(binomial(40, 4) > MAX_SUBSETS && binomial(40, 3) <= MAX_SUBSETS);
        assert_eq!(binomial(16, 8), 12870);
        assert_eq!(binomial(64, 32), u64::MAX);
        assert_eq!(binomial(3, 5), 0);
        let t = testutil::ring(40, 64);
        let s = State::new(&t, &[64; 40]);
        let p = place("name = a\nmemory = 200\nvcpus = 4\n", &t, &s);
        assert_eq!(pnodes(&p), [0, 1, 2, 3]);
        assert!(line(&p).contains("; and "), "{}", line(&p));
        // Sets of 3 are enumerated in full: the arc of 3 (max distance 30).
        let p = place("name = a\nmemory = 150\n", &t, &s);
        assert_eq!(pnodes(&p), [0, 1, 2]);
        // 64 nodes, the most a machine has: a few nodes is fine.
        let t = testutil::ring(64, 16);
        let s = State::new(&t, &[16; 64]);
        let p = place("name = a\nmemory = 100\n", &t, &s);
        assert_eq!(pnodes(&p).len(), 7);
    }

    #[test]
    fn pinned_domain_without_vnuma_stays_on_its_cpus_node() {
        let t = two_nodes();
        let s = State::new(&t, &[500, 500]).with_load(&[0, 0, 3, 3]);
        let p = place("name = a\nmemory = 64\nvcpus = 2\ncpus = \"2-3\"\n", &t, &s);
        assert_eq!(pnodes(&p), [1]);
        assert_eq!(p.cpus, [CpuId(2), CpuId(3)]);
        assert_eq!(
            line(&p),
            "placed on node(s) 1: its vcpus are pinned to CPUs of node 1"
        );
    }

    #[test]
    fn explicit_vnuma_is_not_placed_but_vcpus_spread_by_load() {
        let t = two_nodes();
        let s = State::new(&t, &[500, 500]).with_load(&[2, 1, 0, 0]);
        let p = place(
            "name = a\nvnuma = [ \"pnode=0,size=64,vcpus=0-2\", \"pnode=1,size=64,vcpus=3\" ]\n",
            &t,
            &s,
        );
        assert_eq!(p.decision, None);
        // CPU 1 (1 vCPU) before CPU 0 (2), then they share.
        assert_eq!(p.cpus, [CpuId(1), CpuId(0), CpuId(1), CpuId(2)]);
    }

    #[test]
    fn pnode_auto_vnodes() {
        let t = two_nodes();
        let s = State::new(&t, &[500, 500]);
        // Unpinned: a node no other vnode of the domain uses.
        let p = place(
            "name = a\nvnuma = [ \"pnode=0,size=64,vcpus=0\", \"pnode=auto,size=64,vcpus=1\" ]\n",
            &t,
            &s,
        );
        assert_eq!(pnodes(&p), [0, 1]);
        assert_eq!(
            line(&p),
            "placed on node(s) 0,1: vnode 1 (pnode=auto): fits in 1 node; candidates: {1} 1 \
             node, 0.00 vcpus/cpu, 500 MiB free; the only candidate"
        );
        // All auto, one node too small for the second: they share node 1.
        let s2 = State::new(&t, &[100, 500]);
        let p = place(
            "name = a\nvnuma = [ \"pnode=auto,size=200,vcpus=0\", \"pnode=auto,size=200,vcpus=1\" ]\n",
            &t,
            &s2,
        );
        assert_eq!(pnodes(&p), [1, 1]);
        // Pinned: the node of its CPUs.
        let text = "name = a\ncpus = \"0,2\"\nvnuma = [ \"pnode=auto,size=64,vcpus=1\", \
                    \"pnode=auto,size=64,vcpus=0\" ]\n";
        let p = place(text, &t, &s);
        assert_eq!(pnodes(&p), [1, 0]);
        assert_eq!(p.cpus, [CpuId(0), CpuId(2)]);
        assert_eq!(
            line(&p),
            "placed on node(s) 0,1: vnode 0 (pnode=auto): its vcpus are pinned to CPUs of \
             node 1 | vnode 1 (pnode=auto): its vcpus are pinned to CPUs of node 0"
        );
        // Pinned to a node without the room: refused with the shortfall.
        let e = refused(text, &t, &State::new(&t, &[500, 40]));
        assert_eq!(
            e,
            "vnode 0 (pnode=auto) is pinned to CPUs of node 1, which has only 40 MiB \
             unclaimed free for 64 MiB (short by 24 MiB)"
        );
        // Pins spanning nodes: the config checker refuses it.
        let e = refused(
            "name = a\ncpus = \"0,2\"\nvnuma = [ \"pnode=auto,size=64,vcpus=0-1\" ]\n",
            &t,
            &s,
        );
        assert_eq!(
            e,
            "vnode 0 has pnode=auto and its vcpus are pinned to CPUs on nodes 0-1; a vnode \
             lives on one node: pin its vcpus to CPUs of one node"
        );
        // Too big for any node.
        let e = refused(
            "name = a\nvnuma = [ \"pnode=auto,size=600,vcpus=0\" ]\n",
            &t,
            &s,
        );
        assert_eq!(
            e,
            "vnode 0 (pnode=auto) needs 600 MiB on one node; the largest, node 0, has 512 MiB"
        );
        let e = refused(
            "name = a\nvnuma = [ \"pnode=auto,size=501,vcpus=0\" ]\n",
            &t,
            &s,
        );
        assert_eq!(
            e,
            "vnode 0 (pnode=auto) needs 501 MiB on one node; the most unclaimed free is 500 \
             MiB, on node 0 (short by 1 MiB)"
        );
        // A memoryless auto vnode goes where CPUs are idle.
        let s3 = State::new(&t, &[500, 500]).with_load(&[1, 1, 0, 1]);
        let p = place(
            "name = a\nvnuma = [ \"pnode=auto,size=0,vcpus=0,vdistances=10,20\", \
             \"pnode=0,size=64,vdistances=20,10\" ]\n",
            &t,
            &s3,
        );
        assert_eq!(pnodes(&p), [1, 0]);
        assert_eq!(p.cpus, [CpuId(2)]);
    }

    #[test]
    fn vcpu_shares_follow_memory() {
        assert_eq!(largest_remainder(4, &[256, 144]), [3, 1]);
        assert_eq!(largest_remainder(3, &[100, 100, 100]), [1, 1, 1]);
        assert_eq!(largest_remainder(1, &[100, 100]), [1, 0]);
        assert_eq!(largest_remainder(5, &[0, 0]), [0, 0]);
        assert_eq!(largest_remainder(7, &[1, 0, 1]), [4, 0, 3]);
    }

    #[test]
    fn placement_never_panics_on_odd_states() {
        let t = testutil::four_nodes();
        let c = dom("name = a\nmemory = 64\nvcpus = 3\n");
        // Short slices: missing nodes have no memory, missing CPUs are down.
        let e = place_domain(
            &c,
            &t,
            &MachineState {
                unclaimed_free: &[],
                vcpus_on_cpu: &[],
                online: &[],
            },
        )
        .unwrap_err();
        assert!(e.contains("fits nowhere"), "{e}");
        let free = [512 * TMIB; 4];
        let e = place_domain(
            &c,
            &t,
            &MachineState {
                unclaimed_free: &free,
                vcpus_on_cpu: &[u32::MAX; 6],
                online: &[],
            },
        )
        .unwrap_err();
        assert_eq!(e, "no CPU is running");
        let p = place_domain(
            &c,
            &t,
            &MachineState {
                unclaimed_free: &free,
                vcpus_on_cpu: &[u32::MAX; 6],
                online: &[true; 6],
            },
        )
        .expect("placed");
        assert_eq!(p.cpus.len(), 3);
    }
}

//! [`Mm`]: the guest's memory manager (nodes, zones, zonelists, CPU to
//! node maps, counters) and the page allocation API.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use pv_abi::node::{LOCAL_DISTANCE, REMOTE_DISTANCE};
use pv_abi::{Gfn, Gpa, Maddr, PAGE_SHIFT, PAGE_SIZE};

use crate::boot::start_info::subtract;

use super::buddy::{Buddy, BuildError, FreeError, PageState, MAX_ORDER};
use super::gfp::Gfp;
use super::init::MmConfig;
use super::node::Node;
use super::nodemask::NodeMask;
use super::stats::{NodeStats, NumaStat, NumaStats};
use super::zone::{split_by_machine, Zone, ZoneInfo, ZoneType, NR_ZONES};
use super::zonelist::{
    build_all_zonelists, default_zonelist_order, local_memory_node, CpuPenalty, OrderChoice,
    ZoneRef, ZoneSizes, Zonelist, ZonelistInput, ZonelistKind, ZonelistOrder,
};

/// "No node" (Linux's `NUMA_NO_NODE`): [`Mm::alloc_pages_node`] then uses
/// the current CPU's local memory node.
pub const NUMA_NO_NODE: u32 = u32::MAX;

/// An allocated block: `2^order` pages, contiguous in guest-physical and
/// in machine memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// First frame.
    pub gfn: Gfn,
    /// Order.
    pub order: u32,
    /// The node it came from.
    pub nid: u32,
    /// The zone it came from.
    pub zone: ZoneType,
    /// Machine (bus) address of the first frame.
    pub maddr: Maddr,
}

impl Page {
    /// Guest-physical address of the first byte.
    pub const fn gpa(&self) -> Gpa {
        Gpa(self.gfn.0 << PAGE_SHIFT)
    }

    /// Pages in the block.
    pub const fn pages(&self) -> u64 {
        1 << self.order
    }

    /// Bytes in the block.
    pub const fn bytes(&self) -> u64 {
        PAGE_SIZE << self.order
    }
}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// No allowed zone had a free block of the order (nor any allowed zone
    /// at all, e.g. `THISNODE` on a memoryless node).
    NoMemory,
    /// Order above [`MAX_ORDER`].
    InvalidOrder(u32),
    /// No such node.
    InvalidNode(u32),
    /// `DMA` and `DMA32` together.
    InvalidGfp(Gfp),
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::NoMemory => write!(f, "out of memory"),
            AllocError::InvalidOrder(o) => write!(f, "order {o} above {MAX_ORDER}"),
            AllocError::InvalidNode(n) => write!(f, "no node {n}"),
            AllocError::InvalidGfp(g) => write!(f, "bad flags {g}"),
        }
    }
}

/// Why the memory manager could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MmError {
    /// No node, or more than a [`NodeMask`] holds.
    Nodes(usize),
    /// No CPU.
    NoCpus,
    /// A zone's allocator could not be built.
    Zone {
        /// The node.
        nid: u32,
        /// The zone.
        zone: ZoneType,
        /// Why.
        error: BuildError,
    },
}

impl fmt::Display for MmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MmError::Nodes(n) => write!(f, "{n} nodes (1 to {} supported)", NodeMask::MAX_NODES),
            MmError::NoCpus => write!(f, "no CPUs"),
            MmError::Zone { nid, zone, error } => write!(f, "node {nid} zone {zone}: {error}"),
        }
    }
}

/// A guest frame run of one zone, for address lookups.
#[derive(Clone, Copy, Debug)]
struct FrameRun {
    start: u64,
    end: u64,
    nid: u32,
    zone: ZoneType,
}

/// The memory manager: every node, the CPU maps, the zonelists.
pub struct Mm {
    nodes: Vec<Node>,
    distances: Vec<u32>,
    nr_cpus: u32,
    cpu_to_node: Vec<u32>,
    cpu_to_mem: Vec<u32>,
    order: ZonelistOrder,
    order_choice: Option<OrderChoice>,
    runs: Vec<FrameRun>,
    /// Per vCPU (by [`crate::percpu::this_cpu`]): the CPU it acts as,
    /// itself unless inside [`Mm::with_cpu`].
    acting: Vec<AtomicU32>,
    /// Per CPU: the block reserved for it at boot ([`Mm::with_cpu_blocks`]).
    cpu_blocks: Vec<Option<Page>>,
    warn_on_failure: AtomicBool,
    failures: AtomicU64,
    warnings: Vec<String>,
}

impl Mm {
    /// Builds the memory manager: zones cut by machine address, one buddy
    /// allocator per zone over the free memory (every range minus
    /// `cfg.reserved`), zonelists for every node, the CPU maps. Problems
    /// that were worked around are in [`Mm::warnings`].
    pub fn new(cfg: MmConfig) -> Result<Mm, MmError> {
        Self::build(cfg, None)
    }

    /// [`Mm::new`], and for every CPU but CPU 0 (which boots on a stack of
    /// its own) one block of `2^order` pages taken before the allocator
    /// gets the memory, as Linux takes each CPU's first per-CPU chunk from
    /// memblock on the CPU's node: from the first zone of the CPU node's
    /// fallback list with room (its local memory node, `cpu_to_mem`, when
    /// that has room). The blocks are reserved pages, never managed
    /// ([`Mm::cpu_block`] says where); a CPU none fits has none.
    pub fn with_cpu_blocks(cfg: MmConfig, order: u32) -> Result<Mm, MmError> {
        Self::build(cfg, Some(order))
    }

    fn build(cfg: MmConfig, cpu_block_order: Option<u32>) -> Result<Mm, MmError> {
        let n = cfg.nodes.len();
        if n == 0 || n > NodeMask::MAX_NODES as usize {
            return Err(MmError::Nodes(n));
        }
        if cfg.nr_cpus == 0 {
            return Err(MmError::NoCpus);
        }
        let mut warnings = Vec::new();
        let distances = if cfg.distances.len() == n * n {
            cfg.distances.clone()
        } else {
            warnings.push(format!(
                "{} distances for {n} nodes: using {LOCAL_DISTANCE} local, {REMOTE_DISTANCE} remote",
                cfg.distances.len()
            ));
            (0..n * n)
                .map(|i| {
                    if i / n == i % n {
                        LOCAL_DISTANCE
                    } else {
                        REMOTE_DISTANCE
                    }
                })
                .collect()
        };

        // CPUs.
        let mut cpu_to_node = vec![NUMA_NO_NODE; cfg.nr_cpus as usize];
        for (nid, node) in cfg.nodes.iter().enumerate() {
            for &c in &node.cpus {
                match cpu_to_node.get_mut(c as usize) {
                    Some(slot) if *slot == NUMA_NO_NODE => *slot = nid as u32,
                    Some(slot) => warnings.push(format!(
                        "cpu {c} named by nodes {} and {nid}: kept on node {}",
                        *slot, *slot
                    )),
                    None => warnings.push(format!(
                        "node {nid} names cpu {c}, but there are {} CPUs: ignored",
                        cfg.nr_cpus
                    )),
                }
            }
        }
        for (c, slot) in cpu_to_node.iter_mut().enumerate() {
            if *slot == NUMA_NO_NODE {
                warnings.push(format!("cpu {c} is on no node: put on node 0"));
                *slot = 0;
            }
        }
        let mut node_cpus: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (c, &nid) in cpu_to_node.iter().enumerate() {
            node_cpus[nid as usize].push(c as u32);
        }

        // Memory: page-aligned pieces, one zone each, no overlaps.
        let mut pieces: Vec<(u64, u64, Maddr, u32, ZoneType)> = Vec::new();
        for (nid, node) in cfg.nodes.iter().enumerate() {
            for r in &node.memory {
                let end = r.gpa.0.saturating_add(r.size) & !(PAGE_SIZE - 1);
                let Some(start) = r.gpa.page_align_up().map(|g| g.0).filter(|&s| s < end) else {
                    continue;
                };
                let maddr = Maddr(r.maddr.0.wrapping_add(start - r.gpa.0));
                for p in split_by_machine(Gpa(start), end - start, maddr) {
                    let pages = p.size >> PAGE_SHIFT;
                    if pages > 0 {
                        pieces.push((p.gpa.0 >> PAGE_SHIFT, pages, p.maddr, nid as u32, p.zone));
                    }
                }
            }
        }
        pieces.sort_unstable_by_key(|p| p.0);
        let mut kept: Vec<(u64, u64, Maddr, u32, ZoneType)> = Vec::with_capacity(pieces.len());
        for p in pieces {
            match kept.last() {
                Some(q) if p.0 < q.0 + q.1 => warnings.push(format!(
                    "memory of node {} at gfn {:#x} overlaps node {}'s at gfn {:#x}: ignored",
                    p.3, p.0, q.3, q.0
                )),
                _ => kept.push(p),
            }
        }
        let reserved: Vec<(u64, u64)> = cfg
            .reserved
            .iter()
            .filter(|r| r.0 < r.1)
            .map(|&(s, e)| (s >> PAGE_SHIFT, e.div_ceil(PAGE_SIZE)))
            .collect();

        // Buddy allocators, per node and zone.
        let mut buddies: Vec<[Buddy; NR_ZONES]> = Vec::with_capacity(n);
        for nid in 0..n {
            let mk = |zt: ZoneType| -> Result<Buddy, MmError> {
                let spans: Vec<(Gfn, u64, Maddr)> = kept
                    .iter()
                    .filter(|p| p.3 == nid as u32 && p.4 == zt)
                    .map(|p| (Gfn(p.0), p.1, p.2))
                    .collect();
                let free: Vec<(u64, u64)> = spans
                    .iter()
                    .flat_map(|s| subtract((s.0 .0, s.0 .0 + s.1), &reserved))
                    .collect();
                Buddy::new(&spans, &free).map_err(|error| MmError::Zone {
                    nid: nid as u32,
                    zone: zt,
                    error,
                })
            };
            buddies.push([
                mk(ZoneType::Dma)?,
                mk(ZoneType::Dma32)?,
                mk(ZoneType::Normal)?,
            ]);
        }

        // Zonelists. Whether a zone is populated does not depend on what
        // is reserved; the default order's sizes are taken after the CPU
        // blocks, as Linux's are after memblock, and the lists rebuilt in
        // the (rare) case the blocks tipped the choice.
        let populated: Vec<[bool; NR_ZONES]> = buddies
            .iter()
            .map(|b| core::array::from_fn(|z| b[z].pages() > 0))
            .collect();
        let choose = |buddies: &[[Buddy; NR_ZONES]]| match cfg.order {
            None | Some(OrderChoice::Node) => ZonelistOrder::Node,
            Some(OrderChoice::Zone) => ZonelistOrder::Zone,
            Some(OrderChoice::Default) => default_zonelist_order(&zone_sizes(buddies, &node_cpus)),
        };
        let build_lists = |order| {
            build_all_zonelists(
                &ZonelistInput {
                    nr_nodes: n,
                    distances: &distances,
                    populated: &populated,
                    cpus: CpuPenalty::X86,
                },
                order,
            )
        };
        let mut order = choose(&buddies);
        let mut built = build_lists(order);
        let mut cpu_blocks: Vec<Option<Page>> = vec![None; cfg.nr_cpus as usize];
        if let Some(block_order) = cpu_block_order.filter(|&o| o <= MAX_ORDER) {
            for (cpu, slot) in cpu_blocks.iter_mut().enumerate().skip(1) {
                let nid = cpu_to_node[cpu] as usize;
                *slot = built.fallback[nid].refs().iter().find_map(|z| {
                    let b = &mut buddies[z.nid as usize][z.zone.index()];
                    let i = b.alloc(block_order)?;
                    b.reserve_allocated(i, block_order);
                    let (gfn, maddr) = b.gfn_maddr_of(i);
                    Some(Page {
                        gfn,
                        order: block_order,
                        nid: z.nid,
                        zone: z.zone,
                        maddr,
                    })
                });
            }
            let after = choose(&buddies);
            if after != order {
                order = after;
                built = build_lists(order);
            }
        }
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        for (nid, (nc, [dma, dma32, normal])) in cfg.nodes.iter().zip(buddies).enumerate() {
            let zone = |zt, b| Zone::new(nid as u32, zt, b, cfg.nr_cpus);
            nodes.push(Node {
                id: nid as u32,
                vnode: nc.vnode,
                cpus: core::mem::take(&mut node_cpus[nid]),
                zones: [
                    zone(ZoneType::Dma, dma),
                    zone(ZoneType::Dma32, dma32),
                    zone(ZoneType::Normal, normal),
                ],
                node_order: built.node_order[nid].clone(),
                zonelists: [built.fallback[nid].clone(), built.nofallback[nid].clone()],
                stats: NodeStats::default(),
            });
        }
        let cpu_to_mem = cpu_to_node
            .iter()
            .map(|&nid| local_memory_node(&nodes[nid as usize].zonelists[0], nid))
            .collect();

        let runs = kept
            .iter()
            .map(|p| FrameRun {
                start: p.0,
                end: p.0 + p.1,
                nid: p.3,
                zone: p.4,
            })
            .collect();
        Ok(Mm {
            nodes,
            distances,
            nr_cpus: cfg.nr_cpus,
            cpu_to_node,
            cpu_to_mem,
            order,
            order_choice: cfg.order,
            runs,
            acting: (0..cfg.nr_cpus).map(AtomicU32::new).collect(),
            cpu_blocks,
            warn_on_failure: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            warnings,
        })
    }

    /// Problems in the configuration that were worked around.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether failed allocations without [`Gfp::NOWARN`] print a report
    /// (on at boot, off in host tests).
    pub fn set_warn_on_failure(&self, on: bool) {
        self.warn_on_failure.store(on, Ordering::Relaxed);
    }

    /// Failed allocations so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    // ----- topology -----

    /// Every node, in id order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// One node.
    #[inline]
    pub fn node(&self, nid: u32) -> Option<&Node> {
        self.nodes.get(nid as usize)
    }

    /// Number of nodes (`nr_node_ids`).
    pub fn nr_nodes(&self) -> u32 {
        self.nodes.len() as u32
    }

    /// Nodes Linux would have online (CPUs or memory).
    pub fn nr_online_nodes(&self) -> usize {
        self.nodes.iter().filter(|n| n.online()).count()
    }

    /// `node_distance(a, b)` (0 for a node that does not exist).
    pub fn node_distance(&self, a: u32, b: u32) -> u32 {
        let n = self.nodes.len();
        if a as usize >= n || b as usize >= n {
            return 0;
        }
        self.distances[a as usize * n + b as usize]
    }

    /// Nodes with memory (`node_states[N_MEMORY]`).
    pub fn memory_nodes(&self) -> NodeMask {
        self.nodes
            .iter()
            .filter(|n| n.has_memory())
            .map(Node::id)
            .collect()
    }

    /// Nodes with CPUs (`node_states[N_CPU]`).
    pub fn cpu_nodes(&self) -> NodeMask {
        self.nodes
            .iter()
            .filter(|n| n.has_cpus())
            .map(Node::id)
            .collect()
    }

    /// Online nodes (`node_online_map`).
    pub fn online_nodes(&self) -> NodeMask {
        self.nodes
            .iter()
            .filter(|n| n.online())
            .map(Node::id)
            .collect()
    }

    /// The vCPUs (all of the domain's, running or not).
    pub const fn nr_cpus(&self) -> u32 {
        self.nr_cpus
    }

    /// `cpu_to_node(cpu)`; `NUMA_NO_NODE` for a CPU that does not exist.
    #[inline]
    pub fn cpu_to_node(&self, cpu: u32) -> u32 {
        self.cpu_to_node
            .get(cpu as usize)
            .copied()
            .unwrap_or(NUMA_NO_NODE)
    }

    /// `cpu_to_mem(cpu)`: the CPU's local memory node, the node of the first
    /// zone of its node's fallback list (the node itself if it has memory,
    /// in node order; its nearest node with memory if not).
    #[inline]
    pub fn cpu_to_mem(&self, cpu: u32) -> u32 {
        self.cpu_to_mem
            .get(cpu as usize)
            .copied()
            .unwrap_or(NUMA_NO_NODE)
    }

    /// The CPU this code runs on ([`crate::percpu::this_cpu`]), or the
    /// one it acts as inside [`Mm::with_cpu`].
    #[inline]
    pub fn current_cpu(&self) -> u32 {
        let me = crate::percpu::this_cpu();
        self.acting
            .get(me as usize)
            .map_or(me, |a| a.load(Ordering::Relaxed))
    }

    /// `numa_node_id()`: the current CPU's node.
    pub fn numa_node_id(&self) -> u32 {
        self.cpu_to_node(self.current_cpu())
    }

    /// `numa_mem_id()`: the current CPU's local memory node.
    #[inline]
    pub fn numa_mem_id(&self) -> u32 {
        self.cpu_to_mem(self.current_cpu())
    }

    /// Runs `f` as if on `cpu`: how tests act for a CPU without running on
    /// it (its node, its per-CPU lists, its local/other accounting). Only
    /// the calling vCPU acts as `cpu`; the others go on as themselves.
    /// `None` if there is no such CPU.
    pub fn with_cpu<R>(&self, cpu: u32, f: impl FnOnce(&Self) -> R) -> Option<R> {
        if cpu >= self.nr_cpus {
            return None;
        }
        let slot = self.acting.get(crate::percpu::this_cpu() as usize)?;
        let old = slot.swap(cpu, Ordering::Relaxed);
        let r = f(self);
        slot.store(old, Ordering::Relaxed);
        Some(r)
    }

    /// The block reserved for `cpu` at boot ([`Mm::with_cpu_blocks`]).
    pub fn cpu_block(&self, cpu: u32) -> Option<Page> {
        self.cpu_blocks.get(cpu as usize).copied().flatten()
    }

    /// Every block reserved for a CPU at boot, with its CPU.
    pub fn cpu_blocks(&self) -> impl Iterator<Item = (u32, Page)> + '_ {
        self.cpu_blocks
            .iter()
            .enumerate()
            .filter_map(|(c, p)| p.map(|p| (c as u32, p)))
    }

    /// The order of the fallback lists.
    pub const fn zonelist_order(&self) -> ZonelistOrder {
        self.order
    }

    /// What `numa_zonelist_order=` asked for.
    pub const fn zonelist_order_choice(&self) -> Option<OrderChoice> {
        self.order_choice
    }

    /// A node's zonelist (`NODE_DATA(nid)->node_zonelists[kind]`).
    #[inline]
    pub fn zonelist(&self, nid: u32, kind: ZonelistKind) -> Option<&Zonelist> {
        self.node(nid).map(|n| n.zonelist(kind))
    }

    /// `node_zonelist(nid, gfp)`: the no-fallback list with `THISNODE`.
    #[inline]
    pub fn node_zonelist(&self, nid: u32, gfp: Gfp) -> Option<&Zonelist> {
        let kind = if gfp.contains(Gfp::THISNODE) {
            ZonelistKind::NoFallback
        } else {
            ZonelistKind::Fallback
        };
        self.zonelist(nid, kind)
    }

    /// `vm_total_pages` at boot: managed pages of the zones in the boot
    /// CPU's node's fallback list (watermarks are 0 when Linux computes it).
    pub fn total_pages(&self) -> u64 {
        self.zonelist(self.cpu_to_node(0), ZonelistKind::Fallback)
            .map_or(0, |zl| {
                zl.refs().iter().map(|z| self.zone(*z).managed()).sum()
            })
    }

    /// A zone.
    #[inline]
    pub fn zone(&self, z: ZoneRef) -> &Zone {
        self.nodes[z.nid as usize].zone(z.zone)
    }

    /// A zone's counters.
    pub fn zone_info(&self, nid: u32, zone: ZoneType) -> Option<ZoneInfo> {
        self.node(nid).map(|n| n.zone(zone).info())
    }

    /// Every zone of every node.
    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.nodes.iter().flat_map(|n| n.zones.iter())
    }

    // ----- pages -----

    fn run_of(&self, gfn: Gfn) -> Option<&FrameRun> {
        let k = self.runs.partition_point(|r| r.end <= gfn.0);
        self.runs.get(k).filter(|r| r.start <= gfn.0)
    }

    /// The zone of a frame (`page_zone`), if any zone has it.
    pub fn page_zone(&self, gfn: Gfn) -> Option<ZoneRef> {
        self.run_of(gfn).map(|r| ZoneRef {
            nid: r.nid,
            zone: r.zone,
        })
    }

    /// The node of a frame (`page_to_nid`).
    pub fn page_to_nid(&self, gfn: Gfn) -> Option<u32> {
        self.run_of(gfn).map(|r| r.nid)
    }

    /// The machine address of a frame.
    pub fn page_maddr(&self, gfn: Gfn) -> Option<Maddr> {
        self.page_zone(gfn).and_then(|z| self.zone(z).maddr_of(gfn))
    }

    /// What the allocator says a frame is (the first page of a block:
    /// free, allocated, on a per-CPU list, reserved; `Tail` inside one).
    pub fn page_state(&self, gfn: Gfn) -> Option<(PageState, u32)> {
        self.page_zone(gfn)
            .and_then(|z| self.zone(z).page_state(gfn))
    }

    // ----- allocation -----

    /// Linux's `__alloc_pages(gfp, order, preferred_nid, nodemask)`, the
    /// entry point every other allocation goes through: walks
    /// `preferred_nid`'s zonelist (its no-fallback list with `THISNODE`),
    /// skipping zones above the flags' zone modifier and nodes outside
    /// `nodemask`, and takes the first zone that has a block of `order`
    /// (order 0 through the current CPU's per-CPU list). If none has, the
    /// per-CPU lists of those zones are drained and the walk is tried once
    /// more. Counted with `zone_statistics` against the preferred zone (the
    /// first zone of the walk) and `numa_node_id()`.
    pub fn __alloc_pages(
        &self,
        gfp: Gfp,
        order: u32,
        preferred_nid: u32,
        nodemask: Option<&NodeMask>,
    ) -> Result<Page, AllocError> {
        self.alloc_inline(gfp, order, preferred_nid, nodemask)
    }

    /// [`Mm::__alloc_pages`], inlined into the callers of the hot entry
    /// points (a `Page` returned through memory from a call costs more than
    /// the fast path itself).
    #[inline(always)]
    fn alloc_inline(
        &self,
        gfp: Gfp,
        order: u32,
        preferred_nid: u32,
        nodemask: Option<&NodeMask>,
    ) -> Result<Page, AllocError> {
        let r = self.try_alloc(gfp, order, preferred_nid, nodemask);
        if let Err(e) = r {
            self.alloc_failed(gfp, order, preferred_nid, nodemask, e);
        }
        r
    }

    /// Counts a failed allocation and reports it (`warn_alloc`).
    #[cold]
    #[inline(never)]
    fn alloc_failed(
        &self,
        gfp: Gfp,
        order: u32,
        preferred_nid: u32,
        nodemask: Option<&NodeMask>,
        e: AllocError,
    ) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if self.warn_on_failure.load(Ordering::Relaxed) && !gfp.contains(Gfp::NOWARN) {
            let mask = nodemask.map_or(String::from("(null)"), |m| format!("{m}"));
            crate::println!(
                "guest: page allocation failure: order:{order}, mode:{:#x}({gfp}), nodemask={mask}, node {preferred_nid}, cpu {}: {e}",
                gfp.bits(),
                self.current_cpu()
            );
        }
    }

    #[inline(always)]
    fn try_alloc(
        &self,
        gfp: Gfp,
        order: u32,
        preferred_nid: u32,
        nodemask: Option<&NodeMask>,
    ) -> Result<Page, AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::InvalidOrder(order));
        }
        let highest = gfp.zone().ok_or(AllocError::InvalidGfp(gfp))?;
        let zl = self
            .node_zonelist(preferred_nid, gfp)
            .ok_or(AllocError::InvalidNode(preferred_nid))?;
        let preferred = zl
            .first_zone(highest, nodemask)
            .ok_or(AllocError::NoMemory)?;
        let cpu = self.current_cpu();
        let local = self.cpu_to_node(cpu);
        // Fast path: the preferred zone is the first of the walk (for order
        // 0 usually a hit on the current CPU's per-CPU list).
        if let Some(p) = self.rmqueue(preferred, cpu, order, preferred.nid, local) {
            return Ok(p);
        }
        self.alloc_rest(zl, highest, nodemask, cpu, order, preferred.nid, local)
    }

    /// The rest of the walk after the preferred zone, then the slow path's
    /// `drain_all_pages` and one more walk before giving up.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn alloc_rest(
        &self,
        zl: &Zonelist,
        highest: ZoneType,
        nodemask: Option<&NodeMask>,
        cpu: u32,
        order: u32,
        preferred: u32,
        local: u32,
    ) -> Result<Page, AllocError> {
        for z in zl.allowed(highest, nodemask).skip(1) {
            if let Some(p) = self.rmqueue(z, cpu, order, preferred, local) {
                return Ok(p);
            }
        }
        let mut drained = 0;
        for z in zl.allowed(highest, nodemask) {
            if self.zone(z).has_pcp_pages() {
                drained += self.zone(z).drain(None);
            }
        }
        if drained > 0 {
            for z in zl.allowed(highest, nodemask) {
                if let Some(p) = self.rmqueue(z, cpu, order, preferred, local) {
                    return Ok(p);
                }
            }
        }
        Err(AllocError::NoMemory)
    }

    /// `rmqueue` from zone `z`, counted with `zone_statistics` (the page's
    /// node's counters under the zone lock, `numa_foreign` on the preferred
    /// node on a miss).
    #[inline(always)]
    fn rmqueue(
        &self,
        z: ZoneRef,
        cpu: u32,
        order: u32,
        preferred: u32,
        local: u32,
    ) -> Option<Page> {
        let (gfn, maddr) = self.zone(z).rmqueue(cpu, order, preferred, local)?;
        if z.nid != preferred {
            self.nodes[preferred as usize]
                .stats
                .add(NumaStat::Foreign, 1);
        }
        Some(Page {
            gfn,
            order,
            nid: z.nid,
            zone: z.zone,
            maddr,
        })
    }

    /// `alloc_pages_node(nid, gfp, order)`: prefers `nid` (the current
    /// CPU's local memory node for [`NUMA_NO_NODE`]).
    #[inline]
    pub fn alloc_pages_node(&self, nid: u32, gfp: Gfp, order: u32) -> Result<Page, AllocError> {
        let nid = if nid == NUMA_NO_NODE {
            self.numa_mem_id()
        } else {
            nid
        };
        self.alloc_inline(gfp, order, nid, None)
    }

    /// `alloc_pages(gfp, order)` with the default (local) policy: prefers
    /// the current CPU's node (`numa_node_id()`; its zonelist leads a
    /// memoryless node's CPUs to the nearest memory).
    pub fn alloc_pages(&self, gfp: Gfp, order: u32) -> Result<Page, AllocError> {
        self.__alloc_pages(gfp, order, self.numa_node_id(), None)
    }

    /// `free_pages(addr, order)`: frees the block of `order` that starts at
    /// `gpa` (order 0 onto the current CPU's per-CPU list).
    pub fn free_pages(&self, gpa: Gpa, order: u32) -> Result<(), FreeError> {
        if !gpa.is_page_aligned() {
            return Err(FreeError::NotAllocated(gpa));
        }
        let z = self
            .page_zone(gpa.frame())
            .ok_or(FreeError::NotManaged(gpa))?;
        self.zone(z).free(self.current_cpu(), gpa.frame(), order)
    }

    /// `__free_pages(page, order)` for a block [`Mm::alloc_pages`] returned.
    /// The zone the page says it came from is tried first (zones do not
    /// overlap, so if it has the frame it is the frame's zone); the frame
    /// is looked up as [`Mm::free_pages`] does if not.
    #[inline]
    pub fn free(&self, page: Page) -> Result<(), FreeError> {
        if let Some(node) = self.nodes.get(page.nid as usize) {
            // A frame of a zone is below 2^52, so `page.gpa()` does not wrap
            // and its frame is `page.gfn`.
            let cpu = self.current_cpu();
            if let Some(r) = node.zone(page.zone).free_if_here(cpu, page.gfn, page.order) {
                return r;
            }
        }
        self.free_pages(page.gpa(), page.order)
    }

    /// `drain_all_pages(NULL)`: every per-CPU list back to the free lists;
    /// the number of pages.
    pub fn drain_all_pages(&self) -> u64 {
        self.zones().map(|z| z.drain(None)).sum()
    }

    /// `drain_local_pages`: the current CPU's lists, every zone.
    pub fn drain_local_pages(&self) -> u64 {
        let cpu = self.current_cpu();
        self.zones().map(|z| z.drain(Some(cpu))).sum()
    }

    // ----- counters -----

    /// A node's numastat counters.
    pub fn numa_stats(&self, nid: u32) -> Option<NumaStats> {
        self.node(nid).map(Node::numa_stats)
    }

    /// Every node's counters, in node order.
    pub fn all_numa_stats(&self) -> Vec<NumaStats> {
        self.nodes.iter().map(Node::numa_stats).collect()
    }

    /// `__count_numa_event(zone, item)` on node `nid` (ignored for a node
    /// that does not exist).
    pub fn count_numa_event(&self, nid: u32, stat: NumaStat) {
        if let Some(n) = self.node(nid) {
            n.stats.add(stat, 1);
        }
    }

    /// The interleave hook: after an interleaved allocation that wanted
    /// node `nid`, counts `interleave_hit` on the page's node if the page
    /// is there (Linux's `alloc_pages_mpol`); returns whether it counted.
    pub fn count_interleave_hit(&self, page: &Page, nid: u32) -> bool {
        let hit = page.nid == nid;
        if hit {
            self.count_numa_event(nid, NumaStat::InterleaveHit);
        }
        hit
    }

    /// Checks every zone's invariants (see `Zone::check`); every problem.
    pub fn check(&self) -> Vec<String> {
        self.zones().flat_map(Zone::check).collect()
    }
}

/// Per online node (CPUs or memory): present and managed pages of each
/// zone.
fn zone_sizes(buddies: &[[Buddy; NR_ZONES]], cpus: &[Vec<u32>]) -> Vec<[ZoneSizes; NR_ZONES]> {
    buddies
        .iter()
        .zip(cpus)
        .filter(|(b, c)| !c.is_empty() || b.iter().any(|z| z.pages() > 0))
        .map(|(b, _)| {
            core::array::from_fn(|z| ZoneSizes {
                present: b[z].pages(),
                managed: b[z].nr_free(),
            })
        })
        .collect()
}

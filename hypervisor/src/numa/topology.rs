//! The machine topology: nodes with their memory and CPUs, and distances.
//!
//! [`build`] follows Linux x86 (`arch/x86/mm/srat.c`, `drivers/acpi/numa/
//! srat.c`, `mm/numa.c`) so that node N here is node N in Linux on the same
//! machine, and so that a table Linux would refuse is refused here too. Broken
//! tables never stop the boot: each problem is one warning line and a safe
//! shape (one node holding everything) that is correct, merely not NUMA-aware.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use super::{fake, CpuId, NodeId, LOCAL_DISTANCE, MAX_NODES, REMOTE_DISTANCE};
use crate::acpi::{Madt, Slit, Srat};
use crate::mm::addr::{Maddr, MemRange};

/// Most CPUs the hypervisor brings up; the rest are ignored with a warning.
pub const MAX_CPUS: usize = 256;
/// `acpi_id` of a CPU the MADT does not describe (no MADT, or a boot CPU
/// missing from it).
pub const ACPI_ID_UNKNOWN: u32 = u32::MAX;
/// RAM outside every SRAT memory range that is still tolerated. Linux
/// (`numa_meminfo_cover_memory`) gives up on the SRAT from 1 MiB on; below
/// that it is rounding noise (BIOS areas, partial pages).
pub const MAX_UNCOVERED_RAM: u64 = 1 << 20;

/// One node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: NodeId,
    /// The firmware's proximity domain (for a fake node, its physical node's).
    pub pxm: u32,
    /// RAM present on the node: SRAT ranges ∩ usable RAM, page-aligned,
    /// sorted, merged. May be empty (memoryless node).
    pub memory: Vec<MemRange>,
    /// SRAT hot-pluggable ranges, as the firmware gave them (informational;
    /// present RAM in them is also in `memory`).
    pub hotplug: Vec<MemRange>,
    /// CPUs on the node, ascending.
    pub cpus: Vec<CpuId>,
}

/// One logical CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuInfo {
    pub id: CpuId,
    pub apic_id: u32,
    /// ACPI processor id / UID, or [`ACPI_ID_UNKNOWN`].
    pub acpi_id: u32,
    pub node: NodeId,
    pub core: u32,
    pub socket: u32,
}

/// Where the topology came from, for the boot log and for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologySource {
    /// The SRAT (and SLIT, if valid).
    Firmware,
    /// No SRAT: one node.
    NoSrat,
    /// The SRAT was rejected: one node.
    Fallback,
    /// `numa=off`: one node.
    NumaOff,
    /// `numa=fake=N` over the physical topology; `nodes` is how many
    /// fake nodes were made (can be fewer than asked).
    Fake { nodes: usize },
}

/// The machine's NUMA topology. Indexes are ids: `nodes[i].id == NodeId(i)`,
/// `cpus[i].id == CpuId(i)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub nodes: Vec<NodeInfo>,
    pub cpus: Vec<CpuInfo>,
    /// `nr_nodes() * nr_nodes()`, row-major, diagonal 10.
    distances: Vec<u8>,
    pub source: TopologySource,
}

/// How an APIC id splits into SMT thread, core and socket (from CPUID leaf
/// 0xB/0x8000_001E on the boot CPU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApicIdLayout {
    pub smt_bits: u32,
    pub core_bits: u32,
}

impl ApicIdLayout {
    /// `(apic >> smt_bits) & ((1 << core_bits) - 1)`; shifts of 32 or more
    /// give 0 rather than overflowing.
    pub fn core(&self, apic_id: u32) -> u32 {
        let shifted = apic_id.checked_shr(self.smt_bits).unwrap_or(0);
        let mask = 1u64.checked_shl(self.core_bits).map_or(u64::MAX, |m| m - 1);
        (u64::from(shifted) & mask) as u32
    }

    /// `apic >> (smt_bits + core_bits)`.
    pub fn socket(&self, apic_id: u32) -> u32 {
        let bits = self.smt_bits.saturating_add(self.core_bits);
        apic_id.checked_shr(bits).unwrap_or(0)
    }
}

/// The NUMA part of the hypervisor command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NumaOptions {
    /// `numa=off`: one node, whatever the tables say.
    pub off: bool,
    /// `numa=fake=N`: split memory into N emulated nodes (see `fake`).
    pub fake: Option<u32>,
}

/// Everything [`build`] reads. Tables are the raw bytes fetched by
/// `acpi::AcpiTables::find`; `None` means the firmware has no such table.
#[derive(Clone, Copy, Debug)]
pub struct TopologyInput<'a> {
    /// Usable RAM from the boot memory map (any order, may overlap).
    pub ram: &'a [MemRange],
    pub srat: Option<&'a [u8]>,
    pub slit: Option<&'a [u8]>,
    pub madt: Option<&'a [u8]>,
    /// APIC id of the CPU running the boot code: it becomes CPU 0.
    pub bsp_apic_id: u32,
    pub apic_id_layout: ApicIdLayout,
    pub options: NumaOptions,
}

impl Topology {
    /// Assembles a topology from parts; `distances` must be `n * n`.
    pub(crate) fn from_parts(
        nodes: Vec<NodeInfo>,
        cpus: Vec<CpuInfo>,
        distances: Vec<u8>,
        source: TopologySource,
    ) -> Topology {
        debug_assert_eq!(distances.len(), nodes.len() * nodes.len());
        Topology {
            nodes,
            cpus,
            distances,
            source,
        }
    }

    pub fn nr_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Distance from `a` to `b`. Unknown nodes get Linux's defaults (10 to
    /// itself, 20 otherwise) rather than a panic.
    pub fn distance(&self, a: NodeId, b: NodeId) -> u8 {
        let n = self.nr_nodes();
        let (i, j) = (a.index(), b.index());
        if i < n && j < n {
            if let Some(&d) = self.distances.get(i * n + j) {
                return d;
            }
        }
        if a == b {
            LOCAL_DISTANCE
        } else {
            REMOTE_DISTANCE
        }
    }

    /// The distance matrix, row-major, `nr_nodes()` squared.
    pub fn distances(&self) -> &[u8] {
        &self.distances
    }

    pub fn node(&self, n: NodeId) -> Option<&NodeInfo> {
        self.nodes.get(n.index())
    }

    /// The node whose RAM holds `a`, if any.
    pub fn node_of(&self, a: Maddr) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|n| n.memory.iter().any(|r| r.contains(a)))
            .map(|n| n.id)
    }

    pub fn cpu_node(&self, c: CpuId) -> Option<NodeId> {
        self.cpus.get(c.index()).map(|c| c.node)
    }

    /// `n` first, then every other node by increasing distance from `n`,
    /// ties by node id: the order an allocation on `n` falls back in. An
    /// unknown `n` gets all nodes in id order.
    pub fn fallback_order(&self, n: NodeId) -> Vec<NodeId> {
        let mut others: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|x| x.id)
            .filter(|&x| x != n)
            .collect();
        if n.index() >= self.nr_nodes() {
            return others;
        }
        others.sort_by_key(|&m| (self.distance(n, m), m));
        let mut order = Vec::with_capacity(others.len() + 1);
        order.push(n);
        order.extend(others);
        order
    }

    /// Bytes of RAM on node `n` (0 for an unknown node).
    pub fn memory_bytes(&self, n: NodeId) -> u64 {
        self.node(n)
            .map_or(0, |n| n.memory.iter().map(MemRange::len).sum())
    }
}

/// Sorts ranges, drops empty ones and merges overlapping or touching ones.
pub(crate) fn normalize(ranges: impl IntoIterator<Item = MemRange>) -> Vec<MemRange> {
    let mut v: Vec<MemRange> = ranges.into_iter().filter(|r| !r.is_empty()).collect();
    v.sort();
    let mut out: Vec<MemRange> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The whole pages of normalized ranges.
fn page_align(ranges: &[MemRange]) -> Vec<MemRange> {
    ranges
        .iter()
        .map(MemRange::pages_within)
        .filter(|r| !r.is_empty())
        .collect()
}

/// The whole RAM pages (`ram_pages`, page-aligned) whose first byte lies in
/// `ranges` (normalized). A page that SRAT ranges of two nodes split goes
/// to the node of its first byte, as Linux's `early_pfn_to_nid` finds it,
/// instead of being lost to both; ranges disjoint in bytes stay disjoint.
fn pages_by_first_byte(ranges: &[MemRange], ram_pages: &[MemRange]) -> Vec<MemRange> {
    let rounded = normalize(
        ranges
            .iter()
            .map(|r| MemRange::new(r.start.page_ceil(), r.end.page_ceil())),
    );
    normalize(intersect(&rounded, ram_pages))
}

/// `a - b` for normalized range lists.
fn subtract(a: &[MemRange], b: &[MemRange]) -> Vec<MemRange> {
    let mut out = Vec::new();
    for r in a {
        let mut cur = r.start;
        for s in b.iter().filter(|s| s.overlaps(r)) {
            if s.start > cur {
                out.push(MemRange::new(cur, s.start));
            }
            cur = cur.max(s.end);
        }
        if cur < r.end {
            out.push(MemRange::new(cur, r.end));
        }
    }
    out
}

/// `a ∩ b` for normalized range lists.
pub(crate) fn intersect(a: &[MemRange], b: &[MemRange]) -> Vec<MemRange> {
    let mut out = Vec::new();
    for r in a {
        for s in b.iter().filter(|s| s.overlaps(r)) {
            out.push(r.intersect(s));
        }
    }
    out
}

/// Builds the topology. Every problem is reported through `warn`, one line
/// each, and answered with the safe shape described on [`TopologySource`].
pub fn build(input: &TopologyInput, warn: &mut dyn FnMut(&str)) -> Topology {
    let cpus = collect_cpus(input, warn);
    let ram = normalize(input.ram.iter().copied());
    let layout = input.apic_id_layout;
    let phys = if input.options.off {
        single_node(&ram, &cpus, layout, TopologySource::NumaOff)
    } else if let Some(srat) = input.srat {
        match from_srat(srat, input.slit, &ram, &cpus, layout, warn) {
            Ok(t) => t,
            Err(reason) => {
                warn(&format!("NUMA: SRAT rejected ({reason}); one node"));
                single_node(&ram, &cpus, layout, TopologySource::Fallback)
            }
        }
    } else {
        warn("NUMA: no SRAT: one node");
        single_node(&ram, &cpus, layout, TopologySource::NoSrat)
    };
    match input.options.fake {
        Some(_) if input.options.off => {
            warn("NUMA: numa=fake ignored with numa=off");
            phys
        }
        Some(n) => fake::emulate(&phys, n, warn),
        None => phys,
    }
}

/// A CPU before it has a node: (APIC id, ACPI id).
type RawCpu = (u32, u32);

/// The CPU list, Linux-style: enabled MADT processors in table order with
/// the boot CPU as CPU 0. Disabled but online-capable entries are hot-plug
/// slots, not CPUs. Ids 0xFF (xAPIC) and 0xFFFF_FFFF (x2APIC) mean "no
/// processor" and are skipped silently, as Linux does. A malformed MADT is
/// not trusted at all (Linux disables ACPI for it): only the boot CPU runs.
fn collect_cpus(input: &TopologyInput, warn: &mut dyn FnMut(&str)) -> Vec<RawCpu> {
    let bsp = input.bsp_apic_id;
    let mut list: Vec<RawCpu> = Vec::new();
    let mut madt_ok = false;
    match input.madt.map(Madt::parse) {
        None => warn("MADT: none; only the boot CPU"),
        Some(Err(e)) => warn(&format!("MADT: rejected ({e}); only the boot CPU")),
        Some(Ok(m)) => {
            for w in &m.warnings {
                warn(w);
            }
            if m.malformed {
                warn("MADT: malformed; only the boot CPU");
            } else {
                madt_ok = true;
                let mut seen = BTreeSet::new();
                for c in &m.cpus {
                    let invalid = if c.x2apic {
                        c.apic_id == u32::MAX
                    } else {
                        c.apic_id == 0xFF
                    };
                    // The boot CPU is running whatever its flags say.
                    if invalid || (!c.enabled && c.apic_id != bsp) {
                        continue;
                    }
                    if !seen.insert(c.apic_id) {
                        warn(&format!(
                            "MADT: duplicate APIC id {:#x} (ACPI id {}); ignored",
                            c.apic_id, c.acpi_id
                        ));
                        continue;
                    }
                    list.push((c.apic_id, c.acpi_id));
                }
            }
        }
    }
    match list.iter().position(|c| c.0 == bsp) {
        Some(i) => {
            let b = list.remove(i);
            list.insert(0, b);
        }
        None => {
            if madt_ok {
                warn(&format!(
                    "MADT: boot CPU (APIC id {bsp:#x}) not listed; added as CPU 0"
                ));
            }
            list.insert(0, (bsp, ACPI_ID_UNKNOWN));
        }
    }
    if list.len() > MAX_CPUS {
        warn(&format!(
            "MADT: {} CPUs; only the first {MAX_CPUS} are used",
            list.len()
        ));
        list.truncate(MAX_CPUS);
    }
    list
}

fn cpu_infos(cpus: &[RawCpu], nodes: &[NodeId], layout: ApicIdLayout) -> Vec<CpuInfo> {
    cpus.iter()
        .zip(nodes)
        .enumerate()
        .map(|(i, (&(apic_id, acpi_id), &node))| CpuInfo {
            id: CpuId(i as u32),
            apic_id,
            acpi_id,
            node,
            core: layout.core(apic_id),
            socket: layout.socket(apic_id),
        })
        .collect()
}

/// One node (pxm 0) with all RAM and all CPUs.
fn single_node(
    ram: &[MemRange],
    cpus: &[RawCpu],
    layout: ApicIdLayout,
    source: TopologySource,
) -> Topology {
    let node = NodeInfo {
        id: NodeId(0),
        pxm: 0,
        memory: page_align(ram),
        hotplug: Vec::new(),
        cpus: (0..cpus.len() as u32).map(CpuId).collect(),
    };
    let cpus = cpu_infos(cpus, &vec![NodeId(0); cpus.len()], layout);
    Topology::from_parts(vec![node], cpus, vec![LOCAL_DISTANCE], source)
}

/// The SRAT topology, or why the SRAT cannot be used.
fn from_srat(
    srat_bytes: &[u8],
    slit: Option<&[u8]>,
    ram: &[MemRange],
    cpus: &[RawCpu],
    layout: ApicIdLayout,
    warn: &mut dyn FnMut(&str),
) -> Result<Topology, alloc::string::String> {
    let srat = Srat::parse(srat_bytes).map_err(|e| format!("{e}"))?;
    for w in &srat.warnings {
        warn(w);
    }
    if srat.malformed {
        return Err("malformed SRAT".into());
    }

    // Node ids: enabled processor entries name pxms first, in table order;
    // then enabled, non-empty memory entries (hot-pluggable ones included)
    // name the rest. Disabled and zero-length entries (QEMU pads the table
    // with such entries, all pxm 0) never claim an id.
    let mut pxms: Vec<u32> = Vec::new();
    let mut claim = |pxm: u32| -> Result<usize, alloc::string::String> {
        if let Some(i) = pxms.iter().position(|&p| p == pxm) {
            return Ok(i);
        }
        if pxms.len() >= MAX_NODES {
            return Err(format!("more than {MAX_NODES} proximity domains"));
        }
        pxms.push(pxm);
        Ok(pxms.len() - 1)
    };
    let mut apic_node: BTreeMap<u32, usize> = BTreeMap::new();
    for c in srat.cpus().filter(|c| c.enabled) {
        let node = claim(c.pxm)?;
        // A repeated APIC id: the later entry wins, as in Linux.
        if let Some(old) = apic_node.insert(c.apic_id, node) {
            if old != node {
                warn(&format!(
                    "SRAT: APIC id {:#x} listed in two proximity domains; using pxm {}",
                    c.apic_id, c.pxm
                ));
            }
        }
    }
    let mut mems: Vec<(MemRange, usize, bool)> = Vec::new();
    for m in srat.memory().filter(|m| m.enabled && m.length != 0) {
        let node = claim(m.pxm)?;
        mems.push((
            MemRange::from_base_len(m.base, m.length),
            node,
            m.hotpluggable,
        ));
    }
    if mems.is_empty() {
        // Linux: no parsed memory affinity, no SRAT NUMA.
        return Err("no enabled memory affinity entry".into());
    }
    let nr = pxms.len();

    // Overlaps between different nodes make "which node owns this byte"
    // unanswerable. Sweep in address order, remembering the range reaching
    // furthest: if any range overlaps one of another node, the first such
    // overlap also overlaps that furthest range, whose node must differ.
    let mut sorted = mems.clone();
    sorted.sort_by_key(|m| (m.0.start, m.0.end));
    let mut reach: Option<(MemRange, usize)> = None;
    for &(r, node, _) in &sorted {
        if let Some((far, far_node)) = reach {
            if r.start < far.end && node != far_node {
                return Err(format!(
                    "memory {r} of pxm {} overlaps {far} of pxm {}",
                    pxm_of(&pxms, node),
                    pxm_of(&pxms, far_node)
                ));
            }
        }
        if reach.is_none_or(|(far, _)| r.end > far.end) {
            reach = Some((r, node));
        }
    }

    // Each node's RAM: its ranges ∩ usable RAM.
    let mut raw: Vec<Vec<MemRange>> = vec![Vec::new(); nr];
    let mut hotplug: Vec<Vec<MemRange>> = vec![Vec::new(); nr];
    for &(r, node, hp) in &mems {
        if let Some(v) = raw.get_mut(node) {
            v.extend(intersect(&[r], ram));
        }
        if hp {
            if let Some(v) = hotplug.get_mut(node) {
                v.push(r);
            }
        }
    }
    let covered = normalize(mems.iter().map(|m| m.0));
    let uncovered = subtract(ram, &covered);
    let missing: u64 = uncovered.iter().map(MemRange::len).sum();
    if missing >= MAX_UNCOVERED_RAM {
        let total: u64 = ram.iter().map(MemRange::len).sum();
        return Err(format!(
            "SRAT ranges leave {missing:#x} of {total:#x} bytes of RAM outside any node"
        ));
    }
    // Under 1 MiB of RAM outside every range: give each piece to the node of
    // the nearest SRAT range (smallest gap; on a tie, the range below), so
    // it stays usable and is merged with that node's neighbouring RAM.
    // (Linux leaves it without a node and warns; a hypervisor heap wants
    // every page owned.) Reported once node ids are final.
    let mut pieces: Vec<(MemRange, usize)> = Vec::new();
    for piece in &uncovered {
        let gap = |r: &MemRange| {
            if piece.end <= r.start {
                (r.start.0 - piece.end.0, 1)
            } else {
                (piece.start.0.saturating_sub(r.end.0), 0)
            }
        };
        if let Some(&(_, node, _)) = sorted.iter().min_by_key(|m| gap(&m.0)) {
            pieces.push((*piece, node));
            if let Some(v) = raw.get_mut(node) {
                v.push(*piece);
            }
        }
    }
    let ram_pages = page_align(ram);
    let memory: Vec<Vec<MemRange>> = raw
        .iter()
        .map(|v| pages_by_first_byte(&normalize(v.iter().copied()), &ram_pages))
        .collect();

    // A pxm that ends up with neither RAM nor a CPU (named only by a CPU
    // entry for a CPU the MADT does not bring up, by memory outside RAM or
    // not present yet) gets no node: Linux keeps it offline, and an empty
    // node could never be described to a guest. The others keep their
    // order, renumbered densely.
    let mut has_cpu = vec![false; nr];
    for (apic, _) in cpus {
        if let Some(x) = apic_node.get(apic).and_then(|&n| has_cpu.get_mut(n)) {
            *x = true;
        }
    }
    let mut new_id: Vec<Option<usize>> = vec![None; nr];
    let mut kept: Vec<usize> = Vec::with_capacity(nr);
    for i in 0..nr {
        let empty = memory.get(i).is_none_or(Vec::is_empty);
        if empty && !has_cpu.get(i).copied().unwrap_or(false) {
            warn(&format!(
                "SRAT: pxm {} has neither CPUs nor memory; it gets no node (Linux leaves it offline)",
                pxm_of(&pxms, i)
            ));
        } else {
            if let Some(x) = new_id.get_mut(i) {
                *x = Some(kept.len());
            }
            kept.push(i);
        }
    }
    if kept.is_empty() {
        // Every CPU sits on a node or has no entry; it cannot come to this
        // with a boot CPU, but a table is not trusted to prove it.
        return Err("no proximity domain has CPUs or memory".into());
    }
    let node_of = |old: usize| new_id.get(old).copied().flatten();
    for (piece, old) in pieces {
        match node_of(old) {
            Some(n) => warn(&format!(
                "SRAT: RAM {piece} is in no memory range; given to node {n}"
            )),
            None => warn(&format!(
                "SRAT: RAM {piece} is in no memory range and holds no whole page; left out"
            )),
        }
    }
    let kept_pxms: Vec<u32> = kept.iter().map(|&i| pxm_of(&pxms, i)).collect();

    let distances = slit_distances(slit, &kept_pxms, warn);

    let cpu_nodes: Vec<NodeId> = cpus
        .iter()
        .enumerate()
        .map(
            |(i, &(apic, _))| match apic_node.get(&apic).and_then(|&n| node_of(n)) {
                Some(n) => NodeId(n as u8),
                None => {
                    warn(&format!(
                        "SRAT: CPU {i} (APIC id {apic:#x}) has no affinity entry; node 0"
                    ));
                    NodeId(0)
                }
            },
        )
        .collect();
    let cpus = cpu_infos(cpus, &cpu_nodes, layout);
    let nodes = kept
        .iter()
        .enumerate()
        .map(|(id, &old)| NodeInfo {
            id: NodeId(id as u8),
            pxm: pxm_of(&pxms, old),
            memory: memory.get(old).cloned().unwrap_or_default(),
            hotplug: normalize(hotplug.get(old).into_iter().flatten().copied()),
            cpus: cpus
                .iter()
                .filter(|c| c.node.index() == id)
                .map(|c| c.id)
                .collect(),
        })
        .collect();
    Ok(Topology::from_parts(
        nodes,
        cpus,
        distances,
        TopologySource::Firmware,
    ))
}

fn pxm_of(pxms: &[u32], node: usize) -> u32 {
    pxms.get(node).copied().unwrap_or(0)
}

/// The node distance matrix: from the SLIT if it is valid for these pxms
/// (Linux's `slit_valid()` plus a size check), else 10 local / 20 remote.
/// A missing SLIT is normal (QEMU gives none without `-numa dist`).
fn slit_distances(slit: Option<&[u8]>, pxms: &[u32], warn: &mut dyn FnMut(&str)) -> Vec<u8> {
    let n = pxms.len();
    let mut d = vec![REMOTE_DISTANCE; n * n];
    for i in 0..n {
        if let Some(x) = d.get_mut(i * n + i) {
            *x = LOCAL_DISTANCE;
        }
    }
    let Some(bytes) = slit else {
        return d;
    };
    let slit = match Slit::parse(bytes) {
        Ok(s) => s,
        Err(e) => {
            warn(&format!("SLIT: rejected ({e}); default distances"));
            return d;
        }
    };
    let max_pxm = pxms.iter().copied().max().unwrap_or(0);
    let count = slit.localities();
    if (count as u64) < u64::from(max_pxm) + 1 {
        warn(&format!(
            "SLIT: {count} localities but pxm {max_pxm} is in use; default distances"
        ));
        return d;
    }
    for (k, &v) in slit.matrix().iter().enumerate() {
        let (i, j) = (k / count, k % count);
        let bad = if i == j {
            v != LOCAL_DISTANCE
        } else {
            v <= LOCAL_DISTANCE
        };
        if bad {
            warn(&format!(
                "SLIT: distance {v} from locality {i} to {j} is invalid; default distances"
            ));
            return d;
        }
    }
    for (a, &pa) in pxms.iter().enumerate() {
        for (b, &pb) in pxms.iter().enumerate() {
            if let (Some(v), Some(x)) = (slit.distance(pa, pb), d.get_mut(a * n + b)) {
                *x = v;
            }
        }
    }
    d
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use acpi_numa::build::{slit, MadtBuilder, SratBuilder, MEM_ENABLED, MEM_HOTPLUG};
    use alloc::string::String;
    use proptest::prelude::*;

    pub(crate) const MIB: u64 = 1 << 20;

    pub(crate) fn r(start: u64, end: u64) -> MemRange {
        MemRange::new(Maddr(start), Maddr(end))
    }

    pub(crate) fn run(input: &TopologyInput) -> (Topology, Vec<String>) {
        let mut w = Vec::new();
        let t = build(input, &mut |s: &str| w.push(String::from(s)));
        check_consistent(&t, input.ram);
        (t, w)
    }

    pub(crate) fn input<'a>(
        ram: &'a [MemRange],
        srat: Option<&'a [u8]>,
        slit: Option<&'a [u8]>,
        madt: Option<&'a [u8]>,
    ) -> TopologyInput<'a> {
        TopologyInput {
            ram,
            srat,
            slit,
            madt,
            bsp_apic_id: 0,
            apic_id_layout: ApicIdLayout::default(),
            options: NumaOptions::default(),
        }
    }

    /// Invariants every topology keeps, whatever the input.
    pub(crate) fn check_consistent(t: &Topology, ram: &[MemRange]) {
        let n = t.nr_nodes();
        assert!((1..=MAX_NODES).contains(&n));
        assert_eq!(t.distances().len(), n * n);
        for (i, node) in t.nodes.iter().enumerate() {
            assert_eq!(node.id, NodeId(i as u8));
            assert_eq!(t.distance(node.id, node.id), LOCAL_DISTANCE);
            for c in &node.cpus {
                assert_eq!(t.cpu_node(*c), Some(node.id));
            }
        }
        if t.source == TopologySource::Firmware {
            for node in &t.nodes {
                assert!(
                    !node.cpus.is_empty() || !node.memory.is_empty(),
                    "empty node {node:?}"
                );
            }
        }
        assert!(!t.cpus.is_empty() && t.cpus.len() <= MAX_CPUS);
        for (i, c) in t.cpus.iter().enumerate() {
            assert_eq!(c.id, CpuId(i as u32));
            let node = t.node(c.node).expect("CPU on a missing node");
            assert!(node.cpus.contains(&c.id));
        }
        // Node memory: page-aligned, sorted, merged, disjoint, inside RAM.
        let ram_n = normalize(ram.iter().copied());
        let mut all = Vec::new();
        for node in &t.nodes {
            for w in node.memory.windows(2) {
                assert!(w[0].end < w[1].start, "{:?}", node.memory);
            }
            for m in &node.memory {
                assert!(!m.is_empty());
                assert_eq!(m.start.0 % 4096, 0);
                assert_eq!(m.end.0 % 4096, 0);
                assert!(ram_n.iter().any(|x| x.start <= m.start && m.end <= x.end));
            }
            all.extend(node.memory.iter().copied());
        }
        all.sort();
        for w in all.windows(2) {
            assert!(w[0].end <= w[1].start, "nodes overlap: {all:?}");
        }
        // With page-aligned RAM every RAM byte is in exactly one node.
        if ram_n
            .iter()
            .all(|x| x.start.0 % 4096 == 0 && x.end.0 % 4096 == 0)
        {
            assert_eq!(normalize(all), ram_n);
        }
    }

    fn qemu_4node() -> (Vec<MemRange>, Vec<u8>, Vec<u8>, Vec<u8>) {
        // `-m 1536 -smp 6 -numa node,nodeid=0,cpus=0-1,memdev=m0 (512M)
        //  -numa node,nodeid=1,cpus=2-3,memdev=m1 (512M) -numa node,nodeid=2,cpus=4-5
        //  -numa node,nodeid=3,memdev=m3 (512M) -numa dist,...`
        let ram = vec![r(0, 0x9_fc00), r(0x10_0000, 0x5ffd_d000)];
        let srat = SratBuilder::new()
            .cpu(0, 0)
            .cpu(0, 1)
            .cpu(1, 2)
            .cpu(1, 3)
            .cpu(2, 4)
            .cpu(2, 5)
            .mem(0, 0, 0xA_0000)
            .mem(0, MIB, 511 * MIB)
            .mem(1, 512 * MIB, 512 * MIB)
            .mem(3, 1024 * MIB, 512 * MIB)
            .mem_flags(0, 0, 0, 0)
            .mem_flags(0, 0, 0, 0)
            .build();
        #[rustfmt::skip]
        let slit = slit(4, &[
            10, 20, 30, 40,
            20, 10, 20, 30,
            30, 20, 10, 20,
            40, 30, 20, 10,
        ]);
        let mut madt = MadtBuilder::new();
        for i in 0..6 {
            madt = madt.lapic(i, i, 1);
        }
        (ram, srat, slit, madt.ioapic().build())
    }

    #[test]
    fn qemu_four_nodes() {
        let (ram, srat, slit, madt) = qemu_4node();
        let (t, w) = run(&input(&ram, Some(&srat), Some(&slit), Some(&madt)));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(t.source, TopologySource::Firmware);
        assert_eq!(t.nr_nodes(), 4);
        let pxms: Vec<_> = t.nodes.iter().map(|n| n.pxm).collect();
        assert_eq!(pxms, [0, 1, 2, 3]);
        assert_eq!(t.nodes[0].memory, [r(0, 0x9_f000), r(MIB, 512 * MIB)]);
        assert_eq!(t.nodes[1].memory, [r(512 * MIB, 1024 * MIB)]);
        assert!(t.nodes[2].memory.is_empty());
        assert_eq!(t.nodes[3].memory, [r(1024 * MIB, 0x5ffd_d000)]);
        let cpus: Vec<Vec<u32>> = t
            .nodes
            .iter()
            .map(|n| n.cpus.iter().map(|c| c.0).collect())
            .collect();
        assert_eq!(cpus, [vec![0, 1], vec![2, 3], vec![4, 5], vec![]]);
        let d = |a, b| t.distance(NodeId(a), NodeId(b));
        assert_eq!(
            (d(0, 1), d(0, 2), d(0, 3), d(1, 2), d(1, 3), d(2, 3)),
            (20, 30, 40, 20, 30, 20)
        );
        assert_eq!(d(3, 0), 40);
        assert_eq!(
            t.fallback_order(NodeId(3)),
            [NodeId(3), NodeId(2), NodeId(1), NodeId(0)]
        );
        assert_eq!(
            t.fallback_order(NodeId(1)),
            [NodeId(1), NodeId(0), NodeId(2), NodeId(3)]
        );
        assert_eq!(t.node_of(Maddr(0x9_efff)), Some(NodeId(0)));
        assert_eq!(t.node_of(Maddr(0x9_f000)), None);
        assert_eq!(t.node_of(Maddr(600 * MIB)), Some(NodeId(1)));
        assert_eq!(t.node_of(Maddr(1100 * MIB)), Some(NodeId(3)));
        assert_eq!(t.memory_bytes(NodeId(1)), 512 * MIB);
        assert_eq!(t.memory_bytes(NodeId(2)), 0);
        assert_eq!(t.memory_bytes(NodeId(9)), 0);
        assert_eq!(t.cpu_node(CpuId(5)), Some(NodeId(2)));
        assert_eq!(t.cpu_node(CpuId(6)), None);
        // Unknown nodes get default distances.
        assert_eq!(t.distance(NodeId(9), NodeId(9)), 10);
        assert_eq!(t.distance(NodeId(0), NodeId(9)), 20);
    }

    #[test]
    fn memory_only_pxm_first_is_numbered_after_cpu_pxms() {
        let ram = [r(0, 1536 * MIB)];
        let srat = SratBuilder::new()
            .mem(7, 0, 512 * MIB)
            .cpu(3, 0)
            .cpu(5, 1)
            .mem(3, 512 * MIB, 512 * MIB)
            .mem(5, 1024 * MIB, 512 * MIB)
            .build();
        // Localities 0..8; pxm 3-5 = 17, 3-7 = 27, 5-7 = 21.
        let mut m = vec![30u8; 64];
        for i in 0..8 {
            m[i * 8 + i] = 10;
        }
        for (a, b, v) in [(3, 5, 17), (3, 7, 27), (5, 7, 21)] {
            m[a * 8 + b] = v;
            m[b * 8 + a] = v;
        }
        let slit = slit(8, &m);
        let madt = MadtBuilder::new().lapic(0, 0, 1).lapic(1, 1, 1).build();
        let (t, w) = run(&input(&ram, Some(&srat), Some(&slit), Some(&madt)));
        assert!(w.is_empty(), "{w:?}");
        let pxms: Vec<_> = t.nodes.iter().map(|n| n.pxm).collect();
        assert_eq!(pxms, [3, 5, 7]);
        assert_eq!(t.nodes[0].memory, [r(512 * MIB, 1024 * MIB)]);
        assert_eq!(t.nodes[2].memory, [r(0, 512 * MIB)]);
        assert_eq!(t.nodes[2].cpus, []);
        assert_eq!(t.cpus[1].node, NodeId(1));
        assert_eq!(t.distance(NodeId(0), NodeId(1)), 17);
        assert_eq!(t.distance(NodeId(0), NodeId(2)), 27);
        assert_eq!(t.distance(NodeId(2), NodeId(1)), 21);
    }

    #[test]
    fn disabled_entries_claim_no_node() {
        let ram = [r(0, 1024 * MIB)];
        let srat = SratBuilder::new()
            .cpu_flags(9, 0, 0) // disabled CPU entry: pxm 9 unnamed by it
            .cpu(4, 0)
            .mem_flags(8, 0, 512 * MIB, 0) // disabled memory
            .mem(4, 0, 1024 * MIB)
            .mem_flags(6, 0, 0, MEM_ENABLED) // empty
            .build();
        let madt = MadtBuilder::new().lapic(0, 0, 1).build();
        let (t, w) = run(&input(&ram, Some(&srat), None, Some(&madt)));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(t.nr_nodes(), 1);
        assert_eq!(t.nodes[0].pxm, 4);
        assert_eq!(t.source, TopologySource::Firmware);
    }

    /// A hostile SRAT from issue 12: pxm 2 is named by an enabled x2APIC
    /// entry for a CPU the MADT does not have, and by nothing else. Linux
    /// never brings such a node online; here it gets no node, the others
    /// keep their order (CPU pxms first, then memory-only ones) with dense
    /// ids, and the SLIT is read for the pxms that remain.
    #[test]
    fn a_pxm_with_neither_cpus_nor_memory_gets_no_node() {
        let ram = [r(0, 1024 * MIB)];
        let srat = SratBuilder::new()
            .cpu(0, 0)
            .x2apic(2, 77, 1) // APIC id 77: not in the MADT
            .cpu(1, 1)
            .mem(0, 0, 512 * MIB)
            .mem(3, 512 * MIB, 512 * MIB)
            .build();
        #[rustfmt::skip]
        let slit = slit(4, &[
            10, 21, 22, 23,
            21, 10, 24, 25,
            22, 24, 10, 26,
            23, 25, 26, 10,
        ]);
        let madt = MadtBuilder::new().lapic(0, 0, 1).lapic(1, 1, 1).build();
        let (t, w) = run(&input(&ram, Some(&srat), Some(&slit), Some(&madt)));
        assert_eq!(t.source, TopologySource::Firmware);
        assert_eq!(
            w,
            ["SRAT: pxm 2 has neither CPUs nor memory; it gets no node (Linux leaves it offline)"]
        );
        let shape: Vec<_> = t
            .nodes
            .iter()
            .map(|n| (n.id, n.pxm, n.cpus.clone(), n.memory.clone()))
            .collect();
        assert_eq!(
            shape,
            [
                (NodeId(0), 0, vec![CpuId(0)], vec![r(0, 512 * MIB)]),
                (NodeId(1), 1, vec![CpuId(1)], vec![]),
                (NodeId(2), 3, vec![], vec![r(512 * MIB, 1024 * MIB)]),
            ]
        );
        assert_eq!(t.cpus[1].node, NodeId(1));
        let d = |a, b| t.distance(NodeId(a), NodeId(b));
        assert_eq!((d(0, 1), d(0, 2), d(1, 2), d(2, 1)), (21, 23, 25, 25));
    }

    /// The other entries that name a pxm and give it nothing: an enabled
    /// memory range wholly outside RAM, a range of hot-pluggable memory not
    /// present, a CPU entry whose APIC id a later entry moves elsewhere, a
    /// CPU the MADT lists as disabled. CPUs with no affinity entry go to the
    /// first node that remains.
    #[test]
    fn entries_that_give_nothing_make_no_empty_node() {
        let ram = [r(0, 1024 * MIB)];
        let srat = SratBuilder::new()
            .cpu(5, 3) // disabled in the MADT
            .cpu(6, 1) // moved to pxm 0 below
            .cpu(0, 1)
            .mem(7, 8192 * MIB, 512 * MIB) // no RAM there
            .mem_flags(8, 4096 * MIB, 1024 * MIB, MEM_ENABLED | MEM_HOTPLUG)
            .mem(9, 0, 1024 * MIB)
            .build();
        let madt = MadtBuilder::new()
            .lapic(0, 0, 1)
            .lapic(1, 1, 1)
            .lapic(3, 3, 0)
            .build();
        let (t, w) = run(&input(&ram, Some(&srat), None, Some(&madt)));
        assert_eq!(t.source, TopologySource::Firmware);
        let pxms: Vec<_> = t.nodes.iter().map(|n| n.pxm).collect();
        assert_eq!(pxms, [0, 9]);
        assert_eq!(t.nodes[0].cpus, [CpuId(0), CpuId(1)]);
        assert_eq!(t.nodes[1].memory, [r(0, 1024 * MIB)]);
        for p in [5, 6, 7, 8] {
            assert!(
                w.iter()
                    .any(|l| l.starts_with(&format!("SRAT: pxm {p} has neither"))),
                "pxm {p}: {w:?}"
            );
        }
        assert!(w.contains(&String::from(
            "SRAT: CPU 0 (APIC id 0x0) has no affinity entry; node 0"
        )));
        assert_eq!(w.len(), 6, "{w:?}");
    }

    /// Hot-pluggable ranges stay with a node that has RAM or CPUs; a pxm
    /// with only hot-pluggable memory not yet present is no node (Linux
    /// keeps it offline until memory is added).
    #[test]
    fn hotplug_ranges_stay_on_nodes_and_alone_make_none() {
        let ram = [r(0, 1024 * MIB)];
        let srat = SratBuilder::new()
            .cpu(0, 0)
            .mem(0, 0, 1024 * MIB)
            .mem_flags(0, 2048 * MIB, 1024 * MIB, MEM_ENABLED | MEM_HOTPLUG)
            .mem_flags(1, 4096 * MIB, 1024 * MIB, MEM_ENABLED | MEM_HOTPLUG)
            .build();
        let (t, w) = run(&input(&ram, Some(&srat), None, None));
        assert_eq!(
            w,
            [
                "MADT: none; only the boot CPU",
                "SRAT: pxm 1 has neither CPUs nor memory; it gets no node (Linux leaves it offline)"
            ]
        );
        assert_eq!(t.nr_nodes(), 1);
        assert_eq!(t.nodes[0].memory, [r(0, 1024 * MIB)]);
        assert_eq!(t.nodes[0].hotplug, [r(2048 * MIB, 3072 * MIB)]);
    }

    #[test]
    fn cpus_madt_order_bsp_first_disabled_and_duplicates() {
        let ram = [r(0, 64 * MIB)];
        let madt = MadtBuilder::new()
            .lapic(0, 0, 1)
            .lapic(1, 2, 2) // online-capable, disabled: not a CPU
            .lapic(2, 4, 1)
            .lapic(3, 4, 1) // duplicate
            .lapic(4, 0xFF, 1) // invalid id
            .lapic(5, 6, 1)
            .x2apic(0x100, 1, 6)
            .build();
        let mut i = input(&ram, None, None, Some(&madt));
        i.bsp_apic_id = 6;
        i.apic_id_layout = ApicIdLayout {
            smt_bits: 1,
            core_bits: 2,
        };
        let (t, w) = run(&i);
        assert_eq!(
            w,
            [
                "MADT: duplicate APIC id 0x4 (ACPI id 3); ignored",
                "NUMA: no SRAT: one node"
            ]
        );
        let ids: Vec<_> = t.cpus.iter().map(|c| (c.apic_id, c.acpi_id)).collect();
        assert_eq!(ids, [(6, 5), (0, 0), (4, 2), (0x100, 6)]);
        let cs: Vec<_> = t.cpus.iter().map(|c| (c.core, c.socket)).collect();
        assert_eq!(cs, [(3, 0), (0, 0), (2, 0), (0, 32)]);
        assert_eq!(t.source, TopologySource::NoSrat);
        assert_eq!(t.nodes[0].cpus.len(), 4);
    }

    #[test]
    fn bsp_missing_from_madt_and_cap() {
        let ram = [r(0, 64 * MIB)];
        let mut m = MadtBuilder::new();
        for i in 0..300u32 {
            m = m.x2apic(i + 1, 1, i);
        }
        let madt = m.build();
        let (t, w) = run(&input(&ram, None, None, Some(&madt)));
        assert_eq!(t.cpus.len(), MAX_CPUS);
        assert_eq!((t.cpus[0].apic_id, t.cpus[0].acpi_id), (0, ACPI_ID_UNKNOWN));
        assert_eq!(t.cpus[1].apic_id, 1);
        assert_eq!(
            w,
            [
                "MADT: boot CPU (APIC id 0x0) not listed; added as CPU 0",
                "MADT: 301 CPUs; only the first 256 are used",
                "NUMA: no SRAT: one node"
            ]
        );
    }

    #[test]
    fn malformed_madt_leaves_only_bsp() {
        let ram = [r(0, 64 * MIB)];
        let madt = MadtBuilder::new()
            .lapic(0, 0, 1)
            .lapic(1, 1, 1)
            .raw(&[0, 0])
            .build();
        let mut i = input(&ram, None, None, Some(&madt));
        i.bsp_apic_id = 1;
        let (t, w) = run(&i);
        assert_eq!(t.cpus.len(), 1);
        assert_eq!((t.cpus[0].apic_id, t.cpus[0].acpi_id), (1, ACPI_ID_UNKNOWN));
        assert!(w[0].starts_with("MADT: entry type 0 at offset"), "{w:?}");
        assert_eq!(w[1], "MADT: malformed; only the boot CPU");
        let mut bad = madt.clone();
        bad[9] ^= 1;
        let (t, w) = run(&input(&ram, None, None, Some(&bad)));
        assert_eq!(t.cpus.len(), 1);
        assert_eq!(
            w[0],
            "MADT: rejected (APIC: bad checksum); only the boot CPU"
        );
    }

    #[test]
    fn no_srat_and_numa_off() {
        let (ram, srat, slit, madt) = qemu_4node();
        let (t, w) = run(&input(&ram, None, Some(&slit), Some(&madt)));
        assert_eq!(w, ["NUMA: no SRAT: one node"]);
        assert_eq!(t.source, TopologySource::NoSrat);
        assert_eq!(t.nr_nodes(), 1);
        assert_eq!(t.nodes[0].memory, [r(0, 0x9_f000), r(MIB, 0x5ffd_d000)]);
        assert_eq!(t.nodes[0].cpus.len(), 6);
        assert_eq!(t.distances(), [10]);

        let mut i = input(&ram, Some(&srat), Some(&slit), Some(&madt));
        i.options.off = true;
        let (t, w) = run(&i);
        assert!(w.is_empty());
        assert_eq!(t.source, TopologySource::NumaOff);
        assert_eq!(t.nr_nodes(), 1);
        assert!(t.cpus.iter().all(|c| c.node == NodeId(0)));
        i.options.fake = Some(4);
        let (t, w) = run(&i);
        assert_eq!(w, ["NUMA: numa=fake ignored with numa=off"]);
        assert_eq!(t.source, TopologySource::NumaOff);
    }

    fn expect_fallback(srat: &[u8], ram: &[MemRange], needle: &str) -> Vec<String> {
        let madt = MadtBuilder::new().lapic(0, 0, 1).lapic(1, 1, 1).build();
        let (t, w) = run(&input(ram, Some(srat), None, Some(&madt)));
        assert_eq!(t.source, TopologySource::Fallback, "{w:?}");
        assert_eq!(t.nr_nodes(), 1);
        assert_eq!(t.nodes[0].memory, normalize(ram.iter().copied()));
        assert_eq!(t.cpus.len(), 2);
        let last = w.last().unwrap();
        assert!(last.starts_with("NUMA: SRAT rejected ("), "{w:?}");
        assert!(last.ends_with("); one node"), "{w:?}");
        assert!(
            w.iter().any(|x| x.contains(needle)),
            "{needle:?} not in {w:?}"
        );
        w
    }

    #[test]
    fn malformed_srats_fall_back() {
        let ram = [r(0, 1024 * MIB)];
        let good = || SratBuilder::new().cpu(0, 0).cpu(1, 1).mem(0, 0, 512 * MIB);
        // Bad checksum.
        let mut t = good().mem(1, 512 * MIB, 512 * MIB).build();
        t[50] ^= 1;
        expect_fallback(&t, &ram, "SRAT: bad checksum");
        // Zero-length entry.
        let t = good().raw(&[1, 0]).mem(1, 512 * MIB, 512 * MIB).build();
        let w = expect_fallback(&t, &ram, "has length 0; parsing stopped");
        assert_eq!(w.len(), 2);
        assert_eq!(w[1], "NUMA: SRAT rejected (malformed SRAT); one node");
        // Entry running past the end.
        let t = good().raw(&[1, 40, 1, 0]).build();
        expect_fallback(&t, &ram, "runs past the table end");
        // Known entry too short.
        let t = good()
            .raw(&[0, 8, 1, 1, 1, 0, 0, 0])
            .mem(1, 512 * MIB, 512 * MIB)
            .build();
        expect_fallback(&t, &ram, "entry type 0 has length 8");
        // Length field larger than the buffer.
        let t = good().mem(1, 512 * MIB, 512 * MIB).build();
        expect_fallback(&t[..t.len() - 4], &ram, "exceeds the");
        // Overlap between nodes.
        let t = good().mem(1, 500 * MIB, 524 * MIB).build();
        expect_fallback(&t, &ram, "overlaps");
        // RAM not covered (more than 1 MiB).
        let t = good().mem(1, 512 * MIB, 510 * MIB).build();
        expect_fallback(&t, &ram, "outside any node");
        // No memory affinity at all.
        let t = SratBuilder::new().cpu(0, 0).cpu(1, 1).build();
        expect_fallback(&t, &ram, "no enabled memory affinity entry");
        // Too many proximity domains.
        let mut b = SratBuilder::new().revision(3).mem(0, 0, 1024 * MIB);
        for p in 1..=MAX_NODES as u32 {
            b = b.mem_flags(p * 1000, 1 << 40, MIB, MEM_ENABLED | MEM_HOTPLUG);
        }
        expect_fallback(&b.build(), &ram, "more than 64 proximity domains");
        // Not an SRAT at all.
        expect_fallback(&slit(1, &[10]), &ram, "signature 'SLIT' where 'SRAT'");
    }

    #[test]
    fn same_node_overlaps_merge_and_small_gaps_go_to_nearest() {
        let ram = [r(0, 0x9_fc00), r(MIB, 1024 * MIB)];
        let srat = SratBuilder::new()
            .cpu(0, 0)
            .cpu(1, 1)
            .mem(0, MIB, 300 * MIB)
            .mem(0, 200 * MIB, 312 * MIB) // overlaps the previous, same node
            .mem(1, 512 * MIB, 512 * MIB)
            .build(); // 0-640K is in no range: 0x9fc00 bytes < 1 MiB
        let madt = MadtBuilder::new().lapic(0, 0, 1).lapic(1, 1, 1).build();
        let (t, w) = run(&input(&ram, Some(&srat), None, Some(&madt)));
        assert_eq!(t.source, TopologySource::Firmware);
        assert_eq!(
            w,
            ["SRAT: RAM [0x0000000000-0x000009fc00) is in no memory range; given to node 0"]
        );
        assert_eq!(t.nodes[0].memory, [r(0, 0x9_f000), r(MIB, 512 * MIB)]);
        assert_eq!(t.nodes[1].memory, [r(512 * MIB, 1024 * MIB)]);
    }

    /// Found by `random_tables_give_consistent_topologies` (its seed is in
    /// proptest-regressions): SRAT ranges of two nodes that meet inside a
    /// page lost that page to both. It goes to the node of its first byte.
    #[test]
    fn a_page_split_between_two_nodes_goes_to_the_node_of_its_first_byte() {
        let ram = [r(0, 1024 * MIB)];
        let cut = 512 * MIB + 0x800;
        let srat = SratBuilder::new()
            .cpu(0, 0)
            .cpu(1, 1)
            .mem(0, 0, cut)
            .mem(1, cut, 1024 * MIB - cut)
            .build();
        let madt = MadtBuilder::new().lapic(0, 0, 1).lapic(1, 1, 1).build();
        let (t, w) = run(&input(&ram, Some(&srat), None, Some(&madt)));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(t.nodes[0].memory, [r(0, 512 * MIB + 0x1000)]);
        assert_eq!(t.nodes[1].memory, [r(512 * MIB + 0x1000, 1024 * MIB)]);
    }

    #[test]
    fn uncovered_piece_between_nodes_goes_to_nearest() {
        // RAM [0, 1G); node 0 [0, 511M), node 1 [511.75M, 1G): the 768K gap
        // sits 0 bytes from both; the tie goes to the range below.
        let ram = [r(0, 1024 * MIB)];
        let srat = SratBuilder::new()
            .mem(0, 0, 511 * MIB)
            .mem(1, 511 * MIB + 768 * 1024, 513 * MIB - 768 * 1024)
            .build();
        let (t, w) = run(&input(&ram, Some(&srat), None, None));
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[1].contains("given to node 0"), "{w:?}");
        assert!(w[2].contains("no affinity entry"), "{w:?}");
        assert_eq!(t.nodes[0].memory, [r(0, 511 * MIB + 768 * 1024)]);
    }

    #[test]
    fn cpu_without_srat_entry_goes_to_node_0() {
        let ram = [r(0, 1024 * MIB)];
        let srat = SratBuilder::new()
            .cpu(1, 1)
            .mem(0, 0, 512 * MIB)
            .mem(1, 512 * MIB, 512 * MIB)
            .build();
        let madt = MadtBuilder::new()
            .lapic(0, 0, 1)
            .lapic(1, 1, 1)
            .lapic(2, 2, 1)
            .build();
        let (t, w) = run(&input(&ram, Some(&srat), None, Some(&madt)));
        assert_eq!(
            w,
            [
                "SRAT: CPU 0 (APIC id 0x0) has no affinity entry; node 0",
                "SRAT: CPU 2 (APIC id 0x2) has no affinity entry; node 0"
            ]
        );
        // pxm 1 is named first (by the CPU entry): node 0 = pxm 1.
        assert_eq!(t.nodes[0].pxm, 1);
        assert_eq!(t.nodes[0].cpus, [CpuId(0), CpuId(1), CpuId(2)]);
    }

    #[test]
    fn x2apic_srat_entries_and_later_duplicate_wins() {
        let ram = [r(0, 1024 * MIB)];
        let srat = SratBuilder::new()
            .x2apic(0, 0, 1)
            .x2apic(1, 300, 1)
            .x2apic(0, 300, 1)
            .mem(0, 0, 512 * MIB)
            .mem(1, 512 * MIB, 512 * MIB)
            .build();
        let madt = MadtBuilder::new().x2apic(0, 1, 0).x2apic(300, 1, 1).build();
        let (t, w) = run(&input(&ram, Some(&srat), None, Some(&madt)));
        assert_eq!(
            w,
            ["SRAT: APIC id 0x12c listed in two proximity domains; using pxm 0"]
        );
        assert_eq!(t.cpus[1].node, NodeId(0));
        assert!(t.nodes[1].cpus.is_empty());
    }

    #[test]
    fn slit_validation() {
        let (ram, srat, _, madt) = qemu_4node();
        let case = |slit: Vec<u8>| {
            let (t, w) = run(&input(&ram, Some(&srat), Some(&slit), Some(&madt)));
            assert_eq!(t.source, TopologySource::Firmware);
            assert_eq!(t.distance(NodeId(0), NodeId(3)), 20);
            assert_eq!(t.distance(NodeId(2), NodeId(2)), 10);
            assert_eq!(w.len(), 1, "{w:?}");
            w[0].clone()
        };
        assert_eq!(
            case(slit(3, &[10, 20, 20, 20, 10, 20, 20, 20, 10])),
            "SLIT: 3 localities but pxm 3 is in use; default distances"
        );
        let mut m = [20u8; 16];
        for i in 0..4 {
            m[i * 5] = 10;
        }
        m[5] = 11;
        assert_eq!(
            case(slit(4, &m)),
            "SLIT: distance 11 from locality 1 to 1 is invalid; default distances"
        );
        m[5] = 10;
        m[7] = 10;
        assert_eq!(
            case(slit(4, &m)),
            "SLIT: distance 10 from locality 1 to 3 is invalid; default distances"
        );
        assert!(case(slit(5, &m)).starts_with("SLIT: rejected (SLIT: 5 localities do not fit"));
        // 0xFF (unreachable) is kept.
        m[7] = 0xFF;
        let s = slit(4, &m);
        let (t, w) = run(&input(&ram, Some(&srat), Some(&s), Some(&madt)));
        assert!(w.is_empty());
        assert_eq!(t.distance(NodeId(1), NodeId(3)), 0xFF);
        assert_eq!(t.distance(NodeId(3), NodeId(1)), 20);
    }

    #[test]
    fn apic_layout_edges() {
        let l = ApicIdLayout {
            smt_bits: 40,
            core_bits: 40,
        };
        assert_eq!((l.core(u32::MAX), l.socket(u32::MAX)), (0, 0));
        let l = ApicIdLayout {
            smt_bits: 0,
            core_bits: 32,
        };
        assert_eq!((l.core(u32::MAX), l.socket(u32::MAX)), (u32::MAX, 0));
    }

    fn arb_ram() -> impl Strategy<Value = Vec<MemRange>> {
        proptest::collection::vec((0u64..64, 1u64..16), 1..5).prop_map(|v| {
            v.into_iter()
                .map(|(s, l)| MemRange::from_base_len(s * 16 * MIB, l * 16 * MIB))
                .collect()
        })
    }

    #[derive(Debug, Clone)]
    enum E {
        Cpu(u32, u8, bool),
        X2(u32, u32, bool),
        Mem(u32, u64, u64, u32),
        Raw(Vec<u8>),
    }

    fn arb_srat() -> impl Strategy<Value = Vec<u8>> {
        let e = prop_oneof![
            4 => (0u32..6, 0u8..8, any::<bool>()).prop_map(|(p, a, en)| E::Cpu(p, a, en)),
            1 => (0u32..6, 0u32..8, any::<bool>()).prop_map(|(p, a, en)| E::X2(p, a, en)),
            1 => (0u32..6, 0u64..64, 0u64..40, 0u32..8).prop_map(|(p, b, l, f)| E::Mem(p, b, l, f)),
            1 => prop_oneof![
                // Unknown types, well formed (skipped), or garbage.
                4 => (3u8..=255, proptest::collection::vec(any::<u8>(), 0..20)).prop_map(|(t, b)| {
                    let mut v = vec![t, b.len() as u8 + 2];
                    v.extend(b);
                    E::Raw(v)
                }),
                1 => proptest::collection::vec(any::<u8>(), 0..20).prop_map(E::Raw),
            ],
        ];
        // Memory entries mostly partition [0, 1280 MiB) (all RAM the
        // generator makes), so that many tables are accepted; extra random
        // entries make overlaps, gaps, disabled and hot-plug ranges.
        let cuts = proptest::collection::vec((1u64..20, 0u32..6, 0u32..8), 1..6);
        (cuts, proptest::collection::vec(e, 0..10), any::<u8>())
            .prop_flat_map(|(cuts, extra, rev)| {
                let mut es = extra;
                let mut at = 0;
                let total: u64 = cuts.iter().map(|c| c.0).sum();
                for (k, (len, pxm, f)) in cuts.iter().enumerate() {
                    let len = if k + 1 == cuts.len() {
                        80 - at.min(80)
                    } else {
                        len * 80 / total
                    };
                    // Mostly enabled (f != 0 keeps bit 0 set 7 times in 8).
                    let flags = if *f == 0 { 0 } else { 1 | (f & 6) };
                    es.push(E::Mem(*pxm, at, len, flags));
                    at += len;
                }
                (Just(es).prop_shuffle(), Just(rev))
            })
            .prop_map(|(es, rev)| {
                let mut b = SratBuilder::new().revision(rev % 4);
                for e in es {
                    b = match e {
                        E::Cpu(p, a, en) => b.cpu_flags(p, a, en as u32),
                        E::X2(p, a, en) => b.x2apic(p, a, en as u32),
                        E::Mem(p, base, len, f) => {
                            b.mem_flags(p, base * 16 * MIB, len * 16 * MIB, f)
                        }
                        E::Raw(r) => b.raw(&r),
                    };
                }
                b.build()
            })
    }

    fn arb_slit() -> impl Strategy<Value = Vec<u8>> {
        (
            0u64..9,
            proptest::collection::vec(prop_oneof![Just(10u8), 11u8..40, any::<u8>()], 0..90),
        )
            .prop_map(|(n, m)| slit(n, &m))
    }

    fn arb_madt() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec((0u8..10, any::<u8>(), 0u32..4, any::<bool>()), 0..12).prop_map(
            |v| {
                let mut b = MadtBuilder::new();
                for (apic, acpi, flags, x2) in v {
                    b = if x2 {
                        b.x2apic(u32::from(apic), flags, u32::from(acpi))
                    } else {
                        b.lapic(acpi, apic, flags)
                    };
                }
                b.build()
            },
        )
    }

    fn mutate(mut t: Vec<u8>, muts: &[(usize, u8)]) -> Vec<u8> {
        for &(i, v) in muts {
            let n = t.len();
            t[i % n] = v;
        }
        acpi_numa::build::fix_checksum(&mut t);
        t
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_tables_give_consistent_topologies(
            ram in arb_ram(),
            srat in proptest::option::weighted(0.9, arb_srat()),
            slit in proptest::option::of(arb_slit()),
            madt in proptest::option::of(arb_madt()),
            bsp in 0u32..10,
            fake in proptest::option::weighted(0.2, 0u32..70),
            muts in proptest::option::weighted(0.1, proptest::collection::vec((any::<usize>(), any::<u8>()), 1..3)),
        ) {
            let srat = srat.map(|s| match &muts { None => s, Some(m) => mutate(s, m) });
            let mut i = input(&ram, srat.as_deref(), slit.as_deref(), madt.as_deref());
            i.bsp_apic_id = bsp;
            i.apic_id_layout = ApicIdLayout { smt_bits: bsp % 3, core_bits: bsp % 5 };
            i.options.fake = fake;
            let (t, _) = run(&i);
            prop_assert_eq!(t.cpus[0].apic_id, bsp);
            if matches!(t.source, TopologySource::Firmware) {
                prop_assert!(srat.is_some());
            }
        }

        #[test]
        fn random_bytes_as_tables_never_panic(
            srat in proptest::collection::vec(any::<u8>(), 0..200),
            slit in proptest::collection::vec(any::<u8>(), 0..100),
            madt in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let ram = [r(0, 256 * MIB)];
            let (t, _) = run(&input(&ram, Some(&srat), Some(&slit), Some(&madt)));
            prop_assert_eq!(t.source, TopologySource::Fallback);
            let srat = acpi_numa::build::table(b"SRAT", 1, &srat);
            let slit = acpi_numa::build::table(b"SLIT", 1, &slit);
            let madt = acpi_numa::build::table(b"APIC", 1, &madt);
            run(&input(&ram, Some(&srat), Some(&slit), Some(&madt)));
        }
    }
}

//! Building the memory manager at boot ([`boot`]): what it is built from
//! ([`MmConfig`], from start-info and the node view) and what the guest
//! prints about it ([`write_report`]).
//!
//! ```text
//! guest: mm: node 0 zone DMA32: present 16384, managed 14249, reserved 2135; pcp batch 3, high 18; [0x0..0x4000000) machine 0x14000000
//! guest: mm: node 2: no memory
//! guest: mm: zonelist order: Node (numa_zonelist_order not given)
//! Fallback order for Node 0: 0 1 3
//! Fallback order for Node 2: 2 3 1 0
//! Built 4 zonelists, mobility grouping on.  Total pages: 47000
//! guest: mm: node 2 zonelist: 3:DMA32 1:DMA32 0:DMA32; this node: (empty)
//! guest: cpu 4: node 2, local memory node 3
//! ```
//!
//! The "Fallback order" and "Built" lines are Linux's, word for word (each
//! fallback node printed as `"%d "`, so those lines end with a space), and
//! carry no `guest: ` prefix, so that a tool can compare them with Linux's
//! boot log as they are.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use pv_abi::node::LOCAL_DISTANCE;
use pv_abi::{Gpa, Maddr, StartInfo};

use super::page_alloc::Mm;
use super::zonelist::{built_line, fallback_line, OrderChoice, ZonelistKind};
use crate::numa::view::NodeView;

/// Memory a node owns: guest-physical range and the machine address of
/// its start (contiguous in machine memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    /// First guest-physical address.
    pub gpa: Gpa,
    /// Bytes.
    pub size: u64,
    /// Machine address of `gpa`.
    pub maddr: Maddr,
}

/// One node to build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// The vnode (proximity domain).
    pub vnode: u32,
    /// Its CPUs.
    pub cpus: Vec<u32>,
    /// Its memory.
    pub memory: Vec<PhysRange>,
}

/// What the memory manager is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MmConfig {
    /// Nodes; node id = index.
    pub nodes: Vec<NodeConfig>,
    /// `nodes²` distances, row-major.
    pub distances: Vec<u32>,
    /// vCPUs of the domain.
    pub nr_cpus: u32,
    /// Guest-physical byte ranges `[start, end)` that are in use and never
    /// handed out (any page they touch is reserved).
    pub reserved: Vec<(u64, u64)>,
    /// `numa_zonelist_order=`, if given.
    pub order: Option<OrderChoice>,
}

impl MmConfig {
    /// From the boot information: the node view's nodes (Linux ids), each
    /// with the start-info memory ranges of its vnode (which carry the
    /// machine addresses; for an emulated view, the parts of them inside
    /// the fake node's memory); without a view, one node with everything (as
    /// Linux's `dummy_numa_init`). Reserved: page 0, the image, the boot
    /// data and the kernel heap. Also returns what did not fit (memory of
    /// a vnode no node has).
    pub fn from_boot(
        si: &StartInfo,
        view: Option<&NodeView>,
        heap: (Gpa, u64),
        order: Option<OrderChoice>,
    ) -> (MmConfig, Vec<String>) {
        let mut warnings = Vec::new();
        let range = |r: &pv_abi::MemRange| PhysRange {
            gpa: r.gpa,
            size: r.size,
            maddr: r.maddr,
        };
        let (nodes, distances) = match view {
            Some(v) => {
                let nodes: Vec<NodeConfig> = v
                    .nodes
                    .iter()
                    .map(|n| NodeConfig {
                        vnode: n.vnode,
                        cpus: n.cpus.clone(),
                        // An emulated node (numa=fake) shares its vnode
                        // with others: its own part of that memory.
                        memory: if v.source == crate::numa::fake::SOURCE {
                            crate::numa::fake::phys_ranges(si, &n.memory)
                        } else {
                            si.vnode_ranges(n.vnode).map(range).collect()
                        },
                    })
                    .collect();
                for r in si.mem_ranges() {
                    if !v.nodes.iter().any(|n| n.vnode == r.vnode) {
                        warnings.push(format!(
                            "memory [{:#x}..{:#x}) of vnode {} belongs to no node: not managed",
                            r.gpa.0,
                            r.gpa.0.saturating_add(r.size),
                            r.vnode
                        ));
                    }
                }
                (nodes, v.distances.clone())
            }
            None => (
                alloc::vec![NodeConfig {
                    vnode: 0,
                    cpus: (0..si.nr_vcpus).collect(),
                    memory: si.mem_ranges().iter().map(range).collect(),
                }],
                alloc::vec![LOCAL_DISTANCE],
            ),
        };
        let mut reserved: Vec<(u64, u64)> = crate::boot::start_info::taken(si).to_vec();
        reserved.push((heap.0 .0, heap.0 .0.saturating_add(heap.1)));
        (
            MmConfig {
                nodes,
                distances,
                nr_cpus: si.nr_vcpus,
                reserved,
                order,
            },
            warnings,
        )
    }
}

/// Builds the memory manager at boot, prints it ([`write_report`]) with
/// every warning, and turns on failure reports. With `cpu_blocks`, one
/// block of that order is reserved for every CPU but CPU 0
/// ([`Mm::with_cpu_blocks`]: the secondary vCPUs' stacks). `None` (with the
/// reason printed) if it cannot be built.
pub fn boot(
    si: &StartInfo,
    view: Option<&NodeView>,
    heap: (Gpa, u64),
    order: Option<OrderChoice>,
    cpu_blocks: Option<u32>,
    out: &mut dyn Write,
) -> Option<Mm> {
    let (cfg, mut warnings) = MmConfig::from_boot(si, view, heap, order);
    let built = match cpu_blocks {
        Some(o) => Mm::with_cpu_blocks(cfg, o),
        None => Mm::new(cfg),
    };
    match built {
        Ok(mm) => {
            warnings.extend(mm.warnings().iter().cloned());
            for w in &warnings {
                let _ = writeln!(out, "guest: mm: warning: {w}");
            }
            let _ = write_report(&mm, out);
            mm.set_warn_on_failure(true);
            Some(mm)
        }
        Err(e) => {
            for w in &warnings {
                let _ = writeln!(out, "guest: mm: warning: {w}");
            }
            let _ = writeln!(out, "guest: mm: cannot build the memory manager: {e}");
            None
        }
    }
}

/// The zones of each node, the zonelist order, Linux's "Fallback order" and
/// "Built" lines, each node's zonelists and each CPU's nodes.
pub fn write_report(mm: &Mm, w: &mut dyn Write) -> fmt::Result {
    for node in mm.nodes() {
        if !node.has_memory() {
            writeln!(w, "guest: mm: node {}: no memory", node.id())?;
            continue;
        }
        for z in node.zones().iter().filter(|z| z.populated()) {
            let i = z.info();
            let mut spans = String::new();
            for (k, s) in z.spans().iter().enumerate() {
                let (a, b) = s.gpa_range();
                let sep = if k == 0 { "" } else { " " };
                let _ = write!(spans, "{sep}[{a:#x}..{b:#x}) machine {}", s.maddr);
            }
            writeln!(
                w,
                "guest: mm: node {} zone {}: present {}, managed {}, reserved {}; pcp batch {}, high {}; {spans}",
                node.id(),
                z.zone_type(),
                i.present,
                i.managed,
                i.reserved(),
                i.pcp_params.batch,
                i.pcp_params.high
            )?;
        }
    }
    let why = match mm.zonelist_order_choice() {
        None => String::from("numa_zonelist_order not given"),
        Some(c) => format!("numa_zonelist_order={}", c.name()),
    };
    writeln!(
        w,
        "guest: mm: zonelist order: {} ({why})",
        mm.zonelist_order().name()
    )?;
    for node in mm.nodes().iter().filter(|n| n.online()) {
        writeln!(w, "{}", fallback_line(node.id(), node.node_order()))?;
    }
    writeln!(
        w,
        "{}",
        built_line(mm.nr_online_nodes(), mm.zonelist_order(), mm.total_pages())
    )?;
    for node in mm.nodes() {
        writeln!(
            w,
            "guest: mm: node {} zonelist: {}; this node: {}",
            node.id(),
            node.zonelist(ZonelistKind::Fallback),
            node.zonelist(ZonelistKind::NoFallback)
        )?;
    }
    for cpu in 0..mm.nr_cpus() {
        writeln!(
            w,
            "guest: cpu {cpu}: node {}, local memory node {}",
            mm.cpu_to_node(cpu),
            mm.cpu_to_mem(cpu)
        )?;
    }
    Ok(())
}

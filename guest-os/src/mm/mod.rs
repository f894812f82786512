//! The guest's NUMA memory manager, after Linux's (mm/page_alloc.c,
//! Documentation/vm/numa): one node per node of the view, memoryless ones
//! included; zones by machine address; a buddy allocator per zone with
//! per-CPU lists; zonelists built with Linux's algorithm; `numa_mem_id`;
//! numastat counters.
//!
//! The path of one allocation, in the order the modules take part:
//!
//! 1. [`gfp`]: the flags ([`Gfp`]): zone modifiers (`DMA`, `DMA32`: the
//!    highest zone allowed), `THISNODE` (no fallback), `NOWARN`.
//! 2. [`zonelist`]: the preferred node's zonelist, filtered by the zone
//!    modifier and an optional [`NodeMask`] ([`nodemask`]); its first zone
//!    is the *preferred zone*. [`linux_ref`] is the literal transcription of
//!    Linux's builder the zonelists are tested against.
//! 3. [`zone`]: each zone in turn, under its lock: order 0 from the CPU's
//!    per-CPU list ([`pcp`]), larger orders from the free lists ([`buddy`]).
//! 4. [`stats`]: `zone_statistics`: hit/miss/foreign against the preferred
//!    zone's node, local/other against the CPU's node.
//!
//! [`node`] is `pglist_data`; [`page_alloc`] is [`Mm`] and the API; [`init`]
//! builds it at boot from start-info and the node view and prints it.
//!
//! Above it: [`mempolicy`] (Linux's memory policies: `set_mempolicy`,
//! `mbind`, `get_mempolicy`, cpuset rebinding, allocation through a
//! policy, all ending in [`Mm::__alloc_pages`]) and [`slab`]
//! (`kmalloc_node`: per-node slab caches with SLUB's fallback rules).
//!
//! # API (for memory policies, slabs and everything above)
//!
//! Everything is a method of [`Mm`] (`&self`; zones lock internally, so
//! every vCPU allocates at once). Nodes are Linux's node ids (`u32`), CPUs
//! are vCPU numbers; the current CPU is the vCPU the code runs on
//! ([`crate::percpu`]), or the one [`Mm::with_cpu`] acts as.
//!
//! ```text
//! // The one entry point every allocation goes through (Linux's
//! // __alloc_pages): preferred node's zonelist, restricted to `nodemask`.
//! fn __alloc_pages(&self, gfp: Gfp, order: u32, preferred_nid: u32,
//!                  nodemask: Option<&NodeMask>) -> Result<Page, AllocError>
//! fn alloc_pages_node(&self, nid: u32, gfp: Gfp, order: u32) -> Result<Page, AllocError>
//!                                            // NUMA_NO_NODE: numa_mem_id()
//! fn alloc_pages(&self, gfp: Gfp, order: u32) -> Result<Page, AllocError>
//!                                            // numa_node_id()'s zonelist
//! fn free_pages(&self, gpa: Gpa, order: u32) -> Result<(), FreeError>
//! fn free(&self, page: Page) -> Result<(), FreeError>
//!
//! fn numa_node_id(&self) -> u32              fn cpu_to_node(&self, cpu: u32) -> u32
//! fn numa_mem_id(&self) -> u32               fn cpu_to_mem(&self, cpu: u32) -> u32
//! fn current_cpu(&self) -> u32
//! fn with_cpu<R>(&self, cpu: u32, f: impl FnOnce(&Mm) -> R) -> Option<R>
//! fn cpu_block(&self, cpu: u32) -> Option<Page>   // reserved at boot (with_cpu_blocks)
//! fn node_distance(&self, a: u32, b: u32) -> u32
//! fn memory_nodes / cpu_nodes / online_nodes(&self) -> NodeMask   // N_MEMORY, N_CPU, online
//! fn node(&self, nid: u32) -> Option<&Node>  fn nodes(&self) -> &[Node]
//! fn zonelist(&self, nid: u32, kind: ZonelistKind) -> Option<&Zonelist>
//! fn node_zonelist(&self, nid: u32, gfp: Gfp) -> Option<&Zonelist>
//! fn page_to_nid(&self, gfn: Gfn) -> Option<u32>
//! fn page_zone(&self, gfn: Gfn) -> Option<ZoneRef>
//! fn page_maddr(&self, gfn: Gfn) -> Option<Maddr>
//!
//! fn numa_stats(&self, nid: u32) -> Option<NumaStats>
//! fn count_numa_event(&self, nid: u32, stat: NumaStat)
//! fn count_interleave_hit(&self, page: &Page, nid: u32) -> bool   // the interleave hook
//! fn zone_info(&self, nid: u32, zone: ZoneType) -> Option<ZoneInfo>
//! fn drain_all_pages(&self) -> u64           fn check(&self) -> Vec<String>
//! ```
//!
//! A memory policy maps to `__alloc_pages`: local = `alloc_pages`;
//! preferred = `__alloc_pages(gfp, o, nid, None)`; bind =
//! `__alloc_pages(gfp, o, numa_node_id(), Some(&mask))` (the local
//! zonelist restricted to the mask); interleave =
//! `__alloc_pages(gfp, o, next_nid, None)` then `count_interleave_hit`;
//! preferred-many = a first pass `__alloc_pages(gfp | NOWARN, o, nid,
//! Some(&mask))` and a second one without the mask. A slab's per-node
//! refill is `alloc_pages_node(nid, gfp | THISNODE | NOWARN, o)` with its
//! own fallback when that fails.
//!
//! # Memory cost
//!
//! 12 bytes of metadata per guest page (`buddy::PageMeta`: two 32-bit list
//! links, span index, state, order), one array per zone from the kernel
//! heap: 3 KiB per MiB of guest memory, 768 KiB for 256 MiB. The heap is
//! 8 MiB and its allocator rounds each array up to a power of two, so a
//! zone of up to about 1.3 GiB fits (about 2 GiB in all); beyond that
//! `Mm::new` fails cleanly (`BuildError::OutOfHeap`) and the guest says so.
//!
//! # What is not modelled
//!
//! No watermarks, reclaim, compaction or migrate types: a zone is used to
//! its last page before the next zone in the list is tried (Linux falls
//! back at the low watermark). No `ZONE_MOVABLE`. `NUMA_NO_NODE` is
//! `u32::MAX`.

pub mod bench;
pub mod buddy;
pub mod gfp;
pub mod init;
pub mod linux_ref;
pub mod mempolicy;
pub mod node;
pub mod nodemask;
pub mod page_alloc;
pub mod pcp;
pub mod slab;
pub mod stats;
pub mod zone;
pub mod zonelist;

#[cfg(test)]
mod tests;

pub use buddy::{FreeError, PageState, MAX_ORDER};
pub use gfp::Gfp;
pub use init::{boot, MmConfig, NodeConfig, PhysRange};
pub use node::Node;
pub use nodemask::NodeMask;
pub use page_alloc::{AllocError, Mm, MmError, Page, NUMA_NO_NODE};
pub use stats::{NumaStat, NumaStats};
pub use zone::{ZoneInfo, ZoneType};
pub use zonelist::{OrderChoice, ZoneRef, Zonelist, ZonelistKind, ZonelistOrder};

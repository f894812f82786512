//! `kmalloc_node`: small objects from per-node slab caches, after Linux's
//! SLUB (`mm/slub.c`, Linux 6.x) with its NUMA behaviour and without its
//! per-CPU fast paths.
//!
//! - One cache per size class and type: `kmalloc-8` ... `kmalloc-4096`
//!   (with Linux's 96 and 192) and `dma-kmalloc-*` for `GFP_DMA`
//!   (`kmalloc_index`, `kmalloc_caches[type][index]`). `__GFP_DMA32` is not
//!   a kmalloc type: it is dropped, as `kmalloc_fix_flags` does (counted in
//!   [`SlabStats::fixed_flags`]). Bigger requests (up to `PAGE_SIZE <<
//!   MAX_ORDER`) get whole pages (`kmalloc_large_node`).
//! - A slab is a block of `2^order` pages from one node; the order is
//!   SLUB's `calculate_order` for the machine's CPU count (at least
//!   `4 * (fls(nr_cpus) + 1)` objects, order at most
//!   `PAGE_ALLOC_COSTLY_ORDER`), falling back to the smallest order that
//!   holds one object (`allocate_slab`).
//! - Each cache keeps, per node, a list of partial slabs
//!   (`kmem_cache_node`). An allocation for node N (`___slab_alloc`):
//!   1. a node without memory (not in `slab_nodes`) is no constraint at
//!      all (`NUMA_NO_NODE`), even with `__GFP_THISNODE`;
//!   2. a partial slab of N (of `numa_mem_id()` for no node);
//!   3. unless the caller insisted on the node: a partial slab of another
//!      node, in the zonelist order of `numa_mem_id()`, taken only from a
//!      node with more than `min_partial` of them (`get_any_partial`; Linux
//!      skips this step at random about 2% of the time, by cycle count:
//!      here it is deterministic, and `remote_node_defrag_ratio` 0 turns it
//!      off);
//!   4. a new slab from N, first `__GFP_THISNODE` (opportunistic), and if
//!      N has no page, steps 2 to 4 again with the caller's flags: the new
//!      slab then comes from N's zonelist, the nearest node with memory.
//!      Without a node, the new slab comes from `alloc_pages` (the local
//!      node's zonelist).
//! - `kfree` returns the object to its slab; a slab that becomes empty
//!   goes back to the page allocator unless its node keeps fewer than
//!   `min_partial` partial slabs (`clamp(ilog2(size) / 2, 5, 10)`);
//!   [`Kmalloc::shrink`] (`kmem_cache_shrink`) frees those too.
//! - Slab metadata (free lists, the allocation bitmap) lives beside the
//!   slab, not in it: objects are addresses ([`Gpa`]) in the slab's pages,
//!   never touched, so the allocator runs on the host as it does in the
//!   guest. A double free or a pointer that is no object is refused.
//!
//! Accounting: per node and cache, slabs, pages, objects and objects in
//! use (`/sys/kernel/slab/<cache>/` and a node's `Slab:` in its meminfo);
//! event counters in [`SlabStats`].

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use pv_abi::{Gpa, PAGE_SHIFT, PAGE_SIZE};
use spin::Mutex;

use super::{Gfp, Mm, Page, ZoneType, MAX_ORDER, NUMA_NO_NODE};

/// The object sizes of the kmalloc caches (`kmalloc_info[]` up to 4 KiB).
pub const KMALLOC_SIZES: [usize; 12] = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096];
/// The largest request a cache serves; larger ones get pages.
pub const KMALLOC_MAX_CACHE_SIZE: usize = 4096;
/// The largest request at all (`KMALLOC_MAX_SIZE`).
pub const KMALLOC_MAX_SIZE: usize = (PAGE_SIZE as usize) << MAX_ORDER;
/// What `kmalloc(0)` returns (`ZERO_SIZE_PTR`): not NULL, not an object.
pub const ZERO_SIZE_PTR: Gpa = Gpa(16);
/// `MIN_PARTIAL`.
pub const MIN_PARTIAL: usize = 5;
/// `MAX_PARTIAL`.
pub const MAX_PARTIAL: usize = 10;
/// `PAGE_ALLOC_COSTLY_ORDER`, SLUB's largest slab order.
pub const SLUB_MAX_ORDER: u32 = 3;

/// The cache type (`enum kmalloc_cache_type`, the two this guest has).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KmallocType {
    /// `KMALLOC_NORMAL`.
    Normal = 0,
    /// `KMALLOC_DMA`: objects from `ZONE_DMA`.
    Dma = 1,
}

impl KmallocType {
    /// `kmalloc_type(flags)`.
    pub const fn of(gfp: Gfp) -> KmallocType {
        if gfp.contains(Gfp::DMA) {
            KmallocType::Dma
        } else {
            KmallocType::Normal
        }
    }
}

/// `kmalloc_index(size)`: the cache for `size` bytes (`None` for 0 and
/// for sizes above [`KMALLOC_MAX_CACHE_SIZE`]).
pub const fn kmalloc_index(size: usize) -> Option<usize> {
    if size == 0 || size > KMALLOC_MAX_CACHE_SIZE {
        return None;
    }
    let mut i = 0;
    while i < KMALLOC_SIZES.len() {
        if size <= KMALLOC_SIZES[i] {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// `get_order(size)`: the smallest order of pages that holds `size` bytes.
pub const fn get_order(size: usize) -> u32 {
    let pages = size.div_ceil(PAGE_SIZE as usize);
    if pages <= 1 {
        0
    } else {
        usize::BITS - (pages - 1).leading_zeros()
    }
}

/// Why a slab operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabError {
    /// No page for a new slab (or a large allocation).
    NoMemory,
    /// More than [`KMALLOC_MAX_SIZE`] bytes.
    TooLarge(usize),
    /// No such node.
    InvalidNode(u32),
    /// `kfree`/`ksize` of an address that is no allocated object.
    NotAnObject(Gpa),
    /// `kfree` of an object that is already free.
    DoubleFree(Gpa),
}

impl fmt::Display for SlabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlabError::NoMemory => write!(f, "out of memory"),
            SlabError::TooLarge(s) => write!(f, "{s} bytes is above {KMALLOC_MAX_SIZE}"),
            SlabError::InvalidNode(n) => write!(f, "no node {n}"),
            SlabError::NotAnObject(a) => write!(f, "{a} is no allocated object"),
            SlabError::DoubleFree(a) => write!(f, "double free of {a}"),
        }
    }
}

/// Event counters (SLUB's `CONFIG_SLUB_STATS` names where they exist).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabStats {
    /// Objects allocated from caches.
    pub allocs: u64,
    /// Objects freed to caches.
    pub frees: u64,
    /// Objects taken from a partial slab of the node searched first
    /// (`ALLOC_FROM_PARTIAL`).
    pub alloc_from_partial: u64,
    /// Objects taken from another node's partial slab (`get_any_partial`).
    pub alloc_remote_partial: u64,
    /// Slabs allocated (`ALLOC_SLAB`).
    pub alloc_slab: u64,
    /// Slabs that had to use the smallest order (`ORDER_FALLBACK`).
    pub order_fallback: u64,
    /// Slabs freed (`FREE_SLAB`).
    pub free_slab: u64,
    /// Objects for a node with memory that landed on another node.
    pub node_fallback: u64,
    /// Requests whose flags were fixed up (`__GFP_DMA32` dropped).
    pub fixed_flags: u64,
    /// Large (page) allocations and frees.
    pub large_allocs: u64,
    /// Large frees.
    pub large_frees: u64,
}

/// One cache's numbers on one node (`kmem_cache_node`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheNodeInfo {
    /// Slabs on the node.
    pub slabs: u64,
    /// Of those, on the partial list.
    pub partial: u64,
    /// Pages of those slabs.
    pub pages: u64,
    /// Objects those slabs hold.
    pub objects: u64,
    /// Objects in use.
    pub inuse: u64,
}

/// Everything the slab allocator holds on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabNodeInfo {
    /// Slabs (every cache).
    pub slabs: u64,
    /// Pages of slabs.
    pub slab_pages: u64,
    /// Objects in use in those slabs.
    pub inuse: u64,
    /// Large allocations and their pages.
    pub large: u64,
    /// Pages of large allocations.
    pub large_pages: u64,
}

/// A cache's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheInfo {
    /// `kmalloc-96`, `dma-kmalloc-8`.
    pub name: String,
    /// Object size.
    pub size: usize,
    /// Slab order.
    pub order: u32,
    /// Objects in a slab of that order.
    pub objects: u32,
    /// The smallest order (one object).
    pub min_order: u32,
    /// Empty slabs a node keeps.
    pub min_partial: usize,
}

struct Cache {
    info: CacheInfo,
    kind: KmallocType,
    nodes: Vec<CacheNode>,
}

#[derive(Default)]
struct CacheNode {
    /// Base frame of each partial slab, head first.
    partial: VecDeque<u64>,
    slabs: u64,
    pages: u64,
    objects: u64,
    inuse: u64,
}

struct Slab {
    cache: usize,
    page: Page,
    objects: u32,
    inuse: u32,
    /// Free object indexes, next to hand out last (LIFO, as SLUB's
    /// freelist).
    free: Vec<u16>,
    allocated: Vec<u64>,
    on_partial: bool,
}

impl Slab {
    fn is_allocated(&self, i: u32) -> bool {
        self.allocated[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set_allocated(&mut self, i: u32, on: bool) {
        let w = &mut self.allocated[(i / 64) as usize];
        if on {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }
}

struct State {
    caches: Vec<Cache>,
    slabs: BTreeMap<u64, Slab>,
    large: BTreeMap<u64, Page>,
    stats: SlabStats,
}

/// The kmalloc caches of one memory manager.
pub struct Kmalloc<'m> {
    mm: &'m Mm,
    state: Mutex<State>,
    remote_node_defrag_ratio: AtomicU32,
}

/// `fls(x)`: the 1-based index of the highest set bit (0 for 0).
const fn fls(x: u32) -> u32 {
    u32::BITS - x.leading_zeros()
}

/// `calculate_order(size)` for `nr_cpus` CPUs: `4 * (fls(nr_cpus) + 1)`
/// objects (no more than the largest order holds), in the smallest order
/// that holds them.
pub fn calculate_order(size: usize, nr_cpus: u32) -> u32 {
    let max_objects = (((PAGE_SIZE as usize) << SLUB_MAX_ORDER) / size).max(1);
    let min_objects = (4 * (fls(nr_cpus) as usize + 1)).min(max_objects);
    get_order(min_objects * size).min(SLUB_MAX_ORDER)
}

/// `s->min_partial`: `clamp(ilog2(size) / 2, MIN_PARTIAL, MAX_PARTIAL)`.
pub fn min_partial(size: usize) -> usize {
    ((usize::BITS - 1 - size.leading_zeros()) as usize / 2).clamp(MIN_PARTIAL, MAX_PARTIAL)
}

impl<'m> Kmalloc<'m> {
    /// The caches for `mm` (`create_kmalloc_caches`), empty.
    pub fn new(mm: &'m Mm) -> Self {
        let nr_nodes = mm.nr_nodes() as usize;
        let mut caches = Vec::new();
        for kind in [KmallocType::Normal, KmallocType::Dma] {
            for &size in &KMALLOC_SIZES {
                let order = calculate_order(size, mm.nr_cpus());
                let prefix = if kind == KmallocType::Dma { "dma-" } else { "" };
                caches.push(Cache {
                    info: CacheInfo {
                        name: format!("{prefix}kmalloc-{size}"),
                        size,
                        order,
                        objects: (((PAGE_SIZE as usize) << order) / size) as u32,
                        min_order: get_order(size),
                        min_partial: min_partial(size),
                    },
                    kind,
                    nodes: (0..nr_nodes).map(|_| CacheNode::default()).collect(),
                });
            }
        }
        Kmalloc {
            mm,
            state: Mutex::new(State {
                caches,
                slabs: BTreeMap::new(),
                large: BTreeMap::new(),
                stats: SlabStats::default(),
            }),
            remote_node_defrag_ratio: AtomicU32::new(100),
        }
    }

    /// The memory manager.
    pub const fn mm(&self) -> &'m Mm {
        self.mm
    }

    /// `/sys/kernel/slab/*/remote_node_defrag_ratio` (0..=100; 0: never
    /// take another node's partial slabs). Values above 100 are refused.
    pub fn set_remote_node_defrag_ratio(&self, ratio: u32) -> bool {
        if ratio > 100 {
            return false;
        }
        self.remote_node_defrag_ratio
            .store(ratio, Ordering::Relaxed);
        true
    }

    /// `kmalloc(size, gfp)`: `kmalloc_node(size, gfp, NUMA_NO_NODE)`.
    pub fn kmalloc(&self, size: usize, gfp: Gfp) -> Result<Gpa, SlabError> {
        self.kmalloc_node(size, gfp, NUMA_NO_NODE)
    }

    /// `kmalloc_node(size, gfp, node)`: an object of at least `size` bytes,
    /// from `node` if it has memory (see the module's steps); 0 bytes give
    /// [`ZERO_SIZE_PTR`].
    pub fn kmalloc_node(&self, size: usize, gfp: Gfp, node: u32) -> Result<Gpa, SlabError> {
        if node != NUMA_NO_NODE && node >= self.mm.nr_nodes() {
            return Err(SlabError::InvalidNode(node));
        }
        if size == 0 {
            return Ok(ZERO_SIZE_PTR);
        }
        if size > KMALLOC_MAX_SIZE {
            return Err(SlabError::TooLarge(size));
        }
        let mut st = self.state.lock();
        let mut gfp = gfp;
        if gfp.contains(Gfp::DMA32) {
            // kmalloc_fix_flags: "Unexpected gfp", the bad bits dropped.
            gfp = gfp.without(Gfp::DMA32);
            st.stats.fixed_flags += 1;
        }
        let Some(index) = kmalloc_index(size) else {
            return self.kmalloc_large(&mut st, size, gfp, node);
        };
        let ci = KmallocType::of(gfp) as usize * KMALLOC_SIZES.len() + index;
        let obj = self.slab_alloc(&mut st, ci, gfp, node)?;
        st.stats.allocs += 1;
        if node != NUMA_NO_NODE
            && self.mm.memory_nodes().contains(node)
            && self.mm.page_to_nid(obj.frame()) != Some(node)
        {
            st.stats.node_fallback += 1;
        }
        Ok(obj)
    }

    /// `kmalloc_large_node`: whole pages, from `node`'s zonelist (the local
    /// node's for none).
    fn kmalloc_large(
        &self,
        st: &mut State,
        size: usize,
        gfp: Gfp,
        node: u32,
    ) -> Result<Gpa, SlabError> {
        let order = get_order(size);
        let page = if node == NUMA_NO_NODE {
            self.mm.alloc_pages(gfp, order)
        } else {
            self.mm.alloc_pages_node(node, gfp, order)
        }
        .map_err(|_| SlabError::NoMemory)?;
        st.large.insert(page.gfn.0, page);
        st.stats.large_allocs += 1;
        Ok(page.gpa())
    }

    /// `___slab_alloc` (see the module documentation).
    fn slab_alloc(&self, st: &mut State, ci: usize, gfp: Gfp, node: u32) -> Result<Gpa, SlabError> {
        let node = if node != NUMA_NO_NODE && !self.mm.memory_nodes().contains(node) {
            NUMA_NO_NODE
        } else {
            node
        };
        let mut try_thisnode = true;
        loop {
            let opportunistic =
                node != NUMA_NO_NODE && !gfp.contains(Gfp::THISNODE) && try_thisnode;
            let pc_flags = if opportunistic {
                // GFP_NOWAIT | __GFP_THISNODE (with the zone modifiers).
                gfp | Gfp::THISNODE | Gfp::NOWARN
            } else {
                gfp
            };
            // get_partial.
            let search = if node == NUMA_NO_NODE {
                self.mm.numa_mem_id()
            } else {
                node
            };
            if let Some(obj) = Self::alloc_from_partial(st, ci, search) {
                st.stats.alloc_from_partial += 1;
                return Ok(obj);
            }
            if !(node != NUMA_NO_NODE && pc_flags.contains(Gfp::THISNODE)) {
                if let Some(obj) = self.get_any_partial(st, ci, pc_flags) {
                    st.stats.alloc_remote_partial += 1;
                    return Ok(obj);
                }
            }
            match self.new_slab(st, ci, pc_flags, node) {
                Some(gfn) => {
                    let obj = Self::take_object(st, gfn);
                    Self::fix_lists_after_alloc(st, gfn);
                    return Ok(obj);
                }
                None if opportunistic => try_thisnode = false,
                None => return Err(SlabError::NoMemory),
            }
        }
    }

    /// `get_partial_node`: an object from the first partial slab of `nid`.
    fn alloc_from_partial(st: &mut State, ci: usize, nid: u32) -> Option<Gpa> {
        let gfn = *st.caches[ci].nodes.get(nid as usize)?.partial.front()?;
        let obj = Self::take_object(st, gfn);
        Self::fix_lists_after_alloc(st, gfn);
        Some(obj)
    }

    /// `get_any_partial`: another node's partial slab, in the zonelist
    /// order of `numa_mem_id()`, from a node with more than `min_partial`.
    fn get_any_partial(&self, st: &mut State, ci: usize, flags: Gfp) -> Option<Gpa> {
        if self.remote_node_defrag_ratio.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let zl = self.mm.node_zonelist(self.mm.numa_mem_id(), flags)?;
        let highest = flags.zone().unwrap_or(ZoneType::Normal);
        let min = st.caches[ci].info.min_partial;
        for z in zl.allowed(highest, None) {
            let n = st.caches[ci].nodes.get(z.nid as usize)?;
            if n.partial.len() > min {
                return Self::alloc_from_partial(st, ci, z.nid);
            }
        }
        None
    }

    /// `new_slab`/`allocate_slab`: a slab of the cache's order with
    /// `__GFP_NOWARN`, else of the smallest order with `flags`; from
    /// `node`'s zonelist, or `alloc_pages` for no node. Its base frame.
    fn new_slab(&self, st: &mut State, ci: usize, flags: Gfp, node: u32) -> Option<u64> {
        let (order, min_order, kind) = {
            let c = &st.caches[ci];
            (c.info.order, c.info.min_order, c.kind)
        };
        let flags = if kind == KmallocType::Dma {
            flags | Gfp::DMA
        } else {
            flags
        };
        let get = |f: Gfp, o: u32| {
            if node == NUMA_NO_NODE {
                self.mm.alloc_pages(f, o)
            } else {
                self.mm.alloc_pages_node(node, f, o)
            }
        };
        let page = match get(flags | Gfp::NOWARN, order) {
            Ok(p) => p,
            Err(_) => {
                let p = get(flags, min_order).ok()?;
                st.stats.order_fallback += 1;
                p
            }
        };
        let size = st.caches[ci].info.size;
        let objects = ((page.bytes() as usize) / size) as u32;
        let slab = Slab {
            cache: ci,
            page,
            objects,
            inuse: 0,
            free: (0..objects as u16).rev().collect(),
            allocated: vec![0; objects.div_ceil(64) as usize],
            on_partial: false,
        };
        let n = &mut st.caches[ci].nodes[page.nid as usize];
        n.slabs += 1;
        n.pages += page.pages();
        n.objects += u64::from(objects);
        st.slabs.insert(page.gfn.0, slab);
        st.stats.alloc_slab += 1;
        Some(page.gfn.0)
    }

    /// Takes the next free object of the slab at `gfn`.
    fn take_object(st: &mut State, gfn: u64) -> Gpa {
        let slab = st.slabs.get_mut(&gfn).expect("slab exists");
        let i = u32::from(slab.free.pop().expect("slab has a free object"));
        slab.set_allocated(i, true);
        slab.inuse += 1;
        let size = st.caches[slab.cache].info.size as u64;
        let obj = Gpa(slab.page.gpa().0 + u64::from(i) * size);
        st.caches[slab.cache].nodes[slab.page.nid as usize].inuse += 1;
        obj
    }

    /// After an allocation: a full slab leaves the partial list; a new one
    /// with room joins it at the head.
    fn fix_lists_after_alloc(st: &mut State, gfn: u64) {
        let slab = st.slabs.get_mut(&gfn).expect("slab exists");
        let full = slab.inuse == slab.objects;
        let n = &mut st.caches[slab.cache].nodes[slab.page.nid as usize];
        if full && slab.on_partial {
            n.partial.retain(|&g| g != gfn);
            slab.on_partial = false;
        } else if !full && !slab.on_partial {
            n.partial.push_front(gfn);
            slab.on_partial = true;
        }
    }

    /// The slab holding `obj`, and the object's index in it.
    fn find(st: &State, obj: Gpa) -> Option<(u64, u32)> {
        let gfn = obj.0 >> PAGE_SHIFT;
        let (&base, slab) = st.slabs.range(..=gfn).next_back()?;
        if gfn >= base + slab.page.pages() {
            return None;
        }
        let off = obj.0 - slab.page.gpa().0;
        let size = st.caches[slab.cache].info.size as u64;
        if !off.is_multiple_of(size) || off / size >= u64::from(slab.objects) {
            return None;
        }
        Some((base, (off / size) as u32))
    }

    /// `kfree(obj)`: NULL and [`ZERO_SIZE_PTR`] are no-ops; a large
    /// allocation's pages are freed; an object goes back to its slab (see
    /// the module's rules for empty slabs).
    pub fn kfree(&self, obj: Gpa) -> Result<(), SlabError> {
        if obj.0 == 0 || obj == ZERO_SIZE_PTR {
            return Ok(());
        }
        let mut st = self.state.lock();
        if obj.is_page_aligned() {
            if let Some(page) = st.large.remove(&obj.frame().0) {
                st.stats.large_frees += 1;
                drop(st);
                return self.mm.free(page).map_err(|_| SlabError::NotAnObject(obj));
            }
        }
        let (gfn, i) = Self::find(&st, obj).ok_or(SlabError::NotAnObject(obj))?;
        let (ci, nid, was_full, now_empty) = {
            let slab = st.slabs.get_mut(&gfn).expect("found");
            if !slab.is_allocated(i) {
                return Err(SlabError::DoubleFree(obj));
            }
            slab.set_allocated(i, false);
            slab.free.push(i as u16);
            let was_full = slab.inuse == slab.objects;
            slab.inuse -= 1;
            (slab.cache, slab.page.nid, was_full, slab.inuse == 0)
        };
        st.stats.frees += 1;
        let min = st.caches[ci].info.min_partial;
        let n = &mut st.caches[ci].nodes[nid as usize];
        n.inuse -= 1;
        if now_empty && n.partial.len() >= min {
            return self.discard_slab(&mut st, gfn);
        }
        if was_full {
            // add_partial(..., DEACTIVATE_TO_TAIL).
            n.partial.push_back(gfn);
            if let Some(s) = st.slabs.get_mut(&gfn) {
                s.on_partial = true;
            }
        }
        Ok(())
    }

    /// `discard_slab`: off the lists, pages back to the allocator.
    fn discard_slab(&self, st: &mut State, gfn: u64) -> Result<(), SlabError> {
        let Some(slab) = st.slabs.remove(&gfn) else {
            return Ok(());
        };
        let n = &mut st.caches[slab.cache].nodes[slab.page.nid as usize];
        if slab.on_partial {
            n.partial.retain(|&g| g != gfn);
        }
        n.slabs -= 1;
        n.pages -= slab.page.pages();
        n.objects -= u64::from(slab.objects);
        n.inuse -= u64::from(slab.inuse);
        st.stats.free_slab += 1;
        self.mm
            .free(slab.page)
            .map_err(|_| SlabError::NotAnObject(slab.page.gpa()))
    }

    /// `ksize(obj)`: the usable size (the cache's object size; whole pages
    /// for a large allocation; 0 for [`ZERO_SIZE_PTR`]), if `obj` is
    /// allocated.
    pub fn ksize(&self, obj: Gpa) -> Option<usize> {
        if obj == ZERO_SIZE_PTR {
            return Some(0);
        }
        let st = self.state.lock();
        if let Some(p) = st
            .large
            .get(&obj.frame().0)
            .filter(|_| obj.is_page_aligned())
        {
            return Some(p.bytes() as usize);
        }
        let (gfn, i) = Self::find(&st, obj)?;
        let slab = &st.slabs[&gfn];
        slab.is_allocated(i)
            .then(|| st.caches[slab.cache].info.size)
    }

    /// The node an allocated object's memory is on.
    pub fn obj_nid(&self, obj: Gpa) -> Option<u32> {
        self.ksize(obj)
            .filter(|&s| s > 0)
            .and_then(|_| self.mm.page_to_nid(obj.frame()))
    }

    /// The name of the cache an object belongs to (`None` for a large
    /// allocation or no object).
    pub fn cache_of(&self, obj: Gpa) -> Option<String> {
        let st = self.state.lock();
        let (gfn, _) = Self::find(&st, obj)?;
        Some(st.caches[st.slabs[&gfn].cache].info.name.clone())
    }

    /// `kmem_cache_shrink` on every cache: every empty slab goes back to
    /// the page allocator. The pages freed.
    pub fn shrink(&self) -> u64 {
        let mut st = self.state.lock();
        let empty: Vec<(u64, u64)> = st
            .slabs
            .iter()
            .filter(|(_, s)| s.inuse == 0)
            .map(|(g, s)| (*g, s.page.pages()))
            .collect();
        let mut pages = 0;
        for (g, n) in empty {
            if self.discard_slab(&mut st, g).is_ok() {
                pages += n;
            }
        }
        pages
    }

    /// Every cache's shape, normal caches first.
    pub fn caches(&self) -> Vec<CacheInfo> {
        self.state
            .lock()
            .caches
            .iter()
            .map(|c| c.info.clone())
            .collect()
    }

    /// One cache's numbers on one node (`name` as in [`CacheInfo::name`]).
    pub fn cache_node_info(&self, name: &str, nid: u32) -> Option<CacheNodeInfo> {
        let st = self.state.lock();
        let c = st.caches.iter().find(|c| c.info.name == name)?;
        let n = c.nodes.get(nid as usize)?;
        Some(CacheNodeInfo {
            slabs: n.slabs,
            partial: n.partial.len() as u64,
            pages: n.pages,
            objects: n.objects,
            inuse: n.inuse,
        })
    }

    /// Everything on one node.
    pub fn node_info(&self, nid: u32) -> SlabNodeInfo {
        let st = self.state.lock();
        let mut i = SlabNodeInfo::default();
        for c in &st.caches {
            if let Some(n) = c.nodes.get(nid as usize) {
                i.slabs += n.slabs;
                i.slab_pages += n.pages;
                i.inuse += n.inuse;
            }
        }
        for p in st.large.values().filter(|p| p.nid == nid) {
            i.large += 1;
            i.large_pages += p.pages();
        }
        i
    }

    /// The event counters.
    pub fn stats(&self) -> SlabStats {
        self.state.lock().stats
    }

    /// Objects in use (every cache, every node) plus large allocations.
    pub fn objects_in_use(&self) -> u64 {
        let st = self.state.lock();
        let small: u64 = st
            .caches
            .iter()
            .flat_map(|c| c.nodes.iter())
            .map(|n| n.inuse)
            .sum();
        small + st.large.len() as u64
    }

    /// Checks the bookkeeping: per-node counts against the slabs, the
    /// partial lists against the slabs' fill. Every problem.
    pub fn check(&self) -> Vec<String> {
        let st = self.state.lock();
        let mut bad = Vec::new();
        for (ci, c) in st.caches.iter().enumerate() {
            for (nid, n) in c.nodes.iter().enumerate() {
                let slabs: Vec<&Slab> = st
                    .slabs
                    .values()
                    .filter(|s| s.cache == ci && s.page.nid as usize == nid)
                    .collect();
                let inuse: u64 = slabs.iter().map(|s| u64::from(s.inuse)).sum();
                let objects: u64 = slabs.iter().map(|s| u64::from(s.objects)).sum();
                if n.slabs != slabs.len() as u64 || n.inuse != inuse || n.objects != objects {
                    bad.push(format!(
                        "{} node {nid}: counted {} slabs {} objects {} in use, found {} {objects} {inuse}",
                        c.info.name,
                        n.slabs,
                        n.objects,
                        n.inuse,
                        slabs.len()
                    ));
                }
                for s in &slabs {
                    let want = s.inuse < s.objects;
                    let listed = n.partial.contains(&s.page.gfn.0);
                    if want != listed || listed != s.on_partial {
                        bad.push(format!(
                            "{} node {nid}: slab at {} with {}/{} in use is{} on the partial list",
                            c.info.name,
                            s.page.gpa(),
                            s.inuse,
                            s.objects,
                            if listed { "" } else { " not" }
                        ));
                    }
                    let marked: u32 = s.allocated.iter().map(|w| w.count_ones()).sum();
                    if marked != s.inuse || s.free.len() as u32 + s.inuse != s.objects {
                        bad.push(format!(
                            "{} slab at {}: free list broken",
                            c.info.name,
                            s.page.gpa()
                        ));
                    }
                }
            }
        }
        bad
    }

    /// Frees every slab and large allocation, in use or not (a cache's
    /// destruction); the objects that were still in use.
    pub fn release_all(&self) -> u64 {
        let mut st = self.state.lock();
        let mut leaked = 0;
        let gfns: Vec<u64> = st.slabs.keys().copied().collect();
        for g in gfns {
            leaked += st.slabs.get(&g).map_or(0, |s| u64::from(s.inuse));
            let _ = self.discard_slab(&mut st, g);
        }
        for (_, p) in core::mem::take(&mut st.large) {
            leaked += 1;
            let _ = self.mm.free(p);
        }
        leaked
    }
}

impl Drop for Kmalloc<'_> {
    fn drop(&mut self) {
        self.release_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::mempolicy::tests::machine;
    use proptest::prelude::*;

    fn all_free(mm: &Mm) -> bool {
        mm.drain_all_pages();
        mm.zones().all(|z| z.info().free == z.info().managed)
    }

    #[test]
    fn sizes_orders_and_indexes() {
        assert_eq!(kmalloc_index(1), Some(0));
        assert_eq!(kmalloc_index(8), Some(0));
        assert_eq!(kmalloc_index(9), Some(1));
        assert_eq!(kmalloc_index(65), Some(4)); // 96
        assert_eq!(kmalloc_index(97), Some(5)); // 128
        assert_eq!(kmalloc_index(129), Some(6)); // 192
        assert_eq!(kmalloc_index(4096), Some(11));
        assert_eq!(kmalloc_index(4097), None);
        assert_eq!(kmalloc_index(0), None);
        assert_eq!(
            (
                get_order(1),
                get_order(4096),
                get_order(4097),
                get_order(16384)
            ),
            (0, 0, 1, 2)
        );
        // 6 CPUs: 16 objects at least.
        assert_eq!(calculate_order(8, 6), 0);
        assert_eq!(calculate_order(256, 6), 0);
        assert_eq!(calculate_order(512, 6), 1);
        assert_eq!(calculate_order(1024, 6), 2);
        assert_eq!(calculate_order(2048, 6), 3);
        assert_eq!(calculate_order(4096, 6), 3);
        // 1 CPU: 8 objects.
        assert_eq!(calculate_order(1024, 1), 1);
        assert_eq!(
            (min_partial(8), min_partial(1024), min_partial(4096)),
            (5, 5, 6)
        );
        let mm = machine(&[4], &[&[0]], None);
        let k = Kmalloc::new(&mm);
        let c = k.caches();
        assert_eq!(c.len(), 24);
        assert_eq!(c[4].name, "kmalloc-96");
        assert_eq!(c[12].name, "dma-kmalloc-8");
        assert_eq!((c[11].order, c[11].objects, c[11].min_order), (3, 8, 0));
    }

    /// Node 2 is memoryless with CPU 1 on it; node 1 is its nearest node
    /// with memory.
    fn three_nodes() -> Mm {
        machine(
            &[4, 4, 0],
            &[&[0], &[], &[1]],
            Some(vec![10, 20, 30, 20, 10, 15, 30, 15, 10]),
        )
    }

    #[test]
    fn nodes_memoryless_and_thisnode() {
        let mm = three_nodes();
        assert_eq!(mm.cpu_to_mem(1), 1);
        let k = Kmalloc::new(&mm);
        for n in 0..2 {
            let o = k.kmalloc_node(40, Gfp::KERNEL, n).unwrap();
            assert_eq!((k.obj_nid(o), k.ksize(o)), (Some(n), Some(64)));
            assert_eq!(k.cache_of(o).as_deref(), Some("kmalloc-64"));
        }
        // A memoryless node is no constraint: numa_mem_id() of the CPU.
        let o = k.kmalloc_node(40, Gfp::KERNEL, 2).unwrap();
        assert_eq!(k.obj_nid(o), Some(0));
        let o1 = mm
            .with_cpu(1, |_| k.kmalloc_node(40, Gfp::KERNEL, 2))
            .unwrap()
            .unwrap();
        assert_eq!(k.obj_nid(o1), Some(1));
        // Even with __GFP_THISNODE (Linux drops the node first): from CPU
        // 0 a new slab comes from node 0...
        let k2 = Kmalloc::new(&mm);
        let o2 = k2.kmalloc_node(40, Gfp::THISNODE, 2).unwrap();
        assert_eq!(k2.obj_nid(o2), Some(0));
        // ...from CPU 1 the new slab would have to come from node 2 itself.
        let k3 = Kmalloc::new(&mm);
        let r = mm.with_cpu(1, |_| k3.kmalloc_node(40, Gfp::THISNODE | Gfp::NOWARN, 2));
        assert_eq!(r, Some(Err(SlabError::NoMemory)));
        assert_eq!(k.stats().node_fallback, 0);
        drop((k, k2, k3));
        assert!(all_free(&mm));
    }

    #[test]
    fn exhausted_node_partial_then_fallback() {
        let mm = three_nodes();
        let k = Kmalloc::new(&mm);
        let first = k.kmalloc_node(2048, Gfp::KERNEL, 1).unwrap();
        let mut held = Vec::new();
        while let Ok(p) = mm.alloc_pages_node(1, Gfp::THISNODE | Gfp::NOWARN, 0) {
            held.push(p);
        }
        // The partial slab (16 objects of order 3) still serves node 1.
        let more: Vec<Gpa> = (0..15)
            .map(|_| k.kmalloc_node(2048, Gfp::KERNEL, 1).unwrap())
            .collect();
        assert!(more.iter().all(|&o| k.obj_nid(o) == Some(1)));
        assert_eq!(
            k.kmalloc_node(2048, Gfp::THISNODE | Gfp::NOWARN, 1),
            Err(SlabError::NoMemory)
        );
        // Node 1's zonelist: 1 2(no memory) 0... distances 1->0 is 20.
        let o = k.kmalloc_node(2048, Gfp::KERNEL, 1).unwrap();
        assert_eq!(k.obj_nid(o), Some(0));
        assert_eq!(k.stats().node_fallback, 1);
        for x in more.into_iter().chain([first, o]) {
            k.kfree(x).unwrap();
        }
        for p in held {
            mm.free(p).unwrap();
        }
        assert!(k.check().is_empty());
        k.shrink();
        drop(k);
        assert!(all_free(&mm));
    }

    /// `get_any_partial`: a node with more than `min_partial` partial slabs
    /// lends one when the asked node has neither partial slabs nor pages;
    /// with `remote_node_defrag_ratio` 0 a new slab comes from the zonelist.
    #[test]
    fn remote_partial_slabs() {
        let mm = machine(&[1, 4], &[&[0]], None);
        let k = Kmalloc::new(&mm);
        // 8 full slabs of 64 objects on node 1, one object freed in 7.
        let objs: Vec<Gpa> = (0..8 * 64)
            .map(|_| k.kmalloc_node(64, Gfp::KERNEL, 1).unwrap())
            .collect();
        assert_eq!(k.cache_node_info("kmalloc-64", 1).unwrap().slabs, 8);
        for s in 0..7 {
            k.kfree(objs[s * 64]).unwrap();
        }
        assert_eq!(k.cache_node_info("kmalloc-64", 1).unwrap().partial, 7);
        let mut held = Vec::new();
        while let Ok(p) = mm.alloc_pages_node(0, Gfp::THISNODE | Gfp::NOWARN, 0) {
            held.push(p);
        }
        let slabs = k.stats().alloc_slab;
        let o = k.kmalloc_node(64, Gfp::KERNEL, 0).unwrap();
        assert_eq!(k.obj_nid(o), Some(1));
        assert_eq!(
            (k.stats().alloc_slab, k.stats().alloc_remote_partial),
            (slabs, 1)
        );
        // Down to min_partial partial slabs (5): no more lending.
        let o2 = k.kmalloc_node(64, Gfp::KERNEL, 0).unwrap();
        assert_eq!(k.stats().alloc_remote_partial, 2);
        let o3 = k.kmalloc_node(64, Gfp::KERNEL, 0).unwrap();
        assert_eq!(k.stats().alloc_remote_partial, 2);
        assert_eq!(k.stats().alloc_slab, slabs + 1);
        assert!(k.set_remote_node_defrag_ratio(0));
        assert!(!k.set_remote_node_defrag_ratio(101));
        for x in [o, o2, o3] {
            k.kfree(x).unwrap();
        }
        for (i, x) in objs.into_iter().enumerate() {
            if i % 64 != 0 || i >= 7 * 64 {
                k.kfree(x).unwrap();
            }
        }
        for p in held {
            mm.free(p).unwrap();
        }
        assert_eq!(k.objects_in_use(), 0);
        k.shrink();
        assert_eq!(k.node_info(1).slabs, 0);
        drop(k);
        assert!(all_free(&mm));
    }

    /// Only order-0 blocks free on a node: a 2048-byte slab of order 3
    /// cannot be had, the smallest order (one page, 2 objects) is used.
    #[test]
    fn order_fallback() {
        let mm = machine(&[1], &[&[0]], None);
        let mut pages = Vec::new();
        while let Ok(p) = mm.alloc_pages_node(0, Gfp::NOWARN, 0) {
            pages.push(p);
        }
        let (keep, give): (Vec<_>, Vec<_>) = pages.into_iter().partition(|p| p.gfn.0 % 2 == 0);
        for p in give {
            mm.free(p).unwrap();
        }
        mm.drain_all_pages();
        let k = Kmalloc::new(&mm);
        let o = k.kmalloc_node(2048, Gfp::KERNEL, 0).unwrap();
        assert_eq!(k.stats().order_fallback, 1);
        let info = k.cache_node_info("kmalloc-2048", 0).unwrap();
        assert_eq!((info.pages, info.objects), (1, 2));
        k.kfree(o).unwrap();
        drop(k);
        for p in keep {
            mm.free(p).unwrap();
        }
        assert!(all_free(&mm));
    }

    #[test]
    fn large_and_dma() {
        let mm = Mm::new(crate::mm::MmConfig {
            nodes: vec![crate::mm::NodeConfig {
                vnode: 0,
                cpus: vec![0],
                memory: vec![crate::mm::PhysRange {
                    gpa: pv_abi::Gpa(0x10_0000),
                    size: 31 << 20,
                    maddr: pv_abi::Maddr(0x10_0000),
                }],
            }],
            distances: vec![10],
            nr_cpus: 1,
            reserved: vec![],
            order: None,
        })
        .unwrap();
        let k = Kmalloc::new(&mm);
        let big = k.kmalloc(3 * 4096, Gfp::KERNEL).unwrap();
        assert_eq!(k.ksize(big), Some(16384));
        assert_eq!(k.node_info(0).large_pages, 4);
        let d = k.kmalloc(100, Gfp::DMA).unwrap();
        assert_eq!(k.cache_of(d).as_deref(), Some("dma-kmalloc-128"));
        assert_eq!(mm.page_zone(d.frame()).unwrap().zone, ZoneType::Dma);
        assert_eq!(
            k.kfree(Gpa(big.0 + 4096)),
            Err(SlabError::NotAnObject(Gpa(big.0 + 4096)))
        );
        k.kfree(big).unwrap();
        k.kfree(d).unwrap();
        assert_eq!(k.objects_in_use(), 0);
        // Objects left behind are freed (and counted) when the caches go.
        let _ = k.kmalloc(8, Gfp::KERNEL).unwrap();
        let _ = k.kmalloc(9000, Gfp::KERNEL).unwrap();
        assert_eq!(k.release_all(), 2);
        drop(k);
        assert!(all_free(&mm));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc(usize, u32),
        Free(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (prop_oneof![1usize..=4096, 4097usize..20000], 0u32..4)
                .prop_map(|(s, n)| Op::Alloc(s, n)),
            2 => any::<usize>().prop_map(Op::Free),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Random kmalloc_node/kfree traffic against a model of live
        /// objects: objects never overlap, sit on the node asked (nodes
        /// 0-1 have plenty of memory; 2 is memoryless, 3 means no node:
        /// both numa_mem_id()), have the size class's ksize; the
        /// bookkeeping holds; at the end every page is back.
        #[test]
        fn traffic_against_a_model(ops in proptest::collection::vec(op(), 1..300)) {
            let mm = machine(&[8, 8, 0], &[&[0], &[1], &[]], None);
            let k = Kmalloc::new(&mm);
            let mut live: Vec<(Gpa, usize)> = Vec::new();
            for o in ops {
                match o {
                    Op::Alloc(size, n) => {
                        let node = if n == 3 { NUMA_NO_NODE } else { n };
                        let obj = k.kmalloc_node(size, Gfp::KERNEL, node).unwrap();
                        let want_node = if n < 2 { n } else { 0 };
                        prop_assert_eq!(k.obj_nid(obj), Some(want_node));
                        let ks = k.ksize(obj).unwrap();
                        let class = KMALLOC_SIZES.iter().copied().find(|&s| s >= size)
                            .unwrap_or((PAGE_SIZE as usize) << get_order(size));
                        prop_assert_eq!(ks, class);
                        for &(a, l) in &live {
                            prop_assert!(obj.0 + ks as u64 <= a.0 || a.0 + l as u64 <= obj.0);
                        }
                        live.push((obj, ks));
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let (obj, _) = live.swap_remove(i % live.len());
                        prop_assert_eq!(k.kfree(obj), Ok(()));
                        prop_assert_eq!(k.kfree(obj).is_err(), true);
                    }
                    Op::Free(_) => {}
                }
            }
            prop_assert!(k.check().is_empty(), "{:?}", k.check());
            prop_assert_eq!(k.objects_in_use(), live.len() as u64);
            let per_node: u64 = (0..3).map(|n| { let i = k.node_info(n); i.inuse + i.large }).sum();
            prop_assert_eq!(per_node, live.len() as u64);
            for (obj, _) in live {
                k.kfree(obj).unwrap();
            }
            k.shrink();
            prop_assert_eq!(k.node_info(0), SlabNodeInfo::default());
            drop(k);
            prop_assert!(all_free(&mm));
        }
    }
}

//! `cargo xtask bench`: host benchmarks, each printed side by side with a
//! reference measured in the same run. Figures, not assertions: a slow
//! machine makes numbers slower, never a test red.
//!
//! 1. Order-0 page alloc+free pairs: the guest's page allocator (buddy with
//!    per-CPU lists) against `buddy_system_allocator::FrameAllocator`.
//! 2. Building every node's zonelists for 1024 nodes: the guest's builder
//!    against the literal transcription of Linux's algorithm; the orders must
//!    be identical.
//! 3. swiotlb map + bounce + unmap of 4 KiB and 64 KiB against a memcpy of
//!    the same size.
//! 4. The hypervisor's NUMA heap shared by N threads (N = available
//!    parallelism, at least 2), order-0 alloc+free pairs: every thread on
//!    its own node against all threads on one node, and one thread alone for
//!    scale. With a lock per node the first should grow with N while the
//!    second contends on one lock. The locks spin: on a host busier than N
//!    CPUs, a preempted lock holder makes the one-node figure erratic.
//! 5. Domain build time per GiB, for an automatically placed 1 GiB and
//!    4 GiB domain on a synthetic 4-node machine (3 GiB per node, discovered
//!    from SRAT/SLIT/MADT bytes, its heap bookkeeping only: no page of it is
//!    touched), with the hypervisor's own code, step by step: placement,
//!    claim + allocate, layout + the P->node check of every page, nested
//!    page tables (table pages from the heap, their contents in host
//!    memory); the guest image and zeroing the memory are left out. The
//!    reference: writing one u64 into every 4 KiB page of a host buffer, as
//!    many pages as the domain has, the least any per-page pass costs.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use acpi_numa::build::{slit, MadtBuilder, SratBuilder};
use guest_os::mm::linux_ref::{Kernel, Machine};
use guest_os::mm::zone::NR_ZONES;
use guest_os::mm::zonelist::{build_all_zonelists, CpuPenalty, ZonelistInput};
use guest_os::mm::{Gfp, Mm, MmConfig, NodeConfig, PhysRange, ZonelistOrder};
use hypervisor::domain::build::{allocate, pages_per_node};
use hypervisor::domain::placement::{self, MachineState};
use hypervisor::domain::{DomainConfig, DomainLayout};
use hypervisor::mm::addr::{MemRange, Mfn, PAGE_SIZE};
use hypervisor::mm::frame_table::FrameTable;
use hypervisor::mm::heap::{AllocRequest, Heap, HeapTopology};
use hypervisor::numa::topology::{self, ApicIdLayout, NumaOptions, Topology, TopologyInput};
use hypervisor::numa::{NodeId, MAX_NODES};
use hypervisor::svm::paging::{self, PageTables, TableMemory};
use pv_abi::{Gpa, Maddr};

/// Runs `f` (which does `iters` operations) a few times; the best run, per
/// operation.
fn time_per_op(iters: u64, runs: usize, mut f: impl FnMut(u64)) -> Duration {
    f(iters / 10 + 1); // warm-up
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f(iters);
            t.elapsed() / iters.max(1) as u32
        })
        .min()
        .unwrap_or_default()
}

fn row(what: &str, ours: Duration, reference: Duration, reference_name: &str, target: &str) {
    let ratio = reference.as_secs_f64() / ours.as_secs_f64().max(1e-12);
    println!(
        "{what:<34} numavisor {:>10.1} ns   {reference_name} {:>10.1} ns   x{ratio:>6.1}   ({target})",
        ours.as_secs_f64() * 1e9,
        reference.as_secs_f64() * 1e9
    );
}

const MIB: u64 = 1 << 20;

fn page_allocator() {
    // One node, 256 MiB above 4 GiB (a NORMAL zone), one CPU.
    let cfg = MmConfig {
        nodes: vec![NodeConfig {
            vnode: 0,
            cpus: vec![0],
            memory: vec![PhysRange {
                gpa: Gpa(1 << 32),
                size: 256 * MIB,
                maddr: Maddr(1 << 32),
            }],
        }],
        distances: vec![10],
        nr_cpus: 1,
        reserved: Vec::new(),
        order: None,
    };
    let mm = match Mm::new(cfg) {
        Ok(m) => m,
        Err(e) => {
            println!("page allocator: cannot build the guest's mm on the host: {e}");
            return;
        }
    };
    let ours = time_per_op(5_000_000, 5, |n| {
        for _ in 0..n {
            if let Ok(p) = mm.alloc_pages_node(0, Gfp::KERNEL, 0) {
                let _ = mm.free(black_box(p));
            }
        }
    });
    let mut frames = buddy_system_allocator::FrameAllocator::<32>::new();
    frames.add_frame(1 << 20, (1 << 20) + 65536);
    let reference = time_per_op(5_000_000, 5, |n| {
        for _ in 0..n {
            if let Some(f) = frames.alloc(1) {
                frames.dealloc(black_box(f), 1);
            }
        }
    });
    row(
        "order-0 alloc+free pair",
        ours,
        reference,
        "FrameAllocator",
        "target: at least 20x faster, under 50 ns",
    );
}

/// 1024 nodes in a ring of 32 groups of 32: distance 10 locally, 16 within
/// a group, 20 + 5 per group hop around the ring; a quarter memoryless.
fn big_machine(n: usize) -> (Vec<u32>, Vec<[bool; NR_ZONES]>) {
    let groups = 32;
    let per = n / groups;
    let mut d = vec![0u32; n * n];
    for a in 0..n {
        for b in 0..n {
            let (ga, gb) = (a / per, b / per);
            let hop = ga.abs_diff(gb).min(groups - ga.abs_diff(gb)) as u32;
            d[a * n + b] = if a == b {
                10
            } else if ga == gb {
                16
            } else {
                20 + 5 * hop
            };
        }
    }
    let populated = (0..n)
        .map(|k| {
            let mut z = [false; NR_ZONES];
            if k % 4 != 3 {
                z[NR_ZONES - 1] = true;
            }
            if k == 0 {
                z[0] = true;
                z[1] = true;
            }
            z
        })
        .collect();
    (d, populated)
}

fn zonelists() {
    let n = 1024;
    let (distances, populated) = big_machine(n);
    let input = ZonelistInput {
        nr_nodes: n,
        distances: &distances,
        populated: &populated,
        cpus: CpuPenalty::X86,
    };
    let t = Instant::now();
    let ours = build_all_zonelists(&input, ZonelistOrder::Node);
    let ours_time = t.elapsed();

    let machine = Machine {
        nr_node_ids: n,
        distance: (0..n)
            .map(|a| (0..n).map(|b| distances[a * n + b] as i32).collect())
            .collect(),
        possible: vec![true; n],
        online: vec![true; n],
        cpus: vec![false; n],
        present_pages: populated
            .iter()
            .map(|z| z.map(|p| if p { 1024 } else { 0 }))
            .collect(),
        managed_pages: populated
            .iter()
            .map(|z| z.map(|p| if p { 1024 } else { 0 }))
            .collect(),
        boot_node: 0,
    };
    let mut kernel = Kernel::new(&machine);
    let t = Instant::now();
    kernel.build_all_zonelists();
    let linux_time = t.elapsed();
    let identical = (0..n).all(|k| {
        let linux: Vec<u32> = kernel.printed_order[k].iter().map(|&x| x as u32).collect();
        linux == ours.node_order[k]
    });
    println!(
        "{:<34} numavisor {:>10.2} ms   Linux (literal) {:>8.2} ms   x{:>6.1}   (target: under 100 ms, identical order: {})",
        "zonelists for 1024 nodes",
        ours_time.as_secs_f64() * 1e3,
        linux_time.as_secs_f64() * 1e3,
        linux_time.as_secs_f64() / ours_time.as_secs_f64().max(1e-12),
        if identical { "yes" } else { "NO" }
    );
}

fn swiotlb_bounce() {
    for size in [4096usize, 65536] {
        let mut w = match swiotlb::bench::Workload::new(size) {
            Ok(w) => w,
            Err(e) => {
                println!("swiotlb {size}: {e:?}");
                return;
            }
        };
        let iters = if size == 4096 { 200_000 } else { 20_000 };
        let bounce = time_per_op(iters, 5, |n| {
            let _ = black_box(w.bounce(swiotlb::Direction::ToDevice, n));
        });
        let copy = time_per_op(iters, 5, |n| {
            let _ = black_box(w.memcpy(n));
        });
        let ratio = copy.as_secs_f64() / bounce.as_secs_f64().max(1e-12);
        println!(
            "{:<34} numavisor {:>10.1} ns   memcpy {:>10.1} ns   {:.2} of memcpy's bandwidth, {:+.1} ns over the copy   ({})",
            format!("swiotlb map+bounce+unmap {} KiB", size / 1024),
            bounce.as_secs_f64() * 1e9,
            copy.as_secs_f64() * 1e9,
            ratio,
            (bounce.as_secs_f64() - copy.as_secs_f64()) * 1e9,
            if size == 4096 { "target: under 150 ns over the copy" } else { "target: at least 0.8" }
        );
    }
}

/// A heap of `nodes` nodes of 64 MiB each above 4 GiB, all memory added.
fn numa_heap(nodes: usize) -> Result<Heap, String> {
    let ranges: Vec<(MemRange, NodeId)> = (0..nodes as u64)
        .map(|n| {
            (
                MemRange::from_base_len((4 << 30) + n * 64 * MIB, 64 * MIB),
                NodeId(n as u8),
            )
        })
        .collect();
    let ft = FrameTable::new(&ranges).map_err(|e| e.to_string())?;
    let distances = (0..nodes * nodes)
        .map(|i| if i / nodes == i % nodes { 10 } else { 20 })
        .collect();
    let topo = HeapTopology {
        nr_nodes: nodes,
        distances,
        cpu_nodes: (0..nodes).map(|n| NodeId(n as u8)).collect(),
    };
    let heap = Heap::new(ft, topo).map_err(|e| e.to_string())?;
    for (r, _) in &ranges {
        heap.add_free_range(*r).map_err(|e| e.to_string())?;
    }
    Ok(heap)
}

/// Order-0 alloc+free pairs per second over all threads, best of 5 runs:
/// thread `t` allocates on `node_of(t)`.
fn heap_pairs_per_sec(
    heap: &Heap,
    threads: usize,
    node_of: impl Fn(usize) -> NodeId + Sync,
) -> f64 {
    const PAIRS: u64 = 200_000;
    // The run lasts from the first thread's start to the last one's end.
    let run = |pairs: u64| -> Duration {
        let start = Barrier::new(threads);
        let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (start, node_of) = (&start, &node_of);
                    s.spawn(move || {
                        let req = AllocRequest::exact(node_of(t));
                        start.wait();
                        let begin = Instant::now();
                        for _ in 0..pairs {
                            if let Ok(m) = heap.alloc(0, req) {
                                let _ = heap.free(black_box(m), 0);
                            }
                        }
                        (begin, Instant::now())
                    })
                })
                .collect();
            workers.into_iter().filter_map(|w| w.join().ok()).collect()
        });
        let first = spans.iter().map(|s| s.0).min();
        let last = spans.iter().map(|s| s.1).max();
        match (first, last) {
            (Some(a), Some(b)) => b - a,
            _ => Duration::MAX,
        }
    };
    run(PAIRS / 10); // warm-up
    let best = (0..5).map(|_| run(PAIRS)).min().unwrap_or_default();
    (threads as u64 * PAIRS) as f64 / best.as_secs_f64().max(1e-12)
}

fn heap_threads() {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, MAX_NODES);
    let heap = match numa_heap(threads) {
        Ok(h) => h,
        Err(e) => {
            println!("NUMA heap: cannot build it on the host: {e}");
            return;
        }
    };
    // Keep one page of each node allocated: its free buddy then serves a
    // lone thread's pairs without splitting and merging a 64 MiB block each
    // time, so the figures measure the locks, not the depth of the buddy tree.
    for n in 0..threads {
        if heap.alloc(0, AllocRequest::exact(NodeId(n as u8))).is_err() {
            println!("NUMA heap: node {n} has no page");
            return;
        }
    }
    let own = heap_pairs_per_sec(&heap, threads, |t| NodeId(t as u8));
    let one = heap_pairs_per_sec(&heap, threads, |_| NodeId(0));
    let alone = heap_pairs_per_sec(&heap, 1, |_| NodeId(0));
    println!(
        "{:<34} own nodes {:>8.2} M/s   one node {:>8.2} M/s   x{:>6.1}   ({threads} threads, order-0 alloc+free pairs; one thread alone: {:.2} M/s)",
        "heap allocations/s, all threads",
        own / 1e6,
        one / 1e6,
        own / one.max(1e-12),
        alone / 1e6
    );
}

const GIB: u64 = 1 << 30;
/// The domain every benchmark build belongs to.
const BENCH_DOMAIN: u32 = 1;
/// Nodes of the synthetic machine, each with 3 GiB above 4 GiB and 2 CPUs.
const BUILD_NODES: u64 = 4;
const NODE_BYTES: u64 = 3 * GIB;

/// The synthetic machine as the hypervisor discovers a real one: SRAT,
/// SLIT and MADT bytes through `numa::topology::build`, and a heap (frame
/// table and free lists, bookkeeping only: no page of it is ever touched)
/// over the same RAM.
fn build_machine() -> Result<(Topology, Heap), String> {
    let ranges: Vec<(MemRange, NodeId)> = (0..BUILD_NODES)
        .map(|n| {
            (
                MemRange::from_base_len(4 * GIB + n * NODE_BYTES, NODE_BYTES),
                NodeId(n as u8),
            )
        })
        .collect();
    let mut srat = SratBuilder::new();
    let mut madt = MadtBuilder::new();
    for n in 0..BUILD_NODES {
        for c in 0..2u8 {
            let apic = (2 * n) as u8 + c;
            srat = srat.cpu(n as u32, apic);
            madt = madt.lapic(apic, apic, 1);
        }
        srat = srat.mem(n as u32, ranges[n as usize].0.start.0, NODE_BYTES);
    }
    let nodes = BUILD_NODES as usize;
    // A ring: 10 locally, 20 to a neighbour, 30 across.
    let distances: Vec<u8> = (0..nodes * nodes)
        .map(|i| {
            let hop = (i / nodes).abs_diff(i % nodes);
            10 + 10 * hop.min(nodes - hop) as u8
        })
        .collect();
    let (srat, slit, madt) = (srat.build(), slit(BUILD_NODES, &distances), madt.build());
    let ram: Vec<MemRange> = ranges.iter().map(|r| r.0).collect();
    let mut warnings = Vec::new();
    let topology = topology::build(
        &TopologyInput {
            ram: &ram,
            srat: Some(&srat),
            slit: Some(&slit),
            madt: Some(&madt),
            bsp_apic_id: 0,
            apic_id_layout: ApicIdLayout::default(),
            options: NumaOptions::default(),
        },
        &mut |w: &str| warnings.push(w.to_string()),
    );
    if topology.nr_nodes() != nodes {
        return Err(format!(
            "the synthetic SRAT gave {} nodes ({})",
            topology.nr_nodes(),
            warnings.join("; ")
        ));
    }
    let ft = FrameTable::new(&ranges).map_err(|e| e.to_string())?;
    let topo = HeapTopology {
        nr_nodes: nodes,
        distances: topology.distances().to_vec(),
        cpu_nodes: topology.cpus.iter().map(|c| c.node).collect(),
    };
    let heap = Heap::new(ft, topo).map_err(|e| e.to_string())?;
    for (r, _) in &ranges {
        heap.add_free_range(*r).map_err(|e| e.to_string())?;
    }
    Ok((topology, heap))
}

/// Nested page-table pages as the hypervisor takes them (`HeapTables`: an
/// order-0 heap page near the boot vCPU, owned by the domain), their
/// contents in host memory instead of at the machine address.
struct HostTables<'h> {
    heap: &'h Heap,
    node: NodeId,
    taken: Vec<Mfn>,
    contents: HashMap<u64, Box<[u64; 512]>>,
}

impl TableMemory for HostTables<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let mfn = self.heap.alloc(0, AllocRequest::node(self.node)).ok()?;
        if self.heap.set_owner(mfn, BENCH_DOMAIN).is_err() {
            let _ = self.heap.free(mfn, 0);
            return None;
        }
        self.taken.push(mfn);
        self.contents.insert(mfn.maddr().0, Box::new([0; 512]));
        Some(mfn.maddr().0)
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        self.contents.get(&table).map_or(0, |t| t[index & 511])
    }
    fn write(&mut self, table: u64, index: usize, entry: u64) {
        if let Some(t) = self.contents.get_mut(&table) {
            t[index & 511] = entry;
        }
    }
}

/// One build's steps, in order: placement, claim + allocate, layout +
/// P->node check, nested page tables.
type Steps = [Duration; 4];

/// What one build placed: its nodes and its nested paging.
struct Built {
    nodes: Vec<NodeId>,
    /// Heap blocks its memory came in.
    blocks: usize,
    pages_2m: u64,
    pages_4k: u64,
    table_pages: usize,
}

/// Builds an automatically placed domain of `mib` MiB and 4 vCPUs the way
/// `bare_metal::domains` does (minus the guest image and zeroing its
/// memory), timing each step, then gives everything back.
fn build_domain_once(topology: &Topology, heap: &Heap, mib: u64) -> Result<(Steps, Built), String> {
    let text = format!("name = \"bench\"\nmemory = {mib}\nvcpus = 4\n");
    let config = DomainConfig::parse("bench.cfg", text.as_bytes()).map_err(|e| e.to_string())?;

    let t = Instant::now();
    let free = placement::unclaimed_free_bytes(heap, topology);
    let load = vec![0u32; topology.cpus.len()];
    let online = vec![true; topology.cpus.len()];
    let placed = placement::place_domain(
        &config,
        topology,
        &MachineState {
            unclaimed_free: &free,
            vcpus_on_cpu: &load,
            online: &online,
        },
    )?;
    let placement_time = t.elapsed();
    let config = placed.config;

    let t = Instant::now();
    let mut claim = heap
        .claim(BENCH_DOMAIN, &pages_per_node(&config))
        .map_err(|e| format!("cannot claim: {e}"))?;
    let alloc = allocate(heap, &mut claim, &config);
    heap.release(claim);
    let alloc = alloc?;
    let claim_time = t.elapsed();

    let t = Instant::now();
    let pnodes: Vec<NodeId> = config.vnodes.iter().map(|v| v.pnode).collect();
    let checked =
        DomainLayout::compute(config.layout, &config.vnodes, &alloc.extents).and_then(|layout| {
            layout.verify_every_page(|m| heap.frame_table().node_of(m), &pnodes)?;
            Ok(layout)
        });
    let layout_time = t.elapsed();
    let layout = match checked {
        Ok(l) => l,
        Err(e) => {
            let _ = alloc.free(heap);
            return Err(e);
        }
    };

    let t = Instant::now();
    let npt_node = config
        .vnode_of_vcpu(0)
        .and_then(|k| pnodes.get(k).copied())
        .unwrap_or(NodeId(0));
    let tables = HostTables {
        heap,
        node: npt_node,
        taken: Vec::new(),
        contents: HashMap::new(),
    };
    let mapped = PageTables::new(tables, paging::WRITABLE | paging::USER).and_then(|mut npt| {
        for m in &layout.mappings {
            npt.map(m.gpa.0, m.maddr().0, m.bytes())?;
        }
        Ok(npt)
    });
    let npt_time = t.elapsed();

    let mut nodes = pnodes;
    nodes.sort();
    nodes.dedup();
    let result = match mapped {
        Ok(npt) => {
            let built = Built {
                nodes,
                blocks: alloc.blocks.len(),
                pages_2m: npt.pages_2m,
                pages_4k: npt.pages_4k,
                table_pages: npt.table_pages().len(),
            };
            let (tables, _) = npt.into_memory();
            for mfn in tables.taken {
                let _ = heap.free(mfn, 0);
            }
            Ok(([placement_time, claim_time, layout_time, npt_time], built))
        }
        Err(e) => Err(format!("nested page tables: {e}")),
    };
    alloc
        .free(heap)
        .map_err(|e| format!("giving the memory back: {e}"))?;
    result
}

/// Time per GiB of writing one u64 into every 4 KiB page of `buf`, as many
/// times as `pages` needs: the least any per-page pass over the domain
/// costs. `buf` is already faulted in.
fn page_walk(buf: &mut [u64], pages: u64) -> Duration {
    let per_page = (PAGE_SIZE / 8) as usize;
    let buf_pages = (buf.len() / per_page).max(1) as u64;
    let t = Instant::now();
    let mut left = pages;
    while left > 0 {
        let n = left.min(buf_pages);
        for p in 0..n as usize {
            let w = &mut buf[p * per_page];
            *w = w.wrapping_add(1);
        }
        black_box(&mut *buf);
        left -= n;
    }
    t.elapsed()
}

/// Time of zeroing `bytes` through `buf` (what the real build also does to
/// every page it hands a guest).
fn zeroing(buf: &mut [u64], bytes: u64) -> Duration {
    let buf_bytes = (buf.len() * 8) as u64;
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf_bytes);
        buf[..(n / 8) as usize].fill(0);
        black_box(&mut *buf);
        left -= n;
    }
    t.elapsed()
}

fn ms_per_gib(d: Duration, bytes: u64) -> f64 {
    d.as_secs_f64() * 1e3 * GIB as f64 / bytes as f64
}

fn build_row(what: &str, ours: f64, walk: f64, note: &str) {
    println!(
        "{what:<34} numavisor {ours:>7.4} ms/GiB   page walk {walk:>7.4} ms/GiB   {:>6.2}% of the walk   ({note})",
        100.0 * ours / walk.max(1e-12)
    );
}

fn domain_build() {
    let (topology, heap) = match build_machine() {
        Ok(m) => m,
        Err(e) => {
            println!("domain build: cannot build the synthetic machine: {e}");
            return;
        }
    };
    // 64 MiB: larger than a last-level cache, small beside the domains.
    let mut buf = vec![1u64; (64 * MIB / 8) as usize];
    let before = heap.probe();
    for gib in [1u64, 4] {
        let bytes = gib * GIB;
        let pages = bytes / PAGE_SIZE;
        let mut best: Option<Steps> = None;
        let mut best_total = Duration::MAX;
        let mut last = None;
        for run in 0..6 {
            match build_domain_once(&topology, &heap, gib * 1024) {
                // Run 0 warms up.
                Ok((steps, built)) if run > 0 => {
                    best_total = best_total.min(steps.iter().sum());
                    best = Some(match best {
                        Some(b) => core::array::from_fn(|i| b[i].min(steps[i])),
                        None => steps,
                    });
                    last = Some(built);
                }
                Ok(_) => {}
                Err(e) => {
                    println!("domain build {gib} GiB: {e}");
                    return;
                }
            }
        }
        let (Some(steps), Some(built)) = (best, last) else {
            return;
        };
        page_walk(&mut buf, pages / 10 + 1); // warm-up
        let walk = (0..5)
            .map(|_| page_walk(&mut buf, pages))
            .min()
            .unwrap_or_default();
        let zero = (0..5)
            .map(|_| zeroing(&mut buf, bytes))
            .min()
            .unwrap_or_default();
        let walk = ms_per_gib(walk, bytes);
        let nodes: Vec<String> = built.nodes.iter().map(|n| n.0.to_string()).collect();
        let names = [
            "placement",
            "claim+allocate",
            "layout+P->node check",
            "nested page tables",
        ];
        let notes = [
            format!("automatic, on node(s) {}", nodes.join(",")),
            format!(
                "{pages} pages in {} heap block(s), exact node",
                built.blocks
            ),
            format!("{pages} pages looked up"),
            format!(
                "{} x 2 MiB + {} x 4 KiB, {} table pages",
                built.pages_2m, built.pages_4k, built.table_pages
            ),
        ];
        for ((name, note), step) in names.iter().zip(&notes).zip(steps) {
            build_row(
                &format!("build {gib} GiB: {name}"),
                ms_per_gib(step, bytes),
                walk,
                note,
            );
        }
        build_row(
            &format!("build {gib} GiB: total"),
            ms_per_gib(best_total, bytes),
            walk,
            &format!(
                "page walk: one u64 written per 4 KiB page of a 64 MiB host buffer; zeroing the memory, which the real build adds: {:.1} ms/GiB; heap as before: {}",
                ms_per_gib(zero, bytes),
                if heap.probe() == before { "yes" } else { "NO" }
            ),
        );
    }
}

fn main() {
    println!("numavisor benchmarks (host, release build; best of 5 runs)");
    page_allocator();
    zonelists();
    swiotlb_bounce();
    heap_threads();
    domain_build();
}

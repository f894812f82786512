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

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use guest_os::mm::linux_ref::{Kernel, Machine};
use guest_os::mm::zone::NR_ZONES;
use guest_os::mm::zonelist::{build_all_zonelists, CpuPenalty, ZonelistInput};
use guest_os::mm::{Gfp, Mm, MmConfig, NodeConfig, PhysRange, ZonelistOrder};
use hypervisor::mm::addr::MemRange;
use hypervisor::mm::frame_table::FrameTable;
use hypervisor::mm::heap::{AllocRequest, Heap, HeapTopology};
use hypervisor::numa::{NodeId, MAX_NODES};
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

fn main() {
    println!("numavisor benchmarks (host, release build; best of 5 runs)");
    page_allocator();
    zonelists();
    swiotlb_bounce();
    heap_threads();
}

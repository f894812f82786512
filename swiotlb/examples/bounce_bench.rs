//! Rough host timing of the `swiotlb::bench` workloads, for a quick check
//! while working on the pool (the real benchmark is `cargo xtask bench`):
//!
//! ```text
//! cargo run -p swiotlb --release --example bounce_bench
//! ```
//!
//! For each size it prints a plain memcpy, then map + bounce + unmap per
//! direction: the bandwidth ratio against memcpy (the target is at least 0.8
//! at 64 KiB for a one-copy direction) and the time beyond the copies (the
//! target is under 150 ns at 4 KiB).

use std::time::Instant;
use swiotlb::bench::Workload;
use swiotlb::Direction;

/// Best (lowest) nanoseconds per iteration over a few runs.
fn best_ns(mut run: impl FnMut(u64), iterations: u64) -> f64 {
    run(iterations / 10); // warm caches and the allocator up
    (0..9)
        .map(|_| {
            let start = Instant::now();
            run(iterations);
            start.elapsed().as_nanos() as f64 / iterations as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    for size in [4096usize, 64 << 10] {
        let mut w = Workload::new(size).expect("valid size");
        let iterations = ((512u64 << 20) / size as u64).max(1000);
        let gbps = |ns: f64, copies: f64| copies * size as f64 / ns;
        let copy = best_ns(
            |n| {
                w.memcpy(n);
            },
            iterations,
        );
        println!(
            "{:>6} KiB  memcpy                {copy:8.1} ns  {:6.2} GB/s",
            size >> 10,
            gbps(copy, 1.0)
        );
        for (dir, copies) in [
            (Direction::ToDevice, 1.0),
            (Direction::FromDevice, 2.0),
            (Direction::Bidirectional, 2.0),
        ] {
            let bounce = best_ns(
                |n| {
                    w.bounce(dir, n).expect("bounce");
                },
                iterations,
            );
            println!(
                "{:>6} KiB  {:<20} {bounce:8.1} ns  {:6.2} GB/s  ratio {:.2} of memcpy  overhead {:+.1} ns beyond {copies} copies",
                size >> 10,
                format!("{dir:?}"),
                gbps(bounce, copies),
                copies * copy / bounce,
                bounce - copies * copy,
            );
        }
    }
}

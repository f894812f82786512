//! The guest's benchmark (`bench` on the guest command line): order-0 page
//! alloc+free pairs timed with the cycle counter, printed as
//! `guest: bench: order-0 alloc+free pair: C cycles (N pairs)` for
//! `cargo xtask bench` to show beside the host figure. A figure, not a test.

use super::{Gfp, Mm};
use crate::println;

/// Pairs per measurement.
pub const PAIRS: u64 = 100_000;

/// Cycles per pair, the best of three runs of `pairs`; `None` without a
/// cycle counter or if an allocation fails.
pub fn alloc_free_cycles(mm: &Mm, pairs: u64, cycles: &dyn Fn() -> Option<u64>) -> Option<u64> {
    let nid = mm.numa_mem_id();
    let mut best = u64::MAX;
    for _ in 0..3 {
        let start = cycles()?;
        for _ in 0..pairs {
            let page = mm.alloc_pages_node(nid, Gfp::KERNEL, 0).ok()?;
            mm.free(core::hint::black_box(page)).ok()?;
        }
        let end = cycles()?;
        best = best.min(end.saturating_sub(start) / pairs.max(1));
    }
    Some(best)
}

/// Runs the benchmark and prints its line.
pub fn run(mm: &Mm, cycles: &dyn Fn() -> Option<u64>) {
    match alloc_free_cycles(mm, PAIRS, cycles) {
        Some(c) => println!("guest: bench: order-0 alloc+free pair: {c} cycles ({PAIRS} pairs)"),
        None => println!("guest: bench: no cycle counter or no memory: nothing measured"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn counts_cycles_per_pair() {
        let cfg = crate::mm::MmConfig {
            nodes: alloc::vec![crate::mm::NodeConfig {
                vnode: 0,
                cpus: alloc::vec![0],
                memory: alloc::vec![crate::mm::PhysRange {
                    gpa: pv_abi::Gpa(1 << 32),
                    size: 16 << 20,
                    maddr: pv_abi::Maddr(1 << 32),
                }],
            }],
            distances: alloc::vec![10],
            nr_cpus: 1,
            reserved: alloc::vec::Vec::new(),
            order: None,
        };
        let mm = Mm::new(cfg).expect("a one-node mm");
        let clock = AtomicU64::new(0);
        // Each read of the clock advances it by 1000: 1000 cycles per run.
        let tick = || Some(clock.fetch_add(1000, Ordering::Relaxed));
        assert_eq!(alloc_free_cycles(&mm, 10, &tick), Some(100));
        assert_eq!(alloc_free_cycles(&mm, 10, &|| None), None);
    }
}

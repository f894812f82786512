//! Per-CPU page lists (Linux's `per_cpu_pages`) for order-0 pages: each CPU
//! keeps a short list of free pages per zone, so most order-0 allocations
//! and frees touch neither the free lists nor (on SMP) the zone lock.
//!
//! As Linux (classic `pageset_set_batch`): an allocation from an empty list
//! first moves `batch` pages from the buddy lists (`rmqueue_bulk`); a free
//! puts the page at the front of the list and, once the list holds `high`
//! pages, returns `batch` pages from its back (`free_pcppages_bulk`).
//! Pages on these lists are free but not counted in the zone's free pages,
//! as `NR_FREE_PAGES` does not count them.

use super::buddy::{Buddy, List, PageState};

/// `batch` and `high` of a zone's per-CPU lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcpParams {
    /// Pages moved at a time.
    pub batch: u32,
    /// List length that triggers a bulk free.
    pub high: u32,
}

/// Linux's `zone_batchsize`: about a quarter of 0.1% of the zone or of
/// 1 MiB, whichever is smaller, clamped to `2^n - 1`.
pub fn zone_batchsize(managed: u64) -> u32 {
    let mut batch = (managed >> 10).min((1 << 20) / pv_abi::PAGE_SIZE);
    batch /= 4;
    if batch < 1 {
        batch = 1;
    }
    let x = batch + batch / 2;
    // rounddown_pow_of_two(x) - 1
    ((1u64 << (63 - x.leading_zeros())) - 1) as u32
}

impl PcpParams {
    /// `pageset_set_batch(zone_batchsize)`: `high = 6 * batch`,
    /// `batch = max(1, batch)`.
    pub fn for_zone(managed: u64) -> Self {
        let b = zone_batchsize(managed);
        PcpParams {
            batch: b.max(1),
            high: 6 * b,
        }
    }
}

/// Takes an order-0 page for a CPU whose list is `pcp`, refilling the list
/// with up to `batch` pages from the buddy lists when it is empty. The page
/// comes back marked allocated.
#[inline]
pub fn alloc(b: &mut Buddy, pcp: &mut List, p: PcpParams) -> Option<u32> {
    if pcp.is_empty() {
        refill(b, pcp, p);
    }
    let i = pcp.pop_front(b.meta_mut())?;
    b.set_state(i, PageState::Allocated, 0);
    Some(i)
}

/// `rmqueue_bulk`: up to `batch` pages from the buddy lists onto `pcp`.
#[inline(never)]
fn refill(b: &mut Buddy, pcp: &mut List, p: PcpParams) {
    for _ in 0..p.batch {
        let Some(i) = b.alloc(0) else { break };
        b.set_state(i, PageState::Pcp, 0);
        pcp.push_back(b.meta_mut(), i);
    }
}

/// Frees the allocated order-0 page `i` onto the list `pcp`; bulk-frees
/// `batch` pages from the back once the list reaches `high`.
#[inline]
pub fn free(b: &mut Buddy, pcp: &mut List, i: u32, p: PcpParams) {
    b.set_state(i, PageState::Pcp, 0);
    pcp.push_front(b.meta_mut(), i);
    if pcp.len() >= p.high {
        free_bulk(b, pcp, p);
    }
}

/// `free_pcppages_bulk`: `batch` pages from the back of `pcp` to the buddy
/// lists.
#[inline(never)]
fn free_bulk(b: &mut Buddy, pcp: &mut List, p: PcpParams) {
    for _ in 0..p.batch {
        let Some(j) = pcp.pop_back(b.meta_mut()) else {
            break;
        };
        b.free(j, 0);
    }
}

/// Returns every page of `pcp` to the buddy lists (`drain_pages_zone`);
/// the number of pages.
pub fn drain(b: &mut Buddy, pcp: &mut List) -> u32 {
    let mut n = 0;
    while let Some(j) = pcp.pop_back(b.meta_mut()) {
        b.free(j, 0);
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use pv_abi::{Gfn, Maddr};

    #[test]
    fn batch_sizes_as_linux() {
        assert_eq!(zone_batchsize(0), 0);
        assert_eq!(PcpParams::for_zone(0), PcpParams { batch: 1, high: 0 });
        // 64 MiB: 16384 >> 10 = 16, / 4 = 4, rounddown_pow2(6) - 1 = 3.
        assert_eq!(PcpParams::for_zone(16384), PcpParams { batch: 3, high: 18 });
        // Large zones: 256 / 4 = 64, rounddown_pow2(96) - 1 = 63.
        assert_eq!(zone_batchsize(1 << 30), 63);
        assert_eq!(zone_batchsize(8 << 10), 1);
    }

    #[test]
    fn refill_bulk_free_and_drain() {
        let mut b = Buddy::new(&[(Gfn(0), 1024, Maddr(0))], &[(0, 1024)]).unwrap();
        let p = PcpParams { batch: 3, high: 6 };
        let mut l = List::EMPTY;
        let a = alloc(&mut b, &mut l, p).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(b.nr_free(), 1021);
        let mut got = vec![a];
        for _ in 0..5 {
            got.push(alloc(&mut b, &mut l, p).unwrap());
        }
        assert_eq!(l.len(), 0);
        for (k, i) in got.into_iter().enumerate() {
            free(&mut b, &mut l, i, p);
            // At 6 the list drops to 3.
            assert_eq!(l.len(), if k < 5 { k as u32 + 1 } else { 3 });
        }
        let (c, bad) = b.check(&[l]);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!((c.free, c.pcp), (1021, 3));
        assert_eq!(drain(&mut b, &mut l), 3);
        assert_eq!(b.nr_free(), 1024);
        assert_eq!(b.free_counts()[10], 1);
    }
}

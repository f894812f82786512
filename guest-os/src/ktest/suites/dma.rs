//! Suite `dma`: the DMA API on this domain's real memory and its real
//! bounce pool (set up at boot through `DMA_EXCHANGE`), no device needed:
//! where the pool is, the bounce decision for devices of every mask width,
//! that a device is never handed an address where the buffer is not, the
//! pool's copies and syncs, a pool too small for the load, bad handles,
//! coherent buffers, and statistics that add up.
//!
//! Buffers come from the kernel heap (identity-mapped: a pointer is its
//! guest-physical address) and are only ever read and written through the
//! platform's physical-memory copies, like the DMA layer's own.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use swiotlb::{DmaAddr, MapError};

use crate::boot::Guest;
use crate::dma::setup::Exchange;
use crate::dma::{Direction, Dma, DmaDevice, DmaError, Mode, PhysMem};
use crate::ktest::{ensure, problems, skip, Suite, Test, TestError, TestResult};
use crate::println;

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "dma",
    tests: &[
        Test {
            name: "pool_below_the_limit",
            run: pool_below_the_limit,
        },
        Test {
            name: "bounce_decision",
            run: bounce_decision,
        },
        Test {
            name: "never_where_the_buffer_is_not",
            run: never_where_the_buffer_is_not,
        },
        Test {
            name: "bounce_copies_and_syncs",
            run: bounce_copies_and_syncs,
        },
        Test {
            name: "pool_too_small_for_the_load",
            run: pool_too_small_for_the_load,
        },
        Test {
            name: "bad_handles_are_refused",
            run: bad_handles_are_refused,
        },
        Test {
            name: "coherent_buffer",
            run: coherent_buffer,
        },
        Test {
            name: "statistics_add_up",
            run: statistics_add_up,
        },
    ],
};

/// A page-aligned buffer from the kernel heap, freed on drop.
pub struct Buf {
    ptr: *mut u8,
    layout: Layout,
}

impl Buf {
    /// `len` zeroed bytes, page-aligned.
    pub fn new(len: usize) -> Result<Buf, TestError> {
        let layout = Layout::from_size_align(len.max(1), 4096)
            .map_err(|_| TestError::Fail(format!("bad buffer size {len}")))?;
        // SAFETY: a non-zero-sized layout.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(TestError::Fail(format!(
                "no {len} bytes in the kernel heap"
            )));
        }
        Ok(Buf { ptr, layout })
    }

    /// Its guest-physical address (the heap is identity-mapped).
    pub fn gpa(&self, g: &Guest) -> u64 {
        crate::hypercall::gpa_of(g.p, self.ptr.cast_const()).0
    }

    /// [`Buf::new`], skipping the test where the kernel heap is not guest
    /// memory (the host tests' model, whose heap is the host's).
    pub fn in_guest_memory(g: &Guest, len: usize) -> Result<Buf, TestError> {
        let b = Buf::new(len)?;
        if dma(g).map.maddr(b.gpa(g)).is_none() {
            return Err(TestError::Skip(
                "the kernel heap is not guest memory here".into(),
            ));
        }
        Ok(b)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

/// Reads guest memory.
pub fn peek(g: &Guest, gpa: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    g.p.read_phys(pv_abi::Gpa(gpa), &mut v);
    v
}

/// Writes guest memory the test owns.
pub fn poke(g: &Guest, gpa: u64, bytes: &[u8]) {
    g.p.write_phys(pv_abi::Gpa(gpa), bytes);
}

/// A recognisable pattern: byte `i` of stream `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(131) ^ seed.wrapping_mul(0x9e37) ^ (i >> 8)) as u8)
        .collect()
}

/// The DMA layer.
pub fn dma(g: &Guest) -> &Dma<PhysMem> {
    &g.dma.dma
}

/// The pool must exist for this test.
fn need_pool(g: &Guest) -> Result<&crate::dma::BouncePool, TestError> {
    match &dma(g).pool {
        Some(p) => Ok(p),
        None => Err(TestError::Skip(
            "no bounce pool (no DMA device, dma=direct, or no DMA_EXCHANGE)".into(),
        )),
    }
}

/// A device that reaches the pool: the pool's own width.
fn pool_device(g: &Guest) -> Result<DmaDevice, TestError> {
    let p = need_pool(g)?;
    Ok(DmaDevice::with_bits("pool-width", p.bits))
}

fn pool_below_the_limit(g: &Guest) -> TestResult {
    let p = need_pool(g)?;
    let limit = crate::dma::mask_of_bits(p.bits);
    ensure!(
        p.maddr.checked_add(p.bytes - 1).is_some_and(|l| l <= limit),
        "pool at machine [{:#x}-{:#x}) is not below 2^{}",
        p.maddr,
        p.maddr + p.bytes,
        p.bits
    );
    ensure!(
        dma(g).map.maddr(p.gpa) == Some(p.maddr),
        "the machine map does not know the exchanged pool"
    );
    ensure!(
        p.pool.bus_base() == DmaAddr::new(p.maddr) && p.pool.size() as u64 == p.bytes,
        "the pool's bus range is not the exchanged memory"
    );
    let xs: &[Exchange] = &g.dma.exchanges;
    if let Some(x) = xs.first() {
        ensure!(
            x.maddr == p.maddr && x.bits == p.bits,
            "the exchange record disagrees with the pool"
        );
        // The pool's bytes read back what was written through the guest's
        // own mapping of them (the exchange remapped them).
        let orig = peek(g, p.gpa, 16);
        let mut bus = [0u8; 16];
        p.pool
            .bus_read(DmaAddr::new(p.maddr), &mut bus)
            .map_err(|e| format!("{e}"))?;
        ensure!(orig == bus, "pool memory differs seen two ways");
    }
    Ok(())
}

/// Masks from 24 to 64 bits, and the domain's devices.
fn devices(g: &Guest) -> Vec<DmaDevice> {
    let mut v: Vec<DmaDevice> = [24u32, 28, 30, 32, 36, 40, 48, 64]
        .iter()
        .map(|&b| DmaDevice::with_bits(&format!("{b}-bit"), b))
        .collect();
    if let Some(e) = g.dma.edu() {
        v.push(e.dev.clone());
    }
    v
}

fn bounce_decision(g: &Guest) -> TestResult {
    let d = dma(g);
    let buf = Buf::in_guest_memory(g, 8192)?;
    let gpa = buf.gpa(g);
    let mut bad = Vec::new();
    for dev in devices(g) {
        for (off, len) in [(0u64, 1u64), (100, 4096), (4095, 2), (0, 8192)] {
            let want = d.decision(&dev, gpa + off, len);
            let got = d.map_single(&dev, gpa + off, len, Direction::ToDevice);
            match (want, &got) {
                (Some(b), Ok(m)) if m.bounced == b => {}
                (None, Err(DmaError::Unreachable { .. } | DmaError::PoolUnreachable { .. })) => {}
                _ => bad.push(format!(
                    "{}: {len} bytes at {:#x}: expected {want:?}, got {got:?}",
                    dev.name,
                    gpa + off
                )),
            }
            if let Ok(m) = got {
                if let Err(e) = d.unmap_single(&dev, m.dma, len, Direction::ToDevice) {
                    bad.push(format!("unmap: {e}"));
                }
            }
        }
    }
    problems(bad)
}

fn never_where_the_buffer_is_not(g: &Guest) -> TestResult {
    let d = dma(g);
    let buf = Buf::in_guest_memory(g, 16384)?;
    let gpa = buf.gpa(g);
    let mut bad = Vec::new();
    let mut mapped = 0;
    for dev in devices(g) {
        for (off, len) in [(0u64, 64u64), (333, 5000), (8192, 8192)] {
            let at = gpa + off;
            match d.map_single(&dev, at, len, Direction::Bidirectional) {
                Ok(m) => {
                    mapped += 1;
                    let own = d.map.contiguous(at, len).ok();
                    let fine = dev.reaches(m.dma, len)
                        && if m.bounced {
                            d.is_bounce(m.dma)
                        } else {
                            own == Some(m.dma)
                        };
                    if !fine {
                        bad.push(format!(
                            "{}: {len} bytes at {at:#x} (machine {own:x?}) mapped at {:#x}",
                            dev.name, m.dma
                        ));
                    }
                    let _ = d.unmap_single(&dev, m.dma, len, Direction::Bidirectional);
                }
                Err(DmaError::Unreachable { .. } | DmaError::PoolUnreachable { .. }) => {}
                Err(e) => bad.push(format!("{}: {len} bytes at {at:#x}: {e}", dev.name)),
            }
        }
    }
    ensure!(mapped > 0, "no mapping succeeded at all");
    problems(bad)
}

fn bounce_copies_and_syncs(g: &Guest) -> TestResult {
    let p = need_pool(g)?;
    let d = dma(g);
    let dev = pool_device(g)?;
    let buf = Buf::new(8192)?;
    let gpa = buf.gpa(g) + 100;
    let data = pattern(1, 3000);
    poke(g, gpa, &data);
    // To the device: copied in at map.
    let m = d
        .map_single_bounced(&dev, gpa, 3000, Direction::Bidirectional)
        .map_err(|e| format!("{e}"))?;
    let mut seen = vec![0u8; 3000];
    p.pool
        .bus_read(DmaAddr::new(m.dma), &mut seen)
        .map_err(|e| format!("{e}"))?;
    ensure!(seen == data, "the bounce slot does not hold the buffer");
    // The device writes; the CPU sees it after sync_for_cpu only.
    let dev_data = pattern(2, 1000);
    p.pool
        .bus_write(DmaAddr::new(m.dma + 500), &dev_data)
        .map_err(|e| format!("{e}"))?;
    ensure!(
        peek(g, gpa + 500, 1000) == data[500..1500],
        "changed before the sync"
    );
    d.sync_single_for_cpu(&dev, m.dma + 500, 1000, Direction::Bidirectional)
        .map_err(|e| format!("{e}"))?;
    ensure!(
        peek(g, gpa + 500, 1000) == dev_data,
        "not synced for the CPU"
    );
    // The CPU writes; the device sees it after sync_for_device only.
    let cpu_data = pattern(3, 200);
    poke(g, gpa + 2000, &cpu_data);
    d.sync_single_for_device(&dev, m.dma + 2000, 200, Direction::Bidirectional)
        .map_err(|e| format!("{e}"))?;
    let mut seen = vec![0u8; 200];
    p.pool
        .bus_read(DmaAddr::new(m.dma + 2000), &mut seen)
        .map_err(|e| format!("{e}"))?;
    ensure!(seen == cpu_data, "not synced for the device");
    d.unmap_single(&dev, m.dma, 3000, Direction::Bidirectional)
        .map_err(|e| format!("{e}"))?;
    // Untouched bytes around the mapping.
    ensure!(
        peek(g, gpa - 100, 100) == vec![0u8; 100],
        "bytes before the buffer changed"
    );
    Ok(())
}

fn pool_too_small_for_the_load(g: &Guest) -> TestResult {
    let p = need_pool(g)?;
    let d = dma(g);
    let dev = pool_device(g)?;
    let before = p.pool.stats();
    ensure!(
        before.used_slots == 0,
        "{} slots in use before the test",
        before.used_slots
    );
    let buf = Buf::new(4096)?;
    let canary = Buf::new(4096)?;
    let gpa = buf.gpa(g);
    let data = pattern(4, 4096);
    poke(g, gpa, &data);
    poke(g, canary.gpa(g), &pattern(5, 4096));
    // Twice what fits: every 4 KiB mapping takes 2 slots, page-aligned.
    let load = before.total_slots;
    let mut live = Vec::new();
    let mut full = 0usize;
    let mut bad = Vec::new();
    for _ in 0..load {
        match d.map_single_bounced(&dev, gpa, 4096, Direction::ToDevice) {
            Ok(m) => live.push(m.dma),
            Err(DmaError::Pool(MapError::PoolFull { .. })) => full += 1,
            Err(e) => bad.push(format!("unexpected: {e}")),
        }
    }
    let s = p.pool.stats();
    println!(
        "guest: dma: pool too small: {} mappings of 4 KiB fit, {full} refused with a full pool ({} of {} slots used)",
        live.len(),
        s.used_slots,
        s.total_slots
    );
    if live.len() != s.total_slots / 2 || full != load - live.len() {
        bad.push(format!(
            "{} mappings fit and {full} were refused, expected {} and {}",
            live.len(),
            s.total_slots / 2,
            load - s.total_slots / 2
        ));
    }
    if s.used_slots != s.total_slots || s.map_failures != before.map_failures + full as u64 {
        bad.push(format!("stats after filling: {s}"));
    }
    // Nothing was corrupted: every slot holds its buffer, the canary is whole.
    for &dma in &live {
        let mut seen = vec![0u8; 4096];
        if p.pool.bus_read(DmaAddr::new(dma), &mut seen).is_err() || seen != data {
            bad.push(format!("bounce slot {dma:#x} does not hold its buffer"));
            break;
        }
    }
    if peek(g, canary.gpa(g), 4096) != pattern(5, 4096) {
        bad.push("the canary buffer changed".into());
    }
    for dma in live {
        if let Err(e) = d.unmap_single(&dev, dma, 4096, Direction::ToDevice) {
            bad.push(format!("unmap {dma:#x}: {e}"));
        }
    }
    let s = p.pool.stats();
    if s.used_slots != 0 || s.high_water_slots != s.total_slots {
        bad.push(format!("stats after emptying: {s}"));
    }
    problems(bad)
}

fn bad_handles_are_refused(g: &Guest) -> TestResult {
    let p = need_pool(g)?;
    let d = dma(g);
    let dev = pool_device(g)?;
    let buf = Buf::new(4096)?;
    let gpa = buf.gpa(g);
    let errors = p.pool.stats().handle_errors;
    let m = d
        .map_single_bounced(&dev, gpa, 512, Direction::FromDevice)
        .map_err(|e| format!("{e}"))?;
    let mut bad = Vec::new();
    let wrong = [
        d.unmap_single(&dev, m.dma, 511, Direction::FromDevice),
        d.unmap_single(&dev, m.dma, 512, Direction::ToDevice),
        d.unmap_single(&dev, m.dma + 8, 512, Direction::FromDevice),
        d.sync_single_for_cpu(&dev, m.dma + 500, 100, Direction::FromDevice),
    ];
    for (i, r) in wrong.iter().enumerate() {
        if !matches!(r, Err(DmaError::Handle(_))) {
            bad.push(format!("wrong request {i}: {r:?}"));
        }
    }
    d.unmap_single(&dev, m.dma, 512, Direction::FromDevice)
        .map_err(|e| format!("{e}"))?;
    if !matches!(
        d.unmap_single(&dev, m.dma, 512, Direction::FromDevice),
        Err(DmaError::Handle(swiotlb::HandleError::NotMapped { .. }))
    ) {
        bad.push("a double unmap was not detected".into());
    }
    let e = p.pool.stats().handle_errors - errors;
    if e != 5 {
        bad.push(format!("{e} refused handles counted, expected 5"));
    }
    if d.map_single(&dev, gpa, 0, Direction::ToDevice) != Err(DmaError::ZeroSize)
        || d.map_single(&dev, gpa, 8, Direction::None) != Err(DmaError::BadDirection)
    {
        bad.push("a zero-size or direction-none mapping was not refused".into());
    }
    if !matches!(
        d.map_single(&dev, g.hole.0, 8, Direction::ToDevice),
        Err(DmaError::NotMemory { .. })
    ) {
        bad.push("a mapping outside guest memory was not refused".into());
    }
    problems(bad)
}

fn coherent_buffer(g: &Guest) -> TestResult {
    let d = dma(g);
    let Some(r) = &d.coherent else {
        skip!("no coherent region (no DMA device)")
    };
    let dev = match g.dma.edu() {
        Some(e) => e.dev.clone(),
        None => DmaDevice::with_bits("32-bit", 32),
    };
    let used = r.used_pages();
    let c = match d.alloc_coherent(&dev, 6000) {
        Ok(c) => c,
        Err(DmaError::NoCoherentMemory { .. }) => {
            skip!(
                "the coherent region at machine {:#x} is beyond {}'s coherent mask",
                r.maddr,
                dev.name
            )
        }
        Err(e) => return Err(TestError::Fail(format!("{e}"))),
    };
    let mut bad = Vec::new();
    if c.size != 8192 || c.dma + c.size - 1 > dev.coherent_mask {
        bad.push(format!("buffer {c:x?} for mask {:#x}", dev.coherent_mask));
    }
    if d.map.contiguous(c.gpa, c.size) != Ok(c.dma) {
        bad.push("the coherent buffer's machine address is not where it is".into());
    }
    if peek(g, c.gpa, 8192) != vec![0u8; 8192] {
        bad.push("not zeroed".into());
    }
    poke(g, c.gpa, &pattern(6, 8192));
    if peek(g, c.gpa, 8192) != pattern(6, 8192) {
        bad.push("does not keep what the CPU writes".into());
    }
    if r.used_pages() != used + 2 {
        bad.push(format!(
            "{} pages in use, expected {}",
            r.used_pages(),
            used + 2
        ));
    }
    let too_big = d.alloc_coherent(&dev, r.pages * 4096 + 1);
    if !matches!(too_big, Err(DmaError::NoCoherentMemory { .. })) {
        bad.push(format!("more than the region: {too_big:?}"));
    }
    if let Err(e) = d.free_coherent(&dev, c) {
        bad.push(format!("free: {e}"));
    }
    if d.free_coherent(&dev, c) != Err(DmaError::NotCoherent { gpa: c.gpa }) {
        bad.push("a double free was not detected".into());
    }
    if r.used_pages() != used {
        bad.push("pages leaked".into());
    }
    problems(bad)
}

fn statistics_add_up(g: &Guest) -> TestResult {
    let d = dma(g);
    let dev = match g.dma.edu() {
        Some(e) => e.dev.clone(),
        None => DmaDevice::with_bits("64-bit", 64),
    };
    let buf = Buf::in_guest_memory(g, 65536)?;
    let gpa = buf.gpa(g);
    let s0 = d.stats();
    let sizes = [1u64, 100, 2048, 2049, 4096, 10000, 65536];
    let mut direct = (0u64, 0u64);
    let mut bounced = (0u64, 0u64);
    let mut to_dev = 0u64;
    let mut from_dev = 0u64;
    let mut refused = 0u64;
    for (i, &n) in sizes.iter().enumerate() {
        let dir = if i % 2 == 0 {
            Direction::ToDevice
        } else {
            Direction::FromDevice
        };
        match d.map_single(&dev, gpa, n, dir) {
            Ok(m) => {
                if m.bounced {
                    bounced.0 += 1;
                    bounced.1 += n;
                    // map copies in whatever the direction; unmap copies
                    // back from-device ones.
                    to_dev += n;
                    if dir == Direction::FromDevice {
                        from_dev += n;
                    }
                } else {
                    direct.0 += 1;
                    direct.1 += n;
                }
                d.unmap_single(&dev, m.dma, n, dir)
                    .map_err(|e| format!("{e}"))?;
            }
            Err(_) => refused += 1,
        }
    }
    let s1 = d.stats();
    let mut bad = Vec::new();
    let pairs = [
        ("direct", s1.direct - s0.direct, direct.0),
        ("direct bytes", s1.direct_bytes - s0.direct_bytes, direct.1),
        ("bounced", s1.bounced - s0.bounced, bounced.0),
        (
            "bounced bytes",
            s1.bounced_bytes - s0.bounced_bytes,
            bounced.1,
        ),
        ("refused", s1.refused - s0.refused, refused),
        ("unmaps", s1.unmaps - s0.unmaps, direct.0 + bounced.0),
    ];
    for (what, got, want) in pairs {
        if got != want {
            bad.push(format!("{what}: {got}, expected {want}"));
        }
    }
    if let (Some(p0), Some(p1)) = (s0.pool, s1.pool) {
        let pool_pairs = [
            ("pool maps", p1.maps - p0.maps, bounced.0),
            ("pool unmaps", p1.unmaps - p0.unmaps, bounced.0),
            (
                "bounced to device",
                p1.bounced_to_device - p0.bounced_to_device,
                to_dev,
            ),
            (
                "bounced from device",
                p1.bounced_from_device - p0.bounced_from_device,
                from_dev,
            ),
            ("slots in use", p1.used_slots as u64, 0),
        ];
        for (what, got, want) in pool_pairs {
            if got != want {
                bad.push(format!("{what}: {got}, expected {want}"));
            }
        }
    }
    println!(
        "guest: dma: statistics test: {} direct ({} bytes), {} bounced ({} bytes), {refused} refused; mode {}",
        direct.0,
        direct.1,
        bounced.0,
        bounced.1,
        d.mode.name()
    );
    if d.mode == Mode::Force && direct.0 > 0 {
        bad.push("swiotlb=force mapped directly".into());
    }
    problems(bad)
}

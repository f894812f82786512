//! Suite `edu`: QEMU's edu device moves data with its DMA engine through
//! the DMA API, checked byte by byte: round trips of many sizes and
//! offsets in both directions (bounced wherever the device cannot reach
//! the buffer, or everywhere with `swiotlb=force`), a bidirectional
//! mapping with syncs, a coherent buffer, a full pool, and, with
//! `dma=direct`, what goes wrong without bounce buffers.
//!
//! Each transfer takes QEMU 100 ms of virtual time, so the suite does a
//! few dozen, not thousands. Everything needs an edu device assigned to
//! the domain (`pci = [ "00:04.0" ]` and `-device edu,addr=04.0`); without
//! one every test is skipped.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use swiotlb::MapError;

use super::dma::{dma, pattern, peek, poke, Buf};
use crate::boot::Guest;
use crate::dma::{mask_of_bits, Direction, DmaError, Mode};
use crate::drivers::edu::{Edu, PlatformRegs, BUFFER_USABLE, IDENTITY};
use crate::ktest::{ensure, problems, skip, Suite, Test, TestError, TestResult};
use crate::mm::{Gfp, Page};
use crate::println;

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "edu",
    tests: &[
        Test {
            name: "identity_and_liveness",
            run: identity_and_liveness,
        },
        Test {
            name: "round_trips",
            run: round_trips,
        },
        Test {
            name: "bidirectional_with_syncs",
            run: bidirectional_with_syncs,
        },
        Test {
            name: "coherent_buffer",
            run: coherent_buffer,
        },
        Test {
            name: "full_pool",
            run: full_pool,
        },
        Test {
            name: "direct_misdirected_write",
            run: direct_misdirected_write,
        },
        Test {
            name: "statistics",
            run: statistics,
        },
    ],
};

fn edu(g: &Guest) -> Result<&Edu<PlatformRegs>, TestError> {
    match &g.dma.edu {
        Some(Ok(e)) => Ok(e),
        Some(Err(e)) => Err(TestError::Fail(format!(
            "the edu device is there but unusable: {e}"
        ))),
        None => Err(TestError::Skip(
            "no edu device assigned to this domain".into(),
        )),
    }
}

fn identity_and_liveness(g: &Guest) -> TestResult {
    let e = edu(g)?;
    ensure!(
        e.identity() == IDENTITY,
        "identification {:#010x}, expected {IDENTITY:#010x}",
        e.identity()
    );
    for v in [0u32, 0xffff_ffff, 0x1234_5678, 0x8000_0001] {
        ensure!(
            e.alive(v),
            "liveness register: wrote {v:#x}, did not read its inverse"
        );
    }
    ensure!(!e.busy(), "a transfer is running");
    Ok(())
}

/// What one round trip did.
enum Trip {
    /// Both mappings as the DMA layer decided: whether each bounced.
    Done(bool, bool),
    /// Refused (as expected: `decision` said so).
    Refused,
}

/// RAM → device → RAM: `n` bytes from `src + so` through the device buffer
/// at `dev_off` to `dst + doff`, every byte of both buffers checked.
fn round_trip(
    g: &Guest,
    e: &Edu<PlatformRegs>,
    n: u64,
    so: u64,
    dev_off: u64,
    doff: u64,
    seed: u64,
) -> Result<Trip, String> {
    let d = dma(g);
    let dev = &e.dev;
    let src = Buf::new(8192).map_err(|e| format!("{e:?}"))?;
    let dst = Buf::new(8192).map_err(|e| format!("{e:?}"))?;
    let (sg, dg) = (src.gpa(g), dst.gpa(g));
    let data = pattern(seed, 8192);
    poke(g, sg, &data);
    poke(g, dg, &[0xA5; 8192]);
    let want_src = d.decision(dev, sg + so, n);
    let want_dst = d.decision(dev, dg + doff, n);
    let m = match (d.map_single(dev, sg + so, n, Direction::ToDevice), want_src) {
        (Ok(m), Some(b)) if m.bounced == b => m,
        (Err(DmaError::Unreachable { .. }), None) => return Ok(Trip::Refused),
        (r, w) => return Err(format!("map to-device: {r:?}, expected {w:?}")),
    };
    // Through the device's buffer in pieces that fit it (see
    // `BUFFER_USABLE`): each piece to the device, then back.
    let mut pieces = Vec::new();
    let mut done = 0;
    while done < n {
        let at = if done == 0 { dev_off } else { 0 };
        let len = (n - done).min(BUFFER_USABLE - at);
        pieces.push((done, at, len));
        done += len;
    }
    let k = match (
        d.map_single(dev, dg + doff, n, Direction::FromDevice),
        want_dst,
    ) {
        (Ok(k), Some(b)) if k.bounced == b => k,
        (Err(DmaError::Unreachable { .. }), None) => return Ok(Trip::Refused),
        (r, w) => return Err(format!("map from-device: {r:?}, expected {w:?}")),
    };
    for &(off, at, len) in &pieces {
        e.to_device(m.dma + off, at, len)
            .map_err(|x| format!("{x}"))?;
        e.from_device(at, k.dma + off, len)
            .map_err(|x| format!("{x}"))?;
    }
    d.unmap_single(dev, m.dma, n, Direction::ToDevice)
        .map_err(|x| format!("{x}"))?;
    d.unmap_single(dev, k.dma, n, Direction::FromDevice)
        .map_err(|x| format!("{x}"))?;
    let got = peek(g, dg, 8192);
    let (a, b) = (doff as usize, (doff + n) as usize);
    if let Some(i) = (a..b).find(|&i| got[i] != data[so as usize + i - a]) {
        return Err(format!(
            "byte {} of {n} differs: {:#04x}, expected {:#04x}",
            i - a,
            got[i],
            data[so as usize + i - a]
        ));
    }
    if let Some(i) = (0..a).chain(b..8192).find(|&i| got[i] != 0xA5) {
        return Err(format!("byte {i} outside the destination buffer changed"));
    }
    if peek(g, sg, 8192) != data {
        return Err("the source buffer changed".into());
    }
    Ok(Trip::Done(m.bounced, k.bounced))
}

fn round_trips(g: &Guest) -> TestResult {
    let e = edu(g)?;
    let sizes = [
        1u64, 2, 3, 7, 8, 63, 64, 65, 100, 511, 512, 1000, 2047, 2048, 2049, 3000, 4095, 4096,
    ];
    let offsets = [0u64, 1, 7, 63, 100, 511, 2048, 4095, 4096, 3];
    let (mut done, mut refused, mut bounced, mut direct, mut bytes) = (0, 0, 0, 0, 0u64);
    let mut bad = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let so = offsets[i % offsets.len()];
        let doff = offsets[(i + 3) % offsets.len()];
        let dev_off = (i as u64 * 37) % (BUFFER_USABLE - n.min(BUFFER_USABLE) + 1);
        match round_trip(g, e, n, so, dev_off, doff, i as u64) {
            Ok(Trip::Done(a, b)) => {
                done += 1;
                bytes += n;
                for bounce in [a, b] {
                    if bounce {
                        bounced += 1;
                    } else {
                        direct += 1;
                    }
                }
            }
            Ok(Trip::Refused) => refused += 1,
            Err(x) => bad.push(format!(
                "{n} bytes (buffer offsets {so}, {doff}, device {dev_off}): {x}"
            )),
        }
    }
    println!(
        "guest: edu: round trips: {done} done ({bytes} bytes each way), {refused} refused; mappings: {bounced} bounced, {direct} direct; mode {}",
        dma(g).mode.name()
    );
    problems(bad)
}

fn bidirectional_with_syncs(g: &Guest) -> TestResult {
    let e = edu(g)?;
    let d = dma(g);
    let buf = Buf::new(4096)?;
    let gpa = buf.gpa(g);
    let a = pattern(10, 4096);
    let b = pattern(11, 1024);
    poke(g, gpa, &a);
    let m = match d.map_single(&e.dev, gpa, 4096, Direction::Bidirectional) {
        Ok(m) => m,
        Err(DmaError::Unreachable { .. }) if d.decision(&e.dev, gpa, 4096).is_none() => {
            skip!("the buffer cannot be reached and cannot be bounced here")
        }
        Err(x) => return Err(TestError::Fail(format!("{x}"))),
    };
    let step = |r: Result<(), String>| r.map_err(TestError::Fail);
    step(e.to_device(m.dma, 0, 4095).map_err(|x| format!("{x}")))?;
    // The CPU changes the first KiB and hands it back to the device.
    poke(g, gpa, &b);
    step(
        d.sync_single_for_device(&e.dev, m.dma, 1024, Direction::Bidirectional)
            .map_err(|x| format!("{x}")),
    )?;
    step(e.to_device(m.dma, 0, 1024).map_err(|x| format!("{x}")))?;
    // The device writes its first 2 KiB into the second half.
    step(
        e.from_device(0, m.dma + 2048, 2048)
            .map_err(|x| format!("{x}")),
    )?;
    step(
        d.sync_single_for_cpu(&e.dev, m.dma + 2048, 2048, Direction::Bidirectional)
            .map_err(|x| format!("{x}")),
    )?;
    let mut want = a.clone();
    want[..1024].copy_from_slice(&b);
    want[2048..3072].copy_from_slice(&b);
    want[3072..].copy_from_slice(&a[1024..2048]);
    ensure!(
        peek(g, gpa, 4096) == want,
        "after the syncs the buffer is not what both sides wrote"
    );
    step(
        d.unmap_single(&e.dev, m.dma, 4096, Direction::Bidirectional)
            .map_err(|x| format!("{x}")),
    )?;
    ensure!(peek(g, gpa, 4096) == want, "the unmap changed the buffer");
    Ok(())
}

fn coherent_buffer(g: &Guest) -> TestResult {
    let e = edu(g)?;
    let d = dma(g);
    let c = match d.alloc_coherent(&e.dev, 8192) {
        Ok(c) => c,
        Err(x) => skip!("no coherent memory the device reaches: {x}"),
    };
    let data = pattern(12, 4096);
    poke(g, c.gpa, &data);
    let r = e
        .to_device(c.dma, 0, 4095)
        .and_then(|()| e.from_device(0, c.dma + 4096, 4095))
        .and_then(|()| e.to_device(c.dma + 4095, 0, 1))
        .and_then(|()| e.from_device(0, c.dma + 8191, 1));
    let same = peek(g, c.gpa + 4096, 4096) == data;
    d.free_coherent(&e.dev, c).map_err(|x| format!("{x}"))?;
    r.map_err(|x| format!("{x}"))?;
    ensure!(
        same,
        "the device's copy inside the coherent buffer differs, without any sync"
    );
    ensure!(
        c.dma + c.size - 1 <= e.dev.coherent_mask,
        "coherent buffer at {:#x} beyond the mask",
        c.dma
    );
    Ok(())
}

fn full_pool(g: &Guest) -> TestResult {
    let e = edu(g)?;
    let d = dma(g);
    let Some(p) = &d.pool else {
        skip!("no bounce pool")
    };
    let filler = Buf::new(4096)?;
    let fg = filler.gpa(g);
    // The filler's mappings are the test's, not the device's.
    let mut other = e.dev.clone();
    other.name = format!("{} filler", e.dev.name);
    let mut live = Vec::new();
    while let Ok(m) = d.map_single_bounced(&other, fg, 4096, Direction::ToDevice) {
        live.push(m.dma);
        if live.len() > p.pool.total_slots() {
            break;
        }
    }
    let src = Buf::new(4096)?;
    let sg = src.gpa(g);
    poke(g, sg, &pattern(13, 4096));
    let needs_bounce = d.decision(&e.dev, sg, 1000) == Some(true);
    let r = d.map_single(&e.dev, sg, 1000, Direction::ToDevice);
    let mut bad = Vec::new();
    match (&r, needs_bounce) {
        (Err(DmaError::Pool(MapError::PoolFull { .. })), true) => {}
        (Ok(m), false) if !m.bounced => {
            let _ = d.unmap_single(&e.dev, m.dma, 1000, Direction::ToDevice);
        }
        _ => bad.push(format!(
            "with the pool full: {r:?} (bounce needed: {needs_bounce})"
        )),
    }
    for dma in live {
        if let Err(x) = d.unmap_single(&other, dma, 4096, Direction::ToDevice) {
            bad.push(format!("{x}"));
        }
    }
    // With room again, a transfer works and is intact.
    match round_trip(g, e, 1000, 0, 100, 5, 14) {
        Ok(_) => {}
        Err(x) => bad.push(format!("after the pool emptied: {x}")),
    }
    problems(bad)
}

/// The pages of `blocks` as sorted machine runs: (maddr, bytes, gpa).
fn runs(g: &Guest, blocks: &[Page]) -> Vec<(u64, u64, u64)> {
    let d = dma(g);
    let mut v: Vec<(u64, u64, u64)> = blocks
        .iter()
        .filter_map(|b| {
            let gpa = b.gpa().0;
            d.map
                .contiguous(gpa, b.bytes())
                .ok()
                .map(|m| (m, b.bytes(), gpa))
        })
        .collect();
    v.sort_unstable();
    v
}

/// The guest-physical address of machine page `m` among `runs`.
fn owned(runs: &[(u64, u64, u64)], m: u64) -> Option<u64> {
    let i = runs.partition_point(|r| r.0 + r.1 <= m);
    runs.get(i).filter(|r| r.0 <= m).map(|r| r.2 + (m - r.0))
}

/// `dma=direct`: the DMA layer refuses a buffer the device cannot reach.
/// Then the test does what a driver without a DMA layer would do: it
/// programs the device with the buffer's machine address anyway. QEMU's
/// edu (as a device with fewer address lines) drops the bits above its
/// mask, so the data lands at `address & mask`. The test makes that safe
/// by choosing, among pages it owns (allocated from the memory manager),
/// a buffer page `h` just above the mask (`2^b <= h < 2^(b+1)`) whose
/// alias `h - 2^b` is also its own page: the device writes into that
/// other page of the test (or, were its mask wider than configured, into
/// `h` itself), never into anything else. It checks that the buffer did
/// not get the data and the alias did.
fn direct_misdirected_write(g: &Guest) -> TestResult {
    let e = edu(g)?;
    let d = dma(g);
    if d.mode != Mode::Direct {
        skip!("only with dma=direct");
    }
    let Some(mm) = &g.mm else {
        skip!("no memory manager")
    };
    let bits = crate::dma::bits_of_mask(e.dev.dma_mask);
    let mask = mask_of_bits(bits);
    // Own as much memory as the memory manager gives in 2 MiB blocks.
    let mut blocks = Vec::new();
    while blocks.len() < 512 {
        match mm.alloc_pages(Gfp::NOWARN, 9) {
            Ok(p) => blocks.push(p),
            Err(_) => break,
        }
    }
    let r = runs(g, &blocks);
    let lo = 1u64 << bits;
    let pair = r.iter().find_map(|&(m, len, _)| {
        (0..len / 4096).find_map(|k| {
            let h = m + k * 4096;
            if h < lo || h + 4095 >= 2 * lo {
                return None;
            }
            let t = h & mask;
            Some((h, owned(&r, h)?, t, owned(&r, t)?))
        })
    });
    // A page the device does reach, for the data it is to write.
    let source = |t: u64| {
        r.iter().find_map(|&(m, len, gpa)| {
            (0..len / 4096)
                .map(|k| (m + k * 4096, gpa + k * 4096))
                .find(|&(pm, _)| pm != t && pm + 4095 <= mask)
                .map(|(_, pg)| pg)
        })
    };
    let result = match pair.and_then(|(h, hg, t, tg)| Some((h, hg, t, tg, source(t)?))) {
        None => Err(TestError::Skip(format!(
            "no page of the {} MiB this test owns lies in [2^{bits}, 2^{}) with its alias below 2^{bits} \
             (and another page below it) also owned",
            blocks.len() * 2,
            bits + 1
        ))),
        Some((h, hg, t, tg, sg)) => demonstrate(g, e, (h, hg), (t, tg), sg, bits),
    };
    for b in blocks {
        let _ = mm.free(b);
    }
    result
}

fn demonstrate(
    g: &Guest,
    e: &Edu<PlatformRegs>,
    (h, hg): (u64, u64),
    (t, tg): (u64, u64),
    sg: u64,
    bits: u32,
) -> TestResult {
    let d = dma(g);
    let a = pattern(20, 4096);
    let b = pattern(21, 4096);
    poke(g, hg, &a);
    poke(g, tg, &b);
    // 1. The DMA layer refuses: the device cannot reach the buffer.
    match d.map_single(&e.dev, hg, 4096, Direction::FromDevice) {
        Err(DmaError::Unreachable { maddr: Some(m), .. }) if m == h => {}
        r => {
            return Err(TestError::Fail(format!(
                "the DMA layer did not refuse: {r:?}"
            )))
        }
    }
    // 2. Data for the device, from a page it does reach (mapped directly).
    let n = BUFFER_USABLE as usize;
    let data = pattern(22, 4096);
    poke(g, sg, &data);
    let m = d
        .map_single(&e.dev, sg, BUFFER_USABLE, Direction::ToDevice)
        .map_err(|x| format!("mapping the source page: {x}"))?;
    let r = e.to_device(m.dma, 0, BUFFER_USABLE);
    let _ = d.unmap_single(&e.dev, m.dma, BUFFER_USABLE, Direction::ToDevice);
    r.map_err(|x| format!("{x}"))?;
    // 3. The wrong way: the buffer's machine address, straight to the device.
    e.from_device(0, h, BUFFER_USABLE)
        .map_err(|x| format!("{x}"))?;
    let buffer = peek(g, hg, 4096);
    let alias = peek(g, tg, 4096);
    let mut want = data[..n].to_vec();
    want.push(b[n]);
    let data = want;
    println!(
        "guest: dma=direct: the DMA layer refused 4096 bytes at machine {h:#x} (guest-physical {hg:#x}) for a {bits}-bit device; \
         programmed directly with that address, the device wrote {n} bytes ({}) at machine {t:#x} (guest-physical {tg:#x}, another page this test owns) \
         and left the buffer {}",
        if alias == data { "the data" } else { "something else" },
        if buffer == a { "unchanged" } else { "CHANGED" }
    );
    ensure!(
        buffer == a,
        "the buffer changed: the device reached it after all"
    );
    ensure!(
        alias == data,
        "the data did not arrive at machine {t:#x}, the address with bits above {bits} dropped"
    );
    Ok(())
}

fn statistics(g: &Guest) -> TestResult {
    let d = dma(g);
    let s = d.stats();
    println!("guest: dma: stats: mode {}; {s}", d.mode.name());
    let e = edu(g)?;
    let mine = d.device_stats(&e.dev.name);
    println!("guest: dma: {}: {mine}", e.dev.name);
    let mut bad: Vec<String> = Vec::new();
    if let Some(p) = s.pool {
        if p.used_slots != 0 {
            bad.push(format!("{} slots still in use", p.used_slots));
        }
        if p.maps != p.unmaps {
            bad.push(format!("pool: {} maps, {} unmaps", p.maps, p.unmaps));
        }
        if p.maps != s.bounced {
            bad.push(format!(
                "the pool counts {} maps, the DMA layer {} bounced",
                p.maps, s.bounced
            ));
        }
    } else if s.bounced != 0 {
        bad.push(format!("{} bounced without a pool", s.bounced));
    }
    if s.direct + s.bounced != s.unmaps {
        bad.push(format!(
            "{} direct + {} bounced mappings, {} unmaps",
            s.direct, s.bounced, s.unmaps
        ));
    }
    if d.mode == Mode::Force && s.direct != 0 {
        bad.push("swiotlb=force mapped directly".into());
    }
    if d.mode == Mode::Direct && s.bounced != 0 {
        bad.push("dma=direct bounced".into());
    }
    problems(bad)
}

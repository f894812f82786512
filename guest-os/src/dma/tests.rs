//! Host tests of the DMA layer: the bounce decision, refusals, the pool's
//! copies, coherent buffers, and the statistics.

use super::*;
use swiotlb::bench::SliceMemory;

const MIB: u64 = 1 << 20;
/// Guest memory: 4 MiB at guest-physical 1 GiB. The first 2 MiB are
/// machine memory at 8 GiB (beyond a 32-bit device), the next 2 MiB at
/// 16 MiB (reachable), and the two are not contiguous.
const RAM: u64 = 1 << 30;
const POOL_MADDR: u64 = 0x40_0000;

fn memory() -> &'static mut [u8] {
    Box::leak(vec![0u8; 4 * MIB as usize].into_boxed_slice())
}

fn machine_map() -> MachineMap {
    let mut m = MachineMap::default();
    m.insert(RAM, 2 * MIB, 8 << 30);
    m.insert(RAM + 2 * MIB, 2 * MIB, 16 * MIB);
    m
}

/// A DMA layer with a 512 KiB pool at machine 4 MiB (two segments) and a
/// 16-page coherent region right after it.
fn dma(mode: Mode, with_pool: bool) -> Dma<SliceMemory<'static>> {
    let pool = with_pool.then(|| {
        let backing = Box::leak(vec![0u8; 512 << 10].into_boxed_slice());
        BouncePool {
            pool: Pool::new(backing, DmaAddr::new(POOL_MADDR), 1).unwrap(),
            gpa: 0x7000_0000,
            maddr: POOL_MADDR,
            bytes: 512 << 10,
            bits: 28,
            pnode: 0,
            off_node: false,
        }
    });
    // The coherent region is the last 64 KiB of guest memory, machine 16 MiB + 1.9375 MiB.
    let coherent = CoherentRegion::new(RAM + 4 * MIB - 0x1_0000, 16 * MIB + 2 * MIB - 0x1_0000, 16);
    Dma::new(
        mode,
        machine_map(),
        pool,
        Some(coherent),
        SliceMemory::new(OrigAddr::new(RAM), memory()),
    )
}

fn dev32() -> DmaDevice {
    DmaDevice::with_bits("test", 32)
}

fn fill(d: &Dma<SliceMemory<'static>>, gpa: u64, bytes: &[u8]) {
    d.mem.lock().write(OrigAddr::new(gpa), bytes);
}

fn read(d: &Dma<SliceMemory<'static>>, gpa: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    d.mem.lock().read(OrigAddr::new(gpa), &mut b);
    b
}

#[test]
fn masks() {
    assert_eq!(mask_of_bits(28), 0x0fff_ffff);
    assert_eq!(mask_of_bits(64), u64::MAX);
    assert_eq!(bits_of_mask(0xffff_ffff), 32);
    let d = dev32();
    assert!(d.reaches(0xffff_f000, 0x1000));
    assert!(!d.reaches(0xffff_f000, 0x1001));
    assert!(!d.reaches(0, 0));
}

#[test]
fn reachable_buffers_map_directly() {
    let d = dma(Mode::Normal, true);
    let m = d
        .map_single(&dev32(), RAM + 2 * MIB + 0x123, 100, Direction::ToDevice)
        .unwrap();
    assert_eq!(
        m,
        Mapping {
            dma: 16 * MIB + 0x123,
            bounced: false
        }
    );
    d.unmap_single(&dev32(), m.dma, 100, Direction::ToDevice)
        .unwrap();
    let s = d.stats();
    assert_eq!(
        (s.direct, s.bounced, s.unmaps, s.direct_bytes),
        (1, 0, 1, 100)
    );
    assert_eq!(s.pool.unwrap().bounced_bytes(), 0);
}

#[test]
fn unreachable_and_split_buffers_bounce_and_copy() {
    let d = dma(Mode::Normal, true);
    let dev = dev32();
    // Beyond the mask.
    fill(&d, RAM + 0x10, b"hello");
    let m = d
        .map_single(&dev, RAM + 0x10, 5, Direction::ToDevice)
        .unwrap();
    assert!(m.bounced && d.is_bounce(m.dma));
    assert!(dev.reaches(m.dma, 5));
    let mut seen = [0u8; 5];
    d.pool
        .as_ref()
        .unwrap()
        .pool
        .bus_read(DmaAddr::new(m.dma), &mut seen)
        .unwrap();
    assert_eq!(
        &seen, b"hello",
        "the device sees the data at the bounce address"
    );
    d.unmap_single(&dev, m.dma, 5, Direction::ToDevice).unwrap();
    // Across the two runs: contiguous in guest-physical space only.
    let at = RAM + 2 * MIB - 8;
    let m = d.map_single(&dev, at, 16, Direction::FromDevice).unwrap();
    assert!(m.bounced);
    d.pool
        .as_ref()
        .unwrap()
        .pool
        .bus_write(DmaAddr::new(m.dma), &[7; 16])
        .unwrap();
    assert_eq!(read(&d, at, 16), vec![0; 16], "not before the unmap");
    d.unmap_single(&dev, m.dma, 16, Direction::FromDevice)
        .unwrap();
    assert_eq!(read(&d, at, 16), vec![7; 16]);
    // The device with a 24-bit mask cannot reach the bounce pool at 4 MiB?
    // It can (4 MiB < 16 MiB); one with 20 bits cannot.
    let small = DmaDevice::with_bits("tiny", 20);
    let e = d
        .map_single(&small, RAM, 8, Direction::ToDevice)
        .unwrap_err();
    assert!(matches!(e, DmaError::PoolUnreachable { .. }), "{e}");
    assert_eq!(
        d.pool.as_ref().unwrap().pool.stats().used_slots,
        0,
        "undone"
    );
    let s = d.stats();
    assert_eq!((s.bounced, s.refused, s.bounced_bytes), (2, 1, 21));
}

#[test]
fn force_bounces_everything_direct_never_bounces() {
    let d = dma(Mode::Force, true);
    let m = d
        .map_single(&dev32(), RAM + 2 * MIB, 64, Direction::ToDevice)
        .unwrap();
    assert!(m.bounced);
    d.unmap_single(&dev32(), m.dma, 64, Direction::ToDevice)
        .unwrap();

    let d = dma(Mode::Direct, true);
    let m = d
        .map_single(&dev32(), RAM + 2 * MIB, 64, Direction::ToDevice)
        .unwrap();
    assert_eq!(
        m,
        Mapping {
            dma: 16 * MIB,
            bounced: false
        }
    );
    let e = d
        .map_single(&dev32(), RAM, 64, Direction::ToDevice)
        .unwrap_err();
    assert_eq!(
        e,
        DmaError::Unreachable {
            gpa: RAM,
            maddr: Some(8 << 30),
            size: 64,
            mask: 0xffff_ffff,
            why: "dma=direct never bounces"
        }
    );
    assert!(e.to_string().contains("machine 0x200000000) are beyond the device's mask 0xffffffff and dma=direct never bounces: refused"));
    assert_eq!(d.pool.as_ref().unwrap().pool.stats().maps, 0);
}

#[test]
fn without_a_pool_unreachable_is_refused() {
    let d = dma(Mode::Normal, false);
    let e = d
        .map_single(&dev32(), RAM, 64, Direction::FromDevice)
        .unwrap_err();
    assert!(
        matches!(
            e,
            DmaError::Unreachable {
                why: "there is no bounce pool",
                ..
            }
        ),
        "{e}"
    );
    let e = d
        .map_single(&dev32(), RAM + 2 * MIB - 8, 16, Direction::ToDevice)
        .unwrap_err();
    assert!(
        matches!(e, DmaError::Unreachable { maddr: None, .. }),
        "{e}"
    );
    // Reachable still works.
    assert!(d
        .map_single(&dev32(), RAM + 2 * MIB, 8, Direction::ToDevice)
        .is_ok());
    assert_eq!(d.stats().refused, 2);
    assert_eq!(d.stats().pool, None);
    assert!(d.stats().to_string().ends_with("no bounce pool"));
}

#[test]
fn bad_requests_are_refused() {
    let d = dma(Mode::Normal, true);
    let dev = dev32();
    assert_eq!(
        d.map_single(&dev, RAM, 0, Direction::ToDevice),
        Err(DmaError::ZeroSize)
    );
    assert_eq!(
        d.map_single(&dev, RAM, 8, Direction::None),
        Err(DmaError::BadDirection)
    );
    assert_eq!(
        d.map_single(&dev, 0x1000, 8, Direction::ToDevice),
        Err(DmaError::NotMemory { gpa: 0x1000 })
    );
    assert_eq!(
        d.map_single(&dev, RAM + 4 * MIB - 4, 8, Direction::ToDevice),
        Err(DmaError::NotMemory { gpa: RAM + 4 * MIB })
    );
    // Too large for one segment.
    let e = d
        .map_single(&dev, RAM, 300 << 10, Direction::ToDevice)
        .unwrap_err();
    assert!(
        matches!(e, DmaError::Pool(MapError::TooLarge { .. })),
        "{e}"
    );
    // Unmapping what was never mapped, twice, or with the wrong size.
    let m = d.map_single(&dev, RAM, 100, Direction::ToDevice).unwrap();
    assert!(matches!(
        d.unmap_single(&dev, m.dma, 99, Direction::ToDevice),
        Err(DmaError::Handle(HandleError::SizeMismatch { .. }))
    ));
    d.unmap_single(&dev, m.dma, 100, Direction::ToDevice)
        .unwrap();
    assert!(matches!(
        d.unmap_single(&dev, m.dma, 100, Direction::ToDevice),
        Err(DmaError::Handle(HandleError::NotMapped { .. }))
    ));
    assert_eq!(d.stats().pool.unwrap().handle_errors, 2);
    assert_eq!(d.stats().refused, 5);
}

#[test]
fn a_full_pool_fails_cleanly() {
    let d = dma(Mode::Force, true);
    let dev = dev32();
    let mut live = Vec::new();
    let mut failures = 0;
    for i in 0..200u64 {
        let gpa = RAM + i * 4096;
        fill(&d, gpa, &[i as u8; 4096]);
        match d.map_single(&dev, gpa, 4096, Direction::Bidirectional) {
            Ok(m) => live.push((gpa, m)),
            Err(DmaError::Pool(MapError::PoolFull { .. })) => failures += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(live.len(), 128, "512 KiB of 4 KiB slots");
    assert_eq!(failures, 72);
    let s = d.stats().pool.unwrap();
    assert_eq!(
        (s.used_slots, s.total_slots, s.map_failures),
        (256, 256, 72)
    );
    // Every live mapping still holds its own buffer's bytes.
    for &(gpa, m) in &live {
        let mut b = vec![0u8; 4096];
        d.pool
            .as_ref()
            .unwrap()
            .pool
            .bus_read(DmaAddr::new(m.dma), &mut b)
            .unwrap();
        assert!(b.iter().all(|&x| x == ((gpa - RAM) / 4096) as u8));
        d.unmap_single(&dev, m.dma, 4096, Direction::Bidirectional)
            .unwrap();
    }
    let s = d.stats().pool.unwrap();
    assert_eq!((s.used_slots, s.high_water_slots), (0, 256));
}

#[test]
fn syncs_copy_only_for_bounced_mappings() {
    let d = dma(Mode::Normal, true);
    let dev = dev32();
    fill(&d, RAM, b"abcdefgh");
    let m = d
        .map_single(&dev, RAM, 8, Direction::Bidirectional)
        .unwrap();
    let pool = &d.pool.as_ref().unwrap().pool;
    pool.bus_write(DmaAddr::new(m.dma), b"ABCD").unwrap();
    d.sync_single_for_cpu(&dev, m.dma, 4, Direction::Bidirectional)
        .unwrap();
    assert_eq!(read(&d, RAM, 8), b"ABCDefgh");
    fill(&d, RAM + 4, b"EFGH");
    d.sync_single_for_device(&dev, m.dma + 4, 4, Direction::Bidirectional)
        .unwrap();
    let mut b = [0u8; 8];
    pool.bus_read(DmaAddr::new(m.dma), &mut b).unwrap();
    assert_eq!(&b, b"ABCDEFGH");
    assert!(matches!(
        d.sync_single_for_cpu(&dev, m.dma + 6, 4, Direction::Bidirectional),
        Err(DmaError::Handle(HandleError::OutOfRange { .. }))
    ));
    d.unmap_single(&dev, m.dma, 8, Direction::Bidirectional)
        .unwrap();
    // A direct mapping's syncs are no-ops.
    let m = d
        .map_single(&dev, RAM + 2 * MIB, 8, Direction::FromDevice)
        .unwrap();
    d.sync_single_for_cpu(&dev, m.dma, 8, Direction::FromDevice)
        .unwrap();
    let s = d.stats().pool.unwrap();
    assert_eq!((s.bounced_to_device, s.bounced_from_device), (8 + 4, 4 + 8));
}

#[test]
fn coherent_buffers() {
    let d = dma(Mode::Normal, true);
    let dev = dev32();
    fill(&d, RAM + 4 * MIB - 0x1_0000, &[0xEE; 0x1_0000]);
    let a = d.alloc_coherent(&dev, 5000).unwrap();
    assert_eq!(a.size, 8192);
    assert_eq!(a.dma, 16 * MIB + 2 * MIB - 0x1_0000);
    assert_eq!(read(&d, a.gpa, 8192), vec![0; 8192], "zeroed");
    let b = d.alloc_coherent(&dev, 4096).unwrap();
    assert_eq!(b.gpa, a.gpa + 8192);
    assert_eq!(
        d.alloc_coherent(&dev, 14 * 4096),
        Err(DmaError::NoCoherentMemory { size: 14 * 4096 })
    );
    d.free_coherent(&dev, a).unwrap();
    assert_eq!(
        d.free_coherent(&dev, a),
        Err(DmaError::NotCoherent { gpa: a.gpa })
    );
    let c = d.alloc_coherent(&dev, 4096).unwrap();
    assert_eq!(c.gpa, a.gpa, "first fit");
    assert_eq!(d.coherent.as_ref().unwrap().used_pages(), 2);
    // Beyond a 24-bit coherent mask (the region is at 18 MiB): none.
    let tiny = DmaDevice::with_bits("tiny", 24);
    assert!(d.alloc_coherent(&tiny, 4096).is_err());
    d.free_coherent(&dev, b).unwrap();
    d.free_coherent(&dev, c).unwrap();
    let s = d.stats();
    assert_eq!((s.coherent_allocs, s.coherent_frees), (3, 3));
}

#[test]
fn min_align_mask_keeps_the_offset() {
    let d = dma(Mode::Force, true);
    let mut dev = dev32();
    dev.min_align_mask = 0xfff;
    let m = d
        .map_single(&dev, RAM + 0x2345, 100, Direction::ToDevice)
        .unwrap();
    assert_eq!(m.dma & 0xfff, 0x345);
}

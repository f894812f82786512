//! Unit tests: one per rule of the pool.

use crate::bench::{SliceMemory, Workload};
use crate::*;

const BUS: u64 = 0x8000_0000;
const RAM_BASE: u64 = 0x10_0000_0000;
const RAM_LEN: usize = 2 << 20;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn orig(offset: u64) -> OrigAddr {
    OrigAddr::new(RAM_BASE + offset)
}

fn dma(offset: u64) -> DmaAddr {
    DmaAddr::new(BUS + offset)
}

fn bus_bytes(pool: &Pool<'_>, at: DmaAddr, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    pool.bus_read(at, &mut buf).unwrap();
    buf
}

fn ram_bytes(mem: &SliceMemory<'_>, offset: u64, len: usize) -> Vec<u8> {
    mem.bytes()[offset as usize..offset as usize + len].to_vec()
}

/// `let (pool, mem) = setup!(segments, areas);` with the backing storage
/// living in the caller's frame.
macro_rules! setup {
    ($pool:ident, $mem:ident, $segments:expr, $areas:expr) => {
        let mut backing = vec![0u8; $segments * SEGMENT_SIZE];
        let $pool = Pool::new(&mut backing, DmaAddr::new(BUS), $areas).unwrap();
        let mut ram = pattern(RAM_LEN, 1);
        #[allow(unused_mut)]
        let mut $mem = SliceMemory::new(OrigAddr::new(RAM_BASE), &mut ram);
    };
}

const NO_ATTRS: MapAttrs = MapAttrs {
    min_align_mask: 0,
    alloc_align_mask: 0,
};
const TO: Direction = Direction::ToDevice;
const FROM: Direction = Direction::FromDevice;
const BIDI: Direction = Direction::Bidirectional;

#[test]
fn new_validates_size_bus_base_and_areas() {
    let mut empty: [u8; 0] = [];
    assert_eq!(
        Pool::new(&mut empty, dma(0), 1).unwrap_err(),
        PoolError::BadSize { len: 0 }
    );
    let mut odd = vec![0u8; SEGMENT_SIZE + SLOT_SIZE];
    assert_eq!(
        Pool::new(&mut odd, dma(0), 1).unwrap_err(),
        PoolError::BadSize {
            len: SEGMENT_SIZE + SLOT_SIZE
        }
    );
    let mut two = vec![0u8; 2 * SEGMENT_SIZE];
    assert!(matches!(
        Pool::new(&mut two, dma(0x800), 1),
        Err(PoolError::UnalignedBusBase { .. })
    ));
    assert!(matches!(
        Pool::new(&mut two, DmaAddr::new(!0xfff), 1),
        Err(PoolError::BusRangeOverflow { .. })
    ));
    for areas in [0, 3, 4] {
        assert_eq!(
            Pool::new(&mut two, dma(0), areas).unwrap_err(),
            PoolError::BadAreas { areas, segments: 2 }
        );
    }
    for err in [
        PoolError::BadSize { len: 3 },
        PoolError::BadAreas {
            areas: 3,
            segments: 2,
        },
    ] {
        assert!(err.to_string().starts_with("swiotlb: "));
    }
    let pool = Pool::new(&mut two, dma(0), 2).unwrap();
    assert_eq!(
        (pool.total_slots(), pool.nr_areas(), pool.size()),
        (256, 2, 2 * SEGMENT_SIZE)
    );
    assert_eq!(
        pool.stats(),
        Stats {
            total_slots: 256,
            ..Stats::default()
        }
    );
}

#[test]
fn sizing_helpers_follow_linux() {
    assert_eq!(pool_bytes_for_slots(1), Some(SEGMENT_SIZE));
    assert_eq!(pool_bytes_for_slots(128), Some(SEGMENT_SIZE));
    assert_eq!(pool_bytes_for_slots(129), Some(2 * SEGMENT_SIZE));
    assert_eq!(pool_bytes_for_slots(32768), Some(DEFAULT_POOL_SIZE));
    assert_eq!(pool_bytes_for_slots(0), None);
    assert_eq!(pool_bytes_for_slots(usize::MAX), None);

    assert_eq!(default_nr_areas(6, DEFAULT_POOL_SIZE), 8);
    assert_eq!(default_nr_areas(6, 2 * SEGMENT_SIZE), 2);
    assert_eq!(default_nr_areas(64, 3 * SEGMENT_SIZE), 2);
    assert_eq!(default_nr_areas(0, DEFAULT_POOL_SIZE), 1);
    assert_eq!(default_nr_areas(1, SEGMENT_SIZE), 1);

    assert_eq!(max_mapping_size(0), MAX_MAPPING_SIZE);
    assert_eq!(max_mapping_size(0x7ff), MAX_MAPPING_SIZE - 2048);
    assert_eq!(max_mapping_size(0xfff), MAX_MAPPING_SIZE - 4096);
    assert_eq!(max_mapping_size(u32::MAX), 0);
}

#[test]
fn swiotlb_parameter_parses_like_linux() {
    let p = |s| SwiotlbParam::parse(s);
    assert_eq!(p(""), Ok(SwiotlbParam::default()));
    assert_eq!(p("").unwrap().pool_bytes(), DEFAULT_POOL_SIZE);
    assert_eq!(p("65536").unwrap().slots, Some(65536));
    assert_eq!(
        p("1000").unwrap().slots,
        Some(1024),
        "rounded up to a segment"
    );
    assert_eq!(p("1000").unwrap().pool_bytes(), 1024 * SLOT_SIZE);
    assert_eq!(p("0x8000").unwrap().slots, Some(0x8000));
    assert_eq!(
        p("1000,3"),
        Ok(SwiotlbParam {
            slots: Some(1024),
            areas: Some(4),
            force: None
        })
    );
    assert_eq!(
        p("force"),
        Ok(SwiotlbParam {
            force: Some(true),
            ..Default::default()
        })
    );
    assert_eq!(
        p("noforce"),
        Ok(SwiotlbParam {
            force: Some(false),
            ..Default::default()
        })
    );
    assert_eq!(
        p("32768,4,force"),
        Ok(SwiotlbParam {
            slots: Some(32768),
            areas: Some(4),
            force: Some(true)
        })
    );
    assert_eq!(p("8192,,force").unwrap().force, Some(true));
    assert_eq!(p("8192,force").unwrap().slots, Some(8192));
    for bad in ["abc", "force,1", "1,2,3", "1,2,foo", "0x", "-1"] {
        assert_eq!(p(bad), Err(ParamError::Syntax), "{bad}");
    }
    for bad in ["0", "1,0", "99999999999999999999999"] {
        assert_eq!(p(bad), Err(ParamError::BadNumber), "{bad}");
    }
}

#[test]
fn small_mappings_are_slot_aligned_and_packed() {
    setup!(pool, mem, 1, 1);
    let a = pool.map(0, &mem, orig(0x123), 100, TO, NO_ATTRS).unwrap();
    assert_eq!(
        a,
        dma(0),
        "no min_align_mask: the original's offset is not kept"
    );
    assert_eq!(bus_bytes(&pool, a, 100), ram_bytes(&mem, 0x123, 100));
    // Sub-page mappings take the next slot, page aligned or not.
    let b = pool.map(0, &mem, orig(0), 2048, TO, NO_ATTRS).unwrap();
    assert_eq!(b, dma(2048));
    let c = pool.map(0, &mem, orig(0), 2049, TO, NO_ATTRS).unwrap();
    assert_eq!(c, dma(4096));
    assert_eq!(pool.allocation_of(c), Some((2, 2)));
    pool.check_invariants();
}

#[test]
fn page_sized_mappings_are_page_aligned() {
    setup!(pool, mem, 2, 1);
    // Leave the next-fit index on an odd slot.
    pool.map(0, &mem, orig(0), 10, TO, NO_ATTRS).unwrap();
    for size in [4096, 4097, 5000, 12288, 65536] {
        let at = pool.map(0, &mem, orig(0x10), size, TO, NO_ATTRS).unwrap();
        assert_eq!(at.as_u64() & 0xfff, 0, "{size} bytes at {at}");
        assert_eq!(bus_bytes(&pool, at, size), ram_bytes(&mem, 0x10, size));
        pool.map(0, &mem, orig(0), 10, TO, NO_ATTRS).unwrap();
    }
    pool.check_invariants();
}

#[test]
fn min_align_mask_keeps_the_original_offset() {
    setup!(pool, mem, 2, 1);
    for mask in [0x7ff, 0xfff, 0x3fff] {
        for offset in [0x0, 0x1, 0x123, 0x7ff, 0x800, 0x9ab, 0xfff, 0x2abc, 0x3fff] {
            let attrs = MapAttrs {
                min_align_mask: mask,
                alloc_align_mask: 0,
            };
            for size in [1, 3000, 8192] {
                let from = orig(0x10_0000 + offset);
                let at = pool.map(0, &mem, from, size, BIDI, attrs).unwrap();
                assert_eq!(
                    at.as_u64() & u64::from(mask),
                    from.as_u64() & u64::from(mask),
                    "mask {mask:#x} offset {offset:#x} size {size}"
                );
                assert_eq!(
                    bus_bytes(&pool, at, size),
                    ram_bytes(&mem, 0x10_0000 + offset, size)
                );
                pool.unmap(&mut mem, at, size, BIDI).unwrap();
            }
        }
    }
    // With a min_align_mask the page rule gives way: bit 11 must survive.
    let attrs = MapAttrs {
        min_align_mask: 0xfff,
        alloc_align_mask: 0,
    };
    let at = pool.map(0, &mem, orig(0x800), 8192, TO, attrs).unwrap();
    assert_eq!(at.as_u64() & 0xfff, 0x800);
    pool.check_invariants();
    assert_eq!(pool.stats().used_slots, 4);
}

#[test]
fn alloc_align_mask_aligns_the_allocation() {
    setup!(pool, mem, 2, 1);
    pool.map(0, &mem, orig(0), 10, TO, NO_ATTRS).unwrap();
    let attrs = MapAttrs {
        min_align_mask: 0,
        alloc_align_mask: 0x3fff,
    };
    let at = pool.map(0, &mem, orig(0x77), 100, TO, attrs).unwrap();
    assert_eq!(at.as_u64() & 0x3fff, 0);
    assert_eq!(
        pool.allocation_of(at),
        Some((8, 8)),
        "size rounds up to the alignment, as Linux"
    );

    // Both masks: the kept low bits become an offset inside the aligned
    // allocation, whole pad slots included.
    let attrs = MapAttrs {
        min_align_mask: 0xfff,
        alloc_align_mask: 0xfff,
    };
    let at = pool.map(0, &mem, orig(0x9ab), 1000, TO, attrs).unwrap();
    assert_eq!(at.as_u64() & 0xfff, 0x9ab);
    let (first, nslots) = pool.allocation_of(at).unwrap();
    assert_eq!(first % 2, 0, "page-aligned allocation");
    assert_eq!(nslots, 2);
    assert_eq!(at, dma((first * SLOT_SIZE + 0x9ab) as u64));
    assert_eq!(bus_bytes(&pool, at, 1000), ram_bytes(&mem, 0x9ab, 1000));

    let bad = MapAttrs {
        min_align_mask: 0x1000,
        alloc_align_mask: 0,
    };
    assert_eq!(
        pool.map(0, &mem, orig(0), 10, TO, bad),
        Err(MapError::BadAlignMask { mask: 0x1000 })
    );
    let bad = MapAttrs {
        min_align_mask: 0,
        alloc_align_mask: 0xff0,
    };
    assert!(matches!(
        pool.map(0, &mem, orig(0), 10, TO, bad),
        Err(MapError::BadAlignMask { .. })
    ));
    pool.check_invariants();
}

#[test]
fn mappings_never_cross_a_segment() {
    setup!(pool, mem, 2, 1);
    let x = pool
        .map(0, &mem, orig(0), 100 * SLOT_SIZE, TO, NO_ATTRS)
        .unwrap();
    let y = pool
        .map(0, &mem, orig(0), 28 * SLOT_SIZE, TO, NO_ATTRS)
        .unwrap();
    let z = pool
        .map(0, &mem, orig(0), 100 * SLOT_SIZE, TO, NO_ATTRS)
        .unwrap();
    let w = pool
        .map(0, &mem, orig(0), 28 * SLOT_SIZE, TO, NO_ATTRS)
        .unwrap();
    assert_eq!(pool.allocation_of(y), Some((100, 28)));
    assert_eq!(pool.allocation_of(z), Some((128, 100)));
    pool.unmap(&mut mem, y, 28 * SLOT_SIZE, TO).unwrap();
    pool.unmap(&mut mem, z, 100 * SLOT_SIZE, TO).unwrap();
    pool.check_invariants();
    // Slots 100..228 are free and contiguous, but 128 is a segment boundary:
    // a 120-slot run must not straddle it.
    let full = pool.map(0, &mem, orig(0), 120 * SLOT_SIZE, TO, NO_ATTRS);
    assert_eq!(
        full,
        Err(MapError::PoolFull {
            size: 120 * SLOT_SIZE,
            total_slots: 256,
            used_slots: 128
        })
    );
    // 64 slots fit only after the boundary, although the search starts before it.
    let v = pool
        .map(0, &mem, orig(0), 64 * SLOT_SIZE, TO, NO_ATTRS)
        .unwrap();
    assert_eq!(pool.allocation_of(v), Some((128, 64)));
    let u = pool
        .map(0, &mem, orig(0), 28 * SLOT_SIZE, TO, NO_ATTRS)
        .unwrap();
    assert_eq!(pool.allocation_of(u), Some((192, 28)));
    let t = pool
        .map(0, &mem, orig(0), 28 * SLOT_SIZE, TO, NO_ATTRS)
        .unwrap();
    assert_eq!(pool.allocation_of(t), Some((100, 28)));
    for (at, slots) in [(x, 100), (w, 28), (v, 64), (u, 28), (t, 28)] {
        pool.unmap(&mut mem, at, slots * SLOT_SIZE, TO).unwrap();
    }
    pool.check_invariants();
    assert_eq!(pool.stats().used_slots, 0);
}

#[test]
fn oversized_mappings_are_refused() {
    setup!(pool, mem, 1, 1);
    let at = pool
        .map(0, &mem, orig(0), MAX_MAPPING_SIZE, FROM, NO_ATTRS)
        .unwrap();
    assert_eq!(pool.stats().used_slots, SEGMENT_SLOTS);
    pool.unmap(&mut mem, at, MAX_MAPPING_SIZE, FROM).unwrap();
    assert_eq!(
        pool.map(0, &mem, orig(0), MAX_MAPPING_SIZE + 1, TO, NO_ATTRS),
        Err(MapError::TooLarge {
            size: MAX_MAPPING_SIZE + 1,
            alloc_size: MAX_MAPPING_SIZE + 1,
            max: MAX_MAPPING_SIZE
        })
    );
    let keep = MapAttrs {
        min_align_mask: 0xfff,
        alloc_align_mask: 0,
    };
    assert!(matches!(
        pool.map(0, &mem, orig(0x100), MAX_MAPPING_SIZE, TO, keep),
        Err(MapError::TooLarge {
            alloc_size: 0x40100,
            ..
        })
    ));
    let huge_align = MapAttrs {
        min_align_mask: 0,
        alloc_align_mask: 0x7ffff,
    };
    assert!(matches!(
        pool.map(0, &mem, orig(0), 1, TO, huge_align),
        Err(MapError::TooLarge { .. })
    ));
    assert_eq!(
        pool.map(0, &mem, orig(0), 0, TO, NO_ATTRS),
        Err(MapError::ZeroSize)
    );
    assert_eq!(
        pool.map(0, &mem, orig(0), 1, Direction::None, NO_ATTRS),
        Err(MapError::BadDirection)
    );
    assert!(matches!(
        pool.map(0, &mem, OrigAddr::new(u64::MAX - 4), 10, TO, NO_ATTRS),
        Err(MapError::AddressOverflow { .. })
    ));
    // The largest mapping a min_align_mask device can always get does fit.
    let size = max_mapping_size(0xfff);
    let at = pool.map(0, &mem, orig(0xfff), size, TO, keep).unwrap();
    pool.unmap(&mut mem, at, size, TO).unwrap();
    assert_eq!(pool.stats().map_failures, 6);
    pool.check_invariants();
}

#[test]
fn full_pool_fails_cleanly_and_recovers() {
    setup!(pool, mem, 1, 1);
    let size = 64 << 10;
    let maps: Vec<_> = (0..4)
        .map(|i| {
            let at = pool
                .map(0, &mem, orig(i * size as u64), size, BIDI, NO_ATTRS)
                .unwrap();
            pool.bus_write(at, &pattern(size, 100 + i as u8)).unwrap();
            at
        })
        .collect();
    let before = mem.bytes().to_vec();
    let err = pool
        .map(0, &mem, orig(0x10_0000), size, BIDI, NO_ATTRS)
        .unwrap_err();
    assert_eq!(
        err,
        MapError::PoolFull {
            size,
            total_slots: 128,
            used_slots: 128
        }
    );
    assert_eq!(
        err.to_string(),
        "swiotlb buffer is full (sz: 65536 bytes), total 128 (slots), used 128 (slots)"
    );
    // Nothing moved: the live mappings and the original memory are intact.
    for (i, &at) in maps.iter().enumerate() {
        assert_eq!(bus_bytes(&pool, at, size), pattern(size, 100 + i as u8));
    }
    assert_eq!(mem.bytes(), &before[..]);
    pool.check_invariants();
    let stats = pool.stats();
    assert_eq!(
        (stats.map_failures, stats.used_slots, stats.maps),
        (1, 128, 4)
    );

    pool.unmap(&mut mem, maps[2], size, BIDI).unwrap();
    assert_eq!(ram_bytes(&mem, 2 * size as u64, size), pattern(size, 102));
    let again = pool
        .map(0, &mem, orig(0x10_0000), size, BIDI, NO_ATTRS)
        .unwrap();
    assert_eq!(again, maps[2]);
    assert_eq!(
        bus_bytes(&pool, again, size),
        ram_bytes(&mem, 0x10_0000, size)
    );
    pool.check_invariants();
}

#[test]
fn fragmented_pool_is_full_for_a_run_it_lacks() {
    setup!(pool, mem, 1, 1);
    let maps: Vec<_> = (0..128)
        .map(|_| pool.map(0, &mem, orig(0), SLOT_SIZE, TO, NO_ATTRS).unwrap())
        .collect();
    for at in maps.iter().step_by(2) {
        pool.unmap(&mut mem, *at, SLOT_SIZE, TO).unwrap();
    }
    assert_eq!(
        pool.map(0, &mem, orig(0), 2 * SLOT_SIZE, TO, NO_ATTRS),
        Err(MapError::PoolFull {
            size: 2 * SLOT_SIZE,
            total_slots: 128,
            used_slots: 64
        })
    );
    pool.unmap(&mut mem, maps[1], SLOT_SIZE, TO).unwrap();
    let at = pool
        .map(0, &mem, orig(0), 3 * SLOT_SIZE, TO, NO_ATTRS)
        .unwrap();
    assert_eq!(pool.allocation_of(at), Some((0, 3)));
    pool.check_invariants();
}

#[test]
fn bad_unmaps_are_detected_and_change_nothing() {
    setup!(pool, mem, 2, 1);
    let size = 1000;
    let a = pool.map(0, &mem, orig(0x40), size, BIDI, NO_ATTRS).unwrap();
    pool.bus_write(a, &pattern(size, 9)).unwrap();
    let ram_before = mem.bytes().to_vec();
    let stats_before = pool.stats();
    let end = dma(2 * SEGMENT_SIZE as u64);
    let cases = [
        (
            dma(0).checked_add(u64::MAX - BUS).unwrap(),
            size,
            BIDI,
            HandleError::NotInPool {
                addr: DmaAddr::new(u64::MAX),
            },
        ),
        (
            DmaAddr::new(BUS - 1),
            size,
            BIDI,
            HandleError::NotInPool {
                addr: DmaAddr::new(BUS - 1),
            },
        ),
        (end, size, BIDI, HandleError::NotInPool { addr: end }),
        (
            dma(0x10_000),
            size,
            BIDI,
            HandleError::NotMapped {
                addr: dma(0x10_000),
            },
        ),
        (
            dma(1),
            size - 1,
            BIDI,
            HandleError::NotMappingStart {
                addr: dma(1),
                start: a,
            },
        ),
        (
            a,
            size + 1,
            BIDI,
            HandleError::SizeMismatch {
                addr: a,
                mapped: size,
                requested: size + 1,
            },
        ),
        (
            a,
            size,
            FROM,
            HandleError::DirectionMismatch {
                addr: a,
                mapped: BIDI,
                requested: FROM,
            },
        ),
        (a, size, Direction::None, HandleError::BadDirection),
    ];
    for (i, (at, len, dir, want)) in cases.into_iter().enumerate() {
        assert_eq!(pool.unmap(&mut mem, at, len, dir), Err(want), "case {i}");
        assert!(!want.to_string().is_empty());
        assert_eq!(mem.bytes(), &ram_before[..], "case {i} copied back");
        let stats = pool.stats();
        assert_eq!(stats.used_slots, stats_before.used_slots);
        assert_eq!(stats.handle_errors, i as u64 + 1);
    }
    pool.check_invariants();
    pool.unmap(&mut mem, a, size, BIDI).unwrap();
    assert_eq!(ram_bytes(&mem, 0x40, size), pattern(size, 9));
    let after_first = mem.bytes().to_vec();
    assert_eq!(
        pool.unmap(&mut mem, a, size, BIDI),
        Err(HandleError::NotMapped { addr: a })
    );
    assert_eq!(mem.bytes(), &after_first[..]);
    let stats = pool.stats();
    assert_eq!(
        (stats.unmaps, stats.handle_errors, stats.used_slots),
        (1, 9, 0)
    );
    pool.check_invariants();
}

#[test]
fn map_copies_in_for_every_direction() {
    setup!(pool, mem, 1, 1);
    for (i, dir) in [TO, FROM, BIDI].into_iter().enumerate() {
        // Stale contents from whoever used the slots before.
        pool.bus_write(dma(0), &vec![0xee; SEGMENT_SIZE]).unwrap();
        let offset = 0x1000 * i as u64 + 5;
        let at = pool
            .map(0, &mem, orig(offset), 3000, dir, NO_ATTRS)
            .unwrap();
        assert_eq!(
            bus_bytes(&pool, at, 3000),
            ram_bytes(&mem, offset, 3000),
            "{dir:?}"
        );
        pool.unmap(&mut mem, at, 3000, dir).unwrap();
    }
    assert_eq!(pool.stats().bounced_to_device, 3 * 3000);
}

#[test]
fn partial_device_write_does_not_leak_old_pool_contents() {
    setup!(pool, mem, 1, 1);
    let size = 8192;
    let secret = vec![0x5e; SEGMENT_SIZE];
    pool.bus_write(dma(0), &secret).unwrap();
    let original = ram_bytes(&mem, 0x3000, size);
    let at = pool
        .map(0, &mem, orig(0x3000), size, FROM, NO_ATTRS)
        .unwrap();
    let device = pattern(size / 2, 77);
    pool.bus_write(at, &device).unwrap();
    pool.unmap(&mut mem, at, size, FROM).unwrap();
    assert_eq!(ram_bytes(&mem, 0x3000, size / 2), device);
    assert_eq!(
        ram_bytes(&mem, 0x3000 + size as u64 / 2, size / 2),
        original[size / 2..]
    );
}

#[test]
fn unmap_copies_back_only_from_the_device() {
    setup!(pool, mem, 1, 1);
    let size = 5000;
    for (i, dir) in [TO, FROM, BIDI].into_iter().enumerate() {
        let offset = 0x2_0000 * i as u64;
        let before = ram_bytes(&mem, offset, size);
        let at = pool
            .map(0, &mem, orig(offset), size, dir, NO_ATTRS)
            .unwrap();
        let device = pattern(size, 40 + i as u8);
        pool.bus_write(at, &device).unwrap();
        pool.unmap(&mut mem, at, size, dir).unwrap();
        let want = if dir == TO { before } else { device };
        assert_eq!(ram_bytes(&mem, offset, size), want, "{dir:?}");
    }
    let stats = pool.stats();
    assert_eq!(
        (stats.bounced_to_device, stats.bounced_from_device),
        (3 * 5000, 2 * 5000)
    );
}

#[test]
fn sync_copies_by_direction() {
    setup!(pool, mem, 1, 1);
    let size = 4000;
    // FromDevice: sync_for_cpu copies back, sync_for_device does not copy.
    let f = pool.map(0, &mem, orig(0), size, FROM, NO_ATTRS).unwrap();
    let device = pattern(size, 3);
    pool.bus_write(f, &device).unwrap();
    pool.sync_for_cpu(&mut mem, f, size, FROM).unwrap();
    assert_eq!(ram_bytes(&mem, 0, size), device);
    mem.bytes_mut()[..size].fill(0x11);
    pool.sync_for_device(&mem, f, size, FROM).unwrap();
    assert_eq!(bus_bytes(&pool, f, size), device);

    // ToDevice: sync_for_device copies out, sync_for_cpu does not copy.
    let t = pool
        .map(0, &mem, orig(0x1_0000), size, TO, NO_ATTRS)
        .unwrap();
    mem.bytes_mut()[0x1_0000..0x1_0000 + size].fill(0x22);
    pool.sync_for_device(&mem, t, size, TO).unwrap();
    assert_eq!(bus_bytes(&pool, t, size), vec![0x22; size]);
    pool.bus_write(t, &pattern(size, 4)).unwrap();
    pool.sync_for_cpu(&mut mem, t, size, TO).unwrap();
    assert_eq!(ram_bytes(&mem, 0x1_0000, size), vec![0x22; size]);

    // Bidirectional: both copy; a partial range touches only its bytes.
    let b = pool
        .map(0, &mem, orig(0x2_0000), size, BIDI, NO_ATTRS)
        .unwrap();
    let before = ram_bytes(&mem, 0x2_0000, size);
    pool.bus_write(b, &vec![0x33; size]).unwrap();
    pool.sync_for_cpu(&mut mem, b.checked_add(100).unwrap(), 50, BIDI)
        .unwrap();
    let mut want = before.clone();
    want[100..150].fill(0x33);
    assert_eq!(ram_bytes(&mem, 0x2_0000, size), want);
    mem.bytes_mut()[0x2_0000 + 200..0x2_0000 + 300].fill(0x44);
    pool.sync_for_device(&mem, b.checked_add(200).unwrap(), 100, BIDI)
        .unwrap();
    let mut want = vec![0x33; size];
    want[200..300].fill(0x44);
    assert_eq!(bus_bytes(&pool, b, size), want);
    // A bidirectional mapping may be synced in one direction only (no copy
    // the other way).
    pool.sync_for_cpu(&mut mem, b, size, TO).unwrap();
    assert_eq!(ram_bytes(&mem, 0x2_0000 + 100, 50), vec![0x33; 50]);
    assert_eq!(ram_bytes(&mem, 0x2_0000, 100), before[..100]);

    let stats = pool.stats();
    assert_eq!(stats.bounced_to_device, 3 * size as u64 + size as u64 + 100);
    assert_eq!(stats.bounced_from_device, size as u64 + 50);
    assert_eq!(pool.stats().handle_errors, 0);
}

#[test]
fn bad_syncs_are_refused() {
    setup!(pool, mem, 1, 1);
    let keep = MapAttrs {
        min_align_mask: 0x7ff,
        alloc_align_mask: 0,
    };
    let t = pool.map(0, &mem, orig(0x100), 1000, TO, keep).unwrap();
    assert_eq!(t, dma(0x100));
    let before = mem.bytes().to_vec();
    let out = |addr: DmaAddr, size| HandleError::OutOfRange {
        addr,
        size,
        start: t,
        mapped: 1000,
    };
    assert_eq!(
        pool.sync_for_cpu(&mut mem, t, 1000, FROM),
        Err(HandleError::DirectionMismatch {
            addr: t,
            mapped: TO,
            requested: FROM
        })
    );
    assert_eq!(pool.sync_for_device(&mem, t, 1001, TO), Err(out(t, 1001)));
    let inside = t.checked_add(999).unwrap();
    assert_eq!(
        pool.sync_for_device(&mem, inside, 2, TO),
        Err(out(inside, 2))
    );
    assert_eq!(
        pool.sync_for_device(&mem, dma(0x10), 1, TO),
        Err(out(dma(0x10), 1))
    );
    let past = t.checked_add(1000).unwrap();
    assert_eq!(pool.sync_for_device(&mem, past, 1, TO), Err(out(past, 1)));
    assert_eq!(
        pool.sync_for_device(&mem, dma(4096), 1, TO),
        Err(HandleError::NotMapped { addr: dma(4096) })
    );
    assert_eq!(
        pool.sync_for_cpu(&mut mem, t, 1, Direction::None),
        Err(HandleError::BadDirection)
    );
    assert_eq!(
        pool.sync_for_cpu(&mut mem, dma(1 << 30), 1, TO),
        Err(HandleError::NotInPool { addr: dma(1 << 30) })
    );
    assert_eq!(pool.stats().handle_errors, 8);
    // Zero bytes inside the mapping is a valid no-op.
    pool.sync_for_device(&mem, inside, 0, TO).unwrap();
    assert_eq!(mem.bytes(), &before[..]);
    pool.unmap(&mut mem, t, 1000, TO).unwrap();
    assert_eq!(
        pool.sync_for_device(&mem, t, 1, TO),
        Err(HandleError::NotMapped { addr: t })
    );
}

#[test]
fn statistics_add_up() {
    setup!(pool, mem, 1, 1);
    let a = pool.map(0, &mem, orig(0), 100, FROM, NO_ATTRS).unwrap();
    let b = pool
        .map(0, &mem, orig(0x1000), 4096, BIDI, NO_ATTRS)
        .unwrap();
    let c = pool
        .map(0, &mem, orig(0x3000), 3 * SLOT_SIZE, TO, NO_ATTRS)
        .unwrap();
    assert_eq!(pool.stats().used_slots, 1 + 2 + 3);
    pool.unmap(&mut mem, b, 4096, BIDI).unwrap();
    pool.sync_for_cpu(&mut mem, a, 100, FROM).unwrap();
    pool.sync_for_device(&mem, c, 10, TO).unwrap();
    let _ = pool
        .map(0, &mem, orig(0), MAX_MAPPING_SIZE, TO, NO_ATTRS)
        .unwrap_err();
    let _ = pool.unmap(&mut mem, b, 4096, BIDI).unwrap_err();
    pool.unmap(&mut mem, a, 100, FROM).unwrap();
    let stats = pool.stats();
    assert_eq!(
        stats,
        Stats {
            total_slots: 128,
            used_slots: 3,
            high_water_slots: 6,
            maps: 3,
            unmaps: 2,
            map_failures: 1,
            handle_errors: 1,
            bounced_to_device: 100 + 4096 + 3 * SLOT_SIZE as u64 + 10,
            bounced_from_device: 4096 + 100 + 100,
        }
    );
    assert_eq!(
        stats.bounced_bytes(),
        stats.bounced_to_device + stats.bounced_from_device
    );
    assert_eq!(
        stats.to_string(),
        "swiotlb: slots total 128 used 3 high-water 6; maps 3 unmaps 2 failures 1 bad-handles 1; bounced 14646 bytes (to-device 10350, from-device 4296)"
    );
}

#[test]
fn cpus_start_in_their_area_and_fall_back() {
    setup!(pool, mem, 4, 4);
    for cpu in 0..8 {
        let at = pool.map(cpu, &mem, orig(0), 10, TO, NO_ATTRS).unwrap();
        assert_eq!(pool.area_of(at), Some(cpu % 4));
    }
    let big = pool
        .map(
            2,
            &mem,
            orig(0),
            MAX_MAPPING_SIZE - 2 * SLOT_SIZE,
            TO,
            NO_ATTRS,
        )
        .unwrap();
    assert_eq!(pool.area_of(big), Some(2));
    let next = pool.map(2, &mem, orig(0), 4096, TO, NO_ATTRS).unwrap();
    assert_eq!(
        pool.area_of(next),
        Some(3),
        "area 2 is full: the next one is used"
    );
    let wrap = pool.map(
        3,
        &mem,
        orig(0),
        MAX_MAPPING_SIZE - 4 * SLOT_SIZE,
        TO,
        NO_ATTRS,
    );
    assert_eq!(pool.area_of(wrap.unwrap()), Some(3));
    let wrap = pool.map(
        3,
        &mem,
        orig(0),
        MAX_MAPPING_SIZE - 2 * SLOT_SIZE,
        TO,
        NO_ATTRS,
    );
    assert_eq!(
        pool.area_of(wrap.unwrap()),
        Some(0),
        "fallback wraps to area 0"
    );
    pool.check_invariants();
}

#[test]
fn uneven_areas_hold_whole_segments() {
    setup!(pool, mem, 3, 2);
    let a = pool
        .map(1, &mem, orig(0), MAX_MAPPING_SIZE, TO, NO_ATTRS)
        .unwrap();
    let b = pool
        .map(1, &mem, orig(0), MAX_MAPPING_SIZE, TO, NO_ATTRS)
        .unwrap();
    assert_eq!((pool.area_of(a), pool.area_of(b)), (Some(1), Some(1)));
    assert_eq!(
        (a, b),
        (dma(SEGMENT_SIZE as u64), dma(2 * SEGMENT_SIZE as u64))
    );
    let c = pool
        .map(1, &mem, orig(0), MAX_MAPPING_SIZE, TO, NO_ATTRS)
        .unwrap();
    assert_eq!(c, dma(0));
    assert!(matches!(
        pool.map(0, &mem, orig(0), 1, TO, NO_ATTRS),
        Err(MapError::PoolFull {
            total_slots: 384,
            used_slots: 384,
            ..
        })
    ));
    pool.unmap(&mut mem, b, MAX_MAPPING_SIZE, TO).unwrap();
    pool.check_invariants();
}

#[test]
fn next_fit_moves_on_after_a_free() {
    setup!(pool, mem, 1, 1);
    let a = pool.map(0, &mem, orig(0), 10, TO, NO_ATTRS).unwrap();
    pool.unmap(&mut mem, a, 10, TO).unwrap();
    let b = pool.map(0, &mem, orig(0), 10, TO, NO_ATTRS).unwrap();
    assert_eq!(
        b,
        dma(SLOT_SIZE as u64),
        "like Linux, the search resumes after the last hit"
    );
    // The index wraps at the end of the area.
    let rest = pool
        .map(0, &mem, orig(0), 126 * SLOT_SIZE, TO, NO_ATTRS)
        .unwrap();
    assert_eq!(pool.allocation_of(rest), Some((2, 126)));
    let c = pool.map(0, &mem, orig(0), 10, TO, NO_ATTRS).unwrap();
    assert_eq!(c, dma(0));
    pool.check_invariants();
}

#[test]
fn concurrent_cpus_keep_mappings_apart() {
    const THREADS: usize = 4;
    const SHARE: usize = RAM_LEN / THREADS;
    let mut backing = vec![0u8; 8 * SEGMENT_SIZE];
    let pool = Pool::new(&mut backing, DmaAddr::new(BUS), 4).unwrap();
    let mut ram = pattern(RAM_LEN, 1);
    std::thread::scope(|scope| {
        for (cpu, share) in ram.chunks_mut(SHARE).enumerate() {
            let pool = &pool;
            scope.spawn(move || {
                let base = RAM_BASE + (cpu * SHARE) as u64;
                let mut mem = SliceMemory::new(OrigAddr::new(base), share);
                let mut seed = cpu as u64 * 7919 + 1;
                for round in 0..1500u32 {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let size = 1 + (seed >> 33) as usize % (96 << 10);
                    let offset = (seed >> 13) as usize % (SHARE - size);
                    let from = OrigAddr::new(base + offset as u64);
                    let Ok(at) = pool.map(cpu, &mem, from, size, BIDI, NO_ATTRS) else {
                        continue;
                    };
                    let mut seen = vec![0; size];
                    pool.bus_read(at, &mut seen).unwrap();
                    assert_eq!(seen, mem.bytes()[offset..offset + size]);
                    // Not `pattern`: generating it is slow in debug builds.
                    let device = vec![(round as u8).wrapping_mul(7) ^ cpu as u8; size];
                    pool.bus_write(at, &device).unwrap();
                    pool.unmap(&mut mem, at, size, BIDI).unwrap();
                    assert_eq!(mem.bytes()[offset..offset + size], device[..]);
                }
            });
        }
    });
    pool.check_invariants();
    let stats = pool.stats();
    assert_eq!(stats.used_slots, 0);
    assert_eq!(stats.maps, stats.unmaps);
    assert_eq!(stats.maps + stats.map_failures, THREADS as u64 * 1500);
    assert!(stats.high_water_slots > 0 && stats.high_water_slots <= stats.total_slots);
}

#[test]
fn addresses_translate_and_bus_access_is_bounded() {
    setup!(pool, mem, 2, 2);
    let _ = &mut mem;
    let len = 2 * SEGMENT_SIZE as u64;
    assert!(pool.contains(dma(0)) && pool.contains(dma(len - 1)));
    assert!(!pool.contains(dma(len)) && !pool.contains(DmaAddr::new(BUS - 1)));
    assert_eq!(pool.bus_base(), dma(0));
    assert_eq!(pool.cpu_addr(dma(5)), pool.cpu_base().checked_add(5));
    assert_eq!(pool.cpu_addr(dma(len)), None);
    // A device access across the area boundary reaches both areas.
    let edge = dma(SEGMENT_SIZE as u64 - 3);
    pool.bus_write(edge, &[1, 2, 3, 4, 5, 6]).unwrap();
    assert_eq!(bus_bytes(&pool, edge, 6), [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        pool.bus_write(dma(len - 2), &[0; 3]),
        Err(HandleError::NotInPool { addr: dma(len - 2) })
    );
    assert_eq!(pool.bus_read(dma(len), &mut []), Ok(()));
    assert_eq!(format!("{:?}", dma(0x10)), "DmaAddr(0x80000010)");
    assert_eq!(format!("{}", orig(0)), "0x1000000000");
}

#[test]
fn bench_workloads_count_their_bytes() {
    let mut w = Workload::new(4096).unwrap();
    assert_eq!(w.size(), 4096);
    assert_eq!(w.bounce(TO, 10), Ok(10 * 4096));
    assert_eq!(w.bounce(FROM, 10), Ok(20 * 4096));
    assert_eq!(w.bounce(BIDI, 1), Ok(2 * 4096));
    assert_eq!(w.memcpy(10), 10 * 4096);
    let mut w = Workload::new(MAX_MAPPING_SIZE).unwrap();
    assert_eq!(w.bounce(TO, 3), Ok(3 * MAX_MAPPING_SIZE as u64));
    assert!(Workload::new(0).is_err());
    assert!(Workload::new(MAX_MAPPING_SIZE + 1).is_err());
}

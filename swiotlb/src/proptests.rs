//! Property tests against a reference model: random sequences of map, device
//! writes, CPU writes, syncs, good and bad unmaps, on random pool shapes.
//!
//! The model keeps the original memory and each live mapping's bounce
//! contents as plain vectors, and states the placement rules in terms of the
//! resulting addresses (not the pool's search), so a `PoolFull` can be checked
//! by brute force: no valid placement may exist when the pool says full.

use crate::bench::SliceMemory;
use crate::*;
use proptest::prelude::*;

const RAM_BASE: u64 = 0x40_0000_0000;
const RAM_LEN: usize = 1 << 20;

#[derive(Debug, Clone)]
enum Op {
    Map {
        size: usize,
        orig: usize,
        min_mask: u32,
        alloc_mask: u32,
        dir: Direction,
        cpu: usize,
    },
    Unmap {
        pick: usize,
    },
    DeviceWrite {
        pick: usize,
        at: usize,
        len: usize,
        seed: u8,
    },
    CpuWrite {
        pick: usize,
        seed: u8,
    },
    SyncForCpu {
        pick: usize,
        at: usize,
        len: usize,
    },
    SyncForDevice {
        pick: usize,
        at: usize,
        len: usize,
    },
    BadUnmap {
        pick: usize,
        kind: u8,
    },
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![
        Just(Direction::ToDevice),
        Just(Direction::FromDevice),
        Just(Direction::Bidirectional)
    ]
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 1..=64usize,
        4 => 1..=4096usize,
        3 => 4096..=65536usize,
        1 => 1..=MAX_MAPPING_SIZE,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let map = (
        size(),
        0..RAM_LEN - MAX_MAPPING_SIZE,
        prop::sample::select(vec![0u32, 0, 0x7ff, 0xfff, 0x3fff]),
        prop::sample::select(vec![0u32, 0, 0, 0xfff, 0x3fff, 0xffff]),
        direction(),
        0..8usize,
    )
        .prop_map(|(size, orig, min_mask, alloc_mask, dir, cpu)| Op::Map {
            size,
            orig,
            min_mask,
            alloc_mask,
            dir,
            cpu,
        });
    prop_oneof![
        6 => map,
        3 => any::<usize>().prop_map(|pick| Op::Unmap { pick }),
        2 => (any::<usize>(), any::<usize>(), any::<usize>(), any::<u8>())
            .prop_map(|(pick, at, len, seed)| Op::DeviceWrite { pick, at, len, seed }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(pick, seed)| Op::CpuWrite { pick, seed }),
        1 => (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(pick, at, len)| Op::SyncForCpu { pick, at, len }),
        1 => (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(pick, at, len)| Op::SyncForDevice { pick, at, len }),
        1 => (any::<usize>(), 0..5u8).prop_map(|(pick, kind)| Op::BadUnmap { pick, kind }),
    ]
}

/// `(segments, areas, bus base)`.
fn shape() -> impl Strategy<Value = (usize, usize, u64)> {
    (1..=4usize, 0..3u32, 0..1024u64).prop_map(|(segments, area_log, page)| {
        let areas = (1usize << area_log).min(1 << (usize::BITS - 1 - segments.leading_zeros()));
        (segments, areas, 0x1000_0000 + page * PAGE_SIZE as u64)
    })
}

struct LiveMapping {
    dma: DmaAddr,
    size: usize,
    orig: usize,
    dir: Direction,
    first_slot: usize,
    nslots: usize,
    /// What the device sees.
    bounce: Vec<u8>,
}

#[derive(Default)]
struct Expected {
    maps: u64,
    unmaps: u64,
    map_failures: u64,
    handle_errors: u64,
    to_device: u64,
    from_device: u64,
    high_water: usize,
}

struct Model {
    bus_base: u64,
    total_slots: usize,
    ram: Vec<u8>,
    live: Vec<LiveMapping>,
    expected: Expected,
}

/// The placement rules, stated on addresses. Returns the allocation's slot
/// count and the data offset inside it, as Linux sizes them.
fn linux_sizing(orig: u64, size: usize, min_mask: u32, alloc_mask: u32) -> (usize, usize) {
    let offset = orig & u64::from(min_mask) & (u64::from(alloc_mask) | (SLOT_SIZE as u64 - 1));
    let alloc = (size as u64 + offset).next_multiple_of(u64::from(alloc_mask) + 1);
    (alloc as usize, offset as usize)
}

impl Model {
    fn bus(&self, slot: usize) -> u64 {
        self.bus_base + (slot * SLOT_SIZE) as u64
    }

    fn used(&self) -> usize {
        self.live.iter().map(|m| m.nslots).sum()
    }

    fn slot_free(&self, slot: usize) -> bool {
        !self
            .live
            .iter()
            .any(|m| (m.first_slot..m.first_slot + m.nslots).contains(&slot))
    }

    /// Whether a mapping whose allocation starts at `first` with `nslots`
    /// slots and data at `dma` obeys every rule.
    #[allow(clippy::too_many_arguments)]
    fn placement_ok(
        &self,
        first: usize,
        nslots: usize,
        dma: u64,
        orig: u64,
        size: usize,
        min_mask: u32,
        alloc_mask: u32,
    ) -> bool {
        let start = self.bus(first);
        let end = start + (nslots * SLOT_SIZE) as u64;
        let page_rule = min_mask == 0 && alloc_mask == 0 && size >= PAGE_SIZE;
        first + nslots <= self.total_slots
            && first / SEGMENT_SLOTS == (first + nslots - 1) / SEGMENT_SLOTS
            && (dma ^ orig) & u64::from(min_mask) == 0
            && start & u64::from(alloc_mask) == 0
            && (!page_rule || dma.is_multiple_of(PAGE_SIZE as u64))
            && start <= dma
            && dma + size as u64 <= end
    }

    fn pick(&self, pick: usize) -> Option<usize> {
        (!self.live.is_empty()).then(|| pick % self.live.len())
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// A sub-range `(offset, len)` of a mapping of `size` bytes.
fn sub_range(size: usize, at: usize, len: usize) -> (usize, usize) {
    let at = at % size;
    (at, len % (size - at) + 1)
}

fn check(pool: &Pool<'_>, mem: &SliceMemory<'_>, model: &Model) -> Result<(), TestCaseError> {
    pool.check_invariants();
    let stats = pool.stats();
    let e = &model.expected;
    prop_assert_eq!(stats.used_slots, model.used());
    prop_assert_eq!(stats.high_water_slots, e.high_water);
    prop_assert_eq!(
        (
            stats.maps,
            stats.unmaps,
            stats.map_failures,
            stats.handle_errors
        ),
        (e.maps, e.unmaps, e.map_failures, e.handle_errors)
    );
    prop_assert_eq!(
        (stats.bounced_to_device, stats.bounced_from_device),
        (e.to_device, e.from_device)
    );
    prop_assert!(
        mem.bytes() == &model.ram[..],
        "original memory differs from the model"
    );
    for (i, m) in model.live.iter().enumerate() {
        let mut seen = vec![0; m.size];
        pool.bus_read(m.dma, &mut seen).unwrap();
        prop_assert!(seen == m.bounce, "bounce contents of mapping {} differ", i);
        for other in &model.live[i + 1..] {
            let apart = m.first_slot + m.nslots <= other.first_slot
                || other.first_slot + other.nslots <= m.first_slot;
            prop_assert!(apart, "live allocations overlap");
        }
    }
    Ok(())
}

fn run(segments: usize, areas: usize, bus_base: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut backing = vec![0xa5u8; segments * SEGMENT_SIZE];
    let pool = Pool::new(&mut backing, DmaAddr::new(bus_base), areas).unwrap();
    // Generating a megabyte per case is slow in debug builds: do it once.
    static RAM: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let mut ram = RAM.get_or_init(|| pattern(RAM_LEN, 7)).clone();
    let mut model = Model {
        bus_base,
        total_slots: pool.total_slots(),
        ram: ram.clone(),
        live: Vec::new(),
        expected: Expected::default(),
    };
    let mut mem = SliceMemory::new(OrigAddr::new(RAM_BASE), &mut ram);

    for op in ops {
        match op {
            Op::Map {
                size,
                orig,
                min_mask,
                alloc_mask,
                dir,
                cpu,
            } => {
                let orig_addr = RAM_BASE + orig as u64;
                let attrs = MapAttrs {
                    min_align_mask: min_mask,
                    alloc_align_mask: alloc_mask,
                };
                let (alloc, offset) = linux_sizing(orig_addr, size, min_mask, alloc_mask);
                let nslots = alloc.div_ceil(SLOT_SIZE);
                let result = pool.map(cpu, &mem, OrigAddr::new(orig_addr), size, dir, attrs);
                match result {
                    Ok(dma) => {
                        let (first_slot, got_slots) = pool.allocation_of(dma).unwrap();
                        prop_assert_eq!(got_slots, nslots);
                        prop_assert!(
                            (first_slot..first_slot + nslots).all(|s| model.slot_free(s)),
                            "allocation over live slots"
                        );
                        prop_assert!(model.placement_ok(
                            first_slot,
                            nslots,
                            dma.as_u64(),
                            orig_addr,
                            size,
                            min_mask,
                            alloc_mask
                        ));
                        prop_assert_eq!(dma.as_u64(), model.bus(first_slot) + offset as u64);
                        model.live.push(LiveMapping {
                            dma,
                            size,
                            orig,
                            dir,
                            first_slot,
                            nslots,
                            bounce: model.ram[orig..orig + size].to_vec(),
                        });
                        model.expected.maps += 1;
                        model.expected.to_device += size as u64;
                        model.expected.high_water = model.expected.high_water.max(model.used());
                    }
                    Err(MapError::TooLarge { alloc_size, .. }) => {
                        prop_assert!(alloc > MAX_MAPPING_SIZE);
                        prop_assert_eq!(alloc_size, alloc);
                        model.expected.map_failures += 1;
                    }
                    Err(MapError::PoolFull {
                        size: full_size,
                        total_slots,
                        used_slots,
                    }) => {
                        prop_assert_eq!(
                            (full_size, total_slots, used_slots),
                            (alloc, model.total_slots, model.used())
                        );
                        for first in 0..model.total_slots.saturating_sub(nslots - 1) {
                            let fits = (first..first + nslots).all(|s| model.slot_free(s))
                                && model.placement_ok(
                                    first,
                                    nslots,
                                    model.bus(first) + offset as u64,
                                    orig_addr,
                                    size,
                                    min_mask,
                                    alloc_mask,
                                );
                            prop_assert!(!fits, "pool full, but slot {} would do", first);
                        }
                        model.expected.map_failures += 1;
                    }
                    Err(e) => prop_assert!(false, "unexpected {:?}", e),
                }
            }
            Op::Unmap { pick } => {
                let Some(i) = model.pick(pick) else { continue };
                let m = model.live.swap_remove(i);
                pool.unmap(&mut mem, m.dma, m.size, m.dir).unwrap();
                if matches!(m.dir, Direction::FromDevice | Direction::Bidirectional) {
                    model.ram[m.orig..m.orig + m.size].copy_from_slice(&m.bounce);
                    model.expected.from_device += m.size as u64;
                }
                model.expected.unmaps += 1;
            }
            Op::DeviceWrite {
                pick,
                at,
                len,
                seed,
            } => {
                let Some(i) = model.pick(pick) else { continue };
                let m = &mut model.live[i];
                let (at, len) = sub_range(m.size, at, len);
                let data = pattern(len, seed);
                pool.bus_write(m.dma.checked_add(at as u64).unwrap(), &data)
                    .unwrap();
                m.bounce[at..at + len].copy_from_slice(&data);
            }
            Op::CpuWrite { pick, seed } => {
                let Some(i) = model.pick(pick) else { continue };
                let (orig, size) = (model.live[i].orig, model.live[i].size);
                let data = pattern(size, seed);
                mem.bytes_mut()[orig..orig + size].copy_from_slice(&data);
                model.ram[orig..orig + size].copy_from_slice(&data);
            }
            Op::SyncForCpu { pick, at, len } => {
                let Some(i) = model.pick(pick) else { continue };
                let m = &model.live[i];
                let (at, len) = sub_range(m.size, at, len);
                pool.sync_for_cpu(&mut mem, m.dma.checked_add(at as u64).unwrap(), len, m.dir)
                    .unwrap();
                if matches!(m.dir, Direction::FromDevice | Direction::Bidirectional) {
                    let (orig, bytes) = (m.orig + at, m.bounce[at..at + len].to_vec());
                    model.ram[orig..orig + len].copy_from_slice(&bytes);
                    model.expected.from_device += len as u64;
                }
            }
            Op::SyncForDevice { pick, at, len } => {
                let Some(i) = model.pick(pick) else { continue };
                let m = &mut model.live[i];
                let (at, len) = sub_range(m.size, at, len);
                pool.sync_for_device(&mem, m.dma.checked_add(at as u64).unwrap(), len, m.dir)
                    .unwrap();
                if matches!(m.dir, Direction::ToDevice | Direction::Bidirectional) {
                    m.bounce[at..at + len]
                        .copy_from_slice(&model.ram[m.orig + at..m.orig + at + len]);
                    model.expected.to_device += len as u64;
                }
            }
            Op::BadUnmap { pick, kind } => {
                let Some(i) = model.pick(pick) else { continue };
                let m = &model.live[i];
                let other = match m.dir {
                    Direction::ToDevice => Direction::FromDevice,
                    _ => Direction::ToDevice,
                };
                let (at, size, dir) = match kind {
                    0 => (m.dma, m.size + 1, m.dir),
                    1 => (m.dma, m.size, other),
                    2 if m.size > 1 => (m.dma.checked_add(1).unwrap(), m.size - 1, m.dir),
                    2 | 3 => (m.dma, m.size, Direction::None),
                    _ => {
                        // A real unmap, then the same again: a double unmap.
                        let m = model.live.swap_remove(i);
                        pool.unmap(&mut mem, m.dma, m.size, m.dir).unwrap();
                        if matches!(m.dir, Direction::FromDevice | Direction::Bidirectional) {
                            model.ram[m.orig..m.orig + m.size].copy_from_slice(&m.bounce);
                            model.expected.from_device += m.size as u64;
                        }
                        model.expected.unmaps += 1;
                        let again = pool.unmap(&mut mem, m.dma, m.size, m.dir);
                        // The slots may already serve... nothing: no map ran in between.
                        prop_assert_eq!(again, Err(HandleError::NotMapped { addr: m.dma }));
                        model.expected.handle_errors += 1;
                        check(&pool, &mem, &model)?;
                        continue;
                    }
                };
                prop_assert!(pool.unmap(&mut mem, at, size, dir).is_err());
                model.expected.handle_errors += 1;
            }
        }
        check(&pool, &mem, &model)?;
    }

    // Unmap everything: the pool must be empty and pristine again.
    while let Some(m) = model.live.pop() {
        pool.unmap(&mut mem, m.dma, m.size, m.dir).unwrap();
        if matches!(m.dir, Direction::FromDevice | Direction::Bidirectional) {
            model.ram[m.orig..m.orig + m.size].copy_from_slice(&m.bounce);
            model.expected.from_device += m.size as u64;
        }
        model.expected.unmaps += 1;
    }
    check(&pool, &mem, &model)?;
    let stats = pool.stats();
    prop_assert_eq!(stats.used_slots, 0);
    prop_assert_eq!(stats.maps, stats.unmaps);
    // An empty pool takes a full segment in every area again.
    for cpu in 0..areas {
        let dma = pool
            .map(
                cpu,
                &mem,
                OrigAddr::new(RAM_BASE),
                MAX_MAPPING_SIZE,
                Direction::ToDevice,
                MapAttrs::default(),
            )
            .unwrap();
        pool.unmap(&mut mem, dma, MAX_MAPPING_SIZE, Direction::ToDevice)
            .unwrap();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_match_the_model(
        (segments, areas, bus_base) in shape(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        run(segments, areas, bus_base, ops)?;
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Mostly small mappings on a one-segment pool: exercises fullness,
    /// fragmentation and the free-run merging much harder.
    #[test]
    fn small_pool_fills_and_drains(
        ops in prop::collection::vec(
            prop_oneof![
                3 => (1..=3 * SLOT_SIZE, 0..4096usize, direction()).prop_map(|(size, orig, dir)| Op::Map {
                    size, orig, min_mask: 0, alloc_mask: 0, dir, cpu: 0,
                }),
                1 => (1..=16 * SLOT_SIZE, 0..8192usize, prop::sample::select(vec![0u32, 0x7ff, 0xfff]))
                    .prop_map(|(size, orig, min_mask)| Op::Map {
                        size, orig, min_mask, alloc_mask: 0, dir: Direction::Bidirectional, cpu: 0,
                    }),
                2 => any::<usize>().prop_map(|pick| Op::Unmap { pick }),
            ],
            1..400,
        ),
    ) {
        run(1, 1, 0x2000_0000, ops)?;
    }
}

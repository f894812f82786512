//! Tests of the PCI address parser, BAR sizing and the placement checks,
//! over a fake bus that implements BARs the way hardware does.

use std::collections::BTreeMap;

use super::*;
use crate::domain::config::{LayoutKind, VnodeConfig};
use crate::mm::addr::{MemRange, Mfn};
use crate::numa::NodeId;

/// One fake function: its 256 bytes and the size of each BAR (0: none;
/// a BAR's low flag bits are read-only).
#[derive(Clone)]
pub struct FakeFn {
    pub regs: [u8; 256],
    /// Per BAR register: the mask of writable address bits (0: not
    /// implemented).
    pub bar_masks: [u32; 6],
}

/// A bus of fake functions, accessed the way `0xCF8`/`0xCFC` would.
#[derive(Clone, Default)]
pub struct FakeBus {
    pub fns: BTreeMap<Bdf, FakeFn>,
}

impl FakeBus {
    pub const EDU: Bdf = Bdf {
        bus: 0,
        dev: 4,
        func: 0,
    };

    /// A host bridge at 00:00.0 and QEMU's edu at 00:04.0: BAR0 mem32,
    /// 1 MiB at 0xfea00000, memory decoding on, interrupt pin A.
    pub fn with_edu() -> FakeBus {
        let mut bus = FakeBus::default();
        let mut host = FakeFn {
            regs: [0; 256],
            bar_masks: [0; 6],
        };
        host.regs[0..4].copy_from_slice(&0x2918_8086u32.to_le_bytes());
        bus.fns.insert(
            Bdf {
                bus: 0,
                dev: 0,
                func: 0,
            },
            host,
        );
        let mut edu = FakeFn {
            regs: [0; 256],
            bar_masks: [0xFFF0_0000, 0, 0, 0, 0, 0],
        };
        edu.regs[0..4].copy_from_slice(&0x11e8_1234u32.to_le_bytes());
        edu.regs[4] = CMD_MEMORY as u8;
        edu.regs[8..12].copy_from_slice(&0x00ff_0010u32.to_le_bytes());
        edu.regs[0x10..0x14].copy_from_slice(&0xFEA0_0000u32.to_le_bytes());
        edu.regs[0x3D] = 1;
        bus.fns.insert(Self::EDU, edu);
        bus
    }

    pub fn reg(&self, bdf: Bdf, reg: u8) -> u32 {
        let f = &self.fns[&bdf];
        let r = usize::from(reg);
        u32::from_le_bytes([f.regs[r], f.regs[r + 1], f.regs[r + 2], f.regs[r + 3]])
    }
}

impl ConfigSpace for FakeBus {
    fn read(&mut self, bdf: Bdf, reg: u8, size: u8) -> u32 {
        let Some(f) = self.fns.get(&bdf) else {
            return u32::MAX;
        };
        (0..size).fold(0, |v, k| {
            v | u32::from(f.regs[usize::from(reg + k)]) << (8 * u32::from(k))
        })
    }

    fn write(&mut self, bdf: Bdf, reg: u8, size: u8, value: u32) {
        let Some(f) = self.fns.get_mut(&bdf) else {
            return;
        };
        let dreg = reg & !3;
        if (0x10..0x28).contains(&dreg) {
            let i = usize::from((dreg - 0x10) / 4);
            let r = usize::from(dreg);
            let old = u32::from_le_bytes([f.regs[r], f.regs[r + 1], f.regs[r + 2], f.regs[r + 3]]);
            let mask = f.bar_masks[i];
            let flags = if mask == 0 { 0 } else { old & !mask & 0xF };
            let v = (value & mask) | flags;
            f.regs[r..r + 4].copy_from_slice(&v.to_le_bytes());
            return;
        }
        for k in 0..size {
            f.regs[usize::from(reg + k)] = (value >> (8 * u32::from(k))) as u8;
        }
    }
}

#[test]
fn addresses_parse_like_lspci() {
    assert_eq!(
        Bdf::parse("00:04.0"),
        Ok(Bdf {
            bus: 0,
            dev: 4,
            func: 0
        })
    );
    assert_eq!(
        Bdf::parse("0000:1f:1f.7"),
        Ok(Bdf {
            bus: 0x1f,
            dev: 0x1f,
            func: 7
        })
    );
    for bad in [
        "", "00:04", "00:20.0", "00:04.8", "100:00.0", "0:0:0:0", "zz:00.0", "00:04.0 ",
    ] {
        assert!(Bdf::parse(bad).is_err(), "{bad:?}");
    }
    assert!(Bdf::parse("0001:00:04.0").unwrap_err().contains("segment"));
    let b = Bdf::parse("00:04.0").unwrap();
    assert_eq!(b.to_string(), "00:04.0");
    assert_eq!(b.config_address(0x10), 0x8000_2010);
    assert_eq!(Bdf::from_config_address(0x8000_2013), Some(b));
    assert_eq!(Bdf::from_config_address(0x0000_2010), None);
    assert_eq!(Bdf::from_config_address(0x8100_2010), None);
}

#[test]
fn probe_sizes_bars_and_restores_them() {
    let mut bus = FakeBus::with_edu();
    let before = bus.fns[&FakeBus::EDU].regs;
    let d = probe(&mut bus, FakeBus::EDU).unwrap();
    assert_eq!((d.vendor, d.device, d.class), (0x1234, 0x11e8, 0x00ff00));
    assert_eq!(
        d.bars,
        vec![Bar {
            index: 0,
            kind: BarKind::Mem32,
            prefetchable: false,
            base: 0xFEA0_0000,
            size: 1 << 20,
            flags: 0,
        }]
    );
    assert_eq!(d.bars[0].to_string(), "BAR0 mem32 [0xfea00000-0xfeb00000)");
    assert_eq!(d.to_string(), "00:04.0 1234:11e8 class 00ff00");
    assert_eq!(bus.fns[&FakeBus::EDU].regs, before, "restored");
    assert!(probe(&mut bus, Bdf::parse("00:05.0").unwrap())
        .unwrap_err()
        .contains("no PCI device at 00:05.0"));
}

#[test]
fn probe_handles_64_bit_and_io_bars_and_refuses_the_unsafe() {
    let mut bus = FakeBus::with_edu();
    let f = bus.fns.get_mut(&FakeBus::EDU).unwrap();
    // BAR0: 64-bit prefetchable 16 MiB at 0x8_0000_0000; BAR2: 256 ports.
    f.bar_masks = [0xFF00_0000, 0xFFFF_FFFF, 0xFFFF_FF00, 0, 0, 0];
    f.regs[0x10..0x14].copy_from_slice(&0x0000_000Cu32.to_le_bytes());
    f.regs[0x14..0x18].copy_from_slice(&0x8u32.to_le_bytes());
    f.regs[0x18..0x1C].copy_from_slice(&0xC001u32.to_le_bytes());
    let d = probe(&mut bus, FakeBus::EDU).unwrap();
    assert_eq!(d.bars.len(), 2);
    assert_eq!(
        (
            d.bars[0].kind,
            d.bars[0].base,
            d.bars[0].size,
            d.bars[0].prefetchable
        ),
        (BarKind::Mem64, 0x8_0000_0000, 16 << 20, true)
    );
    assert_eq!(d.bars[0].size_mask_low(), 0xFF00_000C);
    assert_eq!(d.bars[0].size_mask_high(), 0xFFFF_FFFF);
    assert_eq!(d.bar_at(1).map(|(b, hi)| (b.index, hi)), Some((0, true)));
    assert_eq!(
        (d.bars[1].kind, d.bars[1].base, d.bars[1].size),
        (BarKind::Io, 0xC000, 256)
    );
    assert_eq!(d.memory_bars().count(), 1);

    // A BAR smaller than a page; an unassigned one; a bridge.
    let mut small = FakeBus::with_edu();
    small.fns.get_mut(&FakeBus::EDU).unwrap().bar_masks[0] = 0xFFFF_FF00;
    assert!(probe(&mut small, FakeBus::EDU)
        .unwrap_err()
        .contains("smaller than a page"));
    let mut zero = FakeBus::with_edu();
    zero.fns.get_mut(&FakeBus::EDU).unwrap().regs[0x10..0x14].fill(0);
    assert!(probe(&mut zero, FakeBus::EDU)
        .unwrap_err()
        .contains("unassigned"));
    let mut bridge = FakeBus::with_edu();
    bridge.fns.get_mut(&FakeBus::EDU).unwrap().regs[0x0E] = 0x81;
    assert!(probe(&mut bridge, FakeBus::EDU)
        .unwrap_err()
        .contains("header type 1"));
}

#[test]
fn bars_must_stay_clear_of_memory() {
    let mut bus = FakeBus::with_edu();
    let dev = probe(&mut bus, FakeBus::EDU).unwrap();
    let ft = FrameTable::new(&[(MemRange::from_base_len(0, 512 << 20), NodeId(0))]).unwrap();
    let vn = |mib| VnodeConfig {
        pnode: NodeId(0),
        size_mib: mib,
        vcpus: vec![0],
        vdistances: vec![10],
    };
    let layout = |kind, mib| {
        let pages = mib * 256;
        DomainLayout::compute(kind, &[vn(mib)], &[vec![(Mfn(0x1000), pages)]]).unwrap()
    };
    check_bars(&dev, &layout(LayoutKind::Compact, 64), &ft).unwrap();
    check_bars(&dev, &layout(LayoutKind::HighOnly, 64), &ft).unwrap();
    let err = check_bars(&dev, &layout(LayoutKind::Compact, 4096), &ft).unwrap_err();
    assert!(err.contains("collides with the domain's memory"), "{err}");
    let ram =
        FrameTable::new(&[(MemRange::from_base_len(0xFE00_0000, 32 << 20), NodeId(0))]).unwrap();
    let err = check_bars(&dev, &layout(LayoutKind::HighOnly, 64), &ram).unwrap_err();
    assert!(err.contains("overlaps machine RAM"), "{err}");
}

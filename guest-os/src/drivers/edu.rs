//! A driver for QEMU's educational PCI device, `edu` (vendor 0x1234,
//! device 0x11e8; QEMU's `hw/misc/edu.c`, `docs/specs/edu.rst`).
//!
//! BAR0 (1 MiB of registers, 32- or 64-bit accesses from 0x80 on):
//!
//! | offset | register |
//! | --- | --- |
//! | 0x00 | identification, `0xRRrr00ed` (major, minor): `0x010000ed` |
//! | 0x04 | liveness: reads back the bitwise inverse of what was written |
//! | 0x80 | DMA source address |
//! | 0x88 | DMA destination address |
//! | 0x90 | DMA transfer count (bytes) |
//! | 0x98 | DMA command: bit 0 start (reads 1 until done), bit 1 direction (0: RAM to device, 1: device to RAM), bit 2 raise an interrupt when done |
//!
//! The device has a 4 KiB buffer at device address 0x40000; every transfer
//! goes between it and RAM, so one side of a transfer is always inside
//! `[0x40000, 0x41000)`. QEMU runs the transfer on a timer 100 ms (virtual
//! time) after the start bit is written; the driver polls the command
//! register until the start bit clears. The RAM side is a bus address,
//! which QEMU ANDs with the device's `dma_mask` property (28 bits unless
//! `-device edu,dma_mask=...` says otherwise): a larger address is not
//! refused but silently truncated, and the device reads or writes
//! wherever the truncated address points. The guest cannot discover the
//! mask, so it is a driver option (`edu.dma_bits=N`, default 28).
//!
//! The driver never gives the device a buffer range outside its 4 KiB:
//! QEMU 7.2 (what these machines run) stops the whole emulator with a
//! hardware error on one, and newer versions overrun their own buffer. Its
//! check is off by one (a transfer may not end at the buffer's last byte,
//! `within(end, start, end2)`), so the driver uses the first 4095 bytes
//! ([`BUFFER_USABLE`]); larger transfers go in pieces. It takes RAM
//! addresses as they come: the DMA API decides what they are.

use alloc::format;
use alloc::string::String;
use core::fmt;

use pv_abi::Gpa;

use super::pci::{self, Bdf, MemBar, PciFunction, CMD_MASTER, CMD_MEMORY};
use crate::dma::DmaDevice;
use crate::platform::Platform;

pub const VENDOR: u16 = 0x1234;
pub const DEVICE: u16 = 0x11e8;
/// QEMU's edu of version 1.0.
pub const IDENTITY: u32 = 0x0100_00ed;
/// QEMU's default `dma_mask`: 28 bits.
pub const DEFAULT_DMA_BITS: u32 = 28;

pub const REG_ID: u64 = 0x00;
pub const REG_LIVENESS: u64 = 0x04;
pub const REG_DMA_SRC: u64 = 0x80;
pub const REG_DMA_DST: u64 = 0x88;
pub const REG_DMA_COUNT: u64 = 0x90;
pub const REG_DMA_CMD: u64 = 0x98;

pub const CMD_START: u64 = 1 << 0;
/// Direction bit: device to RAM.
pub const CMD_TO_RAM: u64 = 1 << 1;

/// The device buffer's device address.
pub const BUFFER: u64 = 0x40000;
/// The device buffer's size.
pub const BUFFER_SIZE: u64 = 4096;
/// The bytes of it a transfer may use: QEMU 7.2 refuses a transfer that
/// ends exactly at the buffer's end.
pub const BUFFER_USABLE: u64 = BUFFER_SIZE - 1;

/// Polls of the command register before a transfer is given up on (QEMU
/// finishes one 100 ms after the start; a poll costs well under 10 µs).
const POLLS: u64 = 200_000_000;

/// The device's registers.
pub trait Regs {
    fn read32(&self, offset: u64) -> u32;
    fn read64(&self, offset: u64) -> u64;
    fn write32(&self, offset: u64, value: u32);
    fn write64(&self, offset: u64, value: u64);
}

/// Registers through the platform's MMIO accessors.
pub struct PlatformRegs {
    pub p: &'static dyn Platform,
    pub base: u64,
}

impl Regs for PlatformRegs {
    fn read32(&self, offset: u64) -> u32 {
        self.p.mmio_read32(Gpa(self.base + offset))
    }
    fn read64(&self, offset: u64) -> u64 {
        self.p.mmio_read64(Gpa(self.base + offset))
    }
    fn write32(&self, offset: u64, value: u32) {
        self.p.mmio_write32(Gpa(self.base + offset), value);
    }
    fn write64(&self, offset: u64, value: u64) {
        self.p.mmio_write64(Gpa(self.base + offset), value);
    }
}

/// Why a transfer did not happen (or did not finish).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EduError {
    /// A transfer is still running.
    Busy,
    /// The device-buffer side is outside `[0, BUFFER_USABLE)` or the count
    /// is 0.
    BadRange { offset: u64, len: u64 },
    /// The start bit never cleared.
    Timeout,
}

impl fmt::Display for EduError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EduError::Busy => write!(f, "edu: a DMA transfer is still running"),
            EduError::BadRange { offset, len } => write!(
                f,
                "edu: {len} bytes at buffer offset {offset:#x} do not fit the device buffer's first {BUFFER_USABLE} bytes"
            ),
            EduError::Timeout => write!(f, "edu: the DMA transfer did not finish"),
        }
    }
}

/// A bound edu device.
pub struct Edu<R: Regs> {
    pub bdf: Bdf,
    pub bar: MemBar,
    pub regs: R,
    /// Its DMA constraints, for the DMA API.
    pub dev: DmaDevice,
}

impl<R: Regs> Edu<R> {
    /// The identification register.
    pub fn identity(&self) -> u32 {
        self.regs.read32(REG_ID)
    }

    /// Writes `v` to the liveness register; `true` if `!v` reads back.
    pub fn alive(&self, v: u32) -> bool {
        self.regs.write32(REG_LIVENESS, v);
        self.regs.read32(REG_LIVENESS) == !v
    }

    /// Whether a transfer is running.
    pub fn busy(&self) -> bool {
        self.regs.read64(REG_DMA_CMD) & CMD_START != 0
    }

    fn transfer(&self, src: u64, dst: u64, len: u64, cmd: u64) -> Result<(), EduError> {
        if self.busy() {
            return Err(EduError::Busy);
        }
        self.regs.write64(REG_DMA_SRC, src);
        self.regs.write64(REG_DMA_DST, dst);
        self.regs.write64(REG_DMA_COUNT, len);
        self.regs.write64(REG_DMA_CMD, cmd | CMD_START);
        for _ in 0..POLLS {
            if !self.busy() {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(EduError::Timeout)
    }

    fn check(offset: u64, len: u64) -> Result<(), EduError> {
        let fits = len > 0
            && offset
                .checked_add(len)
                .is_some_and(|end| end <= BUFFER_USABLE);
        if fits {
            Ok(())
        } else {
            Err(EduError::BadRange { offset, len })
        }
    }

    /// RAM to device: `len` bytes at bus address `src` into the device
    /// buffer at `offset`.
    pub fn to_device(&self, src: u64, offset: u64, len: u64) -> Result<(), EduError> {
        Self::check(offset, len)?;
        self.transfer(src, BUFFER + offset, len, 0)
    }

    /// Device to RAM: `len` bytes of the device buffer at `offset` to bus
    /// address `dst`.
    pub fn from_device(&self, offset: u64, dst: u64, len: u64) -> Result<(), EduError> {
        Self::check(offset, len)?;
        self.transfer(BUFFER + offset, dst, len, CMD_TO_RAM)
    }
}

/// Binds the first edu among `functions`: maps BAR0, turns on memory
/// decoding and bus mastering, and checks the identification and liveness
/// registers. `None` if there is no edu; `Err` if there is one that cannot
/// be used, with the reason.
pub fn probe(
    p: &'static dyn Platform,
    functions: &[PciFunction],
    dma_bits: u32,
) -> Option<Result<Edu<PlatformRegs>, String>> {
    let f = functions
        .iter()
        .find(|f| f.vendor == VENDOR && f.device == DEVICE)?;
    Some(bind(p, f, dma_bits))
}

fn bind(
    p: &'static dyn Platform,
    f: &PciFunction,
    dma_bits: u32,
) -> Result<Edu<PlatformRegs>, String> {
    let bar = f
        .mem_bars
        .iter()
        .find(|b| b.index == 0)
        .copied()
        .ok_or_else(|| format!("edu {}: no memory BAR0", f.bdf))?;
    if bar.size < 0x100 {
        return Err(format!(
            "edu {}: BAR0 of {} bytes is too small",
            f.bdf, bar.size
        ));
    }
    p.map_mmio(Gpa(bar.base), bar.size.max(4096))
        .map_err(|e| format!("edu {}: mapping BAR0 at {:#x}: {e}", f.bdf, bar.base))?;
    let cmd = pci::command(p, f.bdf);
    pci::set_command(p, f.bdf, cmd | CMD_MEMORY | CMD_MASTER);
    let edu = Edu {
        bdf: f.bdf,
        bar,
        regs: PlatformRegs { p, base: bar.base },
        dev: DmaDevice::with_bits(&format!("edu {}", f.bdf), dma_bits),
    };
    let id = edu.identity();
    if id & 0xff != 0xed || id >> 24 != 1 {
        return Err(format!(
            "edu {}: identification register reads {id:#010x}, not 0x01xx00ed",
            f.bdf
        ));
    }
    if !edu.alive(0x1234_5678) {
        return Err(format!(
            "edu {}: the liveness register does not invert",
            f.bdf
        ));
    }
    Ok(edu)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// QEMU's edu, modelled: registers, a 4 KiB buffer, transfers done at
    /// once against a bus memory, RAM addresses ANDed with the mask.
    pub struct FakeEdu {
        pub mask: u64,
        pub regs: RefCell<BTreeMap<u64, u64>>,
        pub buffer: RefCell<[u8; 4096]>,
        pub bus: RefCell<BTreeMap<u64, u8>>,
        /// Transfers done: (src, dst, count, to RAM).
        pub log: RefCell<Vec<(u64, u64, u64, bool)>>,
    }

    impl FakeEdu {
        pub fn new(mask: u64) -> FakeEdu {
            FakeEdu {
                mask,
                regs: RefCell::new(BTreeMap::new()),
                buffer: RefCell::new([0; 4096]),
                bus: RefCell::new(BTreeMap::new()),
                log: RefCell::new(Vec::new()),
            }
        }
    }

    impl Regs for &FakeEdu {
        fn read32(&self, offset: u64) -> u32 {
            match offset {
                REG_ID => IDENTITY,
                o => *self.regs.borrow().get(&o).unwrap_or(&0) as u32,
            }
        }
        fn read64(&self, offset: u64) -> u64 {
            *self.regs.borrow().get(&offset).unwrap_or(&0)
        }
        fn write32(&self, offset: u64, value: u32) {
            let v = if offset == REG_LIVENESS {
                !value
            } else {
                value
            };
            self.regs.borrow_mut().insert(offset, u64::from(v));
        }
        fn write64(&self, offset: u64, value: u64) {
            if offset != REG_DMA_CMD {
                self.regs.borrow_mut().insert(offset, value);
                return;
            }
            let r = self.regs.borrow().clone();
            let (src, dst, cnt) = (r[&REG_DMA_SRC], r[&REG_DMA_DST], r[&REG_DMA_COUNT]);
            let to_ram = value & CMD_TO_RAM != 0;
            let mut buf = self.buffer.borrow_mut();
            let mut bus = self.bus.borrow_mut();
            for i in 0..cnt {
                if to_ram {
                    let b = buf[(src - BUFFER + i) as usize];
                    bus.insert((dst & self.mask) + i, b);
                } else {
                    let b = *bus.get(&((src & self.mask) + i)).unwrap_or(&0);
                    buf[(dst - BUFFER + i) as usize] = b;
                }
            }
            self.log.borrow_mut().push((src, dst, cnt, to_ram));
            self.regs
                .borrow_mut()
                .insert(REG_DMA_CMD, value & !CMD_START);
        }
    }

    fn edu(f: &FakeEdu) -> Edu<&FakeEdu> {
        Edu {
            bdf: Bdf {
                bus: 0,
                dev: 4,
                func: 0,
            },
            bar: MemBar {
                index: 0,
                base: 0xfea0_0000,
                size: 1 << 20,
            },
            regs: f,
            dev: DmaDevice::with_bits("edu", 28),
        }
    }

    #[test]
    fn transfers_program_the_registers() {
        let f = FakeEdu::new((1 << 28) - 1);
        let e = edu(&f);
        assert_eq!(e.identity(), IDENTITY);
        assert!(e.alive(5));
        for i in 0..16u64 {
            f.bus.borrow_mut().insert(0x100_0000 + i, i as u8);
        }
        e.to_device(0x100_0000, 0x10, 16).unwrap();
        e.from_device(0x10, 0x200_0000, 16).unwrap();
        assert_eq!(f.bus.borrow()[&0x200_000f], 15);
        assert_eq!(
            *f.log.borrow(),
            vec![
                (0x100_0000, 0x40010, 16, false),
                (0x40010, 0x200_0000, 16, true)
            ]
        );
    }

    #[test]
    fn the_device_buffer_is_never_overrun() {
        let f = FakeEdu::new(u64::MAX);
        let e = edu(&f);
        for (off, len) in [
            (0, 0),
            (4095, 1),
            (4094, 2),
            (4096, 1),
            (u64::MAX, 2),
            (0, 4096),
        ] {
            assert_eq!(
                e.to_device(0, off, len),
                Err(EduError::BadRange { offset: off, len })
            );
            assert_eq!(
                e.from_device(off, 0, len),
                Err(EduError::BadRange { offset: off, len })
            );
        }
        assert!(f.log.borrow().is_empty());
        e.to_device(0, 0, 4095).unwrap();
        e.from_device(4094, 0, 1).unwrap();
        // A running transfer is not disturbed.
        f.regs.borrow_mut().insert(REG_DMA_CMD, CMD_START);
        assert_eq!(e.to_device(0, 0, 1), Err(EduError::Busy));
    }

    #[test]
    fn a_high_address_is_truncated_by_the_device() {
        // What `dma=direct` would risk: the device drops the high bits.
        let f = FakeEdu::new((1 << 28) - 1);
        let e = edu(&f);
        f.buffer.borrow_mut()[0] = 0x5a;
        e.from_device(0, 0x1_2345_6000, 1).unwrap();
        assert_eq!(f.bus.borrow().get(&0x0345_6000), Some(&0x5a));
        assert_eq!(f.bus.borrow().get(&0x1_2345_6000), None);
    }
}

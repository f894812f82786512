//! PCI enumeration through configuration mechanism #1 (`0xCF8`/`0xCFC`,
//! [`Platform::pci_read`]). The hypervisor shows a domain only the devices
//! assigned to it, at their machine bus/device/function; every other
//! address reads all ones, exactly as an empty slot does. Bus 0 is scanned
//! (assigned devices are endpoints; the hypervisor hides bridges), with
//! the functions of multi-function devices.

use alloc::vec::Vec;
use core::fmt;

use crate::platform::Platform;

/// Bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl Bdf {
    /// The `0xCF8` value for register `reg` (its dword).
    pub const fn address(self, reg: u8) -> u32 {
        0x8000_0000
            | (self.bus as u32) << 16
            | (self.dev as u32) << 11
            | (self.func as u32) << 8
            | (reg as u32 & 0xFC)
    }
}

/// `00:04.0`, as `lspci` prints it.
impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{:x}", self.bus, self.dev, self.func)
    }
}

/// Command register: memory decoding.
pub const CMD_MEMORY: u16 = 1 << 1;
/// Command register: bus mastering (the device may DMA).
pub const CMD_MASTER: u16 = 1 << 2;

/// A memory BAR as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemBar {
    pub index: u8,
    /// Guest-physical address (the hypervisor maps BARs at their machine
    /// address).
    pub base: u64,
    /// Bytes.
    pub size: u64,
}

/// One function found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciFunction {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    /// Class, subclass, programming interface.
    pub class: u32,
    pub header_type: u8,
    /// Memory BARs (sized the way hardware is: all ones written, read back,
    /// restored).
    pub mem_bars: Vec<MemBar>,
}

/// `00:04.0 1234:11e8 class 00ff00`.
impl fmt::Display for PciFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04x}:{:04x} class {:06x}",
            self.bdf, self.vendor, self.device, self.class
        )
    }
}

fn read(p: &dyn Platform, bdf: Bdf, reg: u8) -> u32 {
    p.pci_read(bdf.address(reg))
}

/// The command register.
pub fn command(p: &dyn Platform, bdf: Bdf) -> u16 {
    read(p, bdf, 0x04) as u16
}

/// Writes the command register (a word write: the status register beside
/// it is write-one-to-clear and must not be touched).
pub fn set_command(p: &dyn Platform, bdf: Bdf, value: u16) {
    p.pci_write(bdf.address(0x04), 0, 2, u32::from(value));
}

/// Sizes the memory BARs of a type-0 function.
fn mem_bars(p: &dyn Platform, bdf: Bdf) -> Vec<MemBar> {
    let mut bars = Vec::new();
    let mut i = 0u8;
    while i < 6 {
        let reg = 0x10 + 4 * i;
        let orig = read(p, bdf, reg);
        if orig & 1 != 0 {
            i += 1;
            continue;
        }
        let is64 = (orig >> 1) & 3 == 2 && i < 5;
        let orig_hi = if is64 { read(p, bdf, reg + 4) } else { 0 };
        p.pci_write(bdf.address(reg), 0, 4, u32::MAX);
        let lo = read(p, bdf, reg) & !0xF;
        p.pci_write(bdf.address(reg), 0, 4, orig);
        let hi = if is64 {
            p.pci_write(bdf.address(reg + 4), 0, 4, u32::MAX);
            let h = read(p, bdf, reg + 4);
            p.pci_write(bdf.address(reg + 4), 0, 4, orig_hi);
            h
        } else {
            u32::MAX
        };
        let mask = (u64::from(hi) << 32) | u64::from(lo);
        if lo != 0 {
            bars.push(MemBar {
                index: i,
                base: (u64::from(orig_hi) << 32) | u64::from(orig & !0xF),
                size: (!mask).wrapping_add(1),
            });
        }
        i += if is64 { 2 } else { 1 };
    }
    bars
}

/// Every function on bus 0, in address order.
pub fn enumerate(p: &dyn Platform) -> Vec<PciFunction> {
    let mut out = Vec::new();
    for dev in 0..32u8 {
        for func in 0..8u8 {
            let bdf = Bdf { bus: 0, dev, func };
            let id = read(p, bdf, 0);
            let vendor = id as u16;
            if vendor == 0xFFFF || vendor == 0 {
                if func == 0 {
                    break;
                }
                continue;
            }
            let header_type = (read(p, bdf, 0x0C) >> 16) as u8;
            let f = PciFunction {
                bdf,
                vendor,
                device: (id >> 16) as u16,
                class: read(p, bdf, 0x08) >> 8,
                header_type,
                mem_bars: if header_type & 0x7F == 0 {
                    mem_bars(p, bdf)
                } else {
                    Vec::new()
                },
            };
            out.push(f);
            if func == 0 && header_type & 0x80 == 0 {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// A configuration space of 256-byte functions with 1 MiB BAR0s,
    /// behind a [`Platform`] that offers only PCI.
    #[derive(Default)]
    pub struct FakePci {
        pub fns: Mutex<BTreeMap<(u8, u8), [u32; 64]>>,
    }

    impl FakePci {
        pub fn with(devs: &[(u8, u32, u32)]) -> FakePci {
            let p = FakePci::default();
            for &(dev, id, bar0) in devs {
                let mut regs = [0u32; 64];
                regs[0] = id;
                regs[2] = 0x00ff_0010;
                regs[4] = bar0;
                p.fns.lock().unwrap().insert((dev, 0), regs);
            }
            p
        }
    }

    impl crate::platform::Platform for FakePci {
        fn hypercall(&self, _: &pv_abi::HypercallArgs) -> u64 {
            u64::MAX
        }
        fn gpa_of(&self, va: u64) -> Option<pv_abi::Gpa> {
            Some(pv_abi::Gpa(va))
        }
        fn read_phys(&self, _: pv_abi::Gpa, _: &mut [u8]) {}
        fn read_phys_u64(&self, _: pv_abi::Gpa) -> u64 {
            0
        }
        fn probe_phys_u64(&self, _: pv_abi::Gpa, _: u64) -> u64 {
            0
        }
        fn read_virt_u64(&self, _: u64) -> u64 {
            0
        }
        fn translate(&self, _: u64) -> Option<pv_abi::Gpa> {
            None
        }
        fn image(&self) -> crate::platform::ImageInfo {
            crate::platform::ImageInfo {
                va_start: 0,
                va_end: 0,
            }
        }
        fn cpuid(&self, _: u32) -> Option<pv_abi::cpuid::CpuidRegs> {
            None
        }
        fn init_heap(&self, _: pv_abi::Gpa, _: u64) -> bool {
            false
        }
        fn fail(&self, _: crate::platform::FailMode, _: pv_abi::Gpa) -> alloc::string::String {
            alloc::string::String::new()
        }
        fn pci_read(&self, a: u32) -> u32 {
            let key = (((a >> 11) & 31) as u8, ((a >> 8) & 7) as u8);
            if (a >> 16) & 0xFF != 0 {
                return u32::MAX;
            }
            self.fns
                .lock()
                .unwrap()
                .get(&key)
                .map_or(u32::MAX, |r| r[((a & 0xFC) / 4) as usize])
        }
        fn pci_write(&self, a: u32, offset: u8, size: u8, value: u32) {
            let key = (((a >> 11) & 31) as u8, ((a >> 8) & 7) as u8);
            let mut fns = self.fns.lock().unwrap();
            let Some(r) = fns.get_mut(&key) else { return };
            let i = ((a & 0xFC) / 4) as usize;
            if i == 4 {
                // BAR0: 1 MiB, memory.
                r[4] = value & 0xFFF0_0000;
                return;
            }
            if (5..10).contains(&i) {
                return;
            }
            let shift = 8 * u32::from(offset);
            let mask = if size == 4 {
                u32::MAX
            } else {
                ((1u32 << (8 * u32::from(size))) - 1) << shift
            };
            r[i] = (r[i] & !mask) | ((value << shift) & mask);
        }
    }

    #[test]
    fn finds_devices_and_sizes_bars() {
        let p = FakePci::with(&[(4, 0x11e8_1234, 0xFEA0_0000), (7, 0x1000_1af4, 0xFE00_0000)]);
        let found = enumerate(&p);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].to_string(), "00:04.0 1234:11e8 class 00ff00");
        assert_eq!(
            found[0].mem_bars,
            vec![MemBar {
                index: 0,
                base: 0xFEA0_0000,
                size: 1 << 20
            }]
        );
        assert_eq!(found[1].bdf.to_string(), "00:07.0");
        // Sizing left the BAR as it was.
        assert_eq!(p.pci_read(found[0].bdf.address(0x10)), 0xFEA0_0000);
        set_command(&p, found[0].bdf, CMD_MEMORY | CMD_MASTER);
        assert_eq!(command(&p, found[0].bdf), CMD_MEMORY | CMD_MASTER);
        assert!(enumerate(&FakePci::default()).is_empty());
    }
}

//! The domain's view of PCI configuration space: ports `0xCF8`-`0xCFF`
//! emulated over the machine's (see the [module docs](super) for the
//! rules). Host-testable: the machine is a [`ConfigSpace`].

use alloc::vec::Vec;

use super::{Bdf, ConfigSpace, Device, CMD_GUEST_BITS, CMD_MASTER, REG_BAR0, REG_COMMAND, REG_ROM};

/// `CONFIG_ADDRESS`.
pub const PORT_ADDRESS: u16 = 0xCF8;
/// `CONFIG_DATA` (four byte ports, `0xCFC`-`0xCFF`).
pub const PORT_DATA: u16 = 0xCFC;

/// One assigned device and its emulated registers.
#[derive(Clone, Debug)]
struct Assigned {
    dev: Device,
    /// Per BAR register: the guest wrote all ones (it is sizing the BAR).
    sizing: [bool; 6],
}

/// A domain's configuration-space emulation.
#[derive(Clone, Debug, Default)]
pub struct PciEmulator {
    /// The last dword the guest wrote to `0xCF8`.
    address: u32,
    devices: Vec<Assigned>,
}

impl PciEmulator {
    /// Emulation for these assigned devices; turns their bus mastering off
    /// (the guest turns it on when its driver is ready).
    pub fn new(cs: &mut dyn ConfigSpace, devices: Vec<Device>) -> PciEmulator {
        for d in &devices {
            cs.write(d.bdf, REG_COMMAND, 2, u32::from(d.command & !CMD_MASTER));
        }
        PciEmulator {
            address: 0,
            devices: devices
                .into_iter()
                .map(|dev| Assigned {
                    dev,
                    sizing: [false; 6],
                })
                .collect(),
        }
    }

    /// The assigned devices.
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.iter().map(|a| &a.dev)
    }

    /// At teardown: each device's command register as the firmware left it,
    /// bus mastering off, so nothing the domain started can still write.
    pub fn release(&self, cs: &mut dyn ConfigSpace) {
        for a in &self.devices {
            cs.write(
                a.dev.bdf,
                REG_COMMAND,
                2,
                u32::from(a.dev.command & !CMD_MASTER),
            );
        }
    }

    /// An access to port `port` of `size` bytes (`write`: the value).
    /// Returns the value read (anything for a write), or `None` for a port
    /// that is not the configuration mechanism's.
    pub fn port_io(
        &mut self,
        cs: &mut dyn ConfigSpace,
        port: u16,
        size: u8,
        write: Option<u32>,
    ) -> Option<u32> {
        let ones = if size >= 4 {
            u32::MAX
        } else {
            (1u32 << (8 * u32::from(size))) - 1
        };
        if port == PORT_ADDRESS && size == 4 {
            match write {
                Some(v) => self.address = v,
                None => return Some(self.address),
            }
            return Some(0);
        }
        if !(PORT_ADDRESS..PORT_DATA + 4).contains(&port) {
            return None;
        }
        // Byte and word accesses to 0xCF8-0xCFB are not the mechanism
        // (0xCF9 is the chipset's reset register): ignored.
        if port < PORT_DATA {
            return Some(ones);
        }
        let byte = (port - PORT_DATA) as u8;
        let Some(bdf) = Bdf::from_config_address(self.address) else {
            return Some(ones);
        };
        let reg = (self.address & 0xFC) as u8 + byte;
        if !matches!(size, 1 | 2 | 4) || byte + size > 4 {
            return Some(ones);
        }
        let Some(i) = self.devices.iter().position(|a| a.dev.bdf == bdf) else {
            return Some(ones);
        };
        Some(match write {
            None => self.read(cs, i, reg, size),
            Some(v) => {
                self.write(cs, i, reg, size, v & ones);
                0
            }
        })
    }

    /// The dword at `reg & !3` as the guest sees it.
    fn read_dword(&self, cs: &mut dyn ConfigSpace, i: usize, reg: u8) -> u32 {
        let a = &self.devices[i];
        let dreg = reg & !3;
        match dreg {
            0x10..=0x24 => {
                let index = (dreg - REG_BAR0) / 4;
                match a.dev.bar_at(index) {
                    None => 0,
                    Some((bar, high)) => {
                        let sizing = a.sizing[usize::from(index)];
                        match (high, sizing) {
                            (false, false) => bar.base as u32 | bar.flags,
                            (false, true) => bar.size_mask_low(),
                            (true, false) => (bar.base >> 32) as u32,
                            (true, true) => bar.size_mask_high(),
                        }
                    }
                }
            }
            REG_ROM => 0,
            _ => cs.read(a.dev.bdf, dreg, 4),
        }
    }

    fn read(&self, cs: &mut dyn ConfigSpace, i: usize, reg: u8, size: u8) -> u32 {
        if reg >= 0x40 {
            return cs.read(self.devices[i].dev.bdf, reg, size);
        }
        let v = self.read_dword(cs, i, reg) >> (8 * u32::from(reg & 3));
        if size >= 4 {
            v
        } else {
            v & ((1u32 << (8 * u32::from(size))) - 1)
        }
    }

    fn write(&mut self, cs: &mut dyn ConfigSpace, i: usize, reg: u8, size: u8, v: u32) {
        let bdf = self.devices[i].dev.bdf;
        // Past the header: device-specific registers and capabilities.
        if reg >= 0x40 {
            cs.write(bdf, reg, size, v);
            return;
        }
        if (0x10..0x28).contains(&reg) {
            // BARs: merge into what the guest sees, then size or ignore.
            let dreg = reg & !3;
            let shift = 8 * u32::from(reg & 3);
            let mask = if size >= 4 {
                u32::MAX
            } else {
                ((1u32 << (8 * u32::from(size))) - 1) << shift
            };
            let old = self.read_dword(cs, i, dreg);
            let value = (old & !mask) | ((v << shift) & mask);
            let index = (dreg - REG_BAR0) / 4;
            let sizing = match self.devices[i].dev.bar_at(index) {
                None => false,
                Some((bar, true)) => value == u32::MAX && bar.size_mask_high() != 0,
                Some((bar, false)) => {
                    let addr_bits = bar.size_mask_low() & !bar.flags;
                    value & addr_bits == addr_bits
                }
            };
            self.devices[i].sizing[usize::from(index)] = sizing;
            return;
        }
        for k in 0..size {
            let r = reg + k;
            let b = (v >> (8 * u32::from(k))) & 0xFF;
            match r {
                0x04 | 0x05 => {
                    let shift = 8 * u32::from(r - 0x04);
                    let allowed = (u32::from(CMD_GUEST_BITS) >> shift) & 0xFF;
                    let hw = cs.read(bdf, r, 1);
                    cs.write(bdf, r, 1, (hw & !allowed) | (b & allowed));
                }
                // Status (write 1 to clear), cache line size, latency
                // timer, interrupt line.
                0x06 | 0x07 | 0x0C | 0x0D | 0x3C => cs.write(bdf, r, 1, b),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::{probe, tests::FakeBus, CMD_MEMORY};

    fn edu_bus() -> (FakeBus, PciEmulator) {
        let mut bus = FakeBus::with_edu();
        let dev = probe(&mut bus, FakeBus::EDU).unwrap();
        let emu = PciEmulator::new(&mut bus, alloc::vec![dev]);
        (bus, emu)
    }

    fn sel(emu: &mut PciEmulator, bus: &mut FakeBus, bdf: Bdf, reg: u8) {
        emu.port_io(bus, PORT_ADDRESS, 4, Some(bdf.config_address(reg)));
    }

    #[test]
    fn only_the_assigned_device_is_seen() {
        let (mut bus, mut emu) = edu_bus();
        let other = Bdf {
            bus: 0,
            dev: 0,
            func: 0,
        };
        sel(&mut emu, &mut bus, other, 0);
        assert_eq!(emu.port_io(&mut bus, PORT_DATA, 4, None), Some(u32::MAX));
        emu.port_io(&mut bus, PORT_DATA, 4, Some(0x1234));
        assert_eq!(bus.reg(other, 0), 0x2918_8086, "hidden device untouched");
        sel(&mut emu, &mut bus, FakeBus::EDU, 0);
        assert_eq!(emu.port_io(&mut bus, PORT_DATA, 4, None), Some(0x11e8_1234));
        assert_eq!(emu.port_io(&mut bus, PORT_DATA + 2, 2, None), Some(0x11e8));
        assert_eq!(emu.port_io(&mut bus, PORT_DATA + 1, 1, None), Some(0x12));
        assert_eq!(
            emu.port_io(&mut bus, PORT_DATA + 3, 2, None),
            Some(0xFFFF),
            "crosses the dword"
        );
        assert_eq!(
            emu.port_io(&mut bus, PORT_ADDRESS, 4, None),
            Some(FakeBus::EDU.config_address(0))
        );
        // Not the mechanism: reset register, disabled address, other ports.
        assert_eq!(emu.port_io(&mut bus, 0xCF9, 1, Some(6)), Some(0xFF));
        assert_eq!(emu.port_io(&mut bus, 0x3F8, 1, None), None);
        emu.port_io(&mut bus, PORT_ADDRESS, 4, Some(0x0000_2000));
        assert_eq!(emu.port_io(&mut bus, PORT_DATA, 4, None), Some(u32::MAX));
    }

    #[test]
    fn bars_are_fixed_but_can_be_sized() {
        let (mut bus, mut emu) = edu_bus();
        sel(&mut emu, &mut bus, FakeBus::EDU, 0x10);
        assert_eq!(emu.port_io(&mut bus, PORT_DATA, 4, None), Some(0xFEA0_0000));
        emu.port_io(&mut bus, PORT_DATA, 4, Some(u32::MAX));
        assert_eq!(
            emu.port_io(&mut bus, PORT_DATA, 4, None),
            Some(0xFFF0_0000),
            "1 MiB"
        );
        emu.port_io(&mut bus, PORT_DATA, 4, Some(0xFEA0_0000));
        assert_eq!(emu.port_io(&mut bus, PORT_DATA, 4, None), Some(0xFEA0_0000));
        // Moving it is ignored; the hardware never sees any of it.
        emu.port_io(&mut bus, PORT_DATA, 4, Some(0x1000_0000));
        assert_eq!(emu.port_io(&mut bus, PORT_DATA, 4, None), Some(0xFEA0_0000));
        assert_eq!(bus.reg(FakeBus::EDU, 0x10), 0xFEA0_0000);
        // Unimplemented BARs and the ROM read 0.
        sel(&mut emu, &mut bus, FakeBus::EDU, 0x14);
        emu.port_io(&mut bus, PORT_DATA, 4, Some(u32::MAX));
        assert_eq!(emu.port_io(&mut bus, PORT_DATA, 4, None), Some(0));
        sel(&mut emu, &mut bus, FakeBus::EDU, 0x30);
        assert_eq!(emu.port_io(&mut bus, PORT_DATA, 4, None), Some(0));
    }

    #[test]
    fn command_bits_are_the_guests_within_limits() {
        let (mut bus, mut emu) = edu_bus();
        let cmd = |bus: &FakeBus| bus.reg(FakeBus::EDU, 4) as u16;
        assert_eq!(cmd(&bus) & CMD_MASTER, 0, "bus mastering off at assignment");
        assert_ne!(cmd(&bus) & CMD_MEMORY, 0);
        sel(&mut emu, &mut bus, FakeBus::EDU, 0x04);
        // Bus master on; bit 9 (fast back-to-back) is not the guest's.
        emu.port_io(
            &mut bus,
            PORT_DATA,
            2,
            Some(u32::from(CMD_MASTER | CMD_MEMORY | 0x200)),
        );
        assert_eq!(cmd(&bus), CMD_MASTER | CMD_MEMORY);
        assert_eq!(
            emu.port_io(&mut bus, PORT_DATA, 2, None),
            Some(u32::from(CMD_MASTER | CMD_MEMORY))
        );
        // The interrupt line is writable, the pin is not.
        sel(&mut emu, &mut bus, FakeBus::EDU, 0x3C);
        emu.port_io(&mut bus, PORT_DATA, 2, Some(0x0B0B));
        assert_eq!(bus.reg(FakeBus::EDU, 0x3C) & 0xFFFF, 0x010B);
        // Past the header: passed through.
        sel(&mut emu, &mut bus, FakeBus::EDU, 0x40);
        emu.port_io(&mut bus, PORT_DATA, 4, Some(0xdead_beef));
        assert_eq!(bus.reg(FakeBus::EDU, 0x40), 0xdead_beef);
        emu.release(&mut bus);
        assert_eq!(cmd(&bus) & CMD_MASTER, 0, "released with bus mastering off");
    }
}

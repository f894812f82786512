//! The machine's PCI configuration space through the legacy mechanism:
//! the register's address in `0xCF8`, the data at `0xCFC` plus the byte
//! offset. One CPU runs the hypervisor and its domains, so the pair of
//! accesses is never interleaved with another.

use super::port::{inb, inl, inw, outb, outl, outw};
use crate::pci::{Bdf, ConfigSpace};

const ADDRESS: u16 = 0xCF8;
const DATA: u16 = 0xCFC;

/// The configuration space of the machine's PCI devices.
pub struct PortConfigSpace;

impl ConfigSpace for PortConfigSpace {
    fn read(&mut self, bdf: Bdf, reg: u8, size: u8) -> u32 {
        outl(ADDRESS, bdf.config_address(reg));
        let port = DATA + u16::from(reg & 3);
        match size {
            1 => u32::from(inb(port)),
            2 => u32::from(inw(port)),
            _ => inl(DATA),
        }
    }

    fn write(&mut self, bdf: Bdf, reg: u8, size: u8, value: u32) {
        outl(ADDRESS, bdf.config_address(reg));
        let port = DATA + u16::from(reg & 3);
        match size {
            1 => outb(port, value as u8),
            2 => outw(port, value as u16),
            _ => outl(DATA, value),
        }
    }
}

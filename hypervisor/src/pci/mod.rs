//! PCI device assignment ("passthrough" without an IOMMU).
//!
//! A domain config names devices (`pci = [ "00:04.0" ]`). Before the
//! domain runs, the hypervisor finds each one in the machine's PCI
//! configuration space ([`probe`], through the legacy `0xCF8`/`0xCFC`
//! mechanism, which q35 and every PC chipset has), sizes its BARs and maps
//! its memory BARs into the domain's nested page tables **at the same
//! guest-physical address as their machine address** (so the guest can use
//! the BAR values it reads, and nothing is relocated). A BAR must not
//! overlap the domain's memory in its layout, nor machine RAM, and must lie
//! below 2^47 (the guest identity-maps it); otherwise the domain is
//! refused, with the reason ([`check_bars`]).
//!
//! While the domain runs, its accesses to ports `0xCF8`-`0xCFF` are
//! emulated ([`config::PciEmulator`]): the assigned devices appear at their
//! own bus/device/function, every other device is hidden (reads of all
//! ones, writes ignored). Inside an assigned device's configuration space
//! the guest reads the real registers, may set the command register's I/O,
//! memory and bus-master enables (so bus mastering is the guest's
//! decision), parity, SERR and INTx-disable bits, the cache line size,
//! latency timer and interrupt line, and everything past the standard
//! header (capabilities, MSI), but cannot move a BAR: writes of all ones
//! size it as on hardware (the emulation answers with the size), other
//! values are ignored. The expansion ROM BAR reads as 0 (not offered). I/O
//! BARs are reported but their ports are not opened to the guest.
//!
//! Device DMA uses machine addresses: there is no IOMMU, which is the
//! point of the DMA exchange and the guest's bounce buffers. It also means
//! a domain with an assigned bus-master device is trusted with all of
//! memory, as with Xen's PCI passthrough on a machine without an IOMMU.
//! At teardown the hypervisor turns bus mastering off again before the
//! domain's memory goes back to the heap, so a transfer a dead domain left
//! running cannot land in the next one's pages.

pub mod config;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::domain::layout::DomainLayout;
use crate::mm::addr::PAGE_SIZE;
use crate::mm::frame_table::FrameTable;

/// Bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    pub bus: u8,
    /// 0 to 31.
    pub dev: u8,
    /// 0 to 7.
    pub func: u8,
}

impl Bdf {
    /// `"00:04.0"` or `"0000:00:04.0"` (segment 0 only), hexadecimal as
    /// `lspci` and Xen print them.
    pub fn parse(s: &str) -> Result<Bdf, String> {
        let bad = || {
            format!(
                "bad PCI address '{}' (expected bus:device.function such as 00:04.0)",
                s.escape_debug()
            )
        };
        let rest = match s.split(':').count() {
            3 => {
                let (seg, rest) = s.split_once(':').ok_or_else(bad)?;
                if u16::from_str_radix(seg, 16).map_err(|_| bad())? != 0 {
                    return Err(format!(
                        "PCI segment {seg} in '{}': only segment 0 is supported",
                        s.escape_debug()
                    ));
                }
                rest
            }
            2 => s,
            _ => return Err(bad()),
        };
        let (bus, df) = rest.split_once(':').ok_or_else(bad)?;
        let (dev, func) = df.split_once('.').ok_or_else(bad)?;
        let hex = |t: &str, max: u8| -> Result<u8, String> {
            if t.is_empty() || t.len() > 2 {
                return Err(bad());
            }
            u8::from_str_radix(t, 16)
                .ok()
                .filter(|&v| v <= max)
                .ok_or_else(bad)
        };
        Ok(Bdf {
            bus: hex(bus, 0xff)?,
            dev: hex(dev, 31)?,
            func: hex(func, 7)?,
        })
    }

    /// The `0xCF8` value for dword register `reg` (enable bit set).
    pub const fn config_address(self, reg: u8) -> u32 {
        0x8000_0000
            | (self.bus as u32) << 16
            | (self.dev as u32) << 11
            | (self.func as u32) << 8
            | (reg as u32 & 0xFC)
    }

    /// The device a `0xCF8` value selects, if enabled and in the standard
    /// 256-byte space (AMD's extended-register bits 24-27 clear).
    pub const fn from_config_address(a: u32) -> Option<Bdf> {
        if a & 0x8000_0000 == 0 || a & 0x7F00_0000 != 0 {
            return None;
        }
        Some(Bdf {
            bus: (a >> 16) as u8,
            dev: ((a >> 11) & 31) as u8,
            func: ((a >> 8) & 7) as u8,
        })
    }
}

/// `00:04.0`.
impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{:x}", self.bus, self.dev, self.func)
    }
}

/// The machine's configuration space, as the hypervisor reaches it.
/// `reg + size` stays within one dword; `size` is 1, 2 or 4.
pub trait ConfigSpace {
    fn read(&mut self, bdf: Bdf, reg: u8, size: u8) -> u32;
    fn write(&mut self, bdf: Bdf, reg: u8, size: u8, value: u32);
}

/// Standard header registers.
pub const REG_VENDOR: u8 = 0x00;
pub const REG_COMMAND: u8 = 0x04;
pub const REG_CLASS: u8 = 0x08;
pub const REG_HEADER_TYPE: u8 = 0x0E;
pub const REG_BAR0: u8 = 0x10;
pub const REG_ROM: u8 = 0x30;

/// Command register bits.
pub const CMD_IO: u16 = 1 << 0;
pub const CMD_MEMORY: u16 = 1 << 1;
pub const CMD_MASTER: u16 = 1 << 2;
pub const CMD_PARITY: u16 = 1 << 6;
pub const CMD_SERR: u16 = 1 << 8;
pub const CMD_INTX_DISABLE: u16 = 1 << 10;
/// The bits a domain may change.
pub const CMD_GUEST_BITS: u16 =
    CMD_IO | CMD_MEMORY | CMD_MASTER | CMD_PARITY | CMD_SERR | CMD_INTX_DISABLE;

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    Mem64,
}

/// One implemented BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Register index 0 to 5 (a 64-bit BAR also uses `index + 1`).
    pub index: u8,
    pub kind: BarKind,
    pub prefetchable: bool,
    /// Address (the machine address the firmware assigned).
    pub base: u64,
    /// Bytes (a power of two).
    pub size: u64,
    /// The low register's flag bits (type, prefetchable, I/O).
    pub flags: u32,
}

impl Bar {
    /// The value a BAR's low register reads after sizing (all ones written).
    pub fn size_mask_low(&self) -> u32 {
        let mask = !(self.size.wrapping_sub(1));
        match self.kind {
            BarKind::Io => (mask as u32 & !0x3) | self.flags,
            _ => (mask as u32 & !0xF) | self.flags,
        }
    }

    /// The high register's value after sizing (64-bit BARs).
    pub fn size_mask_high(&self) -> u32 {
        (!(self.size.wrapping_sub(1)) >> 32) as u32
    }
}

/// `mem64 pref [0x...-0x...)`.
impl fmt::Display for Bar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            BarKind::Io => "io",
            BarKind::Mem32 => "mem32",
            BarKind::Mem64 => "mem64",
        };
        write!(
            f,
            "BAR{} {kind}{} [{:#x}-{:#x})",
            self.index,
            if self.prefetchable {
                " prefetchable"
            } else {
                ""
            },
            self.base,
            self.base.saturating_add(self.size)
        )
    }
}

/// A device found for assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    /// Class code, subclass, programming interface (bits 8-31 of 0x08).
    pub class: u32,
    /// Implemented BARs.
    pub bars: Vec<Bar>,
    /// The command register as the firmware left it.
    pub command: u16,
}

impl Device {
    /// The memory BARs: what gets mapped.
    pub fn memory_bars(&self) -> impl Iterator<Item = &Bar> {
        self.bars.iter().filter(|b| b.kind != BarKind::Io)
    }

    /// The BAR whose register is `index` (the low one of a 64-bit BAR), or
    /// whose high register it is (`true`).
    pub fn bar_at(&self, index: u8) -> Option<(&Bar, bool)> {
        self.bars.iter().find_map(|b| {
            if b.index == index {
                Some((b, false))
            } else if b.kind == BarKind::Mem64 && b.index + 1 == index {
                Some((b, true))
            } else {
                None
            }
        })
    }
}

/// `00:04.0 1234:11e8 class 00ff00`.
impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04x}:{:04x} class {:06x}",
            self.bdf, self.vendor, self.device, self.class
        )
    }
}

/// Finds the device at `bdf` and sizes its BARs (memory and I/O decoding
/// are turned off while a BAR holds all ones, then the BAR and the command
/// register are restored). Refuses what cannot be assigned safely: no
/// device, a bridge or other non-endpoint header, an unassigned memory BAR
/// or one smaller than a page (mapping its page would expose neighbours).
pub fn probe(cs: &mut dyn ConfigSpace, bdf: Bdf) -> Result<Device, String> {
    let id = cs.read(bdf, REG_VENDOR, 4);
    let vendor = id as u16;
    if vendor == 0xFFFF || vendor == 0 {
        return Err(format!("no PCI device at {bdf}"));
    }
    let header = cs.read(bdf, REG_HEADER_TYPE, 1) & 0x7F;
    if header != 0 {
        return Err(format!(
            "PCI device {bdf} has header type {header}: only endpoints (type 0) can be assigned"
        ));
    }
    let class = cs.read(bdf, REG_CLASS, 4) >> 8;
    let command = cs.read(bdf, REG_COMMAND, 2) as u16;
    let mut bars = Vec::new();
    let mut i = 0u8;
    while i < 6 {
        let reg = REG_BAR0 + 4 * i;
        let orig = cs.read(bdf, reg, 4);
        let is_io = orig & 1 != 0;
        let is64 = !is_io && (orig >> 1) & 3 == 2;
        if is64 && i == 5 {
            return Err(format!(
                "PCI device {bdf}: BAR5 claims 64 bits, which needs a sixth register"
            ));
        }
        let orig_hi = if is64 { cs.read(bdf, reg + 4, 4) } else { 0 };
        cs.write(
            bdf,
            REG_COMMAND,
            2,
            u32::from(command & !(CMD_IO | CMD_MEMORY)),
        );
        cs.write(bdf, reg, 4, 0xFFFF_FFFF);
        let lo = cs.read(bdf, reg, 4);
        let hi = if is64 {
            cs.write(bdf, reg + 4, 4, 0xFFFF_FFFF);
            let h = cs.read(bdf, reg + 4, 4);
            cs.write(bdf, reg + 4, 4, orig_hi);
            h
        } else {
            0
        };
        cs.write(bdf, reg, 4, orig);
        cs.write(bdf, REG_COMMAND, 2, u32::from(command));
        let (flags, addr_mask) = if is_io {
            (orig & 0x3, !0x3u32)
        } else {
            (orig & 0xF, !0xFu32)
        };
        let mask = (u64::from(hi) << 32) | u64::from(lo & addr_mask);
        let mask = if is64 {
            mask
        } else if is_io {
            mask | 0xFFFF_FFFF_FFFF_0000
        } else {
            mask | 0xFFFF_FFFF_0000_0000
        };
        let step = if is64 { 2 } else { 1 };
        if lo & addr_mask != 0 {
            let size = (!mask).wrapping_add(1);
            let base = (u64::from(orig_hi) << 32) | u64::from(orig & addr_mask);
            let kind = if is_io {
                BarKind::Io
            } else if is64 {
                BarKind::Mem64
            } else {
                BarKind::Mem32
            };
            let bar = Bar {
                index: i,
                kind,
                prefetchable: !is_io && orig & 8 != 0,
                base,
                size,
                flags,
            };
            if kind != BarKind::Io {
                if base == 0 {
                    return Err(format!(
                        "PCI device {bdf}: {bar}: the firmware left it unassigned"
                    ));
                }
                if size < PAGE_SIZE {
                    return Err(format!(
                        "PCI device {bdf}: {bar}: smaller than a page, it cannot be mapped \
                         without exposing whatever shares its page"
                    ));
                }
            }
            bars.push(bar);
        }
        i += step;
    }
    Ok(Device {
        bdf,
        vendor,
        device: (id >> 16) as u16,
        class,
        bars,
        command,
    })
}

/// Where the memory BARs go in the domain (guest-physical = machine
/// address), checked: page-aligned, below 2^47 (the guest identity-maps
/// them), clear of the domain's memory in its layout and of machine RAM.
pub fn check_bars(dev: &Device, layout: &DomainLayout, ft: &FrameTable) -> Result<(), String> {
    for bar in dev.memory_bars() {
        let end = bar.base.saturating_add(bar.size);
        if !bar.base.is_multiple_of(PAGE_SIZE) {
            return Err(format!("PCI device {}: {bar} is not page-aligned", dev.bdf));
        }
        if end > pv_abi::start_info::GPA_LIMIT {
            return Err(format!(
                "PCI device {}: {bar} lies beyond 2^47, where the guest cannot identity-map it",
                dev.bdf
            ));
        }
        if let Some(m) = layout
            .mappings
            .iter()
            .find(|m| m.gpa.0 < end && bar.base < m.gpa_end().0)
        {
            return Err(format!(
                "PCI device {}: {bar} collides with the domain's memory [{:#x}-{:#x}) in the {} \
                 layout (BARs keep their machine address): give the domain less memory or \
                 another layout",
                dev.bdf,
                m.gpa.0,
                m.gpa_end().0,
                layout.kind
            ));
        }
        if let Some(c) = ft
            .chunks()
            .iter()
            .find(|c| c.range().start.0 < end && bar.base < c.range().end.0)
        {
            return Err(format!(
                "PCI device {}: {bar} overlaps machine RAM {}: firmware bug, not assigned",
                dev.bdf,
                c.range()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! SRAT: the System Resource Affinity Table (ACPI 6.5 §5.2.16).
//!
//! Maps processors (by APIC id) and memory ranges to proximity domains
//! ("pxm"). The table order of entries matters: Linux numbers nodes in the
//! order processor entries name their pxm, so the parser keeps it.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::tables::{read_u32, read_u8, AcpiError, SdtHeader, Subtables};
use crate::PhysAddr;

/// Offset of the first entry: header (36) + table revision (4) + reserved (8).
pub const SRAT_ENTRIES_OFFSET: usize = 48;

const TYPE_CPU: u8 = 0;
const TYPE_MEMORY: u8 = 1;
const TYPE_X2APIC: u8 = 2;
const LEN_CPU: usize = 16;
const LEN_MEMORY: usize = 40;
const LEN_X2APIC: usize = 24;

/// A processor (local APIC, type 0, or x2APIC, type 2) affinity entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SratCpu {
    pub pxm: u32,
    pub apic_id: u32,
    pub enabled: bool,
    /// Came from a type 2 (x2APIC) entry.
    pub x2apic: bool,
}

/// A memory affinity entry (type 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SratMemory {
    pub pxm: u32,
    pub base: u64,
    pub length: u64,
    pub enabled: bool,
    pub hotpluggable: bool,
    pub nonvolatile: bool,
}

impl SratMemory {
    /// `[base, base + length)`, clamped at the top of the address space (the
    /// parser warns when it had to clamp).
    pub fn range(&self) -> core::ops::Range<PhysAddr> {
        PhysAddr(self.base)..PhysAddr(self.base.saturating_add(self.length))
    }
}

/// The entries NUMA discovery uses, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SratEntry {
    Cpu(SratCpu),
    Memory(SratMemory),
}

/// A parsed SRAT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Srat {
    /// The header's revision; it decides how wide proximity domains are.
    pub revision: u8,
    pub entries: Vec<SratEntry>,
    /// What was skipped or clamped, for the console.
    pub warnings: Vec<String>,
    /// Set when parsing stopped early or a known entry was too short. Linux
    /// (`bad_srat()`) then ignores the whole SRAT, and so does the topology
    /// builder: a half-read affinity table misplaces memory silently.
    pub malformed: bool,
}

impl Srat {
    /// Parses a complete SRAT (header checked, checksum included).
    ///
    /// Proximity domain width follows Linux: before SRAT revision 2 only the
    /// low byte of a type 0 entry's pxm counts and a type 1 entry's pxm is
    /// masked to 8 bits (ACPI 2.0 defined them as 8-bit, and early firmware
    /// left garbage in the bytes that were reserved then). Type 2 entries are
    /// always 32-bit.
    pub fn parse(bytes: &[u8]) -> Result<Srat, AcpiError> {
        let (hdr, table) = SdtHeader::validate(bytes, b"SRAT", SRAT_ENTRIES_OFFSET)?;
        let mut srat = Srat {
            revision: hdr.revision,
            ..Srat::default()
        };
        let wide = hdr.revision >= 2;
        for item in Subtables::new(table, SRAT_ENTRIES_OFFSET, "SRAT") {
            let (ty, e) = match item {
                Ok(v) => v,
                Err(w) => {
                    srat.warnings.push(w);
                    srat.malformed = true;
                    break;
                }
            };
            let min = match ty {
                TYPE_CPU => LEN_CPU,
                TYPE_MEMORY => LEN_MEMORY,
                TYPE_X2APIC => LEN_X2APIC,
                // Other types (GICC, GIC ITS, generic initiator, ...) do not
                // describe x86 CPUs or memory: skipped by their length.
                _ => continue,
            };
            if e.len() < min {
                srat.warnings.push(format!(
                    "SRAT: entry type {ty} has length {} (< {min}); skipped",
                    e.len()
                ));
                srat.malformed = true;
                continue;
            }
            match parse_entry(ty, e, wide) {
                Some(SratEntry::Memory(m)) => {
                    if m.base.checked_add(m.length).is_none() {
                        srat.warnings.push(format!(
                            "SRAT: memory range {:#x}+{:#x} wraps; clamped to {}",
                            m.base,
                            m.length,
                            PhysAddr(u64::MAX)
                        ));
                    }
                    srat.entries.push(SratEntry::Memory(m));
                }
                Some(entry) => srat.entries.push(entry),
                None => {}
            }
        }
        Ok(srat)
    }

    /// The processor entries, in table order.
    pub fn cpus(&self) -> impl Iterator<Item = &SratCpu> {
        self.entries.iter().filter_map(|e| match e {
            SratEntry::Cpu(c) => Some(c),
            SratEntry::Memory(_) => None,
        })
    }

    /// The memory entries, in table order.
    pub fn memory(&self) -> impl Iterator<Item = &SratMemory> {
        self.entries.iter().filter_map(|e| match e {
            SratEntry::Memory(m) => Some(m),
            SratEntry::Cpu(_) => None,
        })
    }
}

fn parse_entry(ty: u8, e: &[u8], wide: bool) -> Option<SratEntry> {
    match ty {
        TYPE_CPU => {
            let mut pxm = u32::from(read_u8(e, 2)?);
            if wide {
                pxm |= u32::from(read_u8(e, 9)?) << 8
                    | u32::from(read_u8(e, 10)?) << 16
                    | u32::from(read_u8(e, 11)?) << 24;
            }
            Some(SratEntry::Cpu(SratCpu {
                pxm,
                apic_id: u32::from(read_u8(e, 3)?),
                enabled: read_u32(e, 4)? & 1 != 0,
                x2apic: false,
            }))
        }
        TYPE_MEMORY => {
            let mut pxm = read_u32(e, 2)?;
            if !wide {
                pxm &= 0xff;
            }
            let lo_hi = |off| -> Option<u64> {
                Some(u64::from(read_u32(e, off)?) | u64::from(read_u32(e, off + 4)?) << 32)
            };
            let flags = read_u32(e, 28)?;
            Some(SratEntry::Memory(SratMemory {
                pxm,
                base: lo_hi(8)?,
                length: lo_hi(16)?,
                enabled: flags & 1 != 0,
                hotpluggable: flags & 2 != 0,
                nonvolatile: flags & 4 != 0,
            }))
        }
        TYPE_X2APIC => Some(SratEntry::Cpu(SratCpu {
            pxm: read_u32(e, 4)?,
            apic_id: read_u32(e, 8)?,
            enabled: read_u32(e, 12)? & 1 != 0,
            x2apic: true,
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{fix_checksum, SratBuilder, MEM_ENABLED, MEM_HOTPLUG, MEM_NONVOLATILE};
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn qemu_q35_like_srat() {
        // What QEMU 7.2 builds for `-numa node,nodeid=0..3` with cpus 0-1,
        // 2-3, 4-5 on nodes 0, 1, 2 and 512M on nodes 0, 1, 3: processor
        // entries first, then 0-640K, then per-node memory from 1M, then
        // padding entries of length 0, pxm 0, no flags.
        let t = SratBuilder::new()
            .cpu(0, 0)
            .cpu(0, 1)
            .cpu(1, 2)
            .cpu(1, 3)
            .cpu(2, 4)
            .cpu(2, 5)
            .mem(0, 0, 0xA_0000)
            .mem(0, MIB, 511 * MIB)
            .mem(1, 512 * MIB, 512 * MIB)
            .mem(3, 1024 * MIB, 512 * MIB)
            .mem_flags(0, 0, 0, 0)
            .mem_flags(0, 0, 0, 0)
            .build();
        let s = Srat::parse(&t).unwrap();
        assert!(!s.malformed);
        assert!(s.warnings.is_empty());
        assert_eq!(s.entries.len(), 12);
        let cpus: Vec<_> = s.cpus().map(|c| (c.pxm, c.apic_id, c.enabled)).collect();
        assert_eq!(
            cpus,
            [
                (0, 0, true),
                (0, 1, true),
                (1, 2, true),
                (1, 3, true),
                (2, 4, true),
                (2, 5, true)
            ]
        );
        let mem: Vec<_> = s
            .memory()
            .map(|m| (m.pxm, m.base, m.length, m.enabled))
            .collect();
        assert_eq!(mem[1], (0, MIB, 511 * MIB, true));
        assert_eq!(mem[3], (3, 1024 * MIB, 512 * MIB, true));
        assert_eq!(mem[4], (0, 0, 0, false));
    }

    #[test]
    fn flags_and_x2apic_and_wide_pxm() {
        let t = SratBuilder::new()
            .revision(3)
            .cpu_flags(0x0102_0304, 7, 0)
            .x2apic(0x1_0000, 300, 1)
            .mem_flags(
                0x1234,
                1 << 40,
                1 << 30,
                MEM_ENABLED | MEM_HOTPLUG | MEM_NONVOLATILE,
            )
            .build();
        let s = Srat::parse(&t).unwrap();
        assert_eq!(
            s.entries,
            [
                SratEntry::Cpu(SratCpu {
                    pxm: 0x0102_0304,
                    apic_id: 7,
                    enabled: false,
                    x2apic: false
                }),
                SratEntry::Cpu(SratCpu {
                    pxm: 0x1_0000,
                    apic_id: 300,
                    enabled: true,
                    x2apic: true
                }),
                SratEntry::Memory(SratMemory {
                    pxm: 0x1234,
                    base: 1 << 40,
                    length: 1 << 30,
                    enabled: true,
                    hotpluggable: true,
                    nonvolatile: true
                }),
            ]
        );
    }

    #[test]
    fn revision_1_pxm_is_8_bits() {
        let t = SratBuilder::new()
            .cpu(0x0102_0304, 7)
            .mem(0x1234, 0, MIB)
            .build();
        let s = Srat::parse(&t).unwrap();
        assert_eq!(s.cpus().next().unwrap().pxm, 0x04);
        assert_eq!(s.memory().next().unwrap().pxm, 0x34);
    }

    #[test]
    fn unknown_types_are_skipped_by_length() {
        let t = SratBuilder::new()
            .raw(&[3, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .raw(&[0x80, 2])
            .cpu(1, 1)
            .build();
        let s = Srat::parse(&t).unwrap();
        assert!(!s.malformed);
        assert_eq!(s.entries.len(), 1);
    }

    #[test]
    fn zero_length_entry_stops_with_warning() {
        let t = SratBuilder::new()
            .cpu(0, 0)
            .raw(&[0, 0, 0, 0])
            .cpu(1, 1)
            .build();
        let s = Srat::parse(&t).unwrap();
        assert!(s.malformed);
        assert_eq!(s.entries.len(), 1);
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].contains("length 0"), "{:?}", s.warnings);
    }

    #[test]
    fn truncated_entry_stops_with_warning() {
        let mut t = SratBuilder::new().cpu(0, 0).mem(0, 0, MIB).build();
        // Drop the last 8 bytes of the memory entry, fixing the header.
        t.truncate(t.len() - 8);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut t);
        let s = Srat::parse(&t).unwrap();
        assert!(s.malformed);
        assert_eq!(s.entries.len(), 1);
        assert!(s.warnings[0].contains("runs past"), "{:?}", s.warnings);
    }

    #[test]
    fn short_known_entry_is_malformed() {
        let t = SratBuilder::new()
            .raw(&[1, 8, 0, 0, 0, 0, 0, 0])
            .cpu(1, 1)
            .build();
        let s = Srat::parse(&t).unwrap();
        assert!(s.malformed);
        assert_eq!(s.entries.len(), 1);
        assert!(
            s.warnings[0].contains("type 1 has length 8"),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn header_errors() {
        let mut t = SratBuilder::new().cpu(0, 0).build();
        t[20] ^= 1;
        assert_eq!(
            Srat::parse(&t),
            Err(AcpiError::BadChecksum {
                signature: *b"SRAT"
            })
        );
        let t = SratBuilder::new().cpu(0, 0).build();
        assert!(matches!(
            Srat::parse(&t[..t.len() - 1]),
            Err(AcpiError::Truncated { .. })
        ));
        let mut t = SratBuilder::new().cpu(0, 0).build();
        t[4..8].copy_from_slice(&40u32.to_le_bytes());
        fix_checksum(&mut t);
        assert!(matches!(Srat::parse(&t), Err(AcpiError::BadLength { .. })));
    }

    #[test]
    fn wrapping_memory_range_is_clamped_with_warning() {
        let t = SratBuilder::new().mem(0, u64::MAX - 0xFFF, 0x2000).build();
        let s = Srat::parse(&t).unwrap();
        assert!(!s.malformed);
        assert_eq!(s.warnings.len(), 1);
        assert_eq!(s.memory().next().unwrap().range().end, PhysAddr(u64::MAX));
    }

    fn valid_srat() -> Vec<u8> {
        SratBuilder::new()
            .cpu(0, 0)
            .x2apic(1, 300, 1)
            .mem(0, 0, 0xA_0000)
            .mem(1, MIB, 100 * MIB)
            .mem_flags(0, 0, 0, 0)
            .build()
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Srat::parse(&bytes);
            // The same bytes behind a valid header, checksum fixed.
            let mut t = crate::build::table(b"SRAT", 1, &bytes);
            let _ = Srat::parse(&t);
            t[8] = 2;
            fix_checksum(&mut t);
            let _ = Srat::parse(&t);
        }

        #[test]
        fn mutations_never_panic(muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                                 fix in any::<bool>()) {
            let mut t = valid_srat();
            for (i, v) in muts {
                let n = t.len();
                t[i % n] = v;
            }
            if fix {
                fix_checksum(&mut t);
            }
            if let Ok(s) = Srat::parse(&t) {
                prop_assert!(s.entries.len() <= t.len() / 2);
            }
        }
    }
}

//! MADT: the Multiple APIC Description Table, signature "APIC" (ACPI 6.5
//! §5.2.12). Only the processor entries matter here: they say which CPUs
//! exist, in the order logical CPU numbers are handed out.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::tables::{read_u32, read_u8, AcpiError, SdtHeader, Subtables, SDT_HEADER_LEN};

/// Offset of the first entry: header + local APIC address + flags.
pub const MADT_ENTRIES_OFFSET: usize = SDT_HEADER_LEN + 8;

const TYPE_LAPIC: u8 = 0;
const TYPE_X2APIC: u8 = 9;
const LEN_LAPIC: usize = 8;
const LEN_X2APIC: usize = 16;

/// A processor local APIC (type 0) or local x2APIC (type 9) entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtCpu {
    pub apic_id: u32,
    /// ACPI processor id (type 0) or processor UID (type 9).
    pub acpi_id: u32,
    /// Usable now.
    pub enabled: bool,
    /// Not enabled but may be brought online later (ACPI 6.3+).
    pub online_capable: bool,
    /// Came from a type 9 entry.
    pub x2apic: bool,
}

/// A parsed MADT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Madt {
    pub local_apic_addr: u32,
    pub flags: u32,
    /// Processor entries in table order, including disabled ones.
    pub cpus: Vec<MadtCpu>,
    pub warnings: Vec<String>,
    /// Parsing stopped early or a processor entry was too short. Linux
    /// ("Invalid BIOS MADT") then trusts none of it, and neither does the
    /// topology builder.
    pub malformed: bool,
}

impl Madt {
    /// Parses a complete MADT (header and checksum checked).
    pub fn parse(bytes: &[u8]) -> Result<Madt, AcpiError> {
        let (_, table) = SdtHeader::validate(bytes, b"APIC", MADT_ENTRIES_OFFSET)?;
        let mut madt = Madt {
            local_apic_addr: read_u32(table, SDT_HEADER_LEN).unwrap_or(0),
            flags: read_u32(table, SDT_HEADER_LEN + 4).unwrap_or(0),
            ..Madt::default()
        };
        for item in Subtables::new(table, MADT_ENTRIES_OFFSET, "MADT") {
            let (ty, e) = match item {
                Ok(v) => v,
                Err(w) => {
                    madt.warnings.push(w);
                    madt.malformed = true;
                    break;
                }
            };
            let min = match ty {
                TYPE_LAPIC => LEN_LAPIC,
                TYPE_X2APIC => LEN_X2APIC,
                // I/O APICs, overrides, NMIs, ...: not needed for topology.
                _ => continue,
            };
            if e.len() < min {
                madt.warnings.push(format!(
                    "MADT: entry type {ty} has length {} (< {min}); skipped",
                    e.len()
                ));
                madt.malformed = true;
                continue;
            }
            if let Some(cpu) = parse_cpu(ty, e) {
                madt.cpus.push(cpu);
            }
        }
        Ok(madt)
    }
}

fn parse_cpu(ty: u8, e: &[u8]) -> Option<MadtCpu> {
    let (apic_id, acpi_id, flags) = if ty == TYPE_LAPIC {
        (
            u32::from(read_u8(e, 3)?),
            u32::from(read_u8(e, 2)?),
            read_u32(e, 4)?,
        )
    } else {
        (read_u32(e, 4)?, read_u32(e, 12)?, read_u32(e, 8)?)
    };
    Some(MadtCpu {
        apic_id,
        acpi_id,
        enabled: flags & 1 != 0,
        online_capable: flags & 2 != 0,
        x2apic: ty == TYPE_X2APIC,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{fix_checksum, table, MadtBuilder};
    use proptest::prelude::*;

    #[test]
    fn parses_cpus_in_order() {
        let t = MadtBuilder::new()
            .lapic(0, 0, 1)
            .ioapic()
            .lapic(1, 1, 1)
            .lapic(2, 2, 2)
            .x2apic(300, 1, 7)
            .build();
        let m = Madt::parse(&t).unwrap();
        assert!(!m.malformed && m.warnings.is_empty());
        assert_eq!(m.local_apic_addr, 0xFEE0_0000);
        assert_eq!(m.flags, 1);
        let ids: Vec<_> = m
            .cpus
            .iter()
            .map(|c| (c.apic_id, c.acpi_id, c.enabled))
            .collect();
        assert_eq!(
            ids,
            [(0, 0, true), (1, 1, true), (2, 2, false), (300, 7, true)]
        );
        assert!(m.cpus[2].online_capable);
        assert!(m.cpus[3].x2apic);
    }

    #[test]
    fn malformed_entries() {
        let m = Madt::parse(&MadtBuilder::new().lapic(0, 0, 1).raw(&[0, 0]).build()).unwrap();
        assert!(m.malformed);
        assert_eq!(m.cpus.len(), 1);
        assert!(m.warnings[0].contains("length 0"));
        let m = Madt::parse(&MadtBuilder::new().raw(&[9, 8, 0, 0, 1, 0, 0, 0]).build()).unwrap();
        assert!(m.malformed);
        assert!(m.cpus.is_empty());
        let m = Madt::parse(&MadtBuilder::new().lapic(0, 0, 1).raw(&[0, 8, 1]).build()).unwrap();
        assert!(m.malformed);
        assert!(m.warnings[0].contains("runs past"), "{:?}", m.warnings);
    }

    #[test]
    fn header_errors() {
        let mut t = MadtBuilder::new().lapic(0, 0, 1).build();
        t[40] ^= 1;
        assert!(matches!(
            Madt::parse(&t),
            Err(AcpiError::BadChecksum { .. })
        ));
        let mut t = MadtBuilder::new().lapic(0, 0, 1).build();
        t[4..8].copy_from_slice(&4096u32.to_le_bytes());
        fix_checksum(&mut t);
        assert!(matches!(Madt::parse(&t), Err(AcpiError::Truncated { .. })));
        assert!(matches!(
            Madt::parse(&table(b"APIC", 1, &[0; 4])),
            Err(AcpiError::BadLength { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Madt::parse(&bytes);
            let _ = Madt::parse(&table(b"APIC", 1, &bytes));
        }

        #[test]
        fn mutations_never_panic(muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
            let mut t = MadtBuilder::new().lapic(0, 0, 1).ioapic().x2apic(300, 1, 1).build();
            for (i, v) in muts {
                let n = t.len();
                t[i % n] = v;
            }
            fix_checksum(&mut t);
            let _ = Madt::parse(&t);
        }
    }
}

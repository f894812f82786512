//! Building ACPI tables: headers with correct lengths and checksums,
//! SRAT/SLIT/MADT entries, and a byte-array [`PhysMemory`]. The hypervisor
//! writes a domain's virtual tables with these; tests craft good and broken
//! firmware with them.

use alloc::vec;
use alloc::vec::Vec;

use super::tables::PhysMemory;
use crate::PhysAddr;

/// Memory `[base, base + len)` backed by a vector.
pub struct TestMem {
    base: u64,
    bytes: Vec<u8>,
}

impl TestMem {
    pub fn new(base: u64, len: usize) -> Self {
        TestMem {
            base,
            bytes: vec![0; len],
        }
    }

    pub fn put(&mut self, addr: u64, data: &[u8]) {
        let off = (addr - self.base) as usize;
        self.bytes[off..off + data.len()].copy_from_slice(data);
    }
}

impl PhysMemory for TestMem {
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> bool {
        let Some(off) = addr.0.checked_sub(self.base) else {
            return false;
        };
        let Ok(off) = usize::try_from(off) else {
            return false;
        };
        match self.bytes.get(off..off.saturating_add(buf.len())) {
            Some(s) if off.checked_add(buf.len()).is_some() => {
                buf.copy_from_slice(s);
                true
            }
            _ => false,
        }
    }
}

/// Sets byte 9 so the table sums to zero.
pub fn fix_checksum(t: &mut [u8]) {
    if t.len() < 10 {
        return;
    }
    t[9] = 0;
    let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    t[9] = 0u8.wrapping_sub(sum);
}

/// A complete table: header (length and checksum filled in) + `body`, with
/// QEMU's OEM ids (what the tests imitate).
pub fn table(sig: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    table_from(sig, revision, b"BOCHS ", b"BXPC    ", body)
}

/// A complete table with the given OEM and OEM table ids.
pub fn table_from(
    sig: &[u8; 4],
    revision: u8,
    oem_id: &[u8; 6],
    oem_table_id: &[u8; 8],
    body: &[u8],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(sig);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0);
    t.extend_from_slice(oem_id);
    t.extend_from_slice(oem_table_id);
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(b"NVSR");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(body);
    fix_checksum(&mut t);
    t
}

pub const MEM_ENABLED: u32 = 1;
pub const MEM_HOTPLUG: u32 = 2;
pub const MEM_NONVOLATILE: u32 = 4;

/// SRAT entries in the order they are added.
#[derive(Default, Clone)]
pub struct SratBuilder {
    body: Vec<u8>,
    revision: u8,
}

impl SratBuilder {
    pub fn new() -> Self {
        SratBuilder {
            // 4 bytes "table revision" (must be 1) + 8 reserved.
            body: {
                let mut b = vec![0u8; 12];
                b[0] = 1;
                b
            },
            revision: 1,
        }
    }

    pub fn revision(mut self, r: u8) -> Self {
        self.revision = r;
        self
    }

    /// Type 0, processor local APIC affinity (full 32-bit pxm spread over
    /// the low byte and the three high bytes).
    pub fn cpu_flags(mut self, pxm: u32, apic: u8, flags: u32) -> Self {
        let p = pxm.to_le_bytes();
        self.body.extend_from_slice(&[0, 16, p[0], apic]);
        self.body.extend_from_slice(&flags.to_le_bytes());
        self.body.extend_from_slice(&[0, p[1], p[2], p[3]]);
        self.body.extend_from_slice(&0u32.to_le_bytes());
        self
    }

    pub fn cpu(self, pxm: u32, apic: u8) -> Self {
        self.cpu_flags(pxm, apic, 1)
    }

    /// Type 2, x2APIC affinity.
    pub fn x2apic(mut self, pxm: u32, x2apic: u32, flags: u32) -> Self {
        self.body.extend_from_slice(&[2, 24, 0, 0]);
        self.body.extend_from_slice(&pxm.to_le_bytes());
        self.body.extend_from_slice(&x2apic.to_le_bytes());
        self.body.extend_from_slice(&flags.to_le_bytes());
        self.body.extend_from_slice(&[0; 8]);
        self
    }

    /// Type 1, memory affinity.
    pub fn mem_flags(mut self, pxm: u32, base: u64, len: u64, flags: u32) -> Self {
        self.body.extend_from_slice(&[1, 40]);
        self.body.extend_from_slice(&pxm.to_le_bytes());
        self.body.extend_from_slice(&[0, 0]);
        self.body.extend_from_slice(&(base as u32).to_le_bytes());
        self.body
            .extend_from_slice(&((base >> 32) as u32).to_le_bytes());
        self.body.extend_from_slice(&(len as u32).to_le_bytes());
        self.body
            .extend_from_slice(&((len >> 32) as u32).to_le_bytes());
        self.body.extend_from_slice(&[0; 4]);
        self.body.extend_from_slice(&flags.to_le_bytes());
        self.body.extend_from_slice(&[0; 8]);
        self
    }

    pub fn mem(self, pxm: u32, base: u64, len: u64) -> Self {
        self.mem_flags(pxm, base, len, MEM_ENABLED)
    }

    /// Arbitrary bytes (for unknown or malformed entries).
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.body.extend_from_slice(bytes);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        table(b"SRAT", self.revision, &self.body)
    }
}

/// A SLIT from a row-major matrix.
pub fn slit(count: u64, matrix: &[u8]) -> Vec<u8> {
    let mut body = count.to_le_bytes().to_vec();
    body.extend_from_slice(matrix);
    table(b"SLIT", 1, &body)
}

/// MADT entries in the order they are added.
#[derive(Clone)]
pub struct MadtBuilder {
    body: Vec<u8>,
}

impl Default for MadtBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MadtBuilder {
    pub fn new() -> Self {
        let mut body = 0xFEE0_0000u32.to_le_bytes().to_vec();
        body.extend_from_slice(&1u32.to_le_bytes());
        MadtBuilder { body }
    }

    /// Type 0, processor local APIC.
    pub fn lapic(mut self, acpi_id: u8, apic: u8, flags: u32) -> Self {
        self.body.extend_from_slice(&[0, 8, acpi_id, apic]);
        self.body.extend_from_slice(&flags.to_le_bytes());
        self
    }

    /// Type 9, processor local x2APIC.
    pub fn x2apic(mut self, x2apic: u32, flags: u32, uid: u32) -> Self {
        self.body.extend_from_slice(&[9, 16, 0, 0]);
        self.body.extend_from_slice(&x2apic.to_le_bytes());
        self.body.extend_from_slice(&flags.to_le_bytes());
        self.body.extend_from_slice(&uid.to_le_bytes());
        self
    }

    /// Type 1, I/O APIC (ignored by the parser, but real tables have it).
    pub fn ioapic(mut self) -> Self {
        self.body
            .extend_from_slice(&[1, 12, 0, 0, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0]);
        self
    }

    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.body.extend_from_slice(bytes);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        table(b"APIC", 1, &self.body)
    }
}

/// One processor of a [`NumaTableSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableCpu {
    pub apic_id: u32,
    pub pxm: u32,
}

/// One memory range of a [`NumaTableSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableMemory {
    pub base: u64,
    pub length: u64,
    pub pxm: u32,
}

/// What a complete set of NUMA tables describes: the hypervisor writes one
/// for every domain so that the guest sees exactly its virtual topology.
#[derive(Clone, Copy, Debug)]
pub struct NumaTableSet<'a> {
    /// In CPU order: the SRAT lists them in this order, which fixes the
    /// guest's (Linux-style) node numbering.
    pub cpus: &'a [TableCpu],
    pub memory: &'a [TableMemory],
    /// Row-major `nr_pxms * nr_pxms` distances, indexed by pxm.
    pub distances: &'a [u8],
    pub nr_pxms: usize,
}

/// Offset of each table inside a set built by [`numa_table_set`].
const RSDP_LEN: usize = 36;

fn align8(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(8) {
        v.push(0);
    }
}

/// RSDP (revision 2), XSDT, MADT, SRAT and SLIT, laid out one after another
/// for placement at physical address `base` (8-byte aligned), all with
/// valid checksums. The RSDP is at `base`.
pub fn numa_table_set(base: u64, set: &NumaTableSet<'_>) -> Vec<u8> {
    const OEM: &[u8; 6] = b"NUMAVS";
    const OEM_TABLE: &[u8; 8] = b"VNUMA   ";
    let mut madt = 0xFEE0_0000u32.to_le_bytes().to_vec();
    madt.extend_from_slice(&0u32.to_le_bytes());
    for (i, c) in set.cpus.iter().enumerate() {
        let enabled = 1u32;
        match (u8::try_from(c.apic_id), u8::try_from(i)) {
            (Ok(apic), Ok(uid)) if apic != 0xFF => {
                madt.extend_from_slice(&[0, 8, uid, apic]);
                madt.extend_from_slice(&enabled.to_le_bytes());
            }
            _ => {
                madt.extend_from_slice(&[9, 16, 0, 0]);
                madt.extend_from_slice(&c.apic_id.to_le_bytes());
                madt.extend_from_slice(&enabled.to_le_bytes());
                madt.extend_from_slice(&(i as u32).to_le_bytes());
            }
        }
    }
    let madt = table_from(b"APIC", 4, OEM, OEM_TABLE, &madt);

    let mut srat = 1u32.to_le_bytes().to_vec();
    srat.extend_from_slice(&[0; 8]);
    for c in set.cpus {
        match u8::try_from(c.apic_id) {
            Ok(apic) if apic != 0xFF => {
                let p = c.pxm.to_le_bytes();
                srat.extend_from_slice(&[0, 16, p[0], apic]);
                srat.extend_from_slice(&MEM_ENABLED.to_le_bytes());
                srat.extend_from_slice(&[0, p[1], p[2], p[3]]);
                srat.extend_from_slice(&0u32.to_le_bytes());
            }
            _ => {
                srat.extend_from_slice(&[2, 24, 0, 0]);
                srat.extend_from_slice(&c.pxm.to_le_bytes());
                srat.extend_from_slice(&c.apic_id.to_le_bytes());
                srat.extend_from_slice(&MEM_ENABLED.to_le_bytes());
                srat.extend_from_slice(&[0; 8]);
            }
        }
    }
    for m in set.memory {
        srat.extend_from_slice(&[1, 40]);
        srat.extend_from_slice(&m.pxm.to_le_bytes());
        srat.extend_from_slice(&[0, 0]);
        srat.extend_from_slice(&m.base.to_le_bytes());
        srat.extend_from_slice(&m.length.to_le_bytes());
        srat.extend_from_slice(&[0; 4]);
        srat.extend_from_slice(&MEM_ENABLED.to_le_bytes());
        srat.extend_from_slice(&[0; 8]);
    }
    let srat = table_from(b"SRAT", 3, OEM, OEM_TABLE, &srat);

    let mut slit = (set.nr_pxms as u64).to_le_bytes().to_vec();
    slit.extend_from_slice(set.distances);
    let slit = table_from(b"SLIT", 1, OEM, OEM_TABLE, &slit);

    // Layout: RSDP, XSDT (3 entries), MADT, SRAT, SLIT.
    let xsdt_off = 64usize;
    let xsdt_len = 36 + 3 * 8;
    let madt_off = (xsdt_off + xsdt_len).next_multiple_of(8);
    let srat_off = (madt_off + madt.len()).next_multiple_of(8);
    let slit_off = (srat_off + srat.len()).next_multiple_of(8);
    let mut xsdt_body = Vec::with_capacity(24);
    for off in [madt_off, srat_off, slit_off] {
        xsdt_body.extend_from_slice(&(base + off as u64).to_le_bytes());
    }
    let xsdt = table_from(b"XSDT", 1, OEM, OEM_TABLE, &xsdt_body);

    let mut rsdp = Vec::with_capacity(RSDP_LEN);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes, below
    rsdp.extend_from_slice(OEM);
    rsdp.push(2); // revision: ACPI 2.0+, so the XSDT is used
    rsdp.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    rsdp.extend_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    rsdp.extend_from_slice(&(base + xsdt_off as u64).to_le_bytes());
    rsdp.push(0); // extended checksum, below
    rsdp.extend_from_slice(&[0; 3]);
    let sum20 = rsdp[..20].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    rsdp[8] = 0u8.wrapping_sub(sum20);
    let sum36 = rsdp.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    rsdp[32] = 0u8.wrapping_sub(sum36);

    let mut out = rsdp;
    out.resize(xsdt_off, 0);
    out.extend_from_slice(&xsdt);
    align8(&mut out);
    out.extend_from_slice(&madt);
    align8(&mut out);
    out.extend_from_slice(&srat);
    align8(&mut out);
    out.extend_from_slice(&slit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AcpiTables, Madt, Slit, Srat};

    #[test]
    fn a_table_set_reads_back() {
        let cpus = [
            TableCpu { apic_id: 0, pxm: 0 },
            TableCpu { apic_id: 1, pxm: 0 },
            TableCpu {
                apic_id: 300,
                pxm: 2,
            },
        ];
        let memory = [
            TableMemory {
                base: 0,
                length: 0x1000_0000,
                pxm: 0,
            },
            TableMemory {
                base: 0x1000_0000,
                length: 0x1000_0000,
                pxm: 1,
            },
        ];
        let distances = [10, 20, 30, 20, 10, 20, 30, 20, 10];
        let set = NumaTableSet {
            cpus: &cpus,
            memory: &memory,
            distances: &distances,
            nr_pxms: 3,
        };
        let base = 0x9_0000;
        let bytes = numa_table_set(base, &set);
        let mut mem = TestMem::new(base, bytes.len() + 64);
        mem.put(base, &bytes);
        let mut t = AcpiTables::discover(&mem, Some(PhysAddr(base))).unwrap();
        assert_eq!(&t.root_signature(), b"XSDT");
        let srat = Srat::parse(&t.find(b"SRAT").unwrap()).unwrap();
        assert!(srat.warnings.is_empty() && !srat.malformed);
        let cpu_entries: Vec<_> = srat.cpus().map(|c| (c.apic_id, c.pxm, c.x2apic)).collect();
        assert_eq!(
            cpu_entries,
            vec![(0, 0, false), (1, 0, false), (300, 2, true)]
        );
        assert_eq!(srat.memory().count(), 2);
        let slit = Slit::parse(&t.find(b"SLIT").unwrap()).unwrap();
        assert_eq!(slit.distance(2, 0), Some(30));
        let madt = Madt::parse(&t.find(b"APIC").unwrap()).unwrap();
        assert_eq!(madt.cpus.len(), 3);
        assert!(madt.cpus.iter().all(|c| c.enabled));
        assert!(t.warnings().is_empty(), "{:?}", t.warnings());
    }
}

//! Builders for ACPI tables in host tests: headers with correct lengths and
//! checksums, SRAT/SLIT/MADT entries, and a byte-array [`PhysMemory`].

use alloc::vec;
use alloc::vec::Vec;

use super::tables::PhysMemory;
use crate::mm::addr::Maddr;

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
    fn read(&self, addr: Maddr, buf: &mut [u8]) -> bool {
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

/// A complete table: header (length and checksum filled in) + `body`.
pub fn table(sig: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(sig);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0);
    t.extend_from_slice(b"BOCHS ");
    t.extend_from_slice(b"BXPC    ");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(b"BXPC");
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

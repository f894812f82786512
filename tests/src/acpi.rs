//! Crafted ACPI tables for QEMU's `-acpitable file=...`, to boot the
//! hypervisor on firmware tables that QEMU itself would never write
//! (malformed entries, invalid distances, overlapping ranges).
//!
//! QEMU recomputes the checksum of tables it is given, so checksum errors
//! are covered by the host tests of the parsers instead.

use std::path::PathBuf;

/// An ACPI table with its standard header; the checksum is filled in by
/// [`Table::bytes`].
pub struct Table {
    signature: [u8; 4],
    revision: u8,
    body: Vec<u8>,
}

impl Table {
    pub fn new(signature: &[u8; 4], revision: u8) -> Table {
        Table {
            signature: *signature,
            revision,
            body: Vec::new(),
        }
    }

    pub fn u8(&mut self, v: u8) -> &mut Table {
        self.body.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Table {
        self.body.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Table {
        self.body.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Table {
        self.body.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// The whole table: header, body, valid checksum.
    pub fn bytes(&self) -> Vec<u8> {
        let len = 36 + self.body.len();
        let mut t = Vec::with_capacity(len);
        t.extend_from_slice(&self.signature);
        t.extend_from_slice(&(len as u32).to_le_bytes());
        t.push(self.revision);
        t.push(0); // checksum, below
        t.extend_from_slice(b"NUMAVS");
        t.extend_from_slice(b"TESTTBL ");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(b"NVTS");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(&self.body);
        let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        t[9] = 0u8.wrapping_sub(sum);
        t
    }

    /// Writes the table to a file named after `tag` in the temp directory and
    /// returns the QEMU arguments that install it.
    pub fn qemu_args(&self, tag: &str) -> Vec<String> {
        let path: PathBuf =
            std::env::temp_dir().join(format!("numavisor-{}-{tag}.aml", std::process::id()));
        std::fs::write(&path, self.bytes())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        vec!["-acpitable".to_string(), format!("file={}", path.display())]
    }
}

/// An SRAT (revision 3) with the two reserved header fields in place.
pub fn srat() -> Table {
    let mut t = Table::new(b"SRAT", 3);
    t.u32(1).u64(0);
    t
}

/// Appends a processor local APIC affinity entry.
pub fn srat_cpu(t: &mut Table, apic_id: u8, pxm: u32, enabled: bool) {
    t.u8(0)
        .u8(16)
        .u8(pxm as u8)
        .u8(apic_id)
        .u32(u32::from(enabled))
        .u8(0);
    t.u8((pxm >> 8) as u8)
        .u8((pxm >> 16) as u8)
        .u8((pxm >> 24) as u8)
        .u32(0);
}

/// Appends a memory affinity entry.
pub fn srat_memory(t: &mut Table, base: u64, len: u64, pxm: u32, flags: u32) {
    t.u8(1).u8(40).u32(pxm).u16(0);
    t.u32(base as u32)
        .u32((base >> 32) as u32)
        .u32(len as u32)
        .u32((len >> 32) as u32);
    t.u32(0).u32(flags).u64(0);
}

/// A SLIT from a full matrix.
pub fn slit(matrix: &[Vec<u8>]) -> Table {
    let mut t = Table::new(b"SLIT", 1);
    t.u64(matrix.len() as u64);
    for row in matrix {
        for &d in row {
            t.u8(d);
        }
    }
    t
}

//! RSDP discovery, the RSDT/XSDT, table headers and checksums.
//!
//! Discovery touches physical memory only through [`PhysMemory`], so the same
//! code runs over the bare-metal identity map and over a `Vec` in host tests.
//! Tables are copied out before they are parsed: a parser never sees memory
//! that could change under it or lie outside the table's checked length.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::PhysAddr;

/// Read access to machine memory for table discovery.
///
/// An implementation must return `false` (never fault) for addresses it
/// cannot read: table pointers come from firmware and may point anywhere.
pub trait PhysMemory {
    /// Copies `buf.len()` bytes starting at `addr` into `buf`; `false` if any
    /// of them is not readable.
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> bool;
}

/// Length of the standard ACPI system description table header.
pub const SDT_HEADER_LEN: usize = 36;
/// Longest table accepted. Real SRAT/SLIT/MADT tables are a few KiB; the
/// bound keeps a garbage length field from asking for gigabytes of heap.
pub const MAX_TABLE_LEN: u32 = 1 << 20;
/// The legacy BIOS area scanned for the RSDP when the boot protocol gives no
/// address (ACPI 6.5 §5.2.5.1; QEMU q35 puts it here).
pub const RSDP_SCAN_START: u64 = 0xE_0000;
/// End (exclusive) of the RSDP scan area.
pub const RSDP_SCAN_END: u64 = 0x10_0000;

const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
/// Bytes covered by the ACPI 1.0 RSDP checksum.
const RSDP_V1_LEN: usize = 20;
/// Bytes covered by the ACPI 2.0+ extended checksum.
const RSDP_V2_LEN: usize = 36;

/// Why a table (or the RSDP) cannot be used at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// No valid RSDP in the BIOS scan area.
    NoRsdp,
    /// The boot protocol's RSDP address holds no valid RSDP.
    BadRsdp { addr: PhysAddr },
    /// `len` bytes at `addr` are not readable.
    Unreadable { addr: PhysAddr, len: usize },
    /// The header names another table than the one expected.
    BadSignature { expected: [u8; 4], found: [u8; 4] },
    /// The header's length is below the table's minimum or above
    /// [`MAX_TABLE_LEN`].
    BadLength { signature: [u8; 4], length: u32 },
    /// The header's length is larger than the bytes handed to the parser.
    Truncated {
        signature: [u8; 4],
        length: u32,
        available: usize,
    },
    /// The bytes of the table do not sum to zero.
    BadChecksum { signature: [u8; 4] },
    /// Neither a usable XSDT nor a non-zero RSDT address in the RSDP.
    NoRootTable,
    /// The SLIT's locality count does not fit its length.
    SlitSize { count: u64, length: u32 },
}

/// Prints a table signature, with non-printable bytes as `?`.
pub(crate) struct Sig<'a>(pub &'a [u8; 4]);

impl fmt::Display for Sig<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            let c = if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcpiError::NoRsdp => write!(
                f,
                "no RSDP in {RSDP_SCAN_START:#x}-{:#x}",
                RSDP_SCAN_END - 1
            ),
            AcpiError::BadRsdp { addr } => write!(f, "no valid RSDP at {addr}"),
            AcpiError::Unreadable { addr, len } => {
                write!(f, "cannot read {len} bytes at {addr}")
            }
            AcpiError::BadSignature { expected, found } => write!(
                f,
                "signature '{}' where '{}' was expected",
                Sig(found),
                Sig(expected)
            ),
            AcpiError::BadLength { signature, length } => {
                write!(f, "{}: implausible length {length}", Sig(signature))
            }
            AcpiError::Truncated {
                signature,
                length,
                available,
            } => write!(
                f,
                "{}: length {length} exceeds the {available} bytes available",
                Sig(signature)
            ),
            AcpiError::BadChecksum { signature } => write!(f, "{}: bad checksum", Sig(signature)),
            AcpiError::NoRootTable => write!(f, "the RSDP names no usable XSDT or RSDT"),
            AcpiError::SlitSize { count, length } => write!(
                f,
                "SLIT: {count} localities do not fit a {length}-byte table"
            ),
        }
    }
}

pub(crate) fn read_u8(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

pub(crate) fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

pub(crate) fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

fn read_array<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

/// True when the bytes sum to zero modulo 256, as every ACPI checksum demands.
pub fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
}

/// The common 36-byte header of every ACPI table except the RSDP and FACS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdtHeader {
    pub signature: [u8; 4],
    pub length: u32,
    pub revision: u8,
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub oem_table_id: [u8; 8],
    pub oem_revision: u32,
    pub creator_id: u32,
    pub creator_revision: u32,
}

impl SdtHeader {
    /// Decodes the header fields without checking them; `None` if fewer than
    /// [`SDT_HEADER_LEN`] bytes are given.
    pub fn parse(bytes: &[u8]) -> Option<SdtHeader> {
        Some(SdtHeader {
            signature: read_array(bytes, 0)?,
            length: read_u32(bytes, 4)?,
            revision: read_u8(bytes, 8)?,
            checksum: read_u8(bytes, 9)?,
            oem_id: read_array(bytes, 10)?,
            oem_table_id: read_array(bytes, 16)?,
            oem_revision: read_u32(bytes, 24)?,
            creator_id: read_u32(bytes, 28)?,
            creator_revision: read_u32(bytes, 32)?,
        })
    }

    /// Checks a whole table: signature, `min_len <= length <=
    /// MAX_TABLE_LEN`, length within `table`, and the checksum over `length`
    /// bytes. Returns the header and exactly the table's bytes (a caller may
    /// hand in a longer buffer; what lies past `length` is not the table's).
    pub fn validate<'a>(
        table: &'a [u8],
        signature: &[u8; 4],
        min_len: usize,
    ) -> Result<(SdtHeader, &'a [u8]), AcpiError> {
        let hdr = SdtHeader::parse(table).ok_or(AcpiError::Truncated {
            signature: *signature,
            length: SDT_HEADER_LEN as u32,
            available: table.len(),
        })?;
        if &hdr.signature != signature {
            return Err(AcpiError::BadSignature {
                expected: *signature,
                found: hdr.signature,
            });
        }
        let len = hdr.length as usize;
        if len < min_len.max(SDT_HEADER_LEN) || hdr.length > MAX_TABLE_LEN {
            return Err(AcpiError::BadLength {
                signature: *signature,
                length: hdr.length,
            });
        }
        let body = table.get(..len).ok_or(AcpiError::Truncated {
            signature: *signature,
            length: hdr.length,
            available: table.len(),
        })?;
        if !checksum_ok(body) {
            return Err(AcpiError::BadChecksum {
                signature: *signature,
            });
        }
        Ok((hdr, body))
    }
}

/// The Root System Description Pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    /// Where it was found.
    pub addr: PhysAddr,
    /// 0 for ACPI 1.0 (QEMU q35), 2 and up for ACPI 2.0+.
    pub revision: u8,
    pub oem_id: [u8; 6],
    /// Physical address of the RSDT (0 if absent).
    pub rsdt: u32,
    /// Physical address of the XSDT; 0 when revision < 2.
    pub xsdt: u64,
}

/// Decodes and checks an RSDP candidate at `addr`.
fn try_rsdp<M: PhysMemory + ?Sized>(mem: &M, addr: PhysAddr) -> Option<Rsdp> {
    let mut buf = [0u8; RSDP_V2_LEN];
    let v1 = buf.get_mut(..RSDP_V1_LEN)?;
    if !mem.read(addr, v1) {
        return None;
    }
    if v1.get(..8)? != RSDP_SIGNATURE || !checksum_ok(v1) {
        return None;
    }
    let revision = read_u8(&buf, 15)?;
    let mut xsdt = 0;
    if revision >= 2 {
        // ACPI 2.0+: the extended checksum covers the 36-byte structure.
        if !mem.read(addr, &mut buf) || !checksum_ok(&buf) {
            return None;
        }
        xsdt = read_u64(&buf, 24)?;
    }
    Some(Rsdp {
        addr,
        revision,
        oem_id: read_array(&buf, 9)?,
        rsdt: read_u32(&buf, 16)?,
        xsdt,
    })
}

/// Finds the RSDP: at `hint` when the boot protocol gave one (PVH does),
/// otherwise by scanning the BIOS area on 16-byte boundaries. Candidates with
/// a bad checksum are skipped, like Linux does. An invalid hint is an error,
/// not a reason to scan: a boot protocol that passes a wrong address is worth
/// reporting; the caller may retry with `None`.
pub fn find_rsdp<M: PhysMemory + ?Sized>(
    mem: &M,
    hint: Option<PhysAddr>,
) -> Result<Rsdp, AcpiError> {
    if let Some(addr) = hint {
        return try_rsdp(mem, addr).ok_or(AcpiError::BadRsdp { addr });
    }
    let mut addr = RSDP_SCAN_START;
    while addr < RSDP_SCAN_END {
        let mut sig = [0u8; 8];
        if mem.read(PhysAddr(addr), &mut sig) && &sig == RSDP_SIGNATURE {
            if let Some(r) = try_rsdp(mem, PhysAddr(addr)) {
                return Ok(r);
            }
        }
        addr += 16;
    }
    Err(AcpiError::NoRsdp)
}

/// Copies the table at `addr` out of memory and validates it completely.
pub fn read_table<M: PhysMemory + ?Sized>(
    mem: &M,
    addr: PhysAddr,
    signature: &[u8; 4],
) -> Result<Vec<u8>, AcpiError> {
    let mut hdr = [0u8; SDT_HEADER_LEN];
    if !mem.read(addr, &mut hdr) {
        return Err(AcpiError::Unreadable {
            addr,
            len: SDT_HEADER_LEN,
        });
    }
    let h = SdtHeader::parse(&hdr).ok_or(AcpiError::Unreadable {
        addr,
        len: SDT_HEADER_LEN,
    })?;
    if &h.signature != signature {
        return Err(AcpiError::BadSignature {
            expected: *signature,
            found: h.signature,
        });
    }
    if (h.length as usize) < SDT_HEADER_LEN || h.length > MAX_TABLE_LEN {
        return Err(AcpiError::BadLength {
            signature: *signature,
            length: h.length,
        });
    }
    let mut data = vec![0u8; h.length as usize];
    if !mem.read(addr, &mut data) {
        return Err(AcpiError::Unreadable {
            addr,
            len: data.len(),
        });
    }
    // Memory may differ from the header read a moment ago; validate the copy.
    SdtHeader::validate(&data, signature, SDT_HEADER_LEN)?;
    Ok(data)
}

/// One table listed by the RSDT/XSDT whose header looked sane at discovery.
/// Its checksum is checked only when it is fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRef {
    pub signature: [u8; 4],
    pub addr: PhysAddr,
    pub length: u32,
}

/// The tables the root table lists.
///
/// Warnings (bad XSDT, unreadable entries, bad checksums) collect in
/// [`AcpiTables::warnings`] for the caller to print; they never stop
/// discovery, because one broken table should not hide the others.
pub struct AcpiTables<'m, M: PhysMemory + ?Sized> {
    mem: &'m M,
    rsdp: Rsdp,
    root: [u8; 4],
    tables: Vec<TableRef>,
    warnings: Vec<String>,
}

impl<'m, M: PhysMemory + ?Sized> AcpiTables<'m, M> {
    /// [`find_rsdp`] followed by [`AcpiTables::new`].
    pub fn discover(mem: &'m M, hint: Option<PhysAddr>) -> Result<Self, AcpiError> {
        let rsdp = find_rsdp(mem, hint)?;
        AcpiTables::new(mem, rsdp)
    }

    /// Reads the root table: the XSDT when the RSDP is ACPI 2.0+ and the
    /// XSDT is valid (it holds 64-bit pointers), else the RSDT. A broken
    /// RSDT (with no usable XSDT) is an error: there is nothing to fall back
    /// to.
    pub fn new(mem: &'m M, rsdp: Rsdp) -> Result<Self, AcpiError> {
        let mut warnings = Vec::new();
        let mut root = None;
        if rsdp.revision >= 2 && rsdp.xsdt != 0 {
            match read_table(mem, PhysAddr(rsdp.xsdt), b"XSDT") {
                Ok(t) => root = Some((*b"XSDT", t, 8usize)),
                Err(e) => warnings.push(format!(
                    "ACPI: XSDT at {:#x} unusable ({e}); using the RSDT",
                    rsdp.xsdt
                )),
            }
        }
        let (root_sig, table, ptr_size) = match root {
            Some(r) => r,
            None => {
                if rsdp.rsdt == 0 {
                    return Err(AcpiError::NoRootTable);
                }
                (
                    *b"RSDT",
                    read_table(mem, PhysAddr(rsdp.rsdt.into()), b"RSDT")?,
                    4,
                )
            }
        };
        let body = table.get(SDT_HEADER_LEN..).unwrap_or(&[]);
        let chunks = body.chunks_exact(ptr_size);
        if !chunks.remainder().is_empty() {
            warnings.push(format!(
                "ACPI: {} has {} stray bytes after its last entry; ignored",
                Sig(&root_sig),
                chunks.remainder().len()
            ));
        }
        let mut tables = Vec::new();
        for c in chunks {
            let addr = if ptr_size == 8 {
                read_u64(c, 0)
            } else {
                read_u32(c, 0).map(u64::from)
            }
            .unwrap_or(0);
            if addr == 0 {
                warnings.push(format!(
                    "ACPI: {} lists a null table; skipped",
                    Sig(&root_sig)
                ));
                continue;
            }
            let mut hdr = [0u8; SDT_HEADER_LEN];
            let h = if mem.read(PhysAddr(addr), &mut hdr) {
                SdtHeader::parse(&hdr)
            } else {
                None
            };
            match h {
                None => warnings.push(format!(
                    "ACPI: {} lists an unreadable table at {addr:#x}; skipped",
                    Sig(&root_sig)
                )),
                Some(h) if (h.length as usize) < SDT_HEADER_LEN || h.length > MAX_TABLE_LEN => {
                    warnings.push(format!(
                        "ACPI: table '{}' at {addr:#x} has implausible length {}; skipped",
                        Sig(&h.signature),
                        h.length
                    ))
                }
                Some(h) => tables.push(TableRef {
                    signature: h.signature,
                    addr: PhysAddr(addr),
                    length: h.length,
                }),
            }
        }
        Ok(AcpiTables {
            mem,
            rsdp,
            root: root_sig,
            tables,
            warnings,
        })
    }

    /// The RSDP discovery started from.
    pub fn rsdp(&self) -> &Rsdp {
        &self.rsdp
    }

    /// `*b"XSDT"` or `*b"RSDT"`: which root table was used.
    pub fn root_signature(&self) -> [u8; 4] {
        self.root
    }

    /// Every table the root table lists, in its order (checksums unchecked).
    pub fn tables(&self) -> &[TableRef] {
        &self.tables
    }

    /// A copy of the first table with this signature whose checksum (and
    /// header) is valid. Invalid ones are skipped with a warning; firmware
    /// sometimes ships a stale duplicate and the next one is the good one.
    pub fn find(&mut self, signature: &[u8; 4]) -> Option<Vec<u8>> {
        let mut i = 0;
        while let Some(t) = self.tables.get(i).copied() {
            i += 1;
            if &t.signature != signature {
                continue;
            }
            match read_table(self.mem, t.addr, signature) {
                Ok(data) => return Some(data),
                Err(e) => self
                    .warnings
                    .push(format!("ACPI: table at {}: {e}; skipped", t.addr)),
            }
        }
        None
    }

    /// Warnings so far, oldest first.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Takes the warnings, leaving none (for printing them as they come).
    pub fn take_warnings(&mut self) -> Vec<String> {
        core::mem::take(&mut self.warnings)
    }
}

/// Walks the variable-length entries (`type: u8, length: u8, ...`) that SRAT
/// and MADT share. Yields `Ok((type, entry bytes))`, or one `Err(warning)`
/// and then stops: an entry shorter than its own 2-byte header (including
/// length 0, which would loop forever) or one that runs past the table end
/// leaves no trustworthy position to continue from.
pub(crate) struct Subtables<'a> {
    table: &'a [u8],
    off: usize,
    name: &'static str,
    done: bool,
}

impl<'a> Subtables<'a> {
    /// Entries of `table` from byte `start` to the table's end.
    pub(crate) fn new(table: &'a [u8], start: usize, name: &'static str) -> Self {
        Subtables {
            table,
            off: start,
            name,
            done: false,
        }
    }
}

impl<'a> Iterator for Subtables<'a> {
    type Item = Result<(u8, &'a [u8]), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.off >= self.table.len() {
            return None;
        }
        let off = self.off;
        let (Some(ty), Some(len)) = (read_u8(self.table, off), read_u8(self.table, off + 1)) else {
            self.done = true;
            return Some(Err(format!(
                "{}: {} stray byte(s) at offset {off}; parsing stopped",
                self.name,
                self.table.len() - off
            )));
        };
        let len = usize::from(len);
        if len < 2 {
            self.done = true;
            return Some(Err(format!(
                "{}: entry type {ty} at offset {off} has length {len}; parsing stopped",
                self.name
            )));
        }
        let Some(entry) = self.table.get(off..off + len) else {
            self.done = true;
            return Some(Err(format!(
                "{}: entry type {ty} at offset {off} (length {len}) runs past the table end ({}); parsing stopped",
                self.name,
                self.table.len()
            )));
        };
        self.off = off + len;
        Some(Ok((ty, entry)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{table, TestMem};

    fn rsdp_v0(rsdt: u32) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(RSDP_SIGNATURE);
        r.push(0);
        r.extend_from_slice(b"BOCHS ");
        r.push(0);
        r.extend_from_slice(&rsdt.to_le_bytes());
        let sum = r.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        r[8] = 0u8.wrapping_sub(sum);
        r
    }

    fn rsdp_v2(rsdt: u32, xsdt: u64) -> Vec<u8> {
        let mut r = rsdp_v0(rsdt);
        r[15] = 2;
        r[8] = 0;
        let sum = r.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        r[8] = 0u8.wrapping_sub(sum);
        r.extend_from_slice(&36u32.to_le_bytes());
        r.extend_from_slice(&xsdt.to_le_bytes());
        r.extend_from_slice(&[0, 0, 0, 0]);
        let sum = r.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        r[32] = 0u8.wrapping_sub(sum);
        r
    }

    fn rsdt(sig: &[u8; 4], ptrs: &[u64], size: usize) -> Vec<u8> {
        let mut body = Vec::new();
        for p in ptrs {
            body.extend_from_slice(&p.to_le_bytes()[..size]);
        }
        table(sig, 1, &body)
    }

    /// A q35-like layout: RSDP in the BIOS area, RSDT listing APIC and SRAT.
    fn q35_mem() -> TestMem {
        let mut m = TestMem::new(0, 0x10_0000);
        m.put(0xF_5A40, &rsdp_v0(0x7000));
        m.put(0x7000, &rsdt(b"RSDT", &[0x8000, 0x9000], 4));
        m.put(0x8000, &table(b"APIC", 1, &[1, 2, 3, 4]));
        m.put(0x9000, &table(b"SRAT", 1, &[0; 12]));
        m
    }

    #[test]
    fn finds_rsdp_by_scan_and_tables_by_signature() {
        let m = q35_mem();
        let mut t = AcpiTables::discover(&m, None).unwrap();
        assert_eq!(t.rsdp().addr, PhysAddr(0xF_5A40));
        assert_eq!(t.rsdp().revision, 0);
        assert_eq!(t.root_signature(), *b"RSDT");
        assert_eq!(t.tables().len(), 2);
        let apic = t.find(b"APIC").unwrap();
        assert_eq!(&apic[..4], b"APIC");
        assert_eq!(apic.len(), 40);
        assert!(t.find(b"SLIT").is_none());
        assert!(t.warnings().is_empty());
    }

    #[test]
    fn hint_is_used_and_checked() {
        let m = q35_mem();
        assert_eq!(
            find_rsdp(&m, Some(PhysAddr(0xF_5A40))).unwrap().rsdt,
            0x7000
        );
        assert_eq!(
            find_rsdp(&m, Some(PhysAddr(0xF_5A50))),
            Err(AcpiError::BadRsdp {
                addr: PhysAddr(0xF_5A50)
            })
        );
    }

    #[test]
    fn rsdp_with_bad_checksum_is_skipped() {
        let mut m = TestMem::new(0, 0x10_0000);
        let mut bad = rsdp_v0(0x7000);
        bad[8] ^= 1;
        m.put(0xE_0000, &bad);
        assert_eq!(find_rsdp(&m, None), Err(AcpiError::NoRsdp));
        m.put(0xF_0000, &rsdp_v0(0x7000));
        assert_eq!(find_rsdp(&m, None).unwrap().addr, PhysAddr(0xF_0000));
        // Misaligned copies are not found.
        let mut m = TestMem::new(0, 0x10_0000);
        m.put(0xE_0008, &rsdp_v0(0x7000));
        assert_eq!(find_rsdp(&m, None), Err(AcpiError::NoRsdp));
    }

    #[test]
    fn rsdp_v2_extended_checksum_is_checked() {
        let mut m = TestMem::new(0, 0x10_0000);
        let mut r = rsdp_v2(0x7000, 0x6000);
        r[32] ^= 0x55;
        m.put(0xE_0000, &r);
        assert_eq!(find_rsdp(&m, None), Err(AcpiError::NoRsdp));
    }

    #[test]
    fn xsdt_preferred_over_rsdt() {
        let mut m = TestMem::new(0, 0x10_0000);
        m.put(0xE_0000, &rsdp_v2(0x7000, 0x6000));
        m.put(0x7000, &rsdt(b"RSDT", &[0x8000], 4));
        m.put(0x6000, &rsdt(b"XSDT", &[0x9000], 8));
        m.put(0x8000, &table(b"SRAT", 1, b"old"));
        m.put(0x9000, &table(b"SRAT", 3, b"new"));
        let mut t = AcpiTables::discover(&m, None).unwrap();
        assert_eq!(t.root_signature(), *b"XSDT");
        assert_eq!(&t.find(b"SRAT").unwrap()[36..], b"new");
    }

    #[test]
    fn bad_xsdt_falls_back_to_rsdt_with_warning() {
        let mut m = TestMem::new(0, 0x10_0000);
        m.put(0xE_0000, &rsdp_v2(0x7000, 0x6000));
        m.put(0x7000, &rsdt(b"RSDT", &[0x8000], 4));
        let mut x = rsdt(b"XSDT", &[0x9000], 8);
        x[20] ^= 1;
        m.put(0x6000, &x);
        m.put(0x8000, &table(b"SRAT", 1, b"old"));
        let mut t = AcpiTables::discover(&m, None).unwrap();
        assert_eq!(t.root_signature(), *b"RSDT");
        assert_eq!(&t.find(b"SRAT").unwrap()[36..], b"old");
        assert_eq!(t.warnings().len(), 1);
        assert!(t.warnings()[0].contains("XSDT"), "{:?}", t.warnings());
    }

    #[test]
    fn rsdt_pointing_to_garbage() {
        // The RSDP's RSDT pointer leads to garbage: discovery fails.
        let mut m = TestMem::new(0, 0x10_0000);
        m.put(0xE_0000, &rsdp_v0(0x7000));
        m.put(0x7000, b"\xde\xad\xbe\xef garbage garbage garbage garbage");
        let e = AcpiTables::discover(&m, None).err().unwrap();
        assert!(matches!(e, AcpiError::BadSignature { .. }), "{e}");
        // An RSDT outside readable memory.
        let mut m = TestMem::new(0, 0x10_0000);
        m.put(0xE_0000, &rsdp_v0(0xFFFF_F000));
        let e = AcpiTables::discover(&m, None).err().unwrap();
        assert!(matches!(e, AcpiError::Unreadable { .. }), "{e}");
        // RSDT entries pointing to garbage are skipped with warnings.
        let mut m = TestMem::new(0, 0x10_0000);
        m.put(0xE_0000, &rsdp_v0(0x7000));
        m.put(
            0x7000,
            &rsdt(b"RSDT", &[0, 0xFFFF_0000, 0x8000, 0x9000, 0xA000], 4),
        );
        m.put(0x8000, &[0xFFu8; 64]);
        let mut huge = table(b"SRAT", 1, &[]);
        huge[4..8].copy_from_slice(&0x4000_0000u32.to_le_bytes());
        m.put(0x9000, &huge);
        m.put(0xA000, &table(b"SLIT", 1, &[0; 8]));
        let mut t = AcpiTables::discover(&m, None).unwrap();
        assert_eq!(t.tables().len(), 1);
        assert!(t.find(b"SLIT").is_some());
        assert!(t.find(b"SRAT").is_none());
        let w = t.take_warnings();
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].contains("null"));
        assert!(w[1].contains("unreadable"));
        assert!(w[2].contains("implausible length"));
        assert!(w[3].contains("'SRAT' at 0x9000 has implausible length"));
        assert!(t.warnings().is_empty());
    }

    #[test]
    fn bad_checksum_table_skipped_for_next_good_one() {
        let mut m = TestMem::new(0, 0x10_0000);
        m.put(0xE_0000, &rsdp_v0(0x7000));
        m.put(0x7000, &rsdt(b"RSDT", &[0x8000, 0x9000], 4));
        let mut bad = table(b"SRAT", 1, b"bad");
        bad[36] ^= 0x10;
        m.put(0x8000, &bad);
        m.put(0x9000, &table(b"SRAT", 1, b"good"));
        let mut t = AcpiTables::discover(&m, None).unwrap();
        assert_eq!(&t.find(b"SRAT").unwrap()[36..], b"good");
        assert_eq!(t.warnings().len(), 1);
        assert!(
            t.warnings()[0].contains("bad checksum"),
            "{:?}",
            t.warnings()
        );
    }

    #[test]
    fn validate_header() {
        let t = table(b"SLIT", 1, &[1, 2, 3]);
        assert!(SdtHeader::validate(&t, b"SLIT", 36).is_ok());
        // A longer buffer is cut at the table's length.
        let mut longer = t.clone();
        longer.extend_from_slice(&[9, 9]);
        assert_eq!(
            SdtHeader::validate(&longer, b"SLIT", 36).unwrap().1.len(),
            39
        );
        assert!(matches!(
            SdtHeader::validate(&t, b"SRAT", 36),
            Err(AcpiError::BadSignature { .. })
        ));
        assert!(matches!(
            SdtHeader::validate(&t, b"SLIT", 44),
            Err(AcpiError::BadLength { .. })
        ));
        assert!(matches!(
            SdtHeader::validate(&t[..38], b"SLIT", 36),
            Err(AcpiError::Truncated { .. })
        ));
        assert!(matches!(
            SdtHeader::validate(&t[..10], b"SLIT", 36),
            Err(AcpiError::Truncated { .. })
        ));
        let mut bad = t.clone();
        bad[37] = 0;
        assert_eq!(
            SdtHeader::validate(&bad, b"SLIT", 36),
            Err(AcpiError::BadChecksum {
                signature: *b"SLIT"
            })
        );
    }

    #[test]
    fn subtables_stop_on_bad_lengths() {
        let data = [0u8, 4, 0, 0, 1, 0, 9, 9];
        let v: Vec<_> = Subtables::new(&data, 0, "T").collect();
        assert_eq!(v.len(), 2);
        assert!(v[0].is_ok());
        assert!(v[1].as_ref().unwrap_err().contains("length 0"));
        let data = [0u8, 4, 0, 0, 1, 8, 9];
        let v: Vec<_> = Subtables::new(&data, 0, "T").collect();
        assert!(v[1].as_ref().unwrap_err().contains("runs past"));
        let data = [0u8, 2, 7];
        let v: Vec<_> = Subtables::new(&data, 0, "T").collect();
        assert!(v[1].as_ref().unwrap_err().contains("stray"));
    }

    proptest::proptest! {
        /// Random corruption of the RSDP, the root table and the tables never
        /// panics discovery or lookup.
        #[test]
        fn corrupted_memory_never_panics(
            muts in proptest::collection::vec((0usize..4, 0usize..48, proptest::prelude::any::<u8>()), 1..6),
            v2 in proptest::prelude::any::<bool>(),
        ) {
            let mut m = TestMem::new(0, 0x10_0000);
            let rsdp = if v2 { rsdp_v2(0x7000, 0x6000) } else { rsdp_v0(0x7000) };
            let mut img = [
                (0xE_0000u64, rsdp),
                (0x6000, rsdt(b"XSDT", &[0x8000, 0x9000], 8)),
                (0x7000, rsdt(b"RSDT", &[0x8000, 0x9000], 4)),
                (0x8000, table(b"SRAT", 1, &[0; 12])),
            ];
            for (which, off, v) in muts {
                let t = &mut img[which].1;
                let n = t.len();
                t[off % n] = v;
            }
            for (addr, t) in &img {
                m.put(*addr, t);
            }
            if let Ok(mut t) = AcpiTables::discover(&m, None) {
                for sig in [b"SRAT", b"SLIT", b"APIC", b"XSDT"] {
                    let _ = t.find(sig);
                }
                let _ = t.take_warnings();
            }
        }
    }

    #[test]
    fn error_messages_are_printable() {
        let e = AcpiError::BadSignature {
            expected: *b"SRAT",
            found: [0, b'A', 0xff, b'B'],
        };
        assert_eq!(
            alloc::string::ToString::to_string(&e),
            "signature '?A?B' where 'SRAT' was expected"
        );
    }
}

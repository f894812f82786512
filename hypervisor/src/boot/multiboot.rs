//! Reading the Multiboot v1 information structure.
//!
//! Everything here comes from the boot loader and is treated as untrusted:
//! every read goes through [`PhysMemory`] and is bounded, counts are capped,
//! and strings stop at a length limit. The parser also records where the
//! loader's own data lies so that none of it is handed to the heap.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::acpi::{PhysAddr, PhysMemory};
use crate::mm::addr::{Maddr, MemRange};

/// Magic value the loader leaves in EAX.
pub const LOADER_MAGIC: u32 = 0x2BAD_B002;

const FLAG_MEM: u32 = 1 << 0;
const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODS: u32 = 1 << 3;
const FLAG_MMAP: u32 = 1 << 6;

/// Size of the part of the info structure this parser reads.
const INFO_SIZE: u64 = 52;
const MODULE_SIZE: u64 = 16;
/// Upper bounds on loader-provided counts and strings.
pub const MAX_MMAP_ENTRIES: usize = 512;
pub const MAX_MODULES: usize = 64;
pub const MAX_STRING: usize = 4096;

/// Type of a memory-map entry (the E820 types).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MemoryKind {
    Ram,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Bad,
    Other(u32),
}

impl MemoryKind {
    fn from_raw(raw: u32) -> MemoryKind {
        match raw {
            1 => MemoryKind::Ram,
            2 => MemoryKind::Reserved,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Bad,
            other => MemoryKind::Other(other),
        }
    }
}

impl fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryKind::Ram => write!(f, "usable"),
            MemoryKind::Reserved => write!(f, "reserved"),
            MemoryKind::AcpiReclaimable => write!(f, "ACPI data"),
            MemoryKind::AcpiNvs => write!(f, "ACPI NVS"),
            MemoryKind::Bad => write!(f, "unusable"),
            MemoryKind::Other(t) => write!(f, "type {t}"),
        }
    }
}

/// One entry of the loader's memory map.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemoryMapEntry {
    pub range: MemRange,
    pub kind: MemoryKind,
}

/// A boot module: a file the loader placed in memory (a guest image, a
/// domain config), with the string that named it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Module {
    pub range: MemRange,
    pub string: String,
}

/// What the hypervisor learns from the loader.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct BootInfo {
    pub memory_map: Vec<MemoryMapEntry>,
    /// The command line without the image path the loader puts first.
    pub cmdline: String,
    pub modules: Vec<Module>,
    /// Memory holding the loader's data (this structure, the map, strings,
    /// the module list and the modules): never given to the heap.
    pub loader_data: Vec<MemRange>,
    /// Problems found and worked around.
    pub warnings: Vec<String>,
}

/// Why the boot information cannot be used at all.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum BootInfoError {
    BadMagic(u32),
    Unreadable(Maddr),
    NoMemoryMap,
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::BadMagic(m) => write!(
                f,
                "not started by a Multiboot loader (EAX = {m:#x}, expected {LOADER_MAGIC:#x})"
            ),
            BootInfoError::Unreadable(a) => write!(f, "boot information at {a} is not readable"),
            BootInfoError::NoMemoryMap => {
                write!(f, "the boot loader passed no usable memory map")
            }
        }
    }
}

fn read_u32(mem: &dyn PhysMemory, addr: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    mem.read(PhysAddr(addr), &mut b)
        .then(|| u32::from_le_bytes(b))
}

fn read_u64(mem: &dyn PhysMemory, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    mem.read(PhysAddr(addr), &mut b)
        .then(|| u64::from_le_bytes(b))
}

/// Reads a NUL-terminated string of at most [`MAX_STRING`] bytes; returns it
/// and the number of bytes it occupies (including the NUL if found).
fn read_string(mem: &dyn PhysMemory, addr: u64) -> Option<(String, u64)> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 64];
    while bytes.len() < MAX_STRING {
        let a = addr.checked_add(bytes.len() as u64)?;
        // Read byte-wise at the end of readable memory, chunk-wise otherwise.
        let n = if mem.read(PhysAddr(a), &mut chunk) {
            chunk.len()
        } else if mem.read(PhysAddr(a), &mut chunk[..1]) {
            1
        } else {
            return None;
        };
        if let Some(nul) = chunk[..n].iter().position(|&c| c == 0) {
            bytes.extend_from_slice(&chunk[..nul]);
            let len = bytes.len() as u64 + 1;
            return Some((String::from_utf8_lossy(&bytes).into_owned(), len));
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    bytes.truncate(MAX_STRING);
    let len = bytes.len() as u64;
    Some((String::from_utf8_lossy(&bytes).into_owned(), len))
}

/// Strips the image path that Multiboot loaders (QEMU, GRUB) put before the
/// command line proper.
fn strip_image_path(raw: &str) -> &str {
    let raw = raw.trim_start();
    match raw.split_once(char::is_whitespace) {
        Some((first, rest)) if !first.contains('=') => rest.trim(),
        None if !raw.contains('=') => "",
        _ => raw.trim(),
    }
}

/// Parses the Multiboot information structure at `info`.
pub fn parse(mem: &dyn PhysMemory, magic: u32, info: Maddr) -> Result<BootInfo, BootInfoError> {
    if magic != LOADER_MAGIC {
        return Err(BootInfoError::BadMagic(magic));
    }
    let base = info.0;
    let field =
        |off: u64| read_u32(mem, base.wrapping_add(off)).ok_or(BootInfoError::Unreadable(info));
    let flags = field(0)?;
    let mut boot = BootInfo::default();
    boot.loader_data
        .push(MemRange::from_base_len(base, INFO_SIZE));

    if flags & FLAG_CMDLINE != 0 {
        let addr = u64::from(field(16)?);
        match read_string(mem, addr) {
            Some((s, len)) => {
                boot.loader_data.push(MemRange::from_base_len(addr, len));
                boot.cmdline = String::from(strip_image_path(&s));
            }
            None => boot
                .warnings
                .push(String::from("command line not readable; ignored")),
        }
    }

    if flags & FLAG_MMAP != 0 {
        let length = u64::from(field(44)?);
        let addr = u64::from(field(48)?);
        boot.loader_data.push(MemRange::from_base_len(addr, length));
        let mut off = 0u64;
        while off < length {
            if boot.memory_map.len() == MAX_MMAP_ENTRIES {
                boot.warnings.push(alloc::format!(
                    "memory map has more than {MAX_MMAP_ENTRIES} entries; the rest is ignored"
                ));
                break;
            }
            let entry = addr + off;
            let (Some(size), Some(base), Some(len), Some(kind)) = (
                read_u32(mem, entry),
                read_u64(mem, entry + 4),
                read_u64(mem, entry + 12),
                read_u32(mem, entry + 20),
            ) else {
                boot.warnings.push(alloc::format!(
                    "memory map entry at {entry:#x} not readable; map truncated"
                ));
                break;
            };
            if size < 20 {
                boot.warnings.push(alloc::format!(
                    "memory map entry at {entry:#x} has size {size} (< 20); map truncated"
                ));
                break;
            }
            if len != 0 {
                boot.memory_map.push(MemoryMapEntry {
                    range: MemRange::from_base_len(base, len),
                    kind: MemoryKind::from_raw(kind),
                });
            }
            off += u64::from(size) + 4;
        }
    } else if flags & FLAG_MEM != 0 {
        // Only the legacy sizes: low memory from 0 and upper memory from 1 MiB.
        let lower = u64::from(field(4)?) * 1024;
        let upper = u64::from(field(8)?) * 1024;
        boot.warnings.push(String::from(
            "no memory map from the loader; using mem_lower/mem_upper",
        ));
        boot.memory_map.push(MemoryMapEntry {
            range: MemRange::from_base_len(0, lower),
            kind: MemoryKind::Ram,
        });
        boot.memory_map.push(MemoryMapEntry {
            range: MemRange::from_base_len(0x10_0000, upper),
            kind: MemoryKind::Ram,
        });
    }
    if !boot
        .memory_map
        .iter()
        .any(|e| e.kind == MemoryKind::Ram && !e.range.is_empty())
    {
        return Err(BootInfoError::NoMemoryMap);
    }
    boot.memory_map.sort_by_key(|e| e.range.start);

    if flags & FLAG_MODS != 0 {
        let count = field(20)? as usize;
        let addr = u64::from(field(24)?);
        if count > MAX_MODULES {
            boot.warnings.push(alloc::format!(
                "{count} boot modules; only the first {MAX_MODULES} are used"
            ));
        }
        let count = count.min(MAX_MODULES);
        boot.loader_data
            .push(MemRange::from_base_len(addr, count as u64 * MODULE_SIZE));
        for i in 0..count as u64 {
            let desc = addr + i * MODULE_SIZE;
            let (Some(start), Some(end), Some(string)) = (
                read_u32(mem, desc),
                read_u32(mem, desc + 4),
                read_u32(mem, desc + 8),
            ) else {
                boot.warnings.push(alloc::format!(
                    "boot module {i} descriptor not readable; skipped"
                ));
                continue;
            };
            if end < start {
                boot.warnings.push(alloc::format!(
                    "boot module {i} ends ({end:#x}) before it starts ({start:#x}); skipped"
                ));
                continue;
            }
            let range = MemRange::new(Maddr(start.into()), Maddr(end.into()));
            let string = match read_string(mem, string.into()) {
                Some((s, len)) => {
                    boot.loader_data
                        .push(MemRange::from_base_len(string.into(), len));
                    s
                }
                None => String::new(),
            };
            boot.loader_data.push(range);
            boot.modules.push(Module { range, string });
        }
    }
    boot.loader_data.retain(|r| !r.is_empty());
    Ok(boot)
}

impl BootInfo {
    /// Usable RAM, sorted and with overlaps merged.
    pub fn usable_ram(&self) -> Vec<MemRange> {
        let mut ram: Vec<MemRange> = self
            .memory_map
            .iter()
            .filter(|e| e.kind == MemoryKind::Ram)
            .map(|e| e.range.pages_within())
            .filter(|r| !r.is_empty())
            .collect();
        ram.sort();
        let mut merged: Vec<MemRange> = Vec::with_capacity(ram.len());
        for r in ram {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        // Memory that the map also calls reserved (overlapping entries) is not usable.
        let mut out = Vec::new();
        for r in merged {
            subtract_into(
                r,
                self.memory_map
                    .iter()
                    .filter(|e| e.kind != MemoryKind::Ram)
                    .map(|e| e.range),
                &mut out,
            );
        }
        out
    }
}

/// Pushes the parts of `range` not covered by any of `holes` onto `out`.
pub fn subtract_into(
    range: MemRange,
    holes: impl Iterator<Item = MemRange> + Clone,
    out: &mut Vec<MemRange>,
) {
    let mut pieces = alloc::vec![range];
    for hole in holes {
        let mut next = Vec::with_capacity(pieces.len() + 1);
        for p in pieces {
            if !p.overlaps(&hole) {
                next.push(p);
                continue;
            }
            let left = MemRange::new(p.start, hole.start.page_floor());
            let right = MemRange::new(hole.end.page_ceil(), p.end);
            if !left.is_empty() {
                next.push(left);
            }
            if !right.is_empty() {
                next.push(right);
            }
        }
        pieces = next;
    }
    out.extend(pieces);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory image for tests: bytes at `base..`.
    struct TestMem {
        base: u64,
        bytes: Vec<u8>,
    }

    impl PhysMemory for TestMem {
        fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> bool {
            let Some(off) = addr.0.checked_sub(self.base) else {
                return false;
            };
            let Ok(off) = usize::try_from(off) else {
                return false;
            };
            match self.bytes.get(off..off + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    const BASE: u64 = 0x9000;

    fn put32(m: &mut TestMem, addr: u64, v: u32) {
        let o = (addr - m.base) as usize;
        m.bytes[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(m: &mut TestMem, addr: u64, v: u64) {
        let o = (addr - m.base) as usize;
        m.bytes[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn put_str(m: &mut TestMem, addr: u64, s: &str) {
        let o = (addr - m.base) as usize;
        m.bytes[o..o + s.len()].copy_from_slice(s.as_bytes());
        m.bytes[o + s.len()] = 0;
    }

    /// A QEMU-like info block: cmdline, a 3-entry map and two modules.
    fn qemu_like() -> TestMem {
        let mut m = TestMem {
            base: BASE,
            bytes: vec![0; 0x2000],
        };
        put32(
            &mut m,
            BASE,
            FLAG_MEM | FLAG_CMDLINE | FLAG_MODS | FLAG_MMAP,
        );
        put32(&mut m, BASE + 16, (BASE + 0x100) as u32);
        put_str(&mut m, BASE + 0x100, "/path/hypervisor.elf numa=fake=2");
        let map = BASE + 0x200;
        let entries: [(u64, u64, u32); 3] = [
            (0, 0x9fc00, 1),
            (0xf0000, 0x10000, 2),
            (0x100000, 0x5ff00000, 1),
        ];
        for (i, (b, l, t)) in entries.iter().enumerate() {
            let e = map + i as u64 * 24;
            put32(&mut m, e, 20);
            put64(&mut m, e + 4, *b);
            put64(&mut m, e + 12, *l);
            put32(&mut m, e + 20, *t);
        }
        put32(&mut m, BASE + 44, 72);
        put32(&mut m, BASE + 48, map as u32);
        let mods = BASE + 0x400;
        put32(&mut m, BASE + 20, 2);
        put32(&mut m, BASE + 24, mods as u32);
        for i in 0..2u64 {
            put32(&mut m, mods + i * 16, 0x20_0000 + i as u32 * 0x1000);
            put32(&mut m, mods + i * 16 + 4, 0x20_0800 + i as u32 * 0x1000);
            put32(&mut m, mods + i * 16 + 8, (BASE + 0x500 + i * 0x40) as u32);
            put_str(
                &mut m,
                BASE + 0x500 + i * 0x40,
                if i == 0 { "guest.elf root" } else { "dom.cfg" },
            );
        }
        m
    }

    #[test]
    fn parses_a_qemu_like_block() {
        let m = qemu_like();
        let b = parse(&m, LOADER_MAGIC, Maddr(BASE)).unwrap();
        assert_eq!(b.cmdline, "numa=fake=2");
        assert_eq!(b.memory_map.len(), 3);
        assert_eq!(b.memory_map[1].kind, MemoryKind::Reserved);
        assert_eq!(b.modules.len(), 2);
        assert_eq!(b.modules[0].string, "guest.elf root");
        assert_eq!(
            b.modules[1].range,
            MemRange::from_base_len(0x20_1000, 0x800)
        );
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        let ram = b.usable_ram();
        assert_eq!(
            ram,
            vec![
                MemRange::from_base_len(0, 0x9f000),
                MemRange::from_base_len(0x100000, 0x5ff00000)
            ]
        );
        assert!(b.loader_data.iter().any(|r| r.contains(Maddr(0x20_1000))));
    }

    #[test]
    fn rejects_bad_magic_and_missing_map() {
        let m = qemu_like();
        assert_eq!(
            parse(&m, 0x1234, Maddr(BASE)),
            Err(BootInfoError::BadMagic(0x1234))
        );
        let mut m = qemu_like();
        put32(&mut m, BASE, 0);
        assert_eq!(
            parse(&m, LOADER_MAGIC, Maddr(BASE)),
            Err(BootInfoError::NoMemoryMap)
        );
        assert!(matches!(
            parse(&m, LOADER_MAGIC, Maddr(0x10)),
            Err(BootInfoError::Unreadable(_))
        ));
    }

    #[test]
    fn survives_broken_maps_and_modules() {
        let mut m = qemu_like();
        put32(&mut m, BASE + 0x200 + 24, 0); // second entry has size 0
        let b = parse(&m, LOADER_MAGIC, Maddr(BASE)).unwrap();
        assert_eq!(b.memory_map.len(), 1);
        assert_eq!(b.warnings.len(), 1);

        let mut m = qemu_like();
        put32(&mut m, BASE + 44, u32::MAX); // map length far past memory
        put32(&mut m, BASE + 20, u32::MAX); // absurd module count
        put32(&mut m, BASE + 0x400 + 4, 0x10); // module 0 ends before it starts
        let b = parse(&m, LOADER_MAGIC, Maddr(BASE)).unwrap();
        assert_eq!(b.memory_map.len(), 3);
        assert!(b.warnings.iter().any(|w| w.contains("before it starts")));
        assert!(b.modules.len() < MAX_MODULES);
    }

    #[test]
    fn image_path_is_stripped() {
        assert_eq!(strip_image_path("/boot/hv.elf numa=off  x"), "numa=off  x");
        assert_eq!(strip_image_path("/boot/hv.elf"), "");
        assert_eq!(strip_image_path("numa=off"), "numa=off");
        assert_eq!(strip_image_path(""), "");
    }

    #[test]
    fn reserved_overlap_is_removed() {
        let mut b = BootInfo::default();
        b.memory_map.push(MemoryMapEntry {
            range: MemRange::from_base_len(0, 0x10_0000),
            kind: MemoryKind::Ram,
        });
        b.memory_map.push(MemoryMapEntry {
            range: MemRange::from_base_len(0x8_0800, 0x100),
            kind: MemoryKind::Reserved,
        });
        assert_eq!(
            b.usable_ram(),
            vec![
                MemRange::from_base_len(0, 0x8_0000),
                MemRange::from_base_len(0x8_1000, 0x7_f000)
            ]
        );
    }
}

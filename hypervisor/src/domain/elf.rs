//! The guest image: parsing and validating an ELF64 executable from a boot
//! module.
//!
//! The guest is linked at fixed virtual addresses (numavisor's guest in the
//! top 2 GiB, like Linux's kernel map); the builder chooses where in
//! guest-physical memory the image goes and maps its segments there at their
//! `p_vaddr`, keeping their relative placement. `p_paddr` is not used. This
//! module only reports what to load where ([`GuestImage::segments`]);
//! copying the bytes and zero-filling the rest of each segment is the
//! builder's job.
//!
//! Accepted: ELF64, little-endian, version 1, `ET_EXEC`, `EM_X86_64`; a
//! program header table inside the image; `PT_LOAD` segments whose file
//! bytes are inside the image, with `p_filesz <= p_memsz`, no address
//! overflow, `p_vaddr % p_align == p_offset % p_align` (a power-of-two
//! alignment, when above 1), not overlapping one another (sharing a page is
//! allowed), at canonical addresses (all in the lower or all in the upper
//! half of the 48-bit space), spanning at most [`MAX_IMAGE_SPAN`]; an
//! entry point in the file-backed part of an executable segment. `PT_NOTE`
//! segments must be inside the image and hold well-formed notes, which are
//! reported ([`GuestImage::notes`]: `pv-abi`'s ABI-version note is one). A
//! `PT_INTERP` (a dynamically linked program) is refused; other segment types
//! (`PT_GNU_STACK`, ...) are ignored, as are section headers and empty
//! `PT_LOAD`s. Segment numbers in messages are program header indexes.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

/// `e_machine` of x86_64.
pub const EM_X86_64: u16 = 62;
/// Most bytes from the lowest to the highest loaded address (256 MiB).
pub const MAX_IMAGE_SPAN: u64 = 256 << 20;
/// Segment flags (`p_flags`).
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
const ET_EXEC: u16 = 2;
/// One past the lower canonical half of a 48-bit address space.
const LOWER_HALF_END: u64 = 1 << 47;
/// Start of the upper canonical half.
const UPPER_HALF_START: u64 = 0xFFFF_8000_0000_0000;

/// One loadable segment: `file_range` of the image goes to `paddr`, and the
/// rest up to `mem_size` is zero-filled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Where it is mapped (and linked).
    pub vaddr: u64,
    /// Its bytes in the image (always in bounds).
    pub file_range: Range<usize>,
    /// Bytes in memory, at least `file_range.len()`.
    pub mem_size: u64,
    /// `PF_R | PF_W | PF_X` bits (others kept as found).
    pub flags: u32,
}

impl Segment {
    /// One past its last virtual byte.
    pub const fn end(&self) -> u64 {
        self.vaddr.saturating_add(self.mem_size)
    }

    /// Its file bytes in `image` (the image it was parsed from).
    pub fn bytes<'a>(&self, image: &'a [u8]) -> Option<&'a [u8]> {
        image.get(self.file_range.clone())
    }
}

/// One ELF note from a `PT_NOTE` segment (such as `pv-abi`'s ABI-version
/// note): ranges of the image, always in bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub n_type: u32,
    /// The name as stored, with its NUL if it has one.
    pub name: Range<usize>,
    pub desc: Range<usize>,
}

impl Note {
    /// `(name, descriptor)` bytes in `image` (the image it was parsed from).
    pub fn bytes<'a>(&self, image: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        Some((image.get(self.name.clone())?, image.get(self.desc.clone())?))
    }
}

/// A validated guest image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestImage {
    /// Virtual address of the first instruction.
    pub entry: u64,
    /// Non-empty loadable segments, in program header order.
    pub segments: Vec<Segment>,
    /// `(lowest virtual address, one past the highest)` over all segments.
    pub span: (u64, u64),
    /// The notes of all `PT_NOTE` segments, in order.
    pub notes: Vec<Note>,
}

/// Why an image was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfError(pub String);

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(message: String) -> Result<T, ElfError> {
    Err(ElfError(message))
}

fn bytes<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    bytes(b, off).map(u16::from_le_bytes)
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    bytes(b, off).map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    bytes(b, off).map(u64::from_le_bytes)
}

/// A name for common `e_machine` values, for messages.
fn machine_name(m: u16) -> &'static str {
    match m {
        2 => "SPARC",
        3 => "i386",
        8 => "MIPS",
        20 => "PowerPC",
        21 => "PowerPC64",
        22 => "S390",
        40 => "ARM",
        43 => "SPARC V9",
        50 => "IA-64",
        62 => "x86_64",
        183 => "AArch64",
        243 => "RISC-V",
        258 => "LoongArch",
        _ => "unknown",
    }
}

struct Phdr {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

fn phdr(b: &[u8], off: usize) -> Option<Phdr> {
    let field = |o: usize| u64_at(b, off.checked_add(o)?);
    Some(Phdr {
        p_type: u32_at(b, off)?,
        flags: u32_at(b, off.checked_add(4)?)?,
        offset: field(8)?,
        vaddr: field(16)?,
        filesz: field(32)?,
        memsz: field(40)?,
        align: field(48)?,
    })
}

impl GuestImage {
    /// Parses and validates `image`; see the module documentation for what
    /// is accepted. Never panics, whatever the bytes.
    pub fn parse(image: &[u8]) -> Result<GuestImage, ElfError> {
        let len = image.len();
        if image.get(..4) != Some(b"\x7fELF".as_slice()) {
            return err("not an ELF file".into());
        }
        let ident = |i: usize| image.get(i).copied();
        let Some(class) = ident(4) else {
            return err(format!(
                "truncated ELF header ({len} bytes; need {EHDR_SIZE})"
            ));
        };
        match class {
            2 => {}
            1 => return err("ELF class 32; need ELF64".into()),
            c => return err(format!("ELF class {c} is invalid; need ELF64")),
        }
        match ident(5) {
            Some(1) => {}
            Some(2) => return err("big-endian ELF; need little-endian".into()),
            Some(d) => {
                return err(format!(
                    "ELF data encoding {d} is invalid; need little-endian"
                ))
            }
            None => {
                return err(format!(
                    "truncated ELF header ({len} bytes; need {EHDR_SIZE})"
                ))
            }
        }
        if len < EHDR_SIZE {
            return err(format!(
                "truncated ELF header ({len} bytes; need {EHDR_SIZE})"
            ));
        }
        let hdr = |o: usize| u16_at(image, o).unwrap_or(0);
        let (Some(e_version), Some(entry), Some(phoff)) =
            (u32_at(image, 20), u64_at(image, 24), u64_at(image, 32))
        else {
            return err(format!(
                "truncated ELF header ({len} bytes; need {EHDR_SIZE})"
            ));
        };
        let ident_version = ident(6).unwrap_or(0);
        if ident_version != 1 || e_version != 1 {
            return err(format!(
                "ELF version {}; need 1",
                if ident_version != 1 {
                    u32::from(ident_version)
                } else {
                    e_version
                }
            ));
        }
        let machine = hdr(18);
        if machine != EM_X86_64 {
            return err(format!(
                "machine {machine} ({}); need x86_64",
                machine_name(machine)
            ));
        }
        match hdr(16) {
            ET_EXEC => {}
            t => {
                let what = match t {
                    1 => " (relocatable object)",
                    3 => " (shared object or position-independent executable)",
                    4 => " (core dump)",
                    _ => "",
                };
                return err(format!(
                    "ELF type {t}{what}; need 2 (executable at a fixed address)"
                ));
            }
        }
        let (ehsize, phentsize, phnum) = (hdr(52), hdr(54), hdr(56));
        if usize::from(ehsize) < EHDR_SIZE {
            return err(format!("ELF header size {ehsize}; need {EHDR_SIZE}"));
        }
        if usize::from(phentsize) < PHDR_SIZE {
            return err(format!(
                "program header size {phentsize}; need at least {PHDR_SIZE}"
            ));
        }
        if phnum == 0 {
            return err("no program headers".into());
        }
        if phnum == 0xffff {
            return err(
                "extended program header numbering (e_phnum 0xffff) is not supported".into(),
            );
        }
        let table = u64::from(phentsize) * u64::from(phnum);
        let table_end = phoff.checked_add(table);
        let (Some(table_end), Ok(phoff)) = (table_end, usize::try_from(phoff)) else {
            return err(format!(
                "program header table {phoff:#x}+{table:#x} beyond the image ({len:#x} bytes)"
            ));
        };
        if table_end > len as u64 {
            return err(format!(
                "program header table {phoff:#x}+{table:#x} beyond the image ({len:#x} bytes)"
            ));
        }

        // (program header index, segment)
        let mut segs: Vec<(usize, Segment)> = Vec::new();
        let mut notes: Vec<Note> = Vec::new();
        for i in 0..usize::from(phnum) {
            let off = i
                .checked_mul(usize::from(phentsize))
                .and_then(|o| o.checked_add(phoff));
            let Some(p) = off.and_then(|o| phdr(image, o)) else {
                return err(format!("program header {i} beyond the image"));
            };
            match p.p_type {
                PT_LOAD | PT_NOTE => {}
                PT_INTERP => {
                    return err(format!(
                        "segment {i} is PT_INTERP: a dynamically linked program; need a static one"
                    ))
                }
                _ => continue,
            }
            let file_end = p.offset.checked_add(p.filesz).filter(|&e| e <= len as u64);
            let (Some(file_end), Ok(start)) = (file_end, usize::try_from(p.offset)) else {
                return err(format!(
                    "segment {i} file range {:#x}+{:#x} beyond the image ({len:#x} bytes)",
                    p.offset, p.filesz
                ));
            };
            if p.p_type == PT_NOTE {
                // `file_end <= len`, so it fits a usize.
                let end = usize::try_from(file_end).unwrap_or(len);
                let align = if p.align == 8 { 8 } else { 4 };
                parse_notes(image, i, start, end, align, &mut notes)?;
                continue;
            }
            if p.filesz > p.memsz {
                return err(format!(
                    "segment {i}: file size {:#x} larger than memory size {:#x}",
                    p.filesz, p.memsz
                ));
            }
            if p.memsz == 0 {
                continue;
            }
            let Some(end) = p.vaddr.checked_add(p.memsz) else {
                return err(format!(
                    "segment {i}: memory range {:#x}+{:#x} overflows",
                    p.vaddr, p.memsz
                ));
            };
            let lower_half = end <= LOWER_HALF_END;
            let upper_half = p.vaddr >= UPPER_HALF_START;
            if !lower_half && !upper_half {
                return err(format!(
                    "segment {i}: [{:#x}-{end:#x}) is not in one canonical half of the \
                     48-bit address space",
                    p.vaddr
                ));
            }
            if p.align > 1 {
                if !p.align.is_power_of_two() {
                    return err(format!(
                        "segment {i}: alignment {:#x} is not a power of two",
                        p.align
                    ));
                }
                if p.vaddr % p.align != p.offset % p.align {
                    return err(format!(
                        "segment {i}: address {:#x} and file offset {:#x} disagree modulo the \
                         alignment {:#x}",
                        p.vaddr, p.offset, p.align
                    ));
                }
            }
            // `file_end <= len`, so it fits a usize.
            let file_end = usize::try_from(file_end).unwrap_or(len);
            segs.push((
                i,
                Segment {
                    vaddr: p.vaddr,
                    file_range: start..file_end,
                    mem_size: p.memsz,
                    flags: p.flags,
                },
            ));
        }
        if segs.is_empty() {
            return err("no loadable segment".into());
        }

        let mut order: Vec<&(usize, Segment)> = segs.iter().collect();
        order.sort_unstable_by_key(|(_, s)| s.vaddr);
        for w in order.windows(2) {
            if let [(ia, a), (ib, b)] = w {
                if a.end() > b.vaddr {
                    return err(format!(
                        "segments {ia} and {ib} overlap: [{:#x}-{:#x}) and [{:#x}-{:#x})",
                        a.vaddr,
                        a.end(),
                        b.vaddr,
                        b.end()
                    ));
                }
            }
        }
        let low = segs.iter().map(|(_, s)| s.vaddr).min().unwrap_or_default();
        let high = segs.iter().map(|(_, s)| s.end()).max().unwrap_or_default();
        if high.saturating_sub(low) > MAX_IMAGE_SPAN {
            return err(format!(
                "image spans {:#x} bytes ([{:#x}-{:#x})); at most {} MiB",
                high.saturating_sub(low),
                low,
                high,
                MAX_IMAGE_SPAN >> 20
            ));
        }

        let holder = segs
            .iter()
            .find(|(_, s)| s.flags & PF_X != 0 && s.vaddr <= entry && entry - s.vaddr < s.mem_size);
        match holder {
            None => {
                return err(format!(
                    "entry point {entry:#x} is not inside an executable segment"
                ))
            }
            Some((i, s)) if entry - s.vaddr >= s.file_range.len() as u64 => {
                return err(format!(
                    "entry point {entry:#x} is in the zero-filled part of segment {i}"
                ))
            }
            Some(_) => {}
        }

        Ok(GuestImage {
            entry,
            segments: segs.into_iter().map(|(_, s)| s).collect(),
            span: (low, high),
            notes,
        })
    }
}

/// The notes in `image[start..end]` (a `PT_NOTE` segment, program header
/// `i`): each `namesz, descsz, type` (`u32`s), then the name and the
/// descriptor, each padded to `align` from the segment's start.
fn parse_notes(
    image: &[u8],
    i: usize,
    start: usize,
    end: usize,
    align: usize,
    out: &mut Vec<Note>,
) -> Result<(), ElfError> {
    let pad = |at: usize| -> Option<usize> {
        let rel = at.checked_sub(start)?.checked_add(align - 1)? & !(align - 1);
        start.checked_add(rel)
    };
    let mut at = start;
    while at < end {
        let bad = || {
            ElfError(format!(
                "segment {i}: malformed note at file offset {at:#x}"
            ))
        };
        let word = |o: usize| u32_at(image, at.checked_add(o)?).map(|w| w as usize);
        let (Some(namesz), Some(descsz), Some(n_type)) = (word(0), word(4), word(8)) else {
            return Err(bad());
        };
        let name_start = at + 12;
        let name_end = name_start.checked_add(namesz).filter(|&e| e <= end);
        let desc_start = name_end.and_then(pad);
        let desc_end = desc_start
            .and_then(|d| d.checked_add(descsz))
            .filter(|&e| e <= end);
        let (Some(name_end), Some(desc_start), Some(desc_end)) = (name_end, desc_start, desc_end)
        else {
            return Err(bad());
        };
        out.push(Note {
            n_type: n_type as u32,
            name: name_start..name_end,
            desc: desc_start..desc_end,
        });
        at = pad(desc_end).ok_or_else(bad)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "elf_tests.rs"]
mod tests;

//! The start-info page and the guest entry contract.
//!
//! # Guest entry contract (ABI 1.0)
//!
//! The hypervisor starts the domain's vCPU 0 at the guest image's ELF entry
//! point (`e_entry`, a virtual address) in this state:
//!
//! - **Mode**: 64-bit long mode at CPL 0: CR0.PE, CR0.PG set; CR4.PAE set;
//!   EFER.LME, EFER.LMA and EFER.NXE set. CS is a flat 64-bit code segment and
//!   DS, ES, SS flat data segments, from a GDT the hypervisor placed in the
//!   boot-data region; the guest loads its own GDT before it relies on one.
//! - **Interrupts**: RFLAGS = `0x2` (IF clear); IDTR limit 0 (no IDT). The
//!   guest installs its IDT before enabling interrupts; an exception before
//!   that triple-faults and ends the domain.
//! - **Registers**: RSI = the [`Gpa`] of the [`StartInfo`] page (page-aligned).
//!   Every other general-purpose register is 0. **RSP is undefined**: the
//!   entry stub must load a stack of its own before any push, call or
//!   exception (as in Xen's PVH entry).
//! - **Paging**: CR3 holds 4-level page tables the hypervisor built inside
//!   the boot-data region. They map, writable and executable:
//!   1. every memory range of [`StartInfo::mem_ranges`] at virtual address =
//!      guest-physical address (an identity map of all of guest memory, low
//!      or not, with 2 MiB pages where alignment allows); this includes the
//!      start-info page, so RSI is also a usable pointer;
//!   2. every `PT_LOAD` segment of the image at its `p_vaddr`, onto the
//!      guest-physical pages it was loaded into. When a segment's `p_vaddr`
//!      range is guest memory, the segment is loaded at Gpa = `p_vaddr`, so
//!      the two mappings agree.
//!
//!   Nothing else is mapped. Every Gpa is below [`GPA_LIMIT`] (2^47), so an
//!   identity map is always possible with 4-level paging.
//! - **Memory in use**: `[image_start, image_end)` holds the loaded image
//!   (`.bss` zeroed); `[boot_data_start, boot_data_end)` holds the start-info
//!   page, the initial page tables and GDT, and the virtual ACPI tables. Both
//!   lie inside `mem_ranges`. The guest keeps them until it has copied
//!   start-info, switched to its own page tables and parsed ACPI; the rest of
//!   `mem_ranges` is free, its contents unspecified.
//! - **Other vCPUs** are not running.
//!
//! # The page
//!
//! [`StartInfo`] fits in one 4 KiB page. Its first 16 bytes (magic, version,
//! size) never move in any ABI version, so any guest can recognize the page
//! and report a version mismatch. `size` lets fields be appended: a guest
//! reads `min(size, size_of::<StartInfo>())` bytes and treats missing fields
//! as zero, which [`StartInfo::from_bytes`] does, then validates.

use core::fmt;
use core::mem::size_of;

use crate::addr::{Gpa, Maddr, PAGE_SIZE};
use crate::error::Error;
use crate::pod::Pod;
use crate::version::{AbiVersion, ABI_MAJOR};
use crate::vnuma::MAX_VNODES;

/// [`StartInfo::magic`]: `b"NUMAVSR1"` read as a little-endian `u64`. It
/// names the page's format family and never changes; the version is in
/// [`StartInfo::version`].
pub const START_INFO_MAGIC: u64 = u64::from_le_bytes(*b"NUMAVSR1");
/// Capacity of [`StartInfo::mem_ranges`].
pub const MAX_MEM_RANGES: usize = 64;
/// Size of [`StartInfo::cmdline`], including the terminating NUL.
pub const CMDLINE_SIZE: usize = 1024;
/// Every guest-physical address the hypervisor hands out is below this:
/// the lower half of a 4-level (48-bit) virtual address space, so guest
/// memory can be identity-mapped.
pub const GPA_LIMIT: u64 = 1 << 47;

abi_struct! {
    /// One contiguous range of guest memory, backed by contiguous machine
    /// memory on one physical node. A vnode's memory is split into several
    /// ranges where its backing machine memory is not contiguous, so `maddr`
    /// tells the guest exactly which bus address a DMA device sees for every
    /// page (there is no IOMMU).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct MemRange(size = 32, align = 8) {
        /// First guest-physical address (page-aligned).
        pub gpa: Gpa => 0,
        /// Length in bytes (page-aligned, non-zero).
        pub size: u64 => 8,
        /// The vnode the range belongs to (below [`StartInfo::nr_vnodes`]).
        pub vnode: u32 => 16,
        /// None defined in 1.0; the guest ignores unknown bits.
        pub flags: u32 => 20,
        /// Machine address of `gpa` (page-aligned); the range is contiguous
        /// in machine memory too.
        pub maddr: Maddr => 24,
    }
}

impl MemRange {
    /// A range of `size` bytes at `gpa` on `vnode`, backed from `maddr`.
    pub const fn new(gpa: Gpa, size: u64, vnode: u32, maddr: Maddr) -> Self {
        MemRange {
            gpa,
            size,
            vnode,
            flags: 0,
            maddr,
        }
    }

    /// One past the last guest-physical address, or `None` on overflow.
    pub const fn end(&self) -> Option<Gpa> {
        self.gpa.checked_add(self.size)
    }

    /// One past the last machine address, or `None` on overflow.
    pub const fn maddr_end(&self) -> Option<Maddr> {
        self.maddr.checked_add(self.size)
    }

    /// Whether `gpa` is inside.
    pub const fn contains(&self, gpa: Gpa) -> bool {
        gpa.0 >= self.gpa.0 && gpa.0 - self.gpa.0 < self.size
    }

    /// The machine address a device sees for `gpa`, if `gpa` is inside.
    pub const fn to_maddr(&self, gpa: Gpa) -> Option<Maddr> {
        if self.contains(gpa) {
            self.maddr.checked_add(gpa.0 - self.gpa.0)
        } else {
            None
        }
    }
}

abi_struct! {
    /// The start-info page (see the [module docs](self) for the entry
    /// contract). Written by the hypervisor, read by the guest.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct StartInfo(size = 3144, align = 8, sized_by = size) {
        /// [`START_INFO_MAGIC`]. Fixed at offset 0 forever.
        pub magic: u64 => 0,
        /// The hypervisor's ABI version. Fixed at offset 8 forever.
        pub version: AbiVersion => 8,
        /// Bytes of this structure the hypervisor wrote (at least
        /// [`StartInfo::SIZE_V1_0`], at most a page). Fixed at offset 12 forever.
        pub size: u32 => 12,
        /// None defined in 1.0; the guest ignores unknown bits.
        pub flags: u32 => 16,
        /// vCPUs of the domain (at least 1); vCPU 0 runs first.
        pub nr_vcpus: u32 => 20,
        /// vnodes of the domain (1 to [`MAX_VNODES`]); memoryless ones have
        /// no range.
        pub nr_vnodes: u32 => 24,
        /// Valid entries of `mem_ranges` (1 to [`MAX_MEM_RANGES`]).
        pub nr_mem_ranges: u32 => 28,
        /// The virtual ACPI RSDP, or [`Gpa::NULL`] if there are no tables
        /// (see [`Features::VIRTUAL_ACPI`](crate::Features::VIRTUAL_ACPI)).
        pub acpi_rsdp: Gpa => 32,
        /// First byte of the loaded image (page-aligned).
        pub image_start: Gpa => 40,
        /// One past the image's last byte, `.bss` included (page-aligned).
        pub image_end: Gpa => 48,
        /// First byte of the boot data: this page, the initial page tables
        /// and GDT, the virtual ACPI tables (page-aligned).
        pub boot_data_start: Gpa => 56,
        /// One past the boot data (page-aligned).
        pub boot_data_end: Gpa => 64,
        /// Guest memory, sorted by `gpa`, not overlapping; first
        /// `nr_mem_ranges` entries valid, the rest zero.
        pub mem_ranges: [MemRange; MAX_MEM_RANGES] => 72,
        /// The guest command line, NUL-terminated (at most
        /// `CMDLINE_SIZE - 1` bytes), UTF-8 by convention.
        pub cmdline: [u8; CMDLINE_SIZE] => 2120,
    }
}

const _: () = assert!(size_of::<StartInfo>() as u64 <= PAGE_SIZE);

/// Why a start-info page was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// Fewer bytes than the fixed header, or than `size` says.
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// The magic is not [`START_INFO_MAGIC`].
    BadMagic {
        /// What was there.
        found: u64,
    },
    /// The major version is not this crate's.
    IncompatibleVersion {
        /// The page's version.
        found: AbiVersion,
    },
    /// `size` below 1.0's size or above a page.
    BadSize {
        /// The page's `size`.
        size: u32,
    },
    /// A count out of its range.
    BadCount {
        /// Which count.
        what: &'static str,
        /// Its value.
        value: u32,
    },
    /// A memory range is malformed.
    BadMemRange {
        /// Its index.
        index: u32,
        /// What is wrong.
        problem: &'static str,
    },
    /// The image or boot-data region is malformed.
    BadRegion {
        /// Which region.
        what: &'static str,
    },
    /// The command line has no terminating NUL.
    UnterminatedCmdline,
}

impl StartInfoError {
    /// The ABI error this maps to: [`Error::Unsupported`] for a version
    /// mismatch, [`Error::InvalidArgument`] otherwise.
    pub const fn error(&self) -> Error {
        match self {
            StartInfoError::IncompatibleVersion { .. } => Error::Unsupported,
            _ => Error::InvalidArgument,
        }
    }
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartInfoError::Truncated { len } => write!(f, "start-info truncated ({len} bytes)"),
            StartInfoError::BadMagic { found } => {
                write!(
                    f,
                    "start-info magic {found:#018x}, expected {START_INFO_MAGIC:#018x}"
                )
            }
            StartInfoError::IncompatibleVersion { found } => write!(
                f,
                "start-info ABI version {found}, this guest speaks {}",
                AbiVersion::CURRENT
            ),
            StartInfoError::BadSize { size } => write!(f, "start-info size {size} out of range"),
            StartInfoError::BadCount { what, value } => {
                write!(f, "start-info {what} = {value} out of range")
            }
            StartInfoError::BadMemRange { index, problem } => {
                write!(f, "start-info memory range {index}: {problem}")
            }
            StartInfoError::BadRegion { what } => write!(f, "start-info {what} region malformed"),
            StartInfoError::UnterminatedCmdline => {
                f.write_str("start-info command line not NUL-terminated")
            }
        }
    }
}

impl StartInfo {
    /// `size_of::<StartInfo>()` in ABI 1.0: the least `size` a guest accepts.
    pub const SIZE_V1_0: u32 = 3144;

    /// An empty page for the hypervisor to fill: magic, current version and
    /// size set, everything else zero.
    pub fn new() -> Self {
        let mut info = Self::zeroed();
        info.magic = START_INFO_MAGIC;
        info.version = AbiVersion::CURRENT;
        info.size = size_of::<Self>() as u32;
        info
    }

    /// Reads and validates a start-info page from untrusted bytes (the page
    /// at RSI). Checks the fixed header first, then copies
    /// `min(size, size_of::<StartInfo>())` bytes (fields a newer hypervisor
    /// appended are ignored) and validates. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StartInfoError> {
        let truncated = StartInfoError::Truncated { len: bytes.len() };
        let magic = u64::read_from_prefix(bytes).ok_or(truncated)?;
        let version = bytes
            .get(8..)
            .and_then(AbiVersion::read_from_prefix)
            .ok_or(truncated)?;
        let size = bytes
            .get(12..)
            .and_then(u32::read_from_prefix)
            .ok_or(truncated)?;
        Self::check_header(magic, version, size)?;
        let n = (size as usize).min(size_of::<Self>());
        let info = Self::read_zero_extended(bytes.get(..n).ok_or(truncated)?);
        info.check()?;
        Ok(info)
    }

    fn check_header(magic: u64, version: AbiVersion, size: u32) -> Result<(), StartInfoError> {
        if magic != START_INFO_MAGIC {
            return Err(StartInfoError::BadMagic { found: magic });
        }
        if version.major != ABI_MAJOR {
            return Err(StartInfoError::IncompatibleVersion { found: version });
        }
        if size < Self::SIZE_V1_0 || size as u64 > PAGE_SIZE {
            return Err(StartInfoError::BadSize { size });
        }
        Ok(())
    }

    /// Checks everything the guest relies on: header, counts, every memory
    /// range (page-aligned, non-empty, no overflow, below [`GPA_LIMIT`],
    /// vnode in range, sorted and not overlapping), the image and boot-data
    /// regions, the command line's NUL.
    pub fn check(&self) -> Result<(), StartInfoError> {
        Self::check_header(self.magic, self.version, self.size)?;
        let count = |what, value: u32, max: u32| {
            if value == 0 || value > max {
                Err(StartInfoError::BadCount { what, value })
            } else {
                Ok(())
            }
        };
        count("nr_vcpus", self.nr_vcpus, u32::MAX)?;
        count("nr_vnodes", self.nr_vnodes, MAX_VNODES)?;
        count("nr_mem_ranges", self.nr_mem_ranges, MAX_MEM_RANGES as u32)?;

        let mut prev_end = 0;
        for (index, r) in self.mem_ranges().iter().enumerate() {
            let bad = |problem| StartInfoError::BadMemRange {
                index: index as u32,
                problem,
            };
            if r.size == 0 {
                return Err(bad("empty"));
            }
            if !r.gpa.is_page_aligned() || !r.maddr.is_page_aligned() || r.size % PAGE_SIZE != 0 {
                return Err(bad("not page-aligned"));
            }
            let end = match r.end() {
                Some(end) if end.0 <= GPA_LIMIT => end.0,
                _ => return Err(bad("ends above GPA_LIMIT")),
            };
            if r.maddr_end().is_none() {
                return Err(bad("machine address overflows"));
            }
            if r.vnode >= self.nr_vnodes {
                return Err(bad("vnode out of range"));
            }
            if r.gpa.0 < prev_end {
                return Err(bad("not sorted or overlaps the previous range"));
            }
            prev_end = end;
        }

        for (what, start, end) in [
            ("image", self.image_start, self.image_end),
            ("boot data", self.boot_data_start, self.boot_data_end),
        ] {
            if start.0 > end.0 || !start.is_page_aligned() || !end.is_page_aligned() {
                return Err(StartInfoError::BadRegion { what });
            }
        }

        if !self.cmdline.contains(&0) {
            return Err(StartInfoError::UnterminatedCmdline);
        }
        Ok(())
    }

    /// [`check`](Self::check) with the ABI error code.
    pub fn validate(&self) -> Result<(), Error> {
        self.check().map_err(|e| e.error())
    }

    /// The valid memory ranges: the first `nr_mem_ranges` entries, clamped to
    /// the array (safe to call on an unvalidated page).
    pub fn mem_ranges(&self) -> &[MemRange] {
        let n = (self.nr_mem_ranges as usize).min(MAX_MEM_RANGES);
        &self.mem_ranges[..n]
    }

    /// The valid memory ranges of `vnode`.
    pub fn vnode_ranges(&self, vnode: u32) -> impl Iterator<Item = &MemRange> + '_ {
        self.mem_ranges().iter().filter(move |r| r.vnode == vnode)
    }

    /// The range holding `gpa`.
    pub fn range_of(&self, gpa: Gpa) -> Option<&MemRange> {
        self.mem_ranges().iter().find(|r| r.contains(gpa))
    }

    /// The machine address a DMA device sees for `gpa`.
    pub fn gpa_to_maddr(&self, gpa: Gpa) -> Option<Maddr> {
        self.range_of(gpa).and_then(|r| r.to_maddr(gpa))
    }

    /// The virtual ACPI RSDP, if there is one.
    pub const fn acpi_rsdp(&self) -> Option<Gpa> {
        self.acpi_rsdp.non_null()
    }

    /// The command line's bytes, up to the first NUL (all of the buffer if
    /// there is none).
    pub fn cmdline_bytes(&self) -> &[u8] {
        let len = self
            .cmdline
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(CMDLINE_SIZE);
        &self.cmdline[..len]
    }

    /// The command line as text: its longest valid UTF-8 prefix, so garbage
    /// never panics and never hides the valid part.
    pub fn cmdline(&self) -> &str {
        let bytes = self.cmdline_bytes();
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => {
                let valid = &bytes[..e.valid_up_to()];
                // `valid_up_to` marks the end of the longest valid prefix.
                core::str::from_utf8(valid).unwrap_or_default()
            }
        }
    }

    /// Sets the command line. [`Error::InvalidArgument`] if it does not fit
    /// with its NUL or contains a NUL.
    pub fn set_cmdline(&mut self, cmdline: &[u8]) -> Result<(), Error> {
        if cmdline.len() >= CMDLINE_SIZE || cmdline.contains(&0) {
            return Err(Error::InvalidArgument);
        }
        self.cmdline = [0; CMDLINE_SIZE];
        self.cmdline[..cmdline.len()].copy_from_slice(cmdline);
        Ok(())
    }

    /// Appends a memory range. [`Error::BufferTooSmall`] when all
    /// [`MAX_MEM_RANGES`] are used.
    pub fn push_mem_range(&mut self, range: MemRange) -> Result<(), Error> {
        let n = self.nr_mem_ranges as usize;
        let slot = self.mem_ranges.get_mut(n).ok_or(Error::BufferTooSmall)?;
        *slot = range;
        self.nr_mem_ranges += 1;
        Ok(())
    }
}

impl Default for StartInfo {
    fn default() -> Self {
        Self::new()
    }
}

/// Header, counts, valid ranges and command line (not the empty slots).
impl fmt::Debug for StartInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartInfo")
            .field("magic", &format_args!("{:#018x}", self.magic))
            .field("version", &self.version)
            .field("size", &self.size)
            .field("flags", &self.flags)
            .field("nr_vcpus", &self.nr_vcpus)
            .field("nr_vnodes", &self.nr_vnodes)
            .field("nr_mem_ranges", &self.nr_mem_ranges)
            .field("acpi_rsdp", &self.acpi_rsdp)
            .field("image", &(self.image_start..self.image_end))
            .field("boot_data", &(self.boot_data_start..self.boot_data_end))
            .field("mem_ranges", &self.mem_ranges())
            .field("cmdline", &self.cmdline())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;
    use std::vec::Vec;

    fn sample() -> StartInfo {
        let mut s = StartInfo::new();
        s.nr_vcpus = 4;
        s.nr_vnodes = 3;
        s.acpi_rsdp = Gpa(0xe_0000);
        s.image_start = Gpa(0x20_0000);
        s.image_end = Gpa(0x40_0000);
        s.boot_data_start = Gpa(0x40_0000);
        s.boot_data_end = Gpa(0x41_0000);
        // vnode 0 split where its machine memory is not contiguous; vnode 1
        // above 4 GiB; vnode 2 memoryless.
        s.push_mem_range(MemRange::new(Gpa(0), 0x80_0000, 0, Maddr(0x100_0000)))
            .unwrap();
        s.push_mem_range(MemRange::new(
            Gpa(0x80_0000),
            0x80_0000,
            0,
            Maddr(0x300_0000),
        ))
        .unwrap();
        s.push_mem_range(MemRange::new(
            Gpa(0x1_0000_0000),
            0x100_0000,
            1,
            Maddr(0x2_0000_0000),
        ))
        .unwrap();
        s.set_cmdline(b"console=hv ktest=all").unwrap();
        s
    }

    /// A deterministic xorshift generator: no dependencies.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn layout() {
        assert_eq!(size_of::<MemRange>(), 32);
        assert_eq!(offset_of!(MemRange, size), 8);
        assert_eq!(offset_of!(MemRange, vnode), 16);
        assert_eq!(offset_of!(MemRange, flags), 20);
        assert_eq!(offset_of!(MemRange, maddr), 24);
        assert_eq!(size_of::<StartInfo>(), 3144);
        assert_eq!(offset_of!(StartInfo, magic), 0);
        assert_eq!(offset_of!(StartInfo, version), 8);
        assert_eq!(offset_of!(StartInfo, size), 12);
        assert_eq!(offset_of!(StartInfo, nr_mem_ranges), 28);
        assert_eq!(offset_of!(StartInfo, acpi_rsdp), 32);
        assert_eq!(offset_of!(StartInfo, mem_ranges), 72);
        assert_eq!(offset_of!(StartInfo, cmdline), 2120);
        assert_eq!(START_INFO_MAGIC.to_le_bytes(), *b"NUMAVSR1");
    }

    #[test]
    fn round_trip_and_accessors() {
        let s = sample();
        assert_eq!(s.check(), Ok(()));
        let back = StartInfo::from_bytes(s.as_bytes()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.cmdline(), "console=hv ktest=all");
        assert_eq!(back.mem_ranges().len(), 3);
        assert_eq!(back.vnode_ranges(0).count(), 2);
        assert_eq!(back.vnode_ranges(2).count(), 0);
        assert_eq!(back.gpa_to_maddr(Gpa(0x1234)), Some(Maddr(0x100_1234)));
        assert_eq!(back.gpa_to_maddr(Gpa(0x80_0010)), Some(Maddr(0x300_0010)));
        assert_eq!(
            back.gpa_to_maddr(Gpa(0x1_0000_0008)),
            Some(Maddr(0x2_0000_0008))
        );
        assert_eq!(back.gpa_to_maddr(Gpa(0x100_0000)), None);
        assert_eq!(back.acpi_rsdp(), Some(Gpa(0xe_0000)));
        // The page fits in a page, with room to spare.
        let mut page = [0u8; 4096];
        page[..size_of::<StartInfo>()].copy_from_slice(s.as_bytes());
        assert_eq!(StartInfo::from_bytes(&page), Ok(s));
    }

    #[test]
    fn size_field_handles_older_and_newer_writers() {
        let s = sample();
        // A newer hypervisor appended fields: bytes past our size are ignored.
        let mut page = [0xaau8; 4096];
        page[..size_of::<StartInfo>()].copy_from_slice(s.as_bytes());
        page[12..16].copy_from_slice(&4000u32.to_le_bytes());
        let back = StartInfo::from_bytes(&page).unwrap();
        assert_eq!(back.size, 4000);
        assert_eq!(back.mem_ranges(), s.mem_ranges());
        // Not more than a page, not less than 1.0's size, not more than given.
        page[12..16].copy_from_slice(&4097u32.to_le_bytes());
        assert_eq!(
            StartInfo::from_bytes(&page),
            Err(StartInfoError::BadSize { size: 4097 })
        );
        page[12..16].copy_from_slice(&3143u32.to_le_bytes());
        assert_eq!(
            StartInfo::from_bytes(&page),
            Err(StartInfoError::BadSize { size: 3143 })
        );
        let bytes = s.as_bytes();
        assert!(matches!(
            StartInfo::from_bytes(&bytes[..3000]),
            Err(StartInfoError::Truncated { len: 3000 })
        ));
        assert!(matches!(
            StartInfo::from_bytes(&bytes[..10]),
            Err(StartInfoError::Truncated { len: 10 })
        ));
    }

    #[test]
    fn validation_rejects_bad_pages() {
        type Edit = fn(&mut StartInfo);
        let cases: [(Edit, &str); 16] = [
            (|s| s.magic = 0, "magic"),
            (|s| s.version = AbiVersion::new(ABI_MAJOR + 1, 0), "version"),
            (|s| s.nr_vcpus = 0, "vcpus"),
            (|s| s.nr_vnodes = 0, "vnodes"),
            (|s| s.nr_vnodes = MAX_VNODES + 1, "too many vnodes"),
            (|s| s.nr_mem_ranges = 0, "no ranges"),
            (|s| s.nr_mem_ranges = 65, "too many ranges"),
            (|s| s.mem_ranges[1].size = 0, "empty range"),
            (|s| s.mem_ranges[1].gpa = Gpa(0x80_0800), "unaligned gpa"),
            (|s| s.mem_ranges[1].maddr = Maddr(0x10), "unaligned maddr"),
            (|s| s.mem_ranges[1].vnode = 3, "vnode out of range"),
            (|s| s.mem_ranges[1].gpa = Gpa(0x40_0000), "overlap"),
            (|s| s.mem_ranges[2].gpa = Gpa(GPA_LIMIT), "above limit"),
            (|s| s.mem_ranges[2].maddr = Maddr(!0xfff), "maddr overflow"),
            (|s| s.image_end = Gpa(0x10_0000), "image backwards"),
            (|s| s.cmdline = [b'x'; CMDLINE_SIZE], "cmdline"),
        ];
        for (edit, what) in cases {
            let mut s = sample();
            edit(&mut s);
            assert!(s.check().is_err(), "{what} accepted");
            assert!(
                StartInfo::from_bytes(s.as_bytes()).is_err(),
                "{what} accepted"
            );
        }
        let mut s = sample();
        s.version = AbiVersion::new(ABI_MAJOR + 1, 0);
        assert_eq!(s.validate(), Err(Error::Unsupported));
        s.version = AbiVersion::new(ABI_MAJOR, 9);
        assert_eq!(s.validate(), Ok(()));
        s.magic = 1;
        assert_eq!(s.validate(), Err(Error::InvalidArgument));
    }

    #[test]
    fn cmdline_never_panics() {
        let mut s = sample();
        s.cmdline = [0xff; CMDLINE_SIZE];
        assert_eq!(s.cmdline(), "");
        assert_eq!(s.cmdline_bytes().len(), CMDLINE_SIZE);
        s.cmdline[..6].copy_from_slice(b"abc\xe2\x82d");
        assert_eq!(s.cmdline(), "abc");
        s.cmdline[..8].copy_from_slice(b"caf\xc3\xa9\0zz");
        assert_eq!(s.cmdline(), "café");
        assert_eq!(
            s.set_cmdline(&[b'a'; CMDLINE_SIZE]),
            Err(Error::InvalidArgument)
        );
        assert_eq!(s.set_cmdline(b"a\0b"), Err(Error::InvalidArgument));
        assert_eq!(s.set_cmdline(&[b'a'; CMDLINE_SIZE - 1]), Ok(()));
        assert_eq!(s.cmdline().len(), CMDLINE_SIZE - 1);
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn push_stops_at_capacity() {
        let mut s = StartInfo::new();
        for i in 0..MAX_MEM_RANGES as u64 {
            s.push_mem_range(MemRange::new(Gpa(i << 20), 1 << 20, 0, Maddr(i << 20)))
                .unwrap();
        }
        let extra = MemRange::new(Gpa(1 << 40), 1 << 20, 0, Maddr(0));
        assert_eq!(s.push_mem_range(extra), Err(Error::BufferTooSmall));
        assert_eq!(s.mem_ranges().len(), MAX_MEM_RANGES);
        s.nr_mem_ranges = u32::MAX;
        assert_eq!(s.mem_ranges().len(), MAX_MEM_RANGES);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for round in 0..2000 {
            let len = (rng.next() % 4200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Half the time, give the header a chance so deeper checks run.
            if round % 2 == 0 && len >= 16 {
                bytes[..8].copy_from_slice(&START_INFO_MAGIC.to_le_bytes());
                bytes[8..12].copy_from_slice(&[1, 0, 0, 0]);
                bytes[12..16].copy_from_slice(&3144u32.to_le_bytes());
            }
            if let Ok(s) = StartInfo::from_bytes(&bytes) {
                accepted += 1;
                assert_eq!(s.check(), Ok(()));
            }
            let _ = MemRange::read_from_prefix(&bytes);
            let _ = StartInfo::read_from_prefix(&bytes).map(|s| {
                let _ = (s.cmdline(), s.mem_ranges(), s.gpa_to_maddr(Gpa(rng.next())));
                s.validate()
            });
        }
        // Random ranges essentially never form a valid page.
        assert_eq!(accepted, 0);
    }

    #[test]
    fn mutated_valid_pages_never_panic() {
        let s = sample();
        let mut rng = Rng(42);
        for _ in 0..5000 {
            let mut bytes = s.as_bytes().to_vec();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() % bytes.len() as u64) as usize;
                bytes[i] = rng.next() as u8;
            }
            if let Ok(s) = StartInfo::from_bytes(&bytes) {
                assert_eq!(s.check(), Ok(()));
                assert!(s.mem_ranges().windows(2).all(|w| w[0].gpa < w[1].gpa));
                let _ = s.cmdline();
            }
        }
    }
}

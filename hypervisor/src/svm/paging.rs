//! Four-level x86-64 page tables, built through an abstract table memory.
//!
//! The same builder makes a domain's nested page tables (guest-physical to
//! machine, tables in hypervisor memory) and the guest's initial page tables
//! (guest-virtual to guest-physical, tables inside guest memory). It maps with
//! 2 MiB pages wherever source, destination and length allow, 4 KiB pages
//! otherwise, and refuses to map an address twice.

use alloc::vec::Vec;
use core::fmt;

/// Entry bits.
pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
/// Nested walks are user accesses: every NPT entry needs this bit.
pub const USER: u64 = 1 << 2;
/// Page-level write-through and cache-disable: with the default PAT, both
/// set make a leaf uncacheable (device memory).
pub const PWT: u64 = 1 << 3;
pub const PCD: u64 = 1 << 4;
pub const HUGE: u64 = 1 << 7;
/// No-execute.
pub const NX: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

const SIZE_4K: u64 = 1 << 12;
const SIZE_2M: u64 = 1 << 21;
/// One past the lower canonical half of the 48-bit virtual space.
pub const LOWER_HALF_END: u64 = 1 << 47;
/// Start of the upper canonical half.
pub const UPPER_HALF_START: u64 = 0xFFFF_8000_0000_0000;
/// One past the highest address an entry can point to (52-bit physical).
pub const TARGET_LIMIT: u64 = 1 << 52;

/// Whether `[va, va + len)` lies in one canonical half. (Nested tables
/// translate guest-physical addresses, which all sit in the lower half.)
fn canonical_range(va: u64, len: u64) -> bool {
    match va.checked_add(len) {
        Some(end) => end <= LOWER_HALF_END || va >= UPPER_HALF_START,
        // Ending exactly at 2^64 is fine in the upper half.
        None => va >= UPPER_HALF_START && va.wrapping_add(len) == 0,
    }
}

/// Where the tables live. Addresses are in the tables' own address space
/// (machine addresses for nested tables, guest-physical for guest tables).
pub trait TableMemory {
    /// A zeroed, 4 KiB-aligned page for a new table, or `None` when out of memory.
    fn alloc_table(&mut self) -> Option<u64>;
    /// Reads entry `index` (0..512) of the table at `table`.
    fn read(&self, table: u64, index: usize) -> u64;
    /// Writes entry `index` (0..512) of the table at `table`.
    fn write(&mut self, table: u64, index: usize, entry: u64);
}

/// Why a mapping was refused; nothing is half-mapped on error except table
/// pages already allocated, which the owner frees with the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Addresses or length not 4 KiB-aligned, a virtual range that is not
    /// canonical, or a target beyond 52 bits.
    Misaligned,
    /// Part of the range is already mapped.
    AlreadyMapped(u64),
    /// No memory for a table page.
    OutOfMemory,
    /// The page is not mapped (or not by a leaf this operation handles).
    NotMapped(u64),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Misaligned => {
                write!(f, "range not page-aligned, not canonical or beyond 52 bits")
            }
            MapError::AlreadyMapped(a) => write!(f, "{a:#x} is already mapped"),
            MapError::OutOfMemory => write!(f, "out of memory for page tables"),
            MapError::NotMapped(a) => write!(f, "{a:#x} is not mapped by a 4 KiB or 2 MiB page"),
        }
    }
}

/// A page-table hierarchy rooted at one PML4.
pub struct PageTables<M: TableMemory> {
    root: u64,
    mem: M,
    /// Bits set in every entry (PRESENT | WRITABLE, plus USER for NPT).
    entry_flags: u64,
    /// Every table page, root first, for teardown.
    tables: Vec<u64>,
    /// Leaves by size, for reports and tests.
    pub pages_4k: u64,
    pub pages_2m: u64,
}

impl<M: TableMemory> PageTables<M> {
    /// Empty tables (a zeroed PML4).
    pub fn new(mut mem: M, entry_flags: u64) -> Result<Self, MapError> {
        let root = mem.alloc_table().ok_or(MapError::OutOfMemory)?;
        Ok(PageTables {
            root,
            mem,
            entry_flags: entry_flags | PRESENT,
            tables: alloc::vec![root],
            pages_4k: 0,
            pages_2m: 0,
        })
    }

    /// Existing tables rooted at `root` (for walking them; new tables are
    /// still allocated from `mem` if something is mapped).
    pub fn from_root(mem: M, root: u64, entry_flags: u64) -> Self {
        PageTables {
            root,
            mem,
            entry_flags: entry_flags | PRESENT,
            tables: alloc::vec![root],
            pages_4k: 0,
            pages_2m: 0,
        }
    }

    /// The PML4's address (what goes into CR3 or the VMCB's nested CR3).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Every table page, for freeing them.
    pub fn table_pages(&self) -> &[u64] {
        &self.tables
    }

    pub fn memory(&self) -> &M {
        &self.mem
    }

    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.mem
    }

    /// Gives the table memory back (the caller frees `table_pages`).
    pub fn into_memory(self) -> (M, Vec<u64>) {
        (self.mem, self.tables)
    }

    fn index(addr: u64, level: u32) -> usize {
        ((addr >> (12 + 9 * level)) & 511) as usize
    }

    /// The table one level below `entry` at (`table`, `index`), created if absent.
    fn next_table(&mut self, table: u64, index: usize, at: u64) -> Result<u64, MapError> {
        let e = self.mem.read(table, index);
        if e & PRESENT != 0 {
            if e & HUGE != 0 {
                return Err(MapError::AlreadyMapped(at));
            }
            return Ok(e & ADDR_MASK);
        }
        let t = self.mem.alloc_table().ok_or(MapError::OutOfMemory)?;
        self.tables.push(t);
        self.mem.write(table, index, t | self.entry_flags);
        Ok(t)
    }

    /// Maps `[va, va + len)` to `[pa, pa + len)`.
    pub fn map(&mut self, va: u64, pa: u64, len: u64) -> Result<(), MapError> {
        self.map_with(va, pa, len, 0)
    }

    /// [`map`](Self::map), with `extra` bits (such as [`PWT`] | [`PCD`] for
    /// device memory) in every leaf.
    pub fn map_with(&mut self, va: u64, pa: u64, len: u64, extra: u64) -> Result<(), MapError> {
        let aligned = (va | pa | len).is_multiple_of(SIZE_4K);
        let in_range =
            canonical_range(va, len) && pa.checked_add(len).is_some_and(|e| e <= TARGET_LIMIT);
        if !aligned || !in_range {
            return Err(MapError::Misaligned);
        }
        let mut off = 0;
        while off < len {
            let (v, p) = (va.wrapping_add(off), pa + off);
            let huge =
                v.is_multiple_of(SIZE_2M) && p.is_multiple_of(SIZE_2M) && len - off >= SIZE_2M;
            let l3 = self.next_table(self.root, Self::index(v, 3), v)?;
            let l2 = self.next_table(l3, Self::index(v, 2), v)?;
            if huge {
                let i = Self::index(v, 1);
                if self.mem.read(l2, i) & PRESENT != 0 {
                    return Err(MapError::AlreadyMapped(v));
                }
                self.mem.write(l2, i, p | self.entry_flags | extra | HUGE);
                self.pages_2m += 1;
                off += SIZE_2M;
            } else {
                let l1 = self.next_table(l2, Self::index(v, 1), v)?;
                let i = Self::index(v, 0);
                if self.mem.read(l1, i) & PRESENT != 0 {
                    return Err(MapError::AlreadyMapped(v));
                }
                self.mem.write(l1, i, p | self.entry_flags | extra);
                self.pages_4k += 1;
                off += SIZE_4K;
            }
        }
        Ok(())
    }

    /// The page directory entry slot `(table, index)` covering `va`, if
    /// the upper levels are present and not huge.
    fn pd_slot(&self, va: u64) -> Option<(u64, usize)> {
        let e3 = self.mem.read(self.root, Self::index(va, 3));
        if e3 & PRESENT == 0 || e3 & HUGE != 0 {
            return None;
        }
        let l3 = e3 & ADDR_MASK;
        let e2 = self.mem.read(l3, Self::index(va, 2));
        if e2 & PRESENT == 0 || e2 & HUGE != 0 {
            return None;
        }
        Some((e2 & ADDR_MASK, Self::index(va, 1)))
    }

    /// Makes every page of `[va, va + len)` mapped by a 4 KiB leaf: a 2 MiB
    /// page in the range becomes a page table with the same 512
    /// translations and flags. Translations never change, so this is safe
    /// on live tables (no TLB flush needed) and leaves them valid when it
    /// fails midway ([`MapError::OutOfMemory`]). [`MapError::NotMapped`] if
    /// a page of the range is not mapped (nothing is split then).
    pub fn split_to_4k(&mut self, va: u64, len: u64) -> Result<(), MapError> {
        if !(va | len).is_multiple_of(SIZE_4K) || !canonical_range(va, len) {
            return Err(MapError::Misaligned);
        }
        let end = va.wrapping_add(len);
        // Check first, so that a hole is reported before anything changes.
        let mut v = va;
        while v != end {
            if self.translate(v).is_none() {
                return Err(MapError::NotMapped(v));
            }
            v = v.wrapping_add(SIZE_4K);
        }
        let mut v = va;
        while v != end {
            let (l2, i) = self.pd_slot(v).ok_or(MapError::NotMapped(v))?;
            let e = self.mem.read(l2, i);
            if e & HUGE != 0 {
                let t = self.mem.alloc_table().ok_or(MapError::OutOfMemory)?;
                self.tables.push(t);
                let base = e & ADDR_MASK & !(SIZE_2M - 1);
                let flags = (e & 0xFFF & !HUGE) | (e & NX);
                for k in 0..512u64 {
                    self.mem.write(t, k as usize, (base + k * SIZE_4K) | flags);
                }
                self.mem.write(l2, i, t | self.entry_flags);
                self.pages_2m -= 1;
                self.pages_4k += 512;
            }
            v = (v & !(SIZE_2M - 1)).wrapping_add(SIZE_2M);
            if end.wrapping_sub(va) <= v.wrapping_sub(va) {
                break;
            }
        }
        Ok(())
    }

    /// Points the 4 KiB leaf that maps `va` at `pa`, keeping its flags. The
    /// page must be mapped by a 4 KiB leaf ([`split_to_4k`](Self::split_to_4k));
    /// nothing changes on error. The caller flushes the TLB.
    pub fn remap_4k(&mut self, va: u64, pa: u64) -> Result<(), MapError> {
        if !(va | pa).is_multiple_of(SIZE_4K) || !canonical_range(va, SIZE_4K) || pa >= TARGET_LIMIT
        {
            return Err(MapError::Misaligned);
        }
        let (l2, i) = self.pd_slot(va).ok_or(MapError::NotMapped(va))?;
        let e2 = self.mem.read(l2, i);
        if e2 & PRESENT == 0 || e2 & HUGE != 0 {
            return Err(MapError::NotMapped(va));
        }
        let l1 = e2 & ADDR_MASK;
        let j = Self::index(va, 0);
        let e = self.mem.read(l1, j);
        if e & PRESENT == 0 {
            return Err(MapError::NotMapped(va));
        }
        self.mem.write(l1, j, pa | (e & !ADDR_MASK));
        Ok(())
    }

    /// Where `va` maps to, walking the tables as the hardware does.
    pub fn translate(&self, va: u64) -> Option<u64> {
        if !canonical_range(va, 1) {
            return None;
        }
        let mut table = self.root;
        for level in (0..4).rev() {
            let e = self.mem.read(table, Self::index(va, level));
            if e & PRESENT == 0 {
                return None;
            }
            let page = 1u64 << (12 + 9 * level);
            if level == 0 || (e & HUGE != 0 && level <= 2) {
                return Some((e & ADDR_MASK & !(page - 1)) + (va & (page - 1)));
            }
            table = e & ADDR_MASK;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Tables in a map from address to 512 entries.
    #[derive(Default)]
    struct FakeMemory {
        next: u64,
        pages: BTreeMap<u64, Vec<u64>>,
        limit: usize,
    }

    impl TableMemory for FakeMemory {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.limit != 0 && self.pages.len() >= self.limit {
                return None;
            }
            self.next += 0x1000;
            self.pages.insert(self.next, vec![0; 512]);
            Some(self.next)
        }
        fn read(&self, table: u64, index: usize) -> u64 {
            self.pages[&table][index]
        }
        fn write(&mut self, table: u64, index: usize, entry: u64) {
            self.pages.get_mut(&table).unwrap()[index] = entry;
        }
    }

    #[test]
    fn maps_with_2m_pages_where_aligned() {
        let mut pt = PageTables::new(FakeMemory::default(), WRITABLE | USER).unwrap();
        pt.map(0x20_0000, 0x4000_0000, 0x40_0000).unwrap();
        assert_eq!((pt.pages_2m, pt.pages_4k), (2, 0));
        pt.map(0x1000, 0x9000, 0x3000).unwrap();
        assert_eq!(pt.pages_4k, 3);
        // Misaligned relative to each other: 4 KiB pages only.
        pt.map(0x100_0000, 0x1234_5000, 0x20_0000).unwrap();
        assert_eq!(pt.pages_4k, 3 + 512);
        assert_eq!(pt.translate(0x20_1234), Some(0x4000_1234));
        assert_eq!(pt.translate(0x3f_ffff), Some(0x401f_ffff));
        assert_eq!(pt.translate(0x2abc), Some(0xaabc));
        assert_eq!(pt.translate(0x100_0010), Some(0x1234_5010));
        assert_eq!(pt.translate(0x0), None);
        assert_eq!(pt.translate(0x60_0000), None);
        // Every entry carries the USER bit.
        for page in pt.memory().pages.values() {
            for e in page.iter().filter(|e| **e & PRESENT != 0) {
                assert_ne!(e & USER, 0);
            }
        }
    }

    #[test]
    fn refuses_double_and_bad_mappings() {
        let mut pt = PageTables::new(FakeMemory::default(), WRITABLE).unwrap();
        pt.map(0x20_0000, 0x20_0000, 0x20_0000).unwrap();
        assert_eq!(
            pt.map(0x20_1000, 0x1000, 0x1000),
            Err(MapError::AlreadyMapped(0x20_1000))
        );
        assert_eq!(
            pt.map(0x20_0000, 0x0, 0x20_0000),
            Err(MapError::AlreadyMapped(0x20_0000))
        );
        assert_eq!(pt.map(0x1001, 0x1000, 0x1000), Err(MapError::Misaligned));
        // The very top page of the upper half is canonical.
        assert_eq!(pt.map(u64::MAX - 0xfff, 0, 0x1000), Ok(()));
        assert_eq!(pt.map(1 << 47, 0, 0x1000), Err(MapError::Misaligned));
        assert_eq!(
            pt.map((1 << 47) - 0x1000, 0, 0x2000),
            Err(MapError::Misaligned)
        );
        assert_eq!(pt.map(0x1000, 1 << 52, 0x1000), Err(MapError::Misaligned));
        // The upper half (a kernel linked at -2 GiB) maps and translates.
        pt.map(0xFFFF_FFFF_8020_0000, 0x40_0000, 0x20_0000).unwrap();
        assert_eq!(pt.translate(0xFFFF_FFFF_8020_0123), Some(0x40_0123));
        assert_eq!(pt.translate(0xFFFF_0000_0000_0000), None);
    }

    #[test]
    fn split_and_remap() {
        let mut pt = PageTables::new(FakeMemory::default(), WRITABLE | USER).unwrap();
        pt.map(0x20_0000, 0x4000_0000, 0x40_0000).unwrap();
        pt.map_with(0x100_0000, 0xfe00_0000, 0x1000, PWT | PCD)
            .unwrap();
        assert_eq!((pt.pages_2m, pt.pages_4k), (2, 1));
        // A hole: refused before anything changes.
        assert_eq!(
            pt.split_to_4k(0x5f_f000, 0x2000),
            Err(MapError::NotMapped(0x60_0000))
        );
        assert_eq!((pt.pages_2m, pt.pages_4k), (2, 1));
        assert_eq!(
            pt.remap_4k(0x20_1000, 0x1000),
            Err(MapError::NotMapped(0x20_1000)),
            "a 2 MiB leaf is not remapped"
        );
        // Split the first 2 MiB page: same translations.
        pt.split_to_4k(0x20_1000, 0x2000).unwrap();
        assert_eq!((pt.pages_2m, pt.pages_4k), (1, 513));
        for off in [0, 0x1234, 0x1f_f000] {
            assert_eq!(pt.translate(0x20_0000 + off), Some(0x4000_0000 + off));
        }
        pt.remap_4k(0x20_1000, 0x9000).unwrap();
        assert_eq!(pt.translate(0x20_1abc), Some(0x9abc));
        assert_eq!(pt.translate(0x20_2000), Some(0x4000_2000));
        // Splitting again is a no-op; a range over both pages splits the second.
        pt.split_to_4k(0x20_0000, 0x40_0000).unwrap();
        assert_eq!((pt.pages_2m, pt.pages_4k), (0, 1025));
        assert_eq!(pt.translate(0x5f_ffff), Some(0x403f_ffff));
        // The device page keeps its cache bits; remap keeps flags.
        let leaf_flags = |pt: &PageTables<FakeMemory>, va: u64| {
            pt.memory()
                .pages
                .values()
                .flat_map(|t| t.iter())
                .find(|e| **e & ADDR_MASK == pt.translate(va).unwrap() & !0xfff)
                .map(|e| e & 0xfff)
        };
        assert_eq!(
            leaf_flags(&pt, 0x100_0000),
            Some(PRESENT | WRITABLE | USER | PWT | PCD)
        );
        assert_eq!(
            pt.remap_4k(0x300_0000, 0x1000),
            Err(MapError::NotMapped(0x300_0000))
        );
        assert_eq!(pt.remap_4k(0x20_1001, 0x1000), Err(MapError::Misaligned));
        let mut small = PageTables::new(
            FakeMemory {
                limit: 4,
                ..Default::default()
            },
            WRITABLE,
        )
        .unwrap();
        small.map(0, 0, 0x40_0000).unwrap();
        small.split_to_4k(0, 0x20_0000).unwrap();
        assert_eq!(
            small.split_to_4k(0x20_0000, 0x1000),
            Err(MapError::OutOfMemory)
        );
        assert_eq!(small.translate(0x20_0000), Some(0x20_0000), "still mapped");
    }

    #[test]
    fn sparse_high_addresses_and_out_of_memory() {
        let mut pt = PageTables::new(FakeMemory::default(), WRITABLE).unwrap();
        pt.map(5 << 36, 0x8000_0000, 0x20_0000).unwrap();
        assert_eq!(pt.translate((5 << 36) + 0x10), Some(0x8000_0010));
        let mut small = PageTables::new(
            FakeMemory {
                limit: 2,
                ..Default::default()
            },
            WRITABLE,
        )
        .unwrap();
        assert_eq!(small.map(0, 0, 0x1000), Err(MapError::OutOfMemory));
    }
}

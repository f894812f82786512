//! The start-info page: reading it (from the Gpa in RSI), the checks the
//! guest adds to `StartInfo::check`, and the places the guest derives from
//! it (its heap, a hole in guest-physical space).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use pv_abi::start_info::{StartInfoError, GPA_LIMIT};
use pv_abi::{Gpa, MemRange, StartInfo, PAGE_SIZE};

use crate::platform::Platform;

/// Bytes the guest gives its allocator (at most).
pub const HEAP_SIZE: u64 = 8 << 20;
/// Least the guest accepts for its allocator.
pub const HEAP_MIN: u64 = 1 << 20;
/// Size of the hole [`find_hole`] looks for (one 2 MiB page).
pub const HOLE_SIZE: u64 = 2 << 20;

/// Whether `[start, start + len)` lies inside the memory ranges (possibly
/// across adjacent ones). An empty span is inside if `start` is.
pub fn inside_ranges(ranges: &[MemRange], start: u64, len: u64) -> bool {
    let Some(end) = start.checked_add(len) else {
        return false;
    };
    let mut cur = start;
    loop {
        let Some(r) = ranges.iter().find(|r| r.contains(Gpa(cur))) else {
            return len == 0 && ranges.iter().any(|r| r.contains(Gpa(start)));
        };
        let r_end = r.gpa.0.saturating_add(r.size);
        if r_end >= end {
            return true;
        }
        cur = r_end;
    }
}

/// Whether `[a, a_end)` and `[b, b_end)` overlap.
pub const fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Why the start-info page was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadStartInfo {
    /// The address in RSI cannot be a start-info page.
    BadAddress(u64),
    /// `StartInfo::from_bytes` refused it.
    Invalid(StartInfoError),
}

impl core::fmt::Display for BadStartInfo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BadStartInfo::BadAddress(a) => write!(
                f,
                "start-info address {a:#x} is null, not page-aligned or above GPA_LIMIT"
            ),
            BadStartInfo::Invalid(e) => write!(f, "{e}"),
        }
    }
}

/// Copies the start-info page at `gpa` (RSI at entry) into the guest and
/// validates it.
pub fn read(p: &dyn Platform, gpa: u64) -> Result<StartInfo, BadStartInfo> {
    if gpa == 0 || !gpa.is_multiple_of(PAGE_SIZE) || gpa >= GPA_LIMIT {
        return Err(BadStartInfo::BadAddress(gpa));
    }
    let mut page = [0u8; PAGE_SIZE as usize];
    p.read_phys(Gpa(gpa), &mut page);
    StartInfo::from_bytes(&page).map_err(BadStartInfo::Invalid)
}

/// What the guest expects beyond `StartInfo::check`: the image and the boot
/// data inside guest memory and apart, the page itself and the RSDP inside
/// the boot data, the image as large as the one linked.
pub fn check_regions(si: &StartInfo, page: Gpa, linked_size: u64) -> Vec<String> {
    let mut bad = Vec::new();
    let image = (si.image_start.0, si.image_end.0);
    let boot = (si.boot_data_start.0, si.boot_data_end.0);
    for (what, (s, e)) in [("image", image), ("boot data", boot)] {
        if s >= e {
            bad.push(format!("{what} [{s:#x}..{e:#x}) is empty"));
        } else if !inside_ranges(si.mem_ranges(), s, e - s) {
            bad.push(format!(
                "{what} [{s:#x}..{e:#x}) is not inside the memory ranges"
            ));
        }
    }
    if overlaps(image, boot) {
        bad.push(format!(
            "image [{:#x}..{:#x}) overlaps boot data [{:#x}..{:#x})",
            image.0, image.1, boot.0, boot.1
        ));
    }
    if !(boot.0 <= page.0 && page.0 + PAGE_SIZE <= boot.1) {
        bad.push(format!(
            "start-info page {page} is not inside the boot data [{:#x}..{:#x})",
            boot.0, boot.1
        ));
    }
    if let Some(rsdp) = si.acpi_rsdp() {
        if !(boot.0 <= rsdp.0 && rsdp.0 < boot.1) {
            bad.push(format!(
                "ACPI RSDP {rsdp} is not inside the boot data [{:#x}..{:#x})",
                boot.0, boot.1
            ));
        }
    }
    let size = image.1.saturating_sub(image.0);
    if size != linked_size {
        bad.push(format!(
            "image region holds {size:#x} bytes, the linked image {linked_size:#x}"
        ));
    }
    bad
}

/// `range` minus every span of `taken`, in address order.
pub fn subtract(range: (u64, u64), taken: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut free = alloc::vec![range];
    for &t in taken {
        let mut next = Vec::new();
        for f in free {
            if !overlaps(f, t) {
                next.push(f);
                continue;
            }
            if f.0 < t.0 {
                next.push((f.0, t.0));
            }
            if t.1 < f.1 {
                next.push((t.1, f.1));
            }
        }
        free = next;
    }
    free.sort_unstable();
    free
}

/// Memory the guest must not hand out: page 0 (a null pointer to Rust), the
/// image and the boot data.
pub fn taken(si: &StartInfo) -> [(u64, u64); 3] {
    [
        (0, PAGE_SIZE),
        (si.image_start.0, si.image_end.0),
        (si.boot_data_start.0, si.boot_data_end.0),
    ]
}

/// `range` minus every span of `taken`, without allocating (the heap does
/// not exist yet when it is first needed): at most `taken.len() + 1` pieces,
/// in address order, in a fixed array.
fn subtract_fixed(range: (u64, u64), taken: &[(u64, u64); 3]) -> ([(u64, u64); 4], usize) {
    let mut pieces = [(0u64, 0u64); 4];
    pieces[0] = range;
    let mut n = 1;
    for &t in taken {
        let mut next = [(0u64, 0u64); 4];
        let mut m = 0;
        for &f in &pieces[..n] {
            let parts = if overlaps(f, t) {
                [(f.0, t.0.min(f.1)), (t.1.max(f.0), f.1)]
            } else {
                [f, (0, 0)]
            };
            for p in parts {
                if p.0 < p.1 && m < next.len() {
                    next[m] = p;
                    m += 1;
                }
            }
        }
        pieces = next;
        n = m;
    }
    pieces[..n].sort_unstable();
    (pieces, n)
}

/// The heap: the first free part of the largest memory range (outside page
/// 0, the image and the boot data) that holds [`HEAP_SIZE`], else its first
/// free part of at least [`HEAP_MIN`]; the next largest range if the
/// largest has neither. Allocation-free: it runs before the heap exists.
pub fn choose_heap(si: &StartInfo) -> Option<(Gpa, u64)> {
    let ranges = si.mem_ranges();
    // Indexes sorted largest first, the earliest of equals first.
    let mut order = [0usize; pv_abi::start_info::MAX_MEM_RANGES];
    let n = ranges.len().min(order.len());
    for (i, slot) in order.iter_mut().enumerate().take(n) {
        *slot = i;
    }
    order[..n].sort_unstable_by(|&a, &b| {
        ranges[b]
            .size
            .cmp(&ranges[a].size)
            .then(ranges[a].gpa.cmp(&ranges[b].gpa))
    });
    let taken = taken(si);
    order[..n].iter().find_map(|&i| {
        let r = &ranges[i];
        let end = r.gpa.0.checked_add(r.size)?;
        let (pieces, count) = subtract_fixed((r.gpa.0, end), &taken);
        let free = &pieces[..count];
        free.iter()
            .find(|f| f.1 - f.0 >= HEAP_SIZE)
            .or_else(|| free.iter().find(|f| f.1 - f.0 >= HEAP_MIN))
            .map(|f| (Gpa(f.0), (f.1 - f.0).min(HEAP_SIZE)))
    })
}

/// A 2 MiB-aligned, 2 MiB guest-physical span outside every memory range
/// and below `limit` (1 << 46 unless guest memory is there or the limit is
/// lower): where `fail=npf` and the "outside guest memory" hypercall tests
/// point. `limit` is the CPU's physical address width: a page-table entry
/// pointing above it has reserved bits set and faults in the guest instead
/// of reaching the hypervisor.
pub fn find_hole(si: &StartInfo, limit: u64) -> Option<Gpa> {
    let free = |c: u64| {
        si.mem_ranges().iter().all(|r| {
            !overlaps(
                (c, c + HOLE_SIZE),
                (r.gpa.0, r.gpa.0.saturating_add(r.size)),
            )
        })
    };
    let limit = limit.min(GPA_LIMIT);
    let candidates = [1u64 << 46, 1 << 45, GPA_LIMIT - HOLE_SIZE]
        .into_iter()
        .chain((32..45).rev().map(|b| 1u64 << b))
        .chain([limit.saturating_sub(HOLE_SIZE) & !(HOLE_SIZE - 1)]);
    if let Some(c) = candidates
        .into_iter()
        .find(|&c| c + HOLE_SIZE <= limit && free(c))
    {
        return Some(Gpa(c));
    }
    // Right after the highest range.
    let top = si
        .mem_ranges()
        .iter()
        .map(|r| r.gpa.0.saturating_add(r.size))
        .max()?;
    let c = top.checked_next_multiple_of(HOLE_SIZE)?;
    (c + HOLE_SIZE <= limit && free(c)).then_some(Gpa(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numa::topology::tests::two_nodes;
    use pv_abi::Maddr;

    #[test]
    fn spans_inside_ranges() {
        let (_, si) = two_nodes();
        let r = si.mem_ranges();
        assert!(inside_ranges(r, 0, 0x2000_0000));
        assert!(inside_ranges(r, 0x0fff_f000, 0x2000));
        assert!(!inside_ranges(r, 0x1fff_f000, 0x2000));
        assert!(!inside_ranges(r, 0x3000_0000, 8));
        assert!(inside_ranges(r, 0x1_0000_0000, 0));
        assert!(!inside_ranges(r, 0x3000_0000, 0));
        assert!(!inside_ranges(r, u64::MAX, 2));
        assert!(inside_ranges(r, 0x1_1fff_fff8, 8));
        assert!(!inside_ranges(r, 0x1_1fff_fff8, 9));
    }

    #[test]
    fn heap_avoids_image_boot_data_and_page_zero() {
        let (_, mut si) = two_nodes();
        // Largest range is vnode 1's: its start.
        assert_eq!(choose_heap(&si), Some((Gpa(0x1_0000_0000), HEAP_SIZE)));
        // Put the image and boot data at the start of the largest range.
        si.image_start = Gpa(0x1_0000_0000);
        si.image_end = Gpa(0x1_0020_0000);
        si.boot_data_start = Gpa(0x1_0020_0000);
        si.boot_data_end = Gpa(0x1_0030_0000);
        assert_eq!(choose_heap(&si), Some((Gpa(0x1_0030_0000), HEAP_SIZE)));
        // One small range starting at 0.
        let mut small = StartInfo::new();
        small.nr_vcpus = 1;
        small.nr_vnodes = 1;
        small.image_start = Gpa(0x20_0000);
        small.image_end = Gpa(0x30_0000);
        small.boot_data_start = Gpa(0x30_0000);
        small.boot_data_end = Gpa(0x31_0000);
        small
            .push_mem_range(MemRange::new(Gpa(0), 0x60_0000, 0, Maddr(0)))
            .unwrap();
        // [0x1000..0x200000) is the first part of at least 1 MiB.
        assert_eq!(choose_heap(&small), Some((Gpa(0x1000), 0x1f_f000)));
        small.mem_ranges[0].size = 0x100_0000;
        assert_eq!(choose_heap(&small), Some((Gpa(0x31_0000), HEAP_SIZE)));
        small.mem_ranges[0].size = 0x60_0000;
        small.image_start = Gpa(0x10_0000);
        assert_eq!(choose_heap(&small), Some((Gpa(0x31_0000), 0x2f_0000)));
        small.mem_ranges[0].size = 0x38_0000;
        assert_eq!(choose_heap(&small), None);
    }

    #[test]
    fn region_checks() {
        let (_, mut si) = two_nodes();
        assert!(check_regions(&si, Gpa(0x40_0000), 0x20_0000).is_empty());
        si.acpi_rsdp = Gpa(0x50_0000);
        si.boot_data_start = Gpa(0x3f_f000);
        let bad = check_regions(&si, Gpa(0x50_0000), 0x10_0000);
        assert_eq!(
            bad,
            vec![
                "image [0x200000..0x400000) overlaps boot data [0x3ff000..0x480000)",
                "start-info page 0x500000 is not inside the boot data [0x3ff000..0x480000)",
                "ACPI RSDP 0x500000 is not inside the boot data [0x3ff000..0x480000)",
                "image region holds 0x200000 bytes, the linked image 0x100000",
            ]
        );
    }

    #[test]
    fn holes() {
        let (_, mut si) = two_nodes();
        assert_eq!(find_hole(&si, GPA_LIMIT), Some(Gpa(1 << 46)));
        assert_eq!(find_hole(&si, 1 << 40), Some(Gpa(1 << 39)));
        si.mem_ranges[2] = MemRange::new(Gpa(1 << 46), 1 << 30, 1, Maddr(0));
        assert_eq!(find_hole(&si, GPA_LIMIT), Some(Gpa(1 << 45)));
        assert_eq!(
            subtract((0, 100), &[(10, 20), (90, 200), (0, 5)]),
            vec![(5, 10), (20, 90)]
        );
    }
}

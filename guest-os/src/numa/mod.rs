//! The guest's NUMA knowledge: the vNUMA topology from `GET_VNUMA`
//! ([`topology`]), the virtual SRAT/SLIT/MADT and the cross-check between
//! the two ([`acpi`]), the view the guest prints ([`view`]), and NUMA
//! emulation on that view (`numa=fake=N`, [`fake`]).
//!
//! Node numbering follows Linux: proximity domains get node ids in the order
//! the SRAT's (enabled) processor affinity entries name them, then in the
//! order its (enabled) memory affinity entries name the rest. In a domain the
//! proximity domain of a vnode is its vnode id, so "node N (vnode V)" is what
//! Linux would call node N on the same virtual machine.

pub mod acpi;
pub mod fake;
pub mod topology;
pub mod view;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// Sorts `[start, end)` ranges and merges those that touch or overlap.
pub fn coalesce(ranges: impl IntoIterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ranges.into_iter().filter(|r| r.0 < r.1).collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// A saturating sum (of numbers from the hypervisor or the tables, which must
/// not overflow into a panic).
pub fn sum(values: impl IntoIterator<Item = u64>) -> u64 {
    values.into_iter().fold(0, u64::saturating_add)
}

/// `[0x0..0x20000000) [0x100000000..0x120000000)`, or `none`.
pub fn format_ranges(ranges: &[(u64, u64)]) -> String {
    if ranges.is_empty() {
        return "none".into();
    }
    let mut s = String::new();
    for (i, (a, b)) in ranges.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(s, "{sep}[{a:#x}..{b:#x})");
    }
    s
}

/// A CPU list in Linux's `cpulist` format (`0-1,4`), or `none`.
pub fn format_cpus(cpus: &[u32]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        return "none".into();
    }
    let mut s = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && end.checked_add(1) == Some(v[i + 1]) {
            i += 1;
            end = v[i];
        }
        let sep = if s.is_empty() { "" } else { "," };
        if start == end {
            let _ = write!(s, "{sep}{start}");
        } else {
            let _ = write!(s, "{sep}{start}-{end}");
        }
        i += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing() {
        assert_eq!(
            coalesce([(10, 20), (0, 5), (5, 10), (30, 40), (35, 36), (50, 50)]),
            vec![(0, 20), (30, 40)]
        );
        assert!(coalesce([]).is_empty());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_cpus(&[0, 1, 2, 4, 6, 7]), "0-2,4,6-7");
        assert_eq!(format_cpus(&[3]), "3");
        assert_eq!(format_cpus(&[]), "none");
        assert_eq!(
            format_cpus(&[u32::MAX, u32::MAX - 1, 0]),
            "0,4294967294-4294967295"
        );
        assert_eq!(
            format_ranges(&[(0, 0x2000_0000), (0x1_0000_0000, 0x1_2000_0000)]),
            "[0x0..0x20000000) [0x100000000..0x120000000)"
        );
        assert_eq!(format_ranges(&[]), "none");
    }
}

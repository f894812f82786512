//! The vNUMA topology as `GET_VNUMA` reports it, and its self-consistency
//! checks (each returns every problem it finds, worded for the console).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use pv_abi::node::{distance_index, LOCAL_DISTANCE};
use pv_abi::{StartInfo, VmemRange, PAGE_SIZE};

use super::coalesce;

/// `GET_VNUMA`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vnuma {
    /// vnodes.
    pub nr_vnodes: u32,
    /// vCPUs.
    pub nr_vcpus: u32,
    /// `nr_vnodes²` distances, row-major.
    pub vdistance: Vec<u32>,
    /// The vnode of each vCPU.
    pub vcpu_to_vnode: Vec<u32>,
    /// Memory ranges, as reported.
    pub vmemranges: Vec<VmemRange>,
}

impl Vnuma {
    /// Distance from vnode `a` to vnode `b`.
    pub fn distance(&self, a: u32, b: u32) -> Option<u32> {
        distance_index(self.nr_vnodes, a, b).and_then(|i| self.vdistance.get(i).copied())
    }

    /// The vCPUs of `vnode`, in order.
    pub fn vcpus_of(&self, vnode: u32) -> Vec<u32> {
        (0..self.vcpu_to_vnode.len() as u32)
            .filter(|&c| self.vcpu_to_vnode[c as usize] == vnode)
            .collect()
    }

    /// The memory of `vnode`, sorted, adjacent ranges merged.
    pub fn memory_of(&self, vnode: u32) -> Vec<(u64, u64)> {
        coalesce(
            self.vmemranges
                .iter()
                .filter(|r| r.nid == vnode)
                .map(|r| (r.start.0, r.end.0)),
        )
    }

    /// Whether the distance matrix is symmetric.
    pub fn is_symmetric(&self) -> bool {
        (0..self.nr_vnodes)
            .all(|a| (0..self.nr_vnodes).all(|b| self.distance(a, b) == self.distance(b, a)))
    }

    /// Linux's node numbering applied to this topology: vnodes in the order
    /// the vCPUs name them, then memory-only vnodes in the order of their
    /// ranges, then (not a Linux node: neither CPUs nor memory) the rest in
    /// id order. Entry N is the vnode of node N.
    pub fn linux_order(&self) -> Vec<u32> {
        let mut order: Vec<u32> = Vec::new();
        let named = self
            .vcpu_to_vnode
            .iter()
            .copied()
            .chain(self.vmemranges.iter().map(|r| r.nid))
            .chain(0..self.nr_vnodes);
        for v in named {
            if v < self.nr_vnodes && !order.contains(&v) {
                order.push(v);
            }
        }
        order
    }

    /// The buffers hold what the counts say.
    pub fn check_shape(&self) -> Vec<String> {
        let mut bad = Vec::new();
        let cells = self.nr_vnodes as usize * self.nr_vnodes as usize;
        if self.vdistance.len() != cells {
            bad.push(format!(
                "{} distances for {} vnodes",
                self.vdistance.len(),
                self.nr_vnodes
            ));
        }
        if self.vcpu_to_vnode.len() != self.nr_vcpus as usize {
            bad.push(format!(
                "{} vcpu_to_vnode entries for {} vCPUs",
                self.vcpu_to_vnode.len(),
                self.nr_vcpus
            ));
        }
        if self.nr_vnodes == 0 {
            bad.push("no vnodes".into());
        }
        if self.nr_vcpus == 0 {
            bad.push("no vCPUs".into());
        }
        bad
    }

    /// 10 on the diagonal, more than 10 elsewhere (Linux refuses a SLIT
    /// otherwise). Symmetry is not required: a config may be asymmetric.
    pub fn check_distances(&self) -> Vec<String> {
        let mut bad = self.check_shape();
        for a in 0..self.nr_vnodes {
            for b in 0..self.nr_vnodes {
                let Some(d) = self.distance(a, b) else {
                    continue;
                };
                if a == b && d != LOCAL_DISTANCE {
                    bad.push(format!(
                        "vdistance[{a}][{a}] = {d}, expected {LOCAL_DISTANCE}"
                    ));
                } else if a != b && d <= LOCAL_DISTANCE {
                    bad.push(format!(
                        "vdistance[{a}][{b}] = {d}, expected more than {LOCAL_DISTANCE}"
                    ));
                }
            }
        }
        bad
    }

    /// Every vCPU is on an existing vnode.
    pub fn check_vcpus(&self) -> Vec<String> {
        self.vcpu_to_vnode
            .iter()
            .enumerate()
            .filter(|(_, &v)| v >= self.nr_vnodes)
            .map(|(c, v)| {
                format!(
                    "vCPU {c} on vnode {v}, but there are {} vnodes",
                    self.nr_vnodes
                )
            })
            .collect()
    }

    /// Memory ranges: page-aligned, non-empty, on an existing vnode, sorted,
    /// not overlapping, inside the start-info memory ranges.
    pub fn check_ranges(&self, si: &StartInfo) -> Vec<String> {
        let mut bad = Vec::new();
        let mut prev_end = 0u64;
        for (i, r) in self.vmemranges.iter().enumerate() {
            let (s, e) = (r.start.0, r.end.0);
            if s >= e {
                bad.push(format!(
                    "vmemrange {i} [{s:#x}..{e:#x}) is empty or reversed"
                ));
                continue;
            }
            if s % PAGE_SIZE != 0 || e % PAGE_SIZE != 0 {
                bad.push(format!(
                    "vmemrange {i} [{s:#x}..{e:#x}) is not page-aligned"
                ));
            }
            if r.nid >= self.nr_vnodes {
                bad.push(format!(
                    "vmemrange {i} on vnode {}, but there are {} vnodes",
                    r.nid, self.nr_vnodes
                ));
            }
            if i > 0 && s < prev_end {
                bad.push(format!(
                    "vmemrange {i} [{s:#x}..{e:#x}) is not sorted or overlaps the previous one (ends {prev_end:#x})"
                ));
            }
            prev_end = prev_end.max(e);
            if !crate::boot::start_info::inside_ranges(si.mem_ranges(), s, e - s) {
                bad.push(format!(
                    "vmemrange {i} [{s:#x}..{e:#x}) is not inside the start-info memory ranges"
                ));
            }
        }
        bad
    }

    /// Counts agree with start-info, and each vnode's start-info ranges
    /// cover exactly its vmemranges (same total, same merged ranges).
    pub fn check_start_info(&self, si: &StartInfo) -> Vec<String> {
        let mut bad = Vec::new();
        if self.nr_vnodes != si.nr_vnodes {
            bad.push(format!(
                "get_vnuma reports {} vnodes, start-info {}",
                self.nr_vnodes, si.nr_vnodes
            ));
        }
        if self.nr_vcpus != si.nr_vcpus {
            bad.push(format!(
                "get_vnuma reports {} vCPUs, start-info {}",
                self.nr_vcpus, si.nr_vcpus
            ));
        }
        for v in 0..self.nr_vnodes.max(si.nr_vnodes) {
            let si_bytes = super::sum(si.vnode_ranges(v).map(|r| r.size));
            let vm_bytes = super::sum(
                self.vmemranges
                    .iter()
                    .filter(|r| r.nid == v)
                    .map(|r| r.byte_len()),
            );
            if si_bytes != vm_bytes {
                bad.push(format!(
                    "vnode {v}: start-info ranges hold {si_bytes:#x} bytes, vmemranges {vm_bytes:#x}"
                ));
                continue;
            }
            let si_ranges = coalesce(
                si.vnode_ranges(v)
                    .map(|r| (r.gpa.0, r.gpa.0.saturating_add(r.size))),
            );
            let vm_ranges = self.memory_of(v);
            if si_ranges != vm_ranges {
                bad.push(format!(
                    "vnode {v}: start-info ranges {} differ from vmemranges {}",
                    super::format_ranges(&si_ranges),
                    super::format_ranges(&vm_ranges)
                ));
            }
        }
        bad
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pv_abi::{Gpa, Maddr, MemRange};

    /// Two vnodes: vnode 0 = [0, 512 MiB) split in two start-info ranges,
    /// vnode 1 = [4 GiB, 4.5 GiB); vCPUs 0-1 on vnode 0, 2-3 on vnode 1.
    pub(crate) fn two_nodes() -> (Vnuma, StartInfo) {
        let v = Vnuma {
            nr_vnodes: 2,
            nr_vcpus: 4,
            vdistance: vec![10, 20, 20, 10],
            vcpu_to_vnode: vec![0, 0, 1, 1],
            vmemranges: vec![
                VmemRange::new(Gpa(0), Gpa(0x2000_0000), 0),
                VmemRange::new(Gpa(0x1_0000_0000), Gpa(0x1_2000_0000), 1),
            ],
        };
        let mut si = StartInfo::new();
        si.nr_vcpus = 4;
        si.nr_vnodes = 2;
        si.image_start = Gpa(0x20_0000);
        si.image_end = Gpa(0x40_0000);
        si.boot_data_start = Gpa(0x40_0000);
        si.boot_data_end = Gpa(0x48_0000);
        for r in [
            MemRange::new(Gpa(0), 0x1000_0000, 0, Maddr(0x1000_0000)),
            MemRange::new(Gpa(0x1000_0000), 0x1000_0000, 0, Maddr(0x4000_0000)),
            MemRange::new(Gpa(0x1_0000_0000), 0x2000_0000, 1, Maddr(0x8000_0000)),
        ] {
            si.push_mem_range(r).unwrap();
        }
        (v, si)
    }

    #[test]
    fn a_good_topology_passes() {
        let (v, si) = two_nodes();
        assert!(v.check_shape().is_empty());
        assert!(v.check_distances().is_empty());
        assert!(v.check_vcpus().is_empty());
        assert!(v.check_ranges(&si).is_empty(), "{:?}", v.check_ranges(&si));
        assert!(v.check_start_info(&si).is_empty());
        assert!(v.is_symmetric());
        assert_eq!(v.vcpus_of(1), vec![2, 3]);
        assert_eq!(v.memory_of(0), vec![(0, 0x2000_0000)]);
        assert_eq!(v.linux_order(), vec![0, 1]);
    }

    #[test]
    fn problems_are_named() {
        let (mut v, si) = two_nodes();
        v.vdistance = vec![10, 10, 21, 11];
        let d = v.check_distances();
        assert_eq!(
            d,
            vec![
                "vdistance[0][1] = 10, expected more than 10",
                "vdistance[1][1] = 11, expected 10"
            ]
        );
        assert!(!v.is_symmetric());
        v.vcpu_to_vnode[3] = 2;
        assert_eq!(
            v.check_vcpus(),
            vec!["vCPU 3 on vnode 2, but there are 2 vnodes"]
        );
        v.vmemranges.swap(0, 1);
        v.vmemranges[0].end = Gpa(0x1_3000_0000);
        let r = v.check_ranges(&si);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].contains("not inside"), "{r:?}");
        assert!(r[1].contains("not sorted"), "{r:?}");
        let s = v.check_start_info(&si);
        assert_eq!(
            s,
            vec!["vnode 1: start-info ranges hold 0x20000000 bytes, vmemranges 0x30000000"]
        );
    }

    #[test]
    fn linux_order_puts_cpu_nodes_first() {
        // vCPU 0 on vnode 2, vnode 1 memory-only, vnode 0 nothing at all.
        let v = Vnuma {
            nr_vnodes: 3,
            nr_vcpus: 2,
            vdistance: vec![10, 20, 20, 20, 10, 20, 20, 20, 10],
            vcpu_to_vnode: vec![2, 2],
            vmemranges: vec![
                VmemRange::new(Gpa(0), Gpa(0x1000_0000), 1),
                VmemRange::new(Gpa(0x1000_0000), Gpa(0x2000_0000), 2),
            ],
        };
        assert_eq!(v.linux_order(), vec![2, 1, 0]);
    }
}

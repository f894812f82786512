//! Guest-physical to machine (bus) addresses: the start-info memory ranges
//! (each contiguous in machine memory, `pv_abi::MemRange::maddr`), with the
//! ranges the guest exchanged (`DMA_EXCHANGE`) laid over them. There is no
//! IOMMU: this is what a device sees.

use alloc::vec::Vec;

use pv_abi::StartInfo;

/// Why a buffer has no single machine address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Translate {
    /// This guest-physical address is not guest memory.
    NotMemory(u64),
    /// The buffer is guest memory but its machine pages are not contiguous
    /// after this guest-physical address.
    NotContiguous(u64),
}

/// One run, contiguous in both spaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub gpa: u64,
    pub size: u64,
    pub maddr: u64,
}

impl Run {
    fn end(&self) -> u64 {
        self.gpa.saturating_add(self.size)
    }
}

/// The guest's machine map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineMap {
    /// Sorted by `gpa`, not overlapping.
    runs: Vec<Run>,
}

impl MachineMap {
    /// From start-info (its ranges are sorted and disjoint; anything else
    /// is dropped rather than trusted).
    pub fn from_start_info(si: &StartInfo) -> MachineMap {
        let mut m = MachineMap::default();
        for r in si.mem_ranges() {
            m.insert(r.gpa.0, r.size, r.maddr.0);
        }
        m
    }

    /// The runs, sorted.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Records that `[gpa, gpa + size)` is now backed from `maddr` (an
    /// exchange): the part of any run it covers is replaced.
    pub fn insert(&mut self, gpa: u64, size: u64, maddr: u64) {
        let Some(end) = gpa.checked_add(size).filter(|_| size > 0) else {
            return;
        };
        let mut out = Vec::with_capacity(self.runs.len() + 2);
        for r in &self.runs {
            if r.end() <= gpa || r.gpa >= end {
                out.push(*r);
                continue;
            }
            if r.gpa < gpa {
                out.push(Run {
                    gpa: r.gpa,
                    size: gpa - r.gpa,
                    maddr: r.maddr,
                });
            }
            if r.end() > end {
                let skip = end - r.gpa;
                out.push(Run {
                    gpa: end,
                    size: r.end() - end,
                    maddr: r.maddr.saturating_add(skip),
                });
            }
        }
        out.push(Run { gpa, size, maddr });
        out.sort_unstable_by_key(|r| r.gpa);
        self.runs = out;
    }

    /// The machine address of `gpa`.
    pub fn maddr(&self, gpa: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.end() <= gpa);
        let r = self.runs.get(i).filter(|r| r.gpa <= gpa)?;
        r.maddr.checked_add(gpa - r.gpa)
    }

    /// The machine address of `[gpa, gpa + len)` if it is guest memory and
    /// contiguous in machine memory (across runs that happen to join).
    pub fn contiguous(&self, gpa: u64, len: u64) -> Result<u64, Translate> {
        let start = self.maddr(gpa).ok_or(Translate::NotMemory(gpa))?;
        let end = gpa.checked_add(len).ok_or(Translate::NotMemory(gpa))?;
        let mut at = gpa;
        while at < end {
            let i = self.runs.partition_point(|r| r.end() <= at);
            let r = self
                .runs
                .get(i)
                .filter(|r| r.gpa <= at)
                .ok_or(Translate::NotMemory(at))?;
            if r.maddr.checked_add(at - r.gpa) != start.checked_add(at - gpa) {
                return Err(Translate::NotContiguous(at));
            }
            at = r.end();
        }
        Ok(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> MachineMap {
        let mut m = MachineMap::default();
        m.insert(0, 0x20_0000, 0x800_0000);
        m.insert(0x20_0000, 0x20_0000, 0x1000_0000);
        m.insert(0x40_0000, 0x10_0000, 0x1020_0000);
        m
    }

    #[test]
    fn translation_and_contiguity() {
        let m = map();
        assert_eq!(m.maddr(0x1234), Some(0x800_1234));
        assert_eq!(m.maddr(0x50_0000), None);
        assert_eq!(m.contiguous(0x1000, 0x1000), Ok(0x800_1000));
        assert_eq!(
            m.contiguous(0x1f_f000, 0x2000),
            Err(Translate::NotContiguous(0x20_0000))
        );
        // Two runs that join in machine memory are one buffer.
        assert_eq!(m.contiguous(0x3f_f000, 0x2000), Ok(0x101f_f000));
        assert_eq!(
            m.contiguous(0x4f_f000, 0x2000),
            Err(Translate::NotMemory(0x50_0000))
        );
        assert_eq!(
            m.contiguous(u64::MAX - 1, 2),
            Err(Translate::NotMemory(u64::MAX - 1))
        );
    }

    #[test]
    fn exchanged_ranges_override() {
        let mut m = map();
        m.insert(0x10_0000, 0x1_0000, 0x40_0000);
        assert_eq!(m.maddr(0x10_0000), Some(0x40_0000));
        assert_eq!(m.maddr(0xf_ffff), Some(0x80f_ffff));
        assert_eq!(m.maddr(0x11_0000), Some(0x811_0000));
        assert_eq!(m.runs().len(), 5);
        assert_eq!(m.contiguous(0x10_0000, 0x1_0000), Ok(0x40_0000));
        assert!(m.contiguous(0x10_0000, 0x1_1000).is_err());
    }
}

//! [`Task`]: what Linux keeps per task for memory policies
//! (`task_struct::mempolicy`, `il_prev`, `il_weight`, `mems_allowed`) and a
//! minimal address space (`mm_struct`'s VMAs with their `vm_policy`, and
//! the pages faulted into them), so that VMA policies, interleave indexes,
//! `mbind` and `get_mempolicy(MPOL_F_ADDR)` have something to work on.
//!
//! The system calls and allocations that use a task are methods of
//! [`super::Mempolicies`].

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use pv_abi::PAGE_SHIFT;

use super::Mempolicy;
use crate::mm::nodemask::NodeMask;
use crate::mm::Page;

/// Where a task's first mapping goes.
pub const MMAP_BASE: u64 = 0x7f00_0000_0000;

/// One mapping (`vm_area_struct`): `[start, end)`, page aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `vm_pgoff`: the page offset of `start` in the mapped object (for an
    /// anonymous mapping, `start >> PAGE_SHIFT`, as Linux sets it).
    pub pgoff: u64,
    /// `vm_policy`; `None` falls back to the task policy.
    pub policy: Option<Mempolicy>,
}

impl Vma {
    /// Whether `addr` is inside.
    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The interleave index of the page of `order` at `addr`
    /// (`get_vma_policy`: `vm_pgoff >> order` plus the offset in pages of
    /// that order).
    pub const fn ilx(&self, addr: u64, order: u32) -> u64 {
        (self.pgoff >> order) + ((addr - self.start) >> (PAGE_SHIFT + order))
    }
}

/// A task.
#[derive(Debug)]
pub struct Task {
    pub(super) mempolicy: Option<Mempolicy>,
    pub(super) il_prev: u32,
    pub(super) il_weight: u8,
    pub(super) mems_allowed: NodeMask,
    /// `capable(CAP_SYS_NICE)`: needed for `MPOL_MF_MOVE_ALL`.
    pub cap_sys_nice: bool,
    pub(super) vmas: Vec<Vma>,
    pub(super) pages: BTreeMap<u64, Page>,
    pub(super) next_mmap: u64,
}

impl Task {
    /// A task with no policy, allowed on `mems_allowed` (its cpuset's
    /// `mems`; the top cpuset's are every node with memory).
    pub fn new(mems_allowed: NodeMask) -> Task {
        Task {
            mempolicy: None,
            il_prev: 0,
            il_weight: 0,
            mems_allowed,
            cap_sys_nice: false,
            vmas: Vec::new(),
            pages: BTreeMap::new(),
            next_mmap: MMAP_BASE,
        }
    }

    /// The task policy (`current->mempolicy`; `None`: default).
    pub fn mempolicy(&self) -> Option<&Mempolicy> {
        self.mempolicy.as_ref()
    }

    /// `il_prev`: the last node interleaving used.
    pub const fn il_prev(&self) -> u32 {
        self.il_prev
    }

    /// `il_weight`: allocations left on `il_prev` (weighted interleave).
    pub const fn il_weight(&self) -> u8 {
        self.il_weight
    }

    /// `mems_allowed`.
    pub const fn mems_allowed(&self) -> NodeMask {
        self.mems_allowed
    }

    /// The mappings, in address order.
    pub fn vmas(&self) -> &[Vma] {
        &self.vmas
    }

    /// The mapping that holds `addr` (`vma_lookup`).
    pub fn vma(&self, addr: u64) -> Option<&Vma> {
        let k = self.vmas.partition_point(|v| v.end <= addr);
        self.vmas.get(k).filter(|v| v.contains(addr))
    }

    /// The page mapped at `addr`, if it was faulted in.
    pub fn page_at(&self, addr: u64) -> Option<&Page> {
        self.pages.get(&(addr >> PAGE_SHIFT))
    }

    /// Pages faulted in.
    pub fn nr_pages(&self) -> usize {
        self.pages.len()
    }

    /// Every page faulted in, with its address, in address order.
    pub fn pages(&self) -> impl Iterator<Item = (u64, &Page)> {
        self.pages.iter().map(|(vpn, p)| (vpn << PAGE_SHIFT, p))
    }

    /// Splits the mapping around `addr` so that a mapping starts there
    /// (`split_vma`); nothing if `addr` is in no mapping or starts one.
    pub(super) fn split_at(&mut self, addr: u64) {
        let k = self.vmas.partition_point(|v| v.end <= addr);
        let Some(v) = self.vmas.get(k).copied() else {
            return;
        };
        if v.start < addr && addr < v.end {
            let tail = Vma {
                start: addr,
                end: v.end,
                pgoff: v.pgoff + ((addr - v.start) >> PAGE_SHIFT),
                policy: v.policy,
            };
            self.vmas[k].end = addr;
            self.vmas.insert(k + 1, tail);
        }
    }

    /// Indexes of the mappings that meet `[start, end)`.
    pub(super) fn vmas_in(&self, start: u64, end: u64) -> core::ops::Range<usize> {
        let a = self.vmas.partition_point(|v| v.end <= start);
        let b = self.vmas.partition_point(|v| v.start < end);
        a..b.max(a)
    }
}

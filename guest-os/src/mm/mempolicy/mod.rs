//! NUMA memory policies with Linux's semantics (`mm/mempolicy.c`,
//! `include/uapi/linux/mempolicy.h`, Linux 6.x; the user view is
//! `Documentation/admin-guide/mm/numa_memory_policy.rst` and the
//! set_mempolicy(2), mbind(2), get_mempolicy(2) manual pages).
//!
//! # Pieces
//!
//! - [`uapi`]: the modes and flags with their uapi values; [`Mode`];
//!   [`Errno`] (the negative return values of the system calls).
//! - [`Mempolicy`] ([`policy`]): one policy. `mpol_new` and
//!   `mpol_set_nodemask` (validation, restriction to the allowed nodes with
//!   memory), `mpol_rebind_policy` for every mode and flag.
//! - [`Task`] ([`task`]): what Linux keeps in `task_struct` and `mm_struct`
//!   for policies: the task policy, the interleave state (`il_prev`,
//!   `il_weight`), the cpuset's `mems_allowed`, and a small address space
//!   (VMAs with their own policies, and the pages faulted into them).
//! - [`Mempolicies`] ([`system`]): the system side, over the memory manager
//!   [`Mm`](crate::mm::Mm): the weighted-interleave table ([`IwTable`],
//!   `/sys/kernel/mm/mempolicy/weighted_interleave/nodeN`), `policy_zone`,
//!   the system calls (`set_mempolicy`, `get_mempolicy`, `mbind`,
//!   `set_mempolicy_home_node`, a cpuset's `mems` write), and allocation
//!   through a policy (`alloc_pages`, `alloc_pages_mpol`,
//!   `alloc_page_vma`, page faults).
//! - [`bitmap`]: `next_node_in`, `nodes_fold`, `nodes_onto`,
//!   `nodes_remap`, `node_remap`.
//!
//! # How a policy allocates (`alloc_pages_mpol`, `policy_nodemask`)
//!
//! | mode | preferred node | nodemask | then |
//! | --- | --- | --- | --- |
//! | default / local | `numa_node_id()` | none | |
//! | preferred | its node | none | |
//! | bind | `numa_node_id()` (or the home node) | its nodes, if the allocation's zone is at least `policy_zone` and they meet `mems_allowed` | |
//! | interleave | `interleave_nodes` (per-task `il_prev` rotation) or `interleave_nid(ilx)` | none | `interleave_hit` if the page is on that node |
//! | weighted interleave | `weighted_interleave_nodes` (per-task `il_weight` countdown) or `weighted_interleave_nid(ilx)` | none | `interleave_hit` likewise |
//! | preferred-many | `numa_node_id()` (or the home node) | its nodes in a first pass with `__GFP_NOWARN` and no retry; none in a second | |
//!
//! Every allocation is then one [`Mm::__alloc_pages`](crate::mm::Mm::__alloc_pages)
//! call, which counts `numa_hit`/`numa_miss`/`numa_foreign` and
//! `local_node`/`other_node` as Linux's `zone_statistics` does. A task
//! whose `mems_allowed` is not every node with memory is in a cpuset: as
//! Linux's `prepare_alloc_pages` with cpusets enabled, an allocation
//! without a policy nodemask is restricted to `mems_allowed`, and one with
//! a nodemask to its intersection with `mems_allowed`.
//!
//! # Decisions
//!
//! - Linux 6.x code wins over older documentation where they differ:
//!   preferred and preferred-many keep their nodes when rebound (only the
//!   remembered `cpuset_mems_allowed` changes); `MPOL_DEFAULT` ignores mode
//!   flags instead of refusing them (`mpol_new` returns NULL before looking
//!   at them); `MPOL_F_NUMA_BALANCING` is accepted with bind and
//!   preferred-many.
//! - Weighted interleave follows Linux 6.9: a table of `u8` weights per
//!   node, 0 meaning the system default of 1; the per-task countdown
//!   (`il_weight`) is reset by `set_mempolicy`, not by a weight change.
//!   The later "auto" mode (weights from memory bandwidth) is not modelled.
//! - `interleave_hit` is counted for interleave and weighted interleave
//!   (the `alloc_pages_mpol` of Linux 6.9 and later).
//! - No page migration on cpuset changes (`cpuset.memory_migrate` off, its
//!   default), no NUMA balancing, no shared (shmem) policies: a VMA's
//!   interleave index is its `vm_pgoff` plus the page offset into it.
//! - `mbind` with `MPOL_MF_MOVE` migrates misplaced pages of the range by
//!   allocating new ones under the new policy and freeing the old.

pub mod bitmap;
pub mod policy;
pub mod system;
pub mod task;
pub mod weights;

#[cfg(test)]
pub(crate) mod tests;

use core::fmt;

pub use policy::{sanitize_mpol_flags, Mempolicy};
pub use system::{Mempolicies, NO_INTERLEAVE_INDEX};
pub use task::{Task, Vma};
pub use weights::IwTable;

/// The user ABI, `include/uapi/linux/mempolicy.h`.
pub mod uapi {
    /// `MPOL_DEFAULT`.
    pub const MPOL_DEFAULT: i32 = 0;
    /// `MPOL_PREFERRED`.
    pub const MPOL_PREFERRED: i32 = 1;
    /// `MPOL_BIND`.
    pub const MPOL_BIND: i32 = 2;
    /// `MPOL_INTERLEAVE`.
    pub const MPOL_INTERLEAVE: i32 = 3;
    /// `MPOL_LOCAL`.
    pub const MPOL_LOCAL: i32 = 4;
    /// `MPOL_PREFERRED_MANY`.
    pub const MPOL_PREFERRED_MANY: i32 = 5;
    /// `MPOL_WEIGHTED_INTERLEAVE`.
    pub const MPOL_WEIGHTED_INTERLEAVE: i32 = 6;
    /// `MPOL_MAX`.
    pub const MPOL_MAX: i32 = 7;

    /// `MPOL_F_STATIC_NODES`: the nodemask is not remapped when the
    /// allowed nodes change.
    pub const MPOL_F_STATIC_NODES: i32 = 1 << 15;
    /// `MPOL_F_RELATIVE_NODES`: the nodemask is relative to the allowed
    /// nodes.
    pub const MPOL_F_RELATIVE_NODES: i32 = 1 << 14;
    /// `MPOL_F_NUMA_BALANCING`: bind (and preferred-many) with NUMA
    /// balancing.
    pub const MPOL_F_NUMA_BALANCING: i32 = 1 << 13;
    /// `MPOL_MODE_FLAGS`.
    pub const MPOL_MODE_FLAGS: i32 =
        MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES | MPOL_F_NUMA_BALANCING;

    /// `get_mempolicy`: the node (of the page at `addr`, or the next
    /// interleave node) instead of the policy.
    pub const MPOL_F_NODE: u64 = 1 << 0;
    /// `get_mempolicy`: the policy of the VMA at `addr`.
    pub const MPOL_F_ADDR: u64 = 1 << 1;
    /// `get_mempolicy`: the nodes the task may use.
    pub const MPOL_F_MEMS_ALLOWED: u64 = 1 << 2;

    /// `mbind`: fail with `EIO` if a page of the range is misplaced.
    pub const MPOL_MF_STRICT: u32 = 1 << 0;
    /// `mbind`: move the task's misplaced pages.
    pub const MPOL_MF_MOVE: u32 = 1 << 1;
    /// `mbind`: move every misplaced page (needs `CAP_SYS_NICE`).
    pub const MPOL_MF_MOVE_ALL: u32 = 1 << 2;
    /// `mbind`: unsupported lazy migration (refused).
    pub const MPOL_MF_LAZY: u32 = 1 << 3;
    /// `MPOL_MF_VALID`: the flags `mbind` accepts.
    pub const MPOL_MF_VALID: u32 = MPOL_MF_STRICT | MPOL_MF_MOVE | MPOL_MF_MOVE_ALL;
}

/// A policy mode (`enum { MPOL_DEFAULT, ... }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum Mode {
    /// `MPOL_DEFAULT`: fall back to the next level (VMA → task → local).
    Default = 0,
    /// `MPOL_PREFERRED`: one node first, then the usual fallback.
    Preferred = 1,
    /// `MPOL_BIND`: only these nodes.
    Bind = 2,
    /// `MPOL_INTERLEAVE`: page by page over these nodes.
    Interleave = 3,
    /// `MPOL_LOCAL`: the allocating CPU's node.
    Local = 4,
    /// `MPOL_PREFERRED_MANY`: these nodes first, then any.
    PreferredMany = 5,
    /// `MPOL_WEIGHTED_INTERLEAVE`: interleave by per-node weights.
    WeightedInterleave = 6,
}

impl Mode {
    /// Every mode, in uapi order.
    pub const ALL: [Mode; 7] = [
        Mode::Default,
        Mode::Preferred,
        Mode::Bind,
        Mode::Interleave,
        Mode::Local,
        Mode::PreferredMany,
        Mode::WeightedInterleave,
    ];

    /// From the uapi value (without flags).
    pub const fn from_raw(v: i32) -> Option<Mode> {
        match v {
            0 => Some(Mode::Default),
            1 => Some(Mode::Preferred),
            2 => Some(Mode::Bind),
            3 => Some(Mode::Interleave),
            4 => Some(Mode::Local),
            5 => Some(Mode::PreferredMany),
            6 => Some(Mode::WeightedInterleave),
            _ => None,
        }
    }

    /// Linux's name (`policy_modes[]`, as `/proc/PID/numa_maps` shows it).
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::Preferred => "prefer",
            Mode::Bind => "bind",
            Mode::Interleave => "interleave",
            Mode::Local => "local",
            Mode::PreferredMany => "prefer (many)",
            Mode::WeightedInterleave => "weighted interleave",
        }
    }

    /// Whether it interleaves (plain or weighted).
    pub const fn interleaves(self) -> bool {
        matches!(self, Mode::Interleave | Mode::WeightedInterleave)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The errors of the policy system calls (Linux's errno values; the calls
/// return `-errno`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Errno {
    /// `EPERM`: `MPOL_MF_MOVE_ALL` without `CAP_SYS_NICE`.
    EPERM = 1,
    /// `ENOENT`: `set_mempolicy_home_node` found no VMA.
    ENOENT = 2,
    /// `EIO`: `mbind(MPOL_MF_STRICT)` found a misplaced page.
    EIO = 5,
    /// `ENOMEM`: out of memory (a page fault that could not be served).
    ENOMEM = 12,
    /// `EFAULT`: an address outside the task's mappings, or a user buffer
    /// too short.
    EFAULT = 14,
    /// `EINVAL`: an invalid mode, flag, nodemask or range.
    EINVAL = 22,
    /// `ENOSPC`: an empty cpuset `mems` for a cpuset with tasks.
    ENOSPC = 28,
    /// `EOPNOTSUPP`: a home node for a VMA whose policy is neither bind
    /// nor preferred-many.
    EOPNOTSUPP = 95,
}

impl Errno {
    /// The system call's return value (`-errno`).
    pub const fn to_ret(self) -> i32 {
        -(self as i32)
    }

    /// The name.
    pub const fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::ENOENT => "ENOENT",
            Errno::EIO => "EIO",
            Errno::ENOMEM => "ENOMEM",
            Errno::EFAULT => "EFAULT",
            Errno::EINVAL => "EINVAL",
            Errno::ENOSPC => "ENOSPC",
            Errno::EOPNOTSUPP => "EOPNOTSUPP",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

//! [`Mempolicies`]: the system side of memory policies over the memory
//! manager: Linux's globals (`iw_table`, `policy_zone`), the system calls,
//! and allocation through a policy.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use pv_abi::{PAGE_SHIFT, PAGE_SIZE};

use super::bitmap::{next_node_in, MAX_NUMNODES};
use super::policy::{sanitize_mpol_flags, Mempolicy};
use super::task::{Task, Vma};
use super::uapi::{
    MPOL_DEFAULT, MPOL_F_ADDR, MPOL_F_MEMS_ALLOWED, MPOL_F_NODE, MPOL_MF_MOVE, MPOL_MF_MOVE_ALL,
    MPOL_MF_STRICT, MPOL_MF_VALID,
};
use super::weights::IwTable;
use super::{Errno, Mode};
use crate::mm::nodemask::NodeMask;
use crate::mm::{AllocError, Gfp, Mm, Page, ZoneType, ZonelistKind};

/// "No interleave index" (Linux's `NO_INTERLEAVE_INDEX`, `(-1UL)`): an
/// allocation without an address, which interleaves by the task's
/// rotation rather than by index.
pub const NO_INTERLEAVE_INDEX: u64 = u64::MAX;

/// Bits a user nodemask may have (`PAGE_SIZE * BITS_PER_BYTE`).
const MAX_USER_NODES: u64 = PAGE_SIZE * 8;

/// The flags of a page fault's allocation: a user page, no failure report
/// (a fault that cannot be served is an OOM, reported as `ENOMEM`).
const FAULT_GFP: Gfp = Gfp::NOWARN;

/// The memory-policy subsystem of one memory manager.
pub struct Mempolicies<'m> {
    mm: &'m Mm,
    iw: IwTable,
    policy_zone: ZoneType,
}

/// `get_nodes(nmask, maxnode)`: a user nodemask of `maxnode - 1` bits
/// (`nmask` is the user's array of longs). An absent mask, or `maxnode`
/// 1, is the empty set; more than a page of bits is `EINVAL`; bits above
/// `MAX_NUMNODES` must be clear (`EINVAL`, checked a long at a time from
/// the top, as Linux does); a mask shorter than `maxnode` needs is
/// `EFAULT`.
pub fn get_nodes(nmask: Option<&[u64]>, maxnode: u64) -> Result<NodeMask, Errno> {
    let mut maxnode = maxnode.wrapping_sub(1);
    let Some(user) = nmask else {
        return Ok(NodeMask::NONE);
    };
    if maxnode == 0 {
        return Ok(NodeMask::NONE);
    }
    if maxnode > MAX_USER_NODES {
        return Err(Errno::EINVAL);
    }
    let word = |idx: u64, bits: u64| -> Result<u64, Errno> {
        let w = *user.get(idx as usize).ok_or(Errno::EFAULT)?;
        Ok(if !bits.is_multiple_of(64) {
            w & ((1u64 << (bits % 64)) - 1)
        } else {
            w
        })
    };
    let max = u64::from(MAX_NUMNODES);
    while maxnode > max {
        let bits = maxnode.min(64);
        let t = word((maxnode - 1) / 64, bits)?;
        if maxnode - bits >= max {
            maxnode -= bits;
        } else {
            maxnode = max;
            // `t &= ~((1UL << (MAX_NUMNODES % BITS_PER_LONG)) - 1)`: with
            // 64 nodes in 64-bit longs, the whole long.
        }
        if t != 0 {
            return Err(Errno::EINVAL);
        }
    }
    Ok(NodeMask::from_bits(word(0, maxnode)?))
}

/// `copy_nodes_to_user(mask, maxnode, nodes)`: `ALIGN(maxnode - 1, 64)`
/// bits are written; those past `nr_node_ids`' longs are zeroed (more than
/// a page of them is `EINVAL`); a user array too short is `EFAULT`.
pub fn copy_nodes_to_user(
    user: &mut [u64],
    maxnode: u64,
    nodes: NodeMask,
    nr_node_ids: u32,
) -> Result<(), Errno> {
    let mut copy = maxnode.wrapping_sub(1).wrapping_add(63) & !63; // bits
    let nbits = u64::from(nr_node_ids).div_ceil(64) * 64;
    if copy > nbits {
        if copy / 8 > PAGE_SIZE {
            return Err(Errno::EINVAL);
        }
        for k in nbits / 64..copy / 64 {
            *user.get_mut(k as usize).ok_or(Errno::EFAULT)? = 0;
        }
        copy = nbits;
    }
    if copy > 0 {
        *user.first_mut().ok_or(Errno::EFAULT)? = nodes.bits();
    }
    Ok(())
}

impl<'m> Mempolicies<'m> {
    /// The subsystem for `mm`: every interleave weight at its default;
    /// `policy_zone` the highest zone with managed pages on any node (as
    /// `build_zonerefs_node` leaves it).
    pub fn new(mm: &'m Mm) -> Self {
        let policy_zone = mm
            .zones()
            .filter(|z| z.managed() > 0)
            .map(|z| z.zone_type())
            .max()
            .unwrap_or(ZoneType::Dma);
        Mempolicies {
            mm,
            iw: IwTable::new(),
            policy_zone,
        }
    }

    /// The memory manager.
    pub const fn mm(&self) -> &'m Mm {
        self.mm
    }

    /// The weighted-interleave weights (sysfs).
    pub const fn weights(&self) -> &IwTable {
        &self.iw
    }

    /// `policy_zone`: allocations for lower zones ignore bind's nodemask.
    pub const fn policy_zone(&self) -> ZoneType {
        self.policy_zone
    }

    /// A new task in the top cpuset (allowed on every node with memory),
    /// without a policy.
    pub fn new_task(&self) -> Task {
        Task::new(self.mm.memory_nodes())
    }

    // ----- system calls -----

    /// `set_mempolicy(mode, nodes)` with the nodemask already in the
    /// kernel: `mode` carries the mode flags, as the system call's does.
    pub fn set_mempolicy(&self, t: &mut Task, mode: i32, nodes: NodeMask) -> Result<(), Errno> {
        let (mode, flags) = sanitize_mpol_flags(mode)?;
        self.do_set_mempolicy(t, mode, flags, nodes)
    }

    /// The `set_mempolicy(2)` system call: `nmask` is the user's array of
    /// longs (absent: NULL), `maxnode` as the system call takes it.
    pub fn sys_set_mempolicy(
        &self,
        t: &mut Task,
        mode: i32,
        nmask: Option<&[u64]>,
        maxnode: u64,
    ) -> Result<(), Errno> {
        let (mode, flags) = sanitize_mpol_flags(mode)?;
        let nodes = get_nodes(nmask, maxnode)?;
        self.do_set_mempolicy(t, mode, flags, nodes)
    }

    /// `do_set_mempolicy`: the new policy replaces the old only if it is
    /// valid; an interleaving policy restarts the rotation (`il_prev =
    /// MAX_NUMNODES - 1`, `il_weight = 0`).
    fn do_set_mempolicy(
        &self,
        t: &mut Task,
        mode: Mode,
        flags: u16,
        nodes: NodeMask,
    ) -> Result<(), Errno> {
        let new = Mempolicy::create(mode, flags, nodes, t.mems_allowed, self.mm.memory_nodes())?;
        t.mempolicy = new;
        if new.is_some_and(|p| p.mode().interleaves()) {
            t.il_prev = MAX_NUMNODES - 1;
            t.il_weight = 0;
        }
        Ok(())
    }

    /// `do_get_mempolicy(addr, flags)`: `(policy, nodemask)` as the
    /// `get_mempolicy(2)` system call reports them.
    ///
    /// - `MPOL_F_MEMS_ALLOWED` (alone): `(0, mems_allowed)`.
    /// - `MPOL_F_ADDR`: the policy of the VMA at `addr` (`EFAULT` if none;
    ///   a VMA without a policy reports `MPOL_DEFAULT`); without it `addr`
    ///   must be 0.
    /// - `MPOL_F_NODE`: with `MPOL_F_ADDR`, the node of the page at `addr`
    ///   (faulted in if it is not there yet: Linux's read fault would map
    ///   the zero page); else the node the task's interleave will use next
    ///   (weighted: the current node while its weight lasts); `EINVAL` for
    ///   any other policy.
    /// - Otherwise the mode with its mode flags.
    ///
    /// The nodemask is the user's for a policy with mode flags, else the
    /// policy's nodes (empty for default and local).
    pub fn get_mempolicy(
        &self,
        t: &mut Task,
        addr: u64,
        flags: u64,
    ) -> Result<(i32, NodeMask), Errno> {
        if flags & !(MPOL_F_NODE | MPOL_F_ADDR | MPOL_F_MEMS_ALLOWED) != 0 {
            return Err(Errno::EINVAL);
        }
        if flags & MPOL_F_MEMS_ALLOWED != 0 {
            if flags & (MPOL_F_NODE | MPOL_F_ADDR) != 0 {
                return Err(Errno::EINVAL);
            }
            return Ok((0, t.mems_allowed));
        }
        let (pol, is_task) = if flags & MPOL_F_ADDR != 0 {
            (t.vma(addr).ok_or(Errno::EFAULT)?.policy, false)
        } else if addr != 0 {
            return Err(Errno::EINVAL);
        } else {
            (t.mempolicy, true)
        };
        let pval = if flags & MPOL_F_NODE != 0 {
            if flags & MPOL_F_ADDR != 0 {
                self.fault(t, addr)?.nid as i32
            } else {
                match pol {
                    Some(p) if is_task && p.mode() == Mode::Interleave => {
                        next_node_in(t.il_prev, p.nodes()) as i32
                    }
                    Some(p) if is_task && p.mode() == Mode::WeightedInterleave => {
                        if t.il_weight != 0 {
                            t.il_prev as i32
                        } else {
                            next_node_in(t.il_prev, p.nodes()) as i32
                        }
                    }
                    _ => return Err(Errno::EINVAL),
                }
            }
        } else {
            pol.map_or(MPOL_DEFAULT, |p| p.uapi_mode())
        };
        let nodes = match pol {
            None => NodeMask::NONE,
            Some(p) if p.stores_user_nodemask() => p.w(),
            Some(p) => p.nodes(),
        };
        Ok((pval, nodes))
    }

    /// The `get_mempolicy(2)` system call: `EINVAL` if a nodemask is asked
    /// for with `maxnode` below `nr_node_ids`; the nodemask is written as
    /// `copy_nodes_to_user` writes it.
    pub fn sys_get_mempolicy(
        &self,
        t: &mut Task,
        policy: Option<&mut i32>,
        nmask: Option<&mut [u64]>,
        maxnode: u64,
        addr: u64,
        flags: u64,
    ) -> Result<(), Errno> {
        let nr_node_ids = self.mm.nr_nodes();
        if nmask.is_some() && maxnode < u64::from(nr_node_ids) {
            return Err(Errno::EINVAL);
        }
        let (pval, nodes) = self.get_mempolicy(t, addr, flags)?;
        if let Some(p) = policy {
            *p = pval;
        }
        if let Some(m) = nmask {
            copy_nodes_to_user(m, maxnode, nodes, nr_node_ids)?;
        }
        Ok(())
    }

    /// `mbind(start, len, mode, nodes, flags)` with the nodemask in the
    /// kernel (`mode` carries the mode flags). See [`Mempolicies::sys_mbind`].
    pub fn mbind(
        &self,
        t: &mut Task,
        start: u64,
        len: u64,
        mode: i32,
        nodes: NodeMask,
        flags: u32,
    ) -> Result<(), Errno> {
        let (mode, mode_flags) = sanitize_mpol_flags(mode)?;
        self.do_mbind(t, start, len, mode, mode_flags, nodes, flags)
    }

    /// The `mbind(2)` system call (`kernel_mbind` then `do_mbind`), in
    /// Linux's order of checks: unknown flags `EINVAL`; `MPOL_MF_MOVE_ALL`
    /// without `CAP_SYS_NICE` `EPERM`; an unaligned start `EINVAL`; a range
    /// that wraps `EINVAL`; an empty range succeeds before the policy is
    /// looked at; the policy's checks (`mpol_new`, `mpol_set_nodemask`);
    /// a range with no mapping, or (for a policy other than default) with a
    /// hole, `EFAULT`; a page of the range outside `nodes` with
    /// `MPOL_MF_STRICT` and no move flag `EIO` (nothing changed). Then the
    /// mappings of the range get the policy (split at its ends), and with
    /// a move flag the misplaced pages move; one that cannot with
    /// `MPOL_MF_STRICT` is `EIO`.
    #[allow(clippy::too_many_arguments)]
    pub fn sys_mbind(
        &self,
        t: &mut Task,
        start: u64,
        len: u64,
        mode: i32,
        nmask: Option<&[u64]>,
        maxnode: u64,
        flags: u32,
    ) -> Result<(), Errno> {
        let (mode, mode_flags) = sanitize_mpol_flags(mode)?;
        let nodes = get_nodes(nmask, maxnode)?;
        self.do_mbind(t, start, len, mode, mode_flags, nodes, flags)
    }

    #[allow(clippy::too_many_arguments)]
    fn do_mbind(
        &self,
        t: &mut Task,
        start: u64,
        len: u64,
        mode: Mode,
        mode_flags: u16,
        nodes: NodeMask,
        mut flags: u32,
    ) -> Result<(), Errno> {
        if flags & !MPOL_MF_VALID != 0 {
            return Err(Errno::EINVAL);
        }
        if flags & MPOL_MF_MOVE_ALL != 0 && !t.cap_sys_nice {
            return Err(Errno::EPERM);
        }
        if start & (PAGE_SIZE - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        if mode == Mode::Default {
            flags &= !MPOL_MF_STRICT;
        }
        let len = len.wrapping_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
        let end = start.wrapping_add(len);
        if end < start {
            return Err(Errno::EINVAL);
        }
        if end == start {
            return Ok(());
        }
        let mut new = Mempolicy::mpol_new(mode, mode_flags, nodes)?;
        let discontig_ok = new.is_none();
        if let Some(p) = &mut new {
            p.mpol_set_nodemask(nodes, t.mems_allowed, self.mm.memory_nodes())?;
        }

        // queue_pages_range: the range must be mapped.
        let r = t.vmas_in(start, end);
        if r.is_empty() {
            return Err(Errno::EFAULT);
        }
        if !discontig_ok {
            let vmas = &t.vmas[r.clone()];
            let head_hole = vmas[0].start > start;
            let mid_hole = vmas.windows(2).any(|w| w[0].end < w[1].start);
            let tail_hole = vmas[vmas.len() - 1].end < end;
            if head_hole || mid_hole || tail_hole {
                return Err(Errno::EFAULT);
            }
        }
        let moving = flags & (MPOL_MF_MOVE | MPOL_MF_MOVE_ALL) != 0;
        let misplaced: Vec<u64> = t
            .pages
            .range(start >> PAGE_SHIFT..end >> PAGE_SHIFT)
            .filter(|(_, p)| !nodes.contains(p.nid))
            .map(|(vpn, _)| vpn << PAGE_SHIFT)
            .collect();
        let mut nr_failed = 0;
        if !moving && !misplaced.is_empty() {
            if flags & MPOL_MF_STRICT != 0 {
                return Err(Errno::EIO);
            }
            nr_failed += misplaced.len();
        }

        // mbind_range.
        t.split_at(start);
        t.split_at(end);
        for k in t.vmas_in(start, end) {
            t.vmas[k].policy = new;
        }

        if moving {
            for addr in misplaced {
                if self.migrate_page(t, addr).is_err() {
                    nr_failed += 1;
                }
            }
        }
        if nr_failed > 0 && flags & MPOL_MF_STRICT != 0 {
            return Err(Errno::EIO);
        }
        Ok(())
    }

    /// Moves the page at `addr` to where its VMA's policy (or the task's)
    /// puts it now (`alloc_migration_target_by_mpol`), freeing the old one.
    fn migrate_page(&self, t: &mut Task, addr: u64) -> Result<(), AllocError> {
        let (pol, ilx) = self.get_vma_policy(t, addr, 0);
        let nid = self.mm.numa_node_id();
        let new = self.alloc_pages_mpol(t, FAULT_GFP, 0, &pol, ilx, nid)?;
        if let Some(old) = t.pages.insert(addr >> PAGE_SHIFT, new) {
            let _ = self.mm.free(old);
        }
        Ok(())
    }

    /// The `set_mempolicy_home_node(2)` system call: `EINVAL` for an
    /// unaligned start, any flag, a node that is not online, or a range
    /// that wraps; every VMA of the range with a policy gets the home node
    /// if its policy is bind or preferred-many, else `EOPNOTSUPP` (VMAs
    /// done before stay done); `ENOENT` if no VMA of the range has a
    /// policy.
    pub fn set_mempolicy_home_node(
        &self,
        t: &mut Task,
        start: u64,
        len: u64,
        home_node: u64,
        flags: u64,
    ) -> Result<(), Errno> {
        if start & (PAGE_SIZE - 1) != 0 || flags != 0 {
            return Err(Errno::EINVAL);
        }
        if home_node >= u64::from(MAX_NUMNODES)
            || !self.mm.online_nodes().contains(home_node as u32)
        {
            return Err(Errno::EINVAL);
        }
        let len = len.wrapping_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
        let end = start.wrapping_add(len);
        if end < start {
            return Err(Errno::EINVAL);
        }
        if end == start {
            return Ok(());
        }
        let mut err = Err(Errno::ENOENT);
        let mut k = t.vmas_in(start, end).start;
        while k < t.vmas.len() && t.vmas[k].start < end {
            let Some(mut p) = t.vmas[k].policy else {
                k += 1;
                continue;
            };
            if !matches!(p.mode(), Mode::Bind | Mode::PreferredMany) {
                return Err(Errno::EOPNOTSUPP);
            }
            p.set_home_node(home_node as u32);
            let (s, e) = (t.vmas[k].start.max(start), t.vmas[k].end.min(end));
            t.split_at(s);
            t.split_at(e);
            let k2 = t.vmas_in(s, e);
            for j in k2.clone() {
                t.vmas[j].policy = Some(p);
            }
            k = k2.end;
            err = Ok(());
        }
        err
    }

    /// A write of `new` to the task's cpuset's `mems`
    /// (`cpuset_change_task_nodemask` and `mpol_rebind_mm`): `ENOSPC` if
    /// empty, `EINVAL` if it names a node without memory (the top cpuset
    /// has only those). The task policy and every VMA policy are rebound
    /// ([`Mempolicy::rebind`]); pages do not move (`memory_migrate` off).
    pub fn cpuset_set_mems(&self, t: &mut Task, new: NodeMask) -> Result<(), Errno> {
        if new.is_empty() {
            return Err(Errno::ENOSPC);
        }
        if !new.is_subset(self.mm.memory_nodes()) {
            return Err(Errno::EINVAL);
        }
        t.mems_allowed = t.mems_allowed.or(new);
        if let Some(p) = &mut t.mempolicy {
            p.rebind(new);
        }
        t.mems_allowed = new;
        for v in &mut t.vmas {
            if let Some(p) = &mut v.policy {
                p.rebind(new);
            }
        }
        Ok(())
    }

    /// An anonymous mapping of `len` bytes (rounded up to pages), above the
    /// task's last one with a one-page gap: its address. `EINVAL` for 0.
    pub fn mmap(&self, t: &mut Task, len: u64) -> Result<u64, Errno> {
        let start = t.next_mmap;
        self.mmap_pgoff(t, len, start >> PAGE_SHIFT)
    }

    /// A mapping of `len` bytes of an object from page `pgoff` on (its
    /// interleave indexes start at `pgoff`, as a file's or shmem's do).
    pub fn mmap_pgoff(&self, t: &mut Task, len: u64, pgoff: u64) -> Result<u64, Errno> {
        if len == 0 || len > (1 << 40) {
            return Err(Errno::EINVAL);
        }
        let len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let start = t.next_mmap;
        t.next_mmap = start + len + PAGE_SIZE;
        t.vmas.push(Vma {
            start,
            end: start + len,
            pgoff,
            policy: None,
        });
        Ok(start)
    }

    /// `munmap(addr, len)`: the pages of the range are freed and its
    /// mappings removed (split at the ends). `EINVAL` for an unaligned
    /// address or an empty length.
    pub fn munmap(&self, t: &mut Task, addr: u64, len: u64) -> Result<(), Errno> {
        if addr & (PAGE_SIZE - 1) != 0 || len == 0 {
            return Err(Errno::EINVAL);
        }
        let end = addr
            .checked_add(len.div_ceil(PAGE_SIZE) * PAGE_SIZE)
            .ok_or(Errno::EINVAL)?;
        t.split_at(addr);
        t.split_at(end);
        let r = t.vmas_in(addr, end);
        t.vmas.drain(r);
        let vpns: Vec<u64> = t
            .pages
            .range(addr >> PAGE_SHIFT..end >> PAGE_SHIFT)
            .map(|(v, _)| *v)
            .collect();
        for v in vpns {
            if let Some(p) = t.pages.remove(&v) {
                let _ = self.mm.free(p);
            }
        }
        Ok(())
    }

    /// A write fault at `addr`: the page already there, or a new one from
    /// the VMA's policy (else the task's) at the VMA's interleave index.
    /// `EFAULT` outside every mapping, `ENOMEM` if the policy finds no page.
    pub fn fault(&self, t: &mut Task, addr: u64) -> Result<Page, Errno> {
        if t.vma(addr).is_none() {
            return Err(Errno::EFAULT);
        }
        if let Some(p) = t.page_at(addr) {
            return Ok(*p);
        }
        let p = self
            .alloc_page_vma(t, FAULT_GFP, addr)
            .map_err(|_| Errno::ENOMEM)?;
        t.pages.insert(addr >> PAGE_SHIFT, p);
        Ok(p)
    }

    /// The task exits: every page it faulted in is freed and its mappings
    /// and policy are dropped. The problems, if a page would not free.
    pub fn exit(&self, t: &mut Task) -> Vec<String> {
        let mut bad = Vec::new();
        for (_, p) in core::mem::take(&mut t.pages) {
            if let Err(e) = self.mm.free(p) {
                bad.push(format!("freeing {p:?}: {e}"));
            }
        }
        t.vmas.clear();
        t.mempolicy = None;
        bad
    }

    // ----- allocation -----

    /// `get_task_policy`: the task's policy, else preferred on the CPU's
    /// node (`preferred_node_policy[numa_node_id()]`), else local.
    pub fn get_task_policy(&self, t: &Task) -> Mempolicy {
        match t.mempolicy {
            Some(p) => p,
            None => {
                let node = self.mm.numa_node_id();
                if node < self.mm.nr_nodes() {
                    Mempolicy::preferred_node(node)
                } else {
                    Mempolicy::LOCAL
                }
            }
        }
    }

    /// `get_vma_policy(vma, addr, order)`: the VMA's policy, else the
    /// task's, and for an interleaving one the interleave index of the page
    /// of `order` at `addr` (0 outside every VMA).
    pub fn get_vma_policy(&self, t: &Task, addr: u64, order: u32) -> (Mempolicy, u64) {
        let vma = t.vma(addr);
        let pol = vma
            .and_then(|v| v.policy)
            .unwrap_or_else(|| self.get_task_policy(t));
        let ilx = match vma {
            Some(v) if pol.mode().interleaves() => v.ilx(addr, order),
            _ => 0,
        };
        (pol, ilx)
    }

    /// `alloc_pages(gfp, order)` in task context: the task's policy (local
    /// for `__GFP_THISNODE`), no interleave index, from the CPU's node.
    pub fn alloc_pages(&self, t: &mut Task, gfp: Gfp, order: u32) -> Result<Page, AllocError> {
        let pol = if gfp.contains(Gfp::THISNODE) {
            Mempolicy::LOCAL
        } else {
            self.get_task_policy(t)
        };
        let nid = self.mm.numa_node_id();
        self.alloc_pages_mpol(t, gfp, order, &pol, NO_INTERLEAVE_INDEX, nid)
    }

    /// `vma_alloc_folio(gfp, 0, vma, addr)`: one page for `addr` by its
    /// VMA's policy; `NoMemory` outside every VMA.
    pub fn alloc_page_vma(&self, t: &mut Task, gfp: Gfp, addr: u64) -> Result<Page, AllocError> {
        if t.vma(addr).is_none() {
            return Err(AllocError::NoMemory);
        }
        let (pol, ilx) = self.get_vma_policy(t, addr, 0);
        let nid = self.mm.numa_node_id();
        self.alloc_pages_mpol(t, gfp, 0, &pol, ilx, nid)
    }

    /// `alloc_pages_mpol(gfp, order, pol, ilx, nid)`: the preferred node
    /// and nodemask from [`Mempolicies::policy_nodemask`], restricted to
    /// the task's cpuset; preferred-many in two passes (the nodemask with
    /// `__GFP_NOWARN` and no retry, then none); an interleaving policy
    /// counts `interleave_hit` when the page is on the node it chose.
    pub fn alloc_pages_mpol(
        &self,
        t: &mut Task,
        gfp: Gfp,
        order: u32,
        pol: &Mempolicy,
        ilx: u64,
        nid: u32,
    ) -> Result<Page, AllocError> {
        let mut nid = nid;
        let nodemask = self.policy_nodemask(t, gfp, pol, ilx, &mut nid);
        if nid >= self.mm.nr_nodes() {
            nid = self.mm.numa_node_id();
        }
        let cpuset = self.cpuset_mask(t);
        let restrict = |m: Option<NodeMask>| match (m, cpuset) {
            (Some(m), Some(c)) => Some(m.and(c)),
            (m, None) => m,
            (None, c) => c,
        };
        if pol.mode() == Mode::PreferredMany {
            let first = restrict(nodemask);
            return match self
                .mm
                .__alloc_pages(gfp | Gfp::NOWARN, order, nid, first.as_ref())
            {
                Ok(p) => Ok(p),
                Err(_) => self.mm.__alloc_pages(gfp, order, nid, cpuset.as_ref()),
            };
        }
        let page = self
            .mm
            .__alloc_pages(gfp, order, nid, restrict(nodemask).as_ref())?;
        if pol.mode().interleaves() {
            self.mm.count_interleave_hit(&page, nid);
        }
        Ok(page)
    }

    /// `policy_nodemask(gfp, pol, ilx, &nid)`: the nodemask to restrict the
    /// allocation to, and the preferred node in `nid` (see the module's
    /// table). Interleaving without an index advances the task's rotation.
    pub fn policy_nodemask(
        &self,
        t: &mut Task,
        gfp: Gfp,
        pol: &Mempolicy,
        ilx: u64,
        nid: &mut u32,
    ) -> Option<NodeMask> {
        match pol.mode() {
            Mode::Preferred => {
                *nid = pol.nodes().first_node().unwrap_or(*nid);
                None
            }
            Mode::PreferredMany => {
                if let Some(h) = pol.home_node() {
                    *nid = h;
                }
                Some(pol.nodes())
            }
            Mode::Bind => {
                let zone = gfp.zone().unwrap_or(ZoneType::Normal);
                let m = (self.apply_policy_zone(pol, zone)
                    && !pol.nodes().and(t.mems_allowed).is_empty())
                .then_some(pol.nodes());
                if let Some(h) = pol.home_node() {
                    *nid = h;
                }
                m
            }
            Mode::Interleave => {
                *nid = if ilx == NO_INTERLEAVE_INDEX {
                    self.interleave_nodes(t, pol)
                } else {
                    self.interleave_nid(pol, ilx)
                };
                None
            }
            Mode::WeightedInterleave => {
                *nid = if ilx == NO_INTERLEAVE_INDEX {
                    self.weighted_interleave_nodes(t, pol)
                } else {
                    self.weighted_interleave_nid(pol, ilx)
                };
                None
            }
            Mode::Local | Mode::Default => None,
        }
    }

    /// `apply_policy_zone(pol, zone)`: bind restricts allocations for
    /// `policy_zone` and above (if the policy's nodes have memory at all).
    pub fn apply_policy_zone(&self, pol: &Mempolicy, zone: ZoneType) -> bool {
        if pol.nodes().and(self.mm.memory_nodes()).is_empty() {
            return false;
        }
        zone >= self.policy_zone
    }

    /// The task's cpuset restriction: `None` in the top cpuset (every node
    /// with memory allowed), else `mems_allowed`.
    fn cpuset_mask(&self, t: &Task) -> Option<NodeMask> {
        if self.mm.memory_nodes().is_subset(t.mems_allowed) {
            None
        } else {
            Some(t.mems_allowed)
        }
    }

    /// `interleave_nodes(pol)`: the node after `il_prev` in the policy's
    /// nodes, which becomes `il_prev`.
    pub fn interleave_nodes(&self, t: &mut Task, pol: &Mempolicy) -> u32 {
        let nid = next_node_in(t.il_prev, pol.nodes());
        if nid < MAX_NUMNODES {
            t.il_prev = nid;
        }
        nid
    }

    /// `weighted_interleave_nodes(pol)`: `il_prev` while its weight lasts
    /// (`il_weight` counts down), then the next node, whose weight is
    /// loaded from the table.
    pub fn weighted_interleave_nodes(&self, t: &mut Task, pol: &Mempolicy) -> u32 {
        let mut node = t.il_prev;
        if t.il_weight == 0 || !pol.nodes().contains(node) {
            node = next_node_in(node, pol.nodes());
            if node == MAX_NUMNODES {
                return node;
            }
            t.il_prev = node;
            t.il_weight = self.iw.get(node);
        }
        t.il_weight -= 1;
        node
    }

    /// `interleave_nid(pol, ilx)`: the `(ilx % weight)`-th node of the
    /// policy (`numa_node_id()` for no nodes).
    pub fn interleave_nid(&self, pol: &Mempolicy, ilx: u64) -> u32 {
        let nodes = pol.nodes();
        let n = u64::from(nodes.weight());
        if n == 0 {
            return self.mm.numa_node_id();
        }
        nodes
            .nth((ilx % n) as u32)
            .unwrap_or(self.mm.numa_node_id())
    }

    /// `weighted_interleave_nid(pol, ilx)`: `ilx` modulo the weights'
    /// total, then the node whose run of weight holds it.
    pub fn weighted_interleave_nid(&self, pol: &Mempolicy, ilx: u64) -> u32 {
        let nodes = pol.nodes();
        if nodes.is_empty() {
            return self.mm.numa_node_id();
        }
        let total: u64 = nodes.iter().map(|n| u64::from(self.iw.get(n))).sum();
        let mut target = ilx % total;
        let mut nid = nodes.first_node().unwrap_or(0);
        while target != 0 {
            let w = u64::from(self.iw.get(nid));
            if target < w {
                break;
            }
            target -= w;
            nid = next_node_in(nid, nodes);
        }
        nid
    }

    /// `mempolicy_slab_node()`: the node a slab allocation in this task's
    /// context starts from: `numa_mem_id()` without a policy or with local;
    /// preferred's node; the next interleave node; bind and preferred-many:
    /// the first node of the local zonelist in the policy's nodes.
    pub fn mempolicy_slab_node(&self, t: &mut Task) -> u32 {
        let node = self.mm.numa_mem_id();
        let Some(pol) = t.mempolicy else {
            return node;
        };
        match pol.mode() {
            Mode::Preferred => pol.nodes().first_node().unwrap_or(node),
            Mode::Interleave => self.interleave_nodes(t, &pol),
            Mode::WeightedInterleave => self.weighted_interleave_nodes(t, &pol),
            Mode::Bind | Mode::PreferredMany => self
                .mm
                .zonelist(node, ZonelistKind::Fallback)
                .and_then(|zl| zl.first_zone(ZoneType::Normal, Some(&pol.nodes())))
                .map_or(node, |z| z.nid),
            Mode::Local | Mode::Default => node,
        }
    }
}

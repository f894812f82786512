//! [`Mempolicy`]: one policy (Linux's `struct mempolicy`), how it is
//! created from a mode, flags and a nodemask (`mpol_new` and
//! `mpol_set_nodemask`, with their error cases) and how it is rebound when
//! the allowed nodes change (`mpol_rebind_policy`).

use core::fmt;

use super::bitmap::{nodes_remap, relative_nodemask};
use super::uapi::{
    MPOL_F_NUMA_BALANCING, MPOL_F_RELATIVE_NODES, MPOL_F_STATIC_NODES, MPOL_MAX, MPOL_MODE_FLAGS,
};
use super::{Errno, Mode};
use crate::mm::nodemask::NodeMask;
use crate::mm::NUMA_NO_NODE;

/// Internal flag: migrate on fault (`MPOL_F_MOF`), set with
/// `MPOL_F_NUMA_BALANCING`.
pub const MPOL_F_MOF: u16 = 1 << 3;
/// Internal flag: migrate on protnone reference on node (`MPOL_F_MORON`).
pub const MPOL_F_MORON: u16 = 1 << 4;

/// Linux's `sanitize_mpol_flags`: splits a `set_mempolicy`/`mbind` mode
/// argument into the mode and its mode flags. `EINVAL` for a mode at or
/// above `MPOL_MAX` (negative ones and unknown flag bits included), for
/// both `MPOL_F_STATIC_NODES` and `MPOL_F_RELATIVE_NODES`, and for
/// `MPOL_F_NUMA_BALANCING` with a mode other than bind or preferred-many
/// (which it marks `MPOL_F_MOF | MPOL_F_MORON`).
pub fn sanitize_mpol_flags(mode: i32) -> Result<(Mode, u16), Errno> {
    let mut flags = (mode & MPOL_MODE_FLAGS) as u16;
    let raw = (mode & !MPOL_MODE_FLAGS) as u32;
    if raw >= MPOL_MAX as u32 {
        return Err(Errno::EINVAL);
    }
    let mode = Mode::from_raw(raw as i32).ok_or(Errno::EINVAL)?;
    let f = i32::from(flags);
    if f & MPOL_F_STATIC_NODES != 0 && f & MPOL_F_RELATIVE_NODES != 0 {
        return Err(Errno::EINVAL);
    }
    if f & MPOL_F_NUMA_BALANCING != 0 {
        if matches!(mode, Mode::Bind | Mode::PreferredMany) {
            flags |= MPOL_F_MOF | MPOL_F_MORON;
        } else {
            return Err(Errno::EINVAL);
        }
    }
    Ok((mode, flags))
}

/// One memory policy (`struct mempolicy`). The default policy is no policy
/// at all (`None` where a policy is optional), as in Linux, where a NULL
/// policy means "fall back to the next level" and `default_policy` is
/// local allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mempolicy {
    mode: Mode,
    flags: u16,
    nodes: NodeMask,
    /// Linux's `w` union: `user_nodemask` when the policy stores the
    /// user's nodemask (any mode flag), else `cpuset_mems_allowed`. One
    /// field, as in Linux, so that reading it "as the other member" gives
    /// Linux's answer.
    w: NodeMask,
    home_node: u32,
}

impl Mempolicy {
    /// Linux's `default_policy`: local allocation.
    pub const LOCAL: Mempolicy = Mempolicy {
        mode: Mode::Local,
        flags: 0,
        nodes: NodeMask::NONE,
        w: NodeMask::NONE,
        home_node: NUMA_NO_NODE,
    };

    /// `mpol_new(mode, flags, nodes)`: the mode-specific checks on the
    /// user's nodemask, before it is restricted to the allowed nodes.
    /// `Ok(None)` for `MPOL_DEFAULT` (which takes no nodes but ignores
    /// flags, as Linux does); `MPOL_PREFERRED` with no nodes becomes
    /// `MPOL_LOCAL` (`EINVAL` with static or relative nodes); local takes
    /// neither nodes nor those flags; every other mode needs a node.
    pub fn mpol_new(mode: Mode, flags: u16, nodes: NodeMask) -> Result<Option<Mempolicy>, Errno> {
        let rel_or_static = i32::from(flags) & (MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES) != 0;
        let mode = match mode {
            Mode::Default => {
                return if nodes.is_empty() {
                    Ok(None)
                } else {
                    Err(Errno::EINVAL)
                };
            }
            Mode::Preferred if nodes.is_empty() => {
                if rel_or_static {
                    return Err(Errno::EINVAL);
                }
                Mode::Local
            }
            Mode::Local => {
                if !nodes.is_empty() || rel_or_static {
                    return Err(Errno::EINVAL);
                }
                Mode::Local
            }
            m => {
                if nodes.is_empty() {
                    return Err(Errno::EINVAL);
                }
                m
            }
        };
        Ok(Some(Mempolicy {
            mode,
            flags,
            nodes: NodeMask::NONE,
            w: NodeMask::NONE,
            home_node: NUMA_NO_NODE,
        }))
    }

    /// `mpol_set_nodemask(pol, nodes)`: restricts the user's nodes to the
    /// allowed nodes with memory (`cpuset_current_mems_allowed &
    /// node_states[N_MEMORY]`; relative nodes are mapped onto that set
    /// first), remembers the user's nodemask (any mode flag) or the allowed
    /// nodes, and runs the mode's constructor: `EINVAL` if no node is left;
    /// preferred keeps the first. Local policies have nothing to set.
    pub fn mpol_set_nodemask(
        &mut self,
        nodes: NodeMask,
        mems_allowed: NodeMask,
        memory: NodeMask,
    ) -> Result<(), Errno> {
        if self.mode == Mode::Local {
            return Ok(());
        }
        let allowed = mems_allowed.and(memory);
        let effective = if i32::from(self.flags) & MPOL_F_RELATIVE_NODES != 0 {
            relative_nodemask(nodes, allowed)
        } else {
            nodes.and(allowed)
        };
        self.w = if self.stores_user_nodemask() {
            nodes
        } else {
            mems_allowed
        };
        if effective.is_empty() {
            return Err(Errno::EINVAL);
        }
        self.nodes = match self.mode {
            // mpol_new_preferred: the first node only.
            Mode::Preferred => effective
                .first_node()
                .map_or(NodeMask::NONE, NodeMask::single),
            // mpol_new_nodemask.
            _ => effective,
        };
        Ok(())
    }

    /// `mpol_new` then `mpol_set_nodemask`.
    pub fn create(
        mode: Mode,
        flags: u16,
        nodes: NodeMask,
        mems_allowed: NodeMask,
        memory: NodeMask,
    ) -> Result<Option<Mempolicy>, Errno> {
        let mut p = Mempolicy::mpol_new(mode, flags, nodes)?;
        if let Some(p) = &mut p {
            p.mpol_set_nodemask(nodes, mems_allowed, memory)?;
        }
        Ok(p)
    }

    /// `preferred_node_policy[nid]`: the policy a task without one uses,
    /// preferred on its CPU's node (with `MPOL_F_MOF | MPOL_F_MORON`).
    pub fn preferred_node(nid: u32) -> Mempolicy {
        Mempolicy {
            mode: Mode::Preferred,
            flags: MPOL_F_MOF | MPOL_F_MORON,
            nodes: NodeMask::single(nid),
            w: NodeMask::NONE,
            home_node: NUMA_NO_NODE,
        }
    }

    /// The mode (never `Default`).
    pub const fn mode(&self) -> Mode {
        self.mode
    }

    /// Every flag, internal ones included.
    pub const fn flags(&self) -> u16 {
        self.flags
    }

    /// The user-visible mode flags (`flags & MPOL_MODE_FLAGS`).
    pub const fn mode_flags(&self) -> u16 {
        self.flags & MPOL_MODE_FLAGS as u16
    }

    /// Whether `flag` (one of the uapi mode flags) is set.
    pub const fn has_flag(&self, flag: i32) -> bool {
        self.flags as i32 & flag != 0
    }

    /// The nodes it allocates on (`pol->nodes`): preferred's one node,
    /// the mask of bind, interleave, weighted interleave and
    /// preferred-many; empty for local.
    pub const fn nodes(&self) -> NodeMask {
        self.nodes
    }

    /// `mpol_store_user_nodemask`: any mode flag (static, relative, or
    /// NUMA balancing) keeps the user's nodemask in `w`.
    pub const fn stores_user_nodemask(&self) -> bool {
        self.mode_flags() != 0
    }

    /// The `w` union: the user's nodemask or the allowed nodes at the last
    /// (re)bind, whichever [`Mempolicy::stores_user_nodemask`] says.
    pub const fn w(&self) -> NodeMask {
        self.w
    }

    /// The home node (`set_mempolicy_home_node`), if set.
    pub const fn home_node(&self) -> Option<u32> {
        if self.home_node == NUMA_NO_NODE {
            None
        } else {
            Some(self.home_node)
        }
    }

    pub(super) fn set_home_node(&mut self, nid: u32) {
        self.home_node = nid;
    }

    /// `mpol_rebind_policy(pol, newmask)`, Linux 6.x: nothing for local;
    /// nothing if the policy keeps no user nodemask and the allowed nodes
    /// did not change; else the mode's rebind:
    ///
    /// - bind, interleave, weighted interleave (`mpol_rebind_nodemask`):
    ///   static nodes: the user's nodemask ∩ `newmask`; relative nodes:
    ///   the user's nodemask folded and mapped onto `newmask`; neither:
    ///   `nodes_remap(nodes, old allowed, newmask)`, and `newmask` is
    ///   remembered. An empty result becomes `newmask` itself.
    /// - preferred and preferred-many (`mpol_rebind_preferred`): only the
    ///   remembered allowed nodes change; the node(s) stay. (Linux before
    ///   5.14 remapped the preferred node; since "mm/mempolicy: don't handle
    ///   MPOL_LOCAL like a fake MPOL_PREFERRED policy" it does not, and the
    ///   allocator's cpuset check keeps allocations inside the new set.)
    pub fn rebind(&mut self, newmask: NodeMask) {
        if self.mode == Mode::Local {
            return;
        }
        if !self.stores_user_nodemask() && self.w == newmask {
            return;
        }
        match self.mode {
            Mode::Bind | Mode::Interleave | Mode::WeightedInterleave => {
                let tmp = if self.has_flag(MPOL_F_STATIC_NODES) {
                    self.w.and(newmask)
                } else if self.has_flag(MPOL_F_RELATIVE_NODES) {
                    relative_nodemask(self.w, newmask)
                } else {
                    let tmp = nodes_remap(self.nodes, self.w, newmask);
                    self.w = newmask;
                    tmp
                };
                self.nodes = if tmp.is_empty() { newmask } else { tmp };
            }
            Mode::Preferred | Mode::PreferredMany => self.w = newmask,
            Mode::Default | Mode::Local => {}
        }
    }

    /// The mode argument `get_mempolicy` reports: mode | mode flags.
    pub const fn uapi_mode(&self) -> i32 {
        self.mode as i32 | self.mode_flags() as i32
    }
}

/// Linux's `mpol_to_str`: `mode[=flags][:nodes]`, e.g. `bind=static:0-1`,
/// `interleave:0,2`, `local`, `prefer (many)=relative|balancing:1-2`.
impl fmt::Display for Mempolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mode.name())?;
        let mf = i32::from(self.mode_flags());
        if mf != 0 {
            f.write_str("=")?;
            if mf & MPOL_F_STATIC_NODES != 0 {
                f.write_str("static")?;
            } else if mf & MPOL_F_RELATIVE_NODES != 0 {
                f.write_str("relative")?;
            }
            if mf & MPOL_F_NUMA_BALANCING != 0 {
                if !(mf as u32).is_power_of_two() {
                    f.write_str("|")?;
                }
                f.write_str("balancing")?;
            }
        }
        if !self.nodes.is_empty() {
            write!(f, ":{}", self.nodes)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Mempolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mempolicy({self}")?;
        if self.w != NodeMask::NONE {
            let what = if self.stores_user_nodemask() {
                "user"
            } else {
                "allowed"
            };
            write!(f, ", {what} {}", self.w)?;
        }
        if let Some(h) = self.home_node() {
            write!(f, ", home {h}")?;
        }
        f.write_str(")")
    }
}

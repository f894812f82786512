//! [`NodeMask`]: a set of node ids, Linux's `nodemask_t` for up to 64 nodes
//! (`pv_abi::vnuma::MAX_VNODES`).

use alloc::string::String;
use core::fmt;

/// A set of nodes (ids 0..64), printed in Linux's nodelist format (`0-2,5`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NodeMask(u64);

impl NodeMask {
    /// Nodes a mask can hold.
    pub const MAX_NODES: u32 = 64;
    /// The empty set (`NODE_MASK_NONE`).
    pub const NONE: NodeMask = NodeMask(0);

    /// From a bitmap (bit N = node N).
    pub const fn from_bits(bits: u64) -> Self {
        NodeMask(bits)
    }

    /// The bitmap.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// `{nid}`, or empty if `nid` cannot be in a mask.
    pub const fn single(nid: u32) -> Self {
        if nid < Self::MAX_NODES {
            NodeMask(1 << nid)
        } else {
            NodeMask(0)
        }
    }

    /// Nodes `0..n` (all of them for `n >= 64`).
    pub const fn first(n: u32) -> Self {
        if n >= Self::MAX_NODES {
            NodeMask(u64::MAX)
        } else {
            NodeMask((1u64 << n) - 1)
        }
    }

    /// Adds `nid` (`node_set`); `false` if it cannot be in a mask.
    pub fn set(&mut self, nid: u32) -> bool {
        if nid < Self::MAX_NODES {
            self.0 |= 1 << nid;
            true
        } else {
            false
        }
    }

    /// Removes `nid` (`node_clear`).
    pub fn clear(&mut self, nid: u32) {
        if nid < Self::MAX_NODES {
            self.0 &= !(1 << nid);
        }
    }

    /// Whether `nid` is in the set (`node_isset`).
    #[inline]
    pub const fn contains(self, nid: u32) -> bool {
        nid < Self::MAX_NODES && self.0 & (1 << nid) != 0
    }

    /// Whether the set is empty (`nodes_empty`).
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of nodes (`nodes_weight`).
    pub const fn weight(self) -> u32 {
        self.0.count_ones()
    }

    /// The lowest node (`first_node`).
    pub const fn first_node(self) -> Option<u32> {
        if self.0 == 0 {
            None
        } else {
            Some(self.0.trailing_zeros())
        }
    }

    /// The lowest node above `nid` (`next_node`).
    pub const fn next_node(self, nid: u32) -> Option<u32> {
        if nid >= Self::MAX_NODES - 1 {
            return None;
        }
        NodeMask(self.0 & (u64::MAX << (nid + 1))).first_node()
    }

    /// The `n`-th node (0-based) in increasing order (`node_nth`-like, as
    /// interleave by index needs).
    pub fn nth(self, n: u32) -> Option<u32> {
        self.iter().nth(n as usize)
    }

    /// Intersection (`nodes_and`).
    pub const fn and(self, other: NodeMask) -> NodeMask {
        NodeMask(self.0 & other.0)
    }

    /// Union (`nodes_or`).
    pub const fn or(self, other: NodeMask) -> NodeMask {
        NodeMask(self.0 | other.0)
    }

    /// `self` without `other` (`nodes_andnot`).
    pub const fn andnot(self, other: NodeMask) -> NodeMask {
        NodeMask(self.0 & !other.0)
    }

    /// Whether every node of `self` is in `other` (`nodes_subset`).
    pub const fn is_subset(self, other: NodeMask) -> bool {
        self.0 & !other.0 == 0
    }

    /// The nodes, in increasing order.
    pub fn iter(self) -> impl Iterator<Item = u32> {
        let mut bits = self.0;
        core::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let n = bits.trailing_zeros();
            bits &= bits - 1;
            Some(n)
        })
    }

    /// Parses a nodelist (`0-2,5`, `3`, empty for none); `None` if malformed
    /// or a node is 64 or more.
    pub fn parse(s: &str) -> Option<NodeMask> {
        let mut m = NodeMask::NONE;
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
                None => {
                    let a = part.parse::<u32>().ok()?;
                    (a, a)
                }
            };
            if a > b || b >= Self::MAX_NODES {
                return None;
            }
            for n in a..=b {
                m.set(n);
            }
        }
        Some(m)
    }
}

impl FromIterator<u32> for NodeMask {
    /// Nodes of 64 or more are dropped.
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        let mut m = NodeMask::NONE;
        for n in iter {
            m.set(n);
        }
        m
    }
}

/// Linux's `%*pbl`: `0-2,5`; empty for the empty set.
impl fmt::Display for NodeMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: alloc::vec::Vec<u32> = self.iter().collect();
        if nodes.is_empty() {
            return Ok(());
        }
        let s: String = crate::numa::format_cpus(&nodes);
        f.write_str(&s)
    }
}

impl fmt::Debug for NodeMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeMask({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    #[test]
    fn set_operations() {
        let mut m = NodeMask::NONE;
        assert!(m.set(0) && m.set(5) && m.set(63));
        assert!(!m.set(64));
        assert_eq!(m.weight(), 3);
        assert_eq!(m.iter().collect::<Vec<_>>(), [0, 5, 63]);
        assert_eq!(m.first_node(), Some(0));
        assert_eq!(m.next_node(0), Some(5));
        assert_eq!(m.next_node(5), Some(63));
        assert_eq!(m.next_node(63), None);
        assert_eq!(m.nth(1), Some(5));
        assert_eq!(m.nth(3), None);
        m.clear(5);
        assert!(!m.contains(5) && m.contains(63) && !m.contains(64));
        assert_eq!(NodeMask::first(3).to_string(), "0-2");
        assert_eq!(NodeMask::first(64), NodeMask::from_bits(u64::MAX));
        assert_eq!(NodeMask::single(70), NodeMask::NONE);
        assert!(NodeMask::single(1).is_subset(NodeMask::first(2)));
        assert_eq!(
            NodeMask::first(4).andnot(NodeMask::single(2)).to_string(),
            "0-1,3"
        );
        assert_eq!(NodeMask::NONE.to_string(), "");
    }

    #[test]
    fn parsing() {
        assert_eq!(
            NodeMask::parse("0-2,5"),
            Some([0, 1, 2, 5].into_iter().collect())
        );
        assert_eq!(NodeMask::parse(""), Some(NodeMask::NONE));
        assert_eq!(NodeMask::parse("3-1"), None);
        assert_eq!(NodeMask::parse("64"), None);
        assert_eq!(NodeMask::parse("x"), None);
    }
}

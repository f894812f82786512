//! The nodemask operations memory policies are built from, as Linux's
//! `include/linux/nodemask.h` and `lib/bitmap.c` define them, over
//! [`NodeMask`] (`MAX_NUMNODES` = [`MAX_NUMNODES`]).
//!
//! | here | Linux | meaning |
//! | --- | --- | --- |
//! | [`next_node_in`] | `next_node_in` | the next node after `n`, wrapping; `MAX_NUMNODES` if empty |
//! | [`pos_to_ord`] | `bitmap_pos_to_ord` | which set bit `n` is (0-based), if set |
//! | [`nodes_fold`] | `nodes_fold` / `bitmap_fold` | node `n` becomes node `n % sz` |
//! | [`nodes_onto`] | `nodes_onto` / `bitmap_onto` | node `m` of the result is set iff the ordinal of `m` in `relmap` is in `orig` |
//! | [`nodes_remap`] | `nodes_remap` / `bitmap_remap` | the k-th node of `old` becomes the (k mod weight)-th node of `new`; nodes not in `old` stay |
//! | [`node_remap`] | `node_remap` / `bitmap_bitremap` | the same for one node |
//! | [`relative_nodemask`] | `mpol_relative_nodemask` | `nodes_onto(nodes_fold(orig, weight(rel)), rel)` |

use crate::mm::nodemask::NodeMask;

/// Linux's `MAX_NUMNODES`: the nodes a [`NodeMask`] holds.
pub const MAX_NUMNODES: u32 = NodeMask::MAX_NODES;

/// `next_node_in(node, mask)`: the first node of `mask` above `node`, else
/// its first node; [`MAX_NUMNODES`] for an empty mask.
pub fn next_node_in(node: u32, mask: NodeMask) -> u32 {
    mask.next_node(node)
        .or_else(|| mask.first_node())
        .unwrap_or(MAX_NUMNODES)
}

/// `bitmap_pos_to_ord(mask, pos)`: how many nodes of `mask` are below
/// `pos`, if `pos` is in `mask`.
pub fn pos_to_ord(mask: NodeMask, pos: u32) -> Option<u32> {
    if !mask.contains(pos) {
        return None;
    }
    let below = if pos == 0 { 0 } else { u64::MAX >> (64 - pos) };
    Some((mask.bits() & below).count_ones())
}

/// `nodes_fold(orig, sz)`: every node `n` of `orig` sets node `n % sz`.
/// Linux divides by `sz` and never calls it with 0; here 0 gives the empty
/// set.
pub fn nodes_fold(orig: NodeMask, sz: u32) -> NodeMask {
    if sz == 0 {
        return NodeMask::NONE;
    }
    orig.iter().map(|n| n % sz).collect()
}

/// `nodes_onto(orig, relmap)`: node `m` is set iff `m` is the `n`-th node
/// of `relmap` (0-based) and `n` is in `orig`.
pub fn nodes_onto(orig: NodeMask, relmap: NodeMask) -> NodeMask {
    relmap
        .iter()
        .enumerate()
        .filter(|&(ord, _)| orig.contains(ord as u32))
        .map(|(_, m)| m)
        .collect()
}

/// `node_remap(oldbit, old, new)` (`bitmap_bitremap`): the `k`-th node of
/// `old` becomes the `(k % weight(new))`-th node of `new`; a node not in
/// `old`, or an empty `new`, maps to itself.
pub fn node_remap(oldbit: u32, old: NodeMask, new: NodeMask) -> u32 {
    let w = new.weight();
    match pos_to_ord(old, oldbit) {
        Some(n) if w != 0 => new.nth(n % w).unwrap_or(oldbit),
        _ => oldbit,
    }
}

/// `nodes_remap(src, old, new)` (`bitmap_remap`): [`node_remap`] of every
/// node of `src`.
pub fn nodes_remap(src: NodeMask, old: NodeMask, new: NodeMask) -> NodeMask {
    src.iter().map(|n| node_remap(n, old, new)).collect()
}

/// `mpol_relative_nodemask(orig, rel)`: `orig` read as positions within
/// `rel` (wrapping at its weight).
pub fn relative_nodemask(orig: NodeMask, rel: NodeMask) -> NodeMask {
    nodes_onto(nodes_fold(orig, rel.weight()), rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(s: &str) -> NodeMask {
        NodeMask::parse(s).unwrap()
    }

    #[test]
    fn linux_examples() {
        // lib/bitmap.c's comments.
        // bitmap_remap: old 4-7, new 12-13,15: 5 -> 13, 7 -> 12 (wraps).
        assert_eq!(node_remap(5, m("4-7"), m("12-13,15")), 13);
        assert_eq!(node_remap(7, m("4-7"), m("12-13,15")), 12);
        assert_eq!(node_remap(3, m("4-7"), m("12-13,15")), 3);
        assert_eq!(
            nodes_remap(m("1,5,7"), m("4-7"), m("12-13,15")),
            m("1,12-13")
        );
        // bitmap_onto: orig 1, relmap 30-39 -> 31; orig 0-3 onto 1,3,5,7 -> all.
        assert_eq!(nodes_onto(m("1"), m("30-39")), m("31"));
        assert_eq!(nodes_onto(m("0-3"), m("1,3,5,7")), m("1,3,5,7"));
        assert_eq!(nodes_onto(m("4,9"), m("1,3,5,7")), m(""));
        // bitmap_fold.
        assert_eq!(nodes_fold(m("0,5,9,12"), 4), m("0-1"));
        assert_eq!(nodes_fold(m("3"), 0), m(""));
        assert_eq!(pos_to_ord(m("2,4,63"), 63), Some(2));
        assert_eq!(pos_to_ord(m("2,4,63"), 0), None);
        assert_eq!(next_node_in(63, m("1,5")), 1);
        assert_eq!(next_node_in(1, m("1,5")), 5);
        assert_eq!(next_node_in(5, m("1,5")), 1);
        assert_eq!(next_node_in(0, m("")), MAX_NUMNODES);
    }

    /// Documentation/admin-guide/mm/numa_memory_policy.rst, relative nodes:
    /// a nodemask of 2-5 relative to mems 2-5, then 3-7, then 0,2-3,5.
    #[test]
    fn relative_example() {
        let user = m("2-5");
        assert_eq!(relative_nodemask(user, m("2-5")), m("2-5"));
        assert_eq!(relative_nodemask(user, m("3-7")), m("3,5-7"));
        assert_eq!(relative_nodemask(user, m("0,2-3,5")), m("0,2-3,5"));
    }

    proptest! {
        #[test]
        fn remap_lands_in_new_or_stays(src: u64, old: u64, new: u64) {
            let (src, old, new) = (NodeMask::from_bits(src), NodeMask::from_bits(old), NodeMask::from_bits(new));
            let r = nodes_remap(src, old, new);
            for n in src.iter() {
                let to = node_remap(n, old, new);
                prop_assert!(r.contains(to));
                if old.contains(n) && !new.is_empty() {
                    prop_assert!(new.contains(to));
                } else {
                    prop_assert_eq!(to, n);
                }
            }
            prop_assert!(r.weight() <= src.weight());
            // Remapping onto itself is the identity.
            prop_assert_eq!(nodes_remap(src, old, old), src);
        }

        #[test]
        fn relative_is_inside_rel(orig: u64, rel: u64) {
            let (orig, rel) = (NodeMask::from_bits(orig), NodeMask::from_bits(rel));
            let r = relative_nodemask(orig, rel);
            prop_assert!(r.is_subset(rel));
            prop_assert_eq!(r.is_empty(), orig.is_empty() || rel.is_empty());
            // Positions below the weight of rel map one to one.
            let w = rel.weight();
            let low: NodeMask = orig.iter().filter(|&n| n < w).collect();
            prop_assert_eq!(nodes_onto(low, rel).weight(), low.weight());
        }
    }
}

//! [`IwTable`]: the weighted-interleave weights, Linux 6.9's `iw_table`
//! behind `/sys/kernel/mm/mempolicy/weighted_interleave/nodeN`: one `u8`
//! per node, 0 meaning "the system default", which is 1 (`get_il_weight`).

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU8, Ordering};

use super::Errno;
use crate::mm::nodemask::NodeMask;

/// The weight of a node nobody set (Linux's system default).
pub const DEFAULT_WEIGHT: u8 = 1;

/// The system-wide interleave weights.
pub struct IwTable {
    w: [AtomicU8; NodeMask::MAX_NODES as usize],
}

impl Default for IwTable {
    fn default() -> Self {
        Self::new()
    }
}

impl IwTable {
    /// Every node at the system default.
    pub fn new() -> Self {
        IwTable {
            w: core::array::from_fn(|_| AtomicU8::new(0)),
        }
    }

    /// `get_il_weight(node)`: the table's value, or [`DEFAULT_WEIGHT`] for
    /// 0 (and for a node beyond the table).
    pub fn get(&self, nid: u32) -> u8 {
        match self.raw(nid) {
            0 => DEFAULT_WEIGHT,
            w => w,
        }
    }

    /// The stored value (0: the default).
    pub fn raw(&self, nid: u32) -> u8 {
        self.w
            .get(nid as usize)
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }

    /// Sets a node's weight (0 restores the default). `EINVAL` for a node
    /// a nodemask cannot hold (there is no sysfs file for it).
    pub fn set(&self, nid: u32, weight: u8) -> Result<(), Errno> {
        let slot = self.w.get(nid as usize).ok_or(Errno::EINVAL)?;
        slot.store(weight, Ordering::Relaxed);
        Ok(())
    }

    /// Every node back to the default.
    pub fn reset(&self) {
        for w in &self.w {
            w.store(0, Ordering::Relaxed);
        }
    }

    /// A write to `nodeN` (`node_store`, Linux 6.9): an empty write sets
    /// the default (0); otherwise the text must be a `u8` as `kstrtou8`
    /// reads it (decimal, `0x` hex or `0` octal, one trailing newline),
    /// else `EINVAL`. Returns the bytes consumed.
    pub fn store(&self, nid: u32, buf: &str) -> Result<usize, Errno> {
        let trimmed = buf.strip_suffix('\n').unwrap_or(buf);
        let weight = if trimmed.is_empty() {
            0
        } else {
            kstrtou8(trimmed).ok_or(Errno::EINVAL)?
        };
        self.set(nid, weight)?;
        Ok(buf.len())
    }

    /// A read of `nodeN` (`node_show`): the effective weight and a newline.
    pub fn show(&self, nid: u32) -> String {
        format!("{}\n", self.get(nid))
    }
}

/// `kstrtou8(s, 0, &v)` without the trailing newline: optional `+`, base
/// from the prefix (`0x`: 16, `0`: 8, else 10), at least one digit, no
/// overflow.
fn kstrtou8(s: &str) -> Option<u8> {
    let s = s.strip_prefix('+').unwrap_or(s);
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u8::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_semantics() {
        let t = IwTable::new();
        assert_eq!(t.get(3), 1);
        assert_eq!(t.show(3), "1\n");
        assert_eq!(t.store(3, "4\n"), Ok(2));
        assert_eq!((t.get(3), t.raw(3)), (4, 4));
        assert_eq!(t.store(3, "0x10"), Ok(4));
        assert_eq!(t.get(3), 16);
        assert_eq!(t.store(3, "010"), Ok(3));
        assert_eq!(t.get(3), 8);
        assert_eq!(t.store(3, "0"), Ok(1));
        assert_eq!((t.get(3), t.raw(3)), (1, 0));
        t.set(3, 9).unwrap();
        assert_eq!(t.store(3, ""), Ok(0));
        assert_eq!(t.get(3), 1);
        for bad in ["256", "-1", "x", "3 ", "0x", "1\n\n", "08"] {
            assert_eq!(t.store(3, bad), Err(Errno::EINVAL), "{bad:?}");
        }
        assert_eq!(t.set(64, 2), Err(Errno::EINVAL));
        assert_eq!(t.get(64), 1);
        t.set(0, 7).unwrap();
        t.reset();
        assert_eq!(t.raw(0), 0);
    }
}

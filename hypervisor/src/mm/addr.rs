//! Typed machine addresses and frame numbers.
//!
//! A machine address is what the CPU (and, without an IOMMU, a device) puts on
//! the bus. Guest-physical ("metaphysical") addresses get their own types in
//! the domain code; the two never mix through a bare `u64`.

use core::fmt;

/// log2 of the page size.
pub const PAGE_SHIFT: u32 = 12;
/// Size of a base page in bytes.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// A machine (host-physical) byte address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Maddr(pub u64);

/// A machine frame number: a machine address shifted right by [`PAGE_SHIFT`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mfn(pub u64);

impl Maddr {
    /// The frame that holds this address.
    pub const fn mfn(self) -> Mfn {
        Mfn(self.0 >> PAGE_SHIFT)
    }

    /// Rounds down to a page boundary.
    pub const fn page_floor(self) -> Maddr {
        Maddr(self.0 & !(PAGE_SIZE - 1))
    }

    /// Rounds up to a page boundary, saturating at the top of the address space.
    pub const fn page_ceil(self) -> Maddr {
        match self.0.checked_add(PAGE_SIZE - 1) {
            Some(v) => Maddr(v & !(PAGE_SIZE - 1)),
            None => Maddr(!(PAGE_SIZE - 1)),
        }
    }

    /// Adds a byte offset, or `None` on overflow.
    pub const fn checked_add(self, bytes: u64) -> Option<Maddr> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(Maddr(v)),
            None => None,
        }
    }
}

impl Mfn {
    /// The first byte of this frame.
    pub const fn maddr(self) -> Maddr {
        Maddr(self.0 << PAGE_SHIFT)
    }

    /// The frame `n` frames further on.
    pub const fn add(self, n: u64) -> Mfn {
        Mfn(self.0 + n)
    }
}

impl fmt::Debug for Maddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Maddr({:#x})", self.0)
    }
}

impl fmt::Display for Maddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Debug for Mfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mfn({:#x})", self.0)
    }
}

impl fmt::Display for Mfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A half-open range of machine addresses, `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct MemRange {
    pub start: Maddr,
    pub end: Maddr,
}

impl MemRange {
    /// A range from `start` to `end`; an inverted range is empty.
    pub const fn new(start: Maddr, end: Maddr) -> MemRange {
        if end.0 < start.0 {
            MemRange { start, end: start }
        } else {
            MemRange { start, end }
        }
    }

    /// `[base, base + len)`, clamped at the top of the address space.
    pub const fn from_base_len(base: u64, len: u64) -> MemRange {
        MemRange {
            start: Maddr(base),
            end: Maddr(base.saturating_add(len)),
        }
    }

    pub const fn len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }

    pub const fn is_empty(&self) -> bool {
        self.end.0 <= self.start.0
    }

    pub const fn contains(&self, a: Maddr) -> bool {
        self.start.0 <= a.0 && a.0 < self.end.0
    }

    pub const fn overlaps(&self, other: &MemRange) -> bool {
        self.start.0 < other.end.0 && other.start.0 < self.end.0
    }

    /// The common part of two ranges (possibly empty).
    pub fn intersect(&self, other: &MemRange) -> MemRange {
        MemRange::new(
            Maddr(self.start.0.max(other.start.0)),
            Maddr(self.end.0.min(other.end.0)),
        )
    }

    /// The whole pages inside this range.
    pub fn pages_within(&self) -> MemRange {
        MemRange::new(self.start.page_ceil(), self.end.page_floor())
    }
}

impl fmt::Display for MemRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#012x}-{:#012x})", self.start.0, self.end.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_and_ranges() {
        assert_eq!(Maddr(0x1001).page_floor(), Maddr(0x1000));
        assert_eq!(Maddr(0x1001).page_ceil(), Maddr(0x2000));
        assert_eq!(Maddr(u64::MAX).page_ceil(), Maddr(!0xfff));
        let a = MemRange::from_base_len(0x1000, 0x3000);
        let b = MemRange::from_base_len(0x3000, 0x3000);
        assert!(a.overlaps(&b));
        assert_eq!(a.intersect(&b), MemRange::from_base_len(0x3000, 0x1000));
        assert!(MemRange::new(Maddr(5), Maddr(1)).is_empty());
        assert_eq!(
            MemRange::from_base_len(0x800, 0x2000).pages_within().len(),
            0x1000
        );
    }
}

//! Allocation flags ([`Gfp`]): Linux's zone modifiers and the placement
//! and reporting flags this allocator honours, with Linux's bit values so
//! that `mode:0x...` in a failure report reads as Linux's would.

use core::fmt;
use core::ops::{BitOr, BitOrAssign};

use super::zone::ZoneType;

/// GFP flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Gfp(u32);

impl Gfp {
    /// No modifier: any zone, fallback allowed, failures reported
    /// (`GFP_KERNEL` without its reclaim bits: this guest has no reclaim).
    pub const KERNEL: Gfp = Gfp(0);
    /// `__GFP_DMA`: only `ZONE_DMA` (machine address below 16 MiB).
    pub const DMA: Gfp = Gfp(0x01);
    /// `__GFP_DMA32`: `ZONE_DMA32` or lower (machine address below 4 GiB).
    pub const DMA32: Gfp = Gfp(0x04);
    /// `__GFP_NOWARN`: no failure report on the console.
    pub const NOWARN: Gfp = Gfp(0x2000);
    /// `__GFP_THISNODE`: only the preferred node's zones (its no-fallback
    /// zonelist); fails rather than falls back, at once on a memoryless node.
    pub const THISNODE: Gfp = Gfp(0x20_0000);

    const NAMES: [(Gfp, &'static str); 4] = [
        (Gfp::DMA, "GFP_DMA"),
        (Gfp::DMA32, "GFP_DMA32"),
        (Gfp::NOWARN, "__GFP_NOWARN"),
        (Gfp::THISNODE, "__GFP_THISNODE"),
    ];

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// From raw bits (unknown bits kept, ignored by the allocator).
    pub const fn from_bits(bits: u32) -> Self {
        Gfp(bits)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Gfp) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self | other`, usable in constants.
    pub const fn union(self, other: Gfp) -> Gfp {
        Gfp(self.0 | other.0)
    }

    /// `self` without `other`.
    pub const fn without(self, other: Gfp) -> Gfp {
        Gfp(self.0 & !other.0)
    }

    /// Linux's `gfp_zone()`: the highest zone the flags allow, or `None`
    /// for `DMA | DMA32` together (a bad combination Linux BUGs on).
    pub const fn zone(self) -> Option<ZoneType> {
        match (self.contains(Gfp::DMA), self.contains(Gfp::DMA32)) {
            (true, true) => None,
            (true, false) => Some(ZoneType::Dma),
            (false, true) => Some(ZoneType::Dma32),
            (false, false) => Some(ZoneType::Normal),
        }
    }
}

impl BitOr for Gfp {
    type Output = Gfp;
    fn bitor(self, rhs: Gfp) -> Gfp {
        self.union(rhs)
    }
}

impl BitOrAssign for Gfp {
    fn bitor_assign(&mut self, rhs: Gfp) {
        *self = self.union(rhs);
    }
}

/// `GFP_KERNEL|__GFP_THISNODE`-style names (`%pGg`).
impl fmt::Display for Gfp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GFP_KERNEL")?;
        let mut rest = self.0;
        for (flag, name) in Gfp::NAMES {
            if self.contains(flag) {
                write!(f, "|{name}")?;
                rest &= !flag.0;
            }
        }
        if rest != 0 {
            write!(f, "|{rest:#x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Gfp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gfp({:#x}: {self})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn zones_and_names() {
        assert_eq!(Gfp::KERNEL.zone(), Some(ZoneType::Normal));
        assert_eq!((Gfp::DMA32 | Gfp::THISNODE).zone(), Some(ZoneType::Dma32));
        assert_eq!(Gfp::DMA.zone(), Some(ZoneType::Dma));
        assert_eq!((Gfp::DMA | Gfp::DMA32).zone(), None);
        assert_eq!(
            (Gfp::THISNODE | Gfp::NOWARN).to_string(),
            "GFP_KERNEL|__GFP_NOWARN|__GFP_THISNODE"
        );
        assert_eq!(
            Gfp::from_bits(0x8000_0004).to_string(),
            "GFP_KERNEL|GFP_DMA32|0x80000000"
        );
        assert!((Gfp::THISNODE | Gfp::NOWARN).without(Gfp::NOWARN) == Gfp::THISNODE);
    }
}

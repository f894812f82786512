//! Typed addresses shared by both sides, so a guest-physical address is never
//! confused with a machine address or a frame number.
//!
//! - [`Gpa`]: a guest-physical ("metaphysical") address, chosen per domain
//!   and mapped to machine memory by the hypervisor's nested page tables.
//!   Every pointer in a hypercall is a `Gpa`.
//! - [`Gfn`]: a guest-physical frame number (`Gpa >> PAGE_SHIFT`).
//! - [`Maddr`]: a machine address: what a DMA device sees on the bus (there is
//!   no IOMMU).
//! - [`Mfn`]: a machine frame number.
//!
//! All are `#[repr(transparent)]` over `u64`, so they are plain `u64`s in
//! every ABI structure and register.

use core::fmt;

use crate::layout::{AbiStruct, FieldLayout, StructLayout};
use crate::pod::Pod;

/// log2 of the ABI page size.
pub const PAGE_SHIFT: u32 = 12;
/// The ABI page size: 4 KiB. Frame numbers, page counts and alignment rules
/// in this crate use it.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

const PAGE_MASK: u64 = PAGE_SIZE - 1;

macro_rules! u64_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[repr(transparent)]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        const _: () = {
            assert!(core::mem::size_of::<$name>() == 8);
            assert!(core::mem::align_of::<$name>() == 8);
        };

        impl $name {
            /// Wraps a raw value.
            pub const fn new(raw: u64) -> Self {
                $name(raw)
            }

            /// The raw value.
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// `self + n`, or `None` on overflow.
            pub const fn checked_add(self, n: u64) -> Option<Self> {
                match self.0.checked_add(n) {
                    Some(v) => Some($name(v)),
                    None => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        /// Hex, e.g. `0x100000`.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }

        // SAFETY: `#[repr(transparent)]` over `u64`: every bit pattern is
        // valid, no padding.
        unsafe impl Pod for $name {}

        impl AbiStruct for $name {
            const LAYOUT: StructLayout = StructLayout {
                name: stringify!($name),
                size: 8,
                align: 8,
                sized_by: None,
                fields: &[FieldLayout { name: "0", ty: "u64", offset: 0, size: 8 }],
            };
        }
    };
}

macro_rules! address_methods {
    ($addr:ident, $frame:ident) => {
        impl $addr {
            /// The frame this address lies in.
            pub const fn frame(self) -> $frame {
                $frame(self.0 >> PAGE_SHIFT)
            }

            /// Offset within its page.
            pub const fn page_offset(self) -> u64 {
                self.0 & PAGE_MASK
            }

            /// Whether the address is page-aligned.
            pub const fn is_page_aligned(self) -> bool {
                self.0 & PAGE_MASK == 0
            }

            /// Whether the address is aligned to `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align.wrapping_sub(1)) == 0
            }

            /// Rounded down to a page boundary.
            pub const fn page_align_down(self) -> Self {
                $addr(self.0 & !PAGE_MASK)
            }

            /// Rounded up to a page boundary, or `None` on overflow.
            pub const fn page_align_up(self) -> Option<Self> {
                match self.0.checked_add(PAGE_MASK) {
                    Some(v) => Some($addr(v & !PAGE_MASK)),
                    None => None,
                }
            }
        }

        impl $frame {
            /// The address of the frame's first byte, or `None` if it does
            /// not fit in 64 bits.
            pub const fn addr(self) -> Option<$addr> {
                if self.0 > (u64::MAX >> PAGE_SHIFT) {
                    return None;
                }
                Some($addr(self.0 << PAGE_SHIFT))
            }
        }
    };
}

u64_newtype! {
    /// A guest-physical ("metaphysical") address.
    Gpa
}
u64_newtype! {
    /// A guest-physical frame number.
    Gfn
}
u64_newtype! {
    /// A machine (host-physical, bus) address: what a DMA device sees.
    Maddr
}
u64_newtype! {
    /// A machine frame number.
    Mfn
}

address_methods!(Gpa, Gfn);
address_methods!(Maddr, Mfn);

impl Gpa {
    /// The null address, used in ABI structures for "none".
    pub const NULL: Gpa = Gpa(0);

    /// Whether this is [`Gpa::NULL`].
    pub const fn is_null(self) -> bool {
        self.0 == 0
    }

    /// `None` for [`Gpa::NULL`], the address otherwise.
    pub const fn non_null(self) -> Option<Gpa> {
        if self.0 == 0 {
            None
        } else {
            Some(self)
        }
    }
}

/// Number of pages needed to hold `bytes` bytes.
pub const fn pages_for(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn page_helpers() {
        let a = Gpa::new(0x1_2345);
        assert_eq!(a.frame(), Gfn(0x12));
        assert_eq!(a.page_offset(), 0x345);
        assert!(!a.is_page_aligned());
        assert_eq!(a.page_align_down(), Gpa(0x1_2000));
        assert_eq!(a.page_align_up(), Some(Gpa(0x1_3000)));
        assert_eq!(Gpa(0x1000).page_align_up(), Some(Gpa(0x1000)));
        assert_eq!(Gpa(u64::MAX).page_align_up(), None);
        assert!(Gpa(0x20_0000).is_aligned(0x20_0000));
        assert!(!Gpa(0x20_1000).is_aligned(0x20_0000));
        assert_eq!(Gfn(0x12).addr(), Some(Gpa(0x1_2000)));
        assert_eq!(Gfn(u64::MAX).addr(), None);
        assert_eq!(Maddr(0x8000_1000).frame(), Mfn(0x8_0001));
        assert_eq!(Mfn(0x8_0001).addr(), Some(Maddr(0x8000_1000)));
        assert_eq!(Gpa(u64::MAX).checked_add(1), None);
        assert_eq!(Gpa(1).checked_add(1), Some(Gpa(2)));
        assert_eq!(pages_for(0), 0);
        assert_eq!(pages_for(1), 1);
        assert_eq!(pages_for(PAGE_SIZE + 1), 2);
    }

    #[test]
    fn null_and_formatting() {
        assert!(Gpa::NULL.is_null());
        assert_eq!(Gpa::NULL.non_null(), None);
        assert_eq!(Gpa(0x1000).non_null(), Some(Gpa(0x1000)));
        assert_eq!(format!("{}", Gpa(0x1000)), "0x1000");
        assert_eq!(format!("{:?}", Maddr(0x1000)), "Maddr(0x1000)");
        assert_eq!(format!("{:010x}", Gfn(0xab)), "00000000ab");
    }

    #[test]
    fn transparent_bytes() {
        assert_eq!(Gpa::read_from(&0x1234u64.to_le_bytes()), Some(Gpa(0x1234)));
        assert_eq!(Maddr(5).as_bytes(), &5u64.to_le_bytes());
    }
}

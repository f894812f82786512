//! The three address spaces the pool deals with, as distinct types so that a
//! bus address can never be handed where a CPU address is expected.

use core::fmt;

macro_rules! address {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw address.
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw address.
            pub const fn as_u64(self) -> u64 {
                self.0
            }

            /// `self + bytes`, or `None` if it wraps.
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(raw) => Some(Self(raw)),
                    None => None,
                }
            }

            /// Bytes from `base` up to `self`, or `None` if `self` is below `base`.
            pub const fn offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

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
    };
}

address!(
    /// A bus (DMA) address: what a device puts on the bus to reach the pool.
    /// Without an IOMMU it is the machine address the hypervisor reported for
    /// the pool, plus the offset into the pool.
    DmaAddr
);

address!(
    /// The address the CPU uses to read and write pool memory (the address of
    /// the pool's backing slice in the running kernel).
    CpuAddr
);

address!(
    /// The address of the caller's original buffer, as its [`OrigMemory`]
    /// understands it (a guest-physical address in the guest). Its low bits
    /// matter: `min_align_mask` keeps them in the bounce address.
    ///
    /// [`OrigMemory`]: crate::OrigMemory
    OrigAddr
);

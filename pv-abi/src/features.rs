//! Feature bits: optional capabilities a hypervisor offers.
//!
//! A guest reads them with [`Hypercall::Features`](crate::Hypercall::Features)
//! (word 0) or CPUID leaf 0x4000_0001 (EBX = bits 0..32, ECX = bits 32..64)
//! and takes a fallback path when a bit is clear. A hypercall whose feature
//! bit is clear returns [`Error::Unsupported`](crate::Error::Unsupported).
//! Bit positions are fixed forever; a new bit is a compatible change. Bit 63
//! is never assigned, so the word is never mistaken for an error code.

use core::fmt;
use core::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign};

use crate::layout::{AbiStruct, FieldLayout, StructLayout};
use crate::pod::Pod;
use crate::version::{AbiVersion, ABI_MAJOR};

/// A set of feature bits (word 0).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(u64);

const _: () = {
    assert!(core::mem::size_of::<Features>() == 8);
    assert!(core::mem::align_of::<Features>() == 8);
};

impl Features {
    /// [`Hypercall::GetVnuma`](crate::Hypercall::GetVnuma) is available: the
    /// domain has a vNUMA topology to report.
    pub const VNUMA: Features = Features(1 << 0);
    /// [`Hypercall::PhysInfo`](crate::Hypercall::PhysInfo) is available: the
    /// domain may see the machine's topology.
    pub const PHYSINFO: Features = Features(1 << 1);
    /// [`Hypercall::DomainNodePages`](crate::Hypercall::DomainNodePages) is
    /// available.
    pub const DOMAIN_NODE_PAGES: Features = Features(1 << 2);
    /// [`StartInfo::acpi_rsdp`](crate::StartInfo::acpi_rsdp) points to virtual
    /// ACPI tables (RSDP, XSDT, SRAT, SLIT, MADT) describing exactly the
    /// domain's vNUMA topology.
    pub const VIRTUAL_ACPI: Features = Features(1 << 3);
    /// `GET_VNUMA` fills [`VnumaTopologyInfo::vnode_mem`](crate::VnumaTopologyInfo::vnode_mem):
    /// per vnode, its physical node, its size and the free memory of that
    /// node (ABI 1.1). Without it a guest knows each vnode's size from the
    /// memory ranges and nothing about the free memory behind it.
    #[cfg(not(feature = "abi-1-0"))]
    pub const VNODE_MEM: Features = Features(1 << 4);
    /// [`Hypercall::DmaExchange`](crate::Hypercall::DmaExchange) is
    /// available: the domain may trade pages for machine-contiguous memory
    /// below a DMA address limit (ABI 1.2, see [`dma`](crate::dma)).
    /// Without it a guest has no bounce pool a limited device can reach.
    #[cfg(not(feature = "abi-1-1"))]
    pub const DMA_EXCHANGE: Features = Features(1 << 5);
    /// [`Hypercall::VcpuOp`](crate::Hypercall::VcpuOp) is available: the
    /// domain brings its secondary vCPUs up and down itself, and each runs
    /// on a physical CPU of its vnode's node (ABI 1.3, see
    /// [`vcpu`](crate::vcpu)). Without it only vCPU 0 runs.
    #[cfg(not(feature = "abi-1-2"))]
    pub const VCPU_OP: Features = Features(1 << 6);

    /// Bit 63, never assigned (keeps the word out of the error range).
    pub const RESERVED: Features = Features(1 << 63);

    /// The bits ABI 1.0 defines.
    pub const V1_0: Features = Features(
        Self::VNUMA.0 | Self::PHYSINFO.0 | Self::DOMAIN_NODE_PAGES.0 | Self::VIRTUAL_ACPI.0,
    );

    /// The bits ABI 1.1 defines.
    #[cfg(not(feature = "abi-1-0"))]
    pub const V1_1: Features = Features(Self::V1_0.0 | Self::VNODE_MEM.0);

    /// The bits ABI 1.2 defines.
    #[cfg(not(feature = "abi-1-1"))]
    pub const V1_2: Features = Features(Self::V1_1.0 | Self::DMA_EXCHANGE.0);

    /// Every bit this version of the crate defines.
    #[cfg(not(feature = "abi-1-2"))]
    pub const KNOWN: Features = Features(Self::V1_2.0 | Self::VCPU_OP.0);
    /// Every bit this version of the crate defines.
    #[cfg(all(feature = "abi-1-2", not(feature = "abi-1-1")))]
    pub const KNOWN: Features = Self::V1_2;
    /// Every bit this version of the crate defines.
    #[cfg(all(feature = "abi-1-1", not(feature = "abi-1-0")))]
    pub const KNOWN: Features = Self::V1_1;
    /// Every bit this version of the crate defines.
    #[cfg(feature = "abi-1-0")]
    pub const KNOWN: Features = Self::V1_0;

    /// Each named bit with its name, in bit order (for printing and for the
    /// ABI description).
    pub const NAMED: &'static [(&'static str, Features)] = &[
        ("vnuma", Self::VNUMA),
        ("physinfo", Self::PHYSINFO),
        ("domain-node-pages", Self::DOMAIN_NODE_PAGES),
        ("virtual-acpi", Self::VIRTUAL_ACPI),
        #[cfg(not(feature = "abi-1-0"))]
        ("vnode-mem", Self::VNODE_MEM),
        #[cfg(not(feature = "abi-1-1"))]
        ("dma-exchange", Self::DMA_EXCHANGE),
        #[cfg(not(feature = "abi-1-2"))]
        ("vcpu-op", Self::VCPU_OP),
    ];

    /// The bits ABI `version` defines, as far as this crate knows: a
    /// hypervisor of that version offers no other (it may leave some of
    /// these clear). For a newer minor than this crate's, the bits this
    /// crate knows; for another major, none.
    pub const fn defined_in(version: AbiVersion) -> Features {
        if version.major != ABI_MAJOR {
            return Features::empty();
        }
        match version.minor {
            0 => Self::V1_0,
            #[cfg(not(feature = "abi-1-1"))]
            1 => Self::V1_1,
            #[cfg(not(feature = "abi-1-2"))]
            2 => Self::V1_2,
            _ => Self::KNOWN,
        }
    }

    /// No features.
    pub const fn empty() -> Self {
        Features(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// All bits as given, including ones this crate does not know (what a
    /// newer hypervisor may offer).
    pub const fn from_bits_retain(bits: u64) -> Self {
        Features(bits)
    }

    /// Only the bits this crate knows.
    pub const fn from_bits_truncate(bits: u64) -> Self {
        Features(bits & Self::KNOWN.0)
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set.
    pub const fn intersects(self, other: Features) -> bool {
        self.0 & other.0 != 0
    }

    /// Bits in either.
    pub const fn union(self, other: Features) -> Self {
        Features(self.0 | other.0)
    }

    /// Bits in both.
    pub const fn intersection(self, other: Features) -> Self {
        Features(self.0 & other.0)
    }

    /// Bits in `self` but not in `other`.
    pub const fn difference(self, other: Features) -> Self {
        Features(self.0 & !other.0)
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The bits this crate does not know.
    pub const fn unknown(self) -> Self {
        self.difference(Self::KNOWN)
    }
}

impl BitOr for Features {
    type Output = Features;
    fn bitor(self, rhs: Features) -> Features {
        self.union(rhs)
    }
}

impl BitOrAssign for Features {
    fn bitor_assign(&mut self, rhs: Features) {
        *self = self.union(rhs);
    }
}

impl BitAnd for Features {
    type Output = Features;
    fn bitand(self, rhs: Features) -> Features {
        self.intersection(rhs)
    }
}

impl BitAndAssign for Features {
    fn bitand_assign(&mut self, rhs: Features) {
        *self = self.intersection(rhs);
    }
}

/// `vnuma,physinfo` style; unknown bits as hex; `none` when empty.
impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut sep = "";
        for &(name, bit) in Self::NAMED {
            if self.contains(bit) {
                write!(f, "{sep}{name}")?;
                sep = ",";
            }
        }
        let unknown = self.unknown();
        if !unknown.is_empty() {
            write!(f, "{sep}{:#x}", unknown.0)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Features({self})")
    }
}

// SAFETY: `#[repr(transparent)]` over `u64`: every bit pattern is valid, no padding.
unsafe impl Pod for Features {}

impl AbiStruct for Features {
    const LAYOUT: StructLayout = StructLayout {
        name: "Features",
        size: 8,
        align: 8,
        sized_by: None,
        fields: &[FieldLayout {
            name: "0",
            ty: "u64",
            offset: 0,
            size: 8,
        }],
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn bits_are_stable() {
        assert_eq!(Features::VNUMA.bits(), 1);
        assert_eq!(Features::PHYSINFO.bits(), 2);
        assert_eq!(Features::DOMAIN_NODE_PAGES.bits(), 4);
        assert_eq!(Features::VIRTUAL_ACPI.bits(), 8);
        assert_eq!(Features::V1_0.bits(), 0xf);
        #[cfg(not(feature = "abi-1-0"))]
        assert_eq!(Features::VNODE_MEM.bits(), 0x10);
        #[cfg(not(feature = "abi-1-1"))]
        {
            assert_eq!(Features::DMA_EXCHANGE.bits(), 0x20);
            assert_eq!(Features::V1_2.bits(), 0x3f);
            assert_eq!(Features::defined_in(AbiVersion::V1_1), Features::V1_1);
        }
        #[cfg(not(feature = "abi-1-2"))]
        {
            assert_eq!(Features::VCPU_OP.bits(), 0x40);
            assert_eq!(Features::KNOWN.bits(), 0x7f);
            assert_eq!(Features::defined_in(AbiVersion::V1_2), Features::V1_2);
        }
        #[cfg(all(feature = "abi-1-2", not(feature = "abi-1-1")))]
        assert_eq!(Features::KNOWN.bits(), 0x3f);
        #[cfg(all(feature = "abi-1-1", not(feature = "abi-1-0")))]
        assert_eq!(Features::KNOWN.bits(), 0x1f);
        #[cfg(feature = "abi-1-0")]
        assert_eq!(Features::KNOWN.bits(), 0xf);
        assert!(!Features::KNOWN.intersects(Features::RESERVED));
        let v = |minor| AbiVersion::new(ABI_MAJOR, minor);
        assert_eq!(Features::defined_in(v(0)), Features::V1_0);
        assert_eq!(Features::defined_in(AbiVersion::CURRENT), Features::KNOWN);
        assert_eq!(Features::defined_in(v(9)), Features::KNOWN);
        assert_eq!(
            Features::defined_in(AbiVersion::new(ABI_MAJOR + 1, 0)),
            Features::empty()
        );
        let mut all = Features::empty();
        for &(_, bit) in Features::NAMED {
            assert_eq!(bit.bits().count_ones(), 1);
            assert!(!all.intersects(bit));
            all |= bit;
        }
        assert_eq!(all, Features::KNOWN);
    }

    #[test]
    fn set_operations() {
        let f = Features::VNUMA | Features::PHYSINFO;
        assert!(f.contains(Features::VNUMA));
        assert!(!f.contains(Features::VNUMA | Features::VIRTUAL_ACPI));
        assert!(f.intersects(Features::VNUMA | Features::VIRTUAL_ACPI));
        assert_eq!(f & Features::PHYSINFO, Features::PHYSINFO);
        assert_eq!(f.difference(Features::VNUMA), Features::PHYSINFO);
        let newer = Features::from_bits_retain(f.bits() | 1 << 40);
        assert_eq!(newer.unknown().bits(), 1 << 40);
        assert_eq!(Features::from_bits_truncate(newer.bits()), f);
    }

    #[test]
    fn display() {
        assert_eq!(Features::empty().to_string(), "none");
        assert_eq!(
            (Features::VNUMA | Features::VIRTUAL_ACPI).to_string(),
            "vnuma,virtual-acpi"
        );
        assert_eq!(
            Features::from_bits_retain(0x102).to_string(),
            "physinfo,0x100"
        );
    }
}

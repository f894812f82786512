//! The ABI version: major and minor (rules in the [crate docs](crate)).

use core::fmt;

/// Major version of the ABI this crate defines. Both sides refuse a
/// different major. (2 with the test-only `abi-major-2` feature.)
pub const ABI_MAJOR: u16 = if cfg!(feature = "abi-major-2") { 2 } else { 1 };
/// Minor version of the ABI this crate defines: 3 (0 with the `abi-1-0`
/// feature, which builds the crate as the first release; 1 with
/// `abi-1-1`; 2 with `abi-1-2`).
pub const ABI_MINOR: u16 = if cfg!(feature = "abi-1-0") {
    0
} else if cfg!(feature = "abi-1-1") {
    1
} else if cfg!(feature = "abi-1-2") {
    2
} else {
    3
};

abi_struct! {
    /// An ABI version. Ordered by major, then minor.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct AbiVersion(size = 4, align = 2) {
        /// Bumped by any incompatible change.
        pub major: u16 => 0,
        /// Bumped by a compatible addition; 0 again with a new major.
        pub minor: u16 => 2,
    }
}

impl AbiVersion {
    /// The version this crate defines.
    pub const CURRENT: AbiVersion = AbiVersion::new(ABI_MAJOR, ABI_MINOR);
    /// The first released version.
    pub const V1_0: AbiVersion = AbiVersion::new(1, 0);
    /// The second: adds [`Features::VNODE_MEM`](crate::Features) and
    /// `VnumaTopologyInfo::vnode_mem`.
    pub const V1_1: AbiVersion = AbiVersion::new(1, 1);
    /// The third: adds [`Features::DMA_EXCHANGE`](crate::Features) and the
    /// `DMA_EXCHANGE` hypercall.
    pub const V1_2: AbiVersion = AbiVersion::new(1, 2);
    /// The fourth: adds [`Features::VCPU_OP`](crate::Features) and the
    /// `VCPU_OP` hypercall (secondary vCPUs).
    pub const V1_3: AbiVersion = AbiVersion::new(1, 3);

    /// A version.
    pub const fn new(major: u16, minor: u16) -> Self {
        AbiVersion { major, minor }
    }

    /// The register encoding used by [`Hypercall::Version`](crate::Hypercall::Version)
    /// and CPUID leaf 0x4000_0001 EAX: `major << 16 | minor`. Fits in 32
    /// bits and is never an error code. Fixed in every version.
    pub const fn encode(self) -> u64 {
        ((self.major as u64) << 16) | self.minor as u64
    }

    /// Decodes [`encode`](Self::encode)'s value. `None` if bits 32..64 are
    /// not zero (not a version).
    pub const fn decode(raw: u64) -> Option<Self> {
        if raw >> 32 != 0 {
            return None;
        }
        Some(AbiVersion::new((raw >> 16) as u16, raw as u16))
    }

    /// Whether the two can talk at all: same major.
    pub const fn is_compatible_with(self, other: AbiVersion) -> bool {
        self.major == other.major
    }

    /// Whether a side speaking `self` provides everything `required` defines:
    /// same major, minor at least `required`'s.
    pub const fn provides(self, required: AbiVersion) -> bool {
        self.major == required.major && self.minor >= required.minor
    }

    /// The version two sides use together: same major and the lower minor;
    /// `None` if the majors differ.
    pub const fn negotiate(self, other: AbiVersion) -> Option<AbiVersion> {
        if self.major != other.major {
            return None;
        }
        let minor = if self.minor < other.minor {
            self.minor
        } else {
            other.minor
        };
        Some(AbiVersion::new(self.major, minor))
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pod;
    use std::string::ToString;

    #[test]
    fn encoding_round_trips() {
        assert_eq!(
            AbiVersion::CURRENT.encode(),
            (u64::from(ABI_MAJOR) << 16) | u64::from(ABI_MINOR)
        );
        assert_eq!(AbiVersion::V1_1.encode(), 0x0001_0001);
        for v in [
            AbiVersion::new(0, 0),
            AbiVersion::new(1, 0),
            AbiVersion::new(1, 7),
            AbiVersion::new(u16::MAX, u16::MAX),
        ] {
            assert_eq!(AbiVersion::decode(v.encode()), Some(v));
            assert!(v.encode() <= u32::MAX as u64);
        }
        assert_eq!(AbiVersion::decode(1 << 32), None);
        assert_eq!(AbiVersion::decode(u64::MAX), None);
    }

    #[test]
    fn compatibility() {
        let v10 = AbiVersion::new(1, 0);
        let v13 = AbiVersion::new(1, 3);
        let v20 = AbiVersion::new(2, 0);
        assert!(v10.is_compatible_with(v13));
        assert!(!v13.is_compatible_with(v20));
        assert!(v13.provides(v10));
        assert!(!v10.provides(v13));
        assert!(!v20.provides(v10));
        assert_eq!(v13.negotiate(v10), Some(v10));
        assert_eq!(v10.negotiate(v13), Some(v10));
        assert_eq!(v10.negotiate(v20), None);
        assert!(v10 < v13 && v13 < v20);
    }

    #[test]
    fn layout_and_display() {
        let v = AbiVersion::read_from(&[1, 0, 2, 0]).unwrap();
        assert_eq!(v, AbiVersion::new(1, 2));
        assert_eq!(v.to_string(), "1.2");
    }
}

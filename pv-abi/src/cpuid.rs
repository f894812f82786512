//! How a guest finds numavisor through CPUID, before making any hypercall
//! (`VMMCALL` outside a hypervisor raises #UD).
//!
//! Following the KVM/Xen convention: CPUID.1:ECX bit 31 says "running under a
//! hypervisor"; leaf 0x4000_0000 returns the highest hypervisor leaf in EAX
//! and a 12-byte signature in EBX, ECX, EDX (4 bytes each, little-endian);
//! leaf 0x4000_0001 returns the ABI version in EAX
//! ([`AbiVersion::encode`]) and feature word 0 in EBX (bits 0..32) and ECX
//! (bits 32..64), the same values [`Hypercall::Version`](crate::Hypercall::Version)
//! and [`Hypercall::Features`](crate::Hypercall::Features) return. EDX is 0.
//! These leaves are fixed in every ABI version.

use crate::features::Features;
use crate::version::AbiVersion;

/// CPUID.1:ECX bit set when running under a hypervisor.
pub const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;
/// The signature leaf.
pub const CPUID_LEAF_SIGNATURE: u32 = 0x4000_0000;
/// The version and features leaf.
pub const CPUID_LEAF_VERSION: u32 = 0x4000_0001;
/// The highest numavisor leaf (EAX of the signature leaf).
pub const CPUID_MAX_LEAF: u32 = CPUID_LEAF_VERSION;
/// The 12-byte signature: EBX = `"Numa"`, ECX = `"Viso"`, EDX = `"rABI"`.
pub const CPUID_SIGNATURE: [u8; 12] = *b"NumaVisorABI";

abi_struct! {
    /// The four result registers of one CPUID leaf.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct CpuidRegs(size = 16, align = 4) {
        /// EAX.
        pub eax: u32 => 0,
        /// EBX.
        pub ebx: u32 => 4,
        /// ECX.
        pub ecx: u32 => 8,
        /// EDX.
        pub edx: u32 => 12,
    }
}

const fn sig_word(i: usize) -> u32 {
    u32::from_le_bytes([
        CPUID_SIGNATURE[i],
        CPUID_SIGNATURE[i + 1],
        CPUID_SIGNATURE[i + 2],
        CPUID_SIGNATURE[i + 3],
    ])
}

impl CpuidRegs {
    /// What leaf 0x4000_0000 returns.
    pub const fn signature_leaf() -> Self {
        CpuidRegs {
            eax: CPUID_MAX_LEAF,
            ebx: sig_word(0),
            ecx: sig_word(4),
            edx: sig_word(8),
        }
    }

    /// Whether these registers, read from leaf 0x4000_0000, carry
    /// numavisor's signature and at least the version leaf.
    pub const fn is_numavisor(&self) -> bool {
        self.ebx == sig_word(0)
            && self.ecx == sig_word(4)
            && self.edx == sig_word(8)
            && self.eax >= CPUID_LEAF_VERSION
    }

    /// What leaf 0x4000_0001 returns.
    pub const fn version_leaf(version: AbiVersion, features: Features) -> Self {
        CpuidRegs {
            eax: version.encode() as u32,
            ebx: features.bits() as u32,
            ecx: (features.bits() >> 32) as u32,
            edx: 0,
        }
    }

    /// Decodes leaf 0x4000_0001.
    pub const fn decode_version_leaf(&self) -> (AbiVersion, Features) {
        let version = AbiVersion::new((self.eax >> 16) as u16, self.eax as u16);
        let features = Features::from_bits_retain(((self.ecx as u64) << 32) | self.ebx as u64);
        (version, features)
    }

    /// The hypervisor's answer for `leaf`: `Some` for every leaf in
    /// 0x4000_0000..=0x4000_00FF (zeros above [`CPUID_MAX_LEAF`]), `None` for
    /// leaves outside numavisor's range, which the hypervisor handles
    /// otherwise.
    pub const fn hypervisor_leaf(
        leaf: u32,
        version: AbiVersion,
        features: Features,
    ) -> Option<Self> {
        match leaf {
            CPUID_LEAF_SIGNATURE => Some(Self::signature_leaf()),
            CPUID_LEAF_VERSION => Some(Self::version_leaf(version, features)),
            0x4000_0002..=0x4000_00ff => Some(CpuidRegs {
                eax: 0,
                ebx: 0,
                ecx: 0,
                edx: 0,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_bytes() {
        let r = CpuidRegs::signature_leaf();
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&r.ebx.to_le_bytes());
        bytes[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        bytes[8..].copy_from_slice(&r.edx.to_le_bytes());
        assert_eq!(&bytes, b"NumaVisorABI");
        assert_eq!(r.eax, 0x4000_0001);
        assert!(r.is_numavisor());
        let kvm = CpuidRegs {
            eax: 0x4000_0001,
            ebx: 0x4b4d_564b,
            ecx: 0x564b_4d56,
            edx: 0x4d,
        };
        assert!(!kvm.is_numavisor());
    }

    #[test]
    fn version_leaf_round_trips() {
        let v = AbiVersion::new(1, 3);
        let f = Features::from_bits_retain(Features::VNUMA.bits() | 1 << 40);
        let r = CpuidRegs::version_leaf(v, f);
        assert_eq!(r.eax, 0x0001_0003);
        assert_eq!(r.decode_version_leaf(), (v, f));
    }

    #[test]
    fn leaf_range() {
        let v = AbiVersion::CURRENT;
        let f = Features::KNOWN;
        assert_eq!(
            CpuidRegs::hypervisor_leaf(0x4000_0000, v, f),
            Some(CpuidRegs::signature_leaf())
        );
        assert_eq!(
            CpuidRegs::hypervisor_leaf(0x4000_0001, v, f),
            Some(CpuidRegs::version_leaf(v, f))
        );
        assert_eq!(
            CpuidRegs::hypervisor_leaf(0x4000_0002, v, f),
            Some(CpuidRegs::default())
        );
        assert_eq!(CpuidRegs::hypervisor_leaf(0x4000_0100, v, f), None);
        assert_eq!(CpuidRegs::hypervisor_leaf(1, v, f), None);
    }
}

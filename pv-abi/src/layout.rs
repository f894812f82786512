//! A machine-readable description of the ABI, generated from the types.
//!
//! Every ABI structure implements [`AbiStruct`] through
//! [`abi_struct!`](crate::pod) (or by hand for the `#[repr(transparent)]`
//! newtypes), so its [`StructLayout`] is the compiler's own layout, checked
//! at compile time. Together with [`STRUCTS`], [`CONSTANTS`],
//! [`Hypercall::ALL`](crate::Hypercall::ALL), [`Error::ALL`](crate::Error::ALL),
//! [`Features::NAMED`](crate::Features::NAMED) and
//! [`ShutdownStatus::NAMED`](crate::ShutdownStatus::NAMED) this is everything a
//! compatibility checker needs to record a released version and compare the
//! current one against it.

use crate::addr::{Gfn, Gpa, Maddr, Mfn, PAGE_SHIFT, PAGE_SIZE};
use crate::cpuid::{CpuidRegs, CPUID_LEAF_SIGNATURE, CPUID_LEAF_VERSION, CPUID_MAX_LEAF};
use crate::elf_note::ELF_NOTE_ABI_VERSION;
use crate::features::Features;
use crate::hypercall::{HypercallArgs, CONSOLE_WRITE_MAX, QUERY_ALIGN, VMMCALL_LEN};
use crate::node::{INVALID_NODE, LOCAL_DISTANCE, REMOTE_DISTANCE};
use crate::physinfo::{DomainNodePages, NodeMemInfo, PhysInfo};
use crate::start_info::{
    MemRange, StartInfo, CMDLINE_SIZE, GPA_LIMIT, MAX_MEM_RANGES, START_INFO_MAGIC,
};
use crate::version::{AbiVersion, ABI_MAJOR, ABI_MINOR};
use crate::vnuma::{VmemRange, VnumaTopologyInfo, MAX_VNODES};

/// One field of an ABI structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    /// Field name (`"0"` for a newtype's inner value).
    pub name: &'static str,
    /// The field's Rust type as written, e.g. `"u32"`, `"Gpa"`, `"[MemRange; 64]"`.
    pub ty: &'static str,
    /// Byte offset within the structure.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// The layout of one ABI structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StructLayout {
    /// Type name.
    pub name: &'static str,
    /// `size_of`.
    pub size: usize,
    /// `align_of`.
    pub align: usize,
    /// Fields in declaration (and offset) order.
    pub fields: &'static [FieldLayout],
}

/// An ABI structure with a known layout. Implemented by
/// [`abi_struct!`](crate::pod), whose compile-time asserts guarantee that
/// [`AbiStruct::LAYOUT`] is the real layout.
pub trait AbiStruct: crate::pod::Pod {
    /// This structure's layout.
    const LAYOUT: StructLayout;
}

/// A named ABI constant and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbiConstant {
    /// The constant's name in this crate.
    pub name: &'static str,
    /// Its value, widened to `u64`.
    pub value: u64,
}

/// Every ABI structure, in dependency order.
pub const STRUCTS: &[StructLayout] = &[
    Gpa::LAYOUT,
    Gfn::LAYOUT,
    Maddr::LAYOUT,
    Mfn::LAYOUT,
    AbiVersion::LAYOUT,
    Features::LAYOUT,
    HypercallArgs::LAYOUT,
    CpuidRegs::LAYOUT,
    MemRange::LAYOUT,
    StartInfo::LAYOUT,
    VmemRange::LAYOUT,
    VnumaTopologyInfo::LAYOUT,
    NodeMemInfo::LAYOUT,
    PhysInfo::LAYOUT,
    DomainNodePages::LAYOUT,
];

macro_rules! constants {
    ($($name:expr => $value:expr,)*) => {
        &[$(AbiConstant { name: $name, value: $value as u64 },)*]
    };
}

/// Every ABI constant that is not a hypercall number, an error code, a
/// feature bit or a shutdown status (those have their own lists).
pub const CONSTANTS: &[AbiConstant] = constants! {
    "ABI_MAJOR" => ABI_MAJOR,
    "ABI_MINOR" => ABI_MINOR,
    "PAGE_SHIFT" => PAGE_SHIFT,
    "PAGE_SIZE" => PAGE_SIZE,
    "VMMCALL_LEN" => VMMCALL_LEN,
    "CONSOLE_WRITE_MAX" => CONSOLE_WRITE_MAX,
    "QUERY_ALIGN" => QUERY_ALIGN,
    "START_INFO_MAGIC" => START_INFO_MAGIC,
    "MAX_MEM_RANGES" => MAX_MEM_RANGES,
    "CMDLINE_SIZE" => CMDLINE_SIZE,
    "GPA_LIMIT" => GPA_LIMIT,
    "MAX_VNODES" => MAX_VNODES,
    "LOCAL_DISTANCE" => LOCAL_DISTANCE,
    "REMOTE_DISTANCE" => REMOTE_DISTANCE,
    "INVALID_NODE" => INVALID_NODE,
    "CPUID_LEAF_SIGNATURE" => CPUID_LEAF_SIGNATURE,
    "CPUID_LEAF_VERSION" => CPUID_LEAF_VERSION,
    "CPUID_MAX_LEAF" => CPUID_MAX_LEAF,
    "ELF_NOTE_ABI_VERSION" => ELF_NOTE_ABI_VERSION,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_is_consistent() {
        for s in STRUCTS {
            let mut end = 0;
            for f in s.fields {
                assert_eq!(f.offset, end, "{}.{} leaves a gap", s.name, f.name);
                end = f.offset + f.size;
            }
            assert_eq!(end, s.size, "{} has tail padding", s.name);
            assert_eq!(s.size % s.align, 0, "{}", s.name);
        }
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in STRUCTS.iter().enumerate() {
            assert!(STRUCTS[i + 1..].iter().all(|b| b.name != a.name));
            for (j, f) in a.fields.iter().enumerate() {
                assert!(a.fields[j + 1..].iter().all(|g| g.name != f.name));
            }
        }
        for (i, a) in CONSTANTS.iter().enumerate() {
            assert!(CONSTANTS[i + 1..].iter().all(|b| b.name != a.name));
        }
    }

    #[test]
    fn field_types_are_recorded() {
        let m = MemRange::LAYOUT;
        assert_eq!(m.fields[0].ty, "Gpa");
        let s = StartInfo::LAYOUT;
        let ranges = s.fields.iter().find(|f| f.name == "mem_ranges").unwrap();
        assert_eq!(ranges.ty, "[MemRange; MAX_MEM_RANGES]");
        assert_eq!(ranges.size, 64 * 32);
    }
}

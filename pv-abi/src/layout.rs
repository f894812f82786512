//! A machine-readable description of the ABI, generated from the types.
//!
//! Every ABI structure implements [`AbiStruct`] through
//! [`abi_struct!`](crate::pod) (or by hand for the `#[repr(transparent)]`
//! newtypes), so its [`StructLayout`] is the compiler's own layout, checked
//! at compile time. Together with [`STRUCTS`], [`CONSTANTS`],
//! [`TEXT_CONSTANTS`], [`Hypercall::ALL`], [`Error::ALL`],
//! [`Features::NAMED`], [`ShutdownStatus::NAMED`] and [`ExitCode::ALL`] this
//! is everything a compatibility checker needs to record a released version
//! and compare the current one against it. [`describe`] writes all of it in
//! the text format below; `cargo xtask abi-record` stores it as
//! `pv-abi/abi/vMAJOR.MINOR.abi` and `cargo xtask abi-check` compares the
//! current types against every stored version.
//!
//! # The description format
//!
//! UTF-8 text, one record per line; `#` starts a comment line; blank lines
//! are ignored. Words are separated by single spaces; the last value of a
//! record (`type`, `returns`, a text constant) runs to the end of the line.
//! Numbers are decimal, or hexadecimal with `0x`.
//!
//! ```text
//! abi MAJOR.MINOR
//! struct NAME size BYTES align BYTES [sized-by FIELD]
//! field STRUCT NAME offset BYTES size BYTES type RUST-TYPE
//! hypercall NUMBER NAME feature FEATURE|- returns TEXT
//! arg HYPERCALL INDEX NAME register REGISTER type RUST-TYPE
//! constant NAME VALUE
//! text NAME VALUE
//! feature BIT NAME
//! error CODE ERRNO-NAME
//! status VALUE NAME
//! exit VALUE NAME
//! ```
//!
//! `field` records follow their `struct` in offset order, `arg` records
//! their `hypercall` in register order. `sized-by` names the `u32` field in
//! which a structure carries its own size, which is what lets a later minor
//! version append fields to it. `feature` on a hypercall is the bit without
//! which it answers `Unsupported`. `exit` values are the hypervisor's
//! `isa-debug-exit` codes ([`ExitCode`]), a contract with the host tools.

use core::fmt;

use crate::addr::{Gfn, Gpa, Maddr, Mfn, PAGE_SHIFT, PAGE_SIZE};
use crate::cpuid::{
    CpuidRegs, CPUID_1_ECX_HYPERVISOR, CPUID_LEAF_SIGNATURE, CPUID_LEAF_VERSION, CPUID_MAX_LEAF,
    CPUID_SIGNATURE,
};
#[cfg(not(feature = "abi-1-1"))]
use crate::dma::{
    DmaExchange, DMA_EXCHANGE_EXACT_NODE, DMA_EXCHANGE_MAX_PAGES, DMA_EXCHANGE_MIN_BITS,
    DMA_EXCHANGE_OFF_NODE,
};
use crate::elf_note::{ELF_NOTE_ABI_VERSION, ELF_NOTE_NAME};
use crate::error::Error;
use crate::exit::{ExitCode, DEBUG_EXIT_PORT};
use crate::features::Features;
use crate::hypercall::{
    Hypercall, HypercallArgs, HypercallResult, ARG_REGISTERS, CONSOLE_WRITE_MAX, QUERY_ALIGN,
    VMMCALL, VMMCALL_LEN,
};
use crate::node::{INVALID_NODE, LOCAL_DISTANCE, REMOTE_DISTANCE};
use crate::physinfo::{DomainNodePages, NodeMemInfo, PhysInfo};
use crate::query::Query;
use crate::shutdown::ShutdownStatus;
use crate::start_info::{
    MemRange, StartInfo, CMDLINE_SIZE, GPA_LIMIT, MAX_MEM_RANGES, START_INFO_MAGIC,
};
#[cfg(not(feature = "abi-1-2"))]
use crate::vcpu::{VcpuContext, VCPU_OP_DOWN, VCPU_OP_IS_UP, VCPU_OP_UP};
use crate::version::{AbiVersion, ABI_MAJOR, ABI_MINOR};
#[cfg(not(feature = "abi-1-0"))]
use crate::vnuma::VnodeMemInfo;
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
    /// The `u32` field in which the structure carries its own size, if it
    /// does (then fields may be appended to it compatibly).
    pub sized_by: Option<&'static str>,
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
    #[cfg(not(feature = "abi-1-0"))]
    VnodeMemInfo::LAYOUT,
    NodeMemInfo::LAYOUT,
    PhysInfo::LAYOUT,
    DomainNodePages::LAYOUT,
    #[cfg(not(feature = "abi-1-1"))]
    DmaExchange::LAYOUT,
    #[cfg(not(feature = "abi-1-2"))]
    VcpuContext::LAYOUT,
];

macro_rules! constants {
    ($($(#[$attr:meta])* $name:literal => $value:expr,)*) => {
        &[$($(#[$attr])* AbiConstant { name: $name, value: $value as u64 },)*]
    };
}

/// The `VMMCALL` opcode bytes as a little-endian number (`0xd9010f`).
const VMMCALL_OPCODE: u64 =
    VMMCALL[0] as u64 | (VMMCALL[1] as u64) << 8 | (VMMCALL[2] as u64) << 16;

/// Every numeric ABI constant that is not a hypercall number, an error code,
/// a feature bit, a shutdown status or an exit code (those have their own
/// lists).
pub const CONSTANTS: &[AbiConstant] = constants! {
    "ABI_MAJOR" => ABI_MAJOR,
    "ABI_MINOR" => ABI_MINOR,
    "PAGE_SHIFT" => PAGE_SHIFT,
    "PAGE_SIZE" => PAGE_SIZE,
    "VMMCALL" => VMMCALL_OPCODE,
    "VMMCALL_LEN" => VMMCALL_LEN,
    "CONSOLE_WRITE_MAX" => CONSOLE_WRITE_MAX,
    "QUERY_ALIGN" => QUERY_ALIGN,
    "HypercallResult::MAX_ERRNO" => HypercallResult::MAX_ERRNO,
    "START_INFO_MAGIC" => START_INFO_MAGIC,
    "StartInfo::SIZE_V1_0" => StartInfo::SIZE_V1_0,
    "MAX_MEM_RANGES" => MAX_MEM_RANGES,
    "CMDLINE_SIZE" => CMDLINE_SIZE,
    "GPA_LIMIT" => GPA_LIMIT,
    "MAX_VNODES" => MAX_VNODES,
    "VnumaTopologyInfo::SIZE_V1_0" => <VnumaTopologyInfo as Query>::SIZE_V1_0,
    "PhysInfo::SIZE_V1_0" => <PhysInfo as Query>::SIZE_V1_0,
    "DomainNodePages::SIZE_V1_0" => <DomainNodePages as Query>::SIZE_V1_0,
    "LOCAL_DISTANCE" => LOCAL_DISTANCE,
    "REMOTE_DISTANCE" => REMOTE_DISTANCE,
    "INVALID_NODE" => INVALID_NODE,
    "CPUID_1_ECX_HYPERVISOR" => CPUID_1_ECX_HYPERVISOR,
    "CPUID_LEAF_SIGNATURE" => CPUID_LEAF_SIGNATURE,
    "CPUID_LEAF_VERSION" => CPUID_LEAF_VERSION,
    "CPUID_MAX_LEAF" => CPUID_MAX_LEAF,
    "ELF_NOTE_ABI_VERSION" => ELF_NOTE_ABI_VERSION,
    "DEBUG_EXIT_PORT" => DEBUG_EXIT_PORT,
    #[cfg(not(feature = "abi-1-1"))]
    "DmaExchange::SIZE_V1_2" => DmaExchange::SIZE_V1_2,
    #[cfg(not(feature = "abi-1-1"))]
    "DMA_EXCHANGE_EXACT_NODE" => DMA_EXCHANGE_EXACT_NODE,
    #[cfg(not(feature = "abi-1-1"))]
    "DMA_EXCHANGE_OFF_NODE" => DMA_EXCHANGE_OFF_NODE,
    #[cfg(not(feature = "abi-1-1"))]
    "DMA_EXCHANGE_MAX_PAGES" => DMA_EXCHANGE_MAX_PAGES,
    #[cfg(not(feature = "abi-1-1"))]
    "DMA_EXCHANGE_MIN_BITS" => DMA_EXCHANGE_MIN_BITS,
    #[cfg(not(feature = "abi-1-2"))]
    "VcpuContext::SIZE_V1_3" => VcpuContext::SIZE_V1_3,
    #[cfg(not(feature = "abi-1-2"))]
    "VCPU_OP_UP" => VCPU_OP_UP,
    #[cfg(not(feature = "abi-1-2"))]
    "VCPU_OP_DOWN" => VCPU_OP_DOWN,
    #[cfg(not(feature = "abi-1-2"))]
    "VCPU_OP_IS_UP" => VCPU_OP_IS_UP,
};

const fn utf8(bytes: &'static [u8]) -> &'static str {
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(_) => panic!("an ABI text constant is not UTF-8"),
    }
}

/// The ABI's text constants: signatures and names ([`describe`] adds
/// `ARG_REGISTERS`, the argument registers in order).
pub const TEXT_CONSTANTS: &[(&str, &str)] = &[
    ("CPUID_SIGNATURE", utf8(&CPUID_SIGNATURE)),
    (
        "ELF_NOTE_NAME",
        utf8(ELF_NOTE_NAME.split_at(ELF_NOTE_NAME.len() - 1).0),
    ),
];

const _: () = assert!(ELF_NOTE_NAME[ELF_NOTE_NAME.len() - 1] == 0);

fn feature_name(f: Features) -> &'static str {
    Features::NAMED
        .iter()
        .find(|&&(_, bit)| bit == f)
        .map_or("?", |&(name, _)| name)
}

fn number(out: &mut dyn fmt::Write, value: u64) -> fmt::Result {
    if value < 0x1_0000 {
        write!(out, "{value}")
    } else {
        write!(out, "{value:#x}")
    }
}

/// Writes the description of the ABI this build of the crate defines, in
/// the [format](self#the-description-format) above.
pub fn describe(out: &mut dyn fmt::Write) -> fmt::Result {
    writeln!(
        out,
        "# numavisor pv-abi {}: generated from the pv-abi types (pv_abi::layout::describe);",
        AbiVersion::CURRENT
    )?;
    writeln!(
        out,
        "# the format is documented in pv-abi/src/layout.rs. A released version's file never changes."
    )?;
    writeln!(out, "abi {}", AbiVersion::CURRENT)?;
    for s in STRUCTS {
        write!(out, "struct {} size {} align {}", s.name, s.size, s.align)?;
        if let Some(f) = s.sized_by {
            write!(out, " sized-by {f}")?;
        }
        writeln!(out)?;
        for f in s.fields {
            writeln!(
                out,
                "field {} {} offset {} size {} type {}",
                s.name, f.name, f.offset, f.size, f.ty
            )?;
        }
    }
    for h in Hypercall::ALL {
        writeln!(
            out,
            "hypercall {} {} feature {} returns {}",
            h.raw(),
            h.name(),
            h.feature().map_or("-", feature_name),
            h.returns()
        )?;
        for (i, (name, ty)) in h.arguments().iter().enumerate() {
            writeln!(
                out,
                "arg {} {i} {name} register {} type {ty}",
                h.name(),
                ARG_REGISTERS[i]
            )?;
        }
    }
    for c in CONSTANTS {
        write!(out, "constant {} ", c.name)?;
        number(out, c.value)?;
        writeln!(out)?;
    }
    for (name, value) in TEXT_CONSTANTS {
        writeln!(out, "text {name} {value}")?;
    }
    write!(out, "text ARG_REGISTERS")?;
    for r in ARG_REGISTERS {
        write!(out, " {r}")?;
    }
    writeln!(out)?;
    for &(name, bit) in Features::NAMED {
        writeln!(out, "feature {} {name}", bit.bits().trailing_zeros())?;
    }
    for e in Error::ALL {
        writeln!(out, "error {} {}", e.code(), e.errno_name())?;
    }
    for (name, s) in ShutdownStatus::NAMED {
        writeln!(out, "status {} {name}", s.raw())?;
    }
    for c in ExitCode::ALL {
        writeln!(out, "exit {:#x} {}", c as u32, c.name())?;
    }
    Ok(())
}

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
    fn description_lists_everything() {
        let mut d = std::string::String::new();
        describe(&mut d).unwrap();
        assert!(d.contains(&std::format!("\nabi {}\n", AbiVersion::CURRENT)));
        assert!(d.contains("\nstruct StartInfo size 3144 align 8 sized-by size\n"));
        assert!(d.contains(
            "\nfield StartInfo mem_ranges offset 72 size 2048 type [MemRange; MAX_MEM_RANGES]\n"
        ));
        assert!(d.contains("\nhypercall 3 get_vnuma feature vnuma returns 0\n"));
        assert!(d.contains("\narg get_vnuma 0 info register rdi type Gpa<VnumaTopologyInfo>\n"));
        assert!(d.contains("\nconstant START_INFO_MAGIC 0x31525356414d554e\n"));
        assert!(d.contains("\ntext ELF_NOTE_NAME NumaVisor\n"));
        assert!(d.contains("\nerror -22 EINVAL\n"));
        assert!(d.contains("\nstatus 2 abi-mismatch\n"));
        assert!(d.contains("\nexit 0x10 success\n"));
        for s in STRUCTS {
            assert_eq!(
                d.matches(&std::format!("\nfield {} ", s.name)).count(),
                s.fields.len()
            );
        }
        for line in d.lines() {
            assert!(!line.contains("  ") && !line.ends_with(' '), "{line:?}");
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

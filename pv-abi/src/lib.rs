//! numavisor's paravirtual ABI, version 1.3 (1.2 with the `abi-1-2`
//! feature, 1.1 with `abi-1-1`, 1.0 with `abi-1-0`): the contract shared by the hypervisor, the guest OS and the
//! host tools. Nothing else defines these types; both kernels use them from
//! here.
//!
//! `no_std`, no dependencies. Every structure that crosses the boundary is
//! `#[repr(C)]`, little-endian, built only from fixed-width integers and
//! `#[repr(transparent)]` newtypes over them (no `bool`, no enums, no
//! `usize`), has no implicit padding, and has its size, alignment and field
//! offsets checked at compile time. Every bit pattern of such a structure is
//! valid, so one can be read safely from untrusted bytes ([`Pod::read_from`]).
//!
//! One file per concept: [`version`], [`features`], [`error`], [`addr`],
//! [`hypercall`], [`start_info`], [`vnuma`], [`physinfo`], [`node`], [`query`]
//! (the in/out structure protocol), `dma` (ABI 1.2: the DMA exchange), [`shutdown`], [`cpuid`], [`elf_note`],
//! [`exit`] (how a QEMU run ends), and [`layout`], a machine-readable
//! description of all of it, generated from the types themselves.
//!
//! # Calling convention
//!
//! A guest makes a hypercall at CPL 0 by executing `VMMCALL` (`0F 01 D9`,
//! [`hypercall::VMMCALL_LEN`] bytes) with:
//!
//! | register | meaning |
//! | --- | --- |
//! | RAX | hypercall number ([`Hypercall`]) |
//! | RDI, RSI, RDX, R10, R8 | arguments 0 to 4 (Linux's syscall order) |
//! | RAX (on return) | result, decoded with [`HypercallResult::decode`] |
//!
//! Every register other than RAX is preserved. A result in `[-4095, -1]` (as
//! `i64`) is an [`Error`] code; anything else is success. Unused argument
//! registers must be zero (the hypervisor refuses non-zero ones with
//! [`Error::InvalidArgument`], so a later minor version can give them a
//! meaning). Every pointer a guest passes is a guest-physical address
//! ([`Gpa`]), never a guest-virtual one. An unknown hypercall number gives
//! [`Error::Unsupported`]; a hypercall from CPL > 0 gives
//! [`Error::NotPermitted`]. Each [`Hypercall`] variant documents its
//! arguments, result and errors; [`HypercallRequest`] encodes and decodes them
//! so both sides share one definition.
//!
//! The guest starts as described in [`start_info`] (64-bit mode, RSI = the
//! [`Gpa`] of the [`StartInfo`] page); the hypervisor identifies itself
//! through CPUID ([`cpuid`]).
//!
//! # Versioning
//!
//! The ABI has a major and a minor version ([`AbiVersion`], currently
//! [`ABI_MAJOR`]`.`[`ABI_MINOR`]) and feature bits ([`Features`]) for optional
//! capabilities. A hypervisor and a guest work together when their majors are
//! equal; they then use what the lower minor defines, and feature bits tell
//! the guest which optional capabilities are there (a clear bit means a
//! fallback path, never a crash).
//!
//! Compatible changes (bump the minor):
//! - a new hypercall number;
//! - a new feature bit;
//! - a field appended to a structure that carries its own size
//!   ([`StartInfo::size`], and the `size` of every [`query`] structure);
//! - a new flag bit that the receiver may safely ignore (receivers ignore
//!   unknown bits of flags they are *given*; the hypervisor refuses unknown
//!   bits of flags a guest *passes* in, so a guest learns they are not
//!   understood).
//!
//! Anything else is a new major version: moving, resizing, retyping or
//! removing a field, renumbering a hypercall, changing an argument's meaning,
//! reusing a feature bit, changing an error code or a constant. A new error
//! code may only come from a new hypercall or a new feature the caller opts
//! into, so an old guest never sees one.
//!
//! Fixed in every version, major or not, so that any two builds can at least
//! tell each other apart: hypercall [`Hypercall::Version`] = 0, its result
//! encoding ([`AbiVersion::encode`]), the CPUID leaves in [`cpuid`], and the
//! first 16 bytes of [`StartInfo`] (magic, version, size).
//!
//! A guest asks the version (CPUID leaf [`cpuid::CPUID_LEAF_VERSION`] or
//! [`Hypercall::Version`]) and the features before anything else, refuses a
//! different major with a message naming both versions, and then shuts down
//! with [`ShutdownStatus::ABI_MISMATCH`]. A guest image declares the version
//! it was built against in an ELF note ([`elf_note`]); the hypervisor
//! refuses an image of another major before it runs, naming both versions
//! (an image without the note is taken as 1.0).
//!
//! ## How the rules are enforced
//!
//! - Layouts: [`abi_struct!`](crate::pod) checks every size, alignment and
//!   field offset at compile time, and records whether a structure carries
//!   its own size (`sized_by`), the precondition for appending to it.
//! - Releases: [`layout::describe`] writes a machine-readable description of
//!   everything above, generated from the types. Each released version's
//!   description is kept in `pv-abi/abi/vMAJOR.MINOR.abi`
//!   (`cargo xtask abi-record`). `cargo xtask abi-check`, part of
//!   `cargo xtask test`, compares the current types against every recorded
//!   version, prints each difference classified as compatible or breaking
//!   (with the field, offsets and sizes involved), and fails on a breaking
//!   change to a released version of the same major, or on any change to a
//!   version that is already recorded (a compatible change needs a new
//!   minor). It also builds this crate with each old version's feature and
//!   requires its description to equal the recorded one exactly.
//! - Pairings: the QEMU matrix (`tests/tests/abi.rs`) boots every pairing
//!   of a 1.0 and a current guest with a 1.0 and a current hypervisor, and
//!   proves that both sides refuse another major.
//!
//! ## Versions
//!
//! | version | adds |
//! | --- | --- |
//! | 1.0 | the first release: everything not listed below |
//! | 1.1 | [`Features::VNODE_MEM`] (bit 4), [`VnodeMemInfo`], and `vnode_mem` appended to [`VnumaTopologyInfo`] (48 → 56 bytes): per vnode, its physical node, size and the free memory behind it ([`vnuma`]) |
//! | 1.2 | `Features::DMA_EXCHANGE` (bit 5), hypercall 7 `DMA_EXCHANGE` and its `DmaExchange` structure: a domain trades pages for machine-contiguous memory below a DMA address limit, for its bounce pool (`dma`) |
//! | 1.3 | `Features::VCPU_OP` (bit 6), hypercall 8 `VCPU_OP` and its `VcpuContext` structure: a domain brings its secondary vCPUs up and down, each running on a physical CPU of its vnode's node (`vcpu`) |
//!
//! ## Building a kernel that speaks an older version
//!
//! The crate builds as ABI 1.0 with the cargo feature `abi-1-0`:
//! [`ABI_MINOR`] is 0 and every 1.1 and 1.2 addition is hidden (compiled
//! out), so a kernel built with it is a 1.0 kernel; `abi-1-1` builds it as
//! ABI 1.1 (every 1.2 and 1.3 addition hidden; `abi-1-0` implies it) and
//! `abi-1-2` as ABI 1.2 (every 1.3 addition hidden; `abi-1-1` implies it). Both kernels
//! forward them as their own features of the same names; `cargo xtask build
//! --abi 1.0` builds both into `target/abi-1.0/`, and `cargo xtask run
//! --hypervisor-abi 1.0 --guest-abi current` (or `--abi 1.0`) pairs them.
//! A later minor's addition follows the same pattern: append it last, gated
//! by `#[cfg(not(feature = "abi-1-2"))]` for 1.3's (and by a new feature
//! `abi-1-3`, implied by `abi-1-2`, for the version after).
//!
//! The test-only feature `abi-major-2` makes the crate claim major 2 (same
//! layouts), so that the matrix can prove the refusals.

#![no_std]

#[cfg(test)]
extern crate std;

#[macro_use]
pub mod pod;

pub mod addr;
pub mod cpuid;
#[cfg(not(feature = "abi-1-1"))]
pub mod dma;
pub mod elf_note;
pub mod error;
pub mod exit;
pub mod features;
pub mod hypercall;
pub mod layout;
pub mod node;
pub mod physinfo;
pub mod query;
pub mod shutdown;
pub mod start_info;
#[cfg(not(feature = "abi-1-2"))]
pub mod vcpu;
pub mod version;
pub mod vnuma;

pub use addr::{Gfn, Gpa, Maddr, Mfn, PAGE_SHIFT, PAGE_SIZE};
#[cfg(not(feature = "abi-1-1"))]
pub use dma::DmaExchange;
pub use error::Error;
pub use features::Features;
pub use hypercall::{Hypercall, HypercallArgs, HypercallRequest, HypercallResult};
pub use layout::AbiStruct;
pub use physinfo::{DomainNodePages, NodeMemInfo, PhysInfo};
pub use pod::Pod;
pub use query::Query;
pub use shutdown::ShutdownStatus;
pub use start_info::{MemRange, StartInfo};
#[cfg(not(feature = "abi-1-2"))]
pub use vcpu::{VcpuContext, VcpuOp};
pub use version::{AbiVersion, ABI_MAJOR, ABI_MINOR};
#[cfg(not(feature = "abi-1-0"))]
pub use vnuma::VnodeMemInfo;
pub use vnuma::{VmemRange, VnumaTopologyInfo};

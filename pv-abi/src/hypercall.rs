//! Hypercall numbers, arguments and results (the calling convention is in
//! the [crate docs](crate)).
//!
//! In short: `VMMCALL` at CPL 0; RAX = [`Hypercall`] number; arguments in
//! RDI, RSI, RDX, R10, R8; unused argument registers zero; result in RAX,
//! where `[-4095, -1]` as `i64` is an [`Error`] ([`HypercallResult`]); every
//! other register preserved; every pointer a [`Gpa`]. The guest builds a
//! [`HypercallRequest`] and issues [`HypercallRequest::to_args`]; the
//! hypervisor decodes the registers with [`HypercallRequest::from_args`],
//! which does every check that does not need guest memory. Under TCG there is
//! no next-RIP: the hypervisor advances RIP by [`VMMCALL_LEN`].

use crate::addr::Gpa;
use crate::error::Error;
use crate::features::Features;
use crate::shutdown::ShutdownStatus;
#[cfg(not(feature = "abi-1-2"))]
use crate::vcpu::VcpuOp;

/// The `VMMCALL` instruction.
pub const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];
/// Length of `VMMCALL`: how far the hypervisor advances RIP.
pub const VMMCALL_LEN: u64 = VMMCALL.len() as u64;
/// Most bytes one [`Hypercall::ConsoleWrite`] takes.
pub const CONSOLE_WRITE_MAX: u64 = 4096;
/// Alignment required of the `Gpa` of a [query](crate::query) structure.
pub const QUERY_ALIGN: u64 = 8;

/// Hypercall numbers (RAX). Values are fixed forever; new hypercalls take new
/// numbers. Each variant states its arguments, result and errors; every
/// hypercall also fails with [`Error::NotPermitted`] from CPL > 0 and
/// [`Error::InvalidArgument`] for a non-zero unused argument register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u64)]
pub enum Hypercall {
    /// `VERSION`: the hypervisor's ABI version.
    ///
    /// No arguments. Returns [`AbiVersion::encode`](crate::AbiVersion::encode)
    /// of the hypervisor's version. Never fails. Number and result are fixed
    /// in every ABI version, so a guest can always ask.
    Version = 0,
    /// `FEATURES`: one word of feature bits.
    ///
    /// RDI = word index. Returns word 0 as [`Features`] bits
    /// (bit 63 never set). ABI 1.0 defines word 0 only; any other index
    /// returns 0, so later versions can add words compatibly. Never fails.
    Features = 1,
    /// `CONSOLE_WRITE`: writes bytes to the hypervisor's console.
    ///
    /// RDI = [`Gpa`] of the bytes (any alignment, may cross pages), RSI =
    /// length (at most [`CONSOLE_WRITE_MAX`]). Returns the length, all of it
    /// written. The hypervisor may prefix each line with the domain's name.
    /// Errors: [`Error::InvalidArgument`] (too long), [`Error::Fault`] (bytes
    /// outside the domain's memory).
    ConsoleWrite = 2,
    /// `GET_VNUMA`: the calling domain's virtual NUMA topology.
    ///
    /// RDI = [`Gpa`] of a [`VnumaTopologyInfo`](crate::VnumaTopologyInfo)
    /// ([`QUERY_ALIGN`]-aligned), in/out per the [query protocol](crate::query).
    /// Since ABI 1.1 it also fills the per-vnode `vnode_mem` buffer when the
    /// caller gives one and [`Features::VNODE_MEM`](crate::Features) is
    /// offered ([`vnuma`](crate::vnuma)).
    /// Returns 0. Errors: [`Error::BufferTooSmall`] (needed counts written
    /// back), [`Error::InvalidArgument`] (misaligned, size below 1.0's,
    /// non-zero flags/reserved, misaligned buffer), [`Error::Fault`],
    /// [`Error::Unsupported`] (no [`Features::VNUMA`](crate::Features::VNUMA)).
    GetVnuma = 3,
    /// `PHYSINFO`: the machine's nodes, CPUs, memory and distances.
    ///
    /// RDI = [`Gpa`] of a [`PhysInfo`](crate::PhysInfo), in/out per the
    /// [query protocol](crate::query). Returns 0. Errors: as
    /// [`Hypercall::GetVnuma`], with [`Error::NotPermitted`] if policy hides
    /// the machine from this domain and [`Error::Unsupported`] without
    /// [`Features::PHYSINFO`](crate::Features::PHYSINFO).
    PhysInfo = 4,
    /// `DOMAIN_NODE_PAGES`: pages of the calling domain on each physical node.
    ///
    /// RDI = [`Gpa`] of a [`DomainNodePages`](crate::DomainNodePages), in/out
    /// per the [query protocol](crate::query). Returns the number of
    /// physical nodes (also written to `nr_nodes`). Errors: as
    /// [`Hypercall::GetVnuma`], [`Error::Unsupported`] without
    /// [`Features::DOMAIN_NODE_PAGES`](crate::Features::DOMAIN_NODE_PAGES).
    DomainNodePages = 5,
    /// `SHUTDOWN`: ends the calling domain.
    ///
    /// RDI = [`ShutdownStatus`] (0 success, anything else failure). Does not
    /// return: the hypervisor reports the status, tears the domain down and
    /// goes on.
    Shutdown = 6,
    /// `DMA_EXCHANGE` (ABI 1.2): gives back a guest-physical range of the
    /// calling domain and maps machine-contiguous memory below a DMA
    /// address limit there (see [`dma`](crate::dma)).
    ///
    /// RDI = [`Gpa`] of a [`DmaExchange`](crate::dma::DmaExchange)
    /// ([`QUERY_ALIGN`]-aligned), in/out. Returns the machine address of the
    /// range's first byte (also written to the structure). Errors:
    /// [`Error::InvalidArgument`], [`Error::Fault`], [`Error::OutOfMemory`]
    /// (nothing changed), [`Error::Unsupported`] (no
    /// [`Features::DMA_EXCHANGE`](crate::Features)).
    #[cfg(not(feature = "abi-1-1"))]
    DmaExchange = 7,
    /// `VCPU_OP` (ABI 1.3): brings a secondary vCPU up, the calling one
    /// down, or asks whether one is up (see [`vcpu`](crate::vcpu)).
    ///
    /// RDI = operation ([`VCPU_OP_UP`](crate::vcpu::VCPU_OP_UP),
    /// [`VCPU_OP_DOWN`](crate::vcpu::VCPU_OP_DOWN),
    /// [`VCPU_OP_IS_UP`](crate::vcpu::VCPU_OP_IS_UP)), RSI = vCPU id, RDX =
    /// [`Gpa`] of a [`VcpuContext`](crate::vcpu::VcpuContext) for UP, else 0.
    /// Returns 0 (UP), does not return (DOWN), 1 or 0 (IS_UP). Errors: see
    /// [`vcpu`](crate::vcpu); [`Error::Unsupported`] without
    /// [`Features::VCPU_OP`](crate::Features).
    #[cfg(not(feature = "abi-1-2"))]
    VcpuOp = 8,
}

impl Hypercall {
    /// Every hypercall this build of the ABI defines, in number order.
    pub const ALL: &'static [Hypercall] = &[
        Hypercall::Version,
        Hypercall::Features,
        Hypercall::ConsoleWrite,
        Hypercall::GetVnuma,
        Hypercall::PhysInfo,
        Hypercall::DomainNodePages,
        Hypercall::Shutdown,
        #[cfg(not(feature = "abi-1-1"))]
        Hypercall::DmaExchange,
        #[cfg(not(feature = "abi-1-2"))]
        Hypercall::VcpuOp,
    ];

    /// The hypercall with this number, or `None` (the hypervisor answers
    /// [`Error::Unsupported`]).
    pub const fn from_raw(nr: u64) -> Option<Hypercall> {
        Some(match nr {
            0 => Hypercall::Version,
            1 => Hypercall::Features,
            2 => Hypercall::ConsoleWrite,
            3 => Hypercall::GetVnuma,
            4 => Hypercall::PhysInfo,
            5 => Hypercall::DomainNodePages,
            6 => Hypercall::Shutdown,
            #[cfg(not(feature = "abi-1-1"))]
            7 => Hypercall::DmaExchange,
            #[cfg(not(feature = "abi-1-2"))]
            8 => Hypercall::VcpuOp,
            _ => return None,
        })
    }

    /// The number (RAX).
    pub const fn raw(self) -> u64 {
        self as u64
    }

    /// The ABI name, e.g. `"get_vnuma"`.
    pub const fn name(self) -> &'static str {
        match self {
            Hypercall::Version => "version",
            Hypercall::Features => "features",
            Hypercall::ConsoleWrite => "console_write",
            Hypercall::GetVnuma => "get_vnuma",
            Hypercall::PhysInfo => "physinfo",
            Hypercall::DomainNodePages => "domain_node_pages",
            Hypercall::Shutdown => "shutdown",
            #[cfg(not(feature = "abi-1-1"))]
            Hypercall::DmaExchange => "dma_exchange",
            #[cfg(not(feature = "abi-1-2"))]
            Hypercall::VcpuOp => "vcpu_op",
        }
    }

    /// The arguments in register order (RDI, RSI, ...), as (name, type).
    pub const fn arguments(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Hypercall::Version => &[],
            Hypercall::Features => &[("word", "u64")],
            Hypercall::ConsoleWrite => &[("buf", "Gpa"), ("len", "u64")],
            Hypercall::GetVnuma => &[("info", "Gpa<VnumaTopologyInfo>")],
            Hypercall::PhysInfo => &[("info", "Gpa<PhysInfo>")],
            Hypercall::DomainNodePages => &[("info", "Gpa<DomainNodePages>")],
            Hypercall::Shutdown => &[("status", "ShutdownStatus")],
            #[cfg(not(feature = "abi-1-1"))]
            Hypercall::DmaExchange => &[("info", "Gpa<DmaExchange>")],
            #[cfg(not(feature = "abi-1-2"))]
            Hypercall::VcpuOp => &[
                ("op", "u64"),
                ("vcpu", "u64"),
                ("context", "Gpa<VcpuContext>"),
            ],
        }
    }

    /// The feature bit without which the hypervisor answers
    /// [`Error::Unsupported`], if the hypercall has one.
    pub const fn feature(self) -> Option<Features> {
        match self {
            Hypercall::GetVnuma => Some(Features::VNUMA),
            Hypercall::PhysInfo => Some(Features::PHYSINFO),
            Hypercall::DomainNodePages => Some(Features::DOMAIN_NODE_PAGES),
            #[cfg(not(feature = "abi-1-1"))]
            Hypercall::DmaExchange => Some(Features::DMA_EXCHANGE),
            #[cfg(not(feature = "abi-1-2"))]
            Hypercall::VcpuOp => Some(Features::VCPU_OP),
            Hypercall::Version
            | Hypercall::Features
            | Hypercall::ConsoleWrite
            | Hypercall::Shutdown => None,
        }
    }

    /// What a successful call returns in RAX.
    pub const fn returns(self) -> &'static str {
        match self {
            Hypercall::Version => "AbiVersion::encode()",
            Hypercall::Features => "feature word",
            Hypercall::ConsoleWrite => "bytes written",
            Hypercall::GetVnuma | Hypercall::PhysInfo => "0",
            Hypercall::DomainNodePages => "number of physical nodes",
            Hypercall::Shutdown => "does not return",
            #[cfg(not(feature = "abi-1-1"))]
            Hypercall::DmaExchange => "machine address of the range",
            #[cfg(not(feature = "abi-1-2"))]
            Hypercall::VcpuOp => "0 (up), 1 or 0 (is_up); down does not return",
        }
    }
}

/// Argument registers in order.
pub const ARG_REGISTERS: [&str; 5] = ["rdi", "rsi", "rdx", "r10", "r8"];

abi_struct! {
    /// The registers of one hypercall: `nr` in RAX, `args` in RDI, RSI, RDX,
    /// R10, R8.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct HypercallArgs(size = 48, align = 8) {
        /// RAX.
        pub nr: u64 => 0,
        /// RDI, RSI, RDX, R10, R8.
        pub args: [u64; 5] => 8,
    }
}

impl HypercallArgs {
    /// Registers for hypercall `call` with these arguments.
    pub const fn new(call: Hypercall, args: [u64; 5]) -> Self {
        HypercallArgs {
            nr: call.raw(),
            args,
        }
    }

    /// The hypercall in RAX, if known.
    pub const fn hypercall(&self) -> Option<Hypercall> {
        Hypercall::from_raw(self.nr)
    }
}

/// A hypercall with typed arguments: built by the guest, decoded by the
/// hypervisor, so both read the registers the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallRequest {
    /// [`Hypercall::Version`].
    Version,
    /// [`Hypercall::Features`].
    Features {
        /// Feature word index (0 in ABI 1.0).
        word: u64,
    },
    /// [`Hypercall::ConsoleWrite`].
    ConsoleWrite {
        /// The bytes.
        buf: Gpa,
        /// How many.
        len: u64,
    },
    /// [`Hypercall::GetVnuma`].
    GetVnuma {
        /// The [`VnumaTopologyInfo`](crate::VnumaTopologyInfo).
        info: Gpa,
    },
    /// [`Hypercall::PhysInfo`].
    PhysInfo {
        /// The [`PhysInfo`](crate::PhysInfo).
        info: Gpa,
    },
    /// [`Hypercall::DomainNodePages`].
    DomainNodePages {
        /// The [`DomainNodePages`](crate::DomainNodePages).
        info: Gpa,
    },
    /// [`Hypercall::Shutdown`].
    Shutdown {
        /// The domain's status.
        status: ShutdownStatus,
    },
    /// [`Hypercall::DmaExchange`].
    #[cfg(not(feature = "abi-1-1"))]
    DmaExchange {
        /// The [`DmaExchange`](crate::dma::DmaExchange).
        info: Gpa,
    },
    /// [`Hypercall::VcpuOp`].
    #[cfg(not(feature = "abi-1-2"))]
    VcpuOp {
        /// The operation and its vCPU.
        op: VcpuOp,
    },
}

impl HypercallRequest {
    /// The hypercall this is.
    pub const fn hypercall(&self) -> Hypercall {
        match self {
            HypercallRequest::Version => Hypercall::Version,
            HypercallRequest::Features { .. } => Hypercall::Features,
            HypercallRequest::ConsoleWrite { .. } => Hypercall::ConsoleWrite,
            HypercallRequest::GetVnuma { .. } => Hypercall::GetVnuma,
            HypercallRequest::PhysInfo { .. } => Hypercall::PhysInfo,
            HypercallRequest::DomainNodePages { .. } => Hypercall::DomainNodePages,
            HypercallRequest::Shutdown { .. } => Hypercall::Shutdown,
            #[cfg(not(feature = "abi-1-1"))]
            HypercallRequest::DmaExchange { .. } => Hypercall::DmaExchange,
            #[cfg(not(feature = "abi-1-2"))]
            HypercallRequest::VcpuOp { .. } => Hypercall::VcpuOp,
        }
    }

    /// The registers to load before `VMMCALL` (unused ones zero).
    pub const fn to_args(&self) -> HypercallArgs {
        let args = match *self {
            HypercallRequest::Version => [0; 5],
            HypercallRequest::Features { word } => [word, 0, 0, 0, 0],
            HypercallRequest::ConsoleWrite { buf, len } => [buf.0, len, 0, 0, 0],
            HypercallRequest::GetVnuma { info }
            | HypercallRequest::PhysInfo { info }
            | HypercallRequest::DomainNodePages { info } => [info.0, 0, 0, 0, 0],
            HypercallRequest::Shutdown { status } => [status.0, 0, 0, 0, 0],
            #[cfg(not(feature = "abi-1-1"))]
            HypercallRequest::DmaExchange { info } => [info.0, 0, 0, 0, 0],
            #[cfg(not(feature = "abi-1-2"))]
            HypercallRequest::VcpuOp { op } => {
                let [a, b, c] = op.to_args();
                [a, b, c, 0, 0]
            }
        };
        HypercallArgs::new(self.hypercall(), args)
    }

    /// Decodes a guest's registers, with every check that needs no guest
    /// memory: [`Error::Unsupported`] for an unknown number,
    /// [`Error::InvalidArgument`] for a non-zero unused register, a console
    /// write longer than [`CONSOLE_WRITE_MAX`] or a query structure not
    /// [`QUERY_ALIGN`]-aligned.
    pub fn from_args(regs: &HypercallArgs) -> Result<Self, Error> {
        let call = regs.hypercall().ok_or(Error::Unsupported)?;
        let used = call.arguments().len();
        if regs.args[used..].iter().any(|&a| a != 0) {
            return Err(Error::InvalidArgument);
        }
        #[cfg(not(feature = "abi-1-2"))]
        let [a0, a1, a2, ..] = regs.args;
        #[cfg(feature = "abi-1-2")]
        let [a0, a1, ..] = regs.args;
        let query = |raw: u64| {
            let gpa = Gpa(raw);
            if gpa.is_aligned(QUERY_ALIGN) {
                Ok(gpa)
            } else {
                Err(Error::InvalidArgument)
            }
        };
        Ok(match call {
            Hypercall::Version => HypercallRequest::Version,
            Hypercall::Features => HypercallRequest::Features { word: a0 },
            Hypercall::ConsoleWrite => {
                if a1 > CONSOLE_WRITE_MAX {
                    return Err(Error::InvalidArgument);
                }
                HypercallRequest::ConsoleWrite {
                    buf: Gpa(a0),
                    len: a1,
                }
            }
            Hypercall::GetVnuma => HypercallRequest::GetVnuma { info: query(a0)? },
            Hypercall::PhysInfo => HypercallRequest::PhysInfo { info: query(a0)? },
            Hypercall::DomainNodePages => HypercallRequest::DomainNodePages { info: query(a0)? },
            Hypercall::Shutdown => HypercallRequest::Shutdown {
                status: ShutdownStatus(a0),
            },
            #[cfg(not(feature = "abi-1-1"))]
            Hypercall::DmaExchange => HypercallRequest::DmaExchange { info: query(a0)? },
            #[cfg(not(feature = "abi-1-2"))]
            Hypercall::VcpuOp => HypercallRequest::VcpuOp {
                op: VcpuOp::from_args(a0, a1, a2)?,
            },
        })
    }
}

/// Encoding of the result register (RAX), Linux style: `[-4095, -1]` as
/// `i64` is an error code, everything else a successful value.
pub enum HypercallResult {}

impl HypercallResult {
    /// Largest error magnitude (Linux's `MAX_ERRNO`).
    pub const MAX_ERRNO: u64 = 4095;
    /// Largest value a successful call can return (`-4096` as `u64`).
    pub const MAX_SUCCESS: u64 = u64::MAX - Self::MAX_ERRNO;

    /// The RAX value for a result. No hypercall defines a successful value
    /// above [`MAX_SUCCESS`](Self::MAX_SUCCESS); one would read as an error,
    /// so it is encoded as [`Error::InvalidArgument`] rather than passed off
    /// as success.
    pub const fn encode(result: Result<u64, Error>) -> u64 {
        match result {
            Ok(v) if v <= Self::MAX_SUCCESS => v,
            Ok(_) => Error::InvalidArgument.code() as u64,
            Err(e) => e.code() as u64,
        }
    }

    /// The result a RAX value means. An error code this crate does not know
    /// (which the versioning rules keep an older guest from ever seeing)
    /// decodes as [`Error::Unsupported`]; [`error_code`](Self::error_code)
    /// gives the raw number.
    pub const fn decode(raw: u64) -> Result<u64, Error> {
        match Self::error_code(raw) {
            None => Ok(raw),
            Some(code) => match Error::from_code(code) {
                Some(e) => Err(e),
                None => Err(Error::Unsupported),
            },
        }
    }

    /// The negative error code in `raw`, if it is one.
    pub const fn error_code(raw: u64) -> Option<i64> {
        if raw > Self::MAX_SUCCESS {
            Some(raw as i64)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable() {
        assert_eq!(Hypercall::Version.raw(), 0);
        assert_eq!(Hypercall::Features.raw(), 1);
        assert_eq!(Hypercall::ConsoleWrite.raw(), 2);
        assert_eq!(Hypercall::GetVnuma.raw(), 3);
        assert_eq!(Hypercall::PhysInfo.raw(), 4);
        assert_eq!(Hypercall::DomainNodePages.raw(), 5);
        assert_eq!(Hypercall::Shutdown.raw(), 6);
        #[cfg(not(feature = "abi-1-1"))]
        assert_eq!(Hypercall::DmaExchange.raw(), 7);
        #[cfg(not(feature = "abi-1-2"))]
        assert_eq!(Hypercall::VcpuOp.raw(), 8);
        for (i, h) in Hypercall::ALL.iter().enumerate() {
            assert_eq!(h.raw(), i as u64);
            assert_eq!(Hypercall::from_raw(h.raw()), Some(*h));
            assert!(h.arguments().len() <= ARG_REGISTERS.len());
        }
    }

    #[test]
    fn from_raw_rejects_unknown_numbers() {
        let first_unknown = Hypercall::ALL.len() as u64;
        for nr in [
            first_unknown,
            first_unknown + 1,
            100,
            0x8000_0000,
            u64::MAX,
            u64::MAX - 1,
            1 << 32,
        ] {
            assert_eq!(Hypercall::from_raw(nr), None);
            let regs = HypercallArgs { nr, args: [0; 5] };
            assert_eq!(HypercallRequest::from_args(&regs), Err(Error::Unsupported));
        }
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            HypercallRequest::Version,
            HypercallRequest::Features { word: 0 },
            HypercallRequest::Features { word: 3 },
            HypercallRequest::ConsoleWrite {
                buf: Gpa(0x1234_5677),
                len: 13,
            },
            HypercallRequest::ConsoleWrite {
                buf: Gpa(0),
                len: CONSOLE_WRITE_MAX,
            },
            HypercallRequest::GetVnuma {
                info: Gpa(0x10_0008),
            },
            HypercallRequest::PhysInfo { info: Gpa(0) },
            HypercallRequest::DomainNodePages {
                info: Gpa(0x1_0000_0000),
            },
            HypercallRequest::Shutdown {
                status: ShutdownStatus::ABI_MISMATCH,
            },
            HypercallRequest::Shutdown {
                status: ShutdownStatus(u64::MAX),
            },
            #[cfg(not(feature = "abi-1-1"))]
            HypercallRequest::DmaExchange {
                info: Gpa(0x20_0008),
            },
            #[cfg(not(feature = "abi-1-2"))]
            HypercallRequest::VcpuOp {
                op: VcpuOp::Up {
                    vcpu: 2,
                    context: Gpa(0x30_0008),
                },
            },
            #[cfg(not(feature = "abi-1-2"))]
            HypercallRequest::VcpuOp {
                op: VcpuOp::IsUp { vcpu: 1 },
            },
        ];
        for r in requests {
            let regs = r.to_args();
            assert_eq!(regs.nr, r.hypercall().raw());
            assert_eq!(HypercallRequest::from_args(&regs), Ok(r));
        }
        let regs = HypercallRequest::ConsoleWrite {
            buf: Gpa(0x1000),
            len: 5,
        }
        .to_args();
        assert_eq!(regs.args, [0x1000, 5, 0, 0, 0]);
    }

    #[test]
    fn from_args_checks_what_it_can() {
        let bad = [
            // Unused register not zero.
            HypercallArgs {
                nr: 0,
                args: [1, 0, 0, 0, 0],
            },
            HypercallArgs {
                nr: 6,
                args: [0, 0, 0, 0, 9],
            },
            HypercallArgs {
                nr: 2,
                args: [0x1000, 1, 1, 0, 0],
            },
            // Console write too long.
            HypercallArgs {
                nr: 2,
                args: [0x1000, CONSOLE_WRITE_MAX + 1, 0, 0, 0],
            },
            // Misaligned query structures.
            HypercallArgs {
                nr: 3,
                args: [0x1004, 0, 0, 0, 0],
            },
            HypercallArgs {
                nr: 4,
                args: [0x1001, 0, 0, 0, 0],
            },
            HypercallArgs {
                nr: 5,
                args: [u64::MAX, 0, 0, 0, 0],
            },
            #[cfg(not(feature = "abi-1-1"))]
            HypercallArgs {
                nr: 7,
                args: [0x1004, 0, 0, 0, 0],
            },
            #[cfg(not(feature = "abi-1-1"))]
            HypercallArgs {
                nr: 7,
                args: [0x1000, 1, 0, 0, 0],
            },
            #[cfg(not(feature = "abi-1-2"))]
            HypercallArgs {
                nr: 8,
                args: [0, 1, 0x1000, 5, 0],
            },
            #[cfg(not(feature = "abi-1-2"))]
            HypercallArgs {
                nr: 8,
                args: [9, 1, 0, 0, 0],
            },
        ];
        for regs in bad {
            assert_eq!(
                HypercallRequest::from_args(&regs),
                Err(Error::InvalidArgument),
                "{regs:?}"
            );
        }
    }

    #[test]
    fn results_round_trip() {
        for v in [0, 1, 0x1_0000, HypercallResult::MAX_SUCCESS] {
            let raw = HypercallResult::encode(Ok(v));
            assert_eq!(raw, v);
            assert_eq!(HypercallResult::decode(raw), Ok(v));
        }
        for e in Error::ALL {
            let raw = HypercallResult::encode(Err(e));
            assert_eq!(raw as i64, e.code());
            assert_eq!(HypercallResult::decode(raw), Err(e));
            assert_eq!(HypercallResult::error_code(raw), Some(e.code()));
        }
        // -4096 is a value, -4095 an (unknown) error.
        assert_eq!(
            HypercallResult::decode(-4096i64 as u64),
            Ok(-4096i64 as u64)
        );
        assert_eq!(
            HypercallResult::decode(-4095i64 as u64),
            Err(Error::Unsupported)
        );
        assert_eq!(HypercallResult::error_code(-4095i64 as u64), Some(-4095));
        assert_eq!(
            HypercallResult::decode(-3i64 as u64),
            Err(Error::Unsupported)
        );
        // A value that would look like an error is never sent as success.
        assert_eq!(
            HypercallResult::decode(HypercallResult::encode(Ok(u64::MAX))),
            Err(Error::InvalidArgument)
        );
    }
}

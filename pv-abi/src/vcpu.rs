//! Secondary vCPUs (ABI 1.3): the `VCPU_OP` hypercall, in the spirit of
//! Xen's `VCPUOP_initialise` + `VCPUOP_up` / `VCPUOP_down` /
//! `VCPUOP_is_up`.
//!
//! A domain starts with vCPU 0 running and every other vCPU down
//! ([`StartInfo::nr_vcpus`](crate::StartInfo::nr_vcpus) says how many it
//! has). The guest brings the others up itself, one
//! [`VCPU_OP_UP`] each, with the state they start in.
//!
//! # Operations
//!
//! RDI = the operation, RSI = the vCPU id, RDX = the [`Gpa`] of a
//! [`VcpuContext`] for [`VCPU_OP_UP`] ([`QUERY_ALIGN`](crate::hypercall::QUERY_ALIGN)-aligned),
//! 0 otherwise.
//!
//! - [`VCPU_OP_UP`]: starts vCPU `vcpu` (1 to `nr_vcpus - 1`, currently
//!   down) in the state the context gives. Returns 0 once the hypervisor
//!   has queued it on its physical CPU; the vCPU starts asynchronously, a
//!   moment later. A vCPU that went down may be brought up again, with a
//!   new context.
//! - [`VCPU_OP_DOWN`]: the calling vCPU stops (RSI = its own id; vCPU 0
//!   may not: it ends the domain with `SHUTDOWN`). Does not return; its
//!   registers are lost.
//! - [`VCPU_OP_IS_UP`]: returns 1 if vCPU `vcpu` is up, 0 if down.
//!
//! Errors: [`Error::InvalidArgument`] (unknown operation, non-zero RDX for
//! DOWN or IS_UP, UP of vCPU 0 or of a vCPU that is up, DOWN of another
//! vCPU or of vCPU 0, a context that [`VcpuContext::check`] refuses),
//! [`Error::NoSuchThing`] (no such vCPU), [`Error::Fault`] (the context,
//! or its `cr3`, is not in the domain's memory), [`Error::OutOfMemory`]
//! (no memory for the vCPU's hypervisor state), [`Error::Unsupported`]
//! (no [`Features::VCPU_OP`](crate::Features)).
//!
//! # Where a vCPU runs
//!
//! Each vCPU runs on one physical CPU, chosen when the domain is built:
//! the CPU the domain's `cpus` pinning names, or else a CPU of its vnode's
//! physical node (the nearest node with CPUs for a CPU-less one), the
//! least loaded first. vCPUs that share a physical CPU take turns. So a
//! vCPU's vnode in [`VnumaTopologyInfo`](crate::VnumaTopologyInfo) is where
//! it really runs, as its memory is.
//!
//! # Entry state of a secondary vCPU
//!
//! As vCPU 0's ([`start_info`](crate::start_info)): 64-bit long mode at CPL
//! 0, EFER.NXE set, RFLAGS = `0x2` (IF clear), IDTR limit 0; CS has
//! selector `0x08` (flat 64-bit code) and DS, ES, SS, FS, GS selector `0x10`
//! (flat data), their hidden parts loaded; and from the context: RIP =
//! `rip`, RSP = `rsp`, CR3 = `cr3`, GDTR = `gdt_base`/`gdt_limit`,
//! RDI = the vCPU's id, RSI = `arg`. Every other general-purpose register
//! is 0. The vCPU shares the domain's memory with every other vCPU.
//!
//! [`Error::InvalidArgument`]: crate::Error::InvalidArgument
//! [`Error::NoSuchThing`]: crate::Error::NoSuchThing
//! [`Error::Fault`]: crate::Error::Fault
//! [`Error::OutOfMemory`]: crate::Error::OutOfMemory
//! [`Error::Unsupported`]: crate::Error::Unsupported

use core::mem::size_of;

use crate::addr::Gpa;
use crate::error::Error;
use crate::start_info::GPA_LIMIT;

/// `VCPU_OP` operation: start a vCPU that is down.
pub const VCPU_OP_UP: u64 = 0;
/// `VCPU_OP` operation: the calling vCPU stops.
pub const VCPU_OP_DOWN: u64 = 1;
/// `VCPU_OP` operation: whether a vCPU is up.
pub const VCPU_OP_IS_UP: u64 = 2;

/// A `VCPU_OP` request, decoded from the registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuOp {
    /// [`VCPU_OP_UP`] with the [`VcpuContext`] at `context`.
    Up { vcpu: u32, context: Gpa },
    /// [`VCPU_OP_DOWN`].
    Down { vcpu: u32 },
    /// [`VCPU_OP_IS_UP`].
    IsUp { vcpu: u32 },
}

impl VcpuOp {
    /// The vCPU it names.
    pub const fn vcpu(self) -> u32 {
        match self {
            VcpuOp::Up { vcpu, .. } | VcpuOp::Down { vcpu } | VcpuOp::IsUp { vcpu } => vcpu,
        }
    }

    /// RDI, RSI, RDX.
    pub const fn to_args(self) -> [u64; 3] {
        match self {
            VcpuOp::Up { vcpu, context } => [VCPU_OP_UP, vcpu as u64, context.0],
            VcpuOp::Down { vcpu } => [VCPU_OP_DOWN, vcpu as u64, 0],
            VcpuOp::IsUp { vcpu } => [VCPU_OP_IS_UP, vcpu as u64, 0],
        }
    }

    /// Decodes RDI, RSI, RDX, with every check that needs no guest memory.
    pub const fn from_args(op: u64, vcpu: u64, context: u64) -> Result<Self, Error> {
        if vcpu > u32::MAX as u64 {
            return Err(Error::NoSuchThing);
        }
        let vcpu = vcpu as u32;
        match op {
            VCPU_OP_UP => {
                let context = Gpa(context);
                if !context.is_aligned(crate::hypercall::QUERY_ALIGN) {
                    return Err(Error::InvalidArgument);
                }
                Ok(VcpuOp::Up { vcpu, context })
            }
            VCPU_OP_DOWN if context == 0 => Ok(VcpuOp::Down { vcpu }),
            VCPU_OP_IS_UP if context == 0 => Ok(VcpuOp::IsUp { vcpu }),
            _ => Err(Error::InvalidArgument),
        }
    }
}

abi_struct! {
    /// The state a secondary vCPU starts in ([`VCPU_OP_UP`]; see the
    /// [module docs](self)).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct VcpuContext(size = 56, align = 8, sized_by = size) {
        /// `size_of` the caller knows (at least [`VcpuContext::SIZE_V1_3`]).
        pub size: u32 => 0,
        /// Must be 0.
        pub flags: u32 => 4,
        /// First instruction (a canonical virtual address).
        pub rip: u64 => 8,
        /// Initial stack pointer (canonical).
        pub rsp: u64 => 16,
        /// Page tables: the guest-physical address of a PML4 (page-aligned).
        pub cr3: Gpa => 24,
        /// Passed in RSI.
        pub arg: u64 => 32,
        /// GDTR base (a canonical virtual address).
        pub gdt_base: u64 => 40,
        /// GDTR limit (at most `0xffff`).
        pub gdt_limit: u32 => 48,
        /// Must be 0.
        pub reserved: u32 => 52,
    }
}

/// Whether `va` is a canonical 48-bit virtual address.
const fn is_canonical(va: u64) -> bool {
    let upper = va >> 47;
    upper == 0 || upper == (1 << 17) - 1
}

impl VcpuContext {
    /// The structure's size in ABI 1.3, where it first appeared: the
    /// smallest `size` a caller may pass.
    pub const SIZE_V1_3: u32 = 56;

    /// A context starting at `rip` with stack `rsp`, page tables `cr3`, the
    /// GDT at `gdt_base` (`gdt_limit`) and `arg` in RSI.
    pub const fn new(
        rip: u64,
        rsp: u64,
        cr3: Gpa,
        gdt_base: u64,
        gdt_limit: u32,
        arg: u64,
    ) -> Self {
        VcpuContext {
            size: size_of::<Self>() as u32,
            flags: 0,
            rip,
            rsp,
            cr3,
            arg,
            gdt_base,
            gdt_limit,
            reserved: 0,
        }
    }

    /// The context as the hypervisor accepts it: `size` at least
    /// [`SIZE_V1_3`](Self::SIZE_V1_3), `flags` and `reserved` zero, `rip`,
    /// `rsp` and `gdt_base` canonical, `cr3` page-aligned below
    /// [`GPA_LIMIT`], `gdt_limit` at most `0xffff`. Whether `cr3` is the
    /// domain's memory is the hypervisor's check.
    pub const fn check(&self) -> Result<(), Error> {
        if self.size < Self::SIZE_V1_3
            || self.flags != 0
            || self.reserved != 0
            || !is_canonical(self.rip)
            || !is_canonical(self.rsp)
            || !is_canonical(self.gdt_base)
            || !self.cr3.is_page_aligned()
            || self.cr3.0 >= GPA_LIMIT
            || self.gdt_limit > 0xffff
        {
            return Err(Error::InvalidArgument);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pod;

    fn ok() -> VcpuContext {
        VcpuContext::new(
            0xffff_ffff_8020_1000,
            0x40_0000,
            Gpa(0x10_0000),
            0x20_0000,
            0x17,
            7,
        )
    }

    #[test]
    fn contexts_are_checked() {
        assert_eq!(ok().check(), Ok(()));
        let mut bigger = ok();
        bigger.size = 64;
        assert_eq!(bigger.check(), Ok(()));
        let bad: [fn(&mut VcpuContext); 9] = [
            |c| c.size = 55,
            |c| c.flags = 1,
            |c| c.reserved = 1,
            |c| c.rip = 0x0000_8000_0000_0000,
            |c| c.rsp = 0xffff_7fff_ffff_fff0,
            |c| c.gdt_base = 1 << 63,
            |c| c.cr3 = Gpa(0x10_0800),
            |c| c.cr3 = Gpa(GPA_LIMIT),
            |c| c.gdt_limit = 0x1_0000,
        ];
        for (i, f) in bad.iter().enumerate() {
            let mut c = ok();
            f(&mut c);
            assert_eq!(c.check(), Err(Error::InvalidArgument), "case {i}");
        }
    }

    #[test]
    fn operations_round_trip_and_refuse_garbage() {
        for op in [
            VcpuOp::Up {
                vcpu: 3,
                context: Gpa(0x1000),
            },
            VcpuOp::Down { vcpu: 1 },
            VcpuOp::IsUp { vcpu: u32::MAX },
        ] {
            let [a, b, c] = op.to_args();
            assert_eq!(VcpuOp::from_args(a, b, c), Ok(op));
        }
        assert_eq!(
            VcpuOp::from_args(VCPU_OP_UP, 1, 0x1004),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            VcpuOp::from_args(VCPU_OP_DOWN, 1, 0x1000),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            VcpuOp::from_args(VCPU_OP_IS_UP, 1, 8),
            Err(Error::InvalidArgument)
        );
        assert_eq!(VcpuOp::from_args(3, 1, 0), Err(Error::InvalidArgument));
        assert_eq!(
            VcpuOp::from_args(VCPU_OP_IS_UP, 1 << 32, 0),
            Err(Error::NoSuchThing)
        );
    }

    #[test]
    fn layout() {
        let c = ok();
        let bytes = c.as_bytes();
        assert_eq!(bytes.len(), 56);
        assert_eq!(&bytes[0..4], &56u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &0xffff_ffff_8020_1000u64.to_le_bytes());
        assert_eq!(&bytes[24..32], &0x10_0000u64.to_le_bytes());
        assert_eq!(&bytes[48..52], &0x17u32.to_le_bytes());
    }
}

//! A virtual CPU: its VMCB and the guest registers VMRUN does not switch.

use core::mem::offset_of;

use super::vmcb::{
    event_inj, misc1, misc2, Segment, Vmcb, NESTED_CTL_NP_ENABLE, TLB_CONTROL_FLUSH_ALL, VECTOR_GP,
};

/// Guest general-purpose registers other than RAX and RSP (those live in the
/// VMCB). The VMRUN stub loads them before VMRUN and stores them after the
/// #VMEXIT; its offsets are checked below.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct GuestRegs {
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

const _: () = {
    assert!(offset_of!(GuestRegs, rbx) == 0);
    assert!(offset_of!(GuestRegs, rsi) == 24);
    assert!(offset_of!(GuestRegs, rdi) == 32);
    assert!(offset_of!(GuestRegs, rbp) == 40);
    assert!(offset_of!(GuestRegs, r8) == 48);
    assert!(offset_of!(GuestRegs, r15) == 104);
};

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
pub const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
pub const EFER_SCE: u64 = 1 << 0;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NXE: u64 = 1 << 11;
/// Must stay set in the guest's EFER, or VMRUN refuses the VMCB.
pub const EFER_SVME: u64 = 1 << 12;
pub const EFER_LMSLE: u64 = 1 << 13;
pub const EFER_FFXSR: u64 = 1 << 14;
pub const EFER_TCE: u64 = 1 << 15;

/// Flat 64-bit code segment: type execute/read accessed, S, P, L.
const CODE64: Segment = Segment {
    selector: 0x08,
    attrib: 0x029B,
    limit: 0xFFFF_FFFF,
    base: 0,
};
/// Flat data segment: type read/write accessed, S, P, D/B, G.
const DATA: Segment = Segment {
    selector: 0x10,
    attrib: 0x0C93,
    limit: 0xFFFF_FFFF,
    base: 0,
};
/// A present, busy 64-bit TSS descriptor state (VMRUN loads TR as is).
const TSS: Segment = Segment {
    selector: 0,
    attrib: 0x008B,
    limit: 0x67,
    base: 0,
};

/// VMCB `int_control` bit 24: virtualize the guest's interrupt masking.
pub const V_INTR_MASKING: u32 = 1 << 24;

/// Where a vCPU starts: 64-bit mode, paging on.
#[derive(Clone, Copy, Debug)]
pub struct EntryState {
    pub rip: u64,
    /// Guest-physical address of the guest's PML4.
    pub cr3: u64,
    pub rsp: u64,
    /// Passed in RSI (vCPU 0: the start-info page's guest-physical address).
    pub rsi: u64,
    /// Passed in RDI (a secondary vCPU: its id).
    pub rdi: u64,
}

/// Shared host pages VMRUN needs, by machine address.
#[derive(Clone, Copy, Debug)]
pub struct InterceptMaps {
    /// 12 KiB I/O permission map (all ones: every port intercepted).
    pub iopm: u64,
    /// 8 KiB MSR permission map (all ones: every MSR intercepted).
    pub msrpm: u64,
}

/// One virtual CPU.
pub struct Vcpu {
    pub vmcb: Vmcb,
    pub regs: GuestRegs,
    pub id: u32,
    /// Exits handled, for the report at teardown.
    pub exits: u64,
    /// The domain's TLB generation this vCPU last flushed for (the domain
    /// bumps it when a guest-physical mapping changes).
    pub tlb_generation: u64,
}

impl Vcpu {
    /// A vCPU that starts at `entry` in 64-bit mode on nested tables `npt_root`.
    pub fn new(id: u32, asid: u32, entry: EntryState, npt_root: u64, maps: InterceptMaps) -> Vcpu {
        let mut vmcb = Vmcb::zeroed();
        let c = &mut vmcb.control;
        c.intercept_misc1 = misc1::INTR
            | misc1::NMI
            | misc1::CPUID
            | misc1::PAUSE
            | misc1::HLT
            | misc1::INVLPGA
            | misc1::IOIO_PROT
            | misc1::MSR_PROT
            | misc1::TASK_SWITCH
            | misc1::SHUTDOWN;
        c.intercept_misc2 = misc2::VMRUN
            | misc2::VMMCALL
            | misc2::VMLOAD
            | misc2::VMSAVE
            | misc2::STGI
            | misc2::CLGI
            | misc2::SKINIT
            | misc2::XSETBV;
        c.iopm_base_pa = maps.iopm;
        c.msrpm_base_pa = maps.msrpm;
        c.guest_asid = asid;
        c.tlb_control = TLB_CONTROL_FLUSH_ALL;
        // Physical interrupts follow the host's interrupt flag, not the
        // guest's: a wake-up IPI or time-slice end always exits (INTR).
        c.int_control = V_INTR_MASKING;
        c.nested_ctl = NESTED_CTL_NP_ENABLE;
        c.nested_cr3 = npt_root;

        let s = &mut vmcb.save;
        s.cs = CODE64;
        s.ds = DATA;
        s.es = DATA;
        s.ss = DATA;
        s.fs = DATA;
        s.gs = DATA;
        s.tr = TSS;
        s.ldtr = Segment {
            attrib: 0x0082,
            ..Segment::default()
        };
        s.gdtr = Segment::default();
        s.idtr = Segment::default();
        s.cpl = 0;
        s.efer = EFER_LME | EFER_LMA | EFER_SVME;
        s.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        s.cr4 = CR4_PAE;
        s.cr3 = entry.cr3;
        s.dr6 = 0xFFFF_0FF0;
        s.dr7 = 0x400;
        s.rflags = 0x2;
        s.rip = entry.rip;
        s.rsp = entry.rsp;
        s.g_pat = 0x0007_0406_0007_0406;

        let regs = GuestRegs {
            rsi: entry.rsi,
            rdi: entry.rdi,
            ..GuestRegs::default()
        };
        Vcpu {
            vmcb,
            regs,
            id,
            exits: 0,
            tlb_generation: 0,
        }
    }

    /// Makes the next VMRUN deliver exception `vector` to the guest (with
    /// `error_code` pushed, if any) before it runs another instruction. A
    /// fault leaves RIP on the faulting instruction: do not skip it.
    pub fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let c = &mut self.vmcb.control;
        c.event_inj = event_inj::VALID | event_inj::TYPE_EXCEPTION | u32::from(vector);
        if let Some(code) = error_code {
            c.event_inj |= event_inj::ERROR_CODE_VALID;
            c.event_inj_err = code;
        }
    }

    /// Injects #GP(0), as hardware raises for a privileged instruction with
    /// bad operands (a reserved MSR bit, say).
    pub fn inject_gp0(&mut self) {
        self.inject_exception(VECTOR_GP, Some(0));
    }

    /// Moves RIP past an intercepted instruction of `len` bytes. TCG offers
    /// no next-RIP save, so the length is the instruction's known size.
    pub fn skip_instruction(&mut self, len: u64) {
        self.vmcb.save.rip = self.vmcb.save.rip.wrapping_add(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_vcpu_passes_vmrun_consistency_rules() {
        let maps = InterceptMaps {
            iopm: 0x10_0000,
            msrpm: 0x20_0000,
        };
        let entry = EntryState {
            rip: 0x40_0000,
            cr3: 0x1000,
            rsp: 0,
            rsi: 0x2000,
            rdi: 0,
        };
        let v = Vcpu::new(0, 1, entry, 0x30_0000, maps);
        let c = &v.vmcb.control;
        assert_ne!(
            c.intercept_misc2 & misc2::VMRUN,
            0,
            "VMRUN must be intercepted"
        );
        assert_ne!(c.guest_asid, 0, "ASID 0 belongs to the host");
        assert_ne!(v.vmcb.save.efer & EFER_SVME, 0);
        // CS must not have both L and D set.
        assert_ne!(v.vmcb.save.cs.attrib & 0x200, 0);
        assert_eq!(v.vmcb.save.cs.attrib & 0x400, 0);
        assert_eq!(v.regs.rsi, 0x2000);
        let mut v = v;
        v.skip_instruction(3);
        assert_eq!(v.vmcb.save.rip, 0x40_0003);
    }

    #[test]
    fn injected_gp0_is_a_valid_exception_with_error_code_zero() {
        let maps = InterceptMaps { iopm: 0, msrpm: 0 };
        let entry = EntryState {
            rip: 0x40_0000,
            cr3: 0x1000,
            rsp: 0,
            rsi: 0,
            rdi: 0,
        };
        let mut v = Vcpu::new(0, 1, entry, 0, maps);
        assert_eq!(v.vmcb.control.event_inj, 0, "nothing injected at first");
        v.vmcb.control.event_inj_err = 0xdead;
        v.inject_gp0();
        // V (31) | EV (11) | TYPE 3 (exception, 10:8) | vector 13.
        assert_eq!(v.vmcb.control.event_inj, 0x8000_0B0D);
        assert_eq!(v.vmcb.control.event_inj_err, 0);
        assert_eq!(v.vmcb.save.rip, 0x40_0000, "a fault does not move RIP");
        v.inject_exception(6, None); // #UD: no error code
        assert_eq!(v.vmcb.control.event_inj, 0x8000_0306);
    }
}

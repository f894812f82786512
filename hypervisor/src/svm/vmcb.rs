//! The AMD SVM virtual machine control block (AMD APM vol. 2, appendix B).
//!
//! Layout only: the structure is plain data, checked at compile time against
//! the manual's offsets, so that it can be filled and read with ordinary
//! field accesses. The intercept words at 0x0C/0x10 are 4-byte fields: the
//! hardware (and QEMU) reads them as such, so they are never accessed as u64.

use core::mem::{offset_of, size_of};

/// Control area, offsets 0x000-0x3FF.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ControlArea {
    pub intercept_cr: u32,
    pub intercept_dr: u32,
    pub intercept_exceptions: u32,
    pub intercept_misc1: u32,
    pub intercept_misc2: u32,
    pub intercept_misc3: u32,
    _reserved1: [u32; 9],
    pub pause_filter_thresh: u16,
    pub pause_filter_count: u16,
    pub iopm_base_pa: u64,
    pub msrpm_base_pa: u64,
    pub tsc_offset: u64,
    pub guest_asid: u32,
    pub tlb_control: u8,
    _reserved2: [u8; 3],
    pub int_control: u32,
    pub int_vector: u32,
    pub int_state: u32,
    _reserved3: [u8; 4],
    pub exit_code: u64,
    pub exit_info1: u64,
    pub exit_info2: u64,
    pub exit_int_info: u64,
    pub nested_ctl: u64,
    pub avic_vapic_bar: u64,
    _reserved4: [u8; 8],
    pub event_inj: u32,
    pub event_inj_err: u32,
    pub nested_cr3: u64,
    pub lbr_control: u64,
    pub clean_bits: u32,
    _reserved5: u32,
    pub next_rip: u64,
    pub insn_len: u8,
    pub insn_bytes: [u8; 15],
    _reserved6: [u8; 0x400 - 0xE0],
}

/// A segment register as the VMCB stores it. `attrib` packs descriptor bits
/// 40-47 (type, S, DPL, P) into bits 0-7 and bits 52-55 (AVL, L, D/B, G)
/// into bits 8-11.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// State save area, offsets 0x400-0xFFF.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SaveArea {
    pub es: Segment,
    pub cs: Segment,
    pub ss: Segment,
    pub ds: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub gdtr: Segment,
    pub ldtr: Segment,
    pub idtr: Segment,
    pub tr: Segment,
    _reserved1: [u8; 43],
    pub cpl: u8,
    _reserved2: [u8; 4],
    pub efer: u64,
    _reserved3: [u8; 112],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    _reserved4: [u8; 88],
    pub rsp: u64,
    _reserved5: [u8; 24],
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    _reserved6: [u8; 32],
    pub g_pat: u64,
    pub dbgctl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_excp_from: u64,
    pub last_excp_to: u64,
    _reserved7: [u8; 0xC00 - 0x298],
}

/// The whole 4 KiB VMCB.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
pub struct Vmcb {
    pub control: ControlArea,
    pub save: SaveArea,
}

const _: () = {
    assert!(size_of::<Vmcb>() == 4096);
    assert!(size_of::<ControlArea>() == 0x400);
    assert!(offset_of!(Vmcb, save) == 0x400);
    assert!(offset_of!(ControlArea, intercept_misc1) == 0x0C);
    assert!(offset_of!(ControlArea, intercept_misc2) == 0x10);
    assert!(offset_of!(ControlArea, iopm_base_pa) == 0x40);
    assert!(offset_of!(ControlArea, msrpm_base_pa) == 0x48);
    assert!(offset_of!(ControlArea, guest_asid) == 0x58);
    assert!(offset_of!(ControlArea, tlb_control) == 0x5C);
    assert!(offset_of!(ControlArea, exit_code) == 0x70);
    assert!(offset_of!(ControlArea, exit_info1) == 0x78);
    assert!(offset_of!(ControlArea, exit_info2) == 0x80);
    assert!(offset_of!(ControlArea, exit_int_info) == 0x88);
    assert!(offset_of!(ControlArea, nested_ctl) == 0x90);
    assert!(offset_of!(ControlArea, event_inj) == 0xA8);
    assert!(offset_of!(ControlArea, event_inj_err) == 0xAC);
    assert!(offset_of!(ControlArea, nested_cr3) == 0xB0);
    assert!(offset_of!(ControlArea, clean_bits) == 0xC0);
    assert!(offset_of!(ControlArea, next_rip) == 0xC8);
    assert!(offset_of!(ControlArea, insn_len) == 0xD0);
    assert!(offset_of!(SaveArea, cs) == 0x10);
    assert!(offset_of!(SaveArea, gdtr) == 0x60);
    assert!(offset_of!(SaveArea, idtr) == 0x80);
    assert!(offset_of!(SaveArea, tr) == 0x90);
    assert!(offset_of!(SaveArea, cpl) == 0xCB);
    assert!(offset_of!(SaveArea, efer) == 0xD0);
    assert!(offset_of!(SaveArea, cr4) == 0x148);
    assert!(offset_of!(SaveArea, cr3) == 0x150);
    assert!(offset_of!(SaveArea, cr0) == 0x158);
    assert!(offset_of!(SaveArea, rflags) == 0x170);
    assert!(offset_of!(SaveArea, rip) == 0x178);
    assert!(offset_of!(SaveArea, rsp) == 0x1D8);
    assert!(offset_of!(SaveArea, rax) == 0x1F8);
    assert!(offset_of!(SaveArea, cr2) == 0x240);
    assert!(offset_of!(SaveArea, g_pat) == 0x268);
};

/// Bits of `intercept_misc1` (VMCB offset 0x0C).
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const CPUID: u32 = 1 << 18;
    pub const PAUSE: u32 = 1 << 23;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const TASK_SWITCH: u32 = 1 << 29;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Bits of `intercept_misc2` (VMCB offset 0x10).
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const XSETBV: u32 = 1 << 13;
}

/// Fields of `event_inj` (VMCB offset 0xA8, AMD APM vol. 2 §15.20 "Event
/// Injection"): the event VMRUN delivers to the guest before its first
/// instruction. Its error code is `event_inj_err` (offset 0xAC). The
/// processor clears VALID once the event is delivered.
pub mod event_inj {
    /// Bits 7:0: the IDT vector.
    pub const VECTOR_MASK: u32 = 0xFF;
    /// Bits 10:8 = 3: an exception (fault or trap).
    pub const TYPE_EXCEPTION: u32 = 3 << 8;
    /// Bit 11: push `event_inj_err` as the error code.
    pub const ERROR_CODE_VALID: u32 = 1 << 11;
    /// Bit 31: inject.
    pub const VALID: u32 = 1 << 31;
}

/// Exception vector of #GP.
pub const VECTOR_GP: u8 = 13;

/// `nested_ctl` bit that turns on nested paging.
pub const NESTED_CTL_NP_ENABLE: u64 = 1;
/// `tlb_control`: flush this guest's TLB entries on the next VMRUN.
pub const TLB_CONTROL_FLUSH_ALL: u8 = 1;

impl Vmcb {
    /// An all-zero VMCB.
    pub const fn zeroed() -> Vmcb {
        Vmcb {
            control: ControlArea {
                intercept_cr: 0,
                intercept_dr: 0,
                intercept_exceptions: 0,
                intercept_misc1: 0,
                intercept_misc2: 0,
                intercept_misc3: 0,
                _reserved1: [0; 9],
                pause_filter_thresh: 0,
                pause_filter_count: 0,
                iopm_base_pa: 0,
                msrpm_base_pa: 0,
                tsc_offset: 0,
                guest_asid: 0,
                tlb_control: 0,
                _reserved2: [0; 3],
                int_control: 0,
                int_vector: 0,
                int_state: 0,
                _reserved3: [0; 4],
                exit_code: 0,
                exit_info1: 0,
                exit_info2: 0,
                exit_int_info: 0,
                nested_ctl: 0,
                avic_vapic_bar: 0,
                _reserved4: [0; 8],
                event_inj: 0,
                event_inj_err: 0,
                nested_cr3: 0,
                lbr_control: 0,
                clean_bits: 0,
                _reserved5: 0,
                next_rip: 0,
                insn_len: 0,
                insn_bytes: [0; 15],
                _reserved6: [0; 0x400 - 0xE0],
            },
            save: SaveArea {
                es: SEG0,
                cs: SEG0,
                ss: SEG0,
                ds: SEG0,
                fs: SEG0,
                gs: SEG0,
                gdtr: SEG0,
                ldtr: SEG0,
                idtr: SEG0,
                tr: SEG0,
                _reserved1: [0; 43],
                cpl: 0,
                _reserved2: [0; 4],
                efer: 0,
                _reserved3: [0; 112],
                cr4: 0,
                cr3: 0,
                cr0: 0,
                dr7: 0,
                dr6: 0,
                rflags: 0,
                rip: 0,
                _reserved4: [0; 88],
                rsp: 0,
                _reserved5: [0; 24],
                rax: 0,
                star: 0,
                lstar: 0,
                cstar: 0,
                sfmask: 0,
                kernel_gs_base: 0,
                sysenter_cs: 0,
                sysenter_esp: 0,
                sysenter_eip: 0,
                cr2: 0,
                _reserved6: [0; 32],
                g_pat: 0,
                dbgctl: 0,
                br_from: 0,
                br_to: 0,
                last_excp_from: 0,
                last_excp_to: 0,
                _reserved7: [0; 0xC00 - 0x298],
            },
        }
    }
}

const SEG0: Segment = Segment {
    selector: 0,
    attrib: 0,
    limit: 0,
    base: 0,
};

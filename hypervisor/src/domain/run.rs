//! What the hypervisor does with each #VMEXIT of a domain's vCPU.
//!
//! Plain logic over the VMCB and the guest registers, host-tested; the
//! bare-metal loop only calls VMRUN and this. Nothing the guest does can
//! make it panic: unexpected exits end the domain with a report (domain,
//! exit reason, guest RIP, faulting address), and the hypervisor goes on.

use alloc::format;
use alloc::string::String;

use pv_abi::cpuid::{CpuidRegs, CPUID_1_ECX_HYPERVISOR};
use pv_abi::hypercall::VMMCALL_LEN;
use pv_abi::{AbiVersion, HypercallArgs, HypercallResult};

use super::build::DomainEnd;
use crate::hypercall::{self, HypercallEnv, Outcome};
use crate::svm::exit::ExitReason;
use crate::svm::vcpu::{
    Vcpu, CR0_PG, EFER_FFXSR, EFER_LMA, EFER_LME, EFER_NXE, EFER_SCE, EFER_SVME, EFER_TCE,
};

/// What the vCPU loop does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Resume,
    /// A physical interrupt ended the guest's turn (a wake-up IPI or the
    /// end of its time slice): the scheduler decides who runs next.
    Interrupted,
    /// The guest is spinning (PAUSE): let another vCPU run, or wait a
    /// little, before resuming it.
    Yield,
    /// This vCPU went down (`VCPU_OP` DOWN); the domain goes on.
    VcpuDown,
    End(DomainEnd),
}

/// The host's CPUID, for leaves passed through.
pub type HostCpuid<'a> = &'a dyn Fn(u32, u32) -> CpuidRegs;

const CPUID_LEN: u64 = 2;
const MSR_LEN: u64 = 2;
const HLT_LEN: u64 = 1;
/// `PAUSE` is `F3 90`.
const PAUSE_LEN: u64 = 2;

const COM1_DATA: u16 = 0x3F8;
const COM1_LINE_STATUS: u16 = 0x3FD;

const MSR_EFER: u32 = 0xC000_0080;
const MSR_APIC_BASE: u32 = 0x1B;
const MSR_PAT: u32 = 0x277;

fn kill(vcpu: &Vcpu, reason: String, gpa: Option<u64>) -> Action {
    Action::End(DomainEnd::Killed {
        reason,
        rip: vcpu.vmcb.save.rip,
        gpa,
    })
}

/// Handles the exit the vCPU just took.
pub fn handle_exit(
    vcpu: &mut Vcpu,
    env: &mut dyn HypercallEnv,
    host_cpuid: HostCpuid<'_>,
) -> Action {
    vcpu.exits += 1;
    let c = vcpu.vmcb.control;
    match ExitReason::from_code(c.exit_code) {
        ExitReason::Vmmcall if vcpu.vmcb.save.cpl != 0 => {
            // Hypercalls are for the guest kernel only, as in Xen.
            vcpu.vmcb.save.rax = HypercallResult::encode(Err(pv_abi::Error::NotPermitted));
            vcpu.skip_instruction(VMMCALL_LEN);
            Action::Resume
        }
        ExitReason::Vmmcall => {
            let r = &vcpu.regs;
            let args = HypercallArgs {
                nr: vcpu.vmcb.save.rax,
                args: [r.rdi, r.rsi, r.rdx, r.r10, r.r8],
            };
            match hypercall::dispatch(&args, env) {
                Outcome::Return(v) => {
                    vcpu.vmcb.save.rax = v;
                    vcpu.skip_instruction(VMMCALL_LEN);
                    Action::Resume
                }
                Outcome::Shutdown(status) => Action::End(DomainEnd::Shutdown(status)),
                Outcome::VcpuDown => Action::VcpuDown,
            }
        }
        ExitReason::Cpuid => {
            let leaf = vcpu.vmcb.save.rax as u32;
            let subleaf = vcpu.regs.rcx as u32;
            let mut r = cpuid(leaf, subleaf, host_cpuid);
            if leaf == 1 {
                // The initial APIC id is the vCPU's id, not the id of
                // whichever physical CPU runs it.
                r.ebx = (r.ebx & 0x00FF_FFFF) | (vcpu.id << 24);
            }
            vcpu.vmcb.save.rax = u64::from(r.eax);
            vcpu.regs.rbx = u64::from(r.ebx);
            vcpu.regs.rcx = u64::from(r.ecx);
            vcpu.regs.rdx = u64::from(r.edx);
            vcpu.skip_instruction(CPUID_LEN);
            Action::Resume
        }
        ExitReason::Ioio => io(vcpu, env),
        ExitReason::Msr => msr(vcpu, host_cpuid),
        ExitReason::Hlt => {
            // No interrupt is ever delivered to a domain yet, so a halted
            // vCPU would never wake: end the domain instead of hanging.
            vcpu.skip_instruction(HLT_LEN);
            kill(
                vcpu,
                String::from("HLT: the guest halted and nothing can wake it"),
                None,
            )
        }
        ExitReason::NestedPageFault => kill(
            vcpu,
            format!(
                "nested page fault (error code {:#x}): guest-physical address not mapped",
                c.exit_info1
            ),
            Some(c.exit_info2),
        ),
        ExitReason::Shutdown => kill(
            vcpu,
            String::from("shutdown: the guest triple-faulted"),
            None,
        ),
        ExitReason::Invalid => kill(
            vcpu,
            format!(
                "VMEXIT_INVALID (exit code {:#x}): VMRUN refused the guest state",
                c.exit_code
            ),
            None,
        ),
        ExitReason::Intr => Action::Interrupted,
        ExitReason::Nmi => Action::Resume,
        ExitReason::Pause => {
            vcpu.skip_instruction(PAUSE_LEN);
            Action::Yield
        }
        other => kill(vcpu, format!("unexpected exit: {other}"), None),
    }
}

/// CPUID as the guest sees it: numavisor's leaves at 0x4000_0000, the
/// hypervisor-present bit set, SVM hidden, everything else the host's.
pub fn cpuid(leaf: u32, subleaf: u32, host: HostCpuid<'_>) -> CpuidRegs {
    if let Some(r) = CpuidRegs::hypervisor_leaf(leaf, AbiVersion::CURRENT, hypercall::FEATURES) {
        return r;
    }
    if (0x4000_0002..0x5000_0000).contains(&leaf) {
        return CpuidRegs::default();
    }
    let mut r = host(leaf, subleaf);
    match leaf {
        1 => r.ecx |= CPUID_1_ECX_HYPERVISOR,
        0x8000_0001 => r.ecx &= !(1 << 2), // SVM
        0x8000_000A => r = CpuidRegs::default(),
        _ => {}
    }
    r
}

/// Port I/O: COM1 output becomes console output (useful before a guest has
/// its console hypercall working); reads of its line status say "ready";
/// the environment may emulate others (PCI configuration space, see
/// `crate::pci`); all other ports read as all ones and ignore writes. String I/O is not
/// emulated and ends the domain.
fn io(vcpu: &mut Vcpu, env: &mut dyn HypercallEnv) -> Action {
    let info = vcpu.vmcb.control.exit_info1;
    let is_in = info & 1 != 0;
    let is_string = info & (1 << 2) != 0;
    let port = (info >> 16) as u16;
    let size_bytes = match (info >> 4) & 7 {
        1 => 1u32,
        2 => 2,
        _ => 4,
    };
    if is_string {
        return kill(
            vcpu,
            format!("string I/O on port {port:#x} is not emulated"),
            None,
        );
    }
    let mask = (1u64 << (size_bytes * 8)) - 1;
    if is_in {
        let value: u64 = match port {
            COM1_LINE_STATUS => 0x60,
            _ => env
                .port_io(port, size_bytes as u8, None)
                .map_or(mask, |v| u64::from(v) & mask),
        };
        // As hardware: a 32-bit IN writes EAX, which zero-extends into RAX;
        // an 8- or 16-bit IN writes AL or AX and keeps RAX's other bits.
        vcpu.vmcb.save.rax = if size_bytes == 4 {
            value
        } else {
            (vcpu.vmcb.save.rax & !mask) | value
        };
    } else if port == COM1_DATA {
        env.console(&[vcpu.vmcb.save.rax as u8]);
    } else {
        let _ = env.port_io(
            port,
            size_bytes as u8,
            Some((vcpu.vmcb.save.rax & mask) as u32),
        );
    }
    // For I/O intercepts EXITINFO2 is the next instruction's RIP, even
    // without next-RIP save.
    vcpu.vmcb.save.rip = vcpu.vmcb.control.exit_info2;
    Action::Resume
}

/// RDMSR/WRMSR: EFER and PAT live in the VMCB, and a write to either that
/// hardware would refuse (see [`efer_write`], [`pat_valid`]) injects #GP(0)
/// and leaves RIP on the WRMSR, as the processor does; the APIC base reads as
/// the default; other MSRs read as 0 and ignore writes.
fn msr(vcpu: &mut Vcpu, host_cpuid: HostCpuid<'_>) -> Action {
    let write = vcpu.vmcb.control.exit_info1 & 1 != 0;
    let msr = vcpu.regs.rcx as u32;
    if write {
        // WRMSR takes EDX:EAX; the upper halves of RDX and RAX are ignored.
        let value = (vcpu.regs.rdx << 32) | (vcpu.vmcb.save.rax & 0xFFFF_FFFF);
        let s = &mut vcpu.vmcb.save;
        let accepted = match msr {
            MSR_EFER => match efer_write(s.efer, value, s.cr0, efer_features(host_cpuid)) {
                Some(efer) => {
                    s.efer = efer;
                    true
                }
                None => false,
            },
            MSR_PAT if pat_valid(value) => {
                s.g_pat = value;
                true
            }
            MSR_PAT => false,
            _ => true,
        };
        if !accepted {
            vcpu.inject_gp0();
            return Action::Resume;
        }
    } else {
        let s = &mut vcpu.vmcb.save;
        let value = match msr {
            MSR_EFER => s.efer & !EFER_SVME,
            MSR_PAT => s.g_pat,
            MSR_APIC_BASE => 0xFEE0_0900,
            _ => 0,
        };
        s.rax = value & 0xFFFF_FFFF;
        vcpu.regs.rdx = value >> 32;
    }
    vcpu.skip_instruction(MSR_LEN);
    Action::Resume
}

/// The EFER bits the guest may set beyond SCE and LME, from the CPUID it
/// sees (AMD APM vol. 2 §3.1.7: a bit whose feature CPUID does not report is
/// reserved): NXE (8000_0001 EDX bit 20), FFXSR (EDX bit 25), TCE (ECX
/// bit 17). SVME is not among them: the guest's CPUID hides SVM. Nor is
/// LMSLE, which numavisor does not offer (as KVM without nesting).
fn efer_features(host_cpuid: HostCpuid<'_>) -> u64 {
    let r = cpuid(0x8000_0001, 0, host_cpuid);
    let mut bits = 0;
    if r.edx & (1 << 20) != 0 {
        bits |= EFER_NXE;
    }
    if r.edx & (1 << 25) != 0 {
        bits |= EFER_FFXSR;
    }
    if r.ecx & (1 << 17) != 0 {
        bits |= EFER_TCE;
    }
    bits
}

/// The guest's EFER after it writes `value` over `current`, or `None` where
/// hardware raises #GP (AMD APM vol. 2 §3.1.7, WRMSR): a bit that is
/// reserved for this guest (anything but SCE, LME, LMA and `features`), or
/// LME changed while paging is on (CR0.PG). LMA is the processor's: the
/// value written to it is ignored and the current one kept, as Bochs and
/// KVM do. SVME stays set underneath (VMRUN needs it; reads hide it).
pub fn efer_write(current: u64, value: u64, cr0: u64, features: u64) -> Option<u64> {
    let writable = EFER_SCE | EFER_LME | EFER_LMA | features;
    if value & !writable != 0 {
        return None;
    }
    if cr0 & CR0_PG != 0 && (value ^ current) & EFER_LME != 0 {
        return None;
    }
    Some((value & !EFER_LMA) | (current & EFER_LMA) | EFER_SVME)
}

/// Whether `value` may be written to IA32_PAT: each of its eight entries
/// names a memory type that exists (0 UC, 1 WC, 4 WT, 5 WP, 6 WB, 7 UC-),
/// with its reserved bits 7:3 clear. Anything else is #GP (AMD APM vol. 2
/// §7.8.2).
pub fn pat_valid(value: u64) -> bool {
    value
        .to_le_bytes()
        .iter()
        .all(|&t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testenv::TestEnv;
    use crate::svm::vcpu::{EntryState, InterceptMaps, EFER_LMSLE};
    use pv_abi::{Hypercall, ShutdownStatus};

    fn vcpu() -> Vcpu {
        let entry = EntryState {
            rip: 0x1000,
            cr3: 0,
            rsp: 0,
            rsi: 0,
            rdi: 0,
        };
        Vcpu::new(0, 1, entry, 0, InterceptMaps { iopm: 0, msrpm: 0 })
    }

    fn host(_: u32, _: u32) -> CpuidRegs {
        CpuidRegs {
            eax: 1,
            ebx: 2,
            ecx: 0xffff_ffff,
            edx: 4,
        }
    }

    #[test]
    fn hypercalls_advance_rip_and_shutdown_ends() {
        let mut v = vcpu();
        let mut env = TestEnv::two_vnodes();
        v.vmcb.control.exit_code = 0x81;
        v.vmcb.save.rax = Hypercall::Version as u64;
        assert_eq!(handle_exit(&mut v, &mut env, &host), Action::Resume);
        assert_eq!(v.vmcb.save.rip, 0x1003);
        assert_eq!(
            HypercallResult::decode(v.vmcb.save.rax),
            Ok(AbiVersion::CURRENT.encode())
        );
        v.vmcb.save.rax = Hypercall::Shutdown as u64;
        v.regs.rdi = 1;
        assert_eq!(
            handle_exit(&mut v, &mut env, &host),
            Action::End(DomainEnd::Shutdown(ShutdownStatus(1)))
        );
        // From user mode: refused, even SHUTDOWN.
        v.vmcb.save.cpl = 3;
        v.vmcb.save.rax = Hypercall::Shutdown as u64;
        assert_eq!(handle_exit(&mut v, &mut env, &host), Action::Resume);
        assert_eq!(
            HypercallResult::decode(v.vmcb.save.rax),
            Err(pv_abi::Error::NotPermitted)
        );
    }

    #[test]
    fn cpuid_shows_numavisor_and_hides_svm() {
        let r = cpuid(0x4000_0000, 0, &host);
        assert!(r.is_numavisor());
        assert_ne!(cpuid(1, 0, &host).ecx & CPUID_1_ECX_HYPERVISOR, 0);
        assert_eq!(cpuid(0x8000_0001, 0, &host).ecx & 4, 0);
        let mut v = vcpu();
        let mut env = TestEnv::two_vnodes();
        v.vmcb.control.exit_code = 0x72;
        v.vmcb.save.rax = 0x4000_0001;
        handle_exit(&mut v, &mut env, &host);
        assert_eq!(v.vmcb.save.rax as u32, AbiVersion::CURRENT.encode() as u32);
        assert_eq!(v.vmcb.save.rip, 0x1002);
    }

    #[test]
    fn cpuid_gives_the_vcpu_id_as_apic_id_and_pause_yields() {
        let mut env = TestEnv::two_vnodes();
        let mut v = vcpu();
        v.id = 3;
        v.vmcb.control.exit_code = 0x72;
        v.vmcb.save.rax = 1;
        handle_exit(&mut v, &mut env, &host);
        assert_eq!(v.regs.rbx >> 24, 3, "initial APIC id");
        assert_eq!(v.regs.rbx & 0xff_ffff, 2, "the rest of EBX is the host's");
        let rip = v.vmcb.save.rip;
        v.vmcb.control.exit_code = 0x77;
        assert_eq!(handle_exit(&mut v, &mut env, &host), Action::Yield);
        assert_eq!(v.vmcb.save.rip, rip + 2, "past PAUSE");
        v.vmcb.control.exit_code = 0x60;
        assert_eq!(handle_exit(&mut v, &mut env, &host), Action::Interrupted);
        assert_eq!(v.vmcb.save.rip, rip + 2, "an interrupt moves nothing");
    }

    #[test]
    fn faults_end_the_domain_with_a_report() {
        let mut env = TestEnv::two_vnodes();
        let mut v = vcpu();
        v.vmcb.control.exit_code = 0x400;
        v.vmcb.control.exit_info2 = 0x4000_0000_0000;
        match handle_exit(&mut v, &mut env, &host) {
            Action::End(DomainEnd::Killed { gpa, rip, .. }) => {
                assert_eq!(gpa, Some(0x4000_0000_0000));
                assert_eq!(rip, 0x1000);
            }
            other => panic!("{other:?}"),
        }
        for code in [0x7F, u64::MAX, 0xFFFF_FFFF, 0x78, 0x80] {
            v.vmcb.control.exit_code = code;
            assert!(matches!(
                handle_exit(&mut v, &mut env, &host),
                Action::End(DomainEnd::Killed { .. })
            ));
        }
    }

    /// A host whose 8000_0001 EDX reports SYSCALL, NX and long mode only.
    fn host_nx(leaf: u32, _: u32) -> CpuidRegs {
        match leaf {
            0x8000_0001 => CpuidRegs {
                edx: (1 << 11) | (1 << 20) | (1 << 29),
                ..CpuidRegs::default()
            },
            _ => CpuidRegs::default(),
        }
    }

    /// WRMSR `value` to `msr`, with junk in the upper halves of RAX and RDX
    /// (which WRMSR ignores).
    fn wrmsr(v: &mut Vcpu, msr: u32, value: u64) -> Action {
        let mut env = TestEnv::two_vnodes();
        v.vmcb.control.exit_code = 0x7C;
        v.vmcb.control.exit_info1 = 1;
        v.regs.rcx = u64::from(msr);
        v.vmcb.save.rax = 0x5555_5555_0000_0000 | (value & 0xFFFF_FFFF);
        v.regs.rdx = 0xAAAA_AAAA_0000_0000 | (value >> 32);
        handle_exit(v, &mut env, &host_nx)
    }

    fn rdmsr(v: &mut Vcpu, msr: u32) -> u64 {
        let mut env = TestEnv::two_vnodes();
        v.vmcb.control.exit_code = 0x7C;
        v.vmcb.control.exit_info1 = 0;
        v.regs.rcx = u64::from(msr);
        v.vmcb.save.rax = u64::MAX;
        v.regs.rdx = u64::MAX;
        let rip = v.vmcb.save.rip;
        assert_eq!(handle_exit(v, &mut env, &host_nx), Action::Resume);
        assert_eq!(v.vmcb.save.rip, rip + 2);
        assert_eq!(v.vmcb.save.rax >> 32, 0, "RDMSR zero-extends EAX");
        assert_eq!(v.regs.rdx >> 32, 0, "RDMSR zero-extends EDX");
        (v.regs.rdx << 32) | v.vmcb.save.rax
    }

    /// Writes `value` to `msr` and checks that the guest gets #GP(0): the
    /// MSR keeps its value and RIP stays on the WRMSR.
    fn assert_wrmsr_gp(v: &mut Vcpu, msr: u32, value: u64) {
        let rip = v.vmcb.save.rip;
        let (efer, pat) = (v.vmcb.save.efer, v.vmcb.save.g_pat);
        v.vmcb.control.event_inj = 0; // the processor clears it on delivery
        assert_eq!(wrmsr(v, msr, value), Action::Resume);
        assert_eq!(
            v.vmcb.control.event_inj, 0x8000_0B0D,
            "#GP for {msr:#x} <- {value:#x}"
        );
        assert_eq!(v.vmcb.control.event_inj_err, 0);
        assert_eq!(v.vmcb.save.rip, rip, "RIP stays on the faulting WRMSR");
        assert_eq!((v.vmcb.save.efer, v.vmcb.save.g_pat), (efer, pat));
    }

    fn assert_wrmsr_ok(v: &mut Vcpu, msr: u32, value: u64) {
        let rip = v.vmcb.save.rip;
        v.vmcb.control.event_inj = 0;
        assert_eq!(wrmsr(v, msr, value), Action::Resume);
        assert_eq!(v.vmcb.control.event_inj, 0, "{msr:#x} <- {value:#x}");
        assert_eq!(v.vmcb.save.rip, rip + 2);
    }

    #[test]
    fn wrmsr_efer_with_reserved_bits_or_lme_changed_under_paging_injects_gp() {
        let mut v = vcpu(); // long mode: EFER LME|LMA|SVME, CR0.PG set
        let long = EFER_LME | EFER_LMA;
        assert_wrmsr_ok(&mut v, MSR_EFER, long | EFER_NXE | EFER_SCE);
        assert_eq!(v.vmcb.save.efer, long | EFER_NXE | EFER_SCE | EFER_SVME);
        assert_eq!(rdmsr(&mut v, MSR_EFER), long | EFER_NXE | EFER_SCE);
        for bad in [
            long | 1 << 1,         // reserved (K6's DPE)
            long | 1 << 9,         // reserved
            long | 1 << 16,        // reserved
            long | 1 << 63,        // reserved
            long | EFER_SVME,      // SVM is hidden from the guest
            long | EFER_LMSLE,     // not offered
            long | EFER_FFXSR,     // CPUID does not report FFXSR
            long | EFER_TCE,       // CPUID does not report TCE
            EFER_LMA | EFER_NXE,   // LME cleared with paging on
            0,                     // the same, and LMA
            0xFFFF_FFFF_FFFF_FFFF, // everything
        ] {
            assert_wrmsr_gp(&mut v, MSR_EFER, bad);
        }
        // LMA is the processor's: a write that clears it is no fault, and
        // changes nothing there.
        assert_wrmsr_ok(&mut v, MSR_EFER, EFER_LME | EFER_NXE);
        assert_eq!(v.vmcb.save.efer, long | EFER_NXE | EFER_SVME);
        // With paging off, LME may change.
        let mut v = vcpu();
        v.vmcb.save.cr0 &= !CR0_PG;
        v.vmcb.save.efer = EFER_SVME;
        assert_wrmsr_ok(&mut v, MSR_EFER, EFER_LME);
        assert_eq!(v.vmcb.save.efer, EFER_LME | EFER_SVME);
        assert_wrmsr_ok(&mut v, MSR_EFER, 0);
        assert_eq!(v.vmcb.save.efer, EFER_SVME);
    }

    #[test]
    fn efer_write_follows_the_manual() {
        let (pg, long) = (CR0_PG, EFER_LME | EFER_LMA | EFER_SVME);
        assert_eq!(efer_write(long, EFER_LME | EFER_LMA, pg, 0), Some(long));
        // NXE only where CPUID reports NX.
        assert_eq!(efer_write(long, EFER_LME | EFER_NXE, pg, 0), None);
        assert_eq!(
            efer_write(long, EFER_LME | EFER_NXE, pg, EFER_NXE),
            Some(long | EFER_NXE)
        );
        let all = EFER_NXE | EFER_FFXSR | EFER_TCE;
        assert_eq!(
            efer_write(long, EFER_LME | all | EFER_SCE, pg, all),
            Some(long | all | EFER_SCE)
        );
        // Setting LMA while not in long mode does not make it so.
        assert_eq!(efer_write(EFER_SVME, EFER_LMA, 0, 0), Some(EFER_SVME));
        assert_eq!(efer_write(EFER_SVME, EFER_LME, pg, 0), None);
        assert_eq!(efer_write(EFER_SVME, EFER_SVME, 0, all), None);
    }

    #[test]
    fn wrmsr_pat_with_an_invalid_memory_type_injects_gp() {
        let mut v = vcpu();
        let default = 0x0007_0406_0007_0406;
        assert_eq!(rdmsr(&mut v, MSR_PAT), default);
        assert_wrmsr_ok(&mut v, MSR_PAT, 0x0706_0504_0100_0007);
        assert_eq!(v.vmcb.save.g_pat, 0x0706_0504_0100_0007);
        assert_eq!(rdmsr(&mut v, MSR_PAT), 0x0706_0504_0100_0007);
        for byte in 0..8 {
            for bad_type in [2u64, 3, 8, 0x0E, 0x86, 0xFF] {
                let value = (default & !(0xFF << (byte * 8))) | (bad_type << (byte * 8));
                assert_wrmsr_gp(&mut v, MSR_PAT, value);
            }
        }
        assert!(pat_valid(0));
        assert!(pat_valid(0x0101_0101_0101_0101));
        assert!(!pat_valid(u64::MAX));
    }

    #[test]
    fn unknown_msrs_read_as_zero_and_ignore_writes() {
        let mut v = vcpu();
        for msr in [0, 0x10, 0xC000_0100, 0xC001_0117, 0xFFFF_FFFF] {
            assert_eq!(rdmsr(&mut v, msr), 0, "{msr:#x}");
            assert_wrmsr_ok(&mut v, msr, u64::MAX);
            assert_eq!(rdmsr(&mut v, msr), 0, "{msr:#x}");
        }
        assert_eq!(rdmsr(&mut v, MSR_APIC_BASE), 0xFEE0_0900);
        // Only ECX names the MSR.
        v.regs.rcx = 0xFFFF_FFFF_0000_0000 | u64::from(MSR_PAT);
        let mut env = TestEnv::two_vnodes();
        v.vmcb.control.exit_info1 = 0;
        handle_exit(&mut v, &mut env, &host_nx);
        assert_eq!(v.vmcb.save.rax, 0x0007_0406);
    }

    /// `IN` of each size on an emulated port (PCI configuration data), COM1's
    /// line status and a port nothing emulates: a 32-bit IN zero-extends into
    /// RAX as hardware does; 8- and 16-bit INs keep RAX's other bits.
    #[test]
    fn in_eax_zero_extends_into_rax_and_smaller_ins_keep_the_upper_bits() {
        const STALE: u64 = 0xdead_beef_cafe_f00d;
        let mut env = TestEnv::two_vnodes();
        for port in [0xCFCu64, 0x3FD, 0x80] {
            let emulated = match port {
                0xCFC => 0x11e8_1234u64,
                0x3FD => 0x60,
                _ => 0xffff_ffff,
            };
            // EXITINFO1 bits 6:4 are SZ32, SZ16, SZ8: one-hot, equal to the size in bytes.
            for (size_bits, mask) in [(1u64, 0xffu64), (2, 0xffff), (4, 0xffff_ffff)] {
                let mut v = vcpu();
                v.vmcb.control.exit_code = 0x7B;
                v.vmcb.control.exit_info1 = (port << 16) | (size_bits << 4) | 1;
                v.vmcb.control.exit_info2 = 0x1001;
                v.vmcb.save.rax = STALE;
                assert_eq!(handle_exit(&mut v, &mut env, &host), Action::Resume);
                let expect = if size_bits == 4 {
                    emulated & mask
                } else {
                    (STALE & !mask) | (emulated & mask)
                };
                assert_eq!(
                    v.vmcb.save.rax, expect,
                    "IN of {size_bits} bytes from port {port:#x}"
                );
                assert_eq!(v.vmcb.save.rip, 0x1001);
            }
        }
    }

    #[test]
    fn com1_output_reaches_the_console_and_msrs_are_emulated() {
        let mut env = TestEnv::two_vnodes();
        let mut v = vcpu();
        v.vmcb.control.exit_code = 0x7B;
        v.vmcb.control.exit_info1 = (0x3F8 << 16) | (1 << 4); // OUT dx, al
        v.vmcb.control.exit_info2 = 0x1001;
        v.vmcb.save.rax = b'x' as u64;
        assert_eq!(handle_exit(&mut v, &mut env, &host), Action::Resume);
        assert_eq!(env.console, b"x");
        assert_eq!(v.vmcb.save.rip, 0x1001);
        v.vmcb.control.exit_info1 = (0x3FD << 16) | (1 << 4) | 1; // IN al, dx
        handle_exit(&mut v, &mut env, &host);
        assert_eq!(v.vmcb.save.rax & 0xff, 0x60);
        // Emulated ports go to the environment, with their size.
        v.vmcb.control.exit_info1 = (0xCFC << 16) | (2 << 4) | 1; // IN ax, dx
        v.vmcb.save.rax = 0xdead_0000_0000;
        handle_exit(&mut v, &mut env, &host);
        assert_eq!(v.vmcb.save.rax, 0xdead_0000_1234);
        v.vmcb.control.exit_info1 = (0xCF8 << 16) | (4 << 4); // OUT dx, eax
        v.vmcb.save.rax = 0xffff_ffff_8000_2010;
        handle_exit(&mut v, &mut env, &host);
        assert_eq!(
            env.ports,
            vec![(0xCFC, 2, None), (0xCF8, 4, Some(0x8000_2010))]
        );
        v.vmcb.control.exit_info1 = (0x80 << 16) | (4 << 4) | 1; // IN eax, 0x80
        handle_exit(&mut v, &mut env, &host);
        assert_eq!(v.vmcb.save.rax & 0xffff_ffff, 0xffff_ffff);
        v.vmcb.control.exit_info1 = (0x3FD << 16) | (1 << 4) | 1;
        v.vmcb.control.exit_info1 |= 1 << 2; // string I/O
        assert!(matches!(
            handle_exit(&mut v, &mut env, &host),
            Action::End(_)
        ));

        let mut v = vcpu();
        v.vmcb.control.exit_code = 0x7C;
        v.regs.rcx = u64::from(MSR_EFER);
        v.vmcb.control.exit_info1 = 0;
        handle_exit(&mut v, &mut env, &host);
        assert_eq!(v.vmcb.save.rax & EFER_SVME, 0, "SVME is hidden");
        v.vmcb.control.exit_info1 = 1;
        v.vmcb.save.rax = 0x500;
        v.regs.rdx = 0;
        handle_exit(&mut v, &mut env, &host);
        assert_ne!(v.vmcb.save.efer & EFER_SVME, 0, "SVME stays set");
    }
}

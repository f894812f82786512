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
use crate::svm::vcpu::{Vcpu, EFER_SVME};

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
        ExitReason::Msr => msr(vcpu),
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

/// RDMSR/WRMSR: EFER and PAT live in the VMCB; the APIC base reads as the
/// default; other MSRs read as 0 and ignore writes.
fn msr(vcpu: &mut Vcpu) -> Action {
    let write = vcpu.vmcb.control.exit_info1 & 1 != 0;
    let msr = vcpu.regs.rcx as u32;
    let s = &mut vcpu.vmcb.save;
    if write {
        let value = (vcpu.regs.rdx << 32) | (s.rax & 0xFFFF_FFFF);
        match msr {
            // SVME must stay set in the guest's EFER or VMRUN fails; the
            // guest does not see it (reads hide it).
            MSR_EFER => s.efer = value | EFER_SVME,
            MSR_PAT => s.g_pat = value,
            _ => {}
        }
    } else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testenv::TestEnv;
    use crate::svm::vcpu::{EntryState, InterceptMaps};
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

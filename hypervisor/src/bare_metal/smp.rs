//! Bringing up the application processors (APs) at boot, one after another.
//!
//! The boot CPU copies the real-mode trampoline to a free page below 1 MiB,
//! then for each AP of the topology: allocates a stack and a boot block from
//! the hypervisor's heap, sends INIT-SIPI-SIPI (`arch::x86_64::smp`) and
//! waits, with time-outs, until the AP has loaded the IDT, enabled SVM on
//! itself, run the SVM self-test guest and printed
//! `numavisor: cpu N (apic A, node K): online, svm self-test ok`. The AP then
//! enters the scheduler's run loop (`sched::ap_loop`) and runs the vCPUs
//! placed on it; one whose self-test failed parks (cli; hlt).
//!
//! The APs run their self-tests one after another (the boot CPU waits for
//! each), so each test's heap-probe comparison sees only its own pages.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};

use hypervisor::arch::x86_64::smp::{self as hw, ApBoot, LocalApic, Trampoline};
use hypervisor::arch::x86_64::smp_plan::choose_trampoline_page;
use hypervisor::arch::x86_64::svm::{self, HostSavePage};
use hypervisor::arch::x86_64::timer::{self, Deadline};
use hypervisor::arch::x86_64::{cpu, idt};
use hypervisor::mm::addr::MemRange;
use hypervisor::numa::topology::{CpuInfo, Topology};
use hypervisor::println;
use pv_abi::exit::ExitCode;

use super::{sched, selftest, warn};
use hypervisor::numa::CpuId;

const AP_STACK_SIZE: usize = 64 << 10;
/// From the start-up IPIs to the AP's first Rust code. TCG on a busy host
/// is slow; only a CPU that never starts waits this long.
const START_TIMEOUT_US: u64 = 5_000_000;
/// From the AP's first Rust code to its report (the self-test runs a guest).
const FINISH_TIMEOUT_US: u64 = 30_000_000;

const STATE_OFFERED: u8 = 0;
const STATE_RUNNING: u8 = 1;
const STATE_OK: u8 = 2;
const STATE_FAILED: u8 = 3;

/// An AP's identity and progress; leaked, so it lives as long as the AP.
struct ApContext {
    cpu: u32,
    apic: u32,
    node: u8,
    state: AtomicU8,
}

/// The page the trampoline will use: the highest page below 1 MiB that the
/// memory map marks usable and that the boot loader's data does not use.
/// The hypervisor's heaps never take memory below 1 MiB, so the page stays
/// free for the trampoline.
pub fn trampoline_page(ram: &[MemRange], loader_data: &[MemRange]) -> Option<u64> {
    let pairs =
        |rs: &[MemRange]| -> Vec<(u64, u64)> { rs.iter().map(|r| (r.start.0, r.end.0)).collect() };
    choose_trampoline_page(&pairs(ram), &pairs(loader_data))
}

/// Starts every AP of `topology` and waits for each; returns `Failure` if
/// one reported a failed self-test. A CPU that does not start is a
/// warning, and the boot goes on.
pub fn start_aps(topology: &Topology, page: Option<u64>) -> ExitCode {
    let aps = topology.cpus.iter().filter(|c| c.id.0 != 0);
    let nr_aps = aps.clone().count();
    if nr_aps == 0 {
        return ExitCode::Success;
    }
    let Some(page) = page else {
        warn("smp: no usable page below 1 MiB for the AP trampoline; only the boot CPU runs");
        return ExitCode::Success;
    };
    let lapic = match LocalApic::this_cpu() {
        Ok(l) => l,
        Err(e) => {
            warn(&alloc::format!("smp: {e}; only the boot CPU runs"));
            return ExitCode::Success;
        }
    };
    let tsc = timer::calibrate();
    // SAFETY: the page is usable RAM below 1 MiB that no heap hands out and
    // the boot loader does not use (see `trampoline_page`).
    let trampoline = match unsafe { Trampoline::install(page) } {
        Ok(t) => t,
        Err(e) => {
            warn(&alloc::format!(
                "smp: cannot install the AP trampoline: {e:?}; only the boot CPU runs"
            ));
            return ExitCode::Success;
        }
    };
    match tsc {
        Some(mhz) => println!(
            "numavisor: smp: starting {nr_aps} application processor(s), trampoline at {:#x}, TSC {mhz} MHz",
            trampoline.page()
        ),
        None => println!(
            "numavisor: smp: starting {nr_aps} application processor(s), trampoline at {:#x}, no PIT: TSC speed guessed",
            trampoline.page()
        ),
    }
    let mut status = ExitCode::Success;
    for c in aps {
        if start_one(lapic, trampoline, c) == STATE_FAILED {
            status = ExitCode::Failure;
        }
    }
    status
}

/// Starts one AP and waits for its report; returns its final state
/// (`STATE_OFFERED` if it did not start).
fn start_one(lapic: LocalApic, trampoline: Trampoline, c: &CpuInfo) -> u8 {
    let mut stack: Vec<u8> = Vec::new();
    if stack.try_reserve_exact(AP_STACK_SIZE).is_err() {
        warn(&alloc::format!(
            "cpu {} (apic {}) did not start: no memory for its stack",
            c.id,
            c.apic_id
        ));
        return STATE_OFFERED;
    }
    stack.resize(AP_STACK_SIZE, 0);
    let stack = stack.leak();
    let stack_top = (stack.as_mut_ptr() as u64 + AP_STACK_SIZE as u64) & !15;
    let ctx: &'static ApContext = Box::leak(Box::new(ApContext {
        cpu: c.id.0,
        apic: c.apic_id,
        node: c.node.0,
        state: AtomicU8::new(STATE_OFFERED),
    }));
    let boot: &'static ApBoot = Box::leak(Box::new(ApBoot {
        stack_top,
        entry: ap_main,
        arg: ctx as *const ApContext as usize,
    }));
    let not_started = |why: &str| {
        warn(&alloc::format!(
            "cpu {} (apic {}) did not start{why}",
            c.id,
            c.apic_id
        ));
        STATE_OFFERED
    };
    // SAFETY: the block, its context and its stack are leaked: valid for
    // the rest of the run and used by nothing but the AP that takes them.
    if let Err(e) = unsafe { hw::start_ap(lapic, trampoline, c.apic_id, boot) } {
        hw::withdraw();
        return not_started(&alloc::format!(": {e}"));
    }
    let start = Deadline::after_us(START_TIMEOUT_US);
    while ctx.state.load(Ordering::Acquire) == STATE_OFFERED {
        if start.passed() {
            if hw::withdraw() {
                // Never reached long mode: put it back to wait-for-SIPI so
                // that it cannot take the next CPU's block later.
                let _ = lapic.send_init(c.apic_id);
                return not_started("");
            }
            break; // it took the block just now: wait for its report
        }
        core::hint::spin_loop();
    }
    let finish = Deadline::after_us(FINISH_TIMEOUT_US);
    loop {
        match ctx.state.load(Ordering::Acquire) {
            s @ (STATE_OK | STATE_FAILED) => return s,
            _ if finish.passed() => {
                warn(&alloc::format!(
                    "cpu {} (apic {}) started but did not report in time",
                    c.id,
                    c.apic_id
                ));
                return STATE_FAILED;
            }
            _ => core::hint::spin_loop(),
        }
    }
}

/// The first Rust code of an AP, on its own stack.
fn ap_main(arg: usize) -> ! {
    // SAFETY: `arg` is the `&'static ApContext` the boot CPU leaked for
    // this AP in `start_one`.
    let ctx = unsafe { &*(arg as *const ApContext) };
    idt::init();
    ctx.state.store(STATE_RUNNING, Ordering::Release);
    let result = ap_self_test(ctx);
    let (cpu, apic, node) = (ctx.cpu, ctx.apic, ctx.node);
    match &result {
        Ok(()) => {
            println!("numavisor: cpu {cpu} (apic {apic}, node {node}): online, svm self-test ok")
        }
        Err(e) => println!(
            "numavisor: cpu {cpu} (apic {apic}, node {node}): online, svm self-test FAILED: {e}"
        ),
    }
    let cpu_id = CpuId(cpu);
    let online = result.is_ok()
        && match sched::cpu_online(cpu_id, apic) {
            Ok(()) => true,
            Err(e) => {
                println!("numavisor: cpu {cpu}: cannot take vCPUs: {e}");
                false
            }
        };
    let state = if result.is_ok() {
        STATE_OK
    } else {
        STATE_FAILED
    };
    ctx.state.store(state, Ordering::Release);
    if online {
        sched::ap_loop(cpu_id)
    }
    cpu::halt_forever()
}

fn ap_self_test(ctx: &ApContext) -> Result<(), alloc::string::String> {
    let running_on = cpu::apic_id();
    if running_on != ctx.apic {
        return Err(alloc::format!("running on apic {running_on}"));
    }
    let page = HostSavePage::allocate().ok_or("no memory for the host save area")?;
    svm::enable(page).map_err(|e| alloc::format!("{e}"))?;
    if selftest::svm_self_test(super::heap(), false) == ExitCode::Success {
        Ok(())
    } else {
        Err("see above".into())
    }
}

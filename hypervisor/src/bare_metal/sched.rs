//! Running vCPUs on physical CPUs: one run queue per CPU, a run loop that
//! every CPU enters (the boot CPU while a domain runs, each AP for good
//! once it is up), time slices for vCPUs that share a CPU.
//!
//! A vCPU is placed on one CPU for its life (`domain::placement`), so the
//! queues never move work between CPUs: a vCPU's memory, its VMCB and its
//! CPU stay on one node. A CPU with nothing to run halts until a wake-up
//! IPI; a guest's PAUSE (a spin-wait) gives the CPU to the next vCPU in its
//! queue, or halts the CPU for at most [`SPIN_BACKOFF_MS`], so that spinning
//! guests do not eat the CPU (under TCG, the host's).
//!
//! A task holds raw pointers to its vCPU (memory the domain owns, on the
//! node of the vCPU's CPU) and to the domain ([`VcpuHost`]): the boot CPU
//! keeps both alive until every one of the domain's vCPUs is gone
//! ([`run_until_idle`]).

use alloc::collections::VecDeque;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use hypervisor::arch::x86_64::apic::LocalApic;
use hypervisor::arch::x86_64::{cpu, svm};
use hypervisor::domain::run::Action;
use hypervisor::numa::topology::MAX_CPUS;
use hypervisor::numa::CpuId;
use hypervisor::svm::vcpu::Vcpu;

/// A time slice, when vCPUs share a CPU.
const SLICE_MS: u32 = 10;
/// Longest a spinning vCPU waits before it runs again when nothing else
/// wants its CPU.
pub const SPIN_BACKOFF_MS: u32 = 1;

/// What the scheduler needs from the domain a vCPU belongs to.
pub trait VcpuHost: Sync {
    /// Before each VMRUN: `false` if the vCPU must stop now (the domain is
    /// ending); may wait (the domain is paused) and may ask for a TLB flush.
    fn may_enter(&self, vcpu: &mut Vcpu) -> bool;
    /// After each #VMEXIT (the vCPU is out of the guest).
    fn left_guest(&self);
    /// Handles an exit other than an interrupt.
    fn handle_exit(&self, vcpu: &mut Vcpu) -> Action;
    /// The vCPU is done (down, or the domain ended); called once, as the
    /// last use of the host by this task.
    fn vcpu_gone(&self, vcpu: &Vcpu, action: Option<Action>);
}

/// A vCPU and the domain it belongs to.
pub struct Task {
    vcpu: *mut Vcpu,
    host: *const dyn VcpuHost,
}

// SAFETY: the host is `Sync` and outlives the task, and the vCPU is used
// through this task alone (see `Task::new`); one CPU at a time holds it.
unsafe impl Send for Task {}

impl Task {
    /// A task for `vcpu` of `host`.
    ///
    /// # Safety
    /// `vcpu` must be valid and used by nothing but this task, and `host`
    /// valid, until [`VcpuHost::vcpu_gone`] has been called for this task
    /// (the domain waits for that in [`run_until_idle`]); the task touches
    /// neither after that call.
    pub unsafe fn new(vcpu: *mut Vcpu, host: &dyn VcpuHost) -> Task {
        // SAFETY: only the lifetime is erased; the caller keeps `host`
        // alive for as long as the task may use it.
        let host: &'static dyn VcpuHost = unsafe { core::mem::transmute(host) };
        Task {
            vcpu,
            host: host as *const dyn VcpuHost,
        }
    }
}

struct PerCpu {
    apic_id: AtomicU32,
    /// Its run loop is running (it can take tasks).
    online: AtomicBool,
    queue: spin::Mutex<VecDeque<Task>>,
}

static CPUS: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        apic_id: AtomicU32::new(0),
        online: AtomicBool::new(false),
        queue: spin::Mutex::new(VecDeque::new()),
    }
}; MAX_CPUS];

/// The local APIC (the same address on every CPU), once the boot CPU has
/// enabled its own.
static LAPIC: spin::Once<LocalApic> = spin::Once::new();

/// Enables this CPU's local APIC for wake-ups and marks the CPU able to run
/// vCPUs. The boot CPU calls it first (it also calibrates the time-slice
/// timer); each AP once it is up.
pub fn cpu_online(cpu: CpuId, apic_id: u32) -> Result<(), &'static str> {
    let slot = CPUS.get(cpu.index()).ok_or("CPU id above MAX_CPUS")?;
    let apic = LocalApic::enable_this_cpu()?;
    LAPIC.call_once(|| {
        apic.calibrate_timer();
        apic
    });
    slot.apic_id.store(apic_id, Ordering::Relaxed);
    slot.online.store(true, Ordering::Release);
    Ok(())
}

/// Whether CPU `c` runs vCPUs, for each CPU id below `n`.
pub fn online_cpus(n: usize) -> alloc::vec::Vec<bool> {
    (0..n)
        .map(|c| {
            CPUS.get(c)
                .is_some_and(|s| s.online.load(Ordering::Acquire))
        })
        .collect()
}

/// Wakes CPU `c` (from its idle halt, or out of its guest). Nothing to do
/// for the calling CPU: it is awake and not in a guest.
pub fn kick(c: CpuId) {
    let (Some(slot), Some(apic)) = (CPUS.get(c.index()), LAPIC.get()) else {
        return;
    };
    let target = slot.apic_id.load(Ordering::Relaxed);
    if slot.online.load(Ordering::Acquire) && target != cpu::apic_id() {
        let _ = apic.send_wake(target);
    }
}

/// Queues `task` on CPU `c` and wakes it. `Err` gives the task back if
/// the CPU does not run vCPUs.
pub fn enqueue(c: CpuId, task: Task) -> Result<(), Task> {
    let Some(slot) = CPUS.get(c.index()) else {
        return Err(task);
    };
    if !slot.online.load(Ordering::Acquire) {
        return Err(task);
    }
    slot.queue.lock().push_back(task);
    kick(c);
    Ok(())
}

/// An AP's life after bring-up: run whatever is queued on it, forever.
pub fn ap_loop(cpu: CpuId) -> ! {
    loop {
        run_queue(cpu);
        cpu::wait_for_interrupt();
    }
}

/// The boot CPU while a domain runs: runs its own queue until `live` (the
/// domain's vCPUs not yet gone) reaches 0.
pub fn run_until_idle(cpu: CpuId, live: &AtomicU32) {
    loop {
        run_queue(cpu);
        if live.load(Ordering::Acquire) == 0 {
            return;
        }
        cpu::wait_for_interrupt();
    }
}

/// Runs tasks from `cpu`'s queue until it is empty.
fn run_queue(cpu: CpuId) {
    let Some(slot) = CPUS.get(cpu.index()) else {
        return;
    };
    loop {
        // Taken with interrupts off: the caller halts only if the queue was
        // empty, and a wake-up sent after this check stays pending.
        let Some(mut task) = slot.queue.lock().pop_front() else {
            return;
        };
        if let Some(task) = run_task(slot, &mut task).then_some(task) {
            slot.queue.lock().push_back(task);
        }
    }
}

/// Runs one task until it gives up its turn (`true`: queue it again) or is
/// done (`false`: its host was told, drop it).
fn run_task(slot: &PerCpu, task: &mut Task) -> bool {
    let apic = LAPIC.get().copied();
    // SAFETY: guaranteed by `Task::new`'s caller until `vcpu_gone`, after
    // which this function returns and touches neither again.
    let host: &dyn VcpuHost = unsafe { &*task.host };
    // SAFETY: as above; this CPU holds the task, so nothing else uses the
    // vCPU.
    let vcpu: &mut Vcpu = unsafe { &mut *task.vcpu };
    loop {
        if !host.may_enter(vcpu) {
            host.vcpu_gone(vcpu, None);
            return false;
        }
        let shared = !slot.queue.lock().is_empty();
        if let (true, Some(a)) = (shared, apic) {
            a.arm_timer_ms(SLICE_MS);
        }
        let vmcb_pa = &raw const vcpu.vmcb as u64;
        // SAFETY: the VMCB belongs to this task's vCPU (4 KiB-aligned,
        // identity-mapped), which this CPU alone holds; its nested tables
        // map only the domain's pages and the MMIO of devices assigned to it.
        unsafe { svm::vmrun(vmcb_pa, &mut vcpu.regs) };
        if let (true, Some(a)) = (shared, apic) {
            a.stop_timer();
        }
        host.left_guest();
        let action = host.handle_exit(vcpu);
        match action {
            Action::Resume => {}
            Action::Interrupted => {
                cpu::take_pending_interrupts();
                if !slot.queue.lock().is_empty() {
                    return true;
                }
            }
            Action::Yield => {
                if !slot.queue.lock().is_empty() {
                    return true;
                }
                // Nothing else to run here: rest until the back-off timer or
                // a wake-up, then let the guest look again.
                if let Some(a) = apic {
                    a.arm_timer_ms(SPIN_BACKOFF_MS);
                    cpu::wait_for_interrupt();
                    a.stop_timer();
                }
            }
            Action::VcpuDown | Action::End(_) => {
                host.vcpu_gone(vcpu, Some(action));
                return false;
            }
        }
    }
}

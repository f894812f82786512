//! Running vCPUs on physical CPUs: one run queue per CPU, a run loop that
//! every CPU enters (the boot CPU once the domains are started, each AP for
//! good once it is up), and weighted fair sharing of a CPU between the
//! vCPUs placed on it, whichever domains they belong to.
//!
//! A vCPU is placed on one CPU for its life (`domain::placement`), so the
//! queues never move work between CPUs: a vCPU's memory, its VMCB and its
//! CPU stay on one node. A CPU with nothing to run halts until a wake-up
//! IPI; a guest's PAUSE (a spin-wait) gives the CPU to the next vCPU in its
//! queue, or halts the CPU for at most [`SPIN_BACKOFF_MS`], so that spinning
//! guests do not eat the CPU (under TCG, the host's).
//!
//! Sharing follows Xen's credit2 meaning of a domain's `weight`: on a
//! contended CPU each vCPU gets run time in proportion to its domain's
//! weight (256 by default). Each vCPU carries a virtual run time that grows
//! by its real run time scaled by `256 / weight`; the CPU runs the vCPU with
//! the least, and re-decides every [`SLICE_MS`] while others wait (as CFS and
//! credit2 do). A vCPU that joins a queue starts at the queue's least virtual
//! time, so that time it spent elsewhere or down is no credit to it.
//!
//! A queue also takes *work*: a closure run on that CPU before its vCPUs
//! (domains are built on a CPU of their first node this way).
//!
//! Ownership: a [`Task`] owns its vCPU's state ([`VcpuBox`]) and a reference
//! count on its domain ([`VcpuHost`]); whichever CPU holds the task runs the
//! vCPU. When the vCPU is done, the state goes back to the domain
//! ([`VcpuHost::vcpu_gone`]), and the CPU that gave back the last one tears
//! the domain down ([`VcpuHost::finish`]).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use hypervisor::arch::x86_64::apic::LocalApic;
use hypervisor::arch::x86_64::timer::{self, Deadline};
use hypervisor::arch::x86_64::{cpu, svm};
use hypervisor::domain::run::Action;
use hypervisor::mm::addr::{Mfn, PAGE_SHIFT, PAGE_SIZE};
use hypervisor::numa::topology::MAX_CPUS;
use hypervisor::numa::CpuId;
use hypervisor::svm::vcpu::Vcpu;

/// A time slice, when vCPUs share a CPU.
const SLICE_MS: u64 = 10;
/// Longest a spinning vCPU waits before it runs again when nothing else
/// wants its CPU.
pub const SPIN_BACKOFF_MS: u32 = 1;
/// The weight every other weight is relative to (Xen's default).
pub const DEFAULT_WEIGHT: u32 = 256;

/// What the scheduler needs from the domain a vCPU belongs to.
pub trait VcpuHost: Send + Sync {
    /// Before each VMRUN: `false` if the vCPU must stop now (the domain is
    /// ending); may wait (the domain is paused) and may ask for a TLB flush.
    fn may_enter(&self, vcpu: &mut Vcpu) -> bool;
    /// After each #VMEXIT: the vCPU is out of the guest, which it ran for
    /// `ticks` (TSC), `shared` if other vCPUs waited for the CPU meanwhile.
    fn left_guest(&self, vcpu: &Vcpu, ticks: u64, shared: bool);
    /// Handles an exit other than an interrupt.
    fn handle_exit(&self, vcpu: &mut Vcpu) -> Action;
    /// When the domain's time is up (its `time_limit`), if it has one: the
    /// CPU takes the vCPU out of the guest by then, whatever it does, and
    /// [`may_enter`](VcpuHost::may_enter) refuses it after.
    fn deadline(&self) -> Option<Deadline>;
    /// The vCPU is done (down, or the domain ended; `action` says which,
    /// `None` when the domain stopped it): its state comes back. `true` when
    /// it was the domain's last vCPU: the caller then calls [`finish`].
    ///
    /// [`finish`]: VcpuHost::finish
    fn vcpu_gone(&self, vcpu: VcpuBox, action: Option<Action>) -> bool;
    /// Tears the domain down; called once, by the CPU whose
    /// [`vcpu_gone`](VcpuHost::vcpu_gone) returned `true`.
    fn finish(&self);
}

/// A block of the domain's machine memory for one vCPU's state, owned by
/// this handle: while the vCPU is down it holds nothing, while it is up it
/// is inside the [`VcpuBox`] that runs it.
pub struct VcpuBlock(Mfn);

impl VcpuBlock {
    /// Pages (as an order) of a block that holds a [`Vcpu`].
    pub const ORDER: u8 = 1;

    /// Takes ownership of `block`.
    ///
    /// # Safety
    /// `block` must be `2^ORDER` pages of identity-mapped RAM, not frame 0,
    /// that nothing else uses until the handle gives it up ([`VcpuBlock::mfn`]
    /// after the handle is dropped).
    pub unsafe fn new(block: Mfn) -> VcpuBlock {
        VcpuBlock(block)
    }

    /// The block's first frame, to free it once the handle is gone.
    pub fn mfn(&self) -> Mfn {
        self.0
    }
}

/// A vCPU's state (its VMCB first, then its registers) in its
/// [`VcpuBlock`]: whoever holds the box may run the vCPU.
pub struct VcpuBox {
    vcpu: NonNull<Vcpu>,
}

// SAFETY: the box is the only way to its block (it consumed the block's
// unique handle), so moving it to another CPU moves the vCPU with it.
unsafe impl Send for VcpuBox {}

impl VcpuBox {
    /// Writes `vcpu` into `block`.
    pub fn new(block: VcpuBlock, vcpu: Vcpu) -> VcpuBox {
        const _: () = assert!(
            core::mem::size_of::<Vcpu>() <= (PAGE_SIZE as usize) << VcpuBlock::ORDER
                && core::mem::align_of::<Vcpu>() <= PAGE_SIZE as usize
        );
        let ptr = block.0.maddr().0 as *mut Vcpu;
        // SAFETY: the block is the handle's alone (`VcpuBlock::new`), mapped,
        // large and aligned enough (asserted above).
        unsafe { ptr.write(vcpu) };
        VcpuBox {
            // SAFETY: the block is not frame 0 (`VcpuBlock::new`).
            vcpu: unsafe { NonNull::new_unchecked(ptr) },
        }
    }

    pub fn get(&self) -> &Vcpu {
        // SAFETY: the box owns the initialised block (`new`).
        unsafe { self.vcpu.as_ref() }
    }

    pub fn get_mut(&mut self) -> &mut Vcpu {
        // SAFETY: as for `get`, and `&mut self` makes the access unique.
        unsafe { self.vcpu.as_mut() }
    }

    /// The block back: the vCPU in it is never run again.
    pub fn into_block(self) -> VcpuBlock {
        VcpuBlock(Mfn(self.vcpu.as_ptr() as u64 >> PAGE_SHIFT))
    }
}

/// A vCPU, its domain, and its place in the CPU's fair share.
pub struct Task {
    vcpu: VcpuBox,
    host: Arc<dyn VcpuHost>,
    weight: u32,
    /// Run time scaled by `DEFAULT_WEIGHT / weight` (TSC ticks).
    vruntime: u64,
    /// It gave its turn away (PAUSE): the others go first next time.
    yielded: bool,
}

impl Task {
    /// A task that runs `vcpu` for `host` with its domain's `weight` (1 and up).
    pub fn new(vcpu: VcpuBox, host: Arc<dyn VcpuHost>, weight: u32) -> Task {
        Task {
            vcpu,
            host,
            weight: weight.max(1),
            vruntime: 0,
            yielded: false,
        }
    }

    /// The vCPU's state and its domain, given back (the task never ran).
    pub fn into_parts(self) -> (VcpuBox, Arc<dyn VcpuHost>) {
        (self.vcpu, self.host)
    }

    fn charge(&mut self, ticks: u64) {
        let scaled = u128::from(ticks) * u128::from(DEFAULT_WEIGHT) / u128::from(self.weight);
        self.vruntime = self
            .vruntime
            .saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX));
    }
}

/// Something to run on a CPU outside any guest.
pub type Work = Box<dyn FnOnce() + Send>;

/// One CPU's runnable vCPUs (not the one it is running) and pending work.
#[derive(Default)]
struct RunQueue {
    tasks: Vec<Task>,
    work: VecDeque<Work>,
    /// The least virtual run time of a task picked so far: where a task
    /// that joins the queue starts.
    min_vruntime: u64,
}

impl RunQueue {
    const fn new() -> RunQueue {
        RunQueue {
            tasks: Vec::new(),
            work: VecDeque::new(),
            min_vruntime: 0,
        }
    }

    /// A new or woken task joins, no earlier than the queue's time.
    fn join(&mut self, mut task: Task) {
        task.vruntime = task.vruntime.max(self.min_vruntime);
        self.tasks.push(task);
    }

    /// The task with the least virtual run time (the first of equals), a
    /// task that yielded only when no other waits.
    fn pick(&mut self) -> Option<Task> {
        let best = self
            .tasks
            .iter()
            .enumerate()
            .min_by_key(|(i, t)| (t.yielded, t.vruntime, *i))
            .map(|(i, _)| i)?;
        let mut task = self.tasks.remove(best);
        task.yielded = false;
        self.min_vruntime = self.min_vruntime.max(task.vruntime);
        Some(task)
    }

    /// Whether the running `task` should give way: work is pending, or a
    /// waiting task is behind it in virtual time.
    fn should_preempt(&self, task: &Task) -> bool {
        !self.work.is_empty() || self.tasks.iter().any(|t| t.vruntime < task.vruntime)
    }
}

struct PerCpu {
    apic_id: AtomicU32,
    /// Its run loop is running (it can take tasks).
    online: AtomicBool,
    /// Guards this CPU's runnable tasks and pending work; taken with
    /// interrupts off, never while a guest runs.
    queue: spin::Mutex<RunQueue>,
}

static CPUS: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        apic_id: AtomicU32::new(0),
        online: AtomicBool::new(false),
        queue: spin::Mutex::new(RunQueue::new()),
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
pub fn online_cpus(n: usize) -> Vec<bool> {
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

fn online_slot(c: CpuId) -> Option<&'static PerCpu> {
    CPUS.get(c.index())
        .filter(|s| s.online.load(Ordering::Acquire))
}

/// Queues `task` on CPU `c` and wakes it. `Err` gives the task back if
/// the CPU does not run vCPUs.
pub fn enqueue(c: CpuId, task: Task) -> Result<(), Task> {
    let Some(slot) = online_slot(c) else {
        return Err(task);
    };
    slot.queue.lock().join(task);
    kick(c);
    Ok(())
}

/// Runs `work` on CPU `c`, before the vCPUs queued there. `Err` gives it
/// back if the CPU does not run.
pub fn run_on(c: CpuId, work: Work) -> Result<(), Work> {
    let Some(slot) = online_slot(c) else {
        return Err(work);
    };
    slot.queue.lock().work.push_back(work);
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

/// The boot CPU once every domain is started: runs its own queue until
/// `done` (checked whenever the queue is empty; whoever makes it true
/// kicks the boot CPU).
pub fn run_until(cpu: CpuId, done: &dyn Fn() -> bool) {
    loop {
        run_queue(cpu);
        if done() {
            return;
        }
        cpu::wait_for_interrupt();
    }
}

/// Runs work and tasks from `cpu`'s queue until it is empty.
fn run_queue(cpu: CpuId) {
    let Some(slot) = CPUS.get(cpu.index()) else {
        return;
    };
    loop {
        // Taken with interrupts off: the caller halts only if the queue was
        // empty, and a wake-up sent after this check stays pending.
        let work = slot.queue.lock().work.pop_front();
        if let Some(work) = work {
            work();
            continue;
        }
        let Some(mut task) = slot.queue.lock().pick() else {
            return;
        };
        match run_task(slot, &mut task) {
            Turn::Again { yielded } => {
                task.yielded = yielded;
                slot.queue.lock().tasks.push(task);
            }
            Turn::Done(action) => {
                let Task { vcpu, host, .. } = task;
                if host.vcpu_gone(vcpu, action) {
                    host.finish();
                }
            }
        }
    }
}

/// How a task's turn ended.
enum Turn {
    /// Queue it again (`yielded`: it asked to let the others go first).
    Again { yielded: bool },
    /// The vCPU is done.
    Done(Option<Action>),
}

/// Runs one task until it gives up its turn or is done.
fn run_task(slot: &PerCpu, task: &mut Task) -> Turn {
    let apic = LAPIC.get().copied();
    let slice = SLICE_MS * 1000;
    let mut slice_start = timer::rdtsc();
    loop {
        let shared = {
            let q = slot.queue.lock();
            !q.tasks.is_empty() || !q.work.is_empty()
        };
        let mut used_us = 0;
        if shared {
            used_us = timer::tsc_to_ns(timer::rdtsc().wrapping_sub(slice_start)) / 1000;
            if used_us >= slice {
                if slot.queue.lock().should_preempt(task) {
                    return Turn::Again { yielded: false };
                }
                slice_start = timer::rdtsc();
                used_us = 0;
            }
        }
        // From here to `left_guest` the domain counts the vCPU as in the
        // guest: nothing in between may return.
        if !task.host.may_enter(task.vcpu.get_mut()) {
            return Turn::Done(None);
        }
        // The timer ends the slice when others wait, and comes at least
        // once a second when the domain's time is limited.
        let slice_ms = shared.then(|| slice.saturating_sub(used_us).div_ceil(1000));
        let limit_ms = task
            .host
            .deadline()
            .map(|d| d.remaining_us().div_ceil(1000).min(1000));
        let timer_ms = match (slice_ms, limit_ms) {
            (Some(s), Some(l)) => Some(s.min(l)),
            (s, l) => s.or(l),
        };
        if let (Some(ms), Some(a)) = (timer_ms, apic) {
            a.arm_timer_ms(ms.clamp(1, 1000) as u32);
        }
        let vcpu = task.vcpu.get_mut();
        let vmcb_pa = &raw const vcpu.vmcb as u64;
        let entered = timer::rdtsc();
        // SAFETY: the VMCB belongs to this task's vCPU (4 KiB-aligned,
        // identity-mapped), which this CPU alone holds; its nested tables
        // map only the domain's pages and the MMIO of devices assigned to it.
        unsafe { svm::vmrun(vmcb_pa, &mut vcpu.regs) };
        let ran = timer::rdtsc().wrapping_sub(entered);
        if let (Some(_), Some(a)) = (timer_ms, apic) {
            a.stop_timer();
        }
        task.charge(ran);
        task.host.left_guest(task.vcpu.get(), ran, shared);
        let action = task.host.handle_exit(task.vcpu.get_mut());
        match action {
            Action::Resume => {}
            Action::Interrupted => {
                cpu::take_pending_interrupts();
                let used_us = timer::tsc_to_ns(timer::rdtsc().wrapping_sub(slice_start)) / 1000;
                let q = slot.queue.lock();
                // Work waits for nobody; a vCPU waits for the slice's end.
                if !q.work.is_empty() || (used_us >= slice && q.should_preempt(task)) {
                    return Turn::Again { yielded: false };
                }
            }
            Action::Yield => {
                let others = {
                    let q = slot.queue.lock();
                    !q.tasks.is_empty() || !q.work.is_empty()
                };
                if others {
                    return Turn::Again { yielded: true };
                }
                // Nothing else to run here: rest until the back-off timer or
                // a wake-up, then let the guest look again.
                if let Some(a) = apic {
                    a.arm_timer_ms(SPIN_BACKOFF_MS);
                    cpu::wait_for_interrupt();
                    a.stop_timer();
                }
            }
            Action::VcpuDown | Action::End(_) => return Turn::Done(Some(action)),
        }
    }
}

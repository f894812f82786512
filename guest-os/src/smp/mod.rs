//! Secondary vCPUs (ABI 1.3's `VCPU_OP`; a guest built for ABI 1.2 or
//! older has none of this): bringing them up at boot, what each one does,
//! the mailbox vCPU 0 drives them through, and bringing them down before
//! the domain ends.
//!
//! # Bring-up ([`boot`])
//!
//! Once the memory manager exists, if the hypervisor offers `VCPU_OP`, the
//! domain has more than one vCPU and the command line does not say `nosmp`
//! ([`plan`]), vCPU 0 starts vCPUs 1 to n-1 one at a time, as Linux's
//! `smp_init` does. Each runs on the 64 KiB stack the memory manager
//! reserved for it at boot on its local memory node
//! ([`Mm::with_cpu_blocks`]), whose [`StackHeader`] names it
//! ([`crate::percpu`]); its context is the secondary entry stub, that
//! stack, vCPU 0's CR3 and GDT, and a boot block (its id and this shared
//! state) as the argument. vCPU 0 waits at most [`CHECKIN_SECS`] for it to
//! check in. A vCPU that does not start or check in gets a line and the
//! boot goes on (the `smp` suite fails it); after a vCPU that never checked
//! in, the later ones are not started (each would wait as long again).
//!
//! ```text
//! guest: smp: vcpu 1 online on vnode 0 (node 0, local memory node 0, stack on node 0)
//! guest: smp: vcpu 4 online on vnode 2 (node 2, local memory node 3, stack on node 3)
//! guest: smp: 6 of 6 vcpus online
//! ```
//!
//! or one of
//!
//! ```text
//! guest: smp: vcpu-op not offered (hypervisor ABI 1.2): running on vcpu 0 only
//! guest: smp: one vcpu: running on vcpu 0 only
//! guest: smp: nosmp: running on vcpu 0 only (of 6 vcpus)
//! guest: smp: vcpu 2: VCPU_OP UP failed: unsupported (ENOSYS, -38)
//! guest: smp: vcpu 3 did not check in within 20 s
//! guest: smp: vcpu 4 not started: vcpu 3 never checked in
//! guest: smp: warning: vcpu 5: CPUID.1:EBX[31:24] (initial APIC id) is 2
//! ```
//!
//! # A secondary vCPU ([`secondary_main`])
//!
//! It learns who it is ([`Identity`]: its id from RDI, cross-checked with
//! CPUID's initial APIC id, its stack header and the memory manager; its
//! node, `numa_mem_id` and vnode from the vNUMA view) and checks in. Then,
//! as its own CPU, it allocates pages with the default local policy and
//! checks where they came from ([`alloc_local`]), increments the shared
//! counters [`BOOT_COUNT`] times, and waits for jobs ([`Job`]) in its
//! mailbox until one tells it to go down (`VCPU_OP` DOWN).
//!
//! # Concurrency
//!
//! The console, the kernel heap and the memory manager's zones each have a
//! lock; the page allocator's hot path is unchanged (per-CPU lists inside
//! the zone lock it takes anyway; the CPU comes from the stack). A
//! secondary drains its per-CPU lists after each piece of work, so an idle
//! one holds no free page the memory suites would miss. vCPU 0 posts one
//! job at a time to an idle vCPU; results come back under the slot's lock.
//!
//! # Time
//!
//! The ABI gives no TSC frequency, so timeouts assume the TSC counts
//! [`ASSUMED_TSC_HZ`] (QEMU under TCG passes the host's, a few GHz): a
//! timeout lasts at least what it says on any slower TSC.
//!
//! # Going down ([`shutdown`])
//!
//! Before vCPU 0 shuts the domain down, every secondary still up is told
//! to go down and vCPU 0 waits until `VCPU_OP` IS_UP reads 0:
//! `guest: smp: all secondary vcpus down`, or `guest: smp: vcpu K still
//! up: WHY` (the run then fails).

mod secondary;
#[cfg(test)]
mod tests;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pv_abi::{AbiVersion, Error, Features, VcpuContext};
use spin::Mutex;

use crate::cmdline::Cmdline;
use crate::hypercall;
use crate::mm::{Gfp, Mm, Page};
use crate::numa::topology::Vnuma;
use crate::percpu::{stack_top, StackHeader};
use crate::platform::{Platform, SecondaryStart};
use crate::println;

pub use secondary::secondary_main;

/// How long vCPU 0 waits for a started vCPU to check in.
pub const CHECKIN_SECS: u64 = 20;
/// How long vCPU 0 waits for a job, or for a vCPU to go down.
pub const JOB_SECS: u64 = 20;
/// The TSC rate timeouts assume (see the module docs).
pub const ASSUMED_TSC_HZ: u64 = 4_000_000_000;
/// Polls a timeout allows per second where there is no cycle counter.
const POLLS_PER_SEC: u64 = 1 << 20;
/// Allocations each secondary makes at boot ([`alloc_local`]).
pub const BOOT_PAGES: u32 = 64;
/// Increments of each shared counter each secondary makes at boot.
pub const BOOT_COUNT: u64 = 20_000;

/// Whether secondary vCPUs are to be brought up; `Err` says why not, as
/// the line `guest: smp: ...` and the `smp` suite's skip reason. Decided
/// before the memory manager is built, which then reserves their stacks.
pub fn plan(
    features: Features,
    hv: AbiVersion,
    nr_vcpus: u32,
    cmdline: &Cmdline,
) -> Result<(), String> {
    if !features.contains(Features::VCPU_OP) {
        return Err(format!(
            "vcpu-op not offered (hypervisor ABI {hv}): running on vcpu 0 only"
        ));
    }
    if nr_vcpus <= 1 {
        return Err("one vcpu: running on vcpu 0 only".into());
    }
    if cmdline.nosmp {
        return Err(format!(
            "nosmp: running on vcpu 0 only (of {nr_vcpus} vcpus)"
        ));
    }
    Ok(())
}

/// A timeout on the cycle counter (or, without one, a number of polls).
pub struct Deadline<'a> {
    p: &'a dyn Platform,
    end: Option<u64>,
    polls: u64,
}

impl<'a> Deadline<'a> {
    /// `secs` seconds from now at [`ASSUMED_TSC_HZ`].
    pub fn after(p: &'a dyn Platform, secs: u64) -> Self {
        Deadline {
            p,
            end: p
                .cycles()
                .map(|now| now.saturating_add(secs.saturating_mul(ASSUMED_TSC_HZ))),
            polls: secs.saturating_mul(POLLS_PER_SEC),
        }
    }

    /// Whether the time is up (each call without a cycle counter is one
    /// poll).
    pub fn expired(&mut self) -> bool {
        match self.end {
            Some(end) => self.p.cycles().is_none_or(|now| now >= end),
            None => {
                self.polls = self.polls.saturating_sub(1);
                self.polls == 0
            }
        }
    }
}

/// Where a vCPU is, as the guest tracks it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuState {
    /// Not running (never started, or IS_UP read 0 after it went down).
    Down = 0,
    /// `VCPU_OP` UP succeeded; not checked in yet.
    Starting = 1,
    /// Checked in; doing its boot work.
    Online = 2,
    /// Waiting for a job.
    Idle = 3,
    /// Running a job.
    Busy = 4,
    /// Told to go down; about to call `VCPU_OP` DOWN.
    Leaving = 5,
    /// UP was refused, or it never checked in.
    Failed = 6,
    /// vCPU 0, the boot CPU.
    Boot = 7,
}

impl CpuState {
    fn from_raw(v: u32) -> CpuState {
        match v {
            0 => CpuState::Down,
            1 => CpuState::Starting,
            2 => CpuState::Online,
            3 => CpuState::Idle,
            4 => CpuState::Busy,
            5 => CpuState::Leaving,
            7 => CpuState::Boot,
            _ => CpuState::Failed,
        }
    }

    /// Whether the vCPU checked in and has not gone down since.
    pub const fn is_online(self) -> bool {
        matches!(
            self,
            CpuState::Online | CpuState::Idle | CpuState::Busy | CpuState::Boot
        )
    }

    /// Lower case, for messages.
    pub const fn name(self) -> &'static str {
        match self {
            CpuState::Down => "down",
            CpuState::Starting => "starting",
            CpuState::Online => "online",
            CpuState::Idle => "idle",
            CpuState::Busy => "busy",
            CpuState::Leaving => "leaving",
            CpuState::Failed => "failed",
            CpuState::Boot => "the boot cpu",
        }
    }
}

/// Who a secondary vCPU found it is, each source on its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// RDI at entry: its id, per the ABI.
    pub rdi: u64,
    /// CPUID.1:EBX bits 31:24, the initial APIC id (`None` without CPUID).
    pub apic: Option<u32>,
    /// Its stack header's vCPU ([`crate::percpu::this_cpu`]).
    pub stack_cpu: u32,
    /// The CPU the memory manager runs it as (`current_cpu`).
    pub mm_cpu: u32,
    /// `numa_node_id()`.
    pub node: u32,
    /// `numa_mem_id()`.
    pub mem: u32,
    /// Its vnode in the vNUMA view (`GET_VNUMA`'s `vcpu_to_vnode`; its
    /// node's vnode without one).
    pub vnode: Option<u32>,
}

impl Identity {
    /// What disagrees with being vCPU `vcpu`.
    pub fn problems(&self, vcpu: u32) -> Vec<String> {
        let mut bad = Vec::new();
        if self.rdi != u64::from(vcpu) {
            bad.push(format!("RDI held {:#x} at entry", self.rdi));
        }
        match self.apic {
            Some(a) if a != vcpu => {
                bad.push(format!("CPUID.1:EBX[31:24] (initial APIC id) is {a}"))
            }
            _ => {}
        }
        if self.stack_cpu != vcpu {
            bad.push(format!("its stack header says vcpu {}", self.stack_cpu));
        }
        if self.mm_cpu != vcpu {
            bad.push(format!("the memory manager runs it as cpu {}", self.mm_cpu));
        }
        bad
    }
}

/// What [`alloc_local`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocReport {
    /// The CPU that allocated (`current_cpu`).
    pub cpu: u32,
    /// Its `numa_mem_id()`: where every block should come from.
    pub want: u32,
    /// Blocks allocated.
    pub allocated: u32,
    /// Of those, on `want`.
    pub local: u32,
    /// The node of the first block that was not.
    pub elsewhere: Option<u32>,
    /// Allocations that failed.
    pub failed: u32,
    /// Frees that failed.
    pub free_errors: u32,
}

impl AllocReport {
    /// Every block allocated, freed, and on `want`.
    pub const fn all_local(&self) -> bool {
        self.failed == 0 && self.free_errors == 0 && self.local == self.allocated
    }
}

impl fmt::Display for AllocReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu {}: {} of {} blocks on node {} (numa_mem_id)",
            self.cpu, self.local, self.allocated, self.want
        )?;
        if let Some(n) = self.elsewhere {
            write!(f, ", one on node {n}")?;
        }
        if self.failed > 0 {
            write!(f, ", {} allocations failed", self.failed)?;
        }
        if self.free_errors > 0 {
            write!(f, ", {} frees failed", self.free_errors)?;
        }
        Ok(())
    }
}

/// `pages` allocations as the calling CPU with the default (local) policy
/// (`alloc_pages`: order 0, every eighth of order 2), each checked against
/// `numa_mem_id()` (a memoryless node's CPU gets its nearest memory, as
/// in Linux); then all freed and the CPU's per-CPU lists drained.
pub fn alloc_local(mm: &Mm, pages: u32) -> AllocReport {
    let want = mm.numa_mem_id();
    let mut r = AllocReport {
        cpu: mm.current_cpu(),
        want,
        ..AllocReport::default()
    };
    let mut got: Vec<Page> = Vec::with_capacity(pages as usize);
    for i in 0..pages {
        let order = if i % 8 == 7 { 2 } else { 0 };
        match mm.alloc_pages(Gfp::KERNEL | Gfp::NOWARN, order) {
            Ok(p) => {
                r.allocated += 1;
                if p.nid == want {
                    r.local += 1;
                } else if r.elsewhere.is_none() {
                    r.elsewhere = Some(p.nid);
                }
                got.push(p);
            }
            Err(_) => r.failed += 1,
        }
    }
    for p in got {
        if mm.free(p).is_err() {
            r.free_errors += 1;
        }
    }
    mm.drain_local_pages();
    r
}

/// A job for a secondary vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// Find out again who it is.
    Identify,
    /// [`alloc_local`] of this many blocks.
    Alloc {
        /// Blocks.
        pages: u32,
    },
    /// Wait for round `round` to start ([`Smp::count_together`]), then
    /// increment both shared counters `iters` times.
    Count {
        /// Increments.
        iters: u64,
        /// The round.
        round: u32,
    },
    /// Make this `VCPU_OP` call and report the answer (only calls that
    /// must be refused: one that took the vCPU down would never answer).
    Op(pv_abi::VcpuOp),
    /// Go down (`VCPU_OP` DOWN).
    Down,
    /// Fail on purpose (`fail=` with `fail_vcpu=`): the hypervisor should
    /// end the whole domain; answered only if the failure did not happen.
    Fail(crate::platform::FailMode, pv_abi::Gpa),
    /// Read the first word of [`EXCHANGE_PROBE`].
    ReadProbe,
}

/// A page of the image that the `smp` suite moves to other machine memory
/// (`DMA_EXCHANGE`) while the secondaries run, to see that each reads it
/// through the new mapping. Nothing else uses it; in particular no device
/// does, so the DMA layer's machine map need not know it moved.
#[repr(C, align(4096))]
pub struct ProbePage {
    words: [AtomicU64; 512],
}

impl ProbePage {
    /// Its first word.
    pub fn word(&self) -> &AtomicU64 {
        &self.words[0]
    }
}

/// See [`ProbePage`].
pub static EXCHANGE_PROBE: ProbePage = ProbePage {
    words: [const { AtomicU64::new(0) }; 512],
};

/// What a job answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobResult {
    /// [`Job::Identify`].
    Identity(Identity),
    /// [`Job::Alloc`].
    Alloc(AllocReport),
    /// [`Job::Count`]: increments made.
    Counted(u64),
    /// [`Job::Op`].
    Op(Result<u64, Error>),
    /// [`Job::Down`]: about to call DOWN.
    Leaving,
    /// [`Job::Fail`]: still running, and why.
    Survived(String),
    /// [`Job::ReadProbe`]: the word read.
    Word(u64),
}

/// What a secondary recorded about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// Who it is, as found when it last started.
    pub identity: Identity,
    /// Its boot allocations, the last time it started.
    pub boot_alloc: Option<AllocReport>,
    /// Times it finished its boot work (once per start).
    pub boot_runs: u32,
    /// What `VCPU_OP` DOWN answered, if it refused to take it down.
    pub down_refused: Option<Error>,
}

#[derive(Default)]
struct Mail {
    job: Option<Job>,
    result: Option<JobResult>,
}

/// One vCPU's slot.
pub struct Slot {
    state: AtomicU32,
    starts: AtomicU32,
    /// Its stack (the block the memory manager reserved for it).
    stack: Option<Page>,
    info: Mutex<CpuInfo>,
    /// Sequence number of the last job posted, and of the last finished.
    posted: AtomicU32,
    done: AtomicU32,
    mail: Mutex<Mail>,
}

impl Slot {
    fn new(state: CpuState, stack: Option<Page>) -> Self {
        Slot {
            state: AtomicU32::new(state as u32),
            starts: AtomicU32::new(0),
            stack,
            info: Mutex::new(CpuInfo::default()),
            posted: AtomicU32::new(0),
            done: AtomicU32::new(0),
            mail: Mutex::new(Mail::default()),
        }
    }

    /// Where it is.
    pub fn state(&self) -> CpuState {
        CpuState::from_raw(self.state.load(Ordering::Acquire))
    }

    fn set(&self, s: CpuState) {
        self.state.store(s as u32, Ordering::Release);
    }

    /// Times `VCPU_OP` UP started it.
    pub fn starts(&self) -> u32 {
        self.starts.load(Ordering::Acquire)
    }

    /// Its stack.
    pub const fn stack(&self) -> Option<Page> {
        self.stack
    }

    /// What it recorded.
    pub fn info(&self) -> CpuInfo {
        *self.info.lock()
    }
}

/// Why a vCPU was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// Not a secondary vCPU of the domain.
    NoSuchVcpu,
    /// It is not down (as the guest tracks it).
    NotDown(CpuState),
    /// No memory was reserved for its stack.
    NoStack,
    /// `VCPU_OP` UP answered this.
    Refused(Error),
    /// It never checked in.
    NoCheckIn,
}

impl StartError {
    /// The boot line after `guest: smp: `.
    pub fn line(&self, vcpu: u32) -> String {
        match self {
            StartError::NoSuchVcpu => format!("vcpu {vcpu}: no such secondary vcpu"),
            StartError::NotDown(s) => format!("vcpu {vcpu}: not started: it is {}", s.name()),
            StartError::NoStack => {
                format!("vcpu {vcpu}: no stack (no memory reserved for it at boot): not started")
            }
            StartError::Refused(e) => format!("vcpu {vcpu}: VCPU_OP UP failed: {e}"),
            StartError::NoCheckIn => {
                format!("vcpu {vcpu} did not check in within {CHECKIN_SECS} s")
            }
        }
    }
}

/// What vCPU 0 hands a secondary in RSI: the shared state and the vCPU it
/// was meant for. Owned by the vCPU once UP succeeded.
struct BootBlock {
    smp: Arc<Smp>,
    vcpu: u32,
}

/// The concurrent counters of one [`Smp::count_together`] round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountReport {
    /// vCPUs that counted (vCPU 0 included).
    pub cpus: u32,
    /// Increments each made.
    pub iters: u64,
    /// What they reported making, summed.
    pub reported: u64,
    /// The atomic counter.
    pub atomic: u64,
    /// The counter behind a spin lock.
    pub locked: u64,
}

/// The secondary vCPUs and what they share.
pub struct Smp {
    p: &'static dyn Platform,
    mm: Arc<Mm>,
    start: SecondaryStart,
    /// Per vCPU: its vnode per `GET_VNUMA`.
    vcpu_vnode: Vec<Option<u32>>,
    slots: Vec<Slot>,
    /// Incremented [`BOOT_COUNT`] times by each start of each secondary.
    boot_counter: AtomicU64,
    boot_locked: Mutex<u64>,
    /// [`Smp::count_together`]'s counters, its round and who is ready.
    counter: AtomicU64,
    locked: Mutex<u64>,
    round: AtomicU32,
    go: AtomicU32,
    ready: AtomicU32,
}

// Shared by every vCPU (through `Arc`): everything in it is atomic or
// behind a lock, and the platform is `Sync`.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Smp>();
};

/// Where SMP stands after boot.
pub enum SmpState {
    /// No secondary vCPU was brought up: why (the boot line, the `smp`
    /// suite's skip reason).
    Off(String),
    /// They were (or were tried).
    On(Arc<Smp>),
}

impl SmpState {
    /// The shared state, if secondaries were brought up.
    pub fn smp(&self) -> Option<&Arc<Smp>> {
        match self {
            SmpState::On(s) => Some(s),
            SmpState::Off(_) => None,
        }
    }
}

/// Brings the secondary vCPUs up ([`plan`] said whether to), printing one
/// line per vCPU and a summary, or why not.
pub fn boot(
    p: &'static dyn Platform,
    plan: Result<(), String>,
    nr_vcpus: u32,
    vnuma: Option<&Vnuma>,
    mm: Option<&Arc<Mm>>,
) -> SmpState {
    let state = match (plan, mm, p.secondary_start()) {
        (Err(why), ..) => SmpState::Off(why),
        (Ok(()), None, _) => SmpState::Off("no memory manager: running on vcpu 0 only".into()),
        (Ok(()), _, None) => {
            SmpState::Off("this platform cannot start a vcpu: running on vcpu 0 only".into())
        }
        (Ok(()), Some(mm), Some(start)) => {
            let smp = Arc::new(Smp::new(p, Arc::clone(mm), start, nr_vcpus, vnuma));
            smp.bring_up_all();
            SmpState::On(smp)
        }
    };
    if let SmpState::Off(why) = &state {
        println!("guest: smp: {why}");
    }
    state
}

/// Brings every secondary vCPU down before the domain ends; `false` if
/// one could not be (each is named).
pub fn shutdown(state: &SmpState) -> bool {
    let Some(smp) = state.smp() else {
        return true;
    };
    let mut ok = true;
    for k in 1..smp.nr_vcpus() {
        if let Err(why) = smp.bring_down(k) {
            println!("guest: smp: vcpu {k} still up: {why}");
            ok = false;
        }
    }
    if ok {
        println!("guest: smp: all secondary vcpus down");
    }
    ok
}

impl Smp {
    fn new(
        p: &'static dyn Platform,
        mm: Arc<Mm>,
        start: SecondaryStart,
        nr_vcpus: u32,
        vnuma: Option<&Vnuma>,
    ) -> Self {
        let slots = (0..nr_vcpus)
            .map(|k| {
                if k == 0 {
                    Slot::new(CpuState::Boot, None)
                } else {
                    Slot::new(CpuState::Down, mm.cpu_block(k))
                }
            })
            .collect();
        let vcpu_vnode = (0..nr_vcpus)
            .map(|k| vnuma.and_then(|v| v.vcpu_to_vnode.get(k as usize).copied()))
            .collect();
        Smp {
            p,
            mm,
            start,
            vcpu_vnode,
            slots,
            boot_counter: AtomicU64::new(0),
            boot_locked: Mutex::new(0),
            counter: AtomicU64::new(0),
            locked: Mutex::new(0),
            round: AtomicU32::new(0),
            go: AtomicU32::new(0),
            ready: AtomicU32::new(0),
        }
    }

    /// The platform.
    pub fn platform(&self) -> &'static dyn Platform {
        self.p
    }

    /// The memory manager the secondaries allocate from.
    pub fn mm(&self) -> &Mm {
        &self.mm
    }

    /// Where secondaries start.
    pub const fn start(&self) -> SecondaryStart {
        self.start
    }

    /// The domain's vCPUs.
    pub fn nr_vcpus(&self) -> u32 {
        self.slots.len() as u32
    }

    /// vCPU `vcpu`'s slot.
    pub fn slot(&self, vcpu: u32) -> Option<&Slot> {
        self.slots.get(vcpu as usize)
    }

    /// vCPU `vcpu`'s vnode per `GET_VNUMA`.
    pub fn vnode_of(&self, vcpu: u32) -> Option<u32> {
        self.vcpu_vnode.get(vcpu as usize).copied().flatten()
    }

    /// vCPUs online now (vCPU 0 included).
    pub fn online(&self) -> Vec<u32> {
        (0..self.nr_vcpus())
            .filter(|&k| self.slots[k as usize].state().is_online())
            .collect()
    }

    /// The boot counters: the atomic one and the one behind a lock.
    pub fn boot_counters(&self) -> (u64, u64) {
        (
            self.boot_counter.load(Ordering::Acquire),
            *self.boot_locked.lock(),
        )
    }

    fn bring_up_all(self: &Arc<Self>) {
        let mut stalled = None;
        for k in 1..self.nr_vcpus() {
            if let Some(j) = stalled {
                println!("guest: smp: vcpu {k} not started: vcpu {j} never checked in");
                continue;
            }
            match self.bring_up(k) {
                Ok(()) => self.print_online(k),
                Err(e) => {
                    println!("guest: smp: {}", e.line(k));
                    if e == StartError::NoCheckIn {
                        stalled = Some(k);
                    }
                }
            }
        }
        println!(
            "guest: smp: {} of {} vcpus online",
            self.online().len(),
            self.nr_vcpus()
        );
    }

    fn print_online(&self, k: u32) {
        let Some(slot) = self.slot(k) else { return };
        let id = slot.info().identity;
        let vnode = id.vnode.map_or_else(|| "?".into(), |v| format!("{v}"));
        let stack = slot
            .stack
            .map_or_else(|| "?".into(), |p| format!("{}", p.nid));
        println!(
            "guest: smp: vcpu {k} online on vnode {vnode} (node {}, local memory node {}, stack on node {stack})",
            id.node, id.mem
        );
        for w in id.problems(k) {
            println!("guest: smp: warning: vcpu {k}: {w}");
        }
    }

    /// Starts vCPU `k` (down) on its stack with a new context and waits for
    /// it to check in.
    pub fn bring_up(self: &Arc<Self>, k: u32) -> Result<(), StartError> {
        let slot = self
            .slot(k)
            .filter(|_| k > 0)
            .ok_or(StartError::NoSuchVcpu)?;
        match slot.state() {
            CpuState::Down | CpuState::Failed => {}
            s => return Err(StartError::NotDown(s)),
        }
        let stack = slot.stack.ok_or(StartError::NoStack)?;
        self.p
            .write_phys(stack.gpa(), &StackHeader::new(k).to_bytes());
        let block = Box::into_raw(Box::new(BootBlock {
            smp: Arc::clone(self),
            vcpu: k,
        }));
        let ctx = VcpuContext::new(
            self.start.rip,
            stack_top(stack.gpa().0),
            self.start.cr3,
            self.start.gdt_base,
            self.start.gdt_limit,
            block as u64,
        );
        slot.set(CpuState::Starting);
        slot.starts.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = hypercall::vcpu_up(self.p, k, &ctx) {
            // SAFETY: `block` is the `Box::into_raw` above; the hypervisor
            // refused to start the vCPU, so no one else has it.
            drop(unsafe { Box::from_raw(block) });
            slot.set(CpuState::Failed);
            return Err(StartError::Refused(e));
        }
        // From here the block is the vCPU's (leaked if it never runs).
        let mut d = Deadline::after(self.p, CHECKIN_SECS);
        loop {
            if slot.state() != CpuState::Starting {
                return Ok(());
            }
            if d.expired() {
                let starting = CpuState::Starting as u32;
                let failed = CpuState::Failed as u32;
                return match slot.state.compare_exchange(
                    starting,
                    failed,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => Err(StartError::NoCheckIn),
                    // It checked in just now.
                    Err(_) => Ok(()),
                };
            }
            self.p.relax();
        }
    }

    /// Waits until vCPU `k` is no longer starting, online or busy (its
    /// check-in, boot work or job done); its state then.
    pub fn settle(&self, k: u32, secs: u64) -> Option<CpuState> {
        let slot = self.slot(k)?;
        let mut d = Deadline::after(self.p, secs);
        loop {
            let s = slot.state();
            if !matches!(s, CpuState::Starting | CpuState::Online | CpuState::Busy) || d.expired() {
                return Some(s);
            }
            self.p.relax();
        }
    }

    /// Posts `job` to vCPU `k`, which must be idle; the job's sequence
    /// number.
    pub fn post(&self, k: u32, job: Job) -> Result<u32, String> {
        let slot = self
            .slot(k)
            .filter(|_| k > 0)
            .ok_or_else(|| format!("no secondary vcpu {k}"))?;
        let (idle, busy) = (CpuState::Idle as u32, CpuState::Busy as u32);
        if let Err(s) = slot
            .state
            .compare_exchange(idle, busy, Ordering::AcqRel, Ordering::Acquire)
        {
            return Err(format!(
                "vcpu {k} is {}, not idle",
                CpuState::from_raw(s).name()
            ));
        }
        {
            let mut m = slot.mail.lock();
            m.job = Some(job);
            m.result = None;
        }
        Ok(slot.posted.fetch_add(1, Ordering::AcqRel).wrapping_add(1))
    }

    /// Waits for job `seq` of vCPU `k`; its result.
    pub fn wait(&self, k: u32, seq: u32, secs: u64) -> Result<JobResult, String> {
        let slot = self.slot(k).ok_or_else(|| format!("no vcpu {k}"))?;
        let mut d = Deadline::after(self.p, secs);
        loop {
            // Sequence numbers wrap: "done" once it caught up with `seq`.
            if slot.done.load(Ordering::Acquire).wrapping_sub(seq) < u32::MAX / 2 {
                return slot
                    .mail
                    .lock()
                    .result
                    .take()
                    .ok_or_else(|| format!("vcpu {k} finished job {seq} without a result"));
            }
            if d.expired() {
                return Err(format!(
                    "vcpu {k} did not finish its job within {secs} s (it is {})",
                    slot.state().name()
                ));
            }
            self.p.relax();
        }
    }

    /// Runs `job` on vCPU `k` and waits for it.
    pub fn run_job(&self, k: u32, job: Job) -> Result<JobResult, String> {
        let seq = self.post(k, job)?;
        self.wait(k, seq, JOB_SECS)
    }

    /// vCPU 0 and every idle secondary of `vcpus` increment both shared
    /// counters `iters` times each, all starting together.
    pub fn count_together(&self, vcpus: &[u32], iters: u64) -> Result<CountReport, String> {
        let round = self.round.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        self.counter.store(0, Ordering::Release);
        *self.locked.lock() = 0;
        self.ready.store(0, Ordering::Release);
        // Whoever could not be posted to is reported after the round: the
        // others are waiting for it to start.
        let mut posted = Vec::new();
        let mut refused = None;
        for &k in vcpus {
            match self.post(k, Job::Count { iters, round }) {
                Ok(seq) => posted.push((k, seq)),
                Err(e) => refused = refused.or(Some(e)),
            }
        }
        let mut d = Deadline::after(self.p, JOB_SECS);
        while (self.ready.load(Ordering::Acquire) as usize) < posted.len() && !d.expired() {
            self.p.relax();
        }
        self.go.store(round, Ordering::Release);
        for _ in 0..iters {
            self.counter.fetch_add(1, Ordering::Relaxed);
            *self.locked.lock() += 1;
        }
        let mut reported = iters;
        let mut failed = refused;
        for &(k, seq) in &posted {
            match self.wait(k, seq, JOB_SECS) {
                Ok(JobResult::Counted(n)) => reported += n,
                Ok(other) => {
                    failed = failed.or(Some(format!("vcpu {k} answered {other:?} to a count")))
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(CountReport {
            cpus: posted.len() as u32 + 1,
            iters,
            reported,
            atomic: self.counter.load(Ordering::Acquire),
            locked: *self.locked.lock(),
        })
    }

    /// Brings vCPU `k` down: lets its boot work or job finish, tells it to
    /// go down if it is idle, and waits until `VCPU_OP` IS_UP reads 0.
    pub fn bring_down(&self, k: u32) -> Result<(), String> {
        let slot = self
            .slot(k)
            .filter(|_| k > 0)
            .ok_or_else(|| format!("no secondary vcpu {k}"))?;
        let state = self.settle(k, JOB_SECS).unwrap_or(CpuState::Failed);
        match state {
            CpuState::Idle => match self.run_job(k, Job::Down)? {
                JobResult::Leaving => {}
                other => return Err(format!("it answered {other:?} to go down")),
            },
            CpuState::Down | CpuState::Leaving | CpuState::Failed => {}
            s => return Err(format!("it is {} and does not answer", s.name())),
        }
        let mut d = Deadline::after(self.p, JOB_SECS);
        loop {
            match hypercall::vcpu_is_up(self.p, k) {
                Ok(0) => {
                    slot.set(CpuState::Down);
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => return Err(format!("VCPU_OP IS_UP answered {e}")),
            }
            if let Some(e) = slot.info.lock().down_refused.take() {
                return Err(format!("its VCPU_OP DOWN answered {e}"));
            }
            if state != CpuState::Idle && state != CpuState::Leaving {
                return Err(format!(
                    "it is {} but the hypervisor says it is up",
                    state.name()
                ));
            }
            if d.expired() {
                return Err(format!(
                    "IS_UP still reads 1 {JOB_SECS} s after it was told to go down"
                ));
            }
            self.p.relax();
        }
    }
}

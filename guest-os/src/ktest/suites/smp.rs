//! Suite `smp` (ABI 1.3): the secondary vCPUs `crate::smp` brought up at
//! boot, driven through their mailboxes. Every vCPU came online and knows
//! who and where it is; its stack and its allocations are on its local
//! memory node; counters incremented by every vCPU at once are exact;
//! `VCPU_OP` IS_UP agrees; the hypervisor refuses every bad request with
//! the ABI's error; a page moved to other machine memory (`DMA_EXCHANGE`)
//! while they run reads the same, new writes included, on every vCPU (the
//! hypervisor keeps them out of the guest during the move and flushes
//! their TLBs); a vCPU that went down comes up again with a new
//! context; and at the end every secondary goes down, so the suites after
//! this one run on vCPU 0 alone.
//!
//! Skipped, with the reason, when no secondary was brought up (no
//! `VCPU_OP`, one vCPU, `nosmp`) and in a guest built for ABI 1.2 or older.

use crate::boot::Guest;
use crate::ktest::{Suite, Test};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "smp",
    tests: TESTS,
};

macro_rules! smp_tests {
    ($($name:ident),* $(,)?) => {
        #[cfg(not(feature = "abi-1-2"))]
        static TESTS: &[Test<Guest>] = &[$(Test { name: stringify!($name), run: imp::$name }),*];
        #[cfg(feature = "abi-1-2")]
        static TESTS: &[Test<Guest>] = &[$(Test { name: stringify!($name), run: no_vcpu_op }),*];
    };
}

smp_tests![
    every_vcpu_online,
    stacks_on_local_memory,
    allocations_are_node_local,
    counters_are_exact,
    is_up_agrees,
    exchange_reaches_every_vcpu,
    bad_requests_are_refused,
    down_and_up_again,
    all_go_down,
];

#[cfg(feature = "abi-1-2")]
fn no_vcpu_op(_: &Guest) -> crate::ktest::TestResult {
    crate::ktest::skip!(
        "this guest speaks ABI {}: no VCPU_OP",
        pv_abi::AbiVersion::CURRENT
    )
}

#[cfg(not(feature = "abi-1-2"))]
mod imp {
    use alloc::format;
    use alloc::string::String;
    use alloc::sync::Arc;
    use alloc::vec::Vec;

    use core::sync::atomic::Ordering;
    use pv_abi::start_info::GPA_LIMIT;

    use pv_abi::{Error, Features, Gpa, Hypercall, HypercallArgs, VcpuContext, VcpuOp};

    use crate::boot::Guest;
    use crate::hypercall::{self, gpa_of};
    use crate::ktest::{ensure, problems, TestError, TestResult};
    use crate::mm::{Mm, PageState};
    use crate::percpu::{stack_top, STACK_ORDER, STACK_SIZE};
    use crate::smp::{
        alloc_local, CpuState, Identity, Job, JobResult, Smp, SmpState, BOOT_COUNT, BOOT_PAGES,
        EXCHANGE_PROBE, JOB_SECS,
    };

    /// Allocations per vCPU in the concurrent round.
    const ALLOC_PAGES: u32 = 256;
    /// Increments per vCPU in the concurrent round.
    const COUNT: u64 = 20_000;

    fn smp(g: &Guest) -> Result<&Arc<Smp>, TestError> {
        match &g.smp {
            SmpState::On(s) => Ok(s),
            SmpState::Off(why) => Err(TestError::Skip(why.clone())),
        }
    }

    /// The secondaries, each once it has settled (checked in and done its
    /// boot work or job), with its state.
    fn settled(smp: &Smp) -> Vec<(u32, CpuState)> {
        (1..smp.nr_vcpus())
            .map(|k| (k, smp.settle(k, JOB_SECS).unwrap_or(CpuState::Failed)))
            .collect()
    }

    /// The idle secondaries (failing if there is none).
    fn idle(smp: &Smp) -> Result<Vec<u32>, TestError> {
        let v: Vec<u32> = settled(smp)
            .into_iter()
            .filter(|&(_, s)| s == CpuState::Idle)
            .map(|(k, _)| k)
            .collect();
        ensure!(!v.is_empty(), "no secondary vcpu is online");
        Ok(v)
    }

    /// Problems with vCPU `k`'s identity (`when` says which).
    fn check_identity(g: &Guest, mm: &Mm, k: u32, id: &Identity, when: &str) -> Vec<String> {
        let mut bad: Vec<String> = id
            .problems(k)
            .into_iter()
            .map(|p| format!("vcpu {k} ({when}): {p}"))
            .collect();
        if id.node != mm.cpu_to_node(k) || id.mem != mm.cpu_to_mem(k) {
            bad.push(format!(
                "vcpu {k} ({when}): node {} and numa_mem_id {}, cpu_to_node {} and cpu_to_mem {}",
                id.node,
                id.mem,
                mm.cpu_to_node(k),
                mm.cpu_to_mem(k)
            ));
        }
        let want = g
            .vnuma()
            .and_then(|v| v.vcpu_to_vnode.get(k as usize).copied());
        if want.is_some() && id.vnode != want {
            bad.push(format!(
                "vcpu {k} ({when}): on vnode {:?}, get_vnuma says {want:?}",
                id.vnode
            ));
        }
        // Without NUMA emulation a node is one vnode.
        let emulated = g
            .view
            .as_ref()
            .is_some_and(|v| v.source == crate::numa::fake::SOURCE);
        let node_vnode = mm.node(id.node).map(|n| n.vnode());
        if !emulated && id.vnode.is_some() && node_vnode != id.vnode {
            bad.push(format!(
                "vcpu {k} ({when}): on vnode {:?}, but its node {} is vnode {node_vnode:?}",
                id.vnode, id.node
            ));
        }
        bad
    }

    /// Every secondary checked in and is idle; RDI, CPUID's initial APIC
    /// id, its stack header and the memory manager agree on its id, and
    /// its node, `numa_mem_id` and vnode are the vNUMA view's; asked again
    /// now, it says the same.
    pub fn every_vcpu_online(g: &Guest) -> TestResult {
        let smp = smp(g)?;
        let mm = smp.mm();
        let mut bad = Vec::new();
        for (k, state) in settled(smp) {
            if state != CpuState::Idle {
                bad.push(format!("vcpu {k} is {}", state.name()));
                continue;
            }
            let Some(slot) = smp.slot(k) else { continue };
            bad.extend(check_identity(g, mm, k, &slot.info().identity, "at boot"));
            match smp.run_job(k, Job::Identify) {
                Ok(JobResult::Identity(id)) => bad.extend(check_identity(g, mm, k, &id, "now")),
                Ok(other) => bad.push(format!("vcpu {k} answered {other:?} to identify")),
                Err(e) => bad.push(e),
            }
        }
        let online = smp.online().len();
        if online != smp.nr_vcpus() as usize {
            bad.push(format!("{online} of {} vcpus online", smp.nr_vcpus()));
        }
        problems(bad)
    }

    /// Each secondary's stack is the 64 KiB block reserved for it at boot
    /// on its local memory node: aligned to its size, reserved pages.
    pub fn stacks_on_local_memory(g: &Guest) -> TestResult {
        let smp = smp(g)?;
        let mm = smp.mm();
        let mut bad = Vec::new();
        for k in 1..smp.nr_vcpus() {
            let Some(stack) = smp.slot(k).and_then(|s| s.stack()) else {
                bad.push(format!("vcpu {k} has no stack"));
                continue;
            };
            if mm.cpu_block(k) != Some(stack) {
                bad.push(format!(
                    "vcpu {k}: its stack is not the block reserved for it"
                ));
            }
            if stack.nid != mm.cpu_to_mem(k) {
                bad.push(format!(
                    "vcpu {k}: stack on node {}, its local memory node is {}",
                    stack.nid,
                    mm.cpu_to_mem(k)
                ));
            }
            if stack.order != STACK_ORDER || !stack.gpa().is_aligned(STACK_SIZE) {
                bad.push(format!(
                    "vcpu {k}: stack at {} of order {}",
                    stack.gpa(),
                    stack.order
                ));
            }
            for f in [stack.gfn.0, stack.gfn.0 + stack.pages() - 1] {
                let st = mm.page_state(pv_abi::Gfn(f)).map(|s| s.0);
                if st != Some(PageState::Reserved) {
                    bad.push(format!("vcpu {k}: stack page {f:#x} is {st:?}"));
                }
            }
        }
        problems(bad)
    }

    /// What each secondary allocated at boot as its own CPU, with the
    /// default policy, came from its `numa_mem_id` node (the nearest memory
    /// for a memoryless node); and so does what every vCPU allocates now,
    /// all at once, after which the allocator's invariants hold.
    pub fn allocations_are_node_local(g: &Guest) -> TestResult {
        let smp = smp(g)?;
        let mm = smp.mm();
        let mut bad = Vec::new();
        let vcpus = idle(smp)?;
        for &k in &vcpus {
            let info = smp.slot(k).map(|s| s.info()).unwrap_or_default();
            match info.boot_alloc {
                Some(r)
                    if r.all_local()
                        && r.cpu == k
                        && r.want == mm.cpu_to_mem(k)
                        && r.allocated == BOOT_PAGES => {}
                Some(r) => bad.push(format!("vcpu {k} at boot: {r}")),
                None => bad.push(format!("vcpu {k} did no boot allocations")),
            }
        }
        let mut posted = Vec::new();
        for &k in &vcpus {
            match smp.post(k, Job::Alloc { pages: ALLOC_PAGES }) {
                Ok(seq) => posted.push((k, seq)),
                Err(e) => bad.push(e),
            }
        }
        let own = alloc_local(mm, ALLOC_PAGES);
        if !own.all_local() || own.want != mm.cpu_to_mem(0) {
            bad.push(format!("vcpu 0: {own}"));
        }
        for (k, seq) in posted {
            match smp.wait(k, seq, JOB_SECS) {
                Ok(JobResult::Alloc(r))
                    if r.all_local() && r.cpu == k && r.want == mm.cpu_to_mem(k) => {}
                Ok(JobResult::Alloc(r)) => bad.push(format!("vcpu {k}: {r}")),
                Ok(other) => bad.push(format!("vcpu {k} answered {other:?} to alloc")),
                Err(e) => bad.push(e),
            }
        }
        bad.extend(mm.check());
        problems(bad)
    }

    /// The boot counters hold exactly [`BOOT_COUNT`] per secondary start;
    /// then every vCPU increments an atomic counter and one behind a spin
    /// lock [`COUNT`] times, all starting together: both are exact.
    pub fn counters_are_exact(g: &Guest) -> TestResult {
        let smp = smp(g)?;
        let vcpus = idle(smp)?;
        let mut bad = Vec::new();
        let runs: u64 = (1..smp.nr_vcpus())
            .filter_map(|k| smp.slot(k))
            .map(|s| u64::from(s.info().boot_runs))
            .sum();
        let want = BOOT_COUNT * runs;
        let (atomic, locked) = smp.boot_counters();
        if atomic != want || locked != want {
            bad.push(format!(
                "boot: atomic {atomic}, locked {locked}, expected {want} ({runs} starts)"
            ));
        }
        let r = smp.count_together(&vcpus, COUNT)?;
        let want = u64::from(r.cpus) * r.iters;
        if r.cpus as usize != vcpus.len() + 1 {
            bad.push(format!(
                "{} vcpus counted, {} asked",
                r.cpus,
                vcpus.len() + 1
            ));
        }
        if r.atomic != want || r.locked != want || r.reported != want {
            bad.push(format!(
                "{} vcpus x {}: atomic {}, locked {}, reported {}, expected {want}",
                r.cpus, r.iters, r.atomic, r.locked, r.reported
            ));
        }
        problems(bad)
    }

    fn show(r: Result<u64, Error>) -> String {
        match r {
            Ok(v) => format!("{v}"),
            Err(e) => format!("{e}"),
        }
    }

    /// Adds a line to `bad` unless `got` is the error `want`.
    fn refused(bad: &mut Vec<String>, what: &str, got: Result<u64, Error>, want: Error) {
        expect(bad, what, got, Err(want));
    }

    /// Adds a line to `bad` unless `got` is `want`.
    fn expect(
        bad: &mut Vec<String>,
        what: &str,
        got: Result<u64, Error>,
        want: Result<u64, Error>,
    ) {
        if got != want {
            bad.push(format!("{what}: {}, expected {}", show(got), show(want)));
        }
    }

    /// A page moved to other machine memory by `DMA_EXCHANGE` while every
    /// secondary runs (the hypervisor pauses them for the move): its
    /// contents are kept, and a word vCPU 0 writes afterwards is what every
    /// secondary reads, though each read the page (and cached its old
    /// translation) just before the move. Under QEMU's TCG a missing TLB
    /// flush would not show here (TCG flushes at every VMRUN); on hardware
    /// it would.
    pub fn exchange_reaches_every_vcpu(g: &Guest) -> TestResult {
        const BEFORE: u64 = 0x6e75_6d61_0000_0001;
        const AFTER: u64 = 0x6e75_6d61_0000_0002;
        let smp = smp(g)?;
        if !g.features.contains(Features::DMA_EXCHANGE) {
            crate::ktest::skip!("the hypervisor has no DMA_EXCHANGE");
        }
        let vcpus = idle(smp)?;
        let mut bad = Vec::new();
        let read_all = |want: u64, when: &str, bad: &mut Vec<String>| {
            for &k in &vcpus {
                match smp.run_job(k, Job::ReadProbe) {
                    Ok(JobResult::Word(w)) if w == want => {}
                    Ok(other) => {
                        bad.push(format!("vcpu {k} {when}: read {other:?}, want {want:#x}"))
                    }
                    Err(e) => bad.push(e),
                }
            }
        };
        let probe = EXCHANGE_PROBE.word();
        probe.store(BEFORE, Ordering::SeqCst);
        read_all(BEFORE, "before the move", &mut bad);
        let gpa = gpa_of(g.p, &raw const EXCHANGE_PROBE);
        if let Err(e) = hypercall::dma_exchange(g.p, gpa.0, 1, 64, 0) {
            bad.push(format!("DMA_EXCHANGE of the probe page at {gpa}: {e}"));
            return problems(bad);
        }
        let kept = probe.load(Ordering::SeqCst);
        if kept != BEFORE {
            bad.push(format!(
                "after the move vcpu 0 reads {kept:#x}, want {BEFORE:#x}"
            ));
        }
        probe.store(AFTER, Ordering::SeqCst);
        read_all(AFTER, "after the move", &mut bad);
        problems(bad)
    }

    /// IS_UP reads 1 for vCPU 0 and every online secondary, 0 for the
    /// others, the same from a secondary, and `NoSuchThing` past the last.
    pub fn is_up_agrees(g: &Guest) -> TestResult {
        let smp = smp(g)?;
        let p = g.p;
        let nr = smp.nr_vcpus();
        let mut bad = Vec::new();
        let b = &mut bad;
        expect(b, "IS_UP(0)", hypercall::vcpu_is_up(p, 0), Ok(1));
        let states = settled(smp);
        for &(k, s) in &states {
            if s == CpuState::Failed {
                continue;
            }
            let want = Ok(u64::from(s.is_online()));
            let what = format!("IS_UP({k}) ({})", s.name());
            expect(b, &what, hypercall::vcpu_is_up(p, k), want);
        }
        for k in [nr, u32::MAX] {
            let got = hypercall::vcpu_is_up(p, k);
            expect(b, &format!("IS_UP({k})"), got, Err(Error::NoSuchThing));
        }
        for &(k, s) in &states {
            if s != CpuState::Idle {
                continue;
            }
            for (v, want) in [(0, Ok(1)), (k, Ok(1)), (nr, Err(Error::NoSuchThing))] {
                let got = match smp.run_job(k, Job::Op(VcpuOp::IsUp { vcpu: v })) {
                    Ok(JobResult::Op(r)) => r,
                    other => {
                        b.push(format!("vcpu {k}: IS_UP({v}) job: {other:?}"));
                        continue;
                    }
                };
                expect(b, &format!("IS_UP({v}) from vcpu {k}"), got, want);
            }
        }
        problems(bad)
    }

    /// Makes a good context bad (the hole is guest-physical space outside
    /// every memory range).
    type Spoil = fn(&mut VcpuContext, Gpa);

    /// A secondary that is down (the last one, taken down if need be).
    fn a_down_vcpu(smp: &Smp) -> Result<u32, TestError> {
        let down = (1..smp.nr_vcpus())
            .rev()
            .find(|&k| smp.slot(k).is_some_and(|s| s.state() == CpuState::Down));
        if let Some(k) = down {
            return Ok(k);
        }
        let k = smp.nr_vcpus() - 1;
        smp.bring_down(k)
            .map_err(|e| TestError::Fail(format!("vcpu {k} would not go down: {e}")))?;
        Ok(k)
    }

    /// Every request the ABI refuses is refused with its error: UP of vCPU
    /// 0 or of a vCPU that is up, DOWN of vCPU 0 or of another vCPU (from
    /// vCPU 0 and from a secondary), ids past the last, bad registers, and
    /// on a vCPU that is down, every bad context (flags, reserved, size,
    /// non-canonical addresses, `cr3` misaligned or not guest memory, the
    /// context itself misaligned or not guest memory). Nothing starts.
    pub fn bad_requests_are_refused(g: &Guest) -> TestResult {
        let smp = smp(g)?;
        let p = g.p;
        let nr = smp.nr_vcpus();
        let start = smp.start();
        let mut bad = Vec::new();
        let b = &mut bad;
        // A context the hypervisor would accept, but with no boot block: a
        // vCPU wrongly started with it goes straight down again.
        let ctx = |rsp: u64| {
            VcpuContext::new(
                start.rip,
                rsp,
                start.cr3,
                start.gdt_base,
                start.gdt_limit,
                0,
            )
        };
        let up = |vcpu: u32, c: &VcpuContext| hypercall::vcpu_up(p, vcpu, c).map(|()| 0);
        let raw = |op: u64, vcpu: u64, context: u64| {
            hypercall::raw(
                p,
                &HypercallArgs::new(Hypercall::VcpuOp, [op, vcpu, context, 0, 0]),
            )
        };

        // Ids and states, from vCPU 0.
        refused(b, "UP of vcpu 0", up(0, &ctx(0)), Error::InvalidArgument);
        let online: Vec<u32> = idle(smp)?;
        let k = online[0];
        refused(
            b,
            &format!("UP of vcpu {k}, which is up"),
            up(k, &ctx(0)),
            Error::InvalidArgument,
        );
        refused(
            b,
            "DOWN of vcpu 0 from vcpu 0",
            hypercall::vcpu_down(p, 0),
            Error::InvalidArgument,
        );
        refused(
            b,
            &format!("DOWN of vcpu {k} from vcpu 0"),
            hypercall::vcpu_down(p, k),
            Error::InvalidArgument,
        );
        refused(
            b,
            &format!("UP of vcpu {nr}"),
            up(nr, &ctx(0)),
            Error::NoSuchThing,
        );
        refused(
            b,
            &format!("DOWN of vcpu {nr}"),
            hypercall::vcpu_down(p, nr),
            Error::NoSuchThing,
        );
        refused(
            b,
            "IS_UP of vcpu 2^32",
            raw(2, 1 << 32, 0),
            Error::NoSuchThing,
        );
        refused(b, "operation 3", raw(3, 0, 0), Error::InvalidArgument);
        refused(
            b,
            "IS_UP with RDX set",
            raw(2, 0, 8),
            Error::InvalidArgument,
        );
        refused(b, "DOWN with RDX set", raw(1, 0, 8), Error::InvalidArgument);

        // From a secondary: DOWN of vCPU 0, of another vCPU, UP of vCPU 0.
        let other = online.iter().copied().find(|&j| j != k).unwrap_or(0);
        let boxed = alloc::boxed::Box::new(ctx(0));
        let at = gpa_of(p, &*boxed as *const VcpuContext);
        for (what, op) in [
            ("DOWN of vcpu 0", VcpuOp::Down { vcpu: 0 }),
            ("DOWN of another vcpu", VcpuOp::Down { vcpu: other }),
            (
                "UP of vcpu 0",
                VcpuOp::Up {
                    vcpu: 0,
                    context: at,
                },
            ),
        ] {
            match smp.run_job(k, Job::Op(op)) {
                Ok(JobResult::Op(r)) => refused(
                    b,
                    &format!("{what} from vcpu {k}"),
                    r,
                    Error::InvalidArgument,
                ),
                other => b.push(format!("{what} from vcpu {k}: {other:?}")),
            }
        }

        // Contexts, on a vCPU that is down.
        let d = a_down_vcpu(smp)?;
        let rsp = smp
            .slot(d)
            .and_then(|s| s.stack())
            .map_or(0, |s| stack_top(s.gpa().0));
        let hole_fault = if g.hole.0 < GPA_LIMIT {
            Error::Fault
        } else {
            Error::InvalidArgument
        };
        let cases: [(&str, Spoil, bool); 11] = [
            ("flags 1", |c, _| c.flags = 1, false),
            ("reserved 1", |c, _| c.reserved = 1, false),
            ("size 55", |c, _| c.size = 55, false),
            ("size 8", |c, _| c.size = 8, false),
            ("rip non-canonical", |c, _| c.rip = 1 << 47, false),
            (
                "rsp non-canonical",
                |c, _| c.rsp = 0xffff_7fff_ffff_fff0,
                false,
            ),
            ("gdt base non-canonical", |c, _| c.gdt_base = 1 << 63, false),
            ("gdt limit 0x10000", |c, _| c.gdt_limit = 0x1_0000, false),
            ("cr3 misaligned", |c, _| c.cr3 = Gpa(c.cr3.0 + 0x800), false),
            ("cr3 at 2^47", |c, _| c.cr3 = Gpa(GPA_LIMIT), false),
            ("cr3 outside guest memory", |c, hole| c.cr3 = hole, true),
        ];
        for (what, f, faults) in cases {
            let mut c = ctx(rsp);
            f(&mut c, g.hole);
            let want = if faults {
                hole_fault
            } else {
                Error::InvalidArgument
            };
            refused(b, &format!("UP of vcpu {d}, {what}"), up(d, &c), want);
        }
        let good = ctx(rsp);
        let misaligned = Gpa(gpa_of(p, &good as *const VcpuContext).0 + 4);
        refused(
            b,
            &format!("UP of vcpu {d}, context misaligned"),
            hypercall::vcpu_up_at(p, d, misaligned).map(|()| 0),
            Error::InvalidArgument,
        );
        refused(
            b,
            &format!("UP of vcpu {d}, context outside guest memory"),
            hypercall::vcpu_up_at(p, d, g.hole).map(|()| 0),
            hole_fault,
        );
        // None of it started anything (one that did went down again).
        let down = smp.bring_down(d);
        ensure!(
            bad.is_empty() && down.is_ok(),
            "{}{}",
            bad.join("\n"),
            down.err()
                .map_or(String::new(), |e| format!("\nvcpu {d}: {e}"))
        );
        Ok(())
    }

    /// A secondary that went down reads down, comes up again with a new
    /// context (a new boot block, on the same stack), checks in as itself
    /// and runs jobs.
    pub fn down_and_up_again(g: &Guest) -> TestResult {
        let smp = smp(g)?;
        let p = g.p;
        let d = a_down_vcpu(smp)?;
        let slot = smp
            .slot(d)
            .ok_or_else(|| TestError::Fail(format!("no slot for vcpu {d}")))?;
        let is_up = hypercall::vcpu_is_up(p, d);
        ensure!(
            is_up == Ok(0),
            "vcpu {d} is down, IS_UP says {}",
            show(is_up)
        );
        let starts = slot.starts();
        smp.bring_up(d).map_err(|e| TestError::Fail(e.line(d)))?;
        let mut bad = Vec::new();
        if slot.starts() != starts + 1 {
            bad.push(format!("{} starts, {} before", slot.starts(), starts + 1));
        }
        let state = smp.settle(d, JOB_SECS).unwrap_or(CpuState::Failed);
        ensure!(
            state == CpuState::Idle,
            "vcpu {d} came up and is {}",
            state.name()
        );
        let is_up = hypercall::vcpu_is_up(p, d);
        if is_up != Ok(1) {
            bad.push(format!("vcpu {d} is up, IS_UP says {}", show(is_up)));
        }
        let info = slot.info();
        bad.extend(check_identity(g, smp.mm(), d, &info.identity, "restarted"));
        match info.boot_alloc {
            Some(r) if r.all_local() => {}
            other => bad.push(format!("vcpu {d} restarted, allocated {other:?}")),
        }
        match smp.run_job(d, Job::Identify) {
            Ok(JobResult::Identity(id)) => {
                bad.extend(check_identity(g, smp.mm(), d, &id, "restarted, now"))
            }
            other => bad.push(format!("vcpu {d} restarted: identify: {other:?}")),
        }
        problems(bad)
    }

    /// Every secondary goes down when told to, and IS_UP then reads 0 for
    /// each; only vCPU 0 is left.
    pub fn all_go_down(g: &Guest) -> TestResult {
        let smp = smp(g)?;
        let mut bad = Vec::new();
        for k in 1..smp.nr_vcpus() {
            if let Err(e) = smp.bring_down(k) {
                bad.push(format!("vcpu {k}: {e}"));
            }
            let r = hypercall::vcpu_is_up(g.p, k);
            if r != Ok(0) {
                bad.push(format!("vcpu {k}: IS_UP says {}", show(r)));
            }
        }
        let online = smp.online();
        if online != [0] {
            bad.push(format!("still online: {online:?}"));
        }
        problems(bad)
    }
}

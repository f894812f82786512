//! What a secondary vCPU runs, from the entry stub's call to `VCPU_OP`
//! DOWN (see the [module docs](super)).

use alloc::boxed::Box;
use core::sync::atomic::Ordering;

use pv_abi::HypercallRequest;

use super::{
    alloc_local, BootBlock, CpuState, Deadline, Identity, Job, JobResult, Slot, Smp, BOOT_COUNT,
    BOOT_PAGES, JOB_SECS,
};
use crate::hypercall;

/// A secondary vCPU, called by the entry stub with RDI (its id) and RSI
/// (the boot block) as the hypervisor set them. Checks in, does its boot
/// work, serves its mailbox and goes down. Returns only without a boot
/// block (a start vCPU 0 did not ask for, such as a bad context the
/// hypervisor should have refused), or on a model hypervisor whose DOWN
/// returns; the caller then takes the vCPU down itself. (A refused DOWN
/// is recorded and the vCPU goes back to its mailbox.)
pub fn secondary_main(rdi: u64, arg: u64) {
    if arg == 0 || !arg.is_multiple_of(core::mem::align_of::<BootBlock>() as u64) {
        return;
    }
    // SAFETY: a non-null, aligned RSI is the `Box::into_raw` of the boot
    // block vCPU 0 made for this start (`Smp::bring_up`); it gave it up
    // when `VCPU_OP` UP succeeded and never touches it again, and the
    // hypervisor starts the vCPU once per UP.
    let block = unsafe { Box::from_raw(arg as *mut BootBlock) };
    let BootBlock { smp, vcpu } = *block;
    let Some(slot) = smp.slot(vcpu) else {
        return;
    };
    let identity = identify(&smp, rdi);
    slot.info.lock().identity = identity;
    // Jobs posted from here on are new.
    let seen = slot.done.load(Ordering::Acquire);
    slot.set(CpuState::Online);

    // Boot work, as this CPU.
    let alloc = alloc_local(&smp.mm, BOOT_PAGES);
    for _ in 0..BOOT_COUNT {
        smp.boot_counter.fetch_add(1, Ordering::Relaxed);
        *smp.boot_locked.lock() += 1;
    }
    {
        let mut info = slot.info.lock();
        info.boot_alloc = Some(alloc);
        info.boot_runs += 1;
    }
    slot.set(CpuState::Idle);
    serve(&smp, slot, rdi, seen);
}

/// Who this vCPU is, from each source.
fn identify(smp: &Smp, rdi: u64) -> Identity {
    let mm = &smp.mm;
    let node = mm.numa_node_id();
    let vnode = u32::try_from(rdi)
        .ok()
        .and_then(|id| smp.vnode_of(id))
        .or_else(|| mm.node(node).map(|n| n.vnode()));
    Identity {
        rdi,
        apic: smp.p.cpuid(1).map(|r| r.ebx >> 24),
        stack_cpu: crate::percpu::this_cpu(),
        mm_cpu: mm.current_cpu(),
        node,
        mem: mm.numa_mem_id(),
        vnode,
    }
}

/// The mailbox loop: runs each job vCPU 0 posts until one takes the vCPU
/// down. `seen` is the last job already done.
fn serve(smp: &Smp, slot: &Slot, rdi: u64, mut seen: u32) {
    loop {
        let posted = slot.posted.load(Ordering::Acquire);
        if posted == seen {
            smp.p.relax();
            continue;
        }
        seen = posted;
        let job = slot.mail.lock().job.take();
        let result = match job {
            None => continue,
            Some(Job::Down) => {
                smp.mm.drain_local_pages();
                slot.mail.lock().result = Some(JobResult::Leaving);
                slot.set(CpuState::Leaving);
                slot.done.store(seen, Ordering::Release);
                let vcpu = u32::try_from(rdi).unwrap_or(u32::MAX);
                match hypercall::vcpu_down(smp.p, vcpu) {
                    // Only a model hypervisor returns: the vCPU is down.
                    Ok(_) => return,
                    Err(e) => {
                        slot.info.lock().down_refused = Some(e);
                        slot.set(CpuState::Idle);
                        continue;
                    }
                }
            }
            Some(Job::Identify) => JobResult::Identity(identify(smp, rdi)),
            Some(Job::Alloc { pages }) => JobResult::Alloc(alloc_local(&smp.mm, pages)),
            Some(Job::Count { iters, round }) => {
                smp.ready.fetch_add(1, Ordering::AcqRel);
                let mut d = Deadline::after(smp.p, JOB_SECS);
                while smp.go.load(Ordering::Acquire) != round && !d.expired() {
                    smp.p.relax();
                }
                for _ in 0..iters {
                    smp.counter.fetch_add(1, Ordering::Relaxed);
                    *smp.locked.lock() += 1;
                }
                JobResult::Counted(iters)
            }
            Some(Job::Fail(mode, hole)) => JobResult::Survived(smp.p.fail(mode, hole)),
            Some(Job::ReadProbe) => {
                JobResult::Word(super::EXCHANGE_PROBE.word().load(Ordering::SeqCst))
            }
            Some(Job::Op(op)) => {
                JobResult::Op(hypercall::call(smp.p, HypercallRequest::VcpuOp { op }))
            }
        };
        slot.mail.lock().result = Some(result);
        slot.set(CpuState::Idle);
        slot.done.store(seen, Ordering::Release);
    }
}

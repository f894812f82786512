//! Host tests of the SMP bring-up. The pure parts directly; the rest by
//! booting the whole guest on the mock hypervisor, which runs each
//! secondary vCPU on a thread of its own (`mock.rs`), so the secondaries'
//! allocations, counters and mailboxes really run concurrently.

use std::string::String;
use std::vec;
use std::vec::Vec;

use pv_abi::{AbiVersion, Error, Features, Pod, ShutdownStatus, VcpuContext};

use super::*;
use crate::cmdline::parse;
use crate::mock::{boot, MockHv};
use crate::numa::topology::tests::two_nodes;

fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

fn has(out: &str, want: &[&str]) {
    let l = lines(out);
    for w in want {
        assert!(l.contains(w), "missing {w:?} in\n{out}");
    }
}

#[test]
fn plan_says_why_not() {
    let v = AbiVersion::new(1, 2);
    assert_eq!(
        plan(Features::V1_2, v, 4, &parse("")),
        Err("vcpu-op not offered (hypervisor ABI 1.2): running on vcpu 0 only".into())
    );
    let all = Features::KNOWN;
    assert_eq!(
        plan(all, AbiVersion::CURRENT, 1, &parse("")),
        Err("one vcpu: running on vcpu 0 only".into())
    );
    assert_eq!(
        plan(all, AbiVersion::CURRENT, 6, &parse("nosmp")),
        Err("nosmp: running on vcpu 0 only (of 6 vcpus)".into())
    );
    assert_eq!(plan(all, AbiVersion::CURRENT, 2, &parse("bench")), Ok(()));
}

#[test]
fn identity_problems_name_each_source() {
    let good = Identity {
        rdi: 3,
        apic: Some(3),
        stack_cpu: 3,
        mm_cpu: 3,
        node: 1,
        mem: 1,
        vnode: Some(1),
    };
    assert!(good.problems(3).is_empty());
    // No CPUID is no disagreement.
    assert!(Identity { apic: None, ..good }.problems(3).is_empty());
    let bad = Identity {
        rdi: 1 << 32,
        apic: Some(0),
        stack_cpu: 0,
        mm_cpu: 2,
        ..good
    };
    assert_eq!(
        bad.problems(3),
        vec![
            "RDI held 0x100000000 at entry",
            "CPUID.1:EBX[31:24] (initial APIC id) is 0",
            "its stack header says vcpu 0",
            "the memory manager runs it as cpu 2",
        ]
    );
}

#[test]
fn alloc_reports() {
    let ok = AllocReport {
        cpu: 2,
        want: 1,
        allocated: 64,
        local: 64,
        ..AllocReport::default()
    };
    assert!(ok.all_local());
    assert_eq!(
        ok.to_string(),
        "cpu 2: 64 of 64 blocks on node 1 (numa_mem_id)"
    );
    let bad = AllocReport {
        local: 60,
        elsewhere: Some(3),
        failed: 1,
        free_errors: 2,
        ..ok
    };
    assert!(!bad.all_local());
    assert_eq!(
        bad.to_string(),
        "cpu 2: 60 of 64 blocks on node 1 (numa_mem_id), one on node 3, \
         1 allocations failed, 2 frees failed"
    );
}

#[test]
fn start_errors_are_lines() {
    assert_eq!(
        StartError::Refused(Error::OutOfMemory).line(2),
        std::format!("vcpu 2: VCPU_OP UP failed: {}", Error::OutOfMemory)
    );
    assert_eq!(
        StartError::NoCheckIn.line(3),
        "vcpu 3 did not check in within 20 s"
    );
    assert_eq!(
        StartError::NoStack.line(1),
        "vcpu 1: no stack (no memory reserved for it at boot): not started"
    );
}

#[test]
fn deadlines_follow_the_cycle_counter() {
    let (v, si) = two_nodes();
    let mut hv = MockHv::new(si, v);
    // A thousand times faster: one "second" is a millisecond.
    hv.clock_scale = 1000;
    let start = std::time::Instant::now();
    let mut d = Deadline::after(&hv, 5);
    assert!(!d.expired());
    while !d.expired() {
        std::thread::yield_now();
    }
    let took = start.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(5) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );
}

/// Two vnodes, four vCPUs: every secondary starts on its stack with
/// vCPU 0's page tables and GDT, checks in on its node, passes the `smp`
/// suite, and is down when the domain ends.
#[test]
fn secondaries_come_up_run_and_go_down() {
    let (v, si) = two_nodes();
    let (status, out, hv) = boot(MockHv::new(si, v));
    assert_eq!(status, ShutdownStatus::SUCCESS, "{out}");
    has(
        &out,
        &[
            "guest: smp: vcpu 1 online on vnode 0 (node 0, local memory node 0, stack on node 0)",
            "guest: smp: vcpu 2 online on vnode 1 (node 1, local memory node 1, stack on node 1)",
            "guest: smp: vcpu 3 online on vnode 1 (node 1, local memory node 1, stack on node 1)",
            "guest: smp: 4 of 4 vcpus online",
            "    ok 1 every_vcpu_online",
            "    ok 6 exchange_reaches_every_vcpu",
            "    ok 7 bad_requests_are_refused",
            "    ok 8 down_and_up_again",
            "    ok 9 all_go_down",
            "ok 5 smp",
            "guest: smp: all secondary vcpus down",
        ],
    );
    assert!(!out.contains("not ok"), "{out}");
    assert!(!out.contains("warning: vcpu"), "{out}");
    let vcpus = hv.vcpus.lock().unwrap();
    assert_eq!(vcpus.up, vec![true, false, false, false]);
    // Each once at boot, the last once more (down and up again); none of
    // the bad requests started anything.
    let started: Vec<u32> = vcpus.starts.iter().map(|s| s.0).collect();
    assert_eq!(started, vec![1, 2, 3, 3], "{out}");
    let start = hv.secondary_start().unwrap();
    let mut stacks = Vec::new();
    for (k, c) in &vcpus.starts {
        assert_eq!(c.check(), Ok(()));
        assert_eq!(c.size as usize, core::mem::size_of::<VcpuContext>());
        assert_eq!(
            (c.rip, c.cr3, c.gdt_base, c.gdt_limit),
            (start.rip, start.cr3, start.gdt_base, start.gdt_limit)
        );
        assert_ne!(c.arg, 0, "vcpu {k} had no boot block");
        assert!(c.rsp.is_multiple_of(crate::percpu::STACK_SIZE));
        stacks.push((*k, c.rsp));
    }
    // The restart ran on the same stack; each vCPU has its own.
    assert_eq!(stacks[2], stacks[3]);
    stacks.dedup();
    let mut tops: Vec<u64> = stacks.iter().map(|s| s.1).collect();
    tops.sort_unstable();
    tops.dedup();
    assert_eq!(tops.len(), 3);
    // The secondaries went down with DOWN, the restarted one twice.
    let mut downs = vcpus.downs.clone();
    downs.sort_unstable();
    assert_eq!(downs, vec![1, 2, 3, 3]);
}

/// `nosmp`: no stack is reserved, nothing is started, the suite skips.
#[test]
fn nosmp_keeps_to_vcpu_0() {
    let (v, mut si) = two_nodes();
    si.set_cmdline(b"nosmp").unwrap();
    let (status, out, hv) = boot(MockHv::new(si, v));
    assert_eq!(status, ShutdownStatus::SUCCESS, "{out}");
    has(
        &out,
        &[
            "guest: smp: nosmp: running on vcpu 0 only (of 4 vcpus)",
            "    ok 1 every_vcpu_online # SKIP nosmp: running on vcpu 0 only (of 4 vcpus)",
            "ok 5 smp # SKIP",
            // Nothing reserved beyond the image, boot data and heap.
            "Built 2 zonelists, mobility grouping on.  Total pages: 259455",
        ],
    );
    assert!(!out.contains("all secondary vcpus down"), "{out}");
    assert!(hv.vcpus.lock().unwrap().starts.is_empty());
}

/// A hypervisor without `VCPU_OP` (ABI 1.2): the guest says so and runs on
/// vCPU 0, and so with one vCPU.
#[test]
fn without_vcpu_op_or_with_one_vcpu() {
    let (v, si) = two_nodes();
    let mut hv = MockHv::new(si, v);
    hv.version = AbiVersion::new(1, 2);
    hv.features = Features::V1_2;
    hv.si.version = hv.version;
    let page = hv.si;
    hv.set_page(page.as_bytes());
    let (status, out, hv) = boot(hv);
    assert_eq!(status, ShutdownStatus::SUCCESS, "{out}");
    has(
        &out,
        &[
            "guest: smp: vcpu-op not offered (hypervisor ABI 1.2): running on vcpu 0 only",
            "ok 5 smp # SKIP",
        ],
    );
    assert!(hv.vcpus.lock().unwrap().starts.is_empty());

    let (mut v, mut si) = two_nodes();
    si.nr_vcpus = 1;
    v.nr_vcpus = 1;
    v.vcpu_to_vnode = vec![0];
    let (status, out, _) = boot(MockHv::new(si, v));
    assert_eq!(status, ShutdownStatus::SUCCESS, "{out}");
    has(
        &out,
        &[
            "guest: smp: one vcpu: running on vcpu 0 only",
            "    ok 3 allocations_are_node_local # SKIP one vcpu: running on vcpu 0 only",
        ],
    );
}

/// UP refused: each vCPU gets a line, the boot goes on, the suite fails,
/// and nothing is left up.
#[test]
fn refused_starts_are_reported() {
    let (v, si) = two_nodes();
    let mut hv = MockHv::new(si, v);
    hv.up_error = Some(Error::OutOfMemory);
    let (status, out, hv) = boot(hv);
    assert_eq!(status, ShutdownStatus::TESTS_FAILED, "{out}");
    let refused = std::format!(
        "guest: smp: vcpu 1: VCPU_OP UP failed: {}",
        Error::OutOfMemory
    );
    has(
        &out,
        &[
            refused.as_str(),
            "guest: smp: 1 of 4 vcpus online",
            "guest: FAILED: smp.every_vcpu_online",
            "guest: smp: all secondary vcpus down",
        ],
    );
    assert!(
        out.contains("guest: smp: vcpu 3: VCPU_OP UP failed"),
        "{out}"
    );
    assert!(hv.vcpus.lock().unwrap().starts.is_empty());
}

/// A vCPU the hypervisor accepts but never runs: vCPU 0 gives up after
/// the timeout, starts no other (each would wait as long), the run fails
/// and the vCPU is reported still up at the end.
#[test]
fn a_vcpu_that_never_checks_in() {
    let (v, si) = two_nodes();
    let mut hv = MockHv::new(si, v);
    hv.run_secondaries = false;
    // 20 "seconds" pass in 20 ms.
    hv.clock_scale = 1000;
    let (status, out, hv) = boot(hv);
    assert_eq!(status, ShutdownStatus::TESTS_FAILED, "{out}");
    has(
        &out,
        &[
            "guest: smp: vcpu 1 did not check in within 20 s",
            "guest: smp: vcpu 2 not started: vcpu 1 never checked in",
            "guest: smp: vcpu 3 not started: vcpu 1 never checked in",
            "guest: smp: 1 of 4 vcpus online",
            "guest: FAILED: smp.every_vcpu_online",
            "guest: smp: vcpu 1 still up: it is failed but the hypervisor says it is up",
        ],
    );
    let lines: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("guest: smp: vcpu") && l.contains("still up"))
        .map(String::from)
        .collect();
    // vCPU 3 was started by the suite (down and up again) and never ran
    // either.
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(hv.vcpus.lock().unwrap().up, vec![true, true, false, true]);
}

//! The whole boot sequence on the host, against the model hypervisor in
//! `mock.rs`: transcripts, statuses, fallbacks and failure paths.

use std::string::String;
use std::vec;
use std::vec::Vec;

use pv_abi::{AbiVersion, Features, Gpa, Maddr, MemRange, ShutdownStatus, StartInfo, VmemRange};

use crate::mock::{boot, Bugs, MockHv};
use crate::numa::topology::tests::two_nodes;
use crate::numa::topology::Vnuma;
use crate::platform::FailMode;

fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

fn failures(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("guest: FAILED: "))
        .map(String::from)
        .collect()
}

#[test]
fn two_nodes_boot_and_pass() {
    let (v, si) = two_nodes();
    let (status, out, hv) = boot(MockHv::new(si, v));
    std::println!("{out}");
    assert_eq!(status, ShutdownStatus::SUCCESS, "{out}");
    let l = lines(&out);
    let v = AbiVersion::CURRENT;
    let abi_line = std::format!(
        "guest: ABI {v} (guest {v}, using {v}), features {}",
        Features::KNOWN
    );
    #[cfg(not(feature = "abi-1-0"))]
    let abi = [
        abi_line.as_str(),
        "guest: vnode 0: 512 MiB on pnode 0, 512 MiB free there",
        "guest: vnode 1: 512 MiB on pnode 1, 512 MiB free there",
        "    ok 11 vnode_mem",
    ];
    #[cfg(feature = "abi-1-0")]
    let abi = [abi_line.as_str()];
    for want in abi {
        assert!(l.contains(&want), "missing {want:?} in\n{out}");
    }
    assert_eq!(out.contains("vnode-mem"), cfg!(not(feature = "abi-1-0")));
    // A guest of ABI 1.2 or older has no secondary vCPUs.
    let smp = if cfg!(feature = "abi-1-2") {
        "ok 5 smp # SKIP"
    } else {
        "ok 5 smp"
    };
    for want in [
        "guest: get_vnuma: 2 vnodes, 4 vCPUs, 2 memory ranges, distances symmetric",
        "guest: get_vnuma and the ACPI tables agree",
        "guest: NUMA: 2 nodes (from get_vnuma)",
        "guest: node 0 (vnode 0): cpus 0-1, memory [0x0..0x20000000)",
        "guest: node 1 (vnode 1): cpus 2-3, memory [0x100000000..0x120000000)",
        "guest: distances:",
        "guest:   node   0   1",
        "guest:     0:  10  20",
        "guest:     1:  20  10",
        "KTAP version 1",
        "1..24",
        "    # Subtest: boot",
        "ok 1 boot",
        "ok 2 vnuma",
        "ok 3 acpi",
        "ok 4 hypercall_abi",
        smp,
        "ok 6 memory",
        "ok 7 zones",
        "ok 8 zonelists",
        "ok 9 buddy",
        "ok 10 memoryless",
        "ok 11 thisnode",
        "ok 12 policy_default",
        "ok 13 policy_preferred",
        "ok 14 policy_bind",
        "ok 15 policy_interleave",
        "ok 16 policy_preferred_many",
        "ok 17 policy_weighted_interleave",
        "ok 18 policy_flags",
        "ok 19 policy_errors",
        "ok 20 slab",
        "ok 21 fake_numa # SKIP",
        "ok 22 accounting",
        "Fallback order for Node 0: 0 1 ",
        "Fallback order for Node 1: 1 0 ",
        "guest: cpu 2: node 1, local memory node 1",
        "guest: shutting down: 0 (success)",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{out}");
    }
    assert!(!out.contains("not ok"), "{out}");
    // Every console write was one whole line.
    for w in crate::console::capture::writes() {
        assert_eq!(w.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(w.last(), Some(&b'\n'));
    }
    // The heap avoids the image and boot data: vnode 1's range is largest.
    assert_eq!(
        *hv.heap.lock().unwrap(),
        Some((Gpa(0x1_0000_0000), 8 << 20))
    );
    assert!(hv.shutdowns.lock().unwrap().is_empty());
}

/// Four vnodes: vnode 1 memoryless, vnode 2 CPU-less, vCPU 0 on vnode 3 so
/// Linux numbering differs from vnode ids; asymmetric distances.
fn four_nodes() -> (Vnuma, StartInfo) {
    let mb = 1u64 << 20;
    let v = Vnuma {
        nr_vnodes: 4,
        nr_vcpus: 5,
        vdistance: vec![
            10, 20, 30, 40, //
            21, 10, 20, 30, //
            31, 21, 10, 20, //
            41, 31, 21, 10,
        ],
        vcpu_to_vnode: vec![3, 0, 0, 1, 1],
        vmemranges: vec![
            VmemRange::new(Gpa(0), Gpa(256 * mb), 0),
            VmemRange::new(Gpa(256 * mb), Gpa(384 * mb), 2),
            VmemRange::new(Gpa(0x1_0000_0000), Gpa(0x1_0000_0000 + 64 * mb), 3),
        ],
    };
    let mut si = StartInfo::new();
    si.nr_vcpus = 5;
    si.nr_vnodes = 4;
    si.image_start = Gpa(0x20_0000);
    si.image_end = Gpa(0x40_0000);
    si.boot_data_start = Gpa(0x40_0000);
    si.boot_data_end = Gpa(0x48_0000);
    for r in [
        MemRange::new(Gpa(0), 256 * mb, 0, Maddr(0x1000_0000)),
        MemRange::new(Gpa(256 * mb), 64 * mb, 2, Maddr(0x8000_0000)),
        MemRange::new(Gpa(320 * mb), 64 * mb, 2, Maddr(0x9000_0000)),
        MemRange::new(Gpa(0x1_0000_0000), 64 * mb, 3, Maddr(0x2_0000_0000)),
    ] {
        si.push_mem_range(r).unwrap();
    }
    (v, si)
}

#[test]
fn memoryless_and_cpuless_nodes() {
    let (v, si) = four_nodes();
    let (status, out, _) = boot(MockHv::new(si, v));
    std::println!("{out}");
    assert_eq!(status, ShutdownStatus::SUCCESS, "{out}");
    let l = lines(&out);
    // ABI 1.3: 16 pages reserved for each secondary vCPU's stack.
    let built = if cfg!(feature = "abi-1-2") {
        "Built 4 zonelists, mobility grouping on.  Total pages: 111999"
    } else {
        "Built 4 zonelists, mobility grouping on.  Total pages: 111935"
    };
    for want in [
        "guest: get_vnuma: 4 vnodes, 5 vCPUs, 3 memory ranges, distances asymmetric",
        "guest: node 0 (vnode 3): cpus 0, memory [0x100000000..0x104000000)",
        "guest: node 1 (vnode 0): cpus 1-2, memory [0x0..0x10000000)",
        "guest: node 2 (vnode 1): cpus 3-4, memory none",
        "guest: node 3 (vnode 2): cpus none, memory [0x10000000..0x18000000)",
        "guest:   node   0   1   2   3",
        "guest:     0:  10  41  31  21",
        "guest:     1:  40  10  20  30",
        // Zones by machine address: vnode 3 is all above 4 GiB.
        "guest: mm: node 0 zone Normal: present 16384, managed 16384, reserved 0; \
         pcp batch 3, high 18; [0x100000000..0x104000000) machine 0x200000000",
        "guest: mm: node 2: no memory",
        "Fallback order for Node 0: 0 3 1 ",
        "Fallback order for Node 1: 1 3 0 ",
        "Fallback order for Node 2: 2 3 1 0 ",
        "Fallback order for Node 3: 3 0 1 ",
        built,
        "guest: mm: node 2 zonelist: 3:DMA32 1:DMA32 0:Normal; this node: (empty)",
        "guest: cpu 3: node 2, local memory node 3",
        "ok 22 accounting",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{out}");
    }
    // The memoryless node's vCPUs run on memory of node 3, their nearest,
    // stacks included; vCPU 1 and 2 on node 1.
    #[cfg(not(feature = "abi-1-2"))]
    for want in [
        "guest: smp: vcpu 1 online on vnode 0 (node 1, local memory node 1, stack on node 1)",
        "guest: smp: vcpu 3 online on vnode 1 (node 2, local memory node 3, stack on node 3)",
        "guest: smp: vcpu 4 online on vnode 1 (node 2, local memory node 3, stack on node 3)",
        "guest: smp: 5 of 5 vcpus online",
        "ok 5 smp",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{out}");
    }
}

/// `numa=fake=4` on two vnodes of 512 MiB: Linux's four 256 MiB nodes,
/// dealt over the vnodes; every suite passes on them, `fake_numa` included.
#[test]
fn numa_fake_four_on_two_nodes() {
    let (v, mut si) = two_nodes();
    si.set_cmdline(b"numa=fake=4").unwrap();
    let (status, out, _) = boot(MockHv::new(si, v));
    std::println!("{out}");
    assert_eq!(status, ShutdownStatus::SUCCESS, "{out}");
    let l = lines(&out);
    for want in [
        "guest: node 0 (vnode 0): cpus 0-1, memory [0x0..0x20000000)",
        "guest: numa=fake=4: 1024 MiB in nodes of 256 MiB (0 of them 32 MiB more), dealt over 2 nodes with memory",
        "Faking node 0 at [mem 0x0000000000000000-0x000000000fffffff] (256MB)",
        "Faking node 1 at [mem 0x0000000100000000-0x000000010fffffff] (256MB)",
        "Faking node 2 at [mem 0x0000000010000000-0x000000001fffffff] (256MB)",
        "Faking node 3 at [mem 0x0000000110000000-0x000000011fffffff] (256MB)",
        "guest: NUMA: 4 nodes (from numa=fake)",
        "guest: numa=fake: node 2 (vnode 0): cpus none, memory [0x10000000..0x20000000)",
        "guest: numa=fake:     0:  10  20  10  20",
        "guest: mm: node 2 zone DMA32: present 65536, managed 65536, reserved 0; \
         pcp batch 15, high 90; [0x10000000..0x20000000) machine 0x40000000",
        "Fallback order for Node 0: 0 2 1 3 ",
        "Fallback order for Node 1: 1 3 2 0 ",
        "guest: cpu 2: node 1, local memory node 1",
        "    ok 1 emulated_nodes",
        "    ok 2 memory_in_32_mib_steps",
        "    ok 3 distances_of_backing_nodes",
        "    ok 4 cpus_on_first_fake_node",
        "    ok 5 fallback_in_distance_order",
        "ok 21 fake_numa",
        "ok 22 accounting",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{out}");
    }
    assert!(!out.contains("not ok"), "{out}");
}

/// `numa=fake` where Linux's wrap-around makes a fake node span two vnodes
/// (four_nodes, 3 fake nodes: fake node 0 gets vnode 3's 64 MiB and then
/// 128 MiB of vnode 0), the memoryless node's CPUs go to fake node 0;
/// and a count too large for the memory turns emulation off.
#[test]
fn numa_fake_wraps_and_refuses() {
    let (v, mut si) = four_nodes();
    si.set_cmdline(b"numa=fake=3").unwrap();
    let (status, out, _) = boot(MockHv::new(si, v));
    assert_eq!(status, ShutdownStatus::SUCCESS, "{out}");
    let l = lines(&out);
    for want in [
        "Faking node 0 at [mem 0x0000000100000000-0x0000000103ffffff] (64MB)",
        "Faking node 0 at [mem 0x0000000008000000-0x000000000fffffff] (128MB)",
        "guest: numa=fake: node 0 (vnode 3): cpus 0,3-4, memory [0x8000000..0x10000000) [0x100000000..0x104000000)",
        "ok 21 fake_numa",
        "ok 22 accounting",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{out}");
    }
    assert!(!out.contains("not ok"), "{out}");
    let (v, mut si) = four_nodes();
    si.set_cmdline(b"numa=fake=64").unwrap();
    let (status, out, _) = boot(MockHv::new(si, v));
    assert_eq!(status, ShutdownStatus::SUCCESS, "{out}");
    let l = lines(&out);
    for want in [
        "guest: numa=fake=64: 448 MiB for 64 nodes: Not enough memory for each node.  NUMA emulation disabled.",
        "    ok 1 emulated_nodes # SKIP numa=fake=64: 448 MiB is too little, emulation is off as in Linux",
        "ok 21 fake_numa # SKIP",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{out}");
    }
}

/// Machine memory all above 4 GiB (as on an Altix) and zone-ordered
/// zonelists: only Normal zones, DMA32 allocations fail, every suite
/// passes, the 4.13-style summary line.
#[test]
fn all_memory_high_in_zone_order() {
    let (v, mut si) = two_nodes();
    let n = si.mem_ranges().len();
    for r in &mut si.mem_ranges[..n] {
        r.maddr = Maddr(r.maddr.0 + (1 << 32));
    }
    si.set_cmdline(b"numa_zonelist_order=zone").unwrap();
    let (status, out, _) = boot(MockHv::new(si, v));
    assert_eq!(status, ShutdownStatus::SUCCESS, "{out}");
    let l = lines(&out);
    let built = if cfg!(feature = "abi-1-2") {
        "Built 2 zonelists in Zone order, mobility grouping on.  Total pages: 259455"
    } else {
        "Built 2 zonelists in Zone order, mobility grouping on.  Total pages: 259407"
    };
    for want in [
        "guest: mm: zonelist order: Zone (numa_zonelist_order=zone)",
        "guest: mm: node 1 zonelist: 1:Normal 0:Normal; this node: 1:Normal",
        built,
        "    ok 4 all_high_memory_no_low_zones",
        "ok 22 accounting",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{out}");
    }
    assert!(!out.contains("zone DMA32:"), "{out}");
}

#[test]
fn abi_major_mismatch_is_refused() {
    let (v, si) = two_nodes();
    let mut hv = MockHv::new(si, v);
    hv.version = AbiVersion::new(2, 3);
    let (status, out, _) = boot(hv);
    assert_eq!(status, ShutdownStatus::ABI_MISMATCH);
    assert!(
        out.contains(&std::format!(
            "guest: ABI mismatch: the hypervisor speaks ABI 2.3, this guest speaks ABI {}; \
             different major versions cannot work together",
            AbiVersion::CURRENT
        )),
        "{out}"
    );
    assert!(!out.contains("KTAP"));
}

#[test]
fn newer_minor_is_accepted() {
    let (v, si) = two_nodes();
    let mut hv = MockHv::new(si, v);
    hv.version = AbiVersion::new(1, 4);
    hv.si.version = AbiVersion::new(1, 4);
    let page = hv.si;
    hv.set_page(pv_abi::Pod::as_bytes(&page));
    let (status, out, _) = boot(hv);
    let v = AbiVersion::CURRENT;
    assert!(
        out.contains(&std::format!("guest: ABI 1.4 (guest {v}, using {v})")),
        "{out}"
    );
    assert_eq!(status, ShutdownStatus::SUCCESS, "{out}");
}

/// A 1.1 guest on a 1.0 hypervisor: it uses 1.0, sees no VNODE_MEM, takes
/// its fallback (sizes from get_vnuma, free memory unknown), and every
/// suite passes; asking for vnode_mem anyway gets 1.0's 48 bytes handled
/// and the buffer untouched.
#[cfg(not(feature = "abi-1-0"))]
#[test]
fn on_a_1_0_hypervisor_the_fallback_is_taken() {
    let (v, si) = two_nodes();
    let (status, out, _) = boot(MockHv::new(si, v).speaking_v1_0());
    let l = lines(&out);
    let abi_line = std::format!(
        "guest: ABI 1.0 (guest {}, using 1.0), features vnuma,physinfo,domain-node-pages,virtual-acpi",
        AbiVersion::CURRENT
    );
    let missing = std::format!(
        "guest: features not offered: {}: using fallback paths",
        Features::KNOWN.difference(Features::V1_0)
    );
    for want in [
        abi_line.as_str(),
        missing.as_str(),
        "guest: vnode-mem not offered (hypervisor ABI 1.0): fallback: sizes from get_vnuma, free memory unknown",
        "guest: vnode 0: 512 MiB, free memory unknown",
        "guest: vnode 1: 512 MiB, free memory unknown",
        "    ok 11 vnode_mem",
        "    ok 5 longer_structure_accepted",
        "    ok 4 features_present",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{out}");
    }
    assert!(!out.contains("not ok"), "{out}");
    assert_eq!(status, ShutdownStatus::SUCCESS, "{out}");
    // ABI 1.3's VCPU_OP is missing too: vCPU 0 alone.
    #[cfg(not(feature = "abi-1-2"))]
    assert!(
        l.contains(&"guest: smp: vcpu-op not offered (hypervisor ABI 1.0): running on vcpu 0 only"),
        "{out}"
    );
}

#[test]
fn bad_start_info_is_refused() {
    let (v, si) = two_nodes();
    let mut hv = MockHv::new(si, v);
    let mut page = hv.si;
    page.nr_vcpus = 0;
    hv.set_page(pv_abi::Pod::as_bytes(&page));
    let (status, out, _) = boot(hv);
    assert_eq!(status, ShutdownStatus::BAD_START_INFO);
    assert!(
        out.contains(
            "guest: bad start-info page at 0x400000: start-info nr_vcpus = 0 out of range"
        ),
        "{out}"
    );

    let (v, si) = two_nodes();
    let mut hv = MockHv::new(si, v);
    hv.start_gpa = 0x40_0010;
    let (status, out, _) = boot(hv);
    assert_eq!(status, ShutdownStatus::BAD_START_INFO);
    assert!(out.contains("is null, not page-aligned"), "{out}");
}

#[test]
fn without_vnuma_the_srat_is_used() {
    let (v, si) = two_nodes();
    let mut hv = MockHv::new(si, v);
    hv.features = Features::KNOWN.difference(Features::VNUMA);
    let (status, out, _) = boot(hv);
    std::println!("{out}");
    assert!(out.contains("guest: no VNUMA feature: the SRAT is the only topology source"));
    assert!(
        out.contains("guest: NUMA: 2 nodes (from SRAT+SLIT)"),
        "{out}"
    );
    assert!(out.contains("guest: node 1 (vnode 1): cpus 2-3, memory [0x100000000..0x120000000)"));
    assert!(out.contains("    ok 1 probe_reports_counts # SKIP no VNUMA feature"));
    // The SRAT is still checked against start-info.
    assert!(
        out.contains("    ok 4 srat_memory_matches_vnuma\n"),
        "{out}"
    );
    // Only the feature check fails: the fallback itself works.
    assert_eq!(failures(&out), vec!["boot.features_present"]);
    assert_eq!(status, ShutdownStatus::TESTS_FAILED);
}

#[test]
fn without_acpi_the_hypercall_is_used() {
    let (v, si) = two_nodes();
    let mut hv = MockHv::new(si, v);
    hv.features = Features::VNUMA | Features::PHYSINFO | Features::DOMAIN_NODE_PAGES;
    let (status, out, _) = boot(hv);
    assert!(out.contains("guest: start-info names an RSDP but VIRTUAL_ACPI is not offered"));
    assert!(out.contains("ok 3 acpi # SKIP"), "{out}");
    assert!(out.contains("guest: NUMA: 2 nodes (from get_vnuma)"));
    assert_eq!(failures(&out), vec!["boot.features_present"]);
    assert_eq!(status, ShutdownStatus::TESTS_FAILED);
}

#[test]
fn tables_that_disagree_are_reported() {
    let (v, si) = two_nodes();
    let mut hv = MockHv::new(si, v.clone());
    let mut other = v;
    other.vdistance = vec![10, 21, 20, 10];
    other.vcpu_to_vnode = vec![0, 0, 0, 1];
    hv.set_tables(&other);
    let (status, out, _) = boot(hv);
    std::println!("{out}");
    assert_eq!(status, ShutdownStatus::TOPOLOGY_MISMATCH);
    for want in [
        "guest: topology MISMATCH: vCPU 2: get_vnuma says vnode 1, SRAT says proximity domain 0",
        "guest: topology MISMATCH: distance(0,1): get_vnuma 20, SLIT 21",
        "    # distance(0,1): get_vnuma 20, SLIT 21",
        "    not ok 6 slit_matches_vnuma",
        "not ok 3 acpi",
    ] {
        assert!(lines(&out).contains(&want), "missing {want:?} in\n{out}");
    }
    assert_eq!(
        failures(&out),
        vec!["acpi.srat_cpus_match_vnuma", "acpi.slit_matches_vnuma"]
    );
}

#[test]
fn fail_hypercall_runs_the_garbage_suite() {
    let (v, mut si) = two_nodes();
    si.set_cmdline(b"fail=hypercall").unwrap();
    let (status, out, hv) = boot(MockHv::new(si, v));
    assert!(out.contains("guest: fail=hypercall: garbage hypercalls follow"));
    assert!(out.contains("1..25\n"), "{out}");
    assert!(out.contains("    ok 1 decoder_agreement\n"), "{out}");
    assert!(out.contains("ok 25 hypercall_garbage\n"), "{out}");
    assert_eq!(status, ShutdownStatus::SUCCESS, "{out}");
    assert!(hv.fails.lock().unwrap().is_empty());
    // The guest's own "still here" line went through the hypercall.
    let console = String::from_utf8_lossy(&hv.console.lock().unwrap()).into_owned();
    assert!(console.contains("guest: still here after the garbage hypercalls\n"));
}

#[test]
fn fail_npf_points_into_a_hole() {
    let (v, mut si) = two_nodes();
    si.set_cmdline(b"fail=npf console=hv").unwrap();
    let (status, out, hv) = boot(MockHv::new(si, v));
    assert!(out.contains("guest: warning: unknown option 'console=hv' ignored"));
    assert!(out.contains(
        "guest: fail=npf: touching guest-physical 0x400000000000 (outside every memory range)"
    ));
    assert_eq!(
        *hv.fails.lock().unwrap(),
        vec![(FailMode::Npf, Gpa(1 << 46))]
    );
    // The mock does not fault: the guest says so and fails.
    assert!(out.contains("guest: fail=npf: still running: the mock hypervisor does not fault"));
    assert_eq!(status, ShutdownStatus::TESTS_FAILED);
}

#[test]
fn a_hypervisor_bug_fails_the_abi_suite() {
    let (v, si) = two_nodes();
    let mut hv = MockHv::new(si, v);
    hv.bugs = Bugs {
        unknown_is_einval: true,
        writes_when_too_small: true,
    };
    let (status, out, _) = boot(hv);
    assert_eq!(status, ShutdownStatus::TESTS_FAILED);
    assert_eq!(
        failures(&out),
        vec![
            "vnuma.short_by_one_is_too_small",
            "hypercall_abi.unknown_hypercall"
        ],
        "{out}"
    );
    let first_unknown = std::format!("unknown hypercall {:#x}", pv_abi::Hypercall::ALL.len());
    assert!(out.contains(&first_unknown), "{out}");
    assert!(
        out.contains("    # nr_vnodes one short: a buffer was written"),
        "{out}"
    );
}

#[test]
fn ktest_selects_suites() {
    let (v, mut si) = two_nodes();
    si.set_cmdline(b"ktest=memory,nosuch").unwrap();
    let (status, out, _) = boot(MockHv::new(si, v));
    assert!(out.contains("guest: warning: ktest=nosuch: no such suite"));
    assert!(out.contains("KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: memory\n"));
    assert_eq!(status, ShutdownStatus::SUCCESS);
}

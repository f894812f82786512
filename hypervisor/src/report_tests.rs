//! Tests of the xl-style views: every expected line was checked against
//! the output of xl's own printf formats and `print_bitmap`.

use super::*;
use alloc::string::ToString;
use alloc::vec;

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn cpus(ids: &[u32]) -> Vec<CpuId> {
    ids.iter().map(|&i| CpuId(i)).collect()
}

fn cpu_list(ids: &[u32], nr_cpus: usize) -> String {
    CpuList {
        cpus: &cpus(ids),
        nr_cpus,
    }
    .to_string()
}

fn row(name: &str, id: u32, mem_mib: u64, vcpus: u32, state: DomainState, ns: u64) -> DomainRow {
    DomainRow {
        name: name.to_string(),
        id,
        mem_mib,
        vcpus,
        state,
        cpu_time_ns: ns,
    }
}

fn running() -> DomainState {
    DomainState {
        running: true,
        ..DomainState::default()
    }
}

/// The row's time column, as `xl list` prints it.
fn list_time(ns: u64) -> String {
    let out = XlList(&[row("d", 1, 0, 1, running(), ns)]).to_string();
    let line = out.lines().nth(1).unwrap_or_default();
    line.get(71..).unwrap_or_default().to_string()
}

#[test]
fn xl_list_matches_xl() {
    let rows = [
        row("mirror", 1, 256, 2, running(), 1_234 * MS),
        row(
            "auto-b",
            2,
            1024,
            4,
            DomainState {
                blocked: true,
                ..DomainState::default()
            },
            0,
        ),
        row(
            "faulty",
            3,
            0,
            1,
            DomainState {
                shutdown: Some(ShutdownReason::Crash),
                dying: true,
                ..DomainState::default()
            },
            12_345_678_900_000,
        ),
        row(
            "a-domain-name-that-is-longer-than-forty-chars",
            12,
            3,
            1,
            DomainState {
                paused: true,
                shutdown: Some(ShutdownReason::Poweroff),
                ..DomainState::default()
            },
            0,
        ),
    ];
    assert_eq!(
        XlList(&rows).to_string(),
        "Name                                        ID   Mem VCPUs\tState\tTime(s)\n\
         mirror                                       1   256     2     r-----       1.2\n\
         auto-b                                       2  1024     4     -b----       0.0\n\
         faulty                                       3     0     1     ---scd   12345.7\n\
         a-domain-name-that-is-longer-than-forty-chars    12     3     1     --ps--       0.0\n"
    );
}

#[test]
fn xl_list_without_domains_is_the_header() {
    assert_eq!(
        XlList(&[]).to_string(),
        "Name                                        ID   Mem VCPUs\tState\tTime(s)\n"
    );
}

#[test]
fn domain_state_letters() {
    let all = DomainState {
        running: true,
        blocked: true,
        paused: true,
        shutdown: Some(ShutdownReason::SoftReset),
        dying: true,
    };
    assert_eq!(all.to_string(), "rbpsSd");
    assert_eq!(DomainState::default().to_string(), "------");
    let reasons = [
        (ShutdownReason::Poweroff, "---s--"),
        (ShutdownReason::Reboot, "---sr-"),
        (ShutdownReason::Suspend, "---ss-"),
        (ShutdownReason::Crash, "---sc-"),
        (ShutdownReason::Watchdog, "---sw-"),
        (ShutdownReason::SoftReset, "---sS-"),
    ];
    for (reason, letters) in reasons {
        let state = DomainState {
            shutdown: Some(reason),
            ..DomainState::default()
        };
        assert_eq!(state.to_string(), letters, "{reason:?}");
    }
}

#[test]
fn times_round_to_the_nearest_tenth() {
    assert_eq!(list_time(0), "     0.0");
    assert_eq!(list_time(49_999_999), "     0.0");
    assert_eq!(list_time(50 * MS), "     0.1", "a half-tenth goes up");
    assert_eq!(list_time(150 * MS), "     0.2", "a half-tenth goes up");
    assert_eq!(list_time(150_000_001), "     0.2");
    assert_eq!(list_time(1_949_999_999), "     1.9");
    assert_eq!(list_time(1_950_000_001), "     2.0");
    assert_eq!(list_time(99_999_999_999), "   100.0");
    assert_eq!(list_time(9_999_949_999_999), "  9999.9");
    assert_eq!(list_time(9_999_950 * MS), " 10000.0");
    // Wider than the column: printed whole, as %8.1f does.
    assert_eq!(list_time(123_456_789 * S), "123456789.0");
    assert_eq!(list_time(u64::MAX), "18446744073.7");
}

#[test]
fn xl_vcpu_list_matches_xl() {
    let rows = [
        VcpuRow {
            domain: "mirror".to_string(),
            domid: 1,
            vcpu: 0,
            state: VcpuState::Running(CpuId(2)),
            time_ns: 1_234 * MS,
            affinity: cpus(&[6, 0, 1, 2, 3]),
        },
        VcpuRow {
            domain: "mirror".to_string(),
            domid: 1,
            vcpu: 1,
            state: VcpuState::Offline,
            time_ns: 0,
            affinity: cpus(&[0, 1, 2, 3, 4, 5, 6, 7]),
        },
        VcpuRow {
            domain: "auto-b".to_string(),
            domid: 2,
            vcpu: 0,
            state: VcpuState::Blocked(CpuId(5)),
            time_ns: 987_654_321,
            affinity: cpus(&[5]),
        },
        VcpuRow {
            domain: "auto-b".to_string(),
            domid: 2,
            vcpu: 10,
            state: VcpuState::Runnable(CpuId(13)),
            time_ns: 99_960 * MS,
            affinity: cpus(&[4, 5, 6, 7]),
        },
    ];
    let list = XlVcpuList {
        nr_cpus: 8,
        rows: &rows,
    };
    assert_eq!(
        list.to_string(),
        "Name                                ID  VCPU   CPU State   Time(s) Affinity\n\
         mirror                               1     0    2   r--       1.2  0-3,6\n\
         mirror                               1     1    -   --p       0.0  all\n\
         auto-b                               2     0    5   -b-       1.0  5\n\
         auto-b                               2    10   13   ---     100.0  4-7\n"
    );
}

#[test]
fn xl_vcpu_list_long_names_push_the_row() {
    let rows = [VcpuRow {
        domain: "a-domain-name-longer-than-32-chars".to_string(),
        domid: 7,
        vcpu: 0,
        state: VcpuState::Running(CpuId(0)),
        time_ns: 0,
        affinity: cpus(&[0]),
    }];
    let out = XlVcpuList {
        nr_cpus: 1,
        rows: &rows,
    }
    .to_string();
    assert_eq!(
        out.lines().nth(1),
        Some("a-domain-name-longer-than-32-chars     7     0    0   r--       0.0  all")
    );
}

#[test]
fn cpu_lists_read_as_xl_prints_bitmaps() {
    assert_eq!(cpu_list(&[0, 1, 2, 3, 4, 5, 6, 7], 8), "all");
    assert_eq!(cpu_list(&[7, 6, 5, 4, 3, 2, 1, 0, 0], 8), "all");
    assert_eq!(cpu_list(&[0, 1, 2, 3, 6], 8), "0-3,6");
    assert_eq!(cpu_list(&[5], 8), "5");
    assert_eq!(cpu_list(&[0], 8), "0");
    assert_eq!(cpu_list(&[7], 8), "7");
    assert_eq!(cpu_list(&[], 8), "none");
    assert_eq!(cpu_list(&[1, 2, 3, 4, 5, 6, 7], 8), "1-7");
    assert_eq!(cpu_list(&[0, 2, 4, 5, 7], 8), "0,2,4-5,7");
    // Only the machine's CPUs are read.
    assert_eq!(cpu_list(&[0, 1, 2, 3, 9], 8), "0-3");
    assert_eq!(cpu_list(&[0, 1, 2, 3, 4, 5, 6, 7, 8], 8), "all");
    assert_eq!(cpu_list(&[0], 1), "all");
    assert_eq!(cpu_list(&[0, 1], 0), "none");
}

#[test]
fn numa_memory_matches_debug_key_u() {
    let domains = [
        DomainPages {
            domid: 1,
            pages: vec![65_536, 0, 0, 0],
        },
        DomainPages {
            domid: 4,
            pages: vec![0, 32_768, 16_384],
        },
    ];
    assert_eq!(
        NumaMemory {
            nr_nodes: 4,
            domains: &domains,
        }
        .to_string(),
        "Memory location of each domain:\n\
         Domain 1 (total: 65536):\n    \
         Node 0: 65536\n    \
         Node 1: 0\n    \
         Node 2: 0\n    \
         Node 3: 0\n\
         Domain 4 (total: 49152):\n    \
         Node 0: 0\n    \
         Node 1: 32768\n    \
         Node 2: 16384\n    \
         Node 3: 0\n"
    );
}

#[test]
fn numa_memory_counts_pages_off_the_node_list_in_the_total() {
    let domains = [DomainPages {
        domid: 2,
        pages: vec![10, 20, 30],
    }];
    let out = NumaMemory {
        nr_nodes: 2,
        domains: &domains,
    }
    .to_string();
    assert_eq!(
        out,
        "Memory location of each domain:\nDomain 2 (total: 60):\n    Node 0: 10\n    Node 1: 20\n"
    );
    let none = NumaMemory {
        nr_nodes: 2,
        domains: &[],
    };
    assert_eq!(none.to_string(), "Memory location of each domain:\n");
}

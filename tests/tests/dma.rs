//! DMA without an IOMMU, end to end (issue 5): QEMU's `edu` device
//! assigned to a domain, the domain's bounce pool placed through the
//! hypervisor's DMA exchange, and the guest's `dma` and `edu` KTAP suites
//! moving data through the DMA API, on the machines the issue names:
//!
//! - the default machine with a `high-only` domain whose machine memory is
//!   above the edu's 28-bit mask: every transfer bounced and intact;
//! - a 6 GiB machine where the domain's node has no memory below 4 GiB and
//!   the edu has a 32-bit mask: the pool comes from the other node, said so
//!   by both sides, every transfer bounced;
//! - a domain the device reaches entirely: nothing bounced;
//! - `swiotlb=force` with a one-segment pool: everything bounced, the full
//!   pool refused cleanly;
//! - `dma=direct`: the DMA layer refuses what the device cannot reach, and
//!   the device, programmed with the address anyway, writes where the
//!   buffer is not (into another page the test owns);
//! - an ABI 1.0 hypervisor (no DMA exchange): no pool, unreachable
//!   mappings refused, every suite still passing;
//! - the mirror domain of `cargo xtask run --topology high-mem-edu`.

use pv_abi::exit::ExitCode;
use tests::abi::abi_images;
use tests::context;
use tests::ktap::{self, Ktap};
use tests::{
    boot_domains, domain_config, domain_lines, domain_report, guest_image, run_kernel, DomainReport,
};
use xtask::machine::{preset, MachineSpec};
use xtask::qemu::{Outcome, RunResult};

fn edu_machine() -> MachineSpec {
    preset("edu").expect("edu preset")
}

/// Domain 1 passed every suite (the `dma` and `edu` ones included) and
/// gave every page back; returns its KTAP and its lines.
fn passed(run: &RunResult) -> (Ktap, Vec<String>) {
    assert!(run.outcome.success(), "{}", context(run));
    assert_eq!(
        domain_report(&run.console, 1),
        Some(DomainReport::Shutdown { status: 0 }),
        "{}",
        context(run)
    );
    let lines = domain_lines(&run.console, 1);
    let k = ktap::parse(&lines);
    if let Err(e) = k.verdict() {
        panic!("KTAP: {e}; {}", context(run));
    }
    for suite in ["dma", "edu", "vnuma", "memory"] {
        assert!(k.suite(suite).is_some(), "suite {suite}; {}", context(run));
    }
    assert!(
        run.console
            .lines()
            .any(|l| l.starts_with("numavisor: domain 1: teardown:")
                && l.contains("none left owned")),
        "teardown; {}",
        context(run)
    );
    (k, lines)
}

/// The test `name` of suite `suite` ran (passed, not skipped).
fn ran(k: &Ktap, suite: &str, name: &str, run: &RunResult) {
    let t = k
        .suite(suite)
        .and_then(|s| s.subtests.iter().find(|t| t.name == name))
        .unwrap_or_else(|| panic!("no test {suite}.{name}; {}", context(run)));
    assert!(
        t.ok && !t.skip,
        "{suite}.{name} did not run; {}",
        context(run)
    );
}

/// The one guest line starting with `prefix`.
fn line<'a>(lines: &'a [String], prefix: &str, run: &RunResult) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?}; {}", context(run)))
}

fn boot(spec: &MachineSpec, config: &str) -> RunResult {
    boot_domains(spec, "", &[domain_config(config)])
}

#[test]
fn high_only_domain_bounces_every_transfer() {
    let run = boot(&edu_machine(), "dma-high-only.cfg");
    let (k, lines) = passed(&run);
    // The hypervisor assigned the device and mapped its BAR.
    assert!(
        run.console
            .contains("numavisor: domain 1: pci 00:04.0 1234:11e8 class 00ff00 assigned"),
        "{}",
        context(&run)
    );
    // Only the assigned device shows: the machine's other devices (host
    // bridge, LPC, SATA, the other edu) are hidden.
    let pci: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("guest: pci: "))
        .collect();
    assert_eq!(pci.len(), 1, "{pci:?}");
    assert!(
        pci[0].starts_with("guest: pci: 00:04.0 1234:11e8"),
        "{pci:?}"
    );
    // The exchange: below 2^28, on the vnode's own node.
    let x = run
        .console
        .lines()
        .find(|l| l.starts_with("numavisor: domain 1: dma exchange: "))
        .unwrap_or_else(|| panic!("no exchange; {}", context(&run)));
    assert!(x.ends_with("below 2^28, node 0"), "{x}");
    let pool = line(&lines, "guest: dma: swiotlb pool 1024 KiB (512 slots", &run);
    assert!(pool.ends_with("below 2^28"), "{pool}");
    // Every edu mapping bounced; every byte checked by the suite.
    let trips = line(&lines, "guest: edu: round trips: ", &run);
    assert!(
        trips.contains(" done (") && trips.contains(", 0 refused; mappings: 36 bounced, 0 direct"),
        "{trips}"
    );
    let dev = line(&lines, "guest: dma: edu 00:04.0: ", &run);
    assert!(dev.contains(": direct 0 (0 bytes), bounced "), "{dev}");
    let stats = line(&lines, "guest: dma: stats: ", &run);
    assert!(
        stats.contains("swiotlb: slots total 512 used 0 "),
        "{stats}"
    );
    for t in [
        "round_trips",
        "bidirectional_with_syncs",
        "coherent_buffer",
        "full_pool",
    ] {
        ran(&k, "edu", t, &run);
    }
    for t in [
        "pool_too_small_for_the_load",
        "statistics_add_up",
        "bounce_copies_and_syncs",
    ] {
        ran(&k, "dma", t, &run);
    }
}

#[test]
fn reachable_domain_bounces_nothing() {
    let run = boot(&edu_machine(), "dma-reachable.cfg");
    let (k, lines) = passed(&run);
    let trips = line(&lines, "guest: edu: round trips: ", &run);
    assert!(trips.contains("mappings: 0 bounced, 36 direct"), "{trips}");
    // The device's own statistics: zero bounced bytes.
    let dev = line(&lines, "guest: dma: edu 00:05.0: ", &run);
    assert!(dev.contains(", bounced 0 (0 bytes), refused 0"), "{dev}");
    ran(&k, "edu", "round_trips", &run);
}

#[test]
fn swiotlb_force_with_a_small_pool() {
    let run = boot(&edu_machine(), "dma-force.cfg");
    let (k, lines) = passed(&run);
    line(&lines, "guest: dma: swiotlb pool 256 KiB (128 slots", &run);
    line(&lines, "guest: dma: mode swiotlb=force", &run);
    let full = line(&lines, "guest: dma: pool too small: ", &run);
    assert!(
        full.contains(
            "64 mappings of 4 KiB fit, 64 refused with a full pool (128 of 128 slots used)"
        ),
        "{full}"
    );
    // Linux's line for a full pool, rate-limited.
    assert!(
        lines.iter().any(|l| l.contains(
            "swiotlb buffer is full (sz: 4096 bytes), total 128 (slots), used 128 (slots)"
        )),
        "{}",
        context(&run)
    );
    let trips = line(&lines, "guest: edu: round trips: ", &run);
    assert!(trips.contains("mappings: 36 bounced, 0 direct"), "{trips}");
    let dev = line(&lines, "guest: dma: edu 00:05.0: ", &run);
    assert!(dev.contains(": direct 0 (0 bytes), bounced "), "{dev}");
    ran(&k, "edu", "full_pool", &run);
}

#[test]
fn direct_mode_refuses_and_the_device_writes_where_the_buffer_is_not() {
    let run = boot(&edu_machine(), "dma-direct.cfg");
    let (k, lines) = passed(&run);
    line(&lines, "guest: dma: dma=direct: no bounce pool", &run);
    // The DMA layer refused every edu mapping of the (unreachable) heap.
    let trips = line(&lines, "guest: edu: round trips: ", &run);
    assert!(
        trips.contains("0 done") && trips.contains(" refused;"),
        "{trips}"
    );
    // And the demonstration: refused by the DMA layer, then written 256 MiB
    // below the buffer by the device itself.
    ran(&k, "edu", "direct_misdirected_write", &run);
    let demo = line(
        &lines,
        "guest: dma=direct: the DMA layer refused 4096 bytes at machine ",
        &run,
    );
    assert!(
        demo.contains("for a 28-bit device; programmed directly with that address, the device wrote 4095 bytes (the data) at machine ")
            && demo.ends_with("another page this test owns) and left the buffer unchanged"),
        "{demo}"
    );
    let addr = |key: &str| {
        let rest = demo.split(key).nth(1).unwrap_or("");
        u64::from_str_radix(
            rest.trim_start_matches("0x")
                .split(' ')
                .next()
                .unwrap_or(""),
            16,
        )
        .unwrap_or(0)
    };
    let (h, t) = (
        addr("refused 4096 bytes at machine "),
        addr("bytes (the data) at machine "),
    );
    assert_eq!(t, h & ((1 << 28) - 1), "{demo}");
    assert_ne!(t, h, "{demo}");
}

#[test]
fn without_low_memory_the_pool_comes_from_another_node() {
    let spec = preset("high-mem-edu").expect("high-mem-edu preset");
    let run = boot(&spec, "dma-no-low-memory.cfg");
    let (k, lines) = passed(&run);
    // All of the domain's memory is on node 1, above 4 GiB.
    let layout: Vec<&str> = run
        .console
        .lines()
        .filter(|l| l.starts_with("numavisor: domain 1: domain layout: "))
        .collect();
    assert!(layout.iter().all(|l| l.ends_with(" node 1")), "{layout:?}");
    let x = run
        .console
        .lines()
        .find(|l| l.starts_with("numavisor: domain 1: dma exchange: "))
        .unwrap_or_else(|| panic!("no exchange; {}", context(&run)));
    assert!(
        x.contains("below 2^32, node 0; off node: vnode 0's node 1 has no such memory free, node 0 is the nearest that has"),
        "{x}"
    );
    let g = line(&lines, "guest: dma: exchanged guest-physical ", &run);
    assert!(g.contains("below 2^32 on node 0 (off node"), "{g}");
    let trips = line(&lines, "guest: edu: round trips: ", &run);
    assert!(trips.contains("mappings: 36 bounced, 0 direct"), "{trips}");
    // DOMAIN_NODE_PAGES tells the truth (pages on node 0 now) and vnode_mem
    // still puts the vnode on node 1: the vnuma suite accounts for it.
    let pages = line(&lines, "guest: my pages per physical node: ", &run);
    assert!(pages.contains("pnode0=320 pnode1=16064"), "{pages}");
    ran(&k, "vnuma", "vnode_mem", &run);
}

#[test]
fn the_mirror_domain_of_high_mem_edu() {
    // What `cargo xtask run --topology high-mem-edu` boots.
    let spec = preset("high-mem-edu").expect("high-mem-edu preset");
    let run = boot_domains(&spec, spec.guest_cmdline, &[]);
    let (k, lines) = passed(&run);
    line(&lines, "guest: dma: swiotlb pool 1024 KiB", &run);
    let trips = line(&lines, "guest: edu: round trips: ", &run);
    assert!(trips.contains("mappings: 36 bounced, 0 direct"), "{trips}");
    ran(&k, "edu", "round_trips", &run);
}

#[test]
fn an_old_hypervisor_gives_no_pool_and_unreachable_mappings_are_refused() {
    // The current guest on an ABI 1.0 hypervisor (PCI assignment is not
    // ABI: the device is there; DMA_EXCHANGE is not).
    let hv = abi_images("1.0");
    let spec = edu_machine();
    let run = run_kernel(
        &hv.hypervisor,
        spec.qemu_args(),
        spec.cmdline,
        vec![guest_image(""), domain_config("dma-high-only.cfg")],
        xtask::DEFAULT_TIMEOUT,
    );
    let (k, lines) = passed(&run);
    line(
        &lines,
        "guest: dma: the hypervisor has no DMA_EXCHANGE",
        &run,
    );
    line(
        &lines,
        "guest: dma: no bounce pool: a mapping a device cannot reach is refused",
        &run,
    );
    let trips = line(&lines, "guest: edu: round trips: ", &run);
    assert!(
        trips.starts_with("guest: edu: round trips: 0 done (0 bytes each way), 18 refused"),
        "{trips}"
    );
    ran(&k, "edu", "identity_and_liveness", &run);
    assert!(!run.console.contains("dma exchange:"), "{}", context(&run));
}

#[test]
fn a_missing_device_refuses_the_domain() {
    // 00:06.0 is empty on the edu machine; the next domain still runs.
    let dir = std::env::temp_dir().join(format!("numavisor-dma-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = dir.join("no-device.cfg");
    std::fs::write(
        &cfg,
        "name = \"no-device\"\nmemory = 32\npci = [ \"00:06.0\" ]\n",
    )
    .expect("write config");
    let run = boot_domains(
        &edu_machine(),
        "ktest=boot",
        &[cfg.display().to_string(), domain_config("two-vnodes.cfg")],
    );
    match domain_report(&run.console, 1) {
        Some(DomainReport::Refused { reason }) => {
            assert!(reason.contains("no PCI device at 00:06.0"), "{reason}")
        }
        other => panic!("{other:?}; {}", context(&run)),
    }
    assert_eq!(
        domain_report(&run.console, 2),
        Some(DomainReport::Shutdown { status: 0 }),
        "{}",
        context(&run)
    );
    assert_eq!(
        run.outcome,
        Outcome::Exited(ExitCode::Failure),
        "{}",
        context(&run)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

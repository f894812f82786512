//! The boot sequence ([`run`]), from the first hypercall to the shutdown
//! status. `main.rs` calls it on bare metal; host tests call it with a model
//! hypervisor.
//!
//! 1. ABI: `VERSION` and `FEATURES` before anything else; a different major
//!    version is refused with a message naming both, status `ABI_MISMATCH`.
//!    A missing feature means a fallback path (no `VNUMA`: the SRAT alone;
//!    no `VIRTUAL_ACPI`: the hypercall alone), never a crash.
//! 2. The start-info page is copied into the guest and validated
//!    (`BAD_START_INFO` if it fails).
//! 3. The heap goes on free guest memory ([`start_info::choose_heap`]);
//!    then PCI devices, their drivers and the DMA layer with its bounce
//!    pool ([`crate::dma::setup`]).
//! 4. `GET_VNUMA` (probe, then fetch), ABI 1.1's per-vnode memory
//!    ([`vnode_mem`]; its fallback without `VNODE_MEM`), `PHYSINFO`,
//!    `DOMAIN_NODE_PAGES`.
//! 5. The virtual ACPI tables: SRAT, SLIT, MADT, cross-checked against
//!    `GET_VNUMA`; every disagreement is printed.
//! 6. The view: one line per node, then the distance matrix; with
//!    `numa=fake=N` the emulated view that replaces it
//!    ([`crate::numa::fake`]); then the memory manager built on it, printed
//!    ([`crate::mm::boot`]), with the secondary vCPUs' stacks reserved when
//!    they are to come up.
//! 7. ABI 1.3: the secondary vCPUs, brought up one at a time
//!    (`crate::smp`; not in a guest built for ABI 1.2 or older).
//! 8. A failure mode from the command line, if one was asked for.
//! 9. The KTAP suites, then every secondary vCPU goes down; the status is
//!    `SUCCESS` if all passed, `TOPOLOGY_MISMATCH` if the ACPI cross-check
//!    found disagreements, `TESTS_FAILED` otherwise (or if a secondary vCPU
//!    would not go down).

pub mod start_info;
#[cfg(not(feature = "abi-1-0"))]
pub mod vnode_mem;

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use pv_abi::start_info::{StartInfoError, GPA_LIMIT};
use pv_abi::{AbiVersion, Error, Features, Gpa, ShutdownStatus, StartInfo, PAGE_SIZE};

use crate::cmdline::{self, Cmdline};
use crate::hypercall::{self, FetchError, PhysTopology};
use crate::ktest;
use crate::numa::acpi::{self, AcpiView, GuestPhys, NodeMap};
use crate::numa::format_cpus;
use crate::numa::topology::Vnuma;
use crate::numa::view::NodeView;
use crate::platform::{FailMode, Platform};
use crate::println;

/// Everything the guest learned at boot: the context of every test.
pub struct Guest {
    /// The machine.
    pub p: &'static dyn Platform,
    /// Where the start-info page is (RSI at entry).
    pub start_gpa: Gpa,
    /// The guest's copy of the start-info page.
    pub si: StartInfo,
    /// The hypervisor's ABI version.
    pub hv_version: AbiVersion,
    /// The version both use (same major, lower minor).
    pub version: AbiVersion,
    /// Feature word 0 (unknown bits kept).
    pub features: Features,
    /// The command line.
    pub cmdline: Cmdline,
    /// The heap: start and size.
    pub heap: (Gpa, u64),
    /// Whether the heap backs the global allocator (not in host tests).
    pub heap_is_global: bool,
    /// 2 MiB of guest-physical space outside every memory range.
    pub hole: Gpa,
    /// `GET_VNUMA`'s answer (`None` without the feature).
    pub vnuma: Option<Result<Vnuma, FetchError>>,
    /// `PHYSINFO`'s answer (`None` without the feature).
    pub physinfo: Option<Result<PhysTopology, FetchError>>,
    /// `DOMAIN_NODE_PAGES`'s answer (`None` without the feature).
    pub node_pages: Option<Result<Vec<u64>, FetchError>>,
    /// The virtual ACPI tables (`None` without the feature).
    pub acpi: Option<Result<AcpiView, String>>,
    /// Disagreements between the tables and `GET_VNUMA`.
    pub mismatches: Vec<String>,
    /// The node view the guest printed.
    pub view: Option<NodeView>,
    /// The memory manager built on the view (`None` if it could not be),
    /// shared with the secondary vCPUs.
    pub mm: Option<Arc<crate::mm::Mm>>,
    /// The secondary vCPUs (ABI 1.3), or why there are none.
    #[cfg(not(feature = "abi-1-2"))]
    pub smp: crate::smp::SmpState,
    /// PCI devices, their drivers, the DMA layer and its bounce pool.
    pub dma: crate::dma::setup::DmaSetup,
}

impl Guest {
    /// The vNUMA topology, if the hypercall gave one.
    pub fn vnuma(&self) -> Option<&Vnuma> {
        self.vnuma.as_ref().and_then(|r| r.as_ref().ok())
    }

    /// The ACPI tables, if they were read.
    pub fn acpi(&self) -> Option<&AcpiView> {
        self.acpi.as_ref().and_then(|r| r.as_ref().ok())
    }
}

/// Writes through `print!` (KTAP output, the view).
pub struct ConsoleOut;

impl Write for ConsoleOut {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::print!("{s}");
        Ok(())
    }
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

/// MiB in `pages` pages (saturating: the numbers come from the hypervisor).
fn pages_mib(pages: u64) -> u64 {
    mib(pages.saturating_mul(PAGE_SIZE))
}

/// Steps 1 and 2: the ABI check. `Err` is the status to shut down with.
fn check_abi(p: &dyn Platform) -> Result<(AbiVersion, AbiVersion, Features), ShutdownStatus> {
    let ours = AbiVersion::CURRENT;
    let raw = hypercall::version_raw(p);
    let Some(hv) = AbiVersion::decode(raw) else {
        println!(
            "guest: VERSION answered {raw:#x}, which is not an ABI version; this guest speaks ABI {ours}"
        );
        return Err(ShutdownStatus::ABI_MISMATCH);
    };
    let Some(version) = hv.negotiate(ours) else {
        println!(
            "guest: ABI mismatch: the hypervisor speaks ABI {hv}, this guest speaks ABI {ours}; \
             different major versions cannot work together"
        );
        return Err(ShutdownStatus::ABI_MISMATCH);
    };
    let features = match hypercall::features(p) {
        Ok(f) => f,
        Err(e) => {
            println!("guest: FEATURES failed: {e}; assuming no optional feature");
            Features::empty()
        }
    };
    println!("guest: ABI {hv} (guest {ours}, using {version}), features {features}");
    let missing = Features::KNOWN.difference(features);
    if !missing.is_empty() {
        println!("guest: features not offered: {missing}: using fallback paths");
    }
    Ok((hv, version, features))
}

fn print_start_info(si: &StartInfo, gpa: Gpa) {
    println!(
        "guest: start-info at {gpa}: ABI {}, {} vCPUs, {} vnodes, {} memory ranges",
        si.version,
        si.nr_vcpus,
        si.nr_vnodes,
        si.mem_ranges().len()
    );
    println!(
        "guest: image [{:#x}..{:#x}), boot data [{:#x}..{:#x}), ACPI RSDP {}",
        si.image_start.0, si.image_end.0, si.boot_data_start.0, si.boot_data_end.0, si.acpi_rsdp
    );
    for r in si.mem_ranges() {
        println!(
            "guest:   memory [{:#x}..{:#x}) vnode {} machine {} ({} MiB)",
            r.gpa.0,
            r.gpa.0.saturating_add(r.size),
            r.vnode,
            r.maddr,
            mib(r.size)
        );
    }
}

fn print_physinfo(r: &Result<PhysTopology, FetchError>) {
    match r {
        Ok(t) => {
            println!(
                "guest: machine: {} nodes, {} CPUs, {} MiB, {} MiB free",
                t.nr_nodes(),
                t.cpu_to_node.len(),
                pages_mib(t.total_pages),
                pages_mib(t.free_pages)
            );
            for (n, m) in t.node_mem.iter().enumerate() {
                println!(
                    "guest:   pnode {n}: cpus {}, {} MiB, {} MiB free",
                    format_cpus(&t.cpus_of(n as u32)),
                    pages_mib(m.size_pages),
                    pages_mib(m.free_pages)
                );
            }
        }
        Err(e) if e.error() == Some(Error::NotPermitted) => {
            println!("guest: physinfo: the machine is hidden from this domain")
        }
        Err(e) => println!("guest: physinfo: {e}"),
    }
}

fn print_node_pages(r: &Result<Vec<u64>, FetchError>) {
    match r {
        Ok(pages) => {
            let mut s = String::new();
            for (n, p) in pages.iter().enumerate() {
                let _ = write!(s, " pnode{n}={p}");
            }
            let total = crate::numa::sum(pages.iter().copied());
            println!(
                "guest: my pages per physical node:{s} (total {total} pages, {} MiB)",
                pages_mib(total)
            );
        }
        Err(e) => println!("guest: domain_node_pages: {e}"),
    }
}

fn read_tables(
    p: &dyn Platform,
    si: &StartInfo,
    features: Features,
) -> Option<Result<AcpiView, String>> {
    if !features.contains(Features::VIRTUAL_ACPI) {
        if si.acpi_rsdp().is_some() {
            println!(
                "guest: start-info names an RSDP but VIRTUAL_ACPI is not offered: tables ignored"
            );
        } else {
            println!("guest: no virtual ACPI tables: get_vnuma is the only topology source");
        }
        return None;
    }
    let Some(rsdp) = si.acpi_rsdp() else {
        return Some(Err(
            "VIRTUAL_ACPI is offered but start-info names no RSDP".to_string()
        ));
    };
    let mem = GuestPhys {
        platform: p,
        ranges: si.mem_ranges(),
    };
    Some(acpi::read_acpi(&mem, rsdp).map_err(|e| e.to_string()))
}

fn print_tables(r: &Result<AcpiView, String>) {
    match r {
        Ok(v) => {
            let mut listed = String::new();
            for s in &v.listed {
                let _ = write!(listed, " {}", acpi::sig(s));
            }
            println!(
                "guest: ACPI: RSDP at {} revision {}, {} lists:{listed}",
                v.rsdp.addr,
                v.rsdp.revision,
                acpi::sig(&v.root)
            );
            for w in &v.warnings {
                println!("guest: ACPI warning: {w}");
            }
            for (what, e) in [
                ("SRAT", v.srat.as_ref().err()),
                ("SLIT", v.slit.as_ref().err()),
                ("MADT", v.madt.as_ref().err()),
            ] {
                if let Some(e) = e {
                    println!("guest: ACPI: {what} unusable: {e}");
                }
            }
        }
        Err(e) => println!("guest: ACPI: {e}"),
    }
}

/// The node view: `GET_VNUMA` numbered as Linux would number the SRAT (the
/// tables' order when they name exactly the vnodes, else the same rule
/// applied to `GET_VNUMA`), or the SRAT alone.
fn build_view(vnuma: Option<&Vnuma>, acpi: Option<&AcpiView>) -> Option<NodeView> {
    let srat = acpi.and_then(|a| a.srat.as_ref().ok());
    if let Some(v) = vnuma {
        let from_srat = srat.map(NodeMap::from_srat).filter(|m| {
            let mut pxms = m.pxm_of_node.clone();
            pxms.sort_unstable();
            pxms == (0..v.nr_vnodes).collect::<Vec<u32>>()
        });
        let order = match from_srat {
            Some(m) => m.pxm_of_node,
            None => v.linux_order(),
        };
        return Some(NodeView::from_vnuma(v, &order));
    }
    srat.map(|s| NodeView::from_srat(s, acpi.and_then(|a| a.slit.as_ref().ok())))
}

/// Runs the guest; returns the status to shut down with.
pub fn run(p: &'static dyn Platform, start_gpa: u64) -> ShutdownStatus {
    println!(
        "guest: numavisor guest-os {} starting (ABI {})",
        env!("CARGO_PKG_VERSION"),
        AbiVersion::CURRENT
    );
    let (hv_version, version, features) = match check_abi(p) {
        Ok(v) => v,
        Err(status) => return status,
    };

    let si = match start_info::read(p, start_gpa) {
        Ok(si) => si,
        Err(e) => {
            println!("guest: bad start-info page at {start_gpa:#x}: {e}");
            return match e {
                start_info::BadStartInfo::Invalid(StartInfoError::IncompatibleVersion {
                    ..
                }) => ShutdownStatus::ABI_MISMATCH,
                _ => ShutdownStatus::BAD_START_INFO,
            };
        }
    };
    let start_gpa = Gpa(start_gpa);
    print_start_info(&si, start_gpa);

    let Some(heap) = start_info::choose_heap(&si) else {
        println!(
            "guest: no free memory of at least {} KiB outside the image and the boot data for the heap",
            start_info::HEAP_MIN >> 10
        );
        return ShutdownStatus::OUT_OF_MEMORY;
    };
    let heap_is_global = p.init_heap(heap.0, heap.1);
    println!(
        "guest: heap [{:#x}..{:#x}) ({} KiB)",
        heap.0 .0,
        heap.0 .0 + heap.1,
        heap.1 >> 10
    );

    let cmdline = cmdline::parse(si.cmdline());
    println!("guest: command line: '{}'", si.cmdline());
    for w in &cmdline.warnings {
        println!("guest: warning: {w}");
    }
    // CPUID 0x8000_0008 EAX[7:0]: the physical address width.
    let phys_bits = p
        .cpuid(0x8000_0008)
        .map_or(36, |r| (r.eax & 0xff).clamp(32, 52));
    let hole = start_info::find_hole(&si, 1u64 << phys_bits).unwrap_or(Gpa(GPA_LIMIT));
    // DMA: PCI devices, drivers, the bounce pool (before DOMAIN_NODE_PAGES,
    // so that it counts the exchanged pages where they are).
    let dma = crate::dma::setup::setup(p, &si, features, &cmdline.dma);

    let vnuma = features
        .contains(Features::VNUMA)
        .then(|| hypercall::fetch_vnuma(p));
    match &vnuma {
        None => println!("guest: no VNUMA feature: the SRAT is the only topology source"),
        Some(Ok(v)) => println!(
            "guest: get_vnuma: {} vnodes, {} vCPUs, {} memory ranges, distances {}",
            v.nr_vnodes,
            v.nr_vcpus,
            v.vmemranges.len(),
            if v.is_symmetric() {
                "symmetric"
            } else {
                "asymmetric"
            }
        ),
        Some(Err(e)) => println!("guest: get_vnuma: {e}"),
    }
    // ABI 1.1: per-vnode memory, or its fallback on a 1.0 hypervisor.
    #[cfg(not(feature = "abi-1-0"))]
    vnode_mem::report(
        p,
        features,
        hv_version,
        vnuma.as_ref().and_then(|r| r.as_ref().ok()),
    );
    let physinfo = features
        .contains(Features::PHYSINFO)
        .then(|| hypercall::fetch_physinfo(p));
    if let Some(r) = &physinfo {
        print_physinfo(r);
    }
    let node_pages = features
        .contains(Features::DOMAIN_NODE_PAGES)
        .then(|| hypercall::fetch_domain_node_pages(p));
    if let Some(r) = &node_pages {
        print_node_pages(r);
    }

    let tables = read_tables(p, &si, features);
    if let Some(r) = &tables {
        print_tables(r);
    }
    let vn = vnuma.as_ref().and_then(|r| r.as_ref().ok());
    let av = tables.as_ref().and_then(|r| r.as_ref().ok());
    let mismatches = match (vn, av) {
        (Some(v), Some(a)) => acpi::cross_check(a, v),
        _ => Vec::new(),
    };
    if let (Some(_), Some(_)) = (vn, av) {
        if mismatches.is_empty() {
            println!("guest: get_vnuma and the ACPI tables agree");
        }
    }
    for m in &mismatches {
        println!("guest: topology MISMATCH: {m}");
    }
    let view = build_view(vn, av);
    match &view {
        Some(v) => {
            println!("guest: NUMA: {} nodes (from {})", v.nodes.len(), v.source);
            let _ = v.write("guest: ", &mut ConsoleOut);
        }
        None => println!("guest: NUMA: no topology (neither get_vnuma nor a SRAT)"),
    }
    // numa=fake=N: Linux's NUMA emulation replaces the view before the mm.
    let view = crate::numa::fake::boot(&si, view, cmdline.numa_fake, &mut ConsoleOut);
    // The memory manager: nodes, zones, zonelists, numa_mem_id (printed);
    // with secondary vCPUs to come, their stacks reserved on their nodes.
    #[cfg(not(feature = "abi-1-2"))]
    let smp_plan = crate::smp::plan(features, hv_version, si.nr_vcpus, &cmdline);
    #[cfg(not(feature = "abi-1-2"))]
    let cpu_blocks = smp_plan.is_ok().then_some(crate::percpu::STACK_ORDER);
    #[cfg(feature = "abi-1-2")]
    let cpu_blocks = None;
    let order = cmdline.numa_zonelist_order;
    let mm =
        crate::mm::boot(&si, view.as_ref(), heap, order, cpu_blocks, &mut ConsoleOut).map(Arc::new);
    // ABI 1.3: the secondary vCPUs, each on its own physical CPU.
    #[cfg(not(feature = "abi-1-2"))]
    let smp = crate::smp::boot(p, smp_plan, si.nr_vcpus, vn, mm.as_ref());

    let guest = Guest {
        p,
        start_gpa,
        si,
        hv_version,
        version,
        features,
        cmdline,
        heap,
        heap_is_global,
        hole,
        vnuma,
        physinfo,
        node_pages,
        acpi: tables,
        mismatches,
        view,
        mm,
        #[cfg(not(feature = "abi-1-2"))]
        smp,
        dma,
    };

    let mut survived = None;
    if let (Some(k), Some(mode)) = (guest.cmdline.fail_vcpu, guest.cmdline.fail) {
        println!("guest: fail={}: on vcpu {k}", mode.name());
    }
    match guest.cmdline.fail {
        Some(FailMode::Hypercall) => println!(
            "guest: fail=hypercall: garbage hypercalls follow, checked as KTAP suite '{}'",
            ktest::suites::GARBAGE.name
        ),
        Some(mode) => {
            println!(
                "guest: fail={}: {}",
                mode.name(),
                match mode {
                    FailMode::Npf => alloc::format!(
                        "touching guest-physical {} (outside every memory range)",
                        guest.hole
                    ),
                    FailMode::Triple => "empty IDT, then ud2: triple fault".to_string(),
                    FailMode::Spin => "cli, then a loop without exits".to_string(),
                    _ => "cli; hlt".to_string(),
                }
            );
            crate::console::flush();
            let why = match guest.cmdline.fail_vcpu {
                Some(k) if k != 0 => fail_on_secondary(&guest, k, mode),
                _ => p.fail(mode, guest.hole),
            };
            println!("guest: fail={}: still running: {why}", mode.name());
            survived = Some(why);
        }
        None => {}
    }

    if let Some(millions) = guest.cmdline.burn {
        let start = p.cycles();
        let result = burn(millions);
        match (start, p.cycles()) {
            (Some(a), Some(b)) => println!(
                "guest: burn: {millions} million iterations in {} TSC cycles (result {result:#x})",
                b.wrapping_sub(a)
            ),
            _ => println!("guest: burn: {millions} million iterations (result {result:#x})"),
        }
    }

    let (suites, unknown) = ktest::suites::select(&guest.cmdline);
    for name in unknown {
        println!("guest: warning: ktest={name}: no such suite");
    }
    let summary = ktest::run(&guest, &suites, &mut ConsoleOut);
    println!(
        "guest: KTAP: {} passed, {} failed, {} skipped",
        summary.passed, summary.failed, summary.skipped
    );
    for f in &summary.failures {
        println!("guest: FAILED: {f}");
    }
    // Every secondary vCPU goes down before the domain does (and before
    // the benchmark, which should have the machine to itself).
    #[cfg(not(feature = "abi-1-2"))]
    let smp_down = crate::smp::shutdown(&guest.smp);
    #[cfg(feature = "abi-1-2")]
    let smp_down = true;
    if guest.cmdline.bench {
        if let Some(mm) = &guest.mm {
            crate::mm::bench::run(mm, &|| p.cycles());
        }
    }
    let status = if !summary.ok() && !guest.mismatches.is_empty() {
        ShutdownStatus::TOPOLOGY_MISMATCH
    } else if !summary.ok() || survived.is_some() || !smp_down {
        ShutdownStatus::TESTS_FAILED
    } else {
        ShutdownStatus::SUCCESS
    };
    println!("guest: shutting down: {status}");
    status
}

/// `fail=` on secondary vCPU `k` (`fail_vcpu=k`): posts the failure to it
/// and waits; returns only if the domain survived it, with why.
#[cfg(not(feature = "abi-1-2"))]
fn fail_on_secondary(guest: &Guest, k: u32, mode: FailMode) -> String {
    let Some(smp) = guest.smp.smp() else {
        return alloc::format!("fail_vcpu={k}: no secondary vcpu is up");
    };
    // Its boot work first: a job is posted to an idle vCPU.
    smp.settle(k, crate::smp::JOB_SECS);
    match smp.run_job(k, crate::smp::Job::Fail(mode, guest.hole)) {
        Ok(crate::smp::JobResult::Survived(why)) => alloc::format!("on vcpu {k}: {why}"),
        Ok(other) => alloc::format!("vcpu {k} answered {other:?}"),
        Err(e) => alloc::format!("vcpu {k}: {e}"),
    }
}

/// Without `VCPU_OP` (a guest for ABI 1.2 or older) there is no secondary.
#[cfg(feature = "abi-1-2")]
fn fail_on_secondary(_guest: &Guest, k: u32, _mode: FailMode) -> String {
    alloc::format!("fail_vcpu={k}: this guest has no secondary vcpus (ABI before 1.3)")
}

/// `burn=N`: N million rounds of xorshift, CPU-bound and exit-free, so the
/// vCPU keeps its CPU until the hypervisor takes it away.
fn burn(millions: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..millions.saturating_mul(1_000_000) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    core::hint::black_box(x)
}

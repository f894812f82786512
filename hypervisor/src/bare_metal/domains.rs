//! Domains on the real machine, all at once: each config is placed (its
//! `vnuma`, or automatic NUMA placement), its memory claimed per node, then
//! it is built on a CPU of its own node and started as soon as it is built,
//! beside the domains already running. A domain that ends is torn down
//! alone, by the CPU that saw its last vCPU go; the run ends when the last
//! one has.
//!
//! Placement and claims are decided one domain at a time on the boot CPU,
//! so that each decision sees the memory and CPUs the earlier ones took;
//! the builds, which take the time (zeroing, loading, page tables), run in
//! parallel on the domains' CPUs, each against its own claim, so they can
//! neither starve each other nor half-succeed.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use hypervisor::arch::x86_64::memory::HeapTables;
use hypervisor::arch::x86_64::pci::PortConfigSpace;
use hypervisor::arch::x86_64::timer::Deadline;
use hypervisor::boot::multiboot::Module;
use hypervisor::domain::abi;
use hypervisor::domain::build::{self, Allocation, DomainEnd, DomainMemory, MachineMemory};
use hypervisor::domain::config::{DomainConfig, MIRROR_NODE_MIB};
use hypervisor::domain::elf::GuestImage;
use hypervisor::domain::exchange::P2m;
use hypervisor::domain::layout::DomainLayout;
use hypervisor::domain::placement::{self, MachineState, Placed};
use hypervisor::hypercall::ConsoleBuffer;
use hypervisor::mm::addr::{Mfn, PAGE_SIZE};
use hypervisor::mm::heap::{AllocRequest, Claim};
use hypervisor::numa::topology::{Topology, MAX_CPUS};
use hypervisor::numa::{CpuId, NodeId};
use hypervisor::pci::config::PciEmulator;
use hypervisor::pci::{self, Bdf};
use hypervisor::ratelimit::RateLimit;
use hypervisor::report::{
    DomainPages, DomainRow, DomainState, NumaMemory, ShutdownReason, VcpuRow, VcpuState, XlList,
    XlVcpuList,
};
use hypervisor::svm::paging::{self as pt, PageTables};
use hypervisor::svm::vcpu::EntryState;
use hypervisor::{print, println};
use pv_abi::exit::ExitCode;
use pv_abi::AbiVersion;

use super::domain_run::{DomainRun, Env, IdentityMachine, VcpuSlot, VcpuTemplate};
use super::sched::{self, VcpuBlock};
use super::svm_maps::intercept_maps;
use super::{heap, nr_asids};

/// Guards the table of domains that are built and not yet torn down.
static DOMAINS: spin::Mutex<Vec<Arc<DomainRun>>> = spin::Mutex::new(Vec::new());
/// Guards the `xl list` rows of domains that have ended, for the last view.
static ENDED: spin::Mutex<Vec<DomainRow>> = spin::Mutex::new(Vec::new());
/// vCPUs placed on each CPU by domains not yet torn down (placement's load).
static LOAD: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Domains started (being built or running) and not yet torn down.
static PENDING: AtomicU32 = AtomicU32::new(0);
/// Some domain failed (refused, killed, or its teardown lost pages).
static FAILED: AtomicBool = AtomicBool::new(false);
/// Guards which PCI devices are assigned, and to which domain (from its
/// placement to its teardown).
static PCI_ASSIGNED: spin::Mutex<Vec<(Bdf, u32)>> = spin::Mutex::new(Vec::new());
/// Guards which ASIDs running domains hold (bit `n` = ASID `n`; 0 is the host's).
static ASIDS: spin::Mutex<u64> = spin::Mutex::new(1);

/// A boot module's bytes.
fn module_bytes(m: &Module) -> &'static [u8] {
    if m.range.is_empty() || m.range.start.0 == 0 {
        return &[];
    }
    // SAFETY: boot modules are reserved at boot (never given to the heap),
    // lie in identity-mapped RAM below 4 GiB and are never written.
    unsafe { core::slice::from_raw_parts(m.range.start.0 as *const u8, m.range.len() as usize) }
}

fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// The module's name: the first word of its string (the path QEMU or the
/// boot loader gives), without directories.
fn module_name(m: &Module) -> &str {
    let first = m.string.split_whitespace().next().unwrap_or("");
    first.rsplit('/').next().unwrap_or(first)
}

/// Builds and runs every domain, all at once; returns when the last has
/// ended, with the worst status. With `ignore_abi_note`, guest images are
/// run whatever ABI major they declare; `mirror` says whether the mirror
/// domain runs (by default only without configs), `mirror_pci` are the PCI
/// devices it gets.
pub fn run_all(
    modules: &[Module],
    topology: &'static Topology,
    ignore_abi_note: bool,
    mirror: Option<bool>,
    mirror_pci: &[Bdf],
) -> ExitCode {
    let images: Vec<&Module> = modules.iter().filter(|m| is_elf(module_bytes(m))).collect();
    let configs: Vec<&Module> = modules
        .iter()
        .filter(|m| !is_elf(module_bytes(m)))
        .collect();
    let Some(default_image) = images.first() else {
        if !configs.is_empty() {
            println!("numavisor: FATAL: domain configs given but no guest image module");
            return ExitCode::BadBoot;
        }
        println!("numavisor: no guest image module: no domain to run");
        return ExitCode::Success;
    };
    let mut domains: Vec<Result<DomainConfig, String>> = Vec::new();
    if mirror.unwrap_or(configs.is_empty()) {
        let mut mirror = DomainConfig::mirror_machine(topology, MIRROR_NODE_MIB);
        // The image module's arguments are the mirror domain's command line.
        mirror.cmdline = default_image
            .string
            .split_once(char::is_whitespace)
            .map_or("", |(_, a)| a.trim())
            .into();
        mirror.pci = mirror_pci.to_vec();
        let online = sched::online_cpus(topology.cpus.len());
        if online.iter().any(|&o| !o) {
            let n = online.iter().filter(|&&o| o).count();
            println!(
                "numavisor: mirror domain: {n} of {} CPUs run vCPUs: its vCPUs are placed near their vnodes, not pinned",
                online.len()
            );
            mirror.cpus = None;
        }
        domains.push(
            mirror
                .validate()
                .map(|()| mirror)
                .map_err(|e| format!("mirror domain: {e}")),
        );
    }
    for m in &configs {
        domains
            .push(DomainConfig::parse(module_name(m), module_bytes(m)).map_err(|e| format!("{e}")));
    }

    // The permission maps outlive every domain: take them before the probe.
    if let Err(e) = intercept_maps(heap()) {
        println!("numavisor: FATAL: permission maps: {e}");
        return ExitCode::Failure;
    }
    let first_probe = heap().probe();
    for (i, config) in domains.into_iter().enumerate() {
        let id = i as u32 + 1;
        let started = config.and_then(|c| {
            let image = match &c.kernel {
                None => default_image,
                Some(k) => images
                    .iter()
                    .find(|m| module_name(m) == k.as_str() || m.string.contains(k.as_str()))
                    .ok_or_else(|| format!("no boot module named '{k}' for the kernel"))?,
            };
            start_domain(id, c, module_bytes(image), topology, ignore_abi_note)
        });
        if let Err(e) = started {
            println!("numavisor: domain {id}: refused: {e}");
            FAILED.store(true, Ordering::Release);
        }
    }
    // The boot CPU runs what is placed on it until every domain is gone.
    sched::run_until(CpuId(0), &|| PENDING.load(Ordering::Acquire) == 0);

    print_views(topology);
    let restored = heap().probe() == first_probe;
    println!(
        "numavisor: heap probe {} the one before the first domain",
        if restored { "matches" } else { "DIFFERS from" }
    );
    if !restored || FAILED.load(Ordering::Acquire) {
        ExitCode::Failure
    } else {
        ExitCode::Success
    }
}

/// What the placement sees: unclaimed free memory per node, vCPUs already
/// placed per CPU, the CPUs that run.
fn machine_state(topology: &Topology) -> (Vec<u64>, Vec<u32>, Vec<bool>) {
    let free = placement::unclaimed_free_bytes(heap(), topology);
    let load = (0..topology.cpus.len())
        .map(|c| LOAD.get(c).map_or(0, |l| l.load(Ordering::Acquire)))
        .collect();
    (free, load, sched::online_cpus(topology.cpus.len()))
}

/// Places domain `id`, claims its memory and sends its build to a CPU of
/// its own. `Err` refuses it (nothing stays claimed).
fn start_domain(
    id: u32,
    config: DomainConfig,
    image_bytes: &'static [u8],
    topology: &'static Topology,
    ignore_abi_note: bool,
) -> Result<(), String> {
    // Placement checks the config against the machine first.
    let (free, load, online) = machine_state(topology);
    let placed = placement::place_domain(
        &config,
        topology,
        &MachineState {
            unclaimed_free: &free,
            vcpus_on_cpu: &load,
            online: &online,
        },
    )?;
    let image = GuestImage::parse(image_bytes).map_err(|e| format!("guest image: {e}"))?;
    let image_abi = abi::image_abi(&image, image_bytes).map_err(|e| format!("guest image: {e}"))?;
    match abi::negotiate(image_abi, AbiVersion::CURRENT) {
        Ok(using) => println!(
            "numavisor: domain {id}: guest image speaks ABI {} ({}), the hypervisor {}: using ABI {using}",
            image_abi.version(),
            image_abi.source(),
            AbiVersion::CURRENT
        ),
        Err(e) if ignore_abi_note => {
            println!("numavisor: warning: domain {id}: {e}; running it anyway (abi-note=ignore)")
        }
        Err(e) => return Err(e),
    }
    let Placed {
        config,
        cpus,
        decision,
    } = placed;
    if let Some(d) = &decision {
        println!("numavisor: domain {id} ({}): {d}", config.name);
    }
    if let Some(k) = config
        .vnodes
        .iter()
        .position(|v| v.size_mib == 0 && v.vcpus.is_empty())
    {
        return Err(format!(
            "vnode {k} has neither memory nor vcpus: no SRAT entry could describe it"
        ));
    }
    assign_pci(id, &config.pci)?;
    let claim = match heap().claim(id, &build::pages_per_node(&config)) {
        Ok(c) => c,
        Err(e) => {
            release_pci(id);
            return Err(format!("cannot claim its memory: {e}"));
        }
    };
    println!(
        "numavisor: domain {id} ({}): {} MiB, {} vcpus, {} vnodes, layout {}, weight {}",
        config.name,
        config.memory_mib,
        config.vcpus,
        config.vnodes.len(),
        config.layout,
        config.weight
    );
    for (v, cpu) in cpus.iter().enumerate() {
        let vnode = config.vnode_of_vcpu(v as u32);
        let node = topology.cpu_node(*cpu);
        println!(
            "numavisor: domain {id}: vcpu {v} (vnode {}) runs on cpu {cpu} (node {}){}",
            vnode.map_or(String::from("?"), |k| format!("{k}")),
            node.map_or(String::from("?"), |n| format!("{n}")),
            if config.pcpu_of_vcpu(v as u32).is_some() {
                ", pinned"
            } else {
                ""
            }
        );
        if let Some(l) = LOAD.get(cpu.index()) {
            l.fetch_add(1, Ordering::AcqRel);
        }
    }
    PENDING.fetch_add(1, Ordering::AcqRel);
    let builder = cpus.first().copied().unwrap_or(CpuId(0));
    let job = BuildJob {
        id,
        config,
        cpus,
        claim,
        image_bytes,
        image,
        topology,
    };
    let work: sched::Work = Box::new(move || job.run());
    if let Err(work) = sched::run_on(builder, work) {
        // Every configuration has the boot CPU.
        if sched::run_on(CpuId(0), work).is_err() {
            println!("numavisor: domain {id}: no CPU takes its build");
        }
    }
    Ok(())
}

/// A placed, claimed domain waiting to be built on its CPU.
struct BuildJob {
    id: u32,
    config: DomainConfig,
    cpus: Vec<CpuId>,
    claim: Claim,
    image_bytes: &'static [u8],
    image: GuestImage,
    topology: &'static Topology,
}

impl BuildJob {
    fn run(self) {
        let id = self.id;
        let cpus = self.cpus.clone();
        if let Err(e) = self.build_and_start() {
            println!("numavisor: domain {id}: refused: {e}");
            FAILED.store(true, Ordering::Release);
            unplace(&cpus);
            release_pci(id);
            let left = heap().owned(id);
            if left.pages != 0 {
                println!(
                    "numavisor: domain {id}: refused build left {} pages owned",
                    left.pages
                );
            }
            end_pending();
        }
    }

    /// Builds the domain against its claim and starts vCPU 0. On `Err`
    /// nothing it took stays taken.
    fn build_and_start(self) -> Result<(), String> {
        let BuildJob {
            id,
            config,
            cpus,
            mut claim,
            image_bytes,
            image,
            topology,
        } = self;
        let heap = heap();
        let alloc = build::allocate(heap, &mut claim, &config);
        // Whatever the build did not use goes back to everyone.
        heap.release(claim);
        let mut alloc = alloc?;
        let built = build_domain(
            id,
            &config,
            image_bytes,
            &image,
            topology,
            &mut alloc,
            &cpus,
        );
        let (env, template, states) = match built {
            Ok(b) => b,
            Err(e) => {
                let _ = core::mem::take(&mut alloc).free(heap);
                return Err(e);
            }
        };
        let run = Arc::new_cyclic(|me| DomainRun {
            me: me.clone(),
            id,
            name: config.name.clone(),
            memory_mib: config.memory_mib,
            weight: config.weight,
            topology,
            env: spin::Mutex::new(Some(env)),
            vcpus: cpus
                .iter()
                .zip(states)
                .map(|(&cpu, state)| VcpuSlot {
                    cpu,
                    state: spin::Mutex::new(Some(state)),
                    up: AtomicBool::new(false),
                    running: AtomicBool::new(false),
                    ran: AtomicU64::new(0),
                    ran_shared: AtomicU64::new(0),
                })
                .collect(),
            live: AtomicU32::new(0),
            dying: AtomicBool::new(false),
            end: spin::Mutex::new(None),
            exits: AtomicU64::new(0),
            in_guest: AtomicU32::new(0),
            paused: AtomicBool::new(false),
            tlb_generation: AtomicU64::new(0),
            template,
            time_limit: config.time_limit.map(|secs| {
                (
                    Deadline::after_us(u64::from(secs).saturating_mul(1_000_000)),
                    secs,
                )
            }),
        });
        DOMAINS.lock().push(run.clone());
        let boot = run.env.lock().as_ref().map(|e| e.boot);
        let started = match boot {
            Some(b) => run.start_vcpu(0, b.entry, b.gdt, b.gdt_limit),
            None => Err(pv_abi::Error::InvalidArgument),
        };
        if let Err(e) = started {
            println!("numavisor: domain {id}: vcpu 0 cannot start: {e}");
            *run.end.lock() = Some(DomainEnd::Killed {
                reason: format!("vcpu 0 did not start: {e}"),
                rip: boot.map_or(0, |b| b.entry.rip),
                gpa: None,
            });
            teardown(&run);
            return Ok(());
        }
        print_views(topology);
        Ok(())
    }
}

/// Where vCPU 0 starts.
#[derive(Clone, Copy)]
pub struct BootEntry {
    pub entry: EntryState,
    pub gdt: u64,
    pub gdt_limit: u32,
}

/// Gives the CPUs a domain's vCPUs were placed on back to placement.
fn unplace(cpus: &[CpuId]) {
    for c in cpus {
        if let Some(l) = LOAD.get(c.index()) {
            l.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One domain fewer to wait for; the boot CPU checks when woken.
fn end_pending() {
    PENDING.fetch_sub(1, Ordering::AcqRel);
    sched::kick(CpuId(0));
}

/// Reserves `devices` for domain `id`: a device goes to one domain at a time.
fn assign_pci(id: u32, devices: &[Bdf]) -> Result<(), String> {
    let mut assigned = PCI_ASSIGNED.lock();
    for bdf in devices {
        if let Some((_, other)) = assigned.iter().find(|(b, _)| b == bdf) {
            return Err(format!(
                "PCI device {bdf} is assigned to domain {other} already"
            ));
        }
    }
    assigned.extend(devices.iter().map(|&b| (b, id)));
    Ok(())
}

fn release_pci(id: u32) {
    PCI_ASSIGNED.lock().retain(|&(_, d)| d != id);
}

/// An ASID for a new domain; `(asid, shared)`, shared when the pool is
/// empty and the domain must flush its TLB at every entry.
fn take_asid(id: u32) -> (u32, bool) {
    let n = nr_asids().clamp(2, 64);
    let mut used = ASIDS.lock();
    match (1..n).find(|a| *used & (1u64 << a) == 0) {
        Some(a) => {
            *used |= 1u64 << a;
            (a, false)
        }
        None => (1 + id % (n - 1), true),
    }
}

fn give_asid(asid: u32, shared: bool) {
    if !shared && asid < 64 {
        *ASIDS.lock() &= !(1u64 << asid);
    }
}

/// Builds domain `id` in `alloc` (its memory): layout, P->node check, guest
/// image, page tables, devices, vCPU state. On `Err` everything but `alloc`
/// is given back.
fn build_domain(
    id: u32,
    config: &DomainConfig,
    image_bytes: &[u8],
    image: &GuestImage,
    topology: &'static Topology,
    alloc: &mut Allocation,
    placement: &[CpuId],
) -> Result<(Env, VcpuTemplate, Vec<VcpuBlock>), String> {
    let heap = heap();
    let layout = DomainLayout::compute(config.layout, &config.vnodes, &alloc.extents)?;
    let pnodes: Vec<NodeId> = config.vnodes.iter().map(|v| v.pnode).collect();
    layout.verify_every_page(|m| heap.frame_table().node_of(m), &pnodes)?;
    println!(
        "numavisor: domain {id}: P->node == M->node verified for all {} pages",
        layout.total_pages()
    );
    let mut text = String::new();
    for line in format!("{layout}").lines() {
        let _ = writeln!(text, "numavisor: domain {id}: {line}");
    }
    print!("{text}");

    // Assigned PCI devices: found, sized, their BARs clear of the domain.
    let mut devices = Vec::new();
    for &bdf in &config.pci {
        let dev = pci::probe(&mut PortConfigSpace, bdf)?;
        pci::check_bars(&dev, &layout, heap.frame_table())?;
        devices.push(dev);
    }

    let mut mem = DomainMemory {
        layout: &layout,
        machine: IdentityMachine,
    };
    for m in &layout.mappings {
        mem.machine.zero(m.maddr(), m.bytes());
    }
    let plan = build::plan(config, &layout, image)?;
    let boot = build::load(config, &mut mem, image_bytes, image, &plan)?;

    // Nested page tables, near the boot vCPU's memory.
    let npt_node = config
        .vnode_of_vcpu(0)
        .and_then(|k| pnodes.get(k).copied())
        .unwrap_or(NodeId(0));
    let tables = HeapTables {
        heap,
        node: npt_node,
        owner: id,
        taken: Vec::new(),
    };
    let mut npt = PageTables::new(tables, pt::WRITABLE | pt::USER)
        .map_err(|e| format!("nested page tables: {e}"))?;
    let mut mapped = Ok(());
    for m in &layout.mappings {
        if let Err(e) = npt.map(m.gpa.0, m.maddr().0, m.bytes()) {
            mapped = Err(format!("nested page tables: {e}"));
            break;
        }
    }
    // Device memory: at its machine address, uncached.
    for dev in &devices {
        for bar in dev.memory_bars() {
            if mapped.is_ok() {
                mapped = npt
                    .map_with(bar.base, bar.base, bar.size, pt::PWT | pt::PCD)
                    .map_err(|e| format!("PCI device {}: mapping {bar}: {e}", dev.bdf));
            }
        }
    }
    let maps =
        mapped.and_then(|()| intercept_maps(heap).map_err(|e| format!("permission maps: {e}")));
    // Each vCPU's state (VMCB, registers) on the node of the CPU it runs on.
    let state = maps.and_then(|m| Ok((m, alloc_vcpu_state(id, placement)?)));
    let (maps, vcpu_blocks) = match state {
        Ok(s) => s,
        Err(e) => {
            let (tables, _) = npt.into_memory();
            for mfn in tables.taken {
                let _ = heap.free(mfn, 0);
            }
            return Err(e);
        }
    };
    let state_nodes: Vec<String> = vcpu_blocks
        .iter()
        .map(|&m| {
            heap.frame_table()
                .node_of(m)
                .map_or(String::from("?"), |n| format!("{n}"))
        })
        .collect();
    println!(
        "numavisor: domain {id}: vcpu state: {} KiB each, on node(s) {} (its CPU's node, or the nearest with memory)",
        (PAGE_SIZE << VcpuBlock::ORDER) >> 10,
        state_nodes.join(",")
    );
    println!(
        "numavisor: domain {id}: nested paging: {} x 2 MiB + {} x 4 KiB, {} table pages on node {npt_node}",
        npt.pages_2m,
        npt.pages_4k,
        npt.memory().taken.len()
    );
    let mut cs = PortConfigSpace;
    for dev in &devices {
        let mut text = format!("numavisor: domain {id}: pci {dev} assigned\n");
        for bar in &dev.bars {
            let _ = match bar.kind {
                pci::BarKind::Io => writeln!(
                    text,
                    "numavisor: domain {id}: pci {}: {bar}: I/O ports not opened to the guest",
                    dev.bdf
                ),
                _ => writeln!(
                    text,
                    "numavisor: domain {id}: pci {}: {bar} mapped at the same guest-physical address, uncached",
                    dev.bdf
                ),
            };
        }
        print!("{text}");
    }
    let emulator = PciEmulator::new(&mut cs, devices);

    let npt_root = npt.root();
    let mut node_pages = vec![0u64; topology.nr_nodes()];
    for (k, v) in layout.vnodes.iter().enumerate() {
        if let Some(slot) = pnodes.get(k).and_then(|p| node_pages.get_mut(p.index())) {
            *slot += v.pages;
        }
    }
    let vnuma = build::vnuma_view(config, &layout);
    let (asid, asid_shared) = take_asid(id);
    if asid_shared {
        println!(
            "numavisor: domain {id}: every ASID is taken: sharing ASID {asid}, TLB flushed at every entry"
        );
    }
    let template = VcpuTemplate {
        npt_root,
        maps,
        asid,
        asid_shared,
    };
    let states = vcpu_blocks
        .into_iter()
        // SAFETY: each block was just allocated for its vCPU, 2^ORDER
        // identity-mapped pages that nothing else reaches (never frame 0).
        .map(|block| unsafe { VcpuBlock::new(block) })
        .collect();
    let env = Env {
        id,
        p2m: P2m {
            layout,
            alloc: core::mem::take(alloc),
            npt,
            machine: IdentityMachine,
            vnode_pnode: pnodes,
            node_pages,
            flush_tlb: false,
        },
        vnuma,
        topology,
        console: ConsoleBuffer::default(),
        pci: emulator,
        log_limit: RateLimit::default(),
        boot: BootEntry {
            entry: EntryState {
                rip: boot.entry,
                cr3: boot.cr3.0,
                rsp: 0,
                rsi: boot.start_info.0,
                rdi: 0,
            },
            gdt: boot.gdt.0,
            gdt_limit: u32::from(boot.gdt_limit),
        },
    };
    Ok((env, template, states))
}

/// A block for each vCPU's state from the heap, on the node of the CPU it
/// runs on (the nearest node with memory for a memoryless one), as Xen
/// allocates a vCPU's structures near its processor; owned by the domain.
fn alloc_vcpu_state(id: u32, placement: &[CpuId]) -> Result<Vec<Mfn>, String> {
    let heap = heap();
    let mut blocks = Vec::with_capacity(placement.len());
    for (v, &cpu) in placement.iter().enumerate() {
        let got = heap
            .alloc(VcpuBlock::ORDER, AllocRequest::cpu(cpu))
            .and_then(|mfn| heap.set_owner(mfn, id).map(|()| mfn));
        match got {
            Ok(mfn) => blocks.push(mfn),
            Err(e) => {
                for &mfn in &blocks {
                    let _ = heap.free(mfn, VcpuBlock::ORDER);
                }
                return Err(format!("no memory for vcpu {v}'s state: {e}"));
            }
        }
    }
    Ok(blocks)
}

/// Tears down a domain whose vCPUs are all gone (or never started): its
/// console and devices, then every page it owned, checked through the
/// frame table's owner field; then it leaves the table.
pub fn teardown(run: &DomainRun) {
    let id = run.id;
    let Some(mut env) = run.env.lock().take() else {
        return;
    };
    env.console.flush(&mut Env::print_line(id));
    if let Some(n) = env.log_limit.take_suppressed() {
        println!("numavisor: domain {id}: {n} similar messages suppressed");
    }
    // Bus mastering off before the domain's memory goes back to the heap.
    env.pci.release(&mut PortConfigSpace);
    let end = run.end.lock().take().unwrap_or(DomainEnd::Killed {
        reason: String::from("every vcpu stopped without an end"),
        rip: 0,
        gpa: None,
    });
    report_end(run, &end);

    let heap = heap();
    let Env { p2m, .. } = env;
    let pages = p2m.alloc.total_pages();
    let mut freed = p2m.alloc.free(heap).map_err(|e| format!("{e}"));
    let (tables, _) = p2m.npt.into_memory();
    for mfn in tables.taken {
        if let Err(e) = heap.free(mfn, 0) {
            freed = Err(format!("page-table page {mfn}: {e}"));
        }
    }
    for slot in &run.vcpus {
        if let Some(state) = slot.state.lock().take() {
            if let Err(e) = heap.free(state.mfn(), VcpuBlock::ORDER) {
                freed = Err(format!("vcpu state: {e}"));
            }
        }
    }
    give_asid(run.template.asid, run.template.asid_shared);
    let left = heap.owned(id);
    let clean = left.pages == 0 && freed.is_ok();
    if left.pages == 0 {
        println!("numavisor: domain {id}: teardown: {pages} pages returned, none left owned");
    } else {
        println!(
            "numavisor: domain {id}: teardown: {pages} pages returned, {} pages in {} blocks LEFT OWNED",
            left.pages, left.blocks
        );
    }
    if let Err(e) = &freed {
        println!("numavisor: domain {id}: teardown: freeing its memory failed: {e}");
    }
    if !clean || !end.is_success() {
        FAILED.store(true, Ordering::Release);
    }
    ENDED.lock().push(DomainRow {
        name: run.name.clone(),
        id,
        mem_mib: 0,
        vcpus: 0,
        state: DomainState {
            shutdown: Some(match end {
                DomainEnd::Shutdown(s) if s.is_success() => ShutdownReason::Poweroff,
                _ => ShutdownReason::Crash,
            }),
            dying: true,
            ..DomainState::default()
        },
        cpu_time_ns: cpu_time_ns(run),
    });
    DOMAINS.lock().retain(|d| d.id != id);
    release_pci(id);
    unplace(&run.vcpus.iter().map(|s| s.cpu).collect::<Vec<_>>());
    // The last domain's end is shown by the run's closing views.
    if PENDING.load(Ordering::Acquire) > 1 {
        print_views(run.topology);
    }
    end_pending();
}

fn cpu_time_ns(run: &DomainRun) -> u64 {
    run.vcpus.iter().map(VcpuSlot::ran_ns).sum()
}

fn report_end(run: &DomainRun, end: &DomainEnd) {
    let (id, name) = (run.id, &run.name);
    let exits = run.exits.load(Ordering::Relaxed);
    let mut text = String::new();
    let _ = match end {
        DomainEnd::Shutdown(status) => writeln!(
            text,
            "numavisor: domain {id} ({name}): shutdown, status {status} after {exits} exits"
        ),
        DomainEnd::Killed { reason, rip, gpa } => {
            let _ = write!(
                text,
                "numavisor: domain {id} ({name}): killed: {reason}; guest rip {rip:#x}"
            );
            if let Some(g) = gpa {
                let _ = write!(text, ", guest-physical address {g:#x}");
            }
            writeln!(text, " (after {exits} exits)")
        }
    };
    for (v, slot) in run.vcpus.iter().enumerate() {
        let (ran, shared) = (slot.ran_ns() / 1_000_000, slot.ran_shared_ns() / 1_000_000);
        let _ = writeln!(
            text,
            "numavisor: domain {id}: vcpu {v} ran {ran} ms on cpu {} ({shared} ms of it sharing the cpu)",
            slot.cpu
        );
    }
    print!("{text}");
}

/// `xl list`, `xl vcpu-list` and debug-key `u`, as one block.
fn print_views(topology: &Topology) {
    let running: Vec<Arc<DomainRun>> = DOMAINS.lock().clone();
    let mut rows: Vec<DomainRow> = ENDED.lock().clone();
    let mut vcpus = Vec::new();
    let mut pages = Vec::new();
    for d in &running {
        let any_running = d.vcpus.iter().any(|s| s.running.load(Ordering::Relaxed));
        rows.push(DomainRow {
            name: d.name.clone(),
            id: d.id,
            mem_mib: d.memory_mib,
            vcpus: d
                .vcpus
                .iter()
                .filter(|s| s.up.load(Ordering::Relaxed))
                .count() as u32,
            state: DomainState {
                running: any_running,
                blocked: !any_running,
                dying: d.dying.load(Ordering::Relaxed),
                ..DomainState::default()
            },
            cpu_time_ns: cpu_time_ns(d),
        });
        for (v, s) in d.vcpus.iter().enumerate() {
            let state = if !s.up.load(Ordering::Relaxed) {
                VcpuState::Offline
            } else if s.running.load(Ordering::Relaxed) {
                VcpuState::Running(s.cpu)
            } else {
                VcpuState::Runnable(s.cpu)
            };
            vcpus.push(VcpuRow {
                domain: d.name.clone(),
                domid: d.id,
                vcpu: v as u32,
                state,
                time_ns: s.ran_ns(),
                affinity: vec![s.cpu],
            });
        }
        pages.push(DomainPages {
            domid: d.id,
            pages: d.node_pages(),
        });
    }
    rows.sort_by_key(|r| r.id);
    let mut text = format!("{}", XlList(&rows));
    let _ = write!(
        text,
        "{}",
        XlVcpuList {
            nr_cpus: topology.cpus.len(),
            rows: &vcpus
        }
    );
    let _ = write!(
        text,
        "{}",
        NumaMemory {
            nr_nodes: topology.nr_nodes(),
            domains: &pages
        }
    );
    print!("{text}");
}

//! Domains on the real machine: build each one from its config and the
//! guest image (boot modules), run it, tear it down, and report.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use hypervisor::arch::x86_64::cpu;
use hypervisor::arch::x86_64::memory::{self as arch_memory, HeapTables};
use hypervisor::arch::x86_64::pci::PortConfigSpace;
use hypervisor::boot::multiboot::Module;
use hypervisor::domain::abi;
use hypervisor::domain::build::{self, Allocation, DomainEnd, DomainMemory, MachineMemory};
use hypervisor::domain::config::{DomainConfig, MIRROR_NODE_MIB};
use hypervisor::domain::elf::GuestImage;
use hypervisor::domain::exchange::P2m;
use hypervisor::domain::layout::DomainLayout;
use hypervisor::domain::placement::place_vcpus;
use hypervisor::domain::run::{handle_exit, Action};
use hypervisor::hypercall::{
    ConsoleBuffer, ExchangeRequest, Exchanged, GuestAccess, HypercallEnv, MachineView, VnumaView,
};
use hypervisor::mm::addr::{Maddr, Mfn, PAGE_SHIFT, PAGE_SIZE};
use hypervisor::mm::heap::{AllocRequest, Heap};
use hypervisor::numa::topology::Topology;
use hypervisor::numa::{CpuId, NodeId};
use hypervisor::pci::config::PciEmulator;
use hypervisor::pci::{self, Bdf};
use hypervisor::svm::exit::ExitReason;
use hypervisor::svm::paging::{self as pt, PageTables};
use hypervisor::svm::vcpu::{EntryState, InterceptMaps, Vcpu, EFER_NXE};
use hypervisor::{print, println};
use pv_abi::cpuid::CpuidRegs;
use pv_abi::exit::ExitCode;
use pv_abi::AbiVersion;

use super::sched;
use super::svm_maps::intercept_maps;

/// Machine memory of the running domain, through the identity map.
///
/// Only [`DomainMemory`] calls it, with addresses its layout maps: pages the
/// heap gave this domain.
struct IdentityMachine;

impl MachineMemory for IdentityMachine {
    fn read(&self, at: Maddr, buf: &mut [u8]) {
        // SAFETY: `at..at + len` is memory of the domain (see the type's doc),
        // identity-mapped RAM.
        unsafe { arch_memory::copy_from_machine(at, buf) }
    }

    fn write(&mut self, at: Maddr, bytes: &[u8]) {
        // SAFETY: as for `read`; the domain's pages are not hypervisor data.
        unsafe { arch_memory::copy_to_machine(at, bytes) }
    }

    fn zero(&mut self, at: Maddr, len: u64) {
        // SAFETY: as for `write`.
        unsafe { core::ptr::write_bytes(at.0 as *mut u8, 0, len as usize) }
    }
}

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

/// Builds and runs every domain; returns the worst status. With
/// `ignore_abi_note`, guest images are run whatever ABI major they declare;
/// `mirror_pci` are the PCI devices the mirror domain gets.
pub fn run_all(
    modules: &[Module],
    topology: &Topology,
    heap: &mut Heap,
    ignore_abi_note: bool,
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
    if configs.is_empty() {
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
    let mut status = ExitCode::Success;
    for (i, config) in domains.into_iter().enumerate() {
        let id = i as u32 + 1;
        let outcome = config.and_then(|c| {
            let image = match &c.kernel {
                None => default_image,
                Some(k) => images
                    .iter()
                    .find(|m| module_name(m) == k.as_str() || m.string.contains(k.as_str()))
                    .ok_or_else(|| format!("no boot module named '{k}' for the kernel"))?,
            };
            run_domain(id, &c, module_bytes(image), topology, heap, ignore_abi_note)
        });
        match outcome {
            Ok(end) if end.is_success() => {}
            Ok(_) => status = ExitCode::Failure,
            Err(e) => {
                println!("numavisor: domain {id}: refused: {e}");
                status = ExitCode::Failure;
            }
        }
    }
    status
}

/// The hypercall environment of a running domain.
struct Env<'a> {
    id: u32,
    /// Its memory, nested page tables and heap blocks (the heap is reached
    /// through the page-table memory, which holds it).
    p2m: P2m<HeapTables<'a>, IdentityMachine>,
    vnuma: VnumaView,
    topology: &'a Topology,
    console: ConsoleBuffer,
    /// Its view of PCI configuration space.
    pci: PciEmulator,
}

impl HypercallEnv for Env<'_> {
    fn memory(&mut self) -> &mut dyn GuestAccess {
        &mut self.p2m
    }

    fn vnuma(&self) -> &VnumaView {
        &self.vnuma
    }

    fn machine(&self) -> MachineView {
        let t = self.topology;
        let heap = self.p2m.heap();
        let node_mem: Vec<(u64, u64)> = t
            .nodes
            .iter()
            .map(|n| (t.memory_bytes(n.id) >> PAGE_SHIFT, heap.free_pages(n.id)))
            .collect();
        MachineView {
            nr_cpus: t.cpus.len() as u32,
            total_pages: node_mem.iter().map(|n| n.0).sum(),
            free_pages: node_mem.iter().map(|n| n.1).sum(),
            node_mem,
            distances: t.distances().iter().map(|&d| u32::from(d)).collect(),
            cpu_to_node: t.cpus.iter().map(|c| u32::from(c.node.0)).collect(),
        }
    }

    fn node_pages(&self) -> Vec<u64> {
        self.p2m.node_pages.clone()
    }

    fn console(&mut self, bytes: &[u8]) {
        let id = self.id;
        self.console
            .push(bytes, &mut |line| println!("(d{id}) {line}"));
    }

    fn dma_exchange(&mut self, request: ExchangeRequest) -> Result<Exchanged, pv_abi::Error> {
        let id = self.id;
        // Whatever the guest printed so far comes first.
        self.console.flush(&mut |line| println!("(d{id}) {line}"));
        match self.p2m.exchange(&request) {
            Ok(report) => {
                println!("numavisor: domain {id}: {report}");
                Ok(Exchanged {
                    maddr: pv_abi::Maddr(report.new.maddr().0),
                    pnode: u32::from(report.node.0),
                    off_node: report.off_node(),
                })
            }
            Err(e) => {
                println!(
                    "numavisor: domain {id}: dma exchange of {} pages at gpa {:#x} below 2^{} refused: {e}",
                    request.pages, request.gpa.0, request.address_bits
                );
                Err(e.abi_error())
            }
        }
    }

    fn port_io(&mut self, port: u16, size: u8, write: Option<u32>) -> Option<u32> {
        self.pci.port_io(&mut PortConfigSpace, port, size, write)
    }
}

fn host_cpuid(leaf: u32, subleaf: u32) -> CpuidRegs {
    let r = cpu::cpuid(leaf, subleaf);
    CpuidRegs {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Builds, runs and tears down one domain.
fn run_domain(
    id: u32,
    config: &DomainConfig,
    image_bytes: &[u8],
    topology: &Topology,
    heap: &mut Heap,
    ignore_abi_note: bool,
) -> Result<DomainEnd, String> {
    let mut config = config.clone();
    config.check_against(topology)?;
    config.place_default_vnode(topology, |n| heap.free_pages(n) << PAGE_SHIFT)?;
    if let Some(k) = config
        .vnodes
        .iter()
        .position(|v| v.size_mib == 0 && v.vcpus.is_empty())
    {
        return Err(format!(
            "vnode {k} has neither memory nor vcpus: no SRAT entry could describe it"
        ));
    }
    let placement = place_vcpus(&config, topology, &sched::online_cpus(topology.cpus.len()))?;
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
    println!(
        "numavisor: domain {id} ({}): {} MiB, {} vcpus, {} vnodes, layout {}",
        config.name,
        config.memory_mib,
        config.vcpus,
        config.vnodes.len(),
        config.layout
    );

    for (v, cpu) in placement.iter().enumerate() {
        let vnode = config.vnode_of_vcpu(v as u32);
        let node = topology.cpu_node(*cpu);
        println!(
            "numavisor: domain {id}: vcpu {v} (vnode {}) runs on cpu {cpu} (node {}){}",
            vnode.map_or(String::from("?"), |k| format!("{k}")),
            node.map_or(String::from("?"), |n| format!("{n}")),
            if config.cpus.is_some() {
                ", pinned"
            } else {
                ""
            }
        );
    }
    // The permission maps outlive the domain: take them before the probe.
    intercept_maps(heap).map_err(|e| format!("permission maps: {e}"))?;
    let before = heap.probe();
    let mut alloc = build::allocate(heap, &config)?;
    // The run may exchange pages (DMA_EXCHANGE): `alloc` comes back with
    // the blocks the domain owns at its end.
    let result = build_and_run(
        id,
        &config,
        image_bytes,
        &image,
        topology,
        heap,
        &mut alloc,
        &placement,
    );
    let pages = alloc.total_pages();
    if let Err(e) = alloc.free(heap) {
        println!("numavisor: domain {id}: teardown: freeing its memory failed: {e}");
    }
    let restored = heap.probe() == before;
    println!(
        "numavisor: domain {id}: teardown: {pages} pages returned, heap probe {}",
        if restored {
            "matches the one before the domain"
        } else {
            "DIFFERS from the one before the domain"
        }
    );
    let end = result?;
    if !restored {
        return Ok(DomainEnd::Killed {
            reason: String::from("teardown lost pages"),
            rip: 0,
            gpa: None,
        });
    }
    Ok(end)
}

#[allow(clippy::too_many_arguments)]
fn build_and_run(
    id: u32,
    config: &DomainConfig,
    image_bytes: &[u8],
    image: &GuestImage,
    topology: &Topology,
    heap: &mut Heap,
    alloc: &mut Allocation,
    placement: &[CpuId],
) -> Result<DomainEnd, String> {
    let layout = DomainLayout::compute(config.layout, &config.vnodes, &alloc.extents)?;
    let pnodes: Vec<NodeId> = config.vnodes.iter().map(|v| v.pnode).collect();
    layout.verify_every_page(|m| heap.frame_table().node_of(m), &pnodes)?;
    println!(
        "numavisor: domain {id}: P->node == M->node verified for all {} pages",
        layout.total_pages()
    );
    for line in format!("{layout}").lines() {
        println!("numavisor: domain {id}: {line}");
    }

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
    let maps = mapped.and_then(|()| {
        intercept_maps(npt.memory_mut().heap).map_err(|e| format!("permission maps: {e}"))
    });
    // Each vCPU's state (VMCB, registers) on the node of the CPU it runs on.
    let state = maps.and_then(|m| Ok((m, alloc_vcpu_state(npt.memory_mut().heap, placement)?)));
    let (maps, vcpu_state) = match state {
        Ok(s) => s,
        Err(e) => {
            let (tables, _) = npt.into_memory();
            for mfn in tables.taken {
                let _ = tables.heap.free(mfn, 0);
            }
            return Err(e);
        }
    };
    let state_nodes: Vec<String> = vcpu_state
        .iter()
        .map(|&m| {
            npt.memory()
                .heap
                .frame_table()
                .node_of(m)
                .map_or(String::from("?"), |n| format!("{n}"))
        })
        .collect();
    println!(
        "numavisor: domain {id}: vcpu state: {} KiB each, on node(s) {} (its CPU's node, or the nearest with memory)",
        (PAGE_SIZE << VCPU_STATE_ORDER) >> 10,
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
        println!("numavisor: domain {id}: pci {dev} assigned");
        for bar in &dev.bars {
            match bar.kind {
                pci::BarKind::Io => println!(
                    "numavisor: domain {id}: pci {}: {bar}: I/O ports not opened to the guest",
                    dev.bdf
                ),
                _ => println!(
                    "numavisor: domain {id}: pci {}: {bar} mapped at the same guest-physical address, uncached",
                    dev.bdf
                ),
            }
        }
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
    };
    let run = DomainRun {
        id,
        topology,
        env: spin::Mutex::new(env),
        placement: placement.to_vec(),
        up: (0..config.vcpus).map(|_| AtomicBool::new(false)).collect(),
        live: AtomicU32::new(0),
        dying: AtomicBool::new(false),
        end: spin::Mutex::new(None),
        exits: AtomicU64::new(0),
        in_guest: AtomicU32::new(0),
        paused: AtomicBool::new(false),
        tlb_generation: AtomicU64::new(0),
        template: VcpuTemplate { npt_root, maps },
        vcpu_state,
    };
    let entry = EntryState {
        rip: boot.entry,
        cr3: boot.cr3.0,
        rsp: 0,
        rsi: boot.start_info.0,
        rdi: 0,
    };
    let started = run.start_vcpu(0, entry, boot.gdt.0, u32::from(boot.gdt_limit));
    if let Err(e) = started {
        println!("numavisor: domain {id}: vcpu 0 cannot start: {e}");
        *run.end.lock() = Some(DomainEnd::Killed {
            reason: format!("vcpu 0 did not start: {e}"),
            rip: boot.entry,
            gpa: None,
        });
    } else {
        // The boot CPU runs what is placed on it, and waits, until every
        // vCPU of the domain is gone.
        sched::run_until_idle(CpuId(0), &run.live);
    }
    let DomainRun {
        env,
        end,
        exits,
        vcpu_state,
        ..
    } = run;
    let mut env = env.into_inner();
    env.console.flush(&mut |line| println!("(d{id}) {line}"));
    // Bus mastering off before the domain's memory goes back to the heap.
    env.pci.release(&mut cs);
    let end = end.into_inner().unwrap_or(DomainEnd::Killed {
        reason: String::from("every vcpu stopped without an end"),
        rip: 0,
        gpa: None,
    });
    report_end(id, &config.name, &end, exits.into_inner());

    let Env { p2m, .. } = env;
    *alloc = p2m.alloc;
    let (tables, _) = p2m.npt.into_memory();
    for mfn in tables.taken {
        let _ = tables.heap.free(mfn, 0);
    }
    // Every vCPU is gone (`run_until_idle`): nothing uses their state now.
    free_vcpu_state(tables.heap, &vcpu_state);
    Ok(end)
}

/// Pages (as an order) of one vCPU's state: a `Vcpu`, VMCB first.
const VCPU_STATE_ORDER: u8 = 1;
const _: () = assert!(
    core::mem::size_of::<Vcpu>() <= (PAGE_SIZE as usize) << VCPU_STATE_ORDER
        && core::mem::align_of::<Vcpu>() <= PAGE_SIZE as usize
);

/// A block for each vCPU's state from the heap, on the node of the CPU it
/// runs on (the nearest node with memory for a memoryless one), as Xen
/// allocates a vCPU's structures near its processor.
fn alloc_vcpu_state(heap: &mut Heap, placement: &[CpuId]) -> Result<Vec<Mfn>, String> {
    let mut blocks = Vec::with_capacity(placement.len());
    for (v, &cpu) in placement.iter().enumerate() {
        match heap.alloc(VCPU_STATE_ORDER, AllocRequest::cpu(cpu)) {
            Ok(mfn) => blocks.push(mfn),
            Err(e) => {
                free_vcpu_state(heap, &blocks);
                return Err(format!("no memory for vcpu {v}'s state: {e}"));
            }
        }
    }
    Ok(blocks)
}

fn free_vcpu_state(heap: &mut Heap, blocks: &[Mfn]) {
    for &mfn in blocks {
        let _ = heap.free(mfn, VCPU_STATE_ORDER);
    }
}

/// What every vCPU of a domain shares.
#[derive(Clone, Copy)]
struct VcpuTemplate {
    npt_root: u64,
    maps: InterceptMaps,
}

/// A running domain: its hypercall state behind one lock, and the state of
/// its vCPUs, which run on the CPUs of `placement` (`sched`).
struct DomainRun<'a> {
    id: u32,
    topology: &'a Topology,
    env: spin::Mutex<Env<'a>>,
    /// The CPU each vCPU runs on.
    placement: Vec<CpuId>,
    /// Each vCPU: up (queued or running).
    up: Vec<AtomicBool>,
    /// vCPUs up; the boot CPU waits for 0 before it tears the domain down.
    live: AtomicU32,
    /// The domain is ending: every vCPU stops at its next exit.
    dying: AtomicBool,
    /// How it ended (the first vCPU to end it decides).
    end: spin::Mutex<Option<DomainEnd>>,
    exits: AtomicU64,
    /// vCPUs inside VMRUN (or about to enter).
    in_guest: AtomicU32,
    /// A vCPU changes the guest-physical map: the others stay out.
    paused: AtomicBool,
    /// Bumped when a guest-physical mapping changes; a vCPU flushes its
    /// TLB before it runs with a newer one.
    tlb_generation: AtomicU64,
    template: VcpuTemplate,
    /// Each vCPU's state block (identity-mapped, `VCPU_STATE_ORDER`): used
    /// by the vCPU's task while it is up, rebuilt at each UP.
    vcpu_state: Vec<Mfn>,
}

impl DomainRun<'_> {
    /// Builds vCPU `v` in `entry` and queues it on its CPU.
    fn start_vcpu(
        &self,
        v: u32,
        entry: EntryState,
        gdt: u64,
        gdt_limit: u32,
    ) -> Result<(), pv_abi::Error> {
        let (Some(&cpu), Some(up), Some(state)) = (
            self.placement.get(v as usize),
            self.up.get(v as usize),
            self.vcpu_state.get(v as usize),
        ) else {
            return Err(pv_abi::Error::NoSuchThing);
        };
        // Up from here: the state block is this call's until the vCPU's task
        // is gone (`vcpu_gone` clears `up` as its last use of the block).
        if up
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(pv_abi::Error::InvalidArgument);
        }
        let t = self.template;
        let ptr = state.maddr().0 as *mut Vcpu;
        // SAFETY: the block is heap memory of this domain, identity-mapped,
        // large and aligned enough for a `Vcpu` (checked above), and no task
        // uses it (`up` was clear and is now ours).
        let vcpu = unsafe {
            ptr.write(Vcpu::new(v, self.id, entry, t.npt_root, t.maps));
            &mut *ptr
        };
        vcpu.vmcb.save.gdtr.base = gdt;
        vcpu.vmcb.save.gdtr.limit = gdt_limit;
        vcpu.vmcb.save.efer |= EFER_NXE;
        vcpu.tlb_generation = self.tlb_generation.load(Ordering::Acquire);
        self.live.fetch_add(1, Ordering::AcqRel);
        // SAFETY: the boot CPU keeps `self` and the state block alive until
        // `live` is 0, and `vcpu_gone` decrements it as the task's last use
        // of either; the block is the task's alone while `up` is set.
        let task = unsafe { sched::Task::new(ptr, self) };
        if sched::enqueue(cpu, task).is_err() {
            self.live.fetch_sub(1, Ordering::AcqRel);
            up.store(false, Ordering::Release);
            println!(
                "numavisor: domain {}: vcpu {v}: CPU {cpu} does not run vCPUs",
                self.id
            );
            return Err(pv_abi::Error::Unsupported);
        }
        match self.topology.cpu_node(cpu) {
            Some(n) => println!(
                "numavisor: domain {}: vcpu {v} up on cpu {cpu} (node {n})",
                self.id
            ),
            None => println!("numavisor: domain {}: vcpu {v} up on cpu {cpu}", self.id),
        }
        Ok(())
    }

    /// Keeps every other vCPU out of the guest until [`resume_others`]:
    /// the caller (holding the domain lock, outside the guest itself) is
    /// about to change the guest-physical map.
    fn pause_others(&self) {
        self.paused.store(true, Ordering::SeqCst);
        self.kick_all();
        while self.in_guest.load(Ordering::SeqCst) != 0 {
            core::hint::spin_loop();
        }
    }

    fn resume_others(&self, map_changed: bool) {
        if map_changed {
            self.tlb_generation.fetch_add(1, Ordering::AcqRel);
        }
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Wakes every CPU that runs a vCPU of this domain (out of the guest).
    fn kick_all(&self) {
        let mut kicked: Vec<CpuId> = Vec::new();
        for (v, &c) in self.placement.iter().enumerate() {
            let is_up = self.up.get(v).is_some_and(|u| u.load(Ordering::Acquire));
            if is_up && !kicked.contains(&c) {
                kicked.push(c);
                sched::kick(c);
            }
        }
    }
}

impl sched::VcpuHost for DomainRun<'_> {
    fn may_enter(&self, vcpu: &mut Vcpu) -> bool {
        loop {
            if self.dying.load(Ordering::Acquire) {
                return false;
            }
            self.in_guest.fetch_add(1, Ordering::SeqCst);
            if !self.paused.load(Ordering::SeqCst) {
                break;
            }
            self.in_guest.fetch_sub(1, Ordering::SeqCst);
            while self.paused.load(Ordering::SeqCst) && !self.dying.load(Ordering::Acquire) {
                core::hint::spin_loop();
            }
        }
        let generation = self.tlb_generation.load(Ordering::Acquire);
        if vcpu.tlb_generation != generation {
            vcpu.vmcb.control.tlb_control = TLB_FLUSH_ALL;
            vcpu.tlb_generation = generation;
        }
        true
    }

    fn left_guest(&self) {
        self.in_guest.fetch_sub(1, Ordering::SeqCst);
    }

    fn handle_exit(&self, vcpu: &mut Vcpu) -> Action {
        vcpu.vmcb.control.tlb_control = 0;
        if ExitReason::from_code(vcpu.vmcb.control.exit_code) == ExitReason::Intr {
            vcpu.exits += 1;
            return Action::Interrupted;
        }
        let mut env = self.env.lock();
        let mut call = CallEnv {
            env: &mut env,
            run: self,
            caller: vcpu.id,
        };
        handle_exit(vcpu, &mut call, &host_cpuid)
    }

    fn vcpu_gone(&self, vcpu: &Vcpu, action: Option<Action>) {
        let id = self.id;
        let v = vcpu.id;
        match action {
            Some(Action::End(end)) => {
                let first = {
                    let mut slot = self.end.lock();
                    let first = slot.is_none();
                    if first {
                        *slot = Some(end);
                    }
                    first
                };
                if first && self.up.len() > 1 {
                    println!("numavisor: domain {id}: vcpu {v} ended the domain");
                }
                self.dying.store(true, Ordering::Release);
                self.kick_all();
            }
            Some(_) => println!("numavisor: domain {id}: vcpu {v} down"),
            None => {}
        }
        self.exits.fetch_add(vcpu.exits, Ordering::Relaxed);
        if let Some(up) = self.up.get(v as usize) {
            up.store(false, Ordering::Release);
        }
        // The last use of `self`: once `live` is 0 the boot CPU may free it.
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            sched::kick(CpuId(0));
        }
    }
}

/// The hypercall environment as one vCPU sees it: the domain's state, plus
/// who is calling.
struct CallEnv<'e, 'a> {
    env: &'e mut Env<'a>,
    run: &'e DomainRun<'a>,
    caller: u32,
}

impl HypercallEnv for CallEnv<'_, '_> {
    fn memory(&mut self) -> &mut dyn GuestAccess {
        self.env.memory()
    }

    fn vnuma(&self) -> &VnumaView {
        self.env.vnuma()
    }

    fn machine(&self) -> MachineView {
        self.env.machine()
    }

    fn node_pages(&self) -> Vec<u64> {
        self.env.node_pages()
    }

    fn console(&mut self, bytes: &[u8]) {
        self.env.console(bytes);
    }

    fn dma_exchange(&mut self, request: ExchangeRequest) -> Result<Exchanged, pv_abi::Error> {
        // No vCPU may use a translation of the pages being moved.
        self.run.pause_others();
        let result = self.env.dma_exchange(request);
        let changed = core::mem::take(&mut self.env.p2m.flush_tlb);
        self.run.resume_others(changed);
        result
    }

    fn port_io(&mut self, port: u16, size: u8, write: Option<u32>) -> Option<u32> {
        self.env.port_io(port, size, write)
    }

    fn calling_vcpu(&self) -> u32 {
        self.caller
    }

    fn nr_vcpus(&self) -> u32 {
        self.run.up.len() as u32
    }

    fn vcpu_is_up(&self, vcpu: u32) -> bool {
        self.run
            .up
            .get(vcpu as usize)
            .is_some_and(|u| u.load(Ordering::Acquire))
    }

    #[cfg(not(feature = "abi-1-2"))]
    fn vcpu_up(&mut self, vcpu: u32, context: &pv_abi::VcpuContext) -> Result<(), pv_abi::Error> {
        let entry = EntryState {
            rip: context.rip,
            cr3: context.cr3.0,
            rsp: context.rsp,
            rsi: context.arg,
            rdi: u64::from(vcpu),
        };
        self.run
            .start_vcpu(vcpu, entry, context.gdt_base, context.gdt_limit)
    }
}

/// VMCB `TLB_CONTROL`: flush the whole TLB on the next VMRUN.
const TLB_FLUSH_ALL: u8 = 1;

fn report_end(id: u32, name: &str, end: &DomainEnd, exits: u64) {
    match end {
        DomainEnd::Shutdown(status) => {
            println!(
                "numavisor: domain {id} ({name}): shutdown, status {status} after {exits} exits"
            )
        }
        DomainEnd::Killed { reason, rip, gpa } => {
            print!("numavisor: domain {id} ({name}): killed: {reason}; guest rip {rip:#x}");
            if let Some(g) = gpa {
                print!(", guest-physical address {g:#x}");
            }
            println!(" (after {exits} exits)");
        }
    }
}

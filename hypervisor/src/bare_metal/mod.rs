//! The boot sequence on bare metal (see `main.rs`).

mod domain_run;
mod domains;
mod sched;
mod selftest;
mod smp;
mod svm_maps;

use alloc::format;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::mem::size_of;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use buddy_system_allocator::LockedHeap;
use hypervisor::acpi::{AcpiTables, PhysAddr, PhysMemory};
use hypervisor::arch::x86_64::{apic, cpu, exit, idt, paging, serial, svm, timer};
use hypervisor::boot::cmdline::{self, Crash};
use hypervisor::boot::multiboot::{self, BootInfo};
use hypervisor::mm::addr::{Maddr, MemRange, PAGE_SHIFT};
use hypervisor::mm::frame_table::{FrameTable, PageInfo};
use hypervisor::mm::heap::{Heap, HeapTopology};
use hypervisor::numa::topology::{self, NumaOptions, Topology, TopologyInput};
use hypervisor::numa::CpuId;
use hypervisor::report::XlInfo;
use hypervisor::{print, println};
use pv_abi::exit::ExitCode;

/// The hypervisor's own small-object heap (Xen's "xenheap"). It starts on a
/// static arena and grows onto RAM once the memory map is known.
#[global_allocator]
static ALLOCATOR: LockedHeap<33> = LockedHeap::empty();

const EARLY_ARENA_SIZE: usize = 2 << 20;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; EARLY_ARENA_SIZE]>);

// SAFETY: the arena is handed to the allocator exactly once, at boot, and
// only ever accessed through it afterwards.
unsafe impl Sync for Arena {}

static EARLY_ARENA: Arena = Arena(UnsafeCell::new([0; EARLY_ARENA_SIZE]));

/// The NUMA heap, shared by every CPU once built: its own per-node locks
/// guard it.
static HEAP: spin::Once<Heap> = spin::Once::new();
/// The machine's topology, fixed once discovered.
static TOPOLOGY: spin::Once<Topology> = spin::Once::new();
/// ASIDs the CPU offers (the boot CPU's answer; every CPU is the same model).
static NR_ASIDS: AtomicU32 = AtomicU32::new(0);

/// The NUMA heap. Only called once the boot sequence has built it.
pub fn heap() -> &'static Heap {
    match HEAP.get() {
        Some(h) => h,
        None => fatal(
            ExitCode::Failure,
            format_args!("the NUMA heap was used before it was built"),
        ),
    }
}

/// ASIDs the CPU offers, ASID 0 (the host's) included.
pub fn nr_asids() -> u32 {
    NR_ASIDS.load(Ordering::Relaxed)
}

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Machine memory through the identity map, bounded by what is mapped.
struct IdentityMap;

/// End of the identity map (grows once, after the memory map is read).
static MAPPED_LIMIT: AtomicU64 = AtomicU64::new(paging::BOOT_MAPPED_LIMIT);

impl PhysMemory for IdentityMap {
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> bool {
        let Some(end) = addr.0.checked_add(buf.len() as u64) else {
            return false;
        };
        // Address 0 is a null pointer to Rust; nothing the hypervisor reads lives there.
        if addr.0 == 0 || end > MAPPED_LIMIT.load(Ordering::Relaxed) {
            return false;
        }
        // SAFETY: [addr, end) is inside the identity map (checked above), so
        // it is mapped, readable and does not alias `buf` (the hypervisor's
        // own memory is never passed to the parsers as a table address; even
        // if firmware pointed there, reading it is harmless).
        unsafe { core::ptr::copy_nonoverlapping(addr.0 as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    }
}

fn console_sink(bytes: &[u8]) {
    serial::write_bytes(bytes);
}

fn warn(msg: &str) {
    println!("numavisor: warning: {msg}");
}

fn fatal(code: ExitCode, msg: core::fmt::Arguments<'_>) -> ! {
    println!("numavisor: FATAL: {msg}");
    exit::exit(code)
}

/// The image's own memory, from the linker script.
fn image_range() -> MemRange {
    // Only the addresses of the linker-defined symbols are taken, never their contents.
    let (start, end) = (
        &raw const __image_start as u64,
        &raw const __image_end as u64,
    );
    MemRange::new(Maddr(start), Maddr(end))
}

#[no_mangle]
extern "C" fn hypervisor_main(magic: u32, info: u32) -> ! {
    serial::init();
    hypervisor::console::set_sink(console_sink);
    idt::init();
    // SAFETY: the arena is static, page-aligned and used by nothing else.
    unsafe {
        ALLOCATOR
            .lock()
            .init(EARLY_ARENA.0.get() as usize, EARLY_ARENA_SIZE)
    };

    println!(
        "numavisor: hypervisor {} starting",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "numavisor: ABI {}, features {}",
        pv_abi::AbiVersion::CURRENT,
        hypervisor::hypercall::FEATURES
    );
    let boot = match multiboot::parse(&IdentityMap, magic, Maddr(info.into())) {
        Ok(b) => b,
        Err(e) => fatal(ExitCode::BadBoot, format_args!("{e}")),
    };
    for w in &boot.warnings {
        warn(w);
    }
    print_memory_map(&boot);
    let options = cmdline::parse(&boot.cmdline);
    println!("numavisor: command line: '{}'", boot.cmdline);
    for w in &options.warnings {
        warn(w);
    }

    let ram = boot.usable_ram();
    // Chosen before any heap takes memory; the heaps never take memory
    // below 1 MiB (reserved just below), so the page stays the trampoline's.
    let trampoline_page = smp::trampoline_page(&ram, &boot.loader_data);
    let mut reserved: Vec<MemRange> = Vec::new();
    reserved.push(MemRange::from_base_len(0, 1 << 20)); // real-mode and BIOS area, AP trampoline
    reserved.push(image_range());
    reserved.extend(boot.loader_data.iter().copied());
    grow_allocator(&ram, &mut reserved);
    let ram_end = ram.iter().map(|r| r.end.0).max().unwrap_or(0);
    match paging::extend_identity_map(ram_end) {
        Ok(limit) => MAPPED_LIMIT.store(limit, Ordering::Relaxed),
        Err(e) => fatal(ExitCode::BadBoot, format_args!("cannot map all RAM: {e}")),
    }

    let topology: &'static Topology = TOPOLOGY.call_once(|| discover_topology(&ram, &options));
    let heap: &'static Heap = HEAP.call_once(|| build_heap(topology, &reserved));

    print_topology(topology);
    println!("numavisor: machine (xl info -n):");
    let free: Vec<u64> = topology
        .nodes
        .iter()
        .map(|n| heap.free_pages(n.id))
        .collect();
    print!(
        "{}",
        XlInfo {
            topology,
            free_pages: &free
        }
    );
    print!("{}", heap.probe());

    if let Some(crash) = options.crash {
        crash_on_purpose(crash);
    }
    let mut status = selftest::heap_self_test(heap, topology);
    // Guests run with the host's interrupt flag set (see `svm::vmrun`): the
    // legacy PIC must stay quiet, and the boot CPU's local APIC takes the
    // wake-ups and time slices of the vCPUs it runs.
    apic::mask_legacy_pic();
    // The time-slice timer is measured against the TSC.
    let _ = timer::calibrate();
    if let Err(e) = sched::cpu_online(CpuId(0), cpu::apic_id()) {
        warn(&format!("boot CPU: {e}: no domain can run"));
    }
    let host_save = svm::HostSavePage::boot_cpu().expect("the boot CPU's host save page");
    match svm::enable(host_save) {
        Ok(info) => {
            println!(
                "numavisor: svm: revision {}, {} ASIDs, next-RIP save {}",
                info.revision,
                info.nr_asids,
                if info.next_rip_save { "yes" } else { "no" }
            );
            NR_ASIDS.store(info.nr_asids, Ordering::Relaxed);
            if selftest::svm_self_test(heap, true) != ExitCode::Success {
                status = ExitCode::Failure;
            }
            if options.smp_off {
                println!("numavisor: smp: off (command line): only the boot CPU runs");
            } else if smp::start_aps(topology, trampoline_page) != ExitCode::Success {
                status = ExitCode::Failure;
            }
            let domains = domains::run_all(
                &boot.modules,
                topology,
                options.ignore_abi_note,
                options.mirror,
                &options.mirror_pci,
            );
            if domains != ExitCode::Success {
                status = domains;
            }
            svm_maps::free_intercept_maps(heap);
        }
        Err(e) => {
            println!("numavisor: svm: {e}: no domain can run");
            status = ExitCode::Failure;
        }
    }
    println!("numavisor: done: {}", status.describe());
    exit::exit(status)
}

fn print_memory_map(boot: &BootInfo) {
    println!("numavisor: memory map from the boot loader:");
    for e in &boot.memory_map {
        println!("numavisor:   {} {}", e.range, e.kind);
    }
}

/// Gives the allocator a RAM region big enough for the frame table and the
/// heap's bookkeeping, from the lowest free RAM below the boot identity map.
///
/// The allocator is a buddy allocator: the frame table's page entries (16
/// bytes per page, one allocation per node, each rounded up to a power of
/// two and aligned to its size) fit in twice the whole table rounded up, so
/// the region starts at that rounded size's alignment and holds twice it,
/// plus 8 MiB for everything else.
fn grow_allocator(ram: &[MemRange], reserved: &mut Vec<MemRange>) {
    const SMALL_OBJECTS: u64 = 8 << 20;
    let pages: u64 = ram.iter().map(|r| r.len() >> PAGE_SHIFT).sum();
    let frame_table = (pages * size_of::<PageInfo>() as u64)
        .next_power_of_two()
        .max(2 << 20);
    let want = 2 * frame_table + SMALL_OBJECTS;
    let mut free = Vec::new();
    for r in ram {
        multiboot::subtract_into(*r, reserved.iter().copied(), &mut free);
    }
    free.sort();
    let found = free.iter().find_map(|r| {
        let start = r.start.0.checked_next_multiple_of(frame_table)?;
        let end = start.checked_add(want)?;
        (end <= r.end.0 && end <= paging::BOOT_MAPPED_LIMIT)
            .then_some(MemRange::new(Maddr(start), Maddr(end)))
    });
    let Some(region) = found else {
        fatal(
            ExitCode::BadBoot,
            format_args!(
                "no {} MiB of RAM aligned to {} MiB below 4 GiB for the hypervisor's own heap",
                want >> 20,
                frame_table >> 20
            ),
        )
    };
    // SAFETY: `region` is usable RAM, inside the boot identity map, and not
    // used by anything else (it was subtracted from every reservation and is
    // recorded as reserved so that the page heap never hands it out).
    unsafe {
        ALLOCATOR
            .lock()
            .add_to_heap(region.start.0 as usize, region.end.0 as usize)
    };
    reserved.push(region);
    println!(
        "numavisor: hypervisor heap: {} ({} MiB)",
        region,
        region.len() >> 20
    );
}

fn discover_topology(ram: &[MemRange], options: &cmdline::CommandLine) -> Topology {
    let mut srat = None;
    let mut slit = None;
    let mut madt = None;
    match AcpiTables::discover(&IdentityMap, None) {
        Ok(mut tables) => {
            let rsdp = *tables.rsdp();
            let root = tables.root_signature();
            print!(
                "numavisor: ACPI: RSDP at {} revision {}, {} lists:",
                rsdp.addr,
                rsdp.revision,
                core::str::from_utf8(&root).unwrap_or("?")
            );
            for t in tables.tables() {
                print!(" {}", core::str::from_utf8(&t.signature).unwrap_or("????"));
            }
            println!();
            madt = tables.find(b"APIC");
            srat = tables.find(b"SRAT");
            slit = tables.find(b"SLIT");
            for w in tables.take_warnings() {
                warn(&w);
            }
        }
        Err(e) => warn(&alloc::format!(
            "no usable ACPI tables ({e}): one node, boot CPU only"
        )),
    }
    let input = TopologyInput {
        ram,
        srat: srat.as_deref(),
        slit: slit.as_deref(),
        madt: madt.as_deref(),
        bsp_apic_id: cpu::apic_id(),
        apic_id_layout: cpu::apic_id_layout(),
        options: NumaOptions {
            off: options.numa_off,
            fake: options.numa_fake,
        },
    };
    topology::build(&input, &mut |w: &str| warn(w))
}

fn build_heap(topology: &Topology, reserved: &[MemRange]) -> Heap {
    let mut ranges = Vec::new();
    for n in &topology.nodes {
        for r in &n.memory {
            ranges.push((*r, n.id));
        }
    }
    let ft = match FrameTable::new(&ranges) {
        Ok(ft) => ft,
        Err(e) => fatal(ExitCode::Failure, format_args!("frame table: {e}")),
    };
    println!(
        "numavisor: frame table: {} pages in {} chunks, {} KiB",
        ft.nr_pages(),
        ft.chunks().len(),
        ft.bytes_used() >> 10
    );
    let heap_topology = HeapTopology {
        nr_nodes: topology.nr_nodes(),
        distances: topology.distances().to_vec(),
        cpu_nodes: topology.cpus.iter().map(|c| c.node).collect(),
    };
    let heap = match Heap::new(ft, heap_topology) {
        Ok(h) => h,
        Err(e) => fatal(ExitCode::Failure, format_args!("NUMA heap: {e}")),
    };
    for (range, _) in &ranges {
        let mut free = Vec::new();
        multiboot::subtract_into(*range, reserved.iter().copied(), &mut free);
        for piece in free {
            if let Err(e) = heap.add_free_range(piece) {
                warn(&alloc::format!("heap: cannot add {piece}: {e}"));
            }
        }
    }
    heap
}

fn print_topology(t: &Topology) {
    println!(
        "numavisor: NUMA: {} nodes, {} CPUs ({:?})",
        t.nr_nodes(),
        t.cpus.len(),
        t.source
    );
    for n in &t.nodes {
        print!("numavisor: node {} pxm {}: cpus", n.id, n.pxm);
        if n.cpus.is_empty() {
            print!(" none");
        }
        for c in &n.cpus {
            print!(" {c}");
        }
        print!(", memory");
        if n.memory.is_empty() {
            print!(" none");
        }
        for r in &n.memory {
            print!(" {r}");
        }
        println!();
    }
}

/// `crash=...` on the command line: fail in the way asked for.
fn crash_on_purpose(crash: Crash) {
    println!("numavisor: crash={crash:?} requested on the command line");
    match crash {
        Crash::Panic => panic!("deliberate panic (crash=panic)"),
        Crash::Fault => {
            // Above the identity map: no translation exists, so this faults.
            let unmapped = MAPPED_LIMIT.load(Ordering::Relaxed) + (1 << 30);
            // SAFETY: not safe, on purpose: the read page-faults and the
            // exception handler ends the run before anything is returned.
            let value = unsafe { core::ptr::read_volatile(unmapped as *const u64) };
            println!("numavisor: read {value:#x} from an unmapped address?");
        }
        Crash::Hang => loop {
            core::hint::spin_loop();
        },
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let location = info.location();
    hypervisor::console::print_fmt_unlocked(format_args!(
        "\nnumavisor: PANIC at {}:{}: {}\n",
        location.map(|l| l.file()).unwrap_or("?"),
        location.map(|l| l.line()).unwrap_or(0),
        info.message()
    ));
    exit::exit(ExitCode::Panic)
}

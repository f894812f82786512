//! Boot-time self-tests on the real machine: the NUMA heap and SVM.

use alloc::boxed::Box;
use alloc::vec::Vec;

use hypervisor::arch::x86_64::memory as arch_memory;
use hypervisor::arch::x86_64::{cpu, svm};
use hypervisor::mm::addr::Maddr;
use hypervisor::mm::frame_table::OWNER_NONE;
use hypervisor::mm::heap::{AllocRequest, Heap};
use hypervisor::numa::topology::Topology;
use hypervisor::numa::NodeId;
use hypervisor::println;
use hypervisor::svm::exit::ExitReason;
use hypervisor::svm::paging::{self as pt, PageTables};
use hypervisor::svm::vcpu::{EntryState, InterceptMaps, Vcpu};
use pv_abi::exit::ExitCode;

use super::svm_maps::{free_intercept_maps, intercept_maps};

/// Checks the heap on the real machine: an exact-node allocation on every
/// node with memory lands on it, one on a memoryless node fails, and
/// freeing everything restores the probe exactly.
pub fn heap_self_test(heap: &Heap, t: &Topology) -> ExitCode {
    let before = heap.probe();
    let mut ok = true;
    for n in &t.nodes {
        let result = heap.alloc(0, AllocRequest::exact(n.id));
        let has_memory = heap.total_pages(n.id) > 0;
        match result {
            Ok(mfn) => {
                let on = heap.frame_table().node_of(mfn);
                if on != Some(n.id) || !has_memory {
                    println!(
                        "numavisor: heap self-test: exact alloc for node {} got {mfn} on {on:?}",
                        n.id
                    );
                    ok = false;
                }
                if let Err(e) = heap.free(mfn, 0) {
                    println!("numavisor: heap self-test: free {mfn}: {e}");
                    ok = false;
                }
            }
            Err(e) if has_memory => {
                println!(
                    "numavisor: heap self-test: exact alloc on node {} failed: {e}",
                    n.id
                );
                ok = false;
            }
            Err(_) => {}
        }
    }
    if heap.probe() != before {
        println!("numavisor: heap self-test: the probe differs after freeing everything");
        ok = false;
    }
    if let Err(e) = heap.check_invariants() {
        println!("numavisor: heap self-test: {e}");
        ok = false;
    }
    println!(
        "numavisor: heap self-test: {}",
        if ok { "ok" } else { "FAILED" }
    );
    if ok {
        ExitCode::Success
    } else {
        ExitCode::Failure
    }
}

/// Runs a six-instruction guest through CPUID and VMMCALL
/// exits on nested paging, then gives every page back: proof that the
/// virtualization path works on this machine before any domain is built.
/// Runs on the CPU that calls it (each application processor runs it on
/// itself); `report` prints the one-line result (failures are always
/// printed).
pub fn svm_self_test(heap: &Heap, report: bool) -> ExitCode {
    let before = heap.probe();
    let Ok(block) = heap.alloc(9, AllocRequest::node(NodeId(0))) else {
        println!("numavisor: svm self-test: no 2 MiB block");
        return ExitCode::Failure;
    };
    let base = block.maddr();
    // Guest-physical 0..2 MiB is `block`. Guest page tables at 0x1000-0x3fff
    // identity-map it with one 2 MiB page; code at 0x10000.
    let code: [u8; 21] = [
        0xB8, 0x00, 0x00, 0x00, 0x40, // mov eax, 0x4000_0000
        0x0F, 0xA2, // cpuid
        0xB8, 0x06, 0x00, 0x00, 0x00, // mov eax, 6
        0xBF, 0x2A, 0x00, 0x00, 0x00, // mov edi, 42
        0x0F, 0x01, 0xD9, // vmmcall
        0xF4, // hlt
    ];
    for i in 0..512u64 {
        // SAFETY: the block's 512 pages were just allocated for this test.
        unsafe { arch_memory::zero_page(Maddr(base.0 + i * 4096)) };
    }
    // SAFETY: all writes are inside the test's own block.
    unsafe {
        arch_memory::copy_to_machine(Maddr(base.0 + 0x1000), &(0x2003u64).to_le_bytes());
        arch_memory::copy_to_machine(Maddr(base.0 + 0x2000), &(0x3003u64).to_le_bytes());
        arch_memory::copy_to_machine(Maddr(base.0 + 0x3000), &(0x83u64).to_le_bytes());
        arch_memory::copy_to_machine(Maddr(base.0 + 0x10000), &code);
    }
    let tables = arch_memory::HeapTables {
        heap,
        node: NodeId(0),
        owner: OWNER_NONE,
        taken: Vec::new(),
    };
    let mut ok = false;
    let mut exits = 0;
    let taken = match PageTables::new(tables, pt::WRITABLE | pt::USER) {
        Err(e) => {
            println!("numavisor: svm self-test: {e}");
            Vec::new()
        }
        Ok(mut npt) => {
            let maps = npt
                .map(0, base.0, 2 << 20)
                .map_err(|e| alloc::format!("{e}"))
                .and_then(|()| {
                    intercept_maps(npt.memory_mut().heap)
                        .map_err(|e| alloc::format!("permission maps: {e}"))
                });
            match maps {
                Err(e) => println!("numavisor: svm self-test: {e}"),
                Ok(maps) => (ok, exits) = run_probe_guest(npt.root(), maps),
            }
            let (tables, _) = npt.into_memory();
            tables.taken
        }
    };
    for mfn in taken {
        let _ = heap.free(mfn, 0);
    }
    free_intercept_maps(heap);
    let _ = heap.free(block, 9);
    let restored = heap.probe() == before;
    if !report && ok && restored {
        return ExitCode::Success;
    }
    println!(
        "numavisor: svm self-test: {} ({exits} exits, heap {})",
        if ok && restored { "ok" } else { "FAILED" },
        if restored { "restored" } else { "NOT restored" }
    );
    if ok && restored {
        ExitCode::Success
    } else {
        ExitCode::Failure
    }
}

/// Runs the self-test guest until its VMMCALL; returns (passed, exits).
fn run_probe_guest(npt_root: u64, maps: InterceptMaps) -> (bool, u32) {
    let entry = EntryState {
        rip: 0x10000,
        cr3: 0x1000,
        rsp: 0,
        rsi: 0,
        rdi: 0,
    };
    let mut vcpu = Box::new(Vcpu::new(0, 1, entry, npt_root, maps));
    let vmcb_pa = &raw const vcpu.vmcb as u64;
    let mut exits = 0;
    while exits < 10 {
        // SAFETY: the VMCB is this vCPU's, 4 KiB-aligned in identity-mapped
        // memory; its nested tables map only the test block.
        unsafe { svm::vmrun(vmcb_pa, &mut vcpu.regs) };
        exits += 1;
        match ExitReason::from_code(vcpu.vmcb.control.exit_code) {
            ExitReason::Cpuid => {
                vcpu.vmcb.save.rax = 0x4000_0000;
                vcpu.skip_instruction(2);
            }
            ExitReason::Vmmcall => return (vcpu.vmcb.save.rax == 6 && vcpu.regs.rdi == 42, exits),
            // A wake-up meant for this CPU's run loop: take it, go on.
            ExitReason::Intr => cpu::take_pending_interrupts(),
            other => {
                println!(
                    "numavisor: svm self-test: unexpected exit {other} at rip {:#x}",
                    vcpu.vmcb.save.rip
                );
                break;
            }
        }
    }
    (false, exits)
}

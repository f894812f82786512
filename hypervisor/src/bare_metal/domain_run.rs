//! A running domain: its hypercall state, its vCPUs on their CPUs, and its
//! teardown, which the CPU that saw its last vCPU go does while the other
//! domains go on running.

use alloc::format;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use hypervisor::arch::x86_64::cpu;
use hypervisor::arch::x86_64::memory::{self as arch_memory, HeapTables};
use hypervisor::arch::x86_64::pci::PortConfigSpace;
use hypervisor::arch::x86_64::timer::{self, Deadline};
use hypervisor::domain::build::{DomainEnd, MachineMemory};
use hypervisor::domain::exchange::P2m;
use hypervisor::domain::run::{handle_exit, Action};
use hypervisor::hypercall::{
    ConsoleBuffer, ExchangeRequest, Exchanged, GuestAccess, HypercallEnv, MachineView, VnumaView,
};
use hypervisor::mm::addr::{Maddr, PAGE_SHIFT};
use hypervisor::numa::topology::Topology;
use hypervisor::numa::CpuId;
use hypervisor::pci::config::PciEmulator;
use hypervisor::println;
use hypervisor::ratelimit::RateLimit;
use hypervisor::svm::exit::ExitReason;
use hypervisor::svm::vcpu::{EntryState, InterceptMaps, Vcpu, EFER_NXE};
use pv_abi::cpuid::CpuidRegs;

use super::domains::BootEntry;
use super::sched::{self, VcpuBlock, VcpuBox};
use super::{domains, heap};

/// Machine memory of a domain, through the identity map.
///
/// Only `DomainMemory` and `P2m` call it, with addresses the domain's
/// layout maps: pages the heap gave this domain.
pub struct IdentityMachine;

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

/// The hypercall environment of a running domain.
pub struct Env {
    pub id: u32,
    /// Its memory, nested page tables and heap blocks.
    pub p2m: P2m<HeapTables<'static>, IdentityMachine>,
    pub vnuma: VnumaView,
    pub topology: &'static Topology,
    pub console: ConsoleBuffer,
    /// Its view of PCI configuration space.
    pub pci: PciEmulator,
    /// Where vCPU 0 starts.
    pub boot: BootEntry,
    /// The lines this domain makes the hypervisor print (DMA exchanges), rate
    /// limited as Xen's `gdprintk`.
    pub log_limit: RateLimit,
}

impl Env {
    /// How a line the guest printed reaches the console: `(dN) ` first.
    pub fn print_line(id: u32) -> impl FnMut(&str) {
        move |line| println!("(d{id}) {line}")
    }
}

impl HypercallEnv for Env {
    fn memory(&mut self) -> &mut dyn GuestAccess {
        &mut self.p2m
    }

    fn vnuma(&self) -> &VnumaView {
        &self.vnuma
    }

    fn machine(&self) -> MachineView {
        let t = self.topology;
        let heap = heap();
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
        self.console.push(bytes, &mut Self::print_line(self.id));
    }

    fn dma_exchange(&mut self, request: ExchangeRequest) -> Result<Exchanged, pv_abi::Error> {
        let id = self.id;
        // Whatever the guest printed so far comes first.
        self.console.flush(&mut Self::print_line(id));
        let now_ms = timer::tsc_to_ns(timer::rdtsc()) / 1_000_000;
        match self.p2m.exchange(&request) {
            Ok(report) => {
                if let Some(s) = self.log_limit.check(now_ms) {
                    println!("numavisor: domain {id}: {report}{s}");
                }
                Ok(Exchanged {
                    maddr: pv_abi::Maddr(report.new.maddr().0),
                    pnode: u32::from(report.node.0),
                    off_node: report.off_node(),
                })
            }
            Err(e) => {
                if let Some(s) = self.log_limit.check(now_ms) {
                    println!(
                        "numavisor: domain {id}: dma exchange of {} pages at gpa {:#x} below 2^{} refused: {e}{s}",
                        request.pages, request.gpa.0, request.address_bits
                    );
                }
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

/// What every vCPU of a domain shares.
#[derive(Clone, Copy)]
pub struct VcpuTemplate {
    pub npt_root: u64,
    pub maps: InterceptMaps,
    pub asid: u32,
    /// Another domain may run with the same ASID (the pool ran out): flush
    /// the TLB at every VMRUN.
    pub asid_shared: bool,
}

/// One vCPU as the domain keeps it.
pub struct VcpuSlot {
    /// The CPU it runs on.
    pub cpu: CpuId,
    /// Guards the vCPU's state block while the vCPU is down (`Some`); an up
    /// vCPU's block is inside its task.
    pub state: spin::Mutex<Option<VcpuBlock>>,
    /// Up (queued or running).
    pub up: AtomicBool,
    /// Inside VMRUN now.
    pub running: AtomicBool,
    /// TSC ticks spent in the guest.
    pub ran: AtomicU64,
    /// Of `ran`, the ticks run while other vCPUs waited for the CPU.
    pub ran_shared: AtomicU64,
}

impl VcpuSlot {
    /// Time spent in the guest, in nanoseconds.
    pub fn ran_ns(&self) -> u64 {
        timer::tsc_to_ns(self.ran.load(Ordering::Relaxed))
    }

    /// Of [`ran_ns`](VcpuSlot::ran_ns), the time run while other vCPUs
    /// waited for the CPU.
    pub fn ran_shared_ns(&self) -> u64 {
        timer::tsc_to_ns(self.ran_shared.load(Ordering::Relaxed))
    }
}

/// A running domain: its hypercall state behind one lock, and the state of
/// its vCPUs, which run on their CPUs (`sched`).
pub struct DomainRun {
    /// Itself, for the tasks of the vCPUs it starts.
    pub me: Weak<DomainRun>,
    pub id: u32,
    pub name: String,
    pub memory_mib: u64,
    pub weight: u32,
    pub topology: &'static Topology,
    /// Guards the domain's hypercall state: memory map, console, PCI view.
    /// `None` once torn down.
    pub env: spin::Mutex<Option<Env>>,
    pub vcpus: Vec<VcpuSlot>,
    /// vCPUs up; the one that brings it to 0 tears the domain down.
    pub live: AtomicU32,
    /// The domain is ending: every vCPU stops at its next exit.
    pub dying: AtomicBool,
    /// Guards how it ended (the first vCPU to end it decides).
    pub end: spin::Mutex<Option<DomainEnd>>,
    pub exits: AtomicU64,
    /// vCPUs inside VMRUN (or about to enter).
    pub in_guest: AtomicU32,
    /// A vCPU changes the guest-physical map: the others stay out.
    pub paused: AtomicBool,
    /// Bumped when a guest-physical mapping changes; a vCPU flushes its
    /// TLB before it runs with a newer one.
    pub tlb_generation: AtomicU64,
    pub template: VcpuTemplate,
    /// Its `time_limit`: when it is up, and how many seconds it was.
    pub time_limit: Option<(Deadline, u32)>,
}

impl DomainRun {
    /// Builds vCPU `v` in `entry` and queues it on its CPU.
    pub fn start_vcpu(
        &self,
        v: u32,
        entry: EntryState,
        gdt: u64,
        gdt_limit: u32,
    ) -> Result<(), pv_abi::Error> {
        let slot = self
            .vcpus
            .get(v as usize)
            .ok_or(pv_abi::Error::NoSuchThing)?;
        // The block is free while the vCPU is down; taking it makes it up.
        let Some(me) = self.me.upgrade() else {
            return Err(pv_abi::Error::InvalidArgument);
        };
        let Some(block) = slot.state.lock().take() else {
            return Err(pv_abi::Error::InvalidArgument);
        };
        let t = self.template;
        let mut vcpu = Vcpu::new(v, t.asid, entry, t.npt_root, t.maps);
        vcpu.vmcb.save.gdtr.base = gdt;
        vcpu.vmcb.save.gdtr.limit = gdt_limit;
        vcpu.vmcb.save.efer |= EFER_NXE;
        vcpu.tlb_generation = self.tlb_generation.load(Ordering::Acquire);
        let state = VcpuBox::new(block, vcpu);
        slot.up.store(true, Ordering::Release);
        self.live.fetch_add(1, Ordering::AcqRel);
        let host: Arc<dyn sched::VcpuHost> = me;
        let task = sched::Task::new(state, host, self.weight);
        if let Err(task) = sched::enqueue(slot.cpu, task) {
            let (state, _) = task.into_parts();
            *slot.state.lock() = Some(state.into_block());
            slot.up.store(false, Ordering::Release);
            self.live.fetch_sub(1, Ordering::AcqRel);
            println!(
                "numavisor: domain {}: vcpu {v}: CPU {} does not run vCPUs",
                self.id, slot.cpu
            );
            return Err(pv_abi::Error::Unsupported);
        }
        match self.topology.cpu_node(slot.cpu) {
            Some(n) => println!(
                "numavisor: domain {}: vcpu {v} up on cpu {} (node {n})",
                self.id, slot.cpu
            ),
            None => println!(
                "numavisor: domain {}: vcpu {v} up on cpu {}",
                self.id, slot.cpu
            ),
        }
        Ok(())
    }

    /// Keeps every other vCPU out of the guest until [`resume_others`]:
    /// the caller (holding the domain lock, outside the guest itself) is
    /// about to change the guest-physical map.
    ///
    /// [`resume_others`]: DomainRun::resume_others
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
        for s in &self.vcpus {
            if s.up.load(Ordering::Acquire) && !kicked.contains(&s.cpu) {
                kicked.push(s.cpu);
                sched::kick(s.cpu);
            }
        }
    }

    /// Ends the domain as `end` says, unless something ended it first
    /// (`false`): every vCPU stops at its next exit.
    fn end(&self, end: DomainEnd) -> bool {
        let first = {
            let mut slot = self.end.lock();
            let first = slot.is_none();
            if first {
                *slot = Some(end);
            }
            first
        };
        self.dying.store(true, Ordering::Release);
        self.kick_all();
        first
    }

    /// Pages of the domain on each machine node, while it runs.
    pub fn node_pages(&self) -> Vec<u64> {
        self.env
            .lock()
            .as_ref()
            .map(|e| e.p2m.node_pages.clone())
            .unwrap_or_default()
    }
}

impl sched::VcpuHost for DomainRun {
    fn may_enter(&self, vcpu: &mut Vcpu) -> bool {
        if let Some((deadline, secs)) = self.time_limit {
            if deadline.passed() && !self.dying.load(Ordering::Acquire) {
                self.end(DomainEnd::Killed {
                    reason: format!("time limit of {secs} s reached"),
                    rip: vcpu.vmcb.save.rip,
                    gpa: None,
                });
            }
        }
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
        if vcpu.tlb_generation != generation || self.template.asid_shared {
            vcpu.vmcb.control.tlb_control = TLB_FLUSH_ALL;
            vcpu.tlb_generation = generation;
        }
        if let Some(s) = self.vcpus.get(vcpu.id as usize) {
            s.running.store(true, Ordering::Relaxed);
        }
        true
    }

    fn left_guest(&self, vcpu: &Vcpu, ticks: u64, shared: bool) {
        if let Some(s) = self.vcpus.get(vcpu.id as usize) {
            s.running.store(false, Ordering::Relaxed);
            s.ran.fetch_add(ticks, Ordering::Relaxed);
            if shared {
                s.ran_shared.fetch_add(ticks, Ordering::Relaxed);
            }
        }
        self.in_guest.fetch_sub(1, Ordering::SeqCst);
    }

    fn handle_exit(&self, vcpu: &mut Vcpu) -> Action {
        vcpu.vmcb.control.tlb_control = 0;
        if ExitReason::from_code(vcpu.vmcb.control.exit_code) == ExitReason::Intr {
            vcpu.exits += 1;
            return Action::Interrupted;
        }
        let mut env = self.env.lock();
        let Some(env) = env.as_mut() else {
            return Action::End(DomainEnd::Killed {
                reason: String::from("the domain was torn down under a running vcpu"),
                rip: vcpu.vmcb.save.rip,
                gpa: None,
            });
        };
        let mut call = CallEnv {
            env,
            run: self,
            caller: vcpu.id,
        };
        handle_exit(vcpu, &mut call, &host_cpuid)
    }

    fn deadline(&self) -> Option<Deadline> {
        self.time_limit.map(|(d, _)| d)
    }

    fn vcpu_gone(&self, state: VcpuBox, action: Option<Action>) -> bool {
        let id = self.id;
        let v = state.get().id;
        match action {
            Some(Action::End(end)) => {
                let first = self.end(end);
                if first && self.vcpus.len() > 1 {
                    println!("numavisor: domain {id}: vcpu {v} ended the domain");
                }
            }
            Some(_) => println!("numavisor: domain {id}: vcpu {v} down"),
            None => {}
        }
        self.exits.fetch_add(state.get().exits, Ordering::Relaxed);
        if let Some(s) = self.vcpus.get(v as usize) {
            s.running.store(false, Ordering::Relaxed);
            *s.state.lock() = Some(state.into_block());
            s.up.store(false, Ordering::Release);
        }
        self.live.fetch_sub(1, Ordering::AcqRel) == 1
    }

    fn finish(&self) {
        domains::teardown(self);
    }
}

/// The hypercall environment as one vCPU sees it: the domain's state, plus
/// who is calling.
struct CallEnv<'e> {
    env: &'e mut Env,
    run: &'e DomainRun,
    caller: u32,
}

impl HypercallEnv for CallEnv<'_> {
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
        self.run.vcpus.len() as u32
    }

    fn vcpu_is_up(&self, vcpu: u32) -> bool {
        self.run
            .vcpus
            .get(vcpu as usize)
            .is_some_and(|s| s.up.load(Ordering::Acquire))
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

//! A model hypervisor for host tests: it follows pv-abi's documentation
//! (decoding with `HypercallRequest::from_args`, the query protocol with
//! `accept_size`/`reply`), so the whole boot sequence and every suite run on
//! the host.
//!
//! Addresses: buffers the guest code allocates are host pointers, used as
//! guest-physical addresses as on bare metal (where the heap is
//! identity-mapped); the domain's memory ranges are fake, backed by a sparse
//! store (the start-info page, the ACPI tables, the image); addresses in the
//! hole `find_hole` picks, at or above `GPA_LIMIT`, or partly inside the fake
//! ranges are not guest memory (`Fault`).

use std::boxed::Box;
use std::collections::{BTreeMap, HashMap};
use std::string::String;
use std::sync::Mutex;
use std::vec;
use std::vec::Vec;

use pv_abi::cpuid::{CpuidRegs, CPUID_1_ECX_HYPERVISOR};
use pv_abi::physinfo::PhysCounts;
use pv_abi::query::accept_size;
use pv_abi::start_info::GPA_LIMIT;
use pv_abi::vnuma::VnumaCounts;
use pv_abi::{
    AbiVersion, DomainNodePages, Error, Features, Gpa, HypercallArgs, HypercallRequest,
    HypercallResult, NodeMemInfo, PhysInfo, Pod, Query, ShutdownStatus, StartInfo,
    VnumaTopologyInfo, PAGE_SIZE,
};

use crate::boot::start_info::{find_hole, inside_ranges, overlaps, HOLE_SIZE};
use crate::numa::topology::Vnuma;
use crate::platform::{FailMode, ImageInfo, Platform};

/// Where the mock links the image.
pub const IMAGE_VA: u64 = 0xFFFF_FFFF_8020_0000;

/// Deliberate deviations from the ABI, to see the guest catch them.
#[derive(Clone, Copy, Default)]
pub struct Bugs {
    /// Unknown hypercalls answer `InvalidArgument` instead of `Unsupported`.
    pub unknown_is_einval: bool,
    /// `GET_VNUMA` writes the buffers even when they are too small.
    pub writes_when_too_small: bool,
}

/// The mock's vCPUs (ABI 1.3): which are up, every start, and the threads
/// that run the secondaries.
#[cfg(not(feature = "abi-1-2"))]
#[derive(Default)]
pub struct MockVcpus {
    /// Per vCPU, whether it is up (vCPU 0 always).
    pub up: Vec<bool>,
    /// Every UP accepted, with its context.
    pub starts: Vec<(u32, pv_abi::VcpuContext)>,
    /// Every DOWN accepted.
    pub downs: Vec<u32>,
    /// The threads of the secondaries.
    pub threads: Vec<std::thread::JoinHandle<()>>,
}

pub struct MockHv {
    pub version: AbiVersion,
    pub features: Features,
    pub si: StartInfo,
    pub start_gpa: u64,
    pub vnuma: Vnuma,
    pub node_mem: Vec<NodeMemInfo>,
    pub node_distance: Vec<u32>,
    pub cpu_to_node: Vec<u32>,
    pub node_pages: Vec<u64>,
    /// Bytes of `VnumaTopologyInfo` this hypervisor knows (48 plays a 1.0
    /// hypervisor, see [`MockHv::speaking_v1_0`]).
    pub vnuma_size: u32,
    pub bugs: Bugs,
    pub memory: Mutex<BTreeMap<u64, Vec<u8>>>,
    pub words: Mutex<HashMap<u64, u64>>,
    pub console: Mutex<Vec<u8>>,
    pub shutdowns: Mutex<Vec<ShutdownStatus>>,
    pub fails: Mutex<Vec<(FailMode, Gpa)>>,
    pub heap: Mutex<Option<(Gpa, u64)>>,
    /// Cycle counter: nanoseconds since `epoch` times 4 (a 4 GHz TSC, as
    /// the guest's timeouts assume) times `clock_scale`.
    pub epoch: std::time::Instant,
    pub clock_scale: u64,
    /// The vCPUs; shared with the threads that run the secondaries.
    #[cfg(not(feature = "abi-1-2"))]
    pub vcpus: std::sync::Arc<Mutex<MockVcpus>>,
    /// Whether an accepted UP runs the vCPU (a thread); if not, it stays
    /// up and never checks in.
    #[cfg(not(feature = "abi-1-2"))]
    pub run_secondaries: bool,
    /// What UP answers once the request passed every check (`None`: it
    /// starts the vCPU).
    #[cfg(not(feature = "abi-1-2"))]
    pub up_error: Option<Error>,
}

impl MockHv {
    /// A domain with this start-info (the page goes at `boot_data_start`)
    /// and topology; ACPI tables describing the same topology.
    pub fn new(mut si: StartInfo, vnuma: Vnuma) -> Self {
        let start_gpa = si.boot_data_start.0;
        let rsdp = start_gpa + PAGE_SIZE;
        si.acpi_rsdp = Gpa(rsdp);
        let mut hv = MockHv {
            version: AbiVersion::CURRENT,
            features: Features::KNOWN,
            si,
            start_gpa,
            node_mem: vec![
                NodeMemInfo {
                    size_pages: 0x40000,
                    free_pages: 0x20000,
                },
                NodeMemInfo {
                    size_pages: 0x40000,
                    free_pages: 0x20000,
                },
            ],
            node_distance: vec![10, 21, 21, 10],
            cpu_to_node: vec![0, 0, 1, 1],
            node_pages: Vec::new(),
            vnuma_size: std::mem::size_of::<VnumaTopologyInfo>() as u32,
            vnuma: vnuma.clone(),
            bugs: Bugs::default(),
            memory: Mutex::new(BTreeMap::new()),
            words: Mutex::new(HashMap::new()),
            console: Mutex::new(Vec::new()),
            shutdowns: Mutex::new(Vec::new()),
            fails: Mutex::new(Vec::new()),
            heap: Mutex::new(None),
            epoch: std::time::Instant::now(),
            clock_scale: 1,
            #[cfg(not(feature = "abi-1-2"))]
            vcpus: std::sync::Arc::new(Mutex::new(MockVcpus {
                up: (0..si.nr_vcpus).map(|k| k == 0).collect(),
                ..MockVcpus::default()
            })),
            #[cfg(not(feature = "abi-1-2"))]
            run_secondaries: true,
            #[cfg(not(feature = "abi-1-2"))]
            up_error: None,
        };
        hv.node_pages = hv.pages_per_pnode();
        hv.set_tables(&vnuma);
        hv
    }

    /// Plays an ABI 1.0 hypervisor: version 1.0 (start-info too), 1.0's
    /// features, and 1.0's 48-byte `VnumaTopologyInfo`.
    #[cfg_attr(feature = "abi-1-0", allow(dead_code))]
    pub fn speaking_v1_0(mut self) -> Self {
        self.version = AbiVersion::V1_0;
        self.features = Features::V1_0;
        self.vnuma_size = VnumaTopologyInfo::SIZE_V1_0;
        self.si.version = AbiVersion::V1_0;
        let page = self.si;
        self.set_page(page.as_bytes());
        self
    }

    /// ABI 1.1's `vnode_mem` answer: vnode v on physical node v % 2.
    #[cfg(not(feature = "abi-1-0"))]
    fn vnode_mem(&self) -> Vec<pv_abi::VnodeMemInfo> {
        (0..self.vnuma.nr_vnodes)
            .map(|v| {
                let pnode = v % self.node_mem.len() as u32;
                pv_abi::VnodeMemInfo {
                    pnode,
                    flags: 0,
                    size_pages: self.si.vnode_ranges(v).map(|r| r.size / PAGE_SIZE).sum(),
                    free_pages: self.node_mem[pnode as usize].free_pages,
                }
            })
            .collect()
    }

    /// Pages per physical node: vnode v on physical node v % 2.
    fn pages_per_pnode(&self) -> Vec<u64> {
        let mut pages = vec![0u64; self.node_mem.len()];
        for r in self.si.mem_ranges() {
            pages[r.vnode as usize % self.node_mem.len()] += r.size / PAGE_SIZE;
        }
        pages
    }

    /// Writes the start-info page, ACPI tables for `v`, and an image
    /// pattern into the fake memory.
    pub fn set_tables(&mut self, v: &Vnuma) {
        let rsdp = self.si.acpi_rsdp.0;
        let tables = crate::numa::acpi::tests::tables_for(v, rsdp);
        let mut page = vec![0u8; PAGE_SIZE as usize];
        page[..self.si.as_bytes().len()].copy_from_slice(self.si.as_bytes());
        let image: Vec<u8> = (0..(self.si.image_end.0 - self.si.image_start.0))
            .map(|i| (i * 7 + 3) as u8)
            .collect();
        let mut m = self.memory.lock().unwrap();
        m.clear();
        m.insert(self.start_gpa, page);
        m.insert(rsdp, tables);
        m.insert(self.si.image_start.0, image);
    }

    /// Rewrites the start-info page (after editing `si`).
    pub fn set_page(&mut self, bytes: &[u8]) {
        let mut page = vec![0u8; PAGE_SIZE as usize];
        page[..bytes.len()].copy_from_slice(bytes);
        self.memory.lock().unwrap().insert(self.start_gpa, page);
    }

    fn hole(&self) -> u64 {
        find_hole(&self.si, GPA_LIMIT).map_or(GPA_LIMIT, |g| g.0)
    }

    /// Whether the guest may pass `[gpa, gpa + len)`: `Fault` outside guest
    /// memory. Host pointers (outside the fake ranges) are the guest's heap
    /// or stack.
    fn check_mem(&self, gpa: u64, len: u64) -> Result<(), Error> {
        if len == 0 {
            return Ok(());
        }
        let end = gpa.checked_add(len).ok_or(Error::Fault)?;
        if end > GPA_LIMIT {
            return Err(Error::Fault);
        }
        let hole = self.hole();
        if overlaps((gpa, end), (hole, hole + HOLE_SIZE)) {
            return Err(Error::Fault);
        }
        let fake = self
            .si
            .mem_ranges()
            .iter()
            .any(|r| overlaps((gpa, end), (r.gpa.0, r.gpa.0 + r.size)));
        if fake {
            assert!(
                !inside_ranges(self.si.mem_ranges(), gpa, len),
                "the mock cannot access fake guest memory at {gpa:#x}"
            );
            return Err(Error::Fault);
        }
        Ok(())
    }

    fn read_guest(&self, gpa: u64, len: usize) -> Result<Vec<u8>, Error> {
        self.check_mem(gpa, len as u64)?;
        let mut v = vec![0u8; len];
        // SAFETY: `check_mem` let through only host addresses, which the
        // guest code under test took from live buffers it owns (see the
        // module docs).
        unsafe { std::ptr::copy_nonoverlapping(gpa as *const u8, v.as_mut_ptr(), len) };
        Ok(v)
    }

    fn write_guest(&self, gpa: u64, bytes: &[u8]) -> Result<(), Error> {
        self.check_mem(gpa, bytes.len() as u64)?;
        // SAFETY: as in `read_guest`; the guest passed these buffers for the
        // hypervisor to write, sized by the capacities it gave.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), gpa as *mut u8, bytes.len()) };
        Ok(())
    }

    /// Reads a query structure per the protocol: size, accepted size (at
    /// most `known`, the size this hypervisor knows), flags.
    fn read_query<T: Query>(&self, gpa: u64, known: u32) -> Result<(T, u32), Error> {
        let size = u32::read_from(&self.read_guest(gpa, 4)?).unwrap_or(0);
        let n = accept_size::<T>(size)?.min(known);
        let t = T::read_zero_extended(&self.read_guest(gpa, n as usize)?);
        if !t.reserved_are_zero() {
            return Err(Error::InvalidArgument);
        }
        Ok((t, n))
    }

    fn write_back<T: Query>(&self, gpa: u64, mut t: T, n: u32) -> Result<(), Error> {
        t.set_size(n);
        self.write_guest(gpa, &t.as_bytes()[..n as usize])
    }

    fn aligned(gpa: Gpa, count: u32, align: u64) -> Result<(), Error> {
        if count > 0 && !gpa.is_aligned(align) {
            return Err(Error::InvalidArgument);
        }
        Ok(())
    }

    fn get_vnuma(&self, gpa: u64) -> Result<u64, Error> {
        let (mut info, n) = self.read_query::<VnumaTopologyInfo>(gpa, self.vnuma_size)?;
        let v = &self.vnuma;
        let actual = VnumaCounts {
            nr_vnodes: v.nr_vnodes,
            nr_vcpus: v.nr_vcpus,
            nr_vmemranges: v.vmemranges.len() as u32,
        };
        let caps = info.counts();
        let fits = info.reply(actual);
        if fits.is_ok() || self.bugs.writes_when_too_small {
            let dist: Vec<u8> = v.vdistance.iter().flat_map(|d| d.to_le_bytes()).collect();
            let cpus: Vec<u8> = v
                .vcpu_to_vnode
                .iter()
                .flat_map(|d| d.to_le_bytes())
                .collect();
            let ranges: Vec<u8> = v
                .vmemranges
                .iter()
                .flat_map(|r| r.as_bytes().to_vec())
                .collect();
            if fits.is_ok() {
                Self::aligned(info.vdistance, caps.nr_vnodes, 4)?;
                Self::aligned(info.vcpu_to_vnode, caps.nr_vcpus, 4)?;
                Self::aligned(info.vmemrange, caps.nr_vmemranges, 8)?;
                self.check_mem(info.vdistance.0, dist.len() as u64)?;
                self.check_mem(info.vcpu_to_vnode.0, cpus.len() as u64)?;
                self.check_mem(info.vmemrange.0, ranges.len() as u64)?;
            }
            // (The buggy mode writes too-small buffers, but only up to
            // their capacity: the host heap must survive the test.)
            let cut = |bytes: &[u8], cap: u64, each: u64| {
                bytes[..(bytes.len() as u64).min(cap * each) as usize].to_vec()
            };
            let n = u64::from(caps.nr_vnodes);
            if caps.nr_vnodes > 0 {
                self.write_guest(info.vdistance.0, &cut(&dist, n * n, 4))?;
            }
            if caps.nr_vcpus > 0 {
                self.write_guest(info.vcpu_to_vnode.0, &cut(&cpus, caps.nr_vcpus.into(), 4))?;
            }
            if caps.nr_vmemranges > 0 {
                self.write_guest(
                    info.vmemrange.0,
                    &cut(&ranges, caps.nr_vmemranges.into(), 24),
                )?;
            }
            // ABI 1.1; a field beyond `n` was read as null.
            #[cfg(not(feature = "abi-1-0"))]
            if fits.is_ok()
                && !info.vnode_mem.is_null()
                && self.features.contains(Features::VNODE_MEM)
            {
                Self::aligned(info.vnode_mem, caps.nr_vnodes, 8)?;
                let mem: Vec<u8> = self
                    .vnode_mem()
                    .iter()
                    .flat_map(|m| m.as_bytes().to_vec())
                    .collect();
                self.write_guest(info.vnode_mem.0, &mem)?;
            }
        }
        self.write_back(gpa, info, n)?;
        fits.map(|()| 0)
    }

    fn physinfo(&self, gpa: u64) -> Result<u64, Error> {
        let (mut info, n) = self.read_query::<PhysInfo>(gpa, u32::MAX)?;
        let actual = PhysCounts {
            nr_nodes: self.node_mem.len() as u32,
            nr_cpus: self.cpu_to_node.len() as u32,
        };
        info.total_pages = self.node_mem.iter().map(|m| m.size_pages).sum();
        info.free_pages = self.node_mem.iter().map(|m| m.free_pages).sum();
        let fits = info.reply(actual);
        if fits.is_ok() {
            Self::aligned(info.node_mem, actual.nr_nodes, 8)?;
            Self::aligned(info.node_distance, actual.nr_nodes, 4)?;
            Self::aligned(info.cpu_to_node, actual.nr_cpus, 4)?;
            let mem: Vec<u8> = self
                .node_mem
                .iter()
                .flat_map(|m| m.as_bytes().to_vec())
                .collect();
            let dist: Vec<u8> = self
                .node_distance
                .iter()
                .flat_map(|d| d.to_le_bytes())
                .collect();
            let cpus: Vec<u8> = self
                .cpu_to_node
                .iter()
                .flat_map(|d| d.to_le_bytes())
                .collect();
            self.write_guest(info.node_mem.0, &mem)?;
            self.write_guest(info.node_distance.0, &dist)?;
            self.write_guest(info.cpu_to_node.0, &cpus)?;
        }
        self.write_back(gpa, info, n)?;
        fits.map(|()| 0)
    }

    fn domain_node_pages(&self, gpa: u64) -> Result<u64, Error> {
        let (mut info, n) = self.read_query::<DomainNodePages>(gpa, u32::MAX)?;
        let nodes = self.node_pages.len() as u32;
        let fits = info.reply(nodes);
        if fits.is_ok() {
            Self::aligned(info.pages, nodes, 8)?;
            let bytes: Vec<u8> = self
                .node_pages
                .iter()
                .flat_map(|p| p.to_le_bytes())
                .collect();
            self.write_guest(info.pages.0, &bytes)?;
        }
        self.write_back(gpa, info, n)?;
        fits.map(|()| u64::from(nodes))
    }

    fn dispatch(&self, req: HypercallRequest) -> Result<u64, Error> {
        let needs = |f: Features| {
            if self.features.contains(f) {
                Ok(())
            } else {
                Err(Error::Unsupported)
            }
        };
        match req {
            HypercallRequest::Version => Ok(self.version.encode()),
            HypercallRequest::Features { word } => {
                Ok(if word == 0 { self.features.bits() } else { 0 })
            }
            HypercallRequest::ConsoleWrite { buf, len } => {
                let bytes = self.read_guest(buf.0, len as usize)?;
                self.console.lock().unwrap().extend_from_slice(&bytes);
                Ok(len)
            }
            HypercallRequest::GetVnuma { info } => {
                needs(Features::VNUMA)?;
                self.get_vnuma(info.0)
            }
            HypercallRequest::PhysInfo { info } => {
                needs(Features::PHYSINFO)?;
                self.physinfo(info.0)
            }
            HypercallRequest::DomainNodePages { info } => {
                needs(Features::DOMAIN_NODE_PAGES)?;
                self.domain_node_pages(info.0)
            }
            HypercallRequest::Shutdown { status } => {
                self.shutdowns.lock().unwrap().push(status);
                Ok(0)
            }
            // A pretend exchange: the pages stay where they are; the answer
            // names machine 16 MiB on physical node 0.
            #[cfg(not(feature = "abi-1-1"))]
            HypercallRequest::DmaExchange { info } => {
                needs(Features::DMA_EXCHANGE)?;
                let bytes = self.read_guest(info.0, 48)?;
                let mut r = pv_abi::DmaExchange::read_from(&bytes).ok_or(Error::Fault)?;
                r.check()?;
                r.maddr = pv_abi::Maddr(16 << 20);
                self.write_guest(info.0, r.as_bytes())?;
                Ok(16 << 20)
            }
            #[cfg(not(feature = "abi-1-2"))]
            HypercallRequest::VcpuOp { op } => {
                needs(Features::VCPU_OP)?;
                self.vcpu_op(op)
            }
        }
    }

    /// `VCPU_OP` with the hypervisor's rules (`pv_abi::vcpu`): the calling
    /// vCPU is the thread's; an accepted UP runs the secondary on a thread
    /// of its own (see `run_secondaries`), which goes down when the
    /// guest's code returns.
    #[cfg(not(feature = "abi-1-2"))]
    fn vcpu_op(&self, op: pv_abi::VcpuOp) -> Result<u64, Error> {
        use pv_abi::{VcpuContext, VcpuOp};
        if op.vcpu() >= self.si.nr_vcpus {
            return Err(Error::NoSuchThing);
        }
        let is_up = |v: u32| self.vcpus.lock().unwrap().up[v as usize];
        match op {
            VcpuOp::IsUp { vcpu } => Ok(u64::from(is_up(vcpu))),
            VcpuOp::Down { vcpu } => {
                if vcpu == 0 || vcpu != crate::percpu::this_cpu() {
                    return Err(Error::InvalidArgument);
                }
                let mut v = self.vcpus.lock().unwrap();
                v.up[vcpu as usize] = false;
                v.downs.push(vcpu);
                Ok(0)
            }
            VcpuOp::Up { vcpu, context } => {
                if vcpu == 0 || is_up(vcpu) {
                    return Err(Error::InvalidArgument);
                }
                let size = u32::read_from(&self.read_guest(context.0, 4)?).unwrap_or(0);
                if size < VcpuContext::SIZE_V1_3 {
                    return Err(Error::InvalidArgument);
                }
                let bytes = self.read_guest(context.0, std::mem::size_of::<VcpuContext>())?;
                let ctx = VcpuContext::read_from(&bytes).ok_or(Error::Fault)?;
                ctx.check()?;
                if !inside_ranges(self.si.mem_ranges(), ctx.cr3.0, PAGE_SIZE) {
                    return Err(Error::Fault);
                }
                if let Some(e) = self.up_error {
                    return Err(e);
                }
                let mut v = self.vcpus.lock().unwrap();
                v.up[vcpu as usize] = true;
                v.starts.push((vcpu, ctx));
                if self.run_secondaries {
                    let vcpus = std::sync::Arc::clone(&self.vcpus);
                    let arg = ctx.arg;
                    v.threads.push(std::thread::spawn(move || {
                        crate::percpu::set_this_cpu(vcpu);
                        crate::smp::secondary_main(u64::from(vcpu), arg);
                        // What the bare-metal stub does next: DOWN.
                        vcpus.lock().unwrap().up[vcpu as usize] = false;
                    }));
                }
                Ok(0)
            }
        }
    }

    /// Waits (up to 10 s) for every secondary's thread to end; whether all
    /// did.
    #[cfg(not(feature = "abi-1-2"))]
    pub fn join_secondaries(&self) -> bool {
        let threads = std::mem::take(&mut self.vcpus.lock().unwrap().threads);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while threads.iter().any(|t| !t.is_finished()) && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let all = threads.iter().all(|t| t.is_finished());
        for t in threads.into_iter().filter(|t| t.is_finished()) {
            let _ = t.join();
        }
        all
    }

    fn read_store(&self, gpa: u64, buf: &mut [u8]) {
        let m = self.memory.lock().unwrap();
        for (i, b) in buf.iter_mut().enumerate() {
            let a = gpa + i as u64;
            *b = m
                .range(..=a)
                .next_back()
                .and_then(|(base, bytes)| bytes.get((a - base) as usize).copied())
                .unwrap_or(0);
        }
    }

    fn image_info(&self) -> ImageInfo {
        ImageInfo {
            va_start: IMAGE_VA,
            va_end: IMAGE_VA + (self.si.image_end.0 - self.si.image_start.0),
        }
    }
}

impl Platform for MockHv {
    fn hypercall(&self, regs: &HypercallArgs) -> u64 {
        let r = match HypercallRequest::from_args(regs) {
            Err(Error::Unsupported) if self.bugs.unknown_is_einval => Err(Error::InvalidArgument),
            Err(e) => Err(e),
            Ok(req) => self.dispatch(req),
        };
        HypercallResult::encode(r)
    }

    fn gpa_of(&self, va: u64) -> Option<Gpa> {
        let img = self.image_info();
        if img.contains(va) {
            return Some(Gpa(self.si.image_start.0 + (va - img.va_start)));
        }
        Some(Gpa(va))
    }

    fn read_phys(&self, gpa: Gpa, buf: &mut [u8]) {
        self.read_store(gpa.0, buf);
    }

    fn read_phys_u64(&self, gpa: Gpa) -> u64 {
        if let Some(&w) = self.words.lock().unwrap().get(&gpa.0) {
            return w;
        }
        let mut b = [0u8; 8];
        self.read_store(gpa.0, &mut b);
        u64::from_le_bytes(b)
    }

    fn probe_phys_u64(&self, gpa: Gpa, pattern: u64) -> u64 {
        assert!(
            inside_ranges(self.si.mem_ranges(), gpa.0, 8),
            "probe outside guest memory at {gpa}"
        );
        let old = self.read_phys_u64(gpa);
        self.words.lock().unwrap().insert(gpa.0, pattern);
        let back = self.read_phys_u64(gpa);
        self.words.lock().unwrap().insert(gpa.0, old);
        back
    }

    fn read_virt_u64(&self, va: u64) -> u64 {
        let gpa = self.translate(va).unwrap_or(Gpa(0));
        self.read_phys_u64(gpa)
    }

    fn translate(&self, va: u64) -> Option<Gpa> {
        self.gpa_of(va)
    }

    fn image(&self) -> ImageInfo {
        self.image_info()
    }

    fn cpuid(&self, leaf: u32) -> Option<CpuidRegs> {
        Some(match leaf {
            // EBX[31:24]: the initial APIC id, the vCPU's id.
            1 => CpuidRegs {
                ebx: crate::percpu::this_cpu() << 24,
                ecx: CPUID_1_ECX_HYPERVISOR,
                ..CpuidRegs::default()
            },
            // 48 physical address bits.
            0x8000_0008 => CpuidRegs {
                eax: 48,
                ..CpuidRegs::default()
            },
            l => CpuidRegs::hypervisor_leaf(l, self.version, self.features).unwrap_or_default(),
        })
    }

    fn cycles(&self) -> Option<u64> {
        let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Some(ns.saturating_mul(4).saturating_mul(self.clock_scale))
    }

    #[cfg(not(feature = "abi-1-2"))]
    fn secondary_start(&self) -> Option<crate::platform::SecondaryStart> {
        let boot_data = self.si.boot_data_start.0;
        Some(crate::platform::SecondaryStart {
            rip: IMAGE_VA + 0x100,
            cr3: Gpa(boot_data + 2 * PAGE_SIZE),
            gdt_base: boot_data + 3 * PAGE_SIZE,
            gdt_limit: 0x17,
        })
    }

    fn relax(&self) {
        std::thread::yield_now();
    }

    fn init_heap(&self, start: Gpa, size: u64) -> bool {
        *self.heap.lock().unwrap() = Some((start, size));
        false
    }

    fn fail(&self, mode: FailMode, hole: Gpa) -> String {
        self.fails.lock().unwrap().push((mode, hole));
        "the mock hypervisor does not fault".into()
    }
}

/// Boots the guest on `hv`; returns the status, the console transcript and
/// the hypervisor (leaked: the guest keeps a `'static` reference).
pub fn boot(hv: MockHv) -> (ShutdownStatus, String, &'static MockHv) {
    let _console = crate::console::capture::begin();
    let hv: &'static MockHv = Box::leak(Box::new(hv));
    let status = crate::boot::run(hv, hv.start_gpa);
    #[cfg(not(feature = "abi-1-2"))]
    assert!(
        hv.join_secondaries() || !hv.run_secondaries,
        "a secondary vCPU's thread is still running after the boot"
    );
    (status, crate::console::capture::text(), hv)
}

//! Every hypercall the guest makes, by its ABI name, over
//! [`Platform::hypercall`]: registers built with
//! [`HypercallRequest::to_args`], results decoded with
//! [`HypercallResult::decode`], pointers converted with
//! [`Platform::gpa_of`] (a structure on the stack lives in the image, a
//! buffer on the heap is identity-mapped).
//!
//! The query hypercalls (`GET_VNUMA`, `PHYSINFO`, `DOMAIN_NODE_PAGES`) follow
//! `pv_abi::query`: a probe with capacities 0 returns `BufferTooSmall` with
//! the counts, then a call with buffers of exactly those counts fills them.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::mem::size_of;

use pv_abi::node::INVALID_NODE;
use pv_abi::physinfo::PhysCounts;
use pv_abi::vnuma::{VnumaCounts, MAX_VNODES};
use pv_abi::{
    AbiVersion, DomainNodePages, Error, Features, Gpa, Hypercall, HypercallArgs, HypercallRequest,
    HypercallResult, NodeMemInfo, PhysInfo, ShutdownStatus, VmemRange, VnumaTopologyInfo,
};

use crate::numa::topology::Vnuma;
use crate::platform::Platform;

/// Most physical nodes the guest asks about (bounds its buffers: a distance
/// matrix of 256 nodes is 256 KiB).
pub const MAX_PHYS_NODES: u32 = 256;
/// Most CPUs or vCPUs the guest accepts in a topology.
pub const MAX_CPUS: u32 = 1 << 16;
/// Most vNUMA memory ranges the guest accepts.
pub const MAX_VMEMRANGES: u32 = 1 << 12;
/// How often a fetch retries when the counts grew between probe and fetch.
const FETCH_ATTEMPTS: usize = 3;

/// The guest-physical address of `value` (a structure or buffer the guest
/// owns). Falls back to the raw address, which the hypervisor then refuses
/// with `Fault`, so a bug shows up as an error, not as a wild write.
pub fn gpa_of<T: ?Sized>(p: &dyn Platform, value: *const T) -> Gpa {
    let va = value.cast::<u8>() as u64;
    p.gpa_of(va).unwrap_or(Gpa(va))
}

/// Issues raw registers (garbage included) and decodes the result.
pub fn raw(p: &dyn Platform, regs: &HypercallArgs) -> Result<u64, Error> {
    HypercallResult::decode(p.hypercall(regs))
}

/// Issues a well-formed request.
pub fn call(p: &dyn Platform, req: HypercallRequest) -> Result<u64, Error> {
    raw(p, &req.to_args())
}

/// `VERSION`: the raw register (decode it with [`AbiVersion::decode`]).
pub fn version_raw(p: &dyn Platform) -> u64 {
    p.hypercall(&HypercallRequest::Version.to_args())
}

/// `VERSION`, decoded; `None` if the answer is not a version.
pub fn version(p: &dyn Platform) -> Option<AbiVersion> {
    AbiVersion::decode(version_raw(p))
}

/// `FEATURES` word `word`.
pub fn features_word(p: &dyn Platform, word: u64) -> Result<u64, Error> {
    call(p, HypercallRequest::Features { word })
}

/// `FEATURES` word 0 (all bits kept, unknown ones included).
pub fn features(p: &dyn Platform) -> Result<Features, Error> {
    features_word(p, 0).map(Features::from_bits_retain)
}

/// `CONSOLE_WRITE` of bytes the guest owns.
pub fn console_write(p: &dyn Platform, bytes: &[u8]) -> Result<u64, Error> {
    call(
        p,
        HypercallRequest::ConsoleWrite {
            buf: gpa_of(p, bytes.as_ptr()),
            len: bytes.len() as u64,
        },
    )
}

/// `SHUTDOWN`. Returns only if the hypervisor refused it.
pub fn shutdown(p: &dyn Platform, status: ShutdownStatus) -> Result<u64, Error> {
    call(p, HypercallRequest::Shutdown { status })
}

/// `GET_VNUMA` on a structure the caller filled in (capacities, buffers).
pub fn get_vnuma(p: &dyn Platform, info: &mut VnumaTopologyInfo) -> Result<u64, Error> {
    let gpa = gpa_of(p, info as *mut VnumaTopologyInfo);
    call(p, HypercallRequest::GetVnuma { info: gpa })
}

/// `PHYSINFO` on a structure the caller filled in.
pub fn physinfo(p: &dyn Platform, info: &mut PhysInfo) -> Result<u64, Error> {
    let gpa = gpa_of(p, info as *mut PhysInfo);
    call(p, HypercallRequest::PhysInfo { info: gpa })
}

/// `DOMAIN_NODE_PAGES` on a structure the caller filled in.
pub fn domain_node_pages(p: &dyn Platform, info: &mut DomainNodePages) -> Result<u64, Error> {
    let gpa = gpa_of(p, info as *mut DomainNodePages);
    call(p, HypercallRequest::DomainNodePages { info: gpa })
}

/// `DMA_EXCHANGE` (ABI 1.2): gives back `pages` pages at guest-physical
/// `gpa` for machine-contiguous memory below `2^bits`; the answer carries
/// its machine address and node (`pv_abi::dma`).
#[cfg(not(feature = "abi-1-1"))]
pub fn dma_exchange(
    p: &dyn Platform,
    gpa: u64,
    pages: u64,
    bits: u32,
    flags: u32,
) -> Result<pv_abi::DmaExchange, Error> {
    let mut info = pv_abi::DmaExchange::new(Gpa(gpa), pages, bits, flags);
    let at = gpa_of(p, &raw mut info);
    call(p, HypercallRequest::DmaExchange { info: at })?;
    Ok(info)
}

/// `VCPU_OP` UP (ABI 1.3): starts vCPU `vcpu`, which is down, in the state
/// `ctx` gives. `Ok` once the hypervisor has queued it; it starts a moment
/// later, on its own physical CPU.
#[cfg(not(feature = "abi-1-2"))]
pub fn vcpu_up(p: &dyn Platform, vcpu: u32, ctx: &pv_abi::VcpuContext) -> Result<(), Error> {
    let context = gpa_of(p, ctx as *const pv_abi::VcpuContext);
    vcpu_up_at(p, vcpu, context)
}

/// `VCPU_OP` UP with the context at `context`, whatever is there (the
/// tests pass bad addresses on purpose).
#[cfg(not(feature = "abi-1-2"))]
pub fn vcpu_up_at(p: &dyn Platform, vcpu: u32, context: Gpa) -> Result<(), Error> {
    call(
        p,
        HypercallRequest::VcpuOp {
            op: pv_abi::VcpuOp::Up { vcpu, context },
        },
    )
    .map(|_| ())
}

/// `VCPU_OP` DOWN: the calling vCPU, `vcpu`, stops. On numavisor it
/// returns only when refused, with the error; a model hypervisor (host
/// tests) returns `Ok` once it took the vCPU down, and the caller then
/// leaves the vCPU's code as if it had stopped.
#[cfg(not(feature = "abi-1-2"))]
pub fn vcpu_down(p: &dyn Platform, vcpu: u32) -> Result<u64, Error> {
    call(
        p,
        HypercallRequest::VcpuOp {
            op: pv_abi::VcpuOp::Down { vcpu },
        },
    )
}

/// `VCPU_OP` IS_UP: 1 if vCPU `vcpu` is up (running, or queued to), 0 if
/// down.
#[cfg(not(feature = "abi-1-2"))]
pub fn vcpu_is_up(p: &dyn Platform, vcpu: u32) -> Result<u64, Error> {
    call(
        p,
        HypercallRequest::VcpuOp {
            op: pv_abi::VcpuOp::IsUp { vcpu },
        },
    )
}

/// Why a query could not be completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The hypercall failed.
    Hypercall {
        /// Which one.
        call: Hypercall,
        /// What it answered.
        error: Error,
        /// At which step (`"probe"` or `"fetch"`).
        step: &'static str,
    },
    /// The answer broke the query protocol or a sanity bound.
    Protocol(String),
}

impl core::fmt::Display for FetchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FetchError::Hypercall { call, error, step } => {
                write!(f, "{} ({step}) failed: {error}", call.name())
            }
            FetchError::Protocol(m) => f.write_str(m),
        }
    }
}

impl FetchError {
    /// The hypercall error, if that is what this is.
    pub fn error(&self) -> Option<Error> {
        match self {
            FetchError::Hypercall { error, .. } => Some(*error),
            FetchError::Protocol(_) => None,
        }
    }
}

fn bounded(what: &str, value: u32, max: u32) -> Result<(), FetchError> {
    if value > max {
        return Err(FetchError::Protocol(format!(
            "{what} = {value}, more than the guest accepts ({max})"
        )));
    }
    Ok(())
}

/// The probe step: a call with every capacity 0 must answer `BufferTooSmall`
/// with the counts written back.
pub fn probe_vnuma(p: &dyn Platform) -> Result<VnumaCounts, FetchError> {
    let mut info = VnumaTopologyInfo::probe();
    match get_vnuma(p, &mut info) {
        Err(Error::BufferTooSmall) => Ok(info.counts()),
        Ok(_) => Err(FetchError::Protocol(format!(
            "get_vnuma with no buffers succeeded (counts {:?}); expected buffer too small",
            info.counts()
        ))),
        Err(error) => Err(FetchError::Hypercall {
            call: Hypercall::GetVnuma,
            error,
            step: "probe",
        }),
    }
}

/// Buffers for one `GET_VNUMA` call of the given capacities.
pub struct VnumaBuffers {
    /// `nr_vnodes²` distances.
    pub vdistance: Vec<u32>,
    /// `nr_vcpus` vnode ids.
    pub vcpu_to_vnode: Vec<u32>,
    /// `nr_vmemranges` ranges.
    pub vmemrange: Vec<VmemRange>,
    /// The capacities.
    pub capacity: VnumaCounts,
}

impl VnumaBuffers {
    /// Buffers of these capacities, every entry set to `fill` (a sentinel
    /// tells whether the hypervisor wrote them).
    pub fn new(capacity: VnumaCounts, fill: u32) -> Self {
        let cells = capacity.nr_vnodes as usize * capacity.nr_vnodes as usize;
        VnumaBuffers {
            vdistance: vec![fill; cells],
            vcpu_to_vnode: vec![fill; capacity.nr_vcpus as usize],
            vmemrange: vec![
                VmemRange {
                    start: Gpa(u64::from(fill)),
                    end: Gpa(u64::from(fill)),
                    flags: fill,
                    nid: fill,
                };
                capacity.nr_vmemranges as usize
            ],
            capacity,
        }
    }

    /// The request structure pointing at these buffers (a buffer of
    /// capacity 0 gets a null address, as the protocol allows).
    pub fn request(&mut self, p: &dyn Platform) -> VnumaTopologyInfo {
        let addr = |len: usize, ptr: *mut u8| {
            if len == 0 {
                Gpa::NULL
            } else {
                gpa_of(p, ptr)
            }
        };
        VnumaTopologyInfo::new(
            self.capacity,
            addr(self.vdistance.len(), self.vdistance.as_mut_ptr().cast()),
            addr(
                self.vcpu_to_vnode.len(),
                self.vcpu_to_vnode.as_mut_ptr().cast(),
            ),
            addr(self.vmemrange.len(), self.vmemrange.as_mut_ptr().cast()),
        )
    }

    /// Whether every entry still holds `fill`.
    pub fn untouched(&self, fill: u32) -> bool {
        let f = u64::from(fill);
        self.vdistance.iter().all(|&d| d == fill)
            && self.vcpu_to_vnode.iter().all(|&v| v == fill)
            && self
                .vmemrange
                .iter()
                .all(|r| r.start.0 == f && r.end.0 == f && r.flags == fill && r.nid == fill)
    }
}

/// The calling domain's vNUMA topology: probe, then fetch with buffers of
/// exactly the counts (retrying if they grew in between).
pub fn fetch_vnuma(p: &dyn Platform) -> Result<Vnuma, FetchError> {
    let mut counts = probe_vnuma(p)?;
    for _ in 0..FETCH_ATTEMPTS {
        bounded("nr_vnodes", counts.nr_vnodes, MAX_VNODES)?;
        bounded("nr_vcpus", counts.nr_vcpus, MAX_CPUS)?;
        bounded("nr_vmemranges", counts.nr_vmemranges, MAX_VMEMRANGES)?;
        let mut bufs = VnumaBuffers::new(counts, 0);
        let mut info = bufs.request(p);
        match get_vnuma(p, &mut info) {
            Ok(_) => {
                let got = info.counts();
                if got.nr_vnodes > counts.nr_vnodes
                    || got.nr_vcpus > counts.nr_vcpus
                    || got.nr_vmemranges > counts.nr_vmemranges
                {
                    return Err(FetchError::Protocol(format!(
                        "get_vnuma succeeded with counts {got:?} above the capacities {counts:?}"
                    )));
                }
                let VnumaBuffers {
                    mut vdistance,
                    mut vcpu_to_vnode,
                    mut vmemrange,
                    ..
                } = bufs;
                // A smaller answer than the probe's: the distance matrix is
                // row-major for the *answered* count.
                let n = got.nr_vnodes as usize;
                vdistance.truncate(n * n);
                vcpu_to_vnode.truncate(got.nr_vcpus as usize);
                vmemrange.truncate(got.nr_vmemranges as usize);
                return Ok(Vnuma {
                    nr_vnodes: got.nr_vnodes,
                    nr_vcpus: got.nr_vcpus,
                    vdistance,
                    vcpu_to_vnode,
                    vmemranges: vmemrange,
                });
            }
            Err(Error::BufferTooSmall) => counts = info.counts(),
            Err(error) => {
                return Err(FetchError::Hypercall {
                    call: Hypercall::GetVnuma,
                    error,
                    step: "fetch",
                })
            }
        }
    }
    Err(FetchError::Protocol(format!(
        "get_vnuma still answered buffer too small after {FETCH_ATTEMPTS} attempts"
    )))
}

/// The machine as `PHYSINFO` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhysTopology {
    /// Pages of machine memory the hypervisor manages.
    pub total_pages: u64,
    /// Of those, free.
    pub free_pages: u64,
    /// Per physical node.
    pub node_mem: Vec<NodeMemInfo>,
    /// `nr_nodes²`, row-major.
    pub distance: Vec<u32>,
    /// Node of each CPU, or [`INVALID_NODE`].
    pub cpu_to_node: Vec<u32>,
}

impl PhysTopology {
    /// Physical nodes.
    pub fn nr_nodes(&self) -> u32 {
        self.node_mem.len() as u32
    }

    /// CPUs of `node`.
    pub fn cpus_of(&self, node: u32) -> Vec<u32> {
        (0..self.cpu_to_node.len() as u32)
            .filter(|&c| self.cpu_to_node[c as usize] == node)
            .collect()
    }

    /// Problems with the answer's consistency, if any.
    pub fn check(&self) -> Vec<String> {
        let mut bad = Vec::new();
        let n = self.nr_nodes();
        if n == 0 {
            bad.push("physinfo reports no nodes".into());
        }
        if self.free_pages > self.total_pages {
            bad.push(format!(
                "free pages {} above total pages {}",
                self.free_pages, self.total_pages
            ));
        }
        let sum = crate::numa::sum(self.node_mem.iter().map(|m| m.size_pages));
        if sum > self.total_pages {
            bad.push(format!(
                "nodes hold {sum} pages, more than the total {}",
                self.total_pages
            ));
        }
        for (i, m) in self.node_mem.iter().enumerate() {
            if m.free_pages > m.size_pages {
                bad.push(format!(
                    "node {i}: free pages {} above its size {}",
                    m.free_pages, m.size_pages
                ));
            }
        }
        for (c, &node) in self.cpu_to_node.iter().enumerate() {
            if node != INVALID_NODE && node >= n {
                bad.push(format!("cpu {c} on node {node}, but there are {n} nodes"));
            }
        }
        for a in 0..n {
            for b in 0..n {
                let d = self.distance[(a * n + b) as usize];
                if a == b && d != pv_abi::node::LOCAL_DISTANCE {
                    bad.push(format!("distance({a},{a}) = {d}, expected 10"));
                }
                // The machine's own distances: unlike a SLIT, two distinct
                // nodes may be 10 apart (Linux's NUMA emulation puts fake
                // nodes of one physical node there), but never closer.
                if a != b && d < pv_abi::node::LOCAL_DISTANCE {
                    bad.push(format!("distance({a},{b}) = {d}, expected at least 10"));
                }
            }
        }
        bad
    }
}

/// The machine's topology: probe, then fetch.
pub fn fetch_physinfo(p: &dyn Platform) -> Result<PhysTopology, FetchError> {
    let mut probe = PhysInfo::probe();
    let mut counts = match physinfo(p, &mut probe) {
        Err(Error::BufferTooSmall) => probe.counts(),
        Ok(_) => {
            return Err(FetchError::Protocol(format!(
                "physinfo with no buffers succeeded (counts {:?})",
                probe.counts()
            )))
        }
        Err(error) => {
            return Err(FetchError::Hypercall {
                call: Hypercall::PhysInfo,
                error,
                step: "probe",
            })
        }
    };
    for _ in 0..FETCH_ATTEMPTS {
        bounded("physinfo nr_nodes", counts.nr_nodes, MAX_PHYS_NODES)?;
        bounded("physinfo nr_cpus", counts.nr_cpus, MAX_CPUS)?;
        let n = counts.nr_nodes as usize;
        let mut node_mem = vec![NodeMemInfo::default(); n];
        let mut distance = vec![0u32; n * n];
        let mut cpu_to_node = vec![INVALID_NODE; counts.nr_cpus as usize];
        let addr = |len: usize, ptr: *mut u8| {
            if len == 0 {
                Gpa::NULL
            } else {
                gpa_of(p, ptr)
            }
        };
        let mut info = PhysInfo::new(
            counts,
            addr(node_mem.len(), node_mem.as_mut_ptr().cast()),
            addr(distance.len(), distance.as_mut_ptr().cast()),
            addr(cpu_to_node.len(), cpu_to_node.as_mut_ptr().cast()),
        );
        match physinfo(p, &mut info) {
            Ok(_) => {
                let got: PhysCounts = info.counts();
                if got.nr_nodes > counts.nr_nodes || got.nr_cpus > counts.nr_cpus {
                    return Err(FetchError::Protocol(format!(
                        "physinfo succeeded with counts {got:?} above the capacities {counts:?}"
                    )));
                }
                let g = got.nr_nodes as usize;
                node_mem.truncate(g);
                distance.truncate(g * g);
                cpu_to_node.truncate(got.nr_cpus as usize);
                return Ok(PhysTopology {
                    total_pages: info.total_pages,
                    free_pages: info.free_pages,
                    node_mem,
                    distance,
                    cpu_to_node,
                });
            }
            Err(Error::BufferTooSmall) => counts = info.counts(),
            Err(error) => {
                return Err(FetchError::Hypercall {
                    call: Hypercall::PhysInfo,
                    error,
                    step: "fetch",
                })
            }
        }
    }
    Err(FetchError::Protocol(format!(
        "physinfo still answered buffer too small after {FETCH_ATTEMPTS} attempts"
    )))
}

/// Pages of this domain on each physical node: probe, then fetch. The
/// hypervisor returns the number of nodes and writes it to `nr_nodes`; both
/// must agree.
pub fn fetch_domain_node_pages(p: &dyn Platform) -> Result<Vec<u64>, FetchError> {
    let mut probe = DomainNodePages::new(0, Gpa::NULL);
    let mut n = match domain_node_pages(p, &mut probe) {
        Err(Error::BufferTooSmall) => probe.nr_nodes,
        Ok(_) => {
            return Err(FetchError::Protocol(format!(
                "domain_node_pages with no buffer succeeded ({} nodes)",
                probe.nr_nodes
            )))
        }
        Err(error) => {
            return Err(FetchError::Hypercall {
                call: Hypercall::DomainNodePages,
                error,
                step: "probe",
            })
        }
    };
    for _ in 0..FETCH_ATTEMPTS {
        bounded("domain_node_pages nr_nodes", n, MAX_PHYS_NODES)?;
        let mut pages = vec![0u64; n as usize];
        let addr = if pages.is_empty() {
            Gpa::NULL
        } else {
            gpa_of(p, pages.as_mut_ptr())
        };
        let mut info = DomainNodePages::new(n, addr);
        match domain_node_pages(p, &mut info) {
            Ok(ret) => {
                if ret != u64::from(info.nr_nodes) || info.nr_nodes > n {
                    return Err(FetchError::Protocol(format!(
                        "domain_node_pages returned {ret} with nr_nodes = {} (capacity {n})",
                        info.nr_nodes
                    )));
                }
                pages.truncate(info.nr_nodes as usize);
                return Ok(pages);
            }
            Err(Error::BufferTooSmall) => n = info.nr_nodes,
            Err(error) => {
                return Err(FetchError::Hypercall {
                    call: Hypercall::DomainNodePages,
                    error,
                    step: "fetch",
                })
            }
        }
    }
    Err(FetchError::Protocol(format!(
        "domain_node_pages still answered buffer too small after {FETCH_ATTEMPTS} attempts"
    )))
}

/// ABI 1.1's answer for the per-vnode memory: what the hypervisor wrote
/// back as `GET_VNUMA`'s `size`, and the `vnode_mem` buffer.
#[cfg(not(feature = "abi-1-0"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VnodeMem {
    /// `size` written back: 56 when the hypervisor handled `vnode_mem`, 48
    /// from a 1.0 hypervisor (which never touches the buffer).
    pub size: u32,
    /// One entry per vnode (the sentinel [`VNODE_MEM_UNTOUCHED`] where the
    /// hypervisor wrote nothing).
    pub entries: Vec<pv_abi::VnodeMemInfo>,
}

/// What `vnode_mem` entries hold before the call.
#[cfg(not(feature = "abi-1-0"))]
pub const VNODE_MEM_UNTOUCHED: pv_abi::VnodeMemInfo = pv_abi::VnodeMemInfo {
    pnode: u32::MAX,
    flags: u32::MAX,
    size_pages: u64::MAX,
    free_pages: u64::MAX,
};

#[cfg(not(feature = "abi-1-0"))]
impl VnodeMem {
    /// Whether the hypervisor handled the appended `vnode_mem` field.
    pub fn handled(&self) -> bool {
        self.size as usize >= size_of::<VnumaTopologyInfo>()
    }
}

/// `GET_VNUMA` with buffers of exactly `counts` plus ABI 1.1's `vnode_mem`
/// buffer (one [`pv_abi::VnodeMemInfo`] per vnode). Works on any
/// hypervisor of major 1: a 1.0 one handles 48 bytes, writes `size` = 48
/// back and leaves the buffer alone, which [`VnodeMem::handled`] tells.
#[cfg(not(feature = "abi-1-0"))]
pub fn fetch_vnode_mem(p: &dyn Platform, counts: VnumaCounts) -> Result<VnodeMem, FetchError> {
    bounded("nr_vnodes", counts.nr_vnodes, MAX_VNODES)?;
    bounded("nr_vcpus", counts.nr_vcpus, MAX_CPUS)?;
    bounded("nr_vmemranges", counts.nr_vmemranges, MAX_VMEMRANGES)?;
    let mut bufs = VnumaBuffers::new(counts, 0);
    let mut entries = vec![VNODE_MEM_UNTOUCHED; counts.nr_vnodes as usize];
    let mut info = bufs.request(p);
    if !entries.is_empty() {
        info.vnode_mem = gpa_of(p, entries.as_mut_ptr());
    }
    get_vnuma(p, &mut info).map_err(|error| FetchError::Hypercall {
        call: Hypercall::GetVnuma,
        error,
        step: "fetch with vnode_mem",
    })?;
    if info.counts() != counts {
        return Err(FetchError::Protocol(format!(
            "get_vnuma answered counts {:?}, {counts:?} before",
            info.counts()
        )));
    }
    Ok(VnodeMem {
        size: info.size,
        entries,
    })
}

/// `size_of::<T>()` as the `u32` a query's `size` field holds.
pub const fn query_size<T>() -> u32 {
    size_of::<T>() as u32
}

//! Hypercall dispatch: one place to find every hypercall the hypervisor
//! serves, by its `pv-abi` name, with one file per family.
//!
//! Nothing a guest passes can panic the hypervisor: the registers are
//! decoded by `pv_abi::HypercallRequest::from_args` (unknown numbers,
//! non-zero unused registers, misaligned structures, over-long writes are
//! refused there), every guest address goes through [`GuestAccess`] (which
//! faults rather than touch memory outside the domain), and every result is
//! an errno-style `pv_abi::Error`.

mod console;
#[cfg(not(feature = "abi-1-1"))]
mod dma;
mod query;
#[cfg(not(feature = "abi-1-2"))]
pub mod vcpu;

use alloc::vec::Vec;

use pv_abi::{
    AbiVersion, Error, Features, Gpa, HypercallArgs, HypercallRequest, HypercallResult, Pod,
    ShutdownStatus, VmemRange,
};

pub use console::ConsoleBuffer;

/// Guest-physical memory of the calling domain.
pub trait GuestAccess {
    /// Copies `buf.len()` bytes from `gpa`; [`Error::Fault`] if any byte is
    /// outside the domain's memory (nothing is read then).
    fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), Error>;
    /// Copies `buf` to `gpa`; [`Error::Fault`] if any byte is outside the
    /// domain's memory (nothing is written then).
    fn write(&mut self, gpa: Gpa, buf: &[u8]) -> Result<(), Error>;
}

/// Reads a `Pod` structure from guest memory.
pub fn read_pod<T: Pod>(mem: &dyn GuestAccess, gpa: Gpa) -> Result<T, Error> {
    let mut v = T::zeroed();
    mem.read(gpa, v.as_bytes_mut())?;
    Ok(v)
}

/// Reads a structure that carries its own size in its first `u32` (the
/// ABI's extensible structures: queries, `DmaExchange`, `VcpuContext`):
/// the caller's `size` must be at least `min_size`; the bytes this ABI
/// knows, at most `size`, are read and the rest is zero, so a newer or
/// older caller's structure reads the same. Returns the value and the
/// accepted size (`min(size, size_of::<T>())`).
pub fn read_sized<T: Pod>(
    mem: &dyn GuestAccess,
    at: Gpa,
    min_size: u32,
) -> Result<(T, u32), Error> {
    let mut size = [0u8; 4];
    mem.read(at, &mut size)?;
    let size = u32::from_le_bytes(size);
    if size < min_size {
        return Err(Error::InvalidArgument);
    }
    let accepted = size.min(core::mem::size_of::<T>() as u32);
    let mut value = T::zeroed();
    let buf = value
        .as_bytes_mut()
        .get_mut(..accepted as usize)
        .ok_or(Error::InvalidArgument)?;
    mem.read(at, buf)?;
    Ok((value, accepted))
}

/// The calling domain's virtual NUMA topology, as GET_VNUMA reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VnumaView {
    pub nr_vnodes: u32,
    /// Row-major `nr_vnodes^2`.
    pub distances: Vec<u32>,
    pub vcpu_to_vnode: Vec<u32>,
    /// Sorted by start.
    pub ranges: Vec<VmemRange>,
    /// Per vnode: the physical node it is placed on and its pages (what
    /// ABI 1.1's `vnode_mem` reports, with the free pages of that node).
    pub vnode_placement: Vec<(u32, u64)>,
}

/// The machine, as PHYSINFO reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineView {
    pub nr_cpus: u32,
    pub total_pages: u64,
    pub free_pages: u64,
    /// Per node: (present pages, free pages).
    pub node_mem: Vec<(u64, u64)>,
    /// Row-major `nr_nodes^2`.
    pub distances: Vec<u32>,
    pub cpu_to_node: Vec<u32>,
}

/// A DMA exchange request, checked against the ABI's ranges
/// (`pv_abi::dma`): whole pages, at most `DMA_EXCHANGE_MAX_PAGES`, an
/// address limit of `DMA_EXCHANGE_MIN_BITS..=64` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExchangeRequest {
    /// First page (page-aligned).
    pub gpa: Gpa,
    /// Pages.
    pub pages: u64,
    /// The new memory lies below `2^address_bits`.
    pub address_bits: u32,
    /// Only the vnode's own physical node.
    pub exact_node: bool,
}

/// What a DMA exchange did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchanged {
    /// Machine address of the range's first byte now.
    pub maddr: pv_abi::Maddr,
    /// The physical node of the new memory.
    pub pnode: u32,
    /// Whether that is not the vnode's physical node.
    pub off_node: bool,
}

/// What a hypercall may see and do: the calling domain and the machine.
pub trait HypercallEnv {
    fn memory(&mut self) -> &mut dyn GuestAccess;
    fn vnuma(&self) -> &VnumaView;
    fn machine(&self) -> MachineView;
    /// Pages of the calling domain on each physical node.
    fn node_pages(&self) -> Vec<u64>;
    /// Console output of the calling domain.
    fn console(&mut self, bytes: &[u8]);
    /// `DMA_EXCHANGE` (ABI 1.2): trades the domain's pages for machine
    /// memory below a limit, atomically (see `pv_abi::dma`). An environment
    /// that cannot do it answers `Unsupported`.
    fn dma_exchange(&mut self, request: ExchangeRequest) -> Result<Exchanged, pv_abi::Error> {
        let _ = request;
        Err(pv_abi::Error::Unsupported)
    }
    /// Port I/O the environment emulates for the domain beyond the console
    /// (PCI configuration space, `pci::config`): `write` is the value
    /// written (`None` for a read). Returns `Some(value read)` (anything
    /// for a write) if the port is the environment's, `None` to leave it to
    /// the default (reads of all ones, writes ignored).
    fn port_io(&mut self, port: u16, size: u8, write: Option<u32>) -> Option<u32> {
        let _ = (port, size, write);
        None
    }
    /// The id of the vCPU making the hypercall.
    fn calling_vcpu(&self) -> u32 {
        0
    }
    /// How many vCPUs the domain has.
    fn nr_vcpus(&self) -> u32 {
        self.vnuma().vcpu_to_vnode.len() as u32
    }
    /// Whether vCPU `vcpu` is up (running or about to).
    fn vcpu_is_up(&self, vcpu: u32) -> bool {
        vcpu == 0
    }
    /// `VCPU_OP` UP (ABI 1.3): starts vCPU `vcpu` (down, not 0, checked by
    /// the caller) in `context` (checked too). An environment that cannot
    /// run more vCPUs answers `Unsupported`.
    #[cfg(not(feature = "abi-1-2"))]
    fn vcpu_up(&mut self, vcpu: u32, context: &pv_abi::VcpuContext) -> Result<(), pv_abi::Error> {
        let _ = (vcpu, context);
        Err(pv_abi::Error::Unsupported)
    }
}

/// What the hypervisor offers in this build (ABI 1.1 adds `VNODE_MEM`,
/// ABI 1.2 `DMA_EXCHANGE`, ABI 1.3 `VCPU_OP`).
pub const FEATURES: Features = {
    let f = Features::VNUMA
        .union(Features::PHYSINFO)
        .union(Features::DOMAIN_NODE_PAGES)
        .union(Features::VIRTUAL_ACPI);
    #[cfg(not(feature = "abi-1-0"))]
    let f = f.union(Features::VNODE_MEM);
    #[cfg(not(feature = "abi-1-1"))]
    let f = f.union(Features::DMA_EXCHANGE);
    #[cfg(not(feature = "abi-1-2"))]
    let f = f.union(Features::VCPU_OP);
    f
};

/// What the vCPU does after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Put this value in RAX and resume after VMMCALL.
    Return(u64),
    /// The domain asked to end with this status.
    Shutdown(ShutdownStatus),
    /// The calling vCPU went down (`VCPU_OP` DOWN, ABI 1.3).
    VcpuDown,
}

/// Serves one hypercall.
pub fn dispatch(args: &HypercallArgs, env: &mut dyn HypercallEnv) -> Outcome {
    let request = match HypercallRequest::from_args(args) {
        Ok(r) => r,
        Err(e) => return Outcome::Return(HypercallResult::encode(Err(e))),
    };
    let result = match request {
        HypercallRequest::Version => Ok(AbiVersion::CURRENT.encode()),
        HypercallRequest::Features { word } => Ok(if word == 0 { FEATURES.bits() } else { 0 }),
        HypercallRequest::ConsoleWrite { buf, len } => console::write(env, buf, len),
        HypercallRequest::GetVnuma { info } => query::get_vnuma(env, info),
        HypercallRequest::PhysInfo { info } => query::physinfo(env, info),
        HypercallRequest::DomainNodePages { info } => query::domain_node_pages(env, info),
        HypercallRequest::Shutdown { status } => return Outcome::Shutdown(status),
        #[cfg(not(feature = "abi-1-1"))]
        HypercallRequest::DmaExchange { info } => dma::exchange(env, info),
        #[cfg(not(feature = "abi-1-2"))]
        HypercallRequest::VcpuOp { op } => match vcpu::op(env, op) {
            Ok(vcpu::VcpuOpResult::Down) => return Outcome::VcpuDown,
            Ok(vcpu::VcpuOpResult::Value(v)) => Ok(v),
            Err(e) => Err(e),
        },
    };
    Outcome::Return(HypercallResult::encode(result))
}

#[cfg(test)]
pub(crate) mod testenv;

//! Building a domain: its machine memory (node-local, exact-node
//! allocations), and everything written into it before the first VMRUN: the
//! guest image, the guest's page tables and GDT, the virtual ACPI tables and
//! the start-info page (see `pv_abi::start_info` for the entry contract).
//!
//! Host-testable: machine memory is reached through [`MachineMemory`], and
//! the heap is the ordinary `mm::heap::Heap`.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use acpi_numa::build::{numa_table_set, NumaTableSet, TableCpu, TableMemory};
use pv_abi::{Error, Gpa, MemRange as AbiMemRange, ShutdownStatus, StartInfo};

use super::config::DomainConfig;
use super::elf::GuestImage;
use super::layout::{DomainLayout, GpaRange};
use crate::hypercall::{GuestAccess, VnumaView};
use crate::mm::addr::{Maddr, Mfn, PAGE_SIZE};
use crate::mm::heap::{AllocRequest, Claim, Heap, HeapError, MAX_ORDER};
use crate::numa::NodeId;
use crate::svm::paging::{MapError, PageTables, TableMemory as PtMemory, WRITABLE};

/// Byte access to machine memory that a domain owns.
///
/// The builder and the hypercalls only ever pass addresses that the
/// domain's layout maps (checked in [`DomainMemory`]), i.e. pages the domain
/// was given by the heap.
pub trait MachineMemory {
    fn read(&self, at: Maddr, buf: &mut [u8]);
    fn write(&mut self, at: Maddr, bytes: &[u8]);
    fn zero(&mut self, at: Maddr, len: u64);
}

/// A domain's guest-physical memory: its layout over machine memory.
pub struct DomainMemory<'a, M: MachineMemory> {
    pub layout: &'a DomainLayout,
    pub machine: M,
}

/// The machine pieces behind `[gpa, gpa + len)` in `layout`, or `Fault`
/// if any byte is outside guest memory. Each piece is contiguous in both
/// spaces.
pub fn pieces(layout: &DomainLayout, gpa: Gpa, len: usize) -> Result<Vec<(Maddr, usize)>, Error> {
    let mut out = Vec::new();
    let mut at = gpa.0;
    let end = at.checked_add(len as u64).ok_or(Error::Fault)?;
    while at < end {
        let m = layout.mapping_of(Gpa(at).frame()).ok_or(Error::Fault)?;
        let offset = at - m.gpa.0;
        let run_end = m.gpa_end().0.min(end);
        let n = (run_end - at) as usize;
        out.push((Maddr(m.maddr().0 + offset), n));
        at = run_end;
    }
    Ok(out)
}

impl<M: MachineMemory> GuestAccess for DomainMemory<'_, M> {
    fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), Error> {
        let mut done = 0;
        for (maddr, n) in pieces(self.layout, gpa, buf.len())? {
            self.machine.read(maddr, &mut buf[done..done + n]);
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, gpa: Gpa, bytes: &[u8]) -> Result<(), Error> {
        let mut done = 0;
        for (maddr, n) in pieces(self.layout, gpa, bytes.len())? {
            self.machine.write(maddr, &bytes[done..done + n]);
            done += n;
        }
        Ok(())
    }
}

/// A domain's machine memory: the heap blocks it got, and per vnode the
/// runs `(first frame, pages)` the layout is computed from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    pub blocks: Vec<(Mfn, u8)>,
    pub extents: Vec<Vec<(Mfn, u64)>>,
}

impl Allocation {
    /// Gives every block back to the heap.
    pub fn free(self, heap: &Heap) -> Result<(), HeapError> {
        let mut result = Ok(());
        for (mfn, order) in self.blocks {
            if let Err(e) = heap.free(mfn, order) {
                result = Err(e);
            }
        }
        result
    }

    pub fn total_pages(&self) -> u64 {
        self.blocks.iter().map(|&(_, o)| 1u64 << o).sum()
    }
}

const PAGES_PER_MIB: u64 = (1 << 20) / PAGE_SIZE;

/// Pages a domain's vnodes take from each physical node (vnodes that share
/// a node added up): what is claimed before it is built.
pub fn pages_per_node(config: &DomainConfig) -> Vec<(NodeId, u64)> {
    let mut want: Vec<(NodeId, u64)> = Vec::new();
    for v in &config.vnodes {
        let pages = v.size_mib.saturating_mul(PAGES_PER_MIB);
        match want.iter_mut().find(|(n, _)| *n == v.pnode) {
            Some((_, p)) => *p = p.saturating_add(pages),
            None => want.push((v.pnode, pages)),
        }
    }
    want
}

/// Takes each vnode's memory from its physical node with the exact-node
/// flag, largest blocks first, against `claim` (made with
/// [`pages_per_node`]), each block owned by the claim's domain. Never places
/// memory on another node; on failure nothing stays allocated (the claim is
/// the caller's to release).
pub fn allocate(
    heap: &Heap,
    claim: &mut Claim,
    config: &DomainConfig,
) -> Result<Allocation, String> {
    let mut alloc = Allocation::default();
    for (k, v) in config.vnodes.iter().enumerate() {
        let mut runs = Vec::new();
        let mut left = v.size_mib.saturating_mul(PAGES_PER_MIB);
        let mut order = MAX_ORDER;
        while left > 0 {
            while (1u64 << order) > left {
                order -= 1;
            }
            match heap.alloc_claimed(claim, order, AllocRequest::exact(v.pnode)) {
                Ok(mfn) => {
                    alloc.blocks.push((mfn, order));
                    runs.push((mfn, 1u64 << order));
                    left -= 1u64 << order;
                }
                Err(HeapError::NoMemory) if order > 0 => order -= 1,
                Err(e) => {
                    let _ = alloc.free(heap);
                    return Err(format!(
                        "vnode {k}: cannot take {} MiB more from node {}: {e}",
                        left.div_ceil(PAGES_PER_MIB),
                        v.pnode
                    ));
                }
            }
        }
        alloc.extents.push(runs);
    }
    Ok(alloc)
}

/// The vNUMA topology GET_VNUMA reports, from the config and the layout.
pub fn vnuma_view(config: &DomainConfig, layout: &DomainLayout) -> VnumaView {
    let mut vcpu_to_vnode = vec![0u32; config.vcpus as usize];
    for (k, v) in config.vnodes.iter().enumerate() {
        for &c in &v.vcpus {
            if let Some(slot) = vcpu_to_vnode.get_mut(c as usize) {
                *slot = k as u32;
            }
        }
    }
    let mut ranges: Vec<pv_abi::VmemRange> = layout
        .vnodes
        .iter()
        .enumerate()
        .flat_map(|(k, v)| {
            v.ranges
                .iter()
                .map(move |r| pv_abi::VmemRange::new(r.start, r.end, k as u32))
        })
        .collect();
    ranges.sort_by_key(|r| r.start);
    VnumaView {
        nr_vnodes: config.vnodes.len() as u32,
        distances: config
            .distance_matrix()
            .into_iter()
            .map(u32::from)
            .collect(),
        vcpu_to_vnode,
        ranges,
        vnode_placement: layout
            .vnodes
            .iter()
            .map(|v| (u32::from(v.pnode.0), v.pages))
            .collect(),
    }
}

/// Where the builder put things in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootPlan {
    pub image_start: Gpa,
    pub image_end: Gpa,
    pub start_info: Gpa,
    pub gdt: Gpa,
    pub acpi: Gpa,
    /// Page-table pages are taken from here up to `boot_data_limit`.
    pub tables: Gpa,
    pub boot_data_limit: Gpa,
}

/// What the first vCPU starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootState {
    pub entry: u64,
    pub cr3: Gpa,
    pub start_info: Gpa,
    pub gdt: Gpa,
    pub gdt_limit: u16,
    pub boot_data_end: Gpa,
}

/// Space for the GDT page and the ACPI tables (a set for 64 vnodes and 256
/// vCPUs is about 12 KiB).
const ACPI_SPACE: u64 = 64 << 10;
/// Space reserved for the guest's initial page tables.
const TABLE_SPACE: u64 = 2 << 20;
const TWO_MIB: u64 = 2 << 20;

fn page_up(v: u64) -> u64 {
    v.next_multiple_of(PAGE_SIZE)
}

/// The guest-physical range that holds the image and the boot data: the
/// first range of vCPU 0's vnode, or of the first vnode with memory.
fn boot_range(config: &DomainConfig, layout: &DomainLayout) -> Option<GpaRange> {
    let first = config
        .vnode_of_vcpu(0)
        .and_then(|k| layout.vnodes.get(k)?.ranges.first().copied());
    first.or_else(|| layout.vnodes.iter().find_map(|v| v.ranges.first().copied()))
}

/// Chooses where the image and boot data go.
pub fn plan(
    config: &DomainConfig,
    layout: &DomainLayout,
    image: &GuestImage,
) -> Result<BootPlan, String> {
    let base = image.span.0 & !(PAGE_SIZE - 1);
    let len = page_up(image.span.1) - base;
    let range = boot_range(config, layout).ok_or("the domain has no memory")?;
    // A guest linked inside its own memory is loaded where it is linked (the
    // identity map and the image mapping then agree); otherwise the image
    // goes at the start of the boot range, at the same offset in a 2 MiB
    // page as its virtual address, so that large pages can map it.
    let image_start = if layout.covers(Gpa(base), len) {
        Gpa(base)
    } else {
        // Guest-physical 0 stays free: a null pointer to the guest.
        Gpa(range.start.0.max(1).next_multiple_of(TWO_MIB) + base % TWO_MIB)
    };
    let image_end = Gpa(image_start.0 + len);
    let start_info = image_end;
    let gdt = Gpa(start_info.0 + page_up(core::mem::size_of::<StartInfo>() as u64));
    let acpi = Gpa(gdt.0 + PAGE_SIZE);
    let tables = Gpa(acpi.0 + ACPI_SPACE);
    let boot_data_limit = Gpa(tables.0 + TABLE_SPACE);
    if !layout.covers(image_start, boot_data_limit.0 - image_start.0) {
        return Err(format!(
            "the guest image ({} KiB) and boot data ({} KiB) do not fit in guest memory at {} \
             (the boot vnode's first range is {range})",
            len >> 10,
            (boot_data_limit.0 - start_info.0) >> 10,
            image_start
        ));
    }
    Ok(BootPlan {
        image_start,
        image_end,
        start_info,
        gdt,
        acpi,
        tables,
        boot_data_limit,
    })
}

/// Page-table pages for the guest's own tables, taken in order from the
/// boot data area and written through the domain's memory.
struct GuestTables<'m, 'a, M: MachineMemory> {
    mem: &'m mut DomainMemory<'a, M>,
    next: u64,
    limit: u64,
}

impl<M: MachineMemory> PtMemory for GuestTables<'_, '_, M> {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.next + PAGE_SIZE > self.limit {
            return None;
        }
        let t = self.next;
        self.next += PAGE_SIZE;
        self.mem.write(Gpa(t), &[0u8; PAGE_SIZE as usize]).ok()?;
        Some(t)
    }

    fn read(&self, table: u64, index: usize) -> u64 {
        let mut b = [0u8; 8];
        let _ = self.mem.read(Gpa(table + 8 * (index as u64 & 511)), &mut b);
        u64::from_le_bytes(b)
    }

    fn write(&mut self, table: u64, index: usize, entry: u64) {
        let _ = self
            .mem
            .write(Gpa(table + 8 * (index as u64 & 511)), &entry.to_le_bytes());
    }
}

/// The guest's GDT: null, 0x08 flat 64-bit code, 0x10 flat data (the
/// selectors the VMCB's segment state uses).
const GDT: [u64; 3] = [0, 0x00AF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF];

/// Writes the image, the guest's page tables and GDT, the virtual ACPI
/// tables and the start-info page. Guest memory must be zeroed already.
pub fn load<M: MachineMemory>(
    config: &DomainConfig,
    mem: &mut DomainMemory<'_, M>,
    image_bytes: &[u8],
    image: &GuestImage,
    plan: &BootPlan,
) -> Result<BootState, String> {
    let layout = mem.layout;
    // The image, at its place relative to the lowest segment.
    let base = image.span.0 & !(PAGE_SIZE - 1);
    for s in &image.segments {
        let at = Gpa(plan.image_start.0 + (s.vaddr - base));
        let bytes = s.bytes(image_bytes).ok_or("segment outside the image")?;
        mem.write(at, bytes)
            .map_err(|e| format!("loading the image at {at}: {e}"))?;
    }

    // Page tables: identity map of every guest range, then the image at its
    // virtual addresses (unless it is linked inside guest memory, where the
    // identity map already covers it).
    let tables = GuestTables {
        mem,
        next: plan.tables.0,
        limit: plan.boot_data_limit.0,
    };
    let mut pt =
        PageTables::new(tables, WRITABLE).map_err(|e| format!("guest page tables: {e}"))?;
    for r in layout.vnodes.iter().flat_map(|v| v.ranges.iter()) {
        if r.end.0 > pv_abi::start_info::GPA_LIMIT {
            return Err(format!(
                "guest memory {r} reaches beyond 2^47: cannot identity-map it"
            ));
        }
        pt.map(r.start.0, r.start.0, r.len())
            .map_err(|e: MapError| format!("identity map of {r}: {e}"))?;
    }
    let span_end = page_up(image.span.1);
    if plan.image_start.0 != base {
        pt.map(base, plan.image_start.0, span_end - base)
            .map_err(|e| format!("mapping the image at {base:#x}: {e}"))?;
    }
    let cr3 = Gpa(pt.root());
    let (tables, _) = pt.into_memory();
    let boot_data_end = Gpa(tables.next);
    let mem = tables.mem;

    // GDT.
    let mut gdt = [0u8; 24];
    for (i, d) in GDT.iter().enumerate() {
        gdt[i * 8..i * 8 + 8].copy_from_slice(&d.to_le_bytes());
    }
    mem.write(plan.gdt, &gdt).map_err(|e| format!("GDT: {e}"))?;

    // Virtual ACPI: vCPU i has APIC id i; pxm = vnode id.
    let cpus: Vec<TableCpu> = (0..config.vcpus)
        .map(|i| TableCpu {
            apic_id: i,
            pxm: config.vnode_of_vcpu(i).unwrap_or(0) as u32,
        })
        .collect();
    let memory: Vec<TableMemory> = layout
        .vnodes
        .iter()
        .enumerate()
        .flat_map(|(k, v)| {
            v.ranges.iter().map(move |r| TableMemory {
                base: r.start.0,
                length: r.len(),
                pxm: k as u32,
            })
        })
        .collect();
    let distances = config.distance_matrix();
    let set = NumaTableSet {
        cpus: &cpus,
        memory: &memory,
        distances: &distances,
        nr_pxms: config.vnodes.len(),
    };
    let acpi = numa_table_set(plan.acpi.0, &set);
    if acpi.len() as u64 > ACPI_SPACE - PAGE_SIZE {
        return Err(format!(
            "virtual ACPI tables of {} bytes do not fit",
            acpi.len()
        ));
    }
    mem.write(plan.acpi, &acpi)
        .map_err(|e| format!("ACPI tables: {e}"))?;

    // Start-info.
    let mut si = StartInfo::new();
    si.nr_vcpus = config.vcpus;
    si.nr_vnodes = config.vnodes.len() as u32;
    si.acpi_rsdp = plan.acpi;
    si.image_start = plan.image_start;
    si.image_end = plan.image_end;
    si.boot_data_start = plan.start_info;
    si.boot_data_end = boot_data_end;
    for r in layout.memory_ranges() {
        si.push_mem_range(AbiMemRange::new(
            r.gpa,
            r.size,
            r.vnode,
            pv_abi::Maddr(r.maddr.0),
        ))
        .map_err(|_| {
            format!(
                "more than {} memory ranges",
                pv_abi::start_info::MAX_MEM_RANGES
            )
        })?;
    }
    si.set_cmdline(config.cmdline.as_bytes())
        .map_err(|e| format!("command line: {e}"))?;
    mem.write(plan.start_info, pv_abi::Pod::as_bytes(&si))
        .map_err(|e| format!("start-info: {e}"))?;

    Ok(BootState {
        entry: image.entry,
        cr3,
        start_info: plan.start_info,
        gdt: plan.gdt,
        gdt_limit: (GDT.len() * 8 - 1) as u16,
        boot_data_end,
    })
}

/// How a domain ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainEnd {
    /// The guest asked to shut down with this status.
    Shutdown(ShutdownStatus),
    /// The hypervisor ended it: what happened, where.
    Killed {
        reason: String,
        rip: u64,
        gpa: Option<u64>,
    },
}

impl DomainEnd {
    pub fn is_success(&self) -> bool {
        matches!(self, DomainEnd::Shutdown(s) if s.is_success())
    }
}

#[cfg(test)]
mod tests;

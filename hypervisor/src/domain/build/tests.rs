use std::collections::BTreeMap;

use acpi_numa::{AcpiTables, PhysAddr, PhysMemory, Slit, Srat};

use super::*;
use crate::domain::config::{LayoutKind, VnodeConfig};
use crate::domain::testutil::allocate_for;
use crate::mm::addr::MemRange;
use crate::mm::frame_table::FrameTable;
use crate::mm::heap::HeapTopology;

const MIB: u64 = 1 << 20;

/// Machine memory as a sparse map of pages.
#[derive(Default)]
struct FakeMachine {
    pages: BTreeMap<u64, Vec<u8>>,
}

impl FakeMachine {
    fn page(&mut self, pfn: u64) -> &mut Vec<u8> {
        self.pages.entry(pfn).or_insert_with(|| vec![0xAA; 4096])
    }
}

/// Splits `[at, at + len)` into per-page pieces: (page, offset, piece length).
fn per_page(at: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    let mut done = 0;
    std::iter::from_fn(move || {
        if done == len {
            return None;
        }
        let a = at + done as u64;
        let off = (a & 0xfff) as usize;
        let n = (4096 - off).min(len - done);
        let item = (a >> 12, off, n, done);
        done += n;
        Some(item)
    })
}

impl MachineMemory for FakeMachine {
    fn read(&self, at: Maddr, buf: &mut [u8]) {
        for (pfn, off, n, done) in per_page(at.0, buf.len()) {
            match self.pages.get(&pfn) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[off..off + n]),
                None => buf[done..done + n].fill(0xAA),
            }
        }
    }
    fn write(&mut self, at: Maddr, bytes: &[u8]) {
        for (pfn, off, n, done) in per_page(at.0, bytes.len()) {
            self.page(pfn)[off..off + n].copy_from_slice(&bytes[done..done + n]);
        }
    }
    fn zero(&mut self, at: Maddr, len: u64) {
        self.write(at, &vec![0; len as usize]);
    }
}

/// Two nodes of 256 MiB: node 0 at 16 MiB, node 1 at 1 GiB.
fn heap() -> Heap {
    let ranges = [
        (MemRange::from_base_len(16 * MIB, 256 * MIB), NodeId(0)),
        (MemRange::from_base_len(1024 * MIB, 256 * MIB), NodeId(1)),
    ];
    let ft = FrameTable::new(&ranges).unwrap();
    let topo = HeapTopology {
        nr_nodes: 2,
        distances: vec![10, 20, 20, 10],
        cpu_nodes: vec![NodeId(0), NodeId(1)],
    };
    let h = Heap::new(ft, topo).unwrap();
    for (r, _) in ranges {
        h.add_free_range(r).unwrap();
    }
    h
}

fn config(layout: LayoutKind, sizes: [u64; 2]) -> DomainConfig {
    DomainConfig {
        name: "t".into(),
        memory_mib: sizes[0] + sizes[1],
        vcpus: 3,
        cpus: None,
        vnodes: vec![
            VnodeConfig {
                pnode: NodeId(0),
                size_mib: sizes[0],
                vcpus: vec![0, 1],
                vdistances: vec![10, 21],
            },
            VnodeConfig {
                pnode: NodeId(1),
                size_mib: sizes[1],
                vcpus: vec![2],
                vdistances: vec![21, 10],
            },
        ],
        layout,
        cmdline: "hello=1".into(),
        kernel: None,
        pci: Vec::new(),
        ..DomainConfig::default()
    }
}

/// An ELF64 image with one PT_LOAD of `code` (memory size 0x3000) at `vaddr`.
fn elf(vaddr: u64, code: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; 0x1000];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // 64-bit
    e[5] = 1; // little-endian
    e[6] = 1;
    e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..32].copy_from_slice(&vaddr.to_le_bytes()); // entry
    e[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    e[52..54].copy_from_slice(&64u16.to_le_bytes());
    e[54..56].copy_from_slice(&56u16.to_le_bytes());
    e[56..58].copy_from_slice(&1u16.to_le_bytes());
    let p = 64;
    e[p..p + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e[p + 4..p + 8].copy_from_slice(&7u32.to_le_bytes()); // RWX
    e[p + 8..p + 16].copy_from_slice(&0x1000u64.to_le_bytes()); // offset
    e[p + 16..p + 24].copy_from_slice(&vaddr.to_le_bytes());
    e[p + 24..p + 32].copy_from_slice(&vaddr.to_le_bytes());
    e[p + 32..p + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    e[p + 40..p + 48].copy_from_slice(&0x3000u64.to_le_bytes());
    e[p + 48..p + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    e.extend_from_slice(code);
    e
}

struct Acpi<'a, 'b>(&'a DomainMemory<'b, FakeMachine>);

impl PhysMemory for Acpi<'_, '_> {
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> bool {
        self.0.read(Gpa(addr.0), buf).is_ok()
    }
}

struct Walk<'a, 'b>(&'a DomainMemory<'b, FakeMachine>);

impl PtMemory for Walk<'_, '_> {
    fn alloc_table(&mut self) -> Option<u64> {
        None
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        let mut b = [0u8; 8];
        self.0.read(Gpa(table + 8 * index as u64), &mut b).unwrap();
        u64::from_le_bytes(b)
    }
    fn write(&mut self, _: u64, _: usize, _: u64) {}
}

/// Builds a domain in every layout and reads everything back the way the
/// guest will.
#[test]
fn a_domain_is_built_and_reads_back() {
    let code = [0x90u8, 0x90, 0xF4];
    let kernel_va = 0xFFFF_FFFF_8020_0000;
    let image_bytes = elf(kernel_va, &code);
    let image = GuestImage::parse(&image_bytes).unwrap();
    for kind in LayoutKind::ALL {
        let heap = heap();
        let before = heap.probe();
        let cfg = config(kind, [64, 32]);
        let alloc = allocate_for(&heap, &cfg).unwrap();
        assert_eq!(alloc.total_pages(), 96 * 256);
        let layout = DomainLayout::compute(kind, &cfg.vnodes, &alloc.extents).unwrap();
        layout
            .verify_every_page(|m| heap.frame_table().node_of(m), &[NodeId(0), NodeId(1)])
            .unwrap();
        let mut mem = DomainMemory {
            layout: &layout,
            machine: FakeMachine::default(),
        };
        let plan = plan(&cfg, &layout, &image).unwrap();
        let boot = load(&cfg, &mut mem, &image_bytes, &image, &plan).unwrap();

        // Start-info.
        let mut raw = vec![0u8; core::mem::size_of::<StartInfo>()];
        mem.read(boot.start_info, &mut raw).unwrap();
        let si = StartInfo::from_bytes(&raw).unwrap();
        si.check().unwrap();
        assert_eq!(si.nr_vcpus, 3);
        assert_eq!(si.cmdline(), "hello=1");
        let total: u64 = si.mem_ranges().iter().map(|r| r.size).sum();
        assert_eq!(total, 96 * MIB, "{kind}");
        for r in si.mem_ranges() {
            let (mfn, _) = layout.translate(r.gpa.frame()).unwrap();
            assert_eq!(mfn.maddr().0, r.maddr.0);
        }
        if kind == LayoutKind::HighOnly {
            assert!(si.mem_ranges().iter().all(|r| r.gpa.0 >= 4 << 30));
        }

        // Page tables: the image at its virtual address, RAM identity-mapped.
        let walk = PageTables::from_root(Walk(&mem), boot.cr3.0, WRITABLE);
        let entry_gpa = walk.translate(kernel_va).unwrap();
        assert_eq!(entry_gpa, plan.image_start.0);
        let mut got = [0u8; 3];
        mem.read(Gpa(entry_gpa), &mut got).unwrap();
        assert_eq!(got, code);
        for r in si.mem_ranges() {
            assert_eq!(walk.translate(r.gpa.0), Some(r.gpa.0));
            assert_eq!(
                walk.translate(r.gpa.0 + r.size - 1),
                Some(r.gpa.0 + r.size - 1)
            );
        }
        assert!(boot.boot_data_end.0 <= plan.boot_data_limit.0);

        // Virtual ACPI agrees with the config.
        let acpi = Acpi(&mem);
        let mut t = AcpiTables::discover(&acpi, Some(PhysAddr(si.acpi_rsdp.0))).unwrap();
        let srat = Srat::parse(&t.find(b"SRAT").unwrap()).unwrap();
        let pxms: Vec<u32> = srat.cpus().map(|c| c.pxm).collect();
        assert_eq!(pxms, vec![0, 0, 1]);
        let srat_bytes: u64 = srat.memory().map(|m| m.length).sum();
        assert_eq!(srat_bytes, 96 * MIB);
        let slit = Slit::parse(&t.find(b"SLIT").unwrap()).unwrap();
        assert_eq!(slit.distance(0, 1), Some(21));

        let view = vnuma_view(&cfg, &layout);
        assert_eq!(view.vcpu_to_vnode, vec![0, 0, 1]);
        assert_eq!(view.distances, vec![10, 21, 21, 10]);

        alloc.free(&heap).unwrap();
        assert_eq!(heap.probe(), before, "{kind}: every page back");
    }
}

#[test]
fn a_node_without_enough_memory_refuses_the_domain() {
    let heap = heap();
    let before = heap.probe();
    let cfg = config(LayoutKind::Compact, [64, 300]);
    let err = allocate_for(&heap, &cfg).unwrap_err();
    assert!(err.contains("node 1") && err.contains("short by"), "{err}");
    assert_eq!(heap.probe(), before);
}

#[test]
fn guest_access_faults_outside_the_domain() {
    let heap = heap();
    let cfg = config(LayoutKind::NodeBits, [16, 16]);
    let alloc = allocate_for(&heap, &cfg).unwrap();
    let layout = DomainLayout::compute(cfg.layout, &cfg.vnodes, &alloc.extents).unwrap();
    let mut mem = DomainMemory {
        layout: &layout,
        machine: FakeMachine::default(),
    };
    let end0 = layout.vnodes[0].ranges[0].end;
    // Straddling the end of vnode 0 into the hole: refused whole.
    assert_eq!(mem.write(Gpa(end0.0 - 2), &[1, 2, 3, 4]), Err(Error::Fault));
    let mut b = [0u8; 2];
    mem.read(Gpa(end0.0 - 2), &mut b).unwrap();
    assert_eq!(b, [0xAA, 0xAA], "nothing was written");
    assert_eq!(mem.read(Gpa(u64::MAX - 1), &mut b), Err(Error::Fault));
    mem.write(Gpa(1 << 36), &[7]).unwrap();
}

#[test]
fn an_image_that_does_not_fit_is_refused() {
    let heap = heap();
    let mut cfg = config(LayoutKind::Compact, [1, 1]);
    cfg.memory_mib = 2;
    let alloc = allocate_for(&heap, &cfg).unwrap();
    let layout = DomainLayout::compute(cfg.layout, &cfg.vnodes, &alloc.extents).unwrap();
    let image_bytes = elf(0xFFFF_FFFF_8020_0000, &[0x90]);
    let image = GuestImage::parse(&image_bytes).unwrap();
    let err = plan(&cfg, &layout, &image).unwrap_err();
    assert!(err.contains("do not fit"), "{err}");
}

//! The virtual ACPI tables: discovery over guest memory, Linux's node
//! numbering from the SRAT, and the cross-check against `GET_VNUMA`.
//!
//! The hypervisor writes an RSDP, an XSDT, a MADT, a SRAT and a SLIT that
//! describe exactly the domain's vNUMA (`Features::VIRTUAL_ACPI`): the
//! proximity domain of vnode V is V, the APIC id of vCPU i is i. Every
//! disagreement is reported with both values.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use acpi_numa::{AcpiTables, Madt, PhysAddr, PhysMemory, Rsdp, Slit, Srat, SratEntry};
use pv_abi::{Gpa, MemRange};

use super::coalesce;
use super::topology::Vnuma;
use crate::boot::start_info::inside_ranges;
use crate::platform::Platform;

/// Guest memory for the ACPI parsers: reads through the identity map, and
/// only inside the domain's memory ranges (anything else reads as "not
/// readable", never as a fault).
pub struct GuestPhys<'a> {
    /// The machine.
    pub platform: &'a dyn Platform,
    /// The domain's memory (start-info).
    pub ranges: &'a [MemRange],
}

impl PhysMemory for GuestPhys<'_> {
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> bool {
        if !inside_ranges(self.ranges, addr.0, buf.len() as u64) {
            return false;
        }
        self.platform.read_phys(Gpa(addr.0), buf);
        true
    }
}

/// What the virtual tables say.
#[derive(Clone, Debug)]
pub struct AcpiView {
    /// The RSDP.
    pub rsdp: Rsdp,
    /// `XSDT` or `RSDT`: which root table was used.
    pub root: [u8; 4],
    /// Signatures the root table lists, in order.
    pub listed: Vec<[u8; 4]>,
    /// The parsed SRAT, or why there is none.
    pub srat: Result<Srat, String>,
    /// The parsed SLIT, or why there is none.
    pub slit: Result<Slit, String>,
    /// The parsed MADT, or why there is none.
    pub madt: Result<Madt, String>,
    /// Every warning of discovery and parsing.
    pub warnings: Vec<String>,
}

/// A signature as text.
pub fn sig(s: &[u8; 4]) -> &str {
    core::str::from_utf8(s).unwrap_or("????")
}

/// Reads the tables from the RSDP the hypervisor named.
pub fn read_acpi<M: PhysMemory + ?Sized>(
    mem: &M,
    rsdp: Gpa,
) -> Result<AcpiView, acpi_numa::AcpiError> {
    let mut tables = AcpiTables::discover(mem, Some(PhysAddr(rsdp.0)))?;
    let listed = tables.tables().iter().map(|t| t.signature).collect();
    let mut warnings = Vec::new();
    let srat = match tables.find(b"SRAT") {
        None => Err("no SRAT".to_string()),
        Some(bytes) => Srat::parse(&bytes).map_err(|e| e.to_string()),
    };
    let slit = match tables.find(b"SLIT") {
        None => Err("no SLIT".to_string()),
        Some(bytes) => Slit::parse(&bytes).map_err(|e| e.to_string()),
    };
    let madt = match tables.find(b"APIC") {
        None => Err("no MADT".to_string()),
        Some(bytes) => Madt::parse(&bytes).map_err(|e| e.to_string()),
    };
    warnings.extend(tables.take_warnings());
    if let Ok(s) = &srat {
        warnings.extend(s.warnings.iter().cloned());
        if s.malformed {
            warnings.push("SRAT is malformed (Linux would ignore it)".into());
        }
    }
    if let Ok(m) = &madt {
        warnings.extend(m.warnings.iter().cloned());
        if m.malformed {
            warnings.push("MADT is malformed (Linux would ignore it)".into());
        }
    }
    Ok(AcpiView {
        rsdp: *tables.rsdp(),
        root: tables.root_signature(),
        listed,
        srat,
        slit,
        madt,
        warnings,
    })
}

/// Linux's numbering: entry N is the proximity domain of node N.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NodeMap {
    /// Proximity domain of each node, in node order.
    pub pxm_of_node: Vec<u32>,
}

impl NodeMap {
    /// Node ids as Linux hands them out (`acpi_numa_init`): enabled
    /// processor entries (types 0 and 2) in table order first, then enabled
    /// memory entries in table order. Disabled entries name no node.
    pub fn from_srat(srat: &Srat) -> Self {
        let mut pxms: Vec<u32> = Vec::new();
        let mut add = |p: u32| {
            if !pxms.contains(&p) {
                pxms.push(p);
            }
        };
        for c in srat.cpus().filter(|c| c.enabled) {
            add(c.pxm);
        }
        for m in srat.memory().filter(|m| m.enabled) {
            add(m.pxm);
        }
        NodeMap { pxm_of_node: pxms }
    }

    /// Nodes.
    pub fn len(&self) -> usize {
        self.pxm_of_node.len()
    }

    /// Whether there is no node.
    pub fn is_empty(&self) -> bool {
        self.pxm_of_node.is_empty()
    }

    /// The node of a proximity domain.
    pub fn node_of(&self, pxm: u32) -> Option<u32> {
        self.pxm_of_node
            .iter()
            .position(|&p| p == pxm)
            .map(|n| n as u32)
    }
}

/// The memory of proximity domain `pxm`, merged.
pub fn srat_memory_of(srat: &Srat, pxm: u32) -> Vec<(u64, u64)> {
    coalesce(
        srat.memory()
            .filter(|m| m.enabled && m.pxm == pxm)
            .map(|m| (m.range().start.0, m.range().end.0)),
    )
}

/// The APIC ids the SRAT places on `pxm` (enabled entries).
pub fn srat_cpus_of(srat: &Srat, pxm: u32) -> Vec<u32> {
    srat.cpus()
        .filter(|c| c.enabled && c.pxm == pxm)
        .map(|c| c.apic_id)
        .collect()
}

/// Same nodes: as many SRAT proximity domains as vnodes (memoryless vnodes
/// included), each one a vnode id.
pub fn check_nodes(srat: &Srat, v: &Vnuma) -> Vec<String> {
    let map = NodeMap::from_srat(srat);
    let mut bad = Vec::new();
    if map.len() != v.nr_vnodes as usize {
        bad.push(format!(
            "SRAT names {} proximity domains {:?}, get_vnuma reports {} vnodes",
            map.len(),
            map.pxm_of_node,
            v.nr_vnodes
        ));
    }
    for &pxm in &map.pxm_of_node {
        if pxm >= v.nr_vnodes {
            bad.push(format!(
                "SRAT proximity domain {pxm} is no vnode (there are {})",
                v.nr_vnodes
            ));
        }
    }
    for vnode in 0..v.nr_vnodes {
        if map.node_of(vnode).is_none() {
            bad.push(format!("vnode {vnode} has no SRAT entry"));
        }
    }
    bad
}

/// Each vnode's memory equals the SRAT memory of its proximity domain.
pub fn check_memory(srat: &Srat, v: &Vnuma) -> Vec<String> {
    let mut bad = Vec::new();
    for vnode in 0..v.nr_vnodes {
        let from_srat = srat_memory_of(srat, vnode);
        let from_hv = v.memory_of(vnode);
        if from_srat != from_hv {
            bad.push(format!(
                "vnode {vnode} memory: get_vnuma {}, SRAT {}",
                super::format_ranges(&from_hv),
                super::format_ranges(&from_srat)
            ));
        }
    }
    for m in srat.memory().filter(|m| m.enabled && m.pxm >= v.nr_vnodes) {
        bad.push(format!(
            "SRAT memory [{:#x}..{:#x}) on proximity domain {}, which is no vnode",
            m.range().start.0,
            m.range().end.0,
            m.pxm
        ));
    }
    bad
}

/// vCPU i (APIC id i) is in the SRAT once, on the proximity domain of its
/// vnode; the SRAT names no other processor.
pub fn check_cpus(srat: &Srat, v: &Vnuma) -> Vec<String> {
    let mut bad = Vec::new();
    let mut seen: Vec<u32> = Vec::new();
    for c in srat.cpus().filter(|c| c.enabled) {
        if seen.contains(&c.apic_id) {
            bad.push(format!("SRAT names APIC id {} twice", c.apic_id));
            continue;
        }
        seen.push(c.apic_id);
        match v.vcpu_to_vnode.get(c.apic_id as usize) {
            None => bad.push(format!(
                "SRAT names APIC id {} (pxm {}), but the domain has {} vCPUs",
                c.apic_id, c.pxm, v.nr_vcpus
            )),
            Some(&vnode) if vnode != c.pxm => bad.push(format!(
                "vCPU {}: get_vnuma says vnode {vnode}, SRAT says proximity domain {}",
                c.apic_id, c.pxm
            )),
            Some(_) => {}
        }
    }
    for cpu in 0..v.nr_vcpus {
        if !seen.contains(&cpu) {
            bad.push(format!("vCPU {cpu} (APIC id {cpu}) has no SRAT entry"));
        }
    }
    bad
}

/// The SLIT is the vdistance matrix (indexed by proximity domain = vnode).
pub fn check_slit(slit: &Slit, v: &Vnuma) -> Vec<String> {
    let mut bad = Vec::new();
    if slit.localities() != v.nr_vnodes as usize {
        bad.push(format!(
            "SLIT has {} localities, get_vnuma {} vnodes",
            slit.localities(),
            v.nr_vnodes
        ));
    }
    for a in 0..v.nr_vnodes {
        for b in 0..v.nr_vnodes {
            let hv = v.distance(a, b);
            let acpi = slit.distance(a, b).map(u32::from);
            if hv != acpi {
                bad.push(format!(
                    "distance({a},{b}): get_vnuma {}, SLIT {}",
                    opt(hv),
                    opt(acpi)
                ));
            }
        }
    }
    bad
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "missing".into(), |d| d.to_string())
}

/// The MADT lists exactly `nr_vcpus` enabled CPUs, APIC ids 0, 1, ... in
/// order (the order is Linux's logical CPU numbering).
pub fn check_madt(madt: &Madt, nr_vcpus: u32) -> Vec<String> {
    let mut bad = Vec::new();
    let enabled: Vec<u32> = madt
        .cpus
        .iter()
        .filter(|c| c.enabled)
        .map(|c| c.apic_id)
        .collect();
    if enabled.len() != nr_vcpus as usize {
        bad.push(format!(
            "MADT lists {} enabled CPUs, the domain has {nr_vcpus} vCPUs",
            enabled.len()
        ));
    }
    for (i, &apic) in enabled.iter().enumerate() {
        if apic != i as u32 {
            bad.push(format!(
                "MADT enabled CPU {i} has APIC id {apic}, expected {i}"
            ));
        }
    }
    bad
}

/// Every disagreement between the tables and `GET_VNUMA`.
pub fn cross_check(view: &AcpiView, v: &Vnuma) -> Vec<String> {
    let mut bad = Vec::new();
    match &view.srat {
        Ok(srat) => {
            bad.extend(check_nodes(srat, v));
            bad.extend(check_memory(srat, v));
            bad.extend(check_cpus(srat, v));
        }
        Err(e) => bad.push(format!("SRAT unusable: {e}")),
    }
    match &view.slit {
        Ok(slit) => bad.extend(check_slit(slit, v)),
        Err(e) => bad.push(format!("SLIT unusable: {e}")),
    }
    match &view.madt {
        Ok(madt) => bad.extend(check_madt(madt, v.nr_vcpus)),
        Err(e) => bad.push(format!("MADT unusable: {e}")),
    }
    bad
}

/// Entries of a SRAT, for diagnostics.
pub fn describe_srat(srat: &Srat) -> Vec<String> {
    srat.entries
        .iter()
        .map(|e| match e {
            SratEntry::Cpu(c) => format!(
                "cpu apic {} pxm {}{}",
                c.apic_id,
                c.pxm,
                if c.enabled { "" } else { " (disabled)" }
            ),
            SratEntry::Memory(m) => format!(
                "memory [{:#x}..{:#x}) pxm {}{}",
                m.range().start.0,
                m.range().end.0,
                m.pxm,
                if m.enabled { "" } else { " (disabled)" }
            ),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::numa::topology::tests::two_nodes;
    use acpi_numa::build::{numa_table_set, NumaTableSet, TableCpu, TableMemory, TestMem};

    /// The tables a hypervisor following pv-abi writes for `v`, at `base`.
    pub(crate) fn tables_for(v: &Vnuma, base: u64) -> Vec<u8> {
        let cpus: Vec<TableCpu> = v
            .vcpu_to_vnode
            .iter()
            .enumerate()
            .map(|(i, &n)| TableCpu {
                apic_id: i as u32,
                pxm: n,
            })
            .collect();
        let memory: Vec<TableMemory> = v
            .vmemranges
            .iter()
            .map(|r| TableMemory {
                base: r.start.0,
                length: r.byte_len(),
                pxm: r.nid,
            })
            .collect();
        let distances: Vec<u8> = v.vdistance.iter().map(|&d| d as u8).collect();
        numa_table_set(
            base,
            &NumaTableSet {
                cpus: &cpus,
                memory: &memory,
                distances: &distances,
                nr_pxms: v.nr_vnodes as usize,
            },
        )
    }

    fn view_of(bytes: &[u8], base: u64) -> AcpiView {
        let mut mem = TestMem::new(base, bytes.len() + 64);
        mem.put(base, bytes);
        read_acpi(&mem, Gpa(base)).unwrap()
    }

    #[test]
    fn matching_tables_agree() {
        let (v, _) = two_nodes();
        let view = view_of(&tables_for(&v, 0x40_1000), 0x40_1000);
        assert_eq!(&view.root, b"XSDT");
        assert!(view.warnings.is_empty(), "{:?}", view.warnings);
        assert_eq!(cross_check(&view, &v), Vec::<String>::new());
        let map = NodeMap::from_srat(view.srat.as_ref().unwrap());
        assert_eq!(map.pxm_of_node, vec![0, 1]);
    }

    #[test]
    fn disagreements_are_precise() {
        let (v, _) = two_nodes();
        let mut other = v.clone();
        other.vdistance = vec![10, 21, 20, 10];
        other.vcpu_to_vnode = vec![0, 1, 1, 1];
        other.vmemranges[1].end = Gpa(0x1_1000_0000);
        let view = view_of(&tables_for(&other, 0x9000), 0x9000);
        assert_eq!(
            cross_check(&view, &v),
            vec![
                "vnode 1 memory: get_vnuma [0x100000000..0x120000000), SRAT [0x100000000..0x110000000)",
                "vCPU 1: get_vnuma says vnode 0, SRAT says proximity domain 1",
                "distance(0,1): get_vnuma 20, SLIT 21",
            ]
        );
    }

    #[test]
    fn missing_nodes_and_cpus() {
        let (v, _) = two_nodes();
        let mut fewer = v.clone();
        fewer.nr_vnodes = 1;
        fewer.nr_vcpus = 3;
        fewer.vcpu_to_vnode = vec![0, 0, 0];
        fewer.vdistance = vec![10];
        fewer.vmemranges.truncate(1);
        let view = view_of(&tables_for(&fewer, 0x9000), 0x9000);
        let bad = cross_check(&view, &v);
        assert_eq!(
            bad,
            vec![
                "SRAT names 1 proximity domains [0], get_vnuma reports 2 vnodes",
                "vnode 1 has no SRAT entry",
                "vnode 1 memory: get_vnuma [0x100000000..0x120000000), SRAT none",
                "vCPU 2: get_vnuma says vnode 1, SRAT says proximity domain 0",
                "vCPU 3 (APIC id 3) has no SRAT entry",
                "SLIT has 1 localities, get_vnuma 2 vnodes",
                "distance(0,1): get_vnuma 20, SLIT missing",
                "distance(1,0): get_vnuma 20, SLIT missing",
                "distance(1,1): get_vnuma 10, SLIT missing",
                "MADT lists 3 enabled CPUs, the domain has 4 vCPUs",
            ]
        );
    }

    #[test]
    fn linux_numbering_follows_processor_entries_first() {
        use acpi_numa::build::SratBuilder;
        // Memory-only pxm 5 listed first; CPUs name pxm 3 then 1.
        let t = SratBuilder::new()
            .mem(5, 0, 0x1000_0000)
            .cpu(3, 0)
            .cpu(1, 1)
            .cpu(3, 2)
            .cpu_flags(7, 3, 0)
            .mem(1, 0x1000_0000, 0x1000_0000)
            .mem_flags(9, 0x2000_0000, 0x1000, 0)
            .build();
        let srat = Srat::parse(&t).unwrap();
        assert_eq!(NodeMap::from_srat(&srat).pxm_of_node, vec![3, 1, 5]);
        assert_eq!(NodeMap::from_srat(&srat).node_of(5), Some(2));
        assert_eq!(srat_cpus_of(&srat, 3), vec![0, 2]);
        assert_eq!(describe_srat(&srat)[4], "cpu apic 3 pxm 7 (disabled)");
    }

    #[test]
    fn guest_memory_bounds_reads() {
        let (_, si) = two_nodes();
        struct Zero;
        impl Platform for Zero {
            fn hypercall(&self, _: &pv_abi::HypercallArgs) -> u64 {
                0
            }
            fn gpa_of(&self, va: u64) -> Option<Gpa> {
                Some(Gpa(va))
            }
            fn read_phys(&self, _: Gpa, buf: &mut [u8]) {
                buf.fill(7);
            }
            fn read_phys_u64(&self, _: Gpa) -> u64 {
                0
            }
            fn probe_phys_u64(&self, _: Gpa, p: u64) -> u64 {
                p
            }
            fn read_virt_u64(&self, _: u64) -> u64 {
                0
            }
            fn translate(&self, va: u64) -> Option<Gpa> {
                Some(Gpa(va))
            }
            fn image(&self) -> crate::platform::ImageInfo {
                crate::platform::ImageInfo {
                    va_start: 0,
                    va_end: 0,
                }
            }
            fn cpuid(&self, _: u32) -> Option<pv_abi::cpuid::CpuidRegs> {
                None
            }
            fn init_heap(&self, _: Gpa, _: u64) -> bool {
                false
            }
            fn fail(&self, _: crate::platform::FailMode, _: Gpa) -> String {
                String::new()
            }
        }
        let mem = GuestPhys {
            platform: &Zero,
            ranges: si.mem_ranges(),
        };
        let mut buf = [0u8; 16];
        // Across the two adjacent ranges of vnode 0: fine.
        assert!(mem.read(PhysAddr(0x1000_0000 - 8), &mut buf));
        assert_eq!(buf, [7; 16]);
        // Past the end of vnode 0, into the hole: refused.
        assert!(!mem.read(PhysAddr(0x2000_0000 - 8), &mut buf));
        assert!(!mem.read(PhysAddr(u64::MAX - 4), &mut buf));
        assert!(mem.read(PhysAddr(0x1_1fff_fff0), &mut buf));
    }
}

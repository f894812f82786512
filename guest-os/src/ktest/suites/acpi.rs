//! Suite `acpi`: the virtual SRAT, SLIT and MADT parse without warnings and
//! describe exactly what `GET_VNUMA` reports (without `GET_VNUMA`, the SRAT
//! memory is compared with start-info's ranges instead).

use alloc::format;
use alloc::vec::Vec;

use acpi_numa::{Madt, Slit, Srat};
use pv_abi::{StartInfo, VmemRange};

use crate::boot::Guest;
use crate::ktest::{problems, skip, Suite, Test, TestError, TestResult};
use crate::numa::acpi::{self, AcpiView};
use crate::numa::topology::Vnuma;

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "acpi",
    tests: &[
        Test {
            name: "tables_found",
            run: tables_found,
        },
        Test {
            name: "parse_without_warnings",
            run: parse_without_warnings,
        },
        Test {
            name: "srat_nodes_match_vnuma",
            run: srat_nodes_match_vnuma,
        },
        Test {
            name: "srat_memory_matches_vnuma",
            run: srat_memory_matches_vnuma,
        },
        Test {
            name: "srat_cpus_match_vnuma",
            run: srat_cpus_match_vnuma,
        },
        Test {
            name: "slit_matches_vnuma",
            run: slit_matches_vnuma,
        },
        Test {
            name: "madt_lists_vcpus",
            run: madt_lists_vcpus,
        },
    ],
};

fn view(g: &Guest) -> Result<&AcpiView, TestError> {
    match &g.acpi {
        None => Err(TestError::Skip(
            "no virtual ACPI tables (feature not offered)".into(),
        )),
        Some(Err(e)) => Err(TestError::Fail(format!("tables unreadable: {e}"))),
        Some(Ok(v)) => Ok(v),
    }
}

fn srat(g: &Guest) -> Result<&Srat, TestError> {
    view(g)?
        .srat
        .as_ref()
        .map_err(|e| TestError::Fail(format!("SRAT: {e}")))
}

fn slit(g: &Guest) -> Result<&Slit, TestError> {
    view(g)?
        .slit
        .as_ref()
        .map_err(|e| TestError::Fail(format!("SLIT: {e}")))
}

fn madt(g: &Guest) -> Result<&Madt, TestError> {
    view(g)?
        .madt
        .as_ref()
        .map_err(|e| TestError::Fail(format!("MADT: {e}")))
}

/// What to compare with: `GET_VNUMA`, or (without it) the memory and counts
/// start-info gives, which is all it knows.
fn reference(g: &Guest) -> Result<Option<&Vnuma>, TestError> {
    match &g.vnuma {
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(e)) => Err(TestError::Fail(format!("get_vnuma at boot: {e}"))),
        None => Ok(None),
    }
}

/// A vNUMA topology built from start-info alone: vnodes, vCPUs and memory,
/// no distances and no vCPU placement.
fn from_start_info(si: &StartInfo) -> Vnuma {
    Vnuma {
        nr_vnodes: si.nr_vnodes,
        nr_vcpus: si.nr_vcpus,
        vdistance: Vec::new(),
        vcpu_to_vnode: Vec::new(),
        vmemranges: si
            .mem_ranges()
            .iter()
            .map(|r| VmemRange::new(r.gpa, pv_abi::Gpa(r.gpa.0.saturating_add(r.size)), r.vnode))
            .collect(),
    }
}

/// RSDP, XSDT, SRAT, SLIT and MADT are there and valid.
fn tables_found(g: &Guest) -> TestResult {
    let v = view(g)?;
    let mut bad = Vec::new();
    if &v.root != b"XSDT" {
        bad.push(format!(
            "root table is {}, expected an XSDT (RSDP revision {})",
            acpi::sig(&v.root),
            v.rsdp.revision
        ));
    }
    for (what, r) in [
        ("SRAT", v.srat.as_ref().err()),
        ("SLIT", v.slit.as_ref().err()),
        ("MADT", v.madt.as_ref().err()),
    ] {
        if let Some(e) = r {
            bad.push(format!("{what}: {e}"));
        }
    }
    problems(bad)
}

/// No discovery or parser warning, nothing malformed.
fn parse_without_warnings(g: &Guest) -> TestResult {
    problems(view(g)?.warnings.clone())
}

/// As many proximity domains as vnodes, each a vnode id.
fn srat_nodes_match_vnuma(g: &Guest) -> TestResult {
    let srat = srat(g)?;
    match reference(g)? {
        Some(v) => problems(acpi::check_nodes(srat, v)),
        None => problems(acpi::check_nodes(srat, &from_start_info(&g.si))),
    }
}

/// Each vnode's memory equals its proximity domain's SRAT memory.
fn srat_memory_matches_vnuma(g: &Guest) -> TestResult {
    let srat = srat(g)?;
    match reference(g)? {
        Some(v) => problems(acpi::check_memory(srat, v)),
        None => problems(acpi::check_memory(srat, &from_start_info(&g.si))),
    }
}

/// vCPU i (APIC id i) sits on its vnode's proximity domain.
fn srat_cpus_match_vnuma(g: &Guest) -> TestResult {
    let srat = srat(g)?;
    let Some(v) = reference(g)? else {
        skip!("no get_vnuma to compare the SRAT's CPUs with");
    };
    problems(acpi::check_cpus(srat, v))
}

/// The SLIT equals the vdistance matrix.
fn slit_matches_vnuma(g: &Guest) -> TestResult {
    let slit = slit(g)?;
    let Some(v) = reference(g)? else {
        skip!("no get_vnuma to compare the SLIT with");
    };
    problems(acpi::check_slit(slit, v))
}

/// Exactly `nr_vcpus` enabled CPUs, APIC ids 0, 1, ... in order.
fn madt_lists_vcpus(g: &Guest) -> TestResult {
    problems(acpi::check_madt(madt(g)?, g.si.nr_vcpus))
}

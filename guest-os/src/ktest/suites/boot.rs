//! Suite `boot`: the start-info page, the ABI version and features, the
//! command line, the regions the guest was given, the image mapping.

use alloc::format;
use alloc::vec::Vec;

use pv_abi::cpuid::{CPUID_1_ECX_HYPERVISOR, CPUID_LEAF_SIGNATURE, CPUID_LEAF_VERSION};
use pv_abi::{AbiVersion, Features, Gpa, StartInfo, ABI_MAJOR, PAGE_SIZE};

use crate::boot::start_info::check_regions;
use crate::boot::Guest;
use crate::hypercall;
use crate::ktest::{ensure, problems, skip, Suite, Test, TestResult};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "boot",
    tests: &[
        Test {
            name: "start_info_valid",
            run: start_info_valid,
        },
        Test {
            name: "abi_version",
            run: abi_version,
        },
        Test {
            name: "cpuid_leaves",
            run: cpuid_leaves,
        },
        Test {
            name: "features_present",
            run: features_present,
        },
        Test {
            name: "cmdline_readable",
            run: cmdline_readable,
        },
        Test {
            name: "regions_inside_memory",
            run: regions_inside_memory,
        },
        Test {
            name: "image_mapping",
            run: image_mapping,
        },
    ],
};

/// The copy validates, and the page in memory still says the same.
fn start_info_valid(g: &Guest) -> TestResult {
    g.si.check()
        .map_err(|e| format!("the copy fails validation: {e}"))?;
    let mut page = [0u8; PAGE_SIZE as usize];
    g.p.read_phys(g.start_gpa, &mut page);
    let again = StartInfo::from_bytes(&page).map_err(|e| format!("re-read: {e}"))?;
    ensure!(
        again == g.si,
        "the start-info page changed since boot: {again:?} vs {:?}",
        g.si
    );
    Ok(())
}

/// VERSION answers the same as at boot, with our major, and start-info
/// carries the same version.
fn abi_version(g: &Guest) -> TestResult {
    let raw = hypercall::version_raw(g.p);
    let v = AbiVersion::decode(raw).ok_or(format!("VERSION answered {raw:#x}"))?;
    ensure!(
        v.major == ABI_MAJOR,
        "hypervisor major {} differs from the guest's {ABI_MAJOR}",
        v.major
    );
    ensure!(
        v == g.hv_version,
        "VERSION said {} at boot, now {v}",
        g.hv_version
    );
    ensure!(
        g.si.version == v,
        "start-info says ABI {}, VERSION {v}",
        g.si.version
    );
    Ok(())
}

/// CPUID: the hypervisor bit, the signature leaf, the version leaf equal to
/// the hypercalls' answers.
fn cpuid_leaves(g: &Guest) -> TestResult {
    let Some(leaf1) = g.p.cpuid(1) else {
        skip!("no CPUID on this platform");
    };
    let mut bad = Vec::new();
    if leaf1.ecx & CPUID_1_ECX_HYPERVISOR == 0 {
        bad.push(format!(
            "CPUID.1:ECX = {:#x}: the hypervisor bit (31) is clear",
            leaf1.ecx
        ));
    }
    match g.p.cpuid(CPUID_LEAF_SIGNATURE) {
        Some(sig) if sig.is_numavisor() => {}
        Some(sig) => bad.push(format!(
            "CPUID {CPUID_LEAF_SIGNATURE:#x}: {sig:?} is not numavisor's signature"
        )),
        None => bad.push(format!("CPUID {CPUID_LEAF_SIGNATURE:#x} unavailable")),
    }
    match g.p.cpuid(CPUID_LEAF_VERSION) {
        Some(r) => {
            let (v, f) = r.decode_version_leaf();
            if v != g.hv_version {
                bad.push(format!(
                    "CPUID {CPUID_LEAF_VERSION:#x} says ABI {v}, VERSION {}",
                    g.hv_version
                ));
            }
            if f != g.features {
                bad.push(format!(
                    "CPUID {CPUID_LEAF_VERSION:#x} says features {f}, FEATURES {}",
                    g.features
                ));
            }
        }
        None => bad.push(format!("CPUID {CPUID_LEAF_VERSION:#x} unavailable")),
    }
    problems(bad)
}

/// Every feature the hypervisor's ABI version defines (as far as this guest
/// knows them) is offered, bit 63 is clear, and a hypervisor of a version
/// this guest knows sets no bit that version does not define and answers 0
/// for other words. (A 1.1 guest on a 1.0 hypervisor expects 1.0's bits and
/// takes its fallback for the rest.)
fn features_present(g: &Guest) -> TestResult {
    let mut bad = Vec::new();
    if g.features.intersects(Features::RESERVED) {
        bad.push(format!("bit 63 is set in {:#x}", g.features.bits()));
    }
    let defined = Features::defined_in(g.hv_version);
    let missing = defined.difference(g.features);
    if !missing.is_empty() {
        bad.push(format!(
            "ABI {} defines {missing} but it is not offered (fallback paths used)",
            g.hv_version
        ));
    }
    if g.hv_version <= AbiVersion::CURRENT {
        let unknown = g.features.difference(defined);
        if !unknown.is_empty() {
            bad.push(format!(
                "an ABI {} hypervisor offers bits that version does not define: {unknown}",
                g.hv_version
            ));
        }
        match hypercall::features_word(g.p, 1) {
            Ok(0) => {}
            other => bad.push(format!(
                "FEATURES word 1 answered {other:?}, expected Ok(0)"
            )),
        }
    }
    match hypercall::features(g.p) {
        Ok(f) if f == g.features => {}
        other => bad.push(format!(
            "FEATURES answered {other:?} now, {} at boot",
            g.features
        )),
    }
    problems(bad)
}

/// The command line is NUL-terminated UTF-8.
fn cmdline_readable(g: &Guest) -> TestResult {
    let bytes = g.si.cmdline_bytes();
    ensure!(
        bytes.len() < g.si.cmdline.len(),
        "the command line has no NUL"
    );
    if let Err(e) = core::str::from_utf8(bytes) {
        return Err(format!(
            "the command line is not UTF-8 from byte {} on",
            e.valid_up_to()
        )
        .into());
    }
    ensure!(
        g.si.cmdline() == core::str::from_utf8(bytes).unwrap_or_default(),
        "the command line reads back differently"
    );
    Ok(())
}

/// Image and boot data inside guest memory and apart; the page and the RSDP
/// in the boot data; the image as large as linked.
fn regions_inside_memory(g: &Guest) -> TestResult {
    problems(check_regions(&g.si, g.start_gpa, g.p.image().size()))
}

/// The image runs at its link address on the pages start-info names: the
/// page tables translate `__image_start` to `image_start`, the last byte
/// likewise, and the two mappings show the same bytes.
fn image_mapping(g: &Guest) -> TestResult {
    let img = g.p.image();
    let mut bad = Vec::new();
    let last = img.va_end - 1;
    for (what, va, want) in [
        ("__image_start", img.va_start, g.si.image_start.0),
        (
            "the image's last byte",
            last,
            g.si.image_start.0 + img.size() - 1,
        ),
    ] {
        match g.p.translate(va) {
            Some(Gpa(got)) if got == want => {}
            got => bad.push(format!(
                "{what} ({va:#x}) translates to {got:?}, expected {:?}",
                Gpa(want)
            )),
        }
    }
    if g.p.gpa_of(img.va_start) != Some(g.si.image_start) {
        bad.push(format!(
            "__pa(__image_start) = {:?}, start-info image_start {}",
            g.p.gpa_of(img.va_start),
            g.si.image_start
        ));
    }
    for off in [0, (img.size() / 2) & !7, img.size() - 8] {
        let via_image = g.p.read_virt_u64(img.va_start + off);
        let via_identity = g.p.read_phys_u64(Gpa(g.si.image_start.0 + off));
        if via_image != via_identity {
            bad.push(format!(
                "image offset {off:#x}: {via_image:#x} at its link address, {via_identity:#x} through the identity map"
            ));
        }
    }
    problems(bad)
}

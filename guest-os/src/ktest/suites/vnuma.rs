//! Suite `vnuma`: the `GET_VNUMA` query protocol (zero buffers, exact
//! buffers, one short, larger ones, a longer structure) and the topology's
//! self-consistency; `PHYSINFO`'s consistency; ABI 1.1's `vnode_mem` (or
//! the way a 1.0 hypervisor ignores it).

use alloc::format;
use alloc::vec::Vec;
use core::mem::size_of;
use core::ops::RangeInclusive;

use pv_abi::vnuma::VnumaCounts;
use pv_abi::{Error, Features, VnumaTopologyInfo};

use crate::boot::Guest;
use crate::hypercall::{self, gpa_of, VnumaBuffers};
use crate::ktest::{ensure, problems, skip, Suite, Test, TestError, TestResult};
use crate::numa::topology::Vnuma;

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "vnuma",
    tests: &[
        Test {
            name: "probe_reports_counts",
            run: probe_reports_counts,
        },
        Test {
            name: "exact_buffers_succeed",
            run: exact_buffers_succeed,
        },
        Test {
            name: "short_by_one_is_too_small",
            run: short_by_one_is_too_small,
        },
        Test {
            name: "larger_buffers_succeed",
            run: larger_buffers_succeed,
        },
        Test {
            name: "longer_structure_accepted",
            run: longer_structure_accepted,
        },
        Test {
            name: "distances_sane",
            run: distances_sane,
        },
        Test {
            name: "vcpus_on_existing_vnodes",
            run: vcpus_on_existing_vnodes,
        },
        Test {
            name: "ranges_well_formed",
            run: ranges_well_formed,
        },
        Test {
            name: "ranges_match_start_info",
            run: ranges_match_start_info,
        },
        Test {
            name: "physinfo_consistent",
            run: physinfo_consistent,
        },
        #[cfg(not(feature = "abi-1-0"))]
        Test {
            name: "vnode_mem",
            run: vnode_mem,
        },
    ],
};

/// Sentinel for buffers the hypervisor must not write.
const SENTINEL: u32 = 0xDEAD_BEEF;

/// The topology fetched at boot, or skip/fail.
fn topology(g: &Guest) -> Result<&Vnuma, TestError> {
    match &g.vnuma {
        None => Err(TestError::Skip("no VNUMA feature".into())),
        Some(Err(e)) => Err(TestError::Fail(format!("get_vnuma at boot: {e}"))),
        Some(Ok(v)) => Ok(v),
    }
}

fn counts(v: &Vnuma) -> VnumaCounts {
    VnumaCounts {
        nr_vnodes: v.nr_vnodes,
        nr_vcpus: v.nr_vcpus,
        nr_vmemranges: v.vmemranges.len() as u32,
    }
}

/// Capacities 0: `BufferTooSmall`, the counts written back (equal to
/// start-info's), `size` written back as 1.0's.
fn probe_reports_counts(g: &Guest) -> TestResult {
    if !g.features.contains(Features::VNUMA) {
        skip!("no VNUMA feature");
    }
    let mut info = VnumaTopologyInfo::probe();
    let r = hypercall::get_vnuma(g.p, &mut info);
    ensure!(
        r == Err(Error::BufferTooSmall),
        "zero capacities answered {r:?}, expected buffer too small"
    );
    let c = info.counts();
    let mut bad = Vec::new();
    if c.nr_vnodes != g.si.nr_vnodes || c.nr_vcpus != g.si.nr_vcpus {
        bad.push(format!(
            "counts {c:?}, start-info says {} vnodes and {} vCPUs",
            g.si.nr_vnodes, g.si.nr_vcpus
        ));
    }
    let has_memory = !g.si.mem_ranges().is_empty();
    if has_memory && c.nr_vmemranges == 0 {
        bad.push("no memory ranges counted".into());
    }
    let expected = handled_sizes(g, size_of::<VnumaTopologyInfo>() as u32);
    if !expected.contains(&info.size) {
        bad.push(format!(
            "size written back as {}, expected {expected:?} from an ABI {} hypervisor",
            info.size, g.hv_version
        ));
    }
    if info.flags != 0 || info.reserved != 0 {
        bad.push(format!(
            "flags {} / reserved {} written back non-zero",
            info.flags, info.reserved
        ));
    }
    problems(bad)
}

/// Buffers of exactly the counts: success (0), counts unchanged, contents
/// equal to what the boot fetch got.
fn exact_buffers_succeed(g: &Guest) -> TestResult {
    let v = topology(g)?;
    let mut bufs = VnumaBuffers::new(counts(v), SENTINEL);
    let mut info = bufs.request(g.p);
    let r = hypercall::get_vnuma(g.p, &mut info);
    ensure!(r == Ok(0), "exact buffers answered {r:?}, expected Ok(0)");
    ensure!(
        info.counts() == counts(v),
        "counts {:?}, expected {:?}",
        info.counts(),
        counts(v)
    );
    ensure!(
        bufs.vdistance == v.vdistance
            && bufs.vcpu_to_vnode == v.vcpu_to_vnode
            && bufs.vmemrange == v.vmemranges,
        "a second fetch differs from the first"
    );
    Ok(())
}

/// Each capacity one short in turn: `BufferTooSmall`, the real counts
/// written back, no buffer written.
fn short_by_one_is_too_small(g: &Guest) -> TestResult {
    let v = topology(g)?;
    let actual = counts(v);
    let mut bad = Vec::new();
    for which in 0..3 {
        let mut cap = actual;
        let (what, field) = match which {
            0 => ("nr_vnodes", &mut cap.nr_vnodes),
            1 => ("nr_vcpus", &mut cap.nr_vcpus),
            _ => ("nr_vmemranges", &mut cap.nr_vmemranges),
        };
        if *field == 0 {
            continue;
        }
        *field -= 1;
        let mut bufs = VnumaBuffers::new(cap, SENTINEL);
        let mut info = bufs.request(g.p);
        let r = hypercall::get_vnuma(g.p, &mut info);
        if r != Err(Error::BufferTooSmall) {
            bad.push(format!(
                "{what} one short answered {r:?}, expected buffer too small"
            ));
        }
        if info.counts() != actual {
            bad.push(format!(
                "{what} one short wrote back {:?}, expected {actual:?}",
                info.counts()
            ));
        }
        if !bufs.untouched(SENTINEL) {
            bad.push(format!("{what} one short: a buffer was written"));
        }
    }
    problems(bad)
}

/// Capacities one larger: success with the real counts.
fn larger_buffers_succeed(g: &Guest) -> TestResult {
    let v = topology(g)?;
    let actual = counts(v);
    let cap = VnumaCounts {
        nr_vnodes: actual.nr_vnodes + 1,
        nr_vcpus: actual.nr_vcpus + 1,
        nr_vmemranges: actual.nr_vmemranges + 1,
    };
    let mut bufs = VnumaBuffers::new(cap, SENTINEL);
    let mut info = bufs.request(g.p);
    let r = hypercall::get_vnuma(g.p, &mut info);
    ensure!(r == Ok(0), "larger buffers answered {r:?}, expected Ok(0)");
    ensure!(
        info.counts() == actual,
        "counts {:?}, expected {actual:?}",
        info.counts()
    );
    ensure!(
        bufs.vcpu_to_vnode[..actual.nr_vcpus as usize] == v.vcpu_to_vnode[..]
            && bufs.vmemrange[..actual.nr_vmemranges as usize] == v.vmemranges[..],
        "the answer differs from the boot fetch"
    );
    Ok(())
}

/// The `size` a hypervisor may write back for a `VnumaTopologyInfo` of
/// `caller` bytes: the smaller of that and its ABI version's size (48 from
/// 1.0, 56 from 1.1). A hypervisor newer than this guest may know a longer
/// structure: anything from ours up to the caller's.
fn handled_sizes(g: &Guest, caller: u32) -> RangeInclusive<u32> {
    match VnumaTopologyInfo::size_in(g.hv_version) {
        Some(hv) => hv.min(caller)..=hv.min(caller),
        None => (size_of::<VnumaTopologyInfo>() as u32).min(caller)..=caller,
    }
}

/// A newer guest's longer structure (ours plus 16 bytes): accepted, only
/// the hypervisor's version's bytes handled and written back (`size` = 48
/// from 1.0, 56 from 1.1), the tail zero. (The tail is zero going in, so a
/// newer hypervisor that knows more of it reads null buffers and writes
/// zeros back.)
fn longer_structure_accepted(g: &Guest) -> TestResult {
    let v = topology(g)?;
    #[repr(C)]
    struct Longer {
        info: VnumaTopologyInfo,
        tail: [u64; 2],
    }
    let mut bufs = VnumaBuffers::new(counts(v), SENTINEL);
    let mut longer = Longer {
        info: bufs.request(g.p),
        tail: [0, 0],
    };
    longer.info.size = size_of::<Longer>() as u32;
    let gpa = gpa_of(g.p, &mut longer as *mut Longer);
    let r = hypercall::call(g.p, pv_abi::HypercallRequest::GetVnuma { info: gpa });
    // The hypervisor wrote through the Gpa: read the structure back.
    let longer = core::hint::black_box(longer);
    ensure!(
        r == Ok(0),
        "a {}-byte structure answered {r:?}, expected Ok(0)",
        size_of::<Longer>()
    );
    let expected = handled_sizes(g, size_of::<Longer>() as u32);
    ensure!(
        expected.contains(&longer.info.size),
        "size written back as {}, expected {expected:?} from an ABI {} hypervisor",
        longer.info.size,
        g.hv_version
    );
    ensure!(
        longer.tail == [0, 0],
        "the zero tail past the structure came back non-zero"
    );
    Ok(())
}

/// ABI 1.1's `vnode_mem`, asked for whatever the features say. With
/// `VNODE_MEM`: handled (`size` 56), one entry per vnode, consistent with
/// the memory ranges, `PHYSINFO` and `DOMAIN_NODE_PAGES`. Without it (a 1.0
/// hypervisor): the buffer is untouched, and a 1.0 hypervisor ignores the
/// appended field as the ABI promises (`size` 48 written back): the guest
/// takes its fallback.
#[cfg(not(feature = "abi-1-0"))]
fn vnode_mem(g: &Guest) -> TestResult {
    use crate::boot::vnode_mem::{check, counts};
    use crate::hypercall::VNODE_MEM_UNTOUCHED;
    let v = topology(g)?;
    let m = hypercall::fetch_vnode_mem(g.p, counts(v)).map_err(|e| format!("{e}"))?;
    if !g.features.contains(Features::VNODE_MEM) {
        let expected = handled_sizes(g, size_of::<VnumaTopologyInfo>() as u32);
        ensure!(
            expected.contains(&m.size),
            "without VNODE_MEM, size {} written back, expected {expected:?}",
            m.size
        );
        ensure!(
            m.entries.iter().all(|e| *e == VNODE_MEM_UNTOUCHED),
            "without VNODE_MEM, the vnode_mem buffer was written"
        );
        return Ok(());
    }
    ensure!(
        m.handled(),
        "VNODE_MEM offered but size {} written back",
        m.size
    );
    let physinfo = g.physinfo.as_ref().and_then(|r| r.as_ref().ok());
    // Pages the DMA exchange took from another node still belong to their
    // vnode: count them where the vnode lives, as vnode_mem does.
    let pages = g
        .node_pages
        .as_ref()
        .and_then(|r| r.as_ref().ok())
        .map(|p| {
            let mut p = p.clone();
            for x in g.dma.exchanges.iter().filter(|x| x.off_node) {
                let n = x.bytes / pv_abi::PAGE_SIZE;
                let home = m.entries.get(x.vnode as usize).map(|e| e.pnode as usize);
                if let (Some(from), Some(to)) = (p.get_mut(x.pnode as usize), home) {
                    *from = from.saturating_sub(n);
                    if let Some(slot) = p.get_mut(to) {
                        *slot += n;
                    }
                }
            }
            p
        });
    problems(check(&m.entries, v, physinfo, pages.as_deref()))
}

/// 10 on the diagonal, more than 10 elsewhere. (Symmetry is not required:
/// a domain config may be asymmetric; boot prints which it is.)
fn distances_sane(g: &Guest) -> TestResult {
    problems(topology(g)?.check_distances())
}

/// Every vCPU maps to an existing vnode.
fn vcpus_on_existing_vnodes(g: &Guest) -> TestResult {
    let v = topology(g)?;
    let mut bad = v.check_shape();
    bad.extend(v.check_vcpus());
    problems(bad)
}

/// Ranges sorted, not overlapping, page-aligned, inside guest memory.
fn ranges_well_formed(g: &Guest) -> TestResult {
    problems(topology(g)?.check_ranges(&g.si))
}

/// Each vnode's start-info ranges add up to (and merge into) its
/// vmemranges; the counts agree with start-info.
fn ranges_match_start_info(g: &Guest) -> TestResult {
    problems(topology(g)?.check_start_info(&g.si))
}

/// `PHYSINFO`'s answer is consistent.
fn physinfo_consistent(g: &Guest) -> TestResult {
    match &g.physinfo {
        None => skip!("no PHYSINFO feature"),
        Some(Err(e)) if e.error() == Some(Error::NotPermitted) => {
            skip!("the machine is hidden from this domain")
        }
        Some(Err(e)) => Err(TestError::Fail(format!("physinfo: {e}"))),
        Some(Ok(t)) => problems(t.check()),
    }
}

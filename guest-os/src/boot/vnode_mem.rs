//! ABI 1.1's per-vnode memory and its fallback (a guest built for ABI 1.0,
//! `--features abi-1-0`, has none of this).
//!
//! With [`Features::VNODE_MEM`], `GET_VNUMA` also fills `vnode_mem`: each
//! vnode's physical node, its size, and the free memory of that node. The
//! guest prints one line per vnode:
//!
//! ```text
//! guest: vnode 0: 64 MiB on pnode 0, 446 MiB free there
//! ```
//!
//! Without it (a 1.0 hypervisor) the guest falls back to what 1.0 tells:
//! each vnode's size from the `GET_VNUMA` memory ranges, the free memory
//! behind it unknown:
//!
//! ```text
//! guest: vnode-mem not offered (hypervisor ABI 1.0): fallback: sizes from get_vnuma, free memory unknown
//! guest: vnode 0: 64 MiB, free memory unknown
//! ```

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use pv_abi::node::INVALID_NODE;
use pv_abi::vnuma::VnumaCounts;
use pv_abi::{AbiVersion, Features, VnodeMemInfo, PAGE_SIZE};

use crate::hypercall::{self, PhysTopology, VnodeMem};
use crate::numa::topology::Vnuma;
use crate::platform::Platform;
use crate::println;

/// The counts of a fetched topology.
pub fn counts(v: &Vnuma) -> VnumaCounts {
    VnumaCounts {
        nr_vnodes: v.nr_vnodes,
        nr_vcpus: v.nr_vcpus,
        nr_vmemranges: v.vmemranges.len() as u32,
    }
}

/// Pages of `vnode` by its `GET_VNUMA` memory ranges.
pub fn vnode_pages(v: &Vnuma, vnode: u32) -> u64 {
    crate::numa::sum(
        v.memory_of(vnode)
            .iter()
            .map(|&(start, end)| end.saturating_sub(start) / PAGE_SIZE),
    )
}

fn mib(pages: u64) -> u64 {
    pages.saturating_mul(PAGE_SIZE) >> 20
}

/// Fetches and prints the per-vnode memory, or takes the fallback. Returns
/// the entries when the hypervisor gave them.
pub fn report(
    p: &dyn Platform,
    features: Features,
    hv: AbiVersion,
    vnuma: Option<&Vnuma>,
) -> Option<Vec<VnodeMemInfo>> {
    let v = vnuma?;
    if !features.contains(Features::VNODE_MEM) {
        println!(
            "guest: vnode-mem not offered (hypervisor ABI {hv}): fallback: sizes from get_vnuma, free memory unknown"
        );
        for k in 0..v.nr_vnodes {
            println!(
                "guest: vnode {k}: {} MiB, free memory unknown",
                mib(vnode_pages(v, k))
            );
        }
        return None;
    }
    match hypercall::fetch_vnode_mem(p, counts(v)) {
        Ok(m) if m.handled() => {
            for (k, e) in m.entries.iter().enumerate() {
                println!(
                    "guest: vnode {k}: {} MiB on pnode {}, {} MiB free there",
                    mib(e.size_pages),
                    e.pnode,
                    mib(e.free_pages)
                );
            }
            Some(m.entries)
        }
        Ok(VnodeMem { size, .. }) => {
            println!(
                "guest: vnode-mem: offered, but get_vnuma handled only {size} bytes: no per-vnode memory"
            );
            None
        }
        Err(e) => {
            println!("guest: vnode-mem: {e}");
            None
        }
    }
}

/// Problems with `vnode_mem` entries: one per vnode, sizes equal to the
/// memory ranges, physical nodes that exist, and (when the machine is
/// visible) each node's pages of this domain equal to the sum over its
/// vnodes and free memory within the node's size.
pub fn check(
    entries: &[VnodeMemInfo],
    v: &Vnuma,
    physinfo: Option<&PhysTopology>,
    node_pages: Option<&[u64]>,
) -> Vec<String> {
    let mut bad = Vec::new();
    if entries.len() != v.nr_vnodes as usize {
        bad.push(format!(
            "{} entries for {} vnodes",
            entries.len(),
            v.nr_vnodes
        ));
    }
    let mut per_pnode: Vec<u64> = Vec::new();
    for (k, e) in entries.iter().enumerate() {
        let want = vnode_pages(v, k as u32);
        if e.size_pages != want {
            bad.push(format!(
                "vnode {k}: {} pages, its memory ranges hold {want}",
                e.size_pages
            ));
        }
        if e.pnode == INVALID_NODE || e.flags != 0 {
            bad.push(format!("vnode {k}: pnode {} flags {:#x}", e.pnode, e.flags));
            continue;
        }
        let i = e.pnode as usize;
        if per_pnode.len() <= i {
            per_pnode.resize(i + 1, 0);
        }
        per_pnode[i] = per_pnode[i].saturating_add(e.size_pages);
        if let Some(t) = physinfo {
            match t.node_mem.get(i) {
                None => bad.push(format!(
                    "vnode {k}: pnode {} but physinfo reports {} nodes",
                    e.pnode,
                    t.node_mem.len()
                )),
                Some(n) if e.free_pages > n.size_pages => bad.push(format!(
                    "vnode {k}: {} pages free on pnode {}, which has {}",
                    e.free_pages, e.pnode, n.size_pages
                )),
                Some(_) => {}
            }
        }
    }
    if let Some(pages) = node_pages {
        for (n, &want) in pages.iter().enumerate() {
            let got = per_pnode.get(n).copied().unwrap_or(0);
            if got != want {
                bad.push(format!(
                    "pnode {n}: vnode_mem puts {got} pages there, domain_node_pages {want}"
                ));
            }
        }
        if per_pnode.len() > pages.len() && per_pnode[pages.len()..].iter().any(|&p| p > 0) {
            bad.push("vnode_mem names a pnode domain_node_pages does not".into());
        }
    }
    bad
}

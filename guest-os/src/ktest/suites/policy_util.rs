//! Helpers the memory-policy and slab suites share: nodes to work on,
//! per-node counts, the preferred zone of an allocation, giving a task's
//! pages back.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::ktest::TestError;
use crate::mm::mempolicy::{Errno, Mempolicies, Task};
use crate::mm::{Mm, NodeMask, Page, ZoneType, ZonelistKind};

/// The nodes with memory, in id order.
pub fn memory_nodes(mm: &Mm) -> Vec<u32> {
    mm.memory_nodes().iter().collect()
}

/// Two nodes with memory (the first two), or a skip.
pub fn two_memory_nodes(mm: &Mm) -> Result<(u32, u32), TestError> {
    match memory_nodes(mm).as_slice() {
        [a, b, ..] => Ok((*a, *b)),
        _ => Err(TestError::Skip("fewer than two nodes with memory".into())),
    }
}

/// Pages per node.
pub fn per_node(mm: &Mm, pages: &[Page]) -> Vec<u64> {
    let mut c = vec![0; mm.nr_nodes() as usize];
    for p in pages {
        if let Some(x) = c.get_mut(p.nid as usize) {
            *x += 1;
        }
    }
    c
}

/// The node of the preferred zone of an allocation preferring `nid` under
/// `mask` (`first_zones_zonelist`), Normal and below.
pub fn preferred_zone_node(mm: &Mm, nid: u32, mask: Option<&NodeMask>) -> Option<u32> {
    mm.zonelist(nid, ZonelistKind::Fallback)
        .and_then(|zl| zl.first_zone(ZoneType::Normal, mask))
        .map(|z| z.nid)
}

/// `Ok` or the errno as a failure line.
pub fn ok(what: &str, r: Result<(), Errno>) -> Result<(), String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// A task's pages back (and its mappings gone); the problems.
pub fn exit(sys: &Mempolicies<'_>, t: &mut Task) -> Vec<String> {
    sys.exit(t)
}

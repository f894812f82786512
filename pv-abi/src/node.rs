//! Node ids and distances, shared by the vNUMA and physinfo structures.
//!
//! Physical node ids follow Linux's numbering on the same machine (processor
//! affinity entries of the SRAT first, in order, then memory-only ones), so
//! node N here is node N in Linux. Virtual node ids are `0..nr_vnodes` of the
//! domain. Distances follow the ACPI SLIT: 10 is local, larger is farther.
//! A distance matrix is `nr * nr` `u32`s, row-major: entry `from * nr + to`.

/// Distance from a node to itself.
pub const LOCAL_DISTANCE: u32 = 10;
/// Default distance between two different nodes when none is given.
pub const REMOTE_DISTANCE: u32 = 20;
/// "No node": a CPU whose node is unknown (Xen's `XEN_INVALID_NODE_ID`).
pub const INVALID_NODE: u32 = u32::MAX;

/// Index of entry (`from`, `to`) in a row-major `nr * nr` distance matrix,
/// or `None` if either id is out of range.
pub const fn distance_index(nr: u32, from: u32, to: u32) -> Option<usize> {
    if from >= nr || to >= nr {
        return None;
    }
    Some(from as usize * nr as usize + to as usize)
}

/// Entries in an `nr * nr` distance matrix (in `u64`, so it cannot overflow).
pub const fn distance_entries(nr: u32) -> u64 {
    nr as u64 * nr as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_indexing() {
        assert_eq!(distance_index(3, 0, 0), Some(0));
        assert_eq!(distance_index(3, 1, 2), Some(5));
        assert_eq!(distance_index(3, 2, 2), Some(8));
        assert_eq!(distance_index(3, 3, 0), None);
        assert_eq!(distance_index(3, 0, 3), None);
        assert_eq!(distance_index(0, 0, 0), None);
        assert_eq!(distance_entries(u32::MAX), (u32::MAX as u64).pow(2));
    }
}

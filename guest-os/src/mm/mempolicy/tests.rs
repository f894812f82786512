//! Host tests of memory policies: LTP-style scenarios, and property tests
//! against simple reference models (bind never leaves its nodes and fails
//! only when they are full; interleave balanced within 1 in rotation
//! order; weighted interleave exact per full round; rebinding by the rules
//! of numa_memory_policy.rst written independently; validation by the
//! manual pages' rules).

use alloc::collections::BTreeSet;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;
use pv_abi::{Gpa, Maddr};

use super::uapi::*;
use super::*;
use crate::mm::init::{MmConfig, NodeConfig, PhysRange};
use crate::mm::{AllocError, Gfp, Mm, NodeMask, NumaStat, Page, ZoneType};

const MB: u64 = 1 << 20;

/// A machine: node k has `mem_mib[k]` MiB (0: memoryless) at guest and
/// machine address 16 MiB + 64 MiB * k (ZONE_DMA32), the CPUs listed, the
/// distances given (or 10/20).
pub(crate) fn machine(mem_mib: &[u64], cpus: &[&[u32]], distances: Option<Vec<u32>>) -> Mm {
    let n = mem_mib.len();
    let nodes = (0..n)
        .map(|k| NodeConfig {
            vnode: k as u32,
            cpus: cpus.get(k).map_or(vec![], |c| c.to_vec()),
            memory: if mem_mib[k] == 0 {
                vec![]
            } else {
                let at = 16 * MB + 64 * MB * k as u64;
                vec![PhysRange {
                    gpa: Gpa(at),
                    size: mem_mib[k] * MB,
                    maddr: Maddr(at),
                }]
            },
        })
        .collect();
    let nr_cpus = cpus.iter().map(|c| c.len() as u32).sum::<u32>().max(1);
    let distances = distances.unwrap_or_else(|| {
        (0..n * n)
            .map(|i| if i / n == i % n { 10 } else { 20 })
            .collect()
    });
    Mm::new(MmConfig {
        nodes,
        distances,
        nr_cpus,
        reserved: vec![],
        order: None,
    })
    .unwrap()
}

fn mask(nodes: &[u32]) -> NodeMask {
    nodes.iter().copied().collect()
}

fn free_all(mm: &Mm, pages: Vec<Page>) {
    for p in pages {
        mm.free(p).unwrap();
    }
}

fn all_free(mm: &Mm) -> bool {
    mm.drain_all_pages();
    mm.zones().all(|z| {
        let i = z.info();
        i.free == i.managed
    })
}

/// LTP set_mempolicy02 on two nodes: N pages interleaved, exactly half on
/// each, `interleave_hit` and `numa_hit` N/2 each.
#[test]
fn ltp_interleave_halves() {
    let mm = machine(&[8, 8], &[&[0], &[1]], None);
    let sys = Mempolicies::new(&mm);
    let mut t = sys.new_task();
    sys.set_mempolicy(&mut t, MPOL_INTERLEAVE, mask(&[0, 1]))
        .unwrap();
    let pages: Vec<Page> = (0..100)
        .map(|_| sys.alloc_pages(&mut t, Gfp::KERNEL, 0).unwrap())
        .collect();
    let on0 = pages.iter().filter(|p| p.nid == 0).count();
    assert_eq!((on0, 100 - on0), (50, 50));
    for nid in 0..2 {
        let s = mm.numa_stats(nid).unwrap();
        assert_eq!((s.numa_hit, s.interleave_hit, s.numa_miss), (50, 50, 0));
    }
    assert_eq!(mm.numa_stats(0).unwrap().local_node, 50);
    assert_eq!(mm.numa_stats(1).unwrap().other_node, 50);
    free_all(&mm, pages);
    assert!(all_free(&mm));
}

/// LTP get_mempolicy01: what was set is what is read, for every mode.
#[test]
fn ltp_get_mempolicy() {
    let mm = machine(&[8, 8, 0], &[&[0], &[1], &[2]], None);
    let sys = Mempolicies::new(&mm);
    let mut t = sys.new_task();
    for (mode, nodes, want_nodes) in [
        (MPOL_DEFAULT, mask(&[]), mask(&[])),
        (MPOL_PREFERRED, mask(&[1]), mask(&[1])),
        (MPOL_BIND, mask(&[0, 1, 2]), mask(&[0, 1])),
        (MPOL_INTERLEAVE, mask(&[0, 1]), mask(&[0, 1])),
        (MPOL_LOCAL, mask(&[]), mask(&[])),
        (MPOL_PREFERRED_MANY, mask(&[1]), mask(&[1])),
        (MPOL_WEIGHTED_INTERLEAVE, mask(&[0, 1]), mask(&[0, 1])),
        (
            MPOL_BIND | MPOL_F_STATIC_NODES,
            mask(&[1, 2]),
            mask(&[1, 2]),
        ),
        (MPOL_BIND | MPOL_F_NUMA_BALANCING, mask(&[1]), mask(&[1])),
    ] {
        sys.set_mempolicy(&mut t, mode, nodes).unwrap();
        assert_eq!(
            sys.get_mempolicy(&mut t, 0, 0),
            Ok((mode, want_nodes)),
            "mode {mode:#x}"
        );
    }
    // The policy's text, as /proc/PID/numa_maps writes it.
    let p = |mode: i32, nodes: &[u32]| {
        let (m, f) = sanitize_mpol_flags(mode).unwrap();
        Mempolicy::create(m, f, mask(nodes), mm.memory_nodes(), mm.memory_nodes())
            .unwrap()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        p(MPOL_BIND | MPOL_F_STATIC_NODES, &[0, 1]),
        "bind=static:0-1"
    );
    assert_eq!(p(MPOL_INTERLEAVE, &[1]), "interleave:1");
    assert_eq!(p(MPOL_PREFERRED, &[]), "local");
    assert_eq!(
        p(
            MPOL_PREFERRED_MANY | MPOL_F_RELATIVE_NODES | MPOL_F_NUMA_BALANCING,
            &[0]
        ),
        "prefer (many)=relative|balancing:0"
    );
    assert_eq!(
        p(MPOL_BIND | MPOL_F_NUMA_BALANCING, &[1]),
        "bind=balancing:1"
    );
    assert_eq!(
        p(MPOL_WEIGHTED_INTERLEAVE, &[0, 1]),
        "weighted interleave:0-1"
    );
}

/// `MPOL_F_NUMA_BALANCING` keeps the user's nodemask in the `w` union, so
/// a rebind remaps from it as if it were the old cpuset (Linux's union),
/// and get_mempolicy then reports the new cpuset as "the user's" nodemask.
#[test]
fn numa_balancing_reads_the_union() {
    let mm = machine(&[8, 8, 8], &[&[0]], None);
    let sys = Mempolicies::new(&mm);
    let mut t = sys.new_task();
    sys.set_mempolicy(&mut t, MPOL_BIND | MPOL_F_NUMA_BALANCING, mask(&[1]))
        .unwrap();
    let p = *t.mempolicy().unwrap();
    assert_eq!(
        p.flags() & (policy::MPOL_F_MOF | policy::MPOL_F_MORON),
        0x18
    );
    assert_eq!(p.w(), mask(&[1]));
    sys.cpuset_set_mems(&mut t, mask(&[0, 2])).unwrap();
    // nodes_remap({1}, old = w = {1}, new {0,2}) = {0}; w = {0,2}.
    assert_eq!(t.mempolicy().unwrap().nodes(), mask(&[0]));
    assert_eq!(
        sys.get_mempolicy(&mut t, 0, 0),
        Ok((MPOL_BIND | MPOL_F_NUMA_BALANCING, mask(&[0, 2])))
    );
}

/// Bind with memory: the local zonelist inside the mask; the first
/// node drained, the next in zonelist order; all drained, failure.
#[test]
fn bind_falls_within_then_fails() {
    let mm = machine(
        &[2, 2, 2],
        &[&[0], &[1], &[2]],
        Some(vec![10, 20, 30, 20, 10, 20, 30, 20, 10]),
    );
    let sys = Mempolicies::new(&mm);
    let mut t = sys.new_task();
    sys.set_mempolicy(&mut t, MPOL_BIND, mask(&[1, 2])).unwrap();
    let mut got = Vec::new();
    loop {
        match sys.alloc_pages(&mut t, Gfp::NOWARN, 0) {
            Ok(p) => got.push(p),
            Err(e) => {
                assert_eq!(e, AllocError::NoMemory);
                break;
            }
        }
    }
    // CPU 0's zonelist: 0 1 2; inside the mask: 1 then 2.
    assert_eq!(got.len(), 1024);
    assert!(got[..512].iter().all(|p| p.nid == 1));
    assert!(got[512..].iter().all(|p| p.nid == 2));
    let s1 = mm.numa_stats(1).unwrap();
    let s2 = mm.numa_stats(2).unwrap();
    assert_eq!((s1.numa_hit, s1.numa_foreign), (512, 512));
    assert_eq!((s2.numa_miss, s2.other_node), (512, 512));
    // Node 0 untouched.
    assert_eq!(mm.zone_info(0, ZoneType::Dma32).unwrap().used, 0);
    free_all(&mm, got);
    assert!(all_free(&mm));
}

/// `apply_policy_zone`: node 0 has ZONE_DMA memory, node 1 only DMA32, so
/// `policy_zone` is DMA32: a `GFP_DMA` allocation of a task bound to node 1
/// is not bound and lands on node 0; `GFP_KERNEL` is bound.
#[test]
fn lower_zone_allocations_are_not_bound() {
    let mm = Mm::new(MmConfig {
        nodes: vec![
            NodeConfig {
                vnode: 0,
                cpus: vec![0],
                memory: vec![PhysRange {
                    gpa: Gpa(MB),
                    size: 8 * MB,
                    maddr: Maddr(MB),
                }],
            },
            NodeConfig {
                vnode: 1,
                cpus: vec![],
                memory: vec![PhysRange {
                    gpa: Gpa(64 * MB),
                    size: 8 * MB,
                    maddr: Maddr(64 * MB),
                }],
            },
        ],
        distances: vec![10, 20, 20, 10],
        nr_cpus: 1,
        reserved: vec![],
        order: None,
    })
    .unwrap();
    let sys = Mempolicies::new(&mm);
    assert_eq!(sys.policy_zone(), ZoneType::Dma32);
    let mut t = sys.new_task();
    sys.set_mempolicy(&mut t, MPOL_BIND, mask(&[1])).unwrap();
    let p = sys.alloc_pages(&mut t, Gfp::DMA, 0).unwrap();
    assert_eq!((p.nid, p.zone), (0, ZoneType::Dma));
    let q = sys.alloc_pages(&mut t, Gfp::KERNEL, 0).unwrap();
    assert_eq!(q.nid, 1);
    free_all(&mm, vec![p, q]);
}

/// A cpuset confines every policy: default and preferred outside it end
/// up inside; preferred-many's second pass too.
#[test]
fn cpuset_confines_allocations() {
    let mm = machine(&[4, 4, 4], &[&[0]], None);
    let sys = Mempolicies::new(&mm);
    let mut t = sys.new_task();
    sys.cpuset_set_mems(&mut t, mask(&[2])).unwrap();
    let p = sys.alloc_pages(&mut t, Gfp::KERNEL, 0).unwrap();
    assert_eq!(p.nid, 2);
    // Set inside, then the cpuset moves: preferred keeps node 1 (6.x).
    sys.cpuset_set_mems(&mut t, mask(&[1, 2])).unwrap();
    sys.set_mempolicy(&mut t, MPOL_PREFERRED, mask(&[1]))
        .unwrap();
    sys.cpuset_set_mems(&mut t, mask(&[2])).unwrap();
    assert_eq!(t.mempolicy().unwrap().nodes(), mask(&[1]));
    assert_eq!(t.mempolicy().unwrap().w(), mask(&[2]));
    let q = sys.alloc_pages(&mut t, Gfp::KERNEL, 0).unwrap();
    assert_eq!(q.nid, 2);
    // Preferred-many on {1} rebound to {2} keeps {1}: the first pass finds
    // nothing inside the cpuset, the second lands in it.
    sys.cpuset_set_mems(&mut t, mask(&[1, 2])).unwrap();
    sys.set_mempolicy(&mut t, MPOL_PREFERRED_MANY, mask(&[1]))
        .unwrap();
    sys.cpuset_set_mems(&mut t, mask(&[2])).unwrap();
    let f = mm.failures();
    let r = sys.alloc_pages(&mut t, Gfp::KERNEL, 0).unwrap();
    assert_eq!((r.nid, mm.failures()), (2, f + 1));
    assert_eq!(
        sys.get_mempolicy(&mut t, 0, MPOL_F_MEMS_ALLOWED),
        Ok((0, mask(&[2])))
    );
    free_all(&mm, vec![p, q, r]);
}

/// Preferred-many: inside the mask while it has memory (no failed pass),
/// outside only after one failed first pass; bind with the same mask
/// fails.
#[test]
fn preferred_many_two_passes() {
    let mm = machine(&[1, 1, 4], &[&[0]], None);
    let sys = Mempolicies::new(&mm);
    let mut t = sys.new_task();
    sys.set_mempolicy(&mut t, MPOL_PREFERRED_MANY, mask(&[0, 1]))
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..512 {
        got.push(sys.alloc_pages(&mut t, Gfp::KERNEL, 0).unwrap());
    }
    assert!(got.iter().all(|p| p.nid < 2));
    assert_eq!(mm.failures(), 0);
    let p = sys.alloc_pages(&mut t, Gfp::KERNEL, 0).unwrap();
    assert_eq!((p.nid, mm.failures()), (2, 1));
    got.push(p);
    // The second pass is counted against the local zonelist: node 0 is
    // preferred, the page on 2 is a miss.
    let s2 = mm.numa_stats(2).unwrap();
    assert_eq!((s2.numa_miss, s2.numa_hit), (1, 0));
    let mut b = sys.new_task();
    sys.set_mempolicy(&mut b, MPOL_BIND, mask(&[0, 1])).unwrap();
    assert_eq!(
        sys.alloc_pages(&mut b, Gfp::NOWARN, 0),
        Err(AllocError::NoMemory)
    );
    free_all(&mm, got);
    assert!(all_free(&mm));
}

/// VMAs: index-based interleave (independent of fault order), mbind
/// splitting, STRICT/MOVE, munmap and exit freeing every page, the home
/// node.
#[test]
fn mappings_and_mbind() {
    let mm = machine(&[8, 8, 8], &[&[0], &[1], &[2]], None);
    let sys = Mempolicies::new(&mm);
    let mut t = sys.new_task();
    let a = sys.mmap_pgoff(&mut t, 12 << 12, 5).unwrap();
    sys.mbind(
        &mut t,
        a + (4 << 12),
        4 << 12,
        MPOL_INTERLEAVE,
        mask(&[0, 1, 2]),
        0,
    )
    .unwrap();
    assert_eq!(t.vmas().len(), 3);
    assert_eq!(t.vmas()[1].pgoff, 9);
    for i in [7u64, 4, 6, 5] {
        let p = sys.fault(&mut t, a + (i << 12)).unwrap();
        // ilx = pgoff 5 + i.
        assert_eq!(p.nid, ((5 + i) % 3) as u32, "page {i}");
    }
    // Interleave by index counts interleave_hit too.
    let hits: u64 = (0..3)
        .map(|n| mm.numa_stats(n).unwrap().interleave_hit)
        .sum();
    assert_eq!(hits, 4);
    // Pages 0-3 local (node 0); STRICT bind elsewhere refuses, MOVE moves.
    for i in 0..4u64 {
        assert_eq!(sys.fault(&mut t, a + (i << 12)).unwrap().nid, 0);
    }
    assert_eq!(
        sys.mbind(&mut t, a, 4 << 12, MPOL_BIND, mask(&[2]), MPOL_MF_STRICT),
        Err(Errno::EIO)
    );
    assert_eq!(t.vmas().len(), 3);
    // Without STRICT and without MOVE: the policy applies, pages stay.
    sys.mbind(&mut t, a, 2 << 12, MPOL_BIND, mask(&[2]), 0)
        .unwrap();
    assert_eq!(t.page_at(a).unwrap().nid, 0);
    sys.mbind(
        &mut t,
        a,
        4 << 12,
        MPOL_BIND,
        mask(&[2]),
        MPOL_MF_MOVE | MPOL_MF_STRICT,
    )
    .unwrap();
    assert!((0..4).all(|i| t.page_at(a + (i << 12)).unwrap().nid == 2));
    assert_eq!(
        sys.get_mempolicy(&mut t, a + (3 << 12), MPOL_F_NODE | MPOL_F_ADDR),
        Ok((2, mask(&[2])))
    );
    // Home node on the bind range: faults there start at the home node.
    sys.mbind(&mut t, a + (8 << 12), 4 << 12, MPOL_BIND, mask(&[0, 1]), 0)
        .unwrap();
    sys.set_mempolicy_home_node(&mut t, a + (8 << 12), 4 << 12, 1, 0)
        .unwrap();
    assert_eq!(sys.fault(&mut t, a + (8 << 12)).unwrap().nid, 1);
    assert_eq!(t.nr_pages(), 9);
    sys.munmap(&mut t, a, 2 << 12).unwrap();
    assert_eq!(t.nr_pages(), 7);
    assert_eq!(sys.fault(&mut t, a), Err(Errno::EFAULT));
    assert!(sys.exit(&mut t).is_empty());
    assert!(all_free(&mm));
}

/// Weighted interleave: the countdown, a weight change mid-run, the
/// set_mempolicy reset, `get_mempolicy(MPOL_F_NODE)`.
#[test]
fn weighted_countdown() {
    let mm = machine(&[8, 8], &[&[0]], None);
    let sys = Mempolicies::new(&mm);
    sys.weights().set(0, 2).unwrap();
    sys.weights().set(1, 3).unwrap();
    let mut t = sys.new_task();
    sys.set_mempolicy(&mut t, MPOL_WEIGHTED_INTERLEAVE, mask(&[0, 1]))
        .unwrap();
    let mut seq = Vec::new();
    let mut pages = Vec::new();
    for _ in 0..10 {
        let (next, _) = sys.get_mempolicy(&mut t, 0, MPOL_F_NODE).unwrap();
        let p = sys.alloc_pages(&mut t, Gfp::KERNEL, 0).unwrap();
        assert_eq!(next, p.nid as i32);
        seq.push(p.nid);
        pages.push(p);
    }
    assert_eq!(seq, [0, 0, 1, 1, 1, 0, 0, 1, 1, 1]);
    // set_mempolicy restarts the rotation.
    let p = sys.alloc_pages(&mut t, Gfp::KERNEL, 0).unwrap();
    assert_eq!((p.nid, t.il_weight()), (0, 1));
    pages.push(p);
    sys.set_mempolicy(&mut t, MPOL_WEIGHTED_INTERLEAVE, mask(&[0, 1]))
        .unwrap();
    assert_eq!((t.il_prev(), t.il_weight()), (63, 0));
    let s0 = mm.numa_stats(0).unwrap();
    assert_eq!(s0.interleave_hit, 5);
    free_all(&mm, pages);
}

/// `mempolicy_slab_node`.
#[test]
fn slab_node_follows_the_policy() {
    let mm = machine(&[4, 4, 4], &[&[0], &[], &[1]], None);
    let sys = Mempolicies::new(&mm);
    let mut t = sys.new_task();
    assert_eq!(sys.mempolicy_slab_node(&mut t), 0);
    sys.set_mempolicy(&mut t, MPOL_PREFERRED, mask(&[2]))
        .unwrap();
    assert_eq!(sys.mempolicy_slab_node(&mut t), 2);
    sys.set_mempolicy(&mut t, MPOL_INTERLEAVE, mask(&[1, 2]))
        .unwrap();
    assert_eq!(
        [
            sys.mempolicy_slab_node(&mut t),
            sys.mempolicy_slab_node(&mut t)
        ],
        [1, 2]
    );
    sys.set_mempolicy(&mut t, MPOL_BIND, mask(&[1, 2])).unwrap();
    assert_eq!(sys.mempolicy_slab_node(&mut t), 1);
}

// ----- reference models -----

/// A topology for property tests: 2 to 5 nodes of 0 to 2 MiB (at least
/// one with memory), symmetric distances, a CPU on each node.
fn topo() -> impl Strategy<Value = (Vec<u64>, Vec<u32>)> {
    (2usize..=5).prop_flat_map(|n| {
        (
            proptest::collection::vec(0u64..=2, n),
            proptest::collection::vec(11u32..40, n * n),
        )
            .prop_map(move |(mut mem, mut d)| {
                if mem.iter().all(|&m| m == 0) {
                    mem[0] = 1;
                }
                for a in 0..n {
                    d[a * n + a] = 10;
                    for b in 0..a {
                        d[a * n + b] = d[b * n + a];
                    }
                }
                (mem, d)
            })
    })
}

fn build(mem: &[u64], d: &[u32]) -> Mm {
    let cpus: Vec<Vec<u32>> = (0..mem.len() as u32).map(|k| vec![k]).collect();
    let refs: Vec<&[u32]> = cpus.iter().map(Vec::as_slice).collect();
    machine(mem, &refs, Some(d.to_vec()))
}

/// The reference rebind model of numa_memory_policy.rst, on sorted sets.
#[derive(Clone, Debug)]
struct RebindModel {
    remaps: bool,
    flags: i32,
    user: Vec<u32>,
    nodes: BTreeSet<u32>,
    old: Vec<u32>,
}

/// The `k mod len`-th element of a sorted list.
fn nth_mod(list: &[u32], k: usize) -> u32 {
    list[k % list.len()]
}

impl RebindModel {
    fn new(mode: Mode, flags: i32, user: &[u32], allowed: &[u32]) -> Option<Self> {
        let eff: BTreeSet<u32> = if flags & MPOL_F_RELATIVE_NODES != 0 {
            if allowed.is_empty() {
                BTreeSet::new()
            } else {
                user.iter().map(|&u| nth_mod(allowed, u as usize)).collect()
            }
        } else {
            user.iter()
                .copied()
                .filter(|u| allowed.contains(u))
                .collect()
        };
        let first = *eff.iter().next()?;
        let nodes = if mode == Mode::Preferred {
            [first].into_iter().collect()
        } else {
            eff
        };
        Some(RebindModel {
            remaps: matches!(
                mode,
                Mode::Bind | Mode::Interleave | Mode::WeightedInterleave
            ),
            flags,
            user: user.to_vec(),
            nodes,
            old: allowed.to_vec(),
        })
    }

    fn rebind(&mut self, new: &[u32]) {
        if !self.remaps {
            // Preferred and preferred-many keep their nodes (6.x).
            return;
        }
        let tmp: BTreeSet<u32> = if self.flags & MPOL_F_STATIC_NODES != 0 {
            self.user
                .iter()
                .copied()
                .filter(|u| new.contains(u))
                .collect()
        } else if self.flags & MPOL_F_RELATIVE_NODES != 0 {
            self.user
                .iter()
                .map(|&u| nth_mod(new, u as usize))
                .collect()
        } else {
            let t = self
                .nodes
                .iter()
                .map(|&n| match self.old.iter().position(|&o| o == n) {
                    Some(k) => nth_mod(new, k),
                    None => n,
                })
                .collect();
            self.old = new.to_vec();
            t
        };
        self.nodes = if tmp.is_empty() {
            new.iter().copied().collect()
        } else {
            tmp
        };
    }
}

/// The validation rules of the set_mempolicy(2) manual page and
/// `mpol_new`, as a decision list.
fn expected_validation(mode: i32, nodes: &[u32], allowed_mem: &[u32]) -> Result<(), Errno> {
    let flags = mode & MPOL_MODE_FLAGS;
    let m = mode & !MPOL_MODE_FLAGS;
    if !(0..MPOL_MAX).contains(&m) {
        return Err(Errno::EINVAL);
    }
    let st = flags & MPOL_F_STATIC_NODES != 0;
    let rel = flags & MPOL_F_RELATIVE_NODES != 0;
    if st && rel {
        return Err(Errno::EINVAL);
    }
    if flags & MPOL_F_NUMA_BALANCING != 0 && m != MPOL_BIND && m != MPOL_PREFERRED_MANY {
        return Err(Errno::EINVAL);
    }
    let empty = nodes.is_empty();
    match m {
        MPOL_DEFAULT => return if empty { Ok(()) } else { Err(Errno::EINVAL) },
        MPOL_PREFERRED if empty => {
            return if st || rel {
                Err(Errno::EINVAL)
            } else {
                Ok(())
            }
        }
        MPOL_LOCAL => {
            return if empty && !st && !rel {
                Ok(())
            } else {
                Err(Errno::EINVAL)
            }
        }
        _ if empty => return Err(Errno::EINVAL),
        _ => {}
    }
    let effective = if rel {
        !allowed_mem.is_empty()
    } else {
        nodes.iter().any(|n| allowed_mem.contains(n))
    };
    if effective {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

fn mode_strategy() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Preferred),
        Just(Mode::Bind),
        Just(Mode::Interleave),
        Just(Mode::PreferredMany),
        Just(Mode::WeightedInterleave),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Bind never leaves its nodes, from any CPU, and fails only when every
    /// page of those nodes is taken; a mask without memory is EINVAL.
    #[test]
    fn bind_stays_inside((mem, d) in topo(), bits in 1u64..32, cpu in 0u32..5) {
        let mm = build(&mem, &d);
        let sys = Mempolicies::new(&mm);
        let m = NodeMask::from_bits(bits).and(NodeMask::first(mem.len() as u32));
        let mut t = sys.new_task();
        let r = sys.set_mempolicy(&mut t, MPOL_BIND, m);
        let inside = m.and(mm.memory_nodes());
        if inside.is_empty() {
            prop_assert_eq!(r, Err(Errno::EINVAL));
            return Ok(());
        }
        prop_assert_eq!(r, Ok(()));
        let cpu = cpu % mm.nr_cpus();
        let free: u64 = inside.iter().map(|n| mm.node(n).unwrap().managed_pages()).sum();
        let got = mm.with_cpu(cpu, |_| {
            let mut got = Vec::new();
            while let Ok(p) = sys.alloc_pages(&mut t, Gfp::NOWARN, 0) {
                got.push(p);
            }
            got
        }).unwrap();
        prop_assert!(got.iter().all(|p| inside.contains(p.nid)));
        prop_assert_eq!(got.len() as u64, free);
        // Every node outside the mask is untouched.
        for n in mm.memory_nodes().andnot(inside).iter() {
            let node = mm.node(n).unwrap();
            prop_assert_eq!(node.zones().iter().map(|z| z.info().used).sum::<u64>(), 0);
        }
        free_all(&mm, got);
        prop_assert!(all_free(&mm));
    }

    /// Interleave: counts within 1 of each other, in rotation order from
    /// the first node, `interleave_hit` = pages per node (memory to spare).
    #[test]
    fn interleave_balanced((mem, d) in topo(), bits in 1u64..32, n in 1usize..250) {
        let mm = build(&mem, &d);
        let sys = Mempolicies::new(&mm);
        let m = NodeMask::from_bits(bits).and(mm.memory_nodes());
        prop_assume!(!m.is_empty());
        let nodes: Vec<u32> = m.iter().collect();
        let mut t = sys.new_task();
        sys.set_mempolicy(&mut t, MPOL_INTERLEAVE, m).unwrap();
        let mut count = vec![0u64; mem.len()];
        let mut pages = Vec::new();
        for k in 0..n {
            let p = sys.alloc_pages(&mut t, Gfp::KERNEL, 0).unwrap();
            prop_assert_eq!(p.nid, nodes[k % nodes.len()]);
            count[p.nid as usize] += 1;
            pages.push(p);
        }
        let used: Vec<u64> = nodes.iter().map(|&x| count[x as usize]).collect();
        prop_assert!(used.iter().max().unwrap() - used.iter().min().unwrap() <= 1);
        for &x in &nodes {
            prop_assert_eq!(mm.numa_stats(x).unwrap().interleave_hit, count[x as usize]);
        }
        // Index-based placement is the same rotation by index.
        let pol = *t.mempolicy().unwrap();
        for ilx in 0..20u64 {
            prop_assert_eq!(sys.interleave_nid(&pol, ilx), nodes[ilx as usize % nodes.len()]);
        }
        free_all(&mm, pages);
    }

    /// Weighted interleave: over r full rounds exactly r * weight pages per
    /// node, in runs of each node's weight; by index the same sequence.
    #[test]
    fn weighted_exact_per_round(
        weights in proptest::collection::vec(0u8..6, 4),
        bits in 1u64..16,
        rounds in 1u64..4,
    ) {
        let mm = machine(&[8, 8, 8, 8], &[&[0]], None);
        let sys = Mempolicies::new(&mm);
        for (n, &w) in weights.iter().enumerate() {
            sys.weights().set(n as u32, w).unwrap();
        }
        let m = NodeMask::from_bits(bits);
        let nodes: Vec<u32> = m.iter().collect();
        let eff = |n: u32| u64::from(weights[n as usize].max(1));
        let model: Vec<u32> = nodes
            .iter()
            .flat_map(|&n| core::iter::repeat_n(n, eff(n) as usize))
            .collect();
        let total = model.len() as u64;
        let mut t = sys.new_task();
        sys.set_mempolicy(&mut t, MPOL_WEIGHTED_INTERLEAVE, m).unwrap();
        let mut pages = Vec::new();
        for k in 0..rounds * total {
            let p = sys.alloc_pages(&mut t, Gfp::KERNEL, 0).unwrap();
            prop_assert_eq!(p.nid, model[(k % total) as usize]);
            pages.push(p);
        }
        for &n in &nodes {
            let c = pages.iter().filter(|p| p.nid == n).count() as u64;
            prop_assert_eq!(c, rounds * eff(n));
        }
        let pol = *t.mempolicy().unwrap();
        for ilx in 0..2 * total {
            prop_assert_eq!(sys.weighted_interleave_nid(&pol, ilx), model[(ilx % total) as usize]);
        }
        free_all(&mm, pages);
    }

    /// Rebinding against the documentation's rules, over a sequence of
    /// allowed sets.
    #[test]
    fn rebind_follows_the_rules(
        mode in mode_strategy(),
        flag in 0usize..3,
        user in 1u64..256,
        steps in proptest::collection::vec(1u64..256, 1..6),
    ) {
        let flags = [0, MPOL_F_STATIC_NODES, MPOL_F_RELATIVE_NODES][flag];
        let all = NodeMask::first(64);
        let user_m = NodeMask::from_bits(user);
        let first_allowed = NodeMask::from_bits(steps[0]);
        let allowed_v: Vec<u32> = first_allowed.iter().collect();
        let user_v: Vec<u32> = user_m.iter().collect();
        let model = RebindModel::new(mode, flags, &user_v, &allowed_v);
        let real = Mempolicy::create(mode, flags as u16, user_m, first_allowed, all);
        let (Some(mut model), Ok(Some(mut real))) = (model.clone(), real) else {
            prop_assert!(model.is_none() && real == Err(Errno::EINVAL));
            return Ok(());
        };
        prop_assert_eq!(real.nodes(), model.nodes.iter().copied().collect::<NodeMask>());
        for &s in &steps[1..] {
            let new = NodeMask::from_bits(s);
            let new_v: Vec<u32> = new.iter().collect();
            model.rebind(&new_v);
            real.rebind(new);
            prop_assert_eq!(
                real.nodes(),
                model.nodes.iter().copied().collect::<NodeMask>(),
                "{:?} after {}", real, new
            );
        }
    }

    /// `set_mempolicy`'s answer against the manual page's rules.
    #[test]
    fn validation_follows_the_rules(
        raw in -2i32..9,
        flag_bits in 0u8..16,
        nodes in 0u64..32,
        allowed in 1u64..32,
    ) {
        let mm = machine(&[4, 4, 0, 4, 0], &[&[0]], None);
        let sys = Mempolicies::new(&mm);
        let mut mode = raw;
        for (bit, f) in [MPOL_F_STATIC_NODES, MPOL_F_RELATIVE_NODES, MPOL_F_NUMA_BALANCING, 1 << 12]
            .into_iter()
            .enumerate()
        {
            if flag_bits & (1 << bit) != 0 {
                mode |= f;
            }
        }
        let mut t = sys.new_task();
        let allowed = NodeMask::from_bits(allowed).and(mm.memory_nodes());
        prop_assume!(!allowed.is_empty());
        sys.cpuset_set_mems(&mut t, allowed).unwrap();
        let nodes_m = NodeMask::from_bits(nodes);
        let nodes_v: Vec<u32> = nodes_m.iter().collect();
        let allowed_v: Vec<u32> = allowed.iter().collect();
        let want = expected_validation(mode, &nodes_v, &allowed_v);
        prop_assert_eq!(sys.set_mempolicy(&mut t, mode, nodes_m), want, "mode {:#x}", mode);
    }
}

/// `get_nodes` and `copy_nodes_to_user` edge cases.
#[test]
fn user_bitmaps() {
    use super::system::{copy_nodes_to_user, get_nodes};
    assert_eq!(get_nodes(None, 100), Ok(NodeMask::NONE));
    assert_eq!(get_nodes(Some(&[0b1010]), 3), Ok(NodeMask::from_bits(0b10)));
    assert_eq!(
        get_nodes(Some(&[u64::MAX]), 65),
        Ok(NodeMask::from_bits(u64::MAX))
    );
    // 65 bits asked: the whole second long is checked (Linux reads it whole).
    assert_eq!(get_nodes(Some(&[1, 1 << 40]), 66), Err(Errno::EINVAL));
    assert_eq!(get_nodes(Some(&[1, 0, 0, 1]), 257), Err(Errno::EINVAL));
    assert_eq!(get_nodes(Some(&[1, 0, 0, 0]), 257), Ok(NodeMask::single(0)));
    assert_eq!(get_nodes(Some(&[1, 0, 0]), 257), Err(Errno::EFAULT));
    let mut out = [7u64; 3];
    assert_eq!(
        copy_nodes_to_user(&mut out, 129, NodeMask::single(3), 4),
        Ok(())
    );
    assert_eq!(out, [8, 0, 7]);
    let mut out = [7u64; 1];
    assert_eq!(
        copy_nodes_to_user(&mut out, 129, NodeMask::single(3), 4),
        Err(Errno::EFAULT)
    );
    let mut big = vec![0u64; 600];
    assert_eq!(
        copy_nodes_to_user(&mut big, 64 * 513 + 1, NodeMask::single(3), 4),
        Err(Errno::EINVAL)
    );
    let mm = machine(&[4], &[&[0]], None);
    let sys = Mempolicies::new(&mm);
    let mut t = sys.new_task();
    assert_eq!(
        sys.sys_set_mempolicy(&mut t, MPOL_BIND, Some(&[1]), 2),
        Ok(())
    );
    let mut mode = 0;
    let mut words = [0u64; 1];
    sys.sys_get_mempolicy(&mut t, Some(&mut mode), Some(&mut words), 64, 0, 0)
        .unwrap();
    assert_eq!((mode, words), (MPOL_BIND, [1]));
    assert_eq!(
        sys.sys_mbind(&mut t, 0, 4096, MPOL_BIND, Some(&[1]), 2, 0),
        Err(Errno::EFAULT)
    );
    let _ = NumaStat::Hit;
}

//! GET_VNUMA, PHYSINFO and DOMAIN_NODE_PAGES: the query hypercalls, all
//! following pv-abi's in/out protocol (`pv_abi::query`): accept the
//! caller's size, refuse non-zero flags, write the real counts back with
//! BufferTooSmall when a buffer is short, and never write a buffer then.

use alloc::vec::Vec;

use pv_abi::physinfo::PhysCounts;
use pv_abi::query::Query;
use pv_abi::vnuma::VnumaCounts;
use pv_abi::{DomainNodePages, Error, Gpa, NodeMemInfo, PhysInfo, Pod, VnumaTopologyInfo};

use super::{read_sized, GuestAccess, HypercallEnv};

/// Reads a query structure as the protocol says: `size` first, then that
/// many bytes (at most ours), fields the caller does not know as zero.
fn read_query<T: Query + Pod>(mem: &dyn GuestAccess, at: Gpa) -> Result<(T, u32), Error> {
    let (value, accepted) = read_sized::<T>(mem, at, T::SIZE_V1_0)?;
    if !value.reserved_are_zero() {
        return Err(Error::InvalidArgument);
    }
    Ok((value, accepted))
}

/// Writes the accepted part of a query structure back, `size` = accepted.
fn write_query<T: Query + Pod>(
    mem: &mut dyn GuestAccess,
    at: Gpa,
    value: &mut T,
    accepted: u32,
) -> Result<(), Error> {
    value.set_size(accepted);
    let bytes = value.as_bytes();
    mem.write(at, bytes.get(..accepted as usize).unwrap_or(bytes))
}

/// Writes an array of `Pod` values to a guest buffer that must be aligned
/// to the element's alignment.
fn write_array<T: Pod>(mem: &mut dyn GuestAccess, at: Gpa, values: &[T]) -> Result<(), Error> {
    if values.is_empty() {
        return Ok(());
    }
    if !at.is_aligned(core::mem::align_of::<T>() as u64) {
        return Err(Error::InvalidArgument);
    }
    let mut bytes = Vec::with_capacity(core::mem::size_of_val(values));
    for v in values {
        bytes.extend_from_slice(v.as_bytes());
    }
    mem.write(at, &bytes)
}

pub fn get_vnuma(env: &mut dyn HypercallEnv, at: Gpa) -> Result<u64, Error> {
    let (mut info, accepted) = read_query::<VnumaTopologyInfo>(env.memory(), at)?;
    let v = env.vnuma().clone();
    let actual = VnumaCounts {
        nr_vnodes: v.nr_vnodes,
        nr_vcpus: v.vcpu_to_vnode.len() as u32,
        nr_vmemranges: v.ranges.len() as u32,
    };
    let (vdistance, vcpu_to_vnode, vmemrange) =
        (info.vdistance, info.vcpu_to_vnode, info.vmemrange);
    let fits = info.reply(actual);
    if fits.is_ok() {
        #[cfg(not(feature = "abi-1-0"))]
        let vnode_mem = vnode_mem(env, &v);
        let mem = env.memory();
        write_array(mem, vdistance, &v.distances)?;
        write_array(mem, vcpu_to_vnode, &v.vcpu_to_vnode)?;
        write_array(mem, vmemrange, &v.ranges)?;
        // ABI 1.1: a caller that passed fewer bytes (a 1.0 guest) reads
        // `vnode_mem` as null here, and gets 1.0's answer.
        #[cfg(not(feature = "abi-1-0"))]
        if !info.vnode_mem.is_null() {
            write_array(mem, info.vnode_mem, &vnode_mem)?;
        }
    }
    write_query(env.memory(), at, &mut info, accepted)?;
    fits.map(|()| 0)
}

/// ABI 1.1's `vnode_mem` entries: each vnode's physical node and pages, and
/// the pages free on that node now.
#[cfg(not(feature = "abi-1-0"))]
fn vnode_mem(env: &dyn HypercallEnv, v: &super::VnumaView) -> Vec<pv_abi::VnodeMemInfo> {
    let machine = env.machine();
    v.vnode_placement
        .iter()
        .map(|&(pnode, size_pages)| pv_abi::VnodeMemInfo {
            pnode,
            flags: 0,
            size_pages,
            free_pages: machine
                .node_mem
                .get(pnode as usize)
                .map_or(0, |&(_, free)| free),
        })
        .collect()
}

pub fn physinfo(env: &mut dyn HypercallEnv, at: Gpa) -> Result<u64, Error> {
    let (mut info, accepted) = read_query::<PhysInfo>(env.memory(), at)?;
    let m = env.machine();
    let actual = PhysCounts {
        nr_nodes: m.node_mem.len() as u32,
        nr_cpus: m.nr_cpus,
    };
    info.total_pages = m.total_pages;
    info.free_pages = m.free_pages;
    let (node_mem, node_distance, cpu_to_node) =
        (info.node_mem, info.node_distance, info.cpu_to_node);
    let fits = info.reply(actual);
    if fits.is_ok() {
        let mem = env.memory();
        let nodes: Vec<NodeMemInfo> = m
            .node_mem
            .iter()
            .map(|&(size_pages, free_pages)| NodeMemInfo {
                size_pages,
                free_pages,
            })
            .collect();
        write_array(mem, node_mem, &nodes)?;
        write_array(mem, node_distance, &m.distances)?;
        write_array(mem, cpu_to_node, &m.cpu_to_node)?;
    }
    write_query(env.memory(), at, &mut info, accepted)?;
    fits.map(|()| 0)
}

pub fn domain_node_pages(env: &mut dyn HypercallEnv, at: Gpa) -> Result<u64, Error> {
    let (mut info, accepted) = read_query::<DomainNodePages>(env.memory(), at)?;
    let pages = env.node_pages();
    let buffer = info.pages;
    let fits = info.reply(pages.len() as u32);
    if fits.is_ok() {
        write_array(env.memory(), buffer, &pages)?;
    }
    write_query(env.memory(), at, &mut info, accepted)?;
    fits.map(|()| pages.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::super::testenv::TestEnv;
    use super::super::{dispatch, Outcome};
    use super::*;
    use pv_abi::{Hypercall, HypercallArgs, HypercallResult, VmemRange};

    fn call(env: &mut TestEnv, nr: Hypercall, a0: u64) -> Result<u64, Error> {
        match dispatch(&HypercallArgs::new(nr, [a0, 0, 0, 0, 0]), env) {
            Outcome::Return(v) => HypercallResult::decode(v),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn vnuma_probe_then_fill() {
        let mut env = TestEnv::two_vnodes();
        let at = Gpa(0x1000);
        env.put(at, &VnumaTopologyInfo::probe());
        assert_eq!(
            call(&mut env, Hypercall::GetVnuma, at.0),
            Err(Error::BufferTooSmall)
        );
        let back: VnumaTopologyInfo = env.get(at);
        assert_eq!(
            (back.nr_vnodes, back.nr_vcpus, back.nr_vmemranges),
            (2, 3, 2)
        );

        let caps = VnumaCounts {
            nr_vnodes: 2,
            nr_vcpus: 3,
            nr_vmemranges: 2,
        };
        let req = VnumaTopologyInfo::new(caps, Gpa(0x2000), Gpa(0x3000), Gpa(0x4000));
        env.put(at, &req);
        assert_eq!(call(&mut env, Hypercall::GetVnuma, at.0), Ok(0));
        let d: [u32; 4] = env.get(Gpa(0x2000));
        assert_eq!(d, [10, 20, 20, 10]);
        let c: [u32; 3] = env.get(Gpa(0x3000));
        assert_eq!(c, [0, 0, 1]);
        let r: [VmemRange; 2] = env.get(Gpa(0x4000));
        assert_eq!(r[1], VmemRange::new(Gpa(0x200_0000), Gpa(0x400_0000), 1));

        // One range short: too small, and the buffers are left alone.
        env.put(Gpa(0x4000), &[0u8; 48]);
        let short = VnumaTopologyInfo::new(
            VnumaCounts {
                nr_vmemranges: 1,
                ..caps
            },
            Gpa(0x2000),
            Gpa(0x3000),
            Gpa(0x4000),
        );
        env.put(at, &short);
        assert_eq!(
            call(&mut env, Hypercall::GetVnuma, at.0),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(env.get::<[u8; 48]>(Gpa(0x4000)), [0u8; 48]);
    }

    /// ABI 1.1: `vnode_mem` is filled when asked for; a 1.0 caller's
    /// 48-byte structure gets exactly 1.0's answer.
    #[cfg(not(feature = "abi-1-0"))]
    #[test]
    fn vnode_mem_and_older_callers() {
        use pv_abi::{Features, VnodeMemInfo};
        assert!(super::super::FEATURES.contains(Features::VNODE_MEM));
        let mut env = TestEnv::two_vnodes();
        let at = Gpa(0x1000);
        let caps = VnumaCounts {
            nr_vnodes: 2,
            nr_vcpus: 3,
            nr_vmemranges: 2,
        };
        let mut req = VnumaTopologyInfo::new(caps, Gpa(0x2000), Gpa(0x3000), Gpa(0x4000));
        req.vnode_mem = Gpa(0x5000);
        env.put(at, &req);
        assert_eq!(call(&mut env, Hypercall::GetVnuma, at.0), Ok(0));
        let back: VnumaTopologyInfo = env.get(at);
        assert_eq!(back.size, 56);
        let m: [VnodeMemInfo; 2] = env.get(Gpa(0x5000));
        assert_eq!(
            m[1],
            VnodeMemInfo {
                pnode: 1,
                flags: 0,
                size_pages: 8192,
                free_pages: 400
            }
        );
        assert_eq!(m[0].free_pages, 500);

        // A 1.0 guest: size 48, and whatever lies past its structure is
        // neither read as vnode_mem nor written.
        env.put(Gpa(0x5000), &[0u8; 48]);
        let mut old = req;
        old.size = 48;
        env.put(at, &old);
        assert_eq!(call(&mut env, Hypercall::GetVnuma, at.0), Ok(0));
        let back: VnumaTopologyInfo = env.get(at);
        assert_eq!(back.size, 48);
        assert_eq!(back.vnode_mem, Gpa(0x5000), "bytes past 48 untouched");
        assert_eq!(env.get::<[u8; 48]>(Gpa(0x5000)), [0u8; 48]);

        // Misaligned vnode_mem buffer.
        req.vnode_mem = Gpa(0x5004);
        env.put(at, &req);
        assert_eq!(
            call(&mut env, Hypercall::GetVnuma, at.0),
            Err(Error::InvalidArgument)
        );
    }

    #[test]
    fn bad_queries_are_refused() {
        let mut env = TestEnv::two_vnodes();
        // Misaligned structure.
        assert_eq!(
            call(&mut env, Hypercall::GetVnuma, 0x1004),
            Err(Error::InvalidArgument)
        );
        // Outside guest memory.
        assert_eq!(
            call(&mut env, Hypercall::GetVnuma, 1 << 40),
            Err(Error::Fault)
        );
        // Size below 1.0's.
        env.put(Gpa(0x1000), &8u32);
        assert_eq!(
            call(&mut env, Hypercall::GetVnuma, 0x1000),
            Err(Error::InvalidArgument)
        );
        // Non-zero flags.
        let mut req = VnumaTopologyInfo::probe();
        req.flags = 1;
        env.put(Gpa(0x1000), &req);
        assert_eq!(
            call(&mut env, Hypercall::GetVnuma, 0x1000),
            Err(Error::InvalidArgument)
        );
        // Buffer outside memory.
        let caps = VnumaCounts {
            nr_vnodes: 2,
            nr_vcpus: 3,
            nr_vmemranges: 2,
        };
        env.put(
            Gpa(0x1000),
            &VnumaTopologyInfo::new(caps, Gpa(1 << 41), Gpa(0x3000), Gpa(0x4000)),
        );
        assert_eq!(
            call(&mut env, Hypercall::GetVnuma, 0x1000),
            Err(Error::Fault)
        );
        // Misaligned array.
        env.put(
            Gpa(0x1000),
            &VnumaTopologyInfo::new(caps, Gpa(0x2001), Gpa(0x3000), Gpa(0x4000)),
        );
        assert_eq!(
            call(&mut env, Hypercall::GetVnuma, 0x1000),
            Err(Error::InvalidArgument)
        );
        // Unknown hypercall, unused register set.
        let unknown = HypercallArgs {
            nr: 999,
            args: [0; 5],
        };
        assert_eq!(
            dispatch(&unknown, &mut env),
            Outcome::Return(HypercallResult::encode(Err(Error::Unsupported)))
        );
        let extra = HypercallArgs::new(Hypercall::Version, [1, 0, 0, 0, 0]);
        assert_eq!(
            dispatch(&extra, &mut env),
            Outcome::Return(HypercallResult::encode(Err(Error::InvalidArgument)))
        );
    }

    #[test]
    fn physinfo_and_node_pages() {
        let mut env = TestEnv::two_vnodes();
        let at = Gpa(0x1000);
        env.put(at, &PhysInfo::probe());
        assert_eq!(
            call(&mut env, Hypercall::PhysInfo, at.0),
            Err(Error::BufferTooSmall)
        );
        let back: PhysInfo = env.get(at);
        assert_eq!(
            (back.nr_nodes, back.nr_cpus, back.total_pages),
            (2, 4, 2000)
        );
        let caps = PhysCounts {
            nr_nodes: 2,
            nr_cpus: 4,
        };
        env.put(
            at,
            &PhysInfo::new(caps, Gpa(0x2000), Gpa(0x3000), Gpa(0x3100)),
        );
        assert_eq!(call(&mut env, Hypercall::PhysInfo, at.0), Ok(0));
        let nodes: [NodeMemInfo; 2] = env.get(Gpa(0x2000));
        assert_eq!(
            nodes[1],
            NodeMemInfo {
                size_pages: 1000,
                free_pages: 400
            }
        );
        let cpus: [u32; 4] = env.get(Gpa(0x3100));
        assert_eq!(cpus, [0, 0, 1, 1]);

        env.put(at, &DomainNodePages::new(2, Gpa(0x5000)));
        assert_eq!(call(&mut env, Hypercall::DomainNodePages, at.0), Ok(2));
        let pages: [u64; 2] = env.get(Gpa(0x5000));
        assert_eq!(pages, [8192, 8192]);
    }

    #[test]
    fn console_and_version() {
        let mut env = TestEnv::two_vnodes();
        env.put(Gpa(0x6000), b"hi there");
        let args = HypercallArgs::new(Hypercall::ConsoleWrite, [0x6000, 8, 0, 0, 0]);
        assert_eq!(dispatch(&args, &mut env), Outcome::Return(8));
        assert_eq!(env.console, b"hi there");
        let too_long = HypercallArgs::new(Hypercall::ConsoleWrite, [0x6000, 1 << 20, 0, 0, 0]);
        assert_eq!(
            dispatch(&too_long, &mut env),
            Outcome::Return(HypercallResult::encode(Err(Error::InvalidArgument)))
        );
        let outside = HypercallArgs::new(Hypercall::ConsoleWrite, [0x3ff_fffc, 8, 0, 0, 0]);
        assert_eq!(
            dispatch(&outside, &mut env),
            Outcome::Return(HypercallResult::encode(Err(Error::Fault)))
        );
        assert_eq!(
            call(&mut env, Hypercall::Version, 0),
            Ok(pv_abi::AbiVersion::CURRENT.encode())
        );
        let shutdown = HypercallArgs::new(Hypercall::Shutdown, [3, 0, 0, 0, 0]);
        assert_eq!(
            dispatch(&shutdown, &mut env),
            Outcome::Shutdown(pv_abi::ShutdownStatus(3))
        );
    }
}

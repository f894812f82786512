//! VCPU_OP (ABI 1.3): checks a guest's request against the domain's vCPUs
//! and its memory, then asks the environment to start the vCPU. The rules
//! are `pv_abi::vcpu`'s.

use pv_abi::vcpu::{VcpuContext, VcpuOp};
use pv_abi::Error;

use super::{read_sized, HypercallEnv};

/// What a VCPU_OP does to the calling vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuOpResult {
    /// Return this value in RAX.
    Value(u64),
    /// The calling vCPU goes down (it called DOWN on itself).
    Down,
}

/// Serves `op` for the calling vCPU.
pub fn op(env: &mut dyn HypercallEnv, op: VcpuOp) -> Result<VcpuOpResult, Error> {
    let nr = env.nr_vcpus();
    let vcpu = op.vcpu();
    if vcpu >= nr {
        return Err(Error::NoSuchThing);
    }
    match op {
        VcpuOp::IsUp { vcpu } => Ok(VcpuOpResult::Value(u64::from(env.vcpu_is_up(vcpu)))),
        VcpuOp::Down { vcpu } => {
            if vcpu == 0 || vcpu != env.calling_vcpu() {
                return Err(Error::InvalidArgument);
            }
            Ok(VcpuOpResult::Down)
        }
        VcpuOp::Up { vcpu, context } => {
            if vcpu == 0 || env.vcpu_is_up(vcpu) {
                return Err(Error::InvalidArgument);
            }
            let (ctx, _) =
                read_sized::<VcpuContext>(env.memory(), context, VcpuContext::SIZE_V1_3)?;
            ctx.check()?;
            // The page tables must be the domain's memory.
            let mut probe = [0u8; 8];
            env.memory().read(ctx.cr3, &mut probe)?;
            env.vcpu_up(vcpu, &ctx)?;
            Ok(VcpuOpResult::Value(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testenv::TestEnv;
    use crate::hypercall::{dispatch, Outcome};
    use pv_abi::vcpu::{VCPU_OP_DOWN, VCPU_OP_IS_UP, VCPU_OP_UP};
    use pv_abi::{Gpa, Hypercall, HypercallArgs, HypercallResult};

    fn call(env: &mut TestEnv, args: [u64; 3]) -> Outcome {
        dispatch(
            &HypercallArgs::new(Hypercall::VcpuOp, [args[0], args[1], args[2], 0, 0]),
            env,
        )
    }

    fn ret(o: Outcome) -> Result<u64, Error> {
        match o {
            Outcome::Return(v) => HypercallResult::decode(v),
            other => panic!("{other:?}"),
        }
    }

    fn context() -> VcpuContext {
        VcpuContext::new(
            0xffff_ffff_8020_0000,
            0x10_0000,
            Gpa(0x20_0000),
            0x30_0000,
            0x17,
            9,
        )
    }

    #[test]
    fn up_starts_a_down_vcpu_once() {
        let mut env = TestEnv::two_vnodes();
        env.put(Gpa(0x1000), &context());
        assert_eq!(ret(call(&mut env, [VCPU_OP_IS_UP, 2, 0])), Ok(0));
        assert_eq!(ret(call(&mut env, [VCPU_OP_UP, 2, 0x1000])), Ok(0));
        assert_eq!(env.started, vec![(2, context())]);
        assert_eq!(ret(call(&mut env, [VCPU_OP_IS_UP, 2, 0])), Ok(1));
        // Up already, vCPU 0 always up, no vCPU 3.
        assert_eq!(
            ret(call(&mut env, [VCPU_OP_UP, 2, 0x1000])),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            ret(call(&mut env, [VCPU_OP_UP, 0, 0x1000])),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            ret(call(&mut env, [VCPU_OP_UP, 3, 0x1000])),
            Err(Error::NoSuchThing)
        );
        assert_eq!(ret(call(&mut env, [VCPU_OP_IS_UP, 0, 0])), Ok(1));
    }

    #[test]
    fn up_refuses_bad_contexts_without_starting_anything() {
        let mut env = TestEnv::two_vnodes();
        let mut c = context();
        c.flags = 1;
        env.put(Gpa(0x1000), &c);
        assert_eq!(
            ret(call(&mut env, [VCPU_OP_UP, 1, 0x1000])),
            Err(Error::InvalidArgument)
        );
        // Page tables outside the domain's 64 MiB.
        let mut c = context();
        c.cr3 = Gpa(1 << 40);
        env.put(Gpa(0x1000), &c);
        assert_eq!(
            ret(call(&mut env, [VCPU_OP_UP, 1, 0x1000])),
            Err(Error::Fault)
        );
        // A short size, a context outside memory, a misaligned one.
        let mut c = context();
        c.size = 8;
        env.put(Gpa(0x1000), &c);
        assert_eq!(
            ret(call(&mut env, [VCPU_OP_UP, 1, 0x1000])),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            ret(call(&mut env, [VCPU_OP_UP, 1, 1 << 40])),
            Err(Error::Fault)
        );
        assert_eq!(
            ret(call(&mut env, [VCPU_OP_UP, 1, 0x1001])),
            Err(Error::InvalidArgument)
        );
        // The environment may fail (no memory for the vCPU).
        env.put(Gpa(0x1000), &context());
        env.up_result = Err(Error::OutOfMemory);
        assert_eq!(
            ret(call(&mut env, [VCPU_OP_UP, 1, 0x1000])),
            Err(Error::OutOfMemory)
        );
        assert!(env.started.is_empty());
    }

    #[test]
    fn only_a_secondary_vcpu_takes_itself_down() {
        let mut env = TestEnv::two_vnodes();
        assert_eq!(
            ret(call(&mut env, [VCPU_OP_DOWN, 0, 0])),
            Err(Error::InvalidArgument)
        );
        env.calling = 1;
        assert_eq!(
            ret(call(&mut env, [VCPU_OP_DOWN, 2, 0])),
            Err(Error::InvalidArgument)
        );
        assert_eq!(call(&mut env, [VCPU_OP_DOWN, 1, 0]), Outcome::VcpuDown);
        assert_eq!(
            ret(call(&mut env, [VCPU_OP_DOWN, 1, 8])),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            ret(call(&mut env, [VCPU_OP_IS_UP, 1 << 33, 0])),
            Err(Error::NoSuchThing)
        );
        assert_eq!(ret(call(&mut env, [7, 1, 0])), Err(Error::InvalidArgument));
    }
}

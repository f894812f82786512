//! DMA_EXCHANGE (ABI 1.2): reads and checks the guest's `DmaExchange`,
//! has the environment do the exchange (`domain::exchange`, atomic), and
//! writes the answer back. On any error nothing was exchanged and the
//! structure is not written.

use pv_abi::dma::{DmaExchange, DMA_EXCHANGE_OFF_NODE};
use pv_abi::{Error, Gpa, Pod};

use super::{read_sized, ExchangeRequest, HypercallEnv};

pub fn exchange(env: &mut dyn HypercallEnv, at: Gpa) -> Result<u64, Error> {
    let (mut info, _) = read_sized::<DmaExchange>(env.memory(), at, DmaExchange::SIZE_V1_2)?;
    let accepted = info.check()?;
    let done = env.dma_exchange(ExchangeRequest {
        gpa: info.gpa,
        pages: info.nr_pages,
        address_bits: info.address_bits,
        exact_node: info.exact_node(),
    })?;
    info.size = accepted;
    info.pnode = done.pnode;
    info.maddr = done.maddr;
    info.out_flags = if done.off_node {
        DMA_EXCHANGE_OFF_NODE
    } else {
        0
    };
    // The same bytes were just read, so they are the domain's memory (the
    // exchange keeps every page mapped, with its contents): this cannot
    // fault.
    let out = info.as_bytes();
    env.memory()
        .write(at, out.get(..accepted as usize).unwrap_or(out))?;
    Ok(done.maddr.0)
}

#[cfg(test)]
mod tests {
    use super::super::testenv::TestEnv;
    use super::super::{dispatch, Outcome};
    use super::*;
    use pv_abi::dma::DMA_EXCHANGE_EXACT_NODE;
    use pv_abi::{Hypercall, HypercallArgs, HypercallResult, Maddr};

    fn call(env: &mut TestEnv, a0: u64) -> Result<u64, Error> {
        match dispatch(
            &HypercallArgs::new(Hypercall::DmaExchange, [a0, 0, 0, 0, 0]),
            env,
        ) {
            Outcome::Return(v) => HypercallResult::decode(v),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn answers_are_written_back() {
        let mut env = TestEnv::two_vnodes();
        let at = Gpa(0x3000);
        env.put(
            at,
            &DmaExchange::new(Gpa(0x10_0000), 4, 28, DMA_EXCHANGE_EXACT_NODE),
        );
        assert_eq!(call(&mut env, at.0), Ok(0x80_0000));
        let back: DmaExchange = env.get(at);
        assert_eq!(back.maddr, Maddr(0x80_0000));
        assert_eq!((back.pnode, back.out_flags, back.size), (0, 0, 48));
        assert_eq!(
            env.exchanges,
            vec![ExchangeRequest {
                gpa: Gpa(0x10_0000),
                pages: 4,
                address_bits: 28,
                exact_node: true
            }]
        );
        // Off node: the flag comes back.
        env.put(at, &DmaExchange::new(Gpa(0x300_0000), 1, 32, 0));
        assert_eq!(call(&mut env, at.0), Ok(0x80_0000));
        let back: DmaExchange = env.get(at);
        assert_eq!((back.pnode, back.out_flags), (0, DMA_EXCHANGE_OFF_NODE));
    }

    #[test]
    fn bad_requests_change_nothing() {
        let mut env = TestEnv::two_vnodes();
        let at = Gpa(0x3000);
        let mut r = DmaExchange::new(Gpa(0x10_0000), 4, 28, 0);
        r.reserved = 1;
        env.put(at, &r);
        assert_eq!(call(&mut env, at.0), Err(Error::InvalidArgument));
        assert_eq!(env.get::<DmaExchange>(at), r, "not written back");
        r.reserved = 0;
        r.size = 40;
        env.put(at, &r);
        assert_eq!(call(&mut env, at.0), Err(Error::InvalidArgument));
        assert_eq!(call(&mut env, 0x3004), Err(Error::InvalidArgument));
        assert_eq!(call(&mut env, 1 << 40), Err(Error::Fault));
        // The environment refuses: the error passes through, nothing written.
        let r = DmaExchange::new(Gpa(0x10_0000), 4, 24, 0);
        env.put(at, &r);
        env.exchange_result = Err(Error::OutOfMemory);
        assert_eq!(call(&mut env, at.0), Err(Error::OutOfMemory));
        assert_eq!(env.get::<DmaExchange>(at), r);
        assert!(env.exchanges.is_empty());
    }
}

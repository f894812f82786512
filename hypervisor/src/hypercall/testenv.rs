//! A fake domain for hypercall tests: 64 MiB of guest memory at Gpa 0 in a
//! vector, two vnodes, a two-node machine.

use alloc::vec;
use alloc::vec::Vec;

use pv_abi::{Error, Gpa, Pod, VmemRange};

use super::{ExchangeRequest, Exchanged, GuestAccess, HypercallEnv, MachineView, VnumaView};

pub struct TestMem {
    pub bytes: Vec<u8>,
}

impl GuestAccess for TestMem {
    fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), Error> {
        let start = usize::try_from(gpa.0).map_err(|_| Error::Fault)?;
        let src = self
            .bytes
            .get(start..start.checked_add(buf.len()).ok_or(Error::Fault)?)
            .ok_or(Error::Fault)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write(&mut self, gpa: Gpa, buf: &[u8]) -> Result<(), Error> {
        let start = usize::try_from(gpa.0).map_err(|_| Error::Fault)?;
        let end = start.checked_add(buf.len()).ok_or(Error::Fault)?;
        self.bytes
            .get_mut(start..end)
            .ok_or(Error::Fault)?
            .copy_from_slice(buf);
        Ok(())
    }
}

pub struct TestEnv {
    pub mem: TestMem,
    pub vnuma: VnumaView,
    pub console: Vec<u8>,
    /// DMA exchanges done (each answers machine 0x800000, pnode 0, off
    /// node for vnode 1's memory).
    pub exchanges: Vec<ExchangeRequest>,
    /// What the next DMA exchange answers (`Ok`: the above).
    pub exchange_result: Result<(), Error>,
    /// Port accesses seen by `port_io` (port, size, value written).
    pub ports: Vec<(u16, u8, Option<u32>)>,
    /// The vCPU making the calls.
    #[cfg(not(feature = "abi-1-2"))]
    pub calling: u32,
    /// vCPUs started by VCPU_OP, with their contexts.
    #[cfg(not(feature = "abi-1-2"))]
    pub started: Vec<(u32, pv_abi::VcpuContext)>,
    /// What the next start answers.
    #[cfg(not(feature = "abi-1-2"))]
    pub up_result: Result<(), Error>,
}

impl TestEnv {
    /// Two vnodes of 32 MiB; vCPUs 0, 1 on vnode 0 and 2 on vnode 1.
    pub fn two_vnodes() -> TestEnv {
        TestEnv {
            mem: TestMem {
                bytes: vec![0; 64 << 20],
            },
            vnuma: VnumaView {
                nr_vnodes: 2,
                distances: vec![10, 20, 20, 10],
                vcpu_to_vnode: vec![0, 0, 1],
                ranges: vec![
                    VmemRange::new(Gpa(0), Gpa(0x200_0000), 0),
                    VmemRange::new(Gpa(0x200_0000), Gpa(0x400_0000), 1),
                ],
                vnode_placement: vec![(0, 8192), (1, 8192)],
            },
            console: Vec::new(),
            exchanges: Vec::new(),
            exchange_result: Ok(()),
            ports: Vec::new(),
            #[cfg(not(feature = "abi-1-2"))]
            calling: 0,
            #[cfg(not(feature = "abi-1-2"))]
            started: Vec::new(),
            #[cfg(not(feature = "abi-1-2"))]
            up_result: Ok(()),
        }
    }

    pub fn put<T: Pod>(&mut self, at: Gpa, value: &T) {
        self.mem
            .write(at, value.as_bytes())
            .expect("test address in memory");
    }

    pub fn get<T: Pod>(&self, at: Gpa) -> T {
        super::read_pod(&self.mem, at).expect("test address in memory")
    }
}

impl HypercallEnv for TestEnv {
    fn memory(&mut self) -> &mut dyn GuestAccess {
        &mut self.mem
    }

    fn vnuma(&self) -> &VnumaView {
        &self.vnuma
    }

    fn machine(&self) -> MachineView {
        MachineView {
            nr_cpus: 4,
            total_pages: 2000,
            free_pages: 900,
            node_mem: vec![(1000, 500), (1000, 400)],
            distances: vec![10, 21, 21, 10],
            cpu_to_node: vec![0, 0, 1, 1],
        }
    }

    fn node_pages(&self) -> Vec<u64> {
        vec![8192, 8192]
    }

    fn console(&mut self, bytes: &[u8]) {
        self.console.extend_from_slice(bytes);
    }

    /// Emulates 0xCF8-0xCFF: reads answer 0x11e81234.
    fn port_io(&mut self, port: u16, size: u8, write: Option<u32>) -> Option<u32> {
        if !(0xCF8..0xD00).contains(&port) {
            return None;
        }
        self.ports.push((port, size, write));
        Some(0x11e8_1234)
    }

    fn dma_exchange(&mut self, request: ExchangeRequest) -> Result<Exchanged, Error> {
        self.exchange_result?;
        self.exchanges.push(request);
        Ok(Exchanged {
            maddr: pv_abi::Maddr(0x80_0000),
            pnode: 0,
            off_node: request.gpa.0 >= 0x200_0000,
        })
    }

    #[cfg(not(feature = "abi-1-2"))]
    fn calling_vcpu(&self) -> u32 {
        self.calling
    }

    #[cfg(not(feature = "abi-1-2"))]
    fn vcpu_is_up(&self, vcpu: u32) -> bool {
        vcpu == 0 || self.started.iter().any(|&(v, _)| v == vcpu)
    }

    #[cfg(not(feature = "abi-1-2"))]
    fn vcpu_up(&mut self, vcpu: u32, context: &pv_abi::VcpuContext) -> Result<(), Error> {
        self.up_result?;
        self.started.push((vcpu, *context));
        Ok(())
    }
}

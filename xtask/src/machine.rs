//! Machines to boot: named presets and the QEMU arguments that describe them.
//!
//! A preset is a structured description (nodes with memory and CPUs, a
//! distance matrix, a hypervisor command line), so that the QEMU arguments
//! and the tests' expectations come from the same data.

use std::fmt::Write as _;

/// One NUMA node of a preset machine, in QEMU's node order (its `nodeid`,
/// which is also the SRAT proximity domain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub mem_mib: u64,
    pub cpus: Vec<u32>,
}

/// A machine QEMU can build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub nodes: Vec<NodeSpec>,
    /// Full distance matrix (row = from); `None` lets QEMU leave out the SLIT.
    pub distances: Option<Vec<Vec<u8>>>,
    /// Without `-numa` options QEMU writes no SRAT at all.
    pub numa: bool,
    /// Hypervisor command line.
    pub cmdline: &'static str,
    /// Devices added to the machine, as QEMU arguments (`-device`, ...).
    pub devices: &'static [&'static str],
    /// The mirror domain's guest command line (`cargo xtask run` uses it
    /// unless `--guest-cmdline` is given).
    pub guest_cmdline: &'static str,
}

impl MachineSpec {
    pub fn total_mem_mib(&self) -> u64 {
        self.nodes.iter().map(|n| n.mem_mib).sum()
    }

    pub fn nr_cpus(&self) -> u32 {
        self.nodes.iter().map(|n| n.cpus.len() as u32).sum()
    }

    /// QEMU arguments describing this machine (memory, CPUs, NUMA).
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args = vec![
            "-m".to_string(),
            format!("{}M", self.total_mem_mib()),
            "-smp".to_string(),
            self.nr_cpus().to_string(),
        ];
        args.extend(self.devices.iter().map(|d| d.to_string()));
        if !self.numa {
            return args;
        }
        for (id, node) in self.nodes.iter().enumerate() {
            let mut desc = format!("node,nodeid={id}");
            if node.mem_mib > 0 {
                args.push("-object".into());
                args.push(format!(
                    "memory-backend-ram,id=mem{id},size={}M",
                    node.mem_mib
                ));
                let _ = write!(desc, ",memdev=mem{id}");
            }
            for range in cpu_ranges(&node.cpus) {
                let _ = write!(desc, ",cpus={range}");
            }
            args.push("-numa".into());
            args.push(desc);
        }
        if let Some(d) = &self.distances {
            for (i, row) in d.iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    if i != j {
                        args.push("-numa".into());
                        args.push(format!("dist,src={i},dst={j},val={v}"));
                    }
                }
            }
        }
        args
    }

    /// The distance between QEMU nodes `i` and `j` as the guest should see it.
    pub fn distance(&self, i: usize, j: usize) -> u8 {
        match &self.distances {
            Some(d) => d[i][j],
            None if i == j => 10,
            None => 20,
        }
    }

    /// QEMU node ids in the order Linux numbers them: nodes named by CPUs
    /// first (in CPU order, which is QEMU's SRAT order), then memory-only
    /// nodes in node order. Element k is the QEMU node that becomes node k.
    pub fn linux_node_order(&self) -> Vec<usize> {
        if !self.numa {
            return vec![0];
        }
        let mut by_cpu: Vec<(u32, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(id, n)| n.cpus.iter().map(move |&c| (c, id)))
            .collect();
        by_cpu.sort();
        let mut order: Vec<usize> = Vec::new();
        for (_, id) in by_cpu {
            if !order.contains(&id) {
                order.push(id);
            }
        }
        for (id, n) in self.nodes.iter().enumerate() {
            if n.mem_mib > 0 && !order.contains(&id) {
                order.push(id);
            }
        }
        order
    }
}

/// "0-1", "4", ...: QEMU's `cpus=` syntax, one entry per contiguous run.
fn cpu_ranges(cpus: &[u32]) -> Vec<String> {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out
}

fn node(mem_mib: u64, cpus: &[u32]) -> NodeSpec {
    NodeSpec {
        mem_mib,
        cpus: cpus.to_vec(),
    }
}

/// The `edu` preset's devices: QEMU's educational device twice, with its
/// default 28-bit DMA mask at 00:04.0 and a 32-bit one at 00:05.0
/// (`domains/dma-*.cfg` assign one or the other).
pub const EDU_DEVICES: &[&str] = &[
    "-device",
    "edu,addr=04.0",
    "-device",
    "edu,addr=05.0,dma_mask=0xffffffff",
];

/// The built-in machines. The first is the default.
pub fn presets() -> Vec<MachineSpec> {
    let ring = |n: usize| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        let d = i.abs_diff(j);
                        10 + 10 * d.min(n - d) as u8
                    })
                    .collect()
            })
            .collect()
    };
    vec![
        MachineSpec {
            name: "default",
            summary: "4 nodes: 0 and 1 with memory and CPUs, 2 memoryless with CPUs, 3 CPU-less",
            nodes: vec![
                node(512, &[0, 1]),
                node(512, &[2, 3]),
                node(0, &[4, 5]),
                node(512, &[]),
            ],
            distances: Some(vec![
                vec![10, 20, 30, 40],
                vec![20, 10, 20, 30],
                vec![30, 20, 10, 20],
                vec![40, 30, 20, 10],
            ]),
            numa: true,
            cmdline: "",
            devices: &[],
            guest_cmdline: "",
        },
        MachineSpec {
            name: "uma",
            summary: "1 node, no SRAT at all (QEMU without -numa)",
            nodes: vec![node(512, &[0, 1])],
            distances: None,
            numa: false,
            cmdline: "",
            devices: &[],
            guest_cmdline: "",
        },
        MachineSpec {
            name: "two-nodes",
            summary: "2 nodes of 512 MiB and 2 CPUs each, distance 20",
            nodes: vec![node(512, &[0, 1]), node(512, &[2, 3])],
            distances: Some(vec![vec![10, 20], vec![20, 10]]),
            numa: true,
            cmdline: "",
            devices: &[],
            guest_cmdline: "",
        },
        MachineSpec {
            name: "ring8",
            summary: "8 nodes in a ring, 128 MiB and 1 CPU each, distance 10 + 10 per hop",
            nodes: (0..8).map(|i| node(128, &[i])).collect(),
            distances: Some(ring(8)),
            numa: true,
            cmdline: "",
            devices: &[],
            guest_cmdline: "",
        },
        MachineSpec {
            name: "asymmetric",
            summary: "3 nodes whose SLIT is not symmetric (0->1 is 20, 1->0 is 30)",
            nodes: vec![node(256, &[0]), node(256, &[1]), node(256, &[2])],
            distances: Some(vec![vec![10, 20, 40], vec![30, 10, 20], vec![25, 35, 10]]),
            numa: true,
            cmdline: "",
            devices: &[],
            guest_cmdline: "",
        },
        MachineSpec {
            name: "cpu-order",
            summary: "2 nodes where QEMU node 1 owns CPU 0: Linux numbers that node 0",
            nodes: vec![node(256, &[2, 3]), node(512, &[0, 1])],
            distances: Some(vec![vec![10, 21], vec![21, 10]]),
            numa: true,
            cmdline: "",
            devices: &[],
            guest_cmdline: "",
        },
        MachineSpec {
            name: "memory-first",
            summary: "QEMU node 0 has memory only: Linux numbers it after the CPU node (node 1)",
            nodes: vec![node(256, &[]), node(256, &[0, 1])],
            distances: Some(vec![vec![10, 30], vec![30, 10]]),
            numa: true,
            cmdline: "",
            devices: &[],
            guest_cmdline: "",
        },
        MachineSpec {
            name: "numa-off",
            summary: "the two-nodes machine booted with numa=off: one node",
            nodes: vec![node(512, &[0, 1]), node(512, &[2, 3])],
            distances: Some(vec![vec![10, 20], vec![20, 10]]),
            numa: true,
            cmdline: "numa=off",
            devices: &[],
            guest_cmdline: "",
        },
        MachineSpec {
            name: "fake4",
            summary: "the two-nodes machine split into 4 emulated nodes with numa=fake=4",
            nodes: vec![node(512, &[0, 1]), node(512, &[2, 3])],
            distances: Some(vec![vec![10, 20], vec![20, 10]]),
            numa: true,
            cmdline: "numa=fake=4",
            devices: &[],
            guest_cmdline: "",
        },
        MachineSpec {
            name: "high-mem",
            summary: "2 nodes of 3 GiB: node 1 and part of node 0 live above 4 GiB",
            nodes: vec![node(3072, &[0, 1]), node(3072, &[2, 3])],
            distances: Some(vec![vec![10, 20], vec![20, 10]]),
            numa: true,
            cmdline: "",
            devices: &[],
            guest_cmdline: "",
        },
        MachineSpec {
            name: "edu",
            summary: "the default machine with QEMU's edu at 00:04.0 (28-bit DMA, the mirror domain's) and 00:05.0 (32-bit)",
            nodes: vec![
                node(512, &[0, 1]),
                node(512, &[2, 3]),
                node(0, &[4, 5]),
                node(512, &[]),
            ],
            distances: Some(vec![
                vec![10, 20, 30, 40],
                vec![20, 10, 20, 30],
                vec![30, 20, 10, 20],
                vec![40, 30, 20, 10],
            ]),
            numa: true,
            cmdline: "mirror-pci=00:04.0",
            devices: EDU_DEVICES,
            guest_cmdline: "",
        },
        MachineSpec {
            name: "high-mem-edu",
            summary: "high-mem with QEMU's edu (32-bit DMA mask) given to the mirror domain, whose memory is all above 4 GiB",
            nodes: vec![node(3072, &[0, 1]), node(3072, &[2, 3])],
            distances: Some(vec![vec![10, 20], vec![20, 10]]),
            numa: true,
            cmdline: "mirror-pci=00:04.0",
            devices: &["-device", "edu,addr=04.0,dma_mask=0xffffffff"],
            guest_cmdline: "edu.dma_bits=32",
        },
    ]
}

/// Looks up a preset by name.
pub fn preset(name: &str) -> Option<MachineSpec> {
    presets().into_iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_machine_arguments() {
        let m = preset("default").unwrap();
        let args = m.qemu_args().join(" ");
        assert!(args.starts_with("-m 1536M -smp 6"));
        assert!(args.contains("-numa node,nodeid=2,cpus=4-5"));
        assert!(args.contains("-numa node,nodeid=3,memdev=mem3"));
        assert!(args.contains("-numa dist,src=0,dst=3,val=40"));
        assert_eq!(m.linux_node_order(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn devices_come_after_memory_and_cpus() {
        let m = preset("high-mem-edu").unwrap();
        let args = m.qemu_args().join(" ");
        assert!(
            args.starts_with("-m 6144M -smp 4 -device edu,addr=04.0,dma_mask=0xffffffff "),
            "{args}"
        );
        assert_eq!(m.cmdline, "mirror-pci=00:04.0");
        assert_eq!(
            preset("edu").unwrap().nodes,
            preset("default").unwrap().nodes
        );
    }

    #[test]
    fn linux_order_follows_cpus_then_memory() {
        assert_eq!(preset("cpu-order").unwrap().linux_node_order(), vec![1, 0]);
        assert_eq!(cpu_ranges(&[5, 0, 1, 3]), vec!["0-1", "3", "5"]);
    }

    #[test]
    fn every_preset_is_well_formed() {
        for p in presets() {
            let n = p.nodes.len();
            if let Some(d) = &p.distances {
                assert_eq!(d.len(), n, "{}", p.name);
                for (i, row) in d.iter().enumerate() {
                    assert_eq!(row.len(), n, "{}", p.name);
                    assert_eq!(row[i], 10, "{}", p.name);
                }
            }
            let mut cpus: Vec<u32> = p.nodes.iter().flat_map(|n| n.cpus.clone()).collect();
            cpus.sort_unstable();
            assert_eq!(cpus, (0..p.nr_cpus()).collect::<Vec<_>>(), "{}", p.name);
        }
    }
}

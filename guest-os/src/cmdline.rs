//! The guest command line (`StartInfo::cmdline`): whitespace-separated
//! `key=value` options and flags. Unknown options and bad values are
//! reported as warnings and ignored, never fatal.
//!
//! | option | meaning |
//! | --- | --- |
//! | `fail=npf` | touch a guest-physical address outside every memory range |
//! | `fail=triple` | load an empty IDT and raise `#UD`: a triple fault |
//! | `fail=hypercall` | issue garbage hypercalls, check each answer (an extra KTAP suite), go on |
//! | `fail=halt` | `cli; hlt`: a vCPU that can never wake up |
//! | `fail=spin` | `cli` and an endless loop without exits: only the domain's `time_limit` ends it |
//! | `fail_vcpu=N` | the `fail=` mode happens on secondary vCPU N (ABI 1.3, once it is up) instead of vCPU 0 |
//! | `ktest=a,b` | run only these KTAP suites |
//! | `numa_zonelist_order=node\|zone\|default` | fallback lists in node order (the default), Linux 4.13's zone order, or the pre-4.14 heuristic; as Linux, the first letter decides, either case |
//! | `swiotlb=[N][,A][,force\|noforce]` | the bounce pool: `N` 2 KiB slots (default 512, 1 MiB), `A` areas; `force` bounces every DMA mapping, `noforce` none (Linux's syntax; `crate::dma::setup`) |
//! | `dma=direct` | never bounce: a mapping a device cannot reach is refused (to show what goes wrong without bounce buffers) |
//! | `edu.dma_bits=N` | the edu device's DMA mask width, as QEMU's `-device edu,dma_mask=` (default 28) |
//! | `burn=N` | before the suites, spin on vCPU 0 for N million iterations of pure arithmetic (no PAUSE, no exits): CPU-bound work to show how the hypervisor shares a CPU (weights) |
//! | `bench` | after the suites, time order-0 page alloc+free pairs in TSC cycles (`cargo xtask bench`) |
//! | `nosmp` | bring up no secondary vCPU (ABI 1.3's `VCPU_OP`): the guest runs on vCPU 0 alone, as Linux's `nosmp` |
//! | `numa=fake=N` | NUMA emulation: N fake nodes instead of the node view, as Linux's `split_nodes_interleave` (`crate::numa::fake`); Linux's size (`M`/`G`) and uniform (`U`) forms are not supported |

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::mm::OrderChoice;
use crate::platform::FailMode;

/// The parsed command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// `fail=`.
    pub fail: Option<FailMode>,
    /// `ktest=`: the suites to run (all when `None`).
    pub ktest: Option<Vec<String>>,
    /// `numa_zonelist_order=`.
    pub numa_zonelist_order: Option<OrderChoice>,
    /// `numa=fake=N`.
    pub numa_fake: Option<u32>,
    /// `swiotlb=`, `dma=`, `edu.dma_bits=`.
    pub dma: crate::dma::setup::DmaOptions,
    /// `bench`: run the guest benchmarks after the suites.
    pub bench: bool,
    /// `burn=N`: millions of iterations of CPU-bound work before the suites.
    pub burn: Option<u64>,
    /// `nosmp`: no secondary vCPU is brought up.
    pub nosmp: bool,
    /// `fail_vcpu=N`: the vCPU that fails on purpose (0 when `None`).
    pub fail_vcpu: Option<u32>,
    /// What was not understood.
    pub warnings: Vec<String>,
}

/// The failure modes, by their command-line names.
pub const FAIL_MODES: [FailMode; 5] = [
    FailMode::Npf,
    FailMode::Triple,
    FailMode::Hypercall,
    FailMode::Halt,
    FailMode::Spin,
];

/// Largest `burn=` (millions of iterations): about an hour under TCG.
pub const MAX_BURN: u64 = 1_000_000;

/// Parses a command line. Never fails.
pub fn parse(cmdline: &str) -> Cmdline {
    let mut c = Cmdline::default();
    for word in cmdline.split_ascii_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        match (key, value) {
            ("bench", None) => c.bench = true,
            ("nosmp", None) => c.nosmp = true,
            ("fail", Some(v)) => match FAIL_MODES.iter().find(|m| m.name() == v) {
                Some(&m) => {
                    if let Some(old) = c.fail {
                        c.warnings.push(format!(
                            "fail={v} replaces fail={} given earlier",
                            old.name()
                        ));
                    }
                    c.fail = Some(m);
                }
                None => c.warnings.push(format!(
                    "fail={v}: unknown failure mode (known: npf, triple, hypercall, halt, spin); ignored"
                )),
            },
            ("burn", Some(v)) => match v.parse::<u64>() {
                Ok(n) if n <= MAX_BURN => c.burn = Some(n),
                _ => c.warnings.push(format!(
                    "burn={v}: not a count of millions up to {MAX_BURN}; ignored"
                )),
            },
            ("fail_vcpu", Some(v)) => match v.parse::<u32>() {
                Ok(n) => c.fail_vcpu = Some(n),
                Err(_) => c
                    .warnings
                    .push(format!("fail_vcpu={v}: not a vCPU number; ignored")),
            },
            ("ktest", Some(v)) => {
                c.ktest = Some(
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(ToString::to_string)
                        .collect(),
                )
            }
            ("numa_zonelist_order", Some(v)) => match OrderChoice::parse(v) {
                Some(o) => c.numa_zonelist_order = Some(o),
                None => c.warnings.push(format!(
                    "numa_zonelist_order={v}: not node, zone or default; ignored"
                )),
            },
            ("numa", Some(v)) => match v.strip_prefix("fake=").map(str::parse::<u32>) {
                Some(Ok(n)) => c.numa_fake = Some(n),
                _ => c.warnings.push(format!(
                    "numa={v}: only numa=fake=N (a node count) is supported; ignored"
                )),
            },
            ("swiotlb" | "dma" | "edu.dma_bits", Some(v)) => {
                if let Err(w) = crate::dma::setup::parse_option(key, v, &mut c.dma) {
                    c.warnings.push(w);
                }
            }
            (
                "fail"
                | "burn"
                | "fail_vcpu"
                | "ktest"
                | "numa_zonelist_order"
                | "numa"
                | "swiotlb"
                | "dma"
                | "edu.dma_bits",
                None,
            ) => c
                .warnings
                .push(format!("option '{key}' needs a value ({key}=...); ignored")),
            _ => c.warnings.push(format!("unknown option '{word}' ignored")),
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_vcpu_names_a_vcpu() {
        assert_eq!(parse("fail=npf fail_vcpu=3").fail_vcpu, Some(3));
        let c = parse("fail_vcpu=x fail_vcpu");
        assert_eq!(c.fail_vcpu, None);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    }

    #[test]
    fn failure_modes() {
        for m in FAIL_MODES {
            let c = parse(&format!("  fail={}  ", m.name()));
            assert_eq!(c.fail, Some(m));
            assert!(c.warnings.is_empty());
        }
        assert_eq!(parse("").fail, None);
    }

    #[test]
    fn unknown_things_are_reported_not_fatal() {
        let c = parse("console=hv fail=boom quiet fail=npf fail=halt ktest");
        assert_eq!(c.fail, Some(FailMode::Halt));
        assert_eq!(
            c.warnings,
            vec![
                "unknown option 'console=hv' ignored",
                "fail=boom: unknown failure mode (known: npf, triple, hypercall, halt, spin); ignored",
                "unknown option 'quiet' ignored",
                "fail=halt replaces fail=npf given earlier",
                "option 'ktest' needs a value (ktest=...); ignored",
            ]
        );
    }

    #[test]
    fn zonelist_order() {
        assert_eq!(
            parse("numa_zonelist_order=Zone").numa_zonelist_order,
            Some(OrderChoice::Zone)
        );
        assert_eq!(
            parse("numa_zonelist_order=d").numa_zonelist_order,
            Some(OrderChoice::Default)
        );
        assert_eq!(
            parse("numa_zonelist_order=node").numa_zonelist_order,
            Some(OrderChoice::Node)
        );
        let c = parse("numa_zonelist_order=x numa_zonelist_order");
        assert_eq!(c.numa_zonelist_order, None);
        assert_eq!(
            c.warnings,
            vec![
                "numa_zonelist_order=x: not node, zone or default; ignored",
                "option 'numa_zonelist_order' needs a value (numa_zonelist_order=...); ignored",
            ]
        );
    }

    #[test]
    fn numa_fake() {
        assert_eq!(parse("numa=fake=4").numa_fake, Some(4));
        assert_eq!(parse("numa=fake=0").numa_fake, Some(0));
        let c = parse("numa=fake=2G numa=off numa=fake= numa");
        assert_eq!(c.numa_fake, None);
        assert_eq!(
            c.warnings,
            vec![
                "numa=fake=2G: only numa=fake=N (a node count) is supported; ignored",
                "numa=off: only numa=fake=N (a node count) is supported; ignored",
                "numa=fake=: only numa=fake=N (a node count) is supported; ignored",
                "option 'numa' needs a value (numa=...); ignored",
            ]
        );
    }

    #[test]
    fn dma_options() {
        let c = parse("swiotlb=128,force edu.dma_bits=32 dma=direct dma=x swiotlb");
        assert_eq!(c.dma.swiotlb.and_then(|s| s.slots), Some(128));
        assert_eq!(c.dma.edu_dma_bits, Some(32));
        assert!(c.dma.direct);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    }

    #[test]
    fn burn_takes_a_count_of_millions() {
        assert_eq!(parse("burn=300").burn, Some(300));
        for bad in ["burn=x", "burn=-1", "burn=1000001", "burn"] {
            let c = parse(bad);
            assert_eq!(c.burn, None, "{bad}");
            assert_eq!(c.warnings.len(), 1, "{bad}");
        }
    }

    #[test]
    fn nosmp() {
        assert!(!parse("bench").nosmp);
        let c = parse("nosmp bench");
        assert!(c.nosmp && c.bench && c.warnings.is_empty());
        assert_eq!(
            parse("nosmp=1").warnings,
            vec!["unknown option 'nosmp=1' ignored"]
        );
    }

    #[test]
    fn suite_selection() {
        let c = parse("ktest=boot,,vnuma");
        assert_eq!(c.ktest, Some(vec!["boot".to_string(), "vnuma".to_string()]));
    }
}

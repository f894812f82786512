//! Helpers for the QEMU integration tests: boot a machine through the same
//! code as `cargo xtask run`, and read back what the hypervisor printed.
//!
//! The hypervisor prints the machine in the format of Xen's `xl info -n`
//! (see the README, "What the hypervisor prints"); this crate parses it.

pub mod abi;
pub mod acpi;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use xtask::images;
use xtask::machine::MachineSpec;
use xtask::qemu::{self, RunConfig, RunResult};

pub mod ktap;

/// The images and QEMU, found once per test binary.
struct Tools {
    hypervisor: PathBuf,
    guest: PathBuf,
    qemu: PathBuf,
}

fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        // `cargo xtask test` builds the image and passes its path; a plain
        // `cargo test` builds it here, in its own target directory so that
        // it does not wait on the outer cargo's lock.
        let (hypervisor, guest) = match (
            std::env::var_os("NUMAVISOR_HYPERVISOR"),
            std::env::var_os("NUMAVISOR_GUEST"),
        ) {
            (Some(h), Some(g)) => (PathBuf::from(h), PathBuf::from(g)),
            _ => {
                let dir = images::workspace_root().join("target").join("qemu-tests");
                match images::build(Some(&dir)) {
                    Ok(i) => (i.hypervisor, i.guest),
                    Err(e) => panic!("cannot build the images: {e}"),
                }
            }
        };
        let qemu = match std::env::var_os("NUMAVISOR_QEMU") {
            Some(p) => PathBuf::from(p),
            None => qemu::ensure_qemu().unwrap_or_else(|e| panic!("{e}")),
        };
        Tools {
            hypervisor,
            guest,
            qemu,
        }
    })
}

/// The images every boot uses.
pub fn images() -> images::Images {
    let t = tools();
    images::Images {
        hypervisor: t.hypervisor.clone(),
        guest: t.guest.clone(),
    }
}

/// The current images (what `cargo xtask test` built, or built here).
pub fn current_images() -> (PathBuf, PathBuf) {
    let t = tools();
    (t.hypervisor.clone(), t.guest.clone())
}

/// The default machine preset (4 nodes, 6 CPUs, a memoryless and a
/// CPU-less node).
pub fn default_machine() -> MachineSpec {
    xtask::machine::preset("default").expect("default preset")
}

/// How a run ended and its whole console, for assertion messages.
pub fn context(run: &RunResult) -> String {
    format!(
        "{}\n--- console ---\n{}",
        run.outcome.describe(),
        run.console
    )
}

/// Boots the hypervisor on `spec` with `extra_cmdline` appended.
pub fn boot(spec: &MachineSpec, extra_cmdline: &str) -> RunResult {
    boot_with(
        spec.qemu_args(),
        &format!("{} {}", spec.cmdline, extra_cmdline),
    )
}

/// Boots the hypervisor on a machine given as QEMU arguments.
pub fn boot_with(machine_args: Vec<String>, cmdline: &str) -> RunResult {
    boot_with_timeout(machine_args, cmdline, xtask::DEFAULT_TIMEOUT)
}

/// [`boot_with`] with another time-out.
pub fn boot_with_timeout(machine_args: Vec<String>, cmdline: &str, timeout: Duration) -> RunResult {
    run(machine_args, cmdline, Vec::new(), timeout)
}

/// A config from the repository's `domains/` directory.
pub fn domain_config(name: &str) -> String {
    images::workspace_root()
        .join("domains")
        .join(name)
        .display()
        .to_string()
}

/// Writes a domain config made by a test (`target/test-configs/NAME.cfg`)
/// and returns its path, for [`boot_domains`].
pub fn write_config(name: &str, text: &str) -> String {
    let dir = images::workspace_root().join("target").join("test-configs");
    std::fs::create_dir_all(&dir).expect("target/test-configs");
    let path = dir.join(format!("{name}.cfg"));
    std::fs::write(&path, text).expect("writing a test config");
    path.display().to_string()
}

/// Boots `spec` with the guest (its module string carries
/// `guest_cmdline`, the mirror domain's command line) and these domain
/// config files, run in order.
pub fn boot_domains(spec: &MachineSpec, guest_cmdline: &str, configs: &[String]) -> RunResult {
    boot_modules(spec, guest_image(guest_cmdline), configs)
}

/// The guest image module string with a command line.
pub fn guest_image(guest_cmdline: &str) -> String {
    format!("{} {guest_cmdline}", tools().guest.display())
        .trim_end()
        .to_string()
}

/// Boots `spec` with `image` (a module string) and `configs` as modules.
pub fn boot_modules(spec: &MachineSpec, image: String, configs: &[String]) -> RunResult {
    let mut modules = vec![image];
    modules.extend(configs.iter().cloned());
    run(
        spec.qemu_args(),
        spec.cmdline,
        modules,
        xtask::DEFAULT_TIMEOUT,
    )
}

/// Boots `spec` with `extra_cmdline` appended to the hypervisor's command
/// line, `image` (a module string) and `configs` as modules.
pub fn boot_modules_cmdline(
    spec: &MachineSpec,
    extra_cmdline: &str,
    image: String,
    configs: &[String],
) -> RunResult {
    let mut modules = vec![image];
    modules.extend(configs.iter().cloned());
    run(
        spec.qemu_args(),
        &format!("{} {extra_cmdline}", spec.cmdline),
        modules,
        xtask::DEFAULT_TIMEOUT,
    )
}

fn run(
    machine_args: Vec<String>,
    cmdline: &str,
    modules: Vec<String>,
    timeout: Duration,
) -> RunResult {
    run_kernel(&tools().hypervisor, machine_args, cmdline, modules, timeout)
}

/// Boots `kernel` (a hypervisor image) with these machine arguments,
/// command line and boot modules.
pub fn run_kernel(
    kernel: &std::path::Path,
    machine_args: Vec<String>,
    cmdline: &str,
    modules: Vec<String>,
    timeout: Duration,
) -> RunResult {
    let t = tools();
    let cfg = RunConfig {
        kernel: kernel.to_path_buf(),
        modules,
        cmdline: cmdline.trim().to_string(),
        machine_args,
        timeout,
        gdb: false,
        echo: false,
    };
    qemu::run(&t.qemu, &cfg).unwrap_or_else(|e| panic!("cannot run QEMU: {e}"))
}

/// One row of `xl info -n`'s cpu_topology table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuRow {
    pub cpu: u32,
    pub core: u32,
    pub socket: u32,
    pub node: u32,
}

/// One row of `xl info -n`'s numa_info table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub node: u32,
    pub memsize_mib: u64,
    pub memfree_mib: u64,
    pub distances: Vec<u32>,
}

/// One non-empty free list of the heap probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeRow {
    pub node: u32,
    pub zone: u32,
    pub order: u32,
    pub blocks: u64,
    pub pages: u64,
}

/// One node's totals in the heap probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeNode {
    pub node: u32,
    pub total_pages: u64,
    pub free_pages: u64,
}

/// What the hypervisor printed about the machine.
#[derive(Clone, Debug, Default)]
pub struct MachineReport {
    pub nr_cpus: Option<u32>,
    pub nr_nodes: Option<u32>,
    pub cpus: Vec<CpuRow>,
    pub nodes: Vec<NodeRow>,
    pub probe_nodes: Vec<ProbeNode>,
    pub probe: Vec<ProbeRow>,
    pub warnings: Vec<String>,
}

fn field(line: &str, name: &str) -> Option<u32> {
    let rest = line.strip_prefix(name)?.trim_start();
    rest.strip_prefix(':')?.trim().parse().ok()
}

/// Parses the console output of one run.
pub fn parse_report(console: &str) -> MachineReport {
    #[derive(PartialEq)]
    enum Section {
        None,
        Cpus,
        Nodes,
    }
    let mut r = MachineReport::default();
    let mut section = Section::None;
    for line in console.lines() {
        let line = line.trim_end();
        if let Some(w) = line.strip_prefix("numavisor: warning: ") {
            r.warnings.push(w.to_string());
        }
        if let Some(v) = field(line, "nr_cpus") {
            r.nr_cpus = Some(v);
        }
        if let Some(v) = field(line, "nr_nodes") {
            r.nr_nodes = Some(v);
        }
        if line.starts_with("cpu:") {
            section = Section::Cpus;
            continue;
        }
        if line.starts_with("node:") {
            section = Section::Nodes;
            continue;
        }
        if let Some(rest) = line.strip_prefix("heap probe: ") {
            parse_probe_line(rest, &mut r);
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        let first = cols
            .first()
            .and_then(|c| c.strip_suffix(':'))
            .and_then(|c| c.parse::<u32>().ok());
        match (&section, first) {
            (Section::Cpus, Some(cpu)) if cols.len() == 4 => {
                let n: Vec<u32> = cols[1..].iter().filter_map(|c| c.parse().ok()).collect();
                if let [core, socket, node] = n[..] {
                    r.cpus.push(CpuRow {
                        cpu,
                        core,
                        socket,
                        node,
                    });
                }
            }
            (Section::Nodes, Some(node)) if cols.len() == 4 => {
                let distances = cols[3].split(',').filter_map(|d| d.parse().ok()).collect();
                if let (Ok(memsize_mib), Ok(memfree_mib)) = (cols[1].parse(), cols[2].parse()) {
                    r.nodes.push(NodeRow {
                        node,
                        memsize_mib,
                        memfree_mib,
                        distances,
                    });
                }
            }
            _ => {
                if !line.starts_with(' ') && !line.is_empty() {
                    section = Section::None;
                }
            }
        }
    }
    r
}

/// `node N total T free F` or `node N zone Z order O blocks B pages P`.
fn parse_probe_line(rest: &str, r: &mut MachineReport) {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let value = |key: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == key)?;
        words.get(i + 1)?.parse().ok()
    };
    let Some(node) = value("node") else { return };
    if let (Some(total_pages), Some(free_pages)) = (value("total"), value("free")) {
        r.probe_nodes.push(ProbeNode {
            node: node as u32,
            total_pages,
            free_pages,
        });
    } else if let (Some(zone), Some(order), Some(blocks), Some(pages)) = (
        value("zone"),
        value("order"),
        value("blocks"),
        value("pages"),
    ) {
        r.probe.push(ProbeRow {
            node: node as u32,
            zone: zone as u32,
            order: order as u32,
            blocks,
            pages,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xl_info_and_probe() {
        let out = "numavisor: warning: no SRAT: one node\n\
nr_cpus                : 2\n\
nr_nodes               : 2\n\
cpu_topology           :\n\
cpu:    core    socket     node\n\
  0:       0        0        0\n\
  1:       1        0        1\n\
numa_info              :\n\
node:    memsize    memfree    distances\n\
   0:       511        490      10,20\n\
   1:       512        512      20,10\n\
heap probe: node 0 total 130000 free 125000\n\
heap probe: node 0 zone 17 order 3 blocks 2 pages 16\n\
numavisor: done\n";
        let r = parse_report(out);
        assert_eq!(r.nr_cpus, Some(2));
        assert_eq!(r.nr_nodes, Some(2));
        assert_eq!(
            r.cpus[1],
            CpuRow {
                cpu: 1,
                core: 1,
                socket: 0,
                node: 1
            }
        );
        assert_eq!(r.nodes[0].distances, vec![10, 20]);
        assert_eq!(r.nodes[1].memfree_mib, 512);
        assert_eq!(
            r.probe_nodes,
            vec![ProbeNode {
                node: 0,
                total_pages: 130000,
                free_pages: 125000
            }]
        );
        assert_eq!(
            r.probe[0],
            ProbeRow {
                node: 0,
                zone: 17,
                order: 3,
                blocks: 2,
                pages: 16
            }
        );
        assert_eq!(r.warnings, vec!["no SRAT: one node".to_string()]);
    }
}

/// How the hypervisor reported the end of one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainReport {
    /// `shutdown, status N (...)`.
    Shutdown { status: u64 },
    /// `killed: reason; guest rip R[, guest-physical address G]`.
    Killed {
        reason: String,
        rip: u64,
        gpa: Option<u64>,
    },
    /// `refused: reason`.
    Refused { reason: String },
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// The end of domain `id`, from its `numavisor: domain N ...` line.
pub fn domain_report(console: &str, id: u32) -> Option<DomainReport> {
    for line in console.lines() {
        let Some(rest) = line.strip_prefix(&format!("numavisor: domain {id}")) else {
            continue;
        };
        // Domain 1 is not domain 10.
        if !rest.starts_with([':', ' ']) {
            continue;
        }
        if let Some(reason) = rest.strip_prefix(": refused: ") {
            return Some(DomainReport::Refused {
                reason: reason.to_string(),
            });
        }
        if let Some((_, tail)) = rest.split_once("): shutdown, status ") {
            let status = tail.split_whitespace().next()?.parse().ok()?;
            return Some(DomainReport::Shutdown { status });
        }
        if let Some((_, tail)) = rest.split_once("): killed: ") {
            let (reason, place) = tail.split_once("; guest rip ")?;
            let rip = hex(place.split([',', ' ']).next()?)?;
            let gpa = place
                .split_once("guest-physical address ")
                .and_then(|(_, g)| hex(g.split(' ').next()?));
            return Some(DomainReport::Killed {
                reason: reason.to_string(),
                rip,
                gpa,
            });
        }
    }
    None
}

/// The console lines of domain `id`, without the `(dN) ` prefix.
pub fn domain_lines(console: &str, id: u32) -> Vec<String> {
    let prefix = format!("(d{id}) ");
    console
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

/// Domain `id` shut down with status 0 after a complete, passing KTAP run,
/// and its teardown gave every page back.
pub fn assert_domain_passed(run: &RunResult, id: u32) -> ktap::Ktap {
    assert_eq!(
        domain_report(&run.console, id),
        Some(DomainReport::Shutdown { status: 0 }),
        "domain {id}; {}",
        context(run)
    );
    let k = ktap::parse(&domain_lines(&run.console, id));
    if let Err(e) = k.verdict() {
        panic!("domain {id} KTAP: {e}; {}", context(run));
    }
    let teardown = format!("numavisor: domain {id}: teardown:");
    let line = run
        .console
        .lines()
        .find(|l| l.starts_with(&teardown))
        .unwrap_or("");
    assert!(
        line.contains("none left owned"),
        "domain {id} teardown; {}",
        context(run)
    );
    k
}

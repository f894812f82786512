//! What the hypervisor prints about the machine and its domains, in the
//! formats of Xen's own tools, so that scripts and people who know Xen read
//! it unchanged. Everything here is plain data in, [`fmt::Display`] out; the
//! console prefixes nothing, so every line starts exactly as Xen's does.
//!
//! [`XlInfo`] is `xl info -n`:
//!
//! ```text
//! nr_cpus                : 6
//! nr_nodes               : 4
//! cores_per_socket       : 6
//! threads_per_core       : 1
//! total_memory           : 1535
//! free_memory            : 1490
//! cpu_topology           :
//! cpu:    core    socket     node
//!   0:       0        0        0
//! numa_info              :
//! node:    memsize    memfree    distances
//!    0:       511        490      10,20,30,40
//! ```
//!
//! Memory is in MiB, as `xl` prints it; `memsize` counts the RAM present on
//! the node (holes excluded), `memfree` what the heap holds free.
//!
//! [`XlList`] is `xl list` (`list_domains` in Xen's `tools/xl/xl_info.c`;
//! the header has xl's two tabs, `\t` below):
//!
//! ```text
//! Name                                        ID   Mem VCPUs\tState\tTime(s)
//! mirror                                       1   256     2     r-----       1.2
//! ```
//!
//! [`XlVcpuList`] is `xl vcpu-list` (`vcpulist`/`print_vcpuinfo` in
//! `tools/xl/xl_vcpu.c`) with hard affinity only, under `Affinity`, as the
//! issue asks (xl up to 4.4 printed the same columns under `CPU Affinity`;
//! later ones add ` / ` and the soft affinity). The row's CPU column sits one
//! to the left of its header, as in xl:
//!
//! ```text
//! Name                                ID  VCPU   CPU State   Time(s) Affinity
//! mirror                               1     0    2   r--       1.2  0-3,6
//! mirror                               1     1    -   --p       0.0  all
//! ```
//!
//! [`NumaMemory`] is the per-domain part of Xen's debug key `u` (`dump_numa`
//! in `xen/arch/x86/numa.c`, Xen 4.4 to 4.17), counts in pages:
//!
//! ```text
//! Memory location of each domain:
//! Domain 1 (total: 65536):
//!     Node 0: 65536
//!     Node 1: 0
//! ```
//!
//! Times are seconds rounded to the nearest tenth, a half-tenth up, in
//! integers. xl divides a C `float` and prints it with `%.1f`, so it can
//! differ within a few nanoseconds of a half-tenth (0.05 s goes up, 0.15 s
//! down) and, once the float has no tenths left (about a week of CPU time),
//! by its rounding noise; elsewhere the two agree to the character.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::mm::addr::PAGE_SHIFT;
use crate::numa::topology::Topology;
use crate::numa::{CpuId, NodeId};

/// The machine as `xl info -n` shows it.
pub struct XlInfo<'a> {
    pub topology: &'a Topology,
    /// Free pages per node, indexed by node id.
    pub free_pages: &'a [u64],
}

const MIB_SHIFT: u32 = 20;

impl XlInfo<'_> {
    fn free_bytes(&self, node: NodeId) -> u64 {
        self.free_pages.get(node.index()).copied().unwrap_or(0) << PAGE_SHIFT
    }

    /// (cores per socket, threads per core), as the busiest socket/core has them.
    fn shape(&self) -> (usize, usize) {
        let mut per_core: BTreeMap<(u32, u32), usize> = BTreeMap::new();
        let mut per_socket: BTreeMap<u32, alloc::collections::BTreeSet<u32>> = BTreeMap::new();
        for c in &self.topology.cpus {
            *per_core.entry((c.socket, c.core)).or_default() += 1;
            per_socket.entry(c.socket).or_default().insert(c.core);
        }
        let threads = per_core.values().copied().max().unwrap_or(1);
        let cores = per_socket.values().map(|s| s.len()).max().unwrap_or(1);
        (cores, threads)
    }
}

impl fmt::Display for XlInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.topology;
        let (cores, threads) = self.shape();
        let total: u64 = t.nodes.iter().map(|n| t.memory_bytes(n.id)).sum();
        let free: u64 = t.nodes.iter().map(|n| self.free_bytes(n.id)).sum();
        writeln!(f, "nr_cpus                : {}", t.cpus.len())?;
        writeln!(f, "nr_nodes               : {}", t.nodes.len())?;
        writeln!(f, "cores_per_socket       : {cores}")?;
        writeln!(f, "threads_per_core       : {threads}")?;
        writeln!(f, "total_memory           : {}", total >> MIB_SHIFT)?;
        writeln!(f, "free_memory            : {}", free >> MIB_SHIFT)?;
        writeln!(f, "cpu_topology           :")?;
        writeln!(f, "cpu:    core    socket     node")?;
        for c in &t.cpus {
            writeln!(
                f,
                "{:3}:    {:4}     {:4}     {:4}",
                c.id.0, c.core, c.socket, c.node.0
            )?;
        }
        writeln!(f, "numa_info              :")?;
        writeln!(f, "node:    memsize    memfree    distances")?;
        for n in &t.nodes {
            write!(
                f,
                "{:4}:    {:6}     {:6}      ",
                n.id.0,
                t.memory_bytes(n.id) >> MIB_SHIFT,
                self.free_bytes(n.id) >> MIB_SHIFT
            )?;
            for (i, m) in t.nodes.iter().enumerate() {
                if i > 0 {
                    write!(f, ",")?;
                }
                write!(f, "{}", t.distance(n.id, m.id))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Nanoseconds in a tenth of a second.
const NS_PER_TENTH: u64 = 100_000_000;

/// `ns` as seconds with one decimal (`%W.1f`), right-aligned in `width`.
fn write_seconds(f: &mut fmt::Formatter<'_>, ns: u64, width: usize) -> fmt::Result {
    let rem = ns % NS_PER_TENTH;
    // Divided first, so that no time is large enough to overflow.
    let tenths = ns / NS_PER_TENTH + u64::from(rem >= NS_PER_TENTH / 2);
    let (whole, frac) = (tenths / 10, tenths % 10);
    let len = decimal_digits(whole) + 2;
    write_spaces(f, width.saturating_sub(len))?;
    write!(f, "{whole}.{frac}")
}

fn decimal_digits(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

fn write_spaces(f: &mut fmt::Formatter<'_>, n: usize) -> fmt::Result {
    for _ in 0..n {
        f.write_str(" ")?;
    }
    Ok(())
}

/// `%-Ws`: `s` padded with spaces to `width` bytes (C counts bytes, not
/// characters), never cut.
fn write_left(f: &mut fmt::Formatter<'_>, s: &str, width: usize) -> fmt::Result {
    f.write_str(s)?;
    write_spaces(f, width.saturating_sub(s.len()))
}

/// Why a domain shut down, as libxl numbers it; `xl list` shows it as the
/// fifth state letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    Poweroff,
    Reboot,
    Suspend,
    Crash,
    Watchdog,
    SoftReset,
}

impl ShutdownReason {
    /// xl's letter for it (`shutdown_reason_letters = "-rscwS"`).
    pub const fn letter(self) -> char {
        match self {
            ShutdownReason::Poweroff => '-',
            ShutdownReason::Reboot => 'r',
            ShutdownReason::Suspend => 's',
            ShutdownReason::Crash => 'c',
            ShutdownReason::Watchdog => 'w',
            ShutdownReason::SoftReset => 'S',
        }
    }
}

/// A domain's state flags, shown by `xl list` as six letters `rbpscd`
/// (`-` for each one not set): running, blocked, paused, shut down, the
/// shutdown reason's letter, dying.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainState {
    /// A vCPU of it is running on a CPU now.
    pub running: bool,
    /// Every vCPU of it is blocked (waiting for an event).
    pub blocked: bool,
    pub paused: bool,
    /// Shut down (and why), not yet torn down.
    pub shutdown: Option<ShutdownReason>,
    /// Being torn down.
    pub dying: bool,
}

impl fmt::Display for DomainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |set: bool, c: char| if set { c } else { '-' };
        let reason = self.shutdown.map_or('-', ShutdownReason::letter);
        write!(
            f,
            "{}{}{}{}{}{}",
            flag(self.running, 'r'),
            flag(self.blocked, 'b'),
            flag(self.paused, 'p'),
            flag(self.shutdown.is_some(), 's'),
            reason,
            flag(self.dying, 'd'),
        )
    }
}

/// One domain, as `xl list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRow {
    pub name: String,
    pub id: u32,
    /// Memory it holds plus what it still has claimed, in MiB rounded down
    /// (xl's `(current_memkb + outstanding_memkb) / 1024`).
    pub mem_mib: u64,
    /// vCPUs online.
    pub vcpus: u32,
    pub state: DomainState,
    /// CPU time used by all its vCPUs.
    pub cpu_time_ns: u64,
}

/// `xl list`: a header and one row per domain, in the order given (xl lists
/// by domain id). numavisor has no dom0, so there is no `Domain-0` row.
pub struct XlList<'a>(pub &'a [DomainRow]);

impl fmt::Display for XlList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Name                                        ID   Mem VCPUs\tState\tTime(s)"
        )?;
        for d in self.0 {
            // "%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f"
            write_left(f, &d.name, 40)?;
            write!(
                f,
                " {:5} {:5} {:5}     {}  ",
                d.id, d.mem_mib, d.vcpus, d.state
            )?;
            write_seconds(f, d.cpu_time_ns, 8)?;
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A vCPU's state and the CPU it is on, as `xl vcpu-list` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Running on the CPU now: `r--`.
    Running(CpuId),
    /// Ready, waiting its turn on the CPU: `---`.
    Runnable(CpuId),
    /// Blocked (halted until an event), last on the CPU: `-b-`.
    Blocked(CpuId),
    /// Not (or no longer) up: CPU `-`, state `--p`.
    Offline,
}

impl VcpuState {
    /// The CPU it is on, waits for or last ran on; none when offline.
    pub const fn cpu(self) -> Option<CpuId> {
        match self {
            VcpuState::Running(c) | VcpuState::Runnable(c) | VcpuState::Blocked(c) => Some(c),
            VcpuState::Offline => None,
        }
    }
}

/// One vCPU, as `xl vcpu-list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuRow {
    pub domain: String,
    pub domid: u32,
    pub vcpu: u32,
    pub state: VcpuState,
    /// CPU time it used.
    pub time_ns: u64,
    /// Its hard affinity: the CPUs it may run on, in any order.
    pub affinity: Vec<CpuId>,
}

/// `xl vcpu-list`: a header and one row per vCPU, in the order given.
pub struct XlVcpuList<'a> {
    /// CPUs of the machine (xl's `max_cpu_id + 1`): an affinity holding
    /// all of them reads `all`.
    pub nr_cpus: usize,
    pub rows: &'a [VcpuRow],
}

impl fmt::Display for XlVcpuList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // "%-32s %5s %5s %5s %5s %9s %s\n", with "Affinity" last.
        writeln!(
            f,
            "Name                                ID  VCPU   CPU State   Time(s) Affinity"
        )?;
        for v in self.rows {
            // "%-32s %5u %5u": no space before the CPU column, as in xl.
            write_left(f, &v.domain, 32)?;
            write!(f, " {:5} {:5}", v.domid, v.vcpu)?;
            // "%5u %3c%c- " online, "%5c %3c%cp " with '-' offline.
            match v.state.cpu() {
                Some(cpu) => write!(f, "{:5}", cpu.0)?,
                None => write!(f, "{:>5}", '-')?,
            }
            let (running, blocked, offline) = match v.state {
                VcpuState::Running(_) => ('r', '-', '-'),
                VcpuState::Runnable(_) => ('-', '-', '-'),
                VcpuState::Blocked(_) => ('-', 'b', '-'),
                VcpuState::Offline => ('-', '-', 'p'),
            };
            write!(f, " {running:>3}{blocked}{offline} ")?;
            // "%9.1f  " and the hard affinity.
            write_seconds(f, v.time_ns, 9)?;
            let affinity = CpuList {
                cpus: &v.affinity,
                nr_cpus: self.nr_cpus,
            };
            writeln!(f, "  {affinity}")?;
        }
        Ok(())
    }
}

/// A set of CPUs as xl prints a CPU bitmap (`print_bitmap` in
/// `tools/xl/xl_utils.c`): `all` when it holds every one of the machine's
/// CPUs, `none` when empty, else ascending ranges such as `0-3,6`. CPUs at
/// or past `nr_cpus` are left out, as xl reads only that many bits.
pub struct CpuList<'a> {
    pub cpus: &'a [CpuId],
    pub nr_cpus: usize,
}

impl fmt::Display for CpuList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |i: usize| self.cpus.iter().any(|c| c.index() == i);
        let mut runs = 0usize;
        let mut i = 0;
        while i < self.nr_cpus {
            if !set(i) {
                i += 1;
                continue;
            }
            let first = i;
            while i < self.nr_cpus && set(i) {
                i += 1;
            }
            let last = i - 1;
            if first == 0 && i == self.nr_cpus {
                return f.write_str("all");
            }
            if runs > 0 {
                f.write_str(",")?;
            }
            write!(f, "{first}")?;
            if last > first {
                write!(f, "-{last}")?;
            }
            runs += 1;
        }
        if runs == 0 {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// Where one domain's memory is: pages it owns on each node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainPages {
    pub domid: u32,
    /// Pages owned, indexed by node id; nodes past the end own none.
    pub pages: Vec<u64>,
}

/// The per-domain memory part of Xen's debug key `u`: for every domain, in
/// the order given, its total pages (all of `pages`) and one line per node
/// of the machine, memoryless ones too.
pub struct NumaMemory<'a> {
    /// Nodes of the machine (ids are `0..nr_nodes`).
    pub nr_nodes: usize,
    pub domains: &'a [DomainPages],
}

impl fmt::Display for NumaMemory<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Memory location of each domain:")?;
        for d in self.domains {
            let total = d.pages.iter().fold(0u64, |t, &p| t.saturating_add(p));
            writeln!(f, "Domain {} (total: {}):", d.domid, total)?;
            for node in 0..self.nr_nodes {
                let pages = d.pages.get(node).copied().unwrap_or(0);
                writeln!(f, "    Node {node}: {pages}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;

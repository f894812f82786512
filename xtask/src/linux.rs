//! Linux as the oracle: `cargo xtask compare-linux` boots Debian's Linux
//! kernel and numavisor (the guest in the machine-mirroring domain) on the
//! same QEMU machine and compares, node by node, the zonelist fallback order
//! and, CPU by CPU, the node that local allocations land on.
//!
//! The kernel comes from Debian's `linux-image-amd64` (downloaded with
//! `apt-get download`, unpacked with `dpkg-deb`, cached under
//! `target/linux-cache/`). Its initramfs holds one static program,
//! `tests/src/bin/linux-probe.rs`, which reports each CPU's local node and
//! powers off.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::images::{self, Images};
use crate::qemu::{self, RunConfig};

/// What one kernel reported about the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NumaView {
    /// Node -> its fallback order, as "Fallback order for Node N: ..." says.
    pub fallback: BTreeMap<u32, Vec<u32>>,
    /// CPU -> node its local allocations land on.
    pub local_node: BTreeMap<u32, u32>,
}

/// Reads `Fallback order for Node N: a b c` lines (anywhere in a line, so
/// prefixes such as `(d1) ` and dmesg timestamps do not matter).
pub fn parse_fallback(console: &str, view: &mut NumaView) {
    for line in console.lines() {
        let Some((_, rest)) = line.split_once("Fallback order for Node ") else {
            continue;
        };
        let Some((node, order)) = rest.split_once(':') else {
            continue;
        };
        let Ok(node) = node.trim().parse() else {
            continue;
        };
        let order = order
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        view.fallback.insert(node, order);
    }
}

/// Linux: `linux-probe: cpu C: local allocation on node N`.
pub fn parse_linux(console: &str) -> NumaView {
    let mut v = NumaView::default();
    parse_fallback(console, &mut v);
    for line in console.lines() {
        let Some((_, rest)) = line.split_once("linux-probe: cpu ") else {
            continue;
        };
        let Some((cpu, rest)) = rest.split_once(": local allocation on node ") else {
            continue;
        };
        if let (Ok(c), Ok(n)) = (cpu.trim().parse(), rest.trim().parse()) {
            v.local_node.insert(c, n);
        }
    }
    v
}

/// numavisor's guest: `guest: cpu C: node N, local memory node M`.
pub fn parse_numavisor(console: &str) -> NumaView {
    let mut v = NumaView::default();
    let domain1: String = console
        .lines()
        .filter_map(|l| l.strip_prefix("(d1) "))
        .collect::<Vec<_>>()
        .join("\n");
    parse_fallback(&domain1, &mut v);
    for line in domain1.lines() {
        let Some(rest) = line.strip_prefix("guest: cpu ") else {
            continue;
        };
        let Some((cpu, rest)) = rest.split_once(": node ") else {
            continue;
        };
        let Some((_, mem)) = rest.split_once(", local memory node ") else {
            continue;
        };
        if let (Ok(c), Ok(m)) = (cpu.trim().parse(), mem.trim().parse()) {
            v.local_node.insert(c, m);
        }
    }
    v
}

/// A side-by-side table and whether both views agree (and are not empty).
pub fn compare(linux: &NumaView, ours: &NumaView) -> (String, bool) {
    let mut out = String::new();
    let mut same = !linux.fallback.is_empty() && !linux.local_node.is_empty();
    let _ = writeln!(out, "{:<24} {:<28} {:<28}", "", "Linux", "numavisor");
    let nodes: std::collections::BTreeSet<u32> = linux
        .fallback
        .keys()
        .chain(ours.fallback.keys())
        .copied()
        .collect();
    let show = |v: Option<&Vec<u32>>| match v {
        Some(o) => o.iter().map(u32::to_string).collect::<Vec<_>>().join(" "),
        None => "(missing)".to_string(),
    };
    for n in nodes {
        let (a, b) = (linux.fallback.get(&n), ours.fallback.get(&n));
        let ok = a == b;
        same &= ok;
        let _ = writeln!(
            out,
            "{:<24} {:<28} {:<28}{}",
            format!("fallback node {n}"),
            show(a),
            show(b),
            if ok { "" } else { "  <-- differs" }
        );
    }
    let cpus: std::collections::BTreeSet<u32> = linux
        .local_node
        .keys()
        .chain(ours.local_node.keys())
        .copied()
        .collect();
    for c in cpus {
        let (a, b) = (linux.local_node.get(&c), ours.local_node.get(&c));
        let ok = a == b;
        same &= ok;
        let fmt = |v: Option<&u32>| v.map_or("(missing)".to_string(), |n| format!("node {n}"));
        let _ = writeln!(
            out,
            "{:<24} {:<28} {:<28}{}",
            format!("cpu {c} local allocation"),
            fmt(a),
            fmt(b),
            if ok { "" } else { "  <-- differs" }
        );
    }
    (out, same)
}

fn cache_dir() -> PathBuf {
    images::workspace_root().join("target").join("linux-cache")
}

fn run_ok(what: &str, cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what}: failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Debian's current amd64 kernel image, downloaded and unpacked once.
pub fn debian_kernel() -> Result<PathBuf, String> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let depends = |dir: &Path| {
        run_ok(
            "apt-cache depends linux-image-amd64",
            Command::new("apt-cache")
                .args(["depends", "linux-image-amd64"])
                .current_dir(dir),
        )
    };
    let deps = match depends(&dir) {
        Ok(d) if d.contains("Depends: linux-image-") => d,
        _ => {
            // A fresh machine may have no package lists yet.
            let _ = run_ok("apt-get update", Command::new("apt-get").arg("update"));
            depends(&dir)?
        }
    };
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .ok_or("apt-cache names no kernel package for linux-image-amd64")?
        .trim()
        .to_string();
    let unpacked = dir.join(&package);
    let find_vmlinuz = |root: &Path| -> Option<PathBuf> {
        std::fs::read_dir(root.join("boot"))
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
    };
    if let Some(k) = find_vmlinuz(&unpacked) {
        return Ok(k);
    }
    eprintln!("xtask: downloading Debian's {package}");
    run_ok(
        "apt-get download",
        Command::new("apt-get")
            .args(["download", &package])
            .current_dir(&dir),
    )?;
    let deb = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "deb")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&package))
        })
        .ok_or_else(|| {
            format!(
                "apt-get download left no {package} .deb in {}",
                dir.display()
            )
        })?;
    run_ok(
        "dpkg-deb -x",
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
    )?;
    let _ = std::fs::remove_file(&deb);
    find_vmlinuz(&unpacked).ok_or_else(|| format!("{package} holds no /boot/vmlinuz-*"))
}

/// Builds linux-probe as a static Linux executable.
fn build_probe() -> Result<PathBuf, String> {
    let root = images::workspace_root();
    let target_dir = root.join("target").join("linux-probe");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--package",
            "tests",
            "--bin",
            "linux-probe",
        ])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .arg("--target-dir")
        .arg(&target_dir)
        .args([
            "--config",
            "target.x86_64-unknown-linux-gnu.rustflags=[\"-C\",\"target-feature=+crt-static\"]",
        ])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building linux-probe failed ({status})"));
    }
    Ok(target_dir
        .join("x86_64-unknown-linux-gnu")
        .join("release")
        .join("linux-probe"))
}

/// Appends one "newc" cpio entry.
fn cpio_entry(out: &mut Vec<u8>, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let header = format!(
        "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        out.len() as u32 + 1, // inode: anything unique
        mode,
        0,
        0,
        1,
        0,
        data.len(),
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() + 1,
        0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// An initramfs with /dev/console (so that /init has a console) and /init.
pub fn initramfs(probe: &Path) -> Result<PathBuf, String> {
    let init = std::fs::read(probe).map_err(|e| format!("{}: {e}", probe.display()))?;
    let mut cpio = Vec::new();
    cpio_entry(&mut cpio, "dev", 0o040755, (0, 0), &[]);
    cpio_entry(&mut cpio, "dev/console", 0o020600, (5, 1), &[]);
    cpio_entry(&mut cpio, "init", 0o100755, (0, 0), &init);
    cpio_entry(&mut cpio, "TRAILER!!!", 0, (0, 0), &[]);
    let path = cache_dir().join("probe.cpio");
    std::fs::create_dir_all(cache_dir()).map_err(|e| e.to_string())?;
    std::fs::write(&path, cpio).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Everything needed to compare on many machines, prepared once.
pub struct Oracle {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub images: Images,
}

impl Oracle {
    pub fn prepare(images: Images) -> Result<Oracle, String> {
        let qemu = qemu::ensure_qemu()?;
        let kernel = debian_kernel()?;
        let initramfs = initramfs(&build_probe()?)?;
        Ok(Oracle {
            qemu,
            kernel,
            initramfs,
            images,
        })
    }

    /// Boots both on the machine `machine_args` describes (numavisor with
    /// `hv_cmdline`), returns the table and whether they agree.
    pub fn compare(
        &self,
        machine_args: &[String],
        hv_cmdline: &str,
        echo: bool,
    ) -> Result<(String, bool), String> {
        let linux = RunConfig {
            kernel: self.kernel.clone(),
            modules: vec![self.initramfs.display().to_string()],
            cmdline: "console=ttyS0 panic=-1 loglevel=7".into(),
            machine_args: machine_args.to_vec(),
            timeout: Duration::from_secs(300),
            gdb: false,
            echo: false,
        };
        let l = qemu::run(&self.qemu, &linux)?;
        if !l.console.contains("linux-probe: done") {
            return Err(format!(
                "Linux did not finish its probe ({})\n{}",
                l.outcome.describe(),
                l.console
            ));
        }
        let ours = RunConfig {
            kernel: self.images.hypervisor.clone(),
            modules: vec![self.images.guest.display().to_string()],
            cmdline: hv_cmdline.to_string(),
            machine_args: machine_args.to_vec(),
            timeout: crate::DEFAULT_TIMEOUT,
            gdb: false,
            echo,
        };
        let n = qemu::run(&self.qemu, &ours)?;
        let (table, same) = compare(&parse_linux(&l.console), &parse_numavisor(&n.console));
        if !n.outcome.success() {
            return Ok((
                format!("{table}numavisor: {}\n", n.outcome.describe()),
                false,
            ));
        }
        Ok((table, same))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_outputs_and_compares() {
        let linux = "[    0.105464] Fallback order for Node 0: 0 1 3 \n[    0.1] Fallback order for Node 2: 2 3 1 0 \nlinux-probe: cpu 0: local allocation on node 0\nlinux-probe: cpu 4: local allocation on node 3\n";
        let ours = "(d1) Fallback order for Node 0: 0 1 3 \n(d1) Fallback order for Node 2: 2 3 1 0 \n(d1) guest: cpu 0: node 0, local memory node 0\n(d1) guest: cpu 4: node 2, local memory node 3\n(d2) Fallback order for Node 0: 9\n";
        let (l, o) = (parse_linux(linux), parse_numavisor(ours));
        assert_eq!(l.fallback[&2], vec![2, 3, 1, 0]);
        assert_eq!(o.local_node[&4], 3);
        let (table, same) = compare(&l, &o);
        assert!(same, "{table}");
        let mut bad = o.clone();
        bad.fallback.insert(2, vec![2, 1, 3, 0]);
        let (table, same) = compare(&l, &bad);
        assert!(!same && table.contains("differs"), "{table}");
        assert!(
            !compare(&NumaView::default(), &NumaView::default()).1,
            "empty views never agree"
        );
    }

    #[test]
    fn cpio_entries_are_aligned() {
        let mut c = Vec::new();
        cpio_entry(&mut c, "init", 0o100755, (0, 0), b"abc");
        assert_eq!(c.len() % 4, 0);
        assert!(c.starts_with(b"070701"));
    }
}

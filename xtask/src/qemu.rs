//! Finding (or installing) QEMU and running the hypervisor in it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use pv_abi::exit::ExitCode;

/// QEMU's system emulator for x86_64.
pub const QEMU: &str = "qemu-system-x86_64";
/// Debian package that provides it.
pub const QEMU_PACKAGE: &str = "qemu-system-x86";
/// A CPU model with AMD SVM and nested paging, emulated by TCG.
pub const CPU_MODEL: &str = "qemu64,+svm,+npt";

/// Returns the path of `qemu-system-x86_64`, installing Debian's package
/// when it is missing and we are root; otherwise explains what to run.
pub fn ensure_qemu() -> Result<PathBuf, String> {
    if let Some(p) = find_in_path(QEMU) {
        return Ok(p);
    }
    if !is_root() {
        return Err(format!(
            "{QEMU} is not installed. Install it with:\n    sudo apt-get install -y {QEMU_PACKAGE}"
        ));
    }
    eprintln!("xtask: {QEMU} not found; installing Debian's {QEMU_PACKAGE}");
    let update = Command::new("apt-get").arg("update").status();
    if !matches!(update, Ok(s) if s.success()) {
        eprintln!("xtask: apt-get update failed; trying the install anyway");
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", QEMU_PACKAGE])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !status.success() {
        return Err(format!("apt-get install {QEMU_PACKAGE} failed ({status})"));
    }
    find_in_path(QEMU)
        .ok_or_else(|| format!("{QEMU} still missing after installing {QEMU_PACKAGE}"))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Everything needed to start one QEMU run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub kernel: PathBuf,
    /// Multiboot modules (`-initrd "a args,b"`), each a path with optional arguments.
    pub modules: Vec<String>,
    pub cmdline: String,
    /// Arguments that describe the machine (`-m`, `-smp`, `-numa`, `-device`, ...).
    pub machine_args: Vec<String>,
    pub timeout: Duration,
    /// Wait for a debugger on TCP port 1234 before the first instruction.
    pub gdb: bool,
    /// Copy the console to our stdout while it runs.
    pub echo: bool,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The hypervisor wrote an exit code to `isa-debug-exit`.
    Exited(ExitCode),
    /// QEMU exited with a status no exit code maps to (a reset with
    /// `-no-reboot`, a QEMU error, a signal).
    Qemu(Option<i32>),
    /// Killed after the time-out.
    TimedOut(Duration),
}

impl Outcome {
    pub fn success(&self) -> bool {
        *self == Outcome::Exited(ExitCode::Success)
    }

    /// The exit status `cargo xtask run` returns for this outcome.
    pub fn process_status(&self) -> i32 {
        match self {
            Outcome::Exited(ExitCode::Success) => 0,
            Outcome::Exited(code) => *code as i32,
            Outcome::Qemu(_) => 1,
            Outcome::TimedOut(_) => 124,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Outcome::Exited(code) => format!(
                "hypervisor exit code {:#x}: {}",
                *code as u32,
                code.describe()
            ),
            Outcome::Qemu(Some(0)) => {
                "QEMU exited without an exit code from the hypervisor (a reset: triple fault?)"
                    .to_string()
            }
            Outcome::Qemu(Some(s)) => format!("QEMU exited with status {s} (QEMU error?)"),
            Outcome::Qemu(None) => "QEMU was killed by a signal".to_string(),
            Outcome::TimedOut(t) => format!("QEMU killed after the {} s time-out", t.as_secs()),
        }
    }
}

/// The result of a run: how it ended and everything the console printed.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub outcome: Outcome,
    pub console: String,
}

/// The full QEMU command line for a run.
pub fn command_line(qemu: &Path, cfg: &RunConfig) -> Command {
    let mut cmd = Command::new(qemu);
    let user_sets_machine = cfg
        .machine_args
        .iter()
        .any(|a| a == "-machine" || a == "-M");
    let user_sets_cpu = cfg.machine_args.iter().any(|a| a == "-cpu");
    if !user_sets_machine {
        cmd.args(["-machine", "q35"]);
    }
    if !user_sets_cpu {
        cmd.args(["-cpu", CPU_MODEL]);
    }
    cmd.args([
        "-accel", "tcg", "-display", "none", "-vga", "none", "-monitor", "none",
    ]);
    cmd.args(["-serial", "stdio", "-no-reboot"]);
    cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    cmd.arg("-kernel").arg(&cfg.kernel);
    if !cfg.cmdline.is_empty() {
        cmd.args(["-append", &cfg.cmdline]);
    }
    if !cfg.modules.is_empty() {
        cmd.args(["-initrd", &cfg.modules.join(",")]);
    }
    if cfg.gdb {
        cmd.args(["-s", "-S"]);
    }
    cmd.args(&cfg.machine_args);
    cmd
}

/// Boots QEMU, streams and captures the console, and enforces the time-out.
pub fn run(qemu: &Path, cfg: &RunConfig) -> Result<RunResult, String> {
    let mut cmd = command_line(qemu, cfg);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    if cfg.gdb {
        eprintln!(
            "xtask: QEMU waits for a debugger: gdb -ex 'target remote :1234' {}",
            cfg.kernel.display()
        );
    }

    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let echo = cfg.echo;
    let reader = thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).replace('\r', "");
                    if echo {
                        print!("{line}");
                        let _ = std::io::stdout().flush();
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
        if !cfg.gdb && start.elapsed() > cfg.timeout {
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    let qemu_errors = err_reader.join().unwrap_or_default();
    let mut console: String = rx.try_iter().collect();
    if !qemu_errors.trim().is_empty() {
        if cfg.echo {
            eprint!("{qemu_errors}");
        }
        console.push_str("\n[qemu stderr]\n");
        console.push_str(&qemu_errors);
    }
    let outcome = if timed_out {
        Outcome::TimedOut(cfg.timeout)
    } else {
        let code = status.and_then(|s| s.code());
        match code.and_then(ExitCode::from_qemu_status) {
            Some(c) => Outcome::Exited(c),
            None => Outcome::Qemu(code),
        }
    };
    Ok(RunResult { outcome, console })
}

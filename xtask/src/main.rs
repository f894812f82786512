//! `cargo xtask`: build, run and test numavisor.

use std::process::{Command, ExitCode};
use std::time::Duration;

use xtask::images::{self, TARGET};
use xtask::machine::{self, MachineSpec};
use xtask::qemu::{self, RunConfig};

fn usage() -> String {
    let mut s = String::from(
        "cargo xtask <command> [options]

Commands:
  build                 build the bare-metal images
  run [options] [-- QEMU ARGS...]
                        boot the hypervisor in QEMU and stream its console;
                        exits 0 when everything passed
  test                  format check, clippy, host tests of every crate and
                        the QEMU integration tests (the CI entry point)
  help                  this text

Options of `run`:
  --topology NAME       boot a preset machine (default: `default`)
  --append \"OPTIONS\"    extra hypervisor command-line options
  --domain FILE         run the domain FILE describes (xl.cfg style, see
                        domains/); repeat for several domains in a row.
                        Without it one domain mirrors the machine
  --guest-cmdline \"..\"  command line of the mirror domain's guest
  --no-guest            boot the hypervisor alone (no guest module)
  --timeout SECS        kill QEMU after SECS seconds (default 120)
  --gdb                 wait for a debugger on :1234 (no time-out)
  -- QEMU ARGS...       describe the machine with QEMU's own arguments
                        instead of a preset (-m, -smp, -object, -numa, -device ...)

Presets:
",
    );
    for p in machine::presets() {
        s.push_str(&format!("  {:<12} {}\n", p.name, p.summary));
    }
    s.push_str(
        "
Exit status of `run`: 0 success; the hypervisor's exit code otherwise
(0x11 a check failed, 0x12 panic, 0x13 unusable boot, 0x14 CPU exception);
1 if QEMU ended without a code; 124 after the time-out.
",
    );
    s
}

struct RunArgs {
    machine: Option<MachineSpec>,
    domains: Vec<String>,
    guest: bool,
    guest_cmdline: String,
    qemu_args: Vec<String>,
    append: String,
    timeout: Duration,
    gdb: bool,
}

fn parse_run(args: &[String]) -> Result<RunArgs, String> {
    let mut out = RunArgs {
        machine: None,
        domains: Vec::new(),
        guest: true,
        guest_cmdline: String::new(),
        qemu_args: Vec::new(),
        append: String::new(),
        timeout: xtask::DEFAULT_TIMEOUT,
        gdb: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--topology" | "-t" => {
                let name = it.next().ok_or("--topology needs a name")?;
                out.machine =
                    Some(machine::preset(name).ok_or_else(|| {
                        format!("no preset named '{name}' (see `cargo xtask help`)")
                    })?);
            }
            "--append" => out.append = it.next().ok_or("--append needs a value")?.clone(),
            "--timeout" => {
                let v = it.next().ok_or("--timeout needs seconds")?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("--timeout: '{v}' is not a number of seconds"))?;
                out.timeout = Duration::from_secs(secs);
            }
            "--gdb" => out.gdb = true,
            "--domain" => {
                let f = it.next().ok_or("--domain needs a file")?;
                if !std::path::Path::new(f).is_file() {
                    return Err(format!("--domain: no file '{f}'"));
                }
                out.domains.push(f.clone());
            }
            "--no-guest" => out.guest = false,
            "--guest-cmdline" => {
                out.guest_cmdline = it.next().ok_or("--guest-cmdline needs a value")?.clone()
            }
            "--" => out.qemu_args = it.by_ref().cloned().collect(),
            other => return Err(format!("unknown option '{other}' (see `cargo xtask help`)")),
        }
    }
    if out.machine.is_some() && !out.qemu_args.is_empty() {
        return Err("give either --topology or QEMU arguments after --, not both".into());
    }
    Ok(out)
}

fn cmd_run(args: &[String]) -> Result<i32, String> {
    let run = parse_run(args)?;
    let qemu = qemu::ensure_qemu()?;
    let images = images::build(None)?;
    let (machine_args, mut cmdline) = if run.qemu_args.is_empty() {
        let spec = run.machine.unwrap_or_else(default_machine);
        eprintln!("xtask: machine '{}': {}", spec.name, spec.summary);
        (spec.qemu_args(), spec.cmdline.to_string())
    } else {
        eprintln!("xtask: machine from the QEMU arguments given after --");
        (run.qemu_args, String::new())
    };
    if !run.append.is_empty() {
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(&run.append);
    }
    let mut modules = Vec::new();
    if run.guest {
        modules.push(
            format!("{} {}", images.guest.display(), run.guest_cmdline)
                .trim_end()
                .to_string(),
        );
        modules.extend(run.domains.iter().cloned());
    }
    let cfg = RunConfig {
        kernel: images.hypervisor,
        modules,
        cmdline,
        machine_args,
        timeout: run.timeout,
        gdb: run.gdb,
        echo: true,
    };
    let result = qemu::run(&qemu, &cfg)?;
    eprintln!("xtask: {}", result.outcome.describe());
    Ok(result.outcome.process_status())
}

fn default_machine() -> MachineSpec {
    machine::presets().remove(0)
}

/// Runs a command in the workspace, failing with its description.
fn step(what: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: {what}");
    let status = cmd
        .current_dir(images::workspace_root())
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: failed ({status})"))
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn cmd_test() -> Result<i32, String> {
    images::ensure_target()?;
    let qemu = qemu::ensure_qemu()?;
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    step(
        "clippy (host)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "clippy (bare metal)",
        cargo().args([
            "clippy",
            "--package",
            "hypervisor",
            "--package",
            "guest-os",
            "--target",
            TARGET,
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    let images = images::build(None)?;
    step(
        "host tests and QEMU integration tests",
        cargo()
            .args(["test", "--workspace"])
            .env("NUMAVISOR_HYPERVISOR", &images.hypervisor)
            .env("NUMAVISOR_GUEST", &images.guest)
            .env("NUMAVISOR_QEMU", &qemu),
    )?;
    eprintln!("xtask: all tests passed");
    Ok(0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => images::build(None).map(|i| {
            println!("{}", i.hypervisor.display());
            0
        }),
        Some("run") => cmd_run(&args[1..]),
        Some("test") => cmd_test(),
        Some("help" | "--help" | "-h") | None => {
            print!("{}", usage());
            Ok(0)
        }
        Some(other) => Err(format!("unknown command '{other}'\n\n{}", usage())),
    };
    match result {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(1)),
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::from(2)
        }
    }
}

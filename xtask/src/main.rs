//! `cargo xtask`: build, run and test numavisor.

use std::process::{Command, ExitCode};
use std::time::Duration;

use xtask::abi;
use xtask::images::{self, TARGET};
use xtask::machine::{self, MachineSpec};
use xtask::qemu::{self, RunConfig};

fn usage() -> String {
    let mut s = String::from(
        "cargo xtask <command> [options]

Commands:
  build [--abi NAME]    build the bare-metal images (of ABI build NAME, into
                        its own target directory; see below)
  run [options] [-- QEMU ARGS...]
                        boot the hypervisor in QEMU and stream its console;
                        exits 0 when everything passed
  test                  format check, clippy, host tests of every crate,
                        abi-check, and the QEMU integration tests including
                        the ABI compatibility matrix (the CI entry point)
  abi-check             compare the pv-abi types against every released ABI
                        version recorded in pv-abi/abi/ and print each
                        difference, compatible or breaking; fails on a
                        breaking change to a released version
  abi-record [--print]  record the current ABI version's description as
                        pv-abi/abi/vMAJOR.MINOR.abi (a release); --print
                        writes it to stdout instead
  compare-linux [--topology NAME | -- QEMU ARGS...]
                        boot Debian's Linux kernel and numavisor on the same
                        machine and print side by side each node's zonelist
                        fallback order and each CPU's local allocation node;
                        fails on any difference (default: every preset that
                        the test suite compares)
  bench                 host benchmarks, each beside a reference measured in
                        the same run (figures, not assertions)
  help                  this text

Options of `run`:
  --topology NAME       boot a preset machine (default: `default`)
  --append \"OPTIONS\"    extra hypervisor command-line options
  --domain FILE         run the domain FILE describes (xl.cfg style, see
                        domains/); repeat for several domains, which run
                        at the same time. Without it, the domain that
                        mirrors the machine and an automatically placed
                        one (domains/auto.cfg) run side by side
  --guest-cmdline \"..\"  command line of the mirror domain's guest (default:
                        the preset's, if it has one)
  --no-guest            boot the hypervisor alone (no guest module)
  --abi NAME            boot a hypervisor and a guest built for ABI build NAME
  --hypervisor-abi NAME, --guest-abi NAME
                        the same for one kernel (pair any two builds)
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
    s.push_str("\nABI builds (pv-abi's versioning, README \"ABI versions\"):\n");
    for b in images::ABI_BUILDS {
        let dir = b
            .dir
            .map_or("target/".to_string(), |d| format!("target/{d}/"));
        s.push_str(&format!("  {:<12} {}, in {dir}\n", b.name, b.summary));
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
    hypervisor_abi: images::AbiBuild,
    guest_abi: images::AbiBuild,
}

fn abi_arg(value: Option<&String>, option: &str) -> Result<images::AbiBuild, String> {
    let name = value.ok_or_else(|| format!("{option} needs an ABI build name"))?;
    images::abi_build(name).ok_or_else(|| {
        let names: Vec<&str> = images::ABI_BUILDS.iter().map(|b| b.name).collect();
        format!(
            "{option}: no ABI build named '{name}' (known: {})",
            names.join(", ")
        )
    })
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
        hypervisor_abi: images::ABI_BUILDS[0],
        guest_abi: images::ABI_BUILDS[0],
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
            "--abi" => {
                let b = abi_arg(it.next(), "--abi")?;
                out.hypervisor_abi = b;
                out.guest_abi = b;
            }
            "--hypervisor-abi" => out.hypervisor_abi = abi_arg(it.next(), "--hypervisor-abi")?,
            "--guest-abi" => out.guest_abi = abi_arg(it.next(), "--guest-abi")?,
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
    let hypervisor_images = run.hypervisor_abi.build()?;
    let guest_images = if run.guest_abi == run.hypervisor_abi {
        hypervisor_images.clone()
    } else {
        run.guest_abi.build()?
    };
    if run.hypervisor_abi.name != "current" || run.guest_abi.name != "current" {
        eprintln!(
            "xtask: ABI builds: hypervisor '{}', guest '{}'",
            run.hypervisor_abi.name, run.guest_abi.name
        );
    }
    let mut guest_cmdline = run.guest_cmdline.clone();
    let (machine_args, mut cmdline) = if run.qemu_args.is_empty() {
        let spec = run.machine.unwrap_or_else(default_machine);
        eprintln!("xtask: machine '{}': {}", spec.name, spec.summary);
        if guest_cmdline.is_empty() {
            guest_cmdline = spec.guest_cmdline.to_string();
        }
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
    let mut domains = run.domains.clone();
    if run.guest && domains.is_empty() {
        let root = images::workspace_root();
        domains.extend(
            xtask::DEFAULT_RUN_DOMAINS
                .iter()
                .map(|d| root.join(d).display().to_string()),
        );
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(xtask::DEFAULT_RUN_CMDLINE);
    }
    if run.guest {
        modules.push(
            format!("{} {}", guest_images.guest.display(), guest_cmdline)
                .trim_end()
                .to_string(),
        );
        modules.extend(domains);
    }
    let cfg = RunConfig {
        kernel: hypervisor_images.hypervisor,
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
    // The kernels built for ABI 1.0, 1.1 and 1.2 compile (and pass clippy) too.
    for (version, feature) in [("1.0", "abi-1-0"), ("1.1", "abi-1-1"), ("1.2", "abi-1-2")] {
        let old_abi: Vec<String> = ["pv-abi", "hypervisor", "guest-os"]
            .iter()
            .map(|p| format!("{p}/{feature}"))
            .collect();
        step(
            &format!("clippy (host, ABI {version} builds)"),
            cargo()
                .args(["clippy", "--package", "pv-abi", "--package", "hypervisor"])
                .args(["--package", "guest-os", "--all-targets", "--features"])
                .arg(old_abi.join(","))
                .args(["--", "-D", "warnings"]),
        )?;
    }
    eprintln!("xtask: abi-check");
    cmd_abi_check()?;
    let images = images::build(None)?;
    let mut tests = cargo();
    tests
        .args(["test", "--workspace"])
        .env("NUMAVISOR_HYPERVISOR", &images.hypervisor)
        .env("NUMAVISOR_GUEST", &images.guest)
        .env("NUMAVISOR_QEMU", &qemu);
    // The ABI matrix's other builds, each in its own target directory.
    for b in images::ABI_BUILDS.iter().filter(|b| b.feature.is_some()) {
        eprintln!("xtask: building the kernels of ABI build '{}'", b.name);
        let i = b.build()?;
        tests
            .env(b.env_var("HYPERVISOR"), &i.hypervisor)
            .env(b.env_var("GUEST"), &i.guest);
    }
    step(
        "host tests and QEMU integration tests (with the ABI matrix)",
        &mut tests,
    )?;
    eprintln!("xtask: all tests passed");
    Ok(0)
}

fn cmd_build(args: &[String]) -> Result<i32, String> {
    let build = match args {
        [] => images::ABI_BUILDS[0],
        [o, _] if o == "--abi" => abi_arg(args.get(1), "--abi")?,
        _ => return Err("build takes no argument but --abi NAME".into()),
    };
    let i = build.build()?;
    println!("{}", i.hypervisor.display());
    println!("{}", i.guest.display());
    Ok(0)
}

fn cmd_abi_check() -> Result<i32, String> {
    let root = images::workspace_root();
    let recorded = abi::recorded(&root)?;
    let mut report = abi::check(&abi::current(), &recorded, &root);
    if recorded.is_empty() {
        report
            .failures
            .push("no released version is recorded: run `cargo xtask abi-record`".into());
    }
    abi::check_version_builds(&root, &recorded, &mut report);
    for l in &report.lines {
        println!("{l}");
    }
    if report.ok() {
        println!("abi-check: ok: no breaking change to a released version");
        Ok(0)
    } else {
        for f in &report.failures {
            println!("abi-check: FAILED: {f}");
        }
        Err("abi-check failed".into())
    }
}

fn cmd_abi_record(args: &[String]) -> Result<i32, String> {
    let text = abi::current_text();
    match args {
        [] => {}
        [p] if p == "--print" => {
            print!("{text}");
            return Ok(0);
        }
        _ => return Err("abi-record takes no argument but --print".into()),
    }
    let root = images::workspace_root();
    let current = abi::current();
    let recorded = abi::recorded(&root)?;
    let others: Vec<abi::Recorded> = recorded
        .iter()
        .filter(|r| r.description.version != current.version)
        .cloned()
        .collect();
    let report = abi::check(&current, &others, &root);
    if !report.ok() {
        for l in &report.lines {
            println!("{l}");
        }
        return Err(format!(
            "not recording ABI {}: {}",
            current.version,
            report.failures.join("; ")
        ));
    }
    let path = abi::recorded_file(&root, current.version);
    if let Some(same) = recorded
        .iter()
        .find(|r| r.description.version == current.version)
    {
        let diffs = abi::compare(&same.description, &current);
        if diffs.is_empty() {
            println!(
                "abi-record: ABI {} is already recorded in {}",
                current.version,
                path.display()
            );
            return Ok(0);
        }
        for d in &diffs {
            println!("  {d}");
        }
        return Err(format!(
            "ABI {} is already recorded in {} and the types differ from it: a released version never changes; bump ABI_MINOR (or ABI_MAJOR for a breaking change)",
            current.version,
            path.display()
        ));
    }
    std::fs::create_dir_all(abi::recorded_dir(&root))
        .map_err(|e| format!("cannot create {}: {e}", abi::recorded_dir(&root).display()))?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!(
        "abi-record: recorded ABI {} in {}",
        current.version,
        path.display()
    );
    Ok(0)
}

/// The machines `compare-linux` checks by default (the test suite's set).
const COMPARE_PRESETS: [&str; 4] = ["default", "memory-first", "ring8", "asymmetric"];

fn cmd_compare_linux(args: &[String]) -> Result<i32, String> {
    let mut machines: Vec<(String, Vec<String>, String)> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--topology" | "-t" => {
                let name = it.next().ok_or("--topology needs a name")?;
                let spec = machine::preset(name)
                    .ok_or_else(|| format!("no preset named '{name}' (see `cargo xtask help`)"))?;
                machines.push((
                    spec.name.to_string(),
                    spec.qemu_args(),
                    spec.cmdline.to_string(),
                ));
            }
            "--" => {
                machines.push((
                    "QEMU arguments".into(),
                    it.by_ref().cloned().collect(),
                    String::new(),
                ));
            }
            other => return Err(format!("unknown option '{other}' (see `cargo xtask help`)")),
        }
    }
    if machines.is_empty() {
        for name in COMPARE_PRESETS {
            let spec = machine::preset(name).ok_or_else(|| format!("no preset {name}"))?;
            machines.push((name.to_string(), spec.qemu_args(), spec.cmdline.to_string()));
        }
    }
    let oracle = xtask::linux::Oracle::prepare(images::build(None)?)?;
    let mut all_same = true;
    for (name, args, cmdline) in machines {
        let (table, same) = oracle.compare(&args, &cmdline, false)?;
        println!(
            "machine '{name}': {}",
            if same {
                "Linux and numavisor agree"
            } else {
                "DIFFERENT"
            }
        );
        print!("{table}");
        all_same &= same;
    }
    Ok(if all_same { 0 } else { 1 })
}

fn cmd_bench() -> Result<i32, String> {
    step(
        "host benchmarks (release build)",
        cargo().args(["run", "--release", "--quiet", "--package", "bench"]),
    )?;
    // The same allocator pair inside the guest, on the default machine, in
    // TSC cycles (QEMU TCG's virtual TSC: compare runs with each other, not
    // with the host's nanoseconds).
    let qemu = qemu::ensure_qemu()?;
    let images = images::build(None)?;
    let cfg = RunConfig {
        kernel: images.hypervisor,
        modules: vec![format!("{} bench ktest=boot", images.guest.display())],
        cmdline: String::new(),
        machine_args: default_machine().qemu_args(),
        timeout: xtask::DEFAULT_TIMEOUT,
        gdb: false,
        echo: false,
    };
    let result = qemu::run(&qemu, &cfg)?;
    match result
        .console
        .lines()
        .find_map(|l| l.split_once("guest: bench: ").map(|(_, r)| r.to_string()))
    {
        Some(line) => println!("{:<34} guest (QEMU TCG): {line}", "order-0 alloc+free pair"),
        None => {
            return Err(format!(
                "the guest printed no benchmark ({})",
                result.outcome.describe()
            ))
        }
    }
    Ok(0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => cmd_build(&args[1..]),
        Some("run") => cmd_run(&args[1..]),
        Some("test") => cmd_test(),
        Some("abi-check") => cmd_abi_check(),
        Some("abi-record") => cmd_abi_record(&args[1..]),
        Some("compare-linux") => cmd_compare_linux(&args[1..]),
        Some("bench") => cmd_bench(),
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

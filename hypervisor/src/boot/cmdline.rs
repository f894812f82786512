//! The hypervisor command line (`cargo xtask run --append "..."`).
//!
//! Options:
//! - `numa=off`: ignore the firmware's NUMA description; one node.
//! - `numa=fake=N`: split memory into N nodes as Linux's NUMA emulation does.
//! - `numa=on`: the default; use SRAT/SLIT.
//! - `abi-note=check|ignore`: whether a guest image whose ELF note declares
//!   another ABI major version is refused (`check`, the default) or run
//!   anyway (`ignore`, a test aid: the guest then refuses the hypervisor
//!   itself and shuts down with `ABI_MISMATCH`).
//! - `mirror-pci=00:04.0[,00:05.0...]`: PCI devices assigned to the mirror
//!   domain (the one run when no domain config is given), as a config's
//!   `pci = [ ... ]` assigns them to its domain (see `crate::pci`).
//! - `mirror=on|off`: whether the mirror domain (one vnode per machine
//!   node, every CPU) runs. By default it runs when no domain config is
//!   given; `mirror=on` runs it beside the configs' domains too, as domain 1.
//! - `smp=off`: start only the boot CPU, not the application processors;
//!   `smp=on` is the default.
//! - `crash=panic|fault|hang`: a test aid that proves the failure paths end
//!   the run as documented (a panic report, a CPU exception report, the
//!   host's time-out). Triggered once the machine has been printed.
//!
//! Unknown options are reported and ignored, as Xen and Linux do.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::pci::Bdf;

/// Parsed options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandLine {
    pub numa_off: bool,
    pub numa_fake: Option<u32>,
    pub crash: Option<Crash>,
    /// `abi-note=ignore`: run guest images whatever ABI major they declare.
    pub ignore_abi_note: bool,
    /// `mirror-pci=`: PCI devices for the mirror domain.
    pub mirror_pci: Vec<Bdf>,
    /// `smp=off`: do not start the application processors.
    pub smp_off: bool,
    /// `mirror=on|off`; `None`: only when no domain config is given.
    pub mirror: Option<bool>,
    /// Options that could not be used, each with the reason.
    pub warnings: Vec<String>,
}

/// A deliberate failure, for testing how failures end a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// `panic!` in the hypervisor.
    Panic,
    /// A page fault on an unmapped address.
    Fault,
    /// Spin forever; only the host's time-out ends the run.
    Hang,
}

/// Parses a command line; never fails, bad options become warnings.
pub fn parse(cmdline: &str) -> CommandLine {
    let mut out = CommandLine::default();
    for word in cmdline.split_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        match (key, value) {
            ("numa", Some("off")) => {
                out.numa_off = true;
                out.numa_fake = None;
            }
            ("numa", Some("on")) => out.numa_off = false,
            ("numa", Some(v)) if v.starts_with("fake=") => {
                let n = &v["fake=".len()..];
                match n.parse::<u32>() {
                    Ok(n) if n >= 1 => {
                        out.numa_fake = Some(n);
                        out.numa_off = false;
                    }
                    _ => out.warnings.push(format!(
                        "numa=fake={n}: expected a node count >= 1; ignored"
                    )),
                }
            }
            ("abi-note", Some("check")) => out.ignore_abi_note = false,
            ("abi-note", Some("ignore")) => out.ignore_abi_note = true,
            ("abi-note", v) => out.warnings.push(format!(
                "abi-note={}: expected check or ignore; ignored",
                v.unwrap_or("")
            )),
            ("mirror-pci", Some(list)) => {
                let parsed: Result<Vec<Bdf>, String> = list.split(',').map(Bdf::parse).collect();
                match parsed {
                    Ok(devs) => out.mirror_pci = devs,
                    Err(e) => out
                        .warnings
                        .push(format!("mirror-pci={list}: {e}; ignored")),
                }
            }
            ("mirror", Some("on")) => out.mirror = Some(true),
            ("mirror", Some("off")) => out.mirror = Some(false),
            ("mirror", v) => out.warnings.push(format!(
                "mirror={}: expected on or off; ignored",
                v.unwrap_or("")
            )),
            ("smp", Some("off")) => out.smp_off = true,
            ("smp", Some("on")) => out.smp_off = false,
            ("smp", v) => out.warnings.push(format!(
                "smp={}: expected on or off; ignored",
                v.unwrap_or("")
            )),
            ("crash", Some("panic")) => out.crash = Some(Crash::Panic),
            ("crash", Some("fault")) => out.crash = Some(Crash::Fault),
            ("crash", Some("hang")) => out.crash = Some(Crash::Hang),
            ("crash", v) => out.warnings.push(format!(
                "crash={}: expected panic, fault or hang; ignored",
                v.unwrap_or("")
            )),
            ("numa", v) => out.warnings.push(format!(
                "numa={}: expected off, on or fake=N; ignored",
                v.unwrap_or("")
            )),
            _ => out
                .warnings
                .push(format!("unknown option '{word}'; ignored")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_option() {
        assert_eq!(parse("").mirror, None);
        assert_eq!(parse("mirror=on").mirror, Some(true));
        assert_eq!(parse("mirror=on mirror=off").mirror, Some(false));
        let c = parse("mirror=yes mirror");
        assert_eq!(c.mirror, None);
        assert_eq!(c.warnings.len(), 2);
    }

    #[test]
    fn numa_options() {
        assert_eq!(parse(""), CommandLine::default());
        assert!(parse("numa=off").numa_off);
        assert_eq!(parse("numa=fake=4").numa_fake, Some(4));
        let c = parse("numa=fake=4 numa=off");
        assert!(c.numa_off);
        assert_eq!(c.numa_fake, None);
        assert_eq!(parse("crash=fault").crash, Some(Crash::Fault));
        assert!(parse("abi-note=ignore").ignore_abi_note);
        assert!(!parse("abi-note=ignore abi-note=check").ignore_abi_note);
        assert!(parse("smp=off").smp_off);
        assert!(!parse("smp=off smp=on").smp_off);
        assert!(!parse("").smp_off);
        assert_eq!(
            parse("mirror-pci=00:04.0,00:05.0").mirror_pci,
            vec![
                Bdf::parse("00:04.0").unwrap(),
                Bdf::parse("00:05.0").unwrap()
            ]
        );
        for bad in [
            "mirror-pci=00:04",
            "mirror-pci",
            "crash=maybe",
            "smp=maybe",
            "smp",
            "abi-note=maybe",
            "crash",
            "numa=fake=0",
            "numa=fake=x",
            "numa=fake=",
            "numa=maybe",
            "numa",
            "frobnicate",
        ] {
            let c = parse(bad);
            assert_eq!(c.warnings.len(), 1, "{bad}");
            assert!(!c.numa_off && c.numa_fake.is_none(), "{bad}");
        }
    }
}

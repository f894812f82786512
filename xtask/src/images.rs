//! Building the bare-metal images.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The bare-metal target both kernels build for.
pub const TARGET: &str = "x86_64-unknown-none";

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Makes sure rustup has the bare-metal target. These machines set
/// `RUSTUP_AUTO_INSTALL=0`, so rust-toolchain.toml alone does not add it.
pub fn ensure_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(workspace_root())
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            eprintln!("xtask: adding the Rust target {TARGET}");
            let status = Command::new("rustup")
                .args(["target", "add", TARGET])
                .current_dir(workspace_root())
                .status()
                .map_err(|e| format!("cannot run rustup: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("`rustup target add {TARGET}` failed ({status})"))
            }
        }
        // No rustup: a toolchain installed another way may still have the target.
        Err(_) => Ok(()),
    }
}

/// Paths of the built images.
#[derive(Clone, Debug)]
pub struct Images {
    pub hypervisor: PathBuf,
    /// The guest kernel, passed to the hypervisor as a boot module.
    pub guest: PathBuf,
}

/// Builds the hypervisor and the guest (release profile, with debug info:
/// TCG is slow enough without unoptimised code) into `target_dir`.
pub fn build(target_dir: Option<&Path>) -> Result<Images, String> {
    build_with_feature(target_dir, None)
}

/// [`build`], both kernels with their cargo feature `feature` (an
/// [`AbiBuild`]'s).
pub fn build_with_feature(
    target_dir: Option<&Path>,
    feature: Option<&str>,
) -> Result<Images, String> {
    ensure_target()?;
    let root = workspace_root();
    let mut cmd = Command::new(cargo());
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", TARGET])
        .args(["--package", "hypervisor", "--bin", "hypervisor"])
        .args(["--package", "guest-os", "--bin", "guest-os"]);
    if let Some(f) = feature {
        cmd.arg("--features")
            .arg(format!("hypervisor/{f},guest-os/{f}"));
    }
    if let Some(dir) = target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the hypervisor and the guest{} failed ({status})",
            feature.map_or(String::new(), |f| format!(" with feature {f}"))
        ));
    }
    let dir = target_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("target"));
    let release = dir.join(TARGET).join("release");
    let images = Images {
        hypervisor: release.join("hypervisor"),
        guest: release.join("guest-os"),
    };
    for p in [&images.hypervisor, &images.guest] {
        if !p.is_file() {
            return Err(format!("the build did not produce {}", p.display()));
        }
    }
    Ok(images)
}

/// A build of both kernels that speaks one ABI version. Each has its own
/// target directory, so building one never clobbers another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbiBuild {
    /// Its name on the command line (`--abi NAME`).
    pub name: &'static str,
    /// The kernels' cargo feature that selects it (none: the current ABI).
    pub feature: Option<&'static str>,
    /// Its target directory under `target/` (none: `target/` itself).
    pub dir: Option<&'static str>,
    /// What it is.
    pub summary: &'static str,
}

/// Every ABI build: the current one, each older released version, and a
/// test-only build that claims another major version.
pub const ABI_BUILDS: [AbiBuild; 3] = [
    AbiBuild {
        name: "current",
        feature: None,
        dir: None,
        summary: "the current ABI (pv-abi as it is)",
    },
    AbiBuild {
        name: "1.0",
        feature: Some("abi-1-0"),
        dir: Some("abi-1.0"),
        summary: "ABI 1.0, the first release (feature abi-1-0)",
    },
    AbiBuild {
        name: "major2",
        feature: Some("abi-major-2"),
        dir: Some("abi-major-2"),
        summary: "test only: claims ABI major 2, which the others refuse (feature abi-major-2)",
    },
];

/// The ABI build called `name`.
pub fn abi_build(name: &str) -> Option<AbiBuild> {
    ABI_BUILDS.iter().copied().find(|b| b.name == name)
}

impl AbiBuild {
    /// Its target directory.
    pub fn target_dir(&self) -> PathBuf {
        let target = workspace_root().join("target");
        match self.dir {
            Some(d) => target.join(d),
            None => target,
        }
    }

    /// Builds both kernels.
    pub fn build(&self) -> Result<Images, String> {
        build_with_feature(Some(&self.target_dir()), self.feature)
    }

    /// The environment variable through which `cargo xtask test` passes
    /// one of its images (`kernel` = `HYPERVISOR` or `GUEST`) to the tests
    /// crate, e.g. `NUMAVISOR_ABI_1_0_GUEST`.
    pub fn env_var(&self, kernel: &str) -> String {
        let name: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("NUMAVISOR_ABI_{name}_{kernel}")
    }
}

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
    ensure_target()?;
    let root = workspace_root();
    let mut cmd = Command::new(cargo());
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", TARGET])
        .args(["--package", "hypervisor", "--bin", "hypervisor"])
        .args(["--package", "guest-os", "--bin", "guest-os"]);
    if let Some(dir) = target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the hypervisor and the guest failed ({status})"
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

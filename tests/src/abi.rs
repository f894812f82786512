//! The images of the ABI builds (`xtask::images::ABI_BUILDS`: the current
//! ABI, ABI 1.0, a test-only build claiming major 2) and booting any
//! hypervisor with any guest, for the ABI compatibility matrix.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use xtask::images::{self, AbiBuild, Images};
use xtask::machine::MachineSpec;
use xtask::qemu::RunResult;

/// The images of ABI build `name`: from the environment `cargo xtask test`
/// sets (`NUMAVISOR_ABI_<NAME>_HYPERVISOR`/`_GUEST`), else built here into
/// the build's own target directory (once per test binary).
pub fn abi_images(name: &str) -> Images {
    static BUILT: Mutex<BTreeMap<String, Images>> = Mutex::new(BTreeMap::new());
    let build: AbiBuild =
        images::abi_build(name).unwrap_or_else(|| panic!("no ABI build named '{name}'"));
    if build.feature.is_none() {
        let (hypervisor, guest) = crate::current_images();
        return Images { hypervisor, guest };
    }
    if let (Some(h), Some(g)) = (
        std::env::var_os(build.env_var("HYPERVISOR")),
        std::env::var_os(build.env_var("GUEST")),
    ) {
        return Images {
            hypervisor: PathBuf::from(h),
            guest: PathBuf::from(g),
        };
    }
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(name.to_string())
        .or_insert_with(|| {
            build
                .build()
                .unwrap_or_else(|e| panic!("cannot build ABI build '{name}': {e}"))
        })
        .clone()
}

/// Boots `spec` with the hypervisor of ABI build `hypervisor` (its command
/// line plus `extra_cmdline`) running the mirror domain with the guest of
/// ABI build `guest`.
pub fn boot_pair(
    spec: &MachineSpec,
    hypervisor: &str,
    guest: &str,
    extra_cmdline: &str,
) -> RunResult {
    let hv = abi_images(hypervisor);
    let g = abi_images(guest);
    crate::run_kernel(
        &hv.hypervisor,
        spec.qemu_args(),
        &format!("{} {extra_cmdline}", spec.cmdline),
        vec![g.guest.display().to_string()],
        xtask::DEFAULT_TIMEOUT,
    )
}

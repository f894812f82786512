//! numavisor's host-side driver, as a library: the `tests` crate boots
//! machines through the same code as `cargo xtask run`.

pub mod abi;
pub mod images;
pub mod linux;
pub mod machine;
pub mod qemu;

use std::time::Duration;

/// Default time-out of one QEMU run. TCG boots the hypervisor in well under
/// a second; the margin covers slow CI machines.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What `cargo xtask run` runs when no `--domain` is given: the mirror
/// domain (hypervisor option `mirror=on`) and, beside it at the same time,
/// these configs (paths from the workspace root): a domain placed by
/// automatic NUMA placement.
pub const DEFAULT_RUN_DOMAINS: &[&str] = &["domains/auto.cfg"];
/// The hypervisor option that keeps the mirror domain beside them.
pub const DEFAULT_RUN_CMDLINE: &str = "mirror=on";

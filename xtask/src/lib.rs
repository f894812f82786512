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

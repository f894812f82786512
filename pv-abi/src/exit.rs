//! How a run of the hypervisor ends: the value written to QEMU's
//! `isa-debug-exit` port and the process exit status the host then sees.
//!
//! QEMU turns a write of `v` into the exit status `(v << 1) | 1`, so status 0
//! is impossible; success is `0x10`, which the host sees as 33. Host tools map
//! these back with [`ExitCode::from_qemu_status`].

/// I/O port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Why the hypervisor ended the run. The discriminant is the value written to
/// [`DEBUG_EXIT_PORT`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum ExitCode {
    /// Everything ran and passed.
    Success = 0x10,
    /// The run completed but something it checked failed (a domain's tests,
    /// a self-check of the hypervisor).
    Failure = 0x11,
    /// The hypervisor panicked: a bug in the hypervisor.
    Panic = 0x12,
    /// The boot environment is unusable (no long mode, no memory map, bad
    /// boot modules): a problem with the machine or the command line.
    BadBoot = 0x13,
    /// An unexpected CPU exception in the hypervisor.
    Exception = 0x14,
}

impl ExitCode {
    /// All codes, for tools that print a legend.
    pub const ALL: [ExitCode; 5] = [
        ExitCode::Success,
        ExitCode::Failure,
        ExitCode::Panic,
        ExitCode::BadBoot,
        ExitCode::Exception,
    ];

    /// The exit status of the QEMU process when the hypervisor writes this code.
    pub const fn qemu_status(self) -> i32 {
        ((self as u32 as i32) << 1) | 1
    }

    /// Maps a QEMU process exit status back to the code the hypervisor wrote.
    pub fn from_qemu_status(status: i32) -> Option<ExitCode> {
        ExitCode::ALL
            .into_iter()
            .find(|c| c.qemu_status() == status)
    }

    /// The code's name in the ABI description, e.g. `"bad-boot"`.
    pub const fn name(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::Failure => "failure",
            ExitCode::Panic => "panic",
            ExitCode::BadBoot => "bad-boot",
            ExitCode::Exception => "exception",
        }
    }

    /// A short human description.
    pub const fn describe(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::Failure => "a check failed",
            ExitCode::Panic => "hypervisor panic",
            ExitCode::BadBoot => "unusable boot environment",
            ExitCode::Exception => "unexpected CPU exception in the hypervisor",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_status_round_trips() {
        assert_eq!(ExitCode::Success.qemu_status(), 33);
        for c in ExitCode::ALL {
            assert_eq!(ExitCode::from_qemu_status(c.qemu_status()), Some(c));
        }
        assert_eq!(ExitCode::from_qemu_status(0), None);
        assert_eq!(ExitCode::from_qemu_status(1), None);
    }
}

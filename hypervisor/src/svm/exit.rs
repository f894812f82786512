//! #VMEXIT codes (AMD APM vol. 2, appendix C) that the hypervisor handles or
//! reports by name.

use core::fmt;

/// Why the guest stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Exception intercept, vector 0-31.
    Exception(u8),
    Intr,
    Nmi,
    /// PAUSE: the guest is spinning, waiting for another vCPU.
    Pause,
    Cpuid,
    Hlt,
    /// IN/OUT/INS/OUTS.
    Ioio,
    /// RDMSR/WRMSR.
    Msr,
    /// Triple fault (or another shutdown condition).
    Shutdown,
    Vmrun,
    Vmmcall,
    /// Nested page fault: EXITINFO2 holds the guest-physical address.
    NestedPageFault,
    /// VMRUN refused the VMCB (bad guest state).
    Invalid,
    Other(u64),
}

impl ExitReason {
    /// Decodes the VMCB EXITCODE. VMEXIT_INVALID is -1; QEMU may report it
    /// as 0xFFFF_FFFF in the low half only, so both encodings are accepted.
    pub fn from_code(code: u64) -> ExitReason {
        match code {
            0x40..=0x5F => ExitReason::Exception((code - 0x40) as u8),
            0x60 => ExitReason::Intr,
            0x61 => ExitReason::Nmi,
            0x72 => ExitReason::Cpuid,
            0x77 => ExitReason::Pause,
            0x78 => ExitReason::Hlt,
            0x7B => ExitReason::Ioio,
            0x7C => ExitReason::Msr,
            0x7F => ExitReason::Shutdown,
            0x80 => ExitReason::Vmrun,
            0x81 => ExitReason::Vmmcall,
            0x400 => ExitReason::NestedPageFault,
            c if c as u32 == u32::MAX => ExitReason::Invalid,
            other => ExitReason::Other(other),
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Exception(v) => write!(f, "exception {v}"),
            ExitReason::Intr => write!(f, "external interrupt"),
            ExitReason::Nmi => write!(f, "NMI"),
            ExitReason::Pause => write!(f, "PAUSE"),
            ExitReason::Cpuid => write!(f, "CPUID"),
            ExitReason::Hlt => write!(f, "HLT"),
            ExitReason::Ioio => write!(f, "I/O instruction"),
            ExitReason::Msr => write!(f, "MSR access"),
            ExitReason::Shutdown => write!(f, "shutdown (triple fault)"),
            ExitReason::Vmrun => write!(f, "VMRUN"),
            ExitReason::Vmmcall => write!(f, "VMMCALL"),
            ExitReason::NestedPageFault => write!(f, "nested page fault"),
            ExitReason::Invalid => write!(f, "VMEXIT_INVALID (the VMCB's guest state was refused)"),
            ExitReason::Other(c) => write!(f, "exit code {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_codes() {
        assert_eq!(ExitReason::from_code(0x81), ExitReason::Vmmcall);
        assert_eq!(ExitReason::from_code(0x400), ExitReason::NestedPageFault);
        assert_eq!(ExitReason::from_code(0x4E), ExitReason::Exception(14));
        assert_eq!(ExitReason::from_code(u64::MAX), ExitReason::Invalid);
        assert_eq!(ExitReason::from_code(0xFFFF_FFFF), ExitReason::Invalid);
        assert_eq!(ExitReason::from_code(0x123), ExitReason::Other(0x123));
    }
}

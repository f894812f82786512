//! The status a guest passes to [`Hypercall::Shutdown`](crate::Hypercall::Shutdown).
//!
//! 0 is success, anything else a failure; the named values let the
//! hypervisor say why in its report. A guest may pass any other non-zero
//! value; it is reported as a failure with that number.

use core::fmt;

/// A guest's shutdown status.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ShutdownStatus(pub u64);

impl ShutdownStatus {
    /// Everything the guest ran passed.
    pub const SUCCESS: ShutdownStatus = ShutdownStatus(0);
    /// The guest's test suites reported a failure.
    pub const TESTS_FAILED: ShutdownStatus = ShutdownStatus(1);
    /// The guest refused the hypervisor's ABI version (different major, or a
    /// minor older than it requires).
    pub const ABI_MISMATCH: ShutdownStatus = ShutdownStatus(2);
    /// The guest kernel panicked.
    pub const PANIC: ShutdownStatus = ShutdownStatus(3);
    /// The start-info page failed validation.
    pub const BAD_START_INFO: ShutdownStatus = ShutdownStatus(4);
    /// The topology from the hypercalls and the virtual ACPI tables disagree.
    pub const TOPOLOGY_MISMATCH: ShutdownStatus = ShutdownStatus(5);
    /// The guest ran out of memory while booting.
    pub const OUT_OF_MEMORY: ShutdownStatus = ShutdownStatus(6);

    /// Each named status with its name (for reports and the ABI description).
    pub const NAMED: [(&'static str, ShutdownStatus); 7] = [
        ("success", Self::SUCCESS),
        ("tests-failed", Self::TESTS_FAILED),
        ("abi-mismatch", Self::ABI_MISMATCH),
        ("panic", Self::PANIC),
        ("bad-start-info", Self::BAD_START_INFO),
        ("topology-mismatch", Self::TOPOLOGY_MISMATCH),
        ("out-of-memory", Self::OUT_OF_MEMORY),
    ];

    /// Wraps a raw status from RDI.
    pub const fn from_raw(raw: u64) -> Self {
        ShutdownStatus(raw)
    }

    /// The raw status.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Whether this is [`ShutdownStatus::SUCCESS`].
    pub const fn is_success(self) -> bool {
        self.0 == 0
    }

    /// The status's name, if it has one.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMED
            .iter()
            .find(|(_, s)| *s == self)
            .map(|(n, _)| *n)
    }
}

/// `2 (abi-mismatch)`, or just the number for an unnamed status.
impl fmt::Display for ShutdownStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for ShutdownStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShutdownStatus({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn values_and_names() {
        assert!(ShutdownStatus::SUCCESS.is_success());
        assert!(!ShutdownStatus::from_raw(77).is_success());
        for (i, (name, s)) in ShutdownStatus::NAMED.iter().enumerate() {
            assert_eq!(s.raw(), i as u64);
            assert_eq!(s.name(), Some(*name));
        }
        assert_eq!(ShutdownStatus::ABI_MISMATCH.to_string(), "2 (abi-mismatch)");
        assert_eq!(ShutdownStatus(77).to_string(), "77");
        assert_eq!(ShutdownStatus(77).name(), None);
    }
}

//! Hypercall error codes: negative, errno-like (Linux values), so they read
//! naturally to anyone who knows Linux or Xen. Codes are fixed forever.

use core::fmt;

/// A hypercall error. The discriminant is the code returned in RAX (as `i64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i64)]
pub enum Error {
    /// `EPERM`: the domain may not do this (policy, or a hypercall from CPL > 0).
    NotPermitted = -1,
    /// `ENOENT`: the thing asked about does not exist.
    NoSuchThing = -2,
    /// `ENOMEM`: the hypervisor could not allocate what the call needs.
    OutOfMemory = -12,
    /// `EFAULT`: a guest-physical address is not backed by the domain's
    /// memory, or a buffer runs past it.
    Fault = -14,
    /// `EINVAL`: a malformed argument (bad size, non-zero reserved field or
    /// unused register, misaligned address, length too large).
    InvalidArgument = -22,
    /// `ENOSYS`: unknown hypercall number, or a feature this hypervisor does
    /// not offer.
    Unsupported = -38,
    /// `ENOBUFS`: a caller's buffer is too small; the needed counts were
    /// written back (as `XENMEM_get_vnumainfo` does).
    BufferTooSmall = -105,
}

impl Error {
    /// Every error, for tables and the ABI description.
    pub const ALL: [Error; 7] = [
        Error::NotPermitted,
        Error::NoSuchThing,
        Error::OutOfMemory,
        Error::Fault,
        Error::InvalidArgument,
        Error::Unsupported,
        Error::BufferTooSmall,
    ];

    /// The code returned in RAX, as a negative `i64`.
    pub const fn code(self) -> i64 {
        self as i64
    }

    /// The error with this code, if it is one.
    pub const fn from_code(code: i64) -> Option<Error> {
        Some(match code {
            -1 => Error::NotPermitted,
            -2 => Error::NoSuchThing,
            -12 => Error::OutOfMemory,
            -14 => Error::Fault,
            -22 => Error::InvalidArgument,
            -38 => Error::Unsupported,
            -105 => Error::BufferTooSmall,
            _ => return None,
        })
    }

    /// The errno name, e.g. `"EINVAL"`.
    pub const fn errno_name(self) -> &'static str {
        match self {
            Error::NotPermitted => "EPERM",
            Error::NoSuchThing => "ENOENT",
            Error::OutOfMemory => "ENOMEM",
            Error::Fault => "EFAULT",
            Error::InvalidArgument => "EINVAL",
            Error::Unsupported => "ENOSYS",
            Error::BufferTooSmall => "ENOBUFS",
        }
    }

    /// A short description.
    pub const fn describe(self) -> &'static str {
        match self {
            Error::NotPermitted => "not permitted",
            Error::NoSuchThing => "no such thing",
            Error::OutOfMemory => "out of memory",
            Error::Fault => "bad guest address",
            Error::InvalidArgument => "invalid argument",
            Error::Unsupported => "unsupported",
            Error::BufferTooSmall => "buffer too small",
        }
    }
}

/// `invalid argument (EINVAL, -22)`.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {})",
            self.describe(),
            self.errno_name(),
            self.code()
        )
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn codes_are_linux_errnos() {
        assert_eq!(Error::NotPermitted.code(), -1);
        assert_eq!(Error::NoSuchThing.code(), -2);
        assert_eq!(Error::OutOfMemory.code(), -12);
        assert_eq!(Error::Fault.code(), -14);
        assert_eq!(Error::InvalidArgument.code(), -22);
        assert_eq!(Error::Unsupported.code(), -38);
        assert_eq!(Error::BufferTooSmall.code(), -105);
    }

    #[test]
    fn codes_round_trip() {
        for e in Error::ALL {
            assert_eq!(Error::from_code(e.code()), Some(e));
            assert!((-4095..0).contains(&e.code()));
        }
        for code in [0, 1, -3, -4095, -4096, i64::MIN, i64::MAX] {
            assert_eq!(Error::from_code(code), None);
        }
    }

    #[test]
    fn display() {
        assert_eq!(
            Error::InvalidArgument.to_string(),
            "invalid argument (EINVAL, -22)"
        );
        assert_eq!(
            Error::BufferTooSmall.to_string(),
            "buffer too small (ENOBUFS, -105)"
        );
    }
}

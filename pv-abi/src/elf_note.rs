//! The ELF note by which a guest image declares the ABI version it speaks,
//! so the hypervisor can refuse an incompatible image before running it (as
//! Xen's loader reads `XEN_ELFNOTE_*`).
//!
//! The note lives in a `PT_NOTE` segment: name [`ELF_NOTE_NAME`], type
//! [`ELF_NOTE_ABI_VERSION`], descriptor = an [`AbiVersion`] (4 bytes: major
//! then minor, `u16` little-endian each). An image without the note is
//! treated as speaking ABI 1.0, the first release.

use crate::pod::Pod;
use crate::version::AbiVersion;

/// The note's name, with its terminating NUL (ELF counts it in `n_namesz`).
pub const ELF_NOTE_NAME: &[u8; 10] = b"NumaVisor\0";
/// Note type whose descriptor is the image's [`AbiVersion`].
pub const ELF_NOTE_ABI_VERSION: u32 = 1;

/// The version an image declares, from one note's name (with or without its
/// NUL), type and descriptor. `None` if this is not numavisor's ABI-version
/// note or its descriptor is not 4 bytes.
pub fn abi_version_from_note(name: &[u8], n_type: u32, desc: &[u8]) -> Option<AbiVersion> {
    let name = name.strip_suffix(b"\0").unwrap_or(name);
    if name != &ELF_NOTE_NAME[..ELF_NOTE_NAME.len() - 1] || n_type != ELF_NOTE_ABI_VERSION {
        return None;
    }
    AbiVersion::read_from(desc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_our_note() {
        let desc = [1, 0, 2, 0];
        assert_eq!(
            abi_version_from_note(b"NumaVisor\0", 1, &desc),
            Some(AbiVersion::new(1, 2))
        );
        assert_eq!(
            abi_version_from_note(b"NumaVisor", 1, &desc),
            Some(AbiVersion::new(1, 2))
        );
        assert_eq!(abi_version_from_note(b"Xen\0", 1, &desc), None);
        assert_eq!(abi_version_from_note(b"NumaVisor\0", 2, &desc), None);
        assert_eq!(abi_version_from_note(b"NumaVisor\0", 1, &desc[..3]), None);
    }
}

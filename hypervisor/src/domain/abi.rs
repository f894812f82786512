//! Which ABI version a guest image speaks, and whether this hypervisor runs
//! it: the image declares its version in pv-abi's ELF note
//! (`pv_abi::elf_note`), and an image whose major differs from the
//! hypervisor's is refused before anything is allocated for it, with both
//! versions named. An image without the note is taken as ABI 1.0, the first
//! release. Same major, any minors: the two use the lower minor, and the
//! guest learns what is there from VERSION and FEATURES.
//!
//! The hypervisor command line's `abi-note=ignore` runs a refused image
//! anyway (a test aid: the guest must then refuse the hypervisor itself, at
//! VERSION, and shut down with `ABI_MISMATCH`).

use alloc::format;
use alloc::string::String;

use pv_abi::elf_note::{abi_version_from_note, ELF_NOTE_ABI_VERSION, ELF_NOTE_NAME};
use pv_abi::AbiVersion;

use super::elf::GuestImage;

/// What an image says about its ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageAbi {
    /// Its ELF note declares this version.
    Declared(AbiVersion),
    /// It has no note: taken as ABI 1.0.
    Undeclared,
}

impl ImageAbi {
    /// The version the image is taken to speak.
    pub const fn version(self) -> AbiVersion {
        match self {
            ImageAbi::Declared(v) => v,
            ImageAbi::Undeclared => AbiVersion::V1_0,
        }
    }

    /// How the version was learned, for messages.
    pub const fn source(self) -> &'static str {
        match self {
            ImageAbi::Declared(_) => "its ELF note",
            ImageAbi::Undeclared => "no ABI note: taken as 1.0",
        }
    }
}

/// The image's ABI note. Errors for a malformed note (wrong descriptor size)
/// or two notes that disagree.
pub fn image_abi(image: &GuestImage, bytes: &[u8]) -> Result<ImageAbi, String> {
    let ours = &ELF_NOTE_NAME[..ELF_NOTE_NAME.len() - 1];
    let mut found: Option<AbiVersion> = None;
    for note in &image.notes {
        let Some((name, desc)) = note.bytes(bytes) else {
            continue;
        };
        if name.strip_suffix(b"\0").unwrap_or(name) != ours || note.n_type != ELF_NOTE_ABI_VERSION {
            continue;
        }
        let v = abi_version_from_note(name, note.n_type, desc).ok_or_else(|| {
            format!(
                "malformed ABI note: a descriptor of {} bytes, expected 4",
                desc.len()
            )
        })?;
        match found {
            Some(f) if f != v => {
                return Err(format!("two ABI notes disagree: ABI {f} and ABI {v}"));
            }
            _ => found = Some(v),
        }
    }
    Ok(found.map_or(ImageAbi::Undeclared, ImageAbi::Declared))
}

/// The version a guest speaking `image` and a hypervisor speaking `ours`
/// use together, or the refusal naming both versions.
pub fn negotiate(image: ImageAbi, ours: AbiVersion) -> Result<AbiVersion, String> {
    let v = image.version();
    ours.negotiate(v).ok_or_else(|| {
        format!(
            "guest image speaks ABI {v} ({}), this hypervisor speaks ABI {ours}: different major versions cannot work together",
            image.source()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::elf::Note;
    use alloc::vec;
    use alloc::vec::Vec;

    /// An image whose bytes hold the given notes (name, type, descriptor);
    /// only `notes` matters to `image_abi`.
    fn with_notes(notes: &[(&[u8], u32, &[u8])]) -> (GuestImage, Vec<u8>) {
        let mut bytes = Vec::new();
        let mut list = Vec::new();
        for (name, n_type, desc) in notes {
            let n = bytes.len();
            bytes.extend_from_slice(name);
            let d = bytes.len();
            bytes.extend_from_slice(desc);
            list.push(Note {
                n_type: *n_type,
                name: n..d,
                desc: d..bytes.len(),
            });
        }
        let image = GuestImage {
            entry: 0,
            segments: vec![],
            span: (0, 0),
            notes: list,
        };
        (image, bytes)
    }

    #[test]
    fn reads_the_note() {
        let (img, b) = with_notes(&[(b"Xen\0", 18, &[0; 8]), (b"NumaVisor\0", 1, &[1, 0, 0, 0])]);
        assert_eq!(
            image_abi(&img, &b),
            Ok(ImageAbi::Declared(AbiVersion::new(1, 0)))
        );
        let (img, b) = with_notes(&[(b"Xen\0", 1, &[2, 0, 0, 0])]);
        assert_eq!(image_abi(&img, &b), Ok(ImageAbi::Undeclared));
        assert_eq!(ImageAbi::Undeclared.version(), AbiVersion::V1_0);
        let (img, b) = with_notes(&[(b"NumaVisor\0", 1, &[1, 0, 0])]);
        assert_eq!(
            image_abi(&img, &b),
            Err("malformed ABI note: a descriptor of 3 bytes, expected 4".into())
        );
        let (img, b) = with_notes(&[
            (b"NumaVisor\0", 1, &[1, 0, 1, 0]),
            (b"NumaVisor\0", 1, &[2, 0, 0, 0]),
        ]);
        assert_eq!(
            image_abi(&img, &b),
            Err("two ABI notes disagree: ABI 1.1 and ABI 2.0".into())
        );
    }

    #[test]
    fn refuses_another_major_naming_both() {
        let v = |a, b| AbiVersion::new(a, b);
        assert_eq!(negotiate(ImageAbi::Declared(v(1, 0)), v(1, 1)), Ok(v(1, 0)));
        assert_eq!(negotiate(ImageAbi::Declared(v(1, 3)), v(1, 1)), Ok(v(1, 1)));
        assert_eq!(negotiate(ImageAbi::Undeclared, v(1, 1)), Ok(v(1, 0)));
        assert_eq!(
            negotiate(ImageAbi::Declared(v(2, 1)), v(1, 1)),
            Err("guest image speaks ABI 2.1 (its ELF note), this hypervisor speaks ABI 1.1: different major versions cannot work together".into())
        );
        assert_eq!(
            negotiate(ImageAbi::Undeclared, v(2, 0)),
            Err("guest image speaks ABI 1.0 (no ABI note: taken as 1.0), this hypervisor speaks ABI 2.0: different major versions cannot work together".into())
        );
    }
}

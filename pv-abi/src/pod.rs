//! Plain-old-data: types that can be read from any bytes and viewed as bytes.
//!
//! Both kernels copy ABI structures to and from memory the other side
//! controls, so reading one must never be undefined behaviour, whatever the
//! bytes. [`Pod`] marks types for which that holds, and `abi_struct!`
//! defines an ABI structure together with its compile-time layout checks,
//! its `Pod` impl and its [`layout`](crate::layout) description, so the three
//! cannot drift apart.

use core::mem::size_of;

/// A type that every bit pattern of its size is a valid value of, and that
/// has no padding bytes.
///
/// # Safety
///
/// Implementors guarantee that (1) every sequence of `size_of::<Self>()`
/// bytes is a valid `Self` (so no `bool`, `char`, enum, reference or
/// pointer inside), and (2) `Self` has no padding, so all of its bytes are
/// always initialized. `abi_struct!` checks both for ABI structures.
pub unsafe trait Pod: Copy + 'static {
    /// The all-zero value.
    fn zeroed() -> Self {
        // SAFETY: all-zero bytes are a valid `Self` by the trait contract (1).
        unsafe { core::mem::zeroed() }
    }

    /// Reads a value from exactly `size_of::<Self>()` bytes, at any
    /// alignment. `None` if the length differs.
    fn read_from(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size_of::<Self>() {
            return None;
        }
        // SAFETY: `bytes` holds exactly `size_of::<Self>()` readable bytes;
        // `read_unaligned` has no alignment requirement; any bit pattern is a
        // valid `Self` by the trait contract (1).
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }

    /// Reads a value from the first `size_of::<Self>()` bytes of `bytes`.
    /// `None` if there are fewer.
    fn read_from_prefix(bytes: &[u8]) -> Option<Self> {
        bytes.get(..size_of::<Self>()).and_then(Self::read_from)
    }

    /// Reads a value from up to `size_of::<Self>()` bytes; missing bytes at
    /// the end read as zero and extra bytes are ignored. This is how a
    /// structure that carries its own size is read when the writer knew an
    /// older (shorter) or newer (longer) version of it.
    fn read_zero_extended(bytes: &[u8]) -> Self {
        let mut value = Self::zeroed();
        let n = bytes.len().min(size_of::<Self>());
        value.as_bytes_mut()[..n].copy_from_slice(&bytes[..n]);
        value
    }

    /// The value's bytes, as they are laid out in memory (little-endian).
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: the pointer is valid for `size_of::<Self>()` bytes for the
        // lifetime of `&self`, and every byte is initialized because `Self`
        // has no padding (trait contract (2)).
        unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>())
        }
    }

    /// The value's bytes, writable. Any bytes written leave a valid `Self`.
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_bytes`, and the borrow is unique; any bytes
        // written through it form a valid `Self` (trait contract (1)).
        unsafe {
            core::slice::from_raw_parts_mut((self as *mut Self).cast::<u8>(), size_of::<Self>())
        }
    }
}

/// The bytes of a slice of `Pod` values (for copying an array such as a
/// distance matrix into the other side's memory).
pub fn slice_as_bytes<T: Pod>(values: &[T]) -> &[u8] {
    // SAFETY: `values` covers `size_of_val(values)` initialized bytes (no
    // padding in `T`, and none between elements of a slice); the result
    // borrows `values`.
    unsafe { core::slice::from_raw_parts(values.as_ptr().cast::<u8>(), size_of_val(values)) }
}

macro_rules! pod_primitive {
    ($($t:ty),*) => {$(
        // SAFETY: a primitive integer: every bit pattern is valid, no padding.
        unsafe impl Pod for $t {}
    )*};
}
pod_primitive!(u8, u16, u32, u64, i8, i16, i32, i64);

// SAFETY: elements are `Pod`; an array has no padding between elements
// (an element's size is a multiple of its alignment) and none around them.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// Defines an ABI structure: `#[repr(C)]`, with compile-time checks of its
/// size, alignment and every field offset, a check that it has no implicit
/// padding and that every field is [`Pod`], its `Pod` impl and its
/// [`AbiStruct`](crate::layout::AbiStruct) layout description.
///
/// `=> N` after a field's type is its byte offset. Derives go in the
/// attributes (at least `Clone, Copy`). `sized_by = FIELD` says that the
/// structure carries its own size in `FIELD` (a `u32`), so fields may be
/// appended to it compatibly (see the [crate docs](crate)); the ABI
/// description records it.
///
/// A field added by a later minor version is appended last with
/// `#[cfg(not(feature = "abi-1-0"))]` (after its doc comment) and the size
/// is given for both builds, so a build with the `abi-1-0` feature has the
/// 1.0 layout; every check then applies to whichever layout is built. (The
/// field's type must exist in every build: the layout table names it.)
///
/// ```text
/// abi_struct! {
///     /// A range.
///     #[derive(Clone, Copy, Debug, PartialEq, Eq)]
///     pub struct Range(size = 16, align = 8) {
///         /// First byte.
///         pub start: u64 => 0,
///         /// Length in bytes.
///         pub len: u64 => 8,
///     }
/// }
/// ```
macro_rules! abi_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident (size = $size:expr, align = $align:literal $(, sized_by = $sized_by:ident)?) {
            $(
                $(#[doc = $doc:literal])*
                $(#[cfg($cfg:meta)])?
                pub $field:ident : $ty:ty => $offset:literal,
            )*
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                $(#[cfg($cfg)])?
                pub $field: $ty,
            )*
        }

        // The layout is the ABI: the build fails if a field moves or resizes.
        const _: () = {
            assert!(::core::mem::size_of::<$name>() == $size);
            assert!(::core::mem::align_of::<$name>() == $align);
            // No implicit padding: the fields fill the structure exactly.
            let mut filled = 0;
            $(
                $(#[cfg($cfg)])?
                {
                    assert!(::core::mem::offset_of!($name, $field) == $offset);
                    filled += ::core::mem::size_of::<$ty>();
                }
            )*
            assert!(filled == $size);
            $( let _ = ::core::mem::offset_of!($name, $sized_by); )?
            const fn field_is_pod<T: $crate::pod::Pod>() {}
            $( field_is_pod::<$ty>(); )*
        };

        // SAFETY: `#[repr(C)]`, every field is `Pod` and there is no padding
        // (both checked in the const block above), so every bit pattern is a
        // valid value and every byte is initialized.
        unsafe impl $crate::pod::Pod for $name {}

        impl $crate::layout::AbiStruct for $name {
            const LAYOUT: $crate::layout::StructLayout = {
                // Every field this source defines; fields a build leaves out
                // (`cfg`) are appended ones, so the built ones are a prefix.
                const ALL: &[$crate::layout::FieldLayout] = &[
                    $(
                        $crate::layout::FieldLayout {
                            name: stringify!($field),
                            ty: stringify!($ty),
                            offset: $offset,
                            size: ::core::mem::size_of::<$ty>(),
                        },
                    )*
                ];
                let mut built = 0;
                $(
                    $(#[cfg($cfg)])?
                    {
                        built += 1;
                        let _ = stringify!($field);
                    }
                )*
                $crate::layout::StructLayout {
                    name: stringify!($name),
                    size: $size,
                    align: $align,
                    sized_by: [$(Some(stringify!($sized_by)),)? None][0],
                    fields: ALL.split_at(built).0,
                }
            };
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_from_checks_length_and_ignores_alignment() {
        let bytes = [0u8, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(u64::read_from(&bytes[1..]), Some(0x0807_0605_0403_0201));
        assert_eq!(u64::read_from(&bytes), None);
        assert_eq!(u64::read_from(&bytes[..7]), None);
        assert_eq!(u32::read_from_prefix(&bytes[1..]), Some(0x0403_0201));
        assert_eq!(u32::read_from_prefix(&bytes[..3]), None);
    }

    #[test]
    fn zero_extension() {
        assert_eq!(u64::read_zero_extended(&[1, 2]), 0x0201);
        assert_eq!(u16::read_zero_extended(&[1, 2, 3, 4]), 0x0201);
        assert_eq!(u32::read_zero_extended(&[]), 0);
    }

    #[test]
    fn bytes_views() {
        let mut v = 0x1122_3344u32;
        assert_eq!(v.as_bytes(), &[0x44, 0x33, 0x22, 0x11]);
        v.as_bytes_mut()[3] = 0xaa;
        assert_eq!(v, 0xaa22_3344);
        assert_eq!(slice_as_bytes(&[1u32, 2]), &[1, 0, 0, 0, 2, 0, 0, 0]);
        let a: [u16; 2] = Pod::zeroed();
        assert_eq!(a, [0, 0]);
    }
}

//! The in/out structure protocol shared by the query hypercalls
//! ([`Hypercall::GetVnuma`](crate::Hypercall::GetVnuma),
//! [`Hypercall::PhysInfo`](crate::Hypercall::PhysInfo),
//! [`Hypercall::DomainNodePages`](crate::Hypercall::DomainNodePages)),
//! modelled on `XENMEM_get_vnumainfo` plus a size field so a structure can
//! grow compatibly.
//!
//! Each query structure starts with `size: u32` and `flags: u32` and lives in
//! guest memory at a [`QUERY_ALIGN`](crate::hypercall::QUERY_ALIGN)-aligned
//! [`Gpa`](crate::Gpa) passed in RDI.
//!
//! 1. The guest sets `size` to `size_of` of the structure it knows and
//!    `flags` (and every `reserved` field) to 0, sets each count to the
//!    capacity of the matching buffer, and each buffer's `Gpa` (a buffer of
//!    capacity 0 is never touched, so its `Gpa` may be null: a call with all
//!    capacities 0 is a cheap way to learn the counts).
//! 2. The hypervisor reads `size`, accepts it with [`accept_size`] (the
//!    bytes it will read and write: the smaller of the caller's size and its
//!    own), reads that many bytes ([`Pod::read_zero_extended`](crate::Pod::read_zero_extended):
//!    fields an older caller does not know read as zero), and refuses
//!    non-zero `flags` or `reserved` with [`Error::InvalidArgument`].
//! 3. If any capacity is smaller than the real count, the hypervisor writes
//!    the real counts back, writes no buffer, and returns
//!    [`Error::BufferTooSmall`]; the guest grows its buffers and calls again.
//!    Otherwise it fills the buffers, writes the real counts and succeeds.
//!    Either way it writes back the accepted number of bytes with `size` set
//!    to that number, so a newer guest learns which appended fields an older
//!    hypervisor filled.

use core::mem::size_of;

use crate::error::Error;
use crate::layout::AbiStruct;

/// A query structure (see the [module docs](self)).
pub trait Query: AbiStruct {
    /// The structure's size in ABI 1.0: the smallest `size` a caller may pass.
    const SIZE_V1_0: u32;

    /// The `size` field.
    fn size(&self) -> u32;

    /// Sets the `size` field.
    fn set_size(&mut self, size: u32);

    /// Whether `flags` and every reserved field are zero, as ABI 1.0 requires
    /// of the caller.
    fn reserved_are_zero(&self) -> bool;
}

/// How many bytes of a caller's structure of `caller_size` bytes the
/// hypervisor reads and writes back: the smaller of that and the size it
/// knows. [`Error::InvalidArgument`] if the caller's is below
/// [`Query::SIZE_V1_0`].
pub fn accept_size<T: Query>(caller_size: u32) -> Result<u32, Error> {
    if caller_size < T::SIZE_V1_0 {
        return Err(Error::InvalidArgument);
    }
    Ok(caller_size.min(size_of::<T>() as u32))
}

/// The too-small rule for one count: `Ok` if `capacity` holds `needed`.
pub const fn check_capacity(capacity: u32, needed: u32) -> Result<(), Error> {
    if capacity < needed {
        Err(Error::BufferTooSmall)
    } else {
        Ok(())
    }
}

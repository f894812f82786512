//! Hardware access (bare metal only): the only place for asm.

pub mod x86_64;

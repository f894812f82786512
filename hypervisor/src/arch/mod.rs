//! Hardware access. The only place for inline assembly, port I/O and MSRs.

pub mod x86_64;

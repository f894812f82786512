//! The registry of KTAP suites: every suite the guest runs is listed here,
//! in the order it runs.

pub mod accounting;
pub mod acpi;
pub mod boot;
pub mod buddy;
pub mod dma;
pub mod edu;
pub mod fake_numa;
pub mod hypercall_abi;
pub mod memory;
pub mod memoryless;
pub mod mm_util;
pub mod policy_bind;
pub mod policy_default;
pub mod policy_errors;
pub mod policy_flags;
pub mod policy_interleave;
pub mod policy_preferred;
pub mod policy_preferred_many;
pub mod policy_util;
pub mod policy_weighted_interleave;
pub mod slab;
pub mod smp;
pub mod thisnode;
pub mod vnuma;
pub mod zonelists;
pub mod zones;

use alloc::string::String;
use alloc::vec::Vec;

use super::Suite;
use crate::boot::Guest;
use crate::cmdline::Cmdline;
use crate::platform::FailMode;

/// Every suite, in run order. The memory-manager suites come after the
/// boot ones, and `accounting` last of them: it checks that every page came
/// back. `smp` runs before them (its last test takes every secondary vCPU
/// down, so they run on vCPU 0 alone and `accounting` sees what the
/// secondaries allocated come back). The DMA suites (`dma`, `edu`) run at
/// the end.
pub static ALL: [&Suite<Guest>; 24] = [
    &boot::SUITE,
    &vnuma::SUITE,
    &acpi::SUITE,
    &hypercall_abi::SUITE,
    &smp::SUITE,
    &memory::SUITE,
    &zones::SUITE,
    &zonelists::SUITE,
    &buddy::SUITE,
    &memoryless::SUITE,
    &thisnode::SUITE,
    &policy_default::SUITE,
    &policy_preferred::SUITE,
    &policy_bind::SUITE,
    &policy_interleave::SUITE,
    &policy_preferred_many::SUITE,
    &policy_weighted_interleave::SUITE,
    &policy_flags::SUITE,
    &policy_errors::SUITE,
    &slab::SUITE,
    &fake_numa::SUITE,
    &accounting::SUITE,
    &dma::SUITE,
    &edu::SUITE,
];

/// The garbage-hypercall suite, run last with `fail=hypercall`.
pub static GARBAGE: &Suite<Guest> = &hypercall_abi::GARBAGE;

/// The suites this command line asks for (`ktest=` filters by name, in
/// registry order), and the names it asked for that do not exist.
pub fn select(c: &Cmdline) -> (Vec<&'static Suite<Guest>>, Vec<String>) {
    let mut chosen: Vec<&'static Suite<Guest>> = match &c.ktest {
        None => ALL.to_vec(),
        Some(names) => ALL
            .iter()
            .copied()
            .filter(|s| names.iter().any(|n| n == s.name))
            .collect(),
    };
    let unknown = match &c.ktest {
        None => Vec::new(),
        Some(names) => names
            .iter()
            .filter(|n| !ALL.iter().any(|s| s.name == n.as_str()) && n.as_str() != GARBAGE.name)
            .cloned()
            .collect(),
    };
    if c.fail == Some(FailMode::Hypercall) {
        chosen.push(GARBAGE);
    }
    (chosen, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::parse;

    #[test]
    fn selection() {
        let names = |c: &str| {
            let (s, u) = select(&parse(c));
            (s.iter().map(|s| s.name).collect::<Vec<_>>(), u)
        };
        assert_eq!(
            names("").0,
            vec![
                "boot",
                "vnuma",
                "acpi",
                "hypercall_abi",
                "smp",
                "memory",
                "zones",
                "zonelists",
                "buddy",
                "memoryless",
                "thisnode",
                "policy_default",
                "policy_preferred",
                "policy_bind",
                "policy_interleave",
                "policy_preferred_many",
                "policy_weighted_interleave",
                "policy_flags",
                "policy_errors",
                "slab",
                "fake_numa",
                "accounting",
                "dma",
                "edu"
            ]
        );
        assert_eq!(
            names("ktest=memory,boot,nope fail=hypercall"),
            (
                vec!["boot", "memory", "hypercall_garbage"],
                vec!["nope".into()]
            )
        );
    }
}

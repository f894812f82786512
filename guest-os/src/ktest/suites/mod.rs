//! The registry of KTAP suites: every suite the guest runs is listed here,
//! in the order it runs.

pub mod accounting;
pub mod acpi;
pub mod boot;
pub mod buddy;
pub mod hypercall_abi;
pub mod memory;
pub mod memoryless;
pub mod mm_util;
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

/// Every suite, in run order. The memory-manager suites come last, and
/// `accounting` last of them: it checks that every page came back.
pub static ALL: [&Suite<Guest>; 11] = [
    &boot::SUITE,
    &vnuma::SUITE,
    &acpi::SUITE,
    &hypercall_abi::SUITE,
    &memory::SUITE,
    &zones::SUITE,
    &zonelists::SUITE,
    &buddy::SUITE,
    &memoryless::SUITE,
    &thisnode::SUITE,
    &accounting::SUITE,
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
                "memory",
                "zones",
                "zonelists",
                "buddy",
                "memoryless",
                "thisnode",
                "accounting"
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

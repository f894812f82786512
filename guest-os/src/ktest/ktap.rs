//! The KTAP printer (Linux's `Documentation/dev-tools/ktap.rst`, version 1).
//!
//! ```text
//! KTAP version 1
//! 1..2
//!     KTAP version 1
//!     # Subtest: boot
//!     1..3
//!     ok 1 start_info_valid
//!     # expected 10, got 11
//!     not ok 2 abi_version
//!     ok 3 cpuid_leaves # SKIP no CPUID on this platform
//! not ok 1 boot
//! ...
//! ```
//!
//! Each suite is a nested test: its own version line, a `# Subtest:` line
//! (as KUnit prints it), its plan, its results, then the suite's result at
//! the outer level. Subtest lines are indented by four spaces as KUnit does
//! (ktap.rst's text says two; parsers, kunit.py included, accept either).
//! Diagnostics of a failed test come directly before its result line, as
//! ktap.rst recommends. A suite fails if any test fails and is skipped if
//! every test was skipped.

use core::fmt::{self, Write};

use super::Status;

/// Indentation of one nesting level.
pub const INDENT: &str = "    ";

/// A description with no `#` and no line break (a `#` would start a
/// directive).
pub fn clean(s: &str) -> impl fmt::Display + '_ {
    struct Clean<'a>(&'a str);
    impl fmt::Display for Clean<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for c in self.0.chars() {
                f.write_char(match c {
                    '#' => '_',
                    '\n' | '\r' => ' ',
                    c => c,
                })?;
            }
            Ok(())
        }
    }
    Clean(s)
}

/// `KTAP version 1` and the plan of the top level.
pub fn header(w: &mut dyn Write, suites: usize) -> fmt::Result {
    writeln!(w, "KTAP version 1")?;
    writeln!(w, "1..{suites}")
}

/// The start of a suite: its version line, name and plan, indented.
pub fn suite_header(w: &mut dyn Write, name: &str, tests: usize) -> fmt::Result {
    writeln!(w, "{INDENT}KTAP version 1")?;
    writeln!(w, "{INDENT}# Subtest: {}", clean(name))?;
    writeln!(w, "{INDENT}1..{tests}")
}

/// One result line at `indent`, preceded by diagnostics for a failure.
pub fn result(
    w: &mut dyn Write,
    indent: &str,
    number: usize,
    name: &str,
    status: &Status,
) -> fmt::Result {
    match status {
        Status::Pass => writeln!(w, "{indent}ok {number} {}", clean(name)),
        Status::Skip(reason) => {
            if reason.is_empty() {
                writeln!(w, "{indent}ok {number} {} # SKIP", clean(name))
            } else {
                writeln!(
                    w,
                    "{indent}ok {number} {} # SKIP {}",
                    clean(name),
                    reason.replace('\n', "; ")
                )
            }
        }
        Status::Fail(reason) => {
            for line in reason.lines() {
                writeln!(w, "{indent}# {line}")?;
            }
            writeln!(w, "{indent}not ok {number} {}", clean(name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    #[test]
    fn exact_lines() {
        let mut s = String::new();
        header(&mut s, 2).unwrap();
        suite_header(&mut s, "boot", 3).unwrap();
        result(&mut s, INDENT, 1, "a", &Status::Pass).unwrap();
        result(&mut s, INDENT, 2, "b#c", &Status::Fail("x\ny".into())).unwrap();
        result(&mut s, INDENT, 3, "c", &Status::Skip("why\nnot".into())).unwrap();
        result(&mut s, "", 1, "boot", &Status::Fail(String::new())).unwrap();
        result(&mut s, "", 2, "empty", &Status::Skip(String::new())).unwrap();
        assert_eq!(
            s,
            "KTAP version 1\n\
             1..2\n    \
             KTAP version 1\n    \
             # Subtest: boot\n    \
             1..3\n    \
             ok 1 a\n    \
             # x\n    \
             # y\n    \
             not ok 2 b_c\n    \
             ok 3 c # SKIP why; not\n\
             not ok 1 boot\n\
             ok 2 empty # SKIP\n"
        );
    }
}

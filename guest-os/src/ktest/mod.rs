//! The in-guest test framework: suites are `&'static [Test]` arrays listed
//! in one registry ([`suites::ALL`]), no linker tricks; each test is a plain
//! function of the guest's context returning [`TestResult`]; the runner
//! prints KTAP ([`ktap`]) line by line as it goes, so a crash leaves a
//! truncated plan the host notices.

pub mod ktap;
pub mod suites;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// Why a test did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TestError {
    /// It failed: the reason, one diagnostic line per line.
    Fail(String),
    /// It did not apply: the reason.
    Skip(String),
}

impl From<String> for TestError {
    fn from(s: String) -> Self {
        TestError::Fail(s)
    }
}

impl From<&str> for TestError {
    fn from(s: &str) -> Self {
        TestError::Fail(s.into())
    }
}

/// What a test returns.
pub type TestResult = Result<(), TestError>;

/// Passes if `problems` is empty, else fails with one line per problem.
pub fn problems(problems: Vec<String>) -> TestResult {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TestError::Fail(problems.join("\n")))
    }
}

/// Fails with a formatted reason unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::ktest::TestError::Fail(alloc::format!($($arg)+)));
        }
    };
}
pub(crate) use ensure;

/// Skips with a formatted reason.
macro_rules! skip {
    ($($arg:tt)+) => {
        return Err($crate::ktest::TestError::Skip(alloc::format!($($arg)+)))
    };
}
pub(crate) use skip;

/// One test case of context `C`.
pub struct Test<C: ?Sized + 'static> {
    /// Its KTAP name.
    pub name: &'static str,
    /// The test.
    pub run: fn(&C) -> TestResult,
}

/// A suite: a named list of tests.
pub struct Suite<C: ?Sized + 'static> {
    /// Its KTAP name.
    pub name: &'static str,
    /// Its tests, in order.
    pub tests: &'static [Test<C>],
}

/// A test's outcome as KTAP prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// `ok`.
    Pass,
    /// `not ok`, with diagnostics.
    Fail(String),
    /// `ok ... # SKIP reason`.
    Skip(String),
}

/// Totals of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed.
    pub failed: usize,
    /// Tests that were skipped.
    pub skipped: usize,
    /// Names of the failed tests, as `suite.test`.
    pub failures: Vec<String>,
}

impl Summary {
    /// Whether nothing failed.
    pub fn ok(&self) -> bool {
        self.failed == 0
    }
}

/// Runs `suites` on `ctx`, printing KTAP to `out` as it goes.
pub fn run<C: ?Sized>(ctx: &C, suites: &[&Suite<C>], out: &mut dyn Write) -> Summary {
    let mut sum = Summary::default();
    let _ = ktap::header(out, suites.len());
    for (k, suite) in suites.iter().enumerate() {
        let _ = ktap::suite_header(out, suite.name, suite.tests.len());
        let (mut failed, mut skipped) = (0, 0);
        for (i, test) in suite.tests.iter().enumerate() {
            let status = match (test.run)(ctx) {
                Ok(()) => Status::Pass,
                Err(TestError::Fail(r)) => Status::Fail(r),
                Err(TestError::Skip(r)) => Status::Skip(r),
            };
            match &status {
                Status::Pass => sum.passed += 1,
                Status::Fail(_) => {
                    failed += 1;
                    sum.failed += 1;
                    sum.failures
                        .push(alloc::format!("{}.{}", suite.name, test.name));
                }
                Status::Skip(_) => {
                    skipped += 1;
                    sum.skipped += 1;
                }
            }
            let _ = ktap::result(out, ktap::INDENT, i + 1, test.name, &status);
        }
        let suite_status = if failed > 0 {
            Status::Fail(String::new())
        } else if skipped > 0 && skipped == suite.tests.len() {
            Status::Skip(String::new())
        } else {
            Status::Pass
        };
        let _ = ktap::result(out, "", k + 1, suite.name, &suite_status);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ctx {
        value: u32,
    }

    fn passes(_: &Ctx) -> TestResult {
        Ok(())
    }

    fn checks_value(c: &Ctx) -> TestResult {
        ensure!(c.value == 2, "value is {}, expected 2", c.value);
        Ok(())
    }

    fn skips(_: &Ctx) -> TestResult {
        skip!("nothing to do on {}", "this machine")
    }

    fn many(_: &Ctx) -> TestResult {
        problems(alloc::vec!["first".into(), "second".into()])
    }

    static FIRST: Suite<Ctx> = Suite {
        name: "first",
        tests: &[
            Test {
                name: "passes",
                run: passes,
            },
            Test {
                name: "checks_value",
                run: checks_value,
            },
            Test {
                name: "skips",
                run: skips,
            },
        ],
    };
    static SECOND: Suite<Ctx> = Suite {
        name: "second",
        tests: &[Test {
            name: "skips",
            run: skips,
        }],
    };
    static THIRD: Suite<Ctx> = Suite {
        name: "third",
        tests: &[
            Test {
                name: "passes",
                run: passes,
            },
            Test {
                name: "many",
                run: many,
            },
        ],
    };

    #[test]
    fn runs_and_prints_exact_ktap() {
        let mut out = String::new();
        let sum = run(&Ctx { value: 3 }, &[&FIRST, &SECOND, &THIRD], &mut out);
        assert_eq!(
            out,
            "KTAP version 1
1..3
    KTAP version 1
    # Subtest: first
    1..3
    ok 1 passes
    # value is 3, expected 2
    not ok 2 checks_value
    ok 3 skips # SKIP nothing to do on this machine
not ok 1 first
    KTAP version 1
    # Subtest: second
    1..1
    ok 1 skips # SKIP nothing to do on this machine
ok 2 second # SKIP
    KTAP version 1
    # Subtest: third
    1..2
    ok 1 passes
    # first
    # second
    not ok 2 many
not ok 3 third
"
        );
        assert_eq!(sum.passed, 2);
        assert_eq!(sum.failed, 2);
        assert_eq!(sum.skipped, 2);
        assert_eq!(sum.failures, vec!["first.checks_value", "third.many"]);
        assert!(!sum.ok());

        let mut out = String::new();
        let sum = run(&Ctx { value: 2 }, &[&FIRST], &mut out);
        assert!(sum.ok());
        assert!(out.ends_with("ok 3 skips # SKIP nothing to do on this machine\nok 1 first\n"));
    }

    #[test]
    fn empty_run() {
        let mut out = String::new();
        let sum = run::<Ctx>(&Ctx { value: 0 }, &[], &mut out);
        assert_eq!(out, "KTAP version 1\n1..0\n");
        assert!(sum.ok());
    }
}

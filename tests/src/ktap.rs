//! A KTAP reader for the guests' test output (Linux's
//! Documentation/dev-tools/ktap.rst): the version line, the plan, one
//! result line per suite with its nested subtests. A run passes only with a
//! version line, a plan, exactly the planned results in order, and no
//! `not ok` at any level.

/// One test or suite result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    pub number: usize,
    pub name: String,
    pub ok: bool,
    pub skip: bool,
    /// Nested results (a suite's tests).
    pub subtests: Vec<TestResult>,
}

/// A parsed KTAP document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ktap {
    pub version: bool,
    pub plan: Option<usize>,
    pub results: Vec<TestResult>,
}

fn parse_result(line: &str) -> Option<(bool, usize, String, bool)> {
    let (ok, rest) = if let Some(r) = line.strip_prefix("ok ") {
        (true, r)
    } else {
        (false, line.strip_prefix("not ok ")?)
    };
    let (number, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let number = number.parse().ok()?;
    let (name, directive) = match rest.split_once(" # ") {
        Some((n, d)) => (n, d),
        None => (rest, ""),
    };
    Some((
        ok,
        number,
        name.trim().to_string(),
        directive.trim_start().starts_with("SKIP"),
    ))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Parses KTAP lines (other lines, such as the guest's own messages, are
/// ignored as the spec allows).
pub fn parse(lines: &[String]) -> Ktap {
    let mut k = Ktap::default();
    let mut pending: Vec<TestResult> = Vec::new();
    for line in lines {
        let t = line.trim_start();
        let depth = indent(line);
        if depth == 0 && t == "KTAP version 1" {
            k.version = true;
        } else if depth == 0 && t.starts_with("1..") {
            k.plan = t[3..].trim().parse().ok();
        } else if let Some((ok, number, name, skip)) = parse_result(t) {
            let r = TestResult {
                number,
                name,
                ok,
                skip,
                subtests: Vec::new(),
            };
            if depth == 0 {
                k.results.push(TestResult {
                    subtests: std::mem::take(&mut pending),
                    ..r
                });
            } else {
                pending.push(r);
            }
        }
    }
    k
}

impl Ktap {
    /// Why this run does not pass, if it does not.
    pub fn verdict(&self) -> Result<(), String> {
        if !self.version {
            return Err("no 'KTAP version 1' line".into());
        }
        let plan = self.plan.ok_or("no plan line")?;
        if self.results.len() != plan {
            return Err(format!(
                "plan 1..{plan} but {} results (a crash?)",
                self.results.len()
            ));
        }
        for (i, r) in self.results.iter().enumerate() {
            if r.number != i + 1 {
                return Err(format!("result {} numbered {}", i + 1, r.number));
            }
            if !r.ok {
                return Err(format!("not ok {} {}", r.number, r.name));
            }
            if let Some(t) = r.subtests.iter().find(|t| !t.ok) {
                return Err(format!(
                    "not ok {} {} in suite {}",
                    t.number, t.name, r.name
                ));
            }
        }
        Ok(())
    }

    pub fn suite(&self, name: &str) -> Option<&TestResult> {
        self.results.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn passing_failing_and_crashed_runs() {
        let good = lines(
            "KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: a\n    1..2\n    ok 1 x\n    ok 2 y # SKIP no\nok 1 a\nguest: noise\n    KTAP version 1\n    1..1\n    ok 1 z\nok 2 b\n",
        );
        let k = parse(&good);
        assert_eq!(k.verdict(), Ok(()));
        assert_eq!(k.suite("a").unwrap().subtests.len(), 2);
        assert!(k.suite("a").unwrap().subtests[1].skip);

        let failing = lines("KTAP version 1\n1..1\n    not ok 1 x\nok 1 a\n");
        assert!(parse(&failing)
            .verdict()
            .unwrap_err()
            .contains("not ok 1 x"));
        let crashed = lines("KTAP version 1\n1..2\nok 1 a\n");
        assert!(parse(&crashed).verdict().unwrap_err().contains("a crash"));
        assert!(parse(&lines("ok 1 a")).verdict().is_err());
    }
}

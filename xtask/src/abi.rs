//! The ABI compatibility checker behind `cargo xtask abi-check` and
//! `cargo xtask abi-record`.
//!
//! `pv_abi::layout::describe` writes a description of the ABI from the
//! pv-abi types themselves (format: `pv-abi/src/layout.rs`). Every released
//! version's description is kept in `pv-abi/abi/vMAJOR.MINOR.abi`. This
//! module parses descriptions ([`parse`]), compares two of them
//! ([`compare`]), classifying each difference as compatible or breaking by
//! the rules in pv-abi's crate docs, and applies the release policy
//! ([`check`]): against every recorded version of the same major, the
//! current types may only differ compatibly, and only with a higher minor.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An ABI version, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

impl Version {
    pub const fn new(major: u16, minor: u16) -> Self {
        Version { major, minor }
    }

    /// `"1.0"` → 1.0.
    pub fn parse(s: &str) -> Option<Version> {
        let (a, b) = s.split_once('.')?;
        Some(Version::new(a.parse().ok()?, b.parse().ok()?))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The build of pv-abi (a cargo feature, forwarded by the kernels) that
/// speaks each older recorded version. `abi-check` proves that each one
/// describes exactly the recorded version.
pub const VERSION_FEATURES: &[(Version, &str)] = &[
    (Version::new(1, 0), "abi-1-0"),
    (Version::new(1, 1), "abi-1-1"),
    (Version::new(1, 2), "abi-1-2"),
];

/// One field of a structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u64,
    pub size: u64,
    pub ty: String,
}

/// One structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Struct {
    pub name: String,
    pub size: u64,
    pub align: u64,
    /// The field that carries the structure's own size, if any.
    pub sized_by: Option<String>,
    pub fields: Vec<Field>,
}

impl Struct {
    fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// One hypercall argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    pub name: String,
    pub register: String,
    pub ty: String,
}

/// One hypercall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub nr: u64,
    pub name: String,
    /// The feature bit's name without which it answers `Unsupported`.
    pub feature: Option<String>,
    pub returns: String,
    pub args: Vec<Arg>,
}

/// A whole ABI description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    pub version: Version,
    pub structs: Vec<Struct>,
    pub hypercalls: Vec<Call>,
    pub constants: Vec<(String, u64)>,
    pub texts: Vec<(String, String)>,
    /// (bit, name).
    pub features: Vec<(u64, String)>,
    /// (code, errno name).
    pub errors: Vec<(i64, String)>,
    /// (shutdown status, name).
    pub statuses: Vec<(u64, String)>,
    /// (exit code, name).
    pub exits: Vec<(u64, String)>,
}

impl Description {
    fn find_struct(&self, name: &str) -> Option<&Struct> {
        self.structs.iter().find(|s| s.name == name)
    }

    fn call_by_nr(&self, nr: u64) -> Option<&Call> {
        self.hypercalls.iter().find(|c| c.nr == nr)
    }

    fn call_by_name(&self, name: &str) -> Option<&Call> {
        self.hypercalls.iter().find(|c| c.name == name)
    }
}

/// The words of one line: single-space separated, the last value of a
/// record may run to the end of the line.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    fn word(&mut self) -> Result<&'a str, String> {
        if self.rest.is_empty() {
            return Err("the line ends too early".into());
        }
        let (w, r) = self.rest.split_once(' ').unwrap_or((self.rest, ""));
        self.rest = r;
        Ok(w)
    }

    fn key(&mut self, key: &str) -> Result<(), String> {
        match self.word()? {
            w if w == key => Ok(()),
            w => Err(format!("expected '{key}', found '{w}'")),
        }
    }

    fn number(&mut self) -> Result<u64, String> {
        let w = self.word()?;
        parse_number(w).ok_or_else(|| format!("'{w}' is not a number"))
    }

    fn signed(&mut self) -> Result<i64, String> {
        let w = self.word()?;
        match w.strip_prefix('-') {
            Some(n) => parse_number(n)
                .and_then(|v| i64::try_from(v).ok())
                .map(|v| -v),
            None => parse_number(w).and_then(|v| i64::try_from(v).ok()),
        }
        .ok_or_else(|| format!("'{w}' is not a number"))
    }

    /// The rest of the line (non-empty).
    fn rest(&mut self) -> Result<&'a str, String> {
        if self.rest.is_empty() {
            return Err("the line ends too early".into());
        }
        Ok(std::mem::take(&mut self.rest))
    }

    fn end(&self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected '{}' at the end", self.rest))
        }
    }
}

fn parse_number(w: &str) -> Option<u64> {
    match w.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => w.parse().ok(),
    }
}

fn unique(what: &str, names: impl Iterator<Item = String>) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n.clone()) {
            return Err(format!("{what} '{n}' appears twice"));
        }
    }
    Ok(())
}

/// Parses a description (the format of `pv-abi/src/layout.rs`).
pub fn parse(text: &str) -> Result<Description, String> {
    let mut d = Description {
        version: Version::new(0, 0),
        structs: Vec::new(),
        hypercalls: Vec::new(),
        constants: Vec::new(),
        texts: Vec::new(),
        features: Vec::new(),
        errors: Vec::new(),
        statuses: Vec::new(),
        exits: Vec::new(),
    };
    let mut version = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        parse_line(line, &mut d, &mut version).map_err(|e| format!("line {}: {e}", i + 1))?;
    }
    d.version = version.ok_or("no 'abi MAJOR.MINOR' line")?;
    unique("struct", d.structs.iter().map(|s| s.name.clone()))?;
    for s in &d.structs {
        unique(
            &format!("field of {}", s.name),
            s.fields.iter().map(|f| f.name.clone()),
        )?;
    }
    unique("hypercall", d.hypercalls.iter().map(|c| c.name.clone()))?;
    unique(
        "hypercall number",
        d.hypercalls.iter().map(|c| c.nr.to_string()),
    )?;
    unique("constant", d.constants.iter().map(|c| c.0.clone()))?;
    unique("text constant", d.texts.iter().map(|c| c.0.clone()))?;
    unique("feature bit", d.features.iter().map(|c| c.0.to_string()))?;
    unique("error code", d.errors.iter().map(|c| c.0.to_string()))?;
    unique(
        "shutdown status",
        d.statuses.iter().map(|c| c.0.to_string()),
    )?;
    unique("exit code", d.exits.iter().map(|c| c.0.to_string()))?;
    Ok(d)
}

fn parse_line(
    line: &str,
    d: &mut Description,
    version: &mut Option<Version>,
) -> Result<(), String> {
    let mut w = Words { rest: line };
    match w.word()? {
        "abi" => {
            let v = w.word()?;
            if version.is_some() {
                return Err("a second 'abi' line".into());
            }
            *version = Some(Version::parse(v).ok_or_else(|| format!("'{v}' is not MAJOR.MINOR"))?);
            w.end()
        }
        "struct" => {
            let name = w.word()?.to_string();
            w.key("size")?;
            let size = w.number()?;
            w.key("align")?;
            let align = w.number()?;
            let sized_by = if w.rest.is_empty() {
                None
            } else {
                w.key("sized-by")?;
                Some(w.word()?.to_string())
            };
            w.end()?;
            d.structs.push(Struct {
                name,
                size,
                align,
                sized_by,
                fields: Vec::new(),
            });
            Ok(())
        }
        "field" => {
            let owner = w.word()?;
            let s = d
                .structs
                .last_mut()
                .filter(|s| s.name == owner)
                .ok_or_else(|| format!("field of '{owner}' outside its struct"))?;
            let name = w.word()?.to_string();
            w.key("offset")?;
            let offset = w.number()?;
            w.key("size")?;
            let size = w.number()?;
            w.key("type")?;
            let ty = w.rest()?.to_string();
            s.fields.push(Field {
                name,
                offset,
                size,
                ty,
            });
            Ok(())
        }
        "hypercall" => {
            let nr = w.number()?;
            let name = w.word()?.to_string();
            w.key("feature")?;
            let feature = match w.word()? {
                "-" => None,
                f => Some(f.to_string()),
            };
            w.key("returns")?;
            let returns = w.rest()?.to_string();
            d.hypercalls.push(Call {
                nr,
                name,
                feature,
                returns,
                args: Vec::new(),
            });
            Ok(())
        }
        "arg" => {
            let owner = w.word()?;
            let c = d
                .hypercalls
                .last_mut()
                .filter(|c| c.name == owner)
                .ok_or_else(|| format!("arg of '{owner}' outside its hypercall"))?;
            let index = w.number()?;
            if index != c.args.len() as u64 {
                return Err(format!("arg {index} out of order"));
            }
            let name = w.word()?.to_string();
            w.key("register")?;
            let register = w.word()?.to_string();
            w.key("type")?;
            let ty = w.rest()?.to_string();
            c.args.push(Arg { name, register, ty });
            Ok(())
        }
        "constant" => {
            let name = w.word()?.to_string();
            let value = w.number()?;
            w.end()?;
            d.constants.push((name, value));
            Ok(())
        }
        "text" => {
            let name = w.word()?.to_string();
            let value = w.rest()?.to_string();
            d.texts.push((name, value));
            Ok(())
        }
        "feature" => {
            let bit = w.number()?;
            let name = w.word()?.to_string();
            w.end()?;
            d.features.push((bit, name));
            Ok(())
        }
        "error" => {
            let code = w.signed()?;
            let name = w.word()?.to_string();
            w.end()?;
            d.errors.push((code, name));
            Ok(())
        }
        "status" | "exit" => {
            let kind = if line.starts_with("status") {
                &mut d.statuses
            } else {
                &mut d.exits
            };
            let value = w.number()?;
            let name = w.word()?.to_string();
            w.end()?;
            kind.push((value, name));
            Ok(())
        }
        other => Err(format!("unknown record '{other}'")),
    }
}

/// Whether a difference keeps old builds working.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Allowed in a new minor version.
    Compatible,
    /// Needs a new major version.
    Breaking,
}

/// One difference between two descriptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub class: Class,
    /// What it is about: `StartInfo.nr_vcpus`, `hypercall get_vnuma`,
    /// `constant MAX_VNODES`, ...
    pub subject: String,
    /// What changed, with the offsets, sizes or values involved.
    pub detail: String,
}

impl Difference {
    pub fn is_breaking(&self) -> bool {
        self.class == Class::Breaking
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = match self.class {
            Class::Compatible => "compatible",
            Class::Breaking => "BREAKING  ",
        };
        write!(f, "{class} {}: {}", self.subject, self.detail)
    }
}

struct Diffs(Vec<Difference>);

impl Diffs {
    fn push(&mut self, class: Class, subject: impl Into<String>, detail: impl Into<String>) {
        self.0.push(Difference {
            class,
            subject: subject.into(),
            detail: detail.into(),
        });
    }
}

/// Every difference from `old` to `new`, classified by pv-abi's rules:
/// new structures, hypercalls, constants, feature bits, error codes and
/// statuses, fields appended to a structure that carries its own size,
/// arguments given to a hypercall's unused (must-be-zero) registers, a
/// higher minor version, and renames that keep the layout are compatible;
/// anything that moves, resizes, retypes or removes a field, changes a
/// structure's alignment, renumbers or removes a hypercall, removes or
/// changes a constant, or reuses a number is breaking.
pub fn compare(old: &Description, new: &Description) -> Vec<Difference> {
    use Class::{Breaking, Compatible};
    let mut d = Diffs(Vec::new());
    if old.version != new.version {
        let class = if old.version.major == new.version.major && new.version > old.version {
            Compatible
        } else {
            Breaking
        };
        d.push(
            class,
            "version",
            format!("{} -> {}", old.version, new.version),
        );
    }

    for o in &old.structs {
        match new.find_struct(&o.name) {
            None => d.push(
                Breaking,
                format!("struct {}", o.name),
                format!("removed (was size {}, align {})", o.size, o.align),
            ),
            Some(n) => compare_struct(o, n, &mut d),
        }
    }
    for n in &new.structs {
        if old.find_struct(&n.name).is_none() {
            d.push(
                Compatible,
                format!("struct {}", n.name),
                format!("added (size {}, align {})", n.size, n.align),
            );
        }
    }

    compare_hypercalls(old, new, &mut d);

    compare_named(
        "constant",
        &old.constants,
        &new.constants,
        &mut d,
        |name, a, b| {
            if name == "ABI_MINOR" && b > a {
                Compatible
            } else {
                Breaking
            }
        },
    );
    compare_named("text", &old.texts, &new.texts, &mut d, |_, _, _| Breaking);
    compare_numbered("feature bit", &old.features, &new.features, &mut d);
    compare_numbered("error code", &old.errors, &new.errors, &mut d);
    compare_numbered("shutdown status", &old.statuses, &new.statuses, &mut d);
    compare_numbered("exit code", &old.exits, &new.exits, &mut d);
    d.0
}

fn compare_struct(o: &Struct, n: &Struct, d: &mut Diffs) {
    use Class::{Breaking, Compatible};
    let s = &o.name;
    if o.align != n.align {
        d.push(
            Breaking,
            format!("struct {s}"),
            format!("alignment {} -> {}", o.align, n.align),
        );
    }
    match (&o.sized_by, &n.sized_by) {
        (Some(a), Some(b)) if a != b => d.push(
            Breaking,
            format!("struct {s}"),
            format!("carries its size in `{b}` instead of `{a}`"),
        ),
        (Some(a), None) => d.push(
            Breaking,
            format!("struct {s}"),
            format!("no longer carries its own size (was `{a}`)"),
        ),
        (None, Some(b)) => d.push(
            Compatible,
            format!("struct {s}"),
            format!("now carries its own size in `{b}`"),
        ),
        _ => {}
    }
    let mut matched: BTreeSet<&str> = BTreeSet::new();
    for of in &o.fields {
        let f = format!("{s}.{}", of.name);
        if let Some(nf) = n.field(&of.name) {
            matched.insert(&nf.name);
            if nf.offset != of.offset {
                d.push(
                    Breaking,
                    &f,
                    format!(
                        "moved from offset {} to offset {} ({}, {} bytes)",
                        of.offset, nf.offset, of.ty, of.size
                    ),
                );
            }
            if nf.size != of.size {
                d.push(
                    Breaking,
                    &f,
                    format!(
                        "resized from {} to {} bytes at offset {} ({} -> {})",
                        of.size, nf.size, of.offset, of.ty, nf.ty
                    ),
                );
            } else if nf.ty != of.ty {
                d.push(
                    Breaking,
                    &f,
                    format!(
                        "retyped from {} to {} at offset {} ({} bytes)",
                        of.ty, nf.ty, of.offset, of.size
                    ),
                );
            }
            continue;
        }
        let renamed = n.fields.iter().find(|nf| {
            o.field(&nf.name).is_none()
                && !matched.contains(nf.name.as_str())
                && nf.offset == of.offset
                && nf.size == of.size
                && nf.ty == of.ty
        });
        match renamed {
            Some(nf) => {
                matched.insert(&nf.name);
                d.push(
                    Compatible,
                    &f,
                    format!(
                        "renamed to {}; offset {}, size {} and type {} unchanged",
                        nf.name, of.offset, of.size, of.ty
                    ),
                );
            }
            None => d.push(
                Breaking,
                &f,
                format!(
                    "removed (was offset {}, {} bytes, {})",
                    of.offset, of.size, of.ty
                ),
            ),
        }
    }
    let mut appended_only = true;
    for nf in n
        .fields
        .iter()
        .filter(|nf| !matched.contains(nf.name.as_str()))
    {
        let f = format!("{s}.{}", nf.name);
        let at = format!("offset {}, {} bytes, {}", nf.offset, nf.size, nf.ty);
        if nf.offset < o.size {
            appended_only = false;
            d.push(
                Breaking,
                &f,
                format!(
                    "added inside the structure ({at}; the old size was {})",
                    o.size
                ),
            );
        } else if let (Some(by), true) = (&o.sized_by, o.sized_by == n.sized_by) {
            d.push(
                Compatible,
                &f,
                format!("appended ({at}); {s} carries its own size in `{by}`"),
            );
        } else {
            appended_only = false;
            d.push(
                Breaking,
                &f,
                format!("appended ({at}), but {s} does not carry its own size"),
            );
        }
    }
    if n.size != o.size {
        let class = if n.size > o.size && appended_only && o.sized_by.is_some() {
            Compatible
        } else {
            Breaking
        };
        d.push(
            class,
            format!("struct {s}"),
            format!("size {} -> {} bytes", o.size, n.size),
        );
    }
}

fn compare_hypercalls(old: &Description, new: &Description, d: &mut Diffs) {
    use Class::{Breaking, Compatible};
    for oc in &old.hypercalls {
        let subject = format!("hypercall {}", oc.name);
        match (new.call_by_nr(oc.nr), new.call_by_name(&oc.name)) {
            (_, Some(nc)) if nc.nr != oc.nr => d.push(
                Breaking,
                subject,
                format!("renumbered from {} to {}", oc.nr, nc.nr),
            ),
            (Some(nc), _) => {
                if nc.name != oc.name {
                    d.push(
                        Compatible,
                        &subject,
                        format!("number {} renamed to {}", oc.nr, nc.name),
                    );
                }
                compare_call(oc, nc, &subject, d);
            }
            (None, _) => d.push(Breaking, subject, format!("number {} removed", oc.nr)),
        }
    }
    for nc in &new.hypercalls {
        let known = old.call_by_nr(nc.nr).is_some() || old.call_by_name(&nc.name).is_some();
        if !known {
            d.push(
                Compatible,
                format!("hypercall {}", nc.name),
                format!(
                    "added as number {} ({} arguments, feature {})",
                    nc.nr,
                    nc.args.len(),
                    nc.feature.as_deref().unwrap_or("-")
                ),
            );
        }
    }
}

fn compare_call(o: &Call, n: &Call, subject: &str, d: &mut Diffs) {
    use Class::{Breaking, Compatible};
    match (&o.feature, &n.feature) {
        (None, Some(f)) => d.push(
            Breaking,
            subject,
            format!("now needs feature {f}: older guests call it without checking"),
        ),
        (Some(f), None) => d.push(Compatible, subject, format!("no longer needs feature {f}")),
        (Some(a), Some(b)) if a != b => d.push(
            Breaking,
            subject,
            format!("needs feature {b} instead of {a}"),
        ),
        _ => {}
    }
    if o.returns != n.returns {
        d.push(
            Breaking,
            subject,
            format!("result changed from '{}' to '{}'", o.returns, n.returns),
        );
    }
    for (i, oa) in o.args.iter().enumerate() {
        let what = format!("{subject} argument {i}");
        match n.args.get(i) {
            None => d.push(
                Breaking,
                what,
                format!("{} ({}, {}) removed", oa.name, oa.register, oa.ty),
            ),
            Some(na) => {
                if na.register != oa.register {
                    d.push(
                        Breaking,
                        &what,
                        format!("{} moved from {} to {}", oa.name, oa.register, na.register),
                    );
                }
                if na.ty != oa.ty {
                    d.push(
                        Breaking,
                        &what,
                        format!(
                            "{} ({}) retyped from {} to {}",
                            oa.name, oa.register, oa.ty, na.ty
                        ),
                    );
                }
                if na.name != oa.name {
                    d.push(
                        Compatible,
                        &what,
                        format!("{} ({}) renamed to {}", oa.name, oa.register, na.name),
                    );
                }
            }
        }
    }
    for (i, na) in n.args.iter().enumerate().skip(o.args.len()) {
        d.push(
            Compatible,
            format!("{subject} argument {i}"),
            format!(
                "{} ({}, {}) added: the register had to be 0, which must keep the old meaning",
                na.name, na.register, na.ty
            ),
        );
    }
}

/// Constants and text constants: identified by name.
fn compare_named<T: PartialEq + fmt::Display>(
    what: &str,
    old: &[(String, T)],
    new: &[(String, T)],
    d: &mut Diffs,
    changed: impl Fn(&str, &T, &T) -> Class,
) {
    for (name, ov) in old {
        let subject = format!("{what} {name}");
        match new.iter().find(|(n, _)| n == name) {
            None => d.push(Class::Breaking, subject, format!("removed (was {ov})")),
            Some((_, nv)) if nv != ov => {
                d.push(changed(name, ov, nv), subject, format!("{ov} -> {nv}"))
            }
            Some(_) => {}
        }
    }
    for (name, nv) in new {
        if !old.iter().any(|(n, _)| n == name) {
            d.push(
                Class::Compatible,
                format!("{what} {name}"),
                format!("added ({nv})"),
            );
        }
    }
}

/// Feature bits, error codes, statuses, exit codes: identified by number.
fn compare_numbered<N: PartialEq + fmt::Display>(
    what: &str,
    old: &[(N, String)],
    new: &[(N, String)],
    d: &mut Diffs,
) {
    for (v, oname) in old {
        let subject = format!("{what} {v}");
        match new.iter().find(|(n, _)| n == v) {
            None => d.push(Class::Breaking, subject, format!("{oname} removed")),
            Some((_, nname)) if nname != oname => d.push(
                Class::Compatible,
                subject,
                format!("renamed from {oname} to {nname}"),
            ),
            Some(_) => {}
        }
    }
    for (v, nname) in new {
        if !old.iter().any(|(n, _)| n == v) {
            let moved = old
                .iter()
                .find(|(_, o)| o == nname)
                .map(|(o, _)| format!(" (it was {what} {o})"))
                .unwrap_or_default();
            d.push(
                Class::Compatible,
                format!("{what} {v}"),
                format!("{nname} added{moved}"),
            );
        }
    }
}

/// The description of the ABI the current pv-abi types define.
pub fn current() -> Description {
    let mut text = String::new();
    pv_abi::layout::describe(&mut text).expect("writing to a String cannot fail");
    parse(&text).unwrap_or_else(|e| panic!("pv-abi's own description does not parse: {e}"))
}

/// The text of the current description (what `abi-record` stores).
pub fn current_text() -> String {
    let mut text = String::new();
    pv_abi::layout::describe(&mut text).expect("writing to a String cannot fail");
    text
}

/// Where the released versions' descriptions are kept.
pub fn recorded_dir(root: &Path) -> PathBuf {
    root.join("pv-abi").join("abi")
}

/// The file of one version.
pub fn recorded_file(root: &Path, v: Version) -> PathBuf {
    recorded_dir(root).join(format!("v{v}.abi"))
}

/// A recorded version: its file and its description.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: PathBuf,
    pub description: Description,
}

/// Every recorded description, in version order. Each file's name must
/// match the version it describes.
pub fn recorded(root: &Path) -> Result<Vec<Recorded>, String> {
    let dir = recorded_dir(root);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for e in entries {
        let path = e.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.extension().and_then(|x| x.to_str()) != Some("abi") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let description = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem != format!("v{}", description.version) {
            return Err(format!(
                "{} describes ABI {}: it should be named v{}.abi",
                path.display(),
                description.version,
                description.version
            ));
        }
        out.push(Recorded { path, description });
    }
    out.sort_by_key(|r| r.description.version);
    Ok(out)
}

/// What [`check`] found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Everything to print, in order.
    pub lines: Vec<String>,
    /// Why the check failed (empty if it passed).
    pub failures: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The release policy: the current description against every recorded one.
///
/// - Another major: not compared (a new major may change anything).
/// - The same version: must be identical (a released version never
///   changes; a change needs a new minor, or a new major if it breaks).
/// - An older version of the same major: every difference must be
///   compatible.
/// - A newer recorded version than the current one is an error.
pub fn check(current: &Description, recorded: &[Recorded], root: &Path) -> Report {
    let mut r = Report::default();
    let cur = current.version;
    r.lines.push(format!(
        "abi-check: the current pv-abi types describe ABI {cur}"
    ));
    for rec in recorded {
        let v = rec.description.version;
        let file = rec
            .path
            .strip_prefix(root)
            .unwrap_or(&rec.path)
            .display()
            .to_string();
        if v.major != cur.major {
            r.lines.push(format!(
                "abi-check: ABI {v} ({file}): another major version, not compared"
            ));
            continue;
        }
        if v > cur {
            r.failures.push(format!(
                "ABI {v} is recorded ({file}) but the current types describe the older {cur}"
            ));
            continue;
        }
        let diffs = compare(&rec.description, current);
        let breaking = diffs.iter().filter(|d| d.is_breaking()).count();
        if diffs.is_empty() {
            r.lines
                .push(format!("abi-check: against ABI {v} ({file}): identical"));
            continue;
        }
        r.lines.push(format!(
            "abi-check: against ABI {v} ({file}): {} difference(s), {breaking} breaking",
            diffs.len()
        ));
        for d in &diffs {
            r.lines.push(format!("  {d}"));
        }
        if breaking > 0 {
            r.failures.push(format!(
                "{breaking} breaking change(s) to released ABI {v}: keep the released layout, or make a new major version (ABI_MAJOR)"
            ));
        }
        if v == cur && breaking == 0 {
            r.failures.push(format!(
                "ABI {v} is released ({file}) and the current types differ from it: a compatible change needs a new minor version (ABI_MINOR), then `cargo xtask abi-record`"
            ));
        }
    }
    if !recorded.iter().any(|rec| rec.description.version == cur) {
        r.lines.push(format!(
            "abi-check: ABI {cur} is not recorded yet (unreleased); `cargo xtask abi-record` records it"
        ));
    }
    r
}

/// Runs pv-abi's `abi_description` example built with `feature` (in its
/// own target directory) and returns what it describes.
pub fn describe_build(
    root: &Path,
    feature: &str,
    target_dir: &Path,
) -> Result<Description, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["run", "--quiet", "--package", "pv-abi", "--example"])
        .args(["abi_description", "--features", feature, "--target-dir"])
        .arg(target_dir)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building pv-abi with feature {feature} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| format!("pv-abi with feature {feature}: {e}"))
}

/// Checks that the build of each [`VERSION_FEATURES`] entry describes
/// exactly its recorded version.
pub fn check_version_builds(root: &Path, recorded: &[Recorded], report: &mut Report) {
    for &(v, feature) in VERSION_FEATURES {
        let Some(rec) = recorded.iter().find(|r| r.description.version == v) else {
            report.failures.push(format!(
                "feature {feature} builds ABI {v}, which is not recorded"
            ));
            continue;
        };
        let dir = root.join("target").join(format!("abi-{v}"));
        match describe_build(root, feature, &dir) {
            Err(e) => report.failures.push(e),
            Ok(built) => {
                let diffs = compare(&rec.description, &built);
                if diffs.is_empty() {
                    report.lines.push(format!(
                        "abi-check: pv-abi built with feature {feature} describes exactly the recorded ABI {v}"
                    ));
                } else {
                    report.lines.push(format!(
                        "abi-check: pv-abi built with feature {feature} differs from the recorded ABI {v}:"
                    ));
                    for d in &diffs {
                        report.lines.push(format!("  {d}"));
                    }
                    report.failures.push(format!(
                        "a kernel built with feature {feature} would not speak ABI {v} as released"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur() -> Description {
        current()
    }

    fn breaking(diffs: &[Difference]) -> Vec<String> {
        diffs
            .iter()
            .filter(|d| d.is_breaking())
            .map(|d| format!("{}: {}", d.subject, d.detail))
            .collect()
    }

    fn field_mut<'a>(d: &'a mut Description, s: &str, f: &str) -> &'a mut Field {
        d.structs
            .iter_mut()
            .find(|x| x.name == s)
            .and_then(|x| x.fields.iter_mut().find(|y| y.name == f))
            .expect("field exists")
    }

    #[test]
    fn the_current_description_round_trips_and_equals_itself() {
        let d = cur();
        assert_eq!(d.version.major, pv_abi::ABI_MAJOR);
        assert_eq!(d.version.minor, pv_abi::ABI_MINOR);
        assert!(d.structs.iter().any(|s| s.name == "StartInfo"));
        assert_eq!(d.hypercalls.len(), pv_abi::Hypercall::ALL.len());
        assert!(compare(&d, &d).is_empty());
    }

    #[test]
    fn catches_a_moved_field() {
        let old = cur();
        let mut new = old.clone();
        // Swap nr_vcpus (offset 20) and nr_vnodes (offset 24).
        field_mut(&mut new, "StartInfo", "nr_vcpus").offset = 24;
        field_mut(&mut new, "StartInfo", "nr_vnodes").offset = 20;
        let b = breaking(&compare(&old, &new));
        assert_eq!(
            b,
            vec![
                "StartInfo.nr_vcpus: moved from offset 20 to offset 24 (u32, 4 bytes)",
                "StartInfo.nr_vnodes: moved from offset 24 to offset 20 (u32, 4 bytes)",
            ]
        );
    }

    #[test]
    fn catches_a_resized_field() {
        let old = cur();
        let mut new = old.clone();
        let f = field_mut(&mut new, "MemRange", "flags");
        f.size = 8;
        f.ty = "u64".into();
        let m = new
            .structs
            .iter_mut()
            .find(|s| s.name == "MemRange")
            .unwrap();
        m.fields[4].offset = 24 + 4;
        m.size = 40;
        let b = breaking(&compare(&old, &new));
        assert!(
            b.contains(
                &"MemRange.flags: resized from 4 to 8 bytes at offset 20 (u32 -> u64)".into()
            ),
            "{b:?}"
        );
        assert!(
            b.contains(
                &"MemRange.maddr: moved from offset 24 to offset 28 (Maddr, 8 bytes)".into()
            ),
            "{b:?}"
        );
        assert!(
            b.contains(&"struct MemRange: size 32 -> 40 bytes".into()),
            "{b:?}"
        );
    }

    #[test]
    fn catches_a_renumbered_hypercall() {
        let old = cur();
        let mut new = old.clone();
        let c = new
            .hypercalls
            .iter_mut()
            .find(|c| c.name == "get_vnuma")
            .unwrap();
        c.nr = 9;
        let b = breaking(&compare(&old, &new));
        assert_eq!(b, vec!["hypercall get_vnuma: renumbered from 3 to 9"]);
    }

    #[test]
    fn catches_a_removed_constant() {
        let old = cur();
        let mut new = old.clone();
        new.constants.retain(|(n, _)| n != "MAX_VNODES");
        let b = breaking(&compare(&old, &new));
        assert_eq!(b, vec!["constant MAX_VNODES: removed (was 64)"]);

        let mut changed = old.clone();
        for c in &mut changed.constants {
            if c.0 == "QUERY_ALIGN" {
                c.1 = 16;
            }
        }
        assert_eq!(
            breaking(&compare(&old, &changed)),
            vec!["constant QUERY_ALIGN: 8 -> 16"]
        );
    }

    #[test]
    fn other_breaking_changes() {
        let old = cur();
        // A removed hypercall, a removed feature bit, a retyped field, an
        // argument retyped, a hypercall that now needs a feature.
        let mut new = old.clone();
        new.hypercalls.retain(|c| c.name != "physinfo");
        new.features.retain(|(b, _)| *b != 1);
        field_mut(&mut new, "StartInfo", "acpi_rsdp").ty = "Maddr".into();
        let cw = new
            .hypercalls
            .iter_mut()
            .find(|c| c.name == "console_write")
            .unwrap();
        cw.args[1].ty = "u32".into();
        cw.feature = Some("vnuma".into());
        let b = breaking(&compare(&old, &new));
        for want in [
            "hypercall physinfo: number 4 removed",
            "feature bit 1: physinfo removed",
            "StartInfo.acpi_rsdp: retyped from Gpa to Maddr at offset 32 (8 bytes)",
            "hypercall console_write argument 1: len (rsi) retyped from u64 to u32",
            "hypercall console_write: now needs feature vnuma: older guests call it without checking",
        ] {
            assert!(b.contains(&want.to_string()), "{want}: {b:?}");
        }
        assert_eq!(b.len(), 5, "{b:?}");
    }

    #[test]
    fn compatible_additions() {
        let old = cur();
        let mut new = old.clone();
        new.version.minor += 1;
        for c in &mut new.constants {
            if c.0 == "ABI_MINOR" {
                c.1 += 1;
            }
        }
        // A field appended to a structure that carries its own size.
        let p = new
            .structs
            .iter_mut()
            .find(|s| s.name == "PhysInfo")
            .unwrap();
        let at = p.size;
        p.fields.push(Field {
            name: "node_extra".into(),
            offset: at,
            size: 8,
            ty: "Gpa".into(),
        });
        p.size += 8;
        new.hypercalls.push(Call {
            nr: 99,
            name: "new_call".into(),
            feature: Some("new-bit".into()),
            returns: "0".into(),
            args: vec![Arg {
                name: "x".into(),
                register: "rdi".into(),
                ty: "u64".into(),
            }],
        });
        new.features.push((40, "new-bit".into()));
        new.constants.push(("NEW_LIMIT".into(), 7));
        new.errors.push((-95, "EOPNOTSUPP".into()));
        let diffs = compare(&old, &new);
        assert!(breaking(&diffs).is_empty(), "{diffs:#?}");
        let subjects: Vec<&str> = diffs.iter().map(|d| d.subject.as_str()).collect();
        for s in [
            "version",
            "PhysInfo.node_extra",
            "struct PhysInfo",
            "hypercall new_call",
            "constant ABI_MINOR",
            "constant NEW_LIMIT",
            "feature bit 40",
            "error code -95",
        ] {
            assert!(subjects.contains(&s), "{s}: {subjects:?}");
        }
        let appended = diffs
            .iter()
            .find(|d| d.subject == "PhysInfo.node_extra")
            .unwrap();
        assert_eq!(
            appended.detail,
            "appended (offset 56, 8 bytes, Gpa); PhysInfo carries its own size in `size`"
        );
    }

    #[test]
    fn appending_to_a_structure_without_its_size_breaks() {
        let old = cur();
        let mut new = old.clone();
        let m = new
            .structs
            .iter_mut()
            .find(|s| s.name == "VmemRange")
            .unwrap();
        m.fields.push(Field {
            name: "pnode".into(),
            offset: 24,
            size: 8,
            ty: "u64".into(),
        });
        m.size = 32;
        let b = breaking(&compare(&old, &new));
        assert_eq!(
            b,
            vec![
                "VmemRange.pnode: appended (offset 24, 8 bytes, u64), but VmemRange does not carry its own size",
                "struct VmemRange: size 24 -> 32 bytes",
            ]
        );
    }

    #[test]
    fn release_policy() {
        let root = Path::new("/nowhere");
        let rec = |d: &Description| Recorded {
            path: root.join(format!("pv-abi/abi/v{}.abi", d.version)),
            description: d.clone(),
        };
        let released = cur();
        // Unchanged: passes.
        assert!(check(&released, &[rec(&released)], root).ok());
        // A compatible change without a new minor: fails.
        let mut added = released.clone();
        added.constants.push(("NEW_LIMIT".into(), 7));
        let r = check(&added, &[rec(&released)], root);
        assert!(!r.ok());
        assert!(r.failures[0].contains("needs a new minor version"), "{r:?}");
        // The same change with a new minor: passes, and is reported.
        added.version.minor += 1;
        let r = check(&added, &[rec(&released)], root);
        assert!(r.ok(), "{r:?}");
        assert!(r
            .lines
            .iter()
            .any(|l| l.contains("compatible constant NEW_LIMIT: added (7)")));
        // A breaking change fails whatever the minor, naming it.
        let mut broken = added.clone();
        field_mut(&mut broken, "StartInfo", "flags").offset = 40;
        let r = check(&broken, &[rec(&released)], root);
        assert!(!r.ok());
        assert!(
            r.lines.iter().any(|l| {
                l
                == "  BREAKING   StartInfo.flags: moved from offset 16 to offset 40 (u32, 4 bytes)"
            }),
            "{:#?}",
            r.lines
        );
        // A new major is not compared with the old one.
        let mut major = broken.clone();
        major.version = Version::new(released.version.major + 1, 0);
        assert!(check(&major, &[rec(&released)], root).ok());
    }

    #[test]
    fn parse_errors_name_the_line() {
        assert!(parse("abi 1.0\nfield X y offset 0 size 4 type u32\n")
            .unwrap_err()
            .starts_with("line 2: "));
        assert!(parse("struct X size 4 align 4\n").is_err());
        assert!(parse("abi 1.0\nconstant A 1\nconstant A 2\n").is_err());
        assert!(parse("abi 1.0\nfrobnicate\n").is_err());
        let d = parse("# c\n\nabi 2.3\nconstant A 0x10\nerror -22 EINVAL\n").unwrap();
        assert_eq!(d.version, Version::new(2, 3));
        assert_eq!(d.constants, vec![("A".to_string(), 16)]);
        assert_eq!(d.errors, vec![(-22, "EINVAL".to_string())]);
    }

    /// What `cargo xtask abi-check` checks first, as a unit test: the
    /// current types against every recorded version.
    #[test]
    fn the_current_abi_keeps_every_recorded_version() {
        let root = crate::images::workspace_root();
        let recorded = recorded(&root).expect("recorded descriptions parse");
        let report = check(&cur(), &recorded, &root);
        assert!(
            report.ok(),
            "{}\n{:?}",
            report.lines.join("\n"),
            report.failures
        );
    }
}

//! Domain configs: text files passed as boot modules, in the spirit of Xen's
//! `xl.cfg`.
//!
//! # Format
//!
//! One `key = value` per line (`;` also ends a setting). `#` starts a comment
//! that runs to the end of the line (outside strings). A value is a string in
//! double or single quotes (escapes `\"`, `\'`, `\\`, `\n`, `\t`; a string
//! cannot span lines), a bare word (`512`, `0x200`, `compact`), or a list
//! `[ v, v, ... ]` that may span lines and may end with a comma. Quoted and
//! bare scalars are interchangeable (`memory = "512"` is `memory = 512`).
//! Keys are case-sensitive; every key may be given once.
//!
//! | key | value |
//! | --- | --- |
//! | `name` | required; 1 to 64 of `A-Z a-z 0-9 _ - .` (it appears in log lines that tools read) |
//! | `memory` | MiB, 1 to [`MAX_MEMORY_MIB`]; optional with `vnuma` (then the sum of the sizes), required without |
//! | `vcpus` | 1 to [`MAX_VCPUS`]; default: the vcpus listed in `vnuma`, or 1 |
//! | `cpus` | pinning: `"0-3,6"` or a list (`["0", "2-3"]`, concatenated), or `"all"` (no pinning). vcpu `i` runs on `cpus[i % len]`: a list as long as `vcpus` pins 1:1 |
//! | `vnuma` | a list of vnodes, each `"pnode=0,size=512,vcpus=0-1,vdistances=10,20"` or Xen's `["pnode=0", "size=512", ...]` |
//! | `layout` | `compact` (default), `node-bits`, `high-only` or `identity` (see `domain::layout`) |
//! | `cmdline` | the guest's command line, at most 1023 bytes, no control characters |
//! | `kernel` | which boot module is the guest image (a name matched against module strings); default: the guest image module |
//! | `pci` | PCI devices assigned to the domain: a list of `"bus:device.function"` (`[ "00:04.0" ]`, hexadecimal as `lspci` prints them), at most [`MAX_PCI_DEVICES`]; see `crate::pci` |
//! | `time_limit` | seconds of wall-clock time the domain may run (1 to [`MAX_TIME_LIMIT`]); when they are up it is ended (`killed: time limit of N s reached`), however it spins. Default: none |
//! | `weight` | the credit scheduler's weight (Xen's meaning): the domain's share of a contended CPU relative to other domains; 1 to [`MAX_WEIGHT`], default [`DEFAULT_WEIGHT`] |
//! | `vnuma_auto` | `1` (default) or `0`. Without `vnuma` the domain is placed automatically (`domain::placement`); when it needs several nodes, `1` gives it a vNUMA that tells the truth (one vnode per node used). `0` asks for one flat node, so the domain must then fit in one node |
//!
//! A vnode: `pnode` (required, the physical node its memory and vcpus live
//! on, or `auto`: the hypervisor chooses it, see `domain::placement`; a
//! vnode whose vcpus are pinned goes to the node of those CPUs, which must
//! all be on one node), `size` (required, MiB; 0 makes a memoryless vnode), `vcpus`
//! (optional: none makes a CPU-less vnode), `vdistances` (the vnode's row of
//! the distance matrix, one entry per vnode; default 10 to itself and 20 to
//! the others). Distances follow ACPI's SLIT rules as Linux checks them: 10 to
//! itself, more than 10 to any other vnode. The vnodes' vcpus must name each
//! of `0..vcpus` exactly once, and their sizes must add up to `memory`.
//!
//! Errors are [`ConfigError`]s, printed `file:line: message`. Problems with
//! something missing point at the last line of the file.
//!
//! Checks against the machine (does the node exist, has it the memory, do the
//! pinned CPUs exist and sit on their vnode's node, does the domain fit in
//! the machine at all) are a separate step: [`DomainConfig::check_against`].
//! Where the domain goes on a machine shared with other domains is
//! `domain::placement`'s answer.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::numa::topology::{Topology, MAX_CPUS};
use crate::numa::{CpuId, NodeId, LOCAL_DISTANCE, MAX_NODES, REMOTE_DISTANCE};
use crate::pci::Bdf;

/// Longest domain name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest guest command line, in bytes (1024 with its NUL).
pub const MAX_CMDLINE_LEN: usize = 1023;
/// Most vcpus a domain may have (one per machine CPU the hypervisor supports).
pub const MAX_VCPUS: u32 = MAX_CPUS as u32;
/// Largest `memory` (and vnode `size`) accepted, in MiB: 64 TiB.
pub const MAX_MEMORY_MIB: u64 = 1 << 26;
/// Most PCI devices one domain may be given.
pub const MAX_PCI_DEVICES: usize = 8;
/// [`DomainConfig::mirror_machine`]'s usual per-node cap, in MiB.
pub const MIRROR_NODE_MIB: u64 = 64;
/// The credit scheduler's default weight (Xen's `sched_credit` default).
pub const DEFAULT_WEIGHT: u32 = 256;
/// The longest `time_limit`, in seconds: a day.
pub const MAX_TIME_LIMIT: u32 = 86_400;
/// The largest weight, as Xen's credit scheduler accepts (1 to 65535).
pub const MAX_WEIGHT: u32 = 65535;
/// The placeholder `pnode` of a vnode listed in
/// [`DomainConfig::auto_vnodes`]: no node has this id, so a config used
/// before placement fails loudly instead of landing on node 0.
pub const AUTO_PNODE: NodeId = NodeId(u8::MAX);

const MIB: u64 = 1 << 20;
/// Lists may hold lists (Xen's vnuma form), no deeper.
const MAX_LIST_DEPTH: usize = 2;

/// How guest-physical addresses are chosen; see `domain::layout`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LayoutKind {
    /// From guest-physical 0, vnode after vnode.
    #[default]
    Compact,
    /// The vnode id in high address bits (SGI Altix style), sparse.
    NodeBits,
    /// Compact, but from 4 GiB: nothing below 4 GiB.
    HighOnly,
    /// Guest-physical == machine addresses.
    Identity,
}

impl LayoutKind {
    pub const ALL: [LayoutKind; 4] = [
        LayoutKind::Compact,
        LayoutKind::NodeBits,
        LayoutKind::HighOnly,
        LayoutKind::Identity,
    ];

    /// The config spelling.
    pub const fn name(self) -> &'static str {
        match self {
            LayoutKind::Compact => "compact",
            LayoutKind::NodeBits => "node-bits",
            LayoutKind::HighOnly => "high-only",
            LayoutKind::Identity => "identity",
        }
    }

    pub fn from_name(s: &str) -> Option<LayoutKind> {
        LayoutKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl fmt::Display for LayoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One virtual NUMA node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VnodeConfig {
    /// The physical node its memory must come from (and its vcpus run on);
    /// [`AUTO_PNODE`] while the vnode is in [`DomainConfig::auto_vnodes`].
    pub pnode: NodeId,
    /// MiB; 0 for a memoryless vnode.
    pub size_mib: u64,
    /// Its vcpus, in the order given.
    pub vcpus: Vec<u32>,
    /// Its row of the distance matrix: one entry per vnode.
    pub vdistances: Vec<u8>,
}

/// A parsed, self-consistent domain config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    pub name: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// Pinning: vcpu `i` runs on `cpus[i % cpus.len()]`; `None`: unpinned.
    pub cpus: Option<Vec<CpuId>>,
    /// Empty when the config has no `vnuma`: `domain::placement` fills
    /// them in.
    pub vnodes: Vec<VnodeConfig>,
    /// Indices (ascending) of the vnodes given `pnode=auto`: placement
    /// chooses their node and empties this list.
    pub auto_vnodes: Vec<usize>,
    pub layout: LayoutKind,
    pub cmdline: String,
    /// Which boot module is the guest image; `None`: the default image.
    pub kernel: Option<String>,
    /// PCI devices assigned to the domain (`crate::pci`).
    pub pci: Vec<Bdf>,
    /// Credit scheduler weight, 1 to [`MAX_WEIGHT`].
    pub weight: u32,
    /// `time_limit`: seconds the domain may run before it is ended.
    pub time_limit: Option<u32>,
    /// Whether a domain placed automatically over several nodes gets one
    /// vnode per node (`true`, the default) or must fit in one node.
    pub vnuma_auto: bool,
}

/// An empty, unnamed domain (which [`DomainConfig::validate`] refuses) with
/// every optional key at its default: a base for configs made in code.
impl Default for DomainConfig {
    fn default() -> Self {
        DomainConfig {
            name: String::new(),
            memory_mib: 0,
            vcpus: 1,
            cpus: None,
            vnodes: Vec::new(),
            auto_vnodes: Vec::new(),
            layout: LayoutKind::Compact,
            cmdline: String::new(),
            kernel: None,
            pci: Vec::new(),
            weight: DEFAULT_WEIGHT,
            time_limit: None,
            vnuma_auto: true,
        }
    }
}

/// A config problem, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// An error before the file name is attached: (line, message).
type Located = (usize, String);

// ---------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    LBrack,
    RBrack,
    Comma,
    Eq,
    /// A newline or `;`.
    End,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Str(s) => format!("string \"{}\"", s.escape_debug()),
        Tok::LBrack => "'['".into(),
        Tok::RBrack => "']'".into(),
        Tok::Comma => "','".into(),
        Tok::Eq => "'='".into(),
        Tok::End => "end of line".into(),
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | ':' | '/')
}

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, Located> {
    let mut toks = Vec::new();
    let mut line = 1;
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\n' => {
                toks.push((Tok::End, line));
                line += 1;
            }
            ';' => toks.push((Tok::End, line)),
            ' ' | '\t' | '\r' => {}
            '#' => while it.next_if(|&c| c != '\n').is_some() {},
            '[' => toks.push((Tok::LBrack, line)),
            ']' => toks.push((Tok::RBrack, line)),
            ',' => toks.push((Tok::Comma, line)),
            '=' => toks.push((Tok::Eq, line)),
            '"' | '\'' => {
                let mut s = String::new();
                loop {
                    match it.next() {
                        None | Some('\n') => return Err((line, "unterminated string".into())),
                        Some(q) if q == c => break,
                        Some('\\') => match it.next() {
                            Some(e @ ('"' | '\'' | '\\')) => s.push(e),
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            None | Some('\n') => return Err((line, "unterminated string".into())),
                            Some(e) => {
                                return Err((
                                    line,
                                    format!("unknown escape '\\{}' in a string", e.escape_debug()),
                                ))
                            }
                        },
                        Some(x) => s.push(x),
                    }
                }
                toks.push((Tok::Str(s), line));
            }
            c if is_word_char(c) => {
                let mut w = String::from(c);
                while let Some(x) = it.next_if(|&x| is_word_char(x)) {
                    w.push(x);
                }
                toks.push((Tok::Word(w), line));
            }
            c => return Err((line, format!("unexpected character '{}'", c.escape_debug()))),
        }
    }
    Ok(toks)
}

// ---------------------------------------------------------------------------
// Parser: tokens to `key = value` entries

#[derive(Clone, Debug, PartialEq, Eq)]
enum Val {
    Scalar(String),
    List(Vec<Value>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Value {
    val: Val,
    line: usize,
}

struct Entry {
    key: String,
    line: usize,
    value: Value,
}

struct Parser<'t> {
    toks: &'t [(Tok, usize)],
    pos: usize,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<&'t (Tok, usize)> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<&'t (Tok, usize)> {
        let t = self.toks.get(self.pos);
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn skip_ends(&mut self) {
        while matches!(self.peek(), Some((Tok::End, _))) {
            self.pos += 1;
        }
    }

    fn entries(&mut self) -> Result<Vec<Entry>, Located> {
        let mut out = Vec::new();
        loop {
            self.skip_ends();
            let (key, line) = match self.next() {
                None => return Ok(out),
                Some((Tok::Word(k), l)) if k.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                    (k.clone(), *l)
                }
                Some((t, l)) => return Err((*l, format!("expected a key, found {}", describe(t)))),
            };
            match self.next() {
                Some((Tok::Eq, _)) => {}
                Some((t, l)) => {
                    return Err((
                        *l,
                        format!("expected '=' after '{key}', found {}", describe(t)),
                    ))
                }
                None => return Err((line, format!("expected '=' after '{key}'"))),
            }
            let value = match self.peek() {
                None | Some((Tok::End, _)) => {
                    return Err((line, format!("'{key}' has no value")));
                }
                Some(_) => self.value(0)?,
            };
            match self.next() {
                None | Some((Tok::End, _)) => {}
                Some((t, l)) => {
                    return Err((
                        *l,
                        format!("unexpected {} after the value of '{key}'", describe(t)),
                    ))
                }
            }
            out.push(Entry { key, line, value });
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, Located> {
        match self.next() {
            Some((Tok::Word(s) | Tok::Str(s), l)) => Ok(Value {
                val: Val::Scalar(s.clone()),
                line: *l,
            }),
            Some((Tok::LBrack, open)) => {
                let open = *open;
                if depth >= MAX_LIST_DEPTH {
                    return Err((open, "lists nested too deeply".into()));
                }
                let unterminated = || (open, "unterminated list ('[' without ']')".into());
                let mut items = Vec::new();
                loop {
                    self.skip_ends();
                    match self.peek() {
                        None => return Err(unterminated()),
                        Some((Tok::RBrack, _)) => {
                            self.pos += 1;
                            break;
                        }
                        Some(_) => {}
                    }
                    items.push(self.value(depth + 1)?);
                    self.skip_ends();
                    match self.next() {
                        Some((Tok::Comma, _)) => {}
                        Some((Tok::RBrack, _)) => break,
                        // `key =` inside a list: the list was never closed.
                        None | Some((Tok::Eq, _)) => return Err(unterminated()),
                        Some((Tok::Word(_), _)) if matches!(self.peek(), Some((Tok::Eq, _))) => {
                            return Err(unterminated())
                        }
                        Some((t, l)) => {
                            return Err((
                                *l,
                                format!("expected ',' or ']' in a list, found {}", describe(t)),
                            ))
                        }
                    }
                }
                Ok(Value {
                    val: Val::List(items),
                    line: open,
                })
            }
            Some((t, l)) => Err((*l, format!("expected a value, found {}", describe(t)))),
            None => Err((0, "expected a value".into())),
        }
    }
}

// ---------------------------------------------------------------------------
// Values

fn scalar<'v>(key: &str, v: &'v Value) -> Result<&'v str, Located> {
    match &v.val {
        Val::Scalar(s) => Ok(s),
        Val::List(_) => Err((
            v.line,
            format!("{key}: expected a single value, not a list"),
        )),
    }
}

/// A decimal or `0x` hexadecimal integer, digits only.
fn parse_u64(s: &str) -> Option<u64> {
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

fn number(key: &str, v: &Value, unit: &str) -> Result<u64, Located> {
    let s = scalar(key, v)?;
    parse_u64(s).ok_or_else(|| {
        (
            v.line,
            format!("{key}: bad number '{}' ({unit})", s.escape_debug()),
        )
    })
}

/// `"0-3,6"`: ids below `limit`, in the order given, ranges expanded.
fn parse_id_list(s: &str, limit: u32, what: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let id = |x: &str| -> Result<u32, String> {
            let n = parse_u64(x.trim())
                .ok_or_else(|| format!("bad {what} list '{}'", s.escape_debug()))?;
            if n >= u64::from(limit) {
                return Err(format!(
                    "{what} {n} out of range (at most {})",
                    limit.saturating_sub(1)
                ));
            }
            Ok(n as u32)
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (id(a)?, id(b)?);
                if a > b {
                    return Err(format!("bad {what} range '{part}'"));
                }
                out.extend(a..=b);
            }
            None => out.push(id(part)?),
        }
    }
    Ok(out)
}

/// Renders ids as `"0-3,6"` (ascending runs collapsed; order kept).
pub(crate) fn format_id_list(ids: impl IntoIterator<Item = u32>) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for id in ids {
        match runs.last_mut() {
            Some(r) if r.1.checked_add(1) == Some(id) => r.1 = id,
            _ => runs.push((id, id)),
        }
    }
    let parts: Vec<String> = runs
        .iter()
        .map(|&(a, b)| {
            if a == b {
                format!("{a}")
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    parts.join(",")
}

/// One vnode from its `key=value,...` text, and whether its pnode is
/// `auto`. `vdistances` stays empty when not given (filled in once the
/// number of vnodes is known).
fn parse_vnode(k: usize, text: &str) -> Result<(VnodeConfig, bool), String> {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        if let Some((key, val)) = part.split_once('=') {
            pairs.push((key.trim(), String::from(val.trim())));
        } else if let Some(last) = pairs.last_mut() {
            last.1.push(',');
            last.1.push_str(part);
        } else {
            return Err(format!(
                "vnode {k}: expected key=value, found '{}'",
                part.escape_debug()
            ));
        }
    }
    let (mut pnode, mut size, mut vcpus, mut dist) = (None, None, None, None);
    for (key, val) in pairs {
        let slot_taken = match key {
            "pnode" => pnode.is_some(),
            "size" => size.is_some(),
            "vcpus" => vcpus.is_some(),
            "vdistances" => dist.is_some(),
            _ => {
                return Err(format!(
                    "vnode {k}: unknown key '{}' (pnode, size, vcpus, vdistances)",
                    key.escape_debug()
                ))
            }
        };
        if slot_taken {
            return Err(format!("vnode {k}: '{key}' given twice"));
        }
        let bad = |what: &str| format!("vnode {k}: bad {what} '{}'", val.escape_debug());
        match key {
            "pnode" if val == "auto" => pnode = Some(None),
            "pnode" => {
                let p = parse_u64(&val).ok_or_else(|| {
                    format!(
                        "vnode {k}: bad pnode '{}' (a node id or auto)",
                        val.escape_debug()
                    )
                })?;
                if p >= MAX_NODES as u64 {
                    return Err(format!(
                        "vnode {k}: pnode {p} out of range (at most {})",
                        MAX_NODES - 1
                    ));
                }
                pnode = Some(Some(NodeId(p as u8)));
            }
            "size" => {
                let s = parse_u64(&val).ok_or_else(|| bad("size (MiB)"))?;
                if s > MAX_MEMORY_MIB {
                    return Err(format!(
                        "vnode {k}: size {s} MiB is more than the limit of {MAX_MEMORY_MIB} MiB"
                    ));
                }
                size = Some(s);
            }
            "vcpus" => {
                vcpus = Some(if val.is_empty() {
                    Vec::new()
                } else {
                    parse_id_list(&val, MAX_VCPUS, "vcpu").map_err(|e| format!("vnode {k}: {e}"))?
                });
            }
            _ => {
                let mut row = Vec::new();
                for d in val.split(',') {
                    let d = d.trim();
                    let v = parse_u64(d)
                        .filter(|&v| v <= u64::from(u8::MAX))
                        .ok_or_else(|| {
                            format!("vnode {k}: bad distance '{}' (0-255)", d.escape_debug())
                        })?;
                    row.push(v as u8);
                }
                dist = Some(row);
            }
        }
    }
    let pnode = pnode.ok_or_else(|| format!("vnode {k}: no pnode (a node id or auto)"))?;
    let vnode = VnodeConfig {
        pnode: pnode.unwrap_or(AUTO_PNODE),
        size_mib: size.ok_or_else(|| format!("vnode {k}: no size"))?,
        vcpus: vcpus.unwrap_or_default(),
        vdistances: dist.unwrap_or_default(),
    };
    Ok((vnode, pnode.is_none()))
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name: empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name: {} bytes long; at most {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "name: '{}' has a character other than letters, digits, '_', '-' and '.'",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// Where each part of a config came from, for messages; all 0 for a config
/// that was not parsed.
#[derive(Default)]
struct Lines {
    name: usize,
    memory: usize,
    vcpus: usize,
    cpus: usize,
    vnuma: usize,
    vnodes: Vec<usize>,
    cmdline: usize,
    kernel: usize,
    pci: usize,
    weight: usize,
}

impl DomainConfig {
    /// Parses a config module. `file` names it in errors (the module's
    /// string). Trailing NUL bytes (module padding) are ignored. The result
    /// is self-consistent ([`DomainConfig::validate`] holds); check it
    /// against the machine with [`DomainConfig::check_against`].
    pub fn parse(file: &str, bytes: &[u8]) -> Result<DomainConfig, ConfigError> {
        let err = |(line, message): Located| ConfigError {
            file: String::from(file),
            line,
            message,
        };
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let bytes = bytes.get(..end).unwrap_or(bytes);
        let text = core::str::from_utf8(bytes).map_err(|e| {
            let before = bytes.get(..e.valid_up_to()).unwrap_or_default();
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            err((line, "not UTF-8 text".into()))
        })?;
        let last_line = text.lines().count().max(1);
        parse_text(text, last_line)
            .map_err(|(line, m)| err((if line == 0 { last_line } else { line }, m)))
    }

    /// Checks what [`DomainConfig::parse`] guarantees: use it on a config
    /// made in code (such as [`DomainConfig::mirror_machine`]'s).
    pub fn validate(&self) -> Result<(), String> {
        cross_check(self, &Lines::default()).map_err(|(_, m)| m)
    }

    /// The vnode holding vcpu `v`.
    pub fn vnode_of_vcpu(&self, v: u32) -> Option<usize> {
        self.vnodes.iter().position(|n| n.vcpus.contains(&v))
    }

    /// The physical CPU vcpu `v` is pinned to, if pinned.
    pub fn pcpu_of_vcpu(&self, v: u32) -> Option<CpuId> {
        let cpus = self.cpus.as_ref()?;
        if v >= self.vcpus || cpus.is_empty() {
            return None;
        }
        cpus.get(v as usize % cpus.len()).copied()
    }

    /// The vnodes' distance matrix, row-major.
    pub fn distance_matrix(&self) -> Vec<u8> {
        self.vnodes
            .iter()
            .flat_map(|v| v.vdistances.iter().copied())
            .collect()
    }

    /// Checks the config against the machine: every pnode exists and has the
    /// memory its vnodes ask for (in total, free or not: placement and the
    /// builder report a shortfall of free memory), every pinned CPU exists,
    /// a pinned vcpu runs on a CPU of its vnode's node (else its vNUMA would
    /// lie), and the domain fits in the machine at all. A `pnode=auto` vnode
    /// whose vcpus are pinned is checked on the node of those CPUs, which
    /// must all be on one node; an unpinned one needs a node big enough.
    /// Without `vnuma`, `vnuma_auto = 0` needs a node big enough for all.
    pub fn check_against(&self, topology: &Topology) -> Result<(), String> {
        let n = topology.nr_nodes();
        if let Some(cpus) = &self.cpus {
            for c in cpus {
                if topology.cpu_node(*c).is_none() {
                    return Err(format!(
                        "cpus: CPU {c} does not exist (the machine has {} CPUs)",
                        topology.cpus.len()
                    ));
                }
            }
        }
        // Each vnode's node: given, or for pnode=auto the pinned CPUs' node.
        let mut pnodes: Vec<Option<NodeId>> = Vec::with_capacity(self.vnodes.len());
        for (k, v) in self.vnodes.iter().enumerate() {
            if self.auto_vnodes.contains(&k) {
                pnodes.push(self.pinned_node_of_vnode(k, topology)?);
                continue;
            }
            if topology.node(v.pnode).is_none() {
                return Err(format!(
                    "vnode {k}: pnode {} does not exist (the machine has {n} node{})",
                    v.pnode,
                    if n == 1 { "" } else { "s" }
                ));
            }
            pnodes.push(Some(v.pnode));
        }
        for node in &topology.nodes {
            let mut users: Vec<u32> = Vec::new();
            let mut want_mib: u64 = 0;
            for (k, v) in self.vnodes.iter().enumerate() {
                if pnodes.get(k) == Some(&Some(node.id)) && v.size_mib > 0 {
                    users.push(k as u32);
                    want_mib = want_mib.saturating_add(v.size_mib);
                }
            }
            let have = topology.memory_bytes(node.id);
            if want_mib.saturating_mul(MIB) <= have {
                continue;
            }
            let who = match users.as_slice() {
                [k] => format!("vnode {k} needs"),
                _ => format!("vnodes {} need", format_id_list(users.iter().copied())),
            };
            return Err(if have == 0 {
                format!(
                    "{who} {want_mib} MiB on node {}, which has no memory",
                    node.id
                )
            } else {
                let short = want_mib.saturating_mul(MIB) - have;
                format!(
                    "{who} {want_mib} MiB on node {}, which has only {} MiB (short by {} MiB)",
                    node.id,
                    have / MIB,
                    short.div_ceil(MIB)
                )
            });
        }
        let machine: u64 = topology
            .nodes
            .iter()
            .map(|x| topology.memory_bytes(x.id))
            .sum();
        if self.memory_mib.saturating_mul(MIB) > machine {
            return Err(format!(
                "memory: {} MiB is more than the whole machine has ({} MiB on {n} node{})",
                self.memory_mib,
                machine / MIB,
                if n == 1 { "" } else { "s" }
            ));
        }
        let largest = topology
            .nodes
            .iter()
            .map(|x| (topology.memory_bytes(x.id), x.id))
            .fold(None, |best: Option<(u64, NodeId)>, (b, id)| match best {
                Some((bb, _)) if bb >= b => best,
                _ => Some((b, id)),
            });
        let (largest_bytes, largest_node) = largest.unwrap_or((0, NodeId(0)));
        for (k, v) in self.vnodes.iter().enumerate() {
            if pnodes.get(k) == Some(&None) && v.size_mib.saturating_mul(MIB) > largest_bytes {
                return Err(format!(
                    "vnode {k} (pnode=auto) needs {} MiB on one node; the largest, node \
                     {largest_node}, has {} MiB",
                    v.size_mib,
                    largest_bytes / MIB
                ));
            }
        }
        if self.vnodes.is_empty()
            && !self.vnuma_auto
            && self.memory_mib.saturating_mul(MIB) > largest_bytes
        {
            return Err(format!(
                "vnuma_auto = 0 asks for one flat node, but {} MiB fits in no node (the \
                 largest, node {largest_node}, has {} MiB): allow vnuma_auto = 1 or give a vnuma",
                self.memory_mib,
                largest_bytes / MIB
            ));
        }
        if self.cpus.is_some() {
            for v in 0..self.vcpus {
                let (Some(pcpu), Some(k)) = (self.pcpu_of_vcpu(v), self.vnode_of_vcpu(v)) else {
                    continue;
                };
                let Some(vn) = self.vnodes.get(k) else {
                    continue;
                };
                if self.auto_vnodes.contains(&k) {
                    continue;
                }
                let node = topology.cpu_node(pcpu);
                if node != Some(vn.pnode) {
                    return Err(format!(
                        "vcpu {v} (vnode {k}, on node {}) is pinned to CPU {pcpu} on node {}",
                        vn.pnode,
                        node.map_or(String::from("?"), |n| format!("{n}"))
                    ));
                }
            }
        }
        Ok(())
    }

    /// For vnode `k`: the node of the CPUs its vcpus are pinned to, `None`
    /// when they are not pinned (or it has no vcpus). A vnode lives on one
    /// node, so pins spanning nodes are an error.
    pub fn pinned_node_of_vnode(
        &self,
        k: usize,
        topology: &Topology,
    ) -> Result<Option<NodeId>, String> {
        let Some(vn) = self.vnodes.get(k) else {
            return Ok(None);
        };
        let mut nodes: Vec<NodeId> = Vec::new();
        for &v in &vn.vcpus {
            let Some(c) = self.pcpu_of_vcpu(v) else {
                continue;
            };
            let node = topology.cpu_node(c).ok_or_else(|| {
                format!(
                    "cpus: CPU {c} does not exist (the machine has {} CPUs)",
                    topology.cpus.len()
                )
            })?;
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
        nodes.sort();
        match nodes.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => Err(format!(
                "vnode {k} has pnode=auto and its vcpus are pinned to CPUs on nodes {}; a vnode \
                 lives on one node: pin its vcpus to CPUs of one node",
                format_id_list(nodes.iter().map(|n| u32::from(n.0)))
            )),
        }
    }

    /// The domain run when no config is given: it mirrors the machine. One
    /// vnode per machine node (memoryless and CPU-less ones included) on
    /// that node, the machine's distances, vcpu `i` = machine CPU `i` (so a
    /// vnode's vcpus are its node's CPUs), pinned 1:1, and from each node
    /// `min(node_cap_mib, half its memory)` rounded down to 2 MiB (0 for a
    /// memoryless node). Named "mirror", compact layout, empty command line.
    /// Call [`DomainConfig::validate`] on it: a machine whose nodes are all
    /// tiny gives a domain without memory.
    pub fn mirror_machine(topology: &Topology, node_cap_mib: u64) -> DomainConfig {
        let nodes = topology.nodes.get(..MAX_NODES).unwrap_or(&topology.nodes);
        let vnodes: Vec<VnodeConfig> = nodes
            .iter()
            .map(|node| {
                let half_mib = topology.memory_bytes(node.id) / 2 / MIB;
                VnodeConfig {
                    pnode: node.id,
                    size_mib: half_mib.min(node_cap_mib) & !1,
                    vcpus: topology
                        .cpus
                        .iter()
                        .filter(|c| c.node == node.id)
                        .map(|c| c.id.0)
                        .collect(),
                    // The machine may have two nodes at distance 10 (NUMA
                    // emulation puts fake nodes of one physical node there),
                    // which a SLIT cannot say: ACPI and Linux want more than
                    // 10 between distinct nodes. The nearest valid value is 11.
                    vdistances: nodes
                        .iter()
                        .map(|other| match topology.distance(node.id, other.id) {
                            d if other.id != node.id && d <= LOCAL_DISTANCE => LOCAL_DISTANCE + 1,
                            d => d,
                        })
                        .collect(),
                }
            })
            .collect();
        DomainConfig {
            name: String::from("mirror"),
            memory_mib: vnodes.iter().map(|v| v.size_mib).sum(),
            vcpus: topology.cpus.len().min(MAX_VCPUS as usize) as u32,
            cpus: Some(topology.cpus.iter().map(|c| c.id).collect()),
            vnodes,
            ..DomainConfig::default()
        }
    }
}

fn parse_text(text: &str, last_line: usize) -> Result<DomainConfig, Located> {
    let toks = tokenize(text)?;
    let entries = Parser {
        toks: &toks,
        pos: 0,
    }
    .entries()?;

    let mut lines = Lines::default();
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut name = None;
    let mut memory = None;
    let mut vcpus = None;
    let mut cpus = None;
    let mut vnodes = Vec::new();
    let mut auto_vnodes = Vec::new();
    let mut weight = DEFAULT_WEIGHT;
    let mut time_limit = None;
    let mut vnuma_auto = true;
    let mut layout = LayoutKind::Compact;
    let mut cmdline = String::new();
    let mut kernel = None;
    let mut pci = Vec::new();
    for e in &entries {
        let (key, line, v) = (e.key.as_str(), e.line, &e.value);
        if let Some((_, first)) = seen.iter().find(|(k, _)| k == key) {
            return Err((
                line,
                format!("duplicate key '{key}' (first set on line {first})"),
            ));
        }
        seen.push((String::from(key), line));
        match key {
            "name" => {
                lines.name = line;
                name = Some(String::from(scalar(key, v)?));
            }
            "memory" => {
                lines.memory = line;
                memory = Some(number(key, v, "MiB")?);
            }
            "vcpus" => {
                lines.vcpus = line;
                let n = number(key, v, "a count")?;
                if n == 0 || n > u64::from(MAX_VCPUS) {
                    return Err((line, format!("vcpus: {n} out of range (1 to {MAX_VCPUS})")));
                }
                vcpus = Some(n as u32);
            }
            "cpus" => {
                lines.cpus = line;
                cpus = parse_cpus(v)?;
            }
            "vnuma" => {
                lines.vnuma = line;
                let Val::List(items) = &v.val else {
                    return Err((
                        line,
                        "vnuma: expected a list of vnodes ([ \"pnode=0,size=512,...\", ... ])"
                            .into(),
                    ));
                };
                if items.is_empty() {
                    return Err((line, "vnuma: empty list".into()));
                }
                if items.len() > MAX_NODES {
                    return Err((
                        line,
                        format!("vnuma: {} vnodes; at most {MAX_NODES}", items.len()),
                    ));
                }
                for (k, item) in items.iter().enumerate() {
                    let text = match &item.val {
                        Val::Scalar(s) => s.clone(),
                        Val::List(parts) => {
                            let mut strs = Vec::new();
                            for p in parts {
                                match &p.val {
                                    Val::Scalar(s) => strs.push(s.as_str()),
                                    Val::List(_) => {
                                        return Err((
                                            p.line,
                                            format!("vnode {k}: expected strings, not a list"),
                                        ))
                                    }
                                }
                            }
                            strs.join(",")
                        }
                    };
                    let (vnode, auto) = parse_vnode(k, &text).map_err(|m| (item.line, m))?;
                    if auto {
                        auto_vnodes.push(k);
                    }
                    vnodes.push(vnode);
                    lines.vnodes.push(item.line);
                }
            }
            "layout" => {
                let s = scalar(key, v)?;
                layout = LayoutKind::from_name(s).ok_or_else(|| {
                    (
                        line,
                        format!(
                            "layout: unknown layout '{}' (compact, node-bits, high-only or identity)",
                            s.escape_debug()
                        ),
                    )
                })?;
            }
            "cmdline" => {
                lines.cmdline = line;
                cmdline = String::from(scalar(key, v)?);
            }
            "kernel" => {
                lines.kernel = line;
                kernel = Some(String::from(scalar(key, v)?));
            }
            "pci" => {
                lines.pci = line;
                pci = parse_pci(v)?;
            }
            "time_limit" => {
                let v = scalar(key, v)?;
                time_limit = Some(match parse_u64(v) {
                    Some(t) if (1..=u64::from(MAX_TIME_LIMIT)).contains(&t) => t as u32,
                    _ => {
                        return Err((
                            line,
                            format!(
                                "time_limit must be 1 to {MAX_TIME_LIMIT} seconds, got '{}'",
                                v.escape_debug()
                            ),
                        ))
                    }
                });
            }
            "weight" => {
                lines.weight = line;
                weight = parse_weight(scalar(key, v)?).map_err(|m| (line, m))?;
            }
            "vnuma_auto" => {
                vnuma_auto = match scalar(key, v)? {
                    "1" => true,
                    "0" => false,
                    s => {
                        return Err((
                            line,
                            format!("vnuma_auto: expected 0 or 1, got '{}'", s.escape_debug()),
                        ))
                    }
                };
            }
            _ => return Err((line, format!("unknown key '{key}'"))),
        }
    }

    let Some(name) = name else {
        return Err((last_line, "no name (name = \"...\")".into()));
    };
    let n = vnodes.len();
    for (i, v) in vnodes.iter_mut().enumerate() {
        if v.vdistances.is_empty() {
            v.vdistances = (0..n)
                .map(|j| {
                    if i == j {
                        LOCAL_DISTANCE
                    } else {
                        REMOTE_DISTANCE
                    }
                })
                .collect();
        }
    }
    let memory_mib = match memory {
        Some(m) => m,
        None if !vnodes.is_empty() => {
            lines.memory = lines.vnuma;
            vnodes.iter().map(|v| v.size_mib).sum()
        }
        None => {
            return Err((
                last_line,
                "no memory (memory = MiB, or vnuma with sizes)".into(),
            ))
        }
    };
    let vcpus = match vcpus {
        Some(v) => v,
        None if !vnodes.is_empty() => {
            lines.vcpus = lines.vnuma;
            let count: usize = vnodes.iter().map(|v| v.vcpus.len()).sum();
            u32::try_from(count).unwrap_or(u32::MAX)
        }
        None => 1,
    };
    let cfg = DomainConfig {
        name,
        memory_mib,
        vcpus,
        cpus,
        vnodes,
        auto_vnodes,
        layout,
        cmdline,
        kernel,
        pci,
        weight,
        time_limit,
        vnuma_auto,
    };
    cross_check(&cfg, &lines)?;
    Ok(cfg)
}

/// `weight = N`, with Xen's range; a negative number gets the same message
/// as 0 rather than "bad number".
fn parse_weight(s: &str) -> Result<u32, String> {
    match parse_u64(s) {
        Some(w) if (1..=u64::from(MAX_WEIGHT)).contains(&w) => Ok(w as u32),
        Some(w) => Err(weight_range_error(w)),
        None if s.strip_prefix('-').and_then(parse_u64).is_some() => Err(weight_range_error(s)),
        None => Err(format!(
            "weight: bad number '{}' (1 to {MAX_WEIGHT})",
            s.escape_debug()
        )),
    }
}

fn weight_range_error(got: impl fmt::Display) -> String {
    format!("weight must be 1 to {MAX_WEIGHT} (Xen's credit scheduler range), got {got}")
}

/// `pci = [ "00:04.0", ... ]` (or one string): each a device address,
/// none twice, at most [`MAX_PCI_DEVICES`].
fn parse_pci(v: &Value) -> Result<Vec<Bdf>, Located> {
    let items: Vec<&Value> = match &v.val {
        Val::Scalar(_) => vec![v],
        Val::List(items) => items.iter().collect(),
    };
    if items.len() > MAX_PCI_DEVICES {
        return Err((
            v.line,
            format!("pci: {} devices; at most {MAX_PCI_DEVICES}", items.len()),
        ));
    }
    let mut out: Vec<Bdf> = Vec::new();
    for it in items {
        let s = scalar("pci", it)?;
        let bdf = Bdf::parse(s).map_err(|m| (it.line, format!("pci: {m}")))?;
        if out.contains(&bdf) {
            return Err((it.line, format!("pci: device {bdf} listed twice")));
        }
        out.push(bdf);
    }
    Ok(out)
}

fn parse_cpus(v: &Value) -> Result<Option<Vec<CpuId>>, Located> {
    let ids = match &v.val {
        Val::Scalar(s) if s == "all" => return Ok(None),
        Val::Scalar(s) => {
            parse_id_list(s, MAX_CPUS as u32, "CPU").map_err(|m| (v.line, format!("cpus: {m}")))?
        }
        Val::List(items) => {
            let mut ids = Vec::new();
            for it in items {
                let s = scalar("cpus", it)?;
                ids.extend(
                    parse_id_list(s, MAX_CPUS as u32, "CPU")
                        .map_err(|m| (it.line, format!("cpus: {m}")))?,
                );
            }
            ids
        }
    };
    Ok(Some(ids.into_iter().map(CpuId).collect()))
}

/// Every check that needs no machine: field ranges, the vnodes' distances,
/// vcpu coverage, sizes against memory, pinning list sanity.
fn cross_check(cfg: &DomainConfig, lines: &Lines) -> Result<(), Located> {
    check_name(&cfg.name).map_err(|m| (lines.name, m))?;
    if cfg.memory_mib == 0 {
        return Err((lines.memory, "memory: 0 MiB; a domain needs memory".into()));
    }
    if cfg.memory_mib > MAX_MEMORY_MIB {
        return Err((
            lines.memory,
            format!(
                "memory: {} MiB is more than the limit of {MAX_MEMORY_MIB} MiB",
                cfg.memory_mib
            ),
        ));
    }
    if cfg.vcpus == 0 || cfg.vcpus > MAX_VCPUS {
        return Err((
            lines.vcpus,
            format!("vcpus: {} out of range (1 to {MAX_VCPUS})", cfg.vcpus),
        ));
    }
    if cfg.cmdline.len() > MAX_CMDLINE_LEN {
        return Err((
            lines.cmdline,
            format!(
                "cmdline: {} bytes long; at most {MAX_CMDLINE_LEN}",
                cfg.cmdline.len()
            ),
        ));
    }
    if cfg.cmdline.chars().any(char::is_control) {
        return Err((
            lines.cmdline,
            "cmdline: contains a control character".into(),
        ));
    }
    if cfg.kernel.as_ref().is_some_and(|k| k.is_empty()) {
        return Err((lines.kernel, "kernel: empty".into()));
    }
    if cfg.pci.len() > MAX_PCI_DEVICES {
        return Err((
            lines.pci,
            format!("pci: {} devices; at most {MAX_PCI_DEVICES}", cfg.pci.len()),
        ));
    }
    for (i, b) in cfg.pci.iter().enumerate() {
        if cfg.pci.get(..i).is_some_and(|before| before.contains(b)) {
            return Err((lines.pci, format!("pci: device {b} listed twice")));
        }
    }
    if cfg.weight == 0 || cfg.weight > MAX_WEIGHT {
        return Err((lines.weight, weight_range_error(cfg.weight)));
    }
    if let Some(cpus) = &cfg.cpus {
        if cpus.is_empty() {
            return Err((lines.cpus, "cpus: empty list".into()));
        }
        for (i, c) in cpus.iter().enumerate() {
            if c.index() >= MAX_CPUS {
                return Err((lines.cpus, format!("cpus: CPU {c} out of range")));
            }
            if cpus.get(..i).is_some_and(|before| before.contains(c)) {
                return Err((lines.cpus, format!("cpus: CPU {c} listed twice")));
            }
        }
    }
    let n = cfg.vnodes.len();
    for (i, &k) in cfg.auto_vnodes.iter().enumerate() {
        if k >= n || i.checked_sub(1).and_then(|j| cfg.auto_vnodes.get(j)) >= Some(&k) {
            return Err((
                lines.vnuma,
                format!("vnuma: bad list of pnode=auto vnodes {:?}", cfg.auto_vnodes),
            ));
        }
    }
    if n == 0 {
        return Ok(());
    }
    if n > MAX_NODES {
        return Err((
            lines.vnuma,
            format!("vnuma: {n} vnodes; at most {MAX_NODES}"),
        ));
    }
    let line_of = |k: usize| lines.vnodes.get(k).copied().unwrap_or(lines.vnuma);
    let mut owner: Vec<Option<usize>> = vec![None; cfg.vcpus as usize];
    for (k, v) in cfg.vnodes.iter().enumerate() {
        let l = line_of(k);
        if v.pnode.index() >= MAX_NODES && !cfg.auto_vnodes.contains(&k) {
            return Err((l, format!("vnode {k}: pnode {} out of range", v.pnode)));
        }
        if v.size_mib > MAX_MEMORY_MIB {
            return Err((
                l,
                format!(
                    "vnode {k}: size {} MiB is more than the limit of {MAX_MEMORY_MIB} MiB",
                    v.size_mib
                ),
            ));
        }
        if v.vdistances.len() != n {
            return Err((
                l,
                format!(
                    "vnode {k}: {} distance{} for {n} vnode{}",
                    v.vdistances.len(),
                    if v.vdistances.len() == 1 { "" } else { "s" },
                    if n == 1 { "" } else { "s" }
                ),
            ));
        }
        for (j, &d) in v.vdistances.iter().enumerate() {
            if j == k && d != LOCAL_DISTANCE {
                return Err((
                    l,
                    format!("vnode {k}: distance to itself is {d}; must be {LOCAL_DISTANCE}"),
                ));
            }
            if j != k && d <= LOCAL_DISTANCE {
                return Err((
                    l,
                    format!(
                        "vnode {k}: distance to vnode {j} is {d}; must be more than \
                         {LOCAL_DISTANCE} (only a node itself is at {LOCAL_DISTANCE})"
                    ),
                ));
            }
        }
        for &vc in &v.vcpus {
            let Some(slot) = owner.get_mut(vc as usize) else {
                return Err((
                    l,
                    format!("vnode {k}: vcpu {vc} out of range (vcpus = {})", cfg.vcpus),
                ));
            };
            match *slot {
                Some(j) if j == k => return Err((l, format!("vnode {k}: vcpu {vc} listed twice"))),
                Some(j) => return Err((l, format!("vcpu {vc} is in vnode {j} and vnode {k}"))),
                None => *slot = Some(k),
            }
        }
    }
    if let Some(v) = owner.iter().position(Option::is_none) {
        return Err((lines.vnuma, format!("vcpu {v} is in no vnode")));
    }
    let sum: u64 = cfg.vnodes.iter().map(|v| v.size_mib).sum();
    if sum != cfg.memory_mib {
        return Err((
            lines.vnuma,
            format!(
                "vnode sizes add up to {sum} MiB but memory = {}",
                cfg.memory_mib
            ),
        ));
    }
    Ok(())
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The config in its file format: [`DomainConfig::parse`] reads it back
/// (for a valid config) to an equal value.
impl fmt::Display for DomainConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "name = {}", quote(&self.name))?;
        writeln!(f, "memory = {}", self.memory_mib)?;
        writeln!(f, "vcpus = {}", self.vcpus)?;
        if let Some(cpus) = &self.cpus {
            writeln!(f, "cpus = \"{}\"", format_id_list(cpus.iter().map(|c| c.0)))?;
        }
        writeln!(f, "layout = \"{}\"", self.layout)?;
        writeln!(f, "cmdline = {}", quote(&self.cmdline))?;
        if let Some(k) = &self.kernel {
            writeln!(f, "kernel = {}", quote(k))?;
        }
        if self.weight != DEFAULT_WEIGHT {
            writeln!(f, "weight = {}", self.weight)?;
        }
        if let Some(t) = self.time_limit {
            writeln!(f, "time_limit = {t}")?;
        }
        if !self.vnuma_auto {
            writeln!(f, "vnuma_auto = 0")?;
        }
        if !self.pci.is_empty() {
            let devs: Vec<String> = self.pci.iter().map(|b| format!("\"{b}\"")).collect();
            writeln!(f, "pci = [ {} ]", devs.join(", "))?;
        }
        if !self.vnodes.is_empty() {
            writeln!(f, "vnuma = [")?;
            for (k, v) in self.vnodes.iter().enumerate() {
                if self.auto_vnodes.contains(&k) {
                    write!(f, "    \"pnode=auto,size={}", v.size_mib)?;
                } else {
                    write!(f, "    \"pnode={},size={}", v.pnode, v.size_mib)?;
                }
                if !v.vcpus.is_empty() {
                    write!(f, ",vcpus={}", format_id_list(v.vcpus.iter().copied()))?;
                }
                let d: Vec<String> = v.vdistances.iter().map(|d| format!("{d}")).collect();
                writeln!(f, ",vdistances={}\",", d.join(","))?;
            }
            writeln!(f, "]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

//! Suite `hypercall_abi`: garbage arguments get the documented errors and
//! the guest survives them all. Suite `hypercall_garbage` (with
//! `fail=hypercall`): hundreds of pseudo-random register sets, each answered
//! exactly as `pv_abi::HypercallRequest::from_args` (the decoder both sides
//! share) predicts.
//!
//! Nothing here can hurt the guest if the hypervisor misbehaves: pointers
//! are either outside guest memory or into scratch buffers large enough for
//! any write, a console write that should be refused holds one newline, and
//! the one `SHUTDOWN` with a bad register carries `TESTS_FAILED`, so a
//! hypervisor that wrongly honours it ends the domain as a failure.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use pv_abi::hypercall::CONSOLE_WRITE_MAX;
use pv_abi::start_info::GPA_LIMIT;
use pv_abi::vnuma::VnumaCounts;
use pv_abi::{
    DomainNodePages, Error, Features, Gpa, Hypercall, HypercallArgs, HypercallRequest,
    HypercallResult, PhysInfo, ShutdownStatus, VnumaTopologyInfo,
};

use crate::boot::start_info::overlaps;
use crate::boot::Guest;
use crate::hypercall::{self, gpa_of, VnumaBuffers};
use crate::ktest::{ensure, problems, skip, Suite, Test, TestResult};

/// The suite.
pub static SUITE: Suite<Guest> = Suite {
    name: "hypercall_abi",
    tests: &[
        Test {
            name: "unknown_hypercall",
            run: unknown_hypercall,
        },
        Test {
            name: "nonzero_unused_register",
            run: nonzero_unused_register,
        },
        Test {
            name: "misaligned_query_pointer",
            run: misaligned_query_pointer,
        },
        Test {
            name: "pointer_outside_guest_memory",
            run: pointer_outside_guest_memory,
        },
        Test {
            name: "console_write_too_long",
            run: console_write_too_long,
        },
        Test {
            name: "bad_query_fields",
            run: bad_query_fields,
        },
        Test {
            name: "feature_words",
            run: feature_words,
        },
        Test {
            name: "not_permitted_from_user_mode",
            run: not_permitted_from_user_mode,
        },
        Test {
            name: "guest_survives",
            run: guest_survives,
        },
    ],
};

/// The `fail=hypercall` suite.
pub static GARBAGE: Suite<Guest> = Suite {
    name: "hypercall_garbage",
    tests: &[
        Test {
            name: "decoder_agreement",
            run: decoder_agreement,
        },
        Test {
            name: "guest_survives",
            run: guest_survives,
        },
    ],
};

/// Pseudo-random register sets issued by `decoder_agreement`.
pub const GARBAGE_CALLS: usize = 400;

static NEWLINE: [u8; 1] = *b"\n";

fn show(r: Result<u64, Error>) -> String {
    match r {
        Ok(v) => format!("success ({v:#x})"),
        Err(e) => format!("{e}"),
    }
}

/// Issues raw registers and collects answers that differ from `want`.
struct Checker<'a> {
    g: &'a Guest,
    bad: Vec<String>,
}

impl<'a> Checker<'a> {
    fn new(g: &'a Guest) -> Self {
        Checker { g, bad: Vec::new() }
    }

    fn expect(&mut self, what: &str, nr: u64, args: [u64; 5], want: Result<u64, Error>) {
        let regs = HypercallArgs { nr, args };
        let got = hypercall::raw(self.g.p, &regs);
        if got != want {
            self.bad.push(format!(
                "{what} (rax {nr:#x}, args {args:#x?}): got {}, expected {}",
                show(got),
                show(want)
            ));
        }
    }

    fn done(self) -> TestResult {
        problems(self.bad)
    }
}

fn nr(h: Hypercall) -> u64 {
    h.raw()
}

/// A scratch buffer of `words` u64s and its guest-physical address.
fn scratch(g: &Guest, words: usize) -> (Vec<u64>, u64) {
    let mut v = vec![0u64; words];
    let gpa = gpa_of(g.p, v.as_mut_ptr()).0;
    (v, gpa)
}

fn unknown_hypercall(g: &Guest) -> TestResult {
    let mut c = Checker::new(g);
    // The numbers after this guest's last hypercall are unknown to a
    // hypervisor no newer than it; a newer one may define them.
    let first = Hypercall::ALL.len() as u64;
    let next: &[u64] = if g.hv_version <= pv_abi::AbiVersion::CURRENT {
        &[first, first + 1]
    } else {
        &[]
    };
    for &n in next.iter().chain(&[0x100, 0x4000_0000, 1 << 32, u64::MAX]) {
        c.expect(
            &format!("unknown hypercall {n:#x}"),
            n,
            [0; 5],
            Err(Error::Unsupported),
        );
    }
    c.done()
}

fn nonzero_unused_register(g: &Guest) -> TestResult {
    let (_buf, base) = scratch(g, 64);
    let nl = gpa_of(g.p, NEWLINE.as_ptr()).0;
    let mut c = Checker::new(g);
    let inval = Err(Error::InvalidArgument);
    let cases: [(&str, Hypercall, [u64; 5]); 8] = [
        ("version, rdi = 1", Hypercall::Version, [1, 0, 0, 0, 0]),
        ("version, r8 = 1", Hypercall::Version, [0, 0, 0, 0, 1]),
        ("features, rsi = 1", Hypercall::Features, [0, 1, 0, 0, 0]),
        (
            "console_write, rdx = 1",
            Hypercall::ConsoleWrite,
            [nl, 1, 1, 0, 0],
        ),
        (
            "get_vnuma, r10 = 1",
            Hypercall::GetVnuma,
            [base, 0, 0, 1, 0],
        ),
        ("physinfo, r8 = 1", Hypercall::PhysInfo, [base, 0, 0, 0, 1]),
        (
            "domain_node_pages, rsi = 1",
            Hypercall::DomainNodePages,
            [base, 1, 0, 0, 0],
        ),
        (
            "shutdown(tests-failed), r8 = 7",
            Hypercall::Shutdown,
            [ShutdownStatus::TESTS_FAILED.raw(), 0, 0, 0, 7],
        ),
    ];
    for (what, h, args) in cases {
        c.expect(what, nr(h), args, inval);
    }
    c.done()
}

fn misaligned_query_pointer(g: &Guest) -> TestResult {
    let (_buf, base) = scratch(g, 64);
    let mut c = Checker::new(g);
    for (h, off) in [
        (Hypercall::GetVnuma, 4),
        (Hypercall::GetVnuma, 7),
        (Hypercall::PhysInfo, 1),
        (Hypercall::DomainNodePages, 2),
    ] {
        c.expect(
            &format!("{} at {:#x} (+{off})", h.name(), base + off),
            nr(h),
            [base + off, 0, 0, 0, 0],
            Err(Error::InvalidArgument),
        );
    }
    c.done()
}

/// The end of the highest memory range (what lies past it is no guest
/// memory).
fn top_of_memory(g: &Guest) -> u64 {
    g.si.mem_ranges()
        .iter()
        .map(|r| r.gpa.0.saturating_add(r.size))
        .max()
        .unwrap_or(0)
}

fn pointer_outside_guest_memory(g: &Guest) -> TestResult {
    let hole = g.hole.0;
    let fault = Err(Error::Fault);
    let mut c = Checker::new(g);
    for (h, feature) in [
        (Hypercall::GetVnuma, Features::VNUMA),
        (Hypercall::PhysInfo, Features::PHYSINFO),
        (Hypercall::DomainNodePages, Features::DOMAIN_NODE_PAGES),
    ] {
        if !g.features.contains(feature) {
            continue;
        }
        for (where_, addr) in [
            ("in a hole", hole),
            ("at GPA_LIMIT", GPA_LIMIT),
            ("at the top of the address space", !7),
        ] {
            c.expect(
                &format!("{} structure {where_} ({addr:#x})", h.name()),
                nr(h),
                [addr, 0, 0, 0, 0],
                fault,
            );
        }
    }
    c.expect(
        "console_write of 8 bytes in a hole",
        nr(Hypercall::ConsoleWrite),
        [hole, 8, 0, 0, 0],
        fault,
    );
    let top = top_of_memory(g);
    c.expect(
        "console_write running past the end of guest memory",
        nr(Hypercall::ConsoleWrite),
        [top - 8, 16, 0, 0, 0],
        fault,
    );
    if let Some(v) = g.vnuma() {
        // A valid structure whose memory-range buffer is in the hole.
        let cap = VnumaCounts {
            nr_vnodes: v.nr_vnodes,
            nr_vcpus: v.nr_vcpus,
            nr_vmemranges: v.vmemranges.len() as u32,
        };
        let mut bufs = VnumaBuffers::new(cap, 0);
        let mut info = bufs.request(g.p);
        info.vmemrange = Gpa(hole);
        let r = hypercall::get_vnuma(g.p, &mut info);
        if r != fault {
            c.bad.push(format!(
                "get_vnuma with its vmemrange buffer in a hole ({hole:#x}): got {}, expected {}",
                show(r),
                show(fault)
            ));
        }
    }
    c.done()
}

fn console_write_too_long(g: &Guest) -> TestResult {
    let nl = gpa_of(g.p, NEWLINE.as_ptr()).0;
    let mut c = Checker::new(g);
    for len in [CONSOLE_WRITE_MAX + 1, 1 << 32, u64::MAX] {
        c.expect(
            &format!("console_write of {len:#x} bytes"),
            nr(Hypercall::ConsoleWrite),
            [nl, len, 0, 0, 0],
            Err(Error::InvalidArgument),
        );
    }
    c.done()
}

fn bad_query_fields(g: &Guest) -> TestResult {
    let inval = Err(Error::InvalidArgument);
    let mut bad = Vec::new();
    let mut check = |what: &str, got: Result<u64, Error>| {
        if got != inval {
            bad.push(format!(
                "{what}: got {}, expected {}",
                show(got),
                show(inval)
            ));
        }
    };
    if g.features.contains(Features::VNUMA) {
        type Edit = fn(&mut VnumaTopologyInfo);
        let edits: [(&str, Edit); 4] = [
            ("get_vnuma with size 0", |i| i.size = 0),
            ("get_vnuma with size 47", |i| i.size = 47),
            ("get_vnuma with flags 1", |i| i.flags = 1),
            ("get_vnuma with reserved 1", |i| i.reserved = 1),
        ];
        for (what, edit) in edits {
            let mut info = VnumaTopologyInfo::probe();
            edit(&mut info);
            check(what, hypercall::get_vnuma(g.p, &mut info));
        }
        if let Some(v) = g.vnuma() {
            let n = v.nr_vnodes as usize;
            let ranges = v.vmemranges.len();
            let cap = VnumaCounts {
                nr_vnodes: v.nr_vnodes,
                nr_vcpus: v.nr_vcpus,
                nr_vmemranges: ranges as u32,
            };
            // Room for any write through a misaligned pointer.
            let (_d, dist) = scratch(g, n * n / 2 + 2);
            let (_r, rng) = scratch(g, ranges * 3 + 2);
            let mut bufs = VnumaBuffers::new(cap, 0);
            let mut info = bufs.request(g.p);
            info.vdistance = Gpa(dist + 2);
            check(
                "get_vnuma with a vdistance buffer 2 bytes off",
                hypercall::get_vnuma(g.p, &mut info),
            );
            let mut info = bufs.request(g.p);
            info.vmemrange = Gpa(rng + 4);
            check(
                "get_vnuma with a vmemrange buffer 4 bytes off",
                hypercall::get_vnuma(g.p, &mut info),
            );
        }
    }
    if g.features.contains(Features::PHYSINFO) {
        let mut info = PhysInfo::probe();
        info.size = 55;
        check("physinfo with size 55", hypercall::physinfo(g.p, &mut info));
        let mut info = PhysInfo::probe();
        info.flags = 1;
        check("physinfo with flags 1", hypercall::physinfo(g.p, &mut info));
    }
    if g.features.contains(Features::DOMAIN_NODE_PAGES) {
        let mut info = DomainNodePages::new(0, Gpa::NULL);
        info.size = 23;
        check(
            "domain_node_pages with size 23",
            hypercall::domain_node_pages(g.p, &mut info),
        );
        let mut info = DomainNodePages::new(0, Gpa::NULL);
        info.reserved = 1;
        check(
            "domain_node_pages with reserved 1",
            hypercall::domain_node_pages(g.p, &mut info),
        );
    }
    problems(bad)
}

fn feature_words(g: &Guest) -> TestResult {
    // Every version this guest knows (1.0, 1.1) defines word 0 only.
    if g.hv_version > pv_abi::AbiVersion::CURRENT {
        skip!("ABI {} may define feature words past 0", g.hv_version);
    }
    let mut c = Checker::new(g);
    for word in [1, 2, u64::MAX] {
        c.expect(
            &format!("features word {word:#x}"),
            nr(Hypercall::Features),
            [word, 0, 0, 0, 0],
            Ok(0),
        );
    }
    c.done()
}

fn not_permitted_from_user_mode(_: &Guest) -> TestResult {
    skip!("needs CPL 3, which this guest does not set up yet")
}

/// After all of it, the hypercalls still work.
fn guest_survives(g: &Guest) -> TestResult {
    let v = hypercall::version(g.p);
    ensure!(v == Some(g.hv_version), "VERSION now answers {v:?}");
    let line = b"guest: still here after the garbage hypercalls\n";
    let r = hypercall::console_write(g.p, line);
    ensure!(
        r == Ok(line.len() as u64),
        "console_write answered {}",
        show(r)
    );
    Ok(())
}

/// A deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Whether no byte of `[start, start + len)` is guest memory.
fn outside_memory(g: &Guest, start: u64, len: u64) -> bool {
    let end = start.saturating_add(len);
    g.si.mem_ranges()
        .iter()
        .all(|r| !overlaps((start, end), (r.gpa.0, r.gpa.0.saturating_add(r.size))))
}

/// One pseudo-random register set.
fn garbage(rng: &mut Rng, g: &Guest) -> HypercallArgs {
    let nr = match rng.next() % 8 {
        0..=4 => rng.next() % 7,
        5 => 7 + rng.next() % 100,
        6 => rng.next(),
        _ => 0x4000_0000 + rng.next() % 4,
    };
    let mut args = [0u64; 5];
    for a in &mut args {
        *a = match rng.next() % 10 {
            0..=4 => 0,
            5 => g.hole.0 + (rng.next() % 64),
            6 => GPA_LIMIT + (rng.next() % 4096) * 8,
            7 => rng.next(),
            8 => rng.next() % 0x1_0000,
            _ => u64::MAX - rng.next() % 16,
        };
    }
    if nr == Hypercall::Shutdown.raw() {
        // Only refused shutdowns are issued; should a hypervisor wrongly
        // honour one, the domain ends as a failure, never as a success.
        args[0] = ShutdownStatus::TESTS_FAILED.raw();
    }
    HypercallArgs { nr, args }
}

/// What a hypervisor following pv-abi must answer, or `None` if the call
/// could do something real (then it is not issued).
fn predict(g: &Guest, regs: &HypercallArgs) -> Option<Result<u64, Error>> {
    let req = match HypercallRequest::from_args(regs) {
        // A number this guest does not know may be one a newer hypervisor
        // does: its answer cannot be predicted.
        Err(Error::Unsupported) if g.hv_version > pv_abi::AbiVersion::CURRENT => return None,
        Err(e) => return Some(Err(e)),
        Ok(r) => r,
    };
    let query = |info: Gpa, size: u64, feature: Features| {
        (g.features.contains(feature) && outside_memory(g, info.0, size))
            .then_some(Err(Error::Fault))
    };
    match req {
        HypercallRequest::Version => Some(Ok(g.hv_version.encode())),
        HypercallRequest::Features { word: 0 } => Some(Ok(g.features.bits())),
        HypercallRequest::Features { .. } => (g.hv_version.minor == 0).then_some(Ok(0)),
        HypercallRequest::ConsoleWrite { buf, len } => {
            (len > 0 && outside_memory(g, buf.0, len)).then_some(Err(Error::Fault))
        }
        HypercallRequest::GetVnuma { info } => query(info, 48, Features::VNUMA),
        HypercallRequest::PhysInfo { info } => query(info, 56, Features::PHYSINFO),
        HypercallRequest::DomainNodePages { info } => query(info, 24, Features::DOMAIN_NODE_PAGES),
        HypercallRequest::Shutdown { .. } => None,
        // Never issued inside guest memory: it would move the guest's pages.
        #[cfg(not(feature = "abi-1-1"))]
        HypercallRequest::DmaExchange { info } => query(info, 48, Features::DMA_EXCHANGE),
        // Only what cannot start or stop a vCPU is predicted: this suite
        // runs on vCPU 0, which may not go down. IS_UP is predicted where
        // the guest knows: vCPU 0 is up, and so is a secondary waiting for
        // jobs; one never started, or seen down, is down.
        #[cfg(not(feature = "abi-1-2"))]
        HypercallRequest::VcpuOp { op } => {
            use crate::smp::{CpuState, SmpState};
            if !g.features.contains(Features::VCPU_OP) {
                return None;
            }
            if op.vcpu() >= g.si.nr_vcpus {
                return Some(Err(Error::NoSuchThing));
            }
            match op {
                pv_abi::VcpuOp::Down { .. } | pv_abi::VcpuOp::Up { vcpu: 0, .. } => {
                    Some(Err(Error::InvalidArgument))
                }
                pv_abi::VcpuOp::IsUp { vcpu: 0 } => Some(Ok(1)),
                pv_abi::VcpuOp::IsUp { vcpu } => match &g.smp {
                    SmpState::Off(_) => Some(Ok(0)),
                    SmpState::On(smp) => match smp.slot(vcpu).map(|s| s.state()) {
                        Some(CpuState::Down) => Some(Ok(0)),
                        Some(CpuState::Idle) => Some(Ok(1)),
                        _ => None,
                    },
                },
                pv_abi::VcpuOp::Up { .. } => None,
            }
        }
    }
}

fn decoder_agreement(g: &Guest) -> TestResult {
    let mut rng = Rng(0x6e75_6d61_7669_736f);
    let mut bad = Vec::new();
    let mut issued = 0;
    let mut mismatches = 0;
    for _ in 0..GARBAGE_CALLS {
        let regs = garbage(&mut rng, g);
        let Some(want) = predict(g, &regs) else {
            continue;
        };
        issued += 1;
        let raw = g.p.hypercall(&regs);
        let got = HypercallResult::decode(raw);
        if got != want {
            mismatches += 1;
            if bad.len() < 10 {
                bad.push(format!(
                    "rax {:#x}, args {:#x?}: got {} (raw {raw:#x}), expected {}",
                    regs.nr,
                    regs.args,
                    show(got),
                    show(want)
                ));
            }
        }
    }
    ensure!(
        issued > GARBAGE_CALLS / 2,
        "only {issued} calls could be predicted"
    );
    if mismatches > 0 {
        bad.push(format!(
            "{mismatches} of {issued} garbage hypercalls answered differently from pv-abi's decoder"
        ));
    }
    problems(bad)
}

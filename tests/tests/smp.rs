//! Application processors: the hypervisor starts every AP at boot
//! (INIT-SIPI-SIPI through a real-mode trampoline), each AP enables SVM on
//! itself, runs the SVM self-test guest and reports on its node; `smp=off`
//! skips all that and leaves the `xl info -n` tables unchanged.
//!
//! The host tests at the end check the pure part of the bring-up (ICR
//! encodings, trampoline placement and patching, PIT arithmetic): the file
//! that holds it has no dependencies, so it is compiled here as it is in
//! the hypervisor.

use tests::boot;
use tests::default_machine;
use xtask::machine::MachineSpec;
use xtask::qemu::RunResult;

#[allow(dead_code)]
#[path = "../../hypervisor/src/arch/x86_64/smp_plan.rs"]
mod smp_plan;

fn boot_ok(spec: &MachineSpec, cmdline: &str) -> RunResult {
    let run = boot(spec, cmdline);
    assert!(
        run.outcome.success(),
        "{}\n--- console ---\n{}",
        run.outcome.describe(),
        run.console
    );
    run
}

/// The node of each CPU as QEMU's options place it, numbered as Linux does.
fn expected_cpu_nodes(spec: &MachineSpec) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = spec
        .linux_node_order()
        .iter()
        .enumerate()
        .flat_map(|(id, &q)| spec.nodes[q].cpus.iter().map(move |&c| (c, id as u32)))
        .collect();
    out.sort_unstable();
    out
}

/// `numavisor: cpu N (apic A, node K): online, ...` lines as (N, A, K, rest).
fn online_lines(console: &str) -> Vec<(u32, u32, u32, String)> {
    console
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("numavisor: cpu ")?;
            let (cpu, rest) = rest.split_once(" (apic ")?;
            let (apic, rest) = rest.split_once(", node ")?;
            let (node, rest) = rest.split_once("): online")?;
            Some((
                cpu.parse().ok()?,
                apic.parse().ok()?,
                node.parse().ok()?,
                rest.to_string(),
            ))
        })
        .collect()
}

/// The `xl info -n` block: from its header to the heap probe.
fn xl_info(console: &str) -> Vec<&str> {
    console
        .lines()
        .skip_while(|l| !l.starts_with("numavisor: machine (xl info -n):"))
        .take_while(|l| !l.starts_with("heap probe:"))
        .collect()
}

#[test]
fn every_ap_comes_online_on_its_node() {
    let spec = default_machine();
    let run = boot_ok(&spec, "");
    let console = &run.console;
    let expected = expected_cpu_nodes(&spec);
    assert_eq!(expected.len(), 6, "the default preset has 6 CPUs");
    let online = online_lines(console);
    let got: Vec<(u32, u32)> = online.iter().map(|&(c, _, n, _)| (c, n)).collect();
    // Every CPU but the boot CPU (0), in order, each on its node.
    assert_eq!(got, expected[1..].to_vec(), "\n--- console ---\n{console}");
    for (cpu, apic, _, rest) in &online {
        // QEMU's -smp 6 is 6 sockets of one core: APIC id = CPU index.
        assert_eq!(apic, cpu, "cpu {cpu}'s APIC id\n{console}");
        assert_eq!(rest, ", svm self-test ok", "cpu {cpu}\n{console}");
    }
    assert!(
        console.contains("numavisor: smp: starting 5 application processor(s)"),
        "{console}"
    );
    assert!(!console.contains("did not start"), "{console}");
    // The APs come up before the boot CPU goes on.
    let last_ap = console.find("numavisor: cpu 5 (apic 5").unwrap();
    let done = console.find("numavisor: done:").unwrap();
    assert!(last_ap < done, "{console}");
}

#[test]
fn smp_off_starts_only_the_boot_cpu() {
    let spec = default_machine();
    let off = boot_ok(&spec, "smp=off");
    assert!(
        off.console
            .contains("numavisor: smp: off (command line): only the boot CPU runs"),
        "{}",
        off.console
    );
    assert!(online_lines(&off.console).is_empty(), "{}", off.console);
    assert!(!off.console.contains("smp: starting"), "{}", off.console);
    // The machine view is the same either way.
    let on = boot_ok(&spec, "");
    let (a, b) = (xl_info(&off.console), xl_info(&on.console));
    assert!(a.len() > 10, "{}", off.console);
    assert_eq!(a, b, "xl info -n with smp=off and with the APs");
}

mod plan {
    use super::smp_plan::*;

    #[test]
    fn icr_encodings_match_the_manuals() {
        assert_eq!(icr_init_assert(), 0xC500);
        assert_eq!(icr_init_deassert(), 0x8500);
        assert_eq!(icr_startup(0x9e000), Some(0x69e));
        assert_eq!(icr_startup(0x1000), Some(0x601));
        assert_eq!(icr_startup(0x9e800), None, "not page-aligned");
        assert_eq!(icr_startup(0x100000), None, "not below 1 MiB");
        assert_eq!(icr_destination(5), Some(0x0500_0000));
        assert_eq!(icr_destination(255), Some(0xff00_0000));
        assert_eq!(icr_destination(256), None);
    }

    #[test]
    fn trampoline_patching() {
        let mut code = vec![0xAAu8; 0x90];
        patch_trampoline(&mut code, 0x9e000, 0x12_3000).unwrap();
        let word = |at: usize| u32::from_le_bytes(code[at..at + 4].try_into().unwrap());
        assert_eq!(word(layout::GDTR_BASE), 0x9e000 + 0x20);
        assert_eq!(word(layout::PM_JUMP), 0x9e000 + 0x80);
        assert_eq!(word(layout::CR3), 0x12_3000);
        // Only those three fields change.
        let changed: Vec<usize> = (0..code.len()).filter(|&i| code[i] != 0xAA).collect();
        let fields = [layout::GDTR_BASE, layout::PM_JUMP, layout::CR3];
        assert!(changed
            .iter()
            .all(|i| fields.iter().any(|f| (*f..*f + 4).contains(i))));
        // The GDT pointer's limit (before the base) is left to the assembly.
        assert_eq!(code[layout::GDTR..layout::GDTR + 2], [0xAA, 0xAA]);

        let mut short = vec![0u8; layout::MIN_LEN - 1];
        assert_eq!(
            patch_trampoline(&mut short, 0x9e000, 0x1000),
            Err(PatchError::TooShort)
        );
        assert_eq!(
            patch_trampoline(&mut code, 0x9e010, 0x1000),
            Err(PatchError::BadPage)
        );
        assert_eq!(
            patch_trampoline(&mut code, 0x100000, 0x1000),
            Err(PatchError::BadPage)
        );
        assert_eq!(
            patch_trampoline(&mut code, 0x9e000, 1 << 32),
            Err(PatchError::Cr3Above4GiB)
        );
    }

    #[test]
    fn trampoline_page_choice() {
        // SeaBIOS-like low memory: [0, 0x9fc00) usable.
        let ram = [(0, 0x9fc00), (0x100000, 0x2000_0000)];
        assert_eq!(choose_trampoline_page(&ram, &[]), Some(0x9e000));
        // Loader data on the top pages: the next free one below.
        assert_eq!(
            choose_trampoline_page(&ram, &[(0x9d800, 0x9f000)]),
            Some(0x9c000)
        );
        // Page 0 is never used; nothing usable below 1 MiB: none.
        assert_eq!(choose_trampoline_page(&[(0, 0x1000)], &[]), None);
        assert_eq!(choose_trampoline_page(&[(0x100000, 0x200000)], &[]), None);
        assert_eq!(choose_trampoline_page(&[(0, 0x2000)], &[]), Some(0x1000));
        // A page must lie wholly inside one usable range.
        assert_eq!(choose_trampoline_page(&[(0x1800, 0x2800)], &[]), None);
    }

    #[test]
    fn pit_and_tsc_arithmetic() {
        assert_eq!(pit_ticks(10_000), 11_932);
        assert_eq!(pit_ticks(0), 1);
        assert_eq!(pit_ticks(1), 2);
        // 2.6 GHz: 26 million TSC ticks in 10 ms of PIT ticks.
        assert_eq!(tsc_per_us(26_000_000, 11_932), 2599);
        assert_eq!(tsc_per_us(1, 0), 1);
        assert_eq!(tsc_per_us(0, 100), 1);
    }
}

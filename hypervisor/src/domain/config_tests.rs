//! Tests of the domain config parser, `check_against`, the default vnode and
//! the mirror domain.

use super::*;
use crate::domain::testutil::{four_nodes, topo, MIB};
use alloc::string::ToString;
use proptest::prelude::*;

fn parse(text: &str) -> Result<DomainConfig, ConfigError> {
    DomainConfig::parse("dom.cfg", text.as_bytes())
}

fn ok(text: &str) -> DomainConfig {
    match parse(text) {
        Ok(c) => {
            c.validate().expect("parsed config must validate");
            c
        }
        Err(e) => panic!("{e}\n--- in ---\n{text}"),
    }
}

fn bad(text: &str) -> String {
    match parse(text) {
        Ok(c) => panic!("accepted: {c:?}\n--- in ---\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn vn(pnode: u8, size_mib: u64, vcpus: &[u32], vdistances: &[u8]) -> VnodeConfig {
    VnodeConfig {
        pnode: NodeId(pnode),
        size_mib,
        vcpus: vcpus.to_vec(),
        vdistances: vdistances.to_vec(),
    }
}

const ISSUE_EXAMPLE: &str = r#"# Two vnodes, one per physical node.
name = "vm1"
memory = 1024
vcpus = 4
cpus = "0-3"
vnuma = [ "pnode=0,size=512,vcpus=0-1,vdistances=10,20",
          "pnode=1,size=512,vcpus=2-3,vdistances=20,10" ]
layout = "node-bits"
cmdline = "console=hvc0 ktest=all"
"#;

#[test]
fn issue_example() {
    let c = ok(ISSUE_EXAMPLE);
    assert_eq!(
        c,
        DomainConfig {
            name: "vm1".into(),
            memory_mib: 1024,
            vcpus: 4,
            cpus: Some(vec![CpuId(0), CpuId(1), CpuId(2), CpuId(3)]),
            vnodes: vec![
                vn(0, 512, &[0, 1], &[10, 20]),
                vn(1, 512, &[2, 3], &[20, 10])
            ],
            layout: LayoutKind::NodeBits,
            cmdline: "console=hvc0 ktest=all".into(),
            kernel: None,
            pci: Vec::new(),
            ..DomainConfig::default()
        }
    );
    assert_eq!(c.vnode_of_vcpu(2), Some(1));
    assert_eq!(c.vnode_of_vcpu(4), None);
    assert_eq!(c.pcpu_of_vcpu(3), Some(CpuId(3)));
    assert_eq!(c.pcpu_of_vcpu(4), None);
    assert_eq!(c.distance_matrix(), [10, 20, 20, 10]);
    let two = topo(
        &[&[(0, 1024 * MIB)], &[(1024 * MIB, 2048 * MIB)]],
        &[0, 0, 1, 1],
        &[10, 20, 20, 10],
    );
    c.check_against(&two).unwrap();
    // Node 0 of the 4-node machine has 511 MiB and some KiB.
    assert_eq!(
        c.check_against(&four_nodes()).unwrap_err(),
        "vnode 0 needs 512 MiB on node 0, which has only 511 MiB (short by 1 MiB)"
    );
}

#[test]
fn minimal_config_defaults() {
    let c = ok("name = small\nmemory = 64\n");
    assert_eq!(c.vcpus, 1);
    assert_eq!(c.cpus, None);
    assert!(c.vnodes.is_empty());
    assert_eq!(c.layout, LayoutKind::Compact);
    assert_eq!(c.cmdline, "");
    assert_eq!(c.kernel, None);
    assert_eq!(c.weight, DEFAULT_WEIGHT);
    assert!(c.vnuma_auto);
    assert!(c.auto_vnodes.is_empty());
}

#[test]
fn weight_and_vnuma_auto() {
    let c = ok("name = a\nmemory = 64\nweight = 512\nvnuma_auto = 0\n");
    assert_eq!((c.weight, c.vnuma_auto), (512, false));
    assert_eq!(ok(&c.to_string()), c);
    assert!(c.to_string().contains("weight = 512\nvnuma_auto = 0\n"));
    assert_eq!(ok("name = a\nmemory = 64\nweight = 1\n").weight, 1);
    assert_eq!(
        ok("name = a\nmemory = 64\nweight = \"65535\"\n").weight,
        65535
    );
    assert!(ok("name = a\nmemory = 64\nvnuma_auto = 1\n").vnuma_auto);
    let range = "weight must be 1 to 65535 (Xen's credit scheduler range), got";
    for (text, want) in [
        ("weight = 0", format!("dom.cfg:3: {range} 0")),
        ("weight = -1", format!("dom.cfg:3: {range} -1")),
        ("weight = \"-300\"", format!("dom.cfg:3: {range} -300")),
        ("weight = 65536", format!("dom.cfg:3: {range} 65536")),
        (
            "weight = heavy",
            "dom.cfg:3: weight: bad number 'heavy' (1 to 65535)".into(),
        ),
        (
            "weight = [ 1 ]",
            "dom.cfg:3: weight: expected a single value, not a list".into(),
        ),
        (
            "vnuma_auto = 2",
            "dom.cfg:3: vnuma_auto: expected 0 or 1, got '2'".into(),
        ),
        (
            "vnuma_auto = yes",
            "dom.cfg:3: vnuma_auto: expected 0 or 1, got 'yes'".into(),
        ),
    ] {
        assert_eq!(bad(&format!("name = a\nmemory = 64\n{text}\n")), want);
    }
    // A config made in code is held to the same range.
    let mut c = ok("name = a\nmemory = 64\n");
    c.weight = 0;
    assert_eq!(c.validate().unwrap_err(), format!("{range} 0"));
}

#[test]
fn time_limit() {
    assert_eq!(ok("name = a\nmemory = 64\n").time_limit, None);
    let c = ok("name = a\nmemory = 64\ntime_limit = 30\n");
    assert_eq!(c.time_limit, Some(30));
    assert_eq!(ok(&c.to_string()), c, "printed configs parse back");
    for v in ["0", "-5", "86401", "soon"] {
        assert_eq!(
            bad(&format!("name = a\nmemory = 64\ntime_limit = {v}\n")),
            format!("dom.cfg:3: time_limit must be 1 to 86400 seconds, got '{v}'")
        );
    }
}

#[test]
fn pnode_auto() {
    let text =
        "name = a\nvnuma = [ \"pnode=0,size=64,vcpus=0\", \"pnode=auto,size=128,vcpus=1\" ]\n";
    let c = ok(text);
    assert_eq!(c.auto_vnodes, [1]);
    assert_eq!(c.vnodes[1].pnode, AUTO_PNODE);
    assert_eq!(c.memory_mib, 192);
    assert!(c
        .to_string()
        .contains("\"pnode=auto,size=128,vcpus=1,vdistances=20,10\""));
    assert_eq!(ok(&c.to_string()), c);
    let t = four_nodes();
    c.check_against(&t).unwrap();
    // Pinned: checked on its CPUs' node, which must be one node.
    let pinned = |cpus: &str, size: u64| {
        ok(&format!(
            "name = a\ncpus = \"{cpus}\"\nvnuma = [ \"pnode=auto,size={size},vcpus=0-1\" ]\n"
        ))
    };
    pinned("2-3", 512).check_against(&t).unwrap();
    assert_eq!(
        pinned("2-3", 513).check_against(&t).unwrap_err(),
        "vnode 0 needs 513 MiB on node 1, which has only 512 MiB (short by 1 MiB)"
    );
    assert_eq!(
        pinned("1-2", 64).check_against(&t).unwrap_err(),
        "vnode 0 has pnode=auto and its vcpus are pinned to CPUs on nodes 0-1; a vnode lives \
         on one node: pin its vcpus to CPUs of one node"
    );
    assert_eq!(
        pinned("4-5", 64).check_against(&t).unwrap_err(),
        "vnode 0 needs 64 MiB on node 2, which has no memory"
    );
    // Unpinned: some node must be big enough.
    let big = ok("name = a\nvnuma = [ \"pnode=auto,size=600,vcpus=0\" ]\n");
    assert_eq!(
        big.check_against(&t).unwrap_err(),
        "vnode 0 (pnode=auto) needs 600 MiB on one node; the largest, node 1, has 512 MiB"
    );
    assert_eq!(
        bad("name = a\nvnuma = [ \"pnode=any,size=64\" ]\n"),
        "dom.cfg:2: vnode 0: bad pnode 'any' (a node id or auto)"
    );
    // A list naming no vnode, or out of order, in a config made in code.
    let mut c = ok(text);
    c.auto_vnodes = vec![1, 1];
    assert!(c.validate().is_err());
    c.auto_vnodes = vec![2];
    assert!(c.validate().is_err());
}

#[test]
fn every_syntax_form() {
    // Xen's nested vnuma lists, bare words, `;`, single quotes, comments
    // after values and inside lists, a trailing comma, hex numbers, CRLF,
    // a memoryless and a CPU-less vnode, default distances, memory and
    // vcpus derived from vnuma, per-vcpu pinning as a list.
    let text = "name='x.y_z-1' ; layout = high-only # comment\r\n\
                kernel = \"guest.elf\"\r\n\
                cmdline = 'a \\'q\\' \\\\ \"b\"'\n\
                cpus = [ \"4\", 5, '2-3' ]\n\
                vnuma = [\n\
                  # vnode 0: CPUs but no memory\n\
                  [\"pnode=2\", \"size=0\", \"vcpus=0-1\"],\n\
                  \"pnode = 1 , size = 0x200, vcpus = 2,3\",\n\
                  \"size=256,pnode=3\",\n\
                ]\n";
    let c = ok(text);
    assert_eq!(c.name, "x.y_z-1");
    assert_eq!(c.layout, LayoutKind::HighOnly);
    assert_eq!(c.kernel.as_deref(), Some("guest.elf"));
    assert_eq!(c.cmdline, "a 'q' \\ \"b\"");
    assert_eq!(c.cpus, Some(vec![CpuId(4), CpuId(5), CpuId(2), CpuId(3)]));
    assert_eq!(c.memory_mib, 768);
    assert_eq!(c.vcpus, 4);
    assert_eq!(
        c.vnodes,
        [
            vn(2, 0, &[0, 1], &[10, 20, 20]),
            vn(1, 512, &[2, 3], &[20, 10, 20]),
            vn(3, 256, &[], &[20, 20, 10]),
        ]
    );
    // Pinned to the nodes of its vnodes on the 4-node machine.
    c.check_against(&four_nodes()).unwrap();
}

#[test]
fn pinning_forms() {
    assert_eq!(ok("name=a\nmemory=8\ncpus=\"all\"").cpus, None);
    let c = ok("name=a\nmemory=8\nvcpus=5\ncpus=\"6,0-1\"");
    assert_eq!(c.cpus, Some(vec![CpuId(6), CpuId(0), CpuId(1)]));
    // vcpu i runs on cpus[i % len].
    let pins: Vec<_> = (0..5).map(|v| c.pcpu_of_vcpu(v).unwrap().0).collect();
    assert_eq!(pins, [6, 0, 1, 6, 0]);
}

#[test]
fn trailing_nuls_and_empty_lines_are_fine() {
    let mut bytes = b"\n\nname = a\n\n\nmemory = 2\n".to_vec();
    bytes.extend_from_slice(&[0; 100]);
    let c = DomainConfig::parse("m", &bytes).unwrap();
    assert_eq!((c.name.as_str(), c.memory_mib), ("a", 2));
}

#[test]
fn pci_devices() {
    let c = ok("name = d\nmemory = 64\npci = [ \"00:04.0\", \"0000:00:1f.3\" ]\n");
    assert_eq!(
        c.pci,
        vec![
            crate::pci::Bdf {
                bus: 0,
                dev: 4,
                func: 0
            },
            crate::pci::Bdf {
                bus: 0,
                dev: 0x1f,
                func: 3
            }
        ]
    );
    assert!(c
        .to_string()
        .contains("pci = [ \"00:04.0\", \"00:1f.3\" ]\n"));
    assert_eq!(ok(&c.to_string()), c);
    assert_eq!(
        ok("name = d\nmemory = 64\npci = \"00:05.0\"\n").pci.len(),
        1
    );
    assert!(ok("name = d\nmemory = 64\npci = []\n").pci.is_empty());
}

#[test]
fn display_round_trips() {
    let c = ok(ISSUE_EXAMPLE);
    let text = c.to_string();
    assert_eq!(
        text,
        "name = \"vm1\"\nmemory = 1024\nvcpus = 4\ncpus = \"0-3\"\nlayout = \"node-bits\"\n\
         cmdline = \"console=hvc0 ktest=all\"\nvnuma = [\n\
         \x20   \"pnode=0,size=512,vcpus=0-1,vdistances=10,20\",\n\
         \x20   \"pnode=1,size=512,vcpus=2-3,vdistances=20,10\",\n]\n"
    );
    assert_eq!(ok(&text), c);
}

/// Every bad case: (text, expected `file:line: message`).
#[test]
fn bad_configs_name_file_line_and_problem() {
    let vnode_cfg =
        |vnuma: &str| format!("name = v\nmemory = 1024\nvcpus = 4\nvnuma = [\n{vnuma}\n]\n");
    let two = |a: &str, b: &str| vnode_cfg(&format!("\"{a}\",\n\"{b}\""));
    let too_many: String = {
        let mut s = String::from("name = v\nvnuma = [\n");
        for _ in 0..65 {
            s.push_str("\"pnode=0,size=1\",\n");
        }
        s.push_str("]\n");
        s
    };
    let long_name = format!("name = \"{}\"\nmemory = 1\n", "n".repeat(65));
    let long_cmdline = format!("name = a\nmemory = 1\ncmdline = \"{}\"\n", "c".repeat(1024));
    let cases: Vec<(String, &str)> = vec![
        ("name = a\nmemry = 5\n".into(), "dom.cfg:2: unknown key 'memry'"),
        ("name = a\nmemory = 12M\n".into(), "dom.cfg:2: memory: bad number '12M' (MiB)"),
        ("name = a\nmemory = -1\n".into(), "dom.cfg:2: memory: bad number '-1' (MiB)"),
        ("name = a\nmemory = 99999999999999999999\n".into(), "dom.cfg:2: memory: bad number '99999999999999999999' (MiB)"),
        ("name = a\nmemory = 0x\n".into(), "dom.cfg:2: memory: bad number '0x' (MiB)"),
        ("name = a\nmemory = +5\n".into(), "dom.cfg:2: memory: bad number '+5' (MiB)"),
        ("memory = 1\nname = \"abc\n".into(), "dom.cfg:2: unterminated string"),
        ("memory = 1\nname = \"abc\\\n\"".into(), "dom.cfg:2: unterminated string"),
        ("name = \"a\\q\"\n".into(), "dom.cfg:1: unknown escape '\\q' in a string"),
        ("name = a\nmemory = 1\nvnuma = [ \"pnode=0,size=1\",\n".into(), "dom.cfg:3: unterminated list ('[' without ']')"),
        ("name = a\nvnuma = [ \"pnode=0,size=1\",\nmemory = 1\n".into(), "dom.cfg:2: unterminated list ('[' without ']')"),
        ("name = a\nvnuma = [ \"pnode=0,size=1\"\nmemory = 1\n".into(), "dom.cfg:2: unterminated list ('[' without ']')"),
        ("name = a\ncpus = [ 1 2 ]\nmemory = 1\n".into(), "dom.cfg:2: expected ',' or ']' in a list, found '2'"),
        ("name = a\ncpus = [ 1, , 2 ]\n".into(), "dom.cfg:2: expected a value, found ','"),
        ("name = a\ncpus = [[[\"1\"]]]\n".into(), "dom.cfg:2: lists nested too deeply"),
        ("name = a\nmemory = 1\nname = b\n".into(), "dom.cfg:3: duplicate key 'name' (first set on line 1)"),
        ("name \"a\"\n".into(), "dom.cfg:1: expected '=' after 'name', found string \"a\""),
        ("name".into(), "dom.cfg:1: expected '=' after 'name'"),
        ("name =\nmemory = 1\n".into(), "dom.cfg:1: 'name' has no value"),
        ("name = a b\n".into(), "dom.cfg:1: unexpected 'b' after the value of 'name'"),
        ("= 5\n".into(), "dom.cfg:1: expected a key, found '='"),
        ("5 = 5\n".into(), "dom.cfg:1: expected a key, found '5'"),
        ("name = a\n]\n".into(), "dom.cfg:2: expected a key, found ']'"),
        ("name = a@b\n".into(), "dom.cfg:1: unexpected character '@'"),
        ("name = a\0b\n".into(), "dom.cfg:1: unexpected character '\\0'"),
        ("name = [a]\nmemory = 1\n".into(), "dom.cfg:1: name: expected a single value, not a list"),
        ("memory = 1\n# no name\n".into(), "dom.cfg:2: no name (name = \"...\")"),
        ("".into(), "dom.cfg:1: no name (name = \"...\")"),
        ("name = a\n".into(), "dom.cfg:1: no memory (memory = MiB, or vnuma with sizes)"),
        ("name = \"\"\nmemory = 1\n".into(), "dom.cfg:1: name: empty"),
        (long_name, "dom.cfg:1: name: 65 bytes long; at most 64"),
        ("name = \"a b\"\nmemory = 1\n".into(), "dom.cfg:1: name: 'a b' has a character other than letters, digits, '_', '-' and '.'"),
        ("name = a\nmemory = 0\n".into(), "dom.cfg:2: memory: 0 MiB; a domain needs memory"),
        ("name = a\nmemory = 0x4000001\n".into(), "dom.cfg:2: memory: 67108865 MiB is more than the limit of 67108864 MiB"),
        ("name = a\nmemory = 1\nvcpus = 0\n".into(), "dom.cfg:3: vcpus: 0 out of range (1 to 256)"),
        ("name = a\nmemory = 1\nvcpus = 257\n".into(), "dom.cfg:3: vcpus: 257 out of range (1 to 256)"),
        ("name = a\nmemory = 1\nvcpus = many\n".into(), "dom.cfg:3: vcpus: bad number 'many' (a count)"),
        ("name = a\nmemory = 1\ncpus = \"0-3,2\"\n".into(), "dom.cfg:3: cpus: CPU 2 listed twice"),
        ("name = a\nmemory = 1\ncpus = \"3-1\"\n".into(), "dom.cfg:3: cpus: bad CPU range '3-1'"),
        ("name = a\nmemory = 1\ncpus = \"0,,1\"\n".into(), "dom.cfg:3: cpus: bad CPU list '0,,1'"),
        ("name = a\nmemory = 1\ncpus = \"256\"\n".into(), "dom.cfg:3: cpus: CPU 256 out of range (at most 255)"),
        ("name = a\nmemory = 1\ncpus = [\n\"1\",\n\"x\"]\n".into(), "dom.cfg:5: cpus: bad CPU list 'x'"),
        ("name = a\nmemory = 1\ncpus = []\n".into(), "dom.cfg:3: cpus: empty list"),
        ("name = a\nmemory = 1\nlayout = sparse\n".into(), "dom.cfg:3: layout: unknown layout 'sparse' (compact, node-bits, high-only or identity)"),
        (long_cmdline, "dom.cfg:3: cmdline: 1024 bytes long; at most 1023"),
        ("name = a\nmemory = 1\ncmdline = \"a\\nb\"\n".into(), "dom.cfg:3: cmdline: contains a control character"),
        ("name = a\nmemory = 1\nkernel = \"\"\n".into(), "dom.cfg:3: kernel: empty"),
        ("name = a\nmemory = 1\nvnuma = \"pnode=0,size=1\"\n".into(), "dom.cfg:3: vnuma: expected a list of vnodes ([ \"pnode=0,size=512,...\", ... ])"),
        ("name = a\nmemory = 1\nvnuma = []\n".into(), "dom.cfg:3: vnuma: empty list"),
        ("name = a\nmemory = 1\nvnuma = [[[\"pnode=0\"]]]\n".into(), "dom.cfg:3: lists nested too deeply"),
        (too_many, "dom.cfg:2: vnuma: 65 vnodes; at most 64"),
        (vnode_cfg("\"size=1024,vcpus=0-3\""), "dom.cfg:5: vnode 0: no pnode (a node id or auto)"),
        (vnode_cfg("\"pnode=0,vcpus=0-3\""), "dom.cfg:5: vnode 0: no size"),
        (vnode_cfg("\"0,size=1024\""), "dom.cfg:5: vnode 0: expected key=value, found '0'"),
        (vnode_cfg("\"pnode=0,size=1024,colour=red\""), "dom.cfg:5: vnode 0: unknown key 'colour' (pnode, size, vcpus, vdistances)"),
        (vnode_cfg("\"pnode=0,size=1024,pnode=1\""), "dom.cfg:5: vnode 0: 'pnode' given twice"),
        (vnode_cfg("\"pnode=64,size=1024\""), "dom.cfg:5: vnode 0: pnode 64 out of range (at most 63)"),
        (vnode_cfg("\"pnode=zero,size=1024\""), "dom.cfg:5: vnode 0: bad pnode 'zero' (a node id or auto)"),
        (vnode_cfg("\"pnode=0,size=1G\""), "dom.cfg:5: vnode 0: bad size (MiB) '1G'"),
        (vnode_cfg("\"pnode=0,size=1024,vcpus=0-3,vdistances=10,300\""), "dom.cfg:5: vnode 0: bad distance '300' (0-255)"),
        (vnode_cfg("\"pnode=0,size=1024,vcpus=0-x\""), "dom.cfg:5: vnode 0: bad vcpu list '0-x'"),
        (vnode_cfg("[\"pnode=0\", [\"size=1\"]]"), "dom.cfg:5: lists nested too deeply"),
        (two("pnode=0,size=512,vcpus=0-1,vdistances=10,20,20", "pnode=1,size=512,vcpus=2-3,vdistances=20,10"), "dom.cfg:5: vnode 0: 3 distances for 2 vnodes"),
        (two("pnode=0,size=512,vcpus=0-1,vdistances=10,20", "pnode=1,size=512,vcpus=2-3,vdistances=20"), "dom.cfg:6: vnode 1: 1 distance for 2 vnodes"),
        (two("pnode=0,size=512,vcpus=0-1,vdistances=11,20", "pnode=1,size=512,vcpus=2-3,vdistances=20,10"), "dom.cfg:5: vnode 0: distance to itself is 11; must be 10"),
        (two("pnode=0,size=512,vcpus=0-1,vdistances=10,20", "pnode=1,size=512,vcpus=2-3,vdistances=9,10"), "dom.cfg:6: vnode 1: distance to vnode 0 is 9; must be more than 10 (only a node itself is at 10)"),
        (two("pnode=0,size=512,vcpus=0-1,vdistances=10,10", "pnode=1,size=512,vcpus=2-3,vdistances=20,10"), "dom.cfg:5: vnode 0: distance to vnode 1 is 10; must be more than 10 (only a node itself is at 10)"),
        (two("pnode=0,size=512,vcpus=0-1", "pnode=1,size=512,vcpus=1-3"), "dom.cfg:6: vcpu 1 is in vnode 0 and vnode 1"),
        (two("pnode=0,size=512,vcpus=0-1,1", "pnode=1,size=512,vcpus=2-3"), "dom.cfg:5: vnode 0: vcpu 1 listed twice"),
        (two("pnode=0,size=512,vcpus=0-1", "pnode=1,size=512,vcpus=2-4"), "dom.cfg:6: vnode 1: vcpu 4 out of range (vcpus = 4)"),
        (two("pnode=0,size=512,vcpus=0-1", "pnode=1,size=512,vcpus=3"), "dom.cfg:4: vcpu 2 is in no vnode"),
        (two("pnode=0,size=512,vcpus=0-1", "pnode=1,size=500,vcpus=2-3"), "dom.cfg:4: vnode sizes add up to 1012 MiB but memory = 1024"),
        (two("pnode=0,size=512,vcpus=0-1", "pnode=1,size=512,vcpus=2-256"), "dom.cfg:6: vnode 1: vcpu 256 out of range (at most 255)"),
        (two("pnode=0,size=512,vcpus=0-1", "pnode=1,size=67108865,vcpus=2-3"), "dom.cfg:6: vnode 1: size 67108865 MiB is more than the limit of 67108864 MiB"),
        ("name = a\nvnuma = [\"pnode=0,size=0\"]\n".into(), "dom.cfg:2: memory: 0 MiB; a domain needs memory"),
        ("name = a\nvnuma = [\"pnode=0,size=2\"]\n".into(), "dom.cfg:2: vcpus: 0 out of range (1 to 256)"),
        ("name = a\nmemory = 1\npci = [ \"00:04\" ]\n".into(), "dom.cfg:3: pci: bad PCI address '00:04' (expected bus:device.function such as 00:04.0)"),
        ("name = a\nmemory = 1\npci = [\n\"00:04.0\",\n\"00:20.0\" ]\n".into(), "dom.cfg:5: pci: bad PCI address '00:20.0' (expected bus:device.function such as 00:04.0)"),
        ("name = a\nmemory = 1\npci = [\n\"00:04.0\",\n\"0000:00:04.0\" ]\n".into(), "dom.cfg:5: pci: device 00:04.0 listed twice"),
        ("name = a\nmemory = 1\npci = [ \"00:01.0\", \"00:02.0\", \"00:03.0\", \"00:04.0\", \"00:05.0\", \"00:06.0\", \"00:07.0\", \"00:08.0\", \"00:09.0\" ]\n".into(), "dom.cfg:3: pci: 9 devices; at most 8"),
        ("name = a\nmemory = 1\npci = [ [ \"00:04.0\" ] ]\n".into(), "dom.cfg:3: pci: expected a single value, not a list"),
        ("name = a\nmemory = 1\npci = [ \"0001:00:04.0\" ]\n".into(), "dom.cfg:3: pci: PCI segment 0001 in '0001:00:04.0': only segment 0 is supported"),
    ];
    for (text, want) in &cases {
        assert_eq!(&bad(text), want, "--- in ---\n{text}");
    }
    // Not UTF-8 on line 3.
    let e =
        DomainConfig::parse("x.cfg", b"name = a\nmemory = 1\ncmdline = \"\xff\"\n").unwrap_err();
    assert_eq!(e.to_string(), "x.cfg:3: not UTF-8 text");
    assert_eq!((e.file.as_str(), e.line), ("x.cfg", 3));
}

#[test]
fn check_against_the_machine() {
    let t = four_nodes();
    let cfg = |vnuma: &str, cpus: &str| {
        ok(&format!(
            "name = v\nvcpus = 2\n{cpus}\nvnuma = [ {vnuma} ]\n"
        ))
    };
    let err = |c: DomainConfig| c.check_against(&t).unwrap_err();
    assert_eq!(
        err(cfg("\"pnode=4,size=64,vcpus=0-1\"", "")),
        "vnode 0: pnode 4 does not exist (the machine has 4 nodes)"
    );
    assert_eq!(
        err(cfg("\"pnode=2,size=64,vcpus=0-1\"", "")),
        "vnode 0 needs 64 MiB on node 2, which has no memory"
    );
    assert_eq!(
        err(cfg("\"pnode=1,size=600,vcpus=0-1\"", "")),
        "vnode 0 needs 600 MiB on node 1, which has only 512 MiB (short by 88 MiB)"
    );
    // Two vnodes sharing a node: their sum counts.
    assert_eq!(
        err(cfg(
            "\"pnode=3,size=300,vcpus=0\", \"pnode=3,size=300,vcpus=1\"",
            ""
        )),
        "vnodes 0-1 need 600 MiB on node 3, which has only 512 MiB (short by 88 MiB)"
    );
    // Node 0 has 0x9f000 + 511 MiB.
    assert_eq!(
        err(cfg("\"pnode=0,size=512,vcpus=0-1\"", "")),
        "vnode 0 needs 512 MiB on node 0, which has only 511 MiB (short by 1 MiB)"
    );
    assert_eq!(
        err(cfg("\"pnode=1,size=64,vcpus=0-1\"", "cpus = \"2,6\"")),
        "cpus: CPU 6 does not exist (the machine has 6 CPUs)"
    );
    assert_eq!(
        err(cfg("\"pnode=1,size=64,vcpus=0-1\"", "cpus = \"2,4\"")),
        "vcpu 1 (vnode 0, on node 1) is pinned to CPU 4 on node 2"
    );
    // Memoryless vnode on a memoryless node, pinned right: fine.
    cfg(
        "\"pnode=2,size=0,vcpus=0,vdistances=10,30\", \"pnode=0,size=64,vcpus=1,vdistances=30,10\"",
        "cpus = \"4,0\"",
    )
    .check_against(&t)
    .unwrap();
    // Unpinned, no vnuma: it must fit in the machine, on several nodes if
    // need be (node 0 has 511 MiB + 636 KiB: 1535 MiB in all).
    ok("name = a\nmemory = 1535\n").check_against(&t).unwrap();
    assert_eq!(
        err(ok("name = a\nmemory = 1536\n")),
        "memory: 1536 MiB is more than the whole machine has (1535 MiB on 4 nodes)"
    );
    // ... or in one node with vnuma_auto = 0.
    ok("name = a\nmemory = 512\nvnuma_auto = 0\n")
        .check_against(&t)
        .unwrap();
    assert_eq!(
        err(ok("name = a\nmemory = 513\nvnuma_auto = 0\n")),
        "vnuma_auto = 0 asks for one flat node, but 513 MiB fits in no node (the largest, \
         node 1, has 512 MiB): allow vnuma_auto = 1 or give a vnuma"
    );
}

/// Places `c` (`place_domain`) on a machine where no other domain runs and
/// every CPU is up, `free_bytes` giving each node's unclaimed free memory.
fn place_alone(
    c: &mut DomainConfig,
    topology: &Topology,
    free_bytes: impl Fn(NodeId) -> u64,
) -> Result<(), String> {
    if !c.vnodes.is_empty() && c.auto_vnodes.is_empty() {
        return Ok(());
    }
    let free: Vec<u64> = topology.nodes.iter().map(|n| free_bytes(n.id)).collect();
    let online = vec![true; topology.cpus.len()];
    let state = crate::domain::placement::MachineState {
        unclaimed_free: &free,
        vcpus_on_cpu: &[],
        online: &online,
    };
    *c = crate::domain::placement::place_domain(c, topology, &state)?.config;
    Ok(())
}

#[test]
fn default_vnode_placement() {
    let t = four_nodes();
    let free = |n: NodeId| [100, 300, 0, 300][n.index()] * MIB;
    // Unpinned: the node with the most free memory, lowest id on a tie.
    let mut c = ok("name = a\nmemory = 256\nvcpus = 3\n");
    place_alone(&mut c, &t, free).unwrap();
    assert_eq!(c.vnodes, [vn(1, 256, &[0, 1, 2], &[10])]);
    c.validate().unwrap();
    c.check_against(&t).unwrap();
    // Already placed: left alone.
    let before = c.clone();
    place_alone(&mut c, &t, |_| 0).unwrap();
    assert_eq!(c, before);
    // Pinned: the pinned CPUs' node.
    let mut c = ok("name = a\nmemory = 64\nvcpus = 2\ncpus = \"0-1\"\n");
    place_alone(&mut c, &t, free).unwrap();
    assert_eq!(c.vnodes, [vn(0, 64, &[0, 1], &[10])]);
    let mut c = ok("name = a\nmemory = 128\nvcpus = 2\ncpus = \"0-1\"\n");
    assert_eq!(
        place_alone(&mut c, &t, free).unwrap_err(),
        "no vnuma given and node 0 (of the pinned CPUs) has only 100 MiB unclaimed free for 128 MiB (short by 28 MiB)"
    );
    let mut c = ok("name = a\nmemory = 64\nvcpus = 2\ncpus = \"1-2\"\n");
    assert_eq!(
        place_alone(&mut c, &t, free).unwrap_err(),
        "no vnuma given and the pinned CPUs are on nodes 0-1; give a vnuma line to split the domain"
    );
    let mut c = ok("name = a\nmemory = 64\ncpus = \"9\"\n");
    assert_eq!(
        place_alone(&mut c, &t, free).unwrap_err(),
        "cpus: CPU 9 does not exist (the machine has 6 CPUs)"
    );
    // Too big for any node: spans the closest pair that holds it, one
    // vnode per node, the vcpu where the memory mostly is.
    let mut c = ok("name = a\nmemory = 400\n");
    place_alone(&mut c, &t, free).unwrap();
    assert_eq!(
        c.vnodes,
        [vn(0, 100, &[], &[10, 20]), vn(1, 300, &[0], &[20, 10])]
    );
    // Too big for the machine's free memory: refused with the shortfall.
    let mut c = ok("name = a\nmemory = 800\n");
    assert_eq!(
        place_alone(&mut c, &t, free).unwrap_err(),
        "800 MiB fits nowhere, even spanning every node: 700 MiB unclaimed free in all (short by 100 MiB)"
    );
    assert!(c.vnodes.is_empty());
}

#[test]
fn mirror_of_four_nodes() {
    let t = four_nodes();
    let c = DomainConfig::mirror_machine(&t, MIRROR_NODE_MIB);
    c.validate().unwrap();
    c.check_against(&t).unwrap();
    assert_eq!(c.name, "mirror");
    assert_eq!(c.layout, LayoutKind::Compact);
    assert_eq!(c.vcpus, 6);
    assert_eq!(c.cpus, Some((0..6).map(CpuId).collect()));
    assert_eq!(
        c.vnodes,
        [
            vn(0, 64, &[0, 1], &[10, 20, 30, 40]),
            vn(1, 64, &[2, 3], &[20, 10, 20, 30]),
            vn(2, 0, &[4, 5], &[30, 20, 10, 20]),
            vn(3, 64, &[], &[40, 30, 20, 10]),
        ]
    );
    assert_eq!(c.memory_mib, 192);
    assert_eq!(ok(&c.to_string()), c);

    // A bigger cap: half of each node, rounded down to 2 MiB (node 0 has
    // 511 MiB + 636 KiB: half is 255 MiB -> 254).
    let c = DomainConfig::mirror_machine(&t, 1 << 20);
    let sizes: Vec<u64> = c.vnodes.iter().map(|v| v.size_mib).collect();
    assert_eq!(sizes, [254, 256, 0, 256]);
    c.validate().unwrap();
    // An odd cap is rounded down too.
    let c = DomainConfig::mirror_machine(&t, 33);
    assert!(c.vnodes.iter().all(|v| v.size_mib % 2 == 0));
    assert_eq!(c.memory_mib, 96);
}

#[test]
fn mirror_of_emulated_nodes_keeps_a_valid_slit() {
    // numa=fake puts two fake nodes of one physical node at distance 10.
    let t = crate::domain::testutil::topo(
        &[&[(0, 256 * MIB)], &[(256 * MIB, 512 * MIB)]],
        &[0, 1],
        &[10, 10, 10, 10],
    );
    let c = DomainConfig::mirror_machine(&t, MIRROR_NODE_MIB);
    assert_eq!(c.distance_matrix(), [10, 11, 11, 10]);
    c.validate().unwrap();
}

#[test]
fn mirror_follows_machine_cpu_order() {
    // CPUs interleaved across nodes: vcpu i is CPU i, in vnode = its node.
    let t = topo(
        &[&[(0, 64 * MIB)], &[(64 * MIB, 67 * MIB)]],
        &[0, 1, 0, 1, 1],
        &[10, 17, 17, 10],
    );
    let c = DomainConfig::mirror_machine(&t, MIRROR_NODE_MIB);
    assert_eq!(
        c.vnodes,
        [
            vn(0, 32, &[0, 2], &[10, 17]),
            vn(1, 0, &[1, 3, 4], &[17, 10])
        ]
    );
    c.validate().unwrap();
    c.check_against(&t).unwrap();
    for v in 0..5 {
        let k = c.vnode_of_vcpu(v).unwrap();
        let pcpu = c.pcpu_of_vcpu(v).unwrap();
        assert_eq!(pcpu, CpuId(v));
        assert_eq!(t.cpu_node(pcpu), Some(c.vnodes[k].pnode));
    }
    // All nodes tiny: a domain without memory, which validate() refuses.
    let t = topo(&[&[(0, 3 * MIB)]], &[0], &[10]);
    let c = DomainConfig::mirror_machine(&t, MIRROR_NODE_MIB);
    assert_eq!(
        c.validate().unwrap_err(),
        "memory: 0 MiB; a domain needs memory"
    );
}

#[test]
fn example_configs_place_as_their_comments_say() {
    let t = four_nodes();
    // About what the default machine has free after the hypervisor.
    let free = [480 * MIB, 500 * MIB, 0, 500 * MIB];
    let online = [true; 6];
    let state = crate::domain::placement::MachineState {
        unclaimed_free: &free,
        vcpus_on_cpu: &[],
        online: &online,
    };
    let place = |text: &str| {
        let c = DomainConfig::parse("example.cfg", text.as_bytes()).unwrap();
        let p = crate::domain::placement::place_domain(&c, &t, &state).unwrap();
        let nodes: Vec<u8> = p.config.vnodes.iter().map(|v| v.pnode.0).collect();
        (p, nodes)
    };
    let (p, nodes) = place(include_str!("../../../domains/auto-one-node.cfg"));
    assert_eq!(nodes, [1]);
    assert_eq!(p.config.weight, 512);
    let (p, nodes) = place(include_str!("../../../domains/auto-span.cfg"));
    assert_eq!(nodes, [0, 1]);
    assert_eq!(p.config.distance_matrix(), [10, 20, 20, 10]);
    let (_, nodes) = place(include_str!("../../../domains/auto-vnode.cfg"));
    assert_eq!(nodes, [0, 1]);
}

fn config_chars() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("name"),
        Just("memory"),
        Just("vcpus"),
        Just("cpus"),
        Just("vnuma"),
        Just("layout"),
        Just("cmdline"),
        Just("kernel"),
        Just("weight"),
        Just("vnuma_auto"),
        Just("pnode="),
        Just("auto"),
        Just("size="),
        Just("vcpus="),
        Just("vdistances="),
        Just("="),
        Just("["),
        Just("]"),
        Just(","),
        Just("\""),
        Just("'"),
        Just("\\"),
        Just("\n"),
        Just("#"),
        Just(";"),
        Just(" "),
        Just("0"),
        Just("1"),
        Just("10"),
        Just("20"),
        Just("512"),
        Just("0-3"),
        Just("-"),
        Just("compact"),
        Just("x"),
        Just("\u{e9}"),
        Just("\0"),
    ];
    proptest::collection::vec(pieces, 0..60).prop_map(|v| v.concat())
}

fn check_parsed(bytes: &[u8]) -> Result<(), TestCaseError> {
    match DomainConfig::parse("p.cfg", bytes) {
        Ok(c) => {
            prop_assert!(c.validate().is_ok(), "{c:?}");
            let again = DomainConfig::parse("q.cfg", c.to_string().as_bytes());
            prop_assert_eq!(again.as_ref(), Ok(&c));
            // And against a machine, nothing panics either.
            let _ = c.check_against(&four_nodes());
            let t = four_nodes();
            let free = [256 * MIB; 4];
            let online = [true; 6];
            let state = crate::domain::placement::MachineState {
                unclaimed_free: &free,
                vcpus_on_cpu: &[1; 6],
                online: &online,
            };
            if let Ok(p) = crate::domain::placement::place_domain(&c, &t, &state) {
                prop_assert!(p.config.validate().is_ok(), "{:?}", p.config);
                prop_assert!(p.config.auto_vnodes.is_empty());
                prop_assert_eq!(p.cpus.len(), p.config.vcpus as usize);
            }
            let mut c = c;
            let _ = place_alone(&mut c, &t, |_| 256 * MIB);
        }
        Err(e) => {
            prop_assert_eq!(e.file.as_str(), "p.cfg");
            prop_assert!(e.line >= 1);
            prop_assert!(!e.message.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_parsed(&bytes)?;
    }

    #[test]
    fn config_like_text_never_panics(text in config_chars()) {
        check_parsed(text.as_bytes())?;
    }

    #[test]
    fn mutated_configs_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
        base in 0usize..2,
    ) {
        let mut bytes = if base == 0 {
            ISSUE_EXAMPLE.as_bytes().to_vec()
        } else {
            DomainConfig::mirror_machine(&four_nodes(), 64).to_string().into_bytes()
        };
        for (at, b, op) in edits {
            let i = at % (bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = b,
                1 => bytes.insert(i, b),
                _ => bytes.truncate(i),
            }
        }
        check_parsed(&bytes)?;
    }
}

//! Linux is the oracle: on the same QEMU machine, Debian's Linux kernel and
//! numavisor's guest (in the machine-mirroring domain) must print the same
//! zonelist fallback order for every node and put every CPU's local
//! allocations on the same node.

use std::sync::OnceLock;

use tests::images;
use xtask::linux::Oracle;
use xtask::machine::preset;

fn oracle() -> &'static Oracle {
    static ORACLE: OnceLock<Oracle> = OnceLock::new();
    ORACLE.get_or_init(|| {
        Oracle::prepare(images()).unwrap_or_else(|e| panic!("cannot prepare Linux: {e}"))
    })
}

fn agree(name: &str) {
    let spec = preset(name).unwrap_or_else(|| panic!("no preset {name}"));
    let (table, same) = oracle()
        .compare(&spec.qemu_args(), spec.cmdline, false)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    println!("machine '{name}':\n{table}");
    assert!(
        same,
        "machine '{name}': Linux and numavisor differ:\n{table}"
    );
}

#[test]
fn default_machine_with_memoryless_and_cpuless_nodes() {
    agree("default");
}

#[test]
fn memory_only_node_first_in_qemu_order() {
    agree("memory-first");
}

#[test]
fn eight_node_ring() {
    agree("ring8");
}

#[test]
fn asymmetric_distances() {
    agree("asymmetric");
}

//! `/init` of the tiny initramfs `cargo xtask compare-linux` boots Debian's
//! Linux kernel with: for every CPU, it pins itself there, touches a fresh
//! page under the default (local) memory policy, asks the kernel which node
//! the page landed on, prints `linux-probe: cpu C: local allocation on node
//! N`, and finally powers the machine off so that QEMU exits.
//!
//! Built statically for x86_64-unknown-linux-gnu by xtask; on other hosts
//! it only explains itself.

#[cfg(target_os = "linux")]
fn main() {
    probe::run();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("linux-probe runs as /init of a Linux initramfs (see `cargo xtask compare-linux`)");
}

#[cfg(target_os = "linux")]
mod probe {
    use std::io::Write;
    use std::mem::{size_of, zeroed};
    use std::ptr::null_mut;

    /// get_mempolicy flags (include/uapi/linux/mempolicy.h).
    const MPOL_F_NODE: libc::c_ulong = 1;
    const MPOL_F_ADDR: libc::c_ulong = 2;
    const PAGE: usize = 4096;

    /// The node of the page backing `addr`.
    fn node_of(addr: *mut libc::c_void) -> Result<i32, i32> {
        let mut node: libc::c_int = -1;
        // SAFETY: `node` is a valid out pointer; no nodemask is requested
        // (NULL, maxnode 0); `addr` is a mapped page of this process.
        let r = unsafe {
            libc::syscall(
                libc::SYS_get_mempolicy,
                &mut node as *mut libc::c_int,
                null_mut::<libc::c_ulong>(),
                0 as libc::c_ulong,
                addr,
                MPOL_F_NODE | MPOL_F_ADDR,
            )
        };
        if r == 0 {
            Ok(node)
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
        }
    }

    fn local_node_of(cpu: usize) -> Result<i32, String> {
        // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it
        // for cpu < CPU_SETSIZE (checked by the caller's range).
        let ok = unsafe {
            let mut set: libc::cpu_set_t = zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0
        };
        if !ok {
            return Err("cannot run there".into());
        }
        // SAFETY: an anonymous private mapping of one page, checked below.
        let page = unsafe {
            libc::mmap(
                null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return Err("mmap failed".into());
        }
        // SAFETY: `page` is a fresh writable mapping of PAGE bytes; the
        // write faults it in on the current CPU's local node.
        unsafe { (page as *mut u8).write_volatile(1) };
        let node = node_of(page).map_err(|e| format!("get_mempolicy failed: errno {e}"));
        // SAFETY: unmapping the page mapped above.
        unsafe { libc::munmap(page, PAGE) };
        node
    }

    pub fn run() {
        // SAFETY: sysconf has no memory effects.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as usize;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "linux-probe: {cpus} CPUs");
        for cpu in 0..cpus.min(libc::CPU_SETSIZE as usize) {
            match local_node_of(cpu) {
                Ok(node) => {
                    let _ = writeln!(
                        out,
                        "linux-probe: cpu {cpu}: local allocation on node {node}"
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "linux-probe: cpu {cpu}: {e}");
                }
            }
        }
        let _ = writeln!(out, "linux-probe: done");
        let _ = out.flush();
        // SAFETY: powering off is what this init is for; nothing is left to do.
        unsafe {
            libc::sync();
            libc::reboot(libc::RB_POWER_OFF);
        }
    }
}

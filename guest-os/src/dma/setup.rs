//! DMA at boot: the PCI devices the hypervisor assigned, their drivers,
//! and the DMA layer with its bounce pool.
//!
//! 1. PCI enumeration (`drivers::pci`) and the `edu` driver
//!    (`drivers::edu`); each bound device has a [`DmaDevice`].
//! 2. The mode: `dma=direct` (or Linux's `swiotlb=noforce`) never bounces;
//!    `swiotlb=force` always does; otherwise a mapping bounces when the
//!    device cannot reach it.
//! 3. The pool, when some device is bound or `swiotlb=` asks for one:
//!    `swiotlb=N` slots of 2 KiB (whole 256 KiB segments; default
//!    [`DEFAULT_POOL_BYTES`], not Linux's 64 MiB: these domains are small
//!    and the pool comes from the 8 MiB kernel heap, which also holds the
//!    memory manager's tables, so a few MiB at most), plus a
//!    [`COHERENT_BYTES`] region for coherent buffers. The memory is
//!    allocated from the kernel heap and exchanged (`DMA_EXCHANGE`) for
//!    machine-contiguous memory below `2^bits`, where `bits` is the
//!    smallest mask width of the bound devices, at most 32 (Linux's pool
//!    lives below 4 GiB; a device with a smaller mask, such as edu's 28
//!    bits, needs its pool lower still). The hypervisor takes it from the
//!    vnode's own node when it has such memory, else from the nearest node
//!    that does, and says so; the guest prints both.
//! 4. Without `DMA_EXCHANGE` (an older hypervisor) there is no exchange:
//!    the region keeps its own machine memory; it serves as the pool only
//!    if every bound device reaches it, otherwise there is no pool and a
//!    mapping a device cannot reach is refused (never handed out).
//!
//! Everything is printed (`guest: pci: ...`, `guest: edu: ...`,
//! `guest: dma: ...`); the statistics line is [`DmaStats`](super::DmaStats)'s.

use alloc::alloc::{alloc_zeroed, Layout};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use pv_abi::{Features, StartInfo, PAGE_SIZE};
use swiotlb::{DmaAddr, Pool, SwiotlbParam, SLOT_SIZE};

use super::{
    bits_of_mask, mask_of_bits, BouncePool, CoherentRegion, Dma, DmaDevice, MachineMap, Mode,
    PhysMem,
};
use crate::drivers::edu::{self, Edu, PlatformRegs};
use crate::drivers::pci::{self, PciFunction};
use crate::platform::Platform;
use crate::println;

/// The pool without `swiotlb=N`: 1 MiB (512 slots, 4 segments).
pub const DEFAULT_POOL_BYTES: u64 = 1 << 20;
/// The coherent region: 256 KiB.
pub const COHERENT_BYTES: u64 = 256 << 10;
/// The pool is never placed above 4 GiB.
pub const MAX_POOL_BITS: u32 = 32;
/// Nor asked for below 16 MiB (the ABI's `DMA_EXCHANGE_MIN_BITS`).
pub const MIN_POOL_BITS: u32 = 24;

/// What an exchange answered: machine address, node, off node.
type Placed = (u64, u32, bool);

/// `DMA_EXCHANGE`, if this build and the hypervisor have it.
#[cfg(not(feature = "abi-1-1"))]
fn exchange(
    p: &dyn Platform,
    features: Features,
    gpa: u64,
    bytes: u64,
    bits: u32,
) -> Option<Result<Placed, pv_abi::Error>> {
    if !features.contains(Features::DMA_EXCHANGE) {
        return None;
    }
    Some(
        crate::hypercall::dma_exchange(p, gpa, bytes / PAGE_SIZE, bits, 0)
            .map(|r| (r.maddr.0, r.pnode, r.off_node())),
    )
}

/// `DMA_EXCHANGE`: not in an ABI 1.1 build.
#[cfg(feature = "abi-1-1")]
fn exchange(
    _: &dyn Platform,
    _: Features,
    _: u64,
    _: u64,
    _: u32,
) -> Option<Result<Placed, pv_abi::Error>> {
    None
}

/// What the command line says about DMA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaOptions {
    /// `swiotlb=`.
    pub swiotlb: Option<SwiotlbParam>,
    /// `dma=direct`.
    pub direct: bool,
    /// `edu.dma_bits=`: the edu device's DMA mask width (QEMU's
    /// `dma_mask` property; default 28).
    pub edu_dma_bits: Option<u32>,
}

/// One exchange the guest made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub gpa: u64,
    pub bytes: u64,
    /// The vnode of the range.
    pub vnode: u32,
    pub maddr: u64,
    pub bits: u32,
    /// Where the hypervisor took the memory.
    pub pnode: u32,
    pub off_node: bool,
}

/// Everything DMA the guest set up at boot.
pub struct DmaSetup {
    /// The PCI functions it found.
    pub pci: Vec<PciFunction>,
    /// The edu device: `None` if there is none, `Err` if it cannot be used.
    pub edu: Option<Result<Edu<PlatformRegs>, String>>,
    /// The DMA layer.
    pub dma: Dma<PhysMem>,
    /// The exchanges it made (the pool and coherent region).
    pub exchanges: Vec<Exchange>,
}

impl DmaSetup {
    /// The edu device, if bound.
    pub fn edu(&self) -> Option<&Edu<PlatformRegs>> {
        self.edu.as_ref().and_then(|e| e.as_ref().ok())
    }
}

fn mode_of(opts: &DmaOptions) -> Mode {
    let force = opts.swiotlb.and_then(|s| s.force);
    if opts.direct || force == Some(false) {
        Mode::Direct
    } else if force == Some(true) {
        Mode::Force
    } else {
        Mode::Normal
    }
}

/// The region's memory: `bytes` zeroed, page-aligned bytes from the kernel
/// heap, never freed (the pool lives as long as the guest). Its address is
/// its guest-physical address (the heap is identity-mapped).
fn region(bytes: u64) -> Option<&'static mut [u8]> {
    let len = usize::try_from(bytes).ok()?;
    let layout = Layout::from_size_align(len, PAGE_SIZE as usize).ok()?;
    // SAFETY: a non-zero-sized layout (`bytes` is at least the coherent
    // region).
    let p = unsafe { alloc_zeroed(layout) };
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is a fresh allocation of `len` initialised (zeroed)
    // bytes that is never freed, so it may be borrowed for `'static`, and
    // nothing else refers to it.
    Some(unsafe { core::slice::from_raw_parts_mut(p, len) })
}

/// Boot step: see the [module docs](self).
pub fn setup(
    p: &'static dyn Platform,
    si: &StartInfo,
    features: Features,
    opts: &DmaOptions,
) -> DmaSetup {
    let functions = pci::enumerate(p);
    for f in &functions {
        let mut bars = String::new();
        for b in &f.mem_bars {
            bars.push_str(&format!(
                ", BAR{} [{:#x}-{:#x})",
                b.index,
                b.base,
                b.base.saturating_add(b.size)
            ));
        }
        println!("guest: pci: {f}{bars}");
    }
    let edu_bits = opts.edu_dma_bits.unwrap_or(edu::DEFAULT_DMA_BITS);
    let edu = edu::probe(p, &functions, edu_bits);
    match &edu {
        None => {}
        Some(Ok(e)) => println!(
            "guest: edu: {}: identification {:#010x}, BAR0 [{:#x}-{:#x}) mapped, bus mastering on, DMA mask {:#x} ({} bits{})",
            e.bdf,
            e.identity(),
            e.bar.base,
            e.bar.base + e.bar.size,
            e.dev.dma_mask,
            edu_bits,
            if opts.edu_dma_bits.is_some() { ", edu.dma_bits" } else { ", QEMU's default" }
        ),
        Some(Err(err)) => println!("guest: {err}"),
    }
    let devices: Vec<&DmaDevice> = edu
        .iter()
        .filter_map(|e| e.as_ref().ok())
        .map(|e| &e.dev)
        .collect();

    let mode = mode_of(opts);
    let mut map = MachineMap::from_start_info(si);
    let mut exchanges = Vec::new();
    let wanted = !devices.is_empty() || opts.swiotlb.is_some();
    if !wanted {
        println!("guest: dma: no DMA device and no swiotlb=: no bounce pool");
        return DmaSetup {
            pci: functions,
            edu,
            dma: Dma::new(mode, map, None, None, PhysMem(p)),
            exchanges,
        };
    }
    let bits = devices
        .iter()
        .map(|d| bits_of_mask(d.dma_mask.min(d.coherent_mask)))
        .fold(MAX_POOL_BITS, u32::min)
        .max(MIN_POOL_BITS);
    let pool_bytes = match mode {
        Mode::Direct => 0,
        _ => opts
            .swiotlb
            .and_then(|s| s.slots)
            .map_or(DEFAULT_POOL_BYTES, |s| (s * SLOT_SIZE) as u64),
    };
    let total = pool_bytes + COHERENT_BYTES;
    let Some(mem) = region(total) else {
        println!(
            "guest: dma: cannot take {} KiB from the kernel heap: no bounce pool, no coherent memory",
            total >> 10
        );
        return DmaSetup {
            pci: functions,
            edu,
            dma: Dma::new(mode, map, None, None, PhysMem(p)),
            exchanges,
        };
    };
    let gpa = crate::hypercall::gpa_of(p, mem.as_ptr()).0;
    let vnode = si
        .mem_ranges()
        .iter()
        .find(|r| r.contains(pv_abi::Gpa(gpa)))
        .map_or(0, |r| r.vnode);
    let natural = map.contiguous(gpa, total).ok();

    // The exchange (not in direct mode: nothing bounces there).
    let mut placed: Option<Placed> = None;
    if mode == Mode::Direct {
        println!(
            "guest: dma: dma=direct: no bounce pool; a mapping a device cannot reach is refused"
        );
    } else {
        match exchange(p, features, gpa, total, bits) {
            None => println!(
                "guest: dma: the hypervisor has no DMA_EXCHANGE: no memory can be placed below 2^{bits}"
            ),
            Some(Ok((m, pnode, off_node))) => {
                map.insert(gpa, total, m);
                exchanges.push(Exchange {
                    gpa,
                    bytes: total,
                    vnode,
                    maddr: m,
                    bits,
                    pnode,
                    off_node,
                });
                println!(
                    "guest: dma: exchanged guest-physical [{gpa:#x}-{:#x}) (vnode {vnode}) for machine [{m:#x}-{:#x}) below 2^{bits} on node {pnode}{}",
                    gpa + total,
                    m + total,
                    if off_node {
                        format!(" (off node: vnode {vnode}'s node has no such memory free)")
                    } else {
                        String::new()
                    }
                );
                placed = Some((m, pnode, off_node));
            }
            Some(Err(e)) => println!(
                "guest: dma: DMA_EXCHANGE of {} KiB below 2^{bits} failed: {e}",
                total >> 10
            ),
        }
    }
    let below = |m: u64| {
        m.checked_add(total - 1)
            .is_some_and(|l| l <= mask_of_bits(bits))
    };
    // Without an exchange the region is usable as the pool only where the
    // devices reach it already.
    let base = match (placed, natural) {
        (Some((m, _, _)), _) => Some(m),
        (None, Some(m)) if below(m) => {
            if mode != Mode::Direct {
                println!(
                    "guest: dma: the kernel heap at machine {m:#x} is below 2^{bits} already: the pool stays there"
                );
            }
            Some(m)
        }
        _ => None,
    };
    let (pool_mem, coherent_mem) = mem.split_at_mut(pool_bytes as usize);
    let pool = match base {
        Some(m) if pool_bytes > 0 => {
            let slots = pool_bytes as usize / SLOT_SIZE;
            let areas = opts
                .swiotlb
                .and_then(|s| s.areas)
                .unwrap_or_else(|| {
                    swiotlb::default_nr_areas(si.nr_vcpus as usize, pool_bytes as usize)
                })
                .min((pool_bytes as usize / swiotlb::SEGMENT_SIZE).max(1));
            match Pool::new(pool_mem, DmaAddr::new(m), areas) {
                Ok(pool) => {
                    let (pnode, off_node) = placed.map_or((u32::MAX, false), |(_, n, o)| (n, o));
                    println!(
                        "guest: dma: swiotlb pool {} KiB ({slots} slots, {areas} area{}) at machine [{m:#x}-{:#x}), guest-physical [{gpa:#x}-{:#x}), below 2^{bits}",
                        pool_bytes >> 10,
                        if areas == 1 { "" } else { "s" },
                        m + pool_bytes,
                        gpa + pool_bytes
                    );
                    Some(BouncePool {
                        pool,
                        gpa,
                        maddr: m,
                        bytes: pool_bytes,
                        bits,
                        pnode,
                        off_node,
                    })
                }
                Err(e) => {
                    println!("guest: dma: {e}: no bounce pool");
                    None
                }
            }
        }
        _ => {
            if mode != Mode::Direct {
                println!("guest: dma: no bounce pool: a mapping a device cannot reach is refused");
            }
            None
        }
    };
    // Coherent buffers: the region's tail, wherever it is (each allocation
    // is checked against the device's coherent mask).
    let _ = coherent_mem;
    let coherent = base.or(natural).map(|m| {
        let cgpa = gpa + pool_bytes;
        let cm = m + pool_bytes;
        println!(
            "guest: dma: coherent region {} KiB at machine [{cm:#x}-{:#x})",
            COHERENT_BYTES >> 10,
            cm + COHERENT_BYTES
        );
        CoherentRegion::new(cgpa, cm, COHERENT_BYTES / PAGE_SIZE)
    });
    println!("guest: dma: mode {}", mode.name());
    DmaSetup {
        pci: functions,
        edu,
        dma: Dma::new(mode, map, pool, coherent, PhysMem(p)),
        exchanges,
    }
}

/// The DMA options of a command line's words, with warnings for bad ones:
/// `swiotlb=` (Linux's syntax), `dma=direct`, `edu.dma_bits=N` (24 to 64).
pub fn parse_option(key: &str, value: &str, opts: &mut DmaOptions) -> Result<(), String> {
    match key {
        "swiotlb" => {
            opts.swiotlb = Some(SwiotlbParam::parse(value).map_err(|e| format!("{e}; ignored"))?);
        }
        "dma" => match value {
            "direct" => opts.direct = true,
            _ => return Err(format!("dma={value}: only dma=direct is known; ignored")),
        },
        "edu.dma_bits" => match value.parse::<u32>() {
            Ok(b) if (24..=64).contains(&b) => opts.edu_dma_bits = Some(b),
            _ => {
                return Err(format!(
                    "edu.dma_bits={value}: expected a mask width from 24 to 64; ignored"
                ))
            }
        },
        _ => return Err(format!("unknown option '{key}={value}' ignored")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let mut o = DmaOptions::default();
        parse_option("swiotlb", "256,force", &mut o).unwrap();
        assert_eq!(mode_of(&o), Mode::Force);
        assert_eq!(o.swiotlb.and_then(|s| s.slots), Some(256));
        parse_option("edu.dma_bits", "32", &mut o).unwrap();
        assert_eq!(o.edu_dma_bits, Some(32));
        assert!(parse_option("edu.dma_bits", "12", &mut o).is_err());
        assert!(parse_option("swiotlb", "x", &mut o).is_err());
        assert!(parse_option("dma", "bounce", &mut o).is_err());
        parse_option("dma", "direct", &mut o).unwrap();
        assert_eq!(mode_of(&o), Mode::Direct);
        let mut n = DmaOptions::default();
        parse_option("swiotlb", "noforce", &mut n).unwrap();
        assert_eq!(mode_of(&n), Mode::Direct);
        assert_eq!(mode_of(&DmaOptions::default()), Mode::Normal);
    }
}

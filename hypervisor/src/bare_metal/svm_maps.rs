//! Host pages every VMCB points at: the I/O and MSR permission maps.

use hypervisor::mm::addr::Mfn;
use hypervisor::mm::heap::{AllocRequest, Heap, HeapError};
use hypervisor::svm::vcpu::InterceptMaps;

/// Guards the permission maps' blocks (I/O, MSR) once allocated.
static INTERCEPT_MAPS: spin::Mutex<Option<(Mfn, Mfn)>> = spin::Mutex::new(None);

/// The I/O and MSR permission maps, all ones: every port and MSR access
/// exits. Allocated on first use, kept until [`free_intercept_maps`].
pub fn intercept_maps(heap: &Heap) -> Result<InterceptMaps, HeapError> {
    let mut maps = INTERCEPT_MAPS.lock();
    let (iopm, msrpm) = match *maps {
        Some(m) => m,
        None => {
            let iopm = heap.alloc(2, AllocRequest::any())?;
            let msrpm = match heap.alloc(1, AllocRequest::any()) {
                Ok(m) => m,
                Err(e) => {
                    let _ = heap.free(iopm, 2);
                    return Err(e);
                }
            };
            // SAFETY: both blocks were just allocated (16 KiB and 8 KiB) and
            // are identity-mapped RAM that only the CPU reads from now on.
            unsafe {
                core::ptr::write_bytes(iopm.maddr().0 as *mut u8, 0xff, 16384);
                core::ptr::write_bytes(msrpm.maddr().0 as *mut u8, 0xff, 8192);
            }
            *maps = Some((iopm, msrpm));
            (iopm, msrpm)
        }
    };
    Ok(InterceptMaps {
        iopm: iopm.maddr().0,
        msrpm: msrpm.maddr().0,
    })
}

/// Gives the maps back to the heap once no domain runs.
pub fn free_intercept_maps(heap: &Heap) {
    if let Some((iopm, msrpm)) = INTERCEPT_MAPS.lock().take() {
        let _ = heap.free(iopm, 2);
        let _ = heap.free(msrpm, 1);
    }
}

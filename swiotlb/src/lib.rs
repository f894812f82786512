//! Bounce-buffer pool (swiotlb) for DMA devices that cannot reach all of a
//! domain's memory. Filled in by the DMA issue; the crate exists so that the
//! workspace has its final shape.

#![no_std]

//! Machine memory: typed addresses, the frame table and the NUMA heap.

pub mod addr;
pub mod frame_table;
pub mod heap;

//! Platform devices, one per file, and the port-I/O and MMIO buses they register on.
//!
//! INTERFACE STUB — being implemented; signatures are fixed.

pub mod bus;
pub mod debug_exit;
pub mod fw_cfg;
pub mod pci;
pub mod post_code;
pub mod uart;

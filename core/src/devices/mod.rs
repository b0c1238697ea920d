//! Platform devices, one per file, and the port-I/O and MMIO buses they register on.

pub mod bus;
pub mod debug_exit;
pub mod ioapic;
pub mod pic;
pub mod post_code;
pub mod uart;

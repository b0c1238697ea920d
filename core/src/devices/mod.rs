//! Platform devices, one per file, and the port-I/O and MMIO buses they register on.

pub mod bus;
pub mod debug_exit;
pub mod fw_cfg;
pub mod i8042;
pub mod ioapic;
pub mod pci;
pub mod pic;
pub mod post_code;
pub mod reset_control;
pub mod uart;

//! Platform devices, one per file, and the port-I/O and MMIO buses they register on.

pub mod acpi_pm;
pub mod bus;
pub mod debug_exit;
pub mod fw_cfg;
pub mod i8042;
pub mod ioapic;
pub mod nmi_status_control;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod post_code;
pub mod reset_control;
pub mod rtc;
pub mod uart;

//! The FADT ("FACP", ACPI 6.5, section 5.2.9, revision 6, 276 bytes) and the FACS
//! (section 5.2.10).
//!
//! The machine has no SMM: ACPI is always enabled (`SMI_CMD`, `ACPI_ENABLE` and
//! `ACPI_DISABLE` are zero, which tells the OS that it owns the fixed hardware from the
//! start, and PM1a_CNT.SCI_EN must read as 1). Register blocks are in I/O space, each
//! given both as the 32-bit port field and as the 64-bit `X_` Generic Address Structure;
//! PM1b, PM2 and GPE1 do not exist. No processor power states beyond C1, no fixed-feature
//! buttons, the RTC century byte in CMOS, reset through the reset register.

use super::sdt::{Gas, Table};
use super::AcpiConfig;
use alloc::vec::Vec;

/// FADT revision (ACPI 6.0 and later: 276 bytes, with the hypervisor vendor identity).
pub const FADT_REVISION: u8 = 6;
/// FADT length at that revision.
pub const FADT_LEN: usize = 276;
/// FACS length.
pub const FACS_LEN: usize = 64;

/// Lengths of the register blocks, in bytes.
pub const PM1_EVT_LEN: u8 = 4;
/// PM1 control block length.
pub const PM1_CNT_LEN: u8 = 2;
/// PM timer length.
pub const PM_TMR_LEN: u8 = 4;
/// GPE0 block length (status and enable halves of 2 bytes).
pub const GPE0_BLK_LEN: u8 = 4;

/// Fixed feature flags (the FADT's `Flags` field).
pub mod flags {
    /// WBINVD flushes all caches and keeps memory coherent.
    pub const WBINVD: u32 = 1 << 0;
    /// C1 (HLT) is supported on all processors.
    pub const PROC_C1: u32 = 1 << 2;
    /// No fixed-feature power button (a control-method one, or none).
    pub const PWR_BUTTON: u32 = 1 << 4;
    /// No fixed-feature sleep button.
    pub const SLP_BUTTON: u32 = 1 << 5;
    /// The RTC wake status is not in the fixed register space.
    pub const FIX_RTC: u32 = 1 << 6;
    /// The PM timer counts 32 bits (24 bits when clear).
    pub const TMR_VAL_EXT: u32 = 1 << 8;
    /// The reset register is supported.
    pub const RESET_REG_SUP: u32 = 1 << 10;
}

/// IA-PC boot architecture flags.
pub mod boot_arch {
    /// Legacy devices (ISA: the PIC, PIT, RTC, ...) are present.
    pub const LEGACY_DEVICES: u16 = 1 << 0;
    /// An 8042 keyboard controller is present.
    pub const I8042: u16 = 1 << 1;
    /// There is no VGA hardware to probe.
    pub const VGA_NOT_PRESENT: u16 = 1 << 2;
}

/// The FADT for `config`, pointing at the FACS and DSDT.
pub fn fadt(config: &AcpiConfig, facs: u64, dsdt: u64) -> Vec<u8> {
    let mut t = Table::new(b"FACP", FADT_REVISION, config);
    // The builder places every table below 4 GiB.
    t.u32(facs as u32); // FIRMWARE_CTRL
    t.u32(dsdt as u32); // DSDT
    t.u8(0); // reserved (INT_MODEL in ACPI 1.0)
    t.u8(0); // Preferred_PM_Profile: unspecified
    t.u16(u16::from(config.sci_irq)); // SCI_INT
    t.u32(0); // SMI_CMD: no SMM, ACPI always enabled
    t.u8(0); // ACPI_ENABLE
    t.u8(0); // ACPI_DISABLE
    t.u8(0); // S4BIOS_REQ
    t.u8(0); // PSTATE_CNT
    t.u32(u32::from(config.pm1a_event_port)); // PM1a_EVT_BLK
    t.u32(0); // PM1b_EVT_BLK
    t.u32(u32::from(config.pm1a_control_port)); // PM1a_CNT_BLK
    t.u32(0); // PM1b_CNT_BLK
    t.u32(0); // PM2_CNT_BLK
    t.u32(u32::from(config.pm_timer_port)); // PM_TMR_BLK
    t.u32(u32::from(config.gpe0_port)); // GPE0_BLK
    t.u32(0); // GPE1_BLK
    t.u8(PM1_EVT_LEN);
    t.u8(PM1_CNT_LEN);
    t.u8(0); // PM2_CNT_LEN
    t.u8(PM_TMR_LEN);
    t.u8(GPE0_BLK_LEN);
    t.u8(0); // GPE1_BLK_LEN
    t.u8(0); // GPE1_BASE
    t.u8(0); // CST_CNT
    t.u16(0x0fff); // P_LVL2_LAT above 100: no C2
    t.u16(0x0fff); // P_LVL3_LAT above 1000: no C3
    t.u16(0); // FLUSH_SIZE
    t.u16(0); // FLUSH_STRIDE
    t.u8(0); // DUTY_OFFSET
    t.u8(0); // DUTY_WIDTH
    t.u8(0); // DAY_ALRM: no day-of-month alarm register
    t.u8(0); // MON_ALRM
    t.u8(config.rtc_century); // CENTURY
    t.u16(boot_arch::LEGACY_DEVICES | boot_arch::I8042 | boot_arch::VGA_NOT_PRESENT);
    t.u8(0); // reserved
    let mut f = flags::WBINVD
        | flags::PROC_C1
        | flags::PWR_BUTTON
        | flags::SLP_BUTTON
        | flags::FIX_RTC
        | flags::RESET_REG_SUP;
    if config.pm_timer_32bit {
        f |= flags::TMR_VAL_EXT;
    }
    t.u32(f);
    t.gas(Gas::io(config.reset_port, 1, 1)); // RESET_REG
    t.u8(config.reset_value); // RESET_VALUE
    t.u16(0); // ARM_BOOT_ARCH
    t.u8(0); // FADT minor version (ACPI 6.0)
    t.u64(facs); // X_FIRMWARE_CTRL
    t.u64(dsdt); // X_DSDT
    t.gas(Gas::io(config.pm1a_event_port, PM1_EVT_LEN, 2)); // X_PM1a_EVT_BLK
    t.gas(Gas::default()); // X_PM1b_EVT_BLK
    t.gas(Gas::io(config.pm1a_control_port, PM1_CNT_LEN, 2)); // X_PM1a_CNT_BLK
    t.gas(Gas::default()); // X_PM1b_CNT_BLK
    t.gas(Gas::default()); // X_PM2_CNT_BLK
    t.gas(Gas::io(config.pm_timer_port, PM_TMR_LEN, 3)); // X_PM_TMR_BLK
    t.gas(Gas::io(config.gpe0_port, GPE0_BLK_LEN, 1)); // X_GPE0_BLK
    t.gas(Gas::default()); // X_GPE1_BLK
    t.gas(Gas::default()); // SLEEP_CONTROL_REG (hardware-reduced ACPI only)
    t.gas(Gas::default()); // SLEEP_STATUS_REG
    t.extend(b"OPSVISOR"); // Hypervisor Vendor Identity
    debug_assert_eq!(t.len(), FADT_LEN);
    t.finish()
}

/// The FACS: no hardware signature (the platform never changes under a sleeping OS),
/// no waking vector yet (the OS writes it), no global lock owner, version 2.
pub fn facs() -> [u8; FACS_LEN] {
    let mut b = [0u8; FACS_LEN];
    b[0..4].copy_from_slice(b"FACS");
    b[4..8].copy_from_slice(&(FACS_LEN as u32).to_le_bytes());
    b[32] = 2; // Version
    b
}

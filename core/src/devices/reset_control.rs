//! The reset control register at port 0xCF9 (PIIX3/PIIX4, ICH): a byte register inside the
//! PCI configuration-address dword at 0xCF8. Writing it with RST_CPU (bit 2) set resets
//! the machine; SYS_RST (bit 1) and FULL_RST (bit 3) choose how hard the reset is on real
//! chipsets, which makes no difference to a virtual machine, and read back as written.
//! The ACPI tables name this register as the FADT's reset register (value 6), and Linux
//! uses it with `reboot=pci` and as a fallback.
//!
//! Only byte accesses reach it: a dword access at 0xCF8 is the PCI configuration address.

/// The port.
pub const RESET_CONTROL_PORT: u16 = 0xcf9;

/// RST_CPU: a 0-to-1 write starts the reset.
const RST_CPU: u8 = 1 << 2;
/// The bits that read back (SYS_RST, FULL_RST).
const KEPT_BITS: u8 = (1 << 1) | (1 << 3);

/// The reset control register.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResetControl {
    value: u8,
    reset_requested: bool,
}

impl ResetControl {
    /// Read the register.
    pub fn read(&self) -> u8 {
        self.value
    }

    /// Write the register; RST_CPU requests a reset.
    pub fn write(&mut self, value: u8) {
        if value & RST_CPU != 0 {
            self.reset_requested = true;
        }
        self.value = value & KEPT_BITS;
    }

    /// Whether the guest asked for a reset since the last call (and forget it).
    pub fn take_reset_request(&mut self) -> bool {
        core::mem::take(&mut self.reset_requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rst_cpu_requests_a_reset() {
        let mut rc = ResetControl::default();
        rc.write(0x02);
        assert!(
            !rc.take_reset_request(),
            "SYS_RST alone only selects the kind"
        );
        assert_eq!(rc.read(), 0x02);
        // The FADT's reset value.
        rc.write(0x06);
        assert!(rc.take_reset_request());
        assert!(!rc.take_reset_request());
        assert_eq!(rc.read(), 0x02, "RST_CPU does not read back");
        rc.write(0x0e);
        assert!(rc.take_reset_request());
        assert_eq!(rc.read(), 0x0a);
    }
}

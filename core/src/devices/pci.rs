//! PCI configuration mechanism #1 (PCI Local Bus Specification 3.0, section 3.2.2.3.2)
//! with one device on bus 0: the host bridge at 00:00.0, an Intel 440FX PMC (8086:1237,
//! as on QEMU's `pc` machine). Every other bus, device and function reads all ones (a
//! vendor ID of 0xFFFF: nothing there) and ignores writes, so a PCI probe finds a valid,
//! empty bus.
//!
//! Ports: CONFIG_ADDRESS is the dword at 0xCF8 (a byte or word access there is not a
//! configuration access: it goes to the ISA bus, where nothing answers); CONFIG_DATA is
//! 0xCFC-0xCFF, read and written as bytes, words or a dword at any offset inside. The byte
//! at 0xCF9 is the PC's reset control register, not part of this device: register
//! [`PCI_PORT_BASE`] with [`PCI_PORT_LEN`] and send a byte access at 0xCF9 to the reset
//! control register before calling this device ([`PciHost::claims`] tells which accesses
//! are this device's).

/// CONFIG_ADDRESS.
pub const CONFIG_ADDRESS_PORT: u16 = 0xcf8;
/// CONFIG_DATA, the first of its four ports.
pub const CONFIG_DATA_PORT: u16 = 0xcfc;
/// The reset control register, inside the range but not this device's (byte accesses).
pub const RESET_CONTROL_PORT: u16 = 0xcf9;
/// First port of the range to register.
pub const PCI_PORT_BASE: u16 = CONFIG_ADDRESS_PORT;
/// Ports in the range (0xCF8-0xCFF).
pub const PCI_PORT_LEN: u16 = 8;

/// CONFIG_ADDRESS bit 31: the next CONFIG_DATA access is a configuration access.
const ENABLE: u32 = 1 << 31;

/// The host bridge's identity.
pub const HOST_BRIDGE_VENDOR: u16 = 0x8086;
/// Intel 82441FX PMC (440FX).
pub const HOST_BRIDGE_DEVICE: u16 = 0x1237;
/// The revision QEMU's 440FX reports.
const HOST_BRIDGE_REVISION: u8 = 0x02;
/// Class code: bridge (06), host bridge (00), programming interface 00.
const CLASS_HOST_BRIDGE: [u8; 3] = [0x00, 0x00, 0x06];

/// PCICMD: memory space and bus master are hardwired on in the 82441FX; the
/// parity-error response (bit 6) and SERR# enable (bit 8) are the bits software sets.
const COMMAND_RESET: u16 = 0x0006;
const COMMAND_WRITABLE: u16 = (1 << 6) | (1 << 8);
/// PCISTS: fast back-to-back capable, medium DEVSEL timing. Its error bits are
/// write-one-to-clear and no error is ever signalled, so writes change nothing.
const STATUS: u16 = 0x0280;
/// Master latency timer: bits 7-3 writable (a granularity of eight clocks).
const LATENCY_TIMER: usize = 0x0d;
const LATENCY_TIMER_WRITABLE: u8 = 0xf8;
/// The device-specific registers (PAM, DRB, SMRAM, ...) start here. They hold what
/// firmware writes and control nothing: opsvisor has no shadow RAM to map or SMRAM to
/// open.
const DEVICE_SPECIFIC: usize = 0x40;

/// A decoded CONFIG_ADDRESS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigAddress {
    /// Bus number.
    pub bus: u8,
    /// Device number, 0 to 31.
    pub device: u8,
    /// Function number, 0 to 7.
    pub function: u8,
    /// Register, a multiple of 4 below 256.
    pub register: u8,
}

impl ConfigAddress {
    /// Decode a CONFIG_ADDRESS value (bits 30-24 are reserved and ignored, as the 440FX
    /// and QEMU ignore them); `None` when the enable bit is clear.
    pub fn decode(value: u32) -> Option<ConfigAddress> {
        (value & ENABLE != 0).then_some(ConfigAddress {
            bus: (value >> 16) as u8,
            device: ((value >> 11) & 0x1f) as u8,
            function: ((value >> 8) & 0x7) as u8,
            register: (value & 0xfc) as u8,
        })
    }
}

/// The 440FX host bridge's configuration space.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct HostBridge {
    command: u16,
    latency_timer: u8,
    #[serde(with = "crate::snapshot::codec::byte_array")]
    device_specific: [u8; 256 - DEVICE_SPECIFIC],
}

impl HostBridge {
    fn new() -> HostBridge {
        HostBridge {
            command: COMMAND_RESET,
            latency_timer: 0,
            device_specific: [0; 256 - DEVICE_SPECIFIC],
        }
    }

    fn read_byte(&self, offset: usize) -> u8 {
        let le16 = |v: u16, o: usize| v.to_le_bytes()[o & 1];
        match offset {
            0x00..=0x01 => le16(HOST_BRIDGE_VENDOR, offset),
            0x02..=0x03 => le16(HOST_BRIDGE_DEVICE, offset),
            0x04..=0x05 => le16(self.command, offset),
            0x06..=0x07 => le16(STATUS, offset),
            0x08 => HOST_BRIDGE_REVISION,
            0x09..=0x0b => CLASS_HOST_BRIDGE[offset - 0x09],
            LATENCY_TIMER => self.latency_timer,
            // Cache line size, header type 0 (single function), BIST; no BARs, no
            // expansion ROM, no capabilities, no interrupt pin.
            DEVICE_SPECIFIC..=0xff => self.device_specific[offset - DEVICE_SPECIFIC],
            _ => 0,
        }
    }

    fn write_byte(&mut self, offset: usize, value: u8) {
        match offset {
            0x04 | 0x05 => {
                let shift = 8 * (offset - 0x04);
                let mask = ((COMMAND_WRITABLE >> shift) & 0xff) as u8;
                let mut bytes = self.command.to_le_bytes();
                bytes[offset - 0x04] = (bytes[offset - 0x04] & !mask) | (value & mask);
                self.command = u16::from_le_bytes(bytes);
            }
            LATENCY_TIMER => self.latency_timer = value & LATENCY_TIMER_WRITABLE,
            DEVICE_SPECIFIC..=0xff => self.device_specific[offset - DEVICE_SPECIFIC] = value,
            // Identification, status, header type, BARs, ROM, capabilities: read-only.
            _ => {}
        }
    }
}

/// The PCI host: CONFIG_ADDRESS and the configuration space behind CONFIG_DATA.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PciHost {
    config_address: u32,
    bridge: HostBridge,
}

impl Default for PciHost {
    fn default() -> Self {
        Self::new()
    }
}

impl PciHost {
    /// The host in its reset state: CONFIG_ADDRESS zero, the bridge as firmware leaves it.
    pub fn new() -> PciHost {
        PciHost {
            config_address: 0,
            bridge: HostBridge::new(),
        }
    }

    /// Whether an access of `size` bytes at `offset` from [`PCI_PORT_BASE`] is this
    /// device's: everything in 0xCF8-0xCFF but a byte access at 0xCF9, which is the reset
    /// control register.
    pub fn claims(offset: u16, size: u8) -> bool {
        !(offset == RESET_CONTROL_PORT - PCI_PORT_BASE && size == 1) && offset < PCI_PORT_LEN
    }

    /// A port read of `size` (1, 2 or 4) bytes at `offset` from [`PCI_PORT_BASE`]: the
    /// value in the low `size` bytes. Bytes of the access outside CONFIG_DATA read as
    /// ones, except a dword read of CONFIG_ADDRESS itself.
    pub fn io_read(&self, offset: u16, size: u8) -> u32 {
        if offset == 0 && size == 4 {
            return self.config_address;
        }
        let mut value = 0u32;
        for i in 0..u16::from(size.min(4)) {
            let port = offset.wrapping_add(i);
            let byte = match port {
                4..=7 => self.config_read_byte(port - 4),
                _ => 0xff,
            };
            value |= u32::from(byte) << (8 * i);
        }
        value
    }

    /// A port write of `size` bytes at `offset` from [`PCI_PORT_BASE`]. A dword at
    /// 0xCF8 sets CONFIG_ADDRESS (bits 1-0 read back as zero); bytes inside CONFIG_DATA
    /// go to the selected register; anything else is ignored.
    pub fn io_write(&mut self, offset: u16, size: u8, value: u32) {
        if offset == 0 && size == 4 {
            self.config_address = value & !0x3;
            return;
        }
        for i in 0..u16::from(size.min(4)) {
            let port = offset.wrapping_add(i);
            if (4..=7).contains(&port) {
                self.config_write_byte(port - 4, (value >> (8 * i)) as u8);
            }
        }
    }

    /// The byte at `byte` (0-3) of the dword CONFIG_ADDRESS selects.
    fn config_read_byte(&self, byte: u16) -> u8 {
        match ConfigAddress::decode(self.config_address) {
            Some(a) => self.read_config(a, usize::from(byte)),
            None => 0xff,
        }
    }

    fn config_write_byte(&mut self, byte: u16, value: u8) {
        if let Some(a) = ConfigAddress::decode(self.config_address) {
            self.write_config(a, usize::from(byte), value);
        }
    }

    fn is_host_bridge(a: ConfigAddress) -> bool {
        a.bus == 0 && a.device == 0 && a.function == 0
    }

    /// A configuration-space byte: `address` selects the function and dword, `byte` the
    /// byte in it. Functions that do not exist read 0xFF.
    pub fn read_config(&self, address: ConfigAddress, byte: usize) -> u8 {
        if Self::is_host_bridge(address) {
            self.bridge
                .read_byte(usize::from(address.register) + (byte & 3))
        } else {
            0xff
        }
    }

    /// Write a configuration-space byte; writes to functions that do not exist and to
    /// read-only registers are ignored.
    pub fn write_config(&mut self, address: ConfigAddress, byte: usize, value: u8) {
        if Self::is_host_bridge(address) {
            self.bridge
                .write_byte(usize::from(address.register) + (byte & 3), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Port-level accesses, as a guest makes them.
    struct Guest(PciHost);

    impl Guest {
        fn outl(&mut self, v: u32, port: u16) {
            self.out(port, 4, v);
        }
        fn outb(&mut self, v: u8, port: u16) {
            self.out(port, 1, u32::from(v));
        }
        fn out(&mut self, port: u16, size: u8, v: u32) {
            let offset = port - PCI_PORT_BASE;
            // The reset control register is the platform's, not the PCI host's.
            if PciHost::claims(offset, size) {
                self.0.io_write(offset, size, v);
            }
        }
        fn inp(&mut self, port: u16, size: u8) -> u32 {
            let offset = port - PCI_PORT_BASE;
            assert!(PciHost::claims(offset, size));
            self.0.io_read(offset, size)
        }
        fn inl(&mut self, port: u16) -> u32 {
            self.inp(port, 4)
        }
        fn inw(&mut self, port: u16) -> u16 {
            self.inp(port, 2) as u16
        }
        fn inb(&mut self, port: u16) -> u8 {
            self.inp(port, 1) as u8
        }

        /// Linux's `PCI_CONF1_ADDRESS(bus, devfn, reg)`.
        fn conf1_address(bus: u32, devfn: u32, reg: u32) -> u32 {
            0x8000_0000 | ((reg & 0xf00) << 16) | (bus << 16) | (devfn << 8) | (reg & 0xfc)
        }

        /// Linux's `pci_conf1_read`.
        fn conf1_read(&mut self, bus: u32, devfn: u32, reg: u32, len: u8) -> u32 {
            self.outl(Self::conf1_address(bus, devfn, reg), 0xcf8);
            match len {
                1 => u32::from(self.inb(0xcfc + (reg & 3) as u16)),
                2 => u32::from(self.inw(0xcfc + (reg & 2) as u16)),
                _ => self.inl(0xcfc),
            }
        }

        /// Linux's `pci_conf1_write`.
        fn conf1_write(&mut self, bus: u32, devfn: u32, reg: u32, len: u8, value: u32) {
            self.outl(Self::conf1_address(bus, devfn, reg), 0xcf8);
            match len {
                1 => self.out(0xcfc + (reg & 3) as u16, 1, value),
                2 => self.out(0xcfc + (reg & 2) as u16, 2, value),
                _ => self.out(0xcfc, 4, value),
            }
        }

        /// Linux's `pci_sanity_check` (arch/x86/pci/direct.c) without the DMI shortcut.
        fn sanity_check(&mut self) -> bool {
            for devfn in 0..0x100 {
                let class = self.conf1_read(0, devfn, 0x0a, 2);
                // PCI_CLASS_BRIDGE_HOST, PCI_CLASS_DISPLAY_VGA
                if class == 0x0600 || class == 0x0300 {
                    return true;
                }
                let vendor = self.conf1_read(0, devfn, 0x00, 2);
                // PCI_VENDOR_ID_INTEL, PCI_VENDOR_ID_COMPAQ
                if vendor == 0x8086 || vendor == 0x0e11 {
                    return true;
                }
            }
            false
        }

        /// Linux's `pci_check_type1`.
        fn check_type1(&mut self) -> bool {
            self.outb(0x01, 0xcfb);
            let tmp = self.inl(0xcf8);
            self.outl(0x8000_0000, 0xcf8);
            let works = self.inl(0xcf8) == 0x8000_0000 && self.sanity_check();
            self.outl(tmp, 0xcf8);
            works
        }
    }

    #[test]
    fn linux_finds_configuration_type_1_and_the_host_bridge() {
        let mut g = Guest(PciHost::new());
        g.outl(0x1234_5678, 0xcf8);
        assert!(g.check_type1());
        // CONFIG_ADDRESS was restored (its low two bits read as zero).
        assert_eq!(g.inl(0xcf8), 0x1234_5678);
        // The byte write to 0xCFB was not a configuration access.
        g.outb(0x01, 0xcfb);
        assert_eq!(g.inl(0xcf8), 0x1234_5678);
    }

    #[test]
    fn the_host_bridge_is_a_440fx_and_every_other_function_is_absent() {
        let mut g = Guest(PciHost::new());
        assert_eq!(g.conf1_read(0, 0, 0x00, 4), 0x1237_8086);
        assert_eq!(g.conf1_read(0, 0, 0x02, 2), 0x1237);
        assert_eq!(g.conf1_read(0, 0, 0x08, 4), 0x0600_0002);
        assert_eq!(g.conf1_read(0, 0, 0x0b, 1), 0x06);
        assert_eq!(
            g.conf1_read(0, 0, 0x0e, 1),
            0x00,
            "header type 0, one function"
        );
        assert_eq!(g.conf1_read(0, 0, 0x04, 4), 0x0280_0006);
        assert_eq!(g.conf1_read(0, 0, 0x34, 1), 0, "no capabilities");
        assert_eq!(g.conf1_read(0, 0, 0x3d, 1), 0, "no interrupt pin");
        for devfn in 1..0x100 {
            assert_eq!(
                g.conf1_read(0, devfn, 0x00, 4),
                0xffff_ffff,
                "devfn {devfn:#x}"
            );
            assert_eq!(g.conf1_read(0, devfn, 0x0e, 1), 0xff);
        }
        // Buses behind bridges that do not exist.
        assert_eq!(g.conf1_read(1, 0, 0x00, 4), 0xffff_ffff);
        assert_eq!(g.conf1_read(0xff, 0, 0x00, 2), 0xffff);
        // Writes to absent functions are ignored.
        g.conf1_write(0, 8, 0x04, 2, 0x0007);
        assert_eq!(g.conf1_read(0, 8, 0x04, 2), 0xffff);
    }

    #[test]
    fn read_only_registers_stay_and_writable_ones_take_their_bits() {
        let mut g = Guest(PciHost::new());
        // BAR sizing finds no BARs and no expansion ROM.
        for reg in (0x10..=0x24).step_by(4).chain([0x30]) {
            g.conf1_write(0, 0, reg, 4, 0xffff_ffff);
            assert_eq!(g.conf1_read(0, 0, reg, 4), 0, "register {reg:#x}");
        }
        // IDs, class and header type do not change.
        g.conf1_write(0, 0, 0x00, 4, 0);
        g.conf1_write(0, 0, 0x08, 4, 0);
        g.conf1_write(0, 0, 0x0c, 4, 0xffff_ffff);
        assert_eq!(g.conf1_read(0, 0, 0x00, 4), 0x1237_8086);
        assert_eq!(g.conf1_read(0, 0, 0x08, 4), 0x0600_0002);
        // Latency timer bits 7-3 only; cache line size, header type, BIST read-only.
        assert_eq!(g.conf1_read(0, 0, 0x0c, 4), 0x0000_f800);
        // Command: parity response and SERR# enable are writable; memory and bus
        // master stay on, I/O space stays off; status ignores the write.
        g.conf1_write(0, 0, 0x04, 4, 0xffff_ffff);
        assert_eq!(g.conf1_read(0, 0, 0x04, 4), 0x0280_0146);
        g.conf1_write(0, 0, 0x04, 2, 0);
        assert_eq!(g.conf1_read(0, 0, 0x04, 2), 0x0006);
        g.conf1_write(0, 0, 0x05, 1, 0x01);
        assert_eq!(g.conf1_read(0, 0, 0x04, 2), 0x0106);
        // Device-specific registers (e.g. PAM0 at 0x59) hold what is written.
        g.conf1_write(0, 0, 0x59, 1, 0x30);
        assert_eq!(g.conf1_read(0, 0, 0x58, 4), 0x0000_3000);
        g.conf1_write(0, 0, 0xfc, 4, 0xdead_beef);
        assert_eq!(g.conf1_read(0, 0, 0xfe, 2), 0xdead);
    }

    #[test]
    fn data_accesses_need_the_enable_bit_and_other_widths_are_not_config_address() {
        let mut g = Guest(PciHost::new());
        // Enable bit clear: CONFIG_DATA is not a configuration access.
        g.outl(0x0000_0000, 0xcf8);
        assert_eq!(g.inl(0xcfc), 0xffff_ffff);
        g.out(0xcfc, 4, 0);
        g.outl(0x8000_0000, 0xcf8);
        assert_eq!(g.inl(0xcfc), 0x1237_8086);
        // Word and byte accesses at 0xCF8 neither read nor change CONFIG_ADDRESS.
        g.out(0xcf8, 2, 0x1234);
        g.out(0xcfa, 2, 0x1234);
        assert_eq!(g.inl(0xcf8), 0x8000_0000);
        assert_eq!(g.inw(0xcf8), 0xffff);
        assert_eq!(g.inb(0xcfb), 0xff);
        // The byte at 0xCF9 is the reset control register's, not this device's.
        assert!(!PciHost::claims(1, 1));
        assert!(PciHost::claims(1, 2));
        assert!(PciHost::claims(0, 4));
        assert!(!PciHost::claims(8, 1));
        // Words and bytes anywhere in CONFIG_DATA, and reserved bits 30-24 ignored.
        g.outl(0x8000_0000 | 0x7f00_0000, 0xcf8);
        assert_eq!(g.inw(0xcfe), 0x1237);
        assert_eq!(g.inb(0xcfd), 0x80);
        assert_eq!(g.inp(0xcfd, 2), 0x3780);
        // A dword at 0xCFD runs past CONFIG_DATA: its last byte reads as ones.
        assert_eq!(g.inp(0xcfd, 4), 0xff12_3780);
        // The low two bits of CONFIG_ADDRESS read as zero and do not select a byte.
        g.outl(0x8000_0003, 0xcf8);
        assert_eq!(g.inl(0xcf8), 0x8000_0000);
        assert_eq!(g.inl(0xcfc), 0x1237_8086);
    }
}

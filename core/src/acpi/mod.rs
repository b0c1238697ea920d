//! ACPI tables for the PC platform: what firmware leaves in memory for the operating
//! system to find its interrupt controllers, power-management registers and devices.
//!
//! [`build_tables`] writes a complete, checksummed set into guest memory from an
//! [`AcpiConfig`] and returns where each table went ([`AcpiLayout`]; the RSDP is the one
//! an OS needs). The tables, in the order they are laid out in the area given:
//!
//! | table | file | contents |
//! |---|---|---|
//! | RSDP (ACPI 2.0+, 36 bytes) | `sdt.rs` | first, 16-byte aligned, so that an area in 0xE0000-0xFFFFF puts it where BIOS-era OSes scan |
//! | FACS (64 bytes) | `fadt.rs` | 64-byte aligned |
//! | DSDT | `dsdt.rs` | `\_S5`, `\_SB.PCI0` and the ISA devices, one processor device per vCPU ([`aml`] encodes it) |
//! | FADT (revision 6) | `fadt.rs` | PM register blocks, SCI, reset register, boot architecture flags |
//! | MADT (revision 5) | `madt.rs` | local APICs (x2APIC entries when an ID does not fit a byte), the I/O APIC, overrides, LINT1 NMI |
//! | RSDT, XSDT | `sdt.rs` | the FADT and MADT |
//!
//! Every table is 16-byte aligned (the FACS 64) and the whole set must lie below 4 GiB
//! (the RSDT and the FADT's 32-bit fields hold addresses).

pub mod aml;
pub mod dsdt;
pub mod fadt;
pub mod madt;
pub mod resources;
pub mod sdt;

use crate::mmu::memory::{GuestMemory, MemError};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// The local APIC's default base address.
pub const LOCAL_APIC_ADDRESS: u32 = 0xfee0_0000;
/// The I/O APIC's default base address.
pub const IOAPIC_ADDRESS: u32 = 0xfec0_0000;
/// The SCI's ISA IRQ (and GSI) on the PC.
pub const SCI_IRQ: u8 = 9;
/// PM1a event block (PM1_STS, PM1_EN): 4 bytes.
pub const PM1A_EVENT_PORT: u16 = 0x600;
/// PM1a control block (PM1_CNT: SCI_EN, SLP_TYP, SLP_EN): 2 bytes.
pub const PM1A_CONTROL_PORT: u16 = 0x604;
/// The ACPI PM timer: 4 bytes.
pub const PM_TIMER_PORT: u16 = 0x608;
/// GPE0 block (status, enable): 4 bytes.
pub const GPE0_PORT: u16 = 0x620;
/// The reset control register.
pub const RESET_PORT: u16 = 0xcf9;
/// The value written to the reset register to reset the machine (hard reset: SYS_RST
/// and RST_CPU).
pub const RESET_VALUE: u8 = 0x06;
/// The sleep type `\_S5` reports and the OS writes to PM1a_CNT.SLP_TYP to power off.
pub const S5_SLEEP_TYPE: u8 = 5;
/// The CMOS index of the RTC's century byte (as on QEMU's PC).
pub const RTC_CENTURY_INDEX: u8 = 0x32;
/// The top of the 32-bit PCI memory window: below the I/O APIC.
pub const PCI_MMIO32_END: u32 = 0xfebf_ffff;
/// The most vCPUs the tables describe (processor devices are named `C000`-`CFFF`).
pub const MAX_VCPUS: usize = 4096;

/// What the tables describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// One APIC ID per vCPU; a vCPU's index is its ACPI processor UID.
    pub apic_ids: Vec<u32>,
    /// Local APIC base address (MADT).
    pub local_apic_address: u32,
    /// The I/O APIC's ID.
    pub ioapic_id: u8,
    /// The I/O APIC's base address.
    pub ioapic_address: u32,
    /// The first GSI of the I/O APIC.
    pub ioapic_gsi_base: u32,
    /// The SCI's ISA IRQ, routed to the GSI of the same number, level, active high.
    pub sci_irq: u8,
    /// PM1a event block port (4 bytes).
    pub pm1a_event_port: u16,
    /// PM1a control block port (2 bytes).
    pub pm1a_control_port: u16,
    /// PM timer port (4 bytes).
    pub pm_timer_port: u16,
    /// Whether the PM timer counts 32 bits (FADT TMR_VAL_EXT) rather than 24.
    pub pm_timer_32bit: bool,
    /// GPE0 block port (4 bytes).
    pub gpe0_port: u16,
    /// Reset register (an I/O port, byte wide).
    pub reset_port: u16,
    /// The value that resets the machine when written to the reset register.
    pub reset_value: u8,
    /// The sleep type of S5 (`\_S5`, both SLP_TYPa and SLP_TYPb), 0 to 7.
    pub s5_sleep_type: u8,
    /// CMOS index of the century byte (FADT CENTURY; 0 for none).
    pub rtc_century: u8,
    /// Start of the 32-bit PCI memory window: the end of RAM below 4 GiB.
    pub pci_mmio32_start: u32,
    /// Last byte of the 32-bit PCI memory window.
    pub pci_mmio32_end: u32,
    /// A 64-bit PCI memory window (first and last byte), above 4 GiB and RAM.
    pub pci_mmio64: Option<(u64, u64)>,
    /// Whether QEMU's fw_cfg device is present (a `QEMU0002` node claims its ports).
    pub fw_cfg: bool,
    /// OEM ID of every table and the RSDP.
    pub oem_id: [u8; 6],
    /// OEM table ID of every table.
    pub oem_table_id: [u8; 8],
    /// OEM revision of every table.
    pub oem_revision: u32,
}

impl AcpiConfig {
    /// The PC platform with `vcpus` vCPUs whose APIC IDs are 0, 1, ... and RAM below
    /// 4 GiB ending at `low_ram_end` (where the 32-bit PCI window starts; values above
    /// the window's end are caught by [`AcpiConfig::validate`]).
    pub fn pc(vcpus: u32, low_ram_end: u64) -> AcpiConfig {
        AcpiConfig {
            apic_ids: (0..vcpus).collect(),
            local_apic_address: LOCAL_APIC_ADDRESS,
            ioapic_id: 0,
            ioapic_address: IOAPIC_ADDRESS,
            ioapic_gsi_base: 0,
            sci_irq: SCI_IRQ,
            pm1a_event_port: PM1A_EVENT_PORT,
            pm1a_control_port: PM1A_CONTROL_PORT,
            pm_timer_port: PM_TIMER_PORT,
            pm_timer_32bit: false,
            gpe0_port: GPE0_PORT,
            reset_port: RESET_PORT,
            reset_value: RESET_VALUE,
            s5_sleep_type: S5_SLEEP_TYPE,
            rtc_century: RTC_CENTURY_INDEX,
            pci_mmio32_start: u32::try_from(low_ram_end).unwrap_or(u32::MAX),
            pci_mmio32_end: PCI_MMIO32_END,
            pci_mmio64: None,
            fw_cfg: true,
            oem_id: *b"OPSVSR",
            oem_table_id: *b"OPSVISOR",
            oem_revision: 1,
        }
    }

    /// [`AcpiConfig::pc`] with 256 MiB of RAM, for tests and examples.
    pub fn new(vcpus: u32) -> AcpiConfig {
        AcpiConfig::pc(vcpus, 0x1000_0000)
    }

    /// Check every field against what the tables can express.
    pub fn validate(&self) -> Result<(), AcpiError> {
        let bad = |field: &'static str, value: String, expected: &'static str| {
            Err(AcpiError::Config {
                field,
                value,
                expected,
            })
        };
        let n = self.apic_ids.len();
        if n == 0 || n > MAX_VCPUS {
            return bad("apic_ids", alloc::format!("{n} vCPUs"), "1 to 4096 vCPUs");
        }
        let mut sorted = self.apic_ids.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return bad(
                "apic_ids",
                alloc::format!("APIC ID {} twice", w[0]),
                "a distinct APIC ID per vCPU",
            );
        }
        if sorted.last() == Some(&u32::MAX) {
            return bad(
                "apic_ids",
                String::from("0xffffffff"),
                "APIC IDs below 0xffffffff (the x2APIC broadcast ID)",
            );
        }
        if self.sci_irq >= 16 || self.sci_irq == 0 || self.sci_irq == 2 {
            return bad(
                "sci_irq",
                alloc::format!("{}", self.sci_irq),
                "an ISA IRQ from 1 to 15 other than 2",
            );
        }
        if self.s5_sleep_type > 7 {
            return bad(
                "s5_sleep_type",
                alloc::format!("{}", self.s5_sleep_type),
                "a 3-bit SLP_TYP value, 0 to 7",
            );
        }
        for (field, port) in [
            ("pm1a_event_port", self.pm1a_event_port),
            ("pm1a_control_port", self.pm1a_control_port),
            ("pm_timer_port", self.pm_timer_port),
            ("gpe0_port", self.gpe0_port),
            ("reset_port", self.reset_port),
        ] {
            if port == 0 {
                return bad(field, String::from("0"), "a non-zero I/O port");
            }
        }
        if self.pci_mmio32_start < 0x10_0000 || self.pci_mmio32_start > self.pci_mmio32_end {
            return bad(
                "pci_mmio32_start",
                alloc::format!("{:#x}", self.pci_mmio32_start),
                "the end of low RAM: at least 1 MiB and not past pci_mmio32_end",
            );
        }
        if self.pci_mmio32_end >= self.ioapic_address.min(self.local_apic_address) {
            return bad(
                "pci_mmio32_end",
                alloc::format!("{:#x}", self.pci_mmio32_end),
                "an address below the I/O APIC and the local APIC",
            );
        }
        if let Some((start, end)) = self.pci_mmio64 {
            if start < 1 << 32 || start > end {
                return bad(
                    "pci_mmio64",
                    alloc::format!("{start:#x}-{end:#x}"),
                    "a window above 4 GiB whose start is not past its end",
                );
            }
        }
        let printable = |b: &[u8]| b.iter().all(|c| (0x20..0x7f).contains(c));
        if !printable(&self.oem_id) {
            return bad(
                "oem_id",
                alloc::format!("{:?}", self.oem_id),
                "printable ASCII",
            );
        }
        if !printable(&self.oem_table_id) {
            return bad(
                "oem_table_id",
                alloc::format!("{:?}", self.oem_table_id),
                "printable ASCII",
            );
        }
        Ok(())
    }
}

/// Where the tables went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiLayout {
    /// The RSDP: what the OS is given or finds by scanning.
    pub rsdp: u64,
    /// The FACS.
    pub facs: u64,
    /// The DSDT.
    pub dsdt: u64,
    /// The FADT.
    pub fadt: u64,
    /// The MADT.
    pub madt: u64,
    /// The RSDT.
    pub rsdt: u64,
    /// The XSDT.
    pub xsdt: u64,
    /// One past the last byte written.
    pub end: u64,
}

/// Why the tables could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// A configuration field the tables cannot express.
    Config {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The area given is not below 4 GiB (or wraps).
    AreaNotBelow4G {
        /// Start of the area.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// The tables do not fit in the area.
    AreaTooSmall {
        /// Bytes the tables need from the area's start.
        needed: u64,
        /// Bytes the area has.
        available: u64,
    },
    /// The area is not guest RAM.
    Memory(MemError),
    /// The DSDT could not be encoded.
    Aml(aml::AmlError),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcpiError::Config {
                field,
                value,
                expected,
            } => write!(
                f,
                "ACPI configuration: {field} is {value}; expected {expected}"
            ),
            AcpiError::AreaNotBelow4G { start, len } => write!(
                f,
                "ACPI table area {start:#x}+{len:#x} must lie below 4 GiB (32-bit table pointers)"
            ),
            AcpiError::AreaTooSmall { needed, available } => write!(
                f,
                "ACPI tables need {needed} bytes but the area given has {available}"
            ),
            AcpiError::Memory(e) => write!(f, "ACPI table area: {e}"),
            AcpiError::Aml(e) => write!(f, "DSDT: {e}"),
        }
    }
}

impl From<MemError> for AcpiError {
    fn from(e: MemError) -> Self {
        AcpiError::Memory(e)
    }
}

impl From<aml::AmlError> for AcpiError {
    fn from(e: aml::AmlError) -> Self {
        AcpiError::Aml(e)
    }
}

fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

/// Write the tables for `config` into `mem` inside `area_start..area_start + area_len`
/// (guest RAM below 4 GiB; the PC's is 0xE0000, 128 KiB, which the memory map marks
/// reserved). Nothing is written unless everything fits: the configuration is checked,
/// then the tables are built and laid out, then written. Bytes of the area past
/// [`AcpiLayout::end`] are left as they were; padding between tables is zeroed.
pub fn build_tables(
    mem: &mut GuestMemory,
    area_start: u64,
    area_len: u64,
    config: &AcpiConfig,
) -> Result<AcpiLayout, AcpiError> {
    config.validate()?;
    let area_end = area_start
        .checked_add(area_len)
        .filter(|&e| e <= 1 << 32)
        .ok_or(AcpiError::AreaNotBelow4G {
            start: area_start,
            len: area_len,
        })?;

    let dsdt = dsdt::dsdt(config)?;
    let madt = madt::madt(config);
    let facs = fadt::facs();

    let rsdp_at = align_up(area_start, 16);
    let facs_at = align_up(rsdp_at + sdt::RSDP_LEN as u64, 64);
    let dsdt_at = align_up(facs_at + facs.len() as u64, 16);
    let fadt_at = align_up(dsdt_at + dsdt.len() as u64, 16);
    let madt_at = align_up(fadt_at + fadt::FADT_LEN as u64, 16);
    let rsdt_at = align_up(madt_at + madt.len() as u64, 16);
    let pointed = [fadt_at, madt_at];
    let rsdt_len = (sdt::HEADER_LEN + 4 * pointed.len()) as u64;
    let xsdt_at = align_up(rsdt_at + rsdt_len, 16);
    let end = xsdt_at + (sdt::HEADER_LEN + 8 * pointed.len()) as u64;
    if end > area_end {
        return Err(AcpiError::AreaTooSmall {
            needed: end - area_start,
            available: area_len,
        });
    }
    if !mem.is_ram_range(area_start, end - area_start) {
        return Err(AcpiError::Memory(MemError::Unmapped {
            gpa: area_start,
            len: end - area_start,
        }));
    }

    let fadt = fadt::fadt(config, facs_at, dsdt_at);
    let rsdt = sdt::rsdt(config, &pointed);
    let xsdt = sdt::xsdt(config, &pointed);
    let rsdp = sdt::rsdp(config, rsdt_at, xsdt_at);

    let mut image = vec![0u8; (end - rsdp_at) as usize];
    for (at, bytes) in [
        (rsdp_at, &rsdp[..]),
        (facs_at, &facs[..]),
        (dsdt_at, &dsdt[..]),
        (fadt_at, &fadt[..]),
        (madt_at, &madt[..]),
        (rsdt_at, &rsdt[..]),
        (xsdt_at, &xsdt[..]),
    ] {
        let off = (at - rsdp_at) as usize;
        image[off..off + bytes.len()].copy_from_slice(bytes);
    }
    mem.write(rsdp_at, &image)?;

    Ok(AcpiLayout {
        rsdp: rsdp_at,
        facs: facs_at,
        dsdt: dsdt_at,
        fadt: fadt_at,
        madt: madt_at,
        rsdt: rsdt_at,
        xsdt: xsdt_at,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(config: &AcpiConfig) -> &'static str {
        match config.validate() {
            Err(AcpiError::Config { field, .. }) => field,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn bad_configurations_name_the_field() {
        assert_eq!(AcpiConfig::new(1).validate(), Ok(()));
        let mut c = AcpiConfig::new(2);
        c.apic_ids = vec![3, 3];
        assert_eq!(field_of(&c), "apic_ids");
        c.apic_ids = vec![];
        assert_eq!(field_of(&c), "apic_ids");
        c.apic_ids = vec![0, u32::MAX];
        assert_eq!(field_of(&c), "apic_ids");
        let mut c = AcpiConfig::new(1);
        c.sci_irq = 2;
        assert_eq!(field_of(&c), "sci_irq");
        let mut c = AcpiConfig::new(1);
        c.s5_sleep_type = 8;
        assert_eq!(field_of(&c), "s5_sleep_type");
        let mut c = AcpiConfig::new(1);
        c.pm_timer_port = 0;
        assert_eq!(field_of(&c), "pm_timer_port");
        assert_eq!(
            field_of(&AcpiConfig::pc(1, 0xff00_0000)),
            "pci_mmio32_start"
        );
        assert_eq!(field_of(&AcpiConfig::pc(1, 5 << 30)), "pci_mmio32_start");
        let mut c = AcpiConfig::new(1);
        c.pci_mmio32_end = 0xfec0_0000;
        assert_eq!(field_of(&c), "pci_mmio32_end");
        let mut c = AcpiConfig::new(1);
        c.pci_mmio64 = Some((0x8000_0000, 0x1_0000_0000));
        assert_eq!(field_of(&c), "pci_mmio64");
        let mut c = AcpiConfig::new(1);
        c.oem_id = *b"OPS\0SR";
        assert_eq!(field_of(&c), "oem_id");
        let mut c = AcpiConfig::new(1);
        c.s5_sleep_type = 9;
        let msg = alloc::format!("{}", c.validate().unwrap_err());
        assert!(msg.contains("s5_sleep_type is 9"), "{msg}");
    }

    #[test]
    fn areas_outside_ram_or_above_4g_are_refused() {
        let mut mem = GuestMemory::with_ram(0x10_0000).unwrap();
        let config = AcpiConfig::new(1);
        assert_eq!(
            build_tables(&mut mem, 0xffff_f000, 0x2000, &config),
            Err(AcpiError::AreaNotBelow4G {
                start: 0xffff_f000,
                len: 0x2000
            })
        );
        assert!(build_tables(&mut mem, u64::MAX - 4, 0x2000, &config).is_err());
        // Inside 4 GiB but past the end of RAM.
        assert!(matches!(
            build_tables(&mut mem, 0x10_0000, 0x2_0000, &config),
            Err(AcpiError::Memory(_))
        ));
        // An unaligned start is rounded up to the RSDP's 16 bytes.
        let layout = build_tables(&mut mem, 0xe0001, 0x1_fff0, &config).unwrap();
        assert_eq!(layout.rsdp, 0xe0010);
        assert!(layout.end <= 0xe0001 + 0x1_fff0);
    }

    #[test]
    fn the_dsdt_has_the_configured_s5_and_windows() {
        let mut config = AcpiConfig::pc(2, 0x8000_0000);
        config.s5_sleep_type = 7;
        config.fw_cfg = false;
        let dsdt = dsdt::dsdt(&config).unwrap();
        let find = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        // Name (_S5, Package (4) { 7, 7, Zero, Zero })
        assert!(find(&[
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 7, 0x0a, 7, 0, 0
        ]));
        // The 32-bit window's _MIN and _MAX.
        assert!(find(&[0x00, 0x00, 0x00, 0x80, 0xff, 0xff, 0xbf, 0xfe]));
        assert!(!find(b"QEMU0002"));
        assert!(find(b"C001"));
        assert!(!find(b"C002"));
    }
}

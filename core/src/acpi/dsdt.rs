//! The DSDT: the sleep state the OS powers off with, and the devices of the PC platform,
//! written with the AML encoder.
//!
//! ```text
//! Name (_S5, Package (4) { S5, S5, 0, 0 })         S5 = AcpiConfig::s5_sleep_type
//! Scope (\_SB) {
//!   Device (PCI0) {                                the host bridge, bus 0
//!     _HID PNP0A03, _ADR 0, _UID 0, _BBN 0
//!     _CRS: bus 0-0xFF; I/O 0xCF8/8 (its own ports); I/O windows 0-0xCF7 and
//!           0xD00-0xFFFF; memory windows 0xA0000-0xBFFFF and low-RAM end-0xFEBFFFFF
//!           (and the 64-bit window above RAM when configured)
//!     Device (COM1) { _HID PNP0501, _UID 1, _STA 0x0F, I/O 0x3F8/8, IRQ 4 }
//!     Device (RTC)  { _HID PNP0B00, I/O 0x70/2, IRQ 8 }
//!     Device (KBD)  { _HID PNP0303, I/O 0x60/1 and 0x64/1, IRQ 1 }
//!     Device (FWCF) { _HID "QEMU0002", _STA 0x0B, I/O 0x510/12 }  when fw_cfg is there
//!   }
//!   Device (Cnnn) { _HID "ACPI0007", _UID n }       one per vCPU, n its MADT UID
//! }
//! ```
//!
//! Linux binds the serial port, the RTC and the keyboard controller through these PNP
//! devices (8250_pnp, rtc_cmos, i8042's PNP probe). The keyboard controller lists no
//! PS/2 mouse (PNP0F13): without one Linux's i8042 driver leaves the AUX port alone,
//! which suits a controller emulated only as far as OSes need without a keyboard. The
//! 8259 PICs, the 8254 PIT and the DMA page registers get no nodes: Linux drives them at
//! their fixed ports and reserves those ranges itself (`reserve_standard_io_resources`),
//! and a PNP0000/PNP0100 node would only add a second claim on the same ports. The PM
//! register blocks are described by the FADT, from which Linux reserves them.

use super::aml::{self, AmlError, Data, Term};
use super::resources::{Cacheability, ResourceTemplate};
use super::sdt::Table;
use super::AcpiConfig;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

/// DSDT revision 2: integers are 64 bits wide.
pub const DSDT_REVISION: u8 = 2;

/// The fw_cfg ports QEMU's `QEMU0002` node claims: selector, data and the DMA address
/// register (0x510-0x51B).
const FW_CFG_PORT: u16 = 0x510;
const FW_CFG_PORTS: u8 = 0x0c;

/// The DSDT's term list for `config`.
pub fn terms(config: &AcpiConfig) -> Result<Vec<Term>, AmlError> {
    let s5 = u64::from(config.s5_sleep_type);
    let sleep = Term::name(
        "_S5",
        Data::Package(vec![
            Data::Integer(s5),
            Data::Integer(s5),
            Data::Integer(0),
            Data::Integer(0),
        ]),
    );

    let mut crs = ResourceTemplate::new()
        .word_bus_number(0, 0xff)
        .io(0xcf8, 0xcf8, 1, 8)
        .word_io(0x0000, 0x0cf7)
        .word_io(0x0d00, 0xffff)
        .dword_memory(Cacheability::Cacheable, 0x000a_0000, 0x000b_ffff)
        .dword_memory(
            Cacheability::NonCacheable,
            config.pci_mmio32_start,
            config.pci_mmio32_end,
        );
    if let Some((start, end)) = config.pci_mmio64 {
        crs = crs.qword_memory(start, end);
    }

    let mut pci0 = vec![
        Term::name("_HID", Data::eisa_id("PNP0A03")?),
        Term::name("_ADR", Data::Integer(0)),
        Term::name("_UID", Data::Integer(0)),
        Term::name("_BBN", Data::Integer(0)),
        Term::name("_CRS", crs.finish()),
        Term::device(
            "COM1",
            vec![
                Term::name("_HID", Data::eisa_id("PNP0501")?),
                Term::name("_UID", Data::Integer(1)),
                // Present, enabled, shown, functioning.
                Term::method_returning("_STA", Data::Integer(0x0f)),
                Term::name(
                    "_CRS",
                    ResourceTemplate::new()
                        .io_fixed(0x3f8, 8)
                        .irq_no_flags(4)
                        .finish(),
                ),
            ],
        ),
        Term::device(
            "RTC",
            vec![
                Term::name("_HID", Data::eisa_id("PNP0B00")?),
                Term::name(
                    "_CRS",
                    ResourceTemplate::new()
                        .io_fixed(0x70, 2)
                        .irq_no_flags(8)
                        .finish(),
                ),
            ],
        ),
        Term::device(
            "KBD",
            vec![
                Term::name("_HID", Data::eisa_id("PNP0303")?),
                Term::name(
                    "_CRS",
                    ResourceTemplate::new()
                        .io_fixed(0x60, 1)
                        .io_fixed(0x64, 1)
                        .irq_no_flags(1)
                        .finish(),
                ),
            ],
        ),
    ];
    if config.fw_cfg {
        pci0.push(Term::device(
            "FWCF",
            vec![
                Term::name("_HID", Data::string("QEMU0002")),
                // Present, enabled, functioning, not shown: as QEMU describes it.
                Term::name("_STA", Data::Integer(0x0b)),
                Term::name(
                    "_CRS",
                    ResourceTemplate::new()
                        .io_fixed(FW_CFG_PORT, FW_CFG_PORTS)
                        .finish(),
                ),
            ],
        ));
    }

    let mut sb = vec![Term::device("PCI0", pci0)];
    for uid in 0..config.apic_ids.len() {
        sb.push(Term::device(
            &format!("C{uid:03X}"),
            vec![
                Term::name("_HID", Data::string("ACPI0007")),
                Term::name("_UID", Data::Integer(uid as u64)),
            ],
        ));
    }

    Ok(vec![sleep, Term::scope("\\_SB", sb)])
}

/// The DSDT for `config`.
pub fn dsdt(config: &AcpiConfig) -> Result<Vec<u8>, AmlError> {
    let body = aml::encode(&terms(config)?)?;
    let mut t = Table::new(b"DSDT", DSDT_REVISION, config);
    t.extend(&body);
    Ok(t.finish())
}

//! The MADT ("APIC"): the interrupt controllers (ACPI 6.5, section 5.2.12). One
//! Processor Local APIC entry per vCPU (a Processor Local x2APIC entry when the APIC ID or
//! the processor UID does not fit in a byte), the I/O APIC, the PC's interrupt source
//! overrides and the NMI wiring of LINT1.

use super::sdt::Table;
use super::AcpiConfig;
use alloc::vec::Vec;

/// MADT flags bit 0: the system also has dual 8259s (which the OS must mask before it
/// uses the APICs).
pub const PCAT_COMPAT: u32 = 1;

/// Local APIC flags bit 0: the processor is enabled.
const LAPIC_ENABLED: u32 = 1;

/// MPS INTI flags: polarity in bits 1-0 (00 conforming, 01 active high, 11 active low),
/// trigger mode in bits 3-2 (00 conforming, 01 edge, 11 level).
const INTI_CONFORMING: u16 = 0x0000;
const INTI_ACTIVE_HIGH_LEVEL: u16 = 0x000d;

/// An ACPI processor UID that names every processor (in Local APIC NMI entries).
const ALL_PROCESSORS_U8: u8 = 0xff;
const ALL_PROCESSORS_U32: u32 = 0xffff_ffff;

/// The entry types.
const TYPE_LOCAL_APIC: u8 = 0;
const TYPE_IO_APIC: u8 = 1;
const TYPE_SOURCE_OVERRIDE: u8 = 2;
const TYPE_LOCAL_APIC_NMI: u8 = 4;
const TYPE_LOCAL_X2APIC: u8 = 9;
const TYPE_LOCAL_X2APIC_NMI: u8 = 10;

/// Whether vCPU `index` with `apic_id` needs a Processor Local x2APIC entry: the xAPIC
/// entry has one byte for each, and 0xff is the broadcast ID.
pub fn needs_x2apic_entry(index: usize, apic_id: u32) -> bool {
    apic_id >= 0xff || index > 0xfe
}

/// The MADT for `config`.
pub fn madt(config: &AcpiConfig) -> Vec<u8> {
    // Revision 5 (ACPI 6.3 and later).
    let mut t = Table::new(b"APIC", 5, config);
    t.u32(config.local_apic_address);
    t.u32(PCAT_COMPAT);

    let mut any_x2apic = false;
    for (index, &apic_id) in config.apic_ids.iter().enumerate() {
        if needs_x2apic_entry(index, apic_id) {
            any_x2apic = true;
            t.extend(&[TYPE_LOCAL_X2APIC, 16, 0, 0]);
            t.u32(apic_id);
            t.u32(LAPIC_ENABLED);
            t.u32(index as u32);
        } else {
            t.extend(&[TYPE_LOCAL_APIC, 8, index as u8, apic_id as u8]);
            t.u32(LAPIC_ENABLED);
        }
    }

    t.extend(&[TYPE_IO_APIC, 12, config.ioapic_id, 0]);
    t.u32(config.ioapic_address);
    t.u32(config.ioapic_gsi_base);

    // The PIT's IRQ 0 reaches the I/O APIC on pin 2 (pin 0 is the 8259's INTR), with
    // the ISA bus's polarity and trigger.
    t.extend(&[TYPE_SOURCE_OVERRIDE, 10, 0, 0]);
    t.u32(config.ioapic_gsi_base + 2);
    t.u16(INTI_CONFORMING);
    // The SCI is a level-triggered, active-high interrupt on its own pin.
    t.extend(&[TYPE_SOURCE_OVERRIDE, 10, 0, config.sci_irq]);
    t.u32(config.ioapic_gsi_base + u32::from(config.sci_irq));
    t.u16(INTI_ACTIVE_HIGH_LEVEL);

    // NMIs come in on LINT1 of every processor (the PC's wiring).
    t.extend(&[TYPE_LOCAL_APIC_NMI, 6, ALL_PROCESSORS_U8]);
    t.u16(INTI_CONFORMING);
    t.u8(1);
    if any_x2apic {
        t.extend(&[TYPE_LOCAL_X2APIC_NMI, 12]);
        t.u16(INTI_CONFORMING);
        t.u32(ALL_PROCESSORS_U32);
        t.extend(&[1, 0, 0, 0]);
    }
    t.finish()
}

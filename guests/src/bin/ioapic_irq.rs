//! The I/O APIC at 0xFEC00000 with COM1's IRQ 4 (pin 4) as the interrupt source: the
//! identification registers, redirection entries masked at reset, edge-triggered fixed
//! delivery to this CPU's APIC ID, an edge on a masked pin being lost, physical and
//! logical destinations that do or do not name this APIC, lowest-priority delivery,
//! level-triggered delivery with remote IRR and the local APIC's TMR set, cleared by the
//! EOI broadcast (the still-asserted line delivering again) or by the I/O APIC's EOI
//! register, a masked level-triggered pin delivering when unmasked, active-low polarity,
//! and NMI delivery.
//!
//! The 8259s stay masked (the runtime masked them). Every phase works with interrupts
//! disabled except inside `window`, and turns COM1's interrupt off before it prints.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use rt::apic::{self, reg, Apic, SharedApic};

use rt::irq::{
    com1_irq_ack, com1_irq_edge, com1_irq_off, com1_irq_raise, count, ioapic_entry, ioapic_eoi,
    ioapic_read, ioapic_set_entry, ioapic_write, reset_count, window, COUNT, ENTRY_ACTIVE_LOW,
    ENTRY_LEVEL, ENTRY_LOGICAL, ENTRY_LOWEST_PRIORITY, ENTRY_MASKED, ENTRY_NMI, ENTRY_REMOTE_IRR,
};
use rt::{check, check_eq};

rt::entry!(main);

const PIN: u32 = 4;
const EDGE_VECTOR: u8 = 0x44;
const LEVEL_VECTOR: u8 = 0x45;

static APIC: SharedApic = SharedApic::new();
/// What the handler does.
static MODE: AtomicU32 = AtomicU32::new(ACK);
/// Read IIR, EOI.
const ACK: u32 = 0;
/// Read IIR from the second interrupt on, EOI.
const ACK_SECOND: u32 = 1;
/// First interrupt: the I/O APIC's EOI register while the line is still high, then read
/// IIR; EOI.
const IOAPIC_EOI_FIRST: u32 = 2;
/// Mask the pin, EOI (for a line that stays asserted).
const MASK_PIN: u32 = 3;
/// Redirection entry as the handler saw it on the first interrupt.
static ENTRY_SEEN: AtomicU64 = AtomicU64::new(0);
/// The local APIC's TMR word for vectors 0x40-0x5F on the first interrupt.
static TMR_SEEN: AtomicU32 = AtomicU32::new(0);
/// Remote IRR and IRR observations after the I/O APIC EOI register write.
static AFTER_IOAPIC_EOI: AtomicU64 = AtomicU64::new(0);
static NMIS: AtomicU32 = AtomicU32::new(0);

fn local_apic() -> Apic {
    APIC.get()
}

fn handler(frame: &mut rt::Frame) {
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    let apic = local_apic();
    if n == 1 {
        ENTRY_SEEN.store(ioapic_entry(PIN), Ordering::SeqCst);
        TMR_SEEN.store(apic.read(0x180 + 0x20), Ordering::SeqCst);
    }
    match MODE.load(Ordering::SeqCst) {
        ACK => {
            com1_irq_ack();
        }
        ACK_SECOND => {
            if n >= 2 {
                com1_irq_ack();
            }
        }
        IOAPIC_EOI_FIRST => {
            if n == 1 {
                ioapic_eoi(frame.vector as u8);
                let remote = ioapic_entry(PIN) & ENTRY_REMOTE_IRR != 0;
                let irr = apic.read(0x200 + 0x20);
                AFTER_IOAPIC_EOI.store(u64::from(remote) << 32 | u64::from(irr), Ordering::SeqCst);
            }
            com1_irq_ack();
        }
        _ => ioapic_set_entry(PIN, ioapic_entry(PIN) | ENTRY_MASKED),
    }
    apic.eoi();
}

fn nmi_handler(_: &mut rt::Frame) {
    NMIS.fetch_add(1, Ordering::SeqCst);
}

fn main(_: &'static rt::multiboot::Info) {
    let apic = apic::enable_for_irq(&APIC, "IRQ 4");
    for v in [EDGE_VECTOR, LEVEL_VECTOR] {
        rt::interrupts::set_handler(v, handler);
    }
    rt::interrupts::set_handler(2, nmi_handler);
    let apic_id = (apic.read(reg::ID) >> 24) as u8;

    identification();
    edge(apic_id);
    destinations(apic, apic_id);
    level(apic_id);
    ioapic_eoi_register(apic_id);
    polarity(apic_id);
    nmi(apic_id);
    ioapic_set_entry(PIN, ENTRY_MASKED);
}

fn dest(id: u8) -> u64 {
    u64::from(id) << 56
}

fn identification() {
    let version = ioapic_read(1);
    let id = ioapic_read(0);
    ioapic_write(0, 0x0A00_0000);
    let new_id = ioapic_read(0);
    ioapic_write(0, id);
    let masked = (0..24).all(|pin| ioapic_entry(pin) & ENTRY_MASKED != 0);
    check_eq!(
        version,
        0x0017_0020u32,
        "version 0x20, 24 redirection entries"
    );
    check_eq!(new_id, 0x0A00_0000u32, "the ID register takes bits 27:24");
    check!(masked, "every redirection entry is masked at reset");
}

fn edge(apic_id: u8) {
    MODE.store(ACK, Ordering::SeqCst);
    reset_count();
    ioapic_set_entry(PIN, dest(apic_id) | u64::from(EDGE_VECTOR));
    let entry = ioapic_entry(PIN);
    com1_irq_raise();
    let taken = window(1, 2000, 20);
    // An edge while the pin is masked is lost: unmasking does not bring it back.
    ioapic_set_entry(PIN, entry | ENTRY_MASKED);
    com1_irq_edge();
    let while_masked = window(2, 20, 0);
    ioapic_set_entry(PIN, entry);
    let after_unmask = window(2, 20, 0);
    com1_irq_edge();
    let next_edge = window(2, 2000, 20);
    com1_irq_off();
    check_eq!(
        entry,
        dest(apic_id) | u64::from(EDGE_VECTOR),
        "edge-triggered fixed entry, physical destination {}",
        apic_id
    );
    check_eq!(taken, 1u32, "IRQ 4 delivered as vector {:#x}", EDGE_VECTOR);
    check_eq!(while_masked, 1u32, "nothing while the pin is masked");
    check_eq!(after_unmask, 1u32, "the masked edge was lost");
    check_eq!(next_edge, 2u32, "the next edge is delivered");
    check_eq!(
        TMR_SEEN.load(Ordering::SeqCst) & (1 << (EDGE_VECTOR - 0x40)),
        0u32,
        "edge-triggered: TMR clear"
    );
}

fn destinations(apic: Apic, apic_id: u8) {
    MODE.store(ACK, Ordering::SeqCst);
    let mut results = [0u32; 4];
    let entries = [
        // Another APIC ID: nobody accepts.
        dest(apic_id.wrapping_add(1)) | u64::from(EDGE_VECTOR),
        // Logical flat, bit 0: this APIC (its LDR is set to bit 0 below).
        dest(0x01) | ENTRY_LOGICAL | u64::from(EDGE_VECTOR),
        // Logical flat, bit 1: not this APIC.
        dest(0x02) | ENTRY_LOGICAL | u64::from(EDGE_VECTOR),
        // Lowest priority to this APIC.
        dest(apic_id) | ENTRY_LOWEST_PRIORITY | u64::from(EDGE_VECTOR),
    ];
    let is_x2apic = matches!(apic, Apic::X2);
    if !is_x2apic {
        apic.write(reg::DFR, 0xFFFF_FFFF);
        apic.write(reg::LDR, 1 << 24);
    }
    for (result, entry) in results.iter_mut().zip(entries) {
        reset_count();
        ioapic_set_entry(PIN, entry);
        com1_irq_raise();
        *result = window(1, 200, 20);
        com1_irq_off();
    }
    ioapic_set_entry(PIN, ENTRY_MASKED);
    check_eq!(
        results[0],
        0u32,
        "physical destination of another APIC: dropped"
    );
    if !is_x2apic {
        check_eq!(
            results[1],
            1u32,
            "logical flat destination naming this APIC"
        );
        check_eq!(results[2], 0u32, "logical flat destination naming another");
    }
    check_eq!(results[3], 1u32, "lowest-priority delivery");
}

fn level(apic_id: u8) {
    MODE.store(ACK_SECOND, Ordering::SeqCst);
    reset_count();
    let entry = dest(apic_id) | ENTRY_LEVEL | u64::from(LEVEL_VECTOR);
    ioapic_set_entry(PIN, entry);
    com1_irq_raise();
    let taken = window(2, 2000, 20);
    let seen = ENTRY_SEEN.load(Ordering::SeqCst);
    let tmr = TMR_SEEN.load(Ordering::SeqCst);
    let after = ioapic_entry(PIN);
    // Masked while asserted: held, and delivered when unmasked.
    MODE.store(ACK, Ordering::SeqCst);
    reset_count();
    ioapic_set_entry(PIN, entry | ENTRY_MASKED);
    com1_irq_edge();
    let while_masked = window(1, 20, 0);
    ioapic_set_entry(PIN, entry);
    let unmasked = window(1, 2000, 20);
    com1_irq_off();
    ioapic_set_entry(PIN, ENTRY_MASKED);
    check_eq!(
        taken,
        2u32,
        "level-triggered: delivered again after the EOI while the line stayed high"
    );
    check!(
        seen & ENTRY_REMOTE_IRR != 0,
        "remote IRR set while in service"
    );
    check!(
        tmr & (1 << (LEVEL_VECTOR - 0x40)) != 0,
        "the local APIC's TMR marks the vector level-triggered"
    );
    check_eq!(
        after & ENTRY_REMOTE_IRR,
        0u64,
        "the EOI broadcast cleared remote IRR"
    );
    check_eq!(while_masked, 0u32, "masked level-triggered pin: held");
    check_eq!(unmasked, 1u32, "delivered once unmasked");
}

fn ioapic_eoi_register(apic_id: u8) {
    MODE.store(IOAPIC_EOI_FIRST, Ordering::SeqCst);
    reset_count();
    ioapic_set_entry(PIN, dest(apic_id) | ENTRY_LEVEL | u64::from(LEVEL_VECTOR));
    com1_irq_raise();
    let taken = window(2, 2000, 20);
    com1_irq_off();
    ioapic_set_entry(PIN, ENTRY_MASKED);
    let after = AFTER_IOAPIC_EOI.load(Ordering::SeqCst);
    check!(
        after >> 32 == 1,
        "the EOI register cleared remote IRR and the asserted line was delivered again"
    );
    check!(
        after as u32 & (1 << (LEVEL_VECTOR - 0x40)) != 0,
        "the new request waits in the local APIC's IRR"
    );
    check_eq!(taken, 2u32, "it is taken after the first interrupt's EOI");
}

fn polarity(apic_id: u8) {
    MODE.store(MASK_PIN, Ordering::SeqCst);
    reset_count();
    // Active low, level: the idle (low) line is asserted.
    com1_irq_off();
    let entry = dest(apic_id) | ENTRY_ACTIVE_LOW | ENTRY_LEVEL | u64::from(LEVEL_VECTOR);
    ioapic_set_entry(PIN, entry);
    let idle_line = window(1, 200, 20);
    // The handler masked the pin. With the line high the pin is not asserted.
    reset_count();
    com1_irq_raise();
    ioapic_set_entry(PIN, entry);
    let high_line = window(1, 20, 0);
    com1_irq_off();
    ioapic_set_entry(PIN, ENTRY_MASKED);
    rt::check_or_tcg!(
        idle_line == 1,
        "QEMU's I/O APIC ignores the polarity bit",
        "active low: the low line is asserted ({})",
        idle_line
    );
    rt::check_or_tcg!(
        high_line == 0,
        "QEMU's I/O APIC ignores the polarity bit",
        "active low: the high line is idle ({})",
        high_line
    );
}

fn nmi(apic_id: u8) {
    NMIS.store(0, Ordering::SeqCst);
    reset_count();
    ioapic_set_entry(PIN, dest(apic_id) | ENTRY_NMI);
    com1_irq_raise();
    apic::spin_until(apic::tsc_ticks_for_ms(2000), || {
        NMIS.load(Ordering::SeqCst) > 0
    });
    apic::spin_until(apic::tsc_ticks_for_ms(20), || false);
    let nmis = NMIS.load(Ordering::SeqCst);
    com1_irq_off();
    ioapic_set_entry(PIN, ENTRY_MASKED);
    check_eq!(
        nmis,
        1u32,
        "NMI delivery mode: one NMI, with interrupts disabled"
    );
    check_eq!(count(), 0u32, "no maskable interrupt");
}

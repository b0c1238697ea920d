//! The 8259 PIC pair as a PC operating system drives it, with COM1's IRQ 4 as the
//! interrupt source: the runtime's initialisation (ICW1-ICW4, vectors 0x20/0x28), IRR and
//! ISR through OCW3, the interrupt reaching the CPU through the local APIC's LINT0 in
//! ExtINT mode (virtual wire) only when unmasked in both the IMR and the LVT,
//! non-specific and specific EOI, edge sensing (a line held high interrupts once) against
//! level sensing through the ELCR (it interrupts again after each EOI while high), poll
//! mode, LINT0 in NMI mode, and the PIC's INTR going straight to the CPU while the local
//! APIC is globally disabled.
//!
//! Every phase works with interrupts disabled except inside `window`, and turns COM1's
//! interrupt off before it prints (printing would raise the line again).

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use rt::apic::{self, reg, Apic, BASE_EN, BASE_EXTD, IA32_APIC_BASE};
use rt::cpu::{cli, inb, outb, rdmsr, wrmsr};
use rt::irq::{
    com1_irq_ack, com1_irq_off, com1_irq_raise, count, pic_eoi, pic_irr, pic_isr, pic_mask,
    pic_specific_eoi, reset_count, window, COM1_IRQ, COUNT, ELCR1, PIC1_CMD, PIC1_DATA,
    PIC1_VECTOR,
};
use rt::{check, check_eq, println};

rt::entry!(main);

const VECTOR: u8 = PIC1_VECTOR + COM1_IRQ;
const IRQ4: u8 = 1 << COM1_IRQ;
const LVT_MASKED: u32 = 1 << 16;
const LVT_NMI: u32 = 4 << 8;
const LVT_EXTINT: u32 = 7 << 8;

/// What the IRQ 4 handler does.
static MODE: AtomicU32 = AtomicU32::new(ACK_NON_SPECIFIC);
/// Read IIR (the line falls), non-specific EOI.
const ACK_NON_SPECIFIC: u32 = 0;
/// Leave the line high, specific EOI.
const KEEP_SPECIFIC: u32 = 1;
/// Read IIR from the third interrupt on, non-specific EOI.
const ACK_THIRD: u32 = 2;
/// The master's ISR as the handler saw it.
static ISR_SEEN: AtomicU32 = AtomicU32::new(0);
static NMIS: AtomicU32 = AtomicU32::new(0);

fn irq4_handler(_: &mut rt::Frame) {
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    ISR_SEEN.store(u32::from(pic_isr()), Ordering::SeqCst);
    match MODE.load(Ordering::SeqCst) {
        ACK_NON_SPECIFIC => {
            com1_irq_ack();
            pic_eoi();
        }
        KEEP_SPECIFIC => pic_specific_eoi(COM1_IRQ),
        _ => {
            if n >= 3 {
                com1_irq_ack();
            }
            pic_eoi();
        }
    }
}

fn nmi_handler(_: &mut rt::Frame) {
    NMIS.fetch_add(1, Ordering::SeqCst);
}

fn main(_: &'static rt::multiboot::Info) {
    rt::interrupts::set_handler(VECTOR, irq4_handler);
    rt::interrupts::set_handler(2, nmi_handler);
    cli();
    check_eq!(
        inb(PIC1_DATA),
        0xFFu8,
        "every line masked after the runtime's ICW sequence"
    );
    match apic::cpuid_apic().then(Apic::current).flatten() {
        Some(apic) => {
            apic.enable();
            virtual_wire(apic);
            edge_and_level();
            poll();
            lint0_nmi(apic);
            apic.write(reg::LVT_LINT0, LVT_MASKED | LVT_EXTINT);
            apic_disabled();
        }
        None => {
            println!("no enabled local APIC: the PIC reaches the CPU directly");
            pic_mask(!IRQ4);
            edge_and_level();
            poll();
        }
    }
    pic_mask(0xFF);
}

fn virtual_wire(apic: Apic) {
    MODE.store(ACK_NON_SPECIFIC, Ordering::SeqCst);
    reset_count();
    com1_irq_raise();
    let irr = pic_irr();
    let isr = pic_isr();
    apic.write(reg::LVT_LINT0, LVT_EXTINT);
    let while_masked = window(1, 20, 0);
    // Unmasked in the IMR but masked in LINT0: still nothing.
    apic.write(reg::LVT_LINT0, LVT_MASKED | LVT_EXTINT);
    pic_mask(!IRQ4);
    let lint0_masked = window(1, 20, 0);
    apic.write(reg::LVT_LINT0, LVT_EXTINT);
    let taken = window(1, 2000, 20);
    let seen = ISR_SEEN.load(Ordering::SeqCst);
    let isr_after = pic_isr();
    let irr_after = pic_irr();
    com1_irq_off();
    check!(
        irr & IRQ4 != 0,
        "IRQ 4 requested in IRR ({:#x}) while masked",
        irr
    );
    check_eq!(isr, 0u8, "nothing in service");
    check_eq!(while_masked, 0u32, "masked in the IMR: no interrupt");
    check_eq!(lint0_masked, 0u32, "masked in LVT LINT0: no interrupt");
    check_eq!(
        taken,
        1u32,
        "virtual wire: one interrupt (vector {:#x}) through LINT0 in ExtINT mode",
        VECTOR
    );
    check_eq!(seen, u32::from(IRQ4), "IR4 in service inside the handler");
    check_eq!(isr_after, 0u8, "the non-specific EOI ended it");
    check_eq!(irr_after & IRQ4, 0u8, "no request left once IIR was read");
}

fn edge_and_level() {
    // Edge: the handler leaves the line high and sends a specific EOI; no new edge, so
    // no second interrupt.
    MODE.store(KEEP_SPECIFIC, Ordering::SeqCst);
    reset_count();
    com1_irq_raise();
    let edge = window(2, 200, 20);
    let isr_after = pic_isr();
    let iir = com1_irq_ack();
    com1_irq_off();
    check_eq!(
        edge,
        1u32,
        "edge-triggered: one interrupt although the line stayed high"
    );
    check_eq!(iir & 0x0F, 0x02u8, "IIR still reported THR empty");
    check_eq!(isr_after, 0u8, "the specific EOI (0x64) ended IR4");

    // Level through the ELCR: after each EOI the still-high line interrupts again, until
    // the handler reads IIR (on the third).
    outb(ELCR1, IRQ4);
    let elcr = inb(ELCR1);
    MODE.store(ACK_THIRD, Ordering::SeqCst);
    reset_count();
    com1_irq_raise();
    let level = window(3, 2000, 20);
    com1_irq_off();
    outb(ELCR1, 0);
    check_eq!(elcr, IRQ4, "ELCR selects level sensing for IRQ 4");
    check_eq!(
        level,
        3u32,
        "level-triggered: the interrupt repeats while the line is high"
    );
    check_eq!(inb(ELCR1) & 0x07, 0u8, "IRQs 0-2 are never level-triggered");
}

fn poll() {
    com1_irq_raise();
    outb(PIC1_CMD, 0x0C);
    let polled = inb(PIC1_CMD);
    let isr = pic_isr();
    com1_irq_ack();
    pic_eoi();
    outb(PIC1_CMD, 0x0C);
    let nothing = inb(PIC1_CMD);
    com1_irq_off();
    check_eq!(
        polled,
        0x80 | COM1_IRQ,
        "poll: IRQ 4 is the highest request"
    );
    check_eq!(isr, IRQ4, "the poll acknowledged it");
    check_eq!(nothing & 0x80, 0u8, "poll with nothing requested");
}

fn lint0_nmi(apic: Apic) {
    apic.write(reg::LVT_LINT0, LVT_NMI);
    reset_count();
    NMIS.store(0, Ordering::SeqCst);
    com1_irq_raise();
    apic::spin_until(apic::tsc_ticks_for_ms(2000), || {
        NMIS.load(Ordering::SeqCst) > 0
    });
    let nmis = NMIS.load(Ordering::SeqCst);
    let maskable = count();
    // The PIC still holds the request (no INTA happened): take it with a poll.
    outb(PIC1_CMD, 0x0C);
    let polled = inb(PIC1_CMD);
    com1_irq_ack();
    pic_eoi();
    com1_irq_off();
    apic.write(reg::LVT_LINT0, LVT_MASKED | LVT_EXTINT);
    check!(
        nmis >= 1,
        "LINT0 in NMI mode: the PIC's INTR raised an NMI with IF = 0"
    );
    rt::check_or_tcg!(
        nmis == 1,
        "QEMU raises LINT0 again at every PIC update",
        "exactly one NMI for one rising edge ({})",
        nmis
    );
    check_eq!(maskable, 0u32, "no maskable interrupt");
    check_eq!(polled, 0x80 | COM1_IRQ, "the request stayed in the PIC");
}

fn apic_disabled() {
    let base = rdmsr(IA32_APIC_BASE);
    wrmsr(IA32_APIC_BASE, base & !(BASE_EN | BASE_EXTD));
    MODE.store(ACK_NON_SPECIFIC, Ordering::SeqCst);
    reset_count();
    com1_irq_raise();
    let taken = window(1, 2000, 20);
    com1_irq_off();
    check!(
        rdmsr(IA32_APIC_BASE) & BASE_EN == 0,
        "the local APIC is globally disabled"
    );
    // SDM 3A 11.4.3: globally disabled, the processor works as one without an APIC
    // (LINT0 is its INTR pin), whatever the LVT held.
    rt::check_or_tcg!(
        taken == 1,
        "QEMU still gates INTR with the LINT0 LVT while the APIC is globally disabled",
        "APIC disabled: the PIC's INTR reaches the CPU directly ({})",
        taken
    );
}

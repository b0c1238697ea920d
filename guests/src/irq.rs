//! The PC's interrupt controllers as the guests drive them (the 8259 pair with its ELCR,
//! the I/O APIC at 0xFEC00000) and COM1's interrupt, the one interrupt source every
//! machine the corpus runs on has: with MCR.OUT2 and IER.THRE set, the 16550 asserts
//! IRQ 4 while its transmitter is empty, until IIR is read (or IER cleared).

use crate::cpu::{cli, inb, outb, sti};
use core::sync::atomic::{AtomicU32, Ordering};

/// ISA IRQ of COM1.
pub const COM1_IRQ: u8 = 4;
const COM1: u16 = 0x3F8;
const IER: u16 = COM1 + 1;
const IIR: u16 = COM1 + 2;
const MCR: u16 = COM1 + 4;
const IER_THRE: u8 = 0x02;
/// DTR | RTS | OUT2: OUT2 connects the UART's interrupt to the controllers.
const MCR_OUT2: u8 = 0x0B;
/// DTR | RTS, as the runtime's console leaves MCR.
const MCR_NO_IRQ: u8 = 0x03;

/// Assert COM1's interrupt line: OUT2 on, THR-empty interrupt enabled (the THR is empty,
/// so it is pending at once).
pub fn com1_irq_raise() {
    outb(MCR, MCR_OUT2);
    outb(IER, IER_THRE);
}

/// Read IIR: acknowledges the THR-empty interrupt, so the line falls. Returns IIR.
pub fn com1_irq_ack() -> u8 {
    inb(IIR)
}

/// Drop COM1's line and leave the UART as the console expects it (no interrupts).
pub fn com1_irq_off() {
    outb(IER, 0);
    outb(MCR, MCR_NO_IRQ);
}

/// Drop and raise the line again: a fresh edge.
pub fn com1_irq_edge() {
    outb(IER, 0);
    outb(IER, IER_THRE);
}

/// The master PIC's command port.
pub const PIC1_CMD: u16 = 0x20;
/// The master PIC's data port (IMR).
pub const PIC1_DATA: u16 = 0x21;
/// The slave PIC's command port.
pub const PIC2_CMD: u16 = 0xA0;
/// The slave PIC's data port.
pub const PIC2_DATA: u16 = 0xA1;
/// ELCR for IRQs 0-7.
pub const ELCR1: u16 = 0x4D0;
/// The master's vector base as the runtime programs it.
pub const PIC1_VECTOR: u8 = 0x20;

/// The master PIC's IRR (OCW3 read IRR).
pub fn pic_irr() -> u8 {
    outb(PIC1_CMD, 0x0A);
    inb(PIC1_CMD)
}

/// The master PIC's ISR (OCW3 read ISR), leaving IRR selected again.
pub fn pic_isr() -> u8 {
    outb(PIC1_CMD, 0x0B);
    let v = inb(PIC1_CMD);
    outb(PIC1_CMD, 0x0A);
    v
}

/// Set the master's IMR.
pub fn pic_mask(mask: u8) {
    outb(PIC1_DATA, mask);
}

/// Non-specific EOI to the master.
pub fn pic_eoi() {
    outb(PIC1_CMD, 0x20);
}

/// Specific EOI for `irq` (0-7) to the master.
pub fn pic_specific_eoi(irq: u8) {
    outb(PIC1_CMD, 0x60 | irq);
}

/// The I/O APIC's base address.
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;

/// Read I/O APIC register `index` through IOREGSEL/IOWIN. The load is a plain `MOV`
/// (as Linux's `readl`), never folded into another instruction's memory operand: a
/// hypervisor decodes MMIO instructions, and the plain moves are what drivers emit.
pub fn ioapic_read(index: u32) -> u32 {
    let value: u32;
    // SAFETY: the I/O APIC page is identity-mapped by the boot tables; IOREGSEL and IOWIN
    // are aligned 32-bit registers.
    unsafe {
        core::ptr::write_volatile(IOAPIC_BASE as *mut u32, index);
        core::arch::asm!(
            "mov {0:e}, dword ptr [{1}]",
            out(reg) value,
            in(reg) IOAPIC_BASE + 0x10,
            options(nostack, preserves_flags)
        );
    }
    value
}

/// Write I/O APIC register `index`.
pub fn ioapic_write(index: u32, value: u32) {
    // SAFETY: as for ioapic_read.
    unsafe {
        core::ptr::write_volatile(IOAPIC_BASE as *mut u32, index);
        core::ptr::write_volatile((IOAPIC_BASE + 0x10) as *mut u32, value);
    }
}

/// Write the version-0x20 I/O APIC's EOI register.
pub fn ioapic_eoi(vector: u8) {
    // SAFETY: as for ioapic_read; the EOI register is at offset 0x40.
    unsafe { core::ptr::write_volatile((IOAPIC_BASE + 0x40) as *mut u32, u32::from(vector)) };
}

/// Redirection entry `pin`, both halves.
pub fn ioapic_entry(pin: u32) -> u64 {
    let lo = ioapic_read(0x10 + 2 * pin);
    let hi = ioapic_read(0x11 + 2 * pin);
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Program redirection entry `pin` as Linux does: high half first, then the low half.
pub fn ioapic_set_entry(pin: u32, entry: u64) {
    ioapic_write(0x11 + 2 * pin, (entry >> 32) as u32);
    ioapic_write(0x10 + 2 * pin, entry as u32);
}

/// Redirection entry: masked.
pub const ENTRY_MASKED: u64 = 1 << 16;
/// Redirection entry: level-triggered.
pub const ENTRY_LEVEL: u64 = 1 << 15;
/// Redirection entry: remote IRR.
pub const ENTRY_REMOTE_IRR: u64 = 1 << 14;
/// Redirection entry: active low.
pub const ENTRY_ACTIVE_LOW: u64 = 1 << 13;
/// Redirection entry: logical destination mode.
pub const ENTRY_LOGICAL: u64 = 1 << 11;
/// Redirection entry: delivery mode lowest priority.
pub const ENTRY_LOWEST_PRIORITY: u64 = 1 << 8;
/// Redirection entry: delivery mode NMI.
pub const ENTRY_NMI: u64 = 4 << 8;

/// Interrupts counted by the guests' handlers.
pub static COUNT: AtomicU32 = AtomicU32::new(0);

/// Interrupts counted so far.
pub fn count() -> u32 {
    COUNT.load(Ordering::SeqCst)
}

/// Reset the count.
pub fn reset_count() {
    COUNT.store(0, Ordering::SeqCst);
}

/// Enable interrupts until `count() >= n` or `ms` milliseconds pass, then for `settle_ms`
/// more (so that an interrupt too many has its chance to arrive), then disable them
/// again. Returns the count.
pub fn window(n: u32, ms: u64, settle_ms: u64) -> u32 {
    sti();
    crate::apic::spin_until(crate::apic::tsc_ticks_for_ms(ms), || count() >= n);
    crate::apic::spin_until(crate::apic::tsc_ticks_for_ms(settle_ms), || false);
    cli();
    count()
}

//! COM1 receiving by interrupt, as Linux's 8250 driver receives console input: the FIFO
//! on (FCR, trigger level 1, IIR's FIFO bits), the received-data interrupt enabled in IER
//! and connected by MCR.OUT2 to IRQ 4, delivered through the I/O APIC (edge-triggered, as
//! ISA IRQ 4 is), and a handler that reads IIR (received data, or the FIFO's character
//! timeout) and then RBR while LSR.DR says a byte waits. The harness types
//! [`INPUT`] on the console once the guest has printed its prompt; the guest checks every
//! byte arrived, in order, by interrupt, that IIR reported received data and LSR.DR a
//! byte each time, that no interrupt came while OUT2 was clear, and that IIR and LSR are
//! quiet once the input is read.
//!
//! QEMU's 16550, the reference this guest also runs on, does not gate its interrupt
//! with OUT2, and can interrupt once more after the handler emptied the FIFO (IIR then
//! says nothing is pending, which the handler takes as Linux's does); those are printed as
//! notes there.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use rt::apic::{self, spin_until, tsc_ticks_for_ms, Apic};
use rt::cell::Racy;
use rt::cpu::{cli, inb, outb, sti};
use rt::irq::{ioapic_set_entry, COUNT, ENTRY_MASKED};
use rt::{check, check_eq, check_or_qemu, println};

rt::entry!(main);

/// What the harness types (the corpus table gives the same bytes as this guest's input).
const INPUT: &[u8] = b"opsvisor rx 42\n";
/// The line after which the harness types (corpus: `opsvisor_corpus::INPUT_PROMPT`).
const PROMPT: &str = "ready for console input";

const COM1: u16 = 0x3F8;
const RBR: u16 = COM1;
const IER: u16 = COM1 + 1;
const IIR: u16 = COM1 + 2;
const FCR: u16 = COM1 + 2;
const MCR: u16 = COM1 + 4;
const LSR: u16 = COM1 + 5;

const IER_RX: u8 = 1 << 0;
const FCR_ENABLE: u8 = 1 << 0;
const IIR_NONE: u8 = 0x01;
const IIR_ID: u8 = 0x0F;
const IIR_RX: u8 = 0x04;
const IIR_TIMEOUT: u8 = 0x0C;
const IIR_FIFO: u8 = 0xC0;
const MCR_DTR_RTS: u8 = 0x03;
const MCR_OUT2: u8 = 1 << 3;
const LSR_DR: u8 = 1 << 0;

const PIN: u32 = 4;
const VECTOR: u8 = 0x44;

static APIC: AtomicU64 = AtomicU64::new(0);
static RECEIVED: Racy<[u8; 64]> = Racy::new([0; 64]);
static RECEIVED_LEN: AtomicU32 = AtomicU32::new(0);
/// IIR values that were not "received data" or "character timeout".
static BAD_IIR: AtomicU32 = AtomicU32::new(0);
/// The last IIR the handler read, and whether its FIFO bits were set every time.
static FIFO_BITS_MISSING: AtomicU32 = AtomicU32::new(0);
/// Interrupts whose IIR said received data while LSR.DR was clear.
static EMPTY: AtomicU32 = AtomicU32::new(0);
/// Interrupts whose IIR said nothing is pending.
static NOTHING_PENDING: AtomicU32 = AtomicU32::new(0);

fn local_apic() -> Apic {
    match APIC.load(Ordering::SeqCst) {
        0 => Apic::X2,
        base => Apic::X(base),
    }
}

fn handler(_: &mut rt::Frame) {
    COUNT.fetch_add(1, Ordering::SeqCst);
    let iir = inb(IIR);
    if iir & IIR_FIFO != IIR_FIFO {
        FIFO_BITS_MISSING.fetch_add(1, Ordering::SeqCst);
    }
    match iir & IIR_ID {
        IIR_RX | IIR_TIMEOUT => {
            if inb(LSR) & LSR_DR == 0 {
                EMPTY.fetch_add(1, Ordering::SeqCst);
            }
        }
        IIR_NONE => {
            NOTHING_PENDING.fetch_add(1, Ordering::SeqCst);
        }
        _ => BAD_IIR.store(u32::from(iir) | 0x100, Ordering::SeqCst),
    }
    // Read while a byte waits: the line falls only when the FIFO is empty, and IRQ 4 is
    // edge-triggered.
    let mut guard = 0;
    while inb(LSR) & LSR_DR != 0 && guard < 64 {
        let byte = inb(RBR);
        let n = RECEIVED_LEN.fetch_add(1, Ordering::SeqCst) as usize;
        // SAFETY: single CPU; main reads the buffer only with interrupts disabled.
        unsafe {
            if let Some(slot) = (*RECEIVED.get()).get_mut(n) {
                *slot = byte;
            }
        }
        guard += 1;
    }
    local_apic().eoi();
}

fn received() -> &'static [u8] {
    let n = (RECEIVED_LEN.load(Ordering::SeqCst) as usize).min(64);
    // SAFETY: called with interrupts disabled; the handler is the only writer.
    unsafe { &(&*RECEIVED.get())[..n] }
}

fn main(_: &'static rt::multiboot::Info) {
    if !apic::cpuid_apic() {
        rt::skip!("no local APIC for IRQ 4 through the I/O APIC");
    }
    let Some(apic) = Apic::current() else {
        println!("FAIL: the local APIC is globally disabled");
        rt::exit(rt::EXIT_FAIL);
    };
    APIC.store(
        match apic {
            Apic::X(base) => base,
            Apic::X2 => 0,
        },
        Ordering::SeqCst,
    );
    apic.enable();
    cli();
    rt::interrupts::set_handler(VECTOR, handler);
    let id = match apic {
        Apic::X(_) => apic.read(apic::reg::ID) >> 24,
        Apic::X2 => apic.read(apic::reg::ID),
    };
    ioapic_set_entry(PIN, u64::from(id) << 56 | u64::from(VECTOR));

    // FIFO on, trigger level 1 byte; the receive FIFO is not cleared, so input that came
    // early stays.
    outb(FCR, FCR_ENABLE);
    outb(IER, 0);
    let iir = inb(IIR);
    check_eq!(
        iir,
        IIR_FIFO | IIR_NONE,
        "IIR: FIFOs enabled, no interrupt pending"
    );

    println!("{}", PROMPT);
    // Wait for the first byte (polled), so that the OUT2 check below has data to hold.
    let arrived = spin_until(tsc_ticks_for_ms(10_000), || inb(LSR) & LSR_DR != 0);
    check!(arrived, "LSR.DR: console input arrived");

    // The received-data interrupt enabled, but OUT2 clear: the line stays off the bus.
    COUNT.store(0, Ordering::SeqCst);
    outb(MCR, MCR_DTR_RTS);
    outb(IER, IER_RX);
    let pending = inb(IIR);
    sti();
    spin_until(tsc_ticks_for_ms(50), || false);
    cli();
    let without_out2 = COUNT.load(Ordering::SeqCst);
    check!(
        matches!(pending & IIR_ID, IIR_RX | IIR_TIMEOUT) && pending & IIR_FIFO == IIR_FIFO,
        "IIR reports received data ({:#04x}) once IER enables it",
        pending
    );
    check_or_qemu!(
        without_out2 == 0,
        "QEMU's 16550 does not gate its interrupt with OUT2",
        "no interrupt while MCR.OUT2 is clear ({})",
        without_out2
    );

    // OUT2 on: IRQ 4 reaches the I/O APIC.
    outb(MCR, MCR_DTR_RTS | MCR_OUT2);
    sti();
    spin_until(tsc_ticks_for_ms(5000), || {
        RECEIVED_LEN.load(Ordering::SeqCst) as usize >= INPUT.len()
    });
    spin_until(tsc_ticks_for_ms(20), || false);
    cli();
    let interrupts = COUNT.load(Ordering::SeqCst);
    let got = received();
    let after_iir = inb(IIR);
    let after_lsr = inb(LSR);
    outb(IER, 0);
    outb(MCR, MCR_DTR_RTS);
    ioapic_set_entry(PIN, ENTRY_MASKED);

    println!(
        "received {:?} in {} interrupt(s)",
        core::str::from_utf8(got).unwrap_or("<not UTF-8>"),
        interrupts
    );
    check_eq!(
        got,
        INPUT,
        "every byte typed arrived by interrupt, in order"
    );
    check!(
        interrupts >= 1 && interrupts as usize <= INPUT.len(),
        "between one interrupt and one per byte ({})",
        interrupts
    );
    check_eq!(
        BAD_IIR.load(Ordering::SeqCst),
        0,
        "no interrupt's IIR named another source"
    );
    let spurious = NOTHING_PENDING.load(Ordering::SeqCst);
    check_or_qemu!(
        spurious == 0,
        "QEMU's 16550 interrupts again after the FIFO was read empty",
        "every interrupt's IIR said received data or character timeout ({} said none)",
        spurious
    );
    check_eq!(
        FIFO_BITS_MISSING.load(Ordering::SeqCst),
        0,
        "every IIR read had the FIFO bits set"
    );
    check_eq!(
        EMPTY.load(Ordering::SeqCst),
        0,
        "LSR.DR was set whenever IIR said received data"
    );
    check_eq!(
        after_iir,
        IIR_FIFO | IIR_NONE,
        "IIR: nothing pending once the input is read"
    );
    check_eq!(after_lsr & LSR_DR, 0, "LSR.DR clear once the input is read");
}

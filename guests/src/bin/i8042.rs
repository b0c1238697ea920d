//! The 8042 keyboard controller at 0x60/0x64 and its keyboard, driven as firmware and
//! Linux's i8042 and atkbd drivers drive them: flushing the output buffer, the command
//! byte read and written (with the keyboard interrupt off while the controller is
//! tested), the controller self-test (0xAA answers 0x55 and sets the system flag), the
//! keyboard interface test (0xAB answers 0x00), the status register's command/data bit,
//! the output port (reset line high), the keyboard's answers to reset (0xFA 0xAA),
//! identify with and without translation (0xFA 0xAB 0x41, 0xFA 0xAB 0x83), echo and an
//! unknown command (0xFE), and IRQ 1 through the I/O APIC: an edge per byte, one
//! interrupt per byte read, the bytes in order, the controller's own answers raising it
//! too, and none while the command byte disables the interrupt.
//!
//! QEMU, the reference this guest also runs on, leaves the status register's command/data
//! bit set whatever the last write was; that is printed as a note there.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use rt::apic::{self, spin_until, tsc_ticks_for_ms, Apic};
use rt::cell::Racy;
use rt::cpu::{cli, inb, outb};
use rt::irq::{count, ioapic_set_entry, reset_count, window, COUNT, ENTRY_MASKED};
use rt::{check, check_eq, check_or_qemu, println};

rt::entry!(main);

const DATA: u16 = 0x60;
const STATUS: u16 = 0x64;
const COMMAND: u16 = 0x64;

const STATUS_OBF: u8 = 1 << 0;
const STATUS_IBF: u8 = 1 << 1;
const STATUS_SYS: u8 = 1 << 2;
const STATUS_CMD: u8 = 1 << 3;
const STATUS_AUX_OBF: u8 = 1 << 5;

const CTR_KBD_INT: u8 = 1 << 0;
const CTR_KBD_DISABLE: u8 = 1 << 4;
const CTR_AUX_DISABLE: u8 = 1 << 5;
const CTR_XLATE: u8 = 1 << 6;

const QEMU_CMD_BIT: &str = "QEMU's status register keeps the command/data bit set";

const KBD_PIN: u32 = 1;
const KBD_VECTOR: u8 = 0x51;

static APIC: AtomicU64 = AtomicU64::new(0);
/// The bytes the interrupt handler read, one per interrupt.
static BYTES: Racy<[u8; 16]> = Racy::new([0; 16]);
/// Status seen by the handler before each read: OBF must be set.
static EMPTY_READS: AtomicU32 = AtomicU32::new(0);

fn wait_input_empty() {
    let ok = spin_until(tsc_ticks_for_ms(500), || inb(STATUS) & STATUS_IBF == 0);
    if !ok {
        println!("FAIL: the controller's input buffer stays full");
        rt::exit(rt::EXIT_FAIL);
    }
}

fn command(c: u8) {
    wait_input_empty();
    outb(COMMAND, c);
}

fn write_data(v: u8) {
    wait_input_empty();
    outb(DATA, v);
}

/// The next byte in the output buffer, if one arrives within `ms`.
fn read_data(ms: u64) -> Option<u8> {
    spin_until(tsc_ticks_for_ms(ms), || inb(STATUS) & STATUS_OBF != 0).then(|| inb(DATA))
}

/// A controller command with one answer.
fn query(c: u8) -> Option<u8> {
    command(c);
    read_data(500)
}

fn flush() -> u32 {
    let mut n = 0;
    while inb(STATUS) & STATUS_OBF != 0 && n < 32 {
        inb(DATA);
        n += 1;
    }
    n
}

fn read_ctr() -> u8 {
    query(0x20).unwrap_or_else(|| {
        println!("FAIL: no answer to 'read command byte'");
        rt::exit(rt::EXIT_FAIL)
    })
}

fn write_ctr(v: u8) {
    command(0x60);
    write_data(v);
}

/// Send `cmd` to the keyboard and collect its `n` answer bytes (polled).
fn keyboard(cmd: u8, n: usize) -> [u8; 4] {
    write_data(cmd);
    let mut out = [0u8; 4];
    for slot in out.iter_mut().take(n) {
        let status_ok = spin_until(tsc_ticks_for_ms(1000), || inb(STATUS) & STATUS_OBF != 0);
        if !status_ok {
            break;
        }
        rt::check_quiet!(
            inb(STATUS) & STATUS_AUX_OBF == 0,
            "the byte comes from the keyboard, not the AUX port"
        );
        *slot = inb(DATA);
    }
    out
}

fn local_apic() -> Apic {
    match APIC.load(Ordering::SeqCst) {
        0 => Apic::X2,
        base => Apic::X(base),
    }
}

fn handler(_: &mut rt::Frame) {
    if inb(STATUS) & STATUS_OBF == 0 {
        EMPTY_READS.fetch_add(1, Ordering::SeqCst);
    }
    let byte = inb(DATA);
    let n = COUNT.fetch_add(1, Ordering::SeqCst) as usize;
    // SAFETY: single CPU; main reads the array only with interrupts disabled.
    unsafe {
        if let Some(slot) = (*BYTES.get()).get_mut(n) {
            *slot = byte;
        }
    }
    local_apic().eoi();
}

fn taken(n: usize) -> [u8; 4] {
    let mut out = [0u8; 4];
    // SAFETY: called with interrupts disabled.
    let bytes = unsafe { &*BYTES.get() };
    out[..n.min(4)].copy_from_slice(&bytes[..n.min(4)]);
    out
}

fn main(_: &'static rt::multiboot::Info) {
    let flushed = flush();
    println!("flushed {} byte(s) left in the output buffer", flushed);
    let original = read_ctr();
    println!("command byte at entry: {:#04x}", original);
    // Keyboard interrupt off while the controller is tested (as Linux does).
    let quiet = (original & !CTR_KBD_INT) | CTR_AUX_DISABLE;
    write_ctr(quiet);
    check_or_qemu!(
        inb(STATUS) & STATUS_CMD == 0,
        QEMU_CMD_BIT,
        "status: the last write (the command byte's value) went to the data port"
    );
    check_eq!(
        read_ctr(),
        quiet,
        "the command byte reads back what was written"
    );
    command(0xAD);
    check_or_qemu!(
        inb(STATUS) & STATUS_CMD != 0,
        QEMU_CMD_BIT,
        "status: the last write went to the command port"
    );
    check_eq!(
        read_ctr() & CTR_KBD_DISABLE,
        CTR_KBD_DISABLE,
        "0xAD disables the keyboard port"
    );
    command(0xAE);
    check_eq!(read_ctr() & CTR_KBD_DISABLE, 0, "0xAE enables it again");

    check_eq!(query(0xAA), Some(0x55), "controller self-test: 0x55");
    check!(inb(STATUS) & STATUS_SYS != 0, "the system flag is set");
    check_eq!(query(0xAB), Some(0x00), "keyboard interface test: 0x00");
    let output_port = query(0xD0);
    check!(
        output_port.is_some_and(|p| p & 1 != 0),
        "output port {:x?}: the reset line is high",
        output_port
    );
    // Self-test may reset the command byte on a real controller: program it again.
    write_ctr(quiet | CTR_XLATE);

    check_eq!(
        keyboard(0xFF, 2)[..2],
        [0xFA, 0xAA],
        "keyboard reset: ACK, BAT passed"
    );
    check_eq!(
        keyboard(0xF2, 3)[..3],
        [0xFA, 0xAB, 0x41],
        "identify with translation: ACK, 0xAB 0x41"
    );
    write_ctr(quiet & !CTR_XLATE);
    check_eq!(
        keyboard(0xF2, 3)[..3],
        [0xFA, 0xAB, 0x83],
        "identify without translation: ACK, 0xAB 0x83"
    );
    write_ctr(quiet | CTR_XLATE);
    check_eq!(keyboard(0xEE, 1)[0], 0xEE, "echo: 0xEE");
    check_eq!(keyboard(0xF4, 1)[0], 0xFA, "enable scanning: ACK");
    check_eq!(flush(), 0, "nothing more in the output buffer");

    irq1(quiet | CTR_XLATE);

    write_ctr(original);
    println!("command byte restored to {:#04x}", original);
}

fn irq1(quiet: u8) {
    if !apic::cpuid_apic() {
        rt::skip!("no local APIC for IRQ 1 through the I/O APIC");
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
    rt::interrupts::set_handler(KBD_VECTOR, handler);
    let id = match apic {
        Apic::X(_) => apic.read(apic::reg::ID) >> 24,
        Apic::X2 => apic.read(apic::reg::ID),
    };
    ioapic_set_entry(KBD_PIN, u64::from(id) << 56 | u64::from(KBD_VECTOR));

    // The interrupt disabled in the command byte: an answer waits without IRQ 1.
    reset_count();
    write_data(0xEE);
    let without = window(1, 50, 0);
    check_eq!(
        without,
        0,
        "IRQ 1 disabled in the command byte: no interrupt"
    );
    check_eq!(
        read_data(500),
        Some(0xEE),
        "the echo waited in the output buffer"
    );

    // Enabled: identify's three bytes, one interrupt each, read by the handler.
    write_ctr(quiet | CTR_KBD_INT);
    reset_count();
    EMPTY_READS.store(0, Ordering::SeqCst);
    write_data(0xF2);
    let n = window(3, 2000, 50);
    check_eq!(n, 3, "identify: three interrupts, one per byte");
    check_eq!(
        taken(3)[..3],
        [0xFA, 0xAB, 0x41],
        "the handler read ACK, 0xAB, 0x41 in order"
    );
    check_eq!(
        EMPTY_READS.load(Ordering::SeqCst),
        0,
        "every interrupt found a byte waiting"
    );

    // Reset: ACK and BAT, two more edges.
    reset_count();
    write_data(0xFF);
    let n = window(2, 2000, 50);
    check_eq!(n, 2, "reset: two interrupts");
    check_eq!(
        taken(2)[..2],
        [0xFA, 0xAA],
        "the handler read ACK, BAT passed"
    );

    // A controller command's answer sits in the same output buffer and raises IRQ 1 too.
    reset_count();
    command(0xAB);
    let n = window(1, 2000, 50);
    check_eq!(n, 1, "the interface test's answer raises IRQ 1");
    check_eq!(taken(1)[0], 0x00, "and the handler read it");

    // Nothing else arrives.
    reset_count();
    let n = window(1, 100, 0);
    check_eq!(n, 0, "no interrupt without a byte");
    write_ctr(quiet);
    check_eq!(count(), 0, "interrupts off again");
    ioapic_set_entry(KBD_PIN, ENTRY_MASKED);
}

//! A polled 16550 UART (COM1 on a PC), with no interrupts.

use crate::port::{inb, outb};
use core::fmt;

/// The standard COM1 base port.
pub const COM1_BASE: u16 = 0x3f8;
/// The standard COM2 base port.
pub const COM2_BASE: u16 = 0x2f8;

/// Register offsets from the base port.
const DATA: u16 = 0;
const IER: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;

/// Line status: a byte is waiting.
const LSR_DATA: u8 = 0x01;
/// Line status: the transmit holding register is empty.
const LSR_THRE: u8 = 0x20;
/// Line status: the transmitter is idle (holding and shift registers empty).
const LSR_TEMT: u8 = 0x40;
/// What LSR reads with no UART behind the port (a floating bus).
const LSR_ABSENT: u8 = 0xff;

/// A 16550 at `base`, polled. Waits for the transmitter are bounded by `polls` reads of
/// LSR, so a missing or stuck UART never hangs the caller (a missing one reads 0xFF,
/// which says "empty", and the wait ends at once).
///
/// As a [`fmt::Write`] it sends `\n` as CR LF.
#[derive(Clone, Copy, Debug)]
pub struct Uart16550 {
    base: u16,
    polls: u32,
}

impl Uart16550 {
    /// The UART at `base`, waiting at most `polls` LSR reads for the transmitter.
    pub const fn new(base: u16, polls: u32) -> Self {
        Uart16550 { base, polls }
    }

    /// Program 115200 8N1 with FIFOs and no interrupts.
    pub fn init(&self) {
        let b = self.base;
        outb(b + IER, 0x00); // no interrupts
        outb(b + LCR, 0x80); // DLAB: the next two writes are the divisor
        outb(b + DATA, 0x01); // divisor 1: 115200 baud
        outb(b + IER, 0x00); // divisor high byte
        outb(b + LCR, 0x03); // 8N1, DLAB off
        outb(b + FCR, 0xC7); // FIFO on, cleared, 14-byte threshold
        outb(b + MCR, 0x03); // DTR | RTS
    }

    /// Write one byte, waiting (boundedly) for room in the transmitter.
    pub fn write_byte(&self, b: u8) {
        for _ in 0..self.polls {
            if inb(self.base + LSR) & LSR_THRE != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        outb(self.base + DATA, b);
    }

    /// Write bytes as they are (no line-ending translation).
    pub fn write_raw(&self, bytes: &[u8]) {
        for &b in bytes {
            self.write_byte(b);
        }
    }

    /// Whether a UART answers at the base port (a missing one's LSR reads 0xFF).
    pub fn present(&self) -> bool {
        inb(self.base + LSR) != LSR_ABSENT
    }

    /// Whether a received byte is waiting.
    pub fn input_ready(&self) -> bool {
        let lsr = inb(self.base + LSR);
        lsr != LSR_ABSENT && lsr & LSR_DATA != 0
    }

    /// The next received byte, if any.
    pub fn read_byte(&self) -> Option<u8> {
        self.input_ready().then(|| inb(self.base + DATA))
    }

    /// Wait (boundedly) until every byte left the transmitter, holding and shift
    /// registers both: a machine that powers off next may drop what is still in the FIFO.
    pub fn drain(&self) {
        for _ in 0..self.polls {
            if inb(self.base + LSR) & LSR_TEMT != 0 {
                return;
            }
            core::hint::spin_loop();
        }
    }
}

impl fmt::Write for Uart16550 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}

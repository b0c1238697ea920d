//! The host console: COM1, a polled 16550.

use crate::cpu::{inb, outb};
use core::fmt;

const COM1: u16 = 0x3f8;
/// Line status: a byte is waiting.
const LSR_DATA: u8 = 0x01;
/// Line status: the transmit holding register is empty.
const LSR_THRE: u8 = 0x20;
/// Line status: the transmitter is idle (holding and shift registers empty).
const LSR_TEMT: u8 = 0x40;
/// Polls of LSR before giving up on a byte (a missing UART reads 0xFF: "empty").
const POLLS: u32 = 1_000_000;

/// Program COM1 for 115200 8N1 with FIFOs and no interrupts.
pub fn init() {
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x80);
    outb(COM1, 0x01);
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);
    outb(COM1 + 2, 0xC7);
    outb(COM1 + 4, 0x03);
}

/// Write one byte, waiting (boundedly) for room in the transmitter.
pub fn write_byte(b: u8) {
    for _ in 0..POLLS {
        if inb(COM1 + 5) & LSR_THRE != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    outb(COM1, b);
}

/// Write bytes as they are (the guest's own line endings).
pub fn write_raw(bytes: &[u8]) {
    for &b in bytes {
        write_byte(b);
    }
}

/// The next received byte, if any.
pub fn read_byte() -> Option<u8> {
    let lsr = inb(COM1 + 5);
    // 0xFF: no UART at all.
    if lsr != 0xff && lsr & LSR_DATA != 0 {
        Some(inb(COM1))
    } else {
        None
    }
}

/// Whether a received byte is waiting.
pub fn input_ready() -> bool {
    let lsr = inb(COM1 + 5);
    lsr != 0xff && lsr & LSR_DATA != 0
}

/// Wait (boundedly) until every byte left the transmitter: Bochs drops what is still in
/// the FIFO when the machine powers off.
pub fn drain() {
    for _ in 0..POLLS {
        if inb(COM1 + 5) & LSR_TEMT != 0 {
            return;
        }
        core::hint::spin_loop();
    }
}

/// The image's own log lines, with `\n` sent as CR LF.
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                write_byte(b'\r');
            }
            write_byte(b);
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    // The serial writer never fails; a formatting error has nowhere else to go.
    let _ = fmt::Write::write_fmt(&mut Serial, args);
}

/// Print a line on the host console, prefixed `opsvisor-image: `.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::serial::_print(format_args!("opsvisor-image: {}\n", format_args!($($arg)*)))
    };
}

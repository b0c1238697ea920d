//! The host console: COM1, a polled 16550.

use core::fmt;
use opsvisor_bare::uart::{Uart16550, COM1_BASE};

/// COM1. A byte waits at most 1,000,000 LSR polls for the transmitter (a missing UART
/// reads 0xFF, "empty", and does not wait at all).
const COM1: Uart16550 = Uart16550::new(COM1_BASE, 1_000_000);

/// Program COM1 for 115200 8N1 with FIFOs and no interrupts.
pub fn init() {
    COM1.init();
}

/// Write bytes as they are (the guest's own line endings).
pub fn write_raw(bytes: &[u8]) {
    COM1.write_raw(bytes);
}

/// The next received byte, if any.
pub fn read_byte() -> Option<u8> {
    COM1.read_byte()
}

/// Whether a received byte is waiting.
pub fn input_ready() -> bool {
    COM1.input_ready()
}

/// Wait (boundedly) until every byte left the transmitter: Bochs drops what is still in
/// the FIFO when the machine powers off.
pub fn drain() {
    COM1.drain();
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    // The serial writer never fails (`\n` goes out as CR LF); a formatting error has
    // nowhere else to go.
    let _ = fmt::Write::write_fmt(&mut { COM1 }, args);
}

/// Print a line on the host console, prefixed `opsvisor-image: `.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::serial::_print(format_args!("opsvisor-image: {}\n", format_args!($($arg)*)))
    };
}

//! COM1, a polled 16550: the guests' console.

use core::fmt;
use opsvisor_bare::uart::{Uart16550, COM1_BASE};

/// COM1. A byte waits at most 100,000 LSR polls for the transmitter.
pub const COM1: Uart16550 = Uart16550::new(COM1_BASE, 100_000);

/// Program COM1 for 115200 8N1 with FIFOs and no interrupts.
pub fn init() {
    COM1.init();
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    // Serial never fails; a formatting error of the arguments has nothing to report to.
    let _ = fmt::Write::write_fmt(&mut { COM1 }, args);
}

/// Print to COM1 (`\n` goes out as CR LF).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::_print(format_args!($($arg)*)) };
}

/// Print a line to COM1.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

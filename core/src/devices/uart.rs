//! A 16550A UART (COM1 at 0x3F8), wired to the platform console.
//!
//! INTERFACE STUB — being implemented; signatures are fixed.

use crate::platform::Platform;

/// COM1's base port.
pub const COM1_BASE: u16 = 0x3f8;

/// A 16550A UART.
#[derive(Debug)]
pub struct Uart16550 {}

impl Uart16550 {
    /// A UART in its reset state.
    pub fn new() -> Uart16550 {
        todo!()
    }
    /// Read the register at `offset` (0..8) from the base port.
    pub fn read<P: Platform>(&mut self, offset: u8, console: &mut P) -> u8 {
        let _ = (offset, console);
        todo!()
    }
    /// Write the register at `offset` (0..8).
    pub fn write<P: Platform>(&mut self, offset: u8, value: u8, console: &mut P) {
        let _ = (offset, value, console);
        todo!()
    }
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

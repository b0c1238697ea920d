//! Port I/O, through the `x86_64` crate's `PortRead`/`PortWrite` (the IN and OUT
//! instructions of each width).
//!
//! The callers are kernels at CPL 0 that own the machine's devices, which is why these are
//! safe functions of a port number rather than the crate's `unsafe` `Port<T>` methods.
//! `#[inline]`: the callers build without LTO, and a port access is a single instruction
//! that should stay one at the call site.

use x86_64::instructions::port::{PortRead, PortWrite};

/// Read a byte from an I/O port.
#[inline]
pub fn inb(port: u16) -> u8 {
    // SAFETY: port input touches no memory the compiler knows of; the callers run at CPL 0
    // and own the machine's devices.
    unsafe { u8::read_from_port(port) }
}

/// Read a word from an I/O port.
#[inline]
pub fn inw(port: u16) -> u16 {
    // SAFETY: as for `inb`.
    unsafe { u16::read_from_port(port) }
}

/// Read a doubleword from an I/O port.
#[inline]
pub fn inl(port: u16) -> u32 {
    // SAFETY: as for `inb`.
    unsafe { u32::read_from_port(port) }
}

/// Write a byte to an I/O port.
#[inline]
pub fn outb(port: u16, v: u8) {
    // SAFETY: as for `inb`.
    unsafe { u8::write_to_port(port, v) }
}

/// Write a word to an I/O port.
#[inline]
pub fn outw(port: u16, v: u16) {
    // SAFETY: as for `inb`.
    unsafe { u16::write_to_port(port, v) }
}

/// Write a doubleword to an I/O port.
#[inline]
pub fn outl(port: u16, v: u32) {
    // SAFETY: as for `inb`.
    unsafe { u32::write_to_port(port, v) }
}

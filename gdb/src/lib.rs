//! GDB's remote serial protocol on an opsvisor guest, through core's [`X86Ops`]: what the
//! `opsvisor` program's stub on the emulator (`opsvisor run --gdb`) and the bare-metal
//! image's stub on VMX and SVM (COM2) share.
//!
//! - [`regs`]: a vCPU's registers in gdb's `i386:x86-64` layout with SSE (the general
//!   registers, RIP, EFLAGS, the segment selectors, the x87 stack, XMM0-15, MXCSR).
//! - [`memory`]: guest memory by virtual address, through core's page walker with the
//!   vCPU's CR0, CR3, CR4 and EFER.
//! - [`stub`]: the stub of a machine whose backend stops for a debugger through
//!   [`X86Ops::set_guest_debug`] (the hardware backends): software breakpoints as INT3
//!   written into guest memory under a #BP intercept, hardware breakpoints in DR0-DR3
//!   under a #DB intercept, single steps, continue, gdb's Ctrl-C, and the run's end, over
//!   any byte connection (a TCP socket, a serial port).
//!
//! `no_std` with `alloc`: the bare-metal image builds it.
//!
//! [`X86Ops`]: opsvisor_core::ops::X86Ops
//! [`X86Ops::set_guest_debug`]: opsvisor_core::ops::X86Ops::set_guest_debug

#![no_std]

extern crate alloc;

pub mod memory;
pub mod regs;
pub mod stub;

#[cfg(test)]
mod tests;

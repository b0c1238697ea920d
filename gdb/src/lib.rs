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

use gdbstub::common::Signal;
use opsvisor_core::vm::RunOutcome;

/// How gdb hears of the run's end, as a process's: `Ok(code)` for a program that exited
/// with that status (the debug exit's status, 0 for a power-off), `Err(signal)` for one
/// a signal ended (a triple fault as SIGSEGV, a guest halted for good as SIGSTOP, the
/// time or instruction limit as SIGALRM, a reset as SIGHUP, the console's quit as
/// SIGKILL, a backend failure as SIGILL).
pub fn process_end(end: &RunOutcome) -> Result<u8, Signal> {
    Err(match end {
        RunOutcome::DebugExit { status } => return Ok(*status as u8),
        RunOutcome::PowerOff => return Ok(0),
        RunOutcome::TripleFault { .. } => Signal::SIGSEGV,
        RunOutcome::HaltedForever => Signal::SIGSTOP,
        RunOutcome::InstructionLimit | RunOutcome::Timeout => Signal::SIGALRM,
        RunOutcome::Reset => Signal::SIGHUP,
        RunOutcome::Quit => Signal::SIGKILL,
        RunOutcome::Debug { .. } | RunOutcome::Failed(_) => Signal::SIGILL,
    })
}

#[cfg(test)]
mod tests;

//! Ending the run: report a status the emulator's harness can read, then power off.

use crate::cpu::halt_forever;
use crate::serial;
use opsvisor_bare::port::{outb, outl, outw};
use x86_64::instructions::interrupts::int3;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

/// QEMU's `isa-debug-exit` port: QEMU exits with status `(value << 1) | 1`.
const DEBUG_EXIT_PORT: u16 = 0xF4;
/// Bochs' shutdown port: the string `Shutdown` written to it ends the simulation.
const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

/// Drain the console, then power the machine off, trying in turn: QEMU's debug-exit
/// device (with `code`, so QEMU's exit status is `(code << 1) | 1`), Bochs' shutdown
/// port, the ACPI sleep-to-S5 ports where QEMU and Bochs' BIOS put the PM block, a reset
/// through the keyboard controller, and a triple fault. If all of that fails the CPU halts.
pub fn shutdown(code: u8) -> ! {
    serial::drain();
    outl(DEBUG_EXIT_PORT, u32::from(code));
    for &b in b"Shutdown" {
        outb(BOCHS_SHUTDOWN_PORT, b);
    }
    // PM1a control, SLP_TYP = 0 | SLP_EN: QEMU (PIIX4 and ICH9) at 0x604, Bochs at 0xB004.
    outw(0x604, 0x2000);
    outw(0xB004, 0x2000);
    // Keyboard controller: pulse the reset line (QEMU's -no-reboot turns it into an exit).
    outb(0x64, 0xFE);
    let empty = DescriptorTablePointer {
        limit: 0,
        base: VirtAddr::zero(),
    };
    // SAFETY: an empty IDT makes the INT3 a triple fault: the machine resets, which is
    // the point; nothing runs after it on this CPU.
    unsafe { lidt(&empty) };
    int3();
    halt_forever()
}

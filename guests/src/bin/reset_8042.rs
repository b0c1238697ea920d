//! A reset through the 8042 keyboard controller, as many kernels reboot: the output port
//! read with command 0xD0 has its reset line (bit 0) high, then command 0xFE pulses it
//! low. The run ends with the machine's reset (opsvisor: `RunOutcome::Reset`, QEMU with
//! `-no-reboot`: exit status 0); the guest still running afterwards is a FAIL.

#![no_std]
#![no_main]

use rt::apic::{spin_until, tsc_ticks_for_ms};
use rt::cpu::{inb, outb};
use rt::{check, println};

rt::entry!(main);

const DATA: u16 = 0x60;
const STATUS: u16 = 0x64;
const STATUS_OBF: u8 = 1 << 0;
const STATUS_IBF: u8 = 1 << 1;

fn command(c: u8) {
    let ready = spin_until(tsc_ticks_for_ms(500), || inb(STATUS) & STATUS_IBF == 0);
    rt::check_quiet!(ready, "the controller's input buffer empties");
    outb(STATUS, c);
}

fn main(_: &'static rt::multiboot::Info) {
    while inb(STATUS) & STATUS_OBF != 0 {
        inb(DATA);
    }
    command(0xD0);
    let answered = spin_until(tsc_ticks_for_ms(500), || inb(STATUS) & STATUS_OBF != 0);
    check!(answered, "the controller answers 'read output port'");
    let port = inb(DATA);
    check!(
        port & 1 != 0,
        "output port {:#04x}: the reset line is high",
        port
    );
    println!("resetting through the 8042 (command 0xFE pulses the reset line)");
    command(0xFE);
    rt::expect_gone("the reset through the 8042", 2000);
}

//! A reset through the reset control register at 0xCF9 (the PIIX's RCR, the FADT's reset
//! register), as Linux's `reboot=pci` does it: SYS_RST alone selects the kind of reset
//! and reads back without resetting, then SYS_RST | RST_CPU (6, the FADT's reset value)
//! resets the machine. The run ends with the machine's reset (opsvisor: `RunOutcome::Reset`,
//! QEMU with `-no-reboot`: exit status 0); the guest still running afterwards is a FAIL.

#![no_std]
#![no_main]

use rt::cpu::{inb, outb};
use rt::{check_eq, println};

rt::entry!(main);

const RESET_CONTROL: u16 = 0xCF9;
const SYS_RST: u8 = 1 << 1;
const RST_CPU: u8 = 1 << 2;

fn main(_: &'static rt::multiboot::Info) {
    let before = inb(RESET_CONTROL);
    println!("reset control register: {:#04x}", before);
    check_eq!(before & RST_CPU, 0, "RST_CPU reads 0");
    outb(RESET_CONTROL, SYS_RST);
    check_eq!(
        inb(RESET_CONTROL) & (SYS_RST | RST_CPU),
        SYS_RST,
        "SYS_RST alone is kept and does not reset"
    );
    println!("resetting through 0xCF9 (SYS_RST | RST_CPU)");
    outb(RESET_CONTROL, SYS_RST | RST_CPU);
    rt::expect_gone("the reset through 0xCF9", 2000);
}

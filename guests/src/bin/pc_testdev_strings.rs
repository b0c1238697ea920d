//! String instructions whose source and destination are both MMIO, in QEMU's pc-testdev
//! window at 0xFF000000 (kvm-unit-tests' `test_cmps` does the same): REPE CMPSB stopping
//! at a difference with its flags, REP MOVSB and REP MOVSQ, each with RCX, RSI and RDI
//! checked. A machine without the device skips the guest.

#![no_std]
#![no_main]

use core::arch::asm;
use rt::cpu::{inl, outl};
use rt::{check, check_eq};

rt::entry!(main);

const IOMEM: u64 = 0xff00_0000;

/// The window as memory.
fn at<T>(offset: u64) -> *mut T {
    (IOMEM + offset) as *mut T
}

fn main(_: &'static rt::multiboot::Info) {
    outl(0xe0, 0x1234_5678);
    if inl(0xe0) != 0x1234_5678 {
        rt::skip!(
            "no pc-testdev (port 0xE0 is not its scratch register: pass --device pc-testdev)"
        );
    }
    // SAFETY (all accesses below): the window is device memory inside the boot identity
    // map; nothing else lives there.
    unsafe {
        // Two 30-byte strings, equal except byte 20; REPE CMPSB from MMIO to MMIO.
        for i in 0..30u8 {
            core::ptr::write_volatile(at::<u8>(0x100 + u64::from(i)), i);
            core::ptr::write_volatile(
                at::<u8>(0x800 + u64::from(i)),
                if i == 20 { 0xee } else { i },
            );
        }
        let (mut rsi, mut rdi, mut rcx) = (IOMEM + 0x100, IOMEM + 0x800, 30u64);
        let flags: u64;
        asm!("cld", "repe cmpsb", "pushfq", "pop {f}",
             f = out(reg) flags, inout("rsi") rsi, inout("rdi") rdi, inout("rcx") rcx);
        check_eq!(
            rcx,
            9u64,
            "REPE CMPSB (MMIO to MMIO): RCX after the difference at byte 20"
        );
        check_eq!(
            (rsi - IOMEM, rdi - IOMEM),
            (0x115u64, 0x815u64),
            "REPE CMPSB: RSI and RDI past byte 20"
        );
        check!(
            flags & 0x40 == 0 && flags & 1 == 1,
            "REPE CMPSB: ZF clear, CF set (20 < 0xEE)"
        );
        // REP MOVSB of the 30 bytes, then REP MOVSQ of 2 qwords, MMIO to MMIO.
        let (mut rsi, mut rdi, mut rcx) = (IOMEM + 0x100, IOMEM + 0x1000, 30u64);
        asm!("cld", "rep movsb", inout("rsi") rsi, inout("rdi") rdi, inout("rcx") rcx);
        check_eq!(
            (rcx, rsi - IOMEM, rdi - IOMEM),
            (0u64, 0x11eu64, 0x101eu64),
            "REP MOVSB (MMIO to MMIO): RCX, RSI, RDI"
        );
        let copied =
            (0..30u8).all(|i| core::ptr::read_volatile(at::<u8>(0x1000 + u64::from(i))) == i);
        check!(copied, "REP MOVSB copied the 30 bytes");
        let (mut rsi, mut rdi, mut rcx) = (IOMEM + 0x100, IOMEM + 0x2000, 2u64);
        asm!("cld", "rep movsq", inout("rsi") rsi, inout("rdi") rdi, inout("rcx") rcx);
        check_eq!(
            (rcx, rsi - IOMEM, rdi - IOMEM),
            (0u64, 0x110u64, 0x2010u64),
            "REP MOVSQ (MMIO to MMIO): RCX, RSI, RDI"
        );
        check_eq!(
            core::ptr::read_volatile(at::<u64>(0x2008)),
            0x0f0e_0d0c_0b0a_0908u64,
            "REP MOVSQ copied the second qword"
        );
    }
}

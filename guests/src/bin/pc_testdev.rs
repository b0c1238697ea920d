//! QEMU's ISA test device (`-device pc-testdev`), as test kernels written for QEMU use it:
//! the scratch register at port 0xE0 and its byte view at 0xE8, an interrupt line driven
//! through port 0x2000 + line and taken through the I/O APIC (edge-triggered: one
//! interrupt per rising edge; level-triggered: the handler lowers the line before its
//! EOI, and exactly one interrupt arrives), and the 64 KiB MMIO window at 0xFF000000:
//! plain loads and stores of every width, aligned or not (an unaligned port access is
//! refused and reads 0, as QEMU's memory core refuses it), and string instructions whose source and
//! destination are both in the window (REPE CMPSB stopping at a difference, REP MOVSB,
//! REP MOVSQ).
//!
//! A machine without the device (its ports read as all ones) skips the guest.

#![no_std]
#![no_main]

use core::sync::atomic::Ordering;
use rt::apic::{self, SharedApic};
use rt::check_eq;
use rt::cpu::{inb, inl, inw, outb, outl};
use rt::irq::{
    count, ioapic_entry, ioapic_set_entry, reset_count, window, COUNT, ENTRY_LEVEL, ENTRY_MASKED,
};

rt::entry!(main);

const SCRATCH: u16 = 0xe0;
const SCRATCH_BYTES: u16 = 0xe8;
const FLUSH: u16 = 0xe4;
const IRQ_LINES: u16 = 0x2000;
const IOMEM: u64 = 0xff00_0000;
/// The line (and I/O APIC pin) the interrupts take.
const LINE: u16 = 10;
const VECTOR: u8 = 0x4a;

static APIC: SharedApic = SharedApic::new();

fn handler(_: &mut rt::Frame) {
    COUNT.fetch_add(1, Ordering::SeqCst);
    // A level-triggered line would interrupt again after the EOI: lower it first.
    outb(IRQ_LINES + LINE, 0);
    APIC.get().eoi();
}

fn main(_: &'static rt::multiboot::Info) {
    outl(SCRATCH, 0x1234_5678);
    if inl(SCRATCH) != 0x1234_5678 {
        rt::skip!(
            "no pc-testdev (port 0xE0 is not its scratch register: pass --device pc-testdev)"
        );
    }
    scratch();
    let apic = apic::enable_for_irq(&APIC, "pc-testdev's interrupt line");
    rt::interrupts::set_handler(VECTOR, handler);
    interrupts(apic.id());
    iomem();
}

fn scratch() {
    check_eq!(inb(SCRATCH), 0x78u8, "scratch byte 0 at 0xE0");
    check_eq!(inb(SCRATCH + 3), 0x12u8, "scratch byte 3 at 0xE3");
    check_eq!(
        inw(SCRATCH + 2),
        0x1234u16,
        "a word at 0xE2 is bytes 2 and 3"
    );
    check_eq!(
        inw(SCRATCH + 1),
        0u16,
        "an unaligned word at 0xE1 is refused: 0"
    );
    outb(SCRATCH + 2, 0xab);
    check_eq!(
        inl(SCRATCH),
        0x12ab_5678u32,
        "a byte write at 0xE2 replaces byte 2 only"
    );
    check_eq!(
        inl(SCRATCH_BYTES),
        0x12ab_5678u32,
        "0xE8 is the same register"
    );
    outl(SCRATCH_BYTES, 0xcafe_f00d);
    check_eq!(
        inl(SCRATCH),
        0xcafe_f00du32,
        "written through 0xE8, read through 0xE0"
    );
    outl(FLUSH, 0x10_0000);
    check_eq!(inl(FLUSH), 0u32, "the flush port reads 0");
    check_eq!(
        inl(SCRATCH),
        0xcafe_f00du32,
        "a flush leaves the scratch register"
    );
}

fn interrupts(apic_id: u32) {
    let pin = u32::from(LINE);
    let dest = u64::from(apic_id) << 56;
    let before = ioapic_entry(pin);
    // Edge-triggered: a rising edge interrupts once; holding the line high does not
    // interrupt again (the handler lowers it, so raise it twice for two edges).
    ioapic_set_entry(pin, dest | u64::from(VECTOR));
    reset_count();
    outb(IRQ_LINES + LINE, 1);
    check_eq!(
        window(1, 100, 20),
        1u32,
        "edge: a write of 1 to port 0x200A interrupts once"
    );
    outb(IRQ_LINES + LINE, 1);
    check_eq!(
        window(2, 100, 20),
        2u32,
        "edge: a second rising edge interrupts again"
    );
    // Level-triggered with the handler lowering the line before the EOI: one interrupt.
    ioapic_set_entry(pin, dest | ENTRY_LEVEL | u64::from(VECTOR));
    reset_count();
    outb(IRQ_LINES + LINE, 0x80);
    check_eq!(
        window(1, 100, 20),
        1u32,
        "level: the line lowered by the handler interrupts once"
    );
    // A pulse on a masked pin is not delivered, then or when interrupts open.
    ioapic_set_entry(pin, dest | ENTRY_MASKED | ENTRY_LEVEL | u64::from(VECTOR));
    reset_count();
    outb(IRQ_LINES + LINE, 1);
    outb(IRQ_LINES + LINE, 0);
    check_eq!(window(1, 20, 20), 0u32, "masked pin: nothing delivered");
    ioapic_set_entry(pin, before);
    check_eq!(count(), 0u32, "no stray interrupt");
}

/// The window as memory.
fn at<T>(offset: u64) -> *mut T {
    (IOMEM + offset) as *mut T
}

fn iomem() {
    // SAFETY (all accesses below): the window is device memory inside the boot identity
    // map; nothing else lives there.
    unsafe {
        core::ptr::write_volatile(at::<u64>(0x10), 0x0807_0605_0403_0201);
        check_eq!(
            core::ptr::read_volatile(at::<u8>(0x10)),
            0x01u8,
            "iomem: byte"
        );
        check_eq!(
            core::ptr::read_volatile(at::<u16>(0x12)),
            0x0403u16,
            "iomem: word"
        );
        check_eq!(
            core::ptr::read_volatile(at::<u32>(0x14)),
            0x0807_0605u32,
            "iomem: dword"
        );
        check_eq!(
            core::ptr::read_volatile(at::<u64>(0x10)),
            0x0807_0605_0403_0201u64,
            "iomem: qword"
        );
        core::ptr::write_volatile(at::<u8>(0x11), 0xee);
        check_eq!(
            core::ptr::read_volatile(at::<u32>(0x10)),
            0x0403_ee01u32,
            "iomem: a byte store changes one byte"
        );
        check_eq!(
            core::ptr::read_volatile(at::<u16>(0x11)),
            0x03eeu16,
            "iomem: an unaligned word at 0x11 is bytes 0x11 and 0x12"
        );
        core::ptr::write_volatile(at::<u32>(0xfffc), 0xdead_beef);
        check_eq!(
            core::ptr::read_volatile(at::<u32>(0xfffc)),
            0xdead_beefu32,
            "iomem: the last dword of the 64 KiB"
        );
    }
}

//! PCI configuration mechanism #1 at 0xCF8/0xCFC as operating systems drive it: Linux's
//! `pci_check_type1` probe (CONFIG_ADDRESS reads back, a byte write to 0xCFB is not a
//! configuration access), the host bridge at 00:00.0 (vendor, device, revision, class
//! 06/00/00, header type 0, no BARs, no expansion ROM, no capabilities, no interrupt
//! pin), absent devices reading all ones and ignoring writes, CONFIG_DATA read as bytes,
//! words and a dword at every offset it allows, the enable bit, word and byte writes at
//! 0xCF8 leaving CONFIG_ADDRESS alone, and the host bridge's read-only and writable bits
//! as opsvisor's 440FX model documents them (command: parity-error response and SERR#
//! enable writable, memory and bus master hardwired on; status ignoring writes; latency
//! timer bits 7-3; device-specific registers from 0x40 holding what is written).
//!
//! QEMU's `pc` machine, the reference this guest also runs on, has more devices on bus 0
//! (the PIIX3 at 00:01, a VGA card) and keeps the command register's and device-specific
//! registers' write masks of its own; those differences are printed as notes there.

#![no_std]
#![no_main]

use rt::cpu::{inb, inl, inw, outb, outl, outw, qemu_devices};
use rt::{check_eq, check_or_qemu, println};

rt::entry!(main);

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;
const ENABLE: u32 = 1 << 31;
const QEMU_MASKS: &str = "QEMU's i440FX has write masks of its own";

fn address(bus: u32, dev: u32, func: u32, reg: u32) -> u32 {
    ENABLE | bus << 16 | dev << 11 | func << 8 | (reg & 0xFC)
}

/// Linux's `pci_conf1_read`.
fn read(bus: u32, dev: u32, func: u32, reg: u32, len: u8) -> u32 {
    outl(CONFIG_ADDRESS, address(bus, dev, func, reg));
    match len {
        1 => u32::from(inb(CONFIG_DATA + (reg & 3) as u16)),
        2 => u32::from(inw(CONFIG_DATA + (reg & 2) as u16)),
        _ => inl(CONFIG_DATA),
    }
}

/// Linux's `pci_conf1_write`.
fn write(bus: u32, dev: u32, func: u32, reg: u32, len: u8, value: u32) {
    outl(CONFIG_ADDRESS, address(bus, dev, func, reg));
    match len {
        1 => outb(CONFIG_DATA + (reg & 3) as u16, value as u8),
        2 => outw(CONFIG_DATA + (reg & 2) as u16, value as u16),
        _ => outl(CONFIG_DATA, value),
    }
}

fn host(reg: u32, len: u8) -> u32 {
    read(0, 0, 0, reg, len)
}

fn main(_: &'static rt::multiboot::Info) {
    probe();
    host_bridge();
    absent();
    data_widths();
    address_register();
    bridge_registers();
}

fn probe() {
    // Linux's pci_check_type1: a byte write to 0xCFB, then CONFIG_ADDRESS must keep a
    // dword written to it.
    let saved = inl(CONFIG_ADDRESS);
    outb(0xCFB, 0x01);
    outl(CONFIG_ADDRESS, ENABLE);
    let back = inl(CONFIG_ADDRESS);
    outl(CONFIG_ADDRESS, saved);
    check_eq!(back, ENABLE, "CONFIG_ADDRESS keeps a dword written to it");
    outl(CONFIG_ADDRESS, 0x8000_1234);
    check_eq!(
        inl(CONFIG_ADDRESS),
        0x8000_1234,
        "CONFIG_ADDRESS reads back bus/device/function/register"
    );
}

fn host_bridge() {
    let id = host(0x00, 4);
    println!("00:00.0: {:04x}:{:04x}", id & 0xFFFF, id >> 16);
    check_eq!(id, 0x1237_8086, "00:00.0 is an Intel 440FX host bridge");
    let class = host(0x08, 4);
    check_eq!(
        class >> 8,
        0x06_00_00,
        "class 06 (bridge) 00 (host) interface 00"
    );
    check_eq!(class & 0xFF, 0x02, "revision 02");
    check_eq!(host(0x0E, 1), 0x00, "header type 0, a single function");
    check_eq!(
        host(0x0A, 2),
        0x0600,
        "Linux's sanity check: class word 0x0600"
    );
    for bar in (0x10..=0x24).step_by(4) {
        check_eq!(host(bar, 4), 0, "no BAR at {:#x}", bar);
    }
    check_eq!(host(0x30, 4), 0, "no expansion ROM");
    check_eq!(host(0x06, 2) & (1 << 4), 0, "status: no capability list");
    check_eq!(host(0x3D, 1), 0, "no interrupt pin");
    // Functions 1-7 of device 0 do not exist.
    for func in 1..8 {
        check_eq!(read(0, 0, func, 0, 4), 0xFFFF_FFFF, "00:00.{} absent", func);
    }
}

fn absent() {
    check_eq!(
        read(0, 0x1F, 0, 0, 4),
        0xFFFF_FFFF,
        "00:1f.0 reads all ones"
    );
    check_eq!(
        read(0, 0x1F, 0, 0x0E, 1),
        0xFF,
        "00:1f.0 header type byte: 0xff"
    );
    check_eq!(
        read(1, 0, 0, 0, 4),
        0xFFFF_FFFF,
        "bus 1 (no bridge to it) reads all ones"
    );
    check_eq!(
        read(0xFF, 0x1F, 7, 0xFC, 2),
        0xFFFF,
        "ff:1f.7 reads all ones"
    );
    write(0, 0x1F, 0, 0x04, 2, 0x0007);
    check_eq!(
        read(0, 0x1F, 0, 0x04, 2),
        0xFFFF,
        "a write to an absent device is ignored"
    );
    // Bus 0: the devices there, by vendor ID.
    let mut devices = 0;
    for dev in 0..32 {
        if read(0, dev, 0, 0, 2) != 0xFFFF {
            devices += 1;
        }
    }
    check_or_qemu!(
        devices == 1,
        "QEMU's pc machine has the PIIX3 and a VGA card on bus 0",
        "bus 0 holds only the host bridge ({} devices)",
        devices
    );
}

fn data_widths() {
    outl(CONFIG_ADDRESS, address(0, 0, 0, 0));
    let bytes = [
        inb(CONFIG_DATA),
        inb(CONFIG_DATA + 1),
        inb(CONFIG_DATA + 2),
        inb(CONFIG_DATA + 3),
    ];
    check_eq!(bytes, [0x86, 0x80, 0x37, 0x12], "byte reads at 0xCFC-0xCFF");
    let words = [inw(CONFIG_DATA), inw(CONFIG_DATA + 2)];
    check_eq!(words, [0x8086, 0x1237], "word reads at 0xCFC and 0xCFE");
    // A word at 0xCFD: byte enables 1 and 2 of the dword, valid on the PCI bus.
    let middle = inw(CONFIG_DATA + 1);
    check_or_qemu!(
        middle == 0x3780,
        "QEMU reads a word at 0xCFD as 0",
        "a word read at 0xCFD: bytes 1 and 2 ({:#x})",
        middle
    );
    check_eq!(inl(CONFIG_DATA), 0x1237_8086, "a dword read at 0xCFC");
    // The address's low two bits do not select a byte: the port offset does.
    outl(CONFIG_ADDRESS, address(0, 0, 0, 0) | 2);
    let (back, data) = (inl(CONFIG_ADDRESS), inl(CONFIG_DATA));
    check_or_qemu!(
        back == ENABLE && data == 0x1237_8086,
        "QEMU keeps CONFIG_ADDRESS bits 1-0 and adds them to the register",
        "CONFIG_ADDRESS bits 1-0 read as 0 and select nothing ({:#x}, {:#x})",
        back,
        data
    );
    // The enable bit: without it, CONFIG_DATA is not a configuration access.
    outl(CONFIG_ADDRESS, address(0, 0, 0, 0) & !ENABLE);
    check_eq!(
        inl(CONFIG_DATA),
        0xFFFF_FFFF,
        "enable bit clear: CONFIG_DATA reads all ones"
    );
    // Writes through the data port's bytes: SERR# enable is bit 0 of offset 0x05, which
    // a byte write at 0xCFD reaches (and only it).
    let command = host(0x04, 2);
    write(0, 0, 0, 0x05, 1, 0x01);
    let set = host(0x04, 4);
    write(0, 0, 0, 0x05, 1, 0x00);
    let cleared = host(0x04, 4);
    write(0, 0, 0, 0x04, 2, command);
    check_eq!(
        (set & 0x0100, cleared & 0x0100),
        (0x0100, 0),
        "a byte write at 0xCFD reaches offset 0x05 (SERR# enable)"
    );
    check_eq!(
        set & 0xFFFF_00FF,
        cleared & 0xFFFF_00FF,
        "and leaves the dword's other bytes alone"
    );
}

fn address_register() {
    outl(CONFIG_ADDRESS, 0x8000_0000);
    outw(CONFIG_ADDRESS, 0x1234);
    outw(CONFIG_ADDRESS + 2, 0x5678);
    outb(CONFIG_ADDRESS, 0x12);
    outb(CONFIG_ADDRESS + 3, 0x01);
    check_eq!(
        inl(CONFIG_ADDRESS),
        0x8000_0000,
        "word and byte writes at 0xCF8-0xCFB leave CONFIG_ADDRESS alone"
    );
    check_eq!(
        inl(CONFIG_DATA),
        0x1237_8086,
        "and it still selects 00:00.0"
    );
}

fn bridge_registers() {
    // Identification, class and header type ignore writes.
    write(0, 0, 0, 0x00, 4, 0);
    write(0, 0, 0, 0x08, 4, 0);
    write(0, 0, 0, 0x0E, 1, 0x80);
    check_eq!(
        host(0x00, 4),
        0x1237_8086,
        "vendor and device IDs are read-only"
    );
    check_eq!(
        host(0x08, 4),
        0x0600_0002,
        "class and revision are read-only"
    );
    check_eq!(host(0x0E, 1), 0, "header type is read-only");
    // BAR sizing finds nothing.
    write(0, 0, 0, 0x10, 4, 0xFFFF_FFFF);
    check_eq!(host(0x10, 4), 0, "BAR 0 sizing: no BAR");

    let qemu = qemu_devices();
    // Command: parity-error response (bit 6) and SERR# (bit 8) are writable; memory and
    // bus master (bits 1, 2) are hardwired on in the 440FX; I/O space (bit 0) stays off.
    let command = host(0x04, 2);
    write(0, 0, 0, 0x04, 2, 0xFFFF);
    let all = host(0x04, 2);
    write(0, 0, 0, 0x04, 2, 0);
    let none = host(0x04, 2);
    write(0, 0, 0, 0x05, 1, 0x01);
    let serr = host(0x04, 2);
    write(0, 0, 0, 0x04, 2, command);
    println!(
        "command {:#06x}: all ones -> {:#06x}, zero -> {:#06x}, byte 0x05 = 1 -> {:#06x}",
        command, all, none, serr
    );
    check_or_qemu!(
        all == 0x0146,
        QEMU_MASKS,
        "command: all ones written reads 0x0146"
    );
    check_or_qemu!(
        none == 0x0006,
        QEMU_MASKS,
        "command: memory and bus master stay on"
    );
    check_or_qemu!(
        serr & 0x0100 != 0 && serr & 0x00FF == none & 0x00FF,
        QEMU_MASKS,
        "command: a byte write to 0x05 sets SERR# enable only"
    );
    check_eq!(host(0x04, 2), command, "command restored");

    // Status: the error bits are write-one-to-clear and none is set.
    let status = host(0x06, 2);
    write(0, 0, 0, 0x06, 2, 0xFFFF);
    check_eq!(
        host(0x06, 2),
        status & !0xF900,
        "status: writing ones clears no error bit that was set"
    );

    // Latency timer: bits 7-3.
    let saved = host(0x0C, 4);
    write(0, 0, 0, 0x0D, 1, 0xFF);
    let latency = (host(0x0C, 4) >> 8) & 0xFF;
    write(0, 0, 0, 0x0C, 4, saved);
    check_or_qemu!(
        latency == 0xF8,
        QEMU_MASKS,
        "latency timer: bits 7-3 writable ({:#x})",
        latency
    );

    // Device-specific registers from 0x40 hold what is written (0xF0 is unused by the
    // 440FX; the PAM and SMRAM registers, which move memory on a real chipset, are left
    // alone).
    if qemu {
        println!(
            "note: {}: device-specific register 0xF0 not written",
            QEMU_MASKS
        );
    } else {
        let saved = host(0xF0, 4);
        write(0, 0, 0, 0xF0, 4, 0xDEAD_BEEF);
        let dword = host(0xF0, 4);
        write(0, 0, 0, 0xF2, 1, 0x5A);
        let byte = host(0xF0, 4);
        write(0, 0, 0, 0xF0, 4, saved);
        check_eq!(
            dword,
            0xDEAD_BEEF,
            "device-specific 0xF0 holds a dword written"
        );
        check_eq!(
            byte,
            0xDE5A_BEEF,
            "a byte write at 0xF2 changes only its byte"
        );
    }
}

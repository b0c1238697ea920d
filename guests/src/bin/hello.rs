//! Boots through multiboot, checks the information the loader passed, prints a greeting.

#![no_std]
#![no_main]

use rt::multiboot::{Info, FLAG_CMDLINE, FLAG_MEM, FLAG_MMAP};
use rt::{check, println};
use x86_64::registers::control::Cr0Flags;
use x86_64::registers::model_specific::EferFlags;

/// IA32_EFER.
const EFER: u32 = 0xC000_0080;

rt::entry!(main);

fn main(info: &'static Info) {
    println!("hello from opsvisor guest");
    println!("multiboot flags {:#x}", info.flags);
    check!(
        Cr0Flags::from_bits_retain(rt::cpu::cr0())
            .contains(Cr0Flags::PAGING | Cr0Flags::PROTECTED_MODE_ENABLE),
        "long mode reached: paging and protection on"
    );
    check!(
        EferFlags::from_bits_retain(rt::cpu::rdmsr(EFER)).contains(EferFlags::LONG_MODE_ACTIVE),
        "EFER.LMA set"
    );
    check!(info.flags & FLAG_MEM != 0, "memory sizes present");
    println!(
        "mem_lower {} KiB, mem_upper {} KiB",
        info.mem_lower, info.mem_upper
    );
    // -m 128 and up: at least 16 MiB above 1 MiB is a safe floor for any corpus run.
    check!(info.mem_upper >= 16 * 1024, "mem_upper >= 16 MiB");
    check!(
        info.mem_lower > 0 && info.mem_lower <= 640,
        "mem_lower within 640 KiB"
    );
    check!(info.flags & FLAG_CMDLINE != 0, "command line present");
    let cmdline = info.cmdline().unwrap_or("<unreadable>");
    println!("cmdline: {}", cmdline);
    check!(info.flags & FLAG_MMAP != 0, "memory map present");
    let mut ram = 0u64;
    let mut ram_at_1m = false;
    let image = hello as *const () as usize as u64;
    let n = info.for_each_mmap(|e| {
        println!(
            "  mmap {:#012x}..{:#012x} type {}",
            e.base,
            e.base.saturating_add(e.len),
            e.kind
        );
        if e.kind == 1 {
            ram = ram.saturating_add(e.len);
            if e.base <= image && image < e.base.saturating_add(e.len) {
                ram_at_1m = true;
            }
        }
    });
    check!(n > 0, "memory map has {} entries", n);
    check!(ram_at_1m, "the image at {:#x} lies in available RAM", image);
    let upper_bytes = u64::from(info.mem_upper) * 1024;
    check!(
        ram >= upper_bytes,
        "available RAM in the map ({:#x}) covers mem_upper ({:#x})",
        ram,
        upper_bytes
    );
}

fn hello() {}

//! The multiboot loader on arbitrary images, command lines and modules: every input must
//! load or be refused with an error, without a panic, without touching host memory
//! outside the guest's (ASan), and without allocating in proportion to a field of the
//! image (libFuzzer's -rss_limit_mb / -malloc_limit_mb, see scripts/fuzz.sh). A loaded
//! kernel's entry state must point where the loader says it put things.
//!
//! Input: byte 0 picks the guest RAM (2 or 4 MiB, with or without a second region of
//! 1 MiB above 4 GiB) and the number of modules (0..3); then, separated by the bytes
//! "\n--\n", the kernel image, the command line and each module's bytes. A header-less
//! input gets a valid multiboot header written at a position byte 1 picks, so most
//! inputs reach the image and module paths instead of stopping at "no header".
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsvisor_core::loader::multiboot::{
    find_header, load_multiboot, BOOT_MAGIC, HEADER_MAGIC, HEADER_SEARCH_LIMIT,
};
use opsvisor_core::loader::Module;
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::Gpr;

fn split<'a>(data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(sep.len()).position(|w| w == sep) {
        parts.push(&rest[..i]);
        rest = &rest[i + sep.len()..];
    }
    parts.push(rest);
    parts
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let ram = 2u64 << (shape & 1);
    let high = shape & 4 != 0;
    let module_count = usize::from(shape >> 3 & 3);
    let parts = split(rest, b"\n--\n");
    let mut image = parts[0].to_vec();
    if find_header(&image).is_err() && image.len() >= 16 {
        // A valid header (flags from the image) at a 4-aligned offset the image picks.
        let limit = image.len().min(HEADER_SEARCH_LIMIT) - 12;
        let at = (usize::from(image[0]) * 4) % (limit + 1) & !3;
        let flags = u32::from_le_bytes([image[1], image[2], image[3], image[4]]) & 0x0001_0007;
        let checksum = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags);
        image[at..at + 4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        image[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        image[at + 8..at + 12].copy_from_slice(&checksum.to_le_bytes());
    }
    let cmdline = parts.get(1).copied().unwrap_or(b"");
    let modules: Vec<Module<'_>> = parts
        .iter()
        .skip(2)
        .take(module_count)
        .enumerate()
        .map(|(i, data)| Module {
            cmdline: if i % 2 == 0 { b"mod arg" } else { cmdline },
            data,
        })
        .collect();
    let Ok(mut mem) = GuestMemory::with_ram(ram << 20) else {
        return;
    };
    if high && mem.add_ram(1 << 32, 1 << 20).is_err() {
        return;
    }
    if let Ok(state) = load_multiboot(&mut mem, &image, cmdline, &modules) {
        assert_eq!(state.regs.gpr[Gpr::Rax as usize], u64::from(BOOT_MAGIC));
        // The information structure the loader points EBX at is in guest RAM.
        let info = state.regs.gpr[Gpr::Rbx as usize];
        assert!(mem.is_ram_range(info, 0x58), "info at {info:#x}");
        assert!(state.regs.rip < 1 << 32);
    }
});

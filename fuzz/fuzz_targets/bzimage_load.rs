//! Arbitrary bytes as a Linux bzImage: the boot-protocol loader must never panic, never
//! read past the file (ASan and the slice bounds checks), never allocate beyond what the
//! file and guest RAM account for (`-rss_limit_mb`), and either refuse the image with
//! guest memory untouched or load it with the entry point and the zero page in RAM.
//!
//! Input: byte 0 picks guest RAM (2..=9 MiB), bytes 1-2 the initrd's length (0 = none),
//! byte 3 the command line's length; the rest is the image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsvisor_core::loader::bzimage::load_bzimage;
use opsvisor_core::loader::linux::{LinuxBoot, BOOT_PARAMS_ADDR};
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::Gpr;
use std::cell::RefCell;

/// A zeroed 64 KiB block to compare guest RAM with.
static ZERO: [u8; 1 << 16] = [0; 1 << 16];

/// Whether guest RAM is still all zero. Slice comparison is a `memcmp`, which ASan checks
/// once per call rather than per byte.
fn untouched(mem: &GuestMemory) -> bool {
    mem.regions()
        .iter()
        .all(|r| r.bytes().chunks(ZERO.len()).all(|c| c == &ZERO[..c.len()]))
}

thread_local! {
    /// Guest RAM of each size the input can pick, kept zeroed between inputs: allocating
    /// and faulting in megabytes per input would cost more than the loader.
    static RAM: RefCell<Vec<GuestMemory>> = RefCell::new(
        (0..8u64)
            .map(|i| GuestMemory::with_ram((2 + i) << 20).expect("guest RAM"))
            .collect(),
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((params, image)) = data.split_first_chunk::<4>() else {
        return;
    };
    let pick = usize::from(params[0] % 8);
    let ram = (2 + pick as u64) << 20;
    let initrd = vec![0x5a; usize::from(u16::from_le_bytes([params[1], params[2]]))];
    let cmdline = vec![b'x'; usize::from(params[3])];
    RAM.with_borrow_mut(|mems| run(&mut mems[pick], ram, image, &initrd, &cmdline));
});

fn run(mem: &mut GuestMemory, ram: u64, image: &[u8], initrd: &[u8], cmdline: &[u8]) {
    let boot = LinuxBoot {
        cmdline,
        initrd: (!initrd.is_empty()).then_some(initrd),
        rsdp_addr: Some(0xf_0000),
    };
    match load_bzimage(mem, image, &boot) {
        Ok(state) => {
            assert!(
                state.regs.rip < ram,
                "entry {:#x} outside RAM",
                state.regs.rip
            );
            let zero_page = state.regs.gpr[Gpr::Rsi as usize];
            assert_eq!(zero_page, BOOT_PARAMS_ADDR);
            // The header copy carries the loader's marks.
            assert_eq!(mem.read_u8(zero_page + 0x210), Ok(0xff));
            // Zeroed again for the next input that picks this size.
            mem.zero_range(0, ram).expect("guest RAM");
        }
        Err(e) => assert!(untouched(mem), "refused ({e}) after writing guest memory"),
    }
}

//! Arbitrary bytes as a Linux bzImage: the boot-protocol loader must never panic, never
//! read past the file (ASan and the slice bounds checks), never allocate beyond what the
//! file and guest RAM account for (`-rss_limit_mb`), and either refuse the image with
//! guest memory untouched or load it with the entry point and the zero page in RAM.
//!
//! Input: as every Linux loader target's (`linux_loader.rs`).
#![no_main]

mod linux_loader;

use libfuzzer_sys::fuzz_target;
use opsvisor_core::loader::bzimage::load_bzimage;
use opsvisor_core::loader::linux::BOOT_PARAMS_ADDR;
use opsvisor_core::ops::Gpr;

fuzz_target!(|data: &[u8]| {
    linux_loader::fuzz_one(data, Some(0xf_0000), load_bzimage, |mem, state| {
        let zero_page = state.regs.gpr[Gpr::Rsi as usize];
        assert_eq!(zero_page, BOOT_PARAMS_ADDR);
        // The header copy carries the loader's marks.
        assert_eq!(mem.read_u8(zero_page + 0x210), Ok(0xff));
    });
});

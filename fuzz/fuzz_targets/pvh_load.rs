//! Arbitrary bytes as an ELF kernel with a PVH entry note: the PVH loader (over the ELF
//! parser it shares with multiboot, section notes included) must never panic, never read
//! past the file, never allocate beyond what the file and guest RAM account for
//! (`-rss_limit_mb`), and either refuse the image with guest memory untouched or load it
//! with the entry point inside a loaded segment and `hvm_start_info` in place.
//!
//! Input: as every Linux loader target's (`linux_loader.rs`).
#![no_main]

mod linux_loader;

use libfuzzer_sys::fuzz_target;
use opsvisor_core::loader::linux::BOOT_PARAMS_ADDR;
use opsvisor_core::loader::pvh::{load_pvh, XEN_HVM_START_MAGIC};
use opsvisor_core::ops::Gpr;

fuzz_target!(|data: &[u8]| {
    linux_loader::fuzz_one(data, None, load_pvh, |mem, state| {
        let start_info = state.regs.gpr[Gpr::Rbx as usize];
        assert_eq!(start_info, BOOT_PARAMS_ADDR);
        assert_eq!(mem.read_u32(start_info), Ok(XEN_HVM_START_MAGIC));
    });
});

//! What the Linux loader targets (bzimage_load, pvh_load) share: the input's layout, guest
//! RAM kept between inputs, and the two outcomes a loader may have — the image refused
//! with guest memory untouched, or loaded with the entry point in RAM and the target's
//! own checks of what it placed.
//!
//! Input: byte 0 picks guest RAM (2..=9 MiB), bytes 1-2 the initrd's length (0 = none),
//! byte 3 the command line's length; the rest is the image.

use opsvisor_core::loader::linux::LinuxBoot;
use opsvisor_core::loader::{BootState, LoadError};
use opsvisor_core::mmu::memory::GuestMemory;
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

/// A loader of a Linux kernel format.
pub type Loader = fn(&mut GuestMemory, &[u8], &LinuxBoot<'_>) -> Result<BootState, LoadError>;

/// Run `load` on the input with the RSDP address `rsdp_addr`; `check` sees guest memory
/// and the boot state of an image that loaded.
pub fn fuzz_one(
    data: &[u8],
    rsdp_addr: Option<u64>,
    load: Loader,
    check: impl FnOnce(&GuestMemory, &BootState),
) {
    let Some((params, image)) = data.split_first_chunk::<4>() else {
        return;
    };
    let pick = usize::from(params[0] % 8);
    let ram = (2 + pick as u64) << 20;
    let initrd = vec![0x5a; usize::from(u16::from_le_bytes([params[1], params[2]]))];
    let cmdline = vec![b'x'; usize::from(params[3])];
    let boot = LinuxBoot {
        cmdline: &cmdline,
        initrd: (!initrd.is_empty()).then_some(&initrd[..]),
        rsdp_addr,
    };
    RAM.with_borrow_mut(|mems| {
        let mem = &mut mems[pick];
        match load(mem, image, &boot) {
            Ok(state) => {
                assert!(
                    state.regs.rip < ram,
                    "entry {:#x} outside RAM",
                    state.regs.rip
                );
                check(mem, &state);
                // Zeroed again for the next input that picks this size.
                mem.zero_range(0, ram).expect("guest RAM");
            }
            Err(e) => assert!(untouched(mem), "refused ({e}) after writing guest memory"),
        }
    });
}

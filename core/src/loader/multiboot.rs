//! Multiboot v1 loader.
//!
//! INTERFACE STUB — being implemented; signatures are fixed.

use super::{BootState, LoadError, Module};
use crate::mmu::memory::GuestMemory;

/// Whether `image` carries a multiboot v1 header in its first 8 KiB.
pub fn is_multiboot(image: &[u8]) -> bool {
    let _ = image;
    todo!()
}

/// Load a multiboot v1 kernel (ELF32, ELF64, or the a.out-kludge flat form) with its
/// command line and modules, build the info structure and memory map, and return the
/// 32-bit protected-mode entry state (EAX=0x2BADB002, EBX=info).
pub fn load_multiboot(mem: &mut GuestMemory, image: &[u8], cmdline: &str, modules: &[Module<'_>]) -> Result<BootState, LoadError> {
    let _ = (mem, image, cmdline, modules);
    todo!()
}

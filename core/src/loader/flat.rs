//! Flat binary loader.
//!
//! INTERFACE STUB — being implemented; signatures are fixed.

use super::{BootState, LoadError};
use crate::mmu::memory::GuestMemory;

/// Copy `image` to guest-physical `load_addr` and return `state` unchanged: the caller
/// chooses the mode and entry point. Fails if the image does not fit in RAM.
pub fn load_flat(mem: &mut GuestMemory, image: &[u8], load_addr: u64, state: BootState) -> Result<BootState, LoadError> {
    let _ = (mem, image, load_addr);
    Ok(state)
}

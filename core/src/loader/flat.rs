//! Flat binary loader, and the guest-RAM helpers the other loaders share.

use super::{BootState, LoadError};
use crate::mmu::memory::GuestMemory;
use alloc::format;
use alloc::string::String;

/// Copy `image` to guest-physical `load_addr` and return `state` unchanged: the caller
/// chooses the mode and entry point. Fails if the image does not fit in RAM (nothing is
/// written then) or is empty.
pub fn load_flat(
    mem: &mut GuestMemory,
    image: &[u8],
    load_addr: u64,
    state: BootState,
) -> Result<BootState, LoadError> {
    if image.is_empty() {
        return Err(LoadError::Malformed(String::from(
            "the flat image is empty",
        )));
    }
    let len = image.len() as u64;
    if !mem.is_ram_range(load_addr, len) {
        return Err(LoadError::DoesNotFit(format!(
            "flat image of {len} bytes at {load_addr:#x}..{:#x} is not inside guest RAM",
            load_addr.saturating_add(len)
        )));
    }
    mem.write(load_addr, image)?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_image() {
        let mut mem = GuestMemory::with_ram(0x2000).unwrap();
        mem.add_ram(0x2000, 0x1000).unwrap();
        let state = BootState {
            cr0: 0x11,
            ..BootState::default()
        };
        // Across the boundary between two regions.
        let got = load_flat(&mut mem, &[1, 2, 3, 4], 0x1ffe, state.clone()).unwrap();
        assert_eq!(got, state);
        assert_eq!(mem.read_u32(0x1ffe).unwrap(), 0x0403_0201);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let mut mem = GuestMemory::with_ram(0x2000).unwrap();
        let r = load_flat(&mut mem, &[1, 2, 3, 4], 0x1ffe, BootState::default());
        assert!(matches!(r, Err(LoadError::DoesNotFit(s)) if s.contains("4 bytes at 0x1ffe")));
        assert_eq!(mem.read_u16(0x1ffe).unwrap(), 0, "nothing written");
        let r = load_flat(&mut mem, &[1], u64::MAX, BootState::default());
        assert!(matches!(r, Err(LoadError::DoesNotFit(_))));
        let r = load_flat(&mut mem, &[], 0, BootState::default());
        assert!(matches!(r, Err(LoadError::Malformed(_))));
    }
}

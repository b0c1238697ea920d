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
    if !is_ram_range(mem, load_addr, len) {
        return Err(LoadError::DoesNotFit(format!(
            "flat image of {len} bytes at {load_addr:#x}..{:#x} is not inside guest RAM",
            load_addr.saturating_add(len)
        )));
    }
    mem.write(load_addr, image)?;
    Ok(state)
}

/// Whether `gpa..gpa+len` is entirely guest RAM (it may span adjacent regions). An empty
/// range is RAM if it does not wrap.
pub fn is_ram_range(mem: &GuestMemory, gpa: u64, len: u64) -> bool {
    let Some(end) = gpa.checked_add(len) else {
        return false;
    };
    let mut at = gpa;
    while at < end {
        let Some(i) = mem.region_index(at) else {
            return false;
        };
        // `region_index` found it, so the index is valid.
        match mem.regions().get(i) {
            Some(r) => at = r.end(),
            None => return false,
        }
    }
    true
}

/// Zero `gpa..gpa+len`, which may span adjacent regions. Nothing is written if any part
/// of it is not RAM.
pub fn zero_range(mem: &mut GuestMemory, gpa: u64, len: u64) -> Result<(), LoadError> {
    if !is_ram_range(mem, gpa, len) {
        return Err(LoadError::Memory(crate::mmu::memory::MemError::Unmapped {
            gpa,
            len,
        }));
    }
    let end = gpa + len;
    let mut at = gpa;
    while at < end {
        let region_end = mem
            .region_index(at)
            .and_then(|i| mem.regions().get(i))
            .map_or(end, |r| r.end());
        let n = region_end.min(end) - at;
        mem.zero(at, n)?;
        at += n;
    }
    Ok(())
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

    #[test]
    fn ranges_and_zeroing() {
        let mut mem = GuestMemory::with_ram(0x1000).unwrap();
        mem.add_ram(0x1000, 0x1000).unwrap();
        mem.add_ram(0x4000, 0x1000).unwrap();
        assert!(is_ram_range(&mem, 0x800, 0x1800));
        assert!(!is_ram_range(&mem, 0x800, 0x1801));
        assert!(!is_ram_range(&mem, 0x3000, 0x1000));
        assert!(is_ram_range(&mem, 0x2000, 0));
        assert!(!is_ram_range(&mem, u64::MAX, 2));
        mem.write(0xff0, &[0xff; 0x20]).unwrap();
        zero_range(&mut mem, 0xff8, 0x10).unwrap();
        assert_eq!(mem.read_u64(0xff0).unwrap(), u64::MAX);
        assert_eq!(mem.read_u64(0xff8).unwrap(), 0);
        assert_eq!(mem.read_u64(0x1000).unwrap(), 0);
        assert_eq!(mem.read_u64(0x1008).unwrap(), u64::MAX);
        mem.write_u64(0x1ff8, u64::MAX).unwrap();
        assert!(zero_range(&mut mem, 0x1ff8, 0x10).is_err());
        assert_eq!(mem.read_u64(0x1ff8).unwrap(), u64::MAX, "nothing zeroed");
    }
}

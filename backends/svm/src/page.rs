//! Page-aligned host memory for the structures SVM reads by physical address (the
//! VMCB, the host save area, the I/O and MSR permission maps), and the host's
//! virtual-to-physical translation.

use alloc::boxed::Box;
use core::fmt;

/// Translates a host virtual address of memory this backend allocated (or of guest RAM)
/// into the host physical address the processor needs. The bare-metal image maps memory
/// 1:1, so its translation is the identity. A structure of several pages (the permission
/// maps) must be physically contiguous under it, as the identity gives.
pub type HostPhys = fn(u64) -> u64;

/// The identity translation (for an identity-mapped host).
pub fn identity(addr: u64) -> u64 {
    addr
}

/// `N` contiguous 4 KiB pages, 4 KiB-aligned, as quadwords.
#[derive(Clone)]
#[repr(C, align(4096))]
pub struct Pages<const N: usize>(pub [[u64; 512]; N]);

impl<const N: usize> fmt::Debug for Pages<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pages<{N}>")
    }
}

impl<const N: usize> Pages<N> {
    /// Zeroed pages on the heap.
    pub fn zeroed() -> Box<Self> {
        Box::new(Pages([[0; 512]; N]))
    }

    /// Pages on the heap with every byte set to `byte`.
    pub fn filled(byte: u8) -> Box<Self> {
        Box::new(Pages([[u64::from_ne_bytes([byte; 8]); 512]; N]))
    }

    /// The host virtual address of the first page.
    pub fn addr(&self) -> u64 {
        self as *const Self as u64
    }

    /// Whether bit `bit` of the pages, taken as one bitmap, is set (false beyond them).
    pub fn bit(&self, bit: usize) -> bool {
        let q = bit / 64;
        self.0
            .get(q / 512)
            .and_then(|page| page.get(q % 512))
            .is_some_and(|word| word & (1 << (bit % 64)) != 0)
    }

    /// Set or clear bit `bit` of the pages taken as one bitmap (ignored beyond them).
    pub fn set_bit(&mut self, bit: usize, on: bool) {
        let q = bit / 64;
        if let Some(word) = self
            .0
            .get_mut(q / 512)
            .and_then(|page| page.get_mut(q % 512))
        {
            if on {
                *word |= 1 << (bit % 64);
            } else {
                *word &= !(1 << (bit % 64));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_span_pages() {
        let mut p = Pages::<2>::zeroed();
        assert_eq!(p.addr() % 4096, 0);
        p.set_bit(0, true);
        p.set_bit(32767, true);
        p.set_bit(32768, true);
        p.set_bit(65535, true);
        p.set_bit(65536, true);
        assert!(p.bit(0) && p.bit(32767) && p.bit(32768) && p.bit(65535));
        assert!(!p.bit(1) && !p.bit(65536));
        assert_eq!(p.0[1][0], 1);
        assert_eq!(p.0[0][511], 1 << 63);
        p.set_bit(32768, false);
        assert!(!p.bit(32768));
        let f = Pages::<3>::filled(0xff);
        assert!(f.bit(3 * 32768 - 1) && !f.bit(3 * 32768));
    }
}

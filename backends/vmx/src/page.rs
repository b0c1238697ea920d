//! Page-sized, page-aligned host memory for the structures VMX reads by physical address
//! (VMXON region, VMCS, EPT tables, MSR and I/O bitmaps), and the host's
//! virtual-to-physical translation.

use alloc::boxed::Box;

/// Translates a host virtual address of memory this backend allocated (or of guest RAM)
/// into the host physical address the processor needs. The bare-metal image maps memory
/// 1:1, so its translation is the identity.
pub type HostPhys = fn(u64) -> u64;

/// The identity translation (for an identity-mapped host).
pub fn identity(addr: u64) -> u64 {
    addr
}

/// One 4 KiB page, 4 KiB-aligned, as 512 quadwords.
#[derive(Clone)]
#[repr(C, align(4096))]
pub struct Page(pub [u64; 512]);

impl core::fmt::Debug for Page {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Page")
    }
}

impl Page {
    /// A zeroed page on the heap.
    pub fn zeroed() -> Box<Page> {
        Box::new(Page([0; 512]))
    }

    /// A page on the heap with every byte set to `byte`.
    pub fn filled(byte: u8) -> Box<Page> {
        Box::new(Page([u64::from_ne_bytes([byte; 8]); 512]))
    }

    /// The host virtual address of the page.
    pub fn addr(&self) -> u64 {
        self as *const Page as u64
    }

    /// Whether bit `bit` (0..32768) of the page, taken as a bitmap, is set.
    pub fn bit(&self, bit: usize) -> bool {
        self.0
            .get(bit / 64)
            .is_some_and(|q| q & (1 << (bit % 64)) != 0)
    }

    /// Set or clear bit `bit` of the page taken as a bitmap (ignored beyond the page).
    pub fn set_bit(&mut self, bit: usize, on: bool) {
        if let Some(q) = self.0.get_mut(bit / 64) {
            if on {
                *q |= 1 << (bit % 64);
            } else {
                *q &= !(1 << (bit % 64));
            }
        }
    }
}

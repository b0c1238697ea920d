//! The MSR bitmap and the I/O bitmaps (SDM 3C 25.6.4, 25.6.9).
//!
//! Every port exits to core (both I/O bitmaps all ones). Every MSR exits, except those
//! whose guest value the processor itself switches on VM entry and exit through VMCS
//! guest-state fields (FS and GS base, the three SYSENTER MSRs): for those a guest
//! access touches only its own state, and the backend reads them back from the VMCS.

use crate::page::Page;
use alloc::boxed::Box;

/// IA32_SYSENTER_CS.
pub const MSR_SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
pub const MSR_SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
pub const MSR_SYSENTER_EIP: u32 = 0x176;
/// IA32_FS_BASE.
pub const MSR_FS_BASE: u32 = 0xc000_0100;
/// IA32_GS_BASE.
pub const MSR_GS_BASE: u32 = 0xc000_0101;

/// MSRs the guest reads and writes without an exit (see the module documentation).
pub const PASS_THROUGH_MSRS: [u32; 5] = [
    MSR_FS_BASE,
    MSR_GS_BASE,
    MSR_SYSENTER_CS,
    MSR_SYSENTER_ESP,
    MSR_SYSENTER_EIP,
];

/// The 4 KiB MSR bitmap: read bitmap for 0..0x1FFF at byte 0, for
/// 0xC0000000..0xC0001FFF at byte 1024, then the two write bitmaps at 2048 and 3072.
/// A set bit makes the access exit; MSRs outside both ranges always exit.
#[derive(Debug)]
pub struct MsrBitmap {
    page: Box<Page>,
}

impl Default for MsrBitmap {
    fn default() -> Self {
        Self::new()
    }
}

impl MsrBitmap {
    /// The bitmap this backend runs with: everything intercepted but
    /// [`PASS_THROUGH_MSRS`].
    pub fn new() -> MsrBitmap {
        let mut bitmap = MsrBitmap {
            page: Page::filled(0xff),
        };
        for msr in PASS_THROUGH_MSRS {
            bitmap.set_intercept(msr, false, false);
        }
        bitmap
    }

    /// The bit offsets of `msr` in the read and write bitmaps, or `None` when the MSR is
    /// outside both ranges the bitmap covers.
    fn bits(msr: u32) -> Option<(usize, usize)> {
        let (base, offset) = match msr {
            0..=0x1fff => (0, msr),
            0xc000_0000..=0xc000_1fff => (1024 * 8, msr - 0xc000_0000),
            _ => return None,
        };
        let read = base + offset as usize;
        Some((read, read + 2048 * 8))
    }

    /// Whether a read (`write` false) or write of `msr` exits.
    pub fn intercepts(&self, msr: u32, write: bool) -> bool {
        match Self::bits(msr) {
            Some((r, w)) => self.page.bit(if write { w } else { r }),
            None => true,
        }
    }

    /// Choose whether reads and writes of `msr` exit (no effect outside the ranges,
    /// where every access exits).
    pub fn set_intercept(&mut self, msr: u32, read: bool, write: bool) {
        if let Some((r, w)) = Self::bits(msr) {
            self.page.set_bit(r, read);
            self.page.set_bit(w, write);
        }
    }

    /// The page.
    pub fn page(&self) -> &Page {
        &self.page
    }
}

/// I/O bitmaps A (ports 0..0x7FFF) and B (0x8000..0xFFFF): every bit set, so every port
/// access exits to core.
#[derive(Debug)]
pub struct IoBitmaps {
    a: Box<Page>,
    b: Box<Page>,
}

impl Default for IoBitmaps {
    fn default() -> Self {
        Self::new()
    }
}

impl IoBitmaps {
    /// Both bitmaps all ones.
    pub fn new() -> IoBitmaps {
        IoBitmaps {
            a: Page::filled(0xff),
            b: Page::filled(0xff),
        }
    }

    /// Whether an access to `port` exits.
    pub fn intercepts(&self, port: u16) -> bool {
        let p = usize::from(port);
        if p < 0x8000 {
            self.a.bit(p)
        } else {
            self.b.bit(p - 0x8000)
        }
    }

    /// Bitmap A.
    pub fn a(&self) -> &Page {
        &self.a
    }

    /// Bitmap B.
    pub fn b(&self) -> &Page {
        &self.b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_bitmap_passes_only_the_vmcs_switched_msrs() {
        let bitmap = MsrBitmap::new();
        for msr in PASS_THROUGH_MSRS {
            assert!(!bitmap.intercepts(msr, false), "{msr:#x} read");
            assert!(!bitmap.intercepts(msr, true), "{msr:#x} write");
        }
        // EFER, APIC base, TSC, the SYSCALL MSRs, KERNEL_GS_BASE, x2APIC, PAT: all exit.
        for msr in [
            0xc000_0080,
            0x1b,
            0x10,
            0xc000_0081,
            0xc000_0082,
            0xc000_0102,
            0x800,
            0x277,
            0x1fff,
            0xc000_1fff,
        ] {
            assert!(bitmap.intercepts(msr, false), "{msr:#x} read");
            assert!(bitmap.intercepts(msr, true), "{msr:#x} write");
        }
        // Outside the ranges: always intercepted.
        assert!(bitmap.intercepts(0x4000_0000, false));
        assert!(bitmap.intercepts(0xc001_0114, true));
    }

    #[test]
    fn msr_bitmap_layout_follows_the_sdm() {
        let bitmap = MsrBitmap::new();
        let page = bitmap.page();
        // FS_BASE (0xC0000100): read-high bitmap at byte 1024, bit 0x100; write-high at
        // byte 3072.
        let byte = |offset: usize| (page.0[offset / 8] >> ((offset % 8) * 8)) as u8;
        assert_eq!(byte(1024 + 0x100 / 8) & 1, 0);
        assert_eq!(byte(3072 + 0x100 / 8) & 1, 0);
        // SYSENTER_CS (0x174): read-low at byte 0x2e bit 4, write-low at 2048 + 0x2e.
        assert_eq!(byte(0x2e) & 0x10, 0);
        assert_eq!(byte(2048 + 0x2e) & 0x10, 0);
        assert_eq!(byte(0x2e) & 0x0f, 0x0f);
        assert!(page.addr() % 4096 == 0);
    }

    #[test]
    fn every_port_exits() {
        let io = IoBitmaps::new();
        for port in 0..=u16::MAX {
            assert!(io.intercepts(port));
        }
        assert!(io.a().addr() % 4096 == 0 && io.b().addr() % 4096 == 0);
    }
}

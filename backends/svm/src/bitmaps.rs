//! The I/O and MSR permission maps (APM 2 15.10.1, 15.11).
//!
//! Every port exits to core: the 12 KiB I/O permission map is all ones (its bit 65536
//! and beyond cover accesses that wrap past port 0xFFFF). Every MSR access exits, except
//! reads of the MSRs whose guest value the processor itself switches at VMRUN and
//! #VMEXIT through the VMCB (FS and GS base with the segments, KERNEL_GS_BASE, the
//! SYSCALL MSRs and the SYSENTER MSRs through VMLOAD/VMSAVE): a read touches only the
//! guest's own value. Their writes exit too, so that core checks the value (canonical
//! addresses, reserved bits) before the backend stores it in the VMCB: QEMU's TCG takes
//! a non-canonical LSTAR without the #GP silicon raises.

use crate::page::Pages;
use alloc::boxed::Box;

/// IA32_SYSENTER_CS.
pub const MSR_SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
pub const MSR_SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
pub const MSR_SYSENTER_EIP: u32 = 0x176;
/// STAR.
pub const MSR_STAR: u32 = 0xc000_0081;
/// LSTAR.
pub const MSR_LSTAR: u32 = 0xc000_0082;
/// CSTAR.
pub const MSR_CSTAR: u32 = 0xc000_0083;
/// SFMASK.
pub const MSR_SFMASK: u32 = 0xc000_0084;
/// FS.base.
pub const MSR_FS_BASE: u32 = 0xc000_0100;
/// GS.base.
pub const MSR_GS_BASE: u32 = 0xc000_0101;
/// KernelGSbase.
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// MSRs the guest reads without an exit (see the module documentation).
pub const PASS_THROUGH_MSRS: [u32; 10] = [
    MSR_FS_BASE,
    MSR_GS_BASE,
    MSR_KERNEL_GS_BASE,
    MSR_STAR,
    MSR_LSTAR,
    MSR_CSTAR,
    MSR_SFMASK,
    MSR_SYSENTER_CS,
    MSR_SYSENTER_ESP,
    MSR_SYSENTER_EIP,
];

/// Size of the MSR permission map: 8 KiB.
pub const MSRPM_SIZE: u64 = 0x2000;
/// Size of the I/O permission map: 12 KiB.
pub const IOPM_SIZE: u64 = 0x3000;

/// The 8 KiB MSR permission map: two bits per MSR (even: read, odd: write) for MSRs
/// 0..0x1FFF at byte 0, 0xC0000000..0xC0001FFF at byte 0x800 and 0xC0010000..0xC0011FFF
/// at byte 0x1000; a set bit makes the access exit, and MSRs outside the three ranges
/// always exit.
#[derive(Debug)]
pub struct Msrpm {
    pages: Box<Pages<2>>,
}

impl Default for Msrpm {
    fn default() -> Self {
        Self::new()
    }
}

impl Msrpm {
    /// The map this backend runs with: everything intercepted but reads of
    /// [`PASS_THROUGH_MSRS`].
    pub fn new() -> Msrpm {
        let mut map = Msrpm {
            pages: Pages::filled(0xff),
        };
        for msr in PASS_THROUGH_MSRS {
            map.set_intercept(msr, false, true);
        }
        map
    }

    /// The bit of the read intercept of `msr` (the write intercept is the next one), or
    /// `None` outside the three ranges.
    fn read_bit(msr: u32) -> Option<usize> {
        let (base_byte, offset) = match msr {
            0..=0x1fff => (0, msr),
            0xc000_0000..=0xc000_1fff => (0x800, msr - 0xc000_0000),
            0xc001_0000..=0xc001_1fff => (0x1000, msr - 0xc001_0000),
            _ => return None,
        };
        Some(base_byte * 8 + 2 * offset as usize)
    }

    /// Whether a read (`write` false) or write of `msr` exits.
    pub fn intercepts(&self, msr: u32, write: bool) -> bool {
        match Self::read_bit(msr) {
            Some(bit) => self.pages.bit(bit + usize::from(write)),
            None => true,
        }
    }

    /// Choose whether reads and writes of `msr` exit (no effect outside the ranges,
    /// where every access exits).
    pub fn set_intercept(&mut self, msr: u32, read: bool, write: bool) {
        if let Some(bit) = Self::read_bit(msr) {
            self.pages.set_bit(bit, read);
            self.pages.set_bit(bit + 1, write);
        }
    }

    /// The host virtual address of the map.
    pub fn addr(&self) -> u64 {
        self.pages.addr()
    }
}

/// The 12 KiB I/O permission map, one bit per port; all set, so every port exits.
#[derive(Debug)]
pub struct Iopm {
    pages: Box<Pages<3>>,
}

impl Default for Iopm {
    fn default() -> Self {
        Self::new()
    }
}

impl Iopm {
    /// The map this backend runs with: every port intercepted.
    pub fn new() -> Iopm {
        Iopm {
            pages: Pages::filled(0xff),
        }
    }

    /// Whether an access to `port` exits.
    pub fn intercepts(&self, port: u16) -> bool {
        self.pages.bit(usize::from(port))
    }

    /// The host virtual address of the map.
    pub fn addr(&self) -> u64 {
        self.pages.addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_of_vmcb_switched_msrs_pass_through() {
        let map = Msrpm::new();
        for msr in PASS_THROUGH_MSRS {
            assert!(!map.intercepts(msr, false), "{msr:#x} read");
            assert!(map.intercepts(msr, true), "{msr:#x} write");
        }
        // EFER (SVME must stay set), PAT (G_PAT through core's checks), the APIC
        // base, TSC_AUX, the TSC and the x2APIC range all exit; so does anything
        // outside the ranges.
        for msr in [
            0xc000_0080,
            0x277,
            0x1b,
            0xc000_0103,
            0x10,
            0x80b,
            0xc001_0114,
        ] {
            assert!(
                map.intercepts(msr, false) && map.intercepts(msr, true),
                "{msr:#x}"
            );
        }
        assert!(map.intercepts(0x4000_0000, false));
        assert!(map.intercepts(0xc002_0000, true));
    }

    #[test]
    fn bit_positions_follow_the_apm() {
        let mut map = Msrpm::new();
        // MSR 0xC0000082 (LSTAR): byte 0x800 + 0x82 * 2 / 8 = 0x820, bits 4 and 5.
        let word = |m: &Msrpm, byte: usize| {
            (m.pages.0[byte / 4096][(byte % 4096) / 8] >> ((byte % 8) * 8)) as u8
        };
        assert_eq!(word(&map, 0x820) & 0x30, 0x20, "reads pass, writes exit");
        map.set_intercept(MSR_LSTAR, false, false);
        assert_eq!(word(&map, 0x820) & 0x30, 0);
        // MSR 0xC0010114 (VM_CR): byte 0x1000 + 0x114 / 4 = 0x1045, bits 0 and 1.
        map.set_intercept(0xc001_0114, false, false);
        assert_eq!(word(&map, 0x1045) & 0x3, 0);
        assert!(!map.intercepts(0xc001_0114, true));
        assert_eq!(map.addr() % 4096, 0);
    }

    #[test]
    fn every_port_exits() {
        let map = Iopm::new();
        for port in [0, 0x3f8, 0xf4, 0xcf8, 0xffff] {
            assert!(map.intercepts(port));
        }
        assert_eq!(map.addr() % 4096, 0);
    }
}

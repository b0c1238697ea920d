//! QEMU's ISA test device (`-device pc-testdev`), which test kernels written for QEMU and
//! KVM (kvm-unit-tests among them) use to drive interrupt lines and MMIO from the guest:
//!
//! - ports 0xE0-0xE3: a 32-bit scratch register. An access of 1, 2 or 4 bytes at port
//!   0xE0 + k reads or writes the register's bytes k to k + size - 1.
//! - ports 0xE4-0xE7: the flush port. QEMU takes a 4-byte write of a guest-physical
//!   address and has the host unmap and remap that page (to make KVM fault on its next
//!   access), which changes nothing the guest can see; here a 4-byte write is accepted and
//!   counted, and reads return 0.
//! - ports 0xE8-0xEB: the same scratch register, which QEMU implements one byte at a time
//!   (the same result for the accesses it accepts).
//! - ports 0x2000-0x2017: one byte port per interrupt line. A byte write of V drives line
//!   `port - 0x2000` to `V != 0` (through the machine's PIC and I/O APIC routing, as any
//!   ISA device's line); reads return 0. QEMU's ISA bus stops at IRQ 15 (a write to
//!   0x2010 aborts QEMU); here 0x2010-0x2017 drive GSIs 16-23 on the I/O APIC.
//! - guest-physical 0xFF000000-0xFF00FFFF: 64 KiB of memory-like storage behind MMIO. An
//!   access of 1 to 8 bytes, aligned or not, reads or writes the bytes at its offset,
//!   little-endian (QEMU splits unaligned MMIO accesses, under TCG and KVM alike).
//!
//! The ports refuse what QEMU 7.2's memory core refuses (`memory_region_access_valid` for
//! regions without `unaligned`), as its TCG shows: an access that is not naturally
//! aligned (offset a multiple of its size), and a width the register does not take (the
//! flush port takes 4 bytes only, the line ports 1 byte only). A refused read returns 0
//! and a refused write does nothing. (QEMU under KVM splits an unaligned port access into
//! bytes instead.)
//!
//! The layout is QEMU's (`hw/misc/pc-testdev.c`, unchanged through 7.2).

use alloc::vec;
use alloc::vec::Vec;

/// The scratch register's port.
pub const SCRATCH_PORT: u16 = 0xe0;
/// The flush port.
pub const FLUSH_PORT: u16 = 0xe4;
/// The byte-wise view of the scratch register.
pub const SCRATCH_BYTES_PORT: u16 = 0xe8;
/// Each of these four-port blocks.
pub const PORT_BLOCK_LEN: u16 = 4;
/// The first interrupt-line port (line 0).
pub const IRQ_LINE_BASE: u16 = 0x2000;
/// How many interrupt-line ports there are (lines 0-23).
pub const IRQ_LINE_PORTS: u16 = 24;
/// The MMIO window's guest-physical base.
pub const IOMEM_BASE: u64 = 0xff00_0000;
/// The MMIO window's length (64 KiB).
pub const IOMEM_LEN: u64 = 0x1_0000;

/// The device's port ranges, as the port bus names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestdevPorts {
    /// 0xE0-0xE3.
    Scratch,
    /// 0xE4-0xE7.
    Flush,
    /// 0xE8-0xEB.
    ScratchBytes,
    /// 0x2000-0x2017.
    IrqLines,
}

/// The device's registers and its MMIO window.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PcTestdev {
    /// The scratch register behind 0xE0 and 0xE8.
    scratch: u32,
    /// 4-byte writes to the flush port so far.
    flushes: u64,
    /// The 64 KiB behind [`IOMEM_BASE`].
    iomem: Vec<u8>,
}

impl Default for PcTestdev {
    fn default() -> Self {
        Self::new()
    }
}

impl PcTestdev {
    /// The device as QEMU realizes it: scratch 0, the window zeroed.
    pub fn new() -> PcTestdev {
        PcTestdev {
            scratch: 0,
            flushes: 0,
            iomem: vec![0; IOMEM_LEN as usize],
        }
    }

    /// Whether QEMU's memory core lets an access of `size` bytes at `offset` through to
    /// `ports`: naturally aligned, of a width the register takes.
    fn port_access_valid(ports: TestdevPorts, offset: u16, size: u8) -> bool {
        let width_ok = match ports {
            TestdevPorts::Scratch | TestdevPorts::ScratchBytes => matches!(size, 1 | 2 | 4),
            TestdevPorts::Flush => size == 4,
            TestdevPorts::IrqLines => size == 1,
        };
        width_ok && offset % u16::from(size) == 0
    }

    /// The mask of the scratch register's bytes an aligned access of `size` bytes at
    /// `offset` covers, and the shift to its first byte.
    fn scratch_mask(offset: u16, size: u8) -> (u32, u32) {
        let shift = u32::from(offset & 3) * 8;
        let mask = (u32::MAX >> (32 - u32::from(size) * 8)) << shift;
        (mask, shift)
    }

    /// A port read of `size` bytes at `offset` in `ports`.
    pub fn port_read(&self, ports: TestdevPorts, offset: u16, size: u8) -> u32 {
        if !Self::port_access_valid(ports, offset, size) {
            return 0;
        }
        match ports {
            TestdevPorts::Scratch | TestdevPorts::ScratchBytes => {
                let (mask, shift) = Self::scratch_mask(offset, size);
                (self.scratch & mask) >> shift
            }
            TestdevPorts::Flush | TestdevPorts::IrqLines => 0,
        }
    }

    /// A port write of the low `size` bytes of `value` at `offset` in `ports`. Returns
    /// the interrupt line to drive and its level, for a write to an interrupt-line port.
    pub fn port_write(
        &mut self,
        ports: TestdevPorts,
        offset: u16,
        size: u8,
        value: u32,
    ) -> Option<(u32, bool)> {
        if !Self::port_access_valid(ports, offset, size) {
            return None;
        }
        match ports {
            TestdevPorts::Scratch | TestdevPorts::ScratchBytes => {
                let (mask, shift) = Self::scratch_mask(offset, size);
                self.scratch = (self.scratch & !mask) | (value << shift & mask);
                None
            }
            TestdevPorts::Flush => {
                self.flushes += 1;
                None
            }
            TestdevPorts::IrqLines => Some((u32::from(offset), value & 0xff != 0)),
        }
    }

    /// The scratch register.
    pub fn scratch(&self) -> u32 {
        self.scratch
    }

    /// How many 4-byte writes the flush port took.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// An MMIO read of `size` (1-8) bytes at `offset` in the window. Bytes past the
    /// window's end are not the device's: they read as all ones, as unclaimed addresses.
    pub fn iomem_read(&self, offset: u64, size: u8) -> u64 {
        (0..u64::from(size.clamp(1, 8))).fold(0, |v, i| {
            let byte = offset
                .checked_add(i)
                .and_then(|at| self.iomem.get(usize::try_from(at).ok()?))
                .copied()
                .unwrap_or(0xff);
            v | u64::from(byte) << (8 * i)
        })
    }

    /// An MMIO write of the low `size` (1-8) bytes of `value` at `offset` in the window;
    /// bytes past the window's end are dropped.
    pub fn iomem_write(&mut self, offset: u64, size: u8, value: u64) {
        for i in 0..u64::from(size.clamp(1, 8)) {
            let at = offset
                .checked_add(i)
                .and_then(|at| usize::try_from(at).ok());
            if let Some(byte) = at.and_then(|at| self.iomem.get_mut(at)) {
                *byte = (value >> (8 * i)) as u8;
            }
        }
    }
}

impl super::SavedState for PcTestdev {
    fn check_state(&self) -> Result<(), (&'static str, alloc::string::String)> {
        if self.iomem.len() as u64 != IOMEM_LEN {
            return Err((
                "iomem",
                alloc::format!("{} bytes (the window has {IOMEM_LEN})", self.iomem.len()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_register_by_width_and_offset() {
        let mut d = PcTestdev::new();
        assert_eq!(d.port_write(TestdevPorts::Scratch, 0, 4, 0x1234_5678), None);
        assert_eq!(d.port_read(TestdevPorts::Scratch, 0, 4), 0x1234_5678);
        assert_eq!(d.port_read(TestdevPorts::Scratch, 0, 1), 0x78);
        assert_eq!(d.port_read(TestdevPorts::Scratch, 1, 1), 0x56);
        assert_eq!(d.port_read(TestdevPorts::Scratch, 2, 2), 0x1234);
        // A word write at 0xE2 replaces bytes 2 and 3 only.
        d.port_write(TestdevPorts::Scratch, 2, 2, 0xaabb);
        assert_eq!(d.scratch(), 0xaabb_5678);
        d.port_write(TestdevPorts::Scratch, 1, 1, 0xcc);
        assert_eq!(d.scratch(), 0xaabb_cc78);
        // The byte view at 0xE8 is the same register.
        assert_eq!(d.port_read(TestdevPorts::ScratchBytes, 0, 4), 0xaabb_cc78);
        assert_eq!(d.port_read(TestdevPorts::ScratchBytes, 3, 1), 0xaa);
        d.port_write(TestdevPorts::ScratchBytes, 0, 2, 0x2211);
        assert_eq!(d.port_read(TestdevPorts::Scratch, 0, 4), 0xaabb_2211);
    }

    #[test]
    fn unaligned_accesses_are_refused_as_qemu_refuses_them() {
        let mut d = PcTestdev::new();
        d.port_write(TestdevPorts::Scratch, 0, 4, 0x1234_5678);
        for (ports, offset, size) in [
            (TestdevPorts::Scratch, 1, 2),
            (TestdevPorts::Scratch, 2, 4),
            (TestdevPorts::ScratchBytes, 3, 2),
            (TestdevPorts::ScratchBytes, 1, 4),
        ] {
            assert_eq!(
                d.port_read(ports, offset, size),
                0,
                "{ports:?} {offset} {size}"
            );
            d.port_write(ports, offset, size, 0xffff_ffff);
            assert_eq!(d.scratch(), 0x1234_5678, "{ports:?} {offset} {size}");
        }
        // The window takes unaligned accesses byte by byte, as QEMU (TCG and KVM) does.
        d.iomem_write(0x10, 8, 0x0807_0605_0403_0201);
        assert_eq!(d.iomem_read(0x11, 2), 0x0302);
        d.iomem_write(0x13, 4, 0xaabb_ccdd);
        assert_eq!(d.iomem_read(0x10, 8), 0x08aa_bbcc_dd03_0201);
    }

    #[test]
    fn irq_line_ports_take_byte_writes_only() {
        let mut d = PcTestdev::new();
        assert_eq!(
            d.port_write(TestdevPorts::IrqLines, 4, 1, 1),
            Some((4, true))
        );
        assert_eq!(
            d.port_write(TestdevPorts::IrqLines, 4, 1, 0x100),
            Some((4, false)),
            "only the byte written counts"
        );
        assert_eq!(
            d.port_write(TestdevPorts::IrqLines, 23, 1, 0x80),
            Some((23, true))
        );
        assert_eq!(d.port_write(TestdevPorts::IrqLines, 4, 2, 1), None);
        assert_eq!(d.port_write(TestdevPorts::IrqLines, 4, 4, 1), None);
        assert_eq!(d.port_read(TestdevPorts::IrqLines, 4, 1), 0);
    }

    #[test]
    fn flush_port_takes_dword_writes_and_reads_zero() {
        let mut d = PcTestdev::new();
        d.port_write(TestdevPorts::Scratch, 0, 4, 7);
        assert_eq!(d.port_write(TestdevPorts::Flush, 0, 4, 0x12_3000), None);
        d.port_write(TestdevPorts::Flush, 0, 1, 0x12_3000);
        d.port_write(TestdevPorts::Flush, 0, 2, 0x12_3000);
        d.port_write(TestdevPorts::Flush, 1, 1, 0x12_3000);
        assert_eq!(d.flushes(), 1);
        assert_eq!(d.port_read(TestdevPorts::Flush, 0, 4), 0);
        assert_eq!(d.scratch(), 7, "the flush port is not the scratch register");
    }

    #[test]
    fn iomem_is_byte_addressed_storage() {
        let mut d = PcTestdev::new();
        assert_eq!(d.iomem_read(0, 8), 0, "zeroed at realize");
        d.iomem_write(0x10, 8, 0x0807_0605_0403_0201);
        assert_eq!(d.iomem_read(0x10, 1), 0x01);
        assert_eq!(d.iomem_read(0x14, 2), 0x0605);
        assert_eq!(d.iomem_read(0x14, 4), 0x0807_0605);
        assert_eq!(d.iomem_read(0x10, 8), 0x0807_0605_0403_0201);
        d.iomem_write(0x12, 1, 0xff_ffaa);
        assert_eq!(d.iomem_read(0x10, 4), 0x04aa_0201);
        // The last bytes of the window, and past its end (unclaimed: all ones).
        d.iomem_write(IOMEM_LEN - 2, 4, 0xdead_beef);
        assert_eq!(d.iomem_read(IOMEM_LEN - 2, 2), 0xbeef);
        assert_eq!(d.iomem_read(IOMEM_LEN - 2, 4), 0xffff_beef);
        assert_eq!(d.iomem_read(u64::MAX, 8), u64::MAX);
        d.iomem_write(u64::MAX - 1, 8, 0);
    }
}

//! The port-I/O and MMIO buses: sorted ranges mapped to device identifiers. Dispatch is a
//! `match` on the identifier in the exit handlers, not a trait object.

use alloc::vec::Vec;

/// A device on the port-I/O bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PioDevice {
    /// The 16550A UART at COM1.
    Com1,
    /// The debug-exit port (QEMU's isa-debug-exit).
    DebugExit,
    /// The POST code port 0x80.
    PostCode,
    /// The 8259 PIC pair and its ELCR (ports 0x20-0x21, 0xA0-0xA1, 0x4D0-0x4D1): the
    /// handler passes the port itself.
    Pic,
    /// The 8254 PIT (0x40-0x43).
    Pit,
    /// Port 0x61, NMI status and control (PIT channel 2's gate and output).
    NmiStatusControl,
    /// The 8042 keyboard controller (0x60 and 0x64): the handler passes the port itself.
    Keyboard,
    /// The CMOS RTC (0x70-0x71).
    Rtc,
    /// QEMU's fw_cfg (0x510-0x51B).
    FwCfg,
    /// PCI configuration mechanism #1 (0xCF8-0xCFF), with the reset control register at
    /// byte port 0xCF9 inside it.
    PciConfig,
    /// One of the ACPI fixed-hardware register blocks.
    AcpiPm(crate::devices::acpi_pm::PmBlock),
    /// One of QEMU's `pc-testdev` port blocks (when the machine has the device).
    PcTestdev(crate::devices::pc_testdev::TestdevPorts),
}

/// A device on the MMIO bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioDevice {
    /// The I/O APIC's page. (The local APICs' pages are not on the bus: each vCPU
    /// reaches its own at the address its IA32_APIC_BASE gives.)
    IoApic,
    /// QEMU's `pc-testdev` 64 KiB window at 0xFF000000 (when the machine has the device).
    PcTestdevIomem,
}

/// Why a device could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusConflict {
    /// Start of the range that was refused.
    pub start: u64,
}

/// Addresses below this (the whole port-I/O space) are looked up in a table.
const DENSE_LIMIT: u64 = 0x1_0000;
/// A table entry for an address in no range.
const DENSE_NONE: u8 = 0;
/// A table entry for an address whose range is past the 254 the table can name: looked
/// up by the scan.
const DENSE_SCAN: u8 = u8::MAX;

/// Address ranges mapped to devices of type `D`.
#[derive(Clone, Debug)]
pub struct Bus<D> {
    /// (start, length, device), sorted by start, non-overlapping.
    ranges: Vec<(u64, u64, D)>,
    /// For each address below [`DENSE_LIMIT`], 1 + the index in `ranges` of the range
    /// holding it ([`DENSE_NONE`] if none, [`DENSE_SCAN`] past index 253): a port
    /// access finds its device in one step, where the scan of a PC's two dozen port
    /// ranges took about fifty instructions. Empty while no range lies below the limit
    /// (the MMIO bus).
    dense: Vec<u8>,
}

impl<D: Copy> Default for Bus<D> {
    fn default() -> Self {
        Bus {
            ranges: Vec::new(),
            dense: Vec::new(),
        }
    }
}

impl<D: Copy> Bus<D> {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Map `start..start+len` to `device`.
    pub fn register(&mut self, start: u64, len: u64, device: D) -> Result<(), BusConflict> {
        let end = start.checked_add(len).ok_or(BusConflict { start })?;
        if len == 0
            || self
                .ranges
                .iter()
                .any(|&(s, l, _)| start < s + l && s < end)
        {
            return Err(BusConflict { start });
        }
        let at = self.ranges.partition_point(|&(s, _, _)| s < start);
        self.ranges.insert(at, (start, len, device));
        self.index();
        Ok(())
    }

    /// Remove the mapping that starts at `start`, if any.
    pub fn unregister(&mut self, start: u64) {
        self.ranges.retain(|&(s, _, _)| s != start);
        self.index();
    }

    /// Rebuild the table of the addresses below [`DENSE_LIMIT`] (the ranges only change
    /// while a machine is put together).
    fn index(&mut self) {
        self.dense.clear();
        if self
            .ranges
            .first()
            .is_none_or(|&(s, _, _)| s >= DENSE_LIMIT)
        {
            self.dense.shrink_to_fit();
            return;
        }
        self.dense.resize(DENSE_LIMIT as usize, DENSE_NONE);
        for (i, &(s, l, _)) in self.ranges.iter().enumerate() {
            if s >= DENSE_LIMIT {
                break;
            }
            let entry = u8::try_from(i + 1)
                .ok()
                .filter(|&e| e != DENSE_SCAN)
                .unwrap_or(DENSE_SCAN);
            // Below DENSE_LIMIT both ends fit a usize.
            let end = s.saturating_add(l).min(DENSE_LIMIT);
            self.dense[s as usize..end as usize].fill(entry);
        }
    }

    /// The device at `addr` and `addr`'s offset inside its range.
    #[inline]
    pub fn find(&self, addr: u64) -> Option<(D, u64)> {
        if addr < DENSE_LIMIT {
            match self.dense.get(addr as usize) {
                Some(&DENSE_NONE) => return None,
                Some(&DENSE_SCAN) | None => {}
                Some(&entry) => {
                    if let Some(&(s, _, d)) = self.ranges.get(usize::from(entry) - 1) {
                        return Some((d, addr - s));
                    }
                }
            }
        }
        // A handful of ranges: a linear scan is fastest and allocates nothing.
        self.ranges
            .iter()
            .find(|&&(s, l, _)| addr >= s && addr - s < l)
            .map(|&(s, _, d)| (d, addr - s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_and_conflicts_are_refused() {
        let mut bus = Bus::new();
        bus.register(0x3f8, 8, PioDevice::Com1).unwrap();
        bus.register(0xf4, 4, PioDevice::DebugExit).unwrap();
        assert_eq!(bus.find(0x3fd), Some((PioDevice::Com1, 5)));
        assert_eq!(bus.find(0x400), None);
        assert_eq!(
            bus.register(0x3fc, 2, PioDevice::PostCode),
            Err(BusConflict { start: 0x3fc })
        );
        bus.unregister(0x3f8);
        assert_eq!(bus.find(0x3f8), None);
    }

    #[test]
    fn the_port_table_agrees_with_the_ranges() {
        let mut bus = Bus::new();
        // Three hundred one-port ranges: more than the table can name, so the last ones
        // are found by the scan; one range crosses the end of the table.
        for i in 0..300u64 {
            bus.register(0x1000 + 2 * i, 1, i).unwrap();
        }
        bus.register(0xfff0, 0x20, 1000).unwrap();
        bus.register(0x2_0000, 4, 2000).unwrap();
        for i in 0..300u64 {
            assert_eq!(bus.find(0x1000 + 2 * i), Some((i, 0)), "range {i}");
            assert_eq!(bus.find(0x1001 + 2 * i), None, "after range {i}");
        }
        assert_eq!(bus.find(0xfff5), Some((1000, 5)));
        assert_eq!(bus.find(0x1_0005), Some((1000, 0x15)));
        assert_eq!(bus.find(0x1_0010), None);
        assert_eq!(bus.find(0x2_0003), Some((2000, 3)));
        assert_eq!(bus.find(0), None);
        // Removing a range renumbers the ones after it.
        bus.unregister(0x1000);
        assert_eq!(bus.find(0x1000), None);
        assert_eq!(bus.find(0x1002), Some((1, 0)));
        assert_eq!(bus.find(0x1000 + 2 * 299), Some((299, 0)));
        // A bus with nothing below the table's limit keeps no table.
        let mut mmio = Bus::new();
        mmio.register(0xfec0_0000, 0x1000, 7u8).unwrap();
        assert!(mmio.dense.is_empty());
        assert_eq!(mmio.find(0xfec0_0010), Some((7, 0x10)));
    }
}

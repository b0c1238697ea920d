//! The PC memory map ("e820", after the BIOS call that reports it) that every boot format
//! hands the guest: the Linux zero page's `e820_table`, the multiboot memory map and the
//! PVH `hvm_memmap_table_entry` array are all written from one [`MemoryMap`], so they
//! agree.
//!
//! [`MemoryMap::new`] describes guest RAM as PC firmware does (SeaBIOS under QEMU gives
//! the same picture):
//!
//! - usable RAM from 0 to [`EBDA_START`] (0x9FC00, 639 KiB);
//! - reserved from [`EBDA_START`] to [`HIGH_MEMORY`] (1 MiB): the extended BIOS data
//!   area, the VGA window, option ROMs and the BIOS area, where the platform's ACPI tables
//!   go (0xE0000-0xFFFFF) — reserved whether or not guest RAM backs it;
//! - usable RAM from 1 MiB to the end of low RAM (below the 32-bit MMIO hole);
//! - every RAM region above that, RAM above 4 GiB included, usable.
//!
//! Loaders then mark the areas they keep for themselves ([`MemoryMap::reserve`]: the page
//! tables and GDT of the Linux loaders), and the platform may mark its own (ACPI tables,
//! firmware) with [`MemoryMap::mark`]. Entries are kept sorted, non-overlapping, and
//! merged where neighbours have one type.

use crate::mmu::memory::GuestMemory;
use alloc::vec::Vec;
use core::ops::Range;

/// Entry type: usable RAM.
pub const E820_RAM: u32 = 1;
/// Entry type: reserved (not to be used by the operating system).
pub const E820_RESERVED: u32 = 2;
/// Entry type: ACPI tables, reclaimable once read.
pub const E820_ACPI: u32 = 3;
/// Entry type: ACPI non-volatile storage.
pub const E820_NVS: u32 = 4;

/// Where the extended BIOS data area begins: the end of conventional memory (639 KiB).
pub const EBDA_START: u64 = 0x9_FC00;
/// The start of memory above the legacy area (1 MiB).
pub const HIGH_MEMORY: u64 = 0x10_0000;
/// The legacy area between conventional memory and 1 MiB, always reported reserved.
pub const LEGACY_AREA: Range<u64> = EBDA_START..HIGH_MEMORY;

const FOUR_GIB: u64 = 1 << 32;

/// One entry of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes (never zero).
    pub size: u64,
    /// [`E820_RAM`], [`E820_RESERVED`], [`E820_ACPI`], [`E820_NVS`], ...
    pub kind: u32,
}

impl E820Entry {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// The guest's memory map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryMap {
    /// Sorted by address, non-overlapping, no two adjacent entries of one type.
    entries: Vec<E820Entry>,
}

impl MemoryMap {
    /// The PC map of `mem`'s RAM (see the module documentation).
    pub fn new(mem: &GuestMemory) -> MemoryMap {
        let mut map = MemoryMap {
            entries: Vec::new(),
        };
        for r in mem.regions() {
            map.mark(r.gpa()..r.end(), E820_RAM);
        }
        map.mark(LEGACY_AREA, E820_RESERVED);
        map
    }

    /// Give `range` the type `kind`, replacing whatever the map said about it (a range
    /// that is not RAM may be marked too: reserved MMIO, firmware). An empty range
    /// changes nothing.
    pub fn mark(&mut self, range: Range<u64>, kind: u32) {
        if range.start >= range.end {
            return;
        }
        let mut out: Vec<E820Entry> = Vec::with_capacity(self.entries.len() + 2);
        let mut placed = false;
        for e in &self.entries {
            if e.end() <= range.start || e.addr >= range.end {
                if !placed && e.addr >= range.end {
                    push_merged(&mut out, range.start, range.end, kind);
                    placed = true;
                }
                push_merged(&mut out, e.addr, e.end(), e.kind);
                continue;
            }
            // `e` overlaps the new range: keep the parts outside it.
            if e.addr < range.start {
                push_merged(&mut out, e.addr, range.start, e.kind);
            }
            if !placed {
                push_merged(&mut out, range.start, range.end, kind);
                placed = true;
            }
            if e.end() > range.end {
                push_merged(&mut out, range.end, e.end(), e.kind);
            }
        }
        if !placed {
            push_merged(&mut out, range.start, range.end, kind);
        }
        self.entries = out;
    }

    /// Mark `range` reserved: memory a loader keeps for the boot (page tables, GDT) that
    /// the kernel must not allocate from.
    pub fn reserve(&mut self, range: Range<u64>) {
        self.mark(range, E820_RESERVED);
    }

    /// The entries, sorted by address.
    pub fn entries(&self) -> &[E820Entry] {
        &self.entries
    }

    /// Whether `range` lies entirely inside usable RAM entries. An empty range is inside
    /// when its address is.
    pub fn is_usable(&self, range: Range<u64>) -> bool {
        let mut at = range.start;
        loop {
            let Some(e) = self
                .entries
                .iter()
                .find(|e| e.kind == E820_RAM && e.addr <= at && at < e.end())
            else {
                return false;
            };
            if e.end() >= range.end {
                return true;
            }
            at = e.end();
        }
    }

    /// The end of low RAM: one past the last byte of the usable RAM that runs without a
    /// gap from 1 MiB, capped at 4 GiB (the RAM a 32-bit field can point into, and what
    /// the Linux boot protocol calls memory below the PCI hole). `None` when there is no
    /// usable RAM at 1 MiB.
    pub fn low_ram_end(&self) -> Option<u64> {
        let mut end = None;
        for e in &self.entries {
            let at = end.unwrap_or(HIGH_MEMORY);
            if e.kind == E820_RAM && e.addr <= at && at < e.end() {
                end = Some(e.end());
            }
        }
        end.map(|e| e.min(FOUR_GIB))
    }
}

/// Append `start..end` of type `kind`, merging it into the last entry when they touch and
/// agree.
fn push_merged(out: &mut Vec<E820Entry>, start: u64, end: u64, kind: u32) {
    if start >= end {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last.end() == start && last.kind == kind {
            last.size = end - last.addr;
            return;
        }
    }
    out.push(E820Entry {
        addr: start,
        size: end - start,
        kind,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triples(map: &MemoryMap) -> Vec<(u64, u64, u32)> {
        map.entries()
            .iter()
            .map(|e| (e.addr, e.end(), e.kind))
            .collect()
    }

    #[test]
    fn pc_map_of_low_ram() {
        let mem = GuestMemory::with_ram(256 << 20).unwrap();
        let map = MemoryMap::new(&mem);
        assert_eq!(
            triples(&map),
            [
                (0, 0x9_fc00, E820_RAM),
                (0x9_fc00, 0x10_0000, E820_RESERVED),
                (0x10_0000, 256 << 20, E820_RAM),
            ]
        );
        assert_eq!(map.low_ram_end(), Some(256 << 20));
    }

    #[test]
    fn ram_above_4g_is_usable() {
        // What backends::guest_memory builds for 6 GiB: 3 GiB low, 3 GiB from 4 GiB.
        let mut mem = GuestMemory::with_ram(3 << 30).unwrap();
        mem.add_ram(1 << 32, 3 << 30).unwrap();
        let map = MemoryMap::new(&mem);
        assert_eq!(
            triples(&map),
            [
                (0, 0x9_fc00, E820_RAM),
                (0x9_fc00, 0x10_0000, E820_RESERVED),
                (0x10_0000, 3 << 30, E820_RAM),
                (1 << 32, 7 << 30, E820_RAM),
            ]
        );
        // Low RAM ends at the hole, not at the end of the RAM above 4 GiB.
        assert_eq!(map.low_ram_end(), Some(3 << 30));
        assert!(map.is_usable((1 << 32)..(5 << 30)));
        assert!(!map.is_usable((3 << 30) - 1..(3 << 30) + 1));
    }

    #[test]
    fn marking_splits_and_merges() {
        let mem = GuestMemory::with_ram(16 << 20).unwrap();
        let mut map = MemoryMap::new(&mem);
        map.reserve(0x1000..0x8000);
        assert_eq!(
            triples(&map),
            [
                (0, 0x1000, E820_RAM),
                (0x1000, 0x8000, E820_RESERVED),
                (0x8000, 0x9_fc00, E820_RAM),
                (0x9_fc00, 0x10_0000, E820_RESERVED),
                (0x10_0000, 16 << 20, E820_RAM),
            ]
        );
        // A reservation touching the legacy area merges with it.
        map.reserve(0x9_f000..0x9_fc00);
        assert_eq!(triples(&map)[2], (0x8000, 0x9_f000, E820_RAM));
        assert_eq!(triples(&map)[3], (0x9_f000, 0x10_0000, E820_RESERVED));
        // Marking it RAM again restores one entry.
        map.mark(0x1000..0x8000, E820_RAM);
        assert_eq!(triples(&map)[0], (0, 0x9_f000, E820_RAM));
        // A range that is not RAM, past the end: appended.
        map.mark(0xfffc_0000..0x1_0000_0000, E820_RESERVED);
        assert_eq!(
            *triples(&map).last().unwrap(),
            (0xfffc_0000, 0x1_0000_0000, E820_RESERVED)
        );
        // Across several entries at once.
        map.mark(0x8_0000..0x20_0000, E820_ACPI);
        assert_eq!(
            triples(&map)[..3],
            [
                (0, 0x8_0000, E820_RAM),
                (0x8_0000, 0x20_0000, E820_ACPI),
                (0x20_0000, 16 << 20, E820_RAM),
            ]
        );
        // Empty ranges change nothing.
        let before = map.clone();
        map.mark(0x5000..0x5000, E820_NVS);
        assert_eq!(map, before);
    }

    #[test]
    fn small_and_odd_memories() {
        // Less than 640 KiB: no RAM at 1 MiB, the legacy area still reserved.
        let mem = GuestMemory::with_ram(0x8_0000).unwrap();
        let map = MemoryMap::new(&mem);
        assert_eq!(
            triples(&map),
            [
                (0, 0x8_0000, E820_RAM),
                (0x9_fc00, 0x10_0000, E820_RESERVED)
            ]
        );
        assert_eq!(map.low_ram_end(), None);
        // Adjacent regions read as one usable range.
        let mut mem = GuestMemory::with_ram(0x20_0000).unwrap();
        mem.add_ram(0x20_0000, 0x10_0000).unwrap();
        let map = MemoryMap::new(&mem);
        assert_eq!(map.low_ram_end(), Some(0x30_0000));
        assert!(map.is_usable(0x1f_f000..0x20_1000));
        assert!(!map.is_usable(0x9_f000..0xa_0000));
    }
}

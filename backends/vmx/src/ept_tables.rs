//! The EPT hierarchy for a guest's memory map (SDM 3C 29.3.2).
//!
//! Guest RAM is mapped read/write/execute, write-back, onto the host memory that backs
//! it: every RAM region of core's [`GuestMemory`] is one host allocation, so a region's
//! guest-physical range maps linearly onto its host-physical range. A 2 MiB page is used
//! where the guest and host addresses are both 2 MiB-aligned and the region covers the
//! whole 2 MiB, 4 KiB pages elsewhere. Everything that is not RAM stays unmapped, so
//! the guest's accesses there exit as EPT violations (MMIO).

use crate::page::{HostPhys, Page};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use opsvisor_core::GuestMemory;

/// Read, write and execute (bits 2:0 of an EPT entry).
pub const EPT_RWX: u64 = 0b111;
/// EPT memory type write-back in a leaf entry (bits 5:3).
pub const EPT_MEMTYPE_WB: u64 = 6 << 3;
/// Bit 7 of a PDE or PDPTE: the entry maps a page.
pub const EPT_LARGE: u64 = 1 << 7;
/// Physical-address bits 51:12 of an entry.
pub const EPT_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const KIB4: u64 = 1 << 12;
const MIB2: u64 = 1 << 21;

/// Why the tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptError {
    /// A region's host memory is not page-aligned, so it cannot be mapped page by page.
    UnalignedRegion {
        /// The region's guest-physical start.
        gpa: u64,
    },
}

impl core::fmt::Display for EptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EptError::UnalignedRegion { gpa } => write!(
                f,
                "guest RAM region at {gpa:#x} is not backed by page-aligned host memory"
            ),
        }
    }
}

/// An EPT hierarchy (4 levels) and the pages it is made of.
#[derive(Debug)]
pub struct EptTables {
    /// Every table, the PML4 first, with its host-physical address.
    tables: Vec<(u64, Box<Page>)>,
    /// Which table each non-leaf entry points to: (table, slot) to table index (the
    /// entries hold physical addresses, which the builder does not translate back).
    children: BTreeMap<(usize, usize), usize>,
    /// Pages of 4 KiB and 2 MiB mapped.
    mapped_4k: u64,
    mapped_2m: u64,
}

impl EptTables {
    /// Build the tables mapping every RAM region of `mem`; `large_pages` allows 2 MiB
    /// pages (IA32_VMX_EPT_VPID_CAP bit 16).
    pub fn build(
        mem: &GuestMemory,
        to_phys: HostPhys,
        large_pages: bool,
    ) -> Result<EptTables, EptError> {
        let root = Page::zeroed();
        let mut tables = EptTables {
            tables: alloc::vec![(to_phys(root.addr()), root)],
            children: BTreeMap::new(),
            mapped_4k: 0,
            mapped_2m: 0,
        };
        for region in mem.regions() {
            let hpa = to_phys(region.bytes().as_ptr() as u64);
            if hpa % KIB4 != 0 {
                return Err(EptError::UnalignedRegion { gpa: region.gpa() });
            }
            let mut offset = 0;
            while offset < region.size() {
                let gpa = region.gpa() + offset;
                let page_hpa = hpa + offset;
                let left = region.size() - offset;
                if large_pages && gpa % MIB2 == 0 && page_hpa % MIB2 == 0 && left >= MIB2 {
                    tables.map(gpa, page_hpa, 2, to_phys);
                    tables.mapped_2m += 1;
                    offset += MIB2;
                } else {
                    tables.map(gpa, page_hpa, 1, to_phys);
                    tables.mapped_4k += 1;
                    offset += KIB4;
                }
            }
        }
        Ok(tables)
    }

    /// The host-physical address of the PML4 (for the EPT pointer).
    pub fn root(&self) -> u64 {
        self.tables.first().map_or(0, |(phys, _)| *phys)
    }

    /// How many 4 KiB and 2 MiB pages are mapped.
    pub fn mapped(&self) -> (u64, u64) {
        (self.mapped_4k, self.mapped_2m)
    }

    /// How many table pages the hierarchy uses.
    pub fn table_count(&self) -> usize {
        self.tables.len()
    }

    /// The table below entry `slot` of table `table`, created if absent.
    fn child(&mut self, table: usize, slot: usize, to_phys: HostPhys) -> usize {
        if let Some(&i) = self.children.get(&(table, slot)) {
            return i;
        }
        let page = Page::zeroed();
        let phys = to_phys(page.addr());
        self.tables.push((phys, page));
        // Non-leaf entries grant everything; the leaves decide.
        self.tables[table].1 .0[slot] = phys | EPT_RWX;
        let index = self.tables.len() - 1;
        self.children.insert((table, slot), index);
        index
    }

    /// Map the page at `gpa` onto `hpa` with a leaf at `level` (1: 4 KiB PTE, 2: 2 MiB
    /// PDE).
    fn map(&mut self, gpa: u64, hpa: u64, level: u32, to_phys: HostPhys) {
        let mut table = 0;
        for depth in (level + 1..=4).rev() {
            let slot = ((gpa >> (12 + 9 * (depth - 1))) & 511) as usize;
            table = self.child(table, slot, to_phys);
        }
        let slot = ((gpa >> (12 + 9 * (level - 1))) & 511) as usize;
        let large = if level > 1 { EPT_LARGE } else { 0 };
        self.tables[table].1 .0[slot] = (hpa & EPT_ADDR_MASK) | large | EPT_MEMTYPE_WB | EPT_RWX;
    }

    /// Walk the tables as the processor does: the host-physical address `gpa` maps to,
    /// or `None` if it is not mapped.
    pub fn translate(&self, gpa: u64) -> Option<u64> {
        let mut table = 0;
        for level in (1..=4u32).rev() {
            let shift = 12 + 9 * (level - 1);
            let slot = ((gpa >> shift) & 511) as usize;
            let entry = self.tables.get(table)?.1 .0[slot];
            if entry & EPT_RWX == 0 {
                return None;
            }
            if level == 1 || entry & EPT_LARGE != 0 {
                let offset_mask = (1u64 << shift) - 1;
                return Some((entry & EPT_ADDR_MASK & !offset_mask) | (gpa & offset_mask));
            }
            let child = *self.children.get(&(table, slot))?;
            // The entry must point at the table the builder recorded.
            if self.tables.get(child)?.0 != entry & EPT_ADDR_MASK {
                return None;
            }
            table = child;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test heap does not page-align big buffers; these translations stand for a
    // host whose physical pages start at the buffer's page (or 2 MiB block).
    fn page_down(addr: u64) -> u64 {
        addr & !0xfff
    }
    fn block_down(addr: u64) -> u64 {
        addr & !0x1f_ffff
    }

    fn host(mem: &GuestMemory, gpa: u64, to_phys: HostPhys) -> u64 {
        let i = mem.region_index(gpa).unwrap();
        let r = &mem.regions()[i];
        to_phys(r.bytes().as_ptr() as u64) + (gpa - r.gpa())
    }

    #[test]
    fn maps_all_ram_and_nothing_else() {
        let mut mem = GuestMemory::with_ram(8 << 20).unwrap();
        mem.add_ram(0x1_0000_0000, 0x3000).unwrap();
        let ept = EptTables::build(&mem, page_down, true).unwrap();
        for gpa in [0, 0x1234, 0x9_f000, 0x10_0000, (8 << 20) - 1, 0x1_0000_2fff] {
            assert_eq!(
                ept.translate(gpa),
                Some(host(&mem, gpa, page_down)),
                "{gpa:#x}"
            );
        }
        for gpa in [
            8 << 20,
            0xfee0_0000,
            0xfec0_0000,
            0x1_0000_3000,
            0xffff_f000,
        ] {
            assert_eq!(ept.translate(gpa), None, "{gpa:#x}");
        }
        let (small, large) = ept.mapped();
        assert_eq!(small * 4096 + large * (2 << 20), (8 << 20) + 0x3000);
    }

    #[test]
    fn large_pages_where_both_sides_align() {
        let mem = GuestMemory::with_ram(6 << 20).unwrap();
        let ept = EptTables::build(&mem, block_down, true).unwrap();
        assert_eq!(ept.mapped(), (0, 3));
        // PML4 + PDPT + PD.
        assert_eq!(ept.table_count(), 3);
        assert_eq!(
            ept.translate(0x20_1234),
            Some(host(&mem, 0x20_1234, block_down))
        );
        let small = EptTables::build(&mem, block_down, false).unwrap();
        assert_eq!(small.mapped(), (1536, 0));
        // PML4 + PDPT + PD + 3 page tables.
        assert_eq!(small.table_count(), 6);
        assert_eq!(small.translate(0x5f_ffff), ept.translate(0x5f_ffff));
        // Guest-aligned but host-misaligned memory falls back to 4 KiB pages.
        let skewed = EptTables::build(&mem, |a| (a & !0x1f_ffff) + 0x1000, true).unwrap();
        assert_eq!(skewed.mapped(), (1536, 0));
    }

    #[test]
    fn leaf_entries_are_write_back_rwx() {
        let mem = GuestMemory::with_ram(1 << 20).unwrap();
        let ept = EptTables::build(&mem, page_down, false).unwrap();
        let pt = &ept.tables[3].1;
        assert_eq!(pt.0[0] & 0xff, EPT_MEMTYPE_WB | EPT_RWX);
        assert_eq!(pt.0[0] & EPT_ADDR_MASK, host(&mem, 0, page_down));
        assert_eq!(ept.tables[0].1 .0[0] & 0xff, EPT_RWX);
        assert_eq!(ept.tables[2].1 .0[0] & EPT_LARGE, 0);
        assert!(ept.root() % 4096 == 0);
    }

    #[test]
    fn unaligned_host_memory_is_refused() {
        let mem = GuestMemory::with_ram(1 << 20).unwrap();
        assert_eq!(
            EptTables::build(&mem, |a| (a & !0xfff) + 8, true).unwrap_err(),
            EptError::UnalignedRegion { gpa: 0 }
        );
    }
}

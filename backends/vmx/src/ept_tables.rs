//! The EPT hierarchy for a guest's memory map (SDM 3C 29.3.2).
//!
//! Guest RAM is mapped read/write/execute onto the host memory that backs it: every RAM
//! region of core's [`GuestMemory`] is one host allocation, so a region's guest-physical
//! range maps linearly onto its host-physical range. Each leaf carries the memory type
//! of its region (SDM 3C 29.3.7). The builder takes the largest page the processor
//! offers (IA32_VMX_EPT_VPID_CAP bit 17: 1 GiB, bit 16: 2 MiB) whose guest and host
//! addresses are both aligned to its size and which the region covers whole, and 4 KiB
//! pages elsewhere. Everything that is not RAM stays unmapped, so the guest's accesses
//! there exit as EPT violations (MMIO).

use crate::caps::EptVpidCaps;
use crate::page::{HostPhys, Page};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use opsvisor_core::mmu::memory::MemoryType;
use opsvisor_core::GuestMemory;

/// Read, write and execute (bits 2:0 of an EPT entry).
pub const EPT_RWX: u64 = 0b111;
/// The memory-type field of a leaf entry (bits 5:3).
pub const EPT_MEMTYPE_MASK: u64 = 7 << 3;
/// EPT memory type uncacheable in a leaf entry.
pub const EPT_MEMTYPE_UC: u64 = 0;
/// EPT memory type write-combining in a leaf entry.
pub const EPT_MEMTYPE_WC: u64 = 1 << 3;
/// EPT memory type write-through in a leaf entry.
pub const EPT_MEMTYPE_WT: u64 = 4 << 3;
/// EPT memory type write-protected in a leaf entry.
pub const EPT_MEMTYPE_WP: u64 = 5 << 3;
/// EPT memory type write-back in a leaf entry.
pub const EPT_MEMTYPE_WB: u64 = 6 << 3;
/// Bit 7 of a PDE or PDPTE: the entry maps a page.
pub const EPT_LARGE: u64 = 1 << 7;
/// Physical-address bits 51:12 of an entry.
pub const EPT_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const KIB4: u64 = 1 << 12;
const MIB2: u64 = 1 << 21;
const GIB1: u64 = 1 << 30;
/// The guest-physical addresses a 4-level walk translates: bits 47:0.
const GPA_LIMIT: u64 = 1 << 48;

/// The memory-type field (bits 5:3) of a leaf mapping memory of type `t`. Every type
/// core knows is a valid EPT leaf type (UC, WC, WT, WP and WB all are); the
/// paging-structure type in the EPT pointer is a separate matter, chosen from the
/// capabilities by [`EptVpidCaps::eptp`].
pub fn ept_memory_type(t: MemoryType) -> u64 {
    // An explicit match rather than `t as u64`: a type added to core must be mapped
    // here deliberately, not pass through an encoding that may be reserved in EPT.
    match t {
        MemoryType::Uncacheable => EPT_MEMTYPE_UC,
        MemoryType::WriteCombining => EPT_MEMTYPE_WC,
        MemoryType::WriteBack => EPT_MEMTYPE_WB,
    }
}

/// Why the tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptError {
    /// A region's host memory is not page-aligned, so it cannot be mapped page by page.
    UnalignedRegion {
        /// The region's guest-physical start.
        gpa: u64,
    },
    /// A region reaches beyond the 48-bit guest-physical addresses a 4-level EPT
    /// walk translates (core accepts up to 52 bits).
    GuestAddressTooHigh {
        /// The region's guest-physical start.
        gpa: u64,
    },
    /// A region's host memory ends beyond the 52-bit physical addresses an EPT entry
    /// holds.
    HostAddressTooHigh {
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
            EptError::GuestAddressTooHigh { gpa } => write!(
                f,
                "guest RAM region at {gpa:#x} reaches beyond 2^48, which 4-level EPT cannot map"
            ),
            EptError::HostAddressTooHigh { gpa } => write!(
                f,
                "guest RAM region at {gpa:#x} is backed by host memory above 2^52"
            ),
        }
    }
}

/// One guest RAM region as the builder needs it: where it is in the guest, where its
/// memory is in the host (virtual, before `to_phys`), how big, of which type.
#[derive(Clone, Copy, Debug)]
struct RamRange {
    gpa: u64,
    host: u64,
    size: u64,
    mem_type: MemoryType,
}

/// An EPT hierarchy (4 levels) and the pages it is made of.
#[derive(Debug)]
pub struct EptTables {
    /// Every table, the PML4 first, with its host-physical address.
    tables: Vec<(u64, Box<Page>)>,
    /// Which table each non-leaf entry points to: (table, slot) to table index (the
    /// entries hold physical addresses, which the builder does not translate back).
    children: BTreeMap<(usize, usize), usize>,
    /// Pages mapped at each leaf level: 4 KiB, 2 MiB, 1 GiB.
    mapped: [u64; 3],
}

impl EptTables {
    /// Build the tables mapping every RAM region of `mem` with its memory type; `caps`
    /// (IA32_VMX_EPT_VPID_CAP) says whether 2 MiB (bit 16) and 1 GiB (bit 17) pages may
    /// be used.
    pub fn build(
        mem: &GuestMemory,
        to_phys: HostPhys,
        caps: EptVpidCaps,
    ) -> Result<EptTables, EptError> {
        let ranges = mem.regions().iter().map(|r| RamRange {
            gpa: r.gpa(),
            host: r.bytes().as_ptr() as u64,
            size: r.size(),
            mem_type: r.mem_type(),
        });
        Self::build_ranges(ranges, to_phys, caps)
    }

    /// [`EptTables::build`] over the regions' addresses alone (core vouches that every
    /// region is page-aligned, non-empty and below 2^52 in the guest).
    fn build_ranges(
        ranges: impl IntoIterator<Item = RamRange>,
        to_phys: HostPhys,
        caps: EptVpidCaps,
    ) -> Result<EptTables, EptError> {
        let root = Page::zeroed();
        let mut tables = EptTables {
            tables: alloc::vec![(to_phys(root.addr()), root)],
            children: BTreeMap::new(),
            mapped: [0; 3],
        };
        // Leaf sizes to try, largest first, with their level (3: PDPTE, 2: PDE, 1: PTE).
        let sizes = [
            (GIB1, 3, caps.pages_1g()),
            (MIB2, 2, caps.pages_2m()),
            (KIB4, 1, true),
        ];
        for range in ranges {
            // Above 2^48 the walk would wrap onto low addresses and alias other memory.
            if range
                .gpa
                .checked_add(range.size)
                .is_none_or(|end| end > GPA_LIMIT)
            {
                return Err(EptError::GuestAddressTooHigh { gpa: range.gpa });
            }
            let hpa = to_phys(range.host);
            if hpa % KIB4 != 0 {
                return Err(EptError::UnalignedRegion { gpa: range.gpa });
            }
            // The last byte must fit the entry's address field, or a leaf would wrap.
            if hpa
                .checked_add(range.size)
                .is_none_or(|end| end > EPT_ADDR_MASK + KIB4)
            {
                return Err(EptError::HostAddressTooHigh { gpa: range.gpa });
            }
            let flags = ept_memory_type(range.mem_type) | EPT_RWX;
            let mut offset = 0;
            while offset < range.size {
                let gpa = range.gpa + offset;
                let page_hpa = hpa + offset;
                let left = range.size - offset;
                // A large page must not reach past the region, whose neighbour may be
                // MMIO or memory of another type.
                let (size, level) = sizes
                    .iter()
                    .find(|&&(size, _, offered)| {
                        offered && gpa % size == 0 && page_hpa % size == 0 && left >= size
                    })
                    .map_or((KIB4, 1), |&(size, level, _)| (size, level));
                tables.map(gpa, page_hpa, level, flags, to_phys);
                tables.mapped[level as usize - 1] += 1;
                offset += size;
            }
        }
        Ok(tables)
    }

    /// The host-physical address of the PML4 (for the EPT pointer).
    pub fn root(&self) -> u64 {
        self.tables.first().map_or(0, |(phys, _)| *phys)
    }

    /// How many 4 KiB, 2 MiB and 1 GiB pages are mapped.
    pub fn mapped(&self) -> (u64, u64, u64) {
        (self.mapped[0], self.mapped[1], self.mapped[2])
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
    /// PDE, 3: 1 GiB PDPTE) carrying `flags` (memory type and permissions).
    fn map(&mut self, gpa: u64, hpa: u64, level: u32, flags: u64, to_phys: HostPhys) {
        let mut table = 0;
        for depth in (level + 1..=4).rev() {
            let slot = ((gpa >> (12 + 9 * (depth - 1))) & 511) as usize;
            table = self.child(table, slot, to_phys);
        }
        let slot = ((gpa >> (12 + 9 * (level - 1))) & 511) as usize;
        let large = if level > 1 { EPT_LARGE } else { 0 };
        // The memory type is in the leaf only (IPAT clear): the guest's PAT still
        // combines with it, as it does with the MTRRs on bare metal.
        self.tables[table].1 .0[slot] = (hpa & EPT_ADDR_MASK) | large | flags;
    }

    /// Walk the tables as the processor does: the host-physical address `gpa` maps to,
    /// or `None` if it is not mapped.
    pub fn translate(&self, gpa: u64) -> Option<u64> {
        if gpa >= GPA_LIMIT {
            return None;
        }
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

    // IA32_VMX_EPT_VPID_CAP with only the page-size bits of interest.
    const NO_LARGE: EptVpidCaps = EptVpidCaps(0);
    const ONLY_2M: EptVpidCaps = EptVpidCaps(1 << 16);
    const ONLY_1G: EptVpidCaps = EptVpidCaps(1 << 17);
    const BOTH: EptVpidCaps = EptVpidCaps(3 << 16);

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

    fn range(gpa: u64, host: u64, size: u64, mem_type: MemoryType) -> RamRange {
        RamRange {
            gpa,
            host,
            size,
            mem_type,
        }
    }

    /// Synthetic regions need no memory behind them: the builder only reads their
    /// addresses. The tables' own pages are real, and identity-translated.
    fn build(ranges: &[RamRange], caps: EptVpidCaps) -> EptTables {
        EptTables::build_ranges(ranges.iter().copied(), crate::page::identity, caps).unwrap()
    }

    /// What a leaf of the hierarchy maps.
    #[derive(Debug, PartialEq, Eq)]
    struct Leaf {
        hpa: u64,
        /// 1: 4 KiB, 2: 2 MiB, 3: 1 GiB.
        level: u32,
        mem_type: u64,
    }

    /// A walk as the processor does it, independent of the builder's bookkeeping: each
    /// non-leaf entry's address is looked up among the table pages. It also checks the
    /// entries are well-formed: reserved bits of non-leaf entries clear, no large page
    /// in the PML4, a leaf's address aligned to its size, a defined memory type.
    fn walk(ept: &EptTables, gpa: u64) -> Option<Leaf> {
        if gpa >= 1 << 48 {
            return None;
        }
        let mut phys = ept.root();
        for level in (1..=4u32).rev() {
            let table = &ept.tables.iter().find(|(p, _)| *p == phys).unwrap().1;
            let shift = 12 + 9 * (level - 1);
            let entry = table.0[((gpa >> shift) & 511) as usize];
            if entry & EPT_RWX == 0 {
                assert_eq!(entry, 0, "non-present entry with bits at {gpa:#x}");
                return None;
            }
            assert_eq!(entry & EPT_RWX, EPT_RWX);
            if level == 1 || entry & EPT_LARGE != 0 {
                assert!(level <= 3, "large page in the PML4");
                let offset_mask = (1u64 << shift) - 1;
                let base = entry & EPT_ADDR_MASK;
                assert_eq!(base & offset_mask, 0, "reserved address bits in leaf");
                let mem_type = entry & EPT_MEMTYPE_MASK;
                assert!(
                    [
                        EPT_MEMTYPE_UC,
                        EPT_MEMTYPE_WC,
                        EPT_MEMTYPE_WT,
                        EPT_MEMTYPE_WP,
                        EPT_MEMTYPE_WB
                    ]
                    .contains(&mem_type),
                    "reserved memory type {mem_type:#x}"
                );
                return Some(Leaf {
                    hpa: base | (gpa & offset_mask),
                    level,
                    mem_type,
                });
            }
            // Bits 7:3 of an entry pointing to a table are reserved.
            assert_eq!(entry & 0xf8, 0, "reserved bits in a non-leaf entry");
            phys = entry & EPT_ADDR_MASK;
        }
        None
    }

    #[test]
    fn maps_all_ram_and_nothing_else() {
        let mut mem = GuestMemory::with_ram(8 << 20).unwrap();
        mem.add_ram(0x1_0000_0000, 0x3000).unwrap();
        let ept = EptTables::build(&mem, page_down, ONLY_2M).unwrap();
        for gpa in [0, 0x1234, 0x9_f000, 0x10_0000, (8 << 20) - 1, 0x1_0000_2fff] {
            assert_eq!(
                ept.translate(gpa),
                Some(host(&mem, gpa, page_down)),
                "{gpa:#x}"
            );
            assert_eq!(walk(&ept, gpa).unwrap().hpa, host(&mem, gpa, page_down));
        }
        for gpa in [
            8 << 20,
            0xfee0_0000,
            0xfec0_0000,
            0x1_0000_3000,
            0xffff_f000,
        ] {
            assert_eq!(ept.translate(gpa), None, "{gpa:#x}");
            assert_eq!(walk(&ept, gpa), None, "{gpa:#x}");
        }
        let (small, large, huge) = ept.mapped();
        assert_eq!(huge, 0);
        assert_eq!(small * 4096 + large * (2 << 20), (8 << 20) + 0x3000);
    }

    #[test]
    fn large_pages_where_both_sides_align() {
        let mem = GuestMemory::with_ram(6 << 20).unwrap();
        let ept = EptTables::build(&mem, block_down, ONLY_2M).unwrap();
        assert_eq!(ept.mapped(), (0, 3, 0));
        // PML4 + PDPT + PD.
        assert_eq!(ept.table_count(), 3);
        assert_eq!(
            ept.translate(0x20_1234),
            Some(host(&mem, 0x20_1234, block_down))
        );
        let small = EptTables::build(&mem, block_down, NO_LARGE).unwrap();
        assert_eq!(small.mapped(), (1536, 0, 0));
        // PML4 + PDPT + PD + 3 page tables.
        assert_eq!(small.table_count(), 6);
        assert_eq!(small.translate(0x5f_ffff), ept.translate(0x5f_ffff));
        // Guest-aligned but host-misaligned memory falls back to 4 KiB pages.
        let skewed = EptTables::build(&mem, |a| (a & !0x1f_ffff) + 0x1000, ONLY_2M).unwrap();
        assert_eq!(skewed.mapped(), (1536, 0, 0));
    }

    #[test]
    fn leaf_entries_are_write_back_rwx() {
        let mem = GuestMemory::with_ram(1 << 20).unwrap();
        let ept = EptTables::build(&mem, page_down, NO_LARGE).unwrap();
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
            EptTables::build(&mem, |a| (a & !0xfff) + 8, ONLY_2M).unwrap_err(),
            EptError::UnalignedRegion { gpa: 0 }
        );
    }

    #[test]
    fn host_memory_beyond_52_bits_is_refused() {
        let top = 1u64 << 52;
        let r = [range(
            0x10_0000,
            top - 0x1000,
            0x2000,
            MemoryType::WriteBack,
        )];
        let err = EptTables::build_ranges(r, crate::page::identity, BOTH).unwrap_err();
        assert_eq!(err, EptError::HostAddressTooHigh { gpa: 0x10_0000 });
        // The last page below 2^52 is fine.
        let r = [range(
            0x10_0000,
            top - 0x1000,
            0x1000,
            MemoryType::WriteBack,
        )];
        let ept = build(&r, BOTH);
        assert_eq!(walk(&ept, 0x10_0fff).unwrap().hpa, top - 1);
        let r = [range(0, !0xfff, 0x2000, MemoryType::WriteBack)];
        assert!(EptTables::build_ranges(r, crate::page::identity, BOTH).is_err());
    }

    #[test]
    fn guest_memory_beyond_48_bits_is_refused() {
        // Core accepts regions up to 2^52; 4-level EPT reaches 2^48, and a region
        // above would alias guest-physical 0.
        let mut mem = GuestMemory::with_ram(0x1000).unwrap();
        mem.add_ram(1 << 48, 0x1000).unwrap();
        assert_eq!(
            EptTables::build(&mem, page_down, BOTH).unwrap_err(),
            EptError::GuestAddressTooHigh { gpa: 1 << 48 }
        );
        let r = [range((1 << 48) - 0x1000, 0, 0x2000, MemoryType::WriteBack)];
        assert!(EptTables::build_ranges(r, crate::page::identity, BOTH).is_err());
        let r = [range(
            (1 << 48) - GIB1,
            64 * GIB1,
            GIB1,
            MemoryType::WriteBack,
        )];
        let ept = build(&r, BOTH);
        assert_eq!(walk(&ept, (1 << 48) - 1).unwrap().hpa, 65 * GIB1 - 1);
        assert_eq!(walk(&ept, 0), None);
        assert_eq!(ept.translate(1 << 48), None);
    }

    #[test]
    fn page_size_follows_the_capabilities() {
        // 2 GiB at 1 GiB in the guest, backed at 64 GiB in the host: both sides
        // 1 GiB-aligned.
        let r = [range(GIB1, 64 * GIB1, 2 * GIB1, MemoryType::WriteBack)];
        let ept = build(&r, BOTH);
        assert_eq!(ept.mapped(), (0, 0, 2));
        // PML4 + PDPT, no page directory at all.
        assert_eq!(ept.table_count(), 2);
        let leaf = walk(&ept, GIB1 + 0x1234_5678).unwrap();
        assert_eq!(leaf.level, 3);
        assert_eq!(leaf.hpa, 64 * GIB1 + 0x1234_5678);

        let ept = build(&r, ONLY_2M);
        assert_eq!(ept.mapped(), (0, 1024, 0));
        // PML4 + PDPT + 2 page directories.
        assert_eq!(ept.table_count(), 4);
        let leaf = walk(&ept, 2 * GIB1 + 0x1234_5678).unwrap();
        assert_eq!((leaf.level, leaf.hpa), (2, 65 * GIB1 + 0x1234_5678));

        let ept = build(&r, NO_LARGE);
        assert_eq!(ept.mapped(), (2 * GIB1 / KIB4, 0, 0));
        // PML4 + PDPT + 2 page directories + 1024 page tables.
        assert_eq!(ept.table_count(), 4 + 1024);
        let leaf = walk(&ept, 3 * GIB1 - 1).unwrap();
        assert_eq!((leaf.level, leaf.hpa), (1, 66 * GIB1 - 1));

        // 1 GiB pages without 2 MiB ones: the 2 MiB tail goes by 4 KiB.
        let r = [range(GIB1, 64 * GIB1, GIB1 + MIB2, MemoryType::WriteBack)];
        assert_eq!(build(&r, ONLY_1G).mapped(), (512, 0, 1));
        assert_eq!(build(&r, BOTH).mapped(), (0, 1, 1));
    }

    #[test]
    fn the_skylake_capabilities_offer_both_large_sizes() {
        let caps = crate::caps::fixtures::CORE_I7_SKYLAKE_X
            .ept_vpid_cap
            .map(EptVpidCaps)
            .unwrap();
        let r = [range(0, 64 * GIB1, GIB1 + MIB2, MemoryType::WriteBack)];
        assert_eq!(build(&r, caps).mapped(), (0, 1, 1));
    }

    #[test]
    fn unaligned_region_falls_back_page_by_page() {
        // Starts two 4 KiB pages below a 2 MiB boundary that is itself 2 MiB below a
        // 1 GiB boundary; ends one 4 KiB page past a 2 MiB block past that 1 GiB.
        let gpa = GIB1 - MIB2 - 2 * KIB4;
        let size = 2 * KIB4 + MIB2 + GIB1 + MIB2 + KIB4;
        let host = 64 * GIB1 + gpa;
        let ept = build(&[range(gpa, host, size, MemoryType::WriteBack)], BOTH);
        assert_eq!(ept.mapped(), (3, 2, 1));
        for (at, level) in [
            (gpa, 1),
            (gpa + KIB4, 1),
            (GIB1 - MIB2, 2),
            (GIB1 - 1, 2),
            (GIB1, 3),
            (2 * GIB1 - 1, 3),
            (2 * GIB1, 2),
            (2 * GIB1 + MIB2, 1),
            (gpa + size - 1, 1),
        ] {
            let leaf = walk(&ept, at).unwrap();
            assert_eq!(leaf.level, level, "{at:#x}");
            assert_eq!(leaf.hpa, host + (at - gpa), "{at:#x}");
        }
        assert_eq!(walk(&ept, gpa - 1), None);
        assert_eq!(walk(&ept, gpa + size), None);

        // Host 2 MiB- but not 1 GiB-aligned with the guest: 2 MiB pages where 1 GiB
        // would have fitted.
        let r = [range(GIB1, 64 * GIB1 + MIB2, GIB1, MemoryType::WriteBack)];
        assert_eq!(build(&r, BOTH).mapped(), (0, 512, 0));
        // Host 4 KiB-aligned only: 4 KiB pages throughout.
        let r = [range(
            GIB1,
            64 * GIB1 + KIB4,
            4 * MIB2,
            MemoryType::WriteBack,
        )];
        assert_eq!(build(&r, BOTH).mapped(), (2048, 0, 0));
    }

    #[test]
    fn memory_types_reach_their_leaves() {
        assert_eq!(ept_memory_type(MemoryType::Uncacheable), 0);
        assert_eq!(ept_memory_type(MemoryType::WriteCombining), 1 << 3);
        assert_eq!(ept_memory_type(MemoryType::WriteBack), 6 << 3);
        // Write-back RAM in 1 GiB, 2 MiB and 4 KiB pages, an uncacheable 1 GiB region
        // right after it, and a write-combining region sharing a page table with RAM.
        let ranges = [
            range(0, 64 * GIB1, GIB1 + MIB2 + 0x3000, MemoryType::WriteBack),
            range(
                GIB1 + MIB2 + 0x3000,
                80 * GIB1,
                0x5000,
                MemoryType::WriteCombining,
            ),
            range(2 * GIB1, 96 * GIB1, GIB1, MemoryType::Uncacheable),
        ];
        let ept = build(&ranges, BOTH);
        for (gpa, level, mem_type) in [
            (0, 3, EPT_MEMTYPE_WB),
            (GIB1, 2, EPT_MEMTYPE_WB),
            (GIB1 + MIB2 + 0x2fff, 1, EPT_MEMTYPE_WB),
            (GIB1 + MIB2 + 0x3000, 1, EPT_MEMTYPE_WC),
            (GIB1 + MIB2 + 0x7fff, 1, EPT_MEMTYPE_WC),
            (2 * GIB1, 3, EPT_MEMTYPE_UC),
            (3 * GIB1 - 1, 3, EPT_MEMTYPE_UC),
        ] {
            let leaf = walk(&ept, gpa).unwrap();
            assert_eq!((leaf.level, leaf.mem_type), (level, mem_type), "{gpa:#x}");
        }
        // The same regions in 4 KiB pages keep their types.
        let ept = build(&ranges, NO_LARGE);
        assert_eq!(
            walk(&ept, 2 * GIB1 + 0x1000).unwrap().mem_type,
            EPT_MEMTYPE_UC
        );
        assert_eq!(walk(&ept, GIB1 - 1).unwrap().mem_type, EPT_MEMTYPE_WB);
        assert_eq!(
            walk(&ept, GIB1 + MIB2 + 0x4000).unwrap().mem_type,
            EPT_MEMTYPE_WC
        );
    }

    #[test]
    fn walks_land_on_the_backing_host_memory() {
        // Regions of every alignment; the host layout differs from the guest's.
        let ranges = [
            range(0, 64 * GIB1, 0xa_0000, MemoryType::WriteBack),
            range(
                0x10_0000,
                65 * GIB1 + 0x10_0000,
                3 * GIB1 - 0x10_0000,
                MemoryType::WriteBack,
            ),
            range(
                0xfd00_0000,
                70 * GIB1 + 0x5000,
                0x10_0000,
                MemoryType::WriteCombining,
            ),
            range(
                4 * GIB1,
                72 * GIB1,
                5 * GIB1 + 0x1000,
                MemoryType::WriteBack,
            ),
            range(
                0xa000_0000_0000,
                80 * GIB1 + MIB2,
                3 * MIB2,
                MemoryType::Uncacheable,
            ),
        ];
        for caps in [NO_LARGE, ONLY_2M, ONLY_1G, BOTH] {
            let ept = build(&ranges, caps);
            let expect = |gpa: u64| {
                ranges
                    .iter()
                    .find(|r| gpa >= r.gpa && gpa - r.gpa < r.size)
                    .map(|r| (r.host + (gpa - r.gpa), ept_memory_type(r.mem_type)))
            };
            // Every region's edges and a pseudo-random sample of the address space
            // below 2^50, where the regions are dense enough to be hit.
            let mut samples = Vec::new();
            for r in &ranges {
                samples.extend([
                    r.gpa,
                    r.gpa + r.size - 1,
                    r.gpa + r.size,
                    r.gpa.wrapping_sub(1),
                ]);
            }
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..4000 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                // Mostly below 12 GiB, sometimes anywhere below 2^52.
                let gpa = if x >> 63 == 0 {
                    (x >> 20) % (12 * GIB1)
                } else {
                    (x >> 12) & ((1 << 52) - 1)
                };
                samples.push(gpa);
            }
            let (mut hits, mut misses) = (0, 0);
            for gpa in samples.into_iter().filter(|g| *g < 1 << 52) {
                let got = walk(&ept, gpa).map(|l| (l.hpa, l.mem_type));
                assert_eq!(got, expect(gpa), "{gpa:#x} with {caps:?}");
                assert_eq!(ept.translate(gpa), got.map(|g| g.0), "{gpa:#x}");
                if got.is_some() {
                    hits += 1;
                } else {
                    misses += 1;
                }
            }
            // The sample exercised both mapped and unmapped addresses.
            assert!(hits > 1000 && misses > 500, "{hits} {misses}");
        }
    }
}

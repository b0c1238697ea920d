//! Second-level address translation: the tables that map guest-physical addresses onto
//! the host memory behind them, for Intel's EPT (SDM 3C 29.3.2) and AMD's nested page
//! tables (APM 2 15.25).
//!
//! Both are 4-level radix trees of 512 eight-byte entries per 4 KiB page, indexed by the
//! same guest-physical address bits, with leaves at the PTE (4 KiB), PDE (2 MiB, bit 7
//! set) or PDPTE (1 GiB, bit 7 set). They differ only in how an entry is spelled, which
//! [`SlatFormat`] keeps in one place:
//!
//! | | EPT | NPT |
//! |---|---|---|
//! | present | any of R, W, X (bits 2:0) | P (bit 0) |
//! | entry pointing to a table | address, R W X | address, P RW US (a nested walk is a user access) |
//! | leaf | address, R W X, bit 7 if large, memory type in bits 5:3 | address, P RW US, bit 7 if large, the host PAT index in PWT/PCD |
//!
//! Guest RAM is mapped read/write/execute onto the host memory that backs it: every RAM
//! region of [`GuestMemory`] is one host allocation, so a region's guest-physical range
//! maps linearly onto its host-physical range. The builder takes the largest page the
//! processor offers ([`PageSizes`]) whose guest and host addresses are both aligned to
//! its size and which the region covers whole, and 4 KiB pages elsewhere. Everything
//! that is not RAM stays unmapped, so the guest's accesses there exit (EPT violation,
//! nested page fault) and become MMIO.

use crate::mmu::memory::{GuestMemory, MemoryType};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

/// Translates a host virtual address (of a table this builder allocated, or of guest
/// RAM) into the host physical address the processor walks. An identity-mapped host's
/// translation is the identity.
pub type HostPhys = fn(u64) -> u64;

/// One 4 KiB table, 4 KiB-aligned, as the processor reads it.
#[derive(Clone)]
#[repr(C, align(4096))]
pub struct TablePage(pub [u64; 512]);

impl fmt::Debug for TablePage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TablePage")
    }
}

/// Bit 7 of a PDE or PDPTE in both formats: the entry maps a page.
pub const LARGE: u64 = 1 << 7;
/// Physical-address bits 51:12 of an entry, in both formats.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// EPT read, write and execute (bits 2:0).
pub const EPT_RWX: u64 = 0b111;
/// EPT: the memory-type field of a leaf (bits 5:3).
pub const EPT_MEMTYPE_MASK: u64 = 7 << 3;
/// EPT memory type uncacheable.
pub const EPT_MEMTYPE_UC: u64 = 0;
/// EPT memory type write-combining.
pub const EPT_MEMTYPE_WC: u64 = 1 << 3;
/// EPT memory type write-through.
pub const EPT_MEMTYPE_WT: u64 = 4 << 3;
/// EPT memory type write-protected.
pub const EPT_MEMTYPE_WP: u64 = 5 << 3;
/// EPT memory type write-back.
pub const EPT_MEMTYPE_WB: u64 = 6 << 3;

/// NPT present (P).
pub const NPT_PRESENT: u64 = 1 << 0;
/// NPT writable (RW).
pub const NPT_WRITE: u64 = 1 << 1;
/// NPT user (US): every nested walk is a user access (APM 2 15.25.5), so every entry
/// carries it.
pub const NPT_USER: u64 = 1 << 2;
/// NPT page-level write-through (PWT): bit 0 of the host PAT index.
pub const NPT_PWT: u64 = 1 << 3;
/// NPT page-level cache disable (PCD): bit 1 of the host PAT index.
pub const NPT_PCD: u64 = 1 << 4;
/// P, RW and US: what every NPT entry the builder writes grants.
pub const NPT_PRW_US: u64 = NPT_PRESENT | NPT_WRITE | NPT_USER;

const KIB4: u64 = 1 << 12;
const MIB2: u64 = 1 << 21;
const GIB1: u64 = 1 << 30;
/// The guest-physical addresses a 4-level walk translates: bits 47:0.
pub const GPA_LIMIT: u64 = 1 << 48;

/// Which processor's tables these are: the only place the two formats differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlatFormat {
    /// Intel's extended page tables.
    Ept,
    /// AMD's nested page tables (the long-mode page-table format, walked with the
    /// host's paging mode and PAT).
    Npt,
}

impl SlatFormat {
    /// The format's name for messages ("EPT", "NPT").
    pub fn name(self) -> &'static str {
        match self {
            SlatFormat::Ept => "EPT",
            SlatFormat::Npt => "NPT",
        }
    }

    /// The bits of a leaf mapping memory of type `t`.
    ///
    /// EPT: the memory type itself (bits 5:3; the guest's PAT still combines with it,
    /// IPAT clear, as it combines with the MTRRs on bare metal). NPT: the host PAT
    /// entry selected by PWT/PCD (the PAT bit stays clear), from the power-on PAT every
    /// host keeps in entries 0-3 (WB, WT, UC-, UC): write-back is entry 0, uncacheable
    /// entry 3. That PAT has no write-combining entry, so write-combining regions take
    /// entry 3 too: the nested type combines with the guest's PAT as an MTRR type does
    /// with PAT (APM 2 15.25.8), and a host UC with a guest WC gives WC, so a guest
    /// that maps its frame buffer WC gets WC, and one that does not gets no caching.
    pub fn memory_type_bits(self, t: MemoryType) -> u64 {
        // Explicit matches rather than `t as u64`: a type added to core must be mapped
        // here deliberately.
        match (self, t) {
            (SlatFormat::Ept, MemoryType::Uncacheable) => EPT_MEMTYPE_UC,
            (SlatFormat::Ept, MemoryType::WriteCombining) => EPT_MEMTYPE_WC,
            (SlatFormat::Ept, MemoryType::WriteBack) => EPT_MEMTYPE_WB,
            (SlatFormat::Npt, MemoryType::WriteBack) => 0,
            (SlatFormat::Npt, MemoryType::Uncacheable | MemoryType::WriteCombining) => {
                NPT_PCD | NPT_PWT
            }
        }
    }

    /// An entry pointing to the table at host-physical `phys`: it grants everything, the
    /// leaves decide.
    pub fn table_entry(self, phys: u64) -> u64 {
        (phys & ADDR_MASK)
            | match self {
                SlatFormat::Ept => EPT_RWX,
                SlatFormat::Npt => NPT_PRW_US,
            }
    }

    /// A leaf at `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB) mapping host-physical `hpa`,
    /// readable, writable and executable, of memory type `t`.
    pub fn leaf_entry(self, hpa: u64, level: u32, t: MemoryType) -> u64 {
        let large = if level > 1 { LARGE } else { 0 };
        let access = match self {
            SlatFormat::Ept => EPT_RWX,
            SlatFormat::Npt => NPT_PRW_US,
        };
        (hpa & ADDR_MASK) | large | access | self.memory_type_bits(t)
    }

    /// Whether `entry` is present (maps something or points to a table).
    pub fn present(self, entry: u64) -> bool {
        match self {
            SlatFormat::Ept => entry & EPT_RWX != 0,
            SlatFormat::Npt => entry & NPT_PRESENT != 0,
        }
    }
}

/// The page sizes the processor offers besides 4 KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageSizes {
    /// 2 MiB pages (EPT: IA32_VMX_EPT_VPID_CAP bit 16; NPT: always, as long mode has
    /// them).
    pub m2: bool,
    /// 1 GiB pages (EPT: IA32_VMX_EPT_VPID_CAP bit 17; NPT: CPUID 0x80000001 EDX bit 26).
    pub g1: bool,
}

/// Why the tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlatError {
    /// A region's host memory is not page-aligned, so it cannot be mapped page by page.
    UnalignedRegion {
        /// The region's guest-physical start.
        gpa: u64,
    },
    /// A region reaches beyond the 48-bit guest-physical addresses a 4-level walk
    /// translates (core accepts up to 52 bits).
    GuestAddressTooHigh {
        /// The region's guest-physical start.
        gpa: u64,
    },
    /// A region's host memory ends beyond the 52-bit physical addresses an entry holds.
    HostAddressTooHigh {
        /// The region's guest-physical start.
        gpa: u64,
    },
}

impl fmt::Display for SlatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlatError::UnalignedRegion { gpa } => write!(
                f,
                "guest RAM region at {gpa:#x} is not backed by page-aligned host memory"
            ),
            SlatError::GuestAddressTooHigh { gpa } => write!(
                f,
                "guest RAM region at {gpa:#x} reaches beyond 2^48, which 4-level tables cannot map"
            ),
            SlatError::HostAddressTooHigh { gpa } => write!(
                f,
                "guest RAM region at {gpa:#x} is backed by host memory above 2^52"
            ),
        }
    }
}

/// One guest RAM region as the builder needs it: where it is in the guest, where its
/// memory is in the host (virtual, before the [`HostPhys`] translation), how big, of
/// which type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    /// Guest-physical start (page-aligned).
    pub gpa: u64,
    /// Host virtual address of the first byte.
    pub host: u64,
    /// Size in bytes (a multiple of 4 KiB).
    pub size: u64,
    /// Memory type.
    pub mem_type: MemoryType,
}

/// A 4-level hierarchy of one format and the pages it is made of.
#[derive(Debug)]
pub struct SlatTables {
    format: SlatFormat,
    /// Every table, the root first, with its host-physical address.
    tables: Vec<(u64, Box<TablePage>)>,
    /// Which table each non-leaf entry points to: (table, slot) to table index (the
    /// entries hold physical addresses, which the builder does not translate back).
    children: BTreeMap<(usize, usize), usize>,
    /// Pages mapped at each leaf level: 4 KiB, 2 MiB, 1 GiB.
    mapped: [u64; 3],
}

impl SlatTables {
    /// Build the tables of `format` mapping every RAM region of `mem` with its memory
    /// type, with the large pages `sizes` allows.
    pub fn build(
        mem: &GuestMemory,
        format: SlatFormat,
        to_phys: HostPhys,
        sizes: PageSizes,
    ) -> Result<SlatTables, SlatError> {
        let ranges = mem.regions().iter().map(|r| RamRange {
            gpa: r.gpa(),
            host: r.bytes().as_ptr() as u64,
            size: r.size(),
            mem_type: r.mem_type(),
        });
        Self::build_ranges(ranges, format, to_phys, sizes)
    }

    /// [`SlatTables::build`] over the regions' addresses alone. The ranges must be
    /// page-aligned in the guest, non-empty and disjoint, as core's memory map vouches;
    /// the host side is checked here.
    pub fn build_ranges(
        ranges: impl IntoIterator<Item = RamRange>,
        format: SlatFormat,
        to_phys: HostPhys,
        sizes: PageSizes,
    ) -> Result<SlatTables, SlatError> {
        let root = Box::new(TablePage([0; 512]));
        let mut tables = SlatTables {
            format,
            tables: alloc::vec![(to_phys(root.0.as_ptr() as u64), root)],
            children: BTreeMap::new(),
            mapped: [0; 3],
        };
        // Leaf sizes to try, largest first, with their level (3: PDPTE, 2: PDE, 1: PTE).
        let leaf_sizes = [(GIB1, 3, sizes.g1), (MIB2, 2, sizes.m2), (KIB4, 1, true)];
        for range in ranges {
            // Above 2^48 the walk would wrap onto low addresses and alias other memory.
            if range
                .gpa
                .checked_add(range.size)
                .is_none_or(|end| end > GPA_LIMIT)
            {
                return Err(SlatError::GuestAddressTooHigh { gpa: range.gpa });
            }
            let hpa = to_phys(range.host);
            if hpa % KIB4 != 0 {
                return Err(SlatError::UnalignedRegion { gpa: range.gpa });
            }
            // The last byte must fit the entry's address field, or a leaf would wrap.
            if hpa
                .checked_add(range.size)
                .is_none_or(|end| end > ADDR_MASK + KIB4)
            {
                return Err(SlatError::HostAddressTooHigh { gpa: range.gpa });
            }
            let mut offset = 0;
            while offset < range.size {
                let gpa = range.gpa + offset;
                let page_hpa = hpa + offset;
                let left = range.size - offset;
                // A large page must not reach past the region, whose neighbour may be
                // MMIO or memory of another type.
                let (size, level) = leaf_sizes
                    .iter()
                    .find(|&&(size, _, offered)| {
                        offered && gpa % size == 0 && page_hpa % size == 0 && left >= size
                    })
                    .map_or((KIB4, 1), |&(size, level, _)| (size, level));
                tables.map(gpa, page_hpa, level, range.mem_type, to_phys);
                tables.mapped[level as usize - 1] += 1;
                offset += size;
            }
        }
        Ok(tables)
    }

    /// The format of the entries.
    pub fn format(&self) -> SlatFormat {
        self.format
    }

    /// The host-physical address of the root table (for the EPT pointer or nCR3).
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

    /// The entries of the table at host-physical `phys`, if it is one of these tables
    /// (for walks that follow the entries' addresses, as the processor does).
    pub fn table_at(&self, phys: u64) -> Option<&[u64; 512]> {
        self.tables
            .iter()
            .find(|(p, _)| *p == phys)
            .map(|(_, page)| &page.0)
    }

    /// The table below entry `slot` of table `table`, created if absent.
    fn child(&mut self, table: usize, slot: usize, to_phys: HostPhys) -> usize {
        if let Some(&i) = self.children.get(&(table, slot)) {
            return i;
        }
        let page = Box::new(TablePage([0; 512]));
        let phys = to_phys(page.0.as_ptr() as u64);
        self.tables.push((phys, page));
        if let Some((_, parent)) = self.tables.get_mut(table) {
            if let Some(entry) = parent.0.get_mut(slot) {
                *entry = self.format.table_entry(phys);
            }
        }
        let index = self.tables.len() - 1;
        self.children.insert((table, slot), index);
        index
    }

    /// Map the page at `gpa` onto `hpa` with a leaf at `level` (1: 4 KiB PTE, 2: 2 MiB
    /// PDE, 3: 1 GiB PDPTE) of memory type `t`.
    fn map(&mut self, gpa: u64, hpa: u64, level: u32, t: MemoryType, to_phys: HostPhys) {
        let mut table = 0;
        for depth in (level + 1..=4).rev() {
            let slot = ((gpa >> (12 + 9 * (depth - 1))) & 511) as usize;
            table = self.child(table, slot, to_phys);
        }
        let slot = ((gpa >> (12 + 9 * (level - 1))) & 511) as usize;
        let entry = self.format.leaf_entry(hpa, level, t);
        if let Some(e) = self
            .tables
            .get_mut(table)
            .and_then(|(_, page)| page.0.get_mut(slot))
        {
            *e = entry;
        }
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
            let entry = *self.tables.get(table)?.1 .0.get(slot)?;
            if !self.format.present(entry) {
                return None;
            }
            if level == 1 || entry & LARGE != 0 {
                let offset_mask = (1u64 << shift) - 1;
                return Some((entry & ADDR_MASK & !offset_mask) | (gpa & offset_mask));
            }
            let child = *self.children.get(&(table, slot))?;
            // The entry must point at the table the builder recorded.
            if self.tables.get(child)?.0 != entry & ADDR_MASK {
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

    const NO_LARGE: PageSizes = PageSizes {
        m2: false,
        g1: false,
    };
    const ONLY_2M: PageSizes = PageSizes {
        m2: true,
        g1: false,
    };
    const ONLY_1G: PageSizes = PageSizes {
        m2: false,
        g1: true,
    };
    const BOTH: PageSizes = PageSizes { m2: true, g1: true };
    const FORMATS: [SlatFormat; 2] = [SlatFormat::Ept, SlatFormat::Npt];

    fn identity(addr: u64) -> u64 {
        addr
    }
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
    fn build(format: SlatFormat, ranges: &[RamRange], sizes: PageSizes) -> SlatTables {
        SlatTables::build_ranges(ranges.iter().copied(), format, identity, sizes).unwrap()
    }

    /// What a leaf of the hierarchy maps.
    #[derive(Debug, PartialEq, Eq)]
    struct Leaf {
        hpa: u64,
        /// 1: 4 KiB, 2: 2 MiB, 3: 1 GiB.
        level: u32,
        /// The memory-type bits of the leaf (EPT bits 5:3; NPT PWT and PCD).
        type_bits: u64,
    }

    /// A walk as the processor does it, from the format's specification rather than
    /// through `SlatFormat`: each non-leaf entry's address is looked up among the table
    /// pages. It also checks the entries are well-formed: reserved bits clear, no large
    /// page in the root, a leaf's address aligned to its size, a defined memory type.
    fn walk(t: &SlatTables, gpa: u64) -> Option<Leaf> {
        if gpa >= 1 << 48 {
            return None;
        }
        let mut phys = t.root();
        for level in (1..=4u32).rev() {
            let table = t.table_at(phys).expect("the entry points at a table");
            let shift = 12 + 9 * (level - 1);
            let entry = table[((gpa >> shift) & 511) as usize];
            let present = match t.format() {
                SlatFormat::Ept => entry & 7 != 0,
                SlatFormat::Npt => entry & 1 != 0,
            };
            if !present {
                assert_eq!(entry, 0, "non-present entry with bits at {gpa:#x}");
                return None;
            }
            match t.format() {
                SlatFormat::Ept => assert_eq!(entry & 7, 7, "EPT entry not RWX"),
                // P, RW, US; NX (63) clear.
                SlatFormat::Npt => {
                    assert_eq!(entry & 7, 7, "NPT entry not P RW US");
                    assert_eq!(entry >> 52, 0, "NPT entry with NX or high bits");
                }
            }
            if level == 1 || entry & (1 << 7) != 0 {
                assert!(level <= 3, "large page in the root");
                let offset_mask = (1u64 << shift) - 1;
                let base = entry & 0x000f_ffff_ffff_f000;
                assert_eq!(base & offset_mask, 0, "reserved address bits in leaf");
                let type_bits = match t.format() {
                    SlatFormat::Ept => {
                        let mt = entry & (7 << 3);
                        assert!(
                            [0, 1 << 3, 4 << 3, 5 << 3, 6 << 3].contains(&mt),
                            "reserved EPT memory type {mt:#x}"
                        );
                        mt
                    }
                    SlatFormat::Npt => {
                        // The PAT bit (7 in a PTE, 12 in a large leaf) stays clear.
                        let pat = if level == 1 { 1 << 7 } else { 1 << 12 };
                        if level == 1 {
                            assert_eq!(entry & pat, 0, "NPT PTE with PAT");
                        }
                        entry & (3 << 3)
                    }
                };
                return Some(Leaf {
                    hpa: base | (gpa & offset_mask),
                    level,
                    type_bits,
                });
            }
            // EPT: bits 7:3 of an entry pointing to a table are reserved; NPT: PWT, PCD
            // and PS clear in it.
            assert_eq!(entry & 0xf8, 0, "reserved bits in a non-leaf entry");
            phys = entry & 0x000f_ffff_ffff_f000;
        }
        None
    }

    #[test]
    fn maps_all_ram_and_nothing_else() {
        let mut mem = GuestMemory::with_ram(8 << 20).unwrap();
        mem.add_ram(0x1_0000_0000, 0x3000).unwrap();
        for format in FORMATS {
            let t = SlatTables::build(&mem, format, page_down, ONLY_2M).unwrap();
            for gpa in [0, 0x1234, 0x9_f000, 0x10_0000, (8 << 20) - 1, 0x1_0000_2fff] {
                assert_eq!(t.translate(gpa), Some(host(&mem, gpa, page_down)));
                assert_eq!(walk(&t, gpa).unwrap().hpa, host(&mem, gpa, page_down));
            }
            for gpa in [
                8 << 20,
                0xfee0_0000,
                0xfec0_0000,
                0x1_0000_3000,
                0xffff_f000,
            ] {
                assert_eq!(t.translate(gpa), None, "{gpa:#x}");
                assert_eq!(walk(&t, gpa), None, "{gpa:#x}");
            }
            let (small, large, huge) = t.mapped();
            assert_eq!(huge, 0);
            assert_eq!(small * 4096 + large * (2 << 20), (8 << 20) + 0x3000);
        }
    }

    #[test]
    fn entries_are_spelled_per_format() {
        let mem = GuestMemory::with_ram(1 << 20).unwrap();
        let ept = SlatTables::build(&mem, SlatFormat::Ept, page_down, NO_LARGE).unwrap();
        let npt = SlatTables::build(&mem, SlatFormat::Npt, page_down, NO_LARGE).unwrap();
        let pt = |t: &SlatTables| t.tables[3].1 .0[0];
        let top = |t: &SlatTables| t.tables[0].1 .0[0];
        // EPT: write-back (6 << 3) and RWX in the leaf, RWX alone above it.
        assert_eq!(pt(&ept) & 0xff, (6 << 3) | 7);
        assert_eq!(top(&ept) & 0xfff, 7);
        // NPT: P RW US, PAT entry 0 (write-back), no PS in a PTE.
        assert_eq!(pt(&npt) & 0xfff, 7);
        assert_eq!(top(&npt) & 0xfff, 7);
        for t in [&ept, &npt] {
            assert_eq!(pt(t) & ADDR_MASK, host(&mem, 0, page_down));
            assert_eq!(t.tables[2].1 .0[0] & LARGE, 0);
            assert!(t.root() % 4096 == 0);
        }
        assert_eq!(
            SlatFormat::Npt.leaf_entry(0x20_0000, 2, MemoryType::Uncacheable),
            0x20_0000 | 0x80 | 0x18 | 7
        );
        assert_eq!(
            SlatFormat::Ept.leaf_entry(0x4000_0000, 3, MemoryType::WriteCombining),
            0x4000_0000 | 0x80 | 0x8 | 7
        );
        assert!(SlatFormat::Npt.present(1) && !SlatFormat::Npt.present(6));
        assert!(SlatFormat::Ept.present(4) && !SlatFormat::Ept.present(0x18));
    }

    #[test]
    fn large_pages_where_both_sides_align() {
        let mem = GuestMemory::with_ram(6 << 20).unwrap();
        for format in FORMATS {
            let t = SlatTables::build(&mem, format, block_down, ONLY_2M).unwrap();
            assert_eq!(t.mapped(), (0, 3, 0));
            // Root + PDPT + PD.
            assert_eq!(t.table_count(), 3);
            assert_eq!(
                t.translate(0x20_1234),
                Some(host(&mem, 0x20_1234, block_down))
            );
            let small = SlatTables::build(&mem, format, block_down, NO_LARGE).unwrap();
            assert_eq!(small.mapped(), (1536, 0, 0));
            // Root + PDPT + PD + 3 page tables.
            assert_eq!(small.table_count(), 6);
            assert_eq!(small.translate(0x5f_ffff), t.translate(0x5f_ffff));
            // Guest-aligned but host-misaligned memory falls back to 4 KiB pages.
            let skewed =
                SlatTables::build(&mem, format, |a| (a & !0x1f_ffff) + 0x1000, ONLY_2M).unwrap();
            assert_eq!(skewed.mapped(), (1536, 0, 0));
        }
    }

    #[test]
    fn unaligned_host_memory_is_refused() {
        let mem = GuestMemory::with_ram(1 << 20).unwrap();
        for format in FORMATS {
            assert_eq!(
                SlatTables::build(&mem, format, |a| (a & !0xfff) + 8, ONLY_2M).unwrap_err(),
                SlatError::UnalignedRegion { gpa: 0 }
            );
        }
    }

    #[test]
    fn host_memory_beyond_52_bits_is_refused() {
        let top = 1u64 << 52;
        for format in FORMATS {
            let r = [range(
                0x10_0000,
                top - 0x1000,
                0x2000,
                MemoryType::WriteBack,
            )];
            let err = SlatTables::build_ranges(r, format, identity, BOTH).unwrap_err();
            assert_eq!(err, SlatError::HostAddressTooHigh { gpa: 0x10_0000 });
            // The last page below 2^52 is fine.
            let r = [range(
                0x10_0000,
                top - 0x1000,
                0x1000,
                MemoryType::WriteBack,
            )];
            let t = build(format, &r, BOTH);
            assert_eq!(walk(&t, 0x10_0fff).unwrap().hpa, top - 1);
            let r = [range(0, !0xfff, 0x2000, MemoryType::WriteBack)];
            assert!(SlatTables::build_ranges(r, format, identity, BOTH).is_err());
        }
    }

    #[test]
    fn guest_memory_beyond_48_bits_is_refused() {
        // Core accepts regions up to 2^52; a 4-level walk reaches 2^48, and a region
        // above would alias guest-physical 0.
        let mut mem = GuestMemory::with_ram(0x1000).unwrap();
        mem.add_ram(1 << 48, 0x1000).unwrap();
        for format in FORMATS {
            assert_eq!(
                SlatTables::build(&mem, format, page_down, BOTH).unwrap_err(),
                SlatError::GuestAddressTooHigh { gpa: 1 << 48 }
            );
            let r = [range((1 << 48) - 0x1000, 0, 0x2000, MemoryType::WriteBack)];
            assert!(SlatTables::build_ranges(r, format, identity, BOTH).is_err());
            let r = [range(
                (1 << 48) - GIB1,
                64 * GIB1,
                GIB1,
                MemoryType::WriteBack,
            )];
            let t = build(format, &r, BOTH);
            assert_eq!(walk(&t, (1 << 48) - 1).unwrap().hpa, 65 * GIB1 - 1);
            assert_eq!(walk(&t, 0), None);
            assert_eq!(t.translate(1 << 48), None);
        }
    }

    #[test]
    fn page_size_follows_the_capabilities() {
        for format in FORMATS {
            // 2 GiB at 1 GiB in the guest, backed at 64 GiB in the host: both sides
            // 1 GiB-aligned.
            let r = [range(GIB1, 64 * GIB1, 2 * GIB1, MemoryType::WriteBack)];
            let t = build(format, &r, BOTH);
            assert_eq!(t.mapped(), (0, 0, 2));
            // Root + PDPT, no page directory at all.
            assert_eq!(t.table_count(), 2);
            let leaf = walk(&t, GIB1 + 0x1234_5678).unwrap();
            assert_eq!((leaf.level, leaf.hpa), (3, 64 * GIB1 + 0x1234_5678));

            let t = build(format, &r, ONLY_2M);
            assert_eq!(t.mapped(), (0, 1024, 0));
            assert_eq!(t.table_count(), 4);
            let leaf = walk(&t, 2 * GIB1 + 0x1234_5678).unwrap();
            assert_eq!((leaf.level, leaf.hpa), (2, 65 * GIB1 + 0x1234_5678));

            let t = build(format, &r, NO_LARGE);
            assert_eq!(t.mapped(), (2 * GIB1 / KIB4, 0, 0));
            assert_eq!(t.table_count(), 4 + 1024);
            let leaf = walk(&t, 3 * GIB1 - 1).unwrap();
            assert_eq!((leaf.level, leaf.hpa), (1, 66 * GIB1 - 1));

            // 1 GiB pages without 2 MiB ones: the 2 MiB tail goes by 4 KiB.
            let r = [range(GIB1, 64 * GIB1, GIB1 + MIB2, MemoryType::WriteBack)];
            assert_eq!(build(format, &r, ONLY_1G).mapped(), (512, 0, 1));
            assert_eq!(build(format, &r, BOTH).mapped(), (0, 1, 1));
        }
    }

    #[test]
    fn unaligned_region_falls_back_page_by_page() {
        // Starts two 4 KiB pages below a 2 MiB boundary that is itself 2 MiB below a
        // 1 GiB boundary; ends one 4 KiB page past a 2 MiB block past that 1 GiB.
        let gpa = GIB1 - MIB2 - 2 * KIB4;
        let size = 2 * KIB4 + MIB2 + GIB1 + MIB2 + KIB4;
        let host = 64 * GIB1 + gpa;
        for format in FORMATS {
            let t = build(
                format,
                &[range(gpa, host, size, MemoryType::WriteBack)],
                BOTH,
            );
            assert_eq!(t.mapped(), (3, 2, 1));
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
                let leaf = walk(&t, at).unwrap();
                assert_eq!(leaf.level, level, "{at:#x}");
                assert_eq!(leaf.hpa, host + (at - gpa), "{at:#x}");
            }
            assert_eq!(walk(&t, gpa - 1), None);
            assert_eq!(walk(&t, gpa + size), None);

            // Host 2 MiB- but not 1 GiB-aligned with the guest: 2 MiB pages where 1 GiB
            // would have fitted.
            let r = [range(GIB1, 64 * GIB1 + MIB2, GIB1, MemoryType::WriteBack)];
            assert_eq!(build(format, &r, BOTH).mapped(), (0, 512, 0));
            // Host 4 KiB-aligned only: 4 KiB pages throughout.
            let r = [range(
                GIB1,
                64 * GIB1 + KIB4,
                4 * MIB2,
                MemoryType::WriteBack,
            )];
            assert_eq!(build(format, &r, BOTH).mapped(), (2048, 0, 0));
        }
    }

    #[test]
    fn memory_types_reach_their_leaves() {
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
        // EPT's types by value; NPT's as host PAT entries 0 (WB) and 3 (UC).
        let (wb, uc) = (0u64, 3u64 << 3);
        for (format, [wb_bits, wc_bits, uc_bits]) in [
            (SlatFormat::Ept, [6 << 3, 1 << 3, 0]),
            (SlatFormat::Npt, [wb, uc, uc]),
        ] {
            let t = build(format, &ranges, BOTH);
            for (gpa, level, bits) in [
                (0, 3, wb_bits),
                (GIB1, 2, wb_bits),
                (GIB1 + MIB2 + 0x2fff, 1, wb_bits),
                (GIB1 + MIB2 + 0x3000, 1, wc_bits),
                (GIB1 + MIB2 + 0x7fff, 1, wc_bits),
                (2 * GIB1, 3, uc_bits),
                (3 * GIB1 - 1, 3, uc_bits),
            ] {
                let leaf = walk(&t, gpa).unwrap();
                assert_eq!(
                    (leaf.level, leaf.type_bits),
                    (level, bits),
                    "{format:?} {gpa:#x}"
                );
            }
            // The same regions in 4 KiB pages keep their types.
            let t = build(format, &ranges, NO_LARGE);
            assert_eq!(walk(&t, 2 * GIB1 + 0x1000).unwrap().type_bits, uc_bits);
            assert_eq!(walk(&t, GIB1 - 1).unwrap().type_bits, wb_bits);
            assert_eq!(walk(&t, GIB1 + MIB2 + 0x4000).unwrap().type_bits, wc_bits);
        }
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
        for format in FORMATS {
            for sizes in [NO_LARGE, ONLY_2M, ONLY_1G, BOTH] {
                let t = build(format, &ranges, sizes);
                let expect = |gpa: u64| {
                    ranges
                        .iter()
                        .find(|r| gpa >= r.gpa && gpa - r.gpa < r.size)
                        .map(|r| (r.host + (gpa - r.gpa), format.memory_type_bits(r.mem_type)))
                };
                // Every region's edges and a pseudo-random sample of the address space
                // below 2^52.
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
                for _ in 0..2000 {
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
                    let got = walk(&t, gpa).map(|l| (l.hpa, l.type_bits));
                    assert_eq!(got, expect(gpa), "{gpa:#x} with {format:?} {sizes:?}");
                    assert_eq!(t.translate(gpa), got.map(|g| g.0), "{gpa:#x}");
                    if got.is_some() {
                        hits += 1;
                    } else {
                        misses += 1;
                    }
                }
                // The sample exercised both mapped and unmapped addresses.
                assert!(hits > 500 && misses > 250, "{hits} {misses}");
            }
        }
    }
}

//! The EPT hierarchy for a guest's memory map (SDM 3C 29.3.2): core's second-level
//! table builder ([`opsvisor_core::mmu::slat`]) in its EPT format, with the page sizes
//! IA32_VMX_EPT_VPID_CAP offers (bit 16: 2 MiB, bit 17: 1 GiB).
//!
//! Guest RAM is mapped read/write/execute onto the host memory that backs it, each leaf
//! with its region's memory type (SDM 3C 29.3.7); everything that is not RAM stays
//! unmapped, so the guest's accesses there exit as EPT violations (MMIO). How the tables
//! are laid out, and how the EPT and NPT entries differ, is core's.

use crate::caps::EptVpidCaps;
use crate::page::HostPhys;
use opsvisor_core::mmu::memory::MemoryType;
use opsvisor_core::mmu::slat::{PageSizes, SlatError, SlatFormat, SlatTables};
use opsvisor_core::GuestMemory;

pub use opsvisor_core::mmu::slat::{
    ADDR_MASK as EPT_ADDR_MASK, EPT_MEMTYPE_MASK, EPT_MEMTYPE_UC, EPT_MEMTYPE_WB, EPT_MEMTYPE_WC,
    EPT_MEMTYPE_WP, EPT_MEMTYPE_WT, EPT_RWX, LARGE as EPT_LARGE,
};

/// Why the tables could not be built (core's [`SlatError`]).
pub type EptError = SlatError;

/// The memory-type field (bits 5:3) of a leaf mapping memory of type `t`. Every type
/// core knows is a valid EPT leaf type; the paging-structure type in the EPT pointer is
/// a separate matter, chosen from the capabilities by [`EptVpidCaps::eptp`].
pub fn ept_memory_type(t: MemoryType) -> u64 {
    SlatFormat::Ept.memory_type_bits(t)
}

/// The page sizes an EPT with capabilities `caps` may use besides 4 KiB.
pub fn page_sizes(caps: EptVpidCaps) -> PageSizes {
    PageSizes {
        m2: caps.pages_2m(),
        g1: caps.pages_1g(),
    }
}

/// An EPT hierarchy (4 levels) and the pages it is made of.
#[derive(Debug)]
pub struct EptTables(SlatTables);

impl EptTables {
    /// Build the tables mapping every RAM region of `mem` with its memory type; `caps`
    /// (IA32_VMX_EPT_VPID_CAP) says whether 2 MiB (bit 16) and 1 GiB (bit 17) pages may
    /// be used.
    pub fn build(
        mem: &GuestMemory,
        to_phys: HostPhys,
        caps: EptVpidCaps,
    ) -> Result<EptTables, EptError> {
        SlatTables::build(mem, SlatFormat::Ept, to_phys, page_sizes(caps)).map(EptTables)
    }

    /// The host-physical address of the PML4 (for the EPT pointer).
    pub fn root(&self) -> u64 {
        self.0.root()
    }

    /// How many 4 KiB, 2 MiB and 1 GiB pages are mapped.
    pub fn mapped(&self) -> (u64, u64, u64) {
        self.0.mapped()
    }

    /// How many table pages the hierarchy uses.
    pub fn table_count(&self) -> usize {
        self.0.table_count()
    }

    /// Walk the tables as the processor does: the host-physical address `gpa` maps to,
    /// or `None` if it is not mapped.
    pub fn translate(&self, gpa: u64) -> Option<u64> {
        self.0.translate(gpa)
    }

    /// The tables themselves.
    pub fn tables(&self) -> &SlatTables {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    //! The layout (page sizes, alignment, limits, walks) is tested in core for both
    //! formats; these check what is VMX's: the capabilities' page sizes and the EPT
    //! spelling of the entries this backend loads.
    use super::*;
    use opsvisor_core::mmu::slat::RamRange;

    const NO_LARGE: EptVpidCaps = EptVpidCaps(0);
    const ONLY_2M: EptVpidCaps = EptVpidCaps(1 << 16);
    const ONLY_1G: EptVpidCaps = EptVpidCaps(1 << 17);
    const GIB1: u64 = 1 << 30;
    const MIB2: u64 = 1 << 21;

    fn page_down(addr: u64) -> u64 {
        addr & !0xfff
    }

    #[test]
    fn leaf_entries_are_write_back_rwx() {
        let mem = GuestMemory::with_ram(1 << 20).unwrap();
        let ept = EptTables::build(&mem, page_down, NO_LARGE).unwrap();
        let t = ept.tables();
        // PML4 -> PDPT -> PD -> PT, each entry RWX with nothing else but the address.
        let mut phys = ept.root();
        assert_eq!(phys % 4096, 0);
        for _ in 0..3 {
            let entry = t.table_at(phys).unwrap()[0];
            assert_eq!(entry & 0xfff, EPT_RWX);
            phys = entry & EPT_ADDR_MASK;
        }
        let leaf = t.table_at(phys).unwrap()[0];
        assert_eq!(leaf & 0xff, EPT_MEMTYPE_WB | EPT_RWX);
        let host = mem.regions()[0].bytes().as_ptr() as u64;
        assert_eq!(leaf & EPT_ADDR_MASK, page_down(host));
        assert_eq!(ept.translate(0x1234), Some(page_down(host) + 0x1234));
    }

    #[test]
    fn page_sizes_follow_the_capability_bits() {
        assert_eq!(
            page_sizes(NO_LARGE),
            PageSizes {
                m2: false,
                g1: false
            }
        );
        assert_eq!(
            page_sizes(ONLY_2M),
            PageSizes {
                m2: true,
                g1: false
            }
        );
        assert_eq!(
            page_sizes(ONLY_1G),
            PageSizes {
                m2: false,
                g1: true
            }
        );
        let caps = crate::caps::fixtures::CORE_I7_SKYLAKE_X
            .ept_vpid_cap
            .map(EptVpidCaps)
            .unwrap();
        assert_eq!(page_sizes(caps), PageSizes { m2: true, g1: true });
        let r = [RamRange {
            gpa: 0,
            host: 64 * GIB1,
            size: GIB1 + MIB2,
            mem_type: MemoryType::WriteBack,
        }];
        let t = SlatTables::build_ranges(r, SlatFormat::Ept, |a| a, page_sizes(caps)).unwrap();
        assert_eq!(t.mapped(), (0, 1, 1));
    }

    #[test]
    fn memory_types_are_the_epts() {
        assert_eq!(ept_memory_type(MemoryType::Uncacheable), 0);
        assert_eq!(ept_memory_type(MemoryType::WriteCombining), 1 << 3);
        assert_eq!(ept_memory_type(MemoryType::WriteBack), 6 << 3);
    }
}

//! Nested page faults (exit code 0x400; APM 2 15.25.6): EXITINFO2 holds the
//! guest-physical address, EXITINFO1 a page-fault error code for the nested walk — bit
//! 0 present, 1 write, 2 user, 3 reserved bit set, 4 instruction fetch, bit 32 the fault
//! was on the final guest-physical address, bit 33 on a guest page-table access.
//!
//! The nested tables map RAM alone, so a fault is a guest access to memory that is not
//! RAM: a data access by the instruction itself is MMIO (the backend decodes it), a
//! fetch or a guest page-table walk there cannot be completed.

use super::{BackendExit, SvmExit};
use crate::vmcb::{fields, VmcbAccess};
use opsvisor_core::exit::Direction;
use opsvisor_core::Exit;

/// A nested page fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedPageFault {
    /// The guest-physical address (EXITINFO2).
    pub gpa: u64,
    /// The error code (EXITINFO1).
    pub error: u64,
}

impl NestedPageFault {
    /// Bit 0: the nested entry was present (a permission fault).
    pub const PRESENT: u64 = 1 << 0;
    /// Bit 1: a write.
    pub const WRITE: u64 = 1 << 1;
    /// Bit 3: a reserved bit was set in a nested entry.
    pub const RESERVED: u64 = 1 << 3;
    /// Bit 4: an instruction fetch.
    pub const FETCH: u64 = 1 << 4;
    /// Bit 32: the fault was on the final guest-physical address.
    pub const FINAL_ADDRESS: u64 = 1 << 32;
    /// Bit 33: the fault was on a guest page-table access.
    pub const PAGE_TABLE: u64 = 1 << 33;

    /// The direction of a data access by the instruction itself; `None` for a fetch or
    /// a guest page-table access, which are not MMIO.
    pub fn direction(&self) -> Option<Direction> {
        if self.error & (Self::FETCH | Self::PAGE_TABLE) != 0 {
            None
        } else if self.error & Self::WRITE != 0 {
            Some(Direction::Write)
        } else {
            Some(Direction::Read)
        }
    }

    /// Whether the nested tables hold an entry with a reserved bit: a builder bug.
    pub fn misconfigured(&self) -> bool {
        self.error & Self::RESERVED != 0
    }

    /// Core's report of an access that cannot be completed.
    pub fn to_slat_violation(&self) -> Exit {
        Exit::SlatViolation { gpa: self.gpa }
    }
}

/// Decode a nested page fault.
pub(crate) fn decode<V: VmcbAccess>(vmcb: &V) -> SvmExit {
    SvmExit::Backend(BackendExit::NestedPageFault(NestedPageFault {
        gpa: vmcb.read(fields::EXITINFO2),
        error: vmcb.read(fields::EXITINFO1),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{code, BackendExit, SvmExit};
    use super::*;

    fn npf(error: u64, gpa: u64) -> NestedPageFault {
        let exit = decode(
            code::NPF,
            &[(fields::EXITINFO1, error), (fields::EXITINFO2, gpa)],
        );
        match exit {
            Ok(SvmExit::Backend(BackendExit::NestedPageFault(f))) => f,
            other => panic!("not a nested page fault: {other:?}"),
        }
    }

    #[test]
    fn data_accesses_are_mmio() {
        // A read of the xAPIC version register: final address, not present.
        let f = npf(NestedPageFault::FINAL_ADDRESS | 0x4, 0xfee0_0030);
        assert_eq!(f.gpa, 0xfee0_0030);
        assert_eq!(f.direction(), Some(Direction::Read));
        let f = npf(NestedPageFault::FINAL_ADDRESS | 0x6, 0xfee0_00b0);
        assert_eq!(f.direction(), Some(Direction::Write));
        assert!(!f.misconfigured());
    }

    #[test]
    fn fetches_and_walks_are_not() {
        let f = npf(NestedPageFault::FINAL_ADDRESS | 0x14, 0xffff_0000);
        assert_eq!(f.direction(), None);
        assert_eq!(
            f.to_slat_violation(),
            Exit::SlatViolation { gpa: 0xffff_0000 }
        );
        let f = npf(NestedPageFault::PAGE_TABLE | 0x6, 0xe000_0000);
        assert_eq!(f.direction(), None);
        assert!(npf(NestedPageFault::RESERVED | 1, 0).misconfigured());
    }
}

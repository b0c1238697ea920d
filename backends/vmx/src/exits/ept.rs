//! EPT violations (exit reason 48) and misconfigurations (49).
//!
//! A violation's qualification (SDM 3C table 28-7) says which access was attempted
//! (bits 2:0), what the EPT entries allowed (bits 5:3), whether the guest-linear
//! address is valid (bit 7) and whether the access was to the final translation or to
//! a guest paging-structure entry (bit 8); bit 12 is "NMI unblocking due to IRET".

use super::{read, reason, BackendExit, DecodeError, VmxExit};
use crate::vmcs::{fields, VmcsAccess};
use opsvisor_core::exit::Direction;
use opsvisor_core::Exit;

/// Read, write and execute permission bits (an attempted access or what the EPT
/// allows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EptAccess {
    /// Data read.
    pub read: bool,
    /// Data write.
    pub write: bool,
    /// Instruction fetch.
    pub execute: bool,
}

impl EptAccess {
    fn from_bits(bits: u64) -> Self {
        EptAccess {
            read: bits & 1 != 0,
            write: bits & 2 != 0,
            execute: bits & 4 != 0,
        }
    }
}

/// A decoded EPT violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation {
    /// The guest-physical address accessed.
    pub gpa: u64,
    /// The access that was attempted (a locked read-modify-write sets read and write).
    pub attempted: EptAccess,
    /// What the EPT paging-structure entries allowed (all false: not present).
    pub allowed: EptAccess,
    /// The guest-linear address, when the processor reports one (bit 7).
    pub guest_linear_address: Option<u64>,
    /// The access was to the translated address (bit 8); `false` means it was to a
    /// guest paging-structure entry during the guest's own page walk. Meaningful only
    /// with a guest-linear address.
    pub final_translation: bool,
    /// The access happened in an IRET that unblocked NMIs (bit 12).
    pub nmi_unblocking: bool,
}

impl EptViolation {
    /// Whether the guest-physical address is not mapped at all (as opposed to mapped
    /// without the needed permission): the typical MMIO case.
    pub fn not_present(&self) -> bool {
        self.allowed == EptAccess::default()
    }

    /// The direction of a data access (write wins for a read-modify-write); `None`
    /// for an instruction fetch.
    pub fn direction(&self) -> Option<Direction> {
        if self.attempted.write {
            Some(Direction::Write)
        } else if self.attempted.read {
            Some(Direction::Read)
        } else {
            None
        }
    }

    /// Core's view when the backend cannot complete the access (a fetch from a region
    /// that is not RAM, or an access it cannot emulate).
    pub fn to_slat_violation(&self) -> Exit {
        Exit::SlatViolation { gpa: self.gpa }
    }
}

/// Decode an EPT violation or misconfiguration exit.
pub(crate) fn decode<V: VmcsAccess>(vmcs: &V, basic: u16) -> Result<VmxExit, DecodeError> {
    let gpa = read(vmcs, fields::GUEST_PHYSICAL_ADDRESS)?;
    if basic == reason::EPT_MISCONFIGURATION {
        return Ok(VmxExit::Backend(BackendExit::EptMisconfiguration { gpa }));
    }
    let qualification = read(vmcs, fields::EXIT_QUALIFICATION)?;
    let attempted = EptAccess::from_bits(qualification & 7);
    // Some access must have been attempted; bits 63:17 are reserved (0).
    if attempted == EptAccess::default() || qualification >> 17 != 0 {
        return Err(DecodeError::InvalidQualification {
            reason: basic,
            qualification,
        });
    }
    let linear_valid = qualification & (1 << 7) != 0;
    let guest_linear_address = if linear_valid {
        Some(read(vmcs, fields::GUEST_LINEAR_ADDRESS)?)
    } else {
        None
    };
    Ok(VmxExit::Backend(BackendExit::EptViolation(EptViolation {
        gpa,
        attempted,
        allowed: EptAccess::from_bits((qualification >> 3) & 7),
        guest_linear_address,
        final_translation: linear_valid && qualification & (1 << 8) != 0,
        nmi_unblocking: qualification & (1 << 12) != 0,
    })))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{BackendExit, DecodeError, VmxExit};
    use super::*;

    fn violation(q: u64, gpa: u64, gla: u64) -> Result<VmxExit, DecodeError> {
        decode(
            48,
            &[
                (fields::EXIT_QUALIFICATION, q),
                (fields::GUEST_PHYSICAL_ADDRESS, gpa),
                (fields::GUEST_LINEAR_ADDRESS, gla),
            ],
        )
    }

    fn unwrap(exit: Result<VmxExit, DecodeError>) -> EptViolation {
        match exit {
            Ok(VmxExit::Backend(BackendExit::EptViolation(v))) => v,
            other => panic!("not an EPT violation: {other:?}"),
        }
    }

    #[test]
    fn write_to_unmapped_mmio() {
        // Data write, nothing allowed, linear address valid, final translation.
        let v = unwrap(violation(0x182, 0xfee0_0030, 0xffff_ffff_fee0_0030));
        assert_eq!(
            v,
            EptViolation {
                gpa: 0xfee0_0030,
                attempted: EptAccess {
                    read: false,
                    write: true,
                    execute: false
                },
                allowed: EptAccess::default(),
                guest_linear_address: Some(0xffff_ffff_fee0_0030),
                final_translation: true,
                nmi_unblocking: false,
            }
        );
        assert!(v.not_present());
        assert_eq!(v.direction(), Some(Direction::Write));
    }

    #[test]
    fn read_of_a_read_only_mapping_and_paging_structure_access() {
        // Data read (bit 0), readable+executable (bits 3, 5), linear valid, walk access.
        let v = unwrap(violation(0xa9, 0x2000, 0x40_0000));
        assert_eq!(
            v.attempted,
            EptAccess {
                read: true,
                write: false,
                execute: false
            }
        );
        assert_eq!(
            v.allowed,
            EptAccess {
                read: true,
                write: false,
                execute: true
            }
        );
        assert!(!v.not_present());
        assert!(!v.final_translation);
        assert_eq!(v.direction(), Some(Direction::Read));
    }

    #[test]
    fn fetch_without_linear_address_and_nmi_unblocking() {
        let v = unwrap(violation(0x1004, 0xc_0000, 0xdead));
        assert!(v.attempted.execute && v.direction().is_none());
        assert_eq!(v.guest_linear_address, None);
        assert!(v.nmi_unblocking);
        assert_eq!(v.to_slat_violation(), Exit::SlatViolation { gpa: 0xc_0000 });
    }

    #[test]
    fn misconfiguration_reports_the_address() {
        assert_eq!(
            decode(49, &[(fields::GUEST_PHYSICAL_ADDRESS, 0x1234_5678)]),
            Ok(VmxExit::Backend(BackendExit::EptMisconfiguration {
                gpa: 0x1234_5678
            }))
        );
    }

    #[test]
    fn garbage_qualification_is_an_error() {
        for q in [0u64, 0x180, 1 << 17, u64::MAX] {
            assert_eq!(
                violation(q, 0, 0),
                Err(DecodeError::InvalidQualification {
                    reason: 48,
                    qualification: q
                }),
                "{q:#x}"
            );
        }
    }
}

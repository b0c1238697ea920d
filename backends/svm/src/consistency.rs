//! VMRUN's consistency checks (APM 2 15.5.1, "Canonicalization and Consistency Checks"):
//! a VMCB that fails one makes VMRUN exit at once with VMEXIT_INVALID, which says
//! nothing about which. [`check`] runs the same list over the VMCB, so that the backend
//! can name the field, its value and what was expected.
//!
//! Both test machines overwrite the VMCB's RIP, RSP, RAX and RFLAGS with the host's
//! after an invalid VMRUN: the vCPU restores them before the check runs (and before the
//! next VMRUN).

use crate::bitmaps::{IOPM_SIZE, MSRPM_SIZE};
use crate::caps::SvmCaps;
use crate::event::EventInfo;
use crate::vmcb::fields::{self, misc2, NP_ENABLE};
use crate::vmcb::VmcbAccess;
use core::fmt;

const CR0_PE: u64 = 1 << 0;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_SVME: u64 = 1 << 12;
/// EFER bits AMD defines: SCE, LME, LMA, NXE, SVME, LMSLE, FFXSR, TCE, MCOMMIT, INTWB,
/// UAIE, AIBRSE.
const EFER_DEFINED: u64 = (1 << 0)
    | (1 << 8)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 14)
    | (1 << 15)
    | (1 << 17)
    | (1 << 18)
    | (1 << 20)
    | (1 << 21);
/// CS.L and CS.D in the VMCB's attribute word.
const ATTRIB_L: u64 = 1 << 9;
const ATTRIB_D: u64 = 1 << 10;

/// The first consistency check the VMCB fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inconsistency {
    /// EFER.SVME is clear.
    EferSvmeClear(u64),
    /// CR0.CD is clear while CR0.NW is set.
    Cr0NwWithoutCd(u64),
    /// CR0 bits 63:32 are not zero.
    Cr0HighBits(u64),
    /// A must-be-zero bit of CR3 is set (beyond the physical-address width in long
    /// mode, bits 63:32 otherwise).
    Cr3Reserved(u64),
    /// A CR4 bit this processor does not define is set.
    Cr4Reserved(u64),
    /// DR6 bits 63:32 are not zero.
    Dr6HighBits(u64),
    /// DR7 bits 63:32 are not zero.
    Dr7HighBits(u64),
    /// An EFER bit AMD does not define is set.
    EferReserved(u64),
    /// EFER.LME and CR0.PG are set with CR4.PAE clear.
    LongModeWithoutPae {
        /// CR4.
        cr4: u64,
    },
    /// EFER.LME and CR0.PG are set with CR0.PE clear.
    LongModeWithoutProtection {
        /// CR0.
        cr0: u64,
    },
    /// EFER.LME, CR0.PG, CR4.PAE, CS.L and CS.D are all set.
    CodeSegmentLAndD {
        /// The CS attribute word.
        attrib: u64,
    },
    /// The VMRUN intercept is clear.
    VmrunNotIntercepted(u64),
    /// A permission map reaches beyond the physical-address width.
    MapOutOfReach {
        /// "IOPM_BASE_PA" or "MSRPM_BASE_PA".
        field: &'static str,
        /// Its value.
        base: u64,
    },
    /// The guest ASID is 0 (the host's).
    AsidZero,
    /// EVENTINJ holds an event VMRUN cannot inject.
    IllegalEventInjection(u64),
    /// Nested paging is enabled on a processor without it.
    NestedPagingUnsupported,
    /// G_PAT holds a reserved memory type (nested paging only).
    InvalidGuestPat(u64),
}

impl Inconsistency {
    /// A number per check, for core's [`opsvisor_core::Exit::EntryFailed`] detail.
    pub fn number(self) -> u64 {
        match self {
            Inconsistency::EferSvmeClear(_) => 1,
            Inconsistency::Cr0NwWithoutCd(_) => 2,
            Inconsistency::Cr0HighBits(_) => 3,
            Inconsistency::Cr3Reserved(_) => 4,
            Inconsistency::Cr4Reserved(_) => 5,
            Inconsistency::Dr6HighBits(_) => 6,
            Inconsistency::Dr7HighBits(_) => 7,
            Inconsistency::EferReserved(_) => 8,
            Inconsistency::LongModeWithoutPae { .. } => 9,
            Inconsistency::LongModeWithoutProtection { .. } => 10,
            Inconsistency::CodeSegmentLAndD { .. } => 11,
            Inconsistency::VmrunNotIntercepted(_) => 12,
            Inconsistency::MapOutOfReach { .. } => 13,
            Inconsistency::AsidZero => 14,
            Inconsistency::IllegalEventInjection(_) => 15,
            Inconsistency::NestedPagingUnsupported => 16,
            Inconsistency::InvalidGuestPat(_) => 17,
        }
    }
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Inconsistency::EferSvmeClear(v) => write!(f, "EFER {v:#x}: SVME must be set"),
            Inconsistency::Cr0NwWithoutCd(v) => {
                write!(f, "CR0 {v:#x}: NW set with CD clear")
            }
            Inconsistency::Cr0HighBits(v) => write!(f, "CR0 {v:#x}: bits 63:32 must be zero"),
            Inconsistency::Cr3Reserved(v) => write!(f, "CR3 {v:#x}: a must-be-zero bit is set"),
            Inconsistency::Cr4Reserved(v) => {
                write!(f, "CR4 {v:#x}: sets a bit this processor does not define")
            }
            Inconsistency::Dr6HighBits(v) => write!(f, "DR6 {v:#x}: bits 63:32 must be zero"),
            Inconsistency::Dr7HighBits(v) => write!(f, "DR7 {v:#x}: bits 63:32 must be zero"),
            Inconsistency::EferReserved(v) => write!(f, "EFER {v:#x}: sets a reserved bit"),
            Inconsistency::LongModeWithoutPae { cr4 } => {
                write!(
                    f,
                    "EFER.LME and CR0.PG set with CR4.PAE clear (CR4 {cr4:#x})"
                )
            }
            Inconsistency::LongModeWithoutProtection { cr0 } => {
                write!(
                    f,
                    "EFER.LME and CR0.PG set with CR0.PE clear (CR0 {cr0:#x})"
                )
            }
            Inconsistency::CodeSegmentLAndD { attrib } => write!(
                f,
                "long mode with CS.L and CS.D both set (CS attributes {attrib:#x})"
            ),
            Inconsistency::VmrunNotIntercepted(v) => {
                write!(f, "intercept vector 4 {v:#x}: VMRUN must be intercepted")
            }
            Inconsistency::MapOutOfReach { field, base } => write!(
                f,
                "{field} {base:#x}: the map reaches beyond the physical-address width"
            ),
            Inconsistency::AsidZero => f.write_str("guest ASID is 0 (the host's)"),
            Inconsistency::IllegalEventInjection(v) => {
                write!(f, "EVENTINJ {v:#x}: an event VMRUN cannot inject")
            }
            Inconsistency::NestedPagingUnsupported => {
                f.write_str("nested paging enabled on a processor without it")
            }
            Inconsistency::InvalidGuestPat(v) => {
                write!(f, "G_PAT {v:#x}: holds a reserved memory type")
            }
        }
    }
}

/// Whether every byte of `pat` is a defined memory type (0, 1, 4, 5, 6, 7).
pub fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes()
        .iter()
        .all(|&t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

/// Run VMRUN's consistency checks over `vmcb` for a processor with `caps`; the first
/// that fails, in the APM's order.
pub fn check<V: VmcbAccess>(vmcb: &V, caps: &SvmCaps) -> Result<(), Inconsistency> {
    let efer = vmcb.read(fields::EFER);
    let cr0 = vmcb.read(fields::CR0);
    let cr3 = vmcb.read(fields::CR3);
    let cr4 = vmcb.read(fields::CR4);
    if efer & EFER_SVME == 0 {
        return Err(Inconsistency::EferSvmeClear(efer));
    }
    if cr0 & CR0_CD == 0 && cr0 & CR0_NW != 0 {
        return Err(Inconsistency::Cr0NwWithoutCd(cr0));
    }
    if cr0 >> 32 != 0 {
        return Err(Inconsistency::Cr0HighBits(cr0));
    }
    let long = efer & EFER_LME != 0 && cr0 & CR0_PG != 0;
    let cr3_limit = if long { caps.phys_bits.min(63) } else { 32 };
    if cr3 >> cr3_limit != 0 {
        return Err(Inconsistency::Cr3Reserved(cr3));
    }
    if cr4 & !caps.cr4_valid != 0 {
        return Err(Inconsistency::Cr4Reserved(cr4));
    }
    let dr6 = vmcb.read(fields::DR6);
    if dr6 >> 32 != 0 {
        return Err(Inconsistency::Dr6HighBits(dr6));
    }
    let dr7 = vmcb.read(fields::DR7);
    if dr7 >> 32 != 0 {
        return Err(Inconsistency::Dr7HighBits(dr7));
    }
    if efer & !EFER_DEFINED != 0 {
        return Err(Inconsistency::EferReserved(efer));
    }
    if long && cr4 & CR4_PAE == 0 {
        return Err(Inconsistency::LongModeWithoutPae { cr4 });
    }
    if long && cr0 & CR0_PE == 0 {
        return Err(Inconsistency::LongModeWithoutProtection { cr0 });
    }
    let cs_attrib = vmcb.read(fields::CS.attrib);
    if long && cr4 & CR4_PAE != 0 && cs_attrib & ATTRIB_L != 0 && cs_attrib & ATTRIB_D != 0 {
        return Err(Inconsistency::CodeSegmentLAndD { attrib: cs_attrib });
    }
    let misc2_bits = vmcb.read(fields::INTERCEPT_MISC2);
    if misc2_bits & u64::from(misc2::VMRUN) == 0 {
        return Err(Inconsistency::VmrunNotIntercepted(misc2_bits));
    }
    for (field, size) in [
        (fields::MSRPM_BASE_PA, MSRPM_SIZE),
        (fields::IOPM_BASE_PA, IOPM_SIZE),
    ] {
        // The low 12 bits are ignored.
        let base = vmcb.read(field);
        if !crate::enable::reachable(base & !0xfff, size, caps.phys_bits) {
            return Err(Inconsistency::MapOutOfReach {
                field: field.name(),
                base,
            });
        }
    }
    if vmcb.read(fields::GUEST_ASID) == 0 {
        return Err(Inconsistency::AsidZero);
    }
    let eventinj = vmcb.read(fields::EVENTINJ);
    if !EventInfo(eventinj).injectable() {
        return Err(Inconsistency::IllegalEventInjection(eventinj));
    }
    if vmcb.read(fields::NP_CONTROL) & NP_ENABLE != 0 {
        if !caps.features.npt() {
            return Err(Inconsistency::NestedPagingUnsupported);
        }
        let pat = vmcb.read(fields::G_PAT);
        if !pat_valid(pat) {
            return Err(Inconsistency::InvalidGuestPat(pat));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::fixtures::{BOCHS_RYZEN, BOCHS_TURION64_TYLER};
    use crate::vmcb::InMemoryVmcb;
    use opsvisor_core::arch::PAT_DEFAULT;

    /// A VMCB that passes: 64-bit long mode, the VMRUN intercept, ASID 1, nested paging.
    fn good() -> InMemoryVmcb {
        let mut v = InMemoryVmcb::new();
        for (f, value) in [
            (fields::EFER, 0x1d00),
            (fields::CR0, 0x8000_0011),
            (fields::CR3, 0x1000),
            (fields::CR4, 0x20),
            (fields::DR6, 0xffff_0ff0),
            (fields::DR7, 0x400),
            (fields::CS.attrib, 0x29b),
            (fields::INTERCEPT_MISC2, 1),
            (fields::MSRPM_BASE_PA, 0x10_0000),
            (fields::IOPM_BASE_PA, 0x10_2000),
            (fields::GUEST_ASID, 1),
            (fields::NP_CONTROL, 1),
            (fields::G_PAT, PAT_DEFAULT),
        ] {
            v.write(f, value).unwrap();
        }
        v
    }

    fn with(field: fields::Field, value: u64) -> Result<(), Inconsistency> {
        let mut v = good();
        v.write(field, value).unwrap();
        check(&v, &SvmCaps::read(&BOCHS_RYZEN).unwrap())
    }

    #[test]
    fn a_good_vmcb_passes() {
        assert_eq!(
            check(&good(), &SvmCaps::read(&BOCHS_RYZEN).unwrap()),
            Ok(())
        );
        // Real mode, paging off: nothing long-mode applies.
        assert_eq!(with(fields::CR0, 0x6000_0010), Ok(()));
    }

    #[test]
    fn each_check_names_its_field() {
        assert_eq!(
            with(fields::EFER, 0xd00),
            Err(Inconsistency::EferSvmeClear(0xd00))
        );
        assert_eq!(
            with(fields::CR0, 0x2000_0011),
            Err(Inconsistency::Cr0NwWithoutCd(0x2000_0011))
        );
        assert!(matches!(
            with(fields::CR0, 1 << 32),
            Err(Inconsistency::Cr0HighBits(_))
        ));
        // Long mode: CR3 beyond 48 physical bits (ryzen reports 48).
        assert!(matches!(
            with(fields::CR3, 1 << 50),
            Err(Inconsistency::Cr3Reserved(_))
        ));
        // CR4.VMXE does not exist on AMD.
        assert!(matches!(
            with(fields::CR4, 0x2020),
            Err(Inconsistency::Cr4Reserved(0x2020))
        ));
        assert!(matches!(
            with(fields::DR6, 1 << 40),
            Err(Inconsistency::Dr6HighBits(_))
        ));
        assert!(matches!(
            with(fields::DR7, 1 << 40),
            Err(Inconsistency::Dr7HighBits(_))
        ));
        assert!(matches!(
            with(fields::EFER, 0x1d00 | 2),
            Err(Inconsistency::EferReserved(_))
        ));
        assert!(matches!(
            with(fields::CR4, 0),
            Err(Inconsistency::LongModeWithoutPae { cr4: 0 })
        ));
        assert!(matches!(
            with(fields::CR0, 0x8000_0010),
            Err(Inconsistency::LongModeWithoutProtection { .. })
        ));
        assert!(matches!(
            with(fields::CS.attrib, 0x69b),
            Err(Inconsistency::CodeSegmentLAndD { attrib: 0x69b })
        ));
        assert!(matches!(
            with(fields::INTERCEPT_MISC2, 2),
            Err(Inconsistency::VmrunNotIntercepted(2))
        ));
        assert_eq!(
            with(fields::IOPM_BASE_PA, (1 << 48) - 0x2000),
            Err(Inconsistency::MapOutOfReach {
                field: "IOPM_BASE_PA",
                base: (1 << 48) - 0x2000
            })
        );
        assert_eq!(with(fields::GUEST_ASID, 0), Err(Inconsistency::AsidZero));
        assert_eq!(
            with(fields::EVENTINJ, 0x8000_0302),
            Err(Inconsistency::IllegalEventInjection(0x8000_0302))
        );
        assert_eq!(
            with(fields::G_PAT, 0x0007_0406_0007_0402),
            Err(Inconsistency::InvalidGuestPat(0x0007_0406_0007_0402))
        );
        let turion = SvmCaps::read(&BOCHS_TURION64_TYLER).unwrap();
        assert_eq!(
            check(&good(), &turion),
            Err(Inconsistency::NestedPagingUnsupported)
        );
    }

    #[test]
    fn legacy_mode_limits_cr3_to_32_bits() {
        let mut v = good();
        v.write(fields::EFER, 0x1000).unwrap();
        v.write(fields::CR0, 0x8000_0011).unwrap();
        v.write(fields::CR3, 1 << 32).unwrap();
        let caps = SvmCaps::read(&BOCHS_RYZEN).unwrap();
        assert_eq!(check(&v, &caps), Err(Inconsistency::Cr3Reserved(1 << 32)));
        extern crate std;
        use std::string::ToString;
        assert_eq!(
            Inconsistency::Cr3Reserved(1 << 32).to_string(),
            "CR3 0x100000000: a must-be-zero bit is set"
        );
        assert_eq!(Inconsistency::AsidZero.number(), 14);
    }
}

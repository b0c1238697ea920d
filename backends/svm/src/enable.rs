//! Turning SVM on (APM 2 15.4): the CPUID checks, VM_CR.SVMDIS, EFER.SVME and the host
//! save area (VM_HSAVE_PA).
//!
//! The decisions are plain functions tested on the host; `SvmVcpu::enable` (x86-64
//! only) applies them to the running processor.

use crate::caps::{CapsError, SvmCaps};
use core::fmt;

/// VM_CR: SVM lock and disable bits.
pub const MSR_VM_CR: u32 = 0xc001_0114;
/// VM_HSAVE_PA: the physical address of the host save area.
pub const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
/// VM_CR bit 3: VM_CR.SVMDIS is locked (until SVM_KEY unlocks it, or reset).
pub const VM_CR_LOCK: u64 = 1 << 3;
/// VM_CR bit 4: SVMDIS, EFER.SVME cannot be set.
pub const VM_CR_SVMDIS: u64 = 1 << 4;
/// EFER.SVME.
pub const EFER_SVME: u64 = 1 << 12;

/// Why SVM cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableError {
    /// The CPU is not an AMD processor with SVM, or its SVM leaf is unusable.
    Caps(CapsError),
    /// VM_CR.SVMDIS is set: the firmware disabled SVM (`locked`: VM_CR.LOCK is set too,
    /// so only the firmware setup can change it).
    DisabledByFirmware {
        /// VM_CR.LOCK.
        locked: bool,
    },
    /// The CPU lacks nested paging, which this backend needs: it does not implement
    /// shadow paging.
    NoNpt,
    /// A structure's host-physical address is beyond the processor's physical-address
    /// width.
    Address(u64),
    /// A VMCB write was refused while setting up (a backend bug).
    Vmcb(crate::vmcb::VmcbError),
}

impl fmt::Display for EnableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnableError::Caps(e) => write!(f, "{e}"),
            EnableError::DisabledByFirmware { locked: true } => f.write_str(
                "SVM is disabled by the firmware (VM_CR.SVMDIS set and locked): enable SVM (AMD-V) in the firmware setup",
            ),
            EnableError::DisabledByFirmware { locked: false } => f.write_str(
                "SVM is disabled by the firmware (VM_CR.SVMDIS set): enable SVM (AMD-V) in the firmware setup",
            ),
            EnableError::NoNpt => f.write_str(
                "the svm backend needs nested paging (CPUID 0x8000000A:EDX bit 0), which this CPU lacks (no shadow paging)",
            ),
            EnableError::Address(a) => {
                write!(f, "SVM structure at host-physical {a:#x} is out of the processor's reach")
            }
            EnableError::Vmcb(e) => write!(f, "setting up the VMCB failed: {e}"),
        }
    }
}

/// Decide from VM_CR whether EFER.SVME may be set. `None` means reading VM_CR raised
/// #GP: Bochs does not implement the MSR (QEMU reads it as 0); a processor without it
/// has no way to disable SVM, so SVM is usable.
pub fn check_vm_cr(vm_cr: Option<u64>) -> Result<(), EnableError> {
    match vm_cr {
        Some(v) if v & VM_CR_SVMDIS != 0 => Err(EnableError::DisabledByFirmware {
            locked: v & VM_CR_LOCK != 0,
        }),
        _ => Ok(()),
    }
}

/// Check that the processor gives what this backend needs: nested paging.
pub fn check_features(caps: &SvmCaps) -> Result<(), EnableError> {
    if caps.features.npt() {
        Ok(())
    } else {
        Err(EnableError::NoNpt)
    }
}

/// Whether a structure of `size` bytes at host-physical `phys` is within the
/// processor's reach (`phys_bits` of physical address).
pub fn reachable(phys: u64, size: u64, phys_bits: u8) -> bool {
    phys.checked_add(size)
        .is_some_and(|end| end <= 1u64 << phys_bits.min(63))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::fixtures::{BOCHS_RYZEN, BOCHS_TURION64_TYLER, QEMU_TCG_MAX};
    extern crate std;
    use std::string::ToString;

    #[test]
    fn vm_cr_decisions() {
        // Bochs: #GP; QEMU: 0; firmware that left SVM on: LOCK alone.
        assert_eq!(check_vm_cr(None), Ok(()));
        assert_eq!(check_vm_cr(Some(0)), Ok(()));
        assert_eq!(check_vm_cr(Some(VM_CR_LOCK)), Ok(()));
        let off = check_vm_cr(Some(VM_CR_SVMDIS | VM_CR_LOCK)).unwrap_err();
        assert_eq!(off, EnableError::DisabledByFirmware { locked: true });
        assert!(off.to_string().contains("SVMDIS set and locked"));
        assert_eq!(
            check_vm_cr(Some(VM_CR_SVMDIS)),
            Err(EnableError::DisabledByFirmware { locked: false })
        );
    }

    #[test]
    fn nested_paging_is_required() {
        for ok in [BOCHS_RYZEN, QEMU_TCG_MAX] {
            assert_eq!(
                check_features(&SvmCaps::read(&ok).unwrap()),
                Ok(()),
                "{}",
                ok.name
            );
        }
        let turion = SvmCaps::read(&BOCHS_TURION64_TYLER).unwrap();
        assert_eq!(check_features(&turion), Err(EnableError::NoNpt));
        assert!(EnableError::NoNpt
            .to_string()
            .contains("needs nested paging"));
    }

    #[test]
    fn reach() {
        assert!(reachable(0x1000, 0x3000, 32));
        assert!(reachable(0xffff_d000, 0x3000, 32));
        assert!(!reachable(0xffff_e000, 0x3000, 32));
        assert!(!reachable(u64::MAX - 1, 0x1000, 52));
    }
}

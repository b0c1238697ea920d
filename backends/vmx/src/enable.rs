//! Entering VMX root operation (SDM 3C 24.7, 24.8): the CPUID check,
//! IA32_FEATURE_CONTROL, the CR0/CR4 fixed bits and VMXON.
//!
//! The decisions are plain functions tested on the host; `VmxVcpu::enable` (x86-64 only)
//! applies them to the running processor.

use crate::caps::{CapsError, CrFixed, VmxCaps};
use crate::controls::{ControlError, Controls};
use crate::vmcs::VmxError;
use core::fmt;

/// IA32_FEATURE_CONTROL.
pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
/// IA32_FEATURE_CONTROL bit 0: lock.
pub const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
/// IA32_FEATURE_CONTROL bit 2: VMXON allowed outside SMX operation.
pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
/// CR4.VMXE.
pub const CR4_VMXE: u64 = 1 << 13;

/// What to do with IA32_FEATURE_CONTROL before VMXON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureControlAction {
    /// Locked with VMX outside SMX allowed: nothing to do.
    Ready,
    /// Unlocked: write this value (lock + VMX outside SMX, other bits kept).
    Write(u64),
    /// Locked with VMX disabled (by the firmware): VMXON would raise #GP.
    LockedOff,
}

/// Decide from the current IA32_FEATURE_CONTROL value.
pub fn feature_control_action(value: u64) -> FeatureControlAction {
    let locked = value & FEATURE_CONTROL_LOCK != 0;
    let vmx = value & FEATURE_CONTROL_VMX_OUTSIDE_SMX != 0;
    match (locked, vmx) {
        (true, true) => FeatureControlAction::Ready,
        (true, false) => FeatureControlAction::LockedOff,
        (false, _) => FeatureControlAction::Write(
            value | FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMX_OUTSIDE_SMX,
        ),
    }
}

/// The CR0 and CR4 values to run with in VMX operation: the current ones with the fixed
/// bits forced and CR4.VMXE set; `None` when a must-be-one bit cannot be set here (the
/// caller would change the host's mode, for instance turn on paging).
pub fn host_control_registers(cr0: u64, cr4: u64, caps: &VmxCaps) -> Option<(u64, u64)> {
    let new_cr0 = caps.cr0.apply(cr0);
    let new_cr4 = caps.cr4.apply(cr4 | CR4_VMXE);
    // Only NE may be turned on in CR0 (PE and PG are on in long mode already); in CR4
    // only VMXE. Anything else would change how the host runs.
    let cr0_added = new_cr0 & !cr0;
    let cr4_added = new_cr4 & !cr4;
    let cr0_removed = cr0 & !new_cr0;
    let cr4_removed = cr4 & !new_cr4;
    let ok = cr0_added & !(1 << 5) == 0
        && cr4_added & !CR4_VMXE == 0
        && cr0_removed == 0
        && cr4_removed == 0;
    ok.then_some((new_cr0, new_cr4))
}

/// Why VMX cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableError {
    /// CPUID.1:ECX.VMX is clear.
    NoVmx,
    /// The firmware locked IA32_FEATURE_CONTROL with VMX disabled.
    DisabledByFirmware,
    /// The capability MSRs are unusable.
    Caps(CapsError),
    /// The processor cannot run with the controls the backend needs.
    Controls(ControlError),
    /// The processor lacks EPT (or unrestricted guest), which this backend needs: it does
    /// not implement shadow paging.
    NoEpt,
    /// CR0/CR4 would need bits the host cannot take.
    FixedBits {
        /// The current CR0.
        cr0: u64,
        /// The current CR4.
        cr4: u64,
    },
    /// VMXON failed.
    Vmxon(VmxError),
    /// VMCLEAR or VMPTRLD of the VMCS failed.
    Vmcs(VmxError),
    /// The host-physical address of a VMX structure is out of the processor's reach.
    Address(u64),
    /// Every VPID (1 to 0xFFFF) is taken by a vCPU of this processor.
    TooManyVcpus,
}

impl fmt::Display for EnableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnableError::NoVmx => f.write_str("the CPU does not report VMX (CPUID.1:ECX bit 5)"),
            EnableError::DisabledByFirmware => f.write_str(
                "IA32_FEATURE_CONTROL is locked with VMX disabled (enable VT-x in the firmware)",
            ),
            EnableError::Caps(e) => write!(f, "{e}"),
            EnableError::Controls(e) => write!(f, "{e}"),
            EnableError::NoEpt => f.write_str(
                "the vmx backend needs EPT with unrestricted guest, which this CPU lacks (no shadow paging)",
            ),
            EnableError::FixedBits { cr0, cr4 } => write!(
                f,
                "VMX operation needs CR0/CR4 bits the host cannot take (CR0 {cr0:#x}, CR4 {cr4:#x})"
            ),
            EnableError::Vmxon(e) => write!(f, "VMXON failed: {e}"),
            EnableError::Vmcs(e) => write!(f, "loading the VMCS failed: {e}"),
            EnableError::Address(a) => {
                write!(f, "VMX structure at host-physical {a:#x} is out of reach")
            }
            EnableError::TooManyVcpus => f.write_str(
                "every VPID (1 to 0xFFFF) is taken: no more vCPUs on this processor",
            ),
        }
    }
}

/// Check that the controls give what this backend needs: EPT and unrestricted guest.
pub fn check_features(controls: &Controls) -> Result<(), EnableError> {
    if controls.features.ept && controls.features.unrestricted_guest {
        Ok(())
    } else {
        Err(EnableError::NoEpt)
    }
}

/// The guest CR0/CR4 rules: the fixed bits (CR0 relaxed for unrestricted guest) and the
/// guest/host masks that make every fixed bit host-owned, so the guest reads its own
/// value from the read shadow and a write that changes one exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestCrRules {
    /// CR0 fixed bits for the guest.
    pub cr0: CrFixed,
    /// CR4 fixed bits for the guest.
    pub cr4: CrFixed,
}

impl GuestCrRules {
    /// The rules from the capability MSRs.
    pub fn new(caps: &VmxCaps, unrestricted_guest: bool) -> GuestCrRules {
        GuestCrRules {
            cr0: caps.cr0.for_guest_cr0(unrestricted_guest),
            cr4: caps.cr4,
        }
    }

    /// The CR0 guest/host mask.
    pub fn cr0_mask(&self) -> u64 {
        self.cr0.fixed0 | !self.cr0.fixed1
    }

    /// The CR4 guest/host mask.
    pub fn cr4_mask(&self) -> u64 {
        self.cr4.fixed0 | !self.cr4.fixed1
    }

    /// The value the processor runs with for a guest CR0 of `value`.
    pub fn cr0_actual(&self, value: u64) -> u64 {
        self.cr0.apply(value)
    }

    /// The value the processor runs with for a guest CR4 of `value`.
    pub fn cr4_actual(&self, value: u64) -> u64 {
        self.cr4.apply(value)
    }

    /// What the guest sees: its own bits where the mask is set, the processor's
    /// elsewhere.
    pub fn visible(actual: u64, shadow: u64, mask: u64) -> u64 {
        (actual & !mask) | (shadow & mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::fixtures::{CORE2_PENRYN_T9600, CORE_I7_SKYLAKE_X};

    #[test]
    fn feature_control_decisions() {
        // Bochs' BIOS leaves 0: we lock with VMX outside SMX (0x5).
        assert_eq!(feature_control_action(0), FeatureControlAction::Write(0x5));
        assert_eq!(
            feature_control_action(0x2),
            FeatureControlAction::Write(0x7)
        );
        assert_eq!(feature_control_action(0x5), FeatureControlAction::Ready);
        assert_eq!(feature_control_action(0x1), FeatureControlAction::LockedOff);
        assert_eq!(feature_control_action(0x3), FeatureControlAction::LockedOff);
    }

    #[test]
    fn host_fixed_bits() {
        let caps = VmxCaps::read(&CORE_I7_SKYLAKE_X).unwrap();
        // Long mode with NE off: NE and VMXE are added.
        assert_eq!(
            host_control_registers(0x8000_0011, 0x20, &caps),
            Some((0x8000_0031, 0x2020))
        );
        // Paging off cannot be fixed by us.
        assert_eq!(host_control_registers(0x11, 0x20, &caps), None);
        // A CR4 bit FIXED1 forbids (bit 23, CET) cannot be dropped silently.
        assert_eq!(host_control_registers(0x8000_0031, 1 << 23, &caps), None);
    }

    #[test]
    fn guest_cr_rules() {
        let caps = VmxCaps::read(&CORE_I7_SKYLAKE_X).unwrap();
        let rules = GuestCrRules::new(&caps, true);
        // Unrestricted guest: only NE is forced in CR0.
        assert_eq!(rules.cr0_actual(0x11), 0x31);
        assert_eq!(rules.cr0_mask() & 0xffff_ffff, 0x20);
        assert_eq!(rules.cr4_actual(0), 0x2000);
        assert_ne!(rules.cr4_mask() & 0x2000, 0);
        // The guest sees its own NE and VMXE.
        assert_eq!(GuestCrRules::visible(0x31, 0x11, rules.cr0_mask()), 0x11);
        assert_eq!(GuestCrRules::visible(0x2020, 0x20, rules.cr4_mask()), 0x20);
        let restricted = GuestCrRules::new(&caps, false);
        assert_eq!(restricted.cr0_actual(0), 0x8000_0021);
    }

    #[test]
    fn penryn_has_no_ept() {
        let caps = VmxCaps::read(&CORE2_PENRYN_T9600).unwrap();
        let controls = Controls::compute(&caps).unwrap();
        assert_eq!(check_features(&controls), Err(EnableError::NoEpt));
        let skx = Controls::compute(&VmxCaps::read(&CORE_I7_SKYLAKE_X).unwrap()).unwrap();
        assert_eq!(check_features(&skx), Ok(()));
        extern crate std;
        use std::string::ToString;
        assert!(EnableError::NoEpt.to_string().contains("needs EPT"));
    }
}

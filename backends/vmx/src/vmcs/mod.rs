//! The VMCS behind a small trait: [`VmcsAccess`] is implemented by [`HardwareVmcs`]
//! (VMREAD/VMWRITE on the current VMCS) and by [`InMemoryVmcs`], with which the rest
//! of the backend is tested without VT-x.

pub mod fields;
#[cfg(target_arch = "x86_64")]
pub(crate) mod hardware;

pub use fields::{Field, FieldType, Width};
#[cfg(target_arch = "x86_64")]
pub use hardware::HardwareVmcs;

use core::fmt;

/// A VM-instruction error number (SDM 3C 31.4, "VM Instruction Error Numbers"), read
/// from [`fields::VM_INSTRUCTION_ERROR`] after a VMfailValid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InstructionError(pub u32);

impl InstructionError {
    /// VMCALL executed in VMX root operation.
    pub const VMCALL_IN_ROOT: Self = Self(1);
    /// VMCLEAR with invalid physical address.
    pub const VMCLEAR_INVALID_ADDRESS: Self = Self(2);
    /// VMCLEAR with VMXON pointer.
    pub const VMCLEAR_VMXON_POINTER: Self = Self(3);
    /// VMLAUNCH with non-clear VMCS.
    pub const VMLAUNCH_NON_CLEAR: Self = Self(4);
    /// VMRESUME with non-launched VMCS.
    pub const VMRESUME_NON_LAUNCHED: Self = Self(5);
    /// VMRESUME after VMXOFF.
    pub const VMRESUME_AFTER_VMXOFF: Self = Self(6);
    /// VM entry with invalid control field(s).
    pub const ENTRY_INVALID_CONTROLS: Self = Self(7);
    /// VM entry with invalid host-state field(s).
    pub const ENTRY_INVALID_HOST_STATE: Self = Self(8);
    /// VMPTRLD with invalid physical address.
    pub const VMPTRLD_INVALID_ADDRESS: Self = Self(9);
    /// VMPTRLD with VMXON pointer.
    pub const VMPTRLD_VMXON_POINTER: Self = Self(10);
    /// VMPTRLD with incorrect VMCS revision identifier.
    pub const VMPTRLD_BAD_REVISION: Self = Self(11);
    /// VMREAD/VMWRITE from/to unsupported VMCS component.
    pub const UNSUPPORTED_COMPONENT: Self = Self(12);
    /// VMWRITE to read-only VMCS component.
    pub const VMWRITE_READ_ONLY: Self = Self(13);
    /// VMXON executed in VMX root operation.
    pub const VMXON_IN_ROOT: Self = Self(15);
    /// VM entry with invalid executive-VMCS pointer.
    pub const ENTRY_INVALID_EXECUTIVE_VMCS: Self = Self(16);
    /// VM entry with non-launched executive VMCS.
    pub const ENTRY_NON_LAUNCHED_EXECUTIVE_VMCS: Self = Self(17);
    /// VM entry with executive-VMCS pointer not VMXON pointer.
    pub const ENTRY_EXECUTIVE_NOT_VMXON: Self = Self(18);
    /// VMCALL with non-clear VMCS.
    pub const VMCALL_NON_CLEAR: Self = Self(19);
    /// VMCALL with invalid VM-exit control fields.
    pub const VMCALL_INVALID_EXIT_CONTROLS: Self = Self(20);
    /// VMCALL with incorrect MSEG revision identifier.
    pub const VMCALL_BAD_MSEG_REVISION: Self = Self(22);
    /// VMXOFF under dual-monitor treatment of SMIs and SMM.
    pub const VMXOFF_DUAL_MONITOR: Self = Self(23);
    /// VMCALL with invalid SMM-monitor features.
    pub const VMCALL_INVALID_SMM_MONITOR: Self = Self(24);
    /// VM entry with invalid VM-execution control fields in executive VMCS.
    pub const ENTRY_INVALID_EXECUTIVE_CONTROLS: Self = Self(25);
    /// VM entry with events blocked by MOV SS.
    pub const ENTRY_BLOCKED_BY_MOV_SS: Self = Self(26);
    /// Invalid operand to INVEPT/INVVPID.
    pub const INVALID_INVEPT_INVVPID_OPERAND: Self = Self(28);

    /// The SDM's description, or `None` for a number it does not define.
    pub fn description(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "VMCALL executed in VMX root operation",
            2 => "VMCLEAR with invalid physical address",
            3 => "VMCLEAR with VMXON pointer",
            4 => "VMLAUNCH with non-clear VMCS",
            5 => "VMRESUME with non-launched VMCS",
            6 => "VMRESUME after VMXOFF",
            7 => "VM entry with invalid control field(s)",
            8 => "VM entry with invalid host-state field(s)",
            9 => "VMPTRLD with invalid physical address",
            10 => "VMPTRLD with VMXON pointer",
            11 => "VMPTRLD with incorrect VMCS revision identifier",
            12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
            13 => "VMWRITE to read-only VMCS component",
            15 => "VMXON executed in VMX root operation",
            16 => "VM entry with invalid executive-VMCS pointer",
            17 => "VM entry with non-launched executive VMCS",
            18 => "VM entry with executive-VMCS pointer not VMXON pointer",
            19 => "VMCALL with non-clear VMCS",
            20 => "VMCALL with invalid VM-exit control fields",
            22 => "VMCALL with incorrect MSEG revision identifier",
            23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
            24 => "VMCALL with invalid SMM-monitor features",
            25 => "VM entry with invalid VM-execution control fields in executive VMCS",
            26 => "VM entry with events blocked by MOV SS",
            28 => "Invalid operand to INVEPT/INVVPID",
            _ => return None,
        })
    }
}

impl fmt::Display for InstructionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(text) => write!(f, "VM-instruction error {}: {text}", self.0),
            None => write!(f, "VM-instruction error {} (unknown)", self.0),
        }
    }
}

/// How a VMX instruction failed (SDM 3C 31.2, "Conventions").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmxError {
    /// VMfailInvalid (CF = 1): there is no current VMCS to hold an error number.
    FailInvalid,
    /// VMfailValid (ZF = 1): the error number was stored in the current VMCS.
    FailValid(InstructionError),
}

impl fmt::Display for VmxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmxError::FailInvalid => f.write_str("VMfailInvalid (no current VMCS)"),
            VmxError::FailValid(e) => write!(f, "VMfailValid: {e}"),
        }
    }
}

/// Read and write access to one VMCS, field by field.
///
/// Values are passed zero-extended to 64 bits; a write to a narrower field keeps only
/// the field's width, as VMWRITE does.
pub trait VmcsAccess {
    /// VMREAD: the value of `field`.
    fn read(&self, field: Field) -> Result<u64, VmxError>;
    /// VMWRITE: set `field` to `value`.
    fn write(&mut self, field: Field, value: u64) -> Result<(), VmxError>;
}

/// A VMCS held in ordinary memory, for unit tests of everything above VMREAD/VMWRITE.
///
/// It knows exactly the fields of [`fields::ALL`] (any other encoding fails with
/// [`InstructionError::UNSUPPORTED_COMPONENT`], as hardware does for components it
/// lacks), truncates values to the field width, supports the high-half access of
/// 64-bit fields, and refuses [`VmcsAccess::write`] to VM-exit information fields
/// ([`InstructionError::VMWRITE_READ_ONLY`]): tests script an exit with
/// [`InMemoryVmcs::set_exit_info`] instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InMemoryVmcs {
    values: [u64; fields::ALL.len()],
}

impl Default for InMemoryVmcs {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryVmcs {
    /// A VMCS with every field zero.
    pub const fn new() -> Self {
        InMemoryVmcs {
            values: [0; fields::ALL.len()],
        }
    }

    fn slot(field: Field) -> Result<usize, VmxError> {
        let unsupported = VmxError::FailValid(InstructionError::UNSUPPORTED_COMPONENT);
        if field.is_high_access() && field.width() != Width::Bits64 {
            return Err(unsupported);
        }
        fields::ALL
            .binary_search(&field.full())
            .map_err(|_| unsupported)
    }

    fn store(&mut self, field: Field, value: u64) -> Result<(), VmxError> {
        let slot = Self::slot(field)?;
        let current = self
            .values
            .get_mut(slot)
            .ok_or(VmxError::FailValid(InstructionError::UNSUPPORTED_COMPONENT))?;
        if field.is_high_access() {
            *current = (*current & 0xffff_ffff) | (value << 32);
        } else {
            *current = value & field.width().mask();
        }
        Ok(())
    }

    /// Set a field, VM-exit information included: what the processor does on a VM
    /// exit, so that tests can script one.
    pub fn set_exit_info(&mut self, field: Field, value: u64) -> Result<(), VmxError> {
        self.store(field, value)
    }

    /// Script a whole exit: every `(field, value)` pair through
    /// [`InMemoryVmcs::set_exit_info`].
    pub fn script(&mut self, pairs: &[(Field, u64)]) -> Result<(), VmxError> {
        pairs
            .iter()
            .try_for_each(|&(field, value)| self.set_exit_info(field, value))
    }
}

impl VmcsAccess for InMemoryVmcs {
    fn read(&self, field: Field) -> Result<u64, VmxError> {
        let slot = Self::slot(field)?;
        let value = self
            .values
            .get(slot)
            .copied()
            .ok_or(VmxError::FailValid(InstructionError::UNSUPPORTED_COMPONENT))?;
        Ok(if field.is_high_access() {
            value >> 32
        } else {
            value
        })
    }

    fn write(&mut self, field: Field, value: u64) -> Result<(), VmxError> {
        if field.is_read_only() {
            // Refused before the encoding is looked up only for known fields: an unknown
            // read-only encoding is still "unsupported", as on hardware.
            Self::slot(field)?;
            return Err(VmxError::FailValid(InstructionError::VMWRITE_READ_ONLY));
        }
        self.store(field, value)
    }
}

#[cfg(test)]
mod tests {
    use super::fields::*;
    use super::*;

    #[test]
    fn read_back_and_width_truncation() {
        let mut vmcs = InMemoryVmcs::new();
        vmcs.write(GUEST_RIP, 0xffff_8000_0000_1234).unwrap();
        vmcs.write(GUEST_CS_SELECTOR, 0x1_0008).unwrap();
        vmcs.write(GUEST_CS_LIMIT, 0x1_ffff_ffff).unwrap();
        assert_eq!(vmcs.read(GUEST_RIP), Ok(0xffff_8000_0000_1234));
        assert_eq!(vmcs.read(GUEST_CS_SELECTOR), Ok(0x0008));
        assert_eq!(vmcs.read(GUEST_CS_LIMIT), Ok(0xffff_ffff));
        assert_eq!(vmcs.read(GUEST_RSP), Ok(0));
    }

    #[test]
    fn read_only_fields_refuse_vmwrite_but_take_scripted_exits() {
        let mut vmcs = InMemoryVmcs::new();
        assert_eq!(
            vmcs.write(VM_EXIT_REASON, 10),
            Err(VmxError::FailValid(InstructionError::VMWRITE_READ_ONLY))
        );
        assert_eq!(vmcs.read(VM_EXIT_REASON), Ok(0));
        vmcs.script(&[(VM_EXIT_REASON, 10), (EXIT_QUALIFICATION, 7)])
            .unwrap();
        assert_eq!(vmcs.read(VM_EXIT_REASON), Ok(10));
        assert_eq!(vmcs.read(EXIT_QUALIFICATION), Ok(7));
    }

    #[test]
    fn unknown_and_malformed_encodings_are_unsupported() {
        let mut vmcs = InMemoryVmcs::new();
        let unsupported = Err(VmxError::FailValid(InstructionError::UNSUPPORTED_COMPONENT));
        assert_eq!(vmcs.read(Field::from_encoding(0x6fff)), unsupported);
        assert_eq!(
            vmcs.write(Field::from_encoding(0xdead_beef), 1),
            unsupported.map(|_| ())
        );
        // Bit 0 set on a natural-width field is not a high access.
        assert_eq!(vmcs.read(Field::from_encoding(0x681F)), unsupported);
        // An unknown encoding of the read-only type is unsupported, not read-only.
        assert_eq!(
            vmcs.write(Field::from_encoding(0x4470), 1),
            unsupported.map(|_| ())
        );
    }

    #[test]
    fn high_half_access_of_64_bit_fields() {
        let mut vmcs = InMemoryVmcs::new();
        vmcs.write(EPT_POINTER, 0x1234_5678_9abc_def0).unwrap();
        let high = EPT_POINTER.high().unwrap();
        assert_eq!(vmcs.read(high), Ok(0x1234_5678));
        vmcs.write(high, 0xaaaa_bbbb).unwrap();
        assert_eq!(vmcs.read(EPT_POINTER), Ok(0xaaaa_bbbb_9abc_def0));
        let gpa_high = GUEST_PHYSICAL_ADDRESS.high().unwrap();
        assert!(vmcs.write(gpa_high, 1).is_err());
    }

    #[test]
    fn error_messages_name_the_failure() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(
            VmxError::FailValid(InstructionError::ENTRY_INVALID_CONTROLS).to_string(),
            "VMfailValid: VM-instruction error 7: VM entry with invalid control field(s)"
        );
        assert_eq!(
            InstructionError(14).to_string(),
            "VM-instruction error 14 (unknown)"
        );
    }
}

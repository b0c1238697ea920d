//! VMREAD/VMWRITE on the current VMCS. Compiled on every x86-64 build, never executed
//! by the host tests (it needs VMX root operation).

use super::{fields, Field, InstructionError, VmcsAccess, VmxError};
use core::arch::asm;
use core::marker::PhantomData;

/// The processor's current VMCS, accessed with VMREAD and VMWRITE.
///
/// VMX root operation is a property of one logical processor, so the handle is neither
/// `Send` nor `Sync`.
#[derive(Debug)]
pub struct HardwareVmcs {
    _this_cpu: PhantomData<*mut ()>,
}

impl HardwareVmcs {
    /// A handle on this processor's current VMCS.
    ///
    /// # Safety
    ///
    /// For as long as the handle lives, this logical processor must be in VMX root
    /// operation at CPL 0 (VMXON executed and not undone), so that VMREAD and VMWRITE
    /// cannot raise #UD or #GP. Whether a VMCS is current does not matter: without one,
    /// the instructions report VMfailInvalid.
    pub unsafe fn new() -> Self {
        HardwareVmcs {
            _this_cpu: PhantomData,
        }
    }
}

/// Turn the CF and ZF left by a VMX instruction into its outcome (SDM 3C 31.2):
/// CF = 1 is VMfailInvalid, ZF = 1 is VMfailValid with the error number in the VMCS.
pub(crate) fn vmx_outcome(cf: u8, zf: u8) -> Result<(), VmxError> {
    if cf != 0 {
        Err(VmxError::FailInvalid)
    } else if zf != 0 {
        Err(VmxError::FailValid(instruction_error()))
    } else {
        Ok(())
    }
}

/// Read the VM-instruction error of the current VMCS after a VMfailValid.
fn instruction_error() -> InstructionError {
    match vmread_raw(fields::VM_INSTRUCTION_ERROR) {
        // The field is 32 bits wide; VMREAD zero-extends it.
        (number, 0, 0) => InstructionError(number as u32),
        // VMfailValid implies a current VMCS, so this read cannot fail; 0 is not a
        // defined error number and says "unknown". (No retry: a processor that failed
        // here would fail again, forever.)
        _ => InstructionError(0),
    }
}

/// VMREAD, returning the value and the CF and ZF it left.
fn vmread_raw(field: Field) -> (u64, u8, u8) {
    let value: u64;
    let cf: u8;
    let zf: u8;
    // SAFETY: a `HardwareVmcs` exists only under its constructor's contract (VMX root
    // operation, CPL 0), so VMREAD cannot fault. It reads the current VMCS, which is not
    // Rust-visible memory, writes only the output register, and its CF/ZF outcome is
    // captured by SETC/SETZ right after it.
    unsafe {
        asm!(
            "vmread {value}, {field}",
            "setc {cf}",
            "setz {zf}",
            field = in(reg) u64::from(field.encoding()),
            value = out(reg) value,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    (value, cf, zf)
}

impl VmcsAccess for HardwareVmcs {
    fn read(&self, field: Field) -> Result<u64, VmxError> {
        let (value, cf, zf) = vmread_raw(field);
        vmx_outcome(cf, zf).map(|()| value)
    }

    fn write(&mut self, field: Field, value: u64) -> Result<(), VmxError> {
        let cf: u8;
        let zf: u8;
        // SAFETY: as for VMREAD above: VMX root operation at CPL 0 is guaranteed by
        // `HardwareVmcs::new`'s contract; VMWRITE changes only the current VMCS (state
        // that takes effect at the next VM entry, checked by the processor then), and
        // its outcome is captured from CF/ZF.
        unsafe {
            asm!(
                "vmwrite {field}, {value}",
                "setc {cf}",
                "setz {zf}",
                field = in(reg) u64::from(field.encoding()),
                value = in(reg) value,
                cf = out(reg_byte) cf,
                zf = out(reg_byte) zf,
                options(nostack),
            );
        }
        vmx_outcome(cf, zf)
    }
}

//! VMREAD/VMWRITE on the current VMCS. Compiled on every x86-64 build, never executed
//! by the host tests (it needs VMX root operation).

use super::{fields, Field, InstructionError, VmcsAccess, VmxError};
use crate::root::Unswitched;
use crate::vcpu::Root;
use alloc::rc::Rc;
use core::arch::asm;
use core::cell::RefCell;

/// One vCPU's VMCS on this processor, accessed with VMREAD and VMWRITE: made current
/// (VMPTRLD) first whenever another vCPU's is (see [`crate::root`]). It also carries
/// the vCPU's saved copy of the registers VMX does not switch, and clears the VMCS
/// (VMCLEAR) when dropped.
///
/// VMX root operation is a property of one logical processor, so the handle is neither
/// `Send` nor `Sync`.
pub struct HardwareVmcs {
    phys: u64,
    root: Rc<Root>,
    guest: Rc<RefCell<Unswitched>>,
}

impl core::fmt::Debug for HardwareVmcs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HardwareVmcs")
            .field("phys", &format_args!("{:#x}", self.phys))
            .finish_non_exhaustive()
    }
}

impl HardwareVmcs {
    /// A handle on the VMCS at host-physical `phys`, of the processor `root`, for the
    /// vCPU whose unswitched registers are saved in `guest`.
    ///
    /// # Safety
    ///
    /// The processor is in VMX root operation at CPL 0 for as long as `root` lives (so
    /// that VMREAD, VMWRITE, VMPTRLD and VMCLEAR cannot raise #UD or #GP); `phys` is
    /// the page-aligned address of a VMCS region with the processor's revision, cleared
    /// with VMCLEAR, whose memory outlives the handle.
    pub(crate) unsafe fn new(phys: u64, root: Rc<Root>, guest: Rc<RefCell<Unswitched>>) -> Self {
        HardwareVmcs { phys, root, guest }
    }

    /// Make this VMCS the current one.
    #[inline]
    pub(crate) fn make_current(&self) -> Result<(), VmxError> {
        self.root.cpu.make_current(self.phys)
    }

    /// The processor's VMX root operation.
    pub(crate) fn root(&self) -> &Rc<Root> {
        &self.root
    }

    /// The vCPU's saved registers.
    pub(crate) fn guest(&self) -> &Rc<RefCell<Unswitched>> {
        &self.guest
    }
}

impl Drop for HardwareVmcs {
    fn drop(&mut self) {
        let phys = self.phys;
        let (cf, zf): (u8, u8);
        // SAFETY: VMX root operation at CPL 0 (the constructor's contract; `root` is
        // still alive). VMCLEAR writes the VMCS's cached data back to its region and
        // makes it inactive (SDM 3C 25.11.1: before its memory is given up); the
        // operand is the address of a local.
        unsafe {
            asm!(
                "vmclear qword ptr [{p}]",
                "setc {cf}",
                "setz {zf}",
                p = in(reg) &phys,
                cf = out(reg_byte) cf,
                zf = out(reg_byte) zf,
                options(nostack),
            );
        }
        // A VMCLEAR that failed leaves nothing better to do: the region is the
        // processor's as long as VMX operation lasts, which `Root`'s drop ends.
        let _ = vmx_outcome(cf, zf);
        self.root.cpu.cleared(phys);
        self.root.cpu.release(&self.guest);
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
        self.make_current()?;
        let (value, cf, zf) = vmread_raw(field);
        vmx_outcome(cf, zf).map(|()| value)
    }

    fn write(&mut self, field: Field, value: u64) -> Result<(), VmxError> {
        self.make_current()?;
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

//! The VMCB behind a small trait: [`VmcbAccess`] is implemented by [`VmcbPage`] (the
//! page whose physical address VMRUN takes, which the processor reads at VMRUN and
//! writes at #VMEXIT) and by [`InMemoryVmcb`], on which tests script exits the way the
//! processor records them, so that everything above the world switch is tested without
//! AMD-V.
//!
//! Both refuse software writes to the fields the processor writes at #VMEXIT (the exit
//! code and information, NRIP, the fetched instruction bytes): such a write would be a
//! backend bug, reported rather than silently done.

pub mod fields;

pub use fields::Field;

use crate::page::Pages;
use alloc::boxed::Box;
use core::fmt;

/// Why a VMCB access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmcbError {
    /// A software write to a field the processor writes at #VMEXIT.
    ProcessorWritten(Field),
    /// A field outside the page or not naturally aligned.
    Malformed(Field),
}

impl fmt::Display for VmcbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmcbError::ProcessorWritten(field) => write!(
                f,
                "write to VMCB field {} ({:#05x}), which the processor writes at #VMEXIT",
                field.name(),
                field.offset()
            ),
            VmcbError::Malformed(field) => write!(
                f,
                "VMCB field {} at {:#x} of {} bytes is not an aligned field of the page",
                field.name(),
                field.offset(),
                field.size()
            ),
        }
    }
}

/// Read and write access to one VMCB, field by field. Values are zero-extended to 64
/// bits; a write keeps only the field's width.
pub trait VmcbAccess {
    /// The value of `field` (0 for a malformed field).
    fn read(&self, field: Field) -> u64;
    /// Set `field` to `value`.
    fn write(&mut self, field: Field, value: u64) -> Result<(), VmcbError>;
}

/// Read `field` from the bytes of a VMCB.
fn get(bytes: &[u8; 4096], field: Field) -> u64 {
    let at = usize::from(field.offset());
    let mut buf = [0u8; 8];
    match (
        buf.get_mut(..usize::from(field.size())),
        bytes.get(at..at + usize::from(field.size())),
    ) {
        (Some(dst), Some(src)) if field.is_well_formed() => {
            dst.copy_from_slice(src);
            u64::from_le_bytes(buf)
        }
        _ => 0,
    }
}

/// Store `value` into `field` of the bytes of a VMCB.
fn put(bytes: &mut [u8; 4096], field: Field, value: u64) -> Result<(), VmcbError> {
    if !field.is_well_formed() {
        return Err(VmcbError::Malformed(field));
    }
    let at = usize::from(field.offset());
    let size = usize::from(field.size());
    let src = value.to_le_bytes();
    match (bytes.get_mut(at..at + size), src.get(..size)) {
        (Some(dst), Some(src)) => {
            dst.copy_from_slice(src);
            Ok(())
        }
        _ => Err(VmcbError::Malformed(field)),
    }
}

/// A VMCB in ordinary memory, for unit tests of everything above VMRUN.
///
/// Tests script an exit with [`InMemoryVmcb::set_exit_info`] (which may write any
/// field, as the processor does at #VMEXIT); [`VmcbAccess::write`] refuses the
/// processor-written fields.
#[derive(Clone, PartialEq, Eq)]
pub struct InMemoryVmcb {
    bytes: Box<[u8; 4096]>,
}

impl fmt::Debug for InMemoryVmcb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryVmcb")
            .field(
                "exitcode",
                &format_args!("{:#x}", self.read(fields::EXITCODE)),
            )
            .field("rip", &format_args!("{:#x}", self.read(fields::RIP)))
            .finish_non_exhaustive()
    }
}

impl Default for InMemoryVmcb {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryVmcb {
    /// A VMCB with every byte zero.
    pub fn new() -> Self {
        InMemoryVmcb {
            bytes: Box::new([0; 4096]),
        }
    }

    /// Set a field, processor-written ones included: what the processor does at
    /// #VMEXIT, so that tests can script one.
    pub fn set_exit_info(&mut self, field: Field, value: u64) -> Result<(), VmcbError> {
        put(&mut self.bytes, field, value)
    }

    /// Script a whole exit: every `(field, value)` pair through
    /// [`InMemoryVmcb::set_exit_info`].
    pub fn script(&mut self, pairs: &[(Field, u64)]) -> Result<(), VmcbError> {
        pairs
            .iter()
            .try_for_each(|&(field, value)| self.set_exit_info(field, value))
    }

    /// Record the instruction bytes a processor with decode assists fetched (at most
    /// 15; an empty slice records none).
    pub fn set_instruction_bytes(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(15);
        let base = usize::from(fields::INSN_FETCHED.offset());
        self.bytes[base] = n as u8;
        for (i, slot) in self.bytes[base + 1..base + 16].iter_mut().enumerate() {
            *slot = bytes.get(i).copied().filter(|_| i < n).unwrap_or(0);
        }
    }

    /// The whole page, as the processor would read it.
    pub fn bytes(&self) -> &[u8; 4096] {
        &self.bytes
    }

    /// Make this VMCB a copy of `other` (without allocating).
    pub fn copy_from(&mut self, other: &InMemoryVmcb) {
        self.bytes.copy_from_slice(&other.bytes[..]);
    }
}

impl VmcbAccess for InMemoryVmcb {
    fn read(&self, field: Field) -> u64 {
        get(&self.bytes, field)
    }

    fn write(&mut self, field: Field, value: u64) -> Result<(), VmcbError> {
        if field.processor_written() {
            return Err(VmcbError::ProcessorWritten(field));
        }
        put(&mut self.bytes, field, value)
    }
}

/// The VMCB page VMRUN runs: 4 KiB-aligned host memory that the processor reads at
/// VMRUN and writes at #VMEXIT. Accesses are volatile, so that nothing the processor
/// wrote is read from a stale copy the compiler kept.
pub struct VmcbPage {
    page: Box<Pages<1>>,
}

impl fmt::Debug for VmcbPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmcbPage")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .finish_non_exhaustive()
    }
}

impl Default for VmcbPage {
    fn default() -> Self {
        Self::new()
    }
}

impl VmcbPage {
    /// A zeroed VMCB page.
    pub fn new() -> Self {
        VmcbPage {
            page: Pages::zeroed(),
        }
    }

    /// The host virtual address of the page (the caller translates it for VMRUN).
    pub fn addr(&self) -> u64 {
        self.page.addr()
    }

    fn byte_ptr(&self) -> *const u8 {
        self.page.0.as_ptr().cast()
    }
}

impl VmcbAccess for VmcbPage {
    fn read(&self, field: Field) -> u64 {
        if !field.is_well_formed() {
            return 0;
        }
        let at = usize::from(field.offset());
        // SAFETY: the field lies inside the 4096-byte page and is naturally aligned
        // (`is_well_formed`), so the pointer is valid and aligned for its width; the
        // read is volatile because the processor writes the page at #VMEXIT.
        unsafe {
            let p = self.byte_ptr().add(at);
            match field.size() {
                1 => u64::from(p.read_volatile()),
                2 => u64::from(p.cast::<u16>().read_volatile()),
                4 => u64::from(p.cast::<u32>().read_volatile()),
                _ => p.cast::<u64>().read_volatile(),
            }
        }
    }

    fn write(&mut self, field: Field, value: u64) -> Result<(), VmcbError> {
        if field.processor_written() {
            return Err(VmcbError::ProcessorWritten(field));
        }
        if !field.is_well_formed() {
            return Err(VmcbError::Malformed(field));
        }
        let at = usize::from(field.offset());
        let p: *mut u8 = self.page.0.as_mut_ptr().cast();
        // SAFETY: as for `read`: inside the page, aligned for the width; the page is
        // owned by this value and borrowed mutably, so nothing else writes it now (the
        // processor does only while VMRUN runs).
        unsafe {
            let p = p.add(at);
            match field.size() {
                1 => p.write_volatile(value as u8),
                2 => p.cast::<u16>().write_volatile(value as u16),
                4 => p.cast::<u32>().write_volatile(value as u32),
                _ => p.cast::<u64>().write_volatile(value),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::fields::*;
    use super::*;

    fn both() -> [Box<dyn VmcbAccess>; 2] {
        [Box::new(InMemoryVmcb::new()), Box::new(VmcbPage::new())]
    }

    #[test]
    fn read_back_and_width_truncation() {
        for mut vmcb in both() {
            vmcb.write(RIP, 0xffff_8000_0000_1234).unwrap();
            vmcb.write(CS.selector, 0x1_0008).unwrap();
            vmcb.write(CS.limit, 0x1_ffff_ffff).unwrap();
            vmcb.write(CPL, 0x103).unwrap();
            assert_eq!(vmcb.read(RIP), 0xffff_8000_0000_1234);
            assert_eq!(vmcb.read(CS.selector), 0x0008);
            assert_eq!(vmcb.read(CS.limit), 0xffff_ffff);
            assert_eq!(vmcb.read(CPL), 3);
            assert_eq!(vmcb.read(RSP), 0);
            // Neighbours are untouched: the attribute word sits between selector and
            // limit.
            assert_eq!(vmcb.read(CS.attrib), 0);
            vmcb.write(TLB_CONTROL, 3).unwrap();
            vmcb.write(GUEST_ASID, 0xffff_ffff).unwrap();
            assert_eq!(vmcb.read(TLB_CONTROL), 3);
            assert_eq!(vmcb.read(GUEST_ASID), 0xffff_ffff);
        }
    }

    #[test]
    fn processor_written_fields_refuse_software_but_take_scripted_exits() {
        for mut vmcb in both() {
            assert_eq!(
                vmcb.write(EXITCODE, 0x72),
                Err(VmcbError::ProcessorWritten(EXITCODE))
            );
            assert_eq!(vmcb.read(EXITCODE), 0);
        }
        let mut vmcb = InMemoryVmcb::new();
        vmcb.script(&[(EXITCODE, 0x7b), (EXITINFO2, 0x1003)])
            .unwrap();
        assert_eq!(vmcb.read(EXITCODE), 0x7b);
        assert_eq!(vmcb.read(EXITINFO2), 0x1003);
        vmcb.set_instruction_bytes(&[0x8b, 0x42, 0x20]);
        assert_eq!(vmcb.read(INSN_FETCHED), 0x2042_8b03);
        assert_eq!(vmcb.read(INSN_BYTES_HIGH), 0);
    }

    #[test]
    fn malformed_fields_are_refused() {
        for mut vmcb in both() {
            let outside = Field::new(0xffc, 8, "outside");
            let unaligned = Field::new(0x401, 2, "unaligned");
            assert_eq!(vmcb.write(outside, 1), Err(VmcbError::Malformed(outside)));
            assert_eq!(
                vmcb.write(unaligned, 1),
                Err(VmcbError::Malformed(unaligned))
            );
            assert_eq!(vmcb.read(outside), 0);
        }
        extern crate std;
        use std::string::ToString;
        assert!(VmcbError::ProcessorWritten(EXITINFO1)
            .to_string()
            .contains("EXITINFO1 (0x078)"));
    }

    #[test]
    fn the_page_is_page_aligned_and_laid_out_as_the_apm_says() {
        let mut page = VmcbPage::new();
        assert_eq!(page.addr() % 4096, 0);
        page.write(RAX, 0x1122_3344_5566_7788).unwrap();
        // SAFETY: reading the page's own bytes at the APM's RAX offset, 0x5F8.
        let raw = unsafe { (page.addr() as *const u8).add(0x5f8).cast::<u64>().read() };
        assert_eq!(raw, 0x1122_3344_5566_7788);
    }
}

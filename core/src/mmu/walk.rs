//! The guest page-table walker.
//!
//! INTERFACE STUB — being implemented; signatures are fixed.

use super::memory::GuestMemory;

/// The paging-related registers a walk depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingRegs {
    /// CR0 (PG, WP).
    pub cr0: u64,
    /// CR3 (the root).
    pub cr3: u64,
    /// CR4 (PAE, PSE, PGE, SMEP, SMAP).
    pub cr4: u64,
    /// IA32_EFER (LMA, NXE).
    pub efer: u64,
}

/// The kind of access being translated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// A write.
    pub write: bool,
    /// A user-mode access (CPL 3, not an implicit supervisor access).
    pub user: bool,
    /// An instruction fetch.
    pub fetch: bool,
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address of the byte translated.
    pub gpa: u64,
    /// Size of the page that mapped it: 4 KiB, 2 MiB (4 MiB without PAE) or 1 GiB.
    pub page_size: u64,
    /// Writable by this kind of access at every level.
    pub writable: bool,
    /// Accessible to user mode at every level.
    pub user: bool,
    /// Executable (no NX at any level).
    pub executable: bool,
    /// The global bit of the final entry.
    pub global: bool,
}

/// A failed translation: the #PF error code to deliver (CR2 is the address walked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    /// The error code: P, W/R, U/S, RSVD, I/D bits.
    pub error_code: u32,
}

/// Translate `gva` for `access`, setting accessed and dirty bits as the hardware does.
pub fn walk(mem: &mut GuestMemory, regs: &PagingRegs, gva: u64, access: Access) -> Result<Translation, PageFault> {
    let _ = (mem, regs, gva, access);
    todo!()
}

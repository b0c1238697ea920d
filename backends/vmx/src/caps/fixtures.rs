//! Capability MSRs of Bochs 2.7's VMX CPU models, recorded on real runs (see the
//! project's notes/test-machines.md), as [`MsrRead`] sources for tests.
//!
//! Values the notes do not list are derived from Bochs' definitions and marked so:
//! Bochs computes the TRUE_* allowed-0 words as model-independent constants (TRUE
//! procbased clears bits 15-16, TRUE exit and entry clear bit 2 of the plain words)
//! and copies the allowed-1 words from the plain MSRs.

use super::*;

/// The capability MSRs of one processor model; `None` for an MSR it does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrFixture {
    /// IA32_VMX_BASIC.
    pub basic: u64,
    /// IA32_VMX_PINBASED_CTLS.
    pub pinbased: u64,
    /// IA32_VMX_PROCBASED_CTLS.
    pub procbased: u64,
    /// IA32_VMX_EXIT_CTLS.
    pub exit: u64,
    /// IA32_VMX_ENTRY_CTLS.
    pub entry: u64,
    /// IA32_VMX_MISC.
    pub misc: u64,
    /// IA32_VMX_CR0_FIXED0.
    pub cr0_fixed0: u64,
    /// IA32_VMX_CR0_FIXED1.
    pub cr0_fixed1: u64,
    /// IA32_VMX_CR4_FIXED0.
    pub cr4_fixed0: u64,
    /// IA32_VMX_CR4_FIXED1.
    pub cr4_fixed1: u64,
    /// IA32_VMX_VMCS_ENUM.
    pub vmcs_enum: u64,
    /// IA32_VMX_PROCBASED_CTLS2.
    pub procbased2: Option<u64>,
    /// IA32_VMX_EPT_VPID_CAP.
    pub ept_vpid_cap: Option<u64>,
    /// IA32_VMX_TRUE_PINBASED_CTLS.
    pub true_pinbased: Option<u64>,
    /// IA32_VMX_TRUE_PROCBASED_CTLS.
    pub true_procbased: Option<u64>,
    /// IA32_VMX_TRUE_EXIT_CTLS.
    pub true_exit: Option<u64>,
    /// IA32_VMX_TRUE_ENTRY_CTLS.
    pub true_entry: Option<u64>,
}

impl MsrRead for MsrFixture {
    fn read_msr(&self, index: u32) -> Option<u64> {
        match index {
            IA32_VMX_BASIC => Some(self.basic),
            IA32_VMX_PINBASED_CTLS => Some(self.pinbased),
            IA32_VMX_PROCBASED_CTLS => Some(self.procbased),
            IA32_VMX_EXIT_CTLS => Some(self.exit),
            IA32_VMX_ENTRY_CTLS => Some(self.entry),
            IA32_VMX_MISC => Some(self.misc),
            IA32_VMX_CR0_FIXED0 => Some(self.cr0_fixed0),
            IA32_VMX_CR0_FIXED1 => Some(self.cr0_fixed1),
            IA32_VMX_CR4_FIXED0 => Some(self.cr4_fixed0),
            IA32_VMX_CR4_FIXED1 => Some(self.cr4_fixed1),
            IA32_VMX_VMCS_ENUM => Some(self.vmcs_enum),
            IA32_VMX_PROCBASED_CTLS2 => self.procbased2,
            IA32_VMX_EPT_VPID_CAP => self.ept_vpid_cap,
            IA32_VMX_TRUE_PINBASED_CTLS => self.true_pinbased,
            IA32_VMX_TRUE_PROCBASED_CTLS => self.true_procbased,
            IA32_VMX_TRUE_EXIT_CTLS => self.true_exit,
            IA32_VMX_TRUE_ENTRY_CTLS => self.true_entry,
            _ => None,
        }
    }
}

/// Bochs `corei7_skylake_x` (every value from the notes).
pub const CORE_I7_SKYLAKE_X: MsrFixture = MsrFixture {
    basic: 0x00d8_1000_0000_002b,
    pinbased: 0x0000_007f_0000_0016,
    procbased: 0xf7f9_fffe_0401_e172,
    exit: 0x007f_ffff_0003_6dff,
    entry: 0x0000_ffff_0000_11ff,
    misc: 0x6004_01e0,
    cr0_fixed0: 0x8000_0021,
    cr0_fixed1: 0xffff_ffff,
    cr4_fixed0: 0x2000,
    cr4_fixed1: 0x0037_27ff,
    vmcs_enum: 0x34,
    procbased2: Some(0x0217_7fff_0000_0000),
    ept_vpid_cap: Some(0x0000_0f01_0633_4141),
    true_pinbased: Some(0x0000_007f_0000_0016),
    true_procbased: Some(0xf7f9_fffe_0400_6172),
    true_exit: Some(0x007f_ffff_0003_6dfb),
    true_entry: Some(0x0000_ffff_0000_11fb),
};

/// Bochs `tigerlake` (TRUE_* derived; CR0 fixed bits and VMCS_ENUM as skylake, which
/// Bochs does not vary by model).
pub const TIGERLAKE: MsrFixture = MsrFixture {
    basic: 0x01d8_1000_0000_0004,
    pinbased: 0x0000_007f_0000_0016,
    procbased: 0xfff9_fffe_0401_e172,
    exit: 0x107f_ffff_0003_6dff,
    entry: 0x0010_ffff_0000_11ff,
    misc: 0x6004_01e0,
    cr0_fixed0: 0x8000_0021,
    cr0_fixed1: 0xffff_ffff,
    cr4_fixed0: 0x2000,
    cr4_fixed1: 0x00f7_2fff,
    vmcs_enum: 0x34,
    procbased2: Some(0x0297_7fff_0000_0000),
    ept_vpid_cap: Some(0x0000_0f01_06b3_4141),
    true_pinbased: Some(0x0000_007f_0000_0016),
    true_procbased: Some(0xfff9_fffe_0400_6172),
    true_exit: Some(0x107f_ffff_0003_6dfb),
    true_entry: Some(0x0010_ffff_0000_11fb),
};

/// Bochs `core2_penryn_t9600`: no EPT, no VPID, no unrestricted guest, no preemption
/// timer, no EFER/PAT load or save. TRUE_* derived; CR4_FIXED1 assumed (the pre-Nehalem
/// CR4 bits 0-10 plus VMXE), not recorded.
pub const CORE2_PENRYN_T9600: MsrFixture = MsrFixture {
    basic: 0x00d8_1000_0000_002b,
    pinbased: 0x0000_003f_0000_0016,
    procbased: 0xf7f9_fffe_0401_e172,
    exit: 0x0003_ffff_0003_6dff,
    entry: 0x0000_3fff_0000_11ff,
    misc: 0x0004_01e0,
    cr0_fixed0: 0x8000_0021,
    cr0_fixed1: 0xffff_ffff,
    cr4_fixed0: 0x2000,
    cr4_fixed1: 0x0000_27ff,
    vmcs_enum: 0x34,
    procbased2: Some(0x0000_0041_0000_0000),
    ept_vpid_cap: None,
    true_pinbased: Some(0x0000_003f_0000_0016),
    true_procbased: Some(0xf7f9_fffe_0400_6172),
    true_exit: Some(0x0003_ffff_0003_6dfb),
    true_entry: Some(0x0000_3fff_0000_11fb),
};

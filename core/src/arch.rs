//! Architectural constants the core's handlers share (Intel SDM volume 3A).

use crate::ops::{SegReg, Segment};

/// RFLAGS.IF: maskable interrupts enabled.
pub const RFLAGS_IF: u64 = 1 << 9;
/// CR0.PE.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.ET (always 1 on processors since the i486).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// IA32_EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// IA32_EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;
/// IA32_APIC_BASE.EN: the local APIC is enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// CR4.OSXSAVE.
pub const CR4_OSXSAVE: u64 = 1 << 18;

/// Whether exception `vector` is a fault (SDM 3A table 6-1; the same rule as KVM's
/// `exception_type`): every vector below 32 but #DB (a trap: instruction breakpoints are
/// not emulated), NMI, #BP, #OF, #DF and #MC. A fault's pushed RFLAGS image has RF set
/// (SDM 3A 17.3.1.1), which both the emulator's delivery and VMX's injection apply.
pub fn exception_is_fault(vector: u8) -> bool {
    vector < 32 && !matches!(vector, 1 | 2 | 3 | 4 | 8 | 18)
}

/// IA32_PAT's power-on value (SDM 3A 13.12.4): WB, WT, UC-, UC, twice.
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
/// DR7's power-on value.
pub const DR7_DEFAULT: u64 = 0x400;
/// DR6's power-on value.
pub const DR6_DEFAULT: u64 = 0xffff_0ff0;

/// The register state after RESET (SDM 3A table 10-1, APM 2 table 14-1) that the
/// hardware backends write into their guest state: real mode at F000:FFF0, CR0
/// 0x60000010 as the guest sees it.
pub struct ResetState;

impl ResetState {
    /// CR0 after reset.
    pub const CR0: u64 = 0x6000_0010;
    /// RFLAGS after reset.
    pub const RFLAGS: u64 = 0x2;
    /// RIP after reset.
    pub const RIP: u64 = 0xfff0;

    /// The segment registers after reset.
    pub fn segment(seg: SegReg) -> Segment {
        match seg {
            SegReg::Cs => Segment {
                selector: 0xf000,
                base: 0xffff_0000,
                limit: 0xffff,
                attr: 0x9b,
            },
            SegReg::Ldtr => Segment {
                selector: 0,
                base: 0,
                limit: 0xffff,
                attr: 0x82,
            },
            SegReg::Tr => Segment {
                selector: 0,
                base: 0,
                limit: 0xffff,
                attr: 0x8b,
            },
            _ => Segment::real_mode(0, false),
        }
    }
}

/// CR4.VME.
pub const CR4_VME: u64 = 1 << 0;
/// CR4.PVI.
pub const CR4_PVI: u64 = 1 << 1;
/// CR4.TSD.
pub const CR4_TSD: u64 = 1 << 2;
/// CR4.DE: debugging extensions (DR4/DR5 are reserved, I/O breakpoints exist).
pub const CR4_DE: u64 = 1 << 3;
/// CR4.PSE.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.MCE.
pub const CR4_MCE: u64 = 1 << 6;
/// CR4.PGE.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.PCE.
pub const CR4_PCE: u64 = 1 << 8;
/// CR4.OSFXSR.
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// CR4.UMIP: SGDT, SIDT, SLDT, STR and SMSW fault at CPL > 0.
pub const CR4_UMIP: u64 = 1 << 11;
/// CR4.LA57: 5-level paging, 57-bit linear addresses.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.VMXE.
pub const CR4_VMXE: u64 = 1 << 13;
/// CR4.FSGSBASE: RDFSBASE, RDGSBASE, WRFSBASE, WRGSBASE.
pub const CR4_FSGSBASE: u64 = 1 << 16;
/// CR4.PCIDE: process-context identifiers.
pub const CR4_PCIDE: u64 = 1 << 17;
/// CR4.SMEP.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP.
pub const CR4_SMAP: u64 = 1 << 21;
/// CR4.PKE: protection keys for user-mode pages.
pub const CR4_PKE: u64 = 1 << 22;
/// IA32_EFER.SCE.
pub const EFER_SCE: u64 = 1 << 0;
/// IA32_EFER.NXE.
pub const EFER_NXE: u64 = 1 << 11;

/// XCR0.X87: the x87 state component (always set).
pub const XCR0_X87: u64 = 1 << 0;
/// XCR0.SSE: the SSE state component (XMM registers, MXCSR).
pub const XCR0_SSE: u64 = 1 << 1;
/// The XSAVE area of the x87 and SSE state components: the 512-byte legacy region and
/// the 64-byte XSAVE header, in either format.
pub const XSAVE_LEGACY_AND_HEADER: u32 = 576;

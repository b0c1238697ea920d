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

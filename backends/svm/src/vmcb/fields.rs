//! VMCB fields (APM 2 appendix B, "Layout of VMCB"): the control area at offsets
//! 0x000-0x3FF and the state save area from 0x400, each field an offset and a size in
//! bytes, with the VMCB clean bit (APM 2 15.15.3) that covers it.
//!
//! Fields that pack several controls (the virtual-interrupt word at 0x060, the nested
//! paging word at 0x090) are one field here; [`vintr`], [`misc1`], [`misc2`] and the
//! other modules below name their bits.

use opsvisor_core::ops::SegReg;

/// One VMCB field: where it is and how wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    offset: u16,
    size: u8,
    name: &'static str,
}

impl Field {
    /// The field of `size` bytes (1, 2, 4 or 8) at `offset`.
    pub const fn new(offset: u16, size: u8, name: &'static str) -> Field {
        Field { offset, size, name }
    }

    /// Byte offset in the VMCB page.
    pub const fn offset(self) -> u16 {
        self.offset
    }

    /// Size in bytes.
    pub const fn size(self) -> u8 {
        self.size
    }

    /// The APM's name of the field.
    pub const fn name(self) -> &'static str {
        self.name
    }

    /// The mask of the bits the field holds.
    pub const fn mask(self) -> u64 {
        match self.size {
            1 => 0xff,
            2 => 0xffff,
            4 => 0xffff_ffff,
            _ => u64::MAX,
        }
    }

    /// Whether the field lies inside the page and is naturally aligned (every field
    /// below is; the accessors refuse anything else).
    pub const fn is_well_formed(self) -> bool {
        matches!(self.size, 1 | 2 | 4 | 8)
            && self.offset as usize + self.size as usize <= 4096
            && self.offset % self.size as u16 == 0
    }

    /// Whether the processor writes the field at #VMEXIT and software only reads it:
    /// the exit code and information, the next RIP and the fetched instruction bytes.
    /// The VMCB implementations refuse software writes to them, which would be a bug.
    pub const fn processor_written(self) -> bool {
        matches!(
            self.offset,
            0x070 | 0x078 | 0x080 | 0x088 | 0x0c8 | 0x0d0 | 0x0d8
        )
    }

    /// The VMCB clean bit (APM 2 table 15-9) whose clearing tells the processor to
    /// reload this field at the next VMRUN, as a mask; 0 for fields the processor
    /// always reads (RIP, RSP, RAX, RFLAGS, EVENTINJ, TLB control, ...) and for those
    /// VMLOAD loads.
    pub const fn clean_bit(self) -> u32 {
        match self.offset {
            // I: intercept vectors, TSC offset, pause filter.
            0x000..=0x017 | 0x03c..=0x03f | 0x050 => clean::INTERCEPTS,
            // IOPM: the two permission-map bases.
            0x040 | 0x048 => clean::IOPM,
            // ASID.
            0x058 => clean::ASID,
            // TPR: the virtual-interrupt controls.
            0x060 => clean::TPR,
            // NP: nested paging enable, nCR3, G_PAT.
            0x090 | 0x0b0 | 0x668 => clean::NP,
            // CRx: CR0, CR3, CR4, EFER.
            0x4d0 | 0x548 | 0x550 | 0x558 => clean::CRX,
            // DRx: DR6, DR7.
            0x560 | 0x568 => clean::DRX,
            // DT: GDTR, IDTR.
            0x460..=0x46f | 0x480..=0x48f => clean::DT,
            // SEG: ES, CS, SS, DS and CPL.
            0x400..=0x43f | 0x4cb => clean::SEG,
            // CR2.
            0x640 => clean::CR2,
            // LBR: DBGCTL and the branch records.
            0x670..=0x697 => clean::LBR,
            _ => 0,
        }
    }
}

/// VMCB clean bits (APM 2 table 15-9).
pub mod clean {
    /// Intercept vectors, TSC offset, pause filter count and threshold.
    pub const INTERCEPTS: u32 = 1 << 0;
    /// IOPM_BASE, MSRPM_BASE.
    pub const IOPM: u32 = 1 << 1;
    /// ASID.
    pub const ASID: u32 = 1 << 2;
    /// V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR.
    pub const TPR: u32 = 1 << 3;
    /// NP_ENABLE, nCR3, G_PAT.
    pub const NP: u32 = 1 << 4;
    /// CR0, CR3, CR4, EFER.
    pub const CRX: u32 = 1 << 5;
    /// DR6, DR7.
    pub const DRX: u32 = 1 << 6;
    /// GDTR, IDTR.
    pub const DT: u32 = 1 << 7;
    /// ES, CS, SS, DS, CPL.
    pub const SEG: u32 = 1 << 8;
    /// CR2.
    pub const CR2: u32 = 1 << 9;
    /// DBGCTL, BR_FROM, BR_TO, LASTEXCPFROM, LASTEXCPTO.
    pub const LBR: u32 = 1 << 10;
    /// Every bit this backend manages.
    pub const ALL: u32 = (1 << 11) - 1;
}

// ---- control area ----

/// Intercept reads (bits 15:0) and writes (bits 31:16) of CR0-CR15.
pub const INTERCEPT_CR: Field = Field::new(0x000, 4, "INTERCEPT_CR");
/// Intercept reads (bits 15:0) and writes (bits 31:16) of DR0-DR15.
pub const INTERCEPT_DR: Field = Field::new(0x004, 4, "INTERCEPT_DR");
/// Intercept exception vectors 0-31.
pub const INTERCEPT_EXCEPTIONS: Field = Field::new(0x008, 4, "INTERCEPT_EXCEPTIONS");
/// Intercept vector 3 (see [`misc1`]).
pub const INTERCEPT_MISC1: Field = Field::new(0x00c, 4, "INTERCEPT_MISC1");
/// Intercept vector 4 (see [`misc2`]).
pub const INTERCEPT_MISC2: Field = Field::new(0x010, 4, "INTERCEPT_MISC2");
/// Intercept vector 5 (INVLPGB, INVPCID, MCOMMIT, TLBSYNC, ...).
pub const INTERCEPT_MISC3: Field = Field::new(0x014, 4, "INTERCEPT_MISC3");
/// PAUSE filter threshold.
pub const PAUSE_FILTER_THRESHOLD: Field = Field::new(0x03c, 2, "PAUSE_FILTER_THRESHOLD");
/// PAUSE filter count.
pub const PAUSE_FILTER_COUNT: Field = Field::new(0x03e, 2, "PAUSE_FILTER_COUNT");
/// Physical base of the I/O permission map.
pub const IOPM_BASE_PA: Field = Field::new(0x040, 8, "IOPM_BASE_PA");
/// Physical base of the MSR permission map.
pub const MSRPM_BASE_PA: Field = Field::new(0x048, 8, "MSRPM_BASE_PA");
/// TSC offset.
pub const TSC_OFFSET: Field = Field::new(0x050, 8, "TSC_OFFSET");
/// Guest ASID.
pub const GUEST_ASID: Field = Field::new(0x058, 4, "GUEST_ASID");
/// TLB control (bits 39:32 of the quadword at 0x058; see [`tlb_control`]).
pub const TLB_CONTROL: Field = Field::new(0x05c, 1, "TLB_CONTROL");
/// Virtual interrupt controls (see [`vintr`]).
pub const VINTR: Field = Field::new(0x060, 8, "VINTR");
/// Bit 0: the guest is in an interrupt shadow; bit 1 (written at #VMEXIT): the guest's
/// RFLAGS.IF as the processor used it.
pub const INTERRUPT_SHADOW: Field = Field::new(0x068, 8, "INTERRUPT_SHADOW");
/// The exit code (APM 2 appendix C).
pub const EXITCODE: Field = Field::new(0x070, 8, "EXITCODE");
/// Exit information 1.
pub const EXITINFO1: Field = Field::new(0x078, 8, "EXITINFO1");
/// Exit information 2.
pub const EXITINFO2: Field = Field::new(0x080, 8, "EXITINFO2");
/// The event whose delivery the #VMEXIT interrupted (EVENTINJ format).
pub const EXITINTINFO: Field = Field::new(0x088, 8, "EXITINTINFO");
/// Bit 0: nested paging; bit 1: SEV; bit 2: SEV-ES; ...
pub const NP_CONTROL: Field = Field::new(0x090, 8, "NP_ENABLE");
/// The event to inject at VMRUN (see [`crate::event`]).
pub const EVENTINJ: Field = Field::new(0x0a8, 8, "EVENTINJ");
/// The nested page tables' root (nCR3).
pub const N_CR3: Field = Field::new(0x0b0, 8, "N_CR3");
/// Bit 0: LBR virtualization; bit 1: virtualized VMSAVE/VMLOAD.
pub const VIRT_EXT: Field = Field::new(0x0b8, 8, "LBR_VIRTUALIZATION_ENABLE");
/// VMCB clean bits (see [`clean`]).
pub const VMCB_CLEAN: Field = Field::new(0x0c0, 4, "VMCB_CLEAN");
/// The next sequential instruction pointer (NRIP save).
pub const NRIP: Field = Field::new(0x0c8, 8, "NRIP");
/// Decode assists: bits 3:0 of byte 0 the number of instruction bytes fetched, bytes
/// 1-7 the first seven of them.
pub const INSN_FETCHED: Field = Field::new(0x0d0, 8, "GUEST_INSTRUCTION_BYTES");
/// Decode assists: instruction bytes 8-15.
pub const INSN_BYTES_HIGH: Field = Field::new(0x0d8, 8, "GUEST_INSTRUCTION_BYTES");

// ---- state save area ----

/// CPL.
pub const CPL: Field = Field::new(0x4cb, 1, "CPL");
/// EFER.
pub const EFER: Field = Field::new(0x4d0, 8, "EFER");
/// CR4.
pub const CR4: Field = Field::new(0x548, 8, "CR4");
/// CR3.
pub const CR3: Field = Field::new(0x550, 8, "CR3");
/// CR0.
pub const CR0: Field = Field::new(0x558, 8, "CR0");
/// DR7.
pub const DR7: Field = Field::new(0x560, 8, "DR7");
/// DR6.
pub const DR6: Field = Field::new(0x568, 8, "DR6");
/// RFLAGS.
pub const RFLAGS: Field = Field::new(0x570, 8, "RFLAGS");
/// RIP.
pub const RIP: Field = Field::new(0x578, 8, "RIP");
/// RSP.
pub const RSP: Field = Field::new(0x5d8, 8, "RSP");
/// RAX.
pub const RAX: Field = Field::new(0x5f8, 8, "RAX");
/// STAR (VMLOAD/VMSAVE).
pub const STAR: Field = Field::new(0x600, 8, "STAR");
/// LSTAR (VMLOAD/VMSAVE).
pub const LSTAR: Field = Field::new(0x608, 8, "LSTAR");
/// CSTAR (VMLOAD/VMSAVE).
pub const CSTAR: Field = Field::new(0x610, 8, "CSTAR");
/// SFMASK (VMLOAD/VMSAVE).
pub const SFMASK: Field = Field::new(0x618, 8, "SFMASK");
/// KernelGsBase (VMLOAD/VMSAVE).
pub const KERNEL_GS_BASE: Field = Field::new(0x620, 8, "KERNEL_GS_BASE");
/// SYSENTER_CS (VMLOAD/VMSAVE).
pub const SYSENTER_CS: Field = Field::new(0x628, 8, "SYSENTER_CS");
/// SYSENTER_ESP (VMLOAD/VMSAVE).
pub const SYSENTER_ESP: Field = Field::new(0x630, 8, "SYSENTER_ESP");
/// SYSENTER_EIP (VMLOAD/VMSAVE).
pub const SYSENTER_EIP: Field = Field::new(0x638, 8, "SYSENTER_EIP");
/// CR2.
pub const CR2: Field = Field::new(0x640, 8, "CR2");
/// The guest's PAT under nested paging.
pub const G_PAT: Field = Field::new(0x668, 8, "G_PAT");
/// DBGCTL.
pub const DBGCTL: Field = Field::new(0x670, 8, "DBGCTL");

/// The four fields of a segment register in the state save area (GDTR and IDTR use
/// only limit and base).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFields {
    /// Selector (16 bits).
    pub selector: Field,
    /// Attributes (12 bits: descriptor bits 47:40 and 55:52).
    pub attrib: Field,
    /// Limit (32 bits, byte-granular).
    pub limit: Field,
    /// Base (64 bits).
    pub base: Field,
}

const fn segment_at(offset: u16, name: &'static str) -> SegmentFields {
    SegmentFields {
        selector: Field::new(offset, 2, name),
        attrib: Field::new(offset + 2, 2, name),
        limit: Field::new(offset + 4, 4, name),
        base: Field::new(offset + 8, 8, name),
    }
}

/// ES.
pub const ES: SegmentFields = segment_at(0x400, "ES");
/// CS.
pub const CS: SegmentFields = segment_at(0x410, "CS");
/// SS.
pub const SS: SegmentFields = segment_at(0x420, "SS");
/// DS.
pub const DS: SegmentFields = segment_at(0x430, "DS");
/// FS (VMLOAD/VMSAVE).
pub const FS: SegmentFields = segment_at(0x440, "FS");
/// GS (VMLOAD/VMSAVE).
pub const GS: SegmentFields = segment_at(0x450, "GS");
/// GDTR (limit and base).
pub const GDTR: SegmentFields = segment_at(0x460, "GDTR");
/// LDTR (VMLOAD/VMSAVE).
pub const LDTR: SegmentFields = segment_at(0x470, "LDTR");
/// IDTR (limit and base).
pub const IDTR: SegmentFields = segment_at(0x480, "IDTR");
/// TR (VMLOAD/VMSAVE).
pub const TR: SegmentFields = segment_at(0x490, "TR");

/// The fields of segment register `seg`.
pub const fn segment(seg: SegReg) -> SegmentFields {
    match seg {
        SegReg::Es => ES,
        SegReg::Cs => CS,
        SegReg::Ss => SS,
        SegReg::Ds => DS,
        SegReg::Fs => FS,
        SegReg::Gs => GS,
        SegReg::Ldtr => LDTR,
        SegReg::Tr => TR,
    }
}

/// Every field this crate names, for the tests and the in-memory VMCB's checks.
pub const ALL: [Field; 59] = [
    INTERCEPT_CR,
    INTERCEPT_DR,
    INTERCEPT_EXCEPTIONS,
    INTERCEPT_MISC1,
    INTERCEPT_MISC2,
    INTERCEPT_MISC3,
    PAUSE_FILTER_THRESHOLD,
    PAUSE_FILTER_COUNT,
    IOPM_BASE_PA,
    MSRPM_BASE_PA,
    TSC_OFFSET,
    GUEST_ASID,
    TLB_CONTROL,
    VINTR,
    INTERRUPT_SHADOW,
    EXITCODE,
    EXITINFO1,
    EXITINFO2,
    EXITINTINFO,
    NP_CONTROL,
    EVENTINJ,
    N_CR3,
    VIRT_EXT,
    VMCB_CLEAN,
    NRIP,
    INSN_FETCHED,
    INSN_BYTES_HIGH,
    CPL,
    EFER,
    CR4,
    CR3,
    CR0,
    DR7,
    DR6,
    RFLAGS,
    RIP,
    RSP,
    RAX,
    STAR,
    LSTAR,
    CSTAR,
    SFMASK,
    KERNEL_GS_BASE,
    SYSENTER_CS,
    SYSENTER_ESP,
    SYSENTER_EIP,
    CR2,
    G_PAT,
    DBGCTL,
    ES.selector,
    CS.attrib,
    SS.limit,
    DS.base,
    FS.base,
    GS.base,
    GDTR.base,
    LDTR.attrib,
    IDTR.limit,
    TR.base,
];

/// Intercept vector 3 (offset 0x00C).
pub mod misc1 {
    /// Physical maskable interrupts.
    pub const INTR: u32 = 1 << 0;
    /// Physical NMIs.
    pub const NMI: u32 = 1 << 1;
    /// Physical SMIs.
    pub const SMI: u32 = 1 << 2;
    /// INIT.
    pub const INIT: u32 = 1 << 3;
    /// A virtual interrupt (V_IRQ) about to be taken.
    pub const VINTR: u32 = 1 << 4;
    /// CR0 writes that change bits other than TS or MP.
    pub const CR0_SEL_WRITE: u32 = 1 << 5;
    /// RDTSC.
    pub const RDTSC: u32 = 1 << 14;
    /// RDPMC.
    pub const RDPMC: u32 = 1 << 15;
    /// PUSHF.
    pub const PUSHF: u32 = 1 << 16;
    /// POPF.
    pub const POPF: u32 = 1 << 17;
    /// CPUID.
    pub const CPUID: u32 = 1 << 18;
    /// RSM.
    pub const RSM: u32 = 1 << 19;
    /// IRET.
    pub const IRET: u32 = 1 << 20;
    /// INT n.
    pub const INTN: u32 = 1 << 21;
    /// INVD.
    pub const INVD: u32 = 1 << 22;
    /// PAUSE.
    pub const PAUSE: u32 = 1 << 23;
    /// HLT.
    pub const HLT: u32 = 1 << 24;
    /// INVLPG.
    pub const INVLPG: u32 = 1 << 25;
    /// INVLPGA.
    pub const INVLPGA: u32 = 1 << 26;
    /// IN/OUT/INS/OUTS through the I/O permission map.
    pub const IOIO_PROT: u32 = 1 << 27;
    /// RDMSR/WRMSR through the MSR permission map.
    pub const MSR_PROT: u32 = 1 << 28;
    /// Task switches.
    pub const TASK_SWITCH: u32 = 1 << 29;
    /// FERR_FREEZE.
    pub const FERR_FREEZE: u32 = 1 << 30;
    /// Shutdown (triple fault).
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept vector 5 (offset 0x014).
pub mod misc3 {
    /// INVPCID.
    pub const INVPCID: u32 = 1 << 2;
}

/// Intercept vector 4 (offset 0x010).
pub mod misc2 {
    /// VMRUN (VMRUN refuses a guest without it).
    pub const VMRUN: u32 = 1 << 0;
    /// VMMCALL.
    pub const VMMCALL: u32 = 1 << 1;
    /// VMLOAD.
    pub const VMLOAD: u32 = 1 << 2;
    /// VMSAVE.
    pub const VMSAVE: u32 = 1 << 3;
    /// STGI.
    pub const STGI: u32 = 1 << 4;
    /// CLGI.
    pub const CLGI: u32 = 1 << 5;
    /// SKINIT.
    pub const SKINIT: u32 = 1 << 6;
    /// RDTSCP.
    pub const RDTSCP: u32 = 1 << 7;
    /// ICEBP (INT1).
    pub const ICEBP: u32 = 1 << 8;
    /// WBINVD and WBNOINVD.
    pub const WBINVD: u32 = 1 << 9;
    /// MONITOR and MONITORX.
    pub const MONITOR: u32 = 1 << 10;
    /// MWAIT and MWAITX, unconditionally.
    pub const MWAIT: u32 = 1 << 11;
    /// MWAIT and MWAITX when the monitor is armed.
    pub const MWAIT_ARMED: u32 = 1 << 12;
    /// XSETBV.
    pub const XSETBV: u32 = 1 << 13;
    /// RDPRU.
    pub const RDPRU: u32 = 1 << 14;
}

/// The virtual-interrupt word (offset 0x060).
pub mod vintr {
    /// V_TPR, bits 7:0 (bits 3:0 are the guest's CR8).
    pub const V_TPR_MASK: u64 = 0xff;
    /// V_IRQ: a virtual interrupt is pending.
    pub const V_IRQ: u64 = 1 << 8;
    /// V_INTR_PRIO, bits 19:16.
    pub const V_INTR_PRIO_SHIFT: u32 = 16;
    /// V_IGN_TPR: the virtual interrupt ignores V_TPR.
    pub const V_IGN_TPR: u64 = 1 << 20;
    /// V_INTR_MASKING: the guest's RFLAGS.IF masks virtual interrupts only; physical
    /// ones follow the host's RFLAGS.IF, and the guest's CR8 is V_TPR, not the host's.
    pub const V_INTR_MASKING: u64 = 1 << 24;
    /// V_INTR_VECTOR, bits 39:32.
    pub const V_INTR_VECTOR_SHIFT: u32 = 32;
}

/// TLB control values (offset 0x05C).
pub mod tlb_control {
    /// Flush nothing.
    pub const DO_NOTHING: u64 = 0;
    /// Flush every ASID's translations (needs no feature).
    pub const FLUSH_ALL: u64 = 1;
    /// Flush this guest's ASID (flush-by-ASID).
    pub const FLUSH_ASID: u64 = 3;
    /// Flush this guest's non-global translations (flush-by-ASID).
    pub const FLUSH_ASID_NON_GLOBAL: u64 = 7;
}

/// NP_ENABLE (offset 0x090), bit 0.
pub const NP_ENABLE: u64 = 1 << 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_inside_the_page_and_aligned() {
        for f in ALL {
            assert!(f.is_well_formed(), "{f:?}");
        }
        for seg in SegReg::ALL {
            let s = segment(seg);
            for f in [s.selector, s.attrib, s.limit, s.base] {
                assert!(f.is_well_formed(), "{f:?}");
            }
            assert_eq!(s.attrib.offset(), s.selector.offset() + 2);
        }
        // The state save area begins at 0x400; RIP and RAX where the APM puts them.
        assert_eq!(ES.selector.offset(), 0x400);
        assert_eq!(TR.base.offset(), 0x498);
        assert_eq!(RIP.offset(), 0x578);
        assert_eq!(RAX.offset(), 0x5f8);
        assert_eq!(G_PAT.offset(), 0x668);
    }

    #[test]
    fn clean_bits_cover_what_the_apm_lists() {
        assert_eq!(INTERCEPT_MISC2.clean_bit(), clean::INTERCEPTS);
        assert_eq!(TSC_OFFSET.clean_bit(), clean::INTERCEPTS);
        assert_eq!(MSRPM_BASE_PA.clean_bit(), clean::IOPM);
        assert_eq!(GUEST_ASID.clean_bit(), clean::ASID);
        assert_eq!(VINTR.clean_bit(), clean::TPR);
        assert_eq!(N_CR3.clean_bit(), clean::NP);
        assert_eq!(G_PAT.clean_bit(), clean::NP);
        for f in [CR0, CR3, CR4, EFER] {
            assert_eq!(f.clean_bit(), clean::CRX, "{f:?}");
        }
        assert_eq!(DR7.clean_bit(), clean::DRX);
        assert_eq!(GDTR.base.clean_bit(), clean::DT);
        assert_eq!(IDTR.limit.clean_bit(), clean::DT);
        for s in [ES, CS, SS, DS] {
            assert_eq!(s.attrib.clean_bit(), clean::SEG);
        }
        assert_eq!(CPL.clean_bit(), clean::SEG);
        assert_eq!(CR2.clean_bit(), clean::CR2);
        // Always loaded: RIP, RSP, RAX, RFLAGS, EVENTINJ, TLB control, the interrupt
        // shadow; loaded by VMLOAD: FS, GS, TR, LDTR and the syscall MSRs.
        for f in [
            RIP,
            RSP,
            RAX,
            RFLAGS,
            EVENTINJ,
            TLB_CONTROL,
            INTERRUPT_SHADOW,
            FS.base,
            TR.attrib,
            LDTR.selector,
            STAR,
            SYSENTER_EIP,
        ] {
            assert_eq!(f.clean_bit(), 0, "{f:?}");
        }
    }

    #[test]
    fn exit_information_is_processor_written() {
        for f in [
            EXITCODE,
            EXITINFO1,
            EXITINFO2,
            EXITINTINFO,
            NRIP,
            INSN_FETCHED,
        ] {
            assert!(f.processor_written(), "{f:?}");
        }
        for f in [EVENTINJ, RIP, VINTR, INTERRUPT_SHADOW, VMCB_CLEAN] {
            assert!(!f.processor_written(), "{f:?}");
        }
    }
}

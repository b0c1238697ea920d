//! VMCS component encodings (SDM vol. 3C, appendix B).
//!
//! An encoding is 32 bits (SDM 3C 25.11.2): bit 0 is the access type (1 = the high
//! 32 bits of a 64-bit field), bits 9:1 the index, bits 11:10 the type (control,
//! VM-exit information, guest state, host state) and bits 14:13 the width. The
//! constants below are named after the SDM's field names; [`ALL`] lists every one of
//! them in ascending order, which the in-memory VMCS and the tests use.

/// A VMCS component encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Field(u32);

/// The width of a VMCS field (encoding bits 14:13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// 16 bits.
    Bits16,
    /// 64 bits (accessible as a whole, or its high half through the odd encoding).
    Bits64,
    /// 32 bits.
    Bits32,
    /// Natural width: 64 bits on a 64-bit host.
    Natural,
}

impl Width {
    /// The mask of the bits a field of this width holds (natural width: 64-bit host).
    pub const fn mask(self) -> u64 {
        match self {
            Width::Bits16 => 0xffff,
            Width::Bits32 => 0xffff_ffff,
            Width::Bits64 | Width::Natural => u64::MAX,
        }
    }
}

/// The type of a VMCS field (encoding bits 11:10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// VM-execution, VM-exit and VM-entry control fields.
    Control,
    /// VM-exit information: read-only data, written by the processor on VM exit.
    ExitInformation,
    /// Guest-state area.
    Guest,
    /// Host-state area.
    Host,
}

impl Field {
    /// The field with raw encoding `encoding` (which need not name a field this crate
    /// knows; the VMCS implementations reject unknown ones).
    pub const fn from_encoding(encoding: u32) -> Field {
        Field(encoding)
    }

    /// The raw encoding, as VMREAD/VMWRITE take it.
    pub const fn encoding(self) -> u32 {
        self.0
    }

    /// The width (bits 14:13).
    pub const fn width(self) -> Width {
        match (self.0 >> 13) & 3 {
            0 => Width::Bits16,
            1 => Width::Bits64,
            2 => Width::Bits32,
            _ => Width::Natural,
        }
    }

    /// The type (bits 11:10).
    pub const fn field_type(self) -> FieldType {
        match (self.0 >> 10) & 3 {
            0 => FieldType::Control,
            1 => FieldType::ExitInformation,
            2 => FieldType::Guest,
            _ => FieldType::Host,
        }
    }

    /// The index (bits 9:1).
    pub const fn index(self) -> u32 {
        (self.0 >> 1) & 0x1ff
    }

    /// Whether this encoding selects the high 32 bits of a 64-bit field (access type 1).
    pub const fn is_high_access(self) -> bool {
        self.0 & 1 == 1
    }

    /// The encoding of the high 32 bits of this 64-bit field, if it is one.
    pub const fn high(self) -> Option<Field> {
        match self.width() {
            Width::Bits64 if !self.is_high_access() => Some(Field(self.0 | 1)),
            _ => None,
        }
    }

    /// The full-access encoding of the field this encoding belongs to (clears the
    /// access-type bit).
    pub const fn full(self) -> Field {
        Field(self.0 & !1)
    }

    /// Whether the field is VM-exit information, which VMWRITE rejects unless
    /// IA32_VMX_MISC bit 29 says otherwise.
    pub const fn is_read_only(self) -> bool {
        matches!(self.field_type(), FieldType::ExitInformation)
    }

    /// The SDM-style name of the field, if this crate defines it.
    pub fn name(self) -> Option<&'static str> {
        let full = self.full();
        ALL.binary_search(&full)
            .ok()
            .and_then(|i| NAMES.get(i).copied())
    }
}

macro_rules! fields {
    ($( $(#[$doc:meta])* $name:ident = $enc:expr; )*) => {
        $( $(#[$doc])* pub const $name: Field = Field($enc); )*

        /// Every field defined here, in ascending encoding order.
        pub const ALL: &[Field] = &[$($name),*];

        /// The names of [`ALL`], index for index.
        const NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

fields! {
    // ---- 16-bit control fields ----
    /// Virtual-processor identifier (VPID).
    VIRTUAL_PROCESSOR_ID = 0x0000;
    /// Posted-interrupt notification vector.
    POSTED_INTR_NOTIFICATION_VECTOR = 0x0002;
    /// EPTP index.
    EPTP_INDEX = 0x0004;

    // ---- 16-bit guest-state fields ----
    /// Guest ES selector.
    GUEST_ES_SELECTOR = 0x0800;
    /// Guest CS selector.
    GUEST_CS_SELECTOR = 0x0802;
    /// Guest SS selector.
    GUEST_SS_SELECTOR = 0x0804;
    /// Guest DS selector.
    GUEST_DS_SELECTOR = 0x0806;
    /// Guest FS selector.
    GUEST_FS_SELECTOR = 0x0808;
    /// Guest GS selector.
    GUEST_GS_SELECTOR = 0x080A;
    /// Guest LDTR selector.
    GUEST_LDTR_SELECTOR = 0x080C;
    /// Guest TR selector.
    GUEST_TR_SELECTOR = 0x080E;
    /// Guest interrupt status (virtual-interrupt delivery).
    GUEST_INTR_STATUS = 0x0810;
    /// PML index.
    GUEST_PML_INDEX = 0x0812;

    // ---- 16-bit host-state fields ----
    /// Host ES selector.
    HOST_ES_SELECTOR = 0x0C00;
    /// Host CS selector.
    HOST_CS_SELECTOR = 0x0C02;
    /// Host SS selector.
    HOST_SS_SELECTOR = 0x0C04;
    /// Host DS selector.
    HOST_DS_SELECTOR = 0x0C06;
    /// Host FS selector.
    HOST_FS_SELECTOR = 0x0C08;
    /// Host GS selector.
    HOST_GS_SELECTOR = 0x0C0A;
    /// Host TR selector.
    HOST_TR_SELECTOR = 0x0C0C;

    // ---- 64-bit control fields ----
    /// Address of I/O bitmap A (ports 0000-7FFF).
    IO_BITMAP_A = 0x2000;
    /// Address of I/O bitmap B (ports 8000-FFFF).
    IO_BITMAP_B = 0x2002;
    /// Address of the MSR bitmaps.
    MSR_BITMAP = 0x2004;
    /// VM-exit MSR-store address.
    VM_EXIT_MSR_STORE_ADDR = 0x2006;
    /// VM-exit MSR-load address.
    VM_EXIT_MSR_LOAD_ADDR = 0x2008;
    /// VM-entry MSR-load address.
    VM_ENTRY_MSR_LOAD_ADDR = 0x200A;
    /// Executive-VMCS pointer.
    EXECUTIVE_VMCS_POINTER = 0x200C;
    /// PML address.
    PML_ADDRESS = 0x200E;
    /// TSC offset.
    TSC_OFFSET = 0x2010;
    /// Virtual-APIC address.
    VIRTUAL_APIC_PAGE_ADDR = 0x2012;
    /// APIC-access address.
    APIC_ACCESS_ADDR = 0x2014;
    /// Posted-interrupt descriptor address.
    POSTED_INTR_DESC_ADDR = 0x2016;
    /// VM-function controls.
    VM_FUNCTION_CONTROLS = 0x2018;
    /// EPT pointer (EPTP).
    EPT_POINTER = 0x201A;
    /// EOI-exit bitmap 0.
    EOI_EXIT_BITMAP0 = 0x201C;
    /// EOI-exit bitmap 1.
    EOI_EXIT_BITMAP1 = 0x201E;
    /// EOI-exit bitmap 2.
    EOI_EXIT_BITMAP2 = 0x2020;
    /// EOI-exit bitmap 3.
    EOI_EXIT_BITMAP3 = 0x2022;
    /// EPTP-list address.
    EPTP_LIST_ADDRESS = 0x2024;
    /// VMREAD-bitmap address.
    VMREAD_BITMAP = 0x2026;
    /// VMWRITE-bitmap address.
    VMWRITE_BITMAP = 0x2028;
    /// Virtualization-exception information address.
    VE_INFORMATION_ADDRESS = 0x202A;
    /// XSS-exiting bitmap.
    XSS_EXITING_BITMAP = 0x202C;
    /// ENCLS-exiting bitmap.
    ENCLS_EXITING_BITMAP = 0x202E;
    /// TSC multiplier.
    TSC_MULTIPLIER = 0x2032;
    /// Tertiary processor-based VM-execution controls.
    TERTIARY_PROC_BASED_CONTROLS = 0x2034;

    // ---- 64-bit read-only data field ----
    /// Guest-physical address (EPT violations and misconfigurations).
    GUEST_PHYSICAL_ADDRESS = 0x2400;

    // ---- 64-bit guest-state fields ----
    /// VMCS link pointer (all ones when unused).
    VMCS_LINK_POINTER = 0x2800;
    /// Guest IA32_DEBUGCTL.
    GUEST_IA32_DEBUGCTL = 0x2802;
    /// Guest IA32_PAT.
    GUEST_IA32_PAT = 0x2804;
    /// Guest IA32_EFER.
    GUEST_IA32_EFER = 0x2806;
    /// Guest IA32_PERF_GLOBAL_CTRL.
    GUEST_IA32_PERF_GLOBAL_CTRL = 0x2808;
    /// Guest PDPTE0 (PAE paging with EPT).
    GUEST_PDPTE0 = 0x280A;
    /// Guest PDPTE1.
    GUEST_PDPTE1 = 0x280C;
    /// Guest PDPTE2.
    GUEST_PDPTE2 = 0x280E;
    /// Guest PDPTE3.
    GUEST_PDPTE3 = 0x2810;
    /// Guest IA32_BNDCFGS.
    GUEST_IA32_BNDCFGS = 0x2812;
    /// Guest IA32_RTIT_CTL.
    GUEST_IA32_RTIT_CTL = 0x2814;

    // ---- 64-bit host-state fields ----
    /// Host IA32_PAT.
    HOST_IA32_PAT = 0x2C00;
    /// Host IA32_EFER.
    HOST_IA32_EFER = 0x2C02;
    /// Host IA32_PERF_GLOBAL_CTRL.
    HOST_IA32_PERF_GLOBAL_CTRL = 0x2C04;

    // ---- 32-bit control fields ----
    /// Pin-based VM-execution controls.
    PIN_BASED_VM_EXEC_CONTROLS = 0x4000;
    /// Primary processor-based VM-execution controls.
    PRIMARY_PROC_BASED_VM_EXEC_CONTROLS = 0x4002;
    /// Exception bitmap.
    EXCEPTION_BITMAP = 0x4004;
    /// Page-fault error-code mask.
    PAGE_FAULT_ERROR_CODE_MASK = 0x4006;
    /// Page-fault error-code match.
    PAGE_FAULT_ERROR_CODE_MATCH = 0x4008;
    /// CR3-target count.
    CR3_TARGET_COUNT = 0x400A;
    /// Primary VM-exit controls.
    VM_EXIT_CONTROLS = 0x400C;
    /// VM-exit MSR-store count.
    VM_EXIT_MSR_STORE_COUNT = 0x400E;
    /// VM-exit MSR-load count.
    VM_EXIT_MSR_LOAD_COUNT = 0x4010;
    /// VM-entry controls.
    VM_ENTRY_CONTROLS = 0x4012;
    /// VM-entry MSR-load count.
    VM_ENTRY_MSR_LOAD_COUNT = 0x4014;
    /// VM-entry interruption-information field.
    VM_ENTRY_INTR_INFO = 0x4016;
    /// VM-entry exception error code.
    VM_ENTRY_EXCEPTION_ERROR_CODE = 0x4018;
    /// VM-entry instruction length.
    VM_ENTRY_INSTRUCTION_LEN = 0x401A;
    /// TPR threshold.
    TPR_THRESHOLD = 0x401C;
    /// Secondary processor-based VM-execution controls.
    SECONDARY_PROC_BASED_VM_EXEC_CONTROLS = 0x401E;
    /// PLE_Gap.
    PLE_GAP = 0x4020;
    /// PLE_Window.
    PLE_WINDOW = 0x4022;

    // ---- 32-bit read-only data fields ----
    /// VM-instruction error.
    VM_INSTRUCTION_ERROR = 0x4400;
    /// Exit reason.
    VM_EXIT_REASON = 0x4402;
    /// VM-exit interruption information.
    VM_EXIT_INTR_INFO = 0x4404;
    /// VM-exit interruption error code.
    VM_EXIT_INTR_ERROR_CODE = 0x4406;
    /// IDT-vectoring information field.
    IDT_VECTORING_INFO = 0x4408;
    /// IDT-vectoring error code.
    IDT_VECTORING_ERROR_CODE = 0x440A;
    /// VM-exit instruction length.
    VM_EXIT_INSTRUCTION_LEN = 0x440C;
    /// VM-exit instruction information.
    VM_EXIT_INSTRUCTION_INFO = 0x440E;

    // ---- 32-bit guest-state fields ----
    /// Guest ES limit.
    GUEST_ES_LIMIT = 0x4800;
    /// Guest CS limit.
    GUEST_CS_LIMIT = 0x4802;
    /// Guest SS limit.
    GUEST_SS_LIMIT = 0x4804;
    /// Guest DS limit.
    GUEST_DS_LIMIT = 0x4806;
    /// Guest FS limit.
    GUEST_FS_LIMIT = 0x4808;
    /// Guest GS limit.
    GUEST_GS_LIMIT = 0x480A;
    /// Guest LDTR limit.
    GUEST_LDTR_LIMIT = 0x480C;
    /// Guest TR limit.
    GUEST_TR_LIMIT = 0x480E;
    /// Guest GDTR limit.
    GUEST_GDTR_LIMIT = 0x4810;
    /// Guest IDTR limit.
    GUEST_IDTR_LIMIT = 0x4812;
    /// Guest ES access rights.
    GUEST_ES_ACCESS_RIGHTS = 0x4814;
    /// Guest CS access rights.
    GUEST_CS_ACCESS_RIGHTS = 0x4816;
    /// Guest SS access rights.
    GUEST_SS_ACCESS_RIGHTS = 0x4818;
    /// Guest DS access rights.
    GUEST_DS_ACCESS_RIGHTS = 0x481A;
    /// Guest FS access rights.
    GUEST_FS_ACCESS_RIGHTS = 0x481C;
    /// Guest GS access rights.
    GUEST_GS_ACCESS_RIGHTS = 0x481E;
    /// Guest LDTR access rights.
    GUEST_LDTR_ACCESS_RIGHTS = 0x4820;
    /// Guest TR access rights.
    GUEST_TR_ACCESS_RIGHTS = 0x4822;
    /// Guest interruptibility state.
    GUEST_INTERRUPTIBILITY_STATE = 0x4824;
    /// Guest activity state.
    GUEST_ACTIVITY_STATE = 0x4826;
    /// Guest SMBASE.
    GUEST_SMBASE = 0x4828;
    /// Guest IA32_SYSENTER_CS.
    GUEST_IA32_SYSENTER_CS = 0x482A;
    /// VMX-preemption timer value.
    VMX_PREEMPTION_TIMER_VALUE = 0x482E;

    // ---- 32-bit host-state field ----
    /// Host IA32_SYSENTER_CS.
    HOST_IA32_SYSENTER_CS = 0x4C00;

    // ---- natural-width control fields ----
    /// CR0 guest/host mask.
    CR0_GUEST_HOST_MASK = 0x6000;
    /// CR4 guest/host mask.
    CR4_GUEST_HOST_MASK = 0x6002;
    /// CR0 read shadow.
    CR0_READ_SHADOW = 0x6004;
    /// CR4 read shadow.
    CR4_READ_SHADOW = 0x6006;
    /// CR3-target value 0.
    CR3_TARGET_VALUE0 = 0x6008;
    /// CR3-target value 1.
    CR3_TARGET_VALUE1 = 0x600A;
    /// CR3-target value 2.
    CR3_TARGET_VALUE2 = 0x600C;
    /// CR3-target value 3.
    CR3_TARGET_VALUE3 = 0x600E;

    // ---- natural-width read-only data fields ----
    /// Exit qualification.
    EXIT_QUALIFICATION = 0x6400;
    /// I/O RCX (SMIs only).
    IO_RCX = 0x6402;
    /// I/O RSI (SMIs only).
    IO_RSI = 0x6404;
    /// I/O RDI (SMIs only).
    IO_RDI = 0x6406;
    /// I/O RIP (SMIs only).
    IO_RIP = 0x6408;
    /// Guest-linear address.
    GUEST_LINEAR_ADDRESS = 0x640A;

    // ---- natural-width guest-state fields ----
    /// Guest CR0.
    GUEST_CR0 = 0x6800;
    /// Guest CR3.
    GUEST_CR3 = 0x6802;
    /// Guest CR4.
    GUEST_CR4 = 0x6804;
    /// Guest ES base.
    GUEST_ES_BASE = 0x6806;
    /// Guest CS base.
    GUEST_CS_BASE = 0x6808;
    /// Guest SS base.
    GUEST_SS_BASE = 0x680A;
    /// Guest DS base.
    GUEST_DS_BASE = 0x680C;
    /// Guest FS base.
    GUEST_FS_BASE = 0x680E;
    /// Guest GS base.
    GUEST_GS_BASE = 0x6810;
    /// Guest LDTR base.
    GUEST_LDTR_BASE = 0x6812;
    /// Guest TR base.
    GUEST_TR_BASE = 0x6814;
    /// Guest GDTR base.
    GUEST_GDTR_BASE = 0x6816;
    /// Guest IDTR base.
    GUEST_IDTR_BASE = 0x6818;
    /// Guest DR7.
    GUEST_DR7 = 0x681A;
    /// Guest RSP.
    GUEST_RSP = 0x681C;
    /// Guest RIP.
    GUEST_RIP = 0x681E;
    /// Guest RFLAGS.
    GUEST_RFLAGS = 0x6820;
    /// Guest pending debug exceptions.
    GUEST_PENDING_DEBUG_EXCEPTIONS = 0x6822;
    /// Guest IA32_SYSENTER_ESP.
    GUEST_IA32_SYSENTER_ESP = 0x6824;
    /// Guest IA32_SYSENTER_EIP.
    GUEST_IA32_SYSENTER_EIP = 0x6826;

    // ---- natural-width host-state fields ----
    /// Host CR0.
    HOST_CR0 = 0x6C00;
    /// Host CR3.
    HOST_CR3 = 0x6C02;
    /// Host CR4.
    HOST_CR4 = 0x6C04;
    /// Host FS base.
    HOST_FS_BASE = 0x6C06;
    /// Host GS base.
    HOST_GS_BASE = 0x6C08;
    /// Host TR base.
    HOST_TR_BASE = 0x6C0A;
    /// Host GDTR base.
    HOST_GDTR_BASE = 0x6C0C;
    /// Host IDTR base.
    HOST_IDTR_BASE = 0x6C0E;
    /// Host IA32_SYSENTER_ESP.
    HOST_IA32_SYSENTER_ESP = 0x6C10;
    /// Host IA32_SYSENTER_EIP.
    HOST_IA32_SYSENTER_EIP = 0x6C12;
    /// Host RSP.
    HOST_RSP = 0x6C14;
    /// Host RIP.
    HOST_RIP = 0x6C16;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_sorted_unique_and_full_access() {
        for pair in ALL.windows(2) {
            assert!(pair[0] < pair[1], "{:?} before {:?}", pair[0], pair[1]);
        }
        assert!(ALL.iter().all(|f| !f.is_high_access()));
        assert_eq!(ALL.len(), NAMES.len());
    }

    /// Each name's prefix agrees with the type and width its encoding says: a wrong
    /// constant typed from the SDM almost always breaks one of these.
    #[test]
    fn encodings_agree_with_their_names() {
        for &f in ALL {
            let name = f.name().unwrap_or("?");
            let ty = f.field_type();
            if name.starts_with("GUEST_")
                && f != GUEST_PHYSICAL_ADDRESS
                && f != GUEST_LINEAR_ADDRESS
            {
                assert_eq!(ty, FieldType::Guest, "{name}");
            }
            if name.starts_with("HOST_") {
                assert_eq!(ty, FieldType::Host, "{name}");
            }
            if name.ends_with("_SELECTOR") {
                assert_eq!(f.width(), Width::Bits16, "{name}");
            }
            if name.ends_with("_LIMIT") || name.ends_with("_ACCESS_RIGHTS") {
                assert_eq!(f.width(), Width::Bits32, "{name}");
            }
            if name.ends_with("_BASE") {
                assert_eq!(f.width(), Width::Natural, "{name}");
            }
            // No known field uses bits 12 or 15 and up.
            assert_eq!(f.encoding() & !0x6fff, 0, "{name}");
        }
    }

    #[test]
    fn spot_checks_against_the_sdm() {
        assert_eq!(GUEST_RIP.encoding(), 0x681E);
        assert_eq!(VM_EXIT_REASON.encoding(), 0x4402);
        assert_eq!(EXIT_QUALIFICATION.encoding(), 0x6400);
        assert_eq!(VM_ENTRY_INTR_INFO.encoding(), 0x4016);
        assert_eq!(IDT_VECTORING_INFO.encoding(), 0x4408);
        assert_eq!(GUEST_PHYSICAL_ADDRESS.encoding(), 0x2400);
        assert_eq!(VM_INSTRUCTION_ERROR.encoding(), 0x4400);
        assert_eq!(VM_EXIT_INSTRUCTION_LEN.encoding(), 0x440C);
        assert_eq!(EXIT_QUALIFICATION.field_type(), FieldType::ExitInformation);
        assert_eq!(EXIT_QUALIFICATION.width(), Width::Natural);
        assert_eq!(GUEST_PHYSICAL_ADDRESS.width(), Width::Bits64);
        assert_eq!(VM_EXIT_REASON.width(), Width::Bits32);
        assert!(VM_EXIT_REASON.is_read_only());
        assert!(!GUEST_RIP.is_read_only());
        assert_eq!(VIRTUAL_PROCESSOR_ID.field_type(), FieldType::Control);
        assert_eq!(HOST_RIP.index(), 0xB);
    }

    #[test]
    fn high_access_encodings() {
        assert_eq!(EPT_POINTER.high(), Some(Field::from_encoding(0x201B)));
        assert_eq!(GUEST_RIP.high(), None);
        assert_eq!(VM_EXIT_REASON.high(), None);
        let high = Field::from_encoding(0x2401);
        assert!(high.is_high_access());
        assert_eq!(high.full(), GUEST_PHYSICAL_ADDRESS);
        assert_eq!(high.name(), Some("GUEST_PHYSICAL_ADDRESS"));
        assert_eq!(Field::from_encoding(0x7fff).name(), None);
    }
}

//! The VMX capability MSRs (SDM 3C appendix A) and what they allow.
//!
//! [`VmxCaps::read`] reads them through [`MsrRead`], implemented by
//! [`HardwareMsrs`] (RDMSR) and by [`fixtures::MsrFixture`] (recorded values of Bochs'
//! CPU models). It reads only the MSRs the SDM says exist on this processor, so that
//! RDMSR never raises #GP: the secondary controls only if the primary controls can
//! activate them, EPT/VPID capabilities only if EPT or VPID can be enabled, the TRUE_*
//! MSRs only if IA32_VMX_BASIC bit 55 is set.

pub mod fixtures;

use core::fmt;

/// IA32_VMX_BASIC.
pub const IA32_VMX_BASIC: u32 = 0x480;
/// IA32_VMX_PINBASED_CTLS.
pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
/// IA32_VMX_PROCBASED_CTLS.
pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
/// IA32_VMX_EXIT_CTLS.
pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
/// IA32_VMX_ENTRY_CTLS.
pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
/// IA32_VMX_MISC.
pub const IA32_VMX_MISC: u32 = 0x485;
/// IA32_VMX_CR0_FIXED0.
pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
/// IA32_VMX_CR0_FIXED1.
pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
/// IA32_VMX_CR4_FIXED0.
pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
/// IA32_VMX_CR4_FIXED1.
pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
/// IA32_VMX_VMCS_ENUM.
pub const IA32_VMX_VMCS_ENUM: u32 = 0x48A;
/// IA32_VMX_PROCBASED_CTLS2.
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
/// IA32_VMX_EPT_VPID_CAP.
pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
/// IA32_VMX_TRUE_PINBASED_CTLS.
pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
/// IA32_VMX_TRUE_PROCBASED_CTLS.
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
/// IA32_VMX_TRUE_EXIT_CTLS.
pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
/// IA32_VMX_TRUE_ENTRY_CTLS.
pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;

/// A source of MSR values.
pub trait MsrRead {
    /// The value of MSR `index`, or `None` if it cannot be read.
    fn read_msr(&self, index: u32) -> Option<u64>;
}

/// RDMSR on the current processor.
#[cfg(target_arch = "x86_64")]
#[derive(Debug)]
pub struct HardwareMsrs {
    _this_cpu: core::marker::PhantomData<*mut ()>,
}

#[cfg(target_arch = "x86_64")]
impl HardwareMsrs {
    /// RDMSR access for [`VmxCaps::read`].
    ///
    /// # Safety
    ///
    /// The caller runs at CPL 0 on a processor that reports VMX (CPUID.1:ECX bit 5), so
    /// that the capability MSRs exist. [`VmxCaps::read`] only asks for MSRs whose
    /// existence the earlier ones establish; other uses of [`MsrRead::read_msr`] must
    /// only name MSRs that exist.
    pub unsafe fn new() -> Self {
        HardwareMsrs {
            _this_cpu: core::marker::PhantomData,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl MsrRead for HardwareMsrs {
    fn read_msr(&self, index: u32) -> Option<u64> {
        let low: u32;
        let high: u32;
        // SAFETY: `HardwareMsrs::new`'s contract: CPL 0 and an MSR that exists, so RDMSR
        // cannot fault; it only writes EDX:EAX.
        unsafe {
            core::arch::asm!(
                "rdmsr",
                in("ecx") index,
                out("eax") low,
                out("edx") high,
                options(nomem, nostack, preserves_flags),
            );
        }
        Some((u64::from(high) << 32) | u64::from(low))
    }
}

/// Why the capability MSRs cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapsError {
    /// An MSR the processor must have could not be read.
    MsrUnavailable(u32),
    /// The VMCS region would be larger than a page (IA32_VMX_BASIC bits 44:32).
    VmcsTooLarge(u32),
    /// The VMCS must be accessed with a memory type other than write-back
    /// (IA32_VMX_BASIC bits 53:50).
    VmcsMemoryType(u8),
}

impl fmt::Display for CapsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapsError::MsrUnavailable(msr) => write!(f, "VMX capability MSR {msr:#x} unreadable"),
            CapsError::VmcsTooLarge(size) => write!(f, "VMCS region of {size} bytes exceeds 4096"),
            CapsError::VmcsMemoryType(t) => {
                write!(f, "VMCS memory type {t} is not write-back (6)")
            }
        }
    }
}

/// IA32_VMX_BASIC (SDM 3C A.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxBasic(pub u64);

impl VmxBasic {
    /// The VMCS revision identifier (bits 30:0), written at the start of the VMXON and
    /// VMCS regions.
    pub fn revision_id(self) -> u32 {
        (self.0 & 0x7fff_ffff) as u32
    }
    /// Bytes to allocate for the VMXON and VMCS regions (bits 44:32).
    pub fn region_size(self) -> u32 {
        ((self.0 >> 32) & 0x1fff) as u32
    }
    /// Bit 48: the regions and the structures they point to must lie below 4 GiB.
    pub fn physical_address_32bit(self) -> bool {
        self.0 & (1 << 48) != 0
    }
    /// Bit 49: dual-monitor treatment of SMIs and SMM.
    pub fn dual_monitor(self) -> bool {
        self.0 & (1 << 49) != 0
    }
    /// The memory type for accessing the VMCS (bits 53:50; 6 = write-back).
    pub fn memory_type(self) -> u8 {
        ((self.0 >> 50) & 0xf) as u8
    }
    /// Bit 54: VM exits for INS/OUTS report the VM-exit instruction information.
    pub fn ins_outs_info(self) -> bool {
        self.0 & (1 << 54) != 0
    }
    /// Bit 55: the default1 controls may be cleared; the TRUE_* MSRs exist.
    pub fn true_controls(self) -> bool {
        self.0 & (1 << 55) != 0
    }
    /// Bit 56: VM entry may deliver a hardware exception with or without an error
    /// code, whatever the vector.
    pub fn any_exception_error_code(self) -> bool {
        self.0 & (1 << 56) != 0
    }
}

/// A VMX control capability MSR (SDM 3C A.3-A.5): the low half holds the allowed-0
/// settings (a 1 bit must be 1), the high half the allowed-1 settings (a 0 bit must be
/// 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlCap {
    /// Bits that must be 1.
    pub must_be_one: u32,
    /// Bits that may be 1.
    pub may_be_one: u32,
}

impl ControlCap {
    /// Split a capability MSR value.
    pub fn from_msr(value: u64) -> Self {
        ControlCap {
            must_be_one: value as u32,
            may_be_one: (value >> 32) as u32,
        }
    }

    /// Whether every bit of `bits` may be 1.
    pub fn allows(self, bits: u32) -> bool {
        bits & !self.may_be_one == 0
    }

    /// Whether `value` is a legal setting of the control word.
    pub fn accepts(self, value: u32) -> bool {
        value & self.must_be_one == self.must_be_one && self.allows(value)
    }
}

/// IA32_VMX_MISC (SDM 3C A.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxMisc(pub u64);

impl VmxMisc {
    /// The preemption timer counts down by 1 every time TSC bit `rate` changes (bits
    /// 4:0).
    pub fn preemption_timer_rate(self) -> u8 {
        (self.0 & 0x1f) as u8
    }
    /// Bit 5: VM exits store EFER.LMA into the "IA-32e mode guest" entry control.
    pub fn stores_lma(self) -> bool {
        self.0 & (1 << 5) != 0
    }
    /// Bit 6: the HLT activity state is supported.
    pub fn activity_hlt(self) -> bool {
        self.0 & (1 << 6) != 0
    }
    /// Bit 7: the shutdown activity state is supported.
    pub fn activity_shutdown(self) -> bool {
        self.0 & (1 << 7) != 0
    }
    /// Bit 8: the wait-for-SIPI activity state is supported.
    pub fn activity_wait_for_sipi(self) -> bool {
        self.0 & (1 << 8) != 0
    }
    /// Number of CR3-target values (bits 24:16).
    pub fn cr3_targets(self) -> u32 {
        ((self.0 >> 16) & 0x1ff) as u32
    }
    /// Recommended maximum number of entries in each MSR load/store list: 512 × (N+1)
    /// with N in bits 27:25.
    pub fn max_msr_list_entries(self) -> u32 {
        512 * ((((self.0 >> 25) & 7) as u32) + 1)
    }
    /// Bit 29: VMWRITE may write any field, VM-exit information included.
    pub fn vmwrite_any_field(self) -> bool {
        self.0 & (1 << 29) != 0
    }
    /// Bit 30: VM entry may inject software interrupts and exceptions with an
    /// instruction length of 0.
    pub fn zero_length_injection(self) -> bool {
        self.0 & (1 << 30) != 0
    }
}

/// A pair of CRx fixed-bit MSRs (SDM 3C A.7, A.8): bits set in `fixed0` must be 1 in
/// VMX operation, bits clear in `fixed1` must be 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrFixed {
    /// IA32_VMX_CRx_FIXED0.
    pub fixed0: u64,
    /// IA32_VMX_CRx_FIXED1.
    pub fixed1: u64,
}

impl CrFixed {
    /// CR0.PE.
    pub const CR0_PE: u64 = 1;
    /// CR0.PG.
    pub const CR0_PG: u64 = 1 << 31;

    /// `value` with the fixed bits forced: must-be-one set, must-be-zero cleared.
    pub fn apply(self, value: u64) -> u64 {
        (value | self.fixed0) & self.fixed1
    }

    /// Whether `value` respects the fixed bits.
    pub fn accepts(self, value: u64) -> bool {
        self.apply(value) == value
    }

    /// The bits of `value` that break the rule (set where they must be 0 or clear where
    /// they must be 1).
    pub fn violations(self, value: u64) -> u64 {
        (!value & self.fixed0) | (value & !self.fixed1)
    }

    /// The CR0 rule for a guest: with unrestricted guest, PE and PG may be 0 (SDM 3C
    /// 27.3.1.1), whatever CR0_FIXED0 says.
    pub fn for_guest_cr0(self, unrestricted_guest: bool) -> CrFixed {
        if unrestricted_guest {
            CrFixed {
                fixed0: self.fixed0 & !(Self::CR0_PE | Self::CR0_PG),
                fixed1: self.fixed1,
            }
        } else {
            self
        }
    }
}

/// INVEPT types (SDM 3C 31.3, INVEPT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum InveptType {
    /// Invalidate the mappings of one EPTP.
    SingleContext = 1,
    /// Invalidate the mappings of every EPTP.
    AllContext = 2,
}

/// INVVPID types (SDM 3C 31.3, INVVPID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum InvvpidType {
    /// One linear address of one VPID.
    IndividualAddress = 0,
    /// Every mapping of one VPID.
    SingleContext = 1,
    /// Every mapping of every VPID but 0.
    AllContext = 2,
    /// Every non-global mapping of one VPID.
    SingleContextRetainingGlobals = 3,
}

/// IA32_VMX_EPT_VPID_CAP (SDM 3C A.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptVpidCaps(pub u64);

impl EptVpidCaps {
    fn bit(self, n: u32) -> bool {
        self.0 & (1 << n) != 0
    }
    /// Bit 0: execute-only EPT translations.
    pub fn execute_only(self) -> bool {
        self.bit(0)
    }
    /// Bit 6: page-walk length 4.
    pub fn walk_length_4(self) -> bool {
        self.bit(6)
    }
    /// Bit 7: page-walk length 5.
    pub fn walk_length_5(self) -> bool {
        self.bit(7)
    }
    /// Bit 8: the EPT paging structures may be uncacheable.
    pub fn memory_type_uc(self) -> bool {
        self.bit(8)
    }
    /// Bit 14: the EPT paging structures may be write-back.
    pub fn memory_type_wb(self) -> bool {
        self.bit(14)
    }
    /// Bit 16: 2-MiB pages (PDE with bit 7).
    pub fn pages_2m(self) -> bool {
        self.bit(16)
    }
    /// Bit 17: 1-GiB pages (PDPTE with bit 7).
    pub fn pages_1g(self) -> bool {
        self.bit(17)
    }
    /// Bit 20: INVEPT is supported.
    pub fn invept(self) -> bool {
        self.bit(20)
    }
    /// Bit 21: accessed and dirty flags for EPT.
    pub fn accessed_dirty(self) -> bool {
        self.bit(21)
    }
    /// Bit 22: EPT violations report advanced VM-exit information.
    pub fn advanced_exit_info(self) -> bool {
        self.bit(22)
    }
    /// Bit 23: supervisor shadow-stack control in EPT entries (CET).
    pub fn supervisor_shadow_stack(self) -> bool {
        self.bit(23)
    }
    /// Bit 25: single-context INVEPT.
    pub fn invept_single_context(self) -> bool {
        self.bit(25)
    }
    /// Bit 26: all-context INVEPT.
    pub fn invept_all_context(self) -> bool {
        self.bit(26)
    }
    /// Bit 32: INVVPID is supported.
    pub fn invvpid(self) -> bool {
        self.bit(32)
    }
    /// Bit 40: individual-address INVVPID.
    pub fn invvpid_individual_address(self) -> bool {
        self.bit(40)
    }
    /// Bit 41: single-context INVVPID.
    pub fn invvpid_single_context(self) -> bool {
        self.bit(41)
    }
    /// Bit 42: all-context INVVPID.
    pub fn invvpid_all_context(self) -> bool {
        self.bit(42)
    }
    /// Bit 43: single-context-retaining-globals INVVPID.
    pub fn invvpid_single_context_retaining_globals(self) -> bool {
        self.bit(43)
    }

    /// Whether the processor offers the EPT this backend builds: a 4-level walk on
    /// write-back paging structures, and INVEPT of some type to flush it.
    pub fn ept_usable(self) -> bool {
        self.walk_length_4() && self.memory_type_wb() && self.invept_type().is_some()
    }

    /// The INVEPT type to flush one guest's mappings: single-context when available,
    /// else all-context.
    pub fn invept_type(self) -> Option<InveptType> {
        if !self.invept() {
            None
        } else if self.invept_single_context() {
            Some(InveptType::SingleContext)
        } else if self.invept_all_context() {
            Some(InveptType::AllContext)
        } else {
            None
        }
    }

    /// The INVVPID type to flush one guest's mappings: single-context when available,
    /// else all-context.
    pub fn invvpid_type(self) -> Option<InvvpidType> {
        if !self.invvpid() {
            None
        } else if self.invvpid_single_context() {
            Some(InvvpidType::SingleContext)
        } else if self.invvpid_all_context() {
            Some(InvvpidType::AllContext)
        } else {
            None
        }
    }

    /// The EPT pointer for a 4-level, write-back hierarchy rooted at `pml4` (SDM 3C
    /// 25.6.11): memory type 6 in bits 2:0, walk length − 1 in bits 5:3, A/D enable in
    /// bit 6 when `accessed_dirty` is asked for and supported. `None` if the root is not
    /// page-aligned or the processor lacks such EPT.
    pub fn eptp(self, pml4: u64, accessed_dirty: bool) -> Option<u64> {
        if pml4 & 0xfff != 0 || !self.walk_length_4() || !self.memory_type_wb() {
            return None;
        }
        let ad = if accessed_dirty && self.accessed_dirty() {
            1 << 6
        } else {
            0
        };
        Some(pml4 | ad | (3 << 3) | 6)
    }
}

/// Everything the capability MSRs say, as read by [`VmxCaps::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxCaps {
    /// IA32_VMX_BASIC.
    pub basic: VmxBasic,
    /// Pin-based controls (TRUE_PINBASED when `basic.true_controls()`).
    pub pin: ControlCap,
    /// Primary processor-based controls (TRUE_PROCBASED when available).
    pub proc: ControlCap,
    /// Secondary processor-based controls, if the primary ones can activate them.
    pub proc2: Option<ControlCap>,
    /// VM-exit controls (TRUE_EXIT when available).
    pub exit: ControlCap,
    /// VM-entry controls (TRUE_ENTRY when available).
    pub entry: ControlCap,
    /// IA32_VMX_MISC.
    pub misc: VmxMisc,
    /// CR0 fixed bits.
    pub cr0: CrFixed,
    /// CR4 fixed bits.
    pub cr4: CrFixed,
    /// EPT and VPID capabilities, if either EPT or VPID can be enabled.
    pub ept_vpid: Option<EptVpidCaps>,
}

/// Bit 31 of the primary processor-based controls: activate secondary controls.
const ACTIVATE_SECONDARY: u32 = 1 << 31;
/// Secondary control bits whose availability makes IA32_VMX_EPT_VPID_CAP exist.
const ENABLE_EPT: u32 = 1 << 1;
const ENABLE_VPID: u32 = 1 << 5;

impl VmxCaps {
    /// Read the capability MSRs, only those the processor has.
    pub fn read<M: MsrRead>(msrs: &M) -> Result<VmxCaps, CapsError> {
        let read = |index: u32| msrs.read_msr(index).ok_or(CapsError::MsrUnavailable(index));
        let basic = VmxBasic(read(IA32_VMX_BASIC)?);
        if basic.region_size() > 4096 {
            return Err(CapsError::VmcsTooLarge(basic.region_size()));
        }
        if basic.memory_type() != 6 {
            return Err(CapsError::VmcsMemoryType(basic.memory_type()));
        }
        // SDM 3C A.2: with bit 55 set, the TRUE_* MSRs report the controls exactly
        // (default1 bits that may be 0 show as 0 there); without it they do not exist.
        let (pin, proc, exit, entry) = if basic.true_controls() {
            (
                IA32_VMX_TRUE_PINBASED_CTLS,
                IA32_VMX_TRUE_PROCBASED_CTLS,
                IA32_VMX_TRUE_EXIT_CTLS,
                IA32_VMX_TRUE_ENTRY_CTLS,
            )
        } else {
            (
                IA32_VMX_PINBASED_CTLS,
                IA32_VMX_PROCBASED_CTLS,
                IA32_VMX_EXIT_CTLS,
                IA32_VMX_ENTRY_CTLS,
            )
        };
        let pin = ControlCap::from_msr(read(pin)?);
        let proc = ControlCap::from_msr(read(proc)?);
        let exit = ControlCap::from_msr(read(exit)?);
        let entry = ControlCap::from_msr(read(entry)?);
        let misc = VmxMisc(read(IA32_VMX_MISC)?);
        let cr0 = CrFixed {
            fixed0: read(IA32_VMX_CR0_FIXED0)?,
            fixed1: read(IA32_VMX_CR0_FIXED1)?,
        };
        let cr4 = CrFixed {
            fixed0: read(IA32_VMX_CR4_FIXED0)?,
            fixed1: read(IA32_VMX_CR4_FIXED1)?,
        };
        let proc2 = if proc.allows(ACTIVATE_SECONDARY) {
            Some(ControlCap::from_msr(read(IA32_VMX_PROCBASED_CTLS2)?))
        } else {
            None
        };
        let ept_vpid = match proc2 {
            Some(p2) if p2.may_be_one & (ENABLE_EPT | ENABLE_VPID) != 0 => {
                Some(EptVpidCaps(read(IA32_VMX_EPT_VPID_CAP)?))
            }
            _ => None,
        };
        Ok(VmxCaps {
            basic,
            pin,
            proc,
            proc2,
            exit,
            entry,
            misc,
            cr0,
            cr4,
            ept_vpid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn skylake_basic_and_true_controls() {
        let caps = VmxCaps::read(&CORE_I7_SKYLAKE_X).unwrap();
        assert_eq!(caps.basic.revision_id(), 0x2b);
        assert_eq!(caps.basic.region_size(), 4096);
        assert_eq!(caps.basic.memory_type(), 6);
        assert!(caps.basic.ins_outs_info());
        assert!(caps.basic.true_controls());
        assert!(!caps.basic.any_exception_error_code());
        // TRUE_PROCBASED: CR3-load/store exiting (bits 15, 16) may be 0.
        assert_eq!(caps.proc.must_be_one, 0x0400_6172);
        assert_eq!(caps.proc.may_be_one, 0xf7f9_fffe);
        assert_eq!(caps.exit.must_be_one, 0x0003_6dfb);
        assert_eq!(caps.entry.must_be_one, 0x0000_11fb);
        assert_eq!(caps.proc2.map(|c| c.may_be_one), Some(0x0217_7fff));
        assert_eq!(caps.misc.cr3_targets(), 4);
        assert_eq!(caps.misc.max_msr_list_entries(), 512);
        assert!(caps.misc.activity_hlt() && caps.misc.activity_shutdown());
        assert!(caps.misc.stores_lma() && caps.misc.vmwrite_any_field());
        assert_eq!(caps.misc.preemption_timer_rate(), 0);
    }

    #[test]
    fn without_true_controls_the_plain_msrs_are_read() {
        let mut fixture = CORE_I7_SKYLAKE_X;
        fixture.basic &= !(1 << 55);
        let caps = VmxCaps::read(&fixture).unwrap();
        assert_eq!(caps.proc.must_be_one, 0x0401_e172);
        assert_eq!(caps.exit.must_be_one, 0x0003_6dff);
    }

    #[test]
    fn skylake_ept_capabilities() {
        let ept = VmxCaps::read(&CORE_I7_SKYLAKE_X).unwrap().ept_vpid.unwrap();
        assert!(ept.execute_only() && ept.walk_length_4() && !ept.walk_length_5());
        assert!(ept.memory_type_uc() && ept.memory_type_wb());
        assert!(ept.pages_2m() && ept.pages_1g());
        assert!(ept.invept() && ept.accessed_dirty() && !ept.advanced_exit_info());
        assert!(ept.invept_single_context() && ept.invept_all_context());
        assert!(ept.invvpid() && ept.invvpid_individual_address());
        assert!(ept.invvpid_single_context() && ept.invvpid_all_context());
        assert!(ept.invvpid_single_context_retaining_globals());
        assert!(ept.ept_usable());
        assert_eq!(ept.invept_type(), Some(InveptType::SingleContext));
        assert_eq!(ept.invvpid_type(), Some(InvvpidType::SingleContext));
        assert_eq!(ept.eptp(0x1234_5000, false), Some(0x1234_501e));
        assert_eq!(ept.eptp(0x1234_5000, true), Some(0x1234_505e));
        assert_eq!(ept.eptp(0x1234_5008, false), None);
    }

    #[test]
    fn tigerlake_adds_shadow_stack_control_and_error_code_relaxation() {
        let caps = VmxCaps::read(&TIGERLAKE).unwrap();
        assert_eq!(caps.basic.revision_id(), 4);
        assert!(caps.basic.any_exception_error_code());
        let ept = caps.ept_vpid.unwrap();
        assert!(ept.supervisor_shadow_stack() && !ept.advanced_exit_info());
        let skylake = VmxCaps::read(&CORE_I7_SKYLAKE_X).unwrap().ept_vpid.unwrap();
        assert!(!skylake.supervisor_shadow_stack());
        assert_eq!(caps.cr4.fixed1, 0xf7_2fff);
    }

    #[test]
    fn penryn_has_no_ept_vpid_msr_and_it_is_not_read() {
        // The fixture has no 0x48C: reading it would fail the whole read.
        assert_eq!(CORE2_PENRYN_T9600.read_msr(IA32_VMX_EPT_VPID_CAP), None);
        let caps = VmxCaps::read(&CORE2_PENRYN_T9600).unwrap();
        assert_eq!(caps.ept_vpid, None);
        assert_eq!(caps.proc2.map(|c| c.may_be_one), Some(0x41));
        assert!(!caps.misc.vmwrite_any_field());
    }

    #[test]
    fn missing_secondary_controls_skip_procbased2() {
        let mut fixture = CORE2_PENRYN_T9600;
        // Neither the plain nor the true primary controls may activate the secondary.
        fixture.procbased &= !(1 << 63);
        fixture.true_procbased = fixture.true_procbased.map(|v| v & !(1 << 63));
        fixture.procbased2 = None;
        let caps = VmxCaps::read(&fixture).unwrap();
        assert_eq!(caps.proc2, None);
    }

    #[test]
    fn unreadable_or_unusable_basic_is_an_error() {
        let mut fixture = CORE_I7_SKYLAKE_X;
        fixture.true_exit = None;
        assert_eq!(
            VmxCaps::read(&fixture),
            Err(CapsError::MsrUnavailable(IA32_VMX_TRUE_EXIT_CTLS))
        );
        let mut fixture = CORE_I7_SKYLAKE_X;
        fixture.basic &= !(0xf << 50); // memory type 0: uncacheable
        assert_eq!(VmxCaps::read(&fixture), Err(CapsError::VmcsMemoryType(0)));
        let mut fixture = CORE_I7_SKYLAKE_X;
        fixture.basic = (fixture.basic & !(0x1fff << 32)) | (0x1800 << 32);
        assert_eq!(
            VmxCaps::read(&fixture),
            Err(CapsError::VmcsTooLarge(0x1800))
        );
    }

    #[test]
    fn cr_fixed_bits() {
        let caps = VmxCaps::read(&CORE_I7_SKYLAKE_X).unwrap();
        // CR0: PE, NE, PG must be 1.
        assert_eq!(caps.cr0.apply(0), 0x8000_0021);
        assert!(!caps.cr0.accepts(0x11));
        assert_eq!(caps.cr0.violations(0x11), 0x8000_0020);
        let guest = caps.cr0.for_guest_cr0(true);
        assert!(guest.accepts(0x30)); // real mode with NE and ET
        assert!(!guest.accepts(0x10)); // NE still required
        assert_eq!(caps.cr0.for_guest_cr0(false), caps.cr0);
        // CR4: VMXE must be 1; bits above the fixed1 mask (e.g. bit 23, CET) must be 0.
        assert_eq!(caps.cr4.apply(0x20), 0x2020);
        assert_eq!(caps.cr4.violations(0x2000 | (1 << 23)), 1 << 23);
        assert!(caps.cr4.accepts(0x2000 | 0x20 | (1 << 18)));
    }
}

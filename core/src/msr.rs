//! MSR policy: the table of MSRs the core emulates, one implementation for every backend.
//!
//! Every RDMSR and WRMSR exit lands in [`MsrState::read`] / [`MsrState::write`]; an
//! `Err(MsrFault)` makes the core queue #GP(0). The groups:
//!
//! - **vCPU state** (EFER, SYSCALL and SYSENTER MSRs, FS/GS/KERNEL_GS base, TSC_AUX, PAT):
//!   validated here (reserved bits, canonical addresses, PAT memory types), then held by
//!   the backend through [`X86Ops::get_msr`] / [`X86Ops::set_msr`]. A backend that does not
//!   hold one of them answers `None` / `false` and the table keeps the value itself (FS and
//!   GS base then go to the segment registers' hidden bases), so each of them works on any
//!   backend.
//! - **Time**: IA32_TSC and IA32_TSC_ADJUST move the guest's TSC offset (SDM 3B 17.17.3);
//!   IA32_TSC_DEADLINE belongs to the APIC. Moving the TSC also moves the APIC's
//!   one-shot/periodic deadlines so they keep their moment in real time.
//! - **APIC**: IA32_APIC_BASE and the x2APIC range 0x800-0x8ff go to [`LocalApic`].
//! - **MTRRs**: MTRRcap (8 variable ranges, fixed ranges, write-combining), MTRRdefType,
//!   the variable and fixed ranges: plain storage with type and reserved-bit checks (the
//!   backends do not act on memory types).
//! - **Model-specific, read for identification**: MISC_ENABLE (the bits a real Intel
//!   processor lets software write are stored: fast strings, TCC, EIST, MONITOR FSM,
//!   limit CPUID maxval, xTPR disable, XD disable, turbo disable; BTS and PEBS
//!   unavailable read 1), FEATURE_CONTROL (locked, VMX off), PLATFORM_INFO (max non-turbo
//!   ratio 10 × 100 MHz = the 1 GHz TSC, no CPUID faulting), PLATFORM_ID and BIOS_SIGN_ID
//!   (microcode revision) read 0, MCG_CAP / MCG_STATUS read 0 (no machine-check banks).
//! - **Debug**: IA32_DEBUGCTL holds BTF (single-step on branches), in the backend; its
//!   other bits (LBR, branch trace) are not offered and fault.
//! - Anything else faults and is counted ([`MsrState::unknown_accesses`],
//!   [`MsrState::last_unknown`]). MSRs that exist only with a CPUID feature (TSC_AUX
//!   needs RDTSCP, TSC_ADJUST needs leaf 7 TSC_ADJUST, TSC_DEADLINE needs TSC-deadline,
//!   the x2APIC range needs x2APIC) fault without counting when the policy lacks it.

use crate::apic::{LocalApic, APIC_BASE_EXTD, X2APIC_MSR_FIRST, X2APIC_MSR_LAST};
use crate::cpuid::{CpuidPolicy, Feature, PHYS_ADDR_BITS};
use crate::ops::{SegReg, X86Ops};

/// An MSR access the guest must see fail with #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrFault;

/// What an MSR access may touch besides the MSR table itself.
pub struct MsrContext<'a, B: X86Ops> {
    /// The vCPU (EFER, segment bases, SYSCALL/SYSENTER MSRs, PAT live in its state).
    pub vcpu: &'a mut B,
    /// The local APIC (IA32_APIC_BASE, the x2APIC range, IA32_TSC_DEADLINE).
    pub apic: &'a mut LocalApic,
    /// The CPU model (which MSRs exist depends on the features it reports).
    pub cpuid: &'a CpuidPolicy,
    /// The host clock in guest TSC ticks, before the guest's TSC offset is added.
    pub host_tsc: u64,
}

/// MSR indices the table implements.
pub mod index {
    /// IA32_TIME_STAMP_COUNTER.
    pub const TSC: u32 = 0x10;
    /// IA32_PLATFORM_ID.
    pub const PLATFORM_ID: u32 = 0x17;
    /// IA32_APIC_BASE.
    pub const APIC_BASE: u32 = 0x1b;
    /// IA32_FEATURE_CONTROL.
    pub const FEATURE_CONTROL: u32 = 0x3a;
    /// IA32_TSC_ADJUST.
    pub const TSC_ADJUST: u32 = 0x3b;
    /// IA32_BIOS_SIGN_ID (the microcode revision, "UCODE_REV").
    pub const BIOS_SIGN_ID: u32 = 0x8b;
    /// MSR_PLATFORM_INFO.
    pub const PLATFORM_INFO: u32 = 0xce;
    /// IA32_MTRRCAP.
    pub const MTRRCAP: u32 = 0xfe;
    /// IA32_SYSENTER_CS.
    pub const SYSENTER_CS: u32 = 0x174;
    /// IA32_SYSENTER_ESP.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// IA32_SYSENTER_EIP.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// IA32_MCG_CAP.
    pub const MCG_CAP: u32 = 0x179;
    /// IA32_MCG_STATUS.
    pub const MCG_STATUS: u32 = 0x17a;
    /// IA32_MISC_ENABLE.
    pub const MISC_ENABLE: u32 = 0x1a0;
    /// IA32_ARCH_CAPABILITIES (read-only).
    pub const ARCH_CAPABILITIES: u32 = 0x10a;
    /// IA32_DEBUGCTL.
    pub const DEBUGCTL: u32 = 0x1d9;
    /// IA32_MTRR_PHYSBASE0 (PHYSMASK0 is 0x201, ... PHYSMASK7 is 0x20f).
    pub const MTRR_PHYSBASE0: u32 = 0x200;
    /// IA32_MTRR_FIX64K_00000.
    pub const MTRR_FIX64K_00000: u32 = 0x250;
    /// IA32_MTRR_FIX16K_80000.
    pub const MTRR_FIX16K_80000: u32 = 0x258;
    /// IA32_MTRR_FIX16K_A0000.
    pub const MTRR_FIX16K_A0000: u32 = 0x259;
    /// IA32_MTRR_FIX4K_C0000 (through IA32_MTRR_FIX4K_F8000 at 0x26f).
    pub const MTRR_FIX4K_C0000: u32 = 0x268;
    /// IA32_PAT.
    pub const PAT: u32 = 0x277;
    /// IA32_MTRR_DEF_TYPE.
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    /// IA32_TSC_DEADLINE.
    pub const TSC_DEADLINE: u32 = 0x6e0;
    /// IA32_EFER.
    pub const EFER: u32 = 0xc000_0080;
    /// IA32_STAR.
    pub const STAR: u32 = 0xc000_0081;
    /// IA32_LSTAR.
    pub const LSTAR: u32 = 0xc000_0082;
    /// IA32_CSTAR.
    pub const CSTAR: u32 = 0xc000_0083;
    /// IA32_FMASK.
    pub const SFMASK: u32 = 0xc000_0084;
    /// IA32_FS_BASE.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// IA32_GS_BASE.
    pub const GS_BASE: u32 = 0xc000_0101;
    /// IA32_KERNEL_GS_BASE.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// IA32_TSC_AUX.
    pub const TSC_AUX: u32 = 0xc000_0103;
}

/// EFER.SCE: SYSCALL enable.
pub const EFER_SCE: u64 = 1 << 0;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active (read-only to software).
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE: execute-disable enable.
pub const EFER_NXE: u64 = 1 << 11;

/// IA32_PAT's power-on value: WB, WT, UC-, UC repeated (SDM 3A 12.12.4).
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// MTRRcap: 8 variable ranges, fixed ranges supported (bit 8), write-combining (bit 10).
pub const MTRRCAP_VALUE: u64 = 8 | (1 << 8) | (1 << 10);

/// MISC_ENABLE bit 0: fast-strings enable (writable).
pub const MISC_ENABLE_FAST_STRINGS: u64 = 1 << 0;
/// MISC_ENABLE bit 3: automatic thermal control circuit enable (writable).
const MISC_ENABLE_TCC: u64 = 1 << 3;
/// MISC_ENABLE bit 11: branch trace storage unavailable (read-only, set).
const MISC_ENABLE_BTS_UNAVAILABLE: u64 = 1 << 11;
/// MISC_ENABLE bit 12: processor event-based sampling unavailable (read-only, set).
const MISC_ENABLE_PEBS_UNAVAILABLE: u64 = 1 << 12;
/// MISC_ENABLE bit 16: Enhanced Intel SpeedStep enable (writable).
const MISC_ENABLE_EIST: u64 = 1 << 16;
/// MISC_ENABLE bit 18: ENABLE MONITOR FSM (writable).
const MISC_ENABLE_MONITOR_FSM: u64 = 1 << 18;
/// MISC_ENABLE bit 22: limit CPUID maxval (writable).
const MISC_ENABLE_LIMIT_CPUID: u64 = 1 << 22;
/// MISC_ENABLE bit 23: xTPR message disable (writable).
const MISC_ENABLE_XTPR_DISABLE: u64 = 1 << 23;
/// MISC_ENABLE bit 34: XD bit disable (writable).
const MISC_ENABLE_XD_DISABLE: u64 = 1 << 34;
/// MISC_ENABLE bit 38: turbo mode disable (writable).
const MISC_ENABLE_TURBO_DISABLE: u64 = 1 << 38;
/// MISC_ENABLE bit 7: performance monitoring available (read-only; clear: no
/// architectural performance monitoring in the model).
const MISC_ENABLE_PERFMON: u64 = 1 << 7;
/// The MISC_ENABLE bits real Intel processors let software write (SDM 4, table 2-2,
/// IA32_MISC_ENABLE); the model stores them.
const MISC_ENABLE_WRITABLE: u64 = MISC_ENABLE_FAST_STRINGS
    | MISC_ENABLE_TCC
    | MISC_ENABLE_EIST
    | MISC_ENABLE_MONITOR_FSM
    | MISC_ENABLE_LIMIT_CPUID
    | MISC_ENABLE_XTPR_DISABLE
    | MISC_ENABLE_XD_DISABLE
    | MISC_ENABLE_TURBO_DISABLE;
/// The read-only bits: writes to them are ignored.
const MISC_ENABLE_READ_ONLY: u64 =
    MISC_ENABLE_PERFMON | MISC_ENABLE_BTS_UNAVAILABLE | MISC_ENABLE_PEBS_UNAVAILABLE;
/// The read-only bits that read 1.
const MISC_ENABLE_READ_ONLY_SET: u64 = MISC_ENABLE_BTS_UNAVAILABLE | MISC_ENABLE_PEBS_UNAVAILABLE;

/// IA32_DEBUGCTL.BTF: single-step on branches (with RFLAGS.TF).
pub const DEBUGCTL_BTF: u64 = 1 << 1;

/// IA32_ARCH_CAPABILITIES as the models that offer it read it: every "not affected" bit
/// (Linux's `ARCH_CAP_*_NO`): rogue data cache load (bit 0, Meltdown), speculative
/// store bypass (4), microarchitectural data sampling (5), page-size-change machine
/// check (6), TSX asynchronous abort (8), the stale-MMIO-data flaws (13, 14, 15),
/// branch history injection (20), post-barrier RSB prediction (24), gather data
/// sampling (26) and register file data sampling (27). Only the emulator offers the MSR
/// (it executes nothing speculatively); a hardware backend would have to report its
/// processor's own value, and does not offer it. No control bit is set: the MSRs those
/// announce (TSX_CTRL, MCU_CONTROL, ...) do not exist here.
pub const ARCH_CAPABILITIES_VALUE: u64 = (1 << 0)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 8)
    | (1 << 13)
    | (1 << 14)
    | (1 << 15)
    | (1 << 20)
    | (1 << 24)
    | (1 << 26)
    | (1 << 27);

/// FEATURE_CONTROL: bit 0 lock set, VMX in and outside SMX off.
pub const FEATURE_CONTROL_VALUE: u64 = 1;

/// PLATFORM_INFO: maximum non-turbo ratio 10 (bits 15:8) × the 100 MHz bus of CPUID leaf
/// 0x16 = the 1 GHz TSC; no CPUID faulting (bit 31), no programmable ratio or TDP.
pub const PLATFORM_INFO_VALUE: u64 = 10 << 8;

/// The MSRs the table keeps when the backend does not (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fallback {
    Star,
    Lstar,
    Cstar,
    Sfmask,
    KernelGsBase,
    TscAux,
    SysenterCs,
    SysenterEsp,
    SysenterEip,
    Pat,
    DebugCtl,
}

const FALLBACK_COUNT: usize = 11;

/// The MSRs the core holds, and the count of accesses to MSRs nobody implements.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MsrState {
    tsc_offset: i64,
    tsc_adjust: u64,
    fallback: [u64; FALLBACK_COUNT],
    misc_enable: u64,
    mtrr_def_type: u64,
    /// PHYSBASE0, PHYSMASK0, ... PHYSMASK7 in MSR order.
    mtrr_var: [u64; 16],
    /// FIX64K_00000, FIX16K_80000, FIX16K_A0000, FIX4K_C0000 ... FIX4K_F8000.
    mtrr_fixed: [u64; 11],
    unknown: u64,
    last_unknown: Option<u32>,
}

/// Sign-extended from the top bit of the CPU model's linear-address width (bit 47, or
/// bit 56 with LA57: an MSR write is checked against what the processor supports, not
/// against the paging mode in use).
fn is_canonical(value: u64, cpuid: &CpuidPolicy) -> bool {
    let shift = 64 - cpuid.virt_addr_bits();
    (((value << shift) as i64) >> shift) as u64 == value
}

/// A memory type that the MTRRs accept: UC, WC, WT, WP, WB.
fn is_mtrr_type(ty: u64) -> bool {
    matches!(ty, 0 | 1 | 4 | 5 | 6)
}

/// A memory type that IA32_PAT accepts: the MTRR types and UC- (7).
fn is_pat_type(ty: u64) -> bool {
    matches!(ty, 0 | 1 | 4 | 5 | 6 | 7)
}

/// Every byte of `value` passes `ok`.
fn bytes_ok(value: u64, ok: fn(u64) -> bool) -> bool {
    (0..8).all(|i| ok((value >> (8 * i)) & 0xff))
}

/// Address bits 12..MAXPHYADDR.
const PHYS_PAGE_MASK: u64 = ((1u64 << PHYS_ADDR_BITS) - 1) & !0xfff;

impl MsrState {
    /// Power-on values.
    pub fn new() -> MsrState {
        let mut fallback = [0; FALLBACK_COUNT];
        fallback[Fallback::Pat as usize] = PAT_DEFAULT;
        MsrState {
            tsc_offset: 0,
            tsc_adjust: 0,
            fallback,
            misc_enable: MISC_ENABLE_FAST_STRINGS | MISC_ENABLE_READ_ONLY_SET,
            mtrr_def_type: 0,
            mtrr_var: [0; 16],
            mtrr_fixed: [0; 11],
            unknown: 0,
            last_unknown: None,
        }
    }

    /// Program the MTRRs as PC firmware leaves them for the operating system (SeaBIOS
    /// does the same): MTRRs enabled with write-back as the default type, and the 32-bit
    /// MMIO hole `hole_start..4 GiB` uncacheable through variable range 0 (its start must
    /// be aligned to its size, a power of two, as the 1 GiB hole at 3 GiB is; another hole
    /// is left write-back). Fixed ranges stay off: the first megabyte is RAM throughout.
    pub fn program_firmware_mtrrs(&mut self, hole_start: u64) {
        const TYPE_UC: u64 = 0;
        const TYPE_WB: u64 = 6;
        const ENABLE: u64 = 1 << 11;
        const VALID: u64 = 1 << 11;
        self.mtrr_def_type = ENABLE | TYPE_WB;
        let size = (1u64 << 32).wrapping_sub(hole_start);
        if hole_start < 1 << 32 && size.is_power_of_two() && hole_start % size == 0 {
            self.mtrr_var[0] = hole_start | TYPE_UC;
            self.mtrr_var[1] = (!(size - 1) & PHYS_PAGE_MASK) | VALID;
        }
    }

    /// The offset from the host clock to the guest's TSC (IA32_TSC writes move it).
    pub fn tsc_offset(&self) -> i64 {
        self.tsc_offset
    }

    /// The guest TSC at host time `host_tsc`.
    pub fn guest_tsc(&self, host_tsc: u64) -> u64 {
        host_tsc.wrapping_add(self.tsc_offset as u64)
    }

    /// Accesses to unknown MSRs so far (each raised #GP in the guest).
    pub fn unknown_accesses(&self) -> u64 {
        self.unknown
    }

    /// The most recent unknown MSR index, for the report.
    pub fn last_unknown(&self) -> Option<u32> {
        self.last_unknown
    }

    fn unknown_msr(&mut self, index: u32) -> MsrFault {
        self.unknown = self.unknown.saturating_add(1);
        self.last_unknown = Some(index);
        MsrFault
    }

    /// Move the TSC offset by `delta` and tell the backend and the APIC timer.
    fn move_tsc<B: X86Ops>(&mut self, delta: i64, vcpu: &mut B, apic: &mut LocalApic) {
        self.tsc_offset = self.tsc_offset.wrapping_add(delta);
        vcpu.set_tsc_offset(self.tsc_offset);
        apic.tsc_moved(delta);
    }

    /// Where the table keeps an MSR that lives in the backend's guest state when the
    /// backend does not hold it (see [`X86Ops::get_msr`]); `None` for every other MSR.
    fn fallback_slot(index: u32) -> Option<Fallback> {
        Some(match index {
            index::STAR => Fallback::Star,
            index::LSTAR => Fallback::Lstar,
            index::CSTAR => Fallback::Cstar,
            index::SFMASK => Fallback::Sfmask,
            index::KERNEL_GS_BASE => Fallback::KernelGsBase,
            index::TSC_AUX => Fallback::TscAux,
            index::SYSENTER_CS => Fallback::SysenterCs,
            index::SYSENTER_ESP => Fallback::SysenterEsp,
            index::SYSENTER_EIP => Fallback::SysenterEip,
            index::PAT => Fallback::Pat,
            index::DEBUGCTL => Fallback::DebugCtl,
            _ => return None,
        })
    }

    /// The position of an MTRR fixed-range MSR in `mtrr_fixed`.
    fn fixed_slot(index: u32) -> Option<usize> {
        match index {
            index::MTRR_FIX64K_00000 => Some(0),
            index::MTRR_FIX16K_80000 => Some(1),
            index::MTRR_FIX16K_A0000 => Some(2),
            0x268..=0x26f => Some(3 + (index - index::MTRR_FIX4K_C0000) as usize),
            _ => None,
        }
    }

    /// RDMSR.
    pub fn read<B: X86Ops>(&mut self, index: u32, cx: MsrContext<'_, B>) -> Result<u64, MsrFault> {
        let MsrContext {
            vcpu,
            apic,
            cpuid,
            host_tsc,
        } = cx;
        if let Some(slot) = Self::fallback_slot(index) {
            if index == index::TSC_AUX && !cpuid.has_feature(Feature::Rdtscp) {
                return Err(MsrFault);
            }
            return Ok(vcpu.get_msr(index).unwrap_or(self.fallback[slot as usize]));
        }
        let value = match index {
            index::EFER => vcpu.efer(),
            index::FS_BASE | index::GS_BASE => match vcpu.get_msr(index) {
                Some(value) => value,
                None => {
                    let seg = if index == index::FS_BASE {
                        SegReg::Fs
                    } else {
                        SegReg::Gs
                    };
                    vcpu.segment(seg).base
                }
            },
            index::TSC => self.guest_tsc(host_tsc),
            index::TSC_ADJUST if cpuid.has_feature(Feature::TscAdjust) => self.tsc_adjust,
            index::TSC_DEADLINE if cpuid.has_feature(Feature::TscDeadline) => {
                apic.update(self.guest_tsc(host_tsc));
                apic.tsc_deadline()
            }
            index::TSC_ADJUST | index::TSC_DEADLINE => return Err(MsrFault),
            index::APIC_BASE => apic.base_msr(),
            X2APIC_MSR_FIRST..=X2APIC_MSR_LAST => {
                if !cpuid.has_feature(Feature::X2apic) {
                    return Err(MsrFault);
                }
                return apic
                    .x2apic_read(index, self.guest_tsc(host_tsc))
                    .map_err(|_| MsrFault);
            }
            index::MTRRCAP => MTRRCAP_VALUE,
            index::MTRR_DEF_TYPE => self.mtrr_def_type,
            0x200..=0x20f => self.mtrr_var[(index - index::MTRR_PHYSBASE0) as usize],
            index::MTRR_FIX64K_00000
            | index::MTRR_FIX16K_80000
            | index::MTRR_FIX16K_A0000
            | 0x268..=0x26f => match Self::fixed_slot(index) {
                Some(slot) => self.mtrr_fixed[slot],
                None => return Err(MsrFault),
            },
            index::MISC_ENABLE => self.misc_enable,
            index::ARCH_CAPABILITIES if cpuid.has_feature(Feature::ArchCapabilities) => {
                ARCH_CAPABILITIES_VALUE
            }
            index::FEATURE_CONTROL => FEATURE_CONTROL_VALUE,
            index::PLATFORM_INFO => PLATFORM_INFO_VALUE,
            index::PLATFORM_ID | index::BIOS_SIGN_ID | index::MCG_CAP | index::MCG_STATUS => 0,
            _ => return Err(self.unknown_msr(index)),
        };
        Ok(value)
    }

    /// WRMSR.
    pub fn write<B: X86Ops>(
        &mut self,
        index: u32,
        value: u64,
        cx: MsrContext<'_, B>,
    ) -> Result<(), MsrFault> {
        let MsrContext {
            vcpu,
            apic,
            cpuid,
            host_tsc,
        } = cx;
        if let Some(slot) = Self::fallback_slot(index) {
            let valid = match index {
                index::LSTAR
                | index::CSTAR
                | index::KERNEL_GS_BASE
                | index::SYSENTER_ESP
                | index::SYSENTER_EIP => is_canonical(value, cpuid),
                index::TSC_AUX => cpuid.has_feature(Feature::Rdtscp) && value >> 32 == 0,
                index::PAT => bytes_ok(value, is_pat_type),
                index::DEBUGCTL => value & !DEBUGCTL_BTF == 0,
                _ => true,
            };
            if !valid {
                return Err(MsrFault);
            }
            if !vcpu.set_msr(index, value) {
                self.fallback[slot as usize] = value;
            }
            return Ok(());
        }
        match index {
            index::EFER => {
                let efer = Self::check_efer(value, vcpu, cpuid)?;
                vcpu.set_efer(efer);
            }
            index::FS_BASE | index::GS_BASE => {
                if !is_canonical(value, cpuid) {
                    return Err(MsrFault);
                }
                if !vcpu.set_msr(index, value) {
                    let seg = if index == index::FS_BASE {
                        SegReg::Fs
                    } else {
                        SegReg::Gs
                    };
                    let mut segment = vcpu.segment(seg);
                    segment.base = value;
                    vcpu.set_segment(seg, &segment);
                }
            }
            index::TSC => {
                // The guest reads `value` now: offset = value - host. TSC_ADJUST moves by
                // the same amount (SDM 3B 17.17.3).
                let new_offset = value.wrapping_sub(host_tsc) as i64;
                let delta = new_offset.wrapping_sub(self.tsc_offset);
                self.tsc_adjust = self.tsc_adjust.wrapping_add(delta as u64);
                self.move_tsc(delta, vcpu, apic);
            }
            index::TSC_ADJUST if cpuid.has_feature(Feature::TscAdjust) => {
                let delta = value.wrapping_sub(self.tsc_adjust) as i64;
                self.tsc_adjust = value;
                self.move_tsc(delta, vcpu, apic);
            }
            index::TSC_DEADLINE if cpuid.has_feature(Feature::TscDeadline) => {
                apic.set_tsc_deadline(value, self.guest_tsc(host_tsc));
            }
            index::TSC_ADJUST | index::TSC_DEADLINE => return Err(MsrFault),
            index::APIC_BASE => {
                if value & APIC_BASE_EXTD != 0 && !cpuid.has_feature(Feature::X2apic) {
                    return Err(MsrFault);
                }
                apic.set_base_msr(value).map_err(|_| MsrFault)?;
            }
            X2APIC_MSR_FIRST..=X2APIC_MSR_LAST => {
                if !cpuid.has_feature(Feature::X2apic) {
                    return Err(MsrFault);
                }
                apic.x2apic_write(index, value, self.guest_tsc(host_tsc))
                    .map_err(|_| MsrFault)?;
            }
            index::MTRR_DEF_TYPE => {
                // Type in bits 7:0, FE (10), E (11); everything else reserved.
                if value & !0xcff != 0 || !is_mtrr_type(value & 0xff) {
                    return Err(MsrFault);
                }
                self.mtrr_def_type = value;
            }
            0x200..=0x20f => {
                let n = (index - index::MTRR_PHYSBASE0) as usize;
                let allowed = if n % 2 == 0 {
                    // PHYSBASE: type, base address.
                    PHYS_PAGE_MASK | 0xff
                } else {
                    // PHYSMASK: valid (11), mask.
                    PHYS_PAGE_MASK | (1 << 11)
                };
                if value & !allowed != 0 || (n % 2 == 0 && !is_mtrr_type(value & 0xff)) {
                    return Err(MsrFault);
                }
                self.mtrr_var[n] = value;
            }
            index::MTRR_FIX64K_00000
            | index::MTRR_FIX16K_80000
            | index::MTRR_FIX16K_A0000
            | 0x268..=0x26f => {
                if !bytes_ok(value, is_mtrr_type) {
                    return Err(MsrFault);
                }
                match Self::fixed_slot(index) {
                    Some(slot) => self.mtrr_fixed[slot] = value,
                    None => return Err(MsrFault),
                }
            }
            index::MISC_ENABLE => {
                // Writable bits change; the read-only ones must be written as they read.
                if value & !(MISC_ENABLE_WRITABLE | MISC_ENABLE_READ_ONLY) != 0 {
                    return Err(MsrFault);
                }
                self.misc_enable =
                    (value & MISC_ENABLE_WRITABLE) | (self.misc_enable & !MISC_ENABLE_WRITABLE);
            }
            // Microcode update trigger sequence: write 0, CPUID, read. Nothing to load.
            index::BIOS_SIGN_ID => {}
            index::ARCH_CAPABILITIES => return Err(MsrFault),
            // No machine-check banks: only the "no event" value is accepted.
            index::MCG_STATUS if value == 0 => {}
            // Read-only (FEATURE_CONTROL is locked) or only a few values accepted.
            index::MTRRCAP
            | index::FEATURE_CONTROL
            | index::PLATFORM_INFO
            | index::PLATFORM_ID
            | index::MCG_CAP
            | index::MCG_STATUS => return Err(MsrFault),
            _ => return Err(self.unknown_msr(index)),
        }
        Ok(())
    }

    /// The EFER value a WRMSR produces, or the fault it raises.
    fn check_efer<B: X86Ops>(value: u64, vcpu: &B, cpuid: &CpuidPolicy) -> Result<u64, MsrFault> {
        let mut allowed = EFER_LMA;
        if cpuid.has_feature(Feature::Syscall) {
            allowed |= EFER_SCE;
        }
        if cpuid.has_feature(Feature::Lm) {
            allowed |= EFER_LME;
        }
        if cpuid.has_feature(Feature::Nx) {
            allowed |= EFER_NXE;
        }
        if value & !allowed != 0 {
            return Err(MsrFault);
        }
        let current = vcpu.efer();
        // LME may not change while paging is on (SDM 3A 10.8.5).
        let paging = vcpu.cr0() & (1 << 31) != 0;
        if paging && (value ^ current) & EFER_LME != 0 {
            return Err(MsrFault);
        }
        // LMA is the processor's to set: writes keep the current value.
        Ok((value & !EFER_LMA) | (current & EFER_LMA))
    }
}

impl Default for MsrState {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apic::{APIC_BASE_BSP, APIC_BASE_EN, APIC_DEFAULT_BASE, LVT_TIMER_TSC_DEADLINE};
    use crate::test_support::{HeldMsrs, TestVcpu};

    struct Rig {
        msrs: MsrState,
        vcpu: TestVcpu,
        apic: LocalApic,
        cpuid: CpuidPolicy,
        host_tsc: u64,
    }

    impl Rig {
        fn new(holds_msrs: bool) -> Rig {
            Rig {
                msrs: MsrState::new(),
                vcpu: TestVcpu {
                    held_msrs: if holds_msrs {
                        HeldMsrs::All
                    } else {
                        HeldMsrs::None
                    },
                    ..TestVcpu::default()
                },
                apic: LocalApic::new(0),
                cpuid: CpuidPolicy::emulator(),
                host_tsc: 1_000_000,
            }
        }
        fn rd(&mut self, index: u32) -> Result<u64, MsrFault> {
            let cx = MsrContext {
                vcpu: &mut self.vcpu,
                apic: &mut self.apic,
                cpuid: &self.cpuid,
                host_tsc: self.host_tsc,
            };
            self.msrs.read(index, cx)
        }
        fn wr(&mut self, index: u32, value: u64) -> Result<(), MsrFault> {
            let cx = MsrContext {
                vcpu: &mut self.vcpu,
                apic: &mut self.apic,
                cpuid: &self.cpuid,
                host_tsc: self.host_tsc,
            };
            self.msrs.write(index, value, cx)
        }
    }

    #[test]
    fn efer_rules() {
        let mut rig = Rig::new(false);
        rig.wr(index::EFER, EFER_SCE | EFER_LME | EFER_NXE).unwrap();
        assert_eq!(rig.rd(index::EFER), Ok(EFER_SCE | EFER_LME | EFER_NXE));
        // LMA is ignored on write: neither set nor cleared by software.
        rig.wr(index::EFER, EFER_LME | EFER_LMA).unwrap();
        assert_eq!(rig.vcpu.efer, EFER_LME);
        rig.vcpu.efer = EFER_LME | EFER_LMA;
        rig.vcpu.cr[0] = 0x8000_0001;
        rig.wr(index::EFER, EFER_LME | EFER_NXE).unwrap();
        assert_eq!(rig.vcpu.efer, EFER_LME | EFER_LMA | EFER_NXE);
        // LME may not change while paging.
        assert_eq!(rig.wr(index::EFER, EFER_NXE), Err(MsrFault));
        // Reserved bits: 1-7, 9, 12 (LMSLE), 63.
        for bit in [1, 7, 9, 12, 14, 63] {
            assert_eq!(
                rig.wr(index::EFER, EFER_LME | (1 << bit)),
                Err(MsrFault),
                "bit {bit}"
            );
        }
        // NXE needs NX in CPUID.
        rig.cpuid.set_feature(Feature::Nx, false);
        assert_eq!(rig.wr(index::EFER, EFER_LME | EFER_NXE), Err(MsrFault));
        assert_eq!(rig.msrs.unknown_accesses(), 0);
    }

    fn forwarded_msrs(holds: bool) {
        let mut rig = Rig::new(holds);
        let canon = 0xffff_8000_0000_1000;
        // The model has LA57: addresses are checked against 57 bits.
        let non_canon = 0x0100_0000_0000_0000;
        for index in [index::STAR, index::SFMASK, index::SYSENTER_CS] {
            rig.wr(index, 0x1234_5678_9abc_def0).unwrap();
            assert_eq!(rig.rd(index), Ok(0x1234_5678_9abc_def0), "{index:#x}");
        }
        for index in [
            index::LSTAR,
            index::CSTAR,
            index::KERNEL_GS_BASE,
            index::SYSENTER_ESP,
            index::SYSENTER_EIP,
            index::FS_BASE,
            index::GS_BASE,
        ] {
            rig.wr(index, canon).unwrap();
            assert_eq!(rig.rd(index), Ok(canon), "{index:#x}");
            assert_eq!(rig.wr(index, non_canon), Err(MsrFault), "{index:#x}");
            assert_eq!(rig.rd(index), Ok(canon), "{index:#x}");
        }
        // Bit 47 set: canonical with LA57 in the model, not without.
        rig.wr(index::LSTAR, 0x0000_8000_0000_0000).unwrap();
        rig.cpuid.set_feature(Feature::La57, false);
        assert_eq!(rig.wr(index::LSTAR, 0x0000_8000_0000_0000), Err(MsrFault));
        rig.cpuid.set_feature(Feature::La57, true);
        rig.wr(index::LSTAR, canon).unwrap();
        if !holds {
            // Without the backend's help FS/GS base are the segments' hidden bases.
            assert_eq!(rig.vcpu.seg[SegReg::Fs as usize].base, canon);
            assert_eq!(rig.vcpu.seg[SegReg::Gs as usize].base, canon);
        } else {
            assert_eq!(rig.vcpu.msrs.get(&index::LSTAR), Some(&canon));
        }
        rig.wr(index::TSC_AUX, 0xffff_ffff).unwrap();
        assert_eq!(rig.rd(index::TSC_AUX), Ok(0xffff_ffff));
        assert_eq!(rig.wr(index::TSC_AUX, 1 << 32), Err(MsrFault));
        // PAT: each byte one of 0, 1, 4, 5, 6, 7.
        if !holds {
            assert_eq!(rig.rd(index::PAT), Ok(PAT_DEFAULT));
        }
        rig.wr(index::PAT, 0x0706_0504_0100_0706).unwrap();
        assert_eq!(rig.rd(index::PAT), Ok(0x0706_0504_0100_0706));
        for bad in [2u64, 3, 8, 0x80] {
            assert_eq!(
                rig.wr(index::PAT, PAT_DEFAULT | (bad << 56)),
                Err(MsrFault),
                "{bad}"
            );
        }
        // TSC_AUX exists only with RDTSCP.
        rig.cpuid.set_feature(Feature::Rdtscp, false);
        assert_eq!(rig.rd(index::TSC_AUX), Err(MsrFault));
        assert_eq!(rig.wr(index::TSC_AUX, 0), Err(MsrFault));
        assert_eq!(rig.msrs.unknown_accesses(), 0);
    }

    #[test]
    fn forwarded_msrs_kept_by_table() {
        forwarded_msrs(false);
    }

    #[test]
    fn forwarded_msrs_kept_by_backend() {
        forwarded_msrs(true);
    }

    #[test]
    fn tsc_and_tsc_adjust() {
        let mut rig = Rig::new(false);
        assert_eq!(rig.rd(index::TSC), Ok(1_000_000));
        rig.wr(index::TSC, 5_000_000).unwrap();
        assert_eq!(rig.msrs.tsc_offset(), 4_000_000);
        assert_eq!(rig.vcpu.tsc_offset, 4_000_000);
        assert_eq!(rig.rd(index::TSC_ADJUST), Ok(4_000_000));
        rig.host_tsc += 10;
        assert_eq!(rig.rd(index::TSC), Ok(5_000_010));
        // Backwards: negative offset and adjust.
        rig.wr(index::TSC, 10).unwrap();
        assert_eq!(rig.msrs.tsc_offset(), 10 - 1_000_010);
        assert_eq!(rig.rd(index::TSC_ADJUST), Ok((10i64 - 1_000_010) as u64));
        assert_eq!(rig.rd(index::TSC), Ok(10));
        // TSC_ADJUST writes move the TSC by the delta.
        rig.wr(index::TSC_ADJUST, 0).unwrap();
        assert_eq!(rig.msrs.tsc_offset(), 0);
        assert_eq!(rig.vcpu.tsc_offset, 0);
        assert_eq!(rig.rd(index::TSC), Ok(1_000_010));
        rig.wr(index::TSC_ADJUST, 100).unwrap();
        assert_eq!(rig.rd(index::TSC), Ok(1_000_110));
        // Wrapping at the 64-bit boundary does not panic.
        rig.wr(index::TSC, u64::MAX).unwrap();
        rig.host_tsc += 2;
        assert_eq!(rig.rd(index::TSC), Ok(1));
        rig.cpuid.set_feature(Feature::TscAdjust, false);
        assert_eq!(rig.rd(index::TSC_ADJUST), Err(MsrFault));
        assert_eq!(rig.wr(index::TSC_ADJUST, 0), Err(MsrFault));
    }

    #[test]
    fn tsc_deadline_goes_to_apic_in_guest_time() {
        let mut rig = Rig::new(false);
        rig.apic.mmio_write(0xf0, 0x1ff, 0);
        rig.apic.mmio_write(0x320, LVT_TIMER_TSC_DEADLINE | 0x40, 0);
        rig.wr(index::TSC, 0).unwrap(); // guest TSC = host - 1_000_000
        rig.wr(index::TSC_DEADLINE, 500).unwrap();
        assert_eq!(rig.rd(index::TSC_DEADLINE), Ok(500));
        assert_eq!(rig.apic.next_deadline(), Some(500));
        rig.host_tsc += 500;
        assert_eq!(rig.rd(index::TSC_DEADLINE), Ok(0), "fired");
        assert_eq!(rig.apic.pending_interrupt(), Some(0x40));
        rig.cpuid.set_feature(Feature::TscDeadline, false);
        assert_eq!(rig.rd(index::TSC_DEADLINE), Err(MsrFault));
    }

    #[test]
    fn tsc_writes_do_not_move_the_apic_timer_in_real_time() {
        let mut rig = Rig::new(false);
        rig.apic.mmio_write(0xf0, 0x1ff, 0);
        rig.apic.mmio_write(0x320, 0x40, 0);
        rig.apic.mmio_write(0x3e0, 0xb, 0);
        // Guest TSC = host TSC = 1_000_000: the count ends 1000 ticks from now.
        rig.apic.mmio_write(0x380, 1000, 1_000_000);
        assert_eq!(rig.apic.next_deadline(), Some(1_001_000));
        rig.wr(index::TSC, 5).unwrap();
        assert_eq!(rig.apic.next_deadline(), Some(1005));
        rig.wr(index::TSC_ADJUST, 0).unwrap();
        assert_eq!(rig.apic.next_deadline(), Some(1_001_000));
    }

    #[test]
    fn apic_base_and_x2apic_range() {
        let mut rig = Rig::new(false);
        let xapic = APIC_DEFAULT_BASE | APIC_BASE_EN | APIC_BASE_BSP;
        assert_eq!(rig.rd(index::APIC_BASE), Ok(xapic));
        assert_eq!(
            rig.rd(0x802),
            Err(MsrFault),
            "x2APIC MSRs fault in xAPIC mode"
        );
        rig.wr(index::APIC_BASE, xapic | APIC_BASE_EXTD).unwrap();
        assert_eq!(rig.rd(0x802), Ok(0));
        assert_eq!(rig.rd(0x803), Ok(0x0005_0014));
        rig.wr(0x808, 0x20).unwrap();
        assert_eq!(rig.rd(0x808), Ok(0x20));
        assert_eq!(rig.wr(0x802, 1), Err(MsrFault));
        assert_eq!(rig.wr(index::APIC_BASE, xapic), Err(MsrFault));
        assert_eq!(rig.wr(index::APIC_BASE, xapic | (1 << 9)), Err(MsrFault));
        // Without x2APIC in CPUID neither EXTD nor the range exists.
        rig.wr(index::APIC_BASE, APIC_DEFAULT_BASE).unwrap();
        rig.wr(index::APIC_BASE, xapic).unwrap();
        rig.cpuid.set_feature(Feature::X2apic, false);
        assert_eq!(
            rig.wr(index::APIC_BASE, xapic | APIC_BASE_EXTD),
            Err(MsrFault)
        );
        assert_eq!(rig.rd(0x808), Err(MsrFault));
        // Faults inside the x2APIC range are not "unknown MSRs".
        assert_eq!(rig.msrs.unknown_accesses(), 0);
    }

    #[test]
    fn firmware_mtrrs() {
        let mut rig = Rig::new(false);
        rig.msrs.program_firmware_mtrrs(0xc000_0000);
        assert_eq!(
            rig.rd(index::MTRR_DEF_TYPE),
            Ok(0x806),
            "enabled, write-back"
        );
        assert_eq!(
            rig.rd(index::MTRR_PHYSBASE0),
            Ok(0xc000_0000),
            "uncacheable"
        );
        assert_eq!(
            rig.rd(index::MTRR_PHYSBASE0 + 1),
            Ok((((1u64 << PHYS_ADDR_BITS) - 1) & !0x3fff_ffff) | 0x800),
            "1 GiB, valid"
        );
        // A hole that one variable range cannot describe is left write-back.
        let mut rig = Rig::new(false);
        rig.msrs.program_firmware_mtrrs(0xe000_0000 - 0x1000);
        assert_eq!(rig.rd(index::MTRR_DEF_TYPE), Ok(0x806));
        assert_eq!(rig.rd(index::MTRR_PHYSBASE0 + 1), Ok(0), "no range");
    }

    #[test]
    fn mtrrs() {
        let mut rig = Rig::new(false);
        assert_eq!(rig.rd(index::MTRRCAP), Ok(0x508));
        assert_eq!(rig.wr(index::MTRRCAP, 0), Err(MsrFault));
        assert_eq!(rig.rd(index::MTRR_DEF_TYPE), Ok(0));
        rig.wr(index::MTRR_DEF_TYPE, 0xc06).unwrap();
        assert_eq!(rig.rd(index::MTRR_DEF_TYPE), Ok(0xc06));
        assert_eq!(rig.wr(index::MTRR_DEF_TYPE, 0x1006), Err(MsrFault));
        assert_eq!(rig.wr(index::MTRR_DEF_TYPE, 0xc02), Err(MsrFault));
        // Variable ranges.
        rig.wr(0x200, 0x7f_ffff_f006).unwrap();
        assert_eq!(rig.rd(0x200), Ok(0x7f_ffff_f006));
        rig.wr(0x20f, 0x7f_ffff_f800).unwrap();
        assert_eq!(rig.rd(0x20f), Ok(0x7f_ffff_f800));
        assert_eq!(
            rig.wr(0x200, 0x80_0000_0006),
            Err(MsrFault),
            "above MAXPHYADDR"
        );
        assert_eq!(
            rig.wr(0x202, 0x107),
            Err(MsrFault),
            "reserved bit 8 and type 7"
        );
        assert_eq!(rig.wr(0x202, 0x3), Err(MsrFault), "type 3");
        assert_eq!(rig.wr(0x203, 0x400), Err(MsrFault), "mask reserved bit 10");
        assert_eq!(rig.wr(0x203, 0x6), Err(MsrFault), "mask has no type");
        // Fixed ranges.
        for index in [0x250, 0x258, 0x259, 0x268, 0x26f] {
            rig.wr(index, 0x0605_0401_0006_0504).unwrap();
            assert_eq!(rig.rd(index), Ok(0x0605_0401_0006_0504), "{index:#x}");
            assert_eq!(
                rig.wr(index, 0x0700_0000_0000_0000),
                Err(MsrFault),
                "{index:#x}"
            );
        }
        assert_eq!(rig.rd(0x251), Err(MsrFault));
        assert_eq!(rig.msrs.unknown_accesses(), 1);
        assert_eq!(rig.rd(0x210), Err(MsrFault));
        assert_eq!(rig.msrs.last_unknown(), Some(0x210));
    }

    #[test]
    fn identification_msrs() {
        let mut rig = Rig::new(false);
        assert_eq!(rig.rd(index::MISC_ENABLE), Ok(1 | (1 << 11) | (1 << 12)));
        rig.wr(index::MISC_ENABLE, (1 << 23) | (1 << 11) | (1 << 12))
            .unwrap();
        assert_eq!(
            rig.rd(index::MISC_ENABLE),
            Ok((1 << 23) | (1 << 11) | (1 << 12))
        );
        // Read-only bits keep their value whatever is written to them.
        rig.wr(index::MISC_ENABLE, 1).unwrap();
        assert_eq!(rig.rd(index::MISC_ENABLE), Ok(1 | (1 << 11) | (1 << 12)));
        // The bits Intel lets software write are stored; the read-only ones ignore writes
        // (kvm-unit-tests' msr test writes 0x400c51889, then 0x400c50809 keeping 7, 11, 12).
        rig.wr(index::MISC_ENABLE, 0x4_00c5_1889).unwrap();
        assert_eq!(rig.rd(index::MISC_ENABLE), Ok(0x4_00c5_1809));
        rig.wr(index::MISC_ENABLE, 0x4_00c5_0809).unwrap();
        assert_eq!(rig.rd(index::MISC_ENABLE), Ok(0x4_00c5_1809));
        rig.wr(index::MISC_ENABLE, 1 << 38).unwrap();
        assert_eq!(
            rig.rd(index::MISC_ENABLE),
            Ok((1 << 38) | (1 << 11) | (1 << 12))
        );
        // Reserved bits fault and change nothing.
        for bit in [1, 2, 4, 8, 13, 17, 19, 24, 33, 35, 63] {
            assert_eq!(
                rig.wr(index::MISC_ENABLE, 1 << bit),
                Err(MsrFault),
                "bit {bit}"
            );
        }
        assert_eq!(
            rig.rd(index::MISC_ENABLE),
            Ok((1 << 38) | (1 << 11) | (1 << 12))
        );
        assert_eq!(rig.rd(index::FEATURE_CONTROL), Ok(1));
        assert_eq!(rig.wr(index::FEATURE_CONTROL, 5), Err(MsrFault));
        assert_eq!(rig.wr(index::FEATURE_CONTROL, 1), Err(MsrFault));
        assert_eq!(rig.rd(index::PLATFORM_INFO), Ok(0xa00));
        assert_eq!(rig.wr(index::PLATFORM_INFO, 0), Err(MsrFault));
        for index in [
            index::PLATFORM_ID,
            index::BIOS_SIGN_ID,
            index::MCG_CAP,
            index::MCG_STATUS,
            index::DEBUGCTL,
        ] {
            assert_eq!(rig.rd(index), Ok(0), "{index:#x}");
        }
        rig.wr(index::BIOS_SIGN_ID, 0).unwrap();
        assert_eq!(rig.rd(index::BIOS_SIGN_ID), Ok(0));
        rig.wr(index::MCG_STATUS, 0).unwrap();
        assert_eq!(rig.wr(index::MCG_STATUS, 1), Err(MsrFault));
        assert_eq!(rig.wr(index::MCG_CAP, 0), Err(MsrFault));
        // DEBUGCTL: BTF is stored, LBR and the rest fault.
        rig.wr(index::DEBUGCTL, DEBUGCTL_BTF).unwrap();
        assert_eq!(rig.rd(index::DEBUGCTL), Ok(DEBUGCTL_BTF));
        assert_eq!(rig.wr(index::DEBUGCTL, 1), Err(MsrFault));
        assert_eq!(rig.wr(index::DEBUGCTL, 1 << 6), Err(MsrFault));
        rig.wr(index::DEBUGCTL, 0).unwrap();
        assert_eq!(rig.msrs.unknown_accesses(), 0);
    }

    #[test]
    fn arch_capabilities_reads_as_the_model_says_and_is_read_only() {
        let mut rig = Rig::new(true);
        assert_eq!(
            rig.rd(index::ARCH_CAPABILITIES),
            Ok(ARCH_CAPABILITIES_VALUE)
        );
        // RDCL_NO: Linux turns page-table isolation off for a processor that has it.
        assert_eq!(ARCH_CAPABILITIES_VALUE & 1, 1);
        assert_eq!(rig.wr(index::ARCH_CAPABILITIES, 0), Err(MsrFault));
        assert_eq!(
            rig.rd(index::ARCH_CAPABILITIES),
            Ok(ARCH_CAPABILITIES_VALUE)
        );
        // A model without the feature (CPUID.7.0:EDX[29] clear) has no such MSR.
        rig.cpuid.set_feature(Feature::ArchCapabilities, false);
        assert_eq!(rig.rd(index::ARCH_CAPABILITIES), Err(MsrFault));
    }

    #[test]
    fn unknown_msrs_fault_and_count() {
        let mut rig = Rig::new(true);
        assert_eq!(rig.msrs.last_unknown(), None);
        for (n, index) in [0u32, 0x48, 0x10b, 0xc000_0104, 0xffff_ffff, 0x4000_0000]
            .into_iter()
            .enumerate()
        {
            assert_eq!(rig.rd(index), Err(MsrFault));
            assert_eq!(rig.wr(index, 0), Err(MsrFault));
            assert_eq!(rig.msrs.unknown_accesses(), 2 * (n as u64 + 1));
            assert_eq!(rig.msrs.last_unknown(), Some(index));
        }
    }

    #[test]
    fn canonical_check() {
        let mut cpuid = CpuidPolicy::emulator();
        cpuid.set_feature(Feature::La57, false);
        assert!(is_canonical(0, &cpuid));
        assert!(is_canonical(0x0000_7fff_ffff_ffff, &cpuid));
        assert!(is_canonical(0xffff_8000_0000_0000, &cpuid));
        assert!(!is_canonical(0x0000_8000_0000_0000, &cpuid));
        assert!(!is_canonical(0xfff7_ffff_ffff_ffff, &cpuid));
        // With LA57 in the model, bit 56 is the top bit.
        cpuid.set_feature(Feature::La57, true);
        assert!(is_canonical(0x0000_8000_0000_0000, &cpuid));
        assert!(is_canonical(0x00ff_ffff_ffff_ffff, &cpuid));
        assert!(is_canonical(0xff00_0000_0000_0000, &cpuid));
        assert!(!is_canonical(0x0100_0000_0000_0000, &cpuid));
        assert!(!is_canonical(0xfeff_ffff_ffff_ffff, &cpuid));
    }
}

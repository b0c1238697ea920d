//! The debug traps of an instruction a hardware backend completes for the core (SDM 3B
//! 18.3.1, APM 2 13.1): the processor never completes an instruction that exits, so the
//! single-step trap (RFLAGS.TF) and the I/O breakpoints (DR7 R/W 10 with CR4.DE) it
//! would have raised after it are the backend's to raise when it skips the instruction,
//! as KVM does in `kvm_skip_emulated_instruction` and its I/O breakpoint check. The
//! result is in the format of VMX's pending-debug-exceptions field (KVM's #DB payload):
//! B0-B3, bit 12 for an enabled breakpoint, BS. VMX writes it into that field, which VM
//! entry delivers; SVM injects a #DB and writes the DR6 bits itself (DR6 has no bit 12:
//! it is reserved and reads as 0).

/// Pending debug exceptions: B0-B3.
pub const B: u64 = 0xf;
/// Pending debug exceptions: an enabled breakpoint matched (bit 12).
pub const ENABLED_BP: u64 = 1 << 12;
/// Pending debug exceptions: single-step (BS, bit 14).
pub const BS: u64 = 1 << 14;
/// RFLAGS.TF.
pub const TF: u64 = 1 << 8;
/// CR4.DE.
pub const CR4_DE: u64 = 1 << 3;
/// IA32_DEBUGCTL.BTF.
pub const BTF: u64 = crate::msr::DEBUGCTL_BTF;

/// The guest state the traps depend on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugState {
    /// DR0-DR3.
    pub dr: [u64; 4],
    /// DR7.
    pub dr7: u64,
    /// CR4 as the guest sees it.
    pub cr4: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// IA32_DEBUGCTL.
    pub debugctl: u64,
}

/// What the instruction a backend is completing raises after it: recorded when it
/// exits, taken when it is skipped (each backend's `debug_traps_after_skip`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completing {
    /// It takes the single-step trap: every instruction but HLT, whose trap the
    /// processor takes only when it wakes.
    pub step: bool,
    /// Its port access (port, size), for the I/O breakpoints.
    pub io: Option<(u16, u8)>,
}

impl Completing {
    /// An instruction without a port access.
    pub const INSTRUCTION: Completing = Completing {
        step: true,
        io: None,
    };

    /// Whether it can raise a trap at all with these RFLAGS and DR7, so a backend reads
    /// DR0-DR3 and CR4 only when it can.
    pub fn may_trap(&self, rflags: u64, dr7: u64) -> bool {
        (self.step && rflags & TF != 0) || (self.io.is_some() && dr7 & 0xff != 0)
    }

    /// Its pending debug exceptions ([`pending_after_skip`]); TF counts only if it takes
    /// the single-step trap.
    pub fn pending(&self, s: &DebugState) -> u64 {
        let rflags = if self.step { s.rflags } else { s.rflags & !TF };
        pending_after_skip(&DebugState { rflags, ..*s }, self.io)
    }
}

/// The pending debug exceptions after an instruction the core completed: BS when TF
/// was set (the skipped instruction is never a taken branch, so BTF suppresses it), and
/// for a port access (`io`: port and size) the I/O breakpoints it matched, when CR4.DE
/// makes R/W 10 an I/O breakpoint and one of the matched ones is enabled. 0 for none.
pub fn pending_after_skip(s: &DebugState, io: Option<(u16, u8)>) -> u64 {
    let mut bits = 0;
    if let Some((port, size)) = io {
        if s.cr4 & CR4_DE != 0 {
            let (first, end) = (u64::from(port), u64::from(port) + u64::from(size));
            let mut hits = 0;
            let mut enabled = false;
            for n in 0..4 {
                let rw = (s.dr7 >> (16 + 4 * n)) & 3;
                let len = match (s.dr7 >> (18 + 4 * n)) & 3 {
                    0 => 1,
                    1 => 2,
                    2 => 8,
                    _ => 4,
                };
                let start = s.dr[n] & !(len - 1) & 0xffff;
                if rw == 2 && first < start + len && start < end {
                    hits |= 1 << n;
                    enabled |= (s.dr7 >> (2 * n)) & 3 != 0;
                }
            }
            if enabled {
                bits |= (hits & B) | ENABLED_BP;
            }
        }
    }
    if s.rflags & TF != 0 && s.debugctl & BTF == 0 {
        bits |= BS;
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_bp(n: u32, port: u64, len: u64, enabled: bool) -> DebugState {
        let mut s = DebugState {
            cr4: CR4_DE,
            ..DebugState::default()
        };
        s.dr[n as usize] = port;
        s.dr7 = (2 << (16 + 4 * n)) | (len << (18 + 4 * n)) | (u64::from(enabled) << (2 * n));
        s
    }

    #[test]
    fn io_breakpoints_match_the_ports_in_their_range() {
        // 0x80-0x81 (length field 1: two bytes, the address masked to it).
        let s = io_bp(2, 0x81, 1, true);
        assert_eq!(pending_after_skip(&s, Some((0x80, 1))), 0b100 | ENABLED_BP);
        assert_eq!(pending_after_skip(&s, Some((0x7f, 2))), 0b100 | ENABLED_BP);
        assert_eq!(pending_after_skip(&s, Some((0x82, 1))), 0);
        assert_eq!(pending_after_skip(&s, Some((0x7c, 4))), 0);
        // Not enabled, or without CR4.DE: nothing.
        assert_eq!(
            pending_after_skip(&io_bp(2, 0x80, 0, false), Some((0x80, 1))),
            0
        );
        let mut s = io_bp(2, 0x80, 0, true);
        s.cr4 = 0;
        assert_eq!(pending_after_skip(&s, Some((0x80, 1))), 0);
        // A matching breakpoint that is not enabled is reported with an enabled one.
        let mut s = io_bp(0, 0x80, 0, true);
        s.dr[3] = 0x80;
        s.dr7 |= 2 << 28;
        assert_eq!(pending_after_skip(&s, Some((0x80, 1))), 0b1001 | ENABLED_BP);
        // Data breakpoints (R/W 01 and 11) are not I/O breakpoints.
        let mut s = io_bp(1, 0x80, 0, true);
        s.dr7 ^= 3 << 20;
        assert_eq!(pending_after_skip(&s, Some((0x80, 1))), 0);
    }

    #[test]
    fn single_step_after_a_skipped_instruction_unless_btf() {
        let mut s = DebugState {
            rflags: TF | 2,
            ..DebugState::default()
        };
        assert_eq!(pending_after_skip(&s, None), BS);
        s.debugctl = BTF;
        assert_eq!(pending_after_skip(&s, None), 0);
        s.rflags = 2;
        s.debugctl = 0;
        assert_eq!(pending_after_skip(&s, None), 0);
        // Both causes together.
        let mut s = io_bp(0, 0x80, 0, true);
        s.rflags = TF;
        assert_eq!(pending_after_skip(&s, Some((0x80, 1))), 1 | ENABLED_BP | BS);
    }

    #[test]
    fn a_completion_without_single_step_raises_only_its_io_breakpoints() {
        let mut s = io_bp(1, 0x60, 0, true);
        s.rflags = TF | 2;
        let hlt = Completing::default();
        assert!(!hlt.may_trap(s.rflags, s.dr7));
        assert_eq!(hlt.pending(&s), 0);
        let insn = Completing::INSTRUCTION;
        assert!(insn.may_trap(s.rflags, s.dr7));
        assert_eq!(insn.pending(&s), BS);
        assert!(!insn.may_trap(2, s.dr7));
        let out = Completing {
            step: false,
            io: Some((0x60, 1)),
        };
        assert!(out.may_trap(2, s.dr7));
        assert_eq!(out.pending(&s), 0b10 | ENABLED_BP);
        // No breakpoint enabled in DR7: nothing to check.
        assert!(!out.may_trap(2, s.dr7 & !0xff));
        let out = Completing { step: true, ..out };
        assert_eq!(out.pending(&s), 0b10 | ENABLED_BP | BS);
    }
}

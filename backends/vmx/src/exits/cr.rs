//! Control-register accesses (exit reason 28): MOV to/from CR0, CR3, CR4, CR8, CLTS and
//! LMSW, decoded from the exit qualification (SDM 3C table 28-3).
//!
//! MOV to CR0/CR4 exits when it would change a bit owned by the host (guest/host mask),
//! MOV to/from CR3 and CR8 with the corresponding exiting controls; reads of CR0 and CR4
//! never exit (they come from the read shadows).

use super::{read, reason, BackendExit, DecodeError, VmxExit};
use crate::vmcs::{fields, VmcsAccess};
use opsvisor_core::ops::Gpr;

/// A control register that can cause an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlRegister {
    /// CR0.
    Cr0,
    /// CR3.
    Cr3,
    /// CR4.
    Cr4,
    /// CR8 (the task-priority register).
    Cr8,
}

/// A decoded control-register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccess {
    /// MOV to CRn from a general register.
    MovTo {
        /// The control register.
        cr: ControlRegister,
        /// The source register.
        gpr: Gpr,
    },
    /// MOV from CR3 or CR8 to a general register.
    MovFrom {
        /// The control register.
        cr: ControlRegister,
        /// The destination register.
        gpr: Gpr,
    },
    /// CLTS.
    Clts,
    /// LMSW.
    Lmsw {
        /// The 16-bit source operand (only bits 3:0, PE/MP/EM/TS, take effect).
        source: u16,
        /// The linear address of a memory operand (`None` for a register operand).
        memory_operand: Option<u64>,
    },
}

impl CrAccess {
    /// Decode a raw qualification, except the LMSW memory operand's address (which
    /// lives in another field: the value here is `Some(0)` for a memory operand).
    /// `None` for encodings the SDM does not define.
    pub fn decode_qualification(qualification: u64) -> Option<CrAccess> {
        // Bits 7, 15:12 and 63:32 are reserved (0).
        if qualification & !0xffff_0f7f != 0 {
            return None;
        }
        let cr = match qualification & 0xf {
            0 => ControlRegister::Cr0,
            3 => ControlRegister::Cr3,
            4 => ControlRegister::Cr4,
            8 => ControlRegister::Cr8,
            _ => return None,
        };
        // The index is 4 bits: always a register.
        let gpr = Gpr::from_index(((qualification >> 8) & 0xf) as usize)?;
        let lmsw_memory = qualification & (1 << 6) != 0;
        match (qualification >> 4) & 3 {
            0 => Some(CrAccess::MovTo { cr, gpr }),
            1 if matches!(cr, ControlRegister::Cr3 | ControlRegister::Cr8) => {
                Some(CrAccess::MovFrom { cr, gpr })
            }
            2 if cr == ControlRegister::Cr0 => Some(CrAccess::Clts),
            3 if cr == ControlRegister::Cr0 => Some(CrAccess::Lmsw {
                source: (qualification >> 16) as u16,
                memory_operand: lmsw_memory.then_some(0),
            }),
            _ => None,
        }
    }
}

/// Decode a control-register-access exit.
pub(crate) fn decode<V: VmcsAccess>(vmcs: &V) -> Result<VmxExit, DecodeError> {
    let qualification = read(vmcs, fields::EXIT_QUALIFICATION)?;
    let access =
        CrAccess::decode_qualification(qualification).ok_or(DecodeError::InvalidQualification {
            reason: reason::CONTROL_REGISTER_ACCESS,
            qualification,
        })?;
    let access = match access {
        CrAccess::Lmsw {
            source,
            memory_operand: Some(_),
        } => CrAccess::Lmsw {
            source,
            memory_operand: Some(read(vmcs, fields::GUEST_LINEAR_ADDRESS)?),
        },
        other => other,
    };
    Ok(VmxExit::Backend(BackendExit::ControlRegister(access)))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{BackendExit, DecodeError, VmxExit};
    use super::*;

    fn cr(q: u64) -> Result<VmxExit, DecodeError> {
        decode(28, &[(fields::EXIT_QUALIFICATION, q)])
    }

    fn access(a: CrAccess) -> Result<VmxExit, DecodeError> {
        Ok(VmxExit::Backend(BackendExit::ControlRegister(a)))
    }

    #[test]
    fn mov_to_control_registers() {
        // MOV CR0, RAX.
        assert_eq!(
            cr(0x000),
            access(CrAccess::MovTo {
                cr: ControlRegister::Cr0,
                gpr: Gpr::Rax
            })
        );
        // MOV CR3, R15.
        assert_eq!(
            cr(0xf03),
            access(CrAccess::MovTo {
                cr: ControlRegister::Cr3,
                gpr: Gpr::R15
            })
        );
        // MOV CR4, RBX.
        assert_eq!(
            cr(0x304),
            access(CrAccess::MovTo {
                cr: ControlRegister::Cr4,
                gpr: Gpr::Rbx
            })
        );
        // MOV CR8, RSP.
        assert_eq!(
            cr(0x408),
            access(CrAccess::MovTo {
                cr: ControlRegister::Cr8,
                gpr: Gpr::Rsp
            })
        );
    }

    #[test]
    fn mov_from_cr3_and_cr8() {
        assert_eq!(
            cr(0x113),
            access(CrAccess::MovFrom {
                cr: ControlRegister::Cr3,
                gpr: Gpr::Rcx
            })
        );
        assert_eq!(
            cr(0x918),
            access(CrAccess::MovFrom {
                cr: ControlRegister::Cr8,
                gpr: Gpr::R9
            })
        );
    }

    #[test]
    fn clts_and_lmsw() {
        assert_eq!(cr(0x20), access(CrAccess::Clts));
        // LMSW AX with AX = 0x000b.
        assert_eq!(
            cr(0x000b_0030),
            access(CrAccess::Lmsw {
                source: 0xb,
                memory_operand: None
            })
        );
        // LMSW [mem] with the word 0x0001 at linear 0x8000.
        assert_eq!(
            decode(
                28,
                &[
                    (fields::EXIT_QUALIFICATION, 0x0001_0070),
                    (fields::GUEST_LINEAR_ADDRESS, 0x8000),
                ]
            ),
            access(CrAccess::Lmsw {
                source: 1,
                memory_operand: Some(0x8000)
            })
        );
    }

    #[test]
    fn undefined_encodings_are_errors() {
        for q in [
            0x002u64, // CR2
            0x005,    // CR5
            0x010,    // MOV from CR0 never exits
            0x014,    // MOV from CR4 never exits
            0x023,    // CLTS on CR3
            0x038,    // LMSW on CR8
            0x080,    // reserved bit 7
            0x1000,   // reserved bit 12
            1 << 32,  // reserved high half
        ] {
            assert_eq!(
                cr(q),
                Err(DecodeError::InvalidQualification {
                    reason: 28,
                    qualification: q
                }),
                "{q:#x}"
            );
        }
    }
}

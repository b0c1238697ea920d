//! Control-register accesses (exit codes 0x00-0x0F reads, 0x10-0x1F writes, 0x65 the
//! selective CR0 write; APM 2 15.8 and, for EXITINFO1, 15.33 "Decode Assists").
//!
//! With decode assists, EXITINFO1 bit 63 says the access is a MOV and bits 3:0 name its
//! general register; otherwise (LMSW, CLTS, or a processor without decode assists) the
//! backend decodes the instruction. This backend's intercepts leave CR accesses to the
//! guest (nested paging needs none of them); the decoding serves a vCPU that turns them
//! on.

use super::{code, BackendExit, SvmExit};
use crate::vmcb::{fields, VmcbAccess};
use opsvisor_core::ops::Gpr;

/// A control register the backend can emulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlRegister {
    /// CR0.
    Cr0,
    /// CR3.
    Cr3,
    /// CR4.
    Cr4,
    /// CR8 (the task priority).
    Cr8,
}

impl ControlRegister {
    /// The register with number `n`, if emulated.
    pub fn from_number(n: u64) -> Option<ControlRegister> {
        Some(match n {
            0 => ControlRegister::Cr0,
            3 => ControlRegister::Cr3,
            4 => ControlRegister::Cr4,
            8 => ControlRegister::Cr8,
            _ => return None,
        })
    }
}

/// Where the value of the access comes from or goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrOperand {
    /// MOV to or from this general register (decode assists).
    Gpr(Gpr),
    /// Unknown: decode the instruction (no decode assists, or LMSW/CLTS).
    Decode,
}

/// A control-register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrAccess {
    /// The register.
    pub cr: ControlRegister,
    /// A write (MOV to CRn, LMSW, CLTS) or a read (MOV from CRn).
    pub write: bool,
    /// The operand.
    pub operand: CrOperand,
}

/// Decode a CR exit (`c` in 0x00..=0x1F or 0x65).
pub(crate) fn decode<V: VmcbAccess>(vmcb: &V, c: u64, decode_assists: bool) -> SvmExit {
    let (number, write) = match c {
        code::CR0_SEL_WRITE => (0, true),
        code::CR0_READ..=code::CR15_READ => (c - code::CR0_READ, false),
        _ => (c - code::CR0_WRITE, true),
    };
    let Some(cr) = ControlRegister::from_number(number) else {
        return SvmExit::Backend(BackendExit::Unexpected { code: c });
    };
    let info1 = vmcb.read(fields::EXITINFO1);
    let operand = if decode_assists && info1 & (1 << 63) != 0 {
        Gpr::from_index((info1 & 0xf) as usize).map_or(CrOperand::Decode, CrOperand::Gpr)
    } else {
        CrOperand::Decode
    };
    SvmExit::Backend(BackendExit::ControlRegister(CrAccess {
        cr,
        write,
        operand,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{scripted, ASSISTED, PLAIN};
    use super::*;

    fn access(decoder: super::super::ExitDecoder, c: u64, info1: u64) -> SvmExit {
        decoder
            .decode(&scripted(c, &[(fields::EXITINFO1, info1)]), &[0; 16])
            .unwrap()
    }

    #[test]
    fn mov_with_decode_assists_names_the_register() {
        assert_eq!(
            access(ASSISTED, code::CR0_WRITE + 3, (1 << 63) | 9),
            SvmExit::Backend(BackendExit::ControlRegister(CrAccess {
                cr: ControlRegister::Cr3,
                write: true,
                operand: CrOperand::Gpr(Gpr::R9)
            }))
        );
        assert_eq!(
            access(ASSISTED, code::CR0_READ + 8, 1 << 63),
            SvmExit::Backend(BackendExit::ControlRegister(CrAccess {
                cr: ControlRegister::Cr8,
                write: false,
                operand: CrOperand::Gpr(Gpr::Rax)
            }))
        );
    }

    #[test]
    fn lmsw_clts_and_plain_processors_decode() {
        // Selective CR0 write without the MOV bit: LMSW or CLTS.
        assert_eq!(
            access(ASSISTED, code::CR0_SEL_WRITE, 0),
            SvmExit::Backend(BackendExit::ControlRegister(CrAccess {
                cr: ControlRegister::Cr0,
                write: true,
                operand: CrOperand::Decode
            }))
        );
        // Without decode assists EXITINFO1 means nothing.
        assert_eq!(
            access(PLAIN, code::CR0_WRITE + 4, (1 << 63) | 2),
            SvmExit::Backend(BackendExit::ControlRegister(CrAccess {
                cr: ControlRegister::Cr4,
                write: true,
                operand: CrOperand::Decode
            }))
        );
    }

    #[test]
    fn other_control_registers_are_unexpected() {
        for c in [code::CR0_READ + 2, code::CR0_WRITE + 15] {
            assert_eq!(
                access(ASSISTED, c, 1 << 63),
                SvmExit::Backend(BackendExit::Unexpected { code: c })
            );
        }
    }
}

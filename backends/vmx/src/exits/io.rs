//! I/O instructions (exit reason 30): the exit qualification (SDM 3C table 28-5) gives
//! the port, size, direction and string/REP form; for INS/OUTS the VM-exit instruction
//! information gives the address size and segment (table 28-9 of the 2023 SDM) and the
//! guest-linear address field the memory operand.
//!
//! IN/OUT become core's [`Exit::Io`] directly. Core expects one element per exit, so
//! INS/OUTS become a [`StringIo`] that the backend walks element by element.

use super::{read, reason, BackendExit, DecodeError, Gprs, VmxExit};
use crate::vmcs::{fields, VmcsAccess};
use opsvisor_core::exit::Direction;
use opsvisor_core::ops::{Gpr, SegReg};
use opsvisor_core::Exit;

/// The exit qualification of an I/O exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQualification {
    /// The port.
    pub port: u16,
    /// Access size in bytes: 1, 2 or 4.
    pub size: u8,
    /// IN/INS read, OUT/OUTS write.
    pub direction: Direction,
    /// INS or OUTS.
    pub string: bool,
    /// With a REP prefix (string forms only).
    pub rep: bool,
    /// The port came from an immediate operand rather than DX.
    pub immediate: bool,
}

impl IoQualification {
    /// Decode a raw qualification; `None` for a size encoding or reserved bits the SDM
    /// does not define.
    pub fn decode(qualification: u64) -> Option<IoQualification> {
        // Bits 15:7 and 63:32 are reserved (0).
        if qualification & !0xffff_007f != 0 {
            return None;
        }
        let size = match qualification & 7 {
            0 => 1,
            1 => 2,
            3 => 4,
            _ => return None,
        };
        let string = qualification & (1 << 4) != 0;
        Some(IoQualification {
            port: (qualification >> 16) as u16,
            size,
            direction: if qualification & (1 << 3) != 0 {
                Direction::Read
            } else {
                Direction::Write
            },
            string,
            rep: string && qualification & (1 << 5) != 0,
            immediate: qualification & (1 << 6) != 0,
        })
    }
}

use opsvisor_core::emulate::string_io::StringInsn;
pub use opsvisor_core::emulate::string_io::{AddressSize, StringIoOperand};

/// An INS or OUTS exit, for the backend to complete one element at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringIo {
    /// The port.
    pub port: u16,
    /// Element size in bytes: 1, 2 or 4.
    pub size: u8,
    /// INS reads the port into memory, OUTS writes memory to the port.
    pub direction: Direction,
    /// With a REP prefix: the count register says how many elements remain.
    pub rep: bool,
    /// Linear address of the memory operand of the first element.
    pub linear_address: u64,
    /// Address size and segment, when the processor reports them (IA32_VMX_BASIC bit
    /// 54); otherwise the backend decodes the instruction.
    pub operand: Option<StringIoOperand>,
}

impl StringIo {
    /// The port side of the instruction, as core's string I/O takes it.
    pub fn insn(&self) -> StringInsn {
        StringInsn {
            port: self.port,
            size: self.size,
            direction: self.direction,
            rep: self.rep,
        }
    }

    /// The index register that walks memory: RDI for INS, RSI for OUTS.
    pub fn index_register(&self) -> Gpr {
        self.insn().index_register()
    }

    /// How many elements remain, given RCX: 1 without REP, else the count register at
    /// the operand's address size (which may be 0: nothing to do). `None` when the
    /// address size is unknown.
    pub fn remaining(&self, rcx: u64) -> Option<u64> {
        if !self.rep {
            return Some(1);
        }
        self.operand.map(|op| rcx & op.address_size.mask())
    }

    /// The signed step of the index register per element (RFLAGS.DF = `df`).
    pub fn stride(&self, df: bool) -> i64 {
        let size = i64::from(self.size);
        if df {
            -size
        } else {
            size
        }
    }
}

/// Decode an I/O-instruction exit.
pub(crate) fn decode<V: VmcsAccess>(
    vmcs: &V,
    gprs: &Gprs,
    ins_outs_info: bool,
) -> Result<VmxExit, DecodeError> {
    let qualification = read(vmcs, fields::EXIT_QUALIFICATION)?;
    let q = IoQualification::decode(qualification).ok_or(DecodeError::InvalidQualification {
        reason: reason::IO_INSTRUCTION,
        qualification,
    })?;
    if !q.string {
        let data = match q.direction {
            Direction::Read => 0,
            // The size is 1, 2 or 4: the mask keeps the low `size` bytes of EAX.
            Direction::Write => {
                (gprs[Gpr::Rax as usize] & (u64::MAX >> (64 - 8 * u32::from(q.size)))) as u32
            }
        };
        return Ok(VmxExit::Core(Exit::Io {
            port: q.port,
            size: q.size,
            direction: q.direction,
            data,
        }));
    }
    let linear_address = read(vmcs, fields::GUEST_LINEAR_ADDRESS)?;
    let operand = if ins_outs_info {
        let info = read(vmcs, fields::VM_EXIT_INSTRUCTION_INFO)? as u32;
        Some(decode_operand(info, q.direction)?)
    } else {
        None
    };
    Ok(VmxExit::Backend(BackendExit::StringIo(StringIo {
        port: q.port,
        size: q.size,
        direction: q.direction,
        rep: q.rep,
        linear_address,
        operand,
    })))
}

/// Bits 9:7 address size, bits 17:15 segment (OUTS only); the other bits are undefined.
fn decode_operand(info: u32, direction: Direction) -> Result<StringIoOperand, DecodeError> {
    let invalid = DecodeError::InvalidInstructionInfo {
        reason: reason::IO_INSTRUCTION,
        info,
    };
    let address_size = match (info >> 7) & 7 {
        0 => AddressSize::Bits16,
        1 => AddressSize::Bits32,
        2 => AddressSize::Bits64,
        _ => return Err(invalid),
    };
    let segment = match direction {
        Direction::Read => SegReg::Es,
        Direction::Write => match (info >> 15) & 7 {
            0 => SegReg::Es,
            1 => SegReg::Cs,
            2 => SegReg::Ss,
            3 => SegReg::Ds,
            4 => SegReg::Fs,
            5 => SegReg::Gs,
            _ => return Err(invalid),
        },
    };
    Ok(StringIoOperand {
        address_size,
        segment,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{decode, decode_with, scripted};
    use super::super::{BackendExit, DecodeError, ExitDecoder, VmxExit};
    use super::*;

    #[test]
    fn qualification_fields() {
        // OUT DX, AL to 0x3f8.
        let q = IoQualification::decode(0x03f8_0000).unwrap();
        assert_eq!(
            q,
            IoQualification {
                port: 0x3f8,
                size: 1,
                direction: Direction::Write,
                string: false,
                rep: false,
                immediate: false
            }
        );
        // IN EAX, 0x60 (immediate).
        let q = IoQualification::decode(0x0060_004b).unwrap();
        assert_eq!((q.port, q.size, q.direction), (0x60, 4, Direction::Read));
        assert!(q.immediate && !q.string);
        // REP INSW from 0x1f0.
        let q = IoQualification::decode(0x01f0_0039).unwrap();
        assert_eq!((q.size, q.direction), (2, Direction::Read));
        assert!(q.string && q.rep);
        // Size encoding 2 and reserved bits are undefined.
        assert_eq!(IoQualification::decode(0x0000_0002), None);
        assert_eq!(IoQualification::decode(0x0000_0080), None);
        assert_eq!(IoQualification::decode(1 << 40), None);
    }

    #[test]
    fn out_carries_the_low_bytes_of_eax() {
        let mut gprs = [0; 16];
        gprs[Gpr::Rax as usize] = 0xffff_ffff_1234_5678;
        let out = |q: u64| decode_with(30, &[(fields::EXIT_QUALIFICATION, q)], &gprs);
        assert_eq!(
            out(0x00e9_0000),
            Ok(VmxExit::Core(Exit::Io {
                port: 0xe9,
                size: 1,
                direction: Direction::Write,
                data: 0x78
            }))
        );
        assert_eq!(
            out(0x0cfc_0001),
            Ok(VmxExit::Core(Exit::Io {
                port: 0xcfc,
                size: 2,
                direction: Direction::Write,
                data: 0x5678
            }))
        );
        assert_eq!(
            out(0x0cf8_0003),
            Ok(VmxExit::Core(Exit::Io {
                port: 0xcf8,
                size: 4,
                direction: Direction::Write,
                data: 0x1234_5678
            }))
        );
    }

    #[test]
    fn in_has_no_data() {
        let mut gprs = [0; 16];
        gprs[Gpr::Rax as usize] = 0x1234;
        assert_eq!(
            decode_with(30, &[(fields::EXIT_QUALIFICATION, 0x0064_0048)], &gprs),
            Ok(VmxExit::Core(Exit::Io {
                port: 0x64,
                size: 1,
                direction: Direction::Read,
                data: 0
            }))
        );
    }

    #[test]
    fn rep_outsb_with_segment_override() {
        // REP OUTSB, DX = 0x3f8, 32-bit address size (info bits 9:7 = 1), FS (17:15 = 4).
        let exit = decode(
            30,
            &[
                (fields::EXIT_QUALIFICATION, 0x03f8_0030),
                (fields::GUEST_LINEAR_ADDRESS, 0x0010_2000),
                (fields::VM_EXIT_INSTRUCTION_INFO, (1 << 7) | (4 << 15)),
            ],
        )
        .unwrap();
        let VmxExit::Backend(BackendExit::StringIo(s)) = exit else {
            panic!("not string I/O: {exit:?}");
        };
        assert_eq!(
            s,
            StringIo {
                port: 0x3f8,
                size: 1,
                direction: Direction::Write,
                rep: true,
                linear_address: 0x0010_2000,
                operand: Some(StringIoOperand {
                    address_size: AddressSize::Bits32,
                    segment: SegReg::Fs
                })
            }
        );
        assert_eq!(s.index_register(), Gpr::Rsi);
        assert_eq!(s.remaining(0xffff_ffff_0000_0010), Some(0x10));
        assert_eq!(s.stride(false), 1);
        assert_eq!(s.stride(true), -1);
    }

    #[test]
    fn insd_uses_es_whatever_the_segment_bits_say() {
        // INSD (no REP), 16-bit addressing, segment bits garbage (undefined for INS).
        let exit = decode(
            30,
            &[
                (fields::EXIT_QUALIFICATION, 0x0060_001b),
                (fields::GUEST_LINEAR_ADDRESS, 0x7c00),
                (fields::VM_EXIT_INSTRUCTION_INFO, 7 << 15),
            ],
        )
        .unwrap();
        let VmxExit::Backend(BackendExit::StringIo(s)) = exit else {
            panic!("not string I/O: {exit:?}");
        };
        assert_eq!(s.direction, Direction::Read);
        assert_eq!(s.size, 4);
        assert_eq!(
            s.operand,
            Some(StringIoOperand {
                address_size: AddressSize::Bits16,
                segment: SegReg::Es
            })
        );
        assert_eq!(s.index_register(), Gpr::Rdi);
        assert_eq!(s.remaining(0x5), Some(1), "no REP: one element");
        assert_eq!(s.stride(true), -4);
    }

    #[test]
    fn rep_count_is_masked_by_address_size() {
        let s = StringIo {
            port: 0,
            size: 2,
            direction: Direction::Read,
            rep: true,
            linear_address: 0,
            operand: Some(StringIoOperand {
                address_size: AddressSize::Bits16,
                segment: SegReg::Es,
            }),
        };
        assert_eq!(s.remaining(0x1_0000), Some(0));
        let s64 = StringIo {
            operand: Some(StringIoOperand {
                address_size: AddressSize::Bits64,
                segment: SegReg::Es,
            }),
            ..s
        };
        assert_eq!(s64.remaining(0x1_0000_0000), Some(0x1_0000_0000));
        let unknown = StringIo { operand: None, ..s };
        assert_eq!(unknown.remaining(3), None);
    }

    #[test]
    fn without_instruction_information_the_operand_is_unknown() {
        let decoder = ExitDecoder {
            ins_outs_info: false,
        };
        let vmcs = scripted(
            30,
            &[
                (fields::EXIT_QUALIFICATION, 0x03f8_0010),
                (fields::VM_EXIT_INSTRUCTION_INFO, u64::from(u32::MAX)),
            ],
        );
        let exit = decoder.decode(&vmcs, &[0; 16]).unwrap();
        let VmxExit::Backend(BackendExit::StringIo(s)) = exit else {
            panic!("not string I/O: {exit:?}");
        };
        assert_eq!(s.operand, None);
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(
            decode(30, &[(fields::EXIT_QUALIFICATION, 0x03f8_0006)]),
            Err(DecodeError::InvalidQualification {
                reason: 30,
                qualification: 0x03f8_0006
            })
        );
        // Address size 3 is undefined.
        assert_eq!(
            decode(
                30,
                &[
                    (fields::EXIT_QUALIFICATION, 0x03f8_0010),
                    (fields::VM_EXIT_INSTRUCTION_INFO, 3 << 7),
                ]
            ),
            Err(DecodeError::InvalidInstructionInfo {
                reason: 30,
                info: 3 << 7
            })
        );
        // OUTS with segment 6.
        assert_eq!(
            decode(
                30,
                &[
                    (fields::EXIT_QUALIFICATION, 0x03f8_0010),
                    (fields::VM_EXIT_INSTRUCTION_INFO, 6 << 15),
                ]
            ),
            Err(DecodeError::InvalidInstructionInfo {
                reason: 30,
                info: 6 << 15
            })
        );
    }
}

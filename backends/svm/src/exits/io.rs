//! Port I/O (exit code 0x7B; APM 2 15.10.2): EXITINFO1 gives the port, the size, the
//! direction and the string and REP forms with their address size (and, with decode
//! assists, the segment of OUTS); EXITINFO2 the address of the next instruction,
//! whatever NRIP save says.
//!
//! IN/OUT become core's [`Exit::Io`] directly. Core expects one element per exit, so
//! INS/OUTS become a [`StringIo`] that the backend walks element by element with core's
//! [`opsvisor_core::emulate::string_io`]. QEMU 7.2's TCG reports INS/OUTS without their
//! address size (bits 9:7 all clear): the backend then decodes the instruction, as for
//! the segment without decode assists.

use super::{code, BackendExit, DecodeError, Gprs, SvmExit};
use crate::vmcb::{fields, VmcbAccess};
use opsvisor_core::emulate::string_io::{AddressSize, StringInsn, StringIoOperand};
use opsvisor_core::exit::Direction;
use opsvisor_core::ops::{Gpr, SegReg};
use opsvisor_core::Exit;

/// EXITINFO1 of an I/O exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoInfo {
    /// The port.
    pub port: u16,
    /// Access size in bytes: 1, 2 or 4.
    pub size: u8,
    /// IN/INS read, OUT/OUTS write.
    pub direction: Direction,
    /// INS or OUTS.
    pub string: bool,
    /// With a REP prefix.
    pub rep: bool,
    /// The address size (bits 9:7), when given.
    pub address_size: Option<AddressSize>,
    /// The effective segment (bits 12:10): meaningful with decode assists only.
    pub segment_bits: u8,
}

impl IoInfo {
    /// Decode a raw EXITINFO1; `None` when the size bits do not name exactly one size,
    /// or the address-size bits name more than one.
    pub fn decode(info1: u64) -> Option<IoInfo> {
        let size = match (info1 >> 4) & 7 {
            1 => 1,
            2 => 2,
            4 => 4,
            _ => return None,
        };
        let address_size = match (info1 >> 7) & 7 {
            0 => None,
            1 => Some(AddressSize::Bits16),
            2 => Some(AddressSize::Bits32),
            4 => Some(AddressSize::Bits64),
            _ => return None,
        };
        let string = info1 & (1 << 2) != 0;
        Some(IoInfo {
            port: (info1 >> 16) as u16,
            size,
            direction: if info1 & 1 != 0 {
                Direction::Read
            } else {
                Direction::Write
            },
            string,
            rep: string && info1 & (1 << 3) != 0,
            address_size,
            segment_bits: ((info1 >> 10) & 7) as u8,
        })
    }
}

/// An INS or OUTS exit, for the backend to complete one element at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringIo {
    /// The port side.
    pub insn: StringInsn,
    /// The address size of RSI/RDI and RCX, when reported.
    pub address_size: Option<AddressSize>,
    /// The segment of the memory operand: ES for INS; for OUTS the one decode assists
    /// report, or `None` without them (the backend decodes the instruction).
    pub segment: Option<SegReg>,
}

impl StringIo {
    /// The operand, when both its address size and its segment are known.
    pub fn operand(&self) -> Option<StringIoOperand> {
        Some(StringIoOperand {
            address_size: self.address_size?,
            segment: self.segment?,
        })
    }
}

/// Decode an I/O exit.
pub(crate) fn decode<V: VmcbAccess>(
    vmcb: &V,
    gprs: &Gprs,
    decode_assists: bool,
) -> Result<SvmExit, DecodeError> {
    let info1 = vmcb.read(fields::EXITINFO1);
    let invalid = DecodeError::InvalidExitInfo {
        code: code::IOIO,
        info1,
    };
    let io = IoInfo::decode(info1).ok_or(invalid)?;
    if !io.string {
        let data = match io.direction {
            Direction::Read => 0,
            // The size is 1, 2 or 4: the mask keeps the low `size` bytes of EAX.
            Direction::Write => {
                (gprs[Gpr::Rax as usize] & (u64::MAX >> (64 - 8 * u32::from(io.size)))) as u32
            }
        };
        return Ok(SvmExit::Core(Exit::Io {
            port: io.port,
            size: io.size,
            direction: io.direction,
            data,
        }));
    }
    let address_size = io.address_size;
    let segment = match io.direction {
        // INS always stores through ES.
        Direction::Read => Some(SegReg::Es),
        Direction::Write if decode_assists => Some(match io.segment_bits {
            0 => SegReg::Es,
            1 => SegReg::Cs,
            2 => SegReg::Ss,
            3 => SegReg::Ds,
            4 => SegReg::Fs,
            5 => SegReg::Gs,
            _ => return Err(invalid),
        }),
        Direction::Write => None,
    };
    Ok(SvmExit::Backend(BackendExit::StringIo(StringIo {
        insn: StringInsn {
            port: io.port,
            size: io.size,
            direction: io.direction,
            rep: io.rep,
        },
        address_size,
        segment,
    })))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{decode_with, scripted, ASSISTED, PLAIN};
    use super::*;

    /// EXITINFO1: IN bit 0, string bit 2, REP bit 3, size bits 6:4, address size bits
    /// 9:7, segment bits 12:10, port 31:16.
    fn info(port: u16, size: u8, input: bool, string: bool, rep: bool, a: u8, seg: u8) -> u64 {
        u64::from(input)
            | (u64::from(string) << 2)
            | (u64::from(rep) << 3)
            | (u64::from(size) << 4)
            | (u64::from(a) << 7)
            | (u64::from(seg) << 10)
            | (u64::from(port) << 16)
    }

    #[test]
    fn out_carries_the_low_bytes_of_eax() {
        let mut gprs = [0; 16];
        gprs[Gpr::Rax as usize] = 0xffff_ffff_1234_5678;
        let out = |size: u8, port: u16| {
            decode_with(
                code::IOIO,
                &[(
                    fields::EXITINFO1,
                    info(port, size, false, false, false, 2, 0),
                )],
                &gprs,
            )
        };
        let io = |port, size, data| {
            Ok(SvmExit::Core(Exit::Io {
                port,
                size,
                direction: Direction::Write,
                data,
            }))
        };
        assert_eq!(out(1, 0xe9), io(0xe9, 1, 0x78));
        assert_eq!(out(2, 0xcfc), io(0xcfc, 2, 0x5678));
        assert_eq!(out(4, 0xcf8), io(0xcf8, 4, 0x1234_5678));
    }

    #[test]
    fn in_has_no_data() {
        let mut gprs = [0; 16];
        gprs[Gpr::Rax as usize] = 0x1234;
        assert_eq!(
            decode_with(
                code::IOIO,
                &[(fields::EXITINFO1, info(0x64, 1, true, false, false, 0, 0))],
                &gprs
            ),
            Ok(SvmExit::Core(Exit::Io {
                port: 0x64,
                size: 1,
                direction: Direction::Read,
                data: 0
            }))
        );
    }

    #[test]
    fn rep_outsb_with_and_without_decode_assists() {
        // REP OUTSB to 0x3f8, 32-bit addressing, FS (segment 4).
        let vmcb = scripted(
            code::IOIO,
            &[(fields::EXITINFO1, info(0x3f8, 1, false, true, true, 2, 4))],
        );
        let want = StringIo {
            insn: StringInsn {
                port: 0x3f8,
                size: 1,
                direction: Direction::Write,
                rep: true,
            },
            address_size: Some(AddressSize::Bits32),
            segment: Some(SegReg::Fs),
        };
        assert_eq!(
            ASSISTED.decode(&vmcb, &[0; 16]),
            Ok(SvmExit::Backend(BackendExit::StringIo(want)))
        );
        assert_eq!(
            want.operand(),
            Some(StringIoOperand {
                address_size: AddressSize::Bits32,
                segment: SegReg::Fs
            })
        );
        // Without decode assists the segment bits mean nothing: decode the instruction.
        let plain = StringIo {
            segment: None,
            ..want
        };
        assert_eq!(
            PLAIN.decode(&vmcb, &[0; 16]),
            Ok(SvmExit::Backend(BackendExit::StringIo(plain)))
        );
        assert_eq!(plain.operand(), None);
    }

    #[test]
    fn insd_uses_es() {
        let vmcb = scripted(
            code::IOIO,
            &[(fields::EXITINFO1, info(0x60, 4, true, true, false, 1, 7))],
        );
        let Ok(SvmExit::Backend(BackendExit::StringIo(s))) = PLAIN.decode(&vmcb, &[0; 16]) else {
            panic!("not string I/O");
        };
        assert_eq!(s.insn.direction, Direction::Read);
        assert!(!s.insn.rep);
        assert_eq!(
            s.operand(),
            Some(StringIoOperand {
                address_size: AddressSize::Bits16,
                segment: SegReg::Es
            })
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            info(0x3f8, 3, false, false, false, 2, 0), // two sizes
            info(0x3f8, 0, false, false, false, 2, 0), // no size
            info(0x3f8, 1, false, true, false, 6, 0),  // two address sizes on OUTS
        ] {
            assert_eq!(
                decode_with(code::IOIO, &[(fields::EXITINFO1, bad)], &[0; 16]),
                Err(DecodeError::InvalidExitInfo {
                    code: code::IOIO,
                    info1: bad
                }),
                "{bad:#x}"
            );
        }
        // OUTS with segment 6, under decode assists.
        let bad = info(0x3f8, 1, false, true, false, 2, 6);
        assert!(ASSISTED
            .decode(&scripted(code::IOIO, &[(fields::EXITINFO1, bad)]), &[0; 16])
            .is_err());
    }
}

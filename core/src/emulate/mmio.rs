//! The instruction behind an MMIO access: an EPT violation or a nested page fault on an
//! address that is not RAM gives the guest-physical address and the direction but not
//! the operand, so the backend decodes the instruction (iced-x86) to find the size, the
//! value written or the register a read goes to, and the instruction's length to retire
//! it.
//!
//! Only the plain moves compilers emit for device registers are handled: `MOV` between
//! a register and memory, `MOV` of an immediate to memory, and `MOVZX`/`MOVSX` loads.
//! Anything else is reported as not emulated.

use crate::exit::Direction;
use crate::ops::Gpr;
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// Where a read's value goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDest {
    /// The register.
    pub reg: Gpr,
    /// Its width in bytes (1, 2, 4 or 8).
    pub width: u8,
    /// AH, CH, DH or BH: bits 15:8 of the register.
    pub high_byte: bool,
    /// Sign-extend the value read (MOVSX) instead of zero-extending it.
    pub sign_extend: bool,
}

/// A decoded MMIO instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInstruction {
    /// Bytes accessed.
    pub size: u8,
    /// Read or write.
    pub direction: Direction,
    /// The value written (writes only).
    pub data: u64,
    /// Where a read's value goes.
    pub dest: Option<MmioDest>,
    /// The instruction's length.
    pub len: u8,
}

fn gpr_of(reg: Register) -> Option<(Gpr, u8, bool)> {
    let high = matches!(
        reg,
        Register::AH | Register::CH | Register::DH | Register::BH
    );
    let full = match reg {
        Register::AH => Register::RAX,
        Register::CH => Register::RCX,
        Register::DH => Register::RDX,
        Register::BH => Register::RBX,
        r => r.full_register(),
    };
    let index = full.number().checked_sub(Register::RAX.number())?;
    if !full.is_gpr64() {
        return None;
    }
    Some((Gpr::from_index(index)?, reg.size() as u8, high))
}

fn mask(width: u8) -> u64 {
    match width {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Decode the instruction in `bytes` (fetched at the guest's RIP) for a code size of
/// `bitness` (16, 32 or 64); `read_gpr` gives the guest's registers (for a store's
/// source). `None` when it is not a move this module handles.
pub fn decode(
    bytes: &[u8],
    bitness: u32,
    read_gpr: impl Fn(Gpr) -> u64,
) -> Option<MmioInstruction> {
    let mut decoder = Decoder::try_new(bitness, bytes, DecoderOptions::NONE).ok()?;
    let mut insn = Instruction::default();
    if !decoder.can_decode() {
        return None;
    }
    decoder.decode_out(&mut insn);
    if insn.is_invalid() || insn.op_count() != 2 {
        return None;
    }
    let len = insn.len() as u8;
    let mem_size = insn.memory_size().size() as u8;
    if !matches!(mem_size, 1 | 2 | 4 | 8) {
        return None;
    }
    match (insn.mnemonic(), insn.op0_kind(), insn.op1_kind()) {
        (Mnemonic::Mov, OpKind::Memory, OpKind::Register) => {
            let (reg, _, high) = gpr_of(insn.op1_register())?;
            let value = read_gpr(reg) >> if high { 8 } else { 0 };
            Some(MmioInstruction {
                size: mem_size,
                direction: Direction::Write,
                data: value & mask(mem_size),
                dest: None,
                len,
            })
        }
        (
            Mnemonic::Mov,
            OpKind::Memory,
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate32to64,
        ) => Some(MmioInstruction {
            size: mem_size,
            direction: Direction::Write,
            data: insn.immediate(1) & mask(mem_size),
            dest: None,
            len,
        }),
        (
            m @ (Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd),
            OpKind::Register,
            OpKind::Memory,
        ) => {
            let (reg, width, high_byte) = gpr_of(insn.op0_register())?;
            Some(MmioInstruction {
                size: mem_size,
                direction: Direction::Read,
                data: 0,
                dest: Some(MmioDest {
                    reg,
                    width,
                    high_byte,
                    sign_extend: matches!(m, Mnemonic::Movsx | Mnemonic::Movsxd),
                }),
                len,
            })
        }
        _ => None,
    }
}

impl MmioDest {
    /// The register's new value after reading `value` (`size` bytes) into it, given its
    /// old value: 32-bit destinations zero-extend into the whole register, 8- and 16-bit
    /// ones keep the other bits.
    pub fn merge(&self, old: u64, value: u64, size: u8) -> u64 {
        let value = value & mask(size);
        let value = if self.sign_extend && size < 8 {
            let shift = 64 - 8 * u32::from(size);
            (((value << shift) as i64) >> shift) as u64
        } else {
            value
        };
        match (self.width, self.high_byte) {
            (1, true) => (old & !0xff00) | ((value & 0xff) << 8),
            (1, false) => (old & !0xff) | (value & 0xff),
            (2, _) => (old & !0xffff) | (value & 0xffff),
            (4, _) => value & 0xffff_ffff,
            _ => value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(reg: Gpr) -> u64 {
        0x1111_2222_3333_4400 | reg as u64
    }

    #[test]
    fn stores() {
        // mov [rax+0xb0], ecx
        let i = decode(&[0x89, 0x88, 0xb0, 0, 0, 0], 64, regs).unwrap();
        assert_eq!(
            (i.size, i.direction, i.data, i.len),
            (4, Direction::Write, 0x3333_4401, 6)
        );
        // mov qword [rdi], rdx
        let i = decode(&[0x48, 0x89, 0x17], 64, regs).unwrap();
        assert_eq!((i.size, i.data), (8, 0x1111_2222_3333_4402));
        // mov byte [rbx], ah
        let i = decode(&[0x88, 0x23], 64, regs).unwrap();
        assert_eq!((i.size, i.data), (1, 0x44));
        // mov dword [rax], 0x12345678
        let i = decode(&[0xc7, 0x00, 0x78, 0x56, 0x34, 0x12], 64, regs).unwrap();
        assert_eq!((i.size, i.data, i.len), (4, 0x1234_5678, 6));
        // 32-bit code: mov [0xfee000b0], eax
        let i = decode(&[0xa3, 0xb0, 0x00, 0xe0, 0xfe], 32, regs).unwrap();
        assert_eq!((i.size, i.data, i.len), (4, 0x3333_4400, 5));
    }

    #[test]
    fn loads() {
        // mov eax, [rdx+0x20]
        let i = decode(&[0x8b, 0x42, 0x20], 64, regs).unwrap();
        assert_eq!((i.size, i.direction, i.len), (4, Direction::Read, 3));
        let d = i.dest.unwrap();
        assert_eq!(d.reg, Gpr::Rax);
        assert_eq!(d.merge(u64::MAX, 0xabcd, 4), 0xabcd);
        // movzx ecx, word [rax]
        let d = decode(&[0x0f, 0xb7, 0x08], 64, regs).unwrap().dest.unwrap();
        assert_eq!((d.reg, d.width, d.sign_extend), (Gpr::Rcx, 4, false));
        assert_eq!(d.merge(u64::MAX, 0xffff, 2), 0xffff);
        // movsx rcx, byte [rax]
        let d = decode(&[0x48, 0x0f, 0xbe, 0x08], 64, regs)
            .unwrap()
            .dest
            .unwrap();
        assert_eq!(d.merge(0, 0x80, 1), 0xffff_ffff_ffff_ff80);
        // mov ah, [rax]: only bits 15:8 change
        let d = decode(&[0x8a, 0x20], 64, regs).unwrap().dest.unwrap();
        assert!(d.high_byte);
        assert_eq!(d.merge(0x1234_5678, 0xab, 1), 0x1234_ab78);
        // mov r9w, [rax]
        let d = decode(&[0x66, 0x44, 0x8b, 0x08], 64, regs)
            .unwrap()
            .dest
            .unwrap();
        assert_eq!((d.reg, d.width), (Gpr::R9, 2));
        assert_eq!(d.merge(0xffff_ffff, 0x1, 2), 0xffff_0001);
    }

    #[test]
    fn other_instructions_are_refused() {
        // add [rax], ecx; movsd; truncated bytes; garbage
        assert_eq!(decode(&[0x01, 0x08], 64, regs), None);
        assert_eq!(decode(&[0xa5], 64, regs), None);
        assert_eq!(decode(&[0x8b], 64, regs), None);
        assert_eq!(decode(&[], 64, regs), None);
        assert_eq!(decode(&[0x0f, 0xff], 64, regs), None);
        assert_eq!(decode(&[0x8b, 0x42, 0x20], 7, regs), None);
    }
}

//! Building blocks shared by the families: the per-case random source, register pools
//! (general, MMX, XMM and x87 stack registers), the `[rbx+disp8]` operand, and encoding
//! with a decode-back check.

use crate::case::{Item, Mode};
use alloc::vec::Vec;
use iced_x86::{
    Code, Decoder, DecoderOptions, Encoder, Instruction, InstructionInfoFactory, MemoryOperand,
    Mnemonic, OpAccess, OpCodeOperandKind, OpKind, Register,
};
use std::sync::OnceLock;

/// The random source of one case: splitmix64 from a seed proptest draws, so a case is a
/// pure function of its strategy values.
pub(crate) struct Gen {
    state: u64,
    /// The case's mode.
    pub mode: Mode,
}

impl Gen {
    pub(crate) fn new(mode: Mode, seed: u64) -> Gen {
        Gen { state: seed, mode }
    }

    pub(crate) fn next(&mut self) -> u64 {
        crate::layout::splitmix(&mut self.state)
    }

    /// Uniform in `0..n` (`n` > 0; 0 gives 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = hi.wrapping_sub(lo) as u64;
        lo.wrapping_add(self.below(span.wrapping_add(1)) as i64)
    }

    /// True with probability `num / den`.
    pub(crate) fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub(crate) fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }

    /// One of `xs` with probability proportional to its weight.
    pub(crate) fn weighted<T: Copy>(&mut self, xs: &[(u32, T)]) -> T {
        let total: u64 = xs.iter().map(|(w, _)| u64::from(*w)).sum();
        let mut r = self.below(total);
        for (w, x) in xs {
            if r < u64::from(*w) {
                return *x;
            }
            r -= u64::from(*w);
        }
        xs[xs.len() - 1].1
    }

    pub(crate) fn bits(&self) -> u32 {
        self.mode.bitness()
    }

    pub(crate) fn long(&self) -> bool {
        self.mode == Mode::Long64
    }

    pub(crate) fn real(&self) -> bool {
        self.mode == Mode::Real
    }

    /// A value of `bits` bits that is often on a boundary (0, 1, all ones, the sign bit
    /// and its neighbours) and otherwise random.
    pub(crate) fn value(&mut self, bits: u32) -> u64 {
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let sign = 1u64 << (bits.clamp(1, 64) - 1);
        let v = match self.below(10) {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => sign,
            4 => sign.wrapping_sub(1),
            5 => self.below(16),
            6 => self.below(256),
            _ => self.next(),
        };
        v & mask
    }

    /// A disp8 for `[rbx+disp8]`.
    pub(crate) fn disp(&mut self) -> i64 {
        self.range(-128, 127)
    }
}

/// The data pointer register of the mode's address size.
pub(crate) fn data_base(mode: Mode) -> Register {
    match mode.bitness() {
        16 => Register::BX,
        32 => Register::EBX,
        _ => Register::RBX,
    }
}

/// `[rbx+disp]` (`[ebx+disp]`, `[bx+disp]`) with an 8-bit displacement.
pub(crate) fn mem_at(mode: Mode, disp: i64) -> MemoryOperand {
    let disp = if mode.bitness() == 16 {
        // 16-bit addressing: iced keeps the displacement as the 16-bit value.
        i64::from(disp as i16 as u16)
    } else if mode.bitness() == 32 {
        i64::from(disp as i32 as u32)
    } else {
        disp
    };
    MemoryOperand::new(
        data_base(mode),
        Register::None,
        1,
        disp,
        1,
        false,
        Register::None,
    )
}

/// Move the memory operand of `ins` (if it has one) to an `align`-byte aligned
/// displacement (RBX is 16-byte aligned): legacy SSE instructions with a 16-byte operand
/// raise #GP when it is misaligned, which a random displacement would nearly always be.
pub(crate) fn align_mem(g: &Gen, ins: &mut Instruction, align: i64) {
    for i in 0..ins.op_count() {
        if ins.op_kind(i) == OpKind::Memory {
            let disp = match g.bits() {
                16 => i64::from(ins.memory_displacement64() as u16 as i16),
                32 => i64::from(ins.memory_displacement64() as u32 as i32),
                _ => ins.memory_displacement64() as i64,
            };
            set_mem(ins, i, mem_at(g.mode, disp & !(align - 1)));
        }
    }
}

/// A random `[rbx+disp8]`.
pub(crate) fn mem(g: &mut Gen) -> MemoryOperand {
    let d = g.disp();
    mem_at(g.mode, d)
}

const GPR8: [Register; 16] = [
    Register::AL,
    Register::CL,
    Register::DL,
    Register::BL,
    Register::AH,
    Register::CH,
    Register::DH,
    Register::BH,
    Register::SPL,
    Register::BPL,
    Register::SIL,
    Register::DIL,
    Register::R8L,
    Register::R9L,
    Register::R12L,
    Register::R15L,
];
const GPR16: [Register; 12] = [
    Register::AX,
    Register::CX,
    Register::DX,
    Register::BX,
    Register::SP,
    Register::BP,
    Register::SI,
    Register::DI,
    Register::R8W,
    Register::R10W,
    Register::R13W,
    Register::R15W,
];
const GPR32: [Register; 12] = [
    Register::EAX,
    Register::ECX,
    Register::EDX,
    Register::EBX,
    Register::ESP,
    Register::EBP,
    Register::ESI,
    Register::EDI,
    Register::R8D,
    Register::R11D,
    Register::R12D,
    Register::R14D,
];
const GPR64: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// Any general register of `size` bytes usable in the mode (RBX and RSP included: the
/// encoder's caller rejects instructions that would write them).
pub(crate) fn any_reg(g: &mut Gen, size: u32) -> Register {
    let (pool, legacy): (&[Register], usize) = match size {
        1 => (&GPR8, 8),
        2 => (&GPR16, 8),
        4 => (&GPR32, 8),
        _ => (&GPR64, 16),
    };
    let n = if g.long() { pool.len() } else { legacy };
    g.pick(&pool[..n])
}

/// A scratch register of `size` bytes: never RBX/RSP (nor BH/BL/SPL), so setup items
/// can load it freely.
pub(crate) fn scratch(g: &mut Gen, size: u32) -> Register {
    loop {
        let r = any_reg(g, size);
        if !is_pointer_reg(r) {
            return r;
        }
    }
}

/// An XMM register: XMM0-15 in 64-bit mode, XMM0-7 elsewhere.
pub(crate) fn xmm(g: &mut Gen) -> Register {
    let n = if g.long() { 16 } else { 8 };
    xmm_n(g.below(n) as usize)
}

/// XMM`n` (`n` < 16).
pub(crate) fn xmm_n(n: usize) -> Register {
    const XMM: [Register; 16] = [
        Register::XMM0,
        Register::XMM1,
        Register::XMM2,
        Register::XMM3,
        Register::XMM4,
        Register::XMM5,
        Register::XMM6,
        Register::XMM7,
        Register::XMM8,
        Register::XMM9,
        Register::XMM10,
        Register::XMM11,
        Register::XMM12,
        Register::XMM13,
        Register::XMM14,
        Register::XMM15,
    ];
    XMM[n & 15]
}

/// An MMX register, MM0-7.
pub(crate) fn mm(g: &mut Gen) -> Register {
    const MM: [Register; 8] = [
        Register::MM0,
        Register::MM1,
        Register::MM2,
        Register::MM3,
        Register::MM4,
        Register::MM5,
        Register::MM6,
        Register::MM7,
    ];
    g.pick(&MM)
}

/// An x87 stack register, ST(0)-ST(7).
pub(crate) fn st(g: &mut Gen) -> Register {
    const ST: [Register; 8] = [
        Register::ST0,
        Register::ST1,
        Register::ST2,
        Register::ST3,
        Register::ST4,
        Register::ST5,
        Register::ST6,
        Register::ST7,
    ];
    g.pick(&ST)
}

/// Whether `r` is part of RBX or RSP.
pub(crate) fn is_pointer_reg(r: Register) -> bool {
    matches!(r.full_register(), Register::RBX | Register::RSP)
}

/// Whether `ins` writes RBX or RSP (explicitly or implicitly).
pub(crate) fn writes_pointer_reg(ins: &Instruction) -> bool {
    let mut factory = InstructionInfoFactory::new();
    let info = factory.info(ins);
    info.used_registers().iter().any(|u| {
        is_pointer_reg(u.register())
            && matches!(
                u.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            )
    })
}

/// Encode `ins` for the mode and check that the bytes decode back to one instruction of
/// the same length and code; `None` if the encoder refuses or the decoder disagrees.
pub(crate) fn encode(mode: Mode, ins: &Instruction) -> Option<Vec<u8>> {
    let bits = mode.bitness();
    let mut encoder = Encoder::new(bits);
    let len = encoder.encode(ins, 0).ok()?;
    let bytes = encoder.take_buffer();
    if bytes.len() != len || len == 0 || len > crate::case::MAX_INSN {
        return None;
    }
    let mut decoder = Decoder::with_ip(bits, &bytes, 0, DecoderOptions::NONE);
    let back = decoder.decode();
    (!back.is_invalid() && back.len() == len && back.code() == ins.code()).then_some(bytes)
}

/// `ins` as an item, if it encodes.
pub(crate) fn item(mode: Mode, ins: Result<Instruction, iced_x86::IcedError>) -> Option<Item> {
    encode(mode, &ins.ok()?).map(Item::Insn)
}

/// Like [`item`] for a code with no operands to choose (none, or only a fixed segment
/// register such as POP DS's).
pub(crate) fn bare(mode: Mode, code: Code) -> Option<Item> {
    let info = code.op_code();
    let mut ins = Instruction::default();
    ins.set_code(code);
    for i in 0..info.op_count() {
        let reg = match info.op_kind(i) {
            OpCodeOperandKind::es => Register::ES,
            OpCodeOperandKind::cs => Register::CS,
            OpCodeOperandKind::ss => Register::SS,
            OpCodeOperandKind::ds => Register::DS,
            OpCodeOperandKind::fs => Register::FS,
            OpCodeOperandKind::gs => Register::GS,
            _ => return None,
        };
        set_reg(&mut ins, i, reg);
    }
    encode(mode, &ins).map(Item::Insn)
}

/// `mov r32, imm32` (with an operand-size prefix in 16-bit code).
pub(crate) fn mov_imm32(mode: Mode, reg: Register, value: u32) -> Option<Item> {
    item(mode, Instruction::with2(Code::Mov_r32_imm32, reg, value))
}

/// `mov r16, imm16`.
pub(crate) fn mov_imm16(mode: Mode, reg: Register, value: u16) -> Option<Item> {
    item(
        mode,
        Instruction::with2(Code::Mov_r16_imm16, reg, u32::from(value)),
    )
}

/// `mov word [rbx+disp], imm16`.
pub(crate) fn store16(mode: Mode, disp: i64, value: u16) -> Option<Item> {
    item(
        mode,
        Instruction::with2(Code::Mov_rm16_imm16, mem_at(mode, disp), u32::from(value)),
    )
}

/// `mov dword [rbx+disp], imm32`.
pub(crate) fn store32(mode: Mode, disp: i64, value: u32) -> Option<Item> {
    item(
        mode,
        Instruction::with2(Code::Mov_rm32_imm32, mem_at(mode, disp), value),
    )
}

/// The 32-bit register of the same number as `reg` (`AX`/`EAX`/`RAX` → `EAX`).
pub(crate) fn reg32(reg: Register) -> Register {
    reg.full_register32()
}

/// The 16-bit register of the same number.
pub(crate) fn reg16(reg: Register) -> Register {
    let n = reg.full_register().number();
    GPR16_ALL[n]
}

/// The natural-width (address-size) register of the same number: 16, 32 or 64 bits.
pub(crate) fn reg_native(mode: Mode, reg: Register) -> Register {
    match mode.bitness() {
        16 => reg16(reg),
        32 => reg32(reg),
        _ => reg.full_register(),
    }
}

const GPR16_ALL: [Register; 16] = [
    Register::AX,
    Register::CX,
    Register::DX,
    Register::BX,
    Register::SP,
    Register::BP,
    Register::SI,
    Register::DI,
    Register::R8W,
    Register::R9W,
    Register::R10W,
    Register::R11W,
    Register::R12W,
    Register::R13W,
    Register::R14W,
    Register::R15W,
];

/// Fill the operands of `code` at random from its operand kinds: registers from the
/// pools (general, MMX, XMM, x87 stack), memory as `[rbx+disp8]`, immediates from
/// [`Gen::value`]. `None` if an operand kind is one the generator never emits (far
/// pointers, absolute offsets, AVX or control registers, ...), or if the result would
/// write RBX/RSP.
pub(crate) fn fill(g: &mut Gen, code: Code) -> Option<Instruction> {
    fill_raw(g, code).filter(|ins| !writes_pointer_reg(ins))
}

/// [`fill`] without the RBX/RSP write check (for stack instructions, which write RSP by
/// design).
pub(crate) fn fill_raw(g: &mut Gen, code: Code) -> Option<Instruction> {
    let info = code.op_code();
    let mut ins = Instruction::default();
    ins.set_code(code);
    let mut previous_imm8 = false;
    for i in 0..info.op_count() {
        let kind = info.op_kind(i);
        let mut imm8 = false;
        match kind {
            OpCodeOperandKind::r8_or_mem
            | OpCodeOperandKind::r16_or_mem
            | OpCodeOperandKind::r32_or_mem
            | OpCodeOperandKind::r64_or_mem => {
                if g.chance(1, 3) {
                    set_mem(&mut ins, i, mem(g));
                } else {
                    let size = match kind {
                        OpCodeOperandKind::r8_or_mem => 1,
                        OpCodeOperandKind::r16_or_mem => 2,
                        OpCodeOperandKind::r32_or_mem => 4,
                        _ => 8,
                    };
                    set_reg(&mut ins, i, any_reg(g, size));
                }
            }
            OpCodeOperandKind::mem => set_mem(&mut ins, i, mem(g)),
            OpCodeOperandKind::mm_or_mem | OpCodeOperandKind::xmm_or_mem => {
                if g.chance(1, 3) {
                    set_mem(&mut ins, i, mem(g));
                } else if kind == OpCodeOperandKind::mm_or_mem {
                    set_reg(&mut ins, i, mm(g));
                } else {
                    set_reg(&mut ins, i, xmm(g));
                }
            }
            OpCodeOperandKind::mm_reg | OpCodeOperandKind::mm_rm => set_reg(&mut ins, i, mm(g)),
            OpCodeOperandKind::xmm_reg | OpCodeOperandKind::xmm_rm => set_reg(&mut ins, i, xmm(g)),
            OpCodeOperandKind::st0 => set_reg(&mut ins, i, Register::ST0),
            OpCodeOperandKind::sti_opcode => set_reg(&mut ins, i, st(g)),
            OpCodeOperandKind::r8_reg | OpCodeOperandKind::r8_opcode => {
                set_reg(&mut ins, i, any_reg(g, 1))
            }
            OpCodeOperandKind::r16_reg
            | OpCodeOperandKind::r16_rm
            | OpCodeOperandKind::r16_opcode
            | OpCodeOperandKind::r16_reg_mem => set_reg(&mut ins, i, any_reg(g, 2)),
            OpCodeOperandKind::r32_reg
            | OpCodeOperandKind::r32_rm
            | OpCodeOperandKind::r32_opcode
            | OpCodeOperandKind::r32_vvvv
            | OpCodeOperandKind::r32_reg_mem => set_reg(&mut ins, i, any_reg(g, 4)),
            OpCodeOperandKind::r64_reg
            | OpCodeOperandKind::r64_rm
            | OpCodeOperandKind::r64_opcode
            | OpCodeOperandKind::r64_vvvv
            | OpCodeOperandKind::r64_reg_mem => set_reg(&mut ins, i, any_reg(g, 8)),
            OpCodeOperandKind::al => set_reg(&mut ins, i, Register::AL),
            OpCodeOperandKind::cl => set_reg(&mut ins, i, Register::CL),
            OpCodeOperandKind::ax => set_reg(&mut ins, i, Register::AX),
            OpCodeOperandKind::dx => set_reg(&mut ins, i, Register::DX),
            OpCodeOperandKind::eax => set_reg(&mut ins, i, Register::EAX),
            OpCodeOperandKind::rax => set_reg(&mut ins, i, Register::RAX),
            OpCodeOperandKind::imm8 => {
                let v = g.value(8) as u8;
                if previous_imm8 {
                    ins.set_op_kind(i, OpKind::Immediate8_2nd);
                    ins.set_immediate8_2nd(v);
                } else {
                    ins.set_op_kind(i, OpKind::Immediate8);
                    ins.set_immediate8(v);
                }
                imm8 = true;
            }
            OpCodeOperandKind::imm8_const_1 => {
                ins.set_op_kind(i, OpKind::Immediate8);
                ins.set_immediate8(1);
            }
            OpCodeOperandKind::imm16 => {
                ins.set_op_kind(i, OpKind::Immediate16);
                ins.set_immediate16(g.value(16) as u16);
                // ENTER's second immediate follows a 16-bit one.
                imm8 = true;
            }
            OpCodeOperandKind::imm32 => {
                ins.set_op_kind(i, OpKind::Immediate32);
                ins.set_immediate32(g.value(32) as u32);
            }
            OpCodeOperandKind::imm64 => {
                ins.set_op_kind(i, OpKind::Immediate64);
                ins.set_immediate64(g.value(64));
            }
            OpCodeOperandKind::imm8sex16 => {
                ins.set_op_kind(i, OpKind::Immediate8to16);
                ins.set_immediate8to16(i16::from(g.value(8) as u8 as i8));
            }
            OpCodeOperandKind::imm8sex32 => {
                ins.set_op_kind(i, OpKind::Immediate8to32);
                ins.set_immediate8to32(i32::from(g.value(8) as u8 as i8));
            }
            OpCodeOperandKind::imm8sex64 => {
                ins.set_op_kind(i, OpKind::Immediate8to64);
                ins.set_immediate8to64(i64::from(g.value(8) as u8 as i8));
            }
            OpCodeOperandKind::imm32sex64 => {
                ins.set_op_kind(i, OpKind::Immediate32to64);
                ins.set_immediate32to64(i64::from(g.value(32) as u32 as i32));
            }
            _ => return None,
        }
        previous_imm8 = imm8;
    }
    Some(ins)
}

/// Whether [`fill`] can produce operands for every operand kind of `code`.
pub(crate) fn fillable(code: Code) -> bool {
    let info = code.op_code();
    (0..info.op_count()).all(|i| {
        matches!(
            info.op_kind(i),
            OpCodeOperandKind::r8_or_mem
                | OpCodeOperandKind::r16_or_mem
                | OpCodeOperandKind::r32_or_mem
                | OpCodeOperandKind::r64_or_mem
                | OpCodeOperandKind::mem
                | OpCodeOperandKind::mm_or_mem
                | OpCodeOperandKind::xmm_or_mem
                | OpCodeOperandKind::mm_reg
                | OpCodeOperandKind::mm_rm
                | OpCodeOperandKind::xmm_reg
                | OpCodeOperandKind::xmm_rm
                | OpCodeOperandKind::st0
                | OpCodeOperandKind::sti_opcode
                | OpCodeOperandKind::r8_reg
                | OpCodeOperandKind::r8_opcode
                | OpCodeOperandKind::r16_reg
                | OpCodeOperandKind::r16_rm
                | OpCodeOperandKind::r16_opcode
                | OpCodeOperandKind::r16_reg_mem
                | OpCodeOperandKind::r32_reg
                | OpCodeOperandKind::r32_rm
                | OpCodeOperandKind::r32_opcode
                | OpCodeOperandKind::r32_vvvv
                | OpCodeOperandKind::r32_reg_mem
                | OpCodeOperandKind::r64_reg
                | OpCodeOperandKind::r64_rm
                | OpCodeOperandKind::r64_opcode
                | OpCodeOperandKind::r64_vvvv
                | OpCodeOperandKind::r64_reg_mem
                | OpCodeOperandKind::al
                | OpCodeOperandKind::cl
                | OpCodeOperandKind::ax
                | OpCodeOperandKind::dx
                | OpCodeOperandKind::eax
                | OpCodeOperandKind::rax
                | OpCodeOperandKind::imm8
                | OpCodeOperandKind::imm8_const_1
                | OpCodeOperandKind::imm16
                | OpCodeOperandKind::imm32
                | OpCodeOperandKind::imm64
                | OpCodeOperandKind::imm8sex16
                | OpCodeOperandKind::imm8sex32
                | OpCodeOperandKind::imm8sex64
                | OpCodeOperandKind::imm32sex64
        )
    })
}

/// Whether `code` exists in code of the mode's bitness.
pub(crate) fn valid_in(code: Code, mode: Mode) -> bool {
    let info = code.op_code();
    info.is_instruction()
        && info.decoder_option() == DecoderOptions::NONE
        && match mode.bitness() {
            16 => info.mode16(),
            32 => info.mode32(),
            _ => info.mode64(),
        }
}

fn set_reg(ins: &mut Instruction, i: u32, reg: Register) {
    ins.set_op_kind(i, OpKind::Register);
    ins.set_op_register(i, reg);
}

pub(crate) fn set_mem(ins: &mut Instruction, i: u32, m: MemoryOperand) {
    ins.set_op_kind(i, OpKind::Memory);
    ins.set_memory_base(m.base);
    ins.set_memory_index(m.index);
    ins.set_memory_index_scale(m.scale);
    ins.set_memory_displ_size(m.displ_size);
    ins.set_memory_displacement64(m.displacement as u64);
    ins.set_segment_prefix(m.segment_prefix);
}

/// Per bitness (16, 32, 64): each mnemonic with its encodings usable there.
pub(crate) type Table = Vec<(Mnemonic, Vec<Code>)>;

/// The table for `mode`'s bitness, built by `build` once per bitness into `tables`.
pub(crate) fn table_for(
    tables: &'static OnceLock<[Table; 3]>,
    mode: Mode,
    build: fn(Mode) -> Table,
) -> &'static Table {
    let tables = tables.get_or_init(|| {
        [
            build(Mode::Real),
            build(Mode::Protected32),
            build(Mode::Long64),
        ]
    });
    match mode.bitness() {
        16 => &tables[0],
        32 => &tables[1],
        _ => &tables[2],
    }
}

/// Every encoding `usable` accepts in `mode`, grouped by mnemonic: only the mnemonics of
/// `only`, in its order, when given (those without a usable encoding dropped), else every
/// mnemonic met, in encoding order.
pub(crate) fn encodings_by_mnemonic(
    mode: Mode,
    only: Option<&[Mnemonic]>,
    usable: fn(Code, Mode) -> bool,
) -> Table {
    let mut out: Table = only
        .unwrap_or(&[])
        .iter()
        .map(|m| (*m, Vec::new()))
        .collect();
    for code in Code::values() {
        if !usable(code, mode) {
            continue;
        }
        let m = code.mnemonic();
        match out.iter_mut().find(|(x, _)| *x == m) {
            Some(entry) => entry.1.push(code),
            None if only.is_none() => out.push((m, alloc::vec![code])),
            None => {}
        }
    }
    out.retain(|(_, codes)| !codes.is_empty());
    out
}

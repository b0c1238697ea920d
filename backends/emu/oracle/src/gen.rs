//! Random instructions for differential tests.
//!
//! [`build`] turns an iced-x86 [`Code`] and a stream of random words ([`Choices`]) into
//! encoded bytes, filling each operand from the code's `OpCodeInfo` operand kinds:
//! registers of the right class, immediates (biased towards edge values) and memory
//! operands (`[base + index*scale + disp]`, `[index*scale + disp]`, `[disp32]`,
//! `[rip + disp]`, and 32-bit address-size forms) whose effective address lands in the
//! scratch area, aligned or not, or just outside it (so it faults). The registers a
//! memory operand uses are given values in the [`State`] that produce that address.
//!
//! All decisions come from the words, so proptest can shrink a failure towards zero
//! words: register 0 (RAX), immediate 0, an aligned operand at the start of scratch.

use crate::{State, CODE_BASE, SCRATCH_BASE, SCRATCH_SIZE};
use iced_x86::{
    Code, CpuidFeature, Encoder, EncodingKind, FlowControl, Instruction, OpCodeOperandKind, OpKind,
    Register,
};

/// A cursor over random words; reads past the end give 0.
#[derive(Clone, Debug)]
pub struct Choices<'a> {
    words: &'a [u64],
    pos: usize,
}

impl<'a> Choices<'a> {
    /// Start at the first word.
    pub fn new(words: &'a [u64]) -> Choices<'a> {
        Choices { words, pos: 0 }
    }

    /// The next word.
    pub fn word(&mut self) -> u64 {
        let w = self.words.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        w
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.word() % n.max(1)
    }

    /// A value biased towards the edges that shake out arithmetic bugs: 0, 1, all ones,
    /// sign bits and boundaries at every operand size, small numbers, and random bits.
    pub fn value(&mut self) -> u64 {
        let sel = self.below(16);
        let w = self.word();
        let k = (w >> 58) as u32; // 0..64
        match sel {
            0 => w & 0xf,
            1 => (w & 0xf).wrapping_neg(),
            2 => 1u64 << k,
            3 => (1u64 << k).wrapping_sub(1),
            4 => !((1u64 << k).wrapping_sub(1)),
            5 => [
                0x7f,
                0x80,
                0xff,
                0x7fff,
                0x8000,
                0xffff,
                0x7fff_ffff,
                0x8000_0000,
            ][(w & 7) as usize],
            6 => [0xffff_ffff, 0x1_0000_0000, i64::MAX as u64, i64::MIN as u64][(w & 3) as usize],
            7 => w as u8 as u64,
            8 => w as i8 as u64,
            9 => w as u16 as u64,
            10 => w as u32 as u64,
            11 => w as i32 as u64,
            _ => w,
        }
    }
}

/// A set of general registers, by encoding number (bit n = register n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegSet(pub u16);

impl RegSet {
    /// Whether the 64-bit register numbered `n` is in the set.
    pub fn contains(self, n: usize) -> bool {
        n < 16 && self.0 & (1 << n) != 0
    }
    /// Add register `n`.
    pub fn insert(&mut self, n: usize) {
        if n < 16 {
            self.0 |= 1 << n;
        }
    }
}

/// How memory operands address the scratch area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemPlan {
    /// Pick base and index registers per operand and set their values in the state
    /// (for a single instruction: they may coincide with its register operands).
    Free,
    /// Always use these base and index registers, whose values the state already holds
    /// and nothing in the snippet writes (for sequences).
    Pinned {
        /// Base register number.
        base: usize,
        /// Index register number.
        index: usize,
    },
}

/// What [`build`] needs besides the code.
#[derive(Clone, Copy, Debug)]
pub struct BuildCtx {
    /// Address the instruction is encoded at (for RIP-relative operands).
    pub ip: u64,
    /// Registers explicit register operands must not use.
    pub avoid: RegSet,
    /// Memory addressing.
    pub mem: MemPlan,
    /// Code size: 64, or 32 for compatibility mode (eight 32-bit registers, 32-bit
    /// addressing, no RIP-relative operands).
    pub bits: u32,
}

impl Default for BuildCtx {
    fn default() -> Self {
        BuildCtx {
            ip: CODE_BASE,
            avoid: RegSet::default(),
            mem: MemPlan::Free,
            bits: 64,
        }
    }
}

const GPR8: [Register; 20] = [
    Register::AL,
    Register::CL,
    Register::DL,
    Register::BL,
    Register::SPL,
    Register::BPL,
    Register::SIL,
    Register::DIL,
    Register::R8L,
    Register::R9L,
    Register::R10L,
    Register::R11L,
    Register::R12L,
    Register::R13L,
    Register::R14L,
    Register::R15L,
    Register::AH,
    Register::CH,
    Register::DH,
    Register::BH,
];

fn gpr(size: u32, n: usize) -> Register {
    let base = match size {
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    };
    reg_at(base, n)
}

/// Register `n` of the class starting at `first` (iced numbers each class consecutively).
fn reg_at(first: Register, n: usize) -> Register {
    Register::values().nth(first as usize + n).unwrap_or(first)
}

/// A random XMM (0..16) or MMX (0..8) register.
fn vector_reg(xmm: bool, ch: &mut Choices) -> Register {
    if xmm {
        reg_at(Register::XMM0, ch.below(16) as usize)
    } else {
        reg_at(Register::MM0, ch.below(8) as usize)
    }
}

/// Encoding number (0..16) of a general register's full 64-bit register.
pub fn gpr_number(r: Register) -> Option<usize> {
    let full = r.full_register();
    let n = (full as usize).checked_sub(Register::RAX as usize)?;
    (n < 16).then_some(n)
}

/// Whether the host CPU has the feature (false for anything not needed here).
fn host_has(f: CpuidFeature) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        match f {
            CpuidFeature::INTEL8086
            | CpuidFeature::INTEL186
            | CpuidFeature::INTEL286
            | CpuidFeature::INTEL386
            | CpuidFeature::INTEL486
            | CpuidFeature::X64
            | CpuidFeature::CMOV
            | CpuidFeature::CX8
            | CpuidFeature::MULTIBYTENOP => true,
            CpuidFeature::CMPXCHG16B => has!("cmpxchg16b"),
            CpuidFeature::MOVBE => has!("movbe"),
            CpuidFeature::BMI1 => has!("bmi1"),
            CpuidFeature::BMI2 => has!("bmi2"),
            CpuidFeature::ADX => has!("adx"),
            CpuidFeature::LZCNT => has!("lzcnt"),
            CpuidFeature::POPCNT => has!("popcnt"),
            CpuidFeature::SSE4_2 => has!("sse4.2"),
            CpuidFeature::FPU
            | CpuidFeature::FPU287
            | CpuidFeature::FPU387
            | CpuidFeature::MMX
            | CpuidFeature::SSE
            | CpuidFeature::SSE2
            | CpuidFeature::FXSR => true,
            CpuidFeature::SSE3 => has!("sse3"),
            CpuidFeature::SSSE3 => has!("ssse3"),
            CpuidFeature::SSE4_1 => has!("sse4.1"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = f;
        false
    }
}

fn operand_supported(k: OpCodeOperandKind) -> bool {
    use OpCodeOperandKind as K;
    matches!(
        k,
        K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::mem
            | K::r8_reg
            | K::r8_opcode
            | K::r16_reg
            | K::r16_rm
            | K::r16_opcode
            | K::r32_reg
            | K::r32_rm
            | K::r32_opcode
            | K::r32_vvvv
            | K::r64_reg
            | K::r64_rm
            | K::r64_opcode
            | K::r64_vvvv
            | K::al
            | K::cl
            | K::ax
            | K::eax
            | K::rax
            | K::imm8
            | K::imm8_const_1
            | K::imm8sex16
            | K::imm8sex32
            | K::imm8sex64
            | K::imm16
            | K::imm32
            | K::imm32sex64
            | K::imm64
            | K::mm_or_mem
            | K::xmm_or_mem
            | K::mm_reg
            | K::mm_rm
            | K::xmm_reg
            | K::xmm_rm
            | K::st0
            | K::sti_opcode
            | K::seg_rSI
            | K::es_rDI
            | K::seg_rDI
            | K::mem_offs
            | K::seg_rBX_al
    )
}

/// Registers R8-R15, which do not exist outside 64-bit mode.
const HIGH_REGS: RegSet = RegSet(0xff00);

impl BuildCtx {
    /// The registers operands must not use: `avoid`, plus R8-R15 at code size 32.
    fn excluded_for_address(&self) -> RegSet {
        if self.bits == 32 {
            HIGH_REGS
        } else {
            RegSet::default()
        }
    }

    fn excluded(&self) -> RegSet {
        if self.bits == 32 {
            RegSet(self.avoid.0 | HIGH_REGS.0)
        } else {
            self.avoid
        }
    }
}

/// Whether [`build`] can generate `code` at code size 32 (compatibility mode) and the
/// host can run it: the instructions that exist only outside 64-bit mode.
pub fn supported_legacy32(code: Code) -> bool {
    let op = code.op_code();
    op.is_instruction()
        && op.mode32()
        && !op.mode64()
        && code.encoding() == EncodingKind::Legacy
        && code.flow_control() != FlowControl::Call
        && !code.is_privileged()
        && op.op_kinds().iter().all(|&k| operand_supported(k))
        && code.cpuid_features().iter().all(|&f| host_has(f))
}

/// Whether [`build`] can generate `code` and the host CPU can run it: a 64-bit-mode
/// legacy or VEX instruction with straight-line flow, not privileged, whose operands
/// are all general registers, immediates or one memory operand, and whose CPUID
/// features the host has.
pub fn supported(code: Code) -> bool {
    let op = code.op_code();
    op.is_instruction()
        && op.mode64()
        && matches!(code.encoding(), EncodingKind::Legacy | EncodingKind::VEX)
        && code.flow_control() == FlowControl::Next
        && !code.is_privileged()
        && op.op_kinds().iter().all(|&k| operand_supported(k))
        && code.cpuid_features().iter().all(|&f| host_has(f))
}

fn memory_size_of(code: Code) -> u64 {
    (code.op_code().memory_size().size() as u64).max(1)
}

/// Pick the address a memory operand of `size` bytes accesses: mostly inside the
/// scratch area and aligned, sometimes misaligned, crossing its end, or just outside it.
fn pick_target(ch: &mut Choices, size: u64) -> u64 {
    let area = SCRATCH_SIZE as u64;
    let room = area.saturating_sub(size) + 1;
    let r = ch.word();
    let off = match ch.below(16) {
        0..=10 => (r % room) & !(size.next_power_of_two() - 1),
        11..=13 => r % room,
        14 => area - size + 1 + r % size.max(2),
        _ => {
            // Before the start (when the access is not larger than the offset) or past
            // the end, by up to 64 bytes.
            if r & 1 == 0 {
                return SCRATCH_BASE.wrapping_sub(1 + (r >> 1) % 64);
            }
            area + (r >> 1) % 64
        }
    };
    SCRATCH_BASE + off
}

fn pick_reg(ch: &mut Choices, avoid: RegSet, allow_rsp: bool) -> usize {
    let allowed: Vec<usize> = (0..16)
        .filter(|&n| !avoid.contains(n) && (allow_rsp || n != 4))
        .collect();
    if allowed.is_empty() {
        return 0;
    }
    allowed[ch.below(allowed.len() as u64) as usize]
}

fn disp_size(disp: i64) -> u32 {
    if disp == 0 {
        0
    } else if i8::try_from(disp).is_ok() {
        1
    } else {
        4
    }
}

/// Fill operand `i` with a memory operand addressing the scratch area.
fn memory_operand(
    instr: &mut Instruction,
    i: u32,
    ch: &mut Choices,
    ctx: &BuildCtx,
    state: &mut State,
) -> Option<()> {
    let size = memory_size_of(instr.code());
    let target = pick_target(ch, size);
    instr.set_op_kind(i, OpKind::Memory);
    let scale = 1u32 << ch.below(4);
    match ctx.mem {
        MemPlan::Pinned { base, index } => {
            let b = state.gpr[base];
            let x = state.gpr[index];
            let use_index = ch.below(2) == 0;
            let ea_regs = b.wrapping_add(if use_index {
                x.wrapping_mul(u64::from(scale))
            } else {
                0
            });
            let disp = target.wrapping_sub(ea_regs) as i64;
            i32::try_from(disp).ok()?;
            instr.set_memory_base(gpr(8, base));
            if use_index {
                instr.set_memory_index(gpr(8, index));
                instr.set_memory_index_scale(scale);
            }
            instr.set_memory_displacement64(disp as u64);
            instr.set_memory_displ_size(disp_size(disp));
        }
        MemPlan::Free => {
            let mut form = ch.below(16);
            if ctx.bits == 32 && (12..15).contains(&form) {
                // No RIP-relative addressing outside 64-bit mode: absolute instead.
                form = 9;
            }
            // 32-bit address size: the registers' low halves form the address, which
            // is fine because the scratch area is below 4 GiB.
            let addr32 = form == 15 || ctx.bits == 32;
            let width = if addr32 { 4 } else { 8 };
            match form {
                0..=5 | 15 => {
                    // [base + index*scale + disp] or [base + disp].
                    let base = pick_reg(ch, ctx.excluded_for_address(), true);
                    let use_index = ch.below(2) == 0;
                    let mut avoid = ctx.excluded_for_address();
                    avoid.insert(base);
                    let index = pick_reg(ch, avoid, false);
                    let xval = if use_index { ch.below(256) } else { 0 };
                    let disp = if base == 4 {
                        // Keep RSP where it is: the displacement does the work.
                        0
                    } else {
                        (ch.word() as i8) as i64
                    };
                    let bval = if base == 4 {
                        state.gpr[4]
                    } else {
                        target
                            .wrapping_sub(xval.wrapping_mul(u64::from(scale)))
                            .wrapping_sub(disp as u64)
                    };
                    let disp = if base == 4 {
                        target
                            .wrapping_sub(bval)
                            .wrapping_sub(xval.wrapping_mul(u64::from(scale)))
                            as i64
                    } else {
                        disp
                    };
                    if addr32 && bval >> 32 != 0 {
                        return None;
                    }
                    i32::try_from(disp).ok()?;
                    state.gpr[base] = bval;
                    instr.set_memory_base(gpr(width, base));
                    if use_index {
                        state.gpr[index] = xval;
                        instr.set_memory_index(gpr(width, index));
                        instr.set_memory_index_scale(scale);
                    }
                    instr.set_memory_displacement64(disp as u64);
                    instr.set_memory_displ_size(disp_size(disp));
                }
                6..=8 => {
                    // [index*scale + disp32].
                    let index = pick_reg(ch, ctx.excluded_for_address(), false);
                    let xval = ch.below(1024);
                    let disp = target.wrapping_sub(xval * u64::from(scale)) as i64;
                    i32::try_from(disp).ok()?;
                    state.gpr[index] = xval;
                    instr.set_memory_index(gpr(if ctx.bits == 32 { 4 } else { 8 }, index));
                    instr.set_memory_index_scale(scale);
                    instr.set_memory_displacement64(disp as u64);
                    instr.set_memory_displ_size(4);
                }
                9..=11 => {
                    // [disp32], absolute.
                    instr.set_memory_displacement64(target);
                    instr.set_memory_displ_size(4);
                }
                _ => {
                    // [rip + disp32]: iced takes the target address.
                    instr.set_memory_base(Register::RIP);
                    instr.set_memory_displacement64(target);
                    instr.set_memory_displ_size(8);
                }
            }
        }
    }
    Some(())
}

/// Build one instruction of `code` from the choices; registers its memory operand
/// needs are written into `state`. Returns the encoded bytes, or `None` when the
/// choices do not give an encodable instruction (the caller tries other choices).
pub fn build(code: Code, ch: &mut Choices, ctx: &BuildCtx, state: &mut State) -> Option<Vec<u8>> {
    use OpCodeOperandKind as K;
    let op = code.op_code();
    if op
        .op_kinds()
        .iter()
        .any(|k| matches!(k, K::seg_rSI | K::es_rDI | K::seg_rDI))
    {
        return build_string(code, ch, ctx, state);
    }
    let mut instr = Instruction::default();
    instr.set_code(code);
    let mut has_mem = false;
    for (i, &kind) in op.op_kinds().iter().enumerate() {
        let i = i as u32;
        let reg = |size: u32, ch: &mut Choices| -> Register {
            let avoid = ctx.excluded();
            if size == 1 {
                let allowed: Vec<Register> = GPR8
                    .iter()
                    .copied()
                    .filter(|r| gpr_number(*r).is_some_and(|n| !avoid.contains(n)))
                    .collect();
                return allowed
                    .get(ch.below(allowed.len() as u64) as usize)
                    .copied()
                    .unwrap_or(Register::AL);
            }
            gpr(size, pick_reg(ch, avoid, true))
        };
        let set_reg = |instr: &mut Instruction, r: Register| {
            instr.set_op_kind(i, OpKind::Register);
            instr.set_op_register(i, r);
        };
        match kind {
            K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem => {
                if ch.below(2) == 0 {
                    memory_operand(&mut instr, i, ch, ctx, state)?;
                    has_mem = true;
                } else {
                    let size = match kind {
                        K::r8_or_mem => 1,
                        K::r16_or_mem => 2,
                        K::r32_or_mem => 4,
                        _ => 8,
                    };
                    let r = reg(size, ch);
                    set_reg(&mut instr, r);
                }
            }
            K::mem => {
                memory_operand(&mut instr, i, ch, ctx, state)?;
                has_mem = true;
            }
            K::r8_reg | K::r8_opcode => {
                let r = reg(1, ch);
                set_reg(&mut instr, r);
            }
            K::r16_reg | K::r16_rm | K::r16_opcode => {
                let r = reg(2, ch);
                set_reg(&mut instr, r);
            }
            K::r32_reg | K::r32_rm | K::r32_opcode | K::r32_vvvv => {
                let r = reg(4, ch);
                set_reg(&mut instr, r);
            }
            K::r64_reg | K::r64_rm | K::r64_opcode | K::r64_vvvv => {
                let r = reg(8, ch);
                set_reg(&mut instr, r);
            }
            K::mem_offs => {
                // MOV AL/AX/EAX/RAX <-> [moffs64]: an absolute 64-bit address.
                let size = memory_size_of(code);
                instr.set_op_kind(i, OpKind::Memory);
                instr.set_memory_displacement64(pick_target(ch, size));
                instr.set_memory_displ_size(8);
                has_mem = true;
            }
            K::seg_rBX_al => {
                // XLAT: [RBX + AL] (EBX with a 32-bit address size).
                let addr32 = ch.below(4) == 0;
                instr.set_op_kind(i, OpKind::Memory);
                instr.set_memory_base(if addr32 { Register::EBX } else { Register::RBX });
                instr.set_memory_index(Register::AL);
                let table = pick_target(ch, 256).min(SCRATCH_BASE + SCRATCH_SIZE as u64);
                state.gpr[3] = table | if addr32 { ch.word() << 32 } else { 0 };
                has_mem = true;
            }
            K::mm_or_mem | K::xmm_or_mem => {
                if ch.below(2) == 0 {
                    memory_operand(&mut instr, i, ch, ctx, state)?;
                    has_mem = true;
                } else {
                    let r = vector_reg(kind == K::xmm_or_mem, ch);
                    set_reg(&mut instr, r);
                }
            }
            K::mm_reg | K::mm_rm => set_reg(&mut instr, vector_reg(false, ch)),
            K::xmm_reg | K::xmm_rm => set_reg(&mut instr, vector_reg(true, ch)),
            K::st0 => set_reg(&mut instr, Register::ST0),
            K::sti_opcode => {
                let n = ch.below(8) as usize;
                set_reg(&mut instr, reg_at(Register::ST0, n));
            }
            K::al => set_reg(&mut instr, Register::AL),
            K::cl => set_reg(&mut instr, Register::CL),
            K::ax => set_reg(&mut instr, Register::AX),
            K::eax => set_reg(&mut instr, Register::EAX),
            K::rax => set_reg(&mut instr, Register::RAX),
            K::imm8 if i == 1 && matches!(code.mnemonic(), iced_x86::Mnemonic::Enter) => {
                // ENTER's nesting level is the instruction's second immediate.
                instr.set_op_kind(i, OpKind::Immediate8_2nd);
                instr.set_immediate8_2nd(if ch.below(2) == 0 {
                    ch.below(4) as u8
                } else {
                    ch.word() as u8
                });
            }
            K::imm8 | K::imm8_const_1 | K::imm8sex16 | K::imm8sex32 | K::imm8sex64 => {
                let kind_out = match kind {
                    K::imm8sex16 => OpKind::Immediate8to16,
                    K::imm8sex32 => OpKind::Immediate8to32,
                    K::imm8sex64 => OpKind::Immediate8to64,
                    _ => OpKind::Immediate8,
                };
                instr.set_op_kind(i, kind_out);
                let v = if kind == K::imm8_const_1 {
                    1
                } else if ch.below(2) == 0 {
                    // Shift and bit-offset counts: mostly small.
                    ch.below(80) as u8
                } else {
                    ch.value() as u8
                };
                instr.set_immediate8(v);
            }
            K::imm16 => {
                instr.set_op_kind(i, OpKind::Immediate16);
                instr.set_immediate16(ch.value() as u16);
            }
            K::imm32 | K::imm32sex64 => {
                let k = if kind == K::imm32 {
                    OpKind::Immediate32
                } else {
                    OpKind::Immediate32to64
                };
                instr.set_op_kind(i, k);
                instr.set_immediate32(ch.value() as u32);
            }
            K::imm64 => {
                instr.set_op_kind(i, OpKind::Immediate64);
                instr.set_immediate64(ch.value());
            }
            _ => return None,
        }
    }
    if matches!(
        code.mnemonic(),
        iced_x86::Mnemonic::Enter | iced_x86::Mnemonic::Leave
    ) {
        // ENTER and LEAVE address memory through RBP (LEAVE loads RSP from it): keep it
        // in the scratch area, never pointing into the host's memory.
        if matches!(ctx.mem, MemPlan::Pinned { .. }) || ctx.excluded().contains(5) {
            return None;
        }
        state.gpr[5] = pick_target(ch, 8);
    }
    if is_bit_test_with_register_offset(code) && has_mem {
        // BT* m, r: the register is a signed bit offset that moves the address by up to
        // +-2^60 bytes, which could reach the host's own memory. Keep it within
        // +-32 bytes of the chosen address (or refuse if the register also forms it).
        let r = instr.op_register(1);
        let n = gpr_number(r)?;
        let in_address = [instr.memory_base(), instr.memory_index()]
            .iter()
            .any(|m| gpr_number(*m) == Some(n));
        if in_address || matches!(ctx.mem, MemPlan::Pinned { .. }) {
            return None;
        }
        state.gpr[n] = (ch.below(512) as i64 - 256) as u64;
    }
    // LOCK on a memory destination is the atomic form. (On a register it is #UD, but
    // iced-x86 does not decode it, so the oracle's snippet check would refuse it.)
    if op.can_use_lock_prefix() && has_mem && ch.below(4) == 0 {
        instr.set_has_lock_prefix(true);
    }
    if ctx.bits == 32
        && matches!(
            code.mnemonic(),
            iced_x86::Mnemonic::Lds | iced_x86::Mnemonic::Les
        )
    {
        far_pointer_selector(&instr, ch, state);
    }
    let mut encoder = Encoder::new(ctx.bits);
    if encoder.encode(&instr, ctx.ip).is_err() {
        // AH..BH cannot be encoded with a REX prefix: use AL..BL instead.
        for i in 0..instr.op_count() {
            if instr.op_kind(i) == OpKind::Register {
                let r = instr.op_register(i);
                if matches!(r, Register::AH | Register::CH | Register::DH | Register::BH) {
                    let low = reg_at(Register::AL, r as usize - Register::AH as usize);
                    instr.set_op_register(i, low);
                }
            }
        }
        // A failed encode may leave partial bytes behind: start a fresh buffer.
        encoder = Encoder::new(ctx.bits);
        encoder.encode(&instr, ctx.ip).ok()?;
    }
    Some(encoder.take_buffer())
}

/// LDS/LES: put a selector worth loading into the far pointer the instruction reads
/// (the memory operand's address is in the state already): null, Linux's user data and
/// user code selectors, a kernel selector (#GP), or one beyond the GDT limit (#GP).
/// Selectors 0x78-0x7f are avoided: Linux's per-CPU segment there has a limit that
/// depends on the CPU the test runs on.
fn far_pointer_selector(instr: &Instruction, ch: &mut Choices, state: &mut State) {
    let reg_val = |r: Register| gpr_number(r).map_or(0, |n| state.gpr[n]);
    let base = reg_val(instr.memory_base());
    let index = reg_val(instr.memory_index());
    let ea = base
        .wrapping_add(index.wrapping_mul(u64::from(instr.memory_index_scale())))
        .wrapping_add(instr.memory_displacement64())
        & 0xffff_ffff;
    let off = if instr.memory_size().size() == 6 {
        4
    } else {
        2
    };
    let sel: u16 = match ch.below(8) {
        0 => 0,
        1 | 2 => 0x2b,
        3 => 0x23,
        4 => 0x33,
        5 => 0x18,
        6 => 0x80 | ch.word() as u16,
        _ => ch.word() as u16 & 3,
    };
    let at = ea.wrapping_add(off).wrapping_sub(SCRATCH_BASE);
    if let Ok(at) = usize::try_from(at) {
        if at
            .checked_add(2)
            .is_some_and(|end| end <= state.scratch.len())
        {
            state.scratch[at..at + 2].copy_from_slice(&sel.to_le_bytes());
        }
    }
}

/// A string instruction (MOVS, CMPS, STOS, LODS, SCAS, MASKMOVQ/MASKMOVDQU): 64- or
/// 32-bit address size, with no prefix, REP/REPE or (for CMPS and SCAS) REPNE, a count
/// of up to 24 elements or (one case in three) up to the scratch area's size, so the run
/// crosses the page boundary inside it, and RSI/RDI placed so the elements (walking up
/// or down with DF) mostly stay inside the scratch area and sometimes run off it (the run
/// then faults part-way, with the registers at the faulting element).
fn build_string(
    code: Code,
    ch: &mut Choices,
    ctx: &BuildCtx,
    state: &mut State,
) -> Option<Vec<u8>> {
    use iced_x86::Mnemonic as M;
    use OpCodeOperandKind as K;
    if !matches!(ctx.mem, MemPlan::Free) {
        // Sequences pin registers for their memory operands; a string instruction
        // would move them under the later instructions.
        return None;
    }
    let op = code.op_code();
    let mut instr = Instruction::default();
    instr.set_code(code);
    let addr32 = ch.below(4) == 0;
    let conditional = matches!(
        code.mnemonic(),
        M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq | M::Scasb | M::Scasw | M::Scasd | M::Scasq
    );
    let repeatable = op.can_use_rep_prefix() || op.can_use_repne_prefix();
    let rep = if repeatable { ch.below(3) } else { 0 };
    match rep {
        1 if conditional => instr.set_has_repe_prefix(true),
        1 => instr.set_has_rep_prefix(true),
        2 if conditional => instr.set_has_repne_prefix(true),
        2 => instr.set_has_rep_prefix(true),
        _ => {}
    }
    let size = memory_size_of(code);
    let count = match rep {
        0 => 1,
        // Long: across the page boundary in the middle of the scratch area.
        _ if ch.below(3) == 0 => 1 + ch.below(SCRATCH_SIZE as u64 / size),
        _ => ch.below(25),
    };
    let down = state.rflags & crate::DF != 0;
    let high = |ch: &mut Choices| if addr32 { ch.word() << 32 } else { 0 };
    let place = |ch: &mut Choices| -> u64 {
        let span = size * count.max(1);
        let area = SCRATCH_SIZE as u64;
        let off = if ch.below(8) == 0 {
            // Anywhere, possibly running off either end.
            ch.below(area + 64)
        } else if down {
            span - size + ch.below(area - span + 1)
        } else {
            ch.below(area - span + 1)
        };
        SCRATCH_BASE + off
    };
    for (i, &kind) in op.op_kinds().iter().enumerate() {
        let i = i as u32;
        match kind {
            K::seg_rSI => {
                instr.set_op_kind(
                    i,
                    if addr32 {
                        OpKind::MemorySegESI
                    } else {
                        OpKind::MemorySegRSI
                    },
                );
                state.gpr[6] = place(ch) | high(ch);
            }
            K::es_rDI => {
                instr.set_op_kind(
                    i,
                    if addr32 {
                        OpKind::MemoryESEDI
                    } else {
                        OpKind::MemoryESRDI
                    },
                );
                state.gpr[7] = place(ch) | high(ch);
            }
            K::seg_rDI => {
                instr.set_op_kind(
                    i,
                    if addr32 {
                        OpKind::MemorySegEDI
                    } else {
                        OpKind::MemorySegRDI
                    },
                );
                state.gpr[7] = place(ch) | high(ch);
            }
            K::al | K::ax | K::eax | K::rax => {
                let r = match kind {
                    K::al => Register::AL,
                    K::ax => Register::AX,
                    K::eax => Register::EAX,
                    _ => Register::RAX,
                };
                instr.set_op_kind(i, OpKind::Register);
                instr.set_op_register(i, r);
            }
            K::mm_reg | K::mm_rm => {
                instr.set_op_kind(i, OpKind::Register);
                instr.set_op_register(i, vector_reg(false, ch));
            }
            K::xmm_reg | K::xmm_rm => {
                instr.set_op_kind(i, OpKind::Register);
                instr.set_op_register(i, vector_reg(true, ch));
            }
            _ => return None,
        }
    }
    if rep != 0 {
        state.gpr[1] = count | high(ch);
    }
    if rep == 1 && conditional && ch.below(2) == 0 {
        // REPE over random bytes stops at once: make the run equal (the destination a
        // copy of the source, or of the accumulator for SCAS), sometimes but for one
        // element, so the comparison goes on across pages.
        equalize_run(code, state, count, size, down, addr32, ch);
    }
    let mut encoder = Encoder::new(64);
    encoder.encode(&instr, ctx.ip).ok()?;
    Some(encoder.take_buffer())
}

/// Make a REPE CMPS/SCAS run of `count` elements of `size` bytes compare equal where it
/// lies inside the scratch area (see [`build_string`]); one element in two cases differs.
fn equalize_run(
    code: Code,
    state: &mut State,
    count: u64,
    size: u64,
    down: bool,
    addr32: bool,
    ch: &mut Choices,
) {
    if count == 0 {
        return;
    }
    let addr = |r: u64| if addr32 { r & 0xffff_ffff } else { r };
    let span = size * count;
    // The offset in scratch of the run's lowest byte starting from register value `r`.
    let low = |r: u64| {
        let first = addr(r).wrapping_sub(SCRATCH_BASE);
        let lo = if down {
            first.wrapping_sub(span - size)
        } else {
            first
        };
        (lo <= SCRATCH_SIZE as u64 && span <= SCRATCH_SIZE as u64 - lo).then_some(lo as usize)
    };
    let Some(dst) = low(state.gpr[7]) else {
        return;
    };
    let span = span as usize;
    let scas = matches!(
        code.mnemonic(),
        iced_x86::Mnemonic::Scasb
            | iced_x86::Mnemonic::Scasw
            | iced_x86::Mnemonic::Scasd
            | iced_x86::Mnemonic::Scasq
    );
    if scas {
        let acc = state.gpr[0].to_le_bytes();
        for (i, b) in state.scratch[dst..dst + span].iter_mut().enumerate() {
            *b = acc[i % size as usize];
        }
    } else {
        let Some(src) = low(state.gpr[6]) else {
            return;
        };
        state.scratch.copy_within(src..src + span, dst);
    }
    if count > 1 && ch.below(2) == 0 {
        let at = dst + ch.below(span as u64) as usize;
        state.scratch[at] ^= 1;
    }
}

/// BT/BTS/BTR/BTC with a register bit offset (whose memory form addresses memory
/// relative to the offset).
pub fn is_bit_test_with_register_offset(code: Code) -> bool {
    use iced_x86::Mnemonic as M;
    matches!(code.mnemonic(), M::Bt | M::Bts | M::Btr | M::Btc)
        && code.op_code().op_kinds().get(1).is_some_and(|k| {
            matches!(
                k,
                OpCodeOperandKind::r16_reg
                    | OpCodeOperandKind::r32_reg
                    | OpCodeOperandKind::r64_reg
            )
        })
}

/// A random initial state: biased register values (RSP in the middle of the scratch
/// area, give or take), random status flags, scratch filled from a seed.
pub fn random_state(ch: &mut Choices) -> State {
    let mut s = State::new();
    for (i, g) in s.gpr.iter_mut().enumerate() {
        if i != 4 {
            *g = ch.value();
        }
    }
    s.gpr[4] = SCRATCH_BASE + 0x800 + (ch.below(0x400) & !7);
    let flag_bits = crate::CF | crate::PF | crate::AF | crate::ZF | crate::SF | crate::OF;
    s.rflags = 0x2 | (ch.word() & flag_bits);
    let mut x = ch.word() | 1;
    for chunk in s.scratch.chunks_mut(8) {
        // xorshift64: cheap, and the seed word shrinks to a simple pattern.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    fill_fpu(ch.word(), &mut s);
    s
}

/// xorshift64 step.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Single-precision values that exercise the IEEE corner cases.
const F32_EDGES: [u32; 16] = [
    0x0000_0000, // +0
    0x8000_0000, // -0
    0x3f80_0000, // 1
    0xbf80_0000, // -1
    0x0000_0001, // smallest denormal
    0x807f_ffff, // largest negative denormal
    0x0080_0000, // smallest normal
    0x7f7f_ffff, // largest finite
    0x7f80_0000, // +inf
    0xff80_0000, // -inf
    0x7fc0_0000, // QNaN
    0xffc0_0000, // the default NaN
    0x7f80_0001, // SNaN
    0x4f00_0000, // 2^31
    0x3f00_0000, // 0.5
    0x4b40_0001, // 2^23 + 2^22 + 1 (rounding boundary)
];

/// Double-precision values that exercise the IEEE corner cases.
const F64_EDGES: [u64; 16] = [
    0,
    0x8000_0000_0000_0000,
    0x3ff0_0000_0000_0000,
    0xbff0_0000_0000_0000,
    1,
    0x800f_ffff_ffff_ffff,
    0x0010_0000_0000_0000,
    0x7fef_ffff_ffff_ffff,
    0x7ff0_0000_0000_0000,
    0xfff0_0000_0000_0000,
    0x7ff8_0000_0000_0000,
    0xfff8_0000_0000_0000,
    0x7ff0_0000_0000_0001,
    0x43e0_0000_0000_0000, // 2^63
    0x3fe0_0000_0000_0000,
    0x4338_0000_0000_0001,
];

/// A random 32-bit lane: an edge value, a float near 1 with random low bits, or bits.
fn f32_lane(x: &mut u64) -> u32 {
    let r = next(x);
    match r & 3 {
        0 => F32_EDGES[((r >> 8) & 15) as usize],
        1 => 0x3f80_0000 ^ ((r >> 16) as u32 & 0x807f_ffff),
        2 => ((r >> 20) as u32 & 0x0fff_ffff) | (((r >> 4) as u32 & 0xf) << 28),
        _ => (r >> 32) as u32,
    }
}

/// A random 64-bit lane (see [`f32_lane`]).
fn f64_lane(x: &mut u64) -> u64 {
    let r = next(x);
    match r & 3 {
        0 => F64_EDGES[((r >> 8) & 15) as usize],
        1 => 0x3ff0_0000_0000_0000 ^ (next(x) & 0x800f_ffff_ffff_ffff),
        2 => u64::from(f32_lane(x)) | (u64::from(f32_lane(x)) << 32),
        _ => next(x),
    }
}

/// A random 80-bit x87 register value: from a double, an integer, a special, or bits.
fn f80_value(x: &mut u64) -> u128 {
    let r = next(x);
    let (sign, exp, sig): (u128, u128, u128) = match r & 7 {
        0 => (0, 0, 0),                          // +0
        1 => (0, 0x3fff, 1 << 63),               // 1
        2 => (1, 0x7fff, 1 << 63),               // -inf
        3 => (0, 0x7fff, 0xc000_0000_0000_0000), // QNaN
        4 => (0, 0, u128::from(next(x) >> 1)),   // denormal
        5 => (
            u128::from((r >> 8) & 1),
            0x3fff + u128::from((r >> 9) & 0x3f) - 0x20,
            u128::from(next(x) | (1 << 63)),
        ),
        6 => (
            u128::from((r >> 8) & 1),
            u128::from((r >> 9) & 0x7fff),
            u128::from(next(x) | (1 << 63)),
        ),
        _ => (
            u128::from((r >> 8) & 1),
            u128::from((r >> 9) & 0x7fff),
            u128::from(next(x)),
        ),
    };
    sig | (exp << 64) | (sign << 79)
}

/// Fill the SSE and x87 part of `s` from `seed`. Seed 0 (what shrinking reaches) keeps
/// the default state; otherwise XMM lanes are float edge cases or random bits, MXCSR has
/// random rounding, DAZ/FTZ and flags (and now and then unmasked exceptions), and the
/// x87 stack holds a random number of values with random precision and rounding.
pub fn fill_fpu(seed: u64, s: &mut State) {
    if seed == 0 {
        return;
    }
    let mut x = seed | 1;
    for v in s.xmm.iter_mut() {
        let mut lanes = 0u128;
        match next(&mut x) & 3 {
            0 => {
                for l in 0..4 {
                    lanes |= u128::from(f32_lane(&mut x)) << (32 * l);
                }
            }
            1 => {
                for l in 0..2 {
                    lanes |= u128::from(f64_lane(&mut x)) << (64 * l);
                }
            }
            _ => lanes = u128::from(next(&mut x)) | (u128::from(next(&mut x)) << 64),
        }
        *v = lanes;
    }
    let r = next(&mut x);
    let masks = if r & 7 == 0 {
        ((r >> 8) as u32 & 0x3f) << 7
    } else {
        0x3f << 7
    };
    let rc = ((r >> 16) as u32 & 3) << 13;
    let daz_ftz = if r & (1 << 20) != 0 {
        (((r >> 21) as u32 & 1) << 6) | (((r >> 22) as u32 & 1) << 15)
    } else {
        0
    };
    let flags = if r & (1 << 23) != 0 {
        (r >> 24) as u32 & 0x3f
    } else {
        0
    };
    s.mxcsr = masks | rc | daz_ftz | flags;
    let r = next(&mut x);
    let depth = (r & 7) as usize + usize::from(r & 8 != 0);
    let top = ((r >> 4) & 7) as usize;
    let pc = [0u16, 2, 3, 3][((r >> 8) & 3) as usize] << 8;
    let rc = (((r >> 10) & 3) as u16) << 10;
    let masks = if (r >> 12) & 7 == 0 {
        (r >> 16) as u16 & 0x3f
    } else {
        0x3f
    };
    s.x87.fcw = 0x40 | pc | rc | masks;
    // The stack grows down from TOP: ST(0)..ST(depth-1) are full.
    let new_top = (top + 8 - depth % 8) % 8;
    s.x87.fsw = (new_top as u16) << 11;
    s.x87.ftw = 0;
    for i in 0..8 {
        s.x87.st[i] = f80_value(&mut x);
    }
    for k in 0..depth.min(8) {
        s.x87.ftw |= 1 << ((new_top + k) % 8);
    }
}

/// Registers a sequence may pin as base and index: never written implicitly by the
/// integer instructions the tests use (unlike RAX, RCX, RDX and RSP).
pub const PINNABLE: [usize; 12] = [3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// Build a snippet of `count` instructions drawn from `codes` (a sequence), with one
/// base and one index register pinned for all memory operands. Returns the bytes and the
/// initial state. Instructions that fail to build are skipped.
pub fn build_sequence(codes: &[Code], count: usize, ch: &mut Choices) -> (Vec<u8>, State) {
    let mut state = random_state(ch);
    let base = PINNABLE[ch.below(PINNABLE.len() as u64) as usize];
    let mut index = PINNABLE[ch.below(PINNABLE.len() as u64) as usize];
    if index == base {
        index =
            PINNABLE[(PINNABLE.iter().position(|&r| r == base).unwrap_or(0) + 1) % PINNABLE.len()];
    }
    state.gpr[base] = SCRATCH_BASE + ch.below(SCRATCH_SIZE as u64);
    state.gpr[index] = ch.below(64);
    let mut avoid = RegSet::default();
    avoid.insert(base);
    avoid.insert(index);
    // RSP too: a later PUSH-like access must stay in the scratch area.
    avoid.insert(4);
    let mut bytes = Vec::new();
    if codes.is_empty() {
        return (bytes, state);
    }
    for _ in 0..count {
        let code = codes[ch.below(codes.len() as u64) as usize];
        let ctx = BuildCtx {
            ip: CODE_BASE + bytes.len() as u64,
            avoid,
            mem: MemPlan::Pinned { base, index },
            ..BuildCtx::default()
        };
        // The memory plan never writes the state, so building cannot disturb it.
        if let Some(b) = build(code, ch, &ctx, &mut state) {
            bytes.extend_from_slice(&b);
        }
    }
    (bytes, state)
}

//! Integer instructions: arithmetic, logic, shifts, bit operations, moves, flag
//! operations, BCD and the BMI/ADX extensions, in register and `[rbx+disp8]` forms.
//!
//! Every encoding (iced-x86 `Code`) of the listed mnemonics that exists in the mode is a
//! candidate; a mnemonic is chosen first, then one of its encodings, so mnemonics with
//! many forms (ADD has twenty) are not favoured over those with one (CQO).

use super::emit::{self, Gen};
use crate::case::{Item, Mode};
use alloc::vec::Vec;
use emit::Table;
use iced_x86::{Code, EncodingKind, Mnemonic, OpCodeOperandKind};
use std::sync::OnceLock;

const MNEMONICS: &[Mnemonic] = &[
    Mnemonic::Mov,
    Mnemonic::Add,
    Mnemonic::Adc,
    Mnemonic::Sub,
    Mnemonic::Sbb,
    Mnemonic::And,
    Mnemonic::Or,
    Mnemonic::Xor,
    Mnemonic::Cmp,
    Mnemonic::Test,
    Mnemonic::Inc,
    Mnemonic::Dec,
    Mnemonic::Neg,
    Mnemonic::Not,
    Mnemonic::Mul,
    Mnemonic::Imul,
    Mnemonic::Div,
    Mnemonic::Idiv,
    Mnemonic::Shl,
    Mnemonic::Sal,
    Mnemonic::Shr,
    Mnemonic::Sar,
    Mnemonic::Rol,
    Mnemonic::Ror,
    Mnemonic::Rcl,
    Mnemonic::Rcr,
    Mnemonic::Shld,
    Mnemonic::Shrd,
    Mnemonic::Bt,
    Mnemonic::Bts,
    Mnemonic::Btr,
    Mnemonic::Btc,
    Mnemonic::Bsf,
    Mnemonic::Bsr,
    Mnemonic::Bswap,
    Mnemonic::Xchg,
    Mnemonic::Xadd,
    Mnemonic::Cmpxchg,
    Mnemonic::Cmpxchg8b,
    Mnemonic::Cmpxchg16b,
    Mnemonic::Movzx,
    Mnemonic::Movsx,
    Mnemonic::Movsxd,
    Mnemonic::Cmovo,
    Mnemonic::Cmovno,
    Mnemonic::Cmovb,
    Mnemonic::Cmovae,
    Mnemonic::Cmove,
    Mnemonic::Cmovne,
    Mnemonic::Cmovbe,
    Mnemonic::Cmova,
    Mnemonic::Cmovs,
    Mnemonic::Cmovns,
    Mnemonic::Cmovp,
    Mnemonic::Cmovnp,
    Mnemonic::Cmovl,
    Mnemonic::Cmovge,
    Mnemonic::Cmovle,
    Mnemonic::Cmovg,
    Mnemonic::Seto,
    Mnemonic::Setno,
    Mnemonic::Setb,
    Mnemonic::Setae,
    Mnemonic::Sete,
    Mnemonic::Setne,
    Mnemonic::Setbe,
    Mnemonic::Seta,
    Mnemonic::Sets,
    Mnemonic::Setns,
    Mnemonic::Setp,
    Mnemonic::Setnp,
    Mnemonic::Setl,
    Mnemonic::Setge,
    Mnemonic::Setle,
    Mnemonic::Setg,
    Mnemonic::Lea,
    Mnemonic::Cbw,
    Mnemonic::Cwde,
    Mnemonic::Cdqe,
    Mnemonic::Cwd,
    Mnemonic::Cdq,
    Mnemonic::Cqo,
    Mnemonic::Lahf,
    Mnemonic::Sahf,
    Mnemonic::Clc,
    Mnemonic::Stc,
    Mnemonic::Cmc,
    Mnemonic::Cld,
    Mnemonic::Std,
    Mnemonic::Daa,
    Mnemonic::Das,
    Mnemonic::Aaa,
    Mnemonic::Aas,
    Mnemonic::Aam,
    Mnemonic::Aad,
    Mnemonic::Bound,
    Mnemonic::Arpl,
    Mnemonic::Popcnt,
    Mnemonic::Lzcnt,
    Mnemonic::Tzcnt,
    Mnemonic::Andn,
    Mnemonic::Bextr,
    Mnemonic::Bzhi,
    Mnemonic::Pdep,
    Mnemonic::Pext,
    Mnemonic::Sarx,
    Mnemonic::Shlx,
    Mnemonic::Shrx,
    Mnemonic::Rorx,
    Mnemonic::Mulx,
    Mnemonic::Adcx,
    Mnemonic::Adox,
    Mnemonic::Movbe,
    Mnemonic::Crc32,
];

fn table(mode: Mode) -> &'static Table {
    static TABLES: OnceLock<[Table; 3]> = OnceLock::new();
    emit::table_for(&TABLES, mode, |mode| {
        emit::encodings_by_mnemonic(mode, Some(MNEMONICS), usable)
    })
}

fn usable(code: Code, mode: Mode) -> bool {
    if !emit::valid_in(code, mode) || !emit::fillable(code) {
        return false;
    }
    let info = code.op_code();
    let encoding_ok = match info.encoding() {
        EncodingKind::Legacy => true,
        // Real mode has no VEX (C4/C5 are LES/LDS there).
        EncodingKind::VEX => mode != Mode::Real,
        _ => false,
    };
    encoding_ok
        // The result of BSWAP on a 16-bit register is undefined.
        && code != Code::Bswap_r16
        // ARPL is #UD in real mode; real mode is the only 16-bit mode here.
        && !(code.mnemonic() == Mnemonic::Arpl && mode == Mode::Real)
}

/// BT/BTS/BTR/BTC with a register bit offset address memory up to 2^31 bytes away from
/// `[rbx+disp8]`: only their register-destination forms are emitted.
fn bit_offset_reaches_far(code: Code) -> bool {
    let info = code.op_code();
    matches!(
        code.mnemonic(),
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
    ) && info.op_count() == 2
        && matches!(
            info.op_kind(1),
            OpCodeOperandKind::r16_reg | OpCodeOperandKind::r32_reg | OpCodeOperandKind::r64_reg
        )
}

/// One integer instruction (after its setup item, for the few that have one).
pub(crate) fn group(g: &mut Gen) -> Option<Vec<Item>> {
    let table = table(g.mode);
    if table.is_empty() {
        return None;
    }
    if g.chance(1, 60) {
        // XLAT: AL = [rbx + AL], within the data area.
        return Some(alloc::vec![Item::Insn(alloc::vec![0xd7])]);
    }
    for _ in 0..16 {
        let (_, codes) = &table[g.below(table.len() as u64) as usize];
        let code = g.pick(codes);
        let Some(mut ins) = emit::fill(g, code) else {
            continue;
        };
        if bit_offset_reaches_far(code) && ins.op0_kind() == iced_x86::OpKind::Memory {
            continue;
        }
        if code.mnemonic() == Mnemonic::Lea {
            lea_operand(g, &mut ins);
        }
        if let Some(items) = double_shift16(g, code, &mut ins) {
            match items {
                Some(items) => return Some(items),
                None => continue,
            }
        }
        if ins.op0_kind() == iced_x86::OpKind::Memory
            && code.op_code().can_use_lock_prefix()
            && g.chance(1, 8)
        {
            ins.set_has_lock_prefix(true);
        }
        if let Some(bytes) = emit::encode(g.mode, &ins) {
            return Some(alloc::vec![Item::Insn(bytes)]);
        }
    }
    None
}

/// One integer instruction that needs no setup item.
pub(crate) fn one(g: &mut Gen) -> Option<Item> {
    for _ in 0..4 {
        if let Some(mut items) = group(g) {
            if items.len() == 1 {
                return items.pop();
            }
        }
    }
    None
}

/// SHLD/SHRD of 16-bit operands leave an undefined result for counts 17..=31: the
/// immediate form gets a count of at most 16, the CL form a `mov cl, 0..=16` item before
/// it (returned as the group).
fn double_shift16(
    g: &mut Gen,
    code: Code,
    ins: &mut iced_x86::Instruction,
) -> Option<Option<Vec<Item>>> {
    match code {
        Code::Shld_rm16_r16_imm8 | Code::Shrd_rm16_r16_imm8 => {
            ins.set_immediate8(g.below(17) as u8);
            None
        }
        Code::Shld_rm16_r16_CL | Code::Shrd_rm16_r16_CL => {
            let count = emit::encode(g.mode, ins).map(Item::Insn);
            let set = emit::item(
                g.mode,
                iced_x86::Instruction::with2(
                    Code::Mov_r8_imm8,
                    iced_x86::Register::CL,
                    g.below(17) as u32,
                ),
            );
            Some(set.zip(count).map(|(a, b)| alloc::vec![a, b]))
        }
        _ => None,
    }
}

/// LEA computes an address without accessing it: give it the full addressing forms.
fn lea_operand(g: &mut Gen, ins: &mut iced_x86::Instruction) {
    use iced_x86::{MemoryOperand, Register};
    let m = if g.real() {
        const FORMS: [(Register, Register); 8] = [
            (Register::BX, Register::SI),
            (Register::BX, Register::DI),
            (Register::BP, Register::SI),
            (Register::BP, Register::DI),
            (Register::SI, Register::None),
            (Register::DI, Register::None),
            (Register::BP, Register::None),
            (Register::BX, Register::None),
        ];
        let (base, index) = g.pick(&FORMS);
        let (disp, size) = match g.below(3) {
            0 => (0, 0),
            1 => (i64::from(g.disp() as i16 as u16), 1),
            _ => (g.value(16) as i64, 2),
        };
        let size = if base == Register::BP && index == Register::None && size == 0 {
            1
        } else {
            size
        };
        MemoryOperand::new(base, index, 1, disp, size, false, Register::None)
    } else {
        let size = if g.long() { 8 } else { 4 };
        let base = emit::reg_native(g.mode, emit::any_reg(g, size));
        let index = if g.chance(1, 2) {
            let r = emit::reg_native(g.mode, emit::any_reg(g, size));
            if r.full_register() == Register::RSP {
                Register::None
            } else {
                r
            }
        } else {
            Register::None
        };
        let scale = g.pick(&[1, 2, 4, 8]);
        let (disp, dsize) = match g.below(3) {
            0 => (0, 0),
            1 => (g.disp(), 1),
            _ => (i64::from(g.value(32) as u32 as i32), 4),
        };
        let disp = if g.long() {
            disp
        } else {
            i64::from(disp as i32 as u32)
        };
        MemoryOperand::new(base, index, scale, disp, dsize, false, Register::None)
    };
    emit::set_mem(ins, 1, m);
}

//! The x87 floating-point unit: loads and stores of every format, arithmetic, compares,
//! FXAM, the control and status words, the environment (FLDENV/FSTENV/FSAVE/FRSTOR) and
//! FXSAVE/FXRSTOR. One family per file; this module holds what they share: the register
//! stack (tags, TOP, push and pop), the instruction prologue (#NM, pending #MF, the
//! last-instruction pointers) and the exception bookkeeping of the status word.
//!
//! Arithmetic goes through [`crate::arith::softfloat`]; the x87-specific parts (stack
//! faults, masked and unmasked responses, C1 as the round-up indicator, the bias-adjusted
//! results of unmasked overflow and underflow) are done here.

pub mod arith;
pub mod compare;
pub mod constants;
pub mod control;
pub mod environment;
pub mod f80;
pub mod fxsave;
pub mod load_store;
mod opcodes;
pub mod stack;
pub mod transcendental;

use crate::arith::softfloat::{exc, Env, Round};
use crate::cpu::{cr0, Cpu};
use crate::decode::{Handler, Op};
use crate::exception::{fault, Ex, NM};
use crate::fpu::{fsw, X87};
use iced_x86::{Code, CpuidFeature, OpKind};

/// The handler for `op` if this family implements it.
pub fn select(op: &Op) -> Option<Handler> {
    let code = op.i.code();
    if !in_scope(code) {
        return None;
    }
    load_store::select(code)
        .or_else(|| arith::select(code))
        .or_else(|| compare::select(code))
        .or_else(|| constants::select(code))
        .or_else(|| control::select(code))
        .or_else(|| environment::select(code))
        .or_else(|| stack::select(code))
        .or_else(|| transcendental::select(code))
        .or_else(|| fxsave::select(code))
}

/// The Codes of this family: legacy encodings whose CPUID features are the x87 ones
/// (with CMOV for FCMOVcc/FCOMI and SSE3 for FISTTP), FXSAVE/FXRSTOR and WAIT.
pub fn in_scope(code: Code) -> bool {
    if code.encoding() != iced_x86::EncodingKind::Legacy {
        return false;
    }
    if matches!(code, Code::Wait) {
        return true;
    }
    let f = code.cpuid_features();
    let x87 = f.iter().any(|&f| {
        matches!(
            f,
            CpuidFeature::FPU | CpuidFeature::FPU287 | CpuidFeature::FPU387
        )
    });
    let only = f.iter().all(|&f| {
        matches!(
            f,
            CpuidFeature::FPU
                | CpuidFeature::FPU287
                | CpuidFeature::FPU387
                | CpuidFeature::CMOV
                | CpuidFeature::SSE3
        )
    });
    (x87 && only)
        || matches!(
            code,
            Code::Fxsave_m512byte
                | Code::Fxsave64_m512byte
                | Code::Fxrstor_m512byte
                | Code::Fxrstor64_m512byte
        )
}

/// Whether ST(`i`) is empty.
#[inline]
pub fn is_empty(x: &X87, i: usize) -> bool {
    x.ftw & (1 << x.phys(i)) == 0
}

/// ST(`i`) (whatever its tag).
#[inline]
pub fn st(x: &X87, i: usize) -> u128 {
    x.regs[x.phys(i)] & f80::MASK
}

/// Write ST(`i`) and tag it not empty.
#[inline]
pub fn set_st(x: &mut X87, i: usize, v: u128) {
    let p = x.phys(i);
    x.regs[p] = v & f80::MASK;
    x.ftw |= 1 << p;
}

/// Push `v`: TOP - 1, then ST(0) = `v`.
#[inline]
pub fn push(x: &mut X87, v: u128) {
    let t = (x.top() + 7) & 7;
    x.set_top(t);
    set_st(x, 0, v);
}

/// Pop: tag ST(0) empty, TOP + 1.
#[inline]
pub fn pop(x: &mut X87) {
    let p = x.top();
    x.ftw &= !(1 << p);
    x.set_top(p + 1);
}

/// Set or clear condition code bits: `bits` among C0..C3 take the values in `v`.
#[inline]
pub fn set_cc(x: &mut X87, bits: u16, v: u16) {
    x.fsw = (x.fsw & !bits) | (v & bits);
}

/// All four condition codes.
pub const CC: u16 = fsw::C0 | fsw::C1 | fsw::C2 | fsw::C3;

/// Whether exception `flag` ([`exc`] bit) is masked in the control word.
#[inline]
pub fn masked(x: &X87, flag: u32) -> bool {
    u32::from(x.fcw) & flag != 0
}

/// Record exception flags in the status word: set them, and ES and B when one of them
/// is unmasked. Returns whether an unmasked invalid-operation, denormal or zero-divide
/// exception is among them: those suppress the result (and any pop).
pub fn signal(x: &mut X87, flags: u32) -> bool {
    let mut flags = flags & exc_all();
    // An invalid operand takes precedence over a denormal one.
    if flags & exc::IE != 0 {
        flags &= !exc::DE;
    }
    // An unmasked invalid-operation, denormal or zero-divide exception stops the
    // operation before it produces a result, so no overflow, underflow or precision
    // exception is reported with it.
    if flags & !u32::from(x.fcw) & (exc::IE | exc::DE | exc::ZE) != 0 {
        flags &= exc::IE | exc::DE | exc::ZE;
    }
    x.fsw |= flags as u16;
    let unmasked = flags & !u32::from(x.fcw) & exc_all();
    if unmasked != 0 {
        x.fsw |= fsw::ES | fsw::B;
    }
    unmasked & (exc::IE | exc::DE | exc::ZE) != 0
}

fn exc_all() -> u32 {
    exc::IE | exc::DE | exc::ZE | exc::OE | exc::UE | exc::PE
}

/// Stack underflow (an empty source register): IE and SF, C1 cleared. Returns true when
/// IE is masked (the caller then delivers the masked response).
pub fn underflow(x: &mut X87) -> bool {
    x.fsw = (x.fsw & !fsw::C1) | fsw::SF;
    !signal(x, exc::IE)
}

/// Stack overflow (a push onto a full register): IE, SF and C1. Returns true when IE is
/// masked.
pub fn overflow(x: &mut X87) -> bool {
    x.fsw |= fsw::SF | fsw::C1;
    !signal(x, exc::IE)
}

/// The environment for an operation on the x87 stack; `pc` applies the precision
/// control (only the basic arithmetic instructions do).
pub fn env(x: &X87, pc: bool) -> Env {
    let mut e = Env::x87(x.fcw);
    if !pc {
        e.precision = 64;
    }
    e
}

/// Run `f` in `e`, also with rounding toward zero when the result is inexact, and report
/// whether the result was rounded up in magnitude (C1). `e.flags` holds the flags of
/// the real computation afterwards.
pub fn with_roundup(e: &mut Env, f: impl Fn(&mut Env) -> u128) -> (u128, bool) {
    let r = f(e);
    if e.flags & exc::PE == 0 {
        return (r, false);
    }
    if e.round == Round::Zero {
        return (r, false);
    }
    let mut z = *e;
    z.round = Round::Zero;
    z.flags = 0;
    let t = f(&mut z);
    (r, f80::magnitude(r) > f80::magnitude(t))
}

/// The prologue of a non-control x87 instruction: #NM, pending #MF, then the last
/// instruction (and, with a memory operand, data) pointers and opcode.
pub fn start(c: &mut Cpu, op: &Op) -> Result<(), Ex> {
    c.x87_check()?;
    c.x87_pending_check()?;
    record_pointers(c, op);
    Ok(())
}

/// The prologue of a control instruction (FLDCW, FSTENV, FSAVE, ...): #NM, and pending
/// #MF only for the waiting forms; the pointers are left alone.
pub fn start_control(c: &mut Cpu, wait: bool) -> Result<(), Ex> {
    c.x87_check()?;
    if wait {
        c.x87_pending_check()?;
    }
    Ok(())
}

/// Store FIP/FCS/FOP (and FDP/FDS for a memory operand) for `op`.
pub fn record_pointers(c: &mut Cpu, op: &Op) {
    let ipmask = match c.bits {
        64 => u64::MAX,
        32 => 0xffff_ffff,
        _ => 0xffff,
    };
    let len = op.i.len() as u64;
    let x = &mut c.fpu.x87;
    x.fip = op.next_ip.wrapping_sub(len) & ipmask;
    x.fcs = c.seg[usize::from(crate::cpu::sr::CS)].selector;
    x.fop = fop(op);
    if has_mem(op) {
        let ea = super::ea(c, op);
        let sel = c.seg[usize::from(op.seg) & 7].selector;
        let x = &mut c.fpu.x87;
        x.fdp = ea;
        x.fds = sel;
    }
}

/// Whether the instruction has a memory operand.
pub fn has_mem(op: &Op) -> bool {
    (0..op.i.op_count()).any(|n| op.i.op_kind(n) == OpKind::Memory)
}

/// The 11-bit opcode FSTENV and FXSAVE report: the low three bits of the first opcode
/// byte and the ModR/M byte, rebuilt from the decoded instruction.
pub fn fop(op: &Op) -> u16 {
    let (low, field, is_mem) = opcodes::opcode_parts(op.i.code());
    if is_mem {
        let (md, rm) = modrm_mem(&op.i);
        return (low << 8) | (md << 6) | (field << 3) | rm;
    }
    // Register forms: the ModR/M byte plus the ST(i) number where there is one.
    let mut i = 0u16;
    for n in 0..op.i.op_count() {
        if op.i.op_kind(n) == OpKind::Register {
            let r = op.i.op_register(n);
            if r.is_st() {
                i |= (r as u16).wrapping_sub(iced_x86::Register::ST0 as u16) & 7;
            }
        }
    }
    (low << 8) | field | i
}

/// The mod and r/m fields of a memory operand's encoding.
fn modrm_mem(i: &iced_x86::Instruction) -> (u16, u16) {
    use iced_x86::Register as R;
    let base = i.memory_base();
    let index = i.memory_index();
    let ds = i.memory_displ_size();
    if base.is_gpr16() || index.is_gpr16() {
        let rm = match (base, index) {
            (R::BX, R::SI) => 0,
            (R::BX, R::DI) => 1,
            (R::BP, R::SI) => 2,
            (R::BP, R::DI) => 3,
            (R::SI, R::None) | (R::None, R::SI) => 4,
            (R::DI, R::None) | (R::None, R::DI) => 5,
            (R::BP, R::None) => 6,
            _ => 7,
        };
        let md = match ds {
            1 => 1,
            2 => 2,
            _ if base == R::BP && index == R::None => 1,
            _ => 0,
        };
        return (md, rm);
    }
    if base == R::RIP || base == R::EIP {
        return (0, 5);
    }
    if base == R::None {
        // disp32 alone: mod 00 with r/m 101 (32-bit code) or a SIB byte (64-bit code).
        return (0, if index == R::None { 5 } else { 4 });
    }
    let bnum = (base.number() & 7) as u16;
    let rm = if index != R::None || bnum == 4 {
        4
    } else {
        bnum
    };
    let md = match ds {
        1 => 1,
        4 | 8 => 2,
        _ if bnum == 5 => 1,
        _ => 0,
    };
    (md, rm)
}

/// The `i` of an ST(i) operand (operand `n`), 0 if it is not one.
#[inline]
pub fn sti(op: &Op, n: u32) -> usize {
    if n < op.i.op_count() && op.i.op_kind(n) == OpKind::Register {
        let r = op.i.op_register(n);
        if r.is_st() {
            return usize::from((r as u16).wrapping_sub(iced_x86::Register::ST0 as u16) & 7);
        }
    }
    0
}

/// #NM for WAIT/FWAIT: only when both CR0.MP and CR0.TS are set.
pub fn wait_nm(c: &Cpu) -> Result<(), Ex> {
    if c.cr0 & (cr0::MP | cr0::TS) == (cr0::MP | cr0::TS) {
        return Err(fault(NM));
    }
    Ok(())
}

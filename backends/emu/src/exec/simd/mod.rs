//! MMX and SSE-family instructions that are not floating-point arithmetic: data movement,
//! integer arithmetic, logic, shifts, shuffles, packs, compares, SSE4.2 string compares,
//! MMX state (EMMS). One family per file.
//!
//! Most of these instructions compute `dest = f(dest, src, imm8)` lane by lane on a
//! 64-bit MMX or 128-bit XMM value. Such an operation is a [`BinOp`] type, and one
//! generic handler ([`bin`]) does the checks and operand traffic for all of them, so the
//! choice made at decode time is a monomorphised function pointer per (operation,
//! register file). Values are carried as `u128` in both cases; MMX operations see the
//! upper 64 bits zero and only the low 64 bits of their result are kept.

/// Define unit types implementing [`BinOp`] as the lane-wise application of a closure
/// on `bits`-bit lanes (both given zero-extended; the result is truncated).
macro_rules! lanewise {
    ($($(#[$doc:meta])* $name:ident, $bits:expr, |$a:ident, $b:ident| $e:expr;)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;
        impl $crate::exec::simd::BinOp for $name {
            #[inline(always)]
            fn f(a: u128, b: u128, _: u8, w: usize) -> u128 {
                $crate::exec::simd::map2(a, b, w, $bits, |$a, $b| $e)
            }
        }
    )*};
}

mod blend;
mod compare;
mod extract_insert;
mod int_arith;
mod logic;
mod mmx_state;
mod mov;
mod pack;
mod shift;
mod shuffle;
mod string_compare;

use crate::cpu::Cpu;
use crate::decode::{reg_code, Handler, Op};
use crate::exception::{ud, Ex};
use crate::exec::ea;
use iced_x86::{Mnemonic, OpKind, Register};
use opsvisor_core::mmu::memory::GuestMemory;

/// A lane-wise (or whole-register) operation `dest = f(a, b, imm8)` on `w`-byte values
/// (8 for MMX, 16 for XMM): `a` is the destination register's old value, `b` the source
/// (register, memory zero-extended from its size, or for the shift-by-immediate forms the
/// immediate).
pub(crate) trait BinOp {
    /// The result (only the low `w` bytes are used).
    fn f(a: u128, b: u128, imm: u8, w: usize) -> u128;
}

/// Lane `i` of `bits` bits (8, 16, 32 or 64) of `v`, zero-extended.
#[inline(always)]
pub(crate) fn lane(v: u128, i: usize, bits: u32) -> u64 {
    let x = (v >> (i as u32 * bits)) as u64;
    if bits == 64 {
        x
    } else {
        x & ((1u64 << bits) - 1)
    }
}

/// `x` (truncated to `bits`) placed as lane `i`.
#[inline(always)]
pub(crate) fn put(i: usize, bits: u32, x: u64) -> u128 {
    let x = if bits == 64 {
        x
    } else {
        x & ((1u64 << bits) - 1)
    };
    u128::from(x) << (i as u32 * bits)
}

/// Lane `i` of `bits` bits, sign-extended.
#[inline(always)]
pub(crate) fn slane(v: u128, i: usize, bits: u32) -> i64 {
    let sh = 64 - bits;
    ((lane(v, i, bits) << sh) as i64) >> sh
}

/// Combine the lanes of `a` and `b` pairwise through `f` over a `w`-byte register.
#[inline(always)]
pub(crate) fn map2(a: u128, b: u128, w: usize, bits: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let n = w * 8 / bits as usize;
    let mut r = 0u128;
    for i in 0..n {
        r |= put(i, bits, f(lane(a, i, bits), lane(b, i, bits)));
    }
    r
}

/// `x` (the low `bits` bits) sign-extended.
#[inline(always)]
pub(crate) fn sx(x: u64, bits: u32) -> i64 {
    let sh = 64 - bits;
    ((x << sh) as i64) >> sh
}

/// Signed saturation of `x` to `bits`.
#[inline(always)]
pub(crate) fn sat_s(x: i64, bits: u32) -> u64 {
    let max = (1i64 << (bits - 1)) - 1;
    let min = -(1i64 << (bits - 1));
    x.clamp(min, max) as u64
}

/// Unsigned saturation of `x` to `bits`.
#[inline(always)]
pub(crate) fn sat_u(x: i64, bits: u32) -> u64 {
    x.clamp(0, (1i64 << bits) - 1) as u64
}

/// Number (0..16) of an XMM register operand.
#[inline(always)]
pub(crate) fn xi(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::XMM0 as usize) & 15
}

/// Number (0..8) of an MMX register operand.
#[inline(always)]
pub(crate) fn mi(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::MM0 as usize) & 7
}

/// The value of a register operand: XMM, MMX (zero-extended) or general (64 bits).
#[inline]
pub(crate) fn reg_val(c: &Cpu, r: Register) -> u128 {
    if r.is_xmm() {
        c.fpu.xmm[xi(r)]
    } else if r.is_mm() {
        u128::from(c.fpu.mm(mi(r)))
    } else {
        u128::from(c.get(reg_code(r), 8))
    }
}

/// The instruction's memory operand of `size` bytes (1, 2, 4, 8 or 16), zero-extended.
/// A 16-byte operand is checked for 16-byte alignment when `aligned`.
#[inline]
pub(crate) fn load(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
    size: usize,
    aligned: bool,
) -> Result<u128, Ex> {
    let a = ea(c, op);
    match size {
        16 => c.rd_m128(mem, op.seg, a, aligned),
        1 | 2 | 4 | 8 => Ok(u128::from(c.rd(mem, op.seg, a, size as u32)?)),
        _ => Err(ud()),
    }
}

/// Store the low `size` bytes (1, 2, 4, 8 or 16) of `v` to the memory operand.
#[inline]
pub(crate) fn store(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
    size: usize,
    v: u128,
    aligned: bool,
) -> Result<(), Ex> {
    let a = ea(c, op);
    match size {
        16 => c.wr_m128(mem, op.seg, a, v, aligned),
        1 | 2 | 4 | 8 => c.wr(mem, op.seg, a, size as u32, v as u64),
        _ => Err(ud()),
    }
}

/// Operand `n` as a vector value: a register (see [`reg_val`]), the memory operand (its
/// full size, zero-extended; 16-byte operands must be aligned), or the immediate.
#[inline]
pub(crate) fn src(c: &mut Cpu, mem: &mut GuestMemory, op: &Op, n: u32) -> Result<u128, Ex> {
    match op.i.op_kind(n) {
        OpKind::Register => Ok(reg_val(c, op.i.op_register(n))),
        OpKind::Memory => load(c, mem, op, op.i.memory_size().size(), true),
        _ => Ok(u128::from(op.imm)),
    }
}

/// The checks of an instruction on MMX (`mmx`) or XMM registers.
#[inline(always)]
pub(crate) fn check(c: &Cpu, mmx: bool) -> Result<(), Ex> {
    if mmx {
        c.mmx_check()
    } else {
        c.sse_check()
    }
}

/// `op0 = O(op0, op1, imm8)` on MMX (`MMX`) or XMM registers. MMX forms put the x87
/// stack in MMX state through the register write; a faulting source leaves all state as
/// it was.
pub(crate) fn bin<O: BinOp, const MMX: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    check(c, MMX)?;
    let b = src(c, mem, op, 1)?;
    let d = op.i.op_register(0);
    let imm = op.imm as u8;
    if MMX {
        let n = mi(d);
        let r = O::f(u128::from(c.fpu.mm(n)), b, imm, 8);
        c.fpu.set_mm(n, r as u64);
    } else {
        let n = xi(d);
        c.fpu.xmm[n] = O::f(c.fpu.xmm[n], b, imm, 16);
    }
    Ok(())
}

/// [`bin`] for the register file of `op`'s destination.
pub(crate) fn pick<O: BinOp>(op: &Op) -> Handler {
    if op.i.op_count() > 0 && op.i.op_kind(0) == OpKind::Register && op.i.op_register(0).is_mm() {
        bin::<O, true>
    } else {
        bin::<O, false>
    }
}

/// The handler for `op` if this family implements it.
pub fn select(op: &Op) -> Option<Handler> {
    if op.i.encoding() != iced_x86::EncodingKind::Legacy {
        return None;
    }
    let m = op.i.mnemonic();
    if m == Mnemonic::Emms {
        return Some(mmx_state::emms);
    }
    mov::select(op)
        .or_else(|| int_arith::select(op))
        .or_else(|| logic::select(op))
        .or_else(|| shift::select(op))
        .or_else(|| shuffle::select(op))
        .or_else(|| pack::select(op))
        .or_else(|| compare::select(op))
        .or_else(|| blend::select(op))
        .or_else(|| extract_insert::select(op))
        .or_else(|| string_compare::select(op))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_round_trip() {
        let v = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        for bits in [8u32, 16, 32, 64] {
            let n = 128 / bits as usize;
            let mut r = 0;
            for i in 0..n {
                r |= put(i, bits, lane(v, i, bits));
            }
            assert_eq!(r, v, "{bits}");
        }
        assert_eq!(slane(v, 0, 8), 0x10);
        assert_eq!(slane(v, 15, 8), 0x01);
        assert_eq!(slane(v, 1, 64), 0x0123_4567_89ab_cdef);
        assert_eq!(slane(v, 0, 16), 0x3210);
        assert_eq!(slane(v, 4, 16), 0xcdef - 0x1_0000);
    }

    #[test]
    fn saturation() {
        assert_eq!(sat_s(200, 8), 0x7f);
        assert_eq!(sat_s(-200, 8) as u8, 0x80);
        assert_eq!(sat_u(-1, 8), 0);
        assert_eq!(sat_u(300, 8), 0xff);
        assert_eq!(sat_s(i64::from(i32::MAX) + 1, 32), 0x7fff_ffff);
    }
}

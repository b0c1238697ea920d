//! SSE-family floating-point instructions: arithmetic, compares, conversions, rounding,
//! dot products, horizontal operations, and MXCSR (LDMXCSR/STMXCSR), on the software
//! IEEE implementation of [`crate::arith::softfloat`]. One family per file.
//!
//! Exceptions follow SDM vol. 1 11.5.2: every lane is computed with all exceptions
//! masked, recording its flags; the pre-computation exceptions (IE, DE, ZE) of all lanes
//! are looked at first, and if one is unmasked only they are recorded in MXCSR and the
//! instruction traps. Otherwise the post-computation ones (OE, UE, PE) join them, and an
//! unmasked one traps as well. A trap is #XM when CR4.OSXMMEXCPT is set, else #UD, and
//! leaves the destination unchanged; with UE unmasked, the underflow condition is a tiny
//! result whether or not it is exact.

pub mod arith;
pub mod compare;
pub mod convert;
pub mod dot;
pub mod horizontal;
pub mod mxcsr;
pub mod round;

use super::ea;
use crate::arith::softfloat::{
    self as sf, exc, underflow_condition, Env, Format, NanRule, F32, F64, F80,
};
use crate::cpu::{cr4, Cpu};
use crate::decode::{Handler, Op};
use crate::exception::{fault, ud, Ex, XM};
use iced_x86::{EncodingKind, OpKind, Register};
use opsvisor_core::mmu::memory::GuestMemory;

/// The handler for `op` if this family implements it.
pub fn select(op: &Op) -> Option<Handler> {
    if op.i.encoding() != EncodingKind::Legacy {
        return None;
    }
    let code = op.i.code();
    arith::select(code)
        .or_else(|| compare::select(code))
        .or_else(|| convert::select(code))
        .or_else(|| round::select(code))
        .or_else(|| horizontal::select(code))
        .or_else(|| dot::select(code))
        .or_else(|| mxcsr::select(code))
}

/// The pre-computation exceptions.
const PRE: u32 = exc::IE | exc::DE | exc::ZE;
/// The post-computation exceptions.
const POST: u32 = exc::OE | exc::UE | exc::PE;

/// XMM register number of a register operand.
fn xmm_no(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::XMM0 as usize) & 15
}

/// XMM register number of operand `n` (a register operand).
pub(crate) fn xmm_of(op: &Op, n: u32) -> usize {
    xmm_no(op.i.op_register(n))
}

/// Whether operand `n` is an MMX register.
pub(crate) fn is_mm(op: &Op, n: u32) -> bool {
    op.i.op_kind(n) == OpKind::Register && op.i.op_register(n).is_mm()
}

/// Operand `n` as a (zero-extended) u128: an XMM register whole, an MMX register, a
/// general register of its size, or memory of the instruction's memory size (16-byte
/// memory operands must be 16-byte aligned).
pub(crate) fn src(c: &mut Cpu, mem: &mut GuestMemory, op: &Op, n: u32) -> Result<u128, Ex> {
    match op.i.op_kind(n) {
        OpKind::Register => {
            let r = op.i.op_register(n);
            if r.is_xmm() {
                Ok(c.fpu.xmm[xmm_no(r)])
            } else if r.is_mm() {
                let k = (r as usize).wrapping_sub(Register::MM0 as usize) & 7;
                Ok(u128::from(c.fpu.mm(k)))
            } else {
                Ok(u128::from(
                    c.get(op.r[(n as usize).min(2)], r.size() as u32),
                ))
            }
        }
        OpKind::Memory => {
            let a = ea(c, op);
            let size = op.i.memory_size().size();
            if size == 16 {
                c.rd_m128(mem, op.seg, a, true)
            } else {
                Ok(u128::from(c.rd(mem, op.seg, a, size.clamp(1, 8) as u32)?))
            }
        }
        _ => Ok(u128::from(op.imm)),
    }
}

/// The format of `W`-byte lanes.
pub(crate) const fn fmt(w: u8) -> Format {
    if w == 4 {
        F32
    } else {
        F64
    }
}

/// Lane `i` of `bits`-bit lanes.
#[inline]
pub(crate) fn lane(v: u128, bits: u32, i: u32) -> u128 {
    (v >> (bits * i)) & ((1u128 << bits) - 1)
}

/// `v` with lane `i` of `bits`-bit lanes replaced by `x`.
#[inline]
pub(crate) fn set_lane(v: u128, bits: u32, i: u32, x: u128) -> u128 {
    let m = ((1u128 << bits) - 1) << (bits * i);
    (v & !m) | ((x << (bits * i)) & m)
}

/// The fault an unmasked SIMD floating-point exception raises.
fn simd_fault(c: &Cpu) -> Ex {
    if c.cr4 & cr4::OSXMMEXCPT != 0 {
        fault(XM)
    } else {
        ud()
    }
}

/// A rounded operation on lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// x + y.
    Add,
    /// x - y.
    Sub,
    /// x * y.
    Mul,
    /// x / y.
    Div,
    /// sqrt(y).
    Sqrt,
    /// x converted from the given format.
    Cvt(Format),
}

/// Operation `k` in format `f`.
fn compute(f: Format, k: Kind, x: u128, y: u128, e: &mut Env) -> u128 {
    match k {
        Kind::Add => sf::add(f, x, y, e),
        Kind::Sub => sf::sub(f, x, y, e),
        Kind::Mul => sf::mul(f, x, y, e),
        Kind::Div => sf::div(f, x, y, e),
        Kind::Sqrt => sf::sqrt(f, y, e),
        Kind::Cvt(from) => sf::convert(from, f, x, e),
    }
}

/// The exception flags of one instruction's lanes.
pub(crate) struct Acc {
    /// MXCSR when the instruction started.
    pub mxcsr: u32,
    /// Pre-computation exceptions of all lanes.
    pub pre: u32,
    /// Post-computation exceptions of all lanes.
    pub post: u32,
}

impl Acc {
    /// An empty record for the current MXCSR.
    pub fn new(c: &Cpu) -> Acc {
        Acc {
            mxcsr: c.fpu.mxcsr,
            pre: 0,
            post: 0,
        }
    }

    /// The environment for a `f` operation.
    pub fn env(&self, f: Format) -> Env {
        Env::sse(self.mxcsr, f)
    }

    /// Whether exception `e` is unmasked.
    pub fn unmasked(&self, e: u32) -> bool {
        (self.mxcsr >> 7) & e != e
    }

    /// Record the flags of an operation that cannot overflow or underflow (compares,
    /// conversions from integers and to integers, rounding to integral values).
    pub fn record(&mut self, flags: u32) {
        self.pre |= flags & PRE;
        self.post |= flags & POST;
    }

    /// Run an operation producing a `f` result (`from` is the operand format, `f` but
    /// for conversions) and record its flags.
    pub fn op(&mut self, f: Format, k: Kind, x: u128, y: u128) -> u128 {
        self.op_flags(f, k, x, y, !0)
    }

    fn op_flags(&mut self, f: Format, k: Kind, x: u128, y: u128, keep: u32) -> u128 {
        let mut e = self.env(f);
        let r = compute(f, k, x, y, &mut e);
        let flags = e.flags & keep;
        self.pre |= flags & PRE;
        let mut post = flags & POST;
        // An unmasked overflow or underflow traps without delivering a result; PE then
        // tells whether the result rounded to the precision with an unbounded exponent
        // range is inexact, as the hardware reports it.
        let ue = self.unmasked(exc::UE) && underflow_condition(f, r, flags);
        let oe = self.unmasked(exc::OE) && flags & exc::OE != 0;
        if ue || oe {
            post = if ue { exc::UE } else { exc::OE };
            if self.wide_inexact(f, k, x, y) {
                post |= exc::PE;
            }
        }
        self.post |= post;
        r
    }

    /// Whether the operation's result rounded to the precision of `f` but with an
    /// unbounded exponent range is inexact: recomputed in F80 with precision control,
    /// whose 15-bit exponent holds every SSE result without overflow or underflow.
    fn wide_inexact(&self, f: Format, k: Kind, x: u128, y: u128) -> bool {
        let env = self.env(f);
        let from = match k {
            Kind::Cvt(from) => from,
            _ => f,
        };
        let mut load = Env {
            nan: NanRule::X87,
            ftz: false,
            ..env
        };
        let x80 = sf::convert(from, F80, x, &mut load);
        let y80 = sf::convert(from, F80, y, &mut load);
        let mut w = Env {
            round: env.round,
            precision: f.frac_bits + 1,
            ftz: false,
            daz: false,
            nan: NanRule::X87,
            flags: 0,
        };
        let k80 = match k {
            Kind::Cvt(_) => Kind::Add,
            k => k,
        };
        let y80 = if let Kind::Cvt(_) = k { 0 } else { y80 };
        compute(F80, k80, x80, y80, &mut w);
        w.flags & exc::PE != 0
    }

    /// Fold the flags into MXCSR and trap on an unmasked exception (before any
    /// destination is written).
    pub fn finish(self, c: &mut Cpu) -> Result<(), Ex> {
        let unmasked = !(self.mxcsr >> 7) & 0x3f;
        if self.pre & unmasked != 0 {
            c.fpu.mxcsr |= self.pre;
            return Err(simd_fault(c));
        }
        let all = self.pre | self.post;
        c.fpu.mxcsr |= all;
        if all & unmasked != 0 {
            return Err(simd_fault(c));
        }
        Ok(())
    }
}

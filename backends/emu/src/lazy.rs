//! Lazy RFLAGS: the common flag-setting instructions (ADD SUB CMP AND OR XOR TEST INC DEC
//! SHL SHR SAR) record their operands and result instead of computing the six status
//! flags; most of those flags are overwritten before anything reads them.
//!
//! The flags are materialised ([`Cpu::rflags`]) by calling the very [`crate::arith`]
//! function the instruction would have called eagerly, on the recorded inputs: the result
//! is bit-for-bit the eager one, undefined-flag choices included. Conditions ([`Cpu::cond`])
//! are evaluated straight from the record for the usual pairs (CMP + JB, TEST + JZ, ...)
//! and through the materialised flags otherwise.
//!
//! Invariant: the status bits of the raw flags word [`Cpu::rf`] are stale while a record
//! is active. CF, which INC and DEC read to preserve it, is cheap to get from any record:
//! compared from the operands for ADD and SUB, stored in the record ([`Lazy::cf`]) for the
//! other kinds. Every other RFLAGS bit (TF IF DF IOPL NT RF VM AC ...) is always current in
//! [`Cpu::rf`], so mode and system checks read it directly.

use crate::arith::alu::{alu, dec, inc, AluOp};
use crate::arith::flags::{sign_bit, sign_extend, CF};
use crate::arith::shift::{shift, ShiftOp};
use crate::cpu::Cpu;
use iced_x86::ConditionCode as C;

/// No record: [`Cpu::rf`] holds the flags.
pub const NONE: u8 = 0;
/// ADD: `a + b`.
pub const ADD: u8 = 1;
/// SUB and CMP: `a - b`.
pub const SUB: u8 = 2;
/// AND OR XOR TEST: only the result matters.
pub const LOGIC: u8 = 3;
/// INC: `a + 1` (CF from [`Cpu::rf`]).
pub const INC: u8 = 4;
/// DEC: `a - 1` (CF from [`Cpu::rf`]).
pub const DEC: u8 = 5;
/// SHL by a nonzero masked count `b`.
pub const SHL: u8 = 6;
/// SHR by a nonzero masked count `b`.
pub const SHR: u8 = 7;
/// SAR by a nonzero masked count `b`.
pub const SAR: u8 = 8;

/// The size code of an operand of `size` bytes (1, 2, 4, else 8).
#[inline(always)]
pub const fn size_code(size: u32) -> u8 {
    match size {
        1 => 0,
        2 => 1,
        4 => 2,
        _ => 3,
    }
}

/// The record of the last flag-setting instruction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lazy {
    /// Kind (one of the constants above) shifted left by 2, or'ed with the size code.
    pub op: u8,
    /// First operand, masked to the size (stale after a logic operation, which does not
    /// store it).
    pub a: u64,
    /// Second operand (count for shifts), masked to the size: stored for ADD, SUB and the
    /// shifts only.
    pub b: u64,
    /// Result, masked to the size.
    pub res: u64,
    /// CF (0 or 1) for the kinds other than ADD and SUB: the CF INC and DEC preserve, the
    /// last bit a shift moved out, 0 after a logic operation.
    pub cf: u8,
}

impl Lazy {
    #[inline(always)]
    fn kind(&self) -> u8 {
        self.op >> 2
    }

    #[inline(always)]
    fn size(&self) -> u32 {
        1 << (self.op & 3)
    }
}

impl Cpu {
    /// RFLAGS with the status flags materialised.
    #[inline]
    pub fn rflags(&self) -> u64 {
        let l = &self.lz;
        let (size, rf) = (l.size(), self.rf);
        match l.kind() {
            NONE => rf,
            ADD => alu(AluOp::Add, size, l.a, l.b, rf).1,
            SUB => alu(AluOp::Sub, size, l.a, l.b, rf).1,
            // AND of the result with itself gives the flags of any logic op on it.
            LOGIC => alu(AluOp::And, size, l.res, l.res, rf).1,
            INC => inc(size, l.a, (rf & !CF) | u64::from(l.cf)).1,
            DEC => dec(size, l.a, (rf & !CF) | u64::from(l.cf)).1,
            SHL => shift(ShiftOp::Shl, size, l.a, l.b as u8, rf).1,
            SHR => shift(ShiftOp::Shr, size, l.a, l.b as u8, rf).1,
            _ => shift(ShiftOp::Sar, size, l.a, l.b as u8, rf).1,
        }
    }

    /// Replace RFLAGS (status flags included) and drop any record.
    #[inline(always)]
    pub fn set_rflags(&mut self, v: u64) {
        self.rf = v;
        self.lz.op = NONE;
    }

    /// Materialise the status flags into [`Cpu::rf`] (for read-modify-write of RFLAGS).
    #[inline]
    pub fn materialise_flags(&mut self) {
        if self.lz.op != NONE {
            let f = self.rflags();
            self.set_rflags(f);
        }
    }

    /// Read-modify-write RFLAGS through `f`, on materialised flags.
    #[inline]
    pub fn update_flags(&mut self, f: impl FnOnce(u64) -> u64) {
        let v = f(self.rflags());
        self.set_rflags(v);
    }

    /// Record ADD, SUB or a logic operation (`kind`) on `size_code` operands (all values
    /// already masked to the size). INC and DEC go through [`Cpu::lazy_incdec`], shifts
    /// through [`Cpu::lazy_shift`].
    #[inline(always)]
    pub fn lazy(&mut self, kind: u8, size_code: u8, a: u64, b: u64, res: u64) {
        if kind == LOGIC {
            // Only the result matters for a logic operation (see `rflags`, `cf`, `cond`):
            // leaving the operands stale saves two stores on the most common record.
            self.lz.op = (kind << 2) | size_code;
            self.lz.cf = 0;
            self.lz.res = res;
            return;
        }
        self.lz = Lazy {
            op: (kind << 2) | size_code,
            a,
            b,
            res,
            cf: 0,
        };
    }

    /// Record shift `kind` (SHL, SHR, SAR) of `a` by the nonzero masked count `cnt`, with
    /// result `res` and the CF it produced (0 or [`CF`]).
    #[inline(always)]
    pub fn lazy_shift(&mut self, kind: u8, size_code: u8, a: u64, cnt: u64, res: u64, cf: u64) {
        self.lz = Lazy {
            op: (kind << 2) | size_code,
            a,
            b: cnt,
            res,
            cf: (cf & CF) as u8,
        };
    }

    /// Record INC or DEC: they keep CF, so the current CF goes into the record (a byte
    /// store, where folding it into [`Cpu::rf`] would be a read-modify-write).
    #[inline(always)]
    pub fn lazy_incdec(&mut self, kind: u8, size_code: u8, a: u64, res: u64) {
        let cf = self.cf();
        // `b` is not stored: nothing reads it for INC and DEC (the operand is always 1).
        self.lz.op = (kind << 2) | size_code;
        self.lz.cf = cf as u8;
        self.lz.a = a;
        self.lz.res = res;
    }

    /// The current CF (0 or [`CF`]), without a call or a jump table: INC and DEC read it
    /// on every execution (see [`Cpu::lazy_incdec`]).
    #[inline(always)]
    pub fn cf(&self) -> u64 {
        let l = &self.lz;
        match l.kind() {
            ADD => u64::from(l.res < l.a),
            SUB => u64::from(l.a < l.b),
            NONE => self.rf & CF,
            _ => u64::from(l.cf),
        }
    }

    /// Evaluate condition `cc` (an index into [`crate::exec::CCS`]).
    #[inline(always)]
    pub fn cond(&self, cc: u8) -> bool {
        let cc = crate::exec::CCS[usize::from(cc) % 17];
        let l = &self.lz;
        let k = l.kind();
        let zero = l.res == 0;
        let neg = l.res & sign_bit(l.size()) != 0;
        match (k, cc) {
            (NONE, _) => crate::arith::cond::cond(cc, self.rf),
            (SUB, C::e) => l.a == l.b,
            (SUB, C::ne) => l.a != l.b,
            (SUB, C::b) => l.a < l.b,
            (SUB, C::ae) => l.a >= l.b,
            (SUB, C::be) => l.a <= l.b,
            (SUB, C::a) => l.a > l.b,
            (SUB, C::l) => self.signed(l.a) < self.signed(l.b),
            (SUB, C::ge) => self.signed(l.a) >= self.signed(l.b),
            (SUB, C::le) => self.signed(l.a) <= self.signed(l.b),
            (SUB, C::g) => self.signed(l.a) > self.signed(l.b),
            // ADD: the carry is a wrapped sum below an operand.
            (ADD, C::b) => l.res < l.a,
            (ADD, C::ae) => l.res >= l.a,
            (ADD, C::be) => l.res < l.a || zero,
            (ADD, C::a) => l.res >= l.a && !zero,
            (LOGIC, C::b | C::o) => false,
            (LOGIC, C::ae | C::no) => true,
            (LOGIC, C::l | C::s) => neg,
            (LOGIC, C::ge | C::ns) => !neg,
            (LOGIC, C::le) => zero || neg,
            (LOGIC, C::g) => !zero && !neg,
            (LOGIC, C::be) => zero,
            (LOGIC, C::a) => !zero,
            (_, C::e) => zero,
            (_, C::ne) => !zero,
            (_, C::s) => neg,
            (_, C::ns) => !neg,
            _ => crate::arith::cond::cond(cc, self.rflags()),
        }
    }

    #[inline(always)]
    fn signed(&self, v: u64) -> i64 {
        sign_extend(self.lz.size(), v) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arith::flags::{mask, ARITH};

    /// Values that hit the edges: zero, one, sign bits, all ones, and random bits.
    fn values(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        match *seed % 8 {
            0 => 0,
            1 => 1,
            2 => 0x80 << (8 * ((*seed >> 8) % 8)),
            3 => u64::MAX,
            4 => 0x7f << (8 * ((*seed >> 8) % 8)),
            _ => seed.rotate_left(29),
        }
    }

    /// Every record kind gives the eager flags, CF and condition, from any earlier state.
    #[test]
    fn lazy_matches_eager() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut c = Cpu::new();
        for i in 0..40_000u32 {
            let size = [1u32, 2, 4, 8][(i % 4) as usize];
            let m = mask(size);
            let (a, b) = (values(&mut seed) & m, values(&mut seed) & m);
            // Start from an arbitrary earlier record or raw value.
            let before = values(&mut seed) & (ARITH | 0x702);
            c.set_rflags(before | 2);
            if i % 3 == 0 {
                let r = a.wrapping_add(b) & m;
                c.lazy(ADD, size_code(size), a, b, r);
            }
            let prev = c.rflags();
            let sc = size_code(size);
            let kind = [ADD, SUB, LOGIC, INC, DEC, SHL, SHR, SAR][(i / 4 % 8) as usize];
            let cnt = u64::from((b as u8) & if size == 8 { 0x3f } else { 0x1f }).max(1);
            let eager = match kind {
                ADD => {
                    c.lazy(ADD, sc, a, b, a.wrapping_add(b) & m);
                    alu(AluOp::Add, size, a, b, prev).1
                }
                SUB => {
                    c.lazy(SUB, sc, a, b, a.wrapping_sub(b) & m);
                    alu(AluOp::Sub, size, a, b, prev).1
                }
                LOGIC => {
                    c.lazy(LOGIC, sc, 0, 0, a ^ b);
                    alu(AluOp::Xor, size, a, b, prev).1
                }
                INC => {
                    c.lazy_incdec(INC, sc, a, a.wrapping_add(1) & m);
                    inc(size, a, prev).1
                }
                DEC => {
                    c.lazy_incdec(DEC, sc, a, a.wrapping_sub(1) & m);
                    dec(size, a, prev).1
                }
                _ => {
                    let op = match kind {
                        SHL => ShiftOp::Shl,
                        SHR => ShiftOp::Shr,
                        _ => ShiftOp::Sar,
                    };
                    let (r, f) = shift(op, size, a, cnt as u8, prev);
                    c.lazy_shift(kind, sc, a, cnt, r, f);
                    f
                }
            };
            assert_eq!(
                c.rflags(),
                eager,
                "kind {kind} size {size} a {a:#x} b {b:#x}"
            );
            assert_eq!(
                c.cf(),
                eager & CF,
                "cf kind {kind} size {size} a {a:#x} b {b:#x}"
            );
            for cc in 0..17u8 {
                let want = crate::arith::cond::cond(crate::exec::CCS[usize::from(cc)], eager);
                assert_eq!(
                    c.cond(cc),
                    want,
                    "cc {cc} kind {kind} size {size} a {a:#x} b {b:#x}"
                );
            }
            let mut d = Cpu::new();
            d.rf = c.rf;
            d.lz = c.lz;
            d.materialise_flags();
            assert_eq!((d.rf, d.lz.op), (eager, NONE));
        }
    }
}

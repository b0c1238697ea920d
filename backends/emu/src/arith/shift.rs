//! Shifts and rotates: ROL ROR RCL RCR SHL/SAL SHR SAR, the double shifts SHLD/SHRD, and the
//! flagless BMI2 shifts SARX SHLX SHRX RORX.

use super::flags::{
    bits, flag_if, mask, sign_bit, sign_extend, szp, update, AF, CF, OF, PF, SF, ZF,
};

/// The shift and rotate operations of the `C0`/`C1`/`D0`-`D3` groups. SAL is [`ShiftOp::Shl`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShiftOp {
    /// Rotate left.
    Rol,
    /// Rotate right.
    Ror,
    /// Rotate left through CF.
    Rcl,
    /// Rotate right through CF.
    Rcr,
    /// Shift left (also SAL).
    Shl,
    /// Logical shift right.
    Shr,
    /// Arithmetic shift right.
    Sar,
}

/// The count mask of the legacy shifts: 0x3f for 64-bit operands, 0x1f otherwise.
#[inline(always)]
fn count_mask(size: u32) -> u8 {
    if bits(size) == 64 {
        0x3f
    } else {
        0x1f
    }
}

/// OF as "the two top bits of the result differ" (used by ROR, RCR and the double shifts).
#[inline(always)]
fn top_two_differ(size: u32, r: u64) -> bool {
    let s = sign_bit(size);
    ((r & s != 0) as u8 ^ (r & (s >> 1) != 0) as u8) != 0
}

/// Executes a shift or rotate of a `size`-byte operand by `count` (taken from CL or an
/// immediate); returns (result, rflags).
///
/// The count is masked to 5 bits (6 for 64-bit operands); a masked count of 0 changes neither
/// the value nor any flag. RCL/RCR on 8- and 16-bit operands rotate modulo 9 and 17.
///
/// Defined flags (masked count nonzero): CF, the last bit shifted or rotated out, for every
/// operation; OF when the masked count is 1; SF ZF PF from the result for SHL SHR SAR. Rotates
/// never touch SF ZF AF PF.
///
/// Undefined flags, set as the host (AMD Zen) does:
/// - OF for counts above 1 uses the count-1 formula on the final result: `MSB ^ CF` for ROL,
///   RCL and SHL; "the two top bits differ" for ROR, RCR and SHR (for SHR by 1 this is the
///   source's MSB, as defined); always 0 for SAR.
/// - AF is set by SHL, SHR and SAR.
/// - CF of SHL/SHR on 8/16-bit operands when the count exceeds the width (up to 31): SHL gives
///   bit `width` of the infinitely wide `a << count` (so 0 beyond the width, and the low bit
///   for count == width); SHR gives 0 beyond the width; SAR the sign.
/// - RCL/RCR whose count is a nonzero multiple of 9 (8-bit) or 17 (16-bit) keep the value and
///   CF but still recompute OF with the formula above.
#[inline(always)]
pub fn shift(op: ShiftOp, size: u32, a: u64, count: u8, rflags: u64) -> (u64, u64) {
    let n = bits(size);
    let m = mask(size);
    let a = a & m;
    let c = u32::from(count & count_mask(size));
    if c == 0 {
        return (a, rflags);
    }
    let msb = |v: u64| v & sign_bit(size) != 0;
    let cf_in = rflags & CF != 0;
    match op {
        ShiftOp::Rol => {
            let r = rotl(size, a, c);
            let cf = r & 1 != 0;
            let f = flag_if(cf, CF) | flag_if(msb(r) ^ cf, OF);
            (r, update(rflags, CF | OF, f))
        }
        ShiftOp::Ror => {
            let r = rotr(size, a, c);
            let f = flag_if(msb(r), CF) | flag_if(top_two_differ(size, r), OF);
            (r, update(rflags, CF | OF, f))
        }
        ShiftOp::Rcl | ShiftOp::Rcr => {
            let k = match n {
                8 => c % 9,
                16 => c % 17,
                _ => c,
            };
            let (r, cf) = if k == 0 {
                (a, cf_in)
            } else {
                // Rotate the (n+1)-bit value CF:a by k, 1 <= k <= n.
                let w = n + 1;
                let wmask = (1u128 << w) - 1;
                let v = (u128::from(cf_in) << n) | u128::from(a);
                let rot = if op == ShiftOp::Rcl {
                    ((v << k) | (v >> (w - k))) & wmask
                } else {
                    ((v >> k) | (v << (w - k))) & wmask
                };
                ((rot as u64) & m, (rot >> n) & 1 != 0)
            };
            let of = if op == ShiftOp::Rcl {
                msb(r) ^ cf
            } else {
                top_two_differ(size, r)
            };
            (
                r,
                update(rflags, CF | OF, flag_if(cf, CF) | flag_if(of, OF)),
            )
        }
        ShiftOp::Shl => {
            let wide = u128::from(a) << c;
            let r = (wide as u64) & m;
            let cf = (wide >> n) & 1 != 0;
            let f = flag_if(cf, CF) | flag_if(msb(r) ^ cf, OF) | szp(size, r) | AF;
            (r, update(rflags, CF | OF | SF | ZF | PF | AF, f))
        }
        ShiftOp::Shr => {
            let r = a >> c;
            let cf = c <= n && (a >> (c - 1)) & 1 != 0;
            let f = flag_if(cf, CF) | flag_if(top_two_differ(size, r), OF) | szp(size, r) | AF;
            (r, update(rflags, CF | OF | SF | ZF | PF | AF, f))
        }
        ShiftOp::Sar => {
            let s = sign_extend(size, a) as i64;
            let r = (s >> c) as u64 & m;
            let cf = (s >> (c - 1)) & 1 != 0;
            let f = flag_if(cf, CF) | szp(size, r) | AF;
            (r, update(rflags, CF | OF | SF | ZF | PF | AF, f))
        }
    }
}

/// Rotates the `size`-byte value `a` (already masked) left by `k` bits (modulo the width).
#[inline(always)]
fn rotl(size: u32, a: u64, k: u32) -> u64 {
    let n = bits(size);
    let k = k % n;
    if k == 0 {
        a
    } else {
        ((a << k) | (a >> (n - k))) & mask(size)
    }
}

/// Rotates the `size`-byte value `a` (already masked) right by `k` bits (modulo the width).
#[inline(always)]
fn rotr(size: u32, a: u64, k: u32) -> u64 {
    let n = bits(size);
    let k = k % n;
    if k == 0 {
        a
    } else {
        ((a >> k) | (a << (n - k))) & mask(size)
    }
}

/// SHLD: shifts `dst` left by `count`, filling from the top of `src`; returns (result, rflags).
///
/// The count is masked to 5 bits (6 for 64-bit operands); 0 changes nothing. Defined: CF (last
/// bit shifted out of `dst`), SF ZF PF, and OF when the count is 1 (sign change). Undefined:
/// AF, OF for counts above 1, and for 16-bit operands with a count above 16 the result and all
/// flags; the host's behaviour is modelled (see the tests).
#[inline(always)]
pub fn shld(size: u32, dst: u64, src: u64, count: u8, rflags: u64) -> (u64, u64) {
    let n = bits(size);
    let m = mask(size);
    let (d, s) = (dst & m, src & m);
    let c = u32::from(count & count_mask(size));
    if c == 0 {
        return (d, rflags);
    }
    // The concatenation d:s shifted left, as a 2n-bit (at most 128-bit) value.
    let v = (u128::from(d) << n) | u128::from(s);
    let (r, cf, of) = if c <= n {
        let r = ((v << c) >> n) as u64 & m;
        let cf = (d >> (n - c)) & 1 != 0;
        // OF compares CF with the top bit of `dst << count` alone: for counts below the
        // width that is the result's top bit (the SDM's sign change for count 1); for a 16-bit
        // count of 16 (undefined) the host's OF is CF itself, which this formula also gives.
        let top = (d << c) & sign_bit(size) != 0;
        (r, cf, top != cf)
    } else {
        // Only 16-bit operands get here (count 17..31), an undefined case: the host rotates
        // the source left by count - 16 and clears CF and OF.
        (rotl(size, s, c - n), false, false)
    };
    let f = flag_if(cf, CF) | flag_if(of, OF) | szp(size, r) | AF;
    (r, update(rflags, CF | OF | SF | ZF | PF | AF, f))
}

/// SHRD: shifts `dst` right by `count`, filling from the bottom of `src`; returns
/// (result, rflags). Flags as for [`shld`], with CF the last bit shifted out of the bottom.
#[inline(always)]
pub fn shrd(size: u32, dst: u64, src: u64, count: u8, rflags: u64) -> (u64, u64) {
    let n = bits(size);
    let m = mask(size);
    let (d, s) = (dst & m, src & m);
    let c = u32::from(count & count_mask(size));
    if c == 0 {
        return (d, rflags);
    }
    let v = (u128::from(s) << n) | u128::from(d);
    let (r, cf) = if c <= n {
        ((v >> c) as u64 & m, (v >> (c - 1)) & 1 != 0)
    } else {
        // Only 16-bit operands get here (count 17..31), an undefined case: the host rotates
        // the source right by count - 16 and clears CF.
        (rotr(size, s, c - n), false)
    };
    let f = flag_if(cf, CF) | flag_if(top_two_differ(size, r), OF) | szp(size, r) | AF;
    (r, update(rflags, CF | OF | SF | ZF | PF | AF, f))
}

/// The count mask of the BMI2 shifts: 0x3f for 64-bit operands, 0x1f otherwise.
#[inline(always)]
fn bmi2_count(size: u32, count: u64) -> u32 {
    (count & if bits(size) == 64 { 0x3f } else { 0x1f }) as u32
}

/// SARX (BMI2): arithmetic right shift of a 4- or 8-byte operand; no flags.
#[inline(always)]
pub fn sarx(size: u32, a: u64, count: u64) -> u64 {
    ((sign_extend(size, a) as i64) >> bmi2_count(size, count)) as u64 & mask(size)
}

/// SHLX (BMI2): left shift of a 4- or 8-byte operand; no flags.
#[inline(always)]
pub fn shlx(size: u32, a: u64, count: u64) -> u64 {
    (a << bmi2_count(size, count)) & mask(size)
}

/// SHRX (BMI2): logical right shift of a 4- or 8-byte operand; no flags.
#[inline(always)]
pub fn shrx(size: u32, a: u64, count: u64) -> u64 {
    (a & mask(size)) >> bmi2_count(size, count)
}

/// RORX (BMI2): rotate right of a 4- or 8-byte operand by an immediate; no flags.
#[inline(always)]
pub fn rorx(size: u32, a: u64, imm: u8) -> u64 {
    rotr(size, a & mask(size), bmi2_count(size, u64::from(imm)))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    extern crate std;
    use std::format;
    use std::vec::Vec;

    use super::super::flags::ARITH;
    use super::super::testutil::{
        host_rcl, host_rrcl, host_rrr, singles, Checker, Rng, COUNTS, OTHER_FLAGS,
    };
    use super::*;

    const OPS: [ShiftOp; 7] = [
        ShiftOp::Rol,
        ShiftOp::Ror,
        ShiftOp::Rcl,
        ShiftOp::Rcr,
        ShiftOp::Shl,
        ShiftOp::Shr,
        ShiftOp::Sar,
    ];

    /// Runs the legacy shift `op` on the host with count in CL.
    fn host_shift(op: ShiftOp, size: u32, a: u64, c: u8, f: u64) -> (u64, u64) {
        macro_rules! by_size {
            ($insn:literal) => {
                match size {
                    1 => host_rcl!($insn, "l", a, c, f),
                    2 => host_rcl!($insn, "x", a, c, f),
                    4 => host_rcl!($insn, "e", a, c, f),
                    _ => host_rcl!($insn, "r", a, c, f),
                }
            };
        }
        match op {
            ShiftOp::Rol => by_size!("rol"),
            ShiftOp::Ror => by_size!("ror"),
            ShiftOp::Rcl => by_size!("rcl"),
            ShiftOp::Rcr => by_size!("rcr"),
            ShiftOp::Shl => by_size!("shl"),
            ShiftOp::Shr => by_size!("shr"),
            ShiftOp::Sar => by_size!("sar"),
        }
    }

    /// The edge counts, then random ones.
    fn counts(seed: u64) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        let mut v = COUNTS.to_vec();
        v.extend((0..12).map(|_| rng.next() as u8));
        v
    }

    #[test]
    fn shifts_match_host() {
        let mut ck = Checker::new("rol ror rcl rcr shl shr sar");
        let values = singles(3, 600);
        let counts = counts(4);
        for size in [1, 2, 4, 8] {
            let m = mask(size);
            for &(a, f) in &values {
                for &c in &counts {
                    for op in OPS {
                        let (r, mf) = shift(op, size, a, c, f | OTHER_FLAGS);
                        let (hr, hf) = host_shift(op, size, a, c, f);
                        let what = || format!("{op:?} size {size} a {a:#x} count {c} f {f:#x}");
                        ck.case();
                        ck.value(what, r, hr & m);
                        ck.flags(what, mf, hf, ARITH);
                    }
                }
            }
        }
        ck.finish();
    }

    #[test]
    fn double_shifts_match_host() {
        let mut ck = Checker::new("shld shrd");
        let values = singles(5, 400);
        let mut rng = Rng::new(6);
        let counts = counts(7);
        for size in [2, 4, 8] {
            let m = mask(size);
            for &(d, f) in &values {
                let s = rng.value();
                for &c in &counts {
                    macro_rules! cmp {
                        ($insn:literal, $model:ident) => {{
                            let (r, mf) = $model(size, d, s, c, f | OTHER_FLAGS);
                            let (hr, hf) = match size {
                                2 => host_rrcl!($insn, "x", d, s, c, f),
                                4 => host_rrcl!($insn, "e", d, s, c, f),
                                _ => host_rrcl!($insn, "r", d, s, c, f),
                            };
                            let what = || {
                                format!(
                                    "{} size {size} d {d:#x} s {s:#x} count {c} f {f:#x}",
                                    $insn
                                )
                            };
                            ck.case();
                            ck.value(what, r, hr & m);
                            ck.flags(what, mf, hf, ARITH);
                        }};
                    }
                    cmp!("shld", shld);
                    cmp!("shrd", shrd);
                }
            }
        }
        ck.finish();
    }

    #[test]
    fn bmi2_shifts_match_host() {
        let mut ck = Checker::new("sarx shlx shrx rorx");
        let values = singles(8, 1000);
        let mut rng = Rng::new(9);
        for size in [4u32, 8] {
            for &(a, _) in &values {
                let mut cs: Vec<u64> = COUNTS.iter().map(|&c| u64::from(c)).collect();
                cs.push(rng.next());
                for c in cs {
                    macro_rules! cmp {
                        ($insn:literal, $model:ident) => {{
                            let r = $model(size, a, c);
                            let (hr, _) = match size {
                                4 => host_rrr!($insn, "e", 0, a, c, 2),
                                _ => host_rrr!($insn, "r", 0, a, c, 2),
                            };
                            ck.case();
                            ck.value(|| format!("{} size {size} a {a:#x} c {c:#x}", $insn), r, hr);
                        }};
                    }
                    cmp!("sarx", sarx);
                    cmp!("shlx", shlx);
                    cmp!("shrx", shrx);
                }
                macro_rules! rorx_imm {
                    ($($imm:literal)*) => {$(
                        let mut h: u64 = 0;
                        // SAFETY: a register-only BMI2 instruction; no memory or flags.
                        unsafe {
                            if size == 4 {
                                core::arch::asm!(concat!("rorx {d:e}, {a:e}, ", $imm), d = out(reg) h, a = in(reg) a);
                            } else {
                                core::arch::asm!(concat!("rorx {d}, {a}, ", $imm), d = out(reg) h, a = in(reg) a);
                            }
                        }
                        ck.case();
                        ck.value(|| format!("rorx size {size} a {a:#x} imm {}", $imm), rorx(size, a, $imm), h);
                    )*};
                }
                rorx_imm!(0 1 2 7 8 15 16 31 32 33 63 64 65 127 200 255);
            }
        }
        ck.finish();
    }
}

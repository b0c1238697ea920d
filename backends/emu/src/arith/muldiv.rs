//! Multiplication and division: MUL, IMUL (one-, two- and three-operand), DIV, IDIV, MULX.

use super::flags::{bits, flag_if, mask, sign_extend, update, AF, ARITH, CF, OF};

/// A divide error (#DE): division by zero, or a quotient that does not fit the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DivideError;

/// Sign-extends the 2n-bit value `hi:lo` (n = width of `size`) to an i128.
#[inline]
fn wide_signed(size: u32, hi: u64, lo: u64) -> i128 {
    let n = bits(size);
    let m = mask(size);
    let v = (u128::from(hi & m) << n) | u128::from(lo & m);
    let shift = 128 - 2 * n;
    ((v << shift) as i128) >> shift
}

/// Flags of a multiplication: CF = OF = `overflow`. SF ZF AF PF are architecturally undefined;
/// the host (AMD Zen) leaves them unchanged, and so does this.
#[inline]
fn mul_flags(overflow: bool, rflags: u64) -> u64 {
    update(rflags, CF | OF, flag_if(overflow, CF | OF))
}

/// One-operand MUL: unsigned `a * b` of `size`-byte operands; returns (low half, high half,
/// rflags). For `size` 1 the halves are AL and AH; otherwise (E/R)AX and (E/R)DX.
///
/// CF and OF are set when the high half is nonzero. SF ZF AF PF are undefined and left
/// unchanged, as the host does.
#[inline]
pub fn mul(size: u32, a: u64, b: u64, rflags: u64) -> (u64, u64, u64) {
    let m = mask(size);
    let p = u128::from(a & m) * u128::from(b & m);
    let lo = p as u64 & m;
    let hi = (p >> bits(size)) as u64 & m;
    (lo, hi, mul_flags(hi != 0, rflags))
}

/// One-operand IMUL: signed `a * b`; returns (low half, high half, rflags) like [`mul`].
///
/// CF and OF are set when the high half is not the sign extension of the low half. SF ZF AF PF
/// are undefined and left unchanged, as for [`mul`].
#[inline]
pub fn imul_wide(size: u32, a: u64, b: u64, rflags: u64) -> (u64, u64, u64) {
    let m = mask(size);
    let p = i128::from(sign_extend(size, a) as i64) * i128::from(sign_extend(size, b) as i64);
    let lo = p as u64 & m;
    let hi = (p >> bits(size)) as u64 & m;
    let overflow = p != i128::from(sign_extend(size, lo) as i64);
    (lo, hi, mul_flags(overflow, rflags))
}

/// Two- and three-operand IMUL: signed `a * b` truncated to `size`; returns (result, rflags).
/// Flags as for [`imul_wide`].
#[inline]
pub fn imul(size: u32, a: u64, b: u64, rflags: u64) -> (u64, u64) {
    let (lo, _, f) = imul_wide(size, a, b, rflags);
    (lo, f)
}

/// DIV: unsigned division of `hi:lo` (AH:AL for `size` 1, else (E/R)DX:(E/R)AX) by `divisor`;
/// returns (quotient, remainder).
///
/// All six status flags are undefined after DIV; this function does not compute them: the
/// interpreter should apply [`div_flags`] (the host's behaviour) after a division that does
/// not fault.
///
/// # Errors
/// [`DivideError`] when the divisor is zero or the quotient does not fit in `size` bytes.
#[inline]
pub fn div(size: u32, hi: u64, lo: u64, divisor: u64) -> Result<(u64, u64), DivideError> {
    let m = mask(size);
    let dividend = (u128::from(hi & m) << bits(size)) | u128::from(lo & m);
    let d = u128::from(divisor & m);
    if d == 0 {
        return Err(DivideError);
    }
    let q = dividend / d;
    if q > u128::from(m) {
        return Err(DivideError);
    }
    Ok((q as u64, (dividend % d) as u64))
}

/// IDIV: signed division of `hi:lo` by `divisor`, truncating towards zero; returns
/// (quotient, remainder), the remainder having the dividend's sign. Flags as for [`div`].
///
/// # Errors
/// [`DivideError`] when the divisor is zero or the quotient is outside the signed range of
/// `size` bytes (this includes the most negative dividend divided by -1).
#[inline]
pub fn idiv(size: u32, hi: u64, lo: u64, divisor: u64) -> Result<(u64, u64), DivideError> {
    let m = mask(size);
    let n = bits(size);
    let dividend = wide_signed(size, hi, lo);
    let d = i128::from(sign_extend(size, divisor) as i64);
    let q = dividend.checked_div(d).ok_or(DivideError)?;
    let r = dividend.checked_rem(d).ok_or(DivideError)?;
    let limit = 1i128 << (n - 1);
    if q < -limit || q >= limit {
        return Err(DivideError);
    }
    Ok((q as u64 & m, r as u64 & m))
}

/// RFLAGS after a DIV or IDIV that did not fault. All six status flags are architecturally
/// undefined; the host (AMD Zen) keeps CF and OF, sets AF and clears SF ZF PF, whatever the
/// operands, and this reproduces that.
#[inline]
pub fn div_flags(rflags: u64) -> u64 {
    update(rflags, ARITH & !(CF | OF), AF)
}

/// MULX (BMI2): unsigned `a * b` of 4- or 8-byte operands; returns (low, high); no flags.
#[inline]
pub fn mulx(size: u32, a: u64, b: u64) -> (u64, u64) {
    let m = mask(size);
    let p = u128::from(a & m) * u128::from(b & m);
    (p as u64 & m, (p >> bits(size)) as u64 & m)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    extern crate std;
    use std::format;

    use super::super::testutil::{host_rr_wide, pairs, Checker, Rng, OTHER_FLAGS};
    use super::*;

    /// Runs a one-operand multiply or divide (`insn {b}`) on the host with RAX = `ax` and
    /// RDX = `dx`; returns (RAX, RDX, RFLAGS).
    macro_rules! host_axdx {
        ($insn:literal, $m:literal, $ax:expr, $dx:expr, $b:expr, $fl:expr) => {{
            let mut ax: u64 = $ax;
            let mut dx: u64 = $dx;
            let b: u64 = $b;
            let mut f: u64 = $fl;
            // SAFETY: registers and status flags only, balanced stack use; the callers only
            // divide when the model says the division cannot fault.
            unsafe {
                core::arch::asm!(
                    "push {f}", "popfq",
                    concat!($insn, " {b:", $m, "}"),
                    "pushfq", "pop {f}",
                    b = in(reg) b, f = inout(reg) f,
                    inout("rax") ax, inout("rdx") dx,
                );
            }
            (ax, dx, f)
        }};
    }

    /// Runs a one-operand MUL/IMUL/DIV/IDIV of `size`; returns (low or quotient, high or
    /// remainder, rflags) in the register layout of the size (AL/AH for bytes).
    fn host(insn: &str, size: u32, lo: u64, hi: u64, b: u64, f: u64) -> (u64, u64, u64) {
        macro_rules! by_size {
            ($insn:literal) => {
                match size {
                    1 => {
                        let ax = (lo & 0xff) | ((hi & 0xff) << 8);
                        let (ax, _, f) = host_axdx!($insn, "l", ax, 0, b, f);
                        (ax & 0xff, (ax >> 8) & 0xff, f)
                    }
                    2 => host_axdx!($insn, "x", lo, hi, b, f),
                    4 => host_axdx!($insn, "e", lo, hi, b, f),
                    _ => host_axdx!($insn, "r", lo, hi, b, f),
                }
            };
        }
        match insn {
            "mul" => by_size!("mul"),
            "imul" => by_size!("imul"),
            "div" => by_size!("div"),
            _ => by_size!("idiv"),
        }
    }

    #[test]
    fn multiplies_match_host() {
        let mut ck = Checker::new("mul imul (1, 2 operands) mulx");
        for size in [1u32, 2, 4, 8] {
            let m = mask(size);
            for &(a, b, f) in &pairs(10, 4000) {
                let what = |n: &str| format!("{n} size {size} a {a:#x} b {b:#x} f {f:#x}");
                let (lo, hi, mf) = mul(size, a, b, f | OTHER_FLAGS);
                let (hlo, hhi, hf) = host("mul", size, a, 0, b, f);
                ck.case();
                ck.value(|| what("mul"), lo, hlo & m);
                ck.value(|| what("mul hi"), hi, hhi & m);
                ck.flags(|| what("mul"), mf, hf, ARITH);
                let (lo, hi, mf) = imul_wide(size, a, b, f | OTHER_FLAGS);
                let (hlo, hhi, hf) = host("imul", size, a, 0, b, f);
                ck.case();
                ck.value(|| what("imul1"), lo, hlo & m);
                ck.value(|| what("imul1 hi"), hi, hhi & m);
                ck.flags(|| what("imul1"), mf, hf, ARITH);
                if size > 1 {
                    let (r, mf) = imul(size, a, b, f | OTHER_FLAGS);
                    let (hr, hf) = host_rr_wide!("imul", size, a, b, f);
                    ck.case();
                    ck.value(|| what("imul2"), r, hr & m);
                    ck.flags(|| what("imul2"), mf, hf, ARITH);
                }
                if size >= 4 {
                    let (lo, hi) = mulx(size, a, b);
                    let (mut hlo, mut hhi) = (0u64, 0u64);
                    // SAFETY: register-only BMI2 multiply; RDX is the implicit source.
                    unsafe {
                        if size == 4 {
                            core::arch::asm!("mulx {h:e}, {l:e}, {b:e}", h = out(reg) hhi,
                                l = out(reg) hlo, b = in(reg) b, in("rdx") a);
                        } else {
                            core::arch::asm!("mulx {h}, {l}, {b}", h = out(reg) hhi,
                                l = out(reg) hlo, b = in(reg) b, in("rdx") a);
                        }
                    }
                    ck.case();
                    ck.value(|| what("mulx lo"), lo, hlo);
                    ck.value(|| what("mulx hi"), hi, hhi);
                }
            }
        }
        ck.finish();
    }

    #[test]
    fn divides_match_host() {
        let mut ck = Checker::new("div idiv");
        let mut rng = Rng::new(11);
        let (mut faults, mut ok) = (0, 0);
        for size in [1u32, 2, 4, 8] {
            let m = mask(size);
            for &(lo, d, f) in &pairs(12, 6000) {
                // A high half that is often small enough for the quotient to fit.
                let hi = match rng.next() % 4 {
                    0 => 0,
                    1 => u64::MAX,
                    2 => rng.value() % (d & m).max(1),
                    _ => rng.value(),
                };
                let what = |n: &str| format!("{n} size {size} hi {hi:#x} lo {lo:#x} d {d:#x}");
                for signed in [false, true] {
                    let model = if signed {
                        idiv(size, hi, lo, d)
                    } else {
                        div(size, hi, lo, d)
                    };
                    // Independent check of the fault condition, from the quotient bounds.
                    let expect_fault = if d & m == 0 {
                        true
                    } else if signed {
                        let n = bits(size);
                        let dividend = wide_signed(size, hi, lo);
                        let dv = i128::from(sign_extend(size, d) as i64);
                        (dividend == i128::MIN && dv == -1)
                            || (dividend != i128::MIN && {
                                let q = dividend / dv;
                                q > (1i128 << (n - 1)) - 1 || q < -(1i128 << (n - 1))
                            })
                    } else {
                        hi & m >= d & m
                    };
                    ck.case();
                    match model {
                        Err(DivideError) => {
                            faults += 1;
                            ck.value(
                                || what(if signed { "idiv fault" } else { "div fault" }),
                                1,
                                u64::from(expect_fault),
                            );
                        }
                        Ok((q, r)) => {
                            ok += 1;
                            ck.value(|| what("no fault"), 0, u64::from(expect_fault));
                            let (hq, hr, hf) =
                                host(if signed { "idiv" } else { "div" }, size, lo, hi, d, f);
                            ck.value(|| what(if signed { "idiv q" } else { "div q" }), q, hq & m);
                            ck.value(|| what(if signed { "idiv r" } else { "div r" }), r, hr & m);
                            ck.flags(|| what("div flags"), div_flags(f | OTHER_FLAGS), hf, ARITH);
                        }
                    }
                }
            }
        }
        assert!(faults > 1000 && ok > 20000, "faults {faults} ok {ok}");
        ck.finish();
    }
}

//! The software IEEE implementation checked against the host CPU's SSE unit: random and
//! edge-case operands under random rounding modes, DAZ and FTZ, comparing result bits and
//! the MXCSR exception flags.

extern crate std;

use super::*;
use crate::arith::testutil::Rng;
use core::arch::asm;
use std::format;
use std::string::String;

/// All exceptions masked; RC, FTZ and DAZ from `r`.
fn random_mxcsr(r: u64) -> u32 {
    let mut m = 0x1f80 | (((r & 3) as u32) << 13);
    if r & 4 != 0 {
        m |= 1 << 15;
    }
    if r & 8 != 0 {
        m |= 1 << 6;
    }
    m
}

/// A random value of `f` biased towards the interesting encodings.
fn value(rng: &mut Rng, f: Format) -> u128 {
    let r = rng.next();
    let bits = f.exp_bits + f.frac_bits;
    let frac_mask = (1u128 << f.frac_bits) - 1;
    let sign = u128::from(r >> 63) << bits;
    let emax = (1u128 << f.exp_bits) - 1;
    let frac = u128::from(rng.next()) & frac_mask;
    let e = match r % 10 {
        0 => 0,
        1 => emax,
        2 => 1 + (r >> 8) as u128 % 3,
        3 => emax - 1 - (r >> 8) as u128 % 3,
        4 => ((emax >> 1) - 30) + (r >> 8) as u128 % 60,
        _ => u128::from(rng.next()) % (emax + 1),
    };
    let frac = match (r >> 16) % 6 {
        0 => 0,
        1 => frac_mask,
        2 => frac & 0xff,
        3 => frac | (frac_mask >> 1),
        _ => frac,
    };
    sign | (e << f.frac_bits) | frac
}

/// A value near `a` (cancellation, ties, equal operands).
fn near(rng: &mut Rng, f: Format, a: u128) -> u128 {
    let r = rng.next();
    let sign = 1u128 << (f.exp_bits + f.frac_bits);
    let d = u128::from(r >> 40) % 5;
    let base = if r & 1 != 0 { a ^ sign } else { a };
    match (r >> 4) % 3 {
        0 => base,
        1 => base.wrapping_add(d) & ((sign << 1) - 1),
        _ => base.wrapping_sub(d) & ((sign << 1) - 1),
    }
}

macro_rules! hw2 {
    ($name:ident, $ins:literal) => {
        fn $name(a: u64, b: u64, mxcsr: u32) -> (u64, u32) {
            let mut save = 0u32;
            let mut after = 0u32;
            let out: u64;
            // SAFETY: the block only loads and restores MXCSR (saved first, with a valid
            // value from `random_mxcsr`) and uses the declared xmm registers.
            unsafe {
                asm!(
                    "stmxcsr [{save}]",
                    "ldmxcsr [{m}]",
                    "movq xmm0, {a}",
                    "movq xmm1, {b}",
                    $ins,
                    "movq {o}, xmm0",
                    "stmxcsr [{after}]",
                    "ldmxcsr [{save}]",
                    save = in(reg) &mut save as *mut u32,
                    m = in(reg) &mxcsr as *const u32,
                    after = in(reg) &mut after as *mut u32,
                    a = in(reg) a,
                    b = in(reg) b,
                    o = out(reg) out,
                    out("xmm0") _,
                    out("xmm1") _,
                );
            }
            (out, after & 0x3f)
        }
    };
}

hw2!(addss, "addss xmm0, xmm1");
hw2!(subss, "subss xmm0, xmm1");
hw2!(mulss, "mulss xmm0, xmm1");
hw2!(divss, "divss xmm0, xmm1");
hw2!(sqrtss, "sqrtss xmm0, xmm1");
hw2!(addsd, "addsd xmm0, xmm1");
hw2!(subsd, "subsd xmm0, xmm1");
hw2!(mulsd, "mulsd xmm0, xmm1");
hw2!(divsd, "divsd xmm0, xmm1");
hw2!(sqrtsd, "sqrtsd xmm0, xmm1");
hw2!(cvtss2sd, "cvtss2sd xmm0, xmm1");
hw2!(cvtsd2ss, "cvtsd2ss xmm0, xmm1");
hw2!(roundss_near, "roundss xmm0, xmm1, 0");
hw2!(roundss_mxcsr, "roundss xmm0, xmm1, 4");
hw2!(roundss_floor_noexc, "roundss xmm0, xmm1, 9");
hw2!(roundsd_trunc, "roundsd xmm0, xmm1, 3");
hw2!(roundsd_ceil, "roundsd xmm0, xmm1, 2");

macro_rules! hw_int {
    ($name:ident, $ins:literal) => {
        fn $name(b: u64, mxcsr: u32) -> (u64, u32) {
            let mut save = 0u32;
            let mut after = 0u32;
            let out: u64;
            // SAFETY: as in `hw2`.
            unsafe {
                asm!(
                    "stmxcsr [{save}]",
                    "ldmxcsr [{m}]",
                    "movq xmm1, {b}",
                    $ins,
                    "stmxcsr [{after}]",
                    "ldmxcsr [{save}]",
                    save = in(reg) &mut save as *mut u32,
                    m = in(reg) &mxcsr as *const u32,
                    after = in(reg) &mut after as *mut u32,
                    b = in(reg) b,
                    out("rax") out,
                    out("xmm1") _,
                );
            }
            (out, after & 0x3f)
        }
    };
}

hw_int!(cvtss2si64, "cvtss2si rax, xmm1");
hw_int!(cvttsd2si64, "cvttsd2si rax, xmm1");
hw_int!(cvtsd2si32, "cvtsd2si eax, xmm1");
hw_int!(cvttss2si32, "cvttss2si eax, xmm1");

fn cvtsi2ss(v: i64, mxcsr: u32) -> (u64, u32) {
    let mut save = 0u32;
    let mut after = 0u32;
    let out: u64;
    // SAFETY: as in `hw2`.
    unsafe {
        asm!(
            "stmxcsr [{save}]",
            "ldmxcsr [{m}]",
            "xorps xmm0, xmm0",
            "cvtsi2ss xmm0, {v}",
            "movq {o}, xmm0",
            "stmxcsr [{after}]",
            "ldmxcsr [{save}]",
            save = in(reg) &mut save as *mut u32,
            m = in(reg) &mxcsr as *const u32,
            after = in(reg) &mut after as *mut u32,
            v = in(reg) v,
            o = out(reg) out,
            out("xmm0") _,
        );
    }
    (out, after & 0x3f)
}

/// ZF/PF/CF after (U)COMISD, and the flags.
fn comisd(a: u64, b: u64, mxcsr: u32, signaling: bool) -> (u64, u32) {
    let mut save = 0u32;
    let mut after = 0u32;
    let rf: u64;
    // SAFETY: as in `hw2`; pushfq/pop stay balanced on the stack.
    unsafe {
        if signaling {
            asm!(
                "stmxcsr [{save}]",
                "ldmxcsr [{m}]",
                "movq xmm0, {a}",
                "movq xmm1, {b}",
                "comisd xmm0, xmm1",
                "pushfq",
                "pop {o}",
                "stmxcsr [{after}]",
                "ldmxcsr [{save}]",
                save = in(reg) &mut save as *mut u32,
                m = in(reg) &mxcsr as *const u32,
                after = in(reg) &mut after as *mut u32,
                a = in(reg) a,
                b = in(reg) b,
                o = out(reg) rf,
                out("xmm0") _,
                out("xmm1") _,
            );
        } else {
            asm!(
                "stmxcsr [{save}]",
                "ldmxcsr [{m}]",
                "movq xmm0, {a}",
                "movq xmm1, {b}",
                "ucomisd xmm0, xmm1",
                "pushfq",
                "pop {o}",
                "stmxcsr [{after}]",
                "ldmxcsr [{save}]",
                save = in(reg) &mut save as *mut u32,
                m = in(reg) &mxcsr as *const u32,
                after = in(reg) &mut after as *mut u32,
                a = in(reg) a,
                b = in(reg) b,
                o = out(reg) rf,
                out("xmm0") _,
                out("xmm1") _,
            );
        }
    }
    (rf & 0x45, after & 0x3f)
}

type Soft2 = fn(Format, u128, u128, &mut Env) -> u128;
type Hw2 = fn(u64, u64, u32) -> (u64, u32);
type HwInt = fn(u64, u32) -> (u64, u32);
type Hw80 = fn(u128, u128, u16) -> (u128, u16);

fn check2(name: &str, f: Format, soft: Soft2, hw: Hw2, seed: u64, n: usize) {
    let mut rng = Rng::new(seed);
    let mask = (1u128 << (1 + f.exp_bits + f.frac_bits)) - 1;
    let mut failures: std::vec::Vec<String> = std::vec::Vec::new();
    for _ in 0..n {
        let a = value(&mut rng, f);
        let b = if rng.next() % 3 == 0 {
            near(&mut rng, f, a)
        } else {
            value(&mut rng, f)
        };
        let mxcsr = random_mxcsr(rng.next());
        let (want, want_flags) = hw(a as u64, b as u64, mxcsr);
        let mut env = Env::sse(mxcsr, f);
        let got = soft(f, a, b, &mut env);
        if got != u128::from(want) & mask || env.flags != want_flags {
            failures.push(format!(
                "{name}({a:#x}, {b:#x}) mxcsr {mxcsr:#x}: soft {got:#x} flags {:#x}, hw {:#x} flags {want_flags:#x}",
                env.flags,
                u128::from(want) & mask
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(8)]
    );
}

#[test]
fn f32_arithmetic_matches_hardware() {
    check2("add", F32, add, addss, 1, 200_000);
    check2("sub", F32, sub, subss, 2, 200_000);
    check2("mul", F32, mul, mulss, 3, 200_000);
    check2("div", F32, div, divss, 4, 200_000);
    check2("sqrt", F32, |f, _, b, e| sqrt(f, b, e), sqrtss, 5, 100_000);
}

#[test]
fn f64_arithmetic_matches_hardware() {
    check2("add", F64, add, addsd, 11, 200_000);
    check2("sub", F64, sub, subsd, 12, 200_000);
    check2("mul", F64, mul, mulsd, 13, 200_000);
    check2("div", F64, div, divsd, 14, 200_000);
    check2("sqrt", F64, |f, _, b, e| sqrt(f, b, e), sqrtsd, 15, 100_000);
}

#[test]
fn conversions_match_hardware() {
    check2(
        "f32->f64",
        F64,
        |_, _, b, e| convert(F32, F64, b & 0xffff_ffff, e),
        |a, b, m| cvtss2sd(a, b & 0xffff_ffff, m),
        21,
        100_000,
    );
    check2(
        "f64->f32",
        F32,
        |_, _, b, e| convert(F64, F32, b, e),
        cvtsd2ss,
        22,
        100_000,
    );
    let mut rng = Rng::new(23);
    for _ in 0..100_000 {
        let v = rng.value() as i64 >> (rng.next() % 64);
        let m = random_mxcsr(rng.next());
        let (want, wf) = cvtsi2ss(v, m);
        let mut env = Env::sse(m, F32);
        let got = from_int(F32, v, &mut env);
        assert_eq!(
            (got, env.flags),
            (u128::from(want as u32), wf),
            "cvtsi2ss {v:#x} mxcsr {m:#x}"
        );
    }
    let int_cases: [(Format, u32, bool, HwInt); 4] = [
        (F32, 64, false, cvtss2si64),
        (F64, 64, true, cvttsd2si64),
        (F64, 32, false, cvtsd2si32),
        (F32, 32, true, cvttss2si32),
    ];
    for (i, (f, width, trunc, hw)) in int_cases.into_iter().enumerate() {
        let mut rng = Rng::new(30 + i as u64);
        for _ in 0..100_000 {
            let a = value(&mut rng, f);
            let m = random_mxcsr(rng.next());
            let (want, wf) = hw(a as u64, m);
            let mut env = Env::sse(m, f);
            let got = to_int(f, a, width, trunc, &mut env);
            let indefinite = 1u64 << (width - 1);
            let got = match got {
                Some(v) if width == 32 => u64::from(v as u32),
                Some(v) => v as u64,
                None => indefinite,
            };
            let want = if width == 32 {
                want & 0xffff_ffff
            } else {
                want
            };
            assert_eq!(
                (got, env.flags),
                (want, wf),
                "to_int {f:?} w{width} t{trunc} {a:#x} mxcsr {m:#x}"
            );
        }
    }
}

#[test]
fn rounding_to_integral_matches_hardware() {
    check2(
        "roundss near",
        F32,
        |f, _, b, e| round_to_integral(f, b, Round::Nearest, true, e),
        roundss_near,
        41,
        100_000,
    );
    check2(
        "roundss mxcsr",
        F32,
        |f, _, b, e| {
            let r = e.round;
            round_to_integral(f, b, r, true, e)
        },
        roundss_mxcsr,
        45,
        100_000,
    );
    check2(
        "roundss floor",
        F32,
        |f, _, b, e| round_to_integral(f, b, Round::Down, false, e),
        roundss_floor_noexc,
        42,
        100_000,
    );
    check2(
        "roundsd trunc",
        F64,
        |f, _, b, e| round_to_integral(f, b, Round::Zero, true, e),
        roundsd_trunc,
        43,
        100_000,
    );
    check2(
        "roundsd ceil",
        F64,
        |f, _, b, e| round_to_integral(f, b, Round::Up, true, e),
        roundsd_ceil,
        44,
        100_000,
    );
}

#[test]
fn compare_matches_hardware() {
    let mut rng = Rng::new(51);
    for i in 0..200_000 {
        let a = value(&mut rng, F64);
        let b = if rng.next() % 3 == 0 {
            near(&mut rng, F64, a)
        } else {
            value(&mut rng, F64)
        };
        let m = random_mxcsr(rng.next());
        let signaling = i % 2 == 0;
        let (want, wf) = comisd(a as u64, b as u64, m, signaling);
        let mut env = Env::sse(m, F64);
        let got = match compare(F64, a, b, signaling, &mut env) {
            Ordering::Unordered => 0x45,
            Ordering::Less => 0x01,
            Ordering::Equal => 0x40,
            Ordering::Greater => 0,
        };
        assert_eq!(
            (got, env.flags),
            (want, wf),
            "compare {a:#x} {b:#x} mxcsr {m:#x} signaling {signaling}"
        );
    }
}

#[test]
fn special_encodings() {
    assert_eq!(default_nan(F32), 0xffc0_0000);
    assert_eq!(default_nan(F64), 0xfff8_0000_0000_0000);
    assert_eq!(default_nan(F80), 0xffff_c000_0000_0000_0000);
    assert_eq!(classify(F80, 0x7fff_8000_0000_0000_0000), Class::Infinite);
    assert_eq!(
        classify(F80, 0x7fff_0000_0000_0000_0000),
        Class::Unsupported
    );
    assert_eq!(
        classify(F80, 0x3fff_0000_0000_0000_0000),
        Class::Unsupported
    );
    assert_eq!(classify(F80, 0x0000_8000_0000_0000_0000), Class::Subnormal);
    assert_eq!(
        classify(F80, 0x7fff_a000_0000_0000_0000),
        Class::SignalingNan
    );
    assert_eq!(classify(F80, 0x7fff_c000_0000_0000_0001), Class::QuietNan);
    let mut env = Env::x87(0x37f);
    // 1 + 1 = 2 in F80.
    let one = 0x3fff_8000_0000_0000_0000u128;
    assert_eq!(add(F80, one, one, &mut env), 0x4000_8000_0000_0000_0000);
    assert_eq!(env.flags, 0);
    // A pseudo-denormal operand raises DE and is read as its value.
    let pd = 0x0000_8000_0000_0000_0000u128;
    let mut env = Env::x87(0x37f);
    assert_eq!(add(F80, pd, 0, &mut env), 0x0001_8000_0000_0000_0000);
    assert_eq!(env.flags, exc::DE);
    // Unnormal operand: invalid, default NaN.
    let mut env = Env::x87(0x37f);
    assert_eq!(
        mul(F80, 0x3fff_4000_0000_0000_0000, one, &mut env),
        default_nan(F80)
    );
    assert_eq!(env.flags, exc::IE);
    // 1/3 under precision control 24 keeps 24 significand bits.
    let three = 0x4000_c000_0000_0000_0000u128;
    let mut env = Env::x87(0x07f);
    let q = div(F80, one, three, &mut env);
    assert_eq!(q, 0x3ffd_aaaa_ab00_0000_0000);
    assert_eq!(env.flags, exc::PE);
    // Overflow with precision control 53 under round-to-zero: the 53-bit maximum.
    let big = 0x7ffe_ffff_ffff_ffff_ffffu128;
    let mut env = Env::x87(0x0e7f);
    let r = add(F80, big, big, &mut env);
    assert_eq!(r, 0x7ffe_ffff_ffff_ffff_f800);
    assert_eq!(env.flags, exc::OE | exc::PE);
    // x87 NaN rule: the QNaN wins over the SNaN, the larger significand between QNaNs.
    let mut env = Env::x87(0x37f);
    let s = 0x7fff_a000_0000_0000_0000u128;
    let q1 = 0xffff_c000_0000_0000_0001u128;
    let q2 = 0x7fff_c000_0000_0000_0002u128;
    assert_eq!(add(F80, s, q1, &mut env), q1);
    assert_eq!(env.flags, exc::IE);
    assert_eq!(add(F80, q1, q2, &mut env), q2);
    // SSE rule: the first operand's NaN, quieted.
    let mut env = Env::sse(0x1f80, F32);
    assert_eq!(add(F32, 0x7f80_0001, 0x7fc0_0002, &mut env), 0x7fc0_0001);
    assert_eq!(env.flags, exc::IE);
    // frexp/scale round trip.
    let x = 0x4005_d000_0000_0000_1234u128;
    let (e, s) = frexp(F80, x).unwrap_or((0, 0));
    assert_eq!(e, 6);
    let mut env = Env::x87(0x37f);
    assert_eq!(scale(F80, s, i64::from(e), &mut env), x);
    // An F80 to F64 conversion of a NaN keeps the payload's top bits.
    let mut env = Env::x87(0x37f);
    assert_eq!(
        convert(F80, F64, 0x7fff_a000_0000_0000_0800, &mut env),
        0x7ffc_0000_0000_0001
    );
    assert_eq!(env.flags, exc::IE);
    assert_eq!(to_int(F80, one, 16, false, &mut env), Some(1));
    assert_eq!(
        from_int(F80, i64::MIN, &mut env),
        0xc03e_8000_0000_0000_0000
    );
}

#[test]
fn underflow_condition_sees_exact_tiny_results() {
    let mut env = Env::sse(0x1f80, F32);
    // Smallest normal halved exactly: a denormal, no PE.
    let r = mul(F32, 0x0080_0000, 0x3f00_0000, &mut env);
    assert_eq!(r, 0x0040_0000);
    assert_eq!(env.flags, 0);
    assert!(underflow_condition(F32, r, env.flags));
}

/// A random F80 value: mostly well-formed (integer bit matching the exponent), sometimes
/// unnormals, pseudo-denormals and pseudo-NaNs.
fn value80(rng: &mut Rng) -> u128 {
    let r = rng.next();
    let e: u128 = match r % 8 {
        0 => 0,
        1 => 0x7fff,
        2 => 1 + (r >> 8) as u128 % 3,
        3 => 0x7ffe - (r >> 8) as u128 % 3,
        4 => 0x3fff - 40 + (r >> 8) as u128 % 80,
        _ => u128::from(rng.next()) % 0x8000,
    };
    let frac = u128::from(rng.next() >> 1);
    let frac = match (r >> 16) % 6 {
        0 => 0,
        1 => (1 << 63) - 1,
        2 => frac & 0xffff,
        3 => frac & !0xff_ffff,
        _ => frac,
    };
    let int = if (r >> 24) % 16 == 0 {
        (r >> 30) & 1 == 1
    } else {
        e != 0
    };
    (u128::from(r >> 63) << 79) | (e << 64) | (u128::from(int) << 63) | frac
}

macro_rules! x87_2 {
    ($name:ident, $ins:literal) => {
        /// Run the x87 instruction on st0 = a, st1 = b: the result in st0 and FSW.
        fn $name(a: u128, b: u128, fcw: u16) -> (u128, u16) {
            let ab = a.to_le_bytes();
            let bb = b.to_le_bytes();
            let mut out = [0u8; 16];
            let mut save = 0u16;
            let mut sw = 0u16;
            // SAFETY: loads two values, operates, stores and pops both, restoring the
            // control word and clearing the exceptions it raised (all masked by `fcw`).
            unsafe {
                asm!(
                    "fnstcw [{save}]",
                    "fldcw [{cw}]",
                    "fnclex",
                    "fld tbyte ptr [{b}]",
                    "fld tbyte ptr [{a}]",
                    $ins,
                    "fstp tbyte ptr [{o}]",
                    "fstp st(0)",
                    "fnstsw [{sw}]",
                    "fnclex",
                    "fldcw [{save}]",
                    save = in(reg) &mut save as *mut u16,
                    cw = in(reg) &fcw as *const u16,
                    a = in(reg) ab.as_ptr(),
                    b = in(reg) bb.as_ptr(),
                    o = in(reg) out.as_mut_ptr(),
                    sw = in(reg) &mut sw as *mut u16,
                );
            }
            (u128::from_le_bytes(out), sw & 0x3f)
        }
    };
}

x87_2!(fadd, "fadd st(0), st(1)");
x87_2!(fsub, "fsub st(0), st(1)");
x87_2!(fmul, "fmul st(0), st(1)");
x87_2!(fdiv, "fdiv st(0), st(1)");
x87_2!(fsqrt, "fsqrt");

#[test]
fn f80_arithmetic_matches_x87() {
    let ops: [(&str, Soft2, Hw80); 5] = [
        ("fadd", add, fadd),
        ("fsub", sub, fsub),
        ("fmul", mul, fmul),
        ("fdiv", div, fdiv),
        ("fsqrt", |f, a, _, e| sqrt(f, a, e), fsqrt),
    ];
    for (i, (name, soft, hw)) in ops.into_iter().enumerate() {
        let mut rng = Rng::new(70 + i as u64);
        let mut failures: std::vec::Vec<String> = std::vec::Vec::new();
        for _ in 0..100_000 {
            let a = value80(&mut rng);
            let b = if rng.next() % 3 == 0 {
                near(&mut rng, F80, a)
            } else {
                value80(&mut rng)
            };
            let r = rng.next();
            // All exceptions masked; random precision and rounding control.
            let pc = [0u16, 2, 3][(r % 3) as usize];
            let fcw = 0x7f | (pc << 8) | (((r >> 4) & 3) as u16) << 10;
            let (want, wf) = hw(a, b, fcw);
            let mut env = Env::x87(fcw);
            let got = soft(F80, a, b, &mut env);
            if got != want || env.flags != u32::from(wf) {
                failures.push(format!(
                    "{name}({a:#x}, {b:#x}) fcw {fcw:#x}: soft {got:#x} flags {:#x}, hw {want:#x} flags {wf:#x}",
                    env.flags
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} mismatches, first: {:#?}",
            failures.len(),
            &failures[..failures.len().min(10)]
        );
    }
}

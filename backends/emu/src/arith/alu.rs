//! Two-operand ALU instructions (ADD ADC SUB SBB AND OR XOR, and CMP/TEST through them) and the
//! one-operand INC, DEC, NEG.

use super::flags::{flag_if, mask, sign_bit, szp, update, AF, ARITH, CF, OF};

/// The two-operand ALU operations. CMP is [`AluOp::Sub`] without write-back, TEST is
/// [`AluOp::And`] without write-back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    /// `a + b`.
    Add,
    /// `a + b + CF`.
    Adc,
    /// `a - b`.
    Sub,
    /// `a - b - CF`.
    Sbb,
    /// `a & b`.
    And,
    /// `a | b`.
    Or,
    /// `a ^ b`.
    Xor,
}

/// Flags of an addition `r = a + b (+ carry in)`, all operands already masked to `size`.
#[inline(always)]
fn add_flags(size: u32, a: u64, b: u64, r: u64) -> u64 {
    // Per-bit carry out of a full adder: majority(a, b, carry-in), where carry-in = a ^ b ^ r.
    let carries = (a & b) | ((a | b) & !r);
    let overflow = (a ^ r) & (b ^ r);
    flag_if(carries & sign_bit(size) != 0, CF)
        | flag_if(overflow & sign_bit(size) != 0, OF)
        | ((a ^ b ^ r) & AF)
        | szp(size, r)
}

/// Flags of a subtraction `r = a - b (- borrow in)`, all operands already masked to `size`.
#[inline(always)]
fn sub_flags(size: u32, a: u64, b: u64, r: u64) -> u64 {
    // Per-bit borrow out of a full subtractor, with borrow-in = a ^ b ^ r.
    let borrows = (!a & b) | (!(a ^ b) & r);
    let overflow = (a ^ b) & (a ^ r);
    flag_if(borrows & sign_bit(size) != 0, CF)
        | flag_if(overflow & sign_bit(size) != 0, OF)
        | ((a ^ b ^ r) & AF)
        | szp(size, r)
}

/// Executes a two-operand ALU operation on `size`-byte operands; returns (result, rflags).
///
/// ADD/ADC/SUB/SBB define all six status flags. AND/OR/XOR clear CF and OF and set SF ZF PF
/// from the result; their AF is architecturally undefined and is cleared, as the host does.
#[inline(always)]
pub fn alu(op: AluOp, size: u32, a: u64, b: u64, rflags: u64) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let carry = rflags & CF;
    let (r, f) = match op {
        AluOp::Add => {
            let r = a.wrapping_add(b) & m;
            (r, add_flags(size, a, b, r))
        }
        AluOp::Adc => {
            let r = a.wrapping_add(b).wrapping_add(carry) & m;
            (r, add_flags(size, a, b, r))
        }
        AluOp::Sub => {
            let r = a.wrapping_sub(b) & m;
            (r, sub_flags(size, a, b, r))
        }
        AluOp::Sbb => {
            let r = a.wrapping_sub(b).wrapping_sub(carry) & m;
            (r, sub_flags(size, a, b, r))
        }
        AluOp::And => {
            let r = a & b;
            (r, szp(size, r))
        }
        AluOp::Or => {
            let r = a | b;
            (r, szp(size, r))
        }
        AluOp::Xor => {
            let r = a ^ b;
            (r, szp(size, r))
        }
    };
    (r, update(rflags, ARITH, f))
}

/// INC: `a + 1`; CF is preserved, the other five status flags are defined.
#[inline(always)]
pub fn inc(size: u32, a: u64, rflags: u64) -> (u64, u64) {
    let m = mask(size);
    let a = a & m;
    let r = a.wrapping_add(1) & m;
    (r, update(rflags, ARITH & !CF, add_flags(size, a, 1, r)))
}

/// DEC: `a - 1`; CF is preserved, the other five status flags are defined.
#[inline(always)]
pub fn dec(size: u32, a: u64, rflags: u64) -> (u64, u64) {
    let m = mask(size);
    let a = a & m;
    let r = a.wrapping_sub(1) & m;
    (r, update(rflags, ARITH & !CF, sub_flags(size, a, 1, r)))
}

/// NEG: `0 - a`; all six status flags are defined (CF is set unless `a` is zero).
#[inline(always)]
pub fn neg(size: u32, a: u64, rflags: u64) -> (u64, u64) {
    let m = mask(size);
    let a = a & m;
    let r = a.wrapping_neg() & m;
    (r, update(rflags, ARITH, sub_flags(size, 0, a, r)))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    extern crate std;
    use std::format;

    use super::super::testutil::{
        host_r_sized, host_rr_sized, pairs, singles, Checker, OTHER_FLAGS,
    };
    use super::*;

    const SIZES: [u32; 4] = [1, 2, 4, 8];
    const OPS: [AluOp; 7] = [
        AluOp::Add,
        AluOp::Adc,
        AluOp::Sub,
        AluOp::Sbb,
        AluOp::And,
        AluOp::Or,
        AluOp::Xor,
    ];

    #[test]
    fn alu_matches_host() {
        let mut ck = Checker::new("alu (add adc sub sbb and or xor cmp test)");
        let cases = pairs(1, 4000);
        for size in SIZES {
            let m = mask(size);
            for &(a, b, f) in &cases {
                for op in OPS {
                    let (r, mf) = alu(op, size, a, b, f | OTHER_FLAGS);
                    let (hr, hf) = match op {
                        AluOp::Add => host_rr_sized!("add", size, a, b, f),
                        AluOp::Adc => host_rr_sized!("adc", size, a, b, f),
                        AluOp::Sub => host_rr_sized!("sub", size, a, b, f),
                        AluOp::Sbb => host_rr_sized!("sbb", size, a, b, f),
                        AluOp::And => host_rr_sized!("and", size, a, b, f),
                        AluOp::Or => host_rr_sized!("or", size, a, b, f),
                        AluOp::Xor => host_rr_sized!("xor", size, a, b, f),
                    };
                    let what = || format!("{op:?} size {size} a {a:#x} b {b:#x} f {f:#x}");
                    ck.case();
                    ck.value(what, r, hr & m);
                    ck.flags(what, mf, hf, ARITH);
                }
                // CMP and TEST: the flags of SUB and AND; the destination is not written.
                let (_, mf) = alu(AluOp::Sub, size, a, b, f | OTHER_FLAGS);
                let (ha, hf) = host_rr_sized!("cmp", size, a, b, f);
                let what = || format!("cmp size {size} a {a:#x} b {b:#x} f {f:#x}");
                ck.case();
                ck.value(what, a, ha);
                ck.flags(what, mf, hf, ARITH);
                let (_, mf) = alu(AluOp::And, size, a, b, f | OTHER_FLAGS);
                let (_, hf) = host_rr_sized!("test", size, a, b, f);
                ck.case();
                ck.flags(
                    || format!("test size {size} a {a:#x} b {b:#x} f {f:#x}"),
                    mf,
                    hf,
                    ARITH,
                );
            }
        }
        ck.finish();
    }

    #[test]
    fn inc_dec_neg_match_host() {
        let mut ck = Checker::new("inc dec neg");
        for size in SIZES {
            let m = mask(size);
            for &(a, f) in &singles(2, 4000) {
                let what = |n: &str| format!("{n} size {size} a {a:#x} f {f:#x}");
                let (r, mf) = inc(size, a, f | OTHER_FLAGS);
                let (hr, hf) = host_r_sized!("inc", size, a, f);
                ck.case();
                ck.value(|| what("inc"), r, hr & m);
                ck.flags(|| what("inc"), mf, hf, ARITH);
                let (r, mf) = dec(size, a, f | OTHER_FLAGS);
                let (hr, hf) = host_r_sized!("dec", size, a, f);
                ck.case();
                ck.value(|| what("dec"), r, hr & m);
                ck.flags(|| what("dec"), mf, hf, ARITH);
                let (r, mf) = neg(size, a, f | OTHER_FLAGS);
                let (hr, hf) = host_r_sized!("neg", size, a, f);
                ck.case();
                ck.value(|| what("neg"), r, hr & m);
                ck.flags(|| what("neg"), mf, hf, ARITH);
            }
        }
        ck.finish();
    }

    #[test]
    fn odd_sizes_do_not_panic() {
        for size in [0, 3, 5, 16, u32::MAX] {
            for op in OPS {
                let (r, _) = alu(op, size, u64::MAX, 1, u64::MAX);
                assert!(op != AluOp::Add || r == 0);
            }
            assert_eq!(neg(size, 1, 0).0, u64::MAX);
            assert_eq!(inc(size, u64::MAX, 0).0, 0);
            assert_eq!(dec(size, 0, 0).0, u64::MAX);
        }
    }
}

//! What the comparison allows for x87 state the architecture leaves undefined: the
//! condition codes many instructions leave undefined (SDM 1 8.1.3.1 and each
//! instruction's "FPU Flags Affected"), and the last bits (and so C1) of transcendental results.

use iced_x86::{Instruction, Mnemonic};

const C0: u16 = 1 << 8;
const C1: u16 = 1 << 9;
const C2: u16 = 1 << 10;
const C3: u16 = 1 << 14;
const ALL: u16 = C0 | C1 | C2 | C3;
/// What the instructions that may leave C1 alone "define": nothing (see `cc_effect`).
const C1_IF_DEFINED: u16 = 0;

/// (condition codes the instruction defines, condition codes it leaves undefined).
/// Instructions that do not touch the condition codes define and undefine nothing.
fn cc_effect(m: Mnemonic) -> (u16, u16) {
    use Mnemonic as M;
    match m {
        // C1 written (stack fault / round-up), the rest undefined. Whether these write C1
        // when nothing happened differs by vendor (the AMD host leaves an earlier C1 in
        // place after FLD), so an undefined C1 stays undefined through them.
        M::Fld
        | M::Fild
        | M::Fbld
        | M::Fld1
        | M::Fldz
        | M::Fldpi
        | M::Fldl2e
        | M::Fldl2t
        | M::Fldlg2
        | M::Fldln2
        | M::Fst
        | M::Fstp
        | M::Fstpnce
        | M::Fist
        | M::Fistp
        | M::Fisttp
        | M::Fbstp
        | M::Fadd
        | M::Faddp
        | M::Fiadd
        | M::Fsub
        | M::Fsubp
        | M::Fisub
        | M::Fsubr
        | M::Fsubrp
        | M::Fisubr
        | M::Fmul
        | M::Fmulp
        | M::Fimul
        | M::Fdiv
        | M::Fdivp
        | M::Fidiv
        | M::Fdivr
        | M::Fdivrp
        | M::Fidivr
        | M::Fsqrt
        | M::Fabs
        | M::Fchs
        | M::Frndint
        | M::Fscale
        | M::Fxtract
        | M::Fxch
        | M::Fincstp
        | M::Fdecstp => (C1_IF_DEFINED, C0 | C2 | C3),
        // C1 changes only on a stack underflow (observed on the host), so an earlier
        // undefined C1 stays undefined; C0, C2 and C3 are undefined.
        M::Fcmovb
        | M::Fcmove
        | M::Fcmovbe
        | M::Fcmovu
        | M::Fcmovnb
        | M::Fcmovne
        | M::Fcmovnbe
        | M::Fcmovnu
        | M::Fcomi
        | M::Fcomip
        | M::Fucomi
        | M::Fucomip => (0, C0 | C2 | C3),
        // The transcendental instructions: C1 is the round-up indicator of a result
        // the emulator only approximates (see `st_equivalent`), so it cannot be
        // predicted and is not compared; C2 (argument out of range) is defined for the
        // trigonometric ones.
        M::Fsin | M::Fcos | M::Fsincos | M::Fptan => (C2, C0 | C1 | C3),
        M::F2xm1 | M::Fyl2x | M::Fyl2xp1 | M::Fpatan => (0, ALL),
        // Everything defined.
        M::Fcom
        | M::Fcomp
        | M::Fcompp
        | M::Fucom
        | M::Fucomp
        | M::Fucompp
        | M::Ficom
        | M::Ficomp
        | M::Ftst
        | M::Fxam
        | M::Fprem
        | M::Fprem1
        | M::Fninit
        | M::Finit
        | M::Fnsave
        | M::Fsave
        | M::Fldenv
        | M::Frstor
        | M::Fxrstor
        | M::Fxrstor64 => (ALL, 0),
        // All four undefined.
        M::Ffree
        | M::Ffreep
        | M::Fnop
        | M::Fnclex
        | M::Fclex
        | M::Fldcw
        | M::Fnstenv
        | M::Fstenv
        | M::Fnstcw
        | M::Fstcw
        | M::Fnstsw
        | M::Fstsw => (0, ALL),
        _ => (0, 0),
    }
}

/// The x87 status-word bits whose value after `instrs` is undefined.
pub fn undefined_fsw(instrs: &[Instruction]) -> u16 {
    instrs.iter().fold(0u16, |undef, i| {
        let (defined, undefined) = cc_effect(i.mnemonic());
        (undef & !defined) | undefined
    })
}

/// Whether `m` is a transcendental instruction (results are approximations whose last
/// bits differ between implementations).
fn transcendental(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Fsin | M::Fcos | M::Fsincos | M::Fptan | M::Fpatan | M::F2xm1 | M::Fyl2x | M::Fyl2xp1
    )
}

/// How many units in the last place of the 64-bit significand a transcendental result
/// may differ by: 2^15, a relative difference of at most 2^-48 for normal values. The
/// emulator computes these functions in binary64 arithmetic (53-bit significand) on
/// exactly split operands and an exact argument reduction (see the emulator's
/// `exec::x87::transcendental`), so its results are within a few binary64 ulps (one is
/// 2^11 of these units) of the exact value, while the host rounds a more precise
/// approximation to 64 bits; bit-exact agreement would need the host's own algorithms.
/// The largest difference seen in the differential tests was about 2^13.7 units
/// (FPTAN, a quotient of two series). Special values (zeros, infinities, NaNs, the
/// out-of-range C2 case) are exact and compared exactly: the allowance applies only
/// between finite nonzero values of one sign.
pub const TRANSCENDENTAL_ULPS: u128 = 1 << 15;

/// Whether ST(`i`) holding `native` on the host and `emu` on the emulator after running
/// `instrs` counts as agreement (called only when the two differ): only after a
/// transcendental instruction, and only for finite values of one sign within
/// [`TRANSCENDENTAL_ULPS`] (adjacent 80-bit encodings of one sign are adjacent values,
/// so the distance is a count of encodings between the two).
pub fn st_equivalent(instrs: &[Instruction], i: usize, native: u128, emu: u128) -> bool {
    let _ = i;
    if !instrs.iter().any(|x| transcendental(x.mnemonic())) {
        return false;
    }
    let sign = 1u128 << 79;
    let exp = |v: u128| (v >> 64) & 0x7fff;
    if native & sign != emu & sign || exp(native) == 0x7fff || exp(emu) == 0x7fff {
        return false;
    }
    // A zero is exact: it must match exactly (a tiny nonzero value is not "close").
    let sig = |v: u128| v & ((1 << 64) - 1);
    if (exp(native) == 0 && sig(native) == 0) || (exp(emu) == 0 && sig(emu) == 0) {
        return false;
    }
    let (a, b) = (
        native & !sign & ((1 << 80) - 1),
        emu & !sign & ((1 << 80) - 1),
    );
    // Across an exponent boundary the integer bit flips in the encoding; compare the
    // values as (exponent, significand) pairs folded into one ordered integer.
    let key = |v: u128| (exp(v) << 63) | (v & ((1 << 63) - 1));
    key(a).abs_diff(key(b)) <= TRANSCENDENTAL_ULPS
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Code, Instruction, Register};

    #[test]
    fn later_instructions_define_codes_again() {
        let fadd = Instruction::with2(Code::Fadd_st0_sti, Register::ST0, Register::ST1).unwrap();
        let fcom = Instruction::with2(Code::Fcom_st0_sti, Register::ST0, Register::ST1).unwrap();
        assert_eq!(undefined_fsw(&[fadd]), C0 | C2 | C3);
        assert_eq!(undefined_fsw(&[fadd, fcom]), 0);
        assert_eq!(undefined_fsw(&[fcom, fadd]), C0 | C2 | C3);
    }

    #[test]
    fn ulps_only_for_transcendentals() {
        let fsin = Instruction::with(Code::Fsin);
        let fadd = Instruction::with2(Code::Fadd_st0_sti, Register::ST0, Register::ST1).unwrap();
        let v = (0x3fffu128 << 64) | (1 << 63) | 5;
        assert!(st_equivalent(&[fsin], 0, v, v + 3));
        assert!(st_equivalent(&[fsin], 0, v, v + TRANSCENDENTAL_ULPS));
        assert!(!st_equivalent(&[fsin], 0, v, v + TRANSCENDENTAL_ULPS + 1));
        assert!(!st_equivalent(&[fadd], 0, v, v + 1));
        // Zeros, infinities, NaNs and a change of sign are compared exactly.
        assert!(!st_equivalent(&[fsin], 0, 0, 1));
        let inf = 0x7fffu128 << 64 | 1 << 63;
        assert!(!st_equivalent(&[fsin], 0, inf, inf - 1));
        assert!(!st_equivalent(&[fsin], 0, v, v | 1 << 79));
    }
}

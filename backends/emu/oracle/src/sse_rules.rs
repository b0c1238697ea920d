//! What the comparison allows for SSE results the architecture does not pin down bit
//! for bit: RCPPS/RCPSS/RSQRTPS/RSQRTSS return approximations whose exact bits differ
//! between CPU vendors; the SDM bounds only their relative error.
//!
//! When the snippet contains one of them, each 32-bit lane that differs is accepted if
//! both values are finite, nonzero and of the same sign, and they are within the SDM's
//! bound |err| <= 1.5 * 2^-12 of each other relative to the emulator's value (the
//! emulator computes the correctly rounded result, so this is the bound on the host's
//! approximation). Special values (zeros, infinities, NaNs) must agree exactly, as must
//! every other lane.

use iced_x86::{Instruction, Mnemonic};

/// The SDM's relative error bound of the approximations.
const BOUND: f64 = 1.5 / 4096.0;

/// Whether XMM register `reg` holding `native` on the host and `emu` on the emulator
/// after running `instrs` counts as agreement (called only when the two differ).
pub fn xmm_equivalent(instrs: &[Instruction], reg: usize, native: u128, emu: u128) -> bool {
    let _ = reg;
    let approximates = instrs.iter().any(|i| {
        matches!(
            i.mnemonic(),
            Mnemonic::Rcpps
                | Mnemonic::Rcpss
                | Mnemonic::Rsqrtps
                | Mnemonic::Rsqrtss
                | Mnemonic::Vrcpps
                | Mnemonic::Vrcpss
                | Mnemonic::Vrsqrtps
                | Mnemonic::Vrsqrtss
        )
    });
    approximates
        && (0..4).all(|k| {
            let n = (native >> (32 * k)) as u32;
            let e = (emu >> (32 * k)) as u32;
            n == e || within_bound(n, e)
        })
}

/// Whether two single-precision values agree within the approximation bound.
fn within_bound(native: u32, emu: u32) -> bool {
    let (n, e) = (f32::from_bits(native), f32::from_bits(emu));
    let finite_nonzero = |x: f32| x.is_finite() && x != 0.0;
    if !finite_nonzero(n) || !finite_nonzero(e) || n.is_sign_negative() != e.is_sign_negative() {
        return false;
    }
    let (n, e) = (f64::from(n), f64::from(e));
    (n - e).abs() <= BOUND * e.abs()
}

#[cfg(test)]
mod tests {
    use super::within_bound;

    #[test]
    fn bound() {
        // 1.0 against 1.0 + 2^-12: within; 1.0 + 2^-10: outside.
        assert!(within_bound(0x3f80_0800, 0x3f80_0000));
        assert!(!within_bound(0x3f80_2000, 0x3f80_0000));
        // Specials must match exactly.
        assert!(!within_bound(0x7f80_0000, 0x7f7f_ffff));
        assert!(!within_bound(0x0000_0000, 0x0000_0001));
        assert!(!within_bound(0xbf80_0000, 0x3f80_0000));
    }
}

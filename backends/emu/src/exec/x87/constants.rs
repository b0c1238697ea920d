//! FLD1, FLDZ, FLDPI, FLDL2E, FLDL2T, FLDLG2, FLDLN2: push a constant.
//!
//! The processor holds the irrational constants with more than 64 significand bits and
//! rounds them with the rounding control (SDM 1 8.3.8): each entry below is the value
//! rounded to nearest, with whether the discarded tail lies above or below it, which
//! decides the last bit under the directed modes. No exception other than stack
//! overflow; C1 is the overflow indication only.

use super::f80;
use super::load_store::push_loaded;
use super::start;
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

/// A constant: biased exponent, significand rounded to nearest, and whether rounding
/// to nearest rounded up (the true value is below the nearest one).
struct K(u32, u64, bool);

const PI: K = K(0x4000, 0xc90f_daa2_2168_c235, true);
const L2E: K = K(0x3fff, 0xb8aa_3b29_5c17_f0bc, true);
const L2T: K = K(0x4000, 0xd49a_784b_cd1b_8afe, false);
const LG2: K = K(0x3ffd, 0x9a20_9a84_fbcf_f799, true);
const LN2: K = K(0x3ffe, 0xb172_17f7_d1cf_79ac, true);

/// The handler for `code` if it loads a constant.
pub fn select(code: Code) -> Option<Handler> {
    Some(match code {
        Code::Fld1 => fld_const::<0>,
        Code::Fldz => fld_const::<1>,
        Code::Fldpi => fld_const::<2>,
        Code::Fldl2e => fld_const::<3>,
        Code::Fldl2t => fld_const::<4>,
        Code::Fldlg2 => fld_const::<5>,
        Code::Fldln2 => fld_const::<6>,
        _ => return None,
    })
}

/// The constant under rounding control `rc`.
fn rounded(k: &K, rc: u16) -> u128 {
    let K(e, m, nearest_up) = *k;
    let m = match (rc, nearest_up) {
        // Down or toward zero (positive constants): the truncated value.
        (1 | 3, true) => m - 1,
        // Up: the value above the true one.
        (2, false) => m + 1,
        _ => m,
    };
    f80::make(false, e, m)
}

fn fld_const<const N: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    let rc = (x.fcw >> 10) & 3;
    let v = match N {
        0 => f80::ONE,
        1 => f80::zero(false),
        2 => rounded(&PI, rc),
        3 => rounded(&L2E, rc),
        4 => rounded(&L2T, rc),
        5 => rounded(&LG2, rc),
        _ => rounded(&LN2, rc),
    };
    push_loaded(x, v, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_rounding_moves_the_last_bit() {
        assert_eq!(rounded(&PI, 0) as u64, 0xc90f_daa2_2168_c235);
        assert_eq!(rounded(&PI, 1) as u64, 0xc90f_daa2_2168_c234);
        assert_eq!(rounded(&PI, 2) as u64, 0xc90f_daa2_2168_c235);
        assert_eq!(rounded(&L2T, 2) as u64, 0xd49a_784b_cd1b_8aff);
        assert_eq!(rounded(&L2T, 3) as u64, 0xd49a_784b_cd1b_8afe);
    }
}

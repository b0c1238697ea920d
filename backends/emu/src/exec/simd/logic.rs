//! Bitwise logic (PAND PANDN POR PXOR and the ANDPS/ANDNPS/ORPS/XORPS/...PD forms,
//! which are the same bit operations) and PTEST.

use super::{bin, reg_val, src, BinOp};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use iced_x86::Mnemonic as M;
use opsvisor_core::mmu::memory::GuestMemory;

/// AND.
pub(crate) struct And;
impl BinOp for And {
    #[inline(always)]
    fn f(a: u128, b: u128, _: u8, _: usize) -> u128 {
        a & b
    }
}

/// AND NOT: the inverted destination ANDed with the source.
pub(crate) struct Andn;
impl BinOp for Andn {
    #[inline(always)]
    fn f(a: u128, b: u128, _: u8, _: usize) -> u128 {
        !a & b
    }
}

/// OR.
pub(crate) struct Or;
impl BinOp for Or {
    #[inline(always)]
    fn f(a: u128, b: u128, _: u8, _: usize) -> u128 {
        a | b
    }
}

/// XOR.
pub(crate) struct Xor;
impl BinOp for Xor {
    #[inline(always)]
    fn f(a: u128, b: u128, _: u8, _: usize) -> u128 {
        a ^ b
    }
}

/// PTEST xmm1, xmm2/m128: ZF when `xmm1 AND src` is zero, CF when `NOT xmm1 AND src`
/// is zero; AF OF PF SF cleared. The memory operand must be aligned.
fn ptest(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.sse_check()?;
    let b = src(c, mem, op, 1)?;
    let a = reg_val(c, op.i.op_register(0));
    let mut f = c.rflags() & !(crate::arith::flags::ARITH);
    if a & b == 0 {
        f |= crate::arith::flags::ZF;
    }
    if !a & b == 0 {
        f |= crate::arith::flags::CF;
    }
    c.set_rflags(f);
    Ok(())
}

/// The handler for `op` if it is a logic instruction.
pub(super) fn select(op: &Op) -> Option<Handler> {
    let mmx = op.i.op_count() > 0 && op.i.op_register(0).is_mm();
    let h: Handler = match (op.i.mnemonic(), mmx) {
        (M::Pand, true) => bin::<And, true>,
        (M::Pandn, true) => bin::<Andn, true>,
        (M::Por, true) => bin::<Or, true>,
        (M::Pxor, true) => bin::<Xor, true>,
        (M::Pand | M::Andps | M::Andpd, false) => bin::<And, false>,
        (M::Pandn | M::Andnps | M::Andnpd, false) => bin::<Andn, false>,
        (M::Por | M::Orps | M::Orpd, false) => bin::<Or, false>,
        (M::Pxor | M::Xorps | M::Xorpd, false) => bin::<Xor, false>,
        (M::Ptest, false) => ptest,
        _ => return None,
    };
    Some(h)
}

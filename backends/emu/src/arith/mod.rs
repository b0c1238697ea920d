//! Pure integer-instruction semantics: results and RFLAGS for the x86 ALU, shift, multiply and
//! divide, bit-manipulation, BCD and condition-code instructions.
//!
//! Every function here is a pure, allocation-free, panic-free function of its inputs, so the
//! interpreter can call it for any guest-controlled value. Conventions shared by all modules:
//!
//! - `size` is the operand size in bytes (1, 2, 4 or 8). Any other value is treated as 8 (the
//!   decoder never produces one; treating it as 8 keeps the functions total).
//! - Inputs may carry garbage above `size` bytes; it is masked off. Results are truncated to
//!   `size` and zero-extended to 64 bits. Writing them back (including the 32-bit zero-extension
//!   rule of long mode) is the interpreter's job.
//! - `rflags` is the full RFLAGS. Functions return it with only the flags they define (among
//!   CF PF AF ZF SF OF) changed; nothing else is touched.
//! - Flags the SDM calls *undefined* are set to what the host CPU (AMD EPYC, Zen) produces, so
//!   that the differential tests on this host compare them too. Each function documents which
//!   of its flags are undefined architecturally, so a differential tester can mask them when
//!   comparing with other silicon.

pub mod alu;
pub mod bcd;
pub mod bits;
pub mod cond;
pub mod flags;
pub mod muldiv;
pub mod shift;
pub mod softfloat;

#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) mod testutil;

/// Totality: every function returns (rather than panicking, e.g. on an arithmetic overflow
/// check) for any input, including operand sizes the decoder never produces.
#[cfg(all(test, target_arch = "x86_64"))]
mod no_panic {
    use super::testutil::Rng;
    use super::{alu, bcd, bits, muldiv, shift};

    #[test]
    fn every_function_is_total() {
        let mut rng = Rng::new(99);
        let sizes = [0u32, 1, 2, 3, 4, 5, 8, 9, 16, u32::MAX];
        for i in 0..20_000 {
            let size = sizes[i % sizes.len()];
            let (a, b, c, f) = (rng.value(), rng.value(), rng.next() as u8, rng.next());
            for op in [
                alu::AluOp::Add,
                alu::AluOp::Adc,
                alu::AluOp::Sub,
                alu::AluOp::Sbb,
                alu::AluOp::And,
                alu::AluOp::Or,
                alu::AluOp::Xor,
            ] {
                let _ = alu::alu(op, size, a, b, f);
            }
            let _ = (
                alu::inc(size, a, f),
                alu::dec(size, a, f),
                alu::neg(size, a, f),
            );
            for op in [
                shift::ShiftOp::Rol,
                shift::ShiftOp::Ror,
                shift::ShiftOp::Rcl,
                shift::ShiftOp::Rcr,
                shift::ShiftOp::Shl,
                shift::ShiftOp::Shr,
                shift::ShiftOp::Sar,
            ] {
                let _ = shift::shift(op, size, a, c, f);
            }
            let _ = (shift::shld(size, a, b, c, f), shift::shrd(size, a, b, c, f));
            let _ = (
                shift::sarx(size, a, b),
                shift::shlx(size, a, b),
                shift::shrx(size, a, b),
            );
            let _ = shift::rorx(size, a, c);
            let _ = (muldiv::mul(size, a, b, f), muldiv::imul_wide(size, a, b, f));
            let _ = (muldiv::imul(size, a, b, f), muldiv::mulx(size, a, b));
            let _ = (
                muldiv::div(size, a, b, c.into()),
                muldiv::idiv(size, a, b, c.into()),
            );
            let _ = (muldiv::div(size, a, b, b), muldiv::idiv(size, a, b, b));
            let _ = muldiv::idiv(size, a | (1 << 63), 0, u64::MAX);
            let _ = (bits::bt(size, a, b, f), bits::bts(size, a, b, f));
            let _ = (bits::btr(size, a, b, f), bits::btc(size, a, b, f));
            let _ = (bits::bsf(size, a, b, f), bits::bsr(size, a, b, f));
            let _ = (
                bits::tzcnt(size, a, f),
                bits::lzcnt(size, a, f),
                bits::popcnt(size, a, f),
            );
            let _ = (
                bits::bswap(size, a),
                bits::andn(size, a, b, f),
                bits::bextr(size, a, b, f),
            );
            let _ = (
                bits::blsi(size, a, f),
                bits::blsmsk(size, a, f),
                bits::blsr(size, a, f),
            );
            let _ = (
                bits::bzhi(size, a, b, f),
                bits::pdep(size, a, b),
                bits::pext(size, a, b),
            );
            let _ = (bits::adcx(size, a, b, f), bits::adox(size, a, b, f));
            let _ = bits::crc32(size, a as u32, b);
            let _ = (
                bcd::daa(c, f),
                bcd::das(c, f),
                bcd::aaa(a as u16, f),
                bcd::aas(a as u16, f),
            );
            let _ = (bcd::aam(c, b as u8, f), bcd::aad(a as u16, b as u8, f));
        }
    }
}

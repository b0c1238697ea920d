//! SSE4.2 string compares: PCMPESTRI/PCMPESTRM (explicit lengths in EAX/EDX, or RAX/RDX
//! with REX.W) and PCMPISTRI/PCMPISTRM (lengths up to the first zero element), with every
//! imm8 mode (SDM 2 4.1): element format (imm8[1:0]), aggregation (imm8[3:2]: equal any,
//! ranges, equal each, equal ordered), polarity (imm8[5:4]) and output selection
//! (imm8[6]: lowest or highest index; bit mask or element mask). The index goes to ECX,
//! the mask to XMM0. CF: the result is not zero; ZF/SF: the source/destination string is
//! shorter than the register; OF: result bit 0; AF and PF cleared. The memory operand
//! has no alignment requirement.

use super::{lane, load, put, reg_val, slane, xi};
use crate::arith::flags::{ARITH, CF, OF, SF, ZF};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use iced_x86::{Code, OpKind};
use opsvisor_core::mmu::memory::GuestMemory;

/// Length of an explicit-length string: the absolute value of the register (64-bit with
/// REX.W, else its signed low 32 bits), saturated at `n` elements.
fn explicit_len(v: u64, wide: bool, n: usize) -> usize {
    let s = if wide {
        v as i64
    } else {
        i64::from(v as u32 as i32)
    };
    s.unsigned_abs().min(n as u64) as usize
}

/// Length of an implicit-length string: the elements before the first zero one.
fn implicit_len(v: u128, n: usize, bits: u32) -> usize {
    (0..n).find(|&i| lane(v, i, bits) == 0).unwrap_or(n)
}

/// The comparison: IntRes2 (one bit per element) for `a` (operand 1, length `la`) and
/// `b` (operand 2, length `lb`).
pub(crate) fn int_res2(a: u128, b: u128, la: usize, lb: usize, imm: u8) -> u32 {
    let words = imm & 1 != 0;
    let (n, bits) = if words { (8usize, 16u32) } else { (16, 8) };
    let signed = imm & 2 != 0;
    let el = |v: u128, i: usize| {
        if signed {
            slane(v, i, bits)
        } else {
            lane(v, i, bits) as i64
        }
    };
    let mut res = 0u32;
    for j in 0..n {
        let bit = match (imm >> 2) & 3 {
            // Equal any: element j of b is one of a's valid elements.
            0 => j < lb && (0..la).any(|i| el(a, i) == el(b, j)),
            // Ranges: b[j] lies in one of a's valid [a[i], a[i+1]] pairs.
            1 => {
                j < lb
                    && (0..la / 2).any(|p| {
                        let x = el(b, j);
                        x >= el(a, 2 * p) && x <= el(a, 2 * p + 1)
                    })
            }
            // Equal each: both valid and equal, or both invalid.
            2 => match (j < la, j < lb) {
                (true, true) => el(a, j) == el(b, j),
                (false, false) => true,
                _ => false,
            },
            // Equal ordered: a (as far as valid) occurs in b at j.
            _ => (0..n - j).all(|k| {
                if k >= la {
                    true
                } else if j + k >= lb {
                    false
                } else {
                    el(a, k) == el(b, j + k)
                }
            }),
        };
        res |= u32::from(bit) << j;
    }
    let all = (1u32 << n) - 1;
    match (imm >> 4) & 3 {
        1 => res ^ all,
        3 => res ^ ((1u32 << lb) - 1),
        _ => res,
    }
}

/// PCMPESTRI/PCMPESTRM (`EXPLICIT`) and PCMPISTRI/PCMPISTRM; `INDEX` selects the index
/// (ECX) rather than the mask (XMM0) output.
fn pcmpstr<const EXPLICIT: bool, const INDEX: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    c.sse_check()?;
    let imm = op.imm as u8;
    let b = match op.i.op_kind(1) {
        OpKind::Memory => load(c, mem, op, 16, false)?,
        _ => reg_val(c, op.i.op_register(1)),
    };
    let a = c.fpu.xmm[xi(op.i.op_register(0))];
    let words = imm & 1 != 0;
    let (n, bits) = if words { (8usize, 16u32) } else { (16, 8) };
    let (la, lb) = if EXPLICIT {
        let wide = matches!(
            op.i.code(),
            Code::Pcmpestri64_xmm_xmmm128_imm8 | Code::Pcmpestrm64_xmm_xmmm128_imm8
        );
        (
            explicit_len(c.gpr[0], wide, n),
            explicit_len(c.gpr[2], wide, n),
        )
    } else {
        (implicit_len(a, n, bits), implicit_len(b, n, bits))
    };
    let res = int_res2(a, b, la, lb, imm);
    if INDEX {
        let idx = if res == 0 {
            n as u32
        } else if imm & 0x40 != 0 {
            31 - res.leading_zeros()
        } else {
            res.trailing_zeros()
        };
        c.set(1, 4, u64::from(idx));
    } else {
        c.fpu.xmm[0] = if imm & 0x40 != 0 {
            let mut m = 0u128;
            for i in 0..n {
                if res >> i & 1 != 0 {
                    m |= put(i, bits, u64::MAX);
                }
            }
            m
        } else {
            u128::from(res)
        };
    }
    let mut f = c.rflags() & !ARITH;
    if res != 0 {
        f |= CF;
    }
    if lb < n {
        f |= ZF;
    }
    if la < n {
        f |= SF;
    }
    if res & 1 != 0 {
        f |= OF;
    }
    c.set_rflags(f);
    Ok(())
}

/// The handler for `op` if it is a string compare.
pub(super) fn select(op: &Op) -> Option<Handler> {
    use Code as C;
    Some(match op.i.code() {
        C::Pcmpestri_xmm_xmmm128_imm8 | C::Pcmpestri64_xmm_xmmm128_imm8 => pcmpstr::<true, true>,
        C::Pcmpestrm_xmm_xmmm128_imm8 | C::Pcmpestrm64_xmm_xmmm128_imm8 => pcmpstr::<true, false>,
        C::Pcmpistri_xmm_xmmm128_imm8 => pcmpstr::<false, true>,
        C::Pcmpistrm_xmm_xmmm128_imm8 => pcmpstr::<false, false>,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::int_res2;

    fn bytes(s: &[u8]) -> u128 {
        let mut b = [0u8; 16];
        b[..s.len()].copy_from_slice(s);
        u128::from_le_bytes(b)
    }

    #[test]
    fn equal_ordered_finds_a_substring() {
        // "lo" in "hello world": matches at 3 (and "l" alone at the end does not count
        // because the needle's second byte falls outside the haystack).
        let r = int_res2(bytes(b"lo"), bytes(b"hello world"), 2, 11, 0x0c);
        assert_eq!(r, 1 << 3);
    }

    #[test]
    fn ranges_and_masked_negative() {
        // Characters of "a1b2" in 'a'..='z'.
        let r = int_res2(bytes(b"az"), bytes(b"a1b2"), 2, 4, 0x04);
        assert_eq!(r, 0b0101);
        // Masked negative polarity inverts only the valid positions.
        let r = int_res2(bytes(b"az"), bytes(b"a1b2"), 2, 4, 0x34);
        assert_eq!(r, 0b1010);
    }
}

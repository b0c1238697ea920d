//! Bit instructions: BT BTS BTR BTC, BSF BSR, TZCNT LZCNT POPCNT, BSWAP, the BMI1/BMI2 group
//! (ANDN BEXTR BLSI BLSMSK BLSR BZHI PDEP PEXT), ADCX ADOX, and CRC32.

use super::flags::{bits, flag_if, mask, pf, sf, update, zf, AF, ARITH, CF, OF, ZF};

/// The bit number used by the register forms of BT*: `bit` modulo the operand width. (For the
/// memory forms the interpreter first moves the address by the signed bit offset divided by
/// the width, then calls these with the remaining offset.) BT* have no byte form; `size` 1 is
/// accepted and masks the bit number to 0..=7.
#[inline]
fn bit_index(size: u32, bit: u64) -> u32 {
    (bit & u64::from(bits(size) - 1)) as u32
}

/// BT: sets CF to the selected bit of `value`; returns rflags.
///
/// ZF is unchanged; OF SF AF PF are undefined and left unchanged, as the host does.
#[inline]
pub fn bt(size: u32, value: u64, bit: u64, rflags: u64) -> u64 {
    let i = bit_index(size, bit);
    update(rflags, CF, flag_if((value >> i) & 1 != 0, CF))
}

/// BTS: CF = selected bit, then sets it; returns (value, rflags). Flags as for [`bt`].
#[inline]
pub fn bts(size: u32, value: u64, bit: u64, rflags: u64) -> (u64, u64) {
    let i = bit_index(size, bit);
    (
        (value | (1 << i)) & mask(size),
        bt(size, value, bit, rflags),
    )
}

/// BTR: CF = selected bit, then clears it; returns (value, rflags). Flags as for [`bt`].
#[inline]
pub fn btr(size: u32, value: u64, bit: u64, rflags: u64) -> (u64, u64) {
    let i = bit_index(size, bit);
    (
        (value & !(1 << i)) & mask(size),
        bt(size, value, bit, rflags),
    )
}

/// BTC: CF = selected bit, then complements it; returns (value, rflags). Flags as for [`bt`].
#[inline]
pub fn btc(size: u32, value: u64, bit: u64, rflags: u64) -> (u64, u64) {
    let i = bit_index(size, bit);
    (
        (value ^ (1 << i)) & mask(size),
        bt(size, value, bit, rflags),
    )
}

/// BSF: index of the lowest set bit of `src`; returns (destination, rflags).
///
/// If `src` is zero, ZF is set and the destination keeps `dst_old` (as AMD documents and Intel
/// does; returned masked to `size` — on this host a 32-bit BSF with a zero source leaves the
/// upper half of the 64-bit register unchanged as well, so the interpreter should not write the
/// register at all then). Otherwise ZF is cleared. CF OF SF AF PF are undefined and left
/// unchanged, as the host does.
#[inline]
pub fn bsf(size: u32, src: u64, dst_old: u64, rflags: u64) -> (u64, u64) {
    let s = src & mask(size);
    if s == 0 {
        (dst_old & mask(size), update(rflags, ZF, ZF))
    } else {
        (u64::from(s.trailing_zeros()), update(rflags, ZF, 0))
    }
}

/// BSR: index of the highest set bit of `src`; returns (destination, rflags). Zero source and
/// flags as for [`bsf`].
#[inline]
pub fn bsr(size: u32, src: u64, dst_old: u64, rflags: u64) -> (u64, u64) {
    let s = src & mask(size);
    if s == 0 {
        (dst_old & mask(size), update(rflags, ZF, ZF))
    } else {
        (u64::from(63 - s.leading_zeros()), update(rflags, ZF, 0))
    }
}

/// TZCNT: number of trailing zero bits (the width for a zero source); returns (count, rflags).
/// CF is set for a zero source, ZF for a zero result. OF SF AF PF are undefined: the host
/// (AMD Zen) clears SF AF PF and leaves OF unchanged, and so does this.
#[inline]
pub fn tzcnt(size: u32, src: u64, rflags: u64) -> (u64, u64) {
    let s = src & mask(size);
    let r = if s == 0 {
        bits(size)
    } else {
        s.trailing_zeros()
    };
    let f = flag_if(s == 0, CF) | flag_if(r == 0, ZF);
    (u64::from(r), update(rflags, ARITH & !OF, f))
}

/// LZCNT: number of leading zero bits in the operand width; returns (count, rflags). Flags as
/// for [`tzcnt`].
#[inline]
pub fn lzcnt(size: u32, src: u64, rflags: u64) -> (u64, u64) {
    let s = src & mask(size);
    let r = s.leading_zeros() - (64 - bits(size));
    let f = flag_if(s == 0, CF) | flag_if(r == 0, ZF);
    (u64::from(r), update(rflags, ARITH & !OF, f))
}

/// POPCNT: number of set bits; returns (count, rflags). ZF is set for a zero source; CF OF SF
/// AF PF are cleared (all defined).
#[inline]
pub fn popcnt(size: u32, src: u64, rflags: u64) -> (u64, u64) {
    let s = src & mask(size);
    (
        u64::from(s.count_ones()),
        update(rflags, ARITH, flag_if(s == 0, ZF)),
    )
}

/// BSWAP: reverses the byte order of a 4- or 8-byte operand (also the MOVBE byte swap, for
/// which 2-byte operands swap their two bytes: use [`swap16`]).
///
/// BSWAP with a 16-bit operand is undefined; the host (AMD Zen) zeroes the low 16 bits and
/// keeps bits 16..63, so for `size` 2 this returns 0 and the interpreter writes it to the
/// 16-bit destination. `size` 1 (no such instruction) returns the byte unchanged.
#[inline]
pub fn bswap(size: u32, v: u64) -> u64 {
    match size {
        1 => v & 0xff,
        2 => 0,
        4 => u64::from((v as u32).swap_bytes()),
        _ => v.swap_bytes(),
    }
}

/// The byte swap of a 16-bit MOVBE operand.
#[inline]
pub fn swap16(v: u64) -> u64 {
    u64::from((v as u16).swap_bytes())
}

/// Flags of the BMI1/BMI2 logic instructions: SF ZF from the result, CF given, OF cleared. AF
/// and PF are undefined: the host (AMD Zen) sets PF from the result and clears AF.
#[inline]
fn bmi_flags(size: u32, r: u64, cf: bool, rflags: u64) -> u64 {
    let f = sf(size, r) | zf(size, r) | pf(r) | flag_if(cf, CF);
    update(rflags, ARITH, f)
}

/// ANDN (BMI1): `!a & b`; returns (result, rflags). SF ZF from the result, CF OF cleared. AF
/// PF are undefined: as on the host, PF is set from the result and AF cleared.
#[inline]
pub fn andn(size: u32, a: u64, b: u64, rflags: u64) -> (u64, u64) {
    let r = !a & b & mask(size);
    (r, bmi_flags(size, r, false, rflags))
}

/// BEXTR (BMI1): extracts `ctl[15:8]` bits of `src` starting at bit `ctl[7:0]`; returns
/// (result, rflags). ZF from the result, CF OF cleared. AF SF PF are undefined: the host (AMD
/// Zen) sets PF from the result, sets AF and clears SF, and so does this.
#[inline]
pub fn bextr(size: u32, src: u64, ctl: u64, rflags: u64) -> (u64, u64) {
    let n = bits(size);
    let start = (ctl & 0xff) as u32;
    let len = ((ctl >> 8) & 0xff) as u32;
    let s = src & mask(size);
    let shifted = if start >= n { 0 } else { s >> start };
    let r = if len >= n {
        shifted
    } else {
        shifted & ((1u64 << len) - 1)
    };
    // Unlike the other BMI instructions the host clears SF here, even for a full-width
    // extract with the sign bit set, and sets AF.
    (r, update(rflags, ARITH, zf(size, r) | pf(r) | AF))
}

/// BLSI (BMI1): isolates the lowest set bit, `src & -src`; returns (result, rflags). SF ZF
/// from the result, CF set when `src` is nonzero, OF cleared. AF PF are undefined: as on the
/// host, PF is set from the result and AF cleared.
#[inline]
pub fn blsi(size: u32, src: u64, rflags: u64) -> (u64, u64) {
    let s = src & mask(size);
    let r = s & s.wrapping_neg();
    (r, bmi_flags(size, r, s != 0, rflags))
}

/// BLSMSK (BMI1): mask up to and including the lowest set bit, `src ^ (src - 1)`; returns
/// (result, rflags). SF from the result, CF set when `src` is zero, ZF and OF cleared. AF PF
/// are undefined: as on the host, PF is set from the result and AF cleared.
#[inline]
pub fn blsmsk(size: u32, src: u64, rflags: u64) -> (u64, u64) {
    let s = src & mask(size);
    let r = (s ^ s.wrapping_sub(1)) & mask(size);
    // The result is never zero, so the common helper clears ZF.
    (r, bmi_flags(size, r, s == 0, rflags))
}

/// BLSR (BMI1): clears the lowest set bit, `src & (src - 1)`; returns (result, rflags). SF ZF
/// from the result, CF set when `src` is zero, OF cleared. AF PF are undefined: as on the
/// host, PF is set from the result and AF cleared.
#[inline]
pub fn blsr(size: u32, src: u64, rflags: u64) -> (u64, u64) {
    let s = src & mask(size);
    let r = s & s.wrapping_sub(1);
    (r, bmi_flags(size, r, s == 0, rflags))
}

/// BZHI (BMI2): clears the bits of `src` from bit `index[7:0]` up; returns (result, rflags).
/// CF is set when the index is at least the operand width (the source is then unchanged); SF
/// ZF from the result, OF cleared. AF PF are undefined: as on the host, PF is set from the
/// result and AF cleared.
#[inline]
pub fn bzhi(size: u32, src: u64, index: u64, rflags: u64) -> (u64, u64) {
    let n = bits(size);
    let i = (index & 0xff) as u32;
    let s = src & mask(size);
    let (r, cf) = if i >= n {
        (s, true)
    } else {
        (s & ((1u64 << i) - 1), false)
    };
    (r, bmi_flags(size, r, cf, rflags))
}

/// PDEP (BMI2): deposits the low bits of `src` at the set bit positions of `mask_`; no flags.
#[inline]
pub fn pdep(size: u32, src: u64, mask_: u64) -> u64 {
    let mut m = mask_ & mask(size);
    let mut r = 0;
    let mut k = 0;
    while m != 0 {
        let low = m & m.wrapping_neg();
        if (src >> k) & 1 != 0 {
            r |= low;
        }
        k += 1;
        m &= m - 1;
    }
    r
}

/// PEXT (BMI2): gathers the bits of `src` at the set positions of `mask_` into the low bits;
/// no flags.
#[inline]
pub fn pext(size: u32, src: u64, mask_: u64) -> u64 {
    let mut m = mask_ & mask(size);
    let mut r = 0;
    let mut k = 0;
    while m != 0 {
        let low = m & m.wrapping_neg();
        if src & low != 0 {
            r |= 1 << k;
        }
        k += 1;
        m &= m - 1;
    }
    r
}

/// ADCX (ADX): `a + b + CF` with the carry out in CF; no other flag changes. Returns
/// (result, rflags).
#[inline]
pub fn adcx(size: u32, a: u64, b: u64, rflags: u64) -> (u64, u64) {
    let (r, carry) = add_carry(size, a, b, rflags & CF != 0);
    (r, update(rflags, CF, flag_if(carry, CF)))
}

/// ADOX (ADX): `a + b + OF` with the carry out in OF; no other flag changes. Returns
/// (result, rflags).
#[inline]
pub fn adox(size: u32, a: u64, b: u64, rflags: u64) -> (u64, u64) {
    let (r, carry) = add_carry(size, a, b, rflags & OF != 0);
    (r, update(rflags, OF, flag_if(carry, OF)))
}

/// `a + b + carry` on `size`-byte operands: (truncated sum, carry out of the top bit).
#[inline]
fn add_carry(size: u32, a: u64, b: u64, carry: bool) -> (u64, bool) {
    let m = mask(size);
    let wide = u128::from(a & m) + u128::from(b & m) + u128::from(carry);
    (wide as u64 & m, (wide >> bits(size)) & 1 != 0)
}

/// The reflected CRC-32C (Castagnoli) polynomial used by SSE4.2's CRC32.
const CRC32C_POLY: u32 = 0x82f6_3b78;

/// Byte-at-a-time table for the reflected CRC-32C, built at compile time.
const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ CRC32C_POLY
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC32 (SSE4.2): accumulates the low `size_src` bytes of `data` (1, 2, 4 or 8; least
/// significant byte first) into `crc` with the CRC-32C polynomial, without the initial and
/// final inversions, exactly as the instruction does. No flags.
#[inline]
pub fn crc32(size_src: u32, crc: u32, data: u64) -> u32 {
    let mut c = crc;
    let mut d = data;
    for _ in 0..bits(size_src) / 8 {
        c = (c >> 8) ^ CRC32C_TABLE[((c ^ d as u32) & 0xff) as usize];
        d >>= 8;
    }
    c
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    extern crate std;
    use std::format;

    use super::super::testutil::{
        host_r, host_rr, host_rr_wide, host_rrr, pairs, singles, Checker, Rng, OTHER_FLAGS,
    };
    use super::*;

    #[test]
    fn bit_tests_match_host() {
        let mut ck = Checker::new("bt bts btr btc");
        let mut rng = Rng::new(20);
        for size in [2u32, 4, 8] {
            let m = mask(size);
            for &(v, bit, f) in &pairs(21, 3000) {
                // Register bit offsets: edge values already cover big and negative ones; add
                // small in-range ones.
                let bit = if rng.next() & 1 == 0 { bit % 70 } else { bit };
                let what = |n: &str| format!("{n} size {size} v {v:#x} bit {bit:#x} f {f:#x}");
                let mf = bt(size, v, bit, f | OTHER_FLAGS);
                let (_, hf) = host_rr_wide!("bt", size, v, bit, f);
                ck.case();
                ck.flags(|| what("bt"), mf, hf, ARITH);
                macro_rules! cmp {
                    ($insn:literal, $model:ident) => {{
                        let (r, mf) = $model(size, v, bit, f | OTHER_FLAGS);
                        let (hr, hf) = host_rr_wide!($insn, size, v, bit, f);
                        ck.case();
                        ck.value(|| what($insn), r, hr & m);
                        ck.flags(|| what($insn), mf, hf, ARITH);
                    }};
                }
                cmp!("bts", bts);
                cmp!("btr", btr);
                cmp!("btc", btc);
            }
        }
        ck.finish();
    }

    #[test]
    fn bit_scans_and_counts_match_host() {
        let mut ck = Checker::new("bsf bsr tzcnt lzcnt popcnt");
        for size in [2u32, 4, 8] {
            let m = mask(size);
            for &(src, old, f) in &pairs(22, 4000) {
                let what = |n: &str| format!("{n} size {size} src {src:#x} old {old:#x} f {f:#x}");
                macro_rules! scan {
                    ($insn:literal, $model:ident) => {{
                        let (r, mf) = $model(size, src, old, f | OTHER_FLAGS);
                        let (hr, hf) = host_rr_wide!($insn, size, old, src, f);
                        ck.case();
                        ck.value(|| what($insn), r, hr & m);
                        // Only ZF is defined; CF, OF, SF, AF and PF after a zero source differ
                        // between AMD parts (some Zen hosts set PF and clear the rest), so they
                        // are not compared.
                        ck.flags(|| what($insn), mf, hf, ZF);
                        // The documented zero-source rule: the whole register is untouched.
                        if src & m == 0 {
                            ck.value(
                                || what(concat!($insn, " zero src, whole register")),
                                old,
                                hr,
                            );
                        }
                    }};
                }
                scan!("bsf", bsf);
                scan!("bsr", bsr);
                macro_rules! count {
                    ($insn:literal, $model:ident) => {{
                        let (r, mf) = $model(size, src, f | OTHER_FLAGS);
                        let (hr, hf) = host_rr_wide!($insn, size, old, src, f);
                        ck.case();
                        ck.value(|| what($insn), r, hr & m);
                        ck.flags(|| what($insn), mf, hf, ARITH);
                    }};
                }
                count!("tzcnt", tzcnt);
                count!("lzcnt", lzcnt);
                count!("popcnt", popcnt);
            }
        }
        ck.finish();
    }

    #[test]
    fn bswap_matches_host() {
        let mut ck = Checker::new("bswap");
        for &(v, _) in &singles(23, 2000) {
            let what = |n: u32| format!("bswap size {n} v {v:#x}");
            ck.case();
            ck.value(|| what(4), bswap(4, v), host_r!("bswap", "e", v, 2).0);
            ck.case();
            ck.value(|| what(8), bswap(8, v), host_r!("bswap", "r", v, 2).0);
            let mut h = v;
            // SAFETY: BSWAP AX (0x66 0x0f 0xc8, which assemblers refuse to write): a
            // register-only instruction with an undefined result.
            unsafe {
                core::arch::asm!(".byte 0x66, 0x0f, 0xc8", inout("rax") h);
            }
            ck.case();
            ck.value(|| what(2), bswap(2, v) | (v & !0xffff), h);
            ck.case();
            ck.value(|| what(22), swap16(v), u64::from((v as u16).swap_bytes()));
        }
        ck.finish();
    }

    #[test]
    fn bmi_matches_host() {
        let mut ck = Checker::new("andn bextr blsi blsmsk blsr bzhi pdep pext");
        let mut rng = Rng::new(24);
        for size in [4u32, 8] {
            for &(a, b, f) in &pairs(25, 4000) {
                // Control operands with small fields, so BEXTR/BZHI extract something.
                let ctl = match rng.next() % 3 {
                    0 => b,
                    1 => b & 0xffff & !0xc0c0,
                    _ => b & 0x7f7f,
                };
                let what =
                    |n: &str| format!("{n} size {size} a {a:#x} b {b:#x} ctl {ctl:#x} f {f:#x}");
                macro_rules! three {
                    ($insn:literal, $model:expr, $y:expr) => {{
                        let (r, mf) = $model(size, a, $y, f | OTHER_FLAGS);
                        let (hr, hf) = match size {
                            4 => host_rrr!($insn, "e", 0, a, $y, f),
                            _ => host_rrr!($insn, "r", 0, a, $y, f),
                        };
                        ck.case();
                        ck.value(|| what($insn), r, hr);
                        ck.flags(|| what($insn), mf, hf, ARITH);
                    }};
                }
                three!("andn", andn, b);
                three!("bextr", bextr, ctl);
                three!("bzhi", bzhi, ctl);
                macro_rules! two {
                    ($insn:literal, $model:expr) => {{
                        let (r, mf) = $model(size, a, f | OTHER_FLAGS);
                        let (hr, hf) = match size {
                            4 => host_rr!($insn, "e", b, a, f),
                            _ => host_rr!($insn, "r", b, a, f),
                        };
                        ck.case();
                        ck.value(|| what($insn), r, hr);
                        ck.flags(|| what($insn), mf, hf, ARITH);
                    }};
                }
                two!("blsi", blsi);
                two!("blsmsk", blsmsk);
                two!("blsr", blsr);
                macro_rules! noflags {
                    ($insn:literal, $model:expr) => {{
                        let r = $model(size, a, b);
                        let (hr, _) = match size {
                            4 => host_rrr!($insn, "e", 0, a, b, f),
                            _ => host_rrr!($insn, "r", 0, a, b, f),
                        };
                        ck.case();
                        ck.value(|| what($insn), r, hr);
                    }};
                }
                noflags!("pdep", pdep);
                noflags!("pext", pext);
            }
        }
        ck.finish();
    }

    #[test]
    fn adx_matches_host() {
        let mut ck = Checker::new("adcx adox");
        for size in [4u32, 8] {
            for &(a, b, f) in &pairs(26, 4000) {
                let what = |n: &str| format!("{n} size {size} a {a:#x} b {b:#x} f {f:#x}");
                macro_rules! cmp {
                    ($insn:literal, $model:expr) => {{
                        let (r, mf) = $model(size, a, b, f | OTHER_FLAGS);
                        let (hr, hf) = match size {
                            4 => host_rr!($insn, "e", a, b, f),
                            _ => host_rr!($insn, "r", a, b, f),
                        };
                        ck.case();
                        ck.value(|| what($insn), r, hr);
                        ck.flags(|| what($insn), mf, hf, ARITH);
                    }};
                }
                cmp!("adcx", adcx);
                cmp!("adox", adox);
            }
        }
        ck.finish();
    }

    #[test]
    fn crc32_matches_host() {
        let mut ck = Checker::new("crc32");
        for &(c, d, _) in &pairs(27, 4000) {
            let crc = c as u32;
            let what = |n: u32| format!("crc32 size {n} crc {crc:#x} data {d:#x}");
            let (mut h1, mut h2, mut h4, mut h8) = (c, c, c, c);
            // SAFETY: register-only SSE4.2 instructions; CRC32 does not touch the flags.
            unsafe {
                core::arch::asm!("crc32 {c:e}, {d:l}", c = inout(reg) h1, d = in(reg) d);
                core::arch::asm!("crc32 {c:e}, {d:x}", c = inout(reg) h2, d = in(reg) d);
                core::arch::asm!("crc32 {c:e}, {d:e}", c = inout(reg) h4, d = in(reg) d);
                core::arch::asm!("crc32 {c:r}, {d:r}", c = inout(reg) h8, d = in(reg) d);
            }
            for (n, h) in [(1, h1), (2, h2), (4, h4), (8, h8)] {
                ck.case();
                ck.value(|| what(n), u64::from(crc32(n, crc, d)), h);
            }
        }
        // The CRC-32C check value: "123456789" with the usual inversions gives 0xe3069283.
        let mut crc = !0u32;
        for b in b"123456789" {
            crc = crc32(1, crc, u64::from(*b));
        }
        assert_eq!(!crc, 0xe306_9283);
        ck.finish();
    }
}

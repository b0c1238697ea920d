//! Legacy BCD adjustments (valid outside 64-bit mode only): DAA DAS AAA AAS AAM AAD.
//!
//! The flags the SDM leaves undefined are modelled on the host (AMD Zen), whose microcode
//! performs each adjustment as one ordinary addition or subtraction and keeps that operation's
//! flags; the tests check all of them against the host in compatibility mode.

use super::alu::{alu, AluOp};
use super::flags::{flag_if, szp, update, AF, ARITH, CF, OF, PF, SF, ZF};
use super::muldiv::DivideError;

/// DAA: decimal-adjusts AL after an addition; returns (AL, rflags).
///
/// CF AF SF ZF PF are defined. OF is undefined: the host sets it as the signed overflow of
/// `AL + adjustment` (the adjustment being 0x00, 0x06, 0x60 or 0x66), and so does this.
#[inline]
pub fn daa(al: u8, rflags: u64) -> (u8, u64) {
    let mut adj = 0u8;
    let mut f = 0;
    if al & 0xf > 9 || rflags & AF != 0 {
        adj |= 0x06;
        f |= AF;
    }
    if al > 0x99 || rflags & CF != 0 {
        adj |= 0x60;
        f |= CF;
    }
    let r = al.wrapping_add(adj);
    let of = (al ^ r) & (adj ^ r) & 0x80 != 0;
    f |= szp(1, u64::from(r)) | flag_if(of, OF);
    (r, update(rflags, ARITH, f))
}

/// DAS: decimal-adjusts AL after a subtraction; returns (AL, rflags).
///
/// CF AF SF ZF PF are defined. OF is undefined: the host sets it as the signed overflow of
/// `AL - adjustment`, and so does this.
#[inline]
pub fn das(al: u8, rflags: u64) -> (u8, u64) {
    let mut adj = 0u8;
    let mut f = 0;
    if al & 0xf > 9 || rflags & AF != 0 {
        adj |= 0x06;
        // The borrow out of AL - 6 sets CF even when the second step does not apply.
        f |= AF | flag_if(al < 6, CF);
    }
    if al > 0x99 || rflags & CF != 0 {
        adj |= 0x60;
        f |= CF;
    }
    let r = al.wrapping_sub(adj);
    let of = (al ^ adj) & (al ^ r) & 0x80 != 0;
    f |= szp(1, u64::from(r)) | flag_if(of, OF);
    (r, update(rflags, ARITH, f))
}

/// AAA: ASCII-adjusts AX after an addition; returns (AX, rflags).
///
/// CF and AF are defined (set when an adjustment was made). OF SF ZF PF are undefined: the
/// host computes them from the 16-bit addition `AX + 0x106` (or `AX + 0` without adjustment)
/// before AL's high nibble is cleared, and so does this.
#[inline]
pub fn aaa(ax: u16, rflags: u64) -> (u16, u64) {
    let adjust = ax & 0xf > 9 || rflags & AF != 0;
    let (t, f) = alu(
        AluOp::Add,
        2,
        u64::from(ax),
        if adjust { 0x106 } else { 0 },
        0,
    );
    let f = (f & (OF | SF | ZF | PF)) | flag_if(adjust, CF | AF);
    ((t as u16) & 0xff0f, update(rflags, ARITH, f))
}

/// AAS: ASCII-adjusts AX after a subtraction; returns (AX, rflags).
///
/// CF and AF are defined. OF SF ZF PF are undefined: the host computes them from the 16-bit
/// subtraction `AX - 0x106` (or `AX - 0`), and so does this.
#[inline]
pub fn aas(ax: u16, rflags: u64) -> (u16, u64) {
    let adjust = ax & 0xf > 9 || rflags & AF != 0;
    let (t, f) = alu(
        AluOp::Sub,
        2,
        u64::from(ax),
        if adjust { 0x106 } else { 0 },
        0,
    );
    let f = (f & (OF | SF | ZF | PF)) | flag_if(adjust, CF | AF);
    ((t as u16) & 0xff0f, update(rflags, ARITH, f))
}

/// AAM: AH = AL / imm, AL = AL % imm; returns (AX, rflags).
///
/// SF ZF PF are set from AL; OF AF CF are undefined and cleared, as the host does.
///
/// # Errors
/// [`DivideError`] when `imm` is zero.
#[inline]
pub fn aam(al: u8, imm: u8, rflags: u64) -> Result<(u16, u64), DivideError> {
    if imm == 0 {
        return Err(DivideError);
    }
    let hi = al / imm;
    let lo = al % imm;
    let f = szp(1, u64::from(lo));
    Ok((u16::from(hi) << 8 | u16::from(lo), update(rflags, ARITH, f)))
}

/// AAD: AL = AL + AH * imm (mod 256), AH = 0; returns (AX, rflags).
///
/// SF ZF PF are set from AL. OF AF CF are undefined: the host takes them from the 8-bit
/// addition `AL + (AH * imm mod 256)`, and so does this.
#[inline]
pub fn aad(ax: u16, imm: u8, rflags: u64) -> (u16, u64) {
    let [al, ah] = ax.to_le_bytes();
    let (r, f) = alu(
        AluOp::Add,
        1,
        u64::from(al),
        u64::from(ah.wrapping_mul(imm)),
        0,
    );
    (r as u16, update(rflags, ARITH, f))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    extern crate std;
    use std::format;

    use super::super::testutil::{Checker, Compat32, Rng, OTHER_FLAGS};
    use super::*;

    /// Every combination of CF and AF with the other status flags all clear or all set.
    const FLAGS: [u64; 8] = [
        2,
        2 | CF,
        2 | AF,
        2 | CF | AF,
        2 | OF | SF | ZF | PF,
        2 | OF | SF | ZF | PF | CF,
        2 | OF | SF | ZF | PF | AF,
        2 | ARITH,
    ];

    #[test]
    fn daa_das_match_host_exhaustively() {
        if !Compat32::available() {
            std::eprintln!("no 32-bit user code segment: host comparison skipped");
            return;
        }
        let mut ck = Checker::new("daa das");
        let host_daa = Compat32::new(&[0x27]);
        let host_das = Compat32::new(&[0x2f]);
        for al in 0..=255u8 {
            for f in FLAGS {
                let eax = 0x1234_5600 | u32::from(al);
                for (name, model, host) in [
                    ("daa", daa as fn(u8, u64) -> (u8, u64), &host_daa),
                    ("das", das, &host_das),
                ] {
                    let (r, mf) = model(al, f | OTHER_FLAGS);
                    let (ha, hf) = host.run(eax, f as u32);
                    let what = || format!("{name} size 1 al {al:#x} f {f:#x}");
                    ck.case();
                    ck.value(what, u64::from(r) | 0x1234_5600, u64::from(ha));
                    ck.flags(what, mf, u64::from(hf), ARITH);
                }
            }
        }
        ck.finish();
    }

    #[test]
    fn aaa_aas_match_host() {
        if !Compat32::available() {
            std::eprintln!("no 32-bit user code segment: host comparison skipped");
            return;
        }
        let mut ck = Checker::new("aaa aas");
        let host_aaa = Compat32::new(&[0x37]);
        let host_aas = Compat32::new(&[0x3f]);
        for al in 0..=255u8 {
            for ah in [0u8, 1, 0x7f, 0x80, 0xfe, 0xff, 0x42] {
                for f in FLAGS {
                    let ax = u16::from_le_bytes([al, ah]);
                    let eax = 0xabcd_0000 | u32::from(ax);
                    for (name, model, host) in [
                        ("aaa", aaa as fn(u16, u64) -> (u16, u64), &host_aaa),
                        ("aas", aas, &host_aas),
                    ] {
                        let (r, mf) = model(ax, f | OTHER_FLAGS);
                        let (ha, hf) = host.run(eax, f as u32);
                        let what = || format!("{name} size 2 ax {ax:#x} f {f:#x}");
                        ck.case();
                        ck.value(what, u64::from(r) | 0xabcd_0000, u64::from(ha));
                        ck.flags(what, mf, u64::from(hf), ARITH);
                    }
                }
            }
        }
        ck.finish();
    }

    #[test]
    fn aam_aad_match_host() {
        if !Compat32::available() {
            std::eprintln!("no 32-bit user code segment: host comparison skipped");
            return;
        }
        let mut ck = Checker::new("aam aad");
        let mut rng = Rng::new(30);
        for imm in 0..=255u8 {
            let host_aam = Compat32::new(&[0xd4, imm]);
            let host_aad = Compat32::new(&[0xd5, imm]);
            for i in 0..96u32 {
                let ax = if i < 64 {
                    (i * 4) as u16 | 0x3300
                } else {
                    rng.next() as u16
                };
                let f = FLAGS[(i % 8) as usize];
                let eax = 0x5a5a_0000 | u32::from(ax);
                let what = |n: &str| format!("{n} size 2 ax {ax:#x} imm {imm} f {f:#x}");
                match aam(ax as u8, imm, f | OTHER_FLAGS) {
                    Err(DivideError) => {
                        ck.case();
                        ck.value(|| what("aam fault"), u64::from(imm), 0);
                    }
                    Ok((r, mf)) => {
                        let (ha, hf) = host_aam.run(eax, f as u32);
                        ck.case();
                        ck.value(|| what("aam"), u64::from(r) | 0x5a5a_0000, u64::from(ha));
                        ck.flags(|| what("aam"), mf, u64::from(hf), ARITH);
                    }
                }
                let (r, mf) = aad(ax, imm, f | OTHER_FLAGS);
                let (ha, hf) = host_aad.run(eax, f as u32);
                ck.case();
                ck.value(|| what("aad"), u64::from(r) | 0x5a5a_0000, u64::from(ha));
                ck.flags(|| what("aad"), mf, u64::from(hf), ARITH);
            }
        }
        ck.finish();
    }

    /// Worked examples (from the instructions' descriptions), checked on every host.
    #[test]
    fn known_answers() {
        // 0x79 + 0x35 = 0xae, DAA -> 0x14 with CF and AF (79 + 35 = 114 decimal).
        let (r, f) = daa(0xae, 0);
        assert_eq!((r, f & (CF | AF)), (0x14, CF | AF));
        // 0x35 - 0x47 = 0xee, DAS -> 0x88 with CF and AF (35 - 47 = -12, i.e. 88 borrow 1).
        let (r, f) = das(0xee, 0);
        assert_eq!((r, f & (CF | AF)), (0x88, CF | AF));
        // '9' + '5' = 0x6e in AL with AH 0: AAA -> AX 0x0104 (unpacked 14), CF AF set.
        assert_eq!(aaa(0x006e, 0).0, 0x0104);
        assert_eq!(aaa(0x006e, 0).1 & (CF | AF), CF | AF);
        // '3' - '5' = 0xfe: AAS -> AX 0xff08 (borrow into AH), CF AF set.
        assert_eq!(aas(0x00fe, 0).0, 0xff08);
        // AAM 10 of 0x3f (63) -> AH 6, AL 3; AAD 10 of 0x0603 -> 0x3f.
        assert_eq!(aam(0x3f, 10, 0).map(|(ax, _)| ax), Ok(0x0603));
        assert_eq!(aad(0x0603, 10, 0).0, 0x003f);
        assert_eq!(aam(7, 0, 0), Err(DivideError));
        // Non-arithmetic flags are preserved.
        assert_eq!(daa(0, OTHER_FLAGS).1 & OTHER_FLAGS, OTHER_FLAGS);
    }
}

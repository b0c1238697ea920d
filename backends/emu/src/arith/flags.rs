//! RFLAGS bit definitions and helpers shared by the arithmetic modules.

/// Carry flag.
pub const CF: u64 = 1;
/// Parity flag (set when the low byte of the result has an even number of one bits).
pub const PF: u64 = 1 << 2;
/// Auxiliary-carry flag (carry or borrow out of bit 3).
pub const AF: u64 = 1 << 4;
/// Zero flag.
pub const ZF: u64 = 1 << 6;
/// Sign flag.
pub const SF: u64 = 1 << 7;
/// Trap flag.
pub const TF: u64 = 1 << 8;
/// Interrupt-enable flag.
pub const IF: u64 = 1 << 9;
/// Direction flag.
pub const DF: u64 = 1 << 10;
/// Overflow flag.
pub const OF: u64 = 1 << 11;
/// I/O privilege level (two bits).
pub const IOPL: u64 = 3 << 12;
/// Nested-task flag.
pub const NT: u64 = 1 << 14;
/// Resume flag.
pub const RF: u64 = 1 << 16;
/// Virtual-8086 mode.
pub const VM: u64 = 1 << 17;
/// Alignment check / access control.
pub const AC: u64 = 1 << 18;
/// Virtual interrupt flag.
pub const VIF: u64 = 1 << 19;
/// Virtual interrupt pending.
pub const VIP: u64 = 1 << 20;
/// CPUID-available flag.
pub const ID: u64 = 1 << 21;
/// The six status flags that arithmetic instructions define.
pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;

/// The value mask of an operand of `size` bytes (sizes other than 1, 2, 4 count as 8).
#[inline(always)]
pub const fn mask(size: u32) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// The operand width of `size` bytes in bits (sizes other than 1, 2, 4 count as 8).
#[inline(always)]
pub const fn bits(size: u32) -> u32 {
    match size {
        1 => 8,
        2 => 16,
        4 => 32,
        _ => 64,
    }
}

/// The sign bit of an operand of `size` bytes.
#[inline(always)]
pub const fn sign_bit(size: u32) -> u64 {
    let m = mask(size);
    m ^ (m >> 1)
}

/// Sign-extends the low `size` bytes of `v` to 64 bits.
#[inline(always)]
pub const fn sign_extend(size: u32, v: u64) -> u64 {
    let shift = 64 - bits(size);
    (((v << shift) as i64) >> shift) as u64
}

/// True when `v` has an even number of one bits, i.e. when PF is set for a result whose low
/// byte is `v`.
#[inline(always)]
pub const fn parity(v: u8) -> bool {
    v.count_ones() & 1 == 0
}

/// Returns `flag` if `cond` holds, else 0.
#[inline(always)]
pub const fn flag_if(cond: bool, flag: u64) -> u64 {
    if cond {
        flag
    } else {
        0
    }
}

/// The PF value (0 or [`PF`]) for a result.
#[inline(always)]
pub const fn pf(result: u64) -> u64 {
    PF_OF_BYTE[(result & 0xff) as usize] as u64
}

/// [`PF`] or 0 for each byte value: one load instead of a population count (the baseline
/// x86-64 target has no POPCNT).
const PF_OF_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        if parity(i as u8) {
            t[i] = PF as u8;
        }
        i += 1;
    }
    t
};

/// The ZF value (0 or [`ZF`]) for a result of `size` bytes.
#[inline(always)]
pub const fn zf(size: u32, result: u64) -> u64 {
    flag_if(result & mask(size) == 0, ZF)
}

/// The SF value (0 or [`SF`]) for a result of `size` bytes.
#[inline(always)]
pub const fn sf(size: u32, result: u64) -> u64 {
    flag_if(result & sign_bit(size) != 0, SF)
}

/// ZF, SF and PF for a result of `size` bytes, as the usual "set according to the result".
#[inline(always)]
pub const fn szp(size: u32, result: u64) -> u64 {
    zf(size, result) | sf(size, result) | pf(result)
}

/// Replaces the flags selected by `which` in `rflags` with those in `new`.
#[inline(always)]
pub const fn update(rflags: u64, which: u64, new: u64) -> u64 {
    (rflags & !which) | (new & which)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_signs() {
        assert_eq!(mask(1), 0xff);
        assert_eq!(mask(8), u64::MAX);
        assert_eq!(sign_bit(2), 0x8000);
        assert_eq!(sign_bit(8), 1 << 63);
        assert_eq!(sign_extend(1, 0x1234_5680), 0xffff_ffff_ffff_ff80);
        assert_eq!(sign_extend(4, 0xdead_7fff_ffff), 0x7fff_ffff);
        assert_eq!(sign_extend(8, 5), 5);
        assert!(parity(0));
        assert!(parity(3));
        assert!(!parity(7));
        assert_eq!(szp(1, 0x100), ZF | PF);
        assert_eq!(szp(2, 0x8001), SF);
        assert_eq!(update(u64::MAX, ZF | CF, CF), !ZF);
    }
}

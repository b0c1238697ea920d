//! The x87 environment in memory: FLDENV, FNSTENV/FSTENV, FRSTOR, FNSAVE/FSAVE, in the
//! four layouts of SDM 1 8.1.10 (figures 8-9 to 8-12): 14 bytes with a 16-bit operand
//! size, 28 with a 32-bit one, each in a protected-mode form (offsets and selectors)
//! and a real-mode/virtual-8086 form (20- or 32-bit linear addresses split around the
//! opcode). FSAVE/FRSTOR add the eight registers, ST(0) first, 10 bytes each.
//!
//! FSTENV and FSAVE mask every exception afterwards (FSAVE then reinitialises the FPU);
//! they and FLDENV/FRSTOR are control instructions (the pointers are not updated).

use super::control::{init, update_summary};
use super::f80;
use super::start_control;
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use crate::exec::ea;
use crate::fpu::X87;
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

/// The handler for `code` if it loads or stores the environment.
pub fn select(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Fldenv_m14byte => fldenv::<false, false>,
        C::Fldenv_m28byte => fldenv::<true, false>,
        C::Frstor_m94byte => fldenv::<false, true>,
        C::Frstor_m108byte => fldenv::<true, true>,
        C::Fnstenv_m14byte => fstenv::<false, false, false>,
        C::Fstenv_m14byte => fstenv::<false, false, true>,
        C::Fnstenv_m28byte => fstenv::<true, false, false>,
        C::Fstenv_m28byte => fstenv::<true, false, true>,
        C::Fnsave_m94byte => fstenv::<false, true, false>,
        C::Fsave_m94byte => fstenv::<false, true, true>,
        C::Fnsave_m108byte => fstenv::<true, true, false>,
        C::Fsave_m108byte => fstenv::<true, true, true>,
        _ => return None,
    })
}

/// The full tag word: two bits per physical register (00 valid, 01 zero, 10 special,
/// 11 empty), derived from the abridged tags and the contents.
pub fn full_tags(x: &X87) -> u16 {
    let mut t = 0u16;
    for p in 0..8 {
        let tag = if x.ftw & (1 << p) == 0 {
            3
        } else {
            f80::tag(x.regs[p] & f80::MASK)
        };
        t |= tag << (2 * p);
    }
    t
}

/// The abridged tags of a full tag word (not empty = any tag but 11).
pub fn abridged(t: u16) -> u8 {
    (0..8).fold(0u8, |a, p| {
        if (t >> (2 * p)) & 3 != 3 {
            a | (1 << p)
        } else {
            a
        }
    })
}

/// The environment image (14 or 28 bytes in `out`; returns the length).
pub fn env_image(x: &X87, wide: bool, real: bool, out: &mut [u8; 28]) -> usize {
    let tags = full_tags(x);
    let fop = u32::from(x.fop & 0x7ff);
    if wide {
        // Reserved upper halves read as ones, as on the processors documented.
        let words: [u32; 7] = if real {
            let ip = (u64::from(x.fcs) << 4).wrapping_add(x.fip) as u32;
            let dp = (u64::from(x.fds) << 4).wrapping_add(x.fdp) as u32;
            [
                0xffff_0000 | u32::from(x.fcw),
                0xffff_0000 | u32::from(x.fsw),
                0xffff_0000 | u32::from(tags),
                0xffff_0000 | (ip & 0xffff),
                ((ip >> 16) << 12) | fop,
                0xffff_0000 | (dp & 0xffff),
                (dp >> 16) << 12,
            ]
        } else {
            [
                0xffff_0000 | u32::from(x.fcw),
                0xffff_0000 | u32::from(x.fsw),
                0xffff_0000 | u32::from(tags),
                x.fip as u32,
                u32::from(x.fcs) | (fop << 16),
                x.fdp as u32,
                0xffff_0000 | u32::from(x.fds),
            ]
        };
        for (k, w) in words.iter().enumerate() {
            out[4 * k..4 * k + 4].copy_from_slice(&w.to_le_bytes());
        }
        28
    } else {
        let words: [u16; 7] = if real {
            let ip = (u64::from(x.fcs) << 4).wrapping_add(x.fip) as u32;
            let dp = (u64::from(x.fds) << 4).wrapping_add(x.fdp) as u32;
            [
                x.fcw,
                x.fsw,
                tags,
                ip as u16,
                (((ip >> 16) & 0xf) << 12) as u16 | fop as u16,
                dp as u16,
                (((dp >> 16) & 0xf) << 12) as u16,
            ]
        } else {
            [x.fcw, x.fsw, tags, x.fip as u16, x.fcs, x.fdp as u16, x.fds]
        };
        for (k, w) in words.iter().enumerate() {
            out[2 * k..2 * k + 2].copy_from_slice(&w.to_le_bytes());
        }
        14
    }
}

/// Load the environment from an image.
pub fn load_env(x: &mut X87, wide: bool, real: bool, img: &[u8]) {
    let w = |k: usize| -> u32 {
        if wide {
            u32::from_le_bytes([img[4 * k], img[4 * k + 1], img[4 * k + 2], img[4 * k + 3]])
        } else {
            u32::from(u16::from_le_bytes([img[2 * k], img[2 * k + 1]]))
        }
    };
    x.fcw = super::control::clean_fcw(w(0) as u16);
    x.fsw = w(1) as u16;
    x.ftw = abridged(w(2) as u16);
    if real {
        let hi_bits = if wide { 16 } else { 4 };
        let hi_mask = (1u32 << hi_bits) - 1;
        let ip = (w(3) & 0xffff) | (((w(4) >> 12) & hi_mask) << 16);
        let dp = (w(5) & 0xffff) | (((w(6) >> 12) & hi_mask) << 16);
        x.fip = u64::from(ip);
        x.fcs = 0;
        x.fop = (w(4) & 0x7ff) as u16;
        x.fdp = u64::from(dp);
        x.fds = 0;
    } else if wide {
        x.fip = u64::from(w(3));
        x.fcs = w(4) as u16;
        x.fop = ((w(4) >> 16) & 0x7ff) as u16;
        x.fdp = u64::from(w(5));
        x.fds = w(6) as u16;
    } else {
        x.fip = u64::from(w(3));
        x.fcs = w(4) as u16;
        x.fdp = u64::from(w(5));
        x.fds = w(6) as u16;
    }
    update_summary(x);
}

/// Whether the real-mode layouts apply (real address and virtual-8086 modes).
fn real_layout(c: &Cpu) -> bool {
    !c.protected()
}

fn fldenv<const WIDE: bool, const REGS: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    start_control(c, true)?;
    let a = ea(c, op);
    let env_len = if WIDE { 28 } else { 14 };
    let len = if REGS { env_len + 80 } else { env_len };
    let mut img = [0u8; 108];
    // The host checks the first word (two bytes in the 16-bit layouts, four in the
    // 32-bit ones: the #PF address is the page start when it crosses into a missing
    // page), then the last byte (the #PF address is then that byte, not the page start).
    c.rd(mem, op.seg, a, if WIDE { 4 } else { 2 })?;
    c.rd(mem, op.seg, a.wrapping_add(len as u64 - 1), 1)?;
    c.rd_bytes(mem, op.seg, a, &mut img[..len])?;
    let real = real_layout(c);
    let x = &mut c.fpu.x87;
    load_env(x, WIDE, real, &img[..env_len]);
    if REGS {
        for i in 0..8 {
            let at = env_len + 10 * i;
            let mut b = [0u8; 16];
            b[..10].copy_from_slice(&img[at..at + 10]);
            let p = x.phys(i);
            x.regs[p] = u128::from_le_bytes(b);
        }
    }
    Ok(())
}

fn fstenv<const WIDE: bool, const REGS: bool, const WAIT: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    start_control(c, WAIT)?;
    let a = ea(c, op);
    let real = real_layout(c);
    let x = &c.fpu.x87;
    let mut env = [0u8; 28];
    let n = env_image(x, WIDE, real, &mut env);
    let mut img = [0u8; 108];
    img[..n].copy_from_slice(&env[..n]);
    let mut len = n;
    if REGS {
        for i in 0..8 {
            let v = super::st(x, i);
            img[len..len + 10].copy_from_slice(&v.to_le_bytes()[..10]);
            len += 10;
        }
    }
    // As for the loads, the first four bytes, then the last (see `fldenv`).
    super::load_store::check_dest(c, mem, op, if WIDE { 4 } else { 2 })?;
    c.probe_write(mem, op.seg, a.wrapping_add(len as u64 - 1), 1)?;
    c.wr_bytes(mem, op.seg, a, &img[..len])?;
    let x = &mut c.fpu.x87;
    if REGS {
        init(x);
    } else {
        x.fcw |= 0x3f;
    }
    Ok(())
}

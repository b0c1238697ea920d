//! A vCPU's registers in gdb's `i386:x86-64` layout with SSE ([`X86_64CoreRegs`]).

use gdbstub_arch::x86::reg::X86_64CoreRegs;
use opsvisor_core::fpu::{FpuStateError, FxsaveArea};
use opsvisor_core::ops::{Gpr, SegReg, X86Ops};

/// gdb's register order (rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15) in core's.
pub const GDB_GPRS: [Gpr; 16] = [
    Gpr::Rax,
    Gpr::Rbx,
    Gpr::Rcx,
    Gpr::Rdx,
    Gpr::Rsi,
    Gpr::Rdi,
    Gpr::Rbp,
    Gpr::Rsp,
    Gpr::R8,
    Gpr::R9,
    Gpr::R10,
    Gpr::R11,
    Gpr::R12,
    Gpr::R13,
    Gpr::R14,
    Gpr::R15,
];

/// gdb's segment order (cs, ss, ds, es, fs, gs).
pub const GDB_SEGMENTS: [SegReg; 6] = [
    SegReg::Cs,
    SegReg::Ss,
    SegReg::Ds,
    SegReg::Es,
    SegReg::Fs,
    SegReg::Gs,
];

/// Fill `regs` from vCPU `v`.
pub fn read(v: &impl X86Ops, regs: &mut X86_64CoreRegs) {
    for (slot, gpr) in regs.regs.iter_mut().zip(GDB_GPRS) {
        *slot = v.gpr(gpr);
    }
    regs.rip = v.rip();
    regs.eflags = v.rflags() as u32;
    let selectors = [
        &mut regs.segments.cs,
        &mut regs.segments.ss,
        &mut regs.segments.ds,
        &mut regs.segments.es,
        &mut regs.segments.fs,
        &mut regs.segments.gs,
    ];
    for (slot, seg) in selectors.into_iter().zip(GDB_SEGMENTS) {
        *slot = u32::from(v.segment(seg).selector);
    }
    let fx = v.fpu_state().unwrap_or_else(FxsaveArea::reset);
    for (n, st) in regs.st.iter_mut().enumerate() {
        *st = fx.st(n);
    }
    regs.fpu.fctrl = u32::from(fx.fcw());
    regs.fpu.fstat = u32::from(fx.fsw());
    regs.fpu.ftag = u32::from(full_tag_word(&fx));
    regs.fpu.fop = u32::from(fx.fop());
    // The 64-bit FXSAVE image has no selectors for the last instruction and operand.
    regs.fpu.fiseg = 0;
    regs.fpu.fioff = fx.fip() as u32;
    regs.fpu.foseg = 0;
    regs.fpu.fooff = fx.fdp() as u32;
    for (n, xmm) in regs.xmm.iter_mut().enumerate() {
        *xmm = fx.xmm(n);
    }
    regs.mxcsr = fx.mxcsr();
}

/// Load `regs` into vCPU `v`. `Err` (nothing written) when the x87/SSE state is one the
/// processor would refuse (an MXCSR with a reserved bit set).
pub fn write(v: &mut impl X86Ops, regs: &X86_64CoreRegs) -> Result<(), FpuStateError> {
    let mut fx = v.fpu_state().unwrap_or_else(FxsaveArea::reset);
    for (n, st) in regs.st.iter().enumerate() {
        fx.set_st(n, *st);
    }
    fx.set_fcw(regs.fpu.fctrl as u16);
    fx.set_fsw(regs.fpu.fstat as u16);
    fx.set_ftw(abridged_tag(regs.fpu.ftag as u16));
    fx.set_fop(regs.fpu.fop as u16);
    for (n, xmm) in regs.xmm.iter().enumerate() {
        fx.set_xmm(n, *xmm);
    }
    fx.set_mxcsr(regs.mxcsr);
    v.set_fpu_state(&fx)?;
    for (value, gpr) in regs.regs.iter().zip(GDB_GPRS) {
        v.set_gpr(gpr, *value);
    }
    v.set_rip(regs.rip);
    // The upper half of RFLAGS is reserved (zero); bit 1 always reads as 1.
    v.set_rflags(u64::from(regs.eflags) | 2);
    let selectors = [
        regs.segments.cs,
        regs.segments.ss,
        regs.segments.ds,
        regs.segments.es,
        regs.segments.fs,
        regs.segments.gs,
    ];
    for (selector, seg) in selectors.into_iter().zip(GDB_SEGMENTS) {
        // A new selector alone: the descriptor cache stays (gdb writes every register
        // back, usually unchanged).
        let mut s = v.segment(seg);
        if u32::from(s.selector) != selector {
            s.selector = selector as u16;
            v.set_segment(seg, &s);
        }
    }
    Ok(())
}

/// gdb's full x87 tag word (two bits per physical register: 0 valid, 1 zero,
/// 2 special, 3 empty) from FXSAVE's abridged one (a bit per register, set when not
/// empty) and the registers' contents, as FSTENV would store it.
pub fn full_tag_word(fx: &FxsaveArea) -> u16 {
    let top = usize::from((fx.fsw() >> 11) & 7);
    let mut word = 0u16;
    for physical in 0..8 {
        let tag = if fx.ftw() & (1 << physical) == 0 {
            3
        } else {
            let st = fx.st((physical + 8 - top) % 8);
            let exponent = u16::from_le_bytes([st[8], st[9]]) & 0x7fff;
            let mantissa =
                u64::from_le_bytes([st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]]);
            match (exponent, mantissa) {
                (0, 0) => 1,
                (0x7fff, _) | (0, _) => 2,
                (_, m) if m >> 63 == 0 => 2,
                _ => 0,
            }
        };
        word |= tag << (2 * physical);
    }
    word
}

/// FXSAVE's abridged tag (a bit per register, set when not empty) from a full tag word.
pub fn abridged_tag(full: u16) -> u8 {
    (0..8).fold(0, |acc, physical| {
        if (full >> (2 * physical)) & 3 == 3 {
            acc
        } else {
            acc | (1 << physical)
        }
    })
}

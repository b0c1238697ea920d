//! MOVS STOS LODS CMPS SCAS with REP/REPE/REPNE, every address size, both directions.
//! A long REP runs in chunks: between chunks the instruction stays current (RIP at it),
//! so budgets, interrupts and exits see progress as on hardware. Inside a chunk, the
//! elements on one page (on each side) are done in host memory at once when the TLB
//! holds the pages for fast access (see [`bulk`]), the others one by one.

use crate::arith::alu::{alu, AluOp};
use crate::arith::flags::{DF, ZF};
use crate::cpu::{addr_reg_write, sr, Cpu};
use crate::decode::Op;
use crate::exception::Ex;
use iced_x86::Mnemonic;
use opsvisor_core::mmu::memory::GuestMemory;

/// Iterations of one REP instruction between two instruction boundaries.
const CHUNK: u64 = 4096;

fn elem(m: Mnemonic) -> u32 {
    match m {
        Mnemonic::Movsb | Mnemonic::Stosb | Mnemonic::Lodsb | Mnemonic::Cmpsb | Mnemonic::Scasb => {
            1
        }
        Mnemonic::Movsw | Mnemonic::Stosw | Mnemonic::Lodsw | Mnemonic::Cmpsw | Mnemonic::Scasw => {
            2
        }
        Mnemonic::Movsd | Mnemonic::Stosd | Mnemonic::Lodsd | Mnemonic::Cmpsd | Mnemonic::Scasd => {
            4
        }
        _ => 8,
    }
}

#[inline(always)]
fn step(c: &mut Cpu, r: usize, d: u64, m: u64) {
    c.gpr[r] = addr_reg_write(c.gpr[r], c.gpr[r].wrapping_add(d), m);
}

/// Which string instruction a REP loop runs (see [`bulk`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Str {
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
}

/// Run `body` once, or under REP until RCX reaches 0 (or, for CMPS and SCAS, until
/// `body` says the condition ended it), in chunks of [`CHUNK`] elements. Under REP, the
/// elements of one page (on each side) go to host memory at once through [`bulk`] when
/// the TLB holds the pages for fast access; what it cannot do (the first element on a
/// page the TLB does not hold, MMIO, pages with code, an element that straddles two
/// pages or meets a segment limit, alignment checking) goes through `body` one element
/// at a time, which faults where the processor does, with RCX, RSI and RDI counting
/// the elements done.
#[inline(always)]
fn repeat(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
    kind: Str,
    mut body: impl FnMut(&mut Cpu, &mut GuestMemory, u64, u32) -> Result<bool, Ex>,
) -> Result<(), Ex> {
    let size = elem(op.i.mnemonic());
    let d = if c.rf & DF != 0 {
        (u64::from(size)).wrapping_neg()
    } else {
        u64::from(size)
    };
    let m = op.amask;
    let rep = op.i.has_rep_prefix() || op.i.has_repne_prefix();
    if !rep {
        body(c, mem, d, size)?;
        return Ok(());
    }
    let cond_rep = matches!(kind, Str::Cmps | Str::Scas);
    let mut n = 0;
    while c.gpr[1] & m != 0 {
        let max = (CHUNK - n).min(c.gpr[1] & m);
        let (done, go_on) = match bulk(c, op, kind, size, max) {
            Some(r) => r,
            None => (1, body(c, mem, d, size)?),
        };
        let cx = c.gpr[1].wrapping_sub(done) & m;
        c.gpr[1] = addr_reg_write(c.gpr[1], cx, m);
        if cond_rep && !go_on {
            return Ok(());
        }
        n += done;
        if n >= CHUNK && cx != 0 {
            // Come back to this instruction at the next boundary.
            c.rip = op.i.ip();
            c.brk = true;
            return Ok(());
        }
    }
    Ok(())
}

/// The elements, from the current registers, that one bulk step may do on the side that
/// register `reg` (RSI or RDI) addresses through segment `seg`: at most `max`, on the page
/// that holds the first one, without the offset wrapping at the address size, inside the
/// segment. Returns the first element's linear address and the count, or `None` when the
/// first element needs the element path (it straddles two pages, or a check fails).
#[inline(always)]
fn span(
    c: &Cpu,
    op: &Op,
    reg: usize,
    seg: u8,
    size: u64,
    max: u64,
    write: bool,
) -> Option<(u64, u64)> {
    let m = op.amask;
    let ea = c.gpr[reg] & m;
    let la = c.linear(seg, ea, size as u32, write).ok()?;
    c.check_alignment(la, size as u32).ok()?;
    let off = la & 0xfff;
    if off + size > 4096 {
        return None;
    }
    let back = c.rf & DF != 0;
    // Elements on this page, and before the offset wraps.
    let (in_page, in_addr) = if back {
        (off / size + 1, ea / size + 1)
    } else {
        let room = m - ea;
        let in_addr = if room < size - 1 {
            0
        } else {
            (room - (size - 1)) / size + 1
        };
        ((4096 - off) / size, in_addr)
    };
    let n = max.min(in_page).min(in_addr);
    if n == 0 {
        return None;
    }
    if n > 1 && c.bits != 64 {
        // Segment limits: the checks passed for the first element; the last one decides
        // for the whole run (the valid offsets form one interval).
        let last = if back {
            ea - (n - 1) * size
        } else {
            ea + (n - 1) * size
        };
        c.linear(seg, last, size as u32, write).ok()?;
    }
    Some((la, n))
}

/// The host address of linear `la` (an element of `size` bytes) when the TLB holds its
/// page for fast reads (`write` false) or fast writes in the current class.
#[inline(always)]
fn host(c: &Cpu, la: u64, size: u64, write: bool) -> Option<usize> {
    let (e, tag) = c.tlb.probe(c.tlb.sel, la, la + size - 1);
    let t = if write { e.write } else { e.read };
    (t == tag).then(|| e.addend.wrapping_add(la as usize))
}

/// The host address of element `k` of a run of `size`-byte elements from host address
/// `p`, downwards if `back`.
#[inline(always)]
fn at(p: usize, k: u64, size: u64, back: bool) -> usize {
    let off = (k * size) as usize;
    if back {
        p - off
    } else {
        p + off
    }
}

/// Read `size` bytes at host address `a`.
///
/// # Safety
/// `a..a + size` must be inside a RAM page of the current memory map.
#[inline(always)]
unsafe fn load(a: usize, size: u64) -> u64 {
    let a = a as *const u8;
    // SAFETY: the caller's promise; the reads are unaligned-safe.
    unsafe {
        match size {
            1 => u64::from(*a),
            2 => u64::from(core::ptr::read_unaligned(a as *const u16)),
            4 => u64::from(core::ptr::read_unaligned(a as *const u32)),
            _ => core::ptr::read_unaligned(a as *const u64),
        }
    }
}

/// Write `size` bytes of `v` at host address `a`.
///
/// # Safety
/// As for [`load`], the page writable and no reference to it alive.
#[inline(always)]
unsafe fn store(a: usize, size: u64, v: u64) {
    let a = a as *mut u8;
    // SAFETY: the caller's promise.
    unsafe {
        match size {
            1 => *a = v as u8,
            2 => core::ptr::write_unaligned(a as *mut u16, v as u16),
            4 => core::ptr::write_unaligned(a as *mut u32, v as u32),
            _ => core::ptr::write_unaligned(a as *mut u64, v),
        }
    }
}

/// One bulk step of a REP string instruction: the elements from the current registers up
/// to the end of the page on each side (at most `max`), done in host memory, when the
/// TLB holds both pages for fast access (so both are RAM, and a page written holds no
/// decoded code). Returns the elements done and, for CMPS/SCAS, whether the repetition
/// goes on; RSI/RDI, the flags and the accumulator are updated, RCX is left to the
/// caller. `None`, having done nothing, when the next element needs the element path.
///
/// The result is that of the elements one by one: MOVS copies with `memmove` when that is
/// what the elements produce (going up, the destination at or below the source; going
/// down, at or above it; or the ranges apart — all in host addresses, so two linear
/// aliases of one page count as overlapping), and element by element otherwise.
#[inline(never)]
fn bulk(c: &mut Cpu, op: &Op, kind: Str, size: u32, max: u64) -> Option<(u64, bool)> {
    let z = u64::from(size);
    let back = c.rf & DF != 0;
    let m = op.amask;
    let reads_src = matches!(kind, Str::Movs | Str::Cmps | Str::Lods);
    let uses_dst = kind != Str::Lods;
    let writes_dst = matches!(kind, Str::Movs | Str::Stos);
    let mut n = max;
    let mut s = 0;
    let mut d = 0;
    if reads_src {
        let (la, k) = span(c, op, 6, op.seg, z, max, false)?;
        s = host(c, la, z, false)?;
        n = n.min(k);
    }
    if uses_dst {
        let (la, k) = span(c, op, 7, sr::ES, z, max, writes_dst)?;
        d = host(c, la, z, writes_dst)?;
        n = n.min(k);
    }
    let mut go_on = true;
    // SAFETY (every block below): each run of `n` elements lies inside one RAM page of
    // the current memory map (`span` kept it on its first element's page, whose host
    // address `host` found in a TLB entry valid for this access kind); a page written is
    // writable and holds no decoded code, and no reference to guest memory is alive.
    let done = match kind {
        Str::Movs => {
            let len = (n * z) as usize;
            // The lowest byte of each run.
            let (slo, dlo) = if back {
                (s + z as usize - len, d + z as usize - len)
            } else {
                (s, d)
            };
            let apart = dlo + len <= slo || slo + len <= dlo;
            if apart || (!back && d <= s) || (back && d >= s) {
                // SAFETY: see above; `copy` allows overlap, and here it gives what the
                // elements do.
                unsafe { core::ptr::copy(slo as *const u8, dlo as *mut u8, len) };
            } else {
                for k in 0..n {
                    // SAFETY: see above; one element at a time, in the processor's order.
                    unsafe { store(at(d, k, z, back), z, load(at(s, k, z, back), z)) };
                }
            }
            n
        }
        Str::Stos => {
            let v = c.gpr[0];
            if z == 1 {
                let lo = if back { d + 1 - n as usize } else { d };
                // SAFETY: see above.
                unsafe { core::ptr::write_bytes(lo as *mut u8, v as u8, n as usize) };
            } else {
                for k in 0..n {
                    // SAFETY: see above.
                    unsafe { store(at(d, k, z, back), z, v) };
                }
            }
            n
        }
        Str::Lods => {
            // Only the last element stays in the accumulator; reading RAM has no effect.
            // SAFETY: see above.
            let v = unsafe { load(at(s, n - 1, z, back), z) };
            c.set(0, size, v);
            n
        }
        Str::Cmps | Str::Scas => {
            let repne = op.i.has_repne_prefix();
            let acc = c.gpr[0] & crate::arith::flags::mask(size);
            let mut k = 0;
            let (a, b) = loop {
                // SAFETY: see above.
                let b = unsafe { load(at(d, k, z, back), z) };
                let a = if kind == Str::Cmps {
                    // SAFETY: see above.
                    unsafe { load(at(s, k, z, back), z) }
                } else {
                    acc
                };
                k += 1;
                if (a == b) == repne || k == n {
                    break (a, b);
                }
            };
            let (_, f) = alu(AluOp::Sub, size, a, b, c.rflags());
            c.set_rflags(f);
            go_on = rep_continue(op, f);
            k
        }
    };
    let delta = if back {
        (done * z).wrapping_neg()
    } else {
        done * z
    };
    if reads_src {
        step(c, 6, delta, m);
    }
    if uses_dst {
        step(c, 7, delta, m);
    }
    Some((done, go_on))
}

/// MOVS.
pub fn movs(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let m = op.amask;
    let seg = op.seg;
    repeat(c, mem, op, Str::Movs, |c, mem, d, size| {
        let v = c.rd(mem, seg, c.gpr[6] & m, size)?;
        c.wr(mem, sr::ES, c.gpr[7] & m, size, v)?;
        step(c, 6, d, m);
        step(c, 7, d, m);
        Ok(true)
    })
}

/// STOS.
pub fn stos(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let m = op.amask;
    repeat(c, mem, op, Str::Stos, |c, mem, d, size| {
        let v = c.gpr[0];
        c.wr(mem, sr::ES, c.gpr[7] & m, size, v)?;
        step(c, 7, d, m);
        Ok(true)
    })
}

/// LODS.
pub fn lods(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let m = op.amask;
    let seg = op.seg;
    repeat(c, mem, op, Str::Lods, |c, mem, d, size| {
        let v = c.rd(mem, seg, c.gpr[6] & m, size)?;
        c.set(0, size, v);
        step(c, 6, d, m);
        Ok(true)
    })
}

fn rep_continue(op: &Op, rflags: u64) -> bool {
    if op.i.has_repne_prefix() {
        rflags & ZF == 0
    } else {
        rflags & ZF != 0
    }
}

/// CMPS.
pub fn cmps(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let m = op.amask;
    let seg = op.seg;
    repeat(c, mem, op, Str::Cmps, |c, mem, d, size| {
        // ES:[RDI] is read first: when both operands fault, the processor reports the
        // destination's fault, #PF or #GP alike (observed on the AMD host of the
        // differential tests; the SDM leaves the order open).
        let b = c.rd(mem, sr::ES, c.gpr[7] & m, size)?;
        let a = c.rd(mem, seg, c.gpr[6] & m, size)?;
        let (_, f) = alu(AluOp::Sub, size, a, b, c.rflags());
        c.set_rflags(f);
        step(c, 6, d, m);
        step(c, 7, d, m);
        Ok(rep_continue(op, f))
    })
}

/// SCAS.
pub fn scas(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let m = op.amask;
    repeat(c, mem, op, Str::Scas, |c, mem, d, size| {
        let b = c.rd(mem, sr::ES, c.gpr[7] & m, size)?;
        let (_, f) = alu(AluOp::Sub, size, c.gpr[0], b, c.rflags());
        c.set_rflags(f);
        step(c, 7, d, m);
        Ok(rep_continue(op, f))
    })
}

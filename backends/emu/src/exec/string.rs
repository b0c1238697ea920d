//! MOVS STOS LODS CMPS SCAS with REP/REPE/REPNE, every address size, both directions.
//! A long REP runs in chunks: between chunks the instruction stays current (RIP at it),
//! so budgets, interrupts and exits see progress as on hardware. Inside a chunk, the
//! elements on one page (on each side) are done in host memory at once when the TLB
//! holds the pages for fast access (see [`bulk`]), the others one by one.

use crate::arith::alu::{alu, AluOp};
use crate::arith::flags::{DF, TF, ZF};
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

/// Which string instruction a REP loop runs (see [`bulk`]): a constant parameter, so that
/// each instruction gets its own bulk step.
type Str = u8;
const MOVS: Str = 0;
const STOS: Str = 1;
const LODS: Str = 2;
const CMPS: Str = 3;
const SCAS: Str = 4;

/// Run `body` once, or under REP until RCX reaches 0 (or, for CMPS and SCAS, until
/// `body` says the condition ended it), in chunks of [`CHUNK`] elements. Under REP, the
/// elements of one page (on each side) go to host memory at once through [`bulk`] when
/// the TLB holds the pages for fast access; what it cannot do (the first element on a
/// page the TLB does not hold, MMIO, pages with code, an element that straddles two
/// pages or meets a segment limit, alignment checking) goes through `body` one element
/// at a time, which faults where the processor does, with RCX, RSI and RDI counting
/// the elements done.
#[inline(always)]
fn repeat<const K: Str>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
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
    let cond_rep = K == CMPS || K == SCAS;
    // Single-stepping, and data breakpoints, see each iteration as an instruction: the
    // trap comes after the iteration, with RIP at the instruction while it repeats
    // (SDM 3B 18.3.1.4 and 18.2.5).
    let chunk = if c.rf & TF != 0 || c.dbg_data {
        1
    } else {
        CHUNK
    };
    let mut n = 0;
    while c.gpr[1] & m != 0 {
        let max = (chunk - n).min(c.gpr[1] & m);
        let (done, go_on) = match bulk::<K>(c, op, size, max) {
            Some(r) => r,
            None => (1, body(c, mem, d, size)?),
        };
        let cx = c.gpr[1].wrapping_sub(done) & m;
        c.gpr[1] = addr_reg_write(c.gpr[1], cx, m);
        if cond_rep && !go_on {
            return Ok(());
        }
        n += done;
        // An element that reached MMIO (a store waiting to be reported, a replayed read)
        // or code ends the chunk, so each such element gets its own exit (one element per
        // exit, as VMX reports REP string accesses to MMIO) and each read its own replay.
        // Only the element path sets `brk`: a bulk step touches RAM without code.
        if (n >= chunk || c.brk) && cx != 0 {
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
    // Elements on this page, and before the offset wraps (the size is a power of two).
    let sh = size.trailing_zeros();
    // The counts before the wrap saturate: with a 64-bit mask, 2^64 elements fit from
    // address 0 forward (or from the top down), which only the other bounds can limit.
    let (in_page, in_addr) = if back {
        ((off >> sh) + 1, (ea >> sh).saturating_add(1))
    } else {
        let room = m - ea;
        let in_addr = if room < size - 1 {
            0
        } else {
            ((room - (size - 1)) >> sh).saturating_add(1)
        };
        ((4096 - off) >> sh, in_addr)
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
    let (e, tag) = c.tlb.probe(c.tlb.sel, la, la.wrapping_add(size - 1));
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
fn bulk<const K: Str>(c: &mut Cpu, op: &Op, size: u32, max: u64) -> Option<(u64, bool)> {
    let z = u64::from(size);
    let back = c.rf & DF != 0;
    let m = op.amask;
    if (K == MOVS || K == STOS) && !back {
        if let Some(done) = short_forward::<K>(c, op, z, max) {
            return Some((done, true));
        }
    }
    let reads_src = K == MOVS || K == CMPS || K == LODS;
    let uses_dst = K != LODS;
    let writes_dst = K == MOVS || K == STOS;
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
    let done = match K {
        MOVS => {
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
        STOS => {
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
        LODS => {
            // Only the last element stays in the accumulator; reading RAM has no effect.
            // SAFETY: see above.
            let v = unsafe { load(at(s, n - 1, z, back), z) };
            c.set(0, size, v);
            n
        }
        _ => {
            let repne = op.i.has_repne_prefix();
            let acc = c.gpr[0] & crate::arith::flags::mask(size);
            let mut k = 0;
            let (a, b) = loop {
                // SAFETY: see above.
                let b = unsafe { load(at(d, k, z, back), z) };
                let a = if K == CMPS {
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

/// The short forward MOVS or STOS in 64-bit code with a 64-bit address size (a kernel's
/// small `memcpy` and `memset`): all `max` elements at once when each side's run lies in
/// one page the TLB holds for fast access (one probe per side, against the run's last
/// byte), with no alignment check to make. Returns the elements done, or `None` to take
/// the general bulk step.
#[inline(always)]
fn short_forward<const K: Str>(c: &mut Cpu, op: &Op, z: u64, max: u64) -> Option<u64> {
    if c.bits != 64 || op.amask != u64::MAX || c.cpl == 3 {
        return None;
    }
    let len = max * z;
    if len > 4096 {
        return None;
    }
    let dst = c.gpr[7];
    let d = host(c, dst, len, true)?;
    if K == MOVS {
        let src = if op.seg >= sr::FS {
            c.gpr[6].wrapping_add(c.seg[usize::from(op.seg & 7)].base)
        } else {
            c.gpr[6]
        };
        let s = host(c, src, len, false)?;
        let n = len as usize;
        if d > s && d < s + n {
            // Overlapping upwards: the elements replicate a pattern; the general step
            // does them one by one.
            return None;
        }
        // SAFETY: both runs lie in one RAM page each that the TLB holds for fast access
        // (the probes were against the runs' last bytes; the destination writable and
        // without code); `copy` allows overlap, and with the destination at or below the
        // source it gives what the elements do.
        unsafe { core::ptr::copy(s as *const u8, d as *mut u8, n) };
        c.gpr[6] = c.gpr[6].wrapping_add(len);
    } else if z == 1 {
        // SAFETY: the run lies in one writable RAM page without code (see above).
        unsafe { core::ptr::write_bytes(d as *mut u8, c.gpr[0] as u8, len as usize) };
    } else {
        let v = c.gpr[0];
        for k in 0..max {
            // SAFETY: as above.
            unsafe { store(at(d, k, z, false), z, v) };
        }
    }
    c.gpr[7] = dst.wrapping_add(len);
    Some(max)
}

/// MOVS.
pub fn movs(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let m = op.amask;
    let seg = op.seg;
    repeat::<MOVS>(c, mem, op, |c, mem, d, size| {
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
    repeat::<STOS>(c, mem, op, |c, mem, d, size| {
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
    repeat::<LODS>(c, mem, op, |c, mem, d, size| {
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
    repeat::<CMPS>(c, mem, op, |c, mem, d, size| {
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
    repeat::<SCAS>(c, mem, op, |c, mem, d, size| {
        let b = c.rd(mem, sr::ES, c.gpr[7] & m, size)?;
        let (_, f) = alu(AluOp::Sub, size, c.gpr[0], b, c.rflags());
        c.set_rflags(f);
        step(c, 7, d, m);
        Ok(rep_continue(op, f))
    })
}

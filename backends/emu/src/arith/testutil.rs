//! Test support: a deterministic input generator and harnesses that run real instructions on
//! the host CPU, to check the models in this module against silicon.

extern crate std;

use std::format;
use std::string::String;
use std::vec::Vec;

use super::flags::ARITH;

/// xorshift64: a tiny deterministic generator, good enough to spread test inputs.
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed, nonzero seed derived from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 pseudo-random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A random value biased towards interesting shapes: small, near a sign bit, all ones,
    /// or uniformly random bits.
    pub fn value(&mut self) -> u64 {
        let r = self.next();
        match r % 8 {
            0 => r >> 60,
            1 => EDGES[(r >> 8) as usize % EDGES.len()] ^ (r >> 61),
            2 => !(r >> 58),
            3 => EDGES[(r >> 8) as usize % EDGES.len()]
                .wrapping_add((r >> 40) & 3)
                .wrapping_sub(1),
            _ => self.next(),
        }
    }

    /// A random set of arithmetic flags (plus the always-one bit 1).
    pub fn flags(&mut self) -> u64 {
        (self.next() & ARITH) | 2
    }
}

/// Edge values for every operand size: zero, one, all-ones, signs and their neighbours.
pub const EDGES: [u64; 20] = [
    0,
    1,
    2,
    0xf,
    0x10,
    0x7f,
    0x80,
    0x81,
    0xff,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0x8000_0000_0000_0001,
    u64::MAX,
];

/// Shift and bit counts worth testing for every size.
pub const COUNTS: [u8; 20] = [
    0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 18, 31, 32, 33, 63, 64, 65, 127, 128, 255,
];

/// Input flag settings used with every case: none, all arithmetic flags, and each alone is
/// covered by the random ones.
pub const FLAG_INPUTS: [u64; 2] = [2, ARITH | 2];

/// Non-arithmetic RFLAGS bits passed to the models (never to the host) to check that the
/// models leave them alone.
pub const OTHER_FLAGS: u64 = (1 << 9) | (1 << 10) | (1 << 21) | (0xff << 40);

/// All pairs of edge values plus `n` random pairs, each with an input flag setting: the
/// two fixed settings for the edge pairs, random ones for the random pairs.
pub fn pairs(seed: u64, n: usize) -> Vec<(u64, u64, u64)> {
    let mut v = Vec::new();
    for &a in &EDGES {
        for &b in &EDGES {
            for &f in &FLAG_INPUTS {
                v.push((a, b, f));
            }
        }
    }
    let mut rng = Rng::new(seed);
    for i in 0..n {
        let f = if i % 3 == 2 {
            rng.flags()
        } else {
            FLAG_INPUTS[i % 2]
        };
        v.push((rng.value(), rng.value(), f));
    }
    v
}

/// Edge values plus `n` random ones, each with an input flag setting.
pub fn singles(seed: u64, n: usize) -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    for &a in &EDGES {
        for &f in &FLAG_INPUTS {
            v.push((a, f));
        }
    }
    let mut rng = Rng::new(seed);
    for i in 0..n {
        let f = if i % 3 == 2 {
            rng.flags()
        } else {
            FLAG_INPUTS[i % 2]
        };
        v.push((rng.value(), f));
    }
    v
}

/// Collects the disagreements between a model and the host over many cases, so that one run
/// shows every kind of mismatch (per flag), then fails if there was any.
pub struct Checker {
    name: &'static str,
    cases: usize,
    value_fails: usize,
    flag_fails: [usize; 12],
    examples: Vec<String>,
}

impl Checker {
    /// A checker for the instruction group `name`.
    pub fn new(name: &'static str) -> Self {
        Checker {
            name,
            cases: 0,
            value_fails: 0,
            flag_fails: [0; 12],
            examples: Vec::new(),
        }
    }

    /// Keeps a few examples of each kind of failure (keyed by the first three words of the
    /// description: instruction and size) for the failure message.
    fn example(&mut self, s: String) {
        let key: Vec<&str> = s.split_whitespace().take(3).collect();
        let key = key.join(" ");
        let same = self.examples.iter().filter(|e| e.starts_with(&key)).count();
        if same < 3 && self.examples.len() < 40 {
            self.examples.push(s);
        }
    }

    /// Counts one compared case.
    pub fn case(&mut self) {
        self.cases += 1;
    }

    /// Compares a result value.
    pub fn value(&mut self, what: impl FnOnce() -> String, model: u64, host: u64) {
        if model != host {
            self.value_fails += 1;
            let w = what();
            self.example(format!("{w}: value model {model:#x} host {host:#x}"));
        }
    }

    /// Compares the flags in `compare` of the model's and the host's RFLAGS, and checks that
    /// the model preserved the non-arithmetic bits it was given ([`OTHER_FLAGS`]).
    pub fn flags(&mut self, what: impl FnOnce() -> String, model: u64, host: u64, compare: u64) {
        let diff = (model ^ host) & compare;
        let clobbered = model & OTHER_FLAGS != OTHER_FLAGS;
        if diff != 0 || clobbered {
            for (i, n) in self.flag_fails.iter_mut().enumerate() {
                if diff & (1 << i) != 0 {
                    *n += 1;
                }
            }
            let w = what();
            self.example(format!(
                "{w}: flags model {:#05x} host {:#05x} diff {diff:#05x}{}",
                model & ARITH,
                host & ARITH,
                if clobbered {
                    " (other flags clobbered)"
                } else {
                    ""
                }
            ));
        }
    }

    /// Prints the case count and fails with a summary if anything disagreed.
    #[track_caller]
    pub fn finish(self) {
        std::eprintln!("{}: {} cases compared with the host", self.name, self.cases);
        let names = [
            "CF", "1", "PF", "3", "AF", "5", "ZF", "SF", "TF", "IF", "DF", "OF",
        ];
        let per_flag: Vec<String> = self
            .flag_fails
            .iter()
            .zip(names)
            .filter(|(n, _)| **n != 0)
            .map(|(n, f)| format!("{f}:{n}"))
            .collect();
        assert!(
            self.value_fails == 0 && per_flag.is_empty(),
            "{}: {} cases, {} value mismatches, flag mismatches {:?}\n{}",
            self.name,
            self.cases,
            self.value_fails,
            per_flag,
            self.examples.join("\n")
        );
        assert!(self.cases > 0, "{}: no cases ran", self.name);
    }
}

/// Runs `insn {a}, {b}` on the host with operands formatted with register modifier `m`
/// (`l`, `x`, `e`, `r`), RFLAGS set to `fl` before; returns (a after, RFLAGS after).
macro_rules! host_rr {
    ($insn:literal, $m:literal, $a:expr, $b:expr, $fl:expr) => {{
        let mut a: u64 = $a;
        let b: u64 = $b;
        let mut f: u64 = $fl;
        // SAFETY: the instruction only reads and writes the named registers and RFLAGS; the
        // pushed flags value only holds status flags and the reserved bit 1, so no trap or
        // mode change is enabled; the stack use is balanced.
        unsafe {
            core::arch::asm!(
                "push {f}", "popfq",
                concat!($insn, " {a:", $m, "}, {b:", $m, "}"),
                "pushfq", "pop {f}",
                a = inout(reg) a, b = in(reg) b, f = inout(reg) f,
            );
        }
        (a, f)
    }};
}
pub(crate) use host_rr;

/// Like [`host_rr`], dispatched on the operand size in bytes.
macro_rules! host_rr_sized {
    ($insn:literal, $size:expr, $a:expr, $b:expr, $fl:expr) => {
        match $size {
            1 => $crate::arith::testutil::host_rr!($insn, "l", $a, $b, $fl),
            2 => $crate::arith::testutil::host_rr!($insn, "x", $a, $b, $fl),
            4 => $crate::arith::testutil::host_rr!($insn, "e", $a, $b, $fl),
            _ => $crate::arith::testutil::host_rr!($insn, "r", $a, $b, $fl),
        }
    };
}
pub(crate) use host_rr_sized;

/// Like [`host_rr_sized`] for instructions without a byte form (sizes 2, 4, 8).
macro_rules! host_rr_wide {
    ($insn:literal, $size:expr, $a:expr, $b:expr, $fl:expr) => {
        match $size {
            2 => $crate::arith::testutil::host_rr!($insn, "x", $a, $b, $fl),
            4 => $crate::arith::testutil::host_rr!($insn, "e", $a, $b, $fl),
            _ => $crate::arith::testutil::host_rr!($insn, "r", $a, $b, $fl),
        }
    };
}
pub(crate) use host_rr_wide;

/// Runs the one-operand `insn {a}` on the host; returns (a after, RFLAGS after).
macro_rules! host_r {
    ($insn:literal, $m:literal, $a:expr, $fl:expr) => {{
        let mut a: u64 = $a;
        let mut f: u64 = $fl;
        // SAFETY: as for `host_rr`: registers and status flags only, balanced stack use.
        unsafe {
            core::arch::asm!(
                "push {f}", "popfq",
                concat!($insn, " {a:", $m, "}"),
                "pushfq", "pop {f}",
                a = inout(reg) a, f = inout(reg) f,
            );
        }
        (a, f)
    }};
}
pub(crate) use host_r;

/// Like [`host_r`], dispatched on the operand size in bytes.
macro_rules! host_r_sized {
    ($insn:literal, $size:expr, $a:expr, $fl:expr) => {
        match $size {
            1 => $crate::arith::testutil::host_r!($insn, "l", $a, $fl),
            2 => $crate::arith::testutil::host_r!($insn, "x", $a, $fl),
            4 => $crate::arith::testutil::host_r!($insn, "e", $a, $fl),
            _ => $crate::arith::testutil::host_r!($insn, "r", $a, $fl),
        }
    };
}
pub(crate) use host_r_sized;

/// Runs a three-operand `insn {d}, {a}, {b}` (VEX forms) on the host; `d` starts as `d0` so
/// instructions that keep the destination can be observed. Returns (d after, RFLAGS after).
macro_rules! host_rrr {
    ($insn:literal, $m:literal, $d0:expr, $a:expr, $b:expr, $fl:expr) => {{
        let mut d: u64 = $d0;
        let a: u64 = $a;
        let b: u64 = $b;
        let mut f: u64 = $fl;
        // SAFETY: as for `host_rr`: registers and status flags only, balanced stack use.
        unsafe {
            core::arch::asm!(
                "push {f}", "popfq",
                concat!($insn, " {d:", $m, "}, {a:", $m, "}, {b:", $m, "}"),
                "pushfq", "pop {f}",
                d = inout(reg) d, a = in(reg) a, b = in(reg) b, f = inout(reg) f,
            );
        }
        (d, f)
    }};
}
pub(crate) use host_rrr;

/// Runs a shift-like `insn {a}, cl` with `cl` = count on the host.
macro_rules! host_rcl {
    ($insn:literal, $m:literal, $a:expr, $count:expr, $fl:expr) => {{
        let mut a: u64 = $a;
        let c: u8 = $count;
        let mut f: u64 = $fl;
        // SAFETY: as for `host_rr`: registers and status flags only, balanced stack use.
        unsafe {
            core::arch::asm!(
                "push {f}", "popfq",
                concat!($insn, " {a:", $m, "}, cl"),
                "pushfq", "pop {f}",
                a = inout(reg) a, in("cl") c, f = inout(reg) f,
            );
        }
        (a, f)
    }};
}
pub(crate) use host_rcl;

/// Runs a double-shift `insn {a}, {b}, cl` on the host.
macro_rules! host_rrcl {
    ($insn:literal, $m:literal, $a:expr, $b:expr, $count:expr, $fl:expr) => {{
        let mut a: u64 = $a;
        let b: u64 = $b;
        let c: u8 = $count;
        let mut f: u64 = $fl;
        // SAFETY: as for `host_rr`: registers and status flags only, balanced stack use.
        unsafe {
            core::arch::asm!(
                "push {f}", "popfq",
                concat!($insn, " {a:", $m, "}, {b:", $m, "}, cl"),
                "pushfq", "pop {f}",
                a = inout(reg) a, b = in(reg) b, in("cl") c, f = inout(reg) f,
            );
        }
        (a, f)
    }};
}
pub(crate) use host_rrcl;

/// Runs a few bytes of 32-bit code in compatibility mode, for the instructions that do not
/// exist in 64-bit mode (DAA, DAS, AAA, AAS, AAM, AAD).
///
/// The code runs with EAX = `eax` and EFLAGS = `eflags`; it returns EAX and EFLAGS after. A
/// page below 4 GiB holds a 64-bit trampoline that switches to a private stack in that page,
/// far-jumps to the 32-bit user code segment (selector 0x23 on Linux), runs the instruction,
/// and far-jumps back to the 64-bit segment (0x33).
pub struct Compat32 {
    page: *mut u8,
}

const PAGE: usize = 4096;
const SAVE_RSP: u32 = 0xf00;
const FAR_PTR: u32 = 0xf10;
const STACK_TOP: u32 = 0xff0;

impl Compat32 {
    /// True when this process can enter 32-bit compatibility mode through selector 0x23,
    /// i.e. when the kernel provides a present, user-accessible 32-bit code segment there
    /// (a kernel booted without IA-32 emulation does not). Checked with LAR, which faults on
    /// nothing: it only sets ZF when the selector is usable.
    pub fn available() -> bool {
        let rights: u32;
        let ok: u8;
        // SAFETY: LAR only reads the descriptor table entry's access rights into a register
        // and sets ZF; an invalid selector clears ZF instead of faulting.
        unsafe {
            core::arch::asm!(
                "lar {r:e}, {s:e}",
                "setz {ok}",
                s = in(reg) 0x23u32, r = out(reg) rights, ok = out(reg_byte) ok,
            );
        }
        // Present, DPL 3, code segment, default size 32 bits, not a 64-bit (L) segment.
        let present = rights & (1 << 15) != 0;
        let dpl3 = (rights >> 13) & 3 == 3;
        let code = (rights >> 8) & 0x18 == 0x18;
        let db = rights & (1 << 22) != 0;
        let long = rights & (1 << 21) != 0;
        ok != 0 && present && dpl3 && code && db && !long
    }

    /// Maps the trampoline page with `insn` (the bytes of one 32-bit instruction) in it.
    pub fn new(insn: &[u8]) -> Self {
        let ret: isize;
        // SAFETY: a raw mmap system call for a fresh anonymous private RWX page below 4 GiB
        // (MAP_32BIT); it does not touch existing memory. rcx/r11 are clobbered by `syscall`.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") 9isize => ret,
                in("rdi") 0usize,
                in("rsi") PAGE,
                in("rdx") 7usize,            // PROT_READ | PROT_WRITE | PROT_EXEC
                in("r10") 0x22usize | 0x40,  // MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT
                in("r8") -1isize,
                in("r9") 0usize,
                lateout("rcx") _, lateout("r11") _,
            );
        }
        assert!(
            ret > 0 && (ret as u64) < (1 << 32) - PAGE as u64,
            "mmap failed: {ret}"
        );
        let page = ret as *mut u8;
        let base = ret as u32;
        let mut c: Vec<u8> = Vec::new();
        // 64-bit entry. mov [abs32], rsp ; mov esp, STACK_TOP ; jmp far [abs32] (m16:32)
        c.extend([0x48, 0x89, 0x24, 0x25]);
        c.extend((base + SAVE_RSP).to_le_bytes());
        c.push(0xbc);
        c.extend((base + STACK_TOP).to_le_bytes());
        c.extend([0xff, 0x2c, 0x25]);
        c.extend((base + FAR_PTR).to_le_bytes());
        let code32 = c.len() as u32;
        // 32-bit: push edx ; popfd ; <insn> ; pushfd ; pop edx ; jmp far 0x33:back
        c.extend([0x52, 0x9d]);
        c.extend(insn);
        c.extend([0x9c, 0x5a, 0xea]);
        let back_fix = c.len();
        c.extend([0, 0, 0, 0, 0x33, 0x00]);
        let back = c.len() as u32;
        c[back_fix..back_fix + 4].copy_from_slice(&(base + back).to_le_bytes());
        // 64-bit again: mov rsp, [abs32] ; ret
        c.extend([0x48, 0x8b, 0x24, 0x25]);
        c.extend((base + SAVE_RSP).to_le_bytes());
        c.push(0xc3);
        assert!(c.len() < SAVE_RSP as usize);
        let mut far = [0u8; 6];
        far[..4].copy_from_slice(&(base + code32).to_le_bytes());
        far[4] = 0x23;
        // SAFETY: `page` is a fresh writable mapping of PAGE bytes; both copies are in bounds
        // (code below SAVE_RSP, the far pointer at FAR_PTR..FAR_PTR+6) and do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(c.as_ptr(), page, c.len());
            core::ptr::copy_nonoverlapping(far.as_ptr(), page.add(FAR_PTR as usize), far.len());
        }
        Compat32 { page }
    }

    /// Runs the instruction with EAX = `eax`, EFLAGS = `eflags` (status flags only).
    pub fn run(&self, eax: u32, eflags: u32) -> (u32, u32) {
        let mut a = eax;
        let mut f = eflags & (ARITH as u32) | 2;
        // SAFETY: calls the trampoline built in `new`; it only changes eax, edx, rsp (restored
        // before `ret`) and its own page; no Rust memory is touched. The page is used by one
        // call at a time because `run` takes the only handle, and `Compat32` is not `Sync`.
        unsafe {
            core::arch::asm!("call {p}", p = in(reg) self.page, inout("eax") a, inout("edx") f);
        }
        (a, f)
    }
}

impl Drop for Compat32 {
    fn drop(&mut self) {
        // SAFETY: unmaps the page mapped in `new`, which nothing references any more.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") 11usize => _,
                in("rdi") self.page,
                in("rsi") PAGE,
                lateout("rcx") _, lateout("r11") _,
            );
        }
    }
}

//! The peer benchmark's guest (`cargo xtask bench-peers`): three workloads shaped like
//! real guests, and the CPUID round trip alone, each repeated a number of times given on
//! the command line, each ending with a checksum that every machine running it must
//! print alike.
//!
//! Command line: `bench=int|mem|exit|cpuid n=N` (anywhere among other words: QEMU and GRUB put
//! the kernel's file name first). Without `bench=`, every workload runs once and checks
//! its own results (the corpus run).
//!
//! - `int`: integer and branch code with memory operands: an xorshift fill of 16 KiB, a
//!   bytewise table-driven CRC-32 over it, and a sieve of Eratosthenes over 64 KiB (which
//!   must find the 6542 primes below 65536).
//! - `mem`: a working set of 10 MiB under paging: `rep stosq` of 1 MiB, `rep movsb` of
//!   1 MiB, a qword copy loop of 1 MiB, a strided checksum over 4 MiB mapped with 4 KiB
//!   pages (one page-crossing step per access), a 40,000-step pointer chase through a
//!   random cyclic permutation of 4 MiB and 40,000 random read-modify-write increments
//!   over 4 MiB, both through the boot map's 2 MiB pages.
//! - `exit`: 1000 rounds of CPUID, RDMSR (the TSC), an OUT to port 0x80 and a read of
//!   the local APIC's version register over MMIO: each an exit on a hardware backend.
//! - `cpuid`: 1000 CPUIDs of leaf 0, the exit round trip alone.
//!
//! The setup a workload needs (the permutation, the 4 KiB mappings, the CRC table) runs
//! once before the iterations; the benchmark cancels it with the boot by timing N and k·N
//! iterations.

#![no_std]
#![no_main]

use core::arch::asm;
use rt::cell::Racy;
use rt::{check, check_eq, println};

rt::entry!(main);

/// Physical (and identity-mapped virtual) base of the memory workload's arena: 16 MiB,
/// above the image and below the end of the smallest RAM the benchmark gives (256 MiB).
const ARENA: u64 = 16 << 20;
/// The pointer-chase permutation: 1 Mi u32 entries (4 MiB).
const PERM: u64 = ARENA;
const PERM_LEN: u64 = 1 << 20;
/// The 1 MiB fill and copy buffers.
const BUF_A: u64 = ARENA + (4 << 20);
const BUF_B: u64 = ARENA + (5 << 20);
const BUF_LEN: u64 = 1 << 20;
/// The 4 MiB region read through 4 KiB pages (physical) and its alias (virtual, at
/// 512 GiB, outside the boot map).
const STRIDED_PHYS: u64 = ARENA + (6 << 20);
const STRIDED_VIRT: u64 = 0x80_0000_0000;
const STRIDED_LEN: u64 = 4 << 20;
/// The arena's end: the RAM the memory workload needs.
const ARENA_END: u64 = STRIDED_PHYS + STRIDED_LEN;

/// Steps of the pointer chase and of the random increments per iteration.
const RANDOM_STEPS: u64 = 40_000;
/// Rounds of the four exits per iteration.
const EXIT_ROUNDS: u64 = 1000;

fn main(info: &'static rt::multiboot::Info) {
    let cmdline = info.cmdline().unwrap_or("");
    let mut workload = None;
    let mut n = 1u64;
    for word in cmdline.split_ascii_whitespace() {
        if let Some(w) = word.strip_prefix("bench=") {
            workload = Some(w);
        } else if let Some(v) = word.strip_prefix("n=") {
            match v.parse::<u64>() {
                Ok(v) if v > 0 => n = v,
                _ => {
                    println!("FAIL: n={} is not a positive number", v);
                    rt::exit(rt::EXIT_FAIL);
                }
            }
        }
    }
    match workload {
        Some("int") => report("int", n, int_workload(n, false)),
        Some("mem") => {
            mem_setup(info);
            report("mem", n, mem_workload(n, false));
        }
        Some("exit") => report("exit", n, exit_workload(n, false)),
        Some("cpuid") => report("cpuid", n, cpuid_workload(n, false)),
        Some(other) => {
            println!(
                "FAIL: bench={} is not a workload (int, mem, exit, cpuid)",
                other
            );
            rt::exit(rt::EXIT_FAIL);
        }
        None => {
            // The corpus run: each workload once, with its self-checks.
            report("int", 1, int_workload(1, true));
            mem_setup(info);
            report("mem", 1, mem_workload(1, true));
            report("exit", 1, exit_workload(1, true));
            report("cpuid", 1, cpuid_workload(1, true));
        }
    }
}

fn report(name: &str, n: u64, sum: u64) {
    println!("bench {} n={} checksum {:016x}", name, n, sum);
}

/// One xorshift64 step.
#[inline(always)]
fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

// ---- integer and branch code ----

const FILL_WORDS: usize = 2048;
const SIEVE_LEN: usize = 65536;
/// Primes below 65536.
const PRIMES_BELOW_64K: u64 = 6542;

static FILL: Racy<[u64; FILL_WORDS]> = Racy::new([0; FILL_WORDS]);
static CRC_TABLE: Racy<[u32; 256]> = Racy::new([0; 256]);
static SIEVE: Racy<[u8; SIEVE_LEN]> = Racy::new([0; SIEVE_LEN]);

/// `n` iterations; `check` verifies the last one's results another way (outside the
/// benchmark's timed runs, which must do the same work per iteration).
fn int_workload(n: u64, check: bool) -> u64 {
    // SAFETY: one CPU, and nothing else touches these tables while the workload runs.
    let (fill, table, sieve) =
        unsafe { (&mut *FILL.get(), &mut *CRC_TABLE.get(), &mut *SIEVE.get()) };
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut sum = 0u64;
    let mut last_crc = 0u32;
    for iter in 0..n {
        // xorshift fill.
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ iter.wrapping_mul(0x1000_0000_01B3);
        for w in fill.iter_mut() {
            x = xorshift(x);
            *w = x;
        }
        // Bytewise CRC-32 through the table.
        let mut crc = 0xFFFF_FFFFu32;
        for w in fill.iter() {
            for b in w.to_le_bytes() {
                crc = table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
            }
        }
        crc = !crc;
        // Sieve over 64 KiB.
        sieve.fill(1);
        sieve[0] = 0;
        sieve[1] = 0;
        let mut p = 2;
        while p * p < SIEVE_LEN {
            if sieve[p] != 0 {
                let mut m = p * p;
                while m < SIEVE_LEN {
                    sieve[m] = 0;
                    m += p;
                }
            }
            p += 1;
        }
        let primes = sieve.iter().map(|&s| u64::from(s)).sum::<u64>();
        if primes != PRIMES_BELOW_64K {
            println!(
                "FAIL: the sieve found {} primes below 65536, not 6542",
                primes
            );
            rt::exit(rt::EXIT_FAIL);
        }
        sum = sum.rotate_left(7) ^ u64::from(crc) ^ (primes << 32);
        last_crc = crc;
    }
    if check {
        // The CRC of the last iteration's bytes, by the bitwise definition.
        let mut crc = 0xFFFF_FFFFu32;
        for w in fill.iter() {
            for b in w.to_le_bytes() {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        0xEDB8_8320 ^ (crc >> 1)
                    } else {
                        crc >> 1
                    };
                }
            }
        }
        check_eq!(last_crc, !crc, "table CRC-32 equals the bitwise CRC-32");
    }
    sum
}

// ---- memory ----

/// Map the strided region with 4 KiB pages and fill the arena deterministically.
fn mem_setup(info: &rt::multiboot::Info) {
    let ram_end = (u64::from(info.mem_upper) << 10) + (1 << 20);
    if info.flags & rt::multiboot::FLAG_MEM == 0 || ram_end < ARENA_END {
        println!(
            "FAIL: the memory workload needs RAM up to {:#x}; the loader reports {:#x}",
            ARENA_END, ram_end
        );
        rt::exit(rt::EXIT_FAIL);
    }
    let mut page = 0;
    while page < STRIDED_LEN {
        rt::paging::map(STRIDED_VIRT + page, STRIDED_PHYS + page, rt::paging::RW);
        page += 4096;
    }
    // A random cyclic permutation (Sattolo's algorithm): the chase visits every entry.
    let perm = PERM as *mut u32;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    // SAFETY: the arena is RAM (checked above) that nothing else uses, identity-mapped.
    unsafe {
        for i in 0..PERM_LEN {
            *perm.add(i as usize) = i as u32;
        }
        let mut i = PERM_LEN - 1;
        while i > 0 {
            x = xorshift(x);
            let j = x % i;
            core::ptr::swap(perm.add(i as usize), perm.add(j as usize));
            i -= 1;
        }
        let q = STRIDED_PHYS as *mut u64;
        for k in 0..STRIDED_LEN / 8 {
            x = xorshift(x);
            *q.add(k as usize) = x;
        }
    }
}

/// `rep stosq`: `count` qwords of `value` at `dst`.
///
/// # Safety
/// `dst..dst + 8 * count` must be RAM nothing else uses.
unsafe fn rep_stosq(dst: u64, value: u64, count: u64) {
    // SAFETY: the caller's promise; DF is clear (the ABI keeps it so).
    unsafe {
        asm!("rep stosq", inout("rdi") dst => _, inout("rcx") count => _, in("rax") value,
             options(nostack))
    };
}

/// `rep movsb`: `count` bytes from `src` to `dst`.
///
/// # Safety
/// Both ranges must be RAM nothing else uses.
unsafe fn rep_movsb(dst: u64, src: u64, count: u64) {
    // SAFETY: the caller's promise; DF is clear.
    unsafe {
        asm!("rep movsb", inout("rdi") dst => _, inout("rsi") src => _,
             inout("rcx") count => _, options(nostack))
    };
}

/// A qword copy loop: load, store, advance, count down.
///
/// # Safety
/// As for [`rep_movsb`], `count` qwords.
unsafe fn qword_copy(dst: u64, src: u64, count: u64) {
    // SAFETY: the caller's promise.
    unsafe {
        asm!(
            "2:",
            "mov {t}, [{s}]",
            "mov [{d}], {t}",
            "add {s}, 8",
            "add {d}, 8",
            "dec {n}",
            "jnz 2b",
            s = inout(reg) src => _,
            d = inout(reg) dst => _,
            n = inout(reg) count => _,
            t = out(reg) _,
            options(nostack)
        )
    };
}

/// `n` iterations; `check` verifies the copies (see [`int_workload`]).
fn mem_workload(n: u64, check: bool) -> u64 {
    let mut sum = 0u64;
    let mut chase = 0u32;
    let mut x = 0x0123_4567_89AB_CDEFu64;
    for iter in 0..n {
        // SAFETY: the arena is RAM that only this workload uses (see mem_setup).
        unsafe {
            rep_stosq(
                BUF_A,
                iter.wrapping_mul(0x0101_0101_0101_0101) ^ sum,
                BUF_LEN / 8,
            );
            rep_movsb(BUF_B, BUF_A, BUF_LEN);
            // The copy loop writes back over A from B, a cache line in from the start.
            qword_copy(BUF_A + 64, BUF_B, BUF_LEN / 8 - 8);
            let (a, b) = (BUF_A as *const u64, BUF_B as *const u64);
            sum = sum.rotate_left(5)
                ^ a.add(8).read_volatile()
                ^ b.add(BUF_LEN as usize / 8 - 1).read_volatile();
            // Strided: every access on the next 4 KiB page, 64 bytes further in.
            let q = STRIDED_VIRT as *const u64;
            let mut off = (iter * 8) % STRIDED_LEN;
            let mut s = 0u64;
            for _ in 0..(STRIDED_LEN / 4096) * 16 {
                s = s.wrapping_add(q.add((off / 8) as usize).read_volatile());
                off = (off + 4096 + 64) % STRIDED_LEN;
            }
            sum ^= s;
            // Pointer chase through the permutation.
            let perm = PERM as *const u32;
            for _ in 0..RANDOM_STEPS {
                chase = perm.add(chase as usize).read_volatile();
            }
            sum = sum.wrapping_add(u64::from(chase));
            // Random read-modify-write increments over the strided region's identity map.
            let w = STRIDED_PHYS as *mut u64;
            for _ in 0..RANDOM_STEPS {
                x = xorshift(x);
                let p = w.add((x % (STRIDED_LEN / 8)) as usize);
                asm!("add qword ptr [{p}], {v}", p = in(reg) p, v = in(reg) x, options(nostack));
            }
        }
    }
    // SAFETY: as above.
    let probe = unsafe { (STRIDED_PHYS as *const u64).add(12345).read_volatile() };
    sum ^= probe;
    if check {
        // SAFETY: as above.
        let (a, b) = unsafe {
            (
                core::slice::from_raw_parts(BUF_A as *const u64, (BUF_LEN / 8) as usize),
                core::slice::from_raw_parts(BUF_B as *const u64, (BUF_LEN / 8) as usize),
            )
        };
        check!(
            b.iter().all(|&v| v == b[0]),
            "rep stosq filled 1 MiB and rep movsb copied it"
        );
        check!(a[8..] == b[..b.len() - 8], "the qword loop copied 1 MiB");
        check!(chase != 0, "the chase left the start of its cycle");
    }
    sum
}

// ---- exits ----

/// `n` iterations of [`EXIT_ROUNDS`] CPUIDs; `check` verifies the count (see
/// [`int_workload`]).
fn cpuid_workload(n: u64, check: bool) -> u64 {
    let mut rounds = 0u64;
    for _ in 0..n {
        for _ in 0..EXIT_ROUNDS {
            let _ = rt::cpu::cpuid(0, 0);
            rounds += 1;
        }
    }
    if check {
        check_eq!(rounds, n * EXIT_ROUNDS, "cpuid rounds");
    }
    // As for `exit_workload`: the values differ between machines, the count does not.
    rounds
}

/// The local APIC's version register (xAPIC MMIO).
const APIC_VERSION: u64 = 0xFEE0_0030;

/// `n` iterations; `check` verifies the round count (see [`int_workload`]).
fn exit_workload(n: u64, check: bool) -> u64 {
    let mut rounds = 0u64;
    for _ in 0..n {
        for _ in 0..EXIT_ROUNDS {
            let _ = rt::cpu::cpuid(0, 0);
            let _ = rt::cpu::rdmsr(0x10);
            rt::cpu::outb(0x80, 0);
            // SAFETY: the APIC page is identity-mapped by the boot map; reading the
            // version register has no side effect.
            let _ = unsafe { (APIC_VERSION as *const u32).read_volatile() };
            rounds += 1;
        }
    }
    if check {
        check_eq!(rounds, n * EXIT_ROUNDS, "exit rounds");
    }
    // The values the exits return differ between machines (vendor, TSC, APIC version):
    // the checksum is the work done.
    rounds
}

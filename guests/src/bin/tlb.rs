//! The TLB against page-table changes, as the SDM defines them (3A 4.10): after a page's
//! entry changes, the old translation may still be used until INVLPG of an address in
//! the page, a CR3 load (for non-global pages) or a change of CR4.PGE (for global ones);
//! after those, only the new one. Where both are allowed the guest prints which it saw.
//!
//! - a 4 KiB page remapped: INVLPG, then a CR3 reload;
//! - a global 4 KiB page (CR4.PGE): a CR3 reload may keep it, INVLPG and toggling PGE
//!   may not;
//! - a 2 MiB page retargeted: INVLPG of another 4 KiB part of it drops the whole page;
//! - REP MOVSB and REP STOSQ that run into a page that is not mapped fault at the first
//!   element on it, with RCX, RSI and RDI counting the elements done, and finish after
//!   the handler maps it.

#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use rt::cell::Racy;
use rt::cpu::{cr2, cr4, has_feature, invlpg, set_cr4};
use rt::paging::{self, Page, G, P, PS, RW};
use rt::{check, check_eq, println, Frame};
use x86_64::registers::control::Cr4Flags;

rt::entry!(main);

/// Test pages live at 256 GiB and up: nothing maps them until a test does.
const VA: u64 = 0x40_0000_0000;
/// CR4.PGE.
const PGE: u64 = Cr4Flags::PAGE_GLOBAL.bits();
/// A 2 MiB test page at 257 GiB.
const VA_LARGE: u64 = 0x40_4000_0000;
/// Two 2 MiB-aligned physical frames for it (below the corpus's 128 MiB of RAM).
const LARGE_A: u64 = 32 << 20;
const LARGE_B: u64 = 34 << 20;

static FRAMES: Racy<[Page; 6]> = Racy::new([const { Page([0; 4096]) }; 6]);

fn frame(i: usize) -> u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of!((*FRAMES.get())[i]) as u64 }
}

fn read(va: u64) -> u64 {
    // SAFETY: the callers map `va` first; the access may use a stale translation, which
    // points at one of this guest's frames.
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

fn write_phys(pa: u64, v: u64) {
    // SAFETY: `pa` is one of this guest's frames (or the large frames), identity-mapped.
    unsafe { core::ptr::write_volatile(pa as *mut u64, v) }
}

fn set_pte(va: u64, v: u64) {
    // SAFETY: paging::pte returns the live entry; no flush here, on purpose.
    unsafe { *paging::pte(va) = v };
}

fn reload_cr3() {
    // CR3 written with its own value: only the TLB is affected.
    x86_64::instructions::tlb::flush_all();
}

/// What a #PF should look like, and what the handler saw.
static EXPECT_CR2: AtomicU64 = AtomicU64::new(0);
static FIX_PTE: AtomicU64 = AtomicU64::new(0);
static SEEN: Racy<[u64; 4]> = Racy::new([0; 4]);
static FAULTS: AtomicU64 = AtomicU64::new(0);

fn on_page_fault(f: &mut Frame) {
    let addr = cr2();
    check_eq!(
        addr,
        EXPECT_CR2.load(Ordering::SeqCst),
        "#PF at the first element on the unmapped page"
    );
    // SAFETY: single CPU; the main code reads this after the instruction completes.
    unsafe { *SEEN.get() = [f.rcx, f.rsi, f.rdi, f.error_code] };
    set_pte(addr, FIX_PTE.load(Ordering::SeqCst));
    invlpg(addr);
    FAULTS.fetch_add(1, Ordering::SeqCst);
}

fn either(what: &str, got: u64, old: u64, new: u64) {
    check!(
        got == old || got == new,
        "{}: {:#x} is the old or the new value",
        what,
        got
    );
    println!(
        "  {}: the {} mapping",
        what,
        if got == old {
            "old (still cached)"
        } else {
            "new"
        }
    );
}

fn main(_: &'static rt::multiboot::Info) {
    rt::interrupts::set_handler(14, on_page_fault);
    let (a, b) = (frame(0), frame(1));
    write_phys(a, 0xAAAA);
    write_phys(b, 0xBBBB);

    // 1. A 4 KiB page remapped.
    paging::map(VA, a, RW);
    check_eq!(read(VA), 0xAAAAu64, "4 KiB page mapped to frame A");
    set_pte(VA, b | P | RW);
    either("remapped, before INVLPG", read(VA), 0xAAAA, 0xBBBB);
    invlpg(VA);
    check_eq!(read(VA), 0xBBBBu64, "after INVLPG: frame B");
    set_pte(VA, a | P | RW);
    either(
        "remapped back, before the CR3 reload",
        read(VA),
        0xBBBB,
        0xAAAA,
    );
    reload_cr3();
    check_eq!(read(VA), 0xAAAAu64, "after the CR3 reload: frame A");

    // 2. A global page.
    if has_feature(1, 0, 3, 13) {
        let saved = cr4();
        set_cr4(saved | PGE);
        set_pte(VA, a | P | RW | G);
        invlpg(VA);
        check_eq!(read(VA), 0xAAAAu64, "global page mapped to frame A");
        set_pte(VA, b | P | RW | G);
        reload_cr3();
        either("global page after the CR3 reload", read(VA), 0xAAAA, 0xBBBB);
        invlpg(VA);
        check_eq!(read(VA), 0xBBBBu64, "global page after INVLPG: frame B");
        set_pte(VA, a | P | RW | G);
        set_cr4(saved & !PGE);
        set_cr4(saved | PGE);
        check_eq!(
            read(VA),
            0xAAAAu64,
            "global page after CR4.PGE toggled: frame A"
        );
        set_cr4(saved);
    } else {
        println!("  no PGE: global pages not tested");
    }

    // 3. A 2 MiB page, retargeted; INVLPG of another 4 KiB part of it.
    write_phys(LARGE_A + 0x3_8000, 0x1111);
    write_phys(LARGE_B + 0x3_8000, 0x2222);
    let pde = paging::pde(VA_LARGE);
    // SAFETY: the live PDE for VA_LARGE.
    unsafe { *pde = LARGE_A | P | RW | PS };
    invlpg(VA_LARGE);
    check_eq!(
        read(VA_LARGE + 0x3_8000),
        0x1111u64,
        "2 MiB page on frame A"
    );
    // SAFETY: as above.
    unsafe { *pde = LARGE_B | P | RW | PS };
    invlpg(VA_LARGE + 0x10_5000);
    check_eq!(
        read(VA_LARGE + 0x3_8000),
        0x2222u64,
        "after INVLPG elsewhere in the 2 MiB page: the new target"
    );

    // 4. REP MOVSB reading into a page that is not mapped.
    let src = VA + 0x10_0000;
    let (s0, s1, dst) = (frame(2), frame(3), frame(4));
    for k in 0..512 {
        write_phys(s0 + 8 * k, 0x0101_0101_0101_0101 * (k & 0x7f));
        write_phys(s1 + 8 * k, 0x0202_0202_0202_0202 ^ k);
    }
    paging::map(src, s0, RW);
    paging::unmap(src + 0x1000);
    EXPECT_CR2.store(src + 0x1000, Ordering::SeqCst);
    FIX_PTE.store(s1 | P | RW, Ordering::SeqCst);
    let (mut rcx, mut rsi, mut rdi) = (0x300u64, src + 0xf00, dst + 0x100);
    // SAFETY: the source is mapped or faults and gets mapped; the destination is frame 4.
    unsafe {
        asm!("cld", "rep movsb", inout("rcx") rcx, inout("rsi") rsi, inout("rdi") rdi,
             options(nostack))
    };
    // SAFETY: written by the handler, which has returned.
    let seen = unsafe { *SEEN.get() };
    check_eq!(FAULTS.load(Ordering::SeqCst), 1u64, "one #PF in REP MOVSB");
    check_eq!(
        [seen[0], seen[1], seen[2], seen[3]],
        [0x200, src + 0x1000, dst + 0x200, 0],
        "at the fault RCX, RSI, RDI counted 0x100 bytes done; error code: read, not present"
    );
    check_eq!(
        [rcx, rsi, rdi],
        [0, src + 0x1200, dst + 0x400],
        "REP MOVSB finished"
    );
    let copied_ok = (0..0x300u64).all(|i| {
        let from = if i < 0x100 {
            s0 + 0xf00 + i
        } else {
            s1 + i - 0x100
        };
        // SAFETY: the frames are this guest's own memory.
        unsafe {
            core::ptr::read_volatile((dst + 0x100 + i) as *const u8)
                == core::ptr::read_volatile(from as *const u8)
        }
    });
    check!(copied_ok, "the 0x300 bytes arrived across the fault");

    // 5. REP STOSQ going down into a page that is not mapped.
    let to = VA + 0x20_0000;
    paging::map(to + 0x1000, frame(5), RW);
    paging::unmap(to);
    EXPECT_CR2.store(to + 0xff8, Ordering::SeqCst);
    FIX_PTE.store(s0 | P | RW, Ordering::SeqCst);
    let (mut rcx, mut rdi) = (40u64, to + 0x1080);
    // SAFETY: the destination is mapped or faults and gets mapped (to frame 2).
    unsafe {
        asm!("std", "rep stosq", "cld", inout("rcx") rcx, inout("rdi") rdi,
             in("rax") 0x5A5A_5A5A_5A5A_5A5Au64, options(nostack))
    };
    // SAFETY: as above.
    let seen = unsafe { *SEEN.get() };
    check_eq!(FAULTS.load(Ordering::SeqCst), 2u64, "one #PF in REP STOSQ");
    check_eq!(
        [seen[0], seen[2], seen[3]],
        [40 - 17, to + 0xff8, 2],
        "at the fault RCX and RDI counted 17 qwords done (0x1080 down to 0x1000); error \
         code: write, not present"
    );
    check_eq!([rcx, rdi], [0, to + 0x1080 - 40 * 8], "REP STOSQ finished");
    check_eq!(
        read(to + 0xfc8),
        0x5A5A_5A5A_5A5A_5A5Au64,
        "the last qword landed"
    );
    println!("all TLB checks done");
}

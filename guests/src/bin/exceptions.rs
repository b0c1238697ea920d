//! Exceptions through the IDT: #DE (DIV by zero, IDIV overflow), #UD (UD2, INTO in
//! 64-bit mode), #GP with a selector error code, #BP (INT3, a trap: RIP after it), #DB
//! from single-stepping (TF, DR6.BS) and a software `int n`. Faults report the faulting
//! instruction's RIP, traps the next one's.

#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use rt::cpu::Fault;
use rt::{check, check_eq, println, probe, Frame};

rt::entry!(main);

/// Run `$code` (whose faulting instruction is labelled `2:` and is `$len` bytes long)
/// under the probe, and return the fault it raised, if any.
static TRAP_RIP: AtomicU64 = AtomicU64::new(0);
static TRAP_COUNT: AtomicU64 = AtomicU64::new(0);
static DR6: AtomicU64 = AtomicU64::new(0);

fn on_bp(f: &mut Frame) {
    TRAP_RIP.store(f.rip, Ordering::SeqCst);
    TRAP_COUNT.fetch_add(1, Ordering::SeqCst);
}

fn on_db(f: &mut Frame) {
    let dr6: u64;
    // SAFETY: reading DR6 at CPL 0.
    unsafe { asm!("mov {}, dr6", out(reg) dr6, options(nomem, nostack)) };
    DR6.store(dr6, Ordering::SeqCst);
    TRAP_RIP.store(f.rip, Ordering::SeqCst);
    TRAP_COUNT.fetch_add(1, Ordering::SeqCst);
    f.rflags &= !0x100; // stop single-stepping
}

fn on_int50(f: &mut Frame) {
    check_eq!(f.error_code, 0u64, "int 0x50: no error code");
    TRAP_RIP.store(f.rip, Ordering::SeqCst);
    TRAP_COUNT.fetch_add(1, Ordering::SeqCst);
    f.rax = 0x50_50;
}

fn main(_: &'static rt::multiboot::Info) {
    let de = Some(Fault {
        vector: 0,
        error_code: 0,
    });
    let ud = Some(Fault {
        vector: 6,
        error_code: 0,
    });

    let r = probe!(2, ["xor edx, edx", "mov eax, 1", "xor ecx, ecx", "2:", "div ecx"], out("eax") _, out("ecx") _, out("edx") _);
    check_eq!(r, de, "DIV by zero: #DE at the DIV");
    let r = probe!(
        2,
        ["mov eax, 0x80000000", "cdq", "mov ecx, -1", "2:", "idiv ecx"],
        out("eax") _,
        out("ecx") _,
        out("edx") _
    );
    check_eq!(r, de, "IDIV INT_MIN / -1: #DE (quotient overflow)");
    let r = probe!(2, ["2:", "ud2"]);
    check_eq!(r, ud, "UD2: #UD");
    let r = probe!(1, ["2:", ".byte 0xce"]);
    check_eq!(r, ud, "INTO (0xCE) in 64-bit mode: #UD");
    let r = probe!(2, ["mov eax, 0xfff8", "2:", "mov ds, eax"], out("eax") _);
    check_eq!(
        r,
        Some(Fault {
            vector: 13,
            error_code: 0xFFF8
        }),
        "MOV DS, selector past the GDT limit: #GP(selector)"
    );
    let r = probe!(2, ["mov eax, 0x28", "2:", "mov ds, eax"], out("eax") _);
    check_eq!(
        r,
        Some(Fault {
            vector: 13,
            error_code: 0x28
        }),
        "MOV DS, the TSS (a system segment): #GP(selector)"
    );

    // #BP: a trap; RIP points after the INT3.
    rt::interrupts::set_handler(3, on_bp);
    let after: u64;
    // SAFETY: the handler returns; the label's address is taken.
    unsafe { asm!("int3", "3:", "lea {}, [rip + 3b]", out(reg) after) };
    check_eq!(TRAP_COUNT.load(Ordering::SeqCst), 1u64, "INT3 raised #BP");
    check_eq!(
        TRAP_RIP.load(Ordering::SeqCst),
        after,
        "#BP's RIP is the next instruction"
    );

    // #DB: POPF sets TF; the instruction after it completes, then the single-step trap.
    rt::interrupts::set_handler(1, on_db);
    let after: u64;
    // SAFETY: the handler clears TF; the stack is balanced.
    unsafe {
        asm!(
            "pushfq",
            "or qword ptr [rsp], 0x100",
            "popfq",
            "nop",
            "3:",
            "lea {}, [rip + 3b]",
            out(reg) after,
        )
    };
    check_eq!(TRAP_COUNT.load(Ordering::SeqCst), 2u64, "TF raised one #DB");
    check_eq!(
        TRAP_RIP.load(Ordering::SeqCst),
        after,
        "#DB's RIP is after the stepped instruction"
    );
    check!(
        DR6.load(Ordering::SeqCst) & (1 << 14) != 0,
        "DR6.BS set ({:#x})",
        DR6.load(Ordering::SeqCst)
    );
    check!(rt::cpu::rflags() & 0x100 == 0, "TF clear after the handler");

    // A software interrupt through an ordinary gate.
    rt::interrupts::set_handler(0x50, on_int50);
    let (after, rax): (u64, u64);
    // SAFETY: the handler returns, setting RAX.
    unsafe {
        asm!("xor eax, eax", "int 0x50", "3:", "lea {}, [rip + 3b]", out(reg) after, out("rax") rax)
    };
    check_eq!(
        TRAP_COUNT.load(Ordering::SeqCst),
        3u64,
        "int 0x50 delivered"
    );
    check_eq!(
        TRAP_RIP.load(Ordering::SeqCst),
        after,
        "int 0x50's RIP is the next instruction"
    );
    check_eq!(rax, 0x5050u64, "the handler's RAX came back through IRETQ");
    println!("all exceptions delivered as expected");
}

//! Ring 3: IRETQ down to user mode; SYSCALL/SYSRET (STAR, LSTAR, SFMASK); `int 0x80`
//! through a DPL-3 interrupt gate with the stack switch to TSS.RSP0 and IRETQ back;
//! #GP for privileged instructions (HLT, CLI with IOPL 0) and for `int` through a DPL-0
//! gate; finally a trap back to the kernel, which resumes where it entered user mode.

#![no_std]
#![no_main]

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use rt::boot::{KERNEL_CS, KERNEL_DS, USER_CS, USER_DS};
use rt::cell::Racy;
use rt::cpu::{cs, rdmsr, rflags, wrmsr};
use rt::{check, check_eq, println, Frame};

rt::entry!(main);

const EFER: u32 = 0xC000_0080;
const STAR: u32 = 0xC000_0081;
const LSTAR: u32 = 0xC000_0082;
const SFMASK: u32 = 0xC000_0084;
/// SYSCALL clears TF, IF, DF and AC.
const SFMASK_BITS: u64 = 0x4_0700;
/// The RFLAGS ring 3 starts with: IF set (SFMASK must clear it), IOPL 0.
const USER_RFLAGS: u64 = 0x202;

const NR_SYSCALL: u64 = 0x1111;
const NR_INT80: u64 = 0x3333;
const NR_DONE: u64 = 0x4444;
const SYSRET_VALUE: u64 = 0x5555;
const INT80_VALUE: u64 = 0x6666;

// The user program: it cannot print (no port access at IOPL 0), so it hands what it saw
// to the kernel in registers. Every instruction before the SYSCALL is a MOV, so RFLAGS
// there is exactly USER_RFLAGS.
global_asm!(
    r#"
    .text
    .global user_code
user_code:
    mov rax, 0x1111
    mov rdi, 0x2222
    syscall
    .global user_after_syscall
user_after_syscall:
    mov rdi, rax
    mov rsi, cs
    mov rdx, ss
    mov rax, 0x3333
    int 0x80
    mov r12, rax
    .global user_hlt
user_hlt:
    hlt
    .global user_cli
user_cli:
    cli
    .global user_int81
user_int81:
    int 0x81
    mov rax, 0x4444
    mov rdi, r12
    int 0x80
    ud2

    .global syscall_entry
syscall_entry:
    mov [rip + syscall_user_rsp], rsp
    lea rsp, [rip + syscall_stack_top]
    push qword ptr [rip + syscall_user_rsp]
    push rcx
    push r11
    push rdx
    push rsi
    push rdi
    push rax
    push 0
    mov rdi, rsp
    call syscall_rust
    add rsp, 8
    pop rax
    pop rdi
    pop rsi
    pop rdx
    pop r11
    pop rcx
    pop rsp
    sysretq

    .data
    .balign 8
syscall_user_rsp:
    .quad 0
    .section .bss, "aw", @nobits
    .balign 16
syscall_stack:
    .skip 16384
syscall_stack_top:
    .text
"#
);

extern "C" {
    static user_code: u8;
    static user_after_syscall: u8;
    static user_hlt: u8;
    static user_cli: u8;
    static user_int81: u8;
    static syscall_entry: u8;
    fn enter_user(rip: u64, rsp: u64, rflags: u64);
    fn leave_user() -> !;
}

fn addr(p: *const u8) -> u64 {
    p as u64
}

#[repr(C)]
struct SyscallFrame {
    _pad: u64,
    rax: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    r11: u64,
    rcx: u64,
    user_rsp: u64,
}

#[repr(C, align(16))]
struct UserStack([u8; 16384]);
static USER_STACK: Racy<UserStack> = Racy::new(UserStack([0; 16384]));

static SYSCALLS: AtomicU64 = AtomicU64::new(0);
static INT80S: AtomicU64 = AtomicU64::new(0);
static GPS: AtomicU64 = AtomicU64::new(0);

fn user_stack_range() -> (u64, u64) {
    let s = USER_STACK.get() as u64;
    (s, s + 16384)
}

#[no_mangle]
extern "C" fn syscall_rust(f: &mut SyscallFrame) {
    println!(
        "in SYSCALL handler: rax {:#x} rcx {:#x} r11 {:#x}",
        f.rax, f.rcx, f.r11
    );
    check_eq!(
        cs(),
        KERNEL_CS,
        "SYSCALL loaded CS from STAR[47:32] (CPL 0)"
    );
    check_eq!(f.rax, NR_SYSCALL, "RAX carried into the kernel");
    check_eq!(f.rdi, 0x2222u64, "RDI carried into the kernel");
    check_eq!(
        f.rcx,
        addr(core::ptr::addr_of!(user_after_syscall)),
        "RCX = the user RIP after SYSCALL"
    );
    check_eq!(f.r11, USER_RFLAGS, "R11 = the user RFLAGS");
    check_eq!(
        rflags() & SFMASK_BITS,
        0u64,
        "SFMASK cleared IF/TF/DF/AC in the kernel"
    );
    let (lo, hi) = user_stack_range();
    check!(
        f.user_rsp > lo && f.user_rsp <= hi,
        "RSP was left as the user stack ({:#x})",
        f.user_rsp
    );
    SYSCALLS.fetch_add(1, Ordering::SeqCst);
    f.rax = SYSRET_VALUE;
}

fn on_int80(f: &mut Frame) {
    println!(
        "in int 0x80 handler: rax {:#x} cs {:#x} ss {:#x} rsp {:#x}",
        f.rax, f.cs, f.ss, f.rsp
    );
    check_eq!(f.cs, u64::from(USER_CS), "trap came from ring 3 (saved CS)");
    check_eq!(
        f.ss,
        u64::from(USER_DS),
        "saved SS is the user data selector"
    );
    let (lo, hi) = user_stack_range();
    check!(f.rsp > lo && f.rsp <= hi, "saved RSP is on the user stack");
    let here = f as *const Frame as u64;
    let (k0, k1) = rt::gdt::rsp0_range();
    check!(
        here >= k0 && here < k1,
        "the handler runs on the TSS.RSP0 stack ({:#x})",
        here
    );
    check_eq!(cs(), KERNEL_CS, "handler at CPL 0");
    match f.rax {
        NR_INT80 => {
            check_eq!(f.rdi, SYSRET_VALUE, "SYSRET returned the kernel's RAX");
            check_eq!(
                f.rsi,
                u64::from(USER_CS),
                "CS after SYSRET = STAR[63:48] + 16, RPL 3"
            );
            check_eq!(
                f.rdx,
                u64::from(USER_DS),
                "SS after SYSRET = STAR[63:48] + 8, RPL 3"
            );
            INT80S.fetch_add(1, Ordering::SeqCst);
            f.rax = INT80_VALUE;
        }
        NR_DONE => {
            check_eq!(
                f.rdi,
                INT80_VALUE,
                "int 0x80 returned the kernel's RAX through IRETQ"
            );
            INT80S.fetch_add(1, Ordering::SeqCst);
            // SAFETY: main is inside enter_user; this abandons the trap frame and
            // returns from it.
            unsafe { leave_user() }
        }
        other => {
            println!("FAIL: unknown user request {:#x}", other);
            rt::exit(rt::EXIT_FAIL);
        }
    }
}

fn on_gp(f: &mut Frame) {
    let (hlt, cli, int81) = (
        addr(core::ptr::addr_of!(user_hlt)),
        addr(core::ptr::addr_of!(user_cli)),
        addr(core::ptr::addr_of!(user_int81)),
    );
    println!(
        "#GP error {:#x} at rip {:#x} cs {:#x}",
        f.error_code, f.rip, f.cs
    );
    check_eq!(f.cs, u64::from(USER_CS), "#GP raised in ring 3");
    if f.rip == hlt {
        check_eq!(f.error_code, 0u64, "HLT in ring 3: #GP(0) at the HLT");
        f.rip += 1;
    } else if f.rip == cli {
        check_eq!(
            f.error_code,
            0u64,
            "CLI in ring 3 with IOPL 0: #GP(0) at the CLI"
        );
        f.rip += 1;
    } else if f.rip == int81 {
        // Error code: the gate's IDT index in bits 15:3, plus the IDT bit (1): silicon
        // gives 0x81 << 3 | 2. QEMU 7.2 TCG scales the index by the 16-byte gate size in
        // long mode (0x81 << 4 | 2), tolerated only under TCG.
        let silicon = (0x81u64 << 3) | 2;
        let qemu = (0x81u64 << 4) | 2;
        check!(
            f.error_code == silicon || f.error_code == qemu,
            "#GP error code names IDT gate 0x81 ({:#x})",
            f.error_code
        );
        rt::check_or_tcg!(
            f.error_code == silicon,
            "IDT index scaled by 16",
            "int 0x81 through a DPL-0 gate: #GP(0x81 << 3 | 2)"
        );
        f.rip += 2;
    } else {
        println!("FAIL: #GP at an unexpected place");
        rt::exit(rt::EXIT_FAIL);
    }
    GPS.fetch_add(1, Ordering::SeqCst);
}

fn main(_: &'static rt::multiboot::Info) {
    wrmsr(EFER, rdmsr(EFER) | 1);
    wrmsr(
        STAR,
        (u64::from(KERNEL_DS) << 48) | (u64::from(KERNEL_CS) << 32),
    );
    wrmsr(LSTAR, addr(core::ptr::addr_of!(syscall_entry)));
    wrmsr(SFMASK, SFMASK_BITS);
    check!(rdmsr(EFER) & 1 != 0, "EFER.SCE set");
    rt::interrupts::set_dpl(0x80, 3);
    rt::interrupts::set_handler(0x80, on_int80);
    rt::interrupts::set_handler(13, on_gp);

    let (_, top) = user_stack_range();
    println!("entering ring 3");
    // SAFETY: user_code is a complete user program that ends in the NR_DONE trap, whose
    // handler returns here through leave_user. Its pages are user-accessible.
    unsafe { enter_user(addr(core::ptr::addr_of!(user_code)), top, USER_RFLAGS) };
    println!("back in the kernel");
    check_eq!(cs(), KERNEL_CS, "kernel resumed at CPL 0");
    check_eq!(SYSCALLS.load(Ordering::SeqCst), 1u64, "one SYSCALL handled");
    check_eq!(
        INT80S.load(Ordering::SeqCst),
        2u64,
        "two int 0x80 traps handled"
    );
    check_eq!(
        GPS.load(Ordering::SeqCst),
        3u64,
        "three #GP from ring 3 (HLT, CLI, int 0x81)"
    );
}

//! Running a snippet on the host CPU, in this process, with a signal handler catching its
//! exceptions.
//!
//! # Layout
//!
//! The code page ([`CODE_BASE`]) and the scratch area ([`SCRATCH_BASE`]) are mapped once
//! per process at fixed addresses with `MAP_FIXED_NOREPLACE` (so they never replace
//! anything), each surrounded by `PROT_NONE` reservations of [`GUARD_SIZE`] that nothing
//! else can be mapped into: an access that runs off the scratch area always faults.
//! The snippet is copied to the code page followed by an exit stub (`jmp [rip+0]` to
//! the exit trampoline); the code page is made read+execute while the snippet runs.
//!
//! # One run
//!
//! The entry trampoline (assembly below) saves the callee-saved registers, the host
//! stack pointer and the host FXSAVE state in a [`Ctx`], loads the snippet's FXSAVE image,
//! RFLAGS (`POPFQ`) and all sixteen general registers, and jumps to the code page. The
//! snippet either reaches the exit stub, and the exit trampoline stores every register
//! into the context, or it raises an exception, and the kernel sends a signal
//! (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP). The handler copies the registers out of
//! the signal frame, records the hardware vector and error code (Linux fills
//! `REG_TRAPNO`/`REG_ERR` from the exception) and the fault address, and rewrites the
//! frame's RIP to the recovery trampoline, which restores the host stack, FPU state
//! and callee-saved registers and returns from the entry call as if the snippet had
//! completed.
//!
//! # Why a faulting snippet cannot take the runner down
//!
//! - Every fault a snippet can raise in user mode arrives as one of the five synchronous
//!   signals above, on this thread, with the faulting RIP inside the code page. The
//!   handler runs on an alternate signal stack (`SA_ONSTACK`; each thread that runs
//!   snippets gets a 64 KiB one), so the snippet's stack pointer, which may be anything,
//!   is never used by the kernel or the handler.
//! - A signal whose RIP is not in the code page, or that arrives while no snippet runs,
//!   is not ours: the handler passes it to the previous disposition (Rust's stack
//!   overflow handler, or the default action), so real bugs still crash loudly.
//! - Asynchronous signals are blocked while the snippet runs, so no other handler can
//!   run on the snippet's stack or observe its register state.
//! - The snippet cannot escape: [`crate::check_snippet`] rejects system calls, control
//!   transfers (so execution either faults or reaches the exit stub), segment and
//!   FS/GS-base writes, PKRU writes and privileged instructions.
//! - Runs are serialised by a mutex (the trampolines use one static context slot).
//! - What the oracle cannot prevent: a memory operand whose address happens to point
//!   into the host's own memory. Memory operands built by [`crate::gen`] always address
//!   the scratch area (or the guard space next to it); a random 64-bit register value
//!   used as an address is non-canonical or unmapped with overwhelming probability. Tests
//!   that form addresses from arbitrary registers accept that small risk.

use crate::{
    has_error_code, End, Exception, OracleError, Outcome, State, AC, CODE_BASE, CODE_SIZE, DF,
    GUARD_SIZE, IF, RFLAGS_USER, SCRATCH_BASE, SCRATCH_SIZE, TF,
};
use core::ffi::{c_int, c_void};
use core::mem::offset_of;
use core::ptr;
use core::sync::atomic::{compiler_fence, AtomicPtr, Ordering};
use std::sync::{Mutex, OnceLock};

/// What the trampolines and the signal handler exchange with the Rust side.
#[repr(C, align(64))]
struct Ctx {
    /// The snippet's FXSAVE image, loaded at entry.
    fx_in: [u8; 512],
    /// The FXSAVE image at the end.
    fx_out: [u8; 512],
    /// The host's FXSAVE image, restored on the way out.
    host_fx: [u8; 512],
    /// General registers loaded at entry.
    gpr_in: [u64; 16],
    /// RFLAGS loaded at entry.
    rflags_in: u64,
    /// General registers at the end.
    gpr_out: [u64; 16],
    /// RFLAGS at the end.
    rflags_out: u64,
    /// The host stack pointer inside the entry trampoline.
    host_rsp: u64,
    /// Set by the signal handler.
    faulted: u64,
    /// RIP at the signal.
    fault_rip: u64,
    /// Signal number.
    signo: u64,
    /// `si_code`.
    si_code: u64,
    /// `si_addr`.
    si_addr: u64,
    /// `REG_TRAPNO`: the hardware vector.
    trapno: u64,
    /// `REG_ERR`: the hardware error code.
    err: u64,
    /// The far pointer (offset, then selector) the entry jumps through: the code page
    /// in the host's 64-bit code segment, or in its 32-bit one for compatibility mode.
    far_entry: u64,
    /// The host's data selector (SS), loaded into DS and ES, which compatibility mode
    /// uses (64-bit Linux runs with null DS/ES, which would fault there).
    data_sel: u64,
}

impl Ctx {
    fn new() -> Ctx {
        Ctx {
            fx_in: [0; 512],
            fx_out: [0; 512],
            host_fx: [0; 512],
            gpr_in: [0; 16],
            rflags_in: 0,
            gpr_out: [0; 16],
            rflags_out: 0,
            host_rsp: 0,
            faulted: 0,
            fault_rip: 0,
            signo: 0,
            si_code: 0,
            si_addr: 0,
            trapno: 0,
            err: 0,
            far_entry: 0,
            data_sel: 0,
        }
    }
}

// The trampolines. `opsvisor_oracle_ctx` holds the context of the run in progress (the
// exit and recovery paths have no register to spare to find it otherwise) and
// `opsvisor_oracle_spill` one register while the exit path saves the others.
core::arch::global_asm!(
    ".pushsection .data.opsvisor_oracle,\"aw\",@progbits",
    ".balign 8",
    "opsvisor_oracle_ctx: .quad 0",
    "opsvisor_oracle_spill: .quad 0",
    "opsvisor_oracle_far: .quad 0",
    ".popsection",
    ".pushsection .text.opsvisor_oracle,\"ax\",@progbits",
    // void opsvisor_oracle_enter(Ctx *ctx)
    ".balign 16",
    ".globl opsvisor_oracle_enter",
    ".hidden opsvisor_oracle_enter",
    ".type opsvisor_oracle_enter,@function",
    "opsvisor_oracle_enter:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rip + opsvisor_oracle_ctx], rdi",
    "mov [rdi + {host_rsp}], rsp",
    "fxsave64 [rdi + {host_fx}]",
    "fxrstor64 [rdi + {fx_in}]",
    "mov rax, [rdi + {far_entry}]",
    "mov [rip + opsvisor_oracle_far], rax",
    "mov rax, [rdi + {data_sel}]",
    "mov ds, eax",
    "mov es, eax",
    "push qword ptr [rdi + {rflags_in}]",
    "popfq",
    // From here on nothing may change the flags: MOV and JMP only.
    "mov rax, [rdi + {gpr_in} + 0]",
    "mov rcx, [rdi + {gpr_in} + 8]",
    "mov rdx, [rdi + {gpr_in} + 16]",
    "mov rbx, [rdi + {gpr_in} + 24]",
    "mov rsp, [rdi + {gpr_in} + 32]",
    "mov rbp, [rdi + {gpr_in} + 40]",
    "mov rsi, [rdi + {gpr_in} + 48]",
    "mov r8, [rdi + {gpr_in} + 64]",
    "mov r9, [rdi + {gpr_in} + 72]",
    "mov r10, [rdi + {gpr_in} + 80]",
    "mov r11, [rdi + {gpr_in} + 88]",
    "mov r12, [rdi + {gpr_in} + 96]",
    "mov r13, [rdi + {gpr_in} + 104]",
    "mov r14, [rdi + {gpr_in} + 112]",
    "mov r15, [rdi + {gpr_in} + 120]",
    "mov rdi, [rdi + {gpr_in} + 56]",
    // A far jump (m16:32): into the 64-bit or the 32-bit code segment.
    "jmp fword ptr [rip + opsvisor_oracle_far]",
    ".size opsvisor_oracle_enter, . - opsvisor_oracle_enter",
    // Reached from the exit stub after the snippet, with the snippet's registers.
    ".balign 16",
    ".globl opsvisor_oracle_exit",
    ".hidden opsvisor_oracle_exit",
    "opsvisor_oracle_exit:",
    "mov [rip + opsvisor_oracle_spill], rdi",
    "mov rdi, [rip + opsvisor_oracle_ctx]",
    "mov [rdi + {gpr_out} + 0], rax",
    "mov [rdi + {gpr_out} + 8], rcx",
    "mov [rdi + {gpr_out} + 16], rdx",
    "mov [rdi + {gpr_out} + 24], rbx",
    "mov [rdi + {gpr_out} + 32], rsp",
    "mov [rdi + {gpr_out} + 40], rbp",
    "mov [rdi + {gpr_out} + 48], rsi",
    "mov [rdi + {gpr_out} + 64], r8",
    "mov [rdi + {gpr_out} + 72], r9",
    "mov [rdi + {gpr_out} + 80], r10",
    "mov [rdi + {gpr_out} + 88], r11",
    "mov [rdi + {gpr_out} + 96], r12",
    "mov [rdi + {gpr_out} + 104], r13",
    "mov [rdi + {gpr_out} + 112], r14",
    "mov [rdi + {gpr_out} + 120], r15",
    "mov rax, [rip + opsvisor_oracle_spill]",
    "mov [rdi + {gpr_out} + 56], rax",
    "mov rsp, [rdi + {host_rsp}]",
    "pushfq",
    "pop qword ptr [rdi + {rflags_out}]",
    "fxsave64 [rdi + {fx_out}]",
    "jmp opsvisor_oracle_leave",
    // The signal handler sends the thread here after recording the snippet's state.
    ".balign 16",
    ".globl opsvisor_oracle_recover",
    ".hidden opsvisor_oracle_recover",
    "opsvisor_oracle_recover:",
    "mov rdi, [rip + opsvisor_oracle_ctx]",
    "mov rsp, [rdi + {host_rsp}]",
    "opsvisor_oracle_leave:",
    "fxrstor64 [rdi + {host_fx}]",
    // Clear DF, AC and TF for the Rust code we return to (IF is unaffected in user mode).
    "push 2",
    "popfq",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    ".popsection",
    far_entry = const offset_of!(Ctx, far_entry),
    data_sel = const offset_of!(Ctx, data_sel),
    host_rsp = const offset_of!(Ctx, host_rsp),
    host_fx = const offset_of!(Ctx, host_fx),
    fx_in = const offset_of!(Ctx, fx_in),
    fx_out = const offset_of!(Ctx, fx_out),
    rflags_in = const offset_of!(Ctx, rflags_in),
    rflags_out = const offset_of!(Ctx, rflags_out),
    gpr_in = const offset_of!(Ctx, gpr_in),
    gpr_out = const offset_of!(Ctx, gpr_out),
);

extern "C" {
    /// Runs the snippet on the code page from the state in `ctx` (see the module docs).
    fn opsvisor_oracle_enter(ctx: *mut Ctx);
    /// Not a function: the exit trampoline's address, for the exit stub.
    fn opsvisor_oracle_exit();
    /// Not a function: where the signal handler resumes the thread.
    fn opsvisor_oracle_recover();
}

/// The context of the run in progress, for the signal handler (null between runs).
static ACTIVE: AtomicPtr<Ctx> = AtomicPtr::new(ptr::null_mut());

/// The signals a user-mode exception turns into.
const SIGNALS: [c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
];

/// The dispositions our handler replaced, in [`SIGNALS`] order.
static PREVIOUS: OnceLock<[libc::sigaction; 5]> = OnceLock::new();

/// The process-wide oracle: created once, then every run takes the lock.
static ORACLE: OnceLock<Result<Mutex<Box<Ctx>>, String>> = OnceLock::new();

fn oracle() -> Result<&'static Mutex<Box<Ctx>>, OracleError> {
    ORACLE
        .get_or_init(|| init().map(|()| Mutex::new(Box::new(Ctx::new()))))
        .as_ref()
        .map_err(|e| OracleError::Unavailable(e.clone()))
}

/// Whether the mappings and the handlers are in place.
pub(crate) fn available() -> bool {
    oracle().is_ok()
}

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Reserve `len` bytes at `addr` with no access, refusing to replace anything there.
fn reserve(addr: u64, len: u64) -> Result<(), String> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so this cannot
    // affect memory the process uses; the result is checked below.
    let p = unsafe {
        libc::mmap(
            addr as *mut c_void,
            len as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(os_error(&format!("mapping {addr:#x}+{len:#x}")));
    }
    if p as u64 != addr {
        // A kernel older than 4.17 ignores MAP_FIXED_NOREPLACE and maps elsewhere.
        // SAFETY: `p` is the mapping just created, of `len` bytes, used by nothing.
        unsafe { libc::munmap(p, len as usize) };
        return Err(format!(
            "the kernel placed the mapping for {addr:#x} elsewhere"
        ));
    }
    Ok(())
}

fn protect(addr: u64, len: u64, prot: c_int) -> Result<(), String> {
    // SAFETY: only ever called on the oracle's own reservations, which no Rust object
    // refers to.
    if unsafe { libc::mprotect(addr as *mut c_void, len as usize, prot) } != 0 {
        return Err(os_error(&format!("mprotect {addr:#x}")));
    }
    Ok(())
}

fn init() -> Result<(), String> {
    reserve(CODE_BASE, CODE_SIZE + GUARD_SIZE)?;
    protect(CODE_BASE, CODE_SIZE, libc::PROT_READ | libc::PROT_EXEC)?;
    let scratch = SCRATCH_SIZE as u64;
    reserve(SCRATCH_BASE - GUARD_SIZE, GUARD_SIZE + scratch + GUARD_SIZE)?;
    protect(SCRATCH_BASE, scratch, libc::PROT_READ | libc::PROT_WRITE)?;
    install_handlers()
}

fn install_handlers() -> Result<(), String> {
    let mut previous = [empty_sigaction(); 5];
    for (sig, old) in SIGNALS.iter().zip(previous.iter_mut()) {
        // SAFETY: reading the current disposition into a local.
        if unsafe { libc::sigaction(*sig, ptr::null(), old) } != 0 {
            return Err(os_error("sigaction"));
        }
    }
    // Record them before any handler of ours can run and look them up.
    let _ = PREVIOUS.set(previous);
    let mut action = empty_sigaction();
    action.sa_sigaction = on_signal as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: an empty set is a valid argument.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    for sig in SIGNALS {
        // SAFETY: `on_signal` is async-signal-safe (it only copies memory and makes
        // async-signal-safe calls) and chains what is not ours to the previous handler.
        if unsafe { libc::sigaction(sig, &action, ptr::null_mut()) } != 0 {
            return Err(os_error("sigaction"));
        }
    }
    Ok(())
}

fn empty_sigaction() -> libc::sigaction {
    // SAFETY: `sigaction` is a plain C struct for which all-zero is a valid value
    // (SIG_DFL, no flags, empty mask).
    unsafe { core::mem::zeroed() }
}

/// The handler for the five fault signals.
extern "C" fn on_signal(sig: c_int, info: *mut libc::siginfo_t, uctx: *mut c_void) {
    // The kernel enters handlers with the interrupted code's AC flag: clear it before
    // anything (memcpy included) makes a misaligned access that would fault again.
    // SAFETY: only RFLAGS.AC changes, through the (alternate) stack, which has room.
    unsafe {
        core::arch::asm!(
            "pushfq",
            "and dword ptr [rsp], {mask}",
            "popfq",
            mask = const !(1u32 << 18),
        );
    }
    let ctx = ACTIVE.load(Ordering::SeqCst);
    // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext for this thread.
    let uc = unsafe { &mut *uctx.cast::<libc::ucontext_t>() };
    let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
    if ctx.is_null() || !(CODE_BASE..=CODE_BASE + CODE_SIZE).contains(&rip) {
        // SAFETY: the arguments are the ones the kernel gave us.
        unsafe { chain(sig, info, uctx) };
        return;
    }
    // SAFETY: ACTIVE points at the context of the run in progress on this thread (only
    // this thread executes the code page, and RIP is in it); the thread is stopped in
    // the snippet, so no other reference to the context is live.
    let c = unsafe { &mut *ctx };
    let g = &mut uc.uc_mcontext.gregs;
    let order = [
        libc::REG_RAX,
        libc::REG_RCX,
        libc::REG_RDX,
        libc::REG_RBX,
        libc::REG_RSP,
        libc::REG_RBP,
        libc::REG_RSI,
        libc::REG_RDI,
        libc::REG_R8,
        libc::REG_R9,
        libc::REG_R10,
        libc::REG_R11,
        libc::REG_R12,
        libc::REG_R13,
        libc::REG_R14,
        libc::REG_R15,
    ];
    for (out, reg) in c.gpr_out.iter_mut().zip(order) {
        *out = g[reg as usize] as u64;
    }
    c.rflags_out = g[libc::REG_EFL as usize] as u64;
    let fp = uc.uc_mcontext.fpregs;
    if !fp.is_null() {
        // SAFETY: `fpregs` points at the frame's FXSAVE-format area (512 bytes, the
        // first part of the XSAVE area the kernel saved).
        unsafe { ptr::copy_nonoverlapping(fp.cast::<u8>(), c.fx_out.as_mut_ptr(), 512) };
    }
    c.faulted = 1;
    c.fault_rip = rip;
    c.signo = sig as u64;
    // SAFETY: the kernel passes a valid siginfo; si_addr is meaningful for the fault
    // signals (and only used for #PF).
    unsafe {
        c.si_code = (*info).si_code as u64;
        c.si_addr = (*info).si_addr() as u64;
    }
    c.trapno = g[libc::REG_TRAPNO as usize] as u64;
    c.err = g[libc::REG_ERR as usize] as u64;
    g[libc::REG_RIP as usize] = opsvisor_oracle_recover as *const () as usize as i64;
    // A fault in compatibility mode: the recovery trampoline is 64-bit code. The CS
    // field is the low 16 bits of REG_CSGSFS.
    let csgsfs = &mut g[libc::REG_CSGSFS as usize];
    *csgsfs = (*csgsfs & !0xffff) | (host_selectors().0 as i64);
    g[libc::REG_EFL as usize] &= !((TF | DF | AC) as i64);
}

/// Hand a signal that is not a snippet's to the disposition we replaced.
///
/// # Safety
///
/// The arguments must be the ones the kernel passed to the handler.
unsafe fn chain(sig: c_int, info: *mut libc::siginfo_t, uctx: *mut c_void) {
    let old = PREVIOUS
        .get()
        .and_then(|p| SIGNALS.iter().position(|&s| s == sig).map(|i| p[i]));
    let Some(old) = old else {
        return;
    };
    if old.sa_sigaction == libc::SIG_DFL || old.sa_sigaction == libc::SIG_IGN {
        // Put the old disposition back: a fault re-executes and takes the default action;
        // a trap (which would not re-execute) is raised again.
        // SAFETY: sigaction and raise are async-signal-safe; `old` is a disposition the
        // kernel gave us.
        unsafe {
            libc::sigaction(sig, &old, ptr::null_mut());
            if sig == libc::SIGTRAP {
                libc::raise(sig);
            }
        }
    } else if old.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: a SA_SIGINFO handler has this signature; the arguments are the kernel's.
        unsafe {
            let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                core::mem::transmute(old.sa_sigaction);
            f(sig, info, uctx);
        }
    } else {
        // SAFETY: a plain handler takes the signal number.
        unsafe {
            let f: extern "C" fn(c_int) = core::mem::transmute(old.sa_sigaction);
            f(sig);
        }
    }
}

/// A thread's alternate signal stack, installed on the first run on that thread.
struct AltStack {
    mem: *mut c_void,
    previous: libc::stack_t,
}

const ALT_STACK_SIZE: usize = 64 * 1024;

impl AltStack {
    /// Install one unless the thread already has a big enough alternate stack
    /// (`Ok(None)`); `Err` if neither is possible (then snippets must not run here).
    fn install() -> Result<Option<AltStack>, String> {
        // SAFETY: querying the current alternate stack into a local.
        let mut previous: libc::stack_t = unsafe { core::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::sigaltstack(ptr::null(), &mut previous) } != 0 {
            return Err(os_error("sigaltstack"));
        }
        if previous.ss_flags & libc::SS_DISABLE == 0 && previous.ss_size >= ALT_STACK_SIZE {
            return Ok(None);
        }
        // SAFETY: a fresh anonymous mapping.
        let mem = unsafe {
            libc::mmap(
                ptr::null_mut(),
                ALT_STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(os_error("alternate signal stack"));
        }
        let stack = libc::stack_t {
            ss_sp: mem,
            ss_flags: 0,
            ss_size: ALT_STACK_SIZE,
        };
        // SAFETY: `mem` is ours and lives until Drop, which uninstalls it first.
        if unsafe { libc::sigaltstack(&stack, ptr::null_mut()) } != 0 {
            // SAFETY: the mapping made above, not installed.
            unsafe { libc::munmap(mem, ALT_STACK_SIZE) };
            return Err(os_error("sigaltstack"));
        }
        Ok(Some(AltStack { mem, previous }))
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        // SAFETY: querying into a local.
        let mut current: libc::stack_t = unsafe { core::mem::zeroed() };
        // SAFETY: as above.
        let ok = unsafe { libc::sigaltstack(ptr::null(), &mut current) } == 0;
        let enabled = current.ss_flags & (libc::SS_ONSTACK | libc::SS_DISABLE) == 0;
        if ok && current.ss_sp == self.mem && enabled {
            // Still ours and enabled: put the previous one back before unmapping. When
            // Rust's own thread-exit cleanup ran first it disabled the alternate stack
            // and freed the previous one: restoring that would leave a dangling stack for
            // the next signal (libFuzzer's timer, at exit), so nothing is restored then.
            // SAFETY: restoring the disposition the thread had.
            unsafe { libc::sigaltstack(&self.previous, ptr::null_mut()) };
        } else if ok && current.ss_sp == self.mem && current.ss_flags & libc::SS_ONSTACK != 0 {
            // Cannot happen (we are not in a handler), but never unmap a stack in use.
            return;
        }
        // SAFETY: our mapping, no longer installed.
        unsafe { libc::munmap(self.mem, ALT_STACK_SIZE) };
    }
}

thread_local! {
    static ALT_STACK: Result<Option<AltStack>, String> = AltStack::install();
}

/// The exit stub's target (the exit trampoline) and the host's 64-bit code selector:
/// what [`crate::code_page`] puts after the snippet.
pub(crate) fn exit_stub() -> (u64, u16) {
    (
        opsvisor_oracle_exit as *const () as usize as u64,
        host_selectors().0,
    )
}

/// The host's 64-bit code selector and its data selector (SS), read once.
fn host_selectors() -> (u16, u16) {
    static SELECTORS: OnceLock<(u16, u16)> = OnceLock::new();
    *SELECTORS.get_or_init(|| {
        let (cs, ss): (u16, u16);
        // SAFETY: reading segment registers has no side effects.
        unsafe {
            core::arch::asm!("mov {0:x}, cs", "mov {1:x}, ss", out(reg) cs, out(reg) ss,
                options(nomem, nostack, preserves_flags));
        }
        (cs, ss)
    })
}

/// Linux's 32-bit user code selector (`__USER32_CS`, GDT entry 4), the same on every
/// x86-64 kernel.
const USER32_CS: u16 = 0x23;

/// Copy the code page ([`crate::code_page`]: the snippet and the exit stub) in.
fn load_code(code: &[u8], bits: u32) -> Result<(), OracleError> {
    let page = crate::code_page(code, bits);
    let unavailable = OracleError::Unavailable;
    protect(CODE_BASE, CODE_SIZE, libc::PROT_READ | libc::PROT_WRITE).map_err(unavailable)?;
    // SAFETY: the code page is our mapping, writable now, and nothing runs on it.
    unsafe { ptr::copy_nonoverlapping(page.as_ptr(), CODE_BASE as *mut u8, page.len()) };
    protect(CODE_BASE, CODE_SIZE, libc::PROT_READ | libc::PROT_EXEC).map_err(unavailable)
}

/// Block every signal but the synchronous fault signals; returns the previous mask.
fn block_async_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on locals; pthread_sigmask on this thread only.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut set);
        for sig in SIGNALS {
            libc::sigdelset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, &mut old);
        old
    }
}

fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: restoring a mask pthread_sigmask returned.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, ptr::null_mut()) };
}

/// Run a checked snippet.
pub(crate) fn run(code: &[u8], state: &State) -> Result<Outcome, OracleError> {
    let lock = oracle()?;
    // A panic while holding the lock leaves nothing half-done that matters: every run
    // rewrites the code page, the scratch area and the context.
    let mut ctx = lock.lock().unwrap_or_else(|e| e.into_inner());
    // Without an alternate stack the kernel would write the signal frame on the
    // snippet's stack, which may be anything: refuse to run.
    ALT_STACK
        .with(|a| a.as_ref().map(|_| ()).map_err(|e| e.clone()))
        .map_err(OracleError::Unavailable)?;
    load_code(code, state.bits)?;
    // SAFETY: the scratch area is our mapping (read/write, SCRATCH_SIZE bytes) and only
    // the snippet, which is not running, touches it; check_state fixed the length.
    unsafe {
        ptr::copy_nonoverlapping(
            state.scratch.as_ptr(),
            SCRATCH_BASE as *mut u8,
            SCRATCH_SIZE,
        )
    };
    ctx.fx_in = state.to_fxsave();
    ctx.gpr_in = state.gpr;
    ctx.rflags_in = (state.rflags & RFLAGS_USER) | 0x2 | IF;
    ctx.faulted = 0;
    let (cs64, data) = host_selectors();
    let cs = if state.bits == 32 { USER32_CS } else { cs64 };
    ctx.far_entry = CODE_BASE | (u64::from(cs) << 32);
    ctx.data_sel = u64::from(data);
    let ctx_ptr: *mut Ctx = &mut **ctx;
    let mask = block_async_signals();
    ACTIVE.store(ctx_ptr, Ordering::SeqCst);
    compiler_fence(Ordering::SeqCst);
    // SAFETY: the context is valid and exclusively ours (the lock is held); the code
    // page holds a checked snippet followed by the exit stub; every way out of the
    // snippet (exit stub or signal) returns here through the exit or recovery
    // trampoline with the callee-saved registers, stack and FPU state restored.
    unsafe { opsvisor_oracle_enter(ctx_ptr) };
    compiler_fence(Ordering::SeqCst);
    ACTIVE.store(ptr::null_mut(), Ordering::SeqCst);
    restore_signals(&mask);

    let mut out = state.clone();
    // SAFETY: as for the copy in; the snippet has stopped.
    unsafe {
        ptr::copy_nonoverlapping(
            SCRATCH_BASE as *const u8,
            out.scratch.as_mut_ptr(),
            SCRATCH_SIZE,
        )
    };
    out.gpr = ctx.gpr_out;
    out.rflags = ctx.rflags_out;
    out.set_fxsave(&ctx.fx_out);
    if ctx.faulted == 0 {
        return Ok(Outcome {
            state: out,
            rip_offset: code.len() as u64,
            end: End::Completed,
        });
    }
    let vector = vector_of(ctx.signo as c_int, ctx.trapno);
    let exception = Exception {
        vector,
        error_code: has_error_code(vector).then_some(ctx.err as u32),
        address: (vector == 14).then_some(ctx.si_addr),
    };
    Ok(Outcome {
        state: out,
        rip_offset: ctx.fault_rip.wrapping_sub(CODE_BASE),
        end: End::Exception(exception),
    })
}

/// The exception vector of a fault signal: the hardware's own (`REG_TRAPNO`) when it
/// is consistent with the signal, else the usual vector of that signal.
fn vector_of(sig: c_int, trapno: u64) -> u8 {
    let fits: &[u64] = match sig {
        libc::SIGFPE => &[0, 16, 19],
        libc::SIGILL => &[6],
        libc::SIGSEGV => &[5, 13, 14],
        libc::SIGBUS => &[11, 12, 17],
        libc::SIGTRAP => &[1, 3],
        _ => &[],
    };
    if fits.contains(&trapno) {
        return trapno as u8;
    }
    match sig {
        libc::SIGFPE => 0,
        libc::SIGILL => 6,
        libc::SIGSEGV => 13,
        libc::SIGBUS => 17,
        _ => 3,
    }
}

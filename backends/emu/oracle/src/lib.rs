//! The native oracle: user-mode x86-64 snippets run on the host CPU (Linux x86-64 only),
//! the reference the emulator (`opsvisor-emu`) is checked against.
//!
//! A snippet is a few instructions. [`run`] copies it to a code page at the fixed address
//! [`CODE_BASE`], loads a [`State`] (general registers, RFLAGS, the FXSAVE state, and the
//! contents of a scratch area at the fixed address [`SCRATCH_BASE`]), runs it in user
//! mode on the host CPU and returns the final state and how the run ended ([`Outcome`]):
//! it either fell off the end of the snippet or raised an exception, which the host
//! kernel turned into a signal that the oracle catches. Because code and scratch sit at
//! the same addresses on both sides, `emu_runner` (feature `emu`) can run the same bytes
//! from the same state on the emulator and the two outcomes compare field by field.
//!
//! Snippets are checked before they run ([`check_snippet`]): no system calls, no
//! control transfers, no privileged or segment-changing instructions.
//!
//! The [`gen`] module builds random instructions of a given iced-x86 `Code` whose memory
//! operands land in the scratch area, for differential property tests.

pub mod check;
pub mod compare;
#[cfg(feature = "emu")]
pub mod coverage;
#[cfg(feature = "emu")]
pub mod emu_runner;
pub mod gen;
pub mod groups;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod native;
pub mod sse_rules;
pub mod x87_rules;

pub use check::{check_snippet, Rejection};

use core::fmt;

/// Where the snippet is placed (one 4 KiB page, read and execute only while it runs).
///
/// Below 2 GiB so that an absolute `[disp32]` operand and 32-bit address-size forms can
/// reach both the code and the scratch area.
pub const CODE_BASE: u64 = 0x7000_0000;
/// Size of the code page.
pub const CODE_SIZE: u64 = 0x1000;
/// Longest snippet accepted: the page less the exit stub the oracle appends.
pub const MAX_SNIPPET: usize = 0x1000 - 64;
/// Start of the scratch area: read/write data that memory operands and the stack use.
pub const SCRATCH_BASE: u64 = 0x7100_0000;
/// Size of the scratch area: two pages, so that string instructions with long counts run
/// across a page boundary inside it.
pub const SCRATCH_SIZE: usize = 0x2000;
/// Unmapped space kept on both sides of the scratch area (and after the code page), so an
/// access that runs off the scratch area faults the same way on the host and the emulator.
pub const GUARD_SIZE: u64 = 0x1_0000;

/// RFLAGS bits a snippet's state may set: the six status flags, DF and AC. TF is not
/// supported (single-stepping the entry trampoline would trap before the snippet); IF
/// is always set in user mode and the remaining bits are system flags.
pub const RFLAGS_USER: u64 = CF | PF | AF | ZF | SF | DF | OF | AC;

/// Carry flag.
pub const CF: u64 = 1 << 0;
/// Parity flag.
pub const PF: u64 = 1 << 2;
/// Auxiliary carry flag.
pub const AF: u64 = 1 << 4;
/// Zero flag.
pub const ZF: u64 = 1 << 6;
/// Sign flag.
pub const SF: u64 = 1 << 7;
/// Trap flag.
pub const TF: u64 = 1 << 8;
/// Interrupt-enable flag.
pub const IF: u64 = 1 << 9;
/// Direction flag.
pub const DF: u64 = 1 << 10;
/// Overflow flag.
pub const OF: u64 = 1 << 11;
/// Alignment-check flag.
pub const AC: u64 = 1 << 18;

/// Default MXCSR (all exceptions masked, round to nearest).
pub const MXCSR_DEFAULT: u32 = 0x1f80;

/// The legacy x87 part of an FXSAVE image (the XMM registers and MXCSR are separate
/// fields of [`State`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct X87 {
    /// Control word.
    pub fcw: u16,
    /// Status word.
    pub fsw: u16,
    /// Abridged tag word (one bit per register, 1 = valid).
    pub ftw: u8,
    /// Last opcode.
    pub fop: u16,
    /// Last instruction pointer.
    pub fip: u64,
    /// Last data pointer.
    pub fdp: u64,
    /// ST0..ST7 (physical order as FXSAVE stores them: ST(i)), 80 bits each in the low bits.
    pub st: [u128; 8],
}

impl Default for X87 {
    fn default() -> Self {
        // The FNINIT state: everything masked, empty stack.
        X87 {
            fcw: 0x37f,
            fsw: 0,
            ftw: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            st: [0; 8],
        }
    }
}

/// The user-visible state a snippet starts from and ends with.
#[derive(Clone, PartialEq, Eq)]
pub struct State {
    /// RAX..R15 in encoding order. RSP should point into the scratch area if the snippet
    /// uses the stack.
    pub gpr: [u64; 16],
    /// RFLAGS; only the bits of [`RFLAGS_USER`] are loaded (bit 1 and IF are always set).
    pub rflags: u64,
    /// XMM0..XMM15.
    pub xmm: [u128; 16],
    /// MXCSR.
    pub mxcsr: u32,
    /// x87 state.
    pub x87: X87,
    /// The scratch area's contents, exactly [`SCRATCH_SIZE`] bytes.
    pub scratch: Vec<u8>,
    /// Code size the snippet runs at: 64 (64-bit mode) or 32 (compatibility mode, a
    /// 32-bit code segment, for the instructions that exist only outside 64-bit mode).
    /// At 32 only the low halves of RAX..RDI are defined at the end (the upper halves
    /// are undefined after compatibility mode, SDM 1 3.4.1.1) and compared.
    pub bits: u32,
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// All registers zero, RSP in the middle of a zeroed scratch area, default FPU state.
    pub fn new() -> State {
        let mut gpr = [0; 16];
        gpr[4] = SCRATCH_BASE + (SCRATCH_SIZE as u64) / 2;
        State {
            gpr,
            rflags: 0x2,
            xmm: [0; 16],
            mxcsr: MXCSR_DEFAULT,
            x87: X87::default(),
            scratch: vec![0; SCRATCH_SIZE],
            bits: 64,
        }
    }

    /// The 512-byte FXSAVE image of the FPU/SSE part of the state.
    pub fn to_fxsave(&self) -> [u8; 512] {
        let mut f = [0u8; 512];
        let x = &self.x87;
        f[0..2].copy_from_slice(&x.fcw.to_le_bytes());
        f[2..4].copy_from_slice(&x.fsw.to_le_bytes());
        f[4] = x.ftw;
        f[6..8].copy_from_slice(&x.fop.to_le_bytes());
        f[8..16].copy_from_slice(&x.fip.to_le_bytes());
        f[16..24].copy_from_slice(&x.fdp.to_le_bytes());
        f[24..28].copy_from_slice(&self.mxcsr.to_le_bytes());
        for (i, st) in x.st.iter().enumerate() {
            let at = 32 + 16 * i;
            // 80 bits of register, the rest of the 16-byte slot reserved (zero).
            f[at..at + 10].copy_from_slice(&st.to_le_bytes()[..10]);
        }
        for (i, v) in self.xmm.iter().enumerate() {
            let at = 160 + 16 * i;
            f[at..at + 16].copy_from_slice(&v.to_le_bytes());
        }
        f
    }

    /// Take the FPU/SSE part of the state from a 512-byte FXSAVE image.
    pub fn set_fxsave(&mut self, f: &[u8; 512]) {
        let u16_at = |at: usize| u16::from_le_bytes([f[at], f[at + 1]]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&f[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let u128_at = |at: usize, len: usize| {
            let mut b = [0u8; 16];
            b[..len].copy_from_slice(&f[at..at + len]);
            u128::from_le_bytes(b)
        };
        self.x87 = X87 {
            fcw: u16_at(0),
            fsw: u16_at(2),
            ftw: f[4],
            fop: u16_at(6),
            fip: u64_at(8),
            fdp: u64_at(16),
            st: core::array::from_fn(|i| u128_at(32 + 16 * i, 10)),
        };
        self.mxcsr = u32::from_le_bytes([f[24], f[25], f[26], f[27]]);
        self.xmm = core::array::from_fn(|i| u128_at(160 + 16 * i, 16));
    }
}

const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// The name of general register `n` (0..16, encoding order).
pub fn gpr_name(n: usize) -> &'static str {
    GPR_NAMES.get(n).copied().unwrap_or("?")
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("State");
        if self.bits != 64 {
            d.field("bits", &self.bits);
        }
        for (i, v) in self.gpr.iter().enumerate() {
            d.field(GPR_NAMES[i], &format_args!("{v:#x}"));
        }
        d.field("rflags", &format_args!("{:#x}", self.rflags));
        if self.xmm.iter().any(|&x| x != 0) {
            d.field("xmm", &self.xmm);
        }
        if self.mxcsr != MXCSR_DEFAULT {
            d.field("mxcsr", &format_args!("{:#x}", self.mxcsr));
        }
        if self.x87 != X87::default() {
            d.field("x87", &self.x87);
        }
        let nonzero = self.scratch.iter().filter(|&&b| b != 0).count();
        d.field(
            "scratch",
            &format_args!("[{} bytes, {nonzero} non-zero]", self.scratch.len()),
        );
        d.finish()
    }
}

/// An exception the snippet raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// The vector: #DE 0, #DB 1, #BP 3, #UD 6, #SS 12, #GP 13, #PF 14, #MF 16, #AC 17, #XM 19.
    pub vector: u8,
    /// The error code, for the vectors that push one (#TS, #NP, #SS, #GP, #PF, #AC).
    pub error_code: Option<u32>,
    /// The faulting linear address (CR2), for #PF.
    pub address: Option<u64>,
}

/// Vectors whose delivery pushes an error code.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Execution fell off the end of the snippet.
    Completed,
    /// The snippet raised an exception; [`Outcome::rip_offset`] is the RIP the exception
    /// reports (the faulting instruction for a fault, the next one for a trap such as #BP).
    Exception(Exception),
}

/// The result of running a snippet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The state at the end (at the exception for a fault: the faulting instruction's
    /// effects are not applied).
    pub state: State,
    /// RIP at the end, relative to [`CODE_BASE`] (the snippet length when completed).
    pub rip_offset: u64,
    /// How the run ended.
    pub end: End,
}

/// Why a snippet could not be run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OracleError {
    /// The snippet contains an instruction the oracle refuses to run.
    Rejected(Rejection),
    /// The state is malformed (scratch size, MXCSR reserved bits).
    BadState(String),
    /// The host cannot run snippets: not Linux x86-64, or the fixed mappings failed.
    Unavailable(String),
}

impl fmt::Display for OracleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OracleError::Rejected(r) => write!(f, "snippet rejected: {r}"),
            OracleError::BadState(s) => write!(f, "bad state: {s}"),
            OracleError::Unavailable(s) => write!(f, "oracle unavailable: {s}"),
        }
    }
}

impl std::error::Error for OracleError {}

/// Check the parts of a state every runner relies on.
pub fn check_state(state: &State) -> Result<(), OracleError> {
    if !matches!(state.bits, 32 | 64) {
        return Err(OracleError::BadState(format!(
            "code size {} (must be 32 or 64)",
            state.bits
        )));
    }
    if state.scratch.len() != SCRATCH_SIZE {
        return Err(OracleError::BadState(format!(
            "scratch is {} bytes, must be {SCRATCH_SIZE}",
            state.scratch.len()
        )));
    }
    // Bits 16 and up are reserved on every processor (FXRSTOR would #GP); DAZ (bit 6)
    // exists on everything this runs on.
    if state.mxcsr & 0xffff_0000 != 0 {
        return Err(OracleError::BadState(format!(
            "MXCSR {:#x} sets reserved bits",
            state.mxcsr
        )));
    }
    Ok(())
}

/// The exit stub's jump target and the 64-bit code selector its 32-bit form jumps to:
/// the host's exit trampoline and user code segment (elsewhere, where the oracle cannot
/// run, a fixed unmapped address and Linux's selector, so the emulator side still works).
pub fn exit_stub() -> (u64, u16) {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        native::exit_stub()
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        (0x7ff0_0000_0000, 0x33)
    }
}

/// The code page both sides run, byte for byte (so a snippet that reads past its own
/// end, RIP-relative, sees the same bytes): the snippet, then the exit stub, then
/// INT3 filler. The stub is `jmp qword ptr [rip+disp]` through an 8-byte aligned slot
/// (aligned so the jump cannot raise #AC when the snippet set AC) holding
/// [`exit_stub`]'s target; at code size 32 a far jump to the 64-bit code segment comes
/// first. On the host the target is the exit trampoline; on the emulator it is unmapped,
/// and the instruction fetch that faults there marks the snippet as completed.
pub fn code_page(code: &[u8], bits: u32) -> Vec<u8> {
    let (target, cs64) = exit_stub();
    let mut page = vec![0xccu8; CODE_SIZE as usize];
    let len = code.len().min(MAX_SNIPPET);
    page[..len].copy_from_slice(&code[..len]);
    let mut stub_at = len;
    if bits == 32 {
        // jmp far cs64:next (EA ptr16:32), straight into the 64-bit stub below.
        let next = CODE_BASE as u32 + stub_at as u32 + 7;
        page[stub_at] = 0xea;
        page[stub_at + 1..stub_at + 5].copy_from_slice(&next.to_le_bytes());
        page[stub_at + 5..stub_at + 7].copy_from_slice(&cs64.to_le_bytes());
        stub_at += 7;
    }
    let slot = (stub_at + 6).next_multiple_of(8);
    let disp = (slot - (stub_at + 6)) as u32;
    page[stub_at..stub_at + 2].copy_from_slice(&[0xff, 0x25]);
    page[stub_at + 2..stub_at + 6].copy_from_slice(&disp.to_le_bytes());
    page[slot..slot + 8].copy_from_slice(&target.to_le_bytes());
    page
}

/// Run `code` on the host CPU from `state`.
///
/// Runs are serialised process-wide. Fails if the snippet is rejected by
/// [`check_snippet`], the state is malformed, or the host is not Linux x86-64.
pub fn run(code: &[u8], state: &State) -> Result<Outcome, OracleError> {
    check_state(state)?;
    check::check_snippet_at(code, state.bits).map_err(OracleError::Rejected)?;
    run_checked(code, state)
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn run_checked(code: &[u8], state: &State) -> Result<Outcome, OracleError> {
    native::run(code, state)
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn run_checked(_code: &[u8], _state: &State) -> Result<Outcome, OracleError> {
    Err(OracleError::Unavailable(
        "the native oracle needs Linux on x86-64".into(),
    ))
}

/// Whether [`run`] can work on this host (Linux x86-64 and the fixed mappings exist).
pub fn available() -> bool {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        native::available()
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        false
    }
}

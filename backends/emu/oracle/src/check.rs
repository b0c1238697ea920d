//! What the oracle refuses to run.
//!
//! The snippet runs inside the test process, in user mode. A fault is harmless (it ends
//! in a signal the oracle catches), but some instructions could act on the process or
//! the system behind the oracle's back, so they are rejected before anything runs:
//!
//! - system calls and software interrupts (`SYSCALL`, `SYSENTER`, `INT n`): the snippet
//!   must not talk to the kernel. `INT3` and `INT1` are allowed: they only raise #BP/#DB.
//! - every control transfer (jumps, calls, returns, far transfers, `XBEGIN`): the
//!   oracle has no watchdog, so a loop would hang the test, and a `RET` could land
//!   anywhere in the host process. Snippets are straight-line code.
//! - privileged instructions (they fault in user mode, but the point is not to depend on
//!   that) and the I/O instructions.
//! - writes to segment registers, FS/GS base writes, FS/GS-relative memory operands and
//!   `WRPKRU`/`XRSTORS*`, and `XRSTOR*` when the host's XCR0 has the PKRU component
//!   (they can load PKRU): they would break the host thread's TLS or memory protection
//!   keys.
//! - instructions the kernel emulates or that wait (`SGDT`..`SMSW` under UMIP,
//!   `UMONITOR`/`UMWAIT`/`TPAUSE`, `MONITORX`/`MWAITX`), user interrupts, enclave and
//!   shadow-stack management instructions.
//! - bytes that do not decode, or a last instruction cut short.

use core::fmt;
use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Formatter, IntelFormatter, Mnemonic};
use iced_x86::{OpKind, Register};

/// Why a snippet was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Offset of the offending instruction in the snippet.
    pub offset: usize,
    /// The instruction, disassembled (or the bytes, when they do not decode).
    pub instruction: String,
    /// Why it is refused.
    pub reason: &'static str,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` at offset {:#x}: {}",
            self.instruction, self.offset, self.reason
        )
    }
}

/// Mnemonics refused whatever their operands.
const FORBIDDEN: &[(Mnemonic, &str)] = &[
    (Mnemonic::Syscall, "system call"),
    (Mnemonic::Sysenter, "system call"),
    (Mnemonic::Sysexit, "system call return"),
    (Mnemonic::Sysret, "system call return"),
    (Mnemonic::Int, "software interrupt"),
    (
        Mnemonic::Popf,
        "may set TF, whose single-step trap would fire outside the snippet",
    ),
    (
        Mnemonic::Popfd,
        "may set TF, whose single-step trap would fire outside the snippet",
    ),
    (
        Mnemonic::Popfq,
        "may set TF, whose single-step trap would fire outside the snippet",
    ),
    (Mnemonic::Into, "software interrupt"),
    (Mnemonic::Wrfsbase, "writes the FS base (host TLS)"),
    (Mnemonic::Wrgsbase, "writes the GS base"),
    (Mnemonic::Wrpkru, "writes PKRU (memory protection keys)"),
    (Mnemonic::Xrstors, "may load PKRU"),
    (Mnemonic::Xrstors64, "may load PKRU"),
    (Mnemonic::Lfs, "loads a segment register"),
    (Mnemonic::Lgs, "loads a segment register"),
    (Mnemonic::Lss, "loads a segment register"),
    (Mnemonic::Sgdt, "emulated by the kernel under UMIP"),
    (Mnemonic::Sidt, "emulated by the kernel under UMIP"),
    (Mnemonic::Sldt, "emulated by the kernel under UMIP"),
    (Mnemonic::Smsw, "emulated by the kernel under UMIP"),
    (Mnemonic::Str, "emulated by the kernel under UMIP"),
    (Mnemonic::Umonitor, "user-mode wait"),
    (Mnemonic::Umwait, "user-mode wait"),
    (Mnemonic::Tpause, "user-mode wait"),
    (Mnemonic::Monitorx, "user-mode wait"),
    (Mnemonic::Mwaitx, "user-mode wait"),
    (Mnemonic::Enqcmd, "device work submission"),
    (Mnemonic::Enqcmds, "device work submission"),
    (Mnemonic::Encls, "enclave instruction"),
    (Mnemonic::Enclu, "enclave instruction"),
    (Mnemonic::Enclv, "enclave instruction"),
    (Mnemonic::Getsec, "safer-mode instruction"),
    (Mnemonic::Senduipi, "user interrupt"),
    (Mnemonic::Uiret, "user interrupt"),
    (Mnemonic::Testui, "user interrupt"),
    (Mnemonic::Clui, "user interrupt"),
    (Mnemonic::Stui, "user interrupt"),
    (Mnemonic::Incsspd, "shadow-stack management"),
    (Mnemonic::Incsspq, "shadow-stack management"),
    (Mnemonic::Rstorssp, "shadow-stack management"),
    (Mnemonic::Saveprevssp, "shadow-stack management"),
    (Mnemonic::Wrssd, "shadow-stack management"),
    (Mnemonic::Wrssq, "shadow-stack management"),
    (Mnemonic::Setssbsy, "shadow-stack management"),
    (Mnemonic::Vmcall, "hypercall"),
    (Mnemonic::Vmfunc, "hypercall"),
    (Mnemonic::Vmmcall, "hypercall"),
];

/// XCR0 bit 9: the PKRU state component.
const XCR0_PKRU: u64 = 1 << 9;

/// Whether the host's XCR0 enables the PKRU component, which XRSTOR could then load.
/// Without it XRSTOR loads no more than FXRSTOR can (with XCR0's other components, the
/// vector registers), so it is as safe to run.
fn host_xcr0_has_pkru() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("xsave") {
            // SAFETY: the CPU has XSAVE and the OS has enabled it (the macro checks
            // OSXSAVE), so XGETBV of XCR0 is defined; it reads a register only.
            return unsafe { xcr0() } & XCR0_PKRU != 0;
        }
        false
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// XCR0.
///
/// # Safety
///
/// The CPU supports XSAVE and CR4.OSXSAVE is set.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    // SAFETY: the caller's contract.
    unsafe { core::arch::x86_64::_xgetbv(0) }
}

/// Check that `code` is straight-line user code the oracle may run (see the module
/// documentation for the rules).
pub fn check_snippet(code: &[u8]) -> Result<(), Rejection> {
    check_snippet_at(code, 64)
}

/// [`check_snippet`] for a snippet that runs at code size `bits` (64, or 32 in
/// compatibility mode).
pub fn check_snippet_at(code: &[u8], bits: u32) -> Result<(), Rejection> {
    if code.len() > crate::MAX_SNIPPET {
        return Err(Rejection {
            offset: 0,
            instruction: String::new(),
            reason: "snippet longer than the code page allows",
        });
    }
    let mut decoder = Decoder::with_ip(bits, code, crate::CODE_BASE, DecoderOptions::NONE);
    let mut formatter = IntelFormatter::new();
    while decoder.can_decode() {
        let offset = decoder.position();
        let instr = decoder.decode();
        let mut reject = |reason: &'static str| {
            let mut text = String::new();
            if instr.code() == Code::INVALID {
                let end = offset.saturating_add(instr.len().max(1)).min(code.len());
                for b in &code[offset..end] {
                    text.push_str(&format!("{b:02x} "));
                }
                text.pop();
            } else {
                formatter.format(&instr, &mut text);
            }
            Err(Rejection {
                offset,
                instruction: text,
                reason,
            })
        };
        if instr.code() == Code::INVALID {
            return reject("does not decode (or is cut short)");
        }
        if let Some((_, why)) = FORBIDDEN.iter().find(|(m, _)| *m == instr.mnemonic()) {
            return reject(why);
        }
        if matches!(instr.mnemonic(), Mnemonic::Xrstor | Mnemonic::Xrstor64) && host_xcr0_has_pkru()
        {
            return reject("may load PKRU (the host's XCR0 has it)");
        }
        match instr.flow_control() {
            FlowControl::Next | FlowControl::Exception => {}
            FlowControl::Interrupt
                if matches!(instr.mnemonic(), Mnemonic::Int3 | Mnemonic::Int1) => {}
            _ => return reject("control transfer (snippets are straight-line code)"),
        }
        if instr.code().is_privileged() {
            return reject("privileged or I/O instruction");
        }
        let writes_sreg = matches!(
            instr.code(),
            Code::Mov_Sreg_rm16
                | Code::Mov_Sreg_r32m16
                | Code::Mov_Sreg_r64m16
                | Code::Popw_FS
                | Code::Popq_FS
                | Code::Popw_GS
                | Code::Popq_GS
                | Code::Popd_GS
                | Code::Popd_FS
                | Code::Popw_SS
                | Code::Popd_SS
                | Code::Popw_DS
                | Code::Popd_DS
                | Code::Popw_ES
                | Code::Popd_ES
        ) || matches!(
            instr.mnemonic(),
            Mnemonic::Lfs | Mnemonic::Lgs | Mnemonic::Lss
        );
        // LDS/LES stay: DS and ES are not used by the host in 64-bit mode, and the
        // loads are the legacy forms under test. FS (the host's TLS), GS and SS are not.
        if writes_sreg {
            return reject("loads a segment register");
        }
        let has_mem = (0..instr.op_count()).any(|i| {
            matches!(
                instr.op_kind(i),
                OpKind::Memory
                    | OpKind::MemorySegSI
                    | OpKind::MemorySegESI
                    | OpKind::MemorySegRSI
                    | OpKind::MemorySegDI
                    | OpKind::MemorySegEDI
                    | OpKind::MemorySegRDI
            )
        });
        if has_mem && matches!(instr.memory_segment(), Register::FS | Register::GS) {
            return reject("FS/GS-relative memory operand (host TLS)");
        }
    }
    Ok(())
}

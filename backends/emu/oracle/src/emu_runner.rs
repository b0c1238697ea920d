//! The emulator side: the same snippet and [`State`] run on [`EmuVcpu`], with the same
//! [`Outcome`] as the native oracle.
//!
//! The guest is a minimal 64-bit kernel that only exists to catch exceptions:
//!
//! - Paging maps the code page at [`CODE_BASE`] (user, read-only, executable) and the
//!   scratch area at [`SCRATCH_BASE`] (user, read/write, no-execute) exactly where the
//!   oracle maps them; the guard space around them is not present, as on the host.
//!   Everything else below the kernel is unmapped. The kernel's own structures (GDT,
//!   IDT, TSS, handlers, stack) are supervisor pages in the upper half, out of the
//!   snippet's reach.
//! - The snippet runs at CPL 3, like the oracle's, so #GP/#PF error codes, the U bit and
//!   the privilege checks match what the host reports. CR0 (WP, AM, NE), CR4 (PAE,
//!   OSFXSR, OSXMMEXCPT, OSXSAVE), XCR0 (x87 and SSE) and EFER.NXE are set as Linux sets
//!   them.
//! - Each of the 32 exception vectors has a 64-bit interrupt gate (DPL 3 for #BP, as
//!   Linux has it, so `INT3` works from user mode) to a one-byte `HLT` handler at its own
//!   address: the `HLT` exit tells which vector was delivered, and the frame on the kernel
//!   stack (RSP0 from the TSS) gives the error code, RIP, RFLAGS and RSP at the fault.
//! - The code page is the host's byte for byte ([`crate::code_page`]): the snippet is
//!   followed by the exit stub, whose jump target is not mapped here: the #PF on fetching
//!   it means the snippet completed.
//!
//! Comparison granularity: the native oracle learns the vector from the kernel's
//! `REG_TRAPNO`, the error code from `REG_ERR` and the #PF address from `si_addr`, so
//! both sides report the exact vector, error code (for vectors that push one) and #PF
//! address. The emulator has no x87/SSE yet, so the FPU/SSE part of the output state is
//! the input's.

use crate::{
    has_error_code, End, Exception, Outcome, State, CODE_BASE, IF, RFLAGS_USER, SCRATCH_BASE,
    SCRATCH_SIZE,
};
use core::fmt;
use opsvisor_core::exit::Exit;
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::{DescriptorTable, Gpr, ResetKind, RunLimit, SegReg, Segment, X86Ops};
use opsvisor_emu::EmuVcpu;

/// Where the kernel's 2 MiB page (guest-physical 0) appears in the linear address space.
const KBASE: u64 = 0xffff_ffff_8000_0000;

// Guest-physical layout.
const PML4: u64 = 0x1000;
const PDPT_USER: u64 = 0x2000;
const PD_USER: u64 = 0x3000;
const PT_CODE: u64 = 0x4000;
const PT_SCRATCH: u64 = 0x5000;
const PDPT_KERNEL: u64 = 0x6000;
const PD_KERNEL: u64 = 0x7000;
const GDT: u64 = 0x8000;
const IDT: u64 = 0x9000;
const TSS: u64 = 0xa000;
const HANDLERS: u64 = 0xb000;
const KSTACK_TOP: u64 = 0x10000;
const CODE_PA: u64 = 0x10000;
const SCRATCH_PA: u64 = 0x20000;
const RAM: u64 = 0x40000;

// The selectors of Linux's x86-64 GDT, so that a snippet loading a segment register
// (LDS/LES in compatibility mode) meets the same descriptors as on the host.
const KERNEL_CS: u16 = 0x10;
const USER32_CS: u16 = 0x23;
const USER_DS: u16 = 0x2b;
const USER_CS: u16 = 0x33;
const TSS_SEL: u16 = 0x40;
/// GDT limit: 16 entries, as Linux has.
const GDT_LIMIT: u16 = 16 * 8 - 1;

const PTE_P: u64 = 1;
const PTE_W: u64 = 2;
const PTE_U: u64 = 4;
const PTE_PS: u64 = 0x80;
const PTE_NX: u64 = 1 << 63;

/// Instructions the emulator may retire per run before the run counts as hung.
const MAX_INSTRUCTIONS: u64 = 1_000_000;

/// Why the emulator could not produce an [`Outcome`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmuError {
    /// Building the guest failed (a bug in the runner).
    Setup(String),
    /// The run ended in an exit a user-mode snippet cannot cause on hardware (triple
    /// fault, emulation failure, an intercept), with the RIP it happened at.
    UnexpectedExit {
        /// The exit.
        exit: Exit,
        /// Guest RIP at the exit.
        rip: u64,
    },
    /// The snippet ran for [`MAX_INSTRUCTIONS`] without finishing.
    Hung,
}

impl fmt::Display for EmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmuError::Setup(s) => write!(f, "emulator setup failed: {s}"),
            EmuError::UnexpectedExit { exit, rip } => {
                write!(f, "unexpected exit {exit:?} at rip {rip:#x}")
            }
            EmuError::Hung => write!(f, "the snippet did not finish"),
        }
    }
}

impl std::error::Error for EmuError {}

/// Runs snippets on an [`EmuVcpu`]; reusable (each run resets the vCPU and reloads the
/// code and scratch contents).
pub struct EmuRunner {
    vcpu: EmuVcpu,
    mem: GuestMemory,
}

impl fmt::Debug for EmuRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmuRunner")
            .field("vcpu", &self.vcpu)
            .finish()
    }
}

fn setup_err(e: impl fmt::Display) -> EmuError {
    EmuError::Setup(e.to_string())
}

impl EmuRunner {
    /// Build the guest: page tables, GDT, IDT, TSS and handlers.
    pub fn new() -> Result<EmuRunner, EmuError> {
        let mut mem = GuestMemory::with_ram(RAM).map_err(setup_err)?;
        let mut w = |gpa: u64, v: u64| mem.write_u64(gpa, v).map_err(setup_err);
        let table = PTE_P | PTE_W | PTE_U;
        // User half: PML4[0] -> PDPT -> PD -> one page table each for code and scratch.
        w(PML4, PDPT_USER | table)?;
        w(PDPT_USER + 8 * idx(CODE_BASE, 30), PD_USER | table)?;
        w(PD_USER + 8 * idx(CODE_BASE, 21), PT_CODE | table)?;
        w(PD_USER + 8 * idx(SCRATCH_BASE, 21), PT_SCRATCH | table)?;
        w(PT_CODE + 8 * idx(CODE_BASE, 12), CODE_PA | PTE_P | PTE_U)?;
        for page in 0..(SCRATCH_SIZE as u64).div_ceil(4096) {
            w(
                PT_SCRATCH + 8 * (idx(SCRATCH_BASE, 12) + page),
                (SCRATCH_PA + page * 4096) | PTE_P | PTE_W | PTE_U | PTE_NX,
            )?;
        }
        // Kernel half: one supervisor 2 MiB page of guest-physical 0 at KBASE.
        w(PML4 + 8 * idx(KBASE, 39), PDPT_KERNEL | PTE_P | PTE_W)?;
        w(PDPT_KERNEL + 8 * idx(KBASE, 30), PD_KERNEL | PTE_P | PTE_W)?;
        w(PD_KERNEL + 8 * idx(KBASE, 21), PTE_P | PTE_W | PTE_PS)?;
        // GDT as Linux lays it out: null, kernel code 32 (0x08), kernel code 64 (0x10),
        // kernel data (0x18), user code 32 (0x23), user data (0x2b), user code 64
        // (0x33), unused, TSS (0x40, two entries); the rest (LDT, TLS, per-CPU) empty.
        let gdt: [u64; 7] = [
            0,
            0x00cf_9b00_0000_ffff,
            0x00af_9b00_0000_ffff,
            0x00cf_9300_0000_ffff,
            0x00cf_fb00_0000_ffff,
            0x00cf_f300_0000_ffff,
            0x00af_fb00_0000_ffff,
        ];
        for (i, d) in gdt.iter().enumerate() {
            w(GDT + 8 * i as u64, *d)?;
        }
        let tss = KBASE + TSS;
        let tss_lo = 0x67 | ((tss & 0xff_ffff) << 16) | (0x89 << 40) | (((tss >> 24) & 0xff) << 56);
        w(GDT + u64::from(TSS_SEL), tss_lo)?;
        w(GDT + u64::from(TSS_SEL) + 8, tss >> 32)?;
        // RSP0.
        w(TSS + 4, KBASE + KSTACK_TOP)?;
        for v in 0..32u64 {
            let handler = KBASE + HANDLERS + 16 * v;
            let dpl: u64 = if v == 3 { 3 } else { 0 };
            let lo = (handler & 0xffff)
                | (u64::from(KERNEL_CS) << 16)
                | ((0x8e | (dpl << 5)) << 40)
                | (((handler >> 16) & 0xffff) << 48);
            w(IDT + 16 * v, lo)?;
            w(IDT + 16 * v + 8, handler >> 32)?;
        }
        let hlts = [0xf4u8; 32 * 16];
        mem.write(HANDLERS, &hlts).map_err(setup_err)?;
        Ok(EmuRunner {
            vcpu: EmuVcpu::new(),
            mem,
        })
    }

    /// Run `code` from `state` (the same contract as [`crate::run`], minus the snippet
    /// check: the emulator can run anything).
    pub fn run(&mut self, code: &[u8], state: &State) -> Result<Outcome, EmuError> {
        crate::check_state(state).map_err(setup_err)?;
        if code.len() > crate::MAX_SNIPPET {
            return Err(EmuError::Setup("snippet too long".into()));
        }
        let page = crate::code_page(code, state.bits);
        let m = &mut self.mem;
        m.write(CODE_PA, &page).map_err(setup_err)?;
        m.write(SCRATCH_PA, &state.scratch).map_err(setup_err)?;
        self.reset(state);

        let limit = RunLimit {
            tsc: 0,
            deadline: None,
            max_instructions: 10_000,
        };
        let mut budget = MAX_INSTRUCTIONS;
        let vector = loop {
            let exit = self.vcpu.run(&mut self.mem, &limit);
            let rip = self.vcpu.rip();
            match exit {
                Exit::Hlt => {
                    let off = rip.wrapping_sub(KBASE + HANDLERS);
                    if off < 32 * 16 && off % 16 == 0 {
                        break (off / 16) as u8;
                    }
                    return Err(EmuError::UnexpectedExit { exit, rip });
                }
                Exit::Preempted => {
                    budget = budget.saturating_sub(limit.max_instructions);
                    if budget == 0 {
                        return Err(EmuError::Hung);
                    }
                }
                _ => return Err(EmuError::UnexpectedExit { exit, rip }),
            }
        };
        self.outcome(code, state, vector)
    }

    fn reset(&mut self, state: &State) {
        let v = &mut self.vcpu;
        v.vcpu_reset(ResetKind::PowerOn);
        v.invalidate_code();
        v.set_gdt(DescriptorTable {
            base: KBASE + GDT,
            limit: GDT_LIMIT,
        });
        v.set_idt(DescriptorTable {
            base: KBASE + IDT,
            limit: 32 * 16 - 1,
        });
        v.set_cr3(PML4);
        // PAE, OSFXSR, OSXMMEXCPT, OSXSAVE, and FSGSBASE where the host's kernel has
        // enabled it for user mode; XCR0 with the x87 and SSE components (the host's has
        // them, and more the emulator does not implement).
        let fsgsbase = if host_fsgsbase() { 1 << 16 } else { 0 };
        v.set_cr4(0x20 | 0x200 | 0x400 | 0x4_0000 | fsgsbase);
        v.set_xcr0(3);
        // LME, LMA, NXE.
        v.set_efer(0x100 | 0x400 | 0x800);
        // PG, AM, WP, NE, ET, PE.
        v.set_cr0(0x8000_0000 | 0x4_0000 | 0x1_0000 | 0x20 | 0x10 | 0x1);
        v.set_segment(
            SegReg::Tr,
            &Segment {
                selector: TSS_SEL,
                base: KBASE + TSS,
                limit: 0x67,
                attr: Segment::TSS_BUSY,
            },
        );
        v.set_segment(
            SegReg::Ldtr,
            &Segment {
                selector: 0,
                base: 0,
                limit: 0,
                attr: Segment::LDT_UNUSABLE,
            },
        );
        // The host's selectors: the oracle loads DS and ES with the user data selector
        // (compatibility mode needs them); FS and GS are null, as Linux leaves them
        // for 64-bit processes (their bases come from MSRs).
        let data = Segment::flat(USER_DS, 0xc0f3);
        for s in [SegReg::Ds, SegReg::Es, SegReg::Ss] {
            v.set_segment(s, &data);
        }
        let null = Segment {
            selector: 0,
            base: 0,
            limit: 0,
            attr: Segment::UNUSABLE,
        };
        for s in [SegReg::Fs, SegReg::Gs] {
            v.set_segment(s, &null);
        }
        // CS last: its DPL sets the CPL. Code size 32 is compatibility mode.
        let cs = if state.bits == 32 {
            Segment::flat(USER32_CS, 0xc0fb)
        } else {
            Segment::flat(USER_CS, 0xa0fb)
        };
        v.set_segment(SegReg::Cs, &cs);
        for (i, reg) in Gpr::ALL.iter().enumerate() {
            v.set_gpr(*reg, state.gpr[i]);
        }
        v.set_rip(CODE_BASE);
        v.set_rflags((state.rflags & RFLAGS_USER) | 0x2 | IF);
        v.set_interrupt_shadow(false);
        // check_state refused reserved MXCSR bits, so the image always loads.
        let _ = v.fpu_mut().fxrstor(&state.to_fxsave(), 16);
    }

    fn outcome(&mut self, code: &[u8], state: &State, vector: u8) -> Result<Outcome, EmuError> {
        let rsp = self.vcpu.gpr(Gpr::Rsp);
        let top = KBASE + KSTACK_TOP;
        let words = top.wrapping_sub(rsp) / 8;
        if !(5..=6).contains(&words) {
            return Err(EmuError::Setup(format!(
                "exception frame of {words} words for vector {vector}"
            )));
        }
        let mut frame = [0u64; 6];
        for (i, f) in frame.iter_mut().enumerate().take(words as usize) {
            *f = self
                .mem
                .read_u64(rsp - KBASE + 8 * i as u64)
                .map_err(setup_err)?;
        }
        let (error_code, rest) = if words == 6 {
            (Some(frame[0] as u32), &frame[1..6])
        } else {
            (None, &frame[0..5])
        };
        let (rip, rflags, user_rsp) = (rest[0], rest[2], rest[3]);
        let mut out = state.clone();
        for (i, reg) in Gpr::ALL.iter().enumerate() {
            out.gpr[i] = self.vcpu.gpr(*reg);
        }
        out.gpr[Gpr::Rsp as usize] = user_rsp;
        out.rflags = rflags;
        out.set_fxsave(&self.vcpu.fpu().fxsave());
        self.mem
            .read(SCRATCH_PA, &mut out.scratch)
            .map_err(setup_err)?;
        let rip_offset = rip.wrapping_sub(CODE_BASE);
        let completed = vector == 14 && self.vcpu.cr2() == crate::exit_stub().0;
        let rip_offset = if completed {
            code.len() as u64
        } else {
            rip_offset
        };
        let end = if completed {
            End::Completed
        } else {
            End::Exception(Exception {
                vector,
                error_code: if has_error_code(vector) {
                    error_code
                } else {
                    None
                },
                address: (vector == 14).then(|| self.vcpu.cr2()),
            })
        };
        Ok(Outcome {
            state: out,
            rip_offset,
            end,
        })
    }
}

/// The page-table index of `va` at the level whose entries map `1 << shift` bytes.
fn idx(va: u64, shift: u32) -> u64 {
    (va >> shift) & 511
}

/// Whether the host's kernel lets user mode run RDFSBASE, RDGSBASE, WRFSBASE and
/// WRGSBASE (HWCAP2_FSGSBASE in the auxiliary vector, Linux 5.9 and later): the
/// emulator's CR4.FSGSBASE follows it, so both sides fault or run them alike.
fn host_fsgsbase() -> bool {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        /// HWCAP2_FSGSBASE (Linux's arch/x86/include/uapi/asm/hwcap2.h).
        const HWCAP2_FSGSBASE: u64 = 1 << 1;
        // SAFETY: getauxval only reads the process's auxiliary vector.
        let hwcap2 = unsafe { libc::getauxval(libc::AT_HWCAP2) };
        hwcap2 & HWCAP2_FSGSBASE != 0
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        false
    }
}

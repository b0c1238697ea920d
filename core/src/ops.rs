//! The backend operations table, modelled on Linux KVM's `struct kvm_x86_ops`.
//!
//! Every backend (VMX, SVM, the emulator) implements [`X86Ops`]. The core calls it from
//! the run loop and the exit handlers; it never sees VMCS fields, VMCB offsets or the
//! emulator's internals. Groups follow `arch/x86/include/asm/kvm-x86-ops.h`. Operations
//! that KVM marks `KVM_X86_OP_OPTIONAL` have default bodies here.

use crate::cpuid::CpuidPolicy;
use crate::exit::Exit;
use crate::fpu::{FpuStateError, FxsaveArea};
use crate::mmu::memory::GuestMemory;
use enum_dispatch::enum_dispatch;

/// A general-purpose register, numbered as in the instruction encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Gpr {
    Rax = 0,
    Rcx,
    Rdx,
    Rbx,
    Rsp,
    Rbp,
    Rsi,
    Rdi,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
}

impl Gpr {
    /// All sixteen registers in encoding order.
    pub const ALL: [Gpr; 16] = [
        Gpr::Rax,
        Gpr::Rcx,
        Gpr::Rdx,
        Gpr::Rbx,
        Gpr::Rsp,
        Gpr::Rbp,
        Gpr::Rsi,
        Gpr::Rdi,
        Gpr::R8,
        Gpr::R9,
        Gpr::R10,
        Gpr::R11,
        Gpr::R12,
        Gpr::R13,
        Gpr::R14,
        Gpr::R15,
    ];

    /// The register with encoding number `n` (0..16).
    pub fn from_index(n: usize) -> Option<Gpr> {
        Self::ALL.get(n).copied()
    }
}

/// The general registers, RIP and RFLAGS of a vCPU (KVM's `struct kvm_regs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Regs {
    /// RAX..R15 in encoding order (index with `Gpr as usize`).
    pub gpr: [u64; 16],
    /// The instruction pointer.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
}

/// A segment register (and the two system segment registers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum SegReg {
    Es = 0,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
    Ldtr,
    Tr,
}

impl SegReg {
    /// All eight, ES..GS in encoding order, then LDTR and TR.
    pub const ALL: [SegReg; 8] = [
        SegReg::Es,
        SegReg::Cs,
        SegReg::Ss,
        SegReg::Ds,
        SegReg::Fs,
        SegReg::Gs,
        SegReg::Ldtr,
        SegReg::Tr,
    ];
}

/// A segment register's visible selector and hidden descriptor cache.
///
/// `attr` uses the VMX access-rights layout (SDM 3C 25.4.1), which SVM's VMCB attribute
/// word maps onto by a shift: bits 0-3 type, 4 S, 5-6 DPL, 7 P, 12 AVL, 13 L, 14 D/B,
/// 15 G, and bit 16 "unusable" (a null selector loaded in protected mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    /// The selector.
    pub selector: u16,
    /// The base address.
    pub base: u64,
    /// The limit in bytes (already scaled by the granularity bit).
    pub limit: u32,
    /// Access rights (see the type documentation).
    pub attr: u32,
}

impl Segment {
    /// Type field mask.
    pub const TYPE_MASK: u32 = 0xf;
    /// Descriptor type: 1 for code/data, 0 for system.
    pub const S: u32 = 1 << 4;
    /// Present.
    pub const P: u32 = 1 << 7;
    /// 64-bit code segment.
    pub const L: u32 = 1 << 13;
    /// Default operation size (32-bit) / big.
    pub const DB: u32 = 1 << 14;
    /// Granularity.
    pub const G: u32 = 1 << 15;
    /// Unusable (null selector in protected mode).
    pub const UNUSABLE: u32 = 1 << 16;

    /// The descriptor privilege level.
    pub fn dpl(&self) -> u8 {
        ((self.attr >> 5) & 3) as u8
    }

    /// A flat 4 GiB segment (base 0, page-granular limit) with access rights `attr`.
    pub const fn flat(selector: u16, attr: u32) -> Segment {
        Segment {
            selector,
            base: 0,
            limit: 0xffff_ffff,
            attr,
        }
    }

    /// Access rights of a flat 32-bit execute/read code segment, DPL 0, accessed.
    pub const CODE32: u32 = 0xc09b;
    /// Access rights of a 64-bit execute/read code segment, DPL 0, accessed.
    pub const CODE64: u32 = 0xa09b;
    /// Access rights of a flat read/write data segment, DPL 0, accessed.
    pub const DATA: u32 = 0xc093;
    /// Access rights of a busy 32/64-bit TSS.
    pub const TSS_BUSY: u32 = 0x8b;
    /// Access rights of an LDT that is not loaded.
    pub const LDT_UNUSABLE: u32 = Segment::UNUSABLE | 0x82;

    /// A real-mode segment: base = selector * 16, 64 KiB limit, read/write (or
    /// execute/read for CS) data, present.
    pub fn real_mode(selector: u16, code: bool) -> Segment {
        Segment {
            selector,
            base: u64::from(selector) << 4,
            limit: 0xffff,
            attr: if code { 0x9b } else { 0x93 },
        }
    }
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DescriptorTable {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u16,
}

/// Which reset the vCPU performs (KVM's `vcpu_reset(vcpu, init_event)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetKind {
    /// Power-on: every register to its reset value.
    PowerOn,
    /// INIT: like power-on, but MSRs such as EFER and the x87/SSE state survive
    /// (SDM 3A table 10-1).
    Init,
}

/// DR6's value after reset: every reserved bit that reads as 1 (bits 4-11 and 16-31;
/// bit 16, RTM, is active low) set, and no status bit.
pub const DR6_RESET: u64 = 0xffff_0ff0;
/// DR7's value after reset: bit 10, which reads as 1, and no breakpoint enabled.
pub const DR7_RESET: u64 = 0x400;

/// The debug registers of a vCPU as the guest reads them (KVM's `struct
/// kvm_debugregs`): the breakpoint linear addresses DR0-DR3, the status register DR6
/// and the control register DR7. A debugger (a GDB stub) reads and writes the vCPU's
/// breakpoints through [`X86Ops::debug_regs`] and [`X86Ops::set_debug_regs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugRegs {
    /// DR0-DR3.
    pub db: [u64; 4],
    /// DR6.
    pub dr6: u64,
    /// DR7.
    pub dr7: u64,
}

impl Default for DebugRegs {
    /// The values after reset: DR0-DR3 zero, DR6 [`DR6_RESET`], DR7 [`DR7_RESET`].
    fn default() -> Self {
        DebugRegs {
            db: [0; 4],
            dr6: DR6_RESET,
            dr7: DR7_RESET,
        }
    }
}

/// What a debugger asks of a vCPU (KVM's `KVM_SET_GUEST_DEBUG`): stops that end
/// [`X86Ops::run`] with [`crate::Exit::Exception`] and are not delivered to the guest.
/// The core turns them into [`crate::vm::RunOutcome::Debug`] for the debugger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestDebug {
    /// Stop after the next instruction, with vector 1 (#DB) (KVM's
    /// `KVM_GUESTDBG_SINGLESTEP`). An instruction the core completes (port I/O, CPUID,
    /// ...) counts as that instruction: the next run stops before entering the guest.
    pub single_step: bool,
    /// Intercept #BP (KVM's `KVM_GUESTDBG_USE_SW_BP`): an INT3 (0xCC) stops with vector
    /// 3 before it is delivered, RIP at the INT3. A debugger that finds no breakpoint of
    /// its own there gives the trap back to the guest ([`X86Ops::set_rip`] past the INT3
    /// and [`X86Ops::inject_event`] of #BP).
    pub intercept_breakpoints: bool,
    /// Intercept #DB (KVM's `KVM_GUESTDBG_USE_HW_BP`): a debug exception stops with
    /// vector 1 before it is delivered, DR6 telling which breakpoint of DR0-DR3 matched
    /// ([`X86Ops::debug_regs`]; the debugger owns DR0-DR3 and DR7 while it sets them).
    pub intercept_debug: bool,
}

/// An event to deliver to the guest on the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// A maskable external interrupt with this vector.
    ExternalInterrupt(u8),
    /// A non-maskable interrupt.
    Nmi,
    /// An exception, with its error code where the vector has one. For #PF the core sets
    /// CR2 before queueing.
    Exception {
        /// Vector 0..31.
        vector: u8,
        /// The error code pushed by the delivery, if the vector has one.
        error_code: Option<u32>,
    },
}

/// How long one call of [`X86Ops::run`] may run the guest.
///
/// The guest time-stamp counter ticks at [`crate::platform::GUEST_TSC_HZ`]; `tsc` is its
/// value at entry and `deadline` the next core timer (APIC timer, TSC deadline), at which
/// the backend returns [`Exit::Preempted`] (VMX: the preemption timer; SVM: a host
/// timer; the emulator: an instruction count). `max_instructions` bounds the emulator's
/// time slice so the core regains control regularly; hardware backends ignore it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunLimit {
    /// Guest TSC at entry.
    pub tsc: u64,
    /// Guest TSC at which to leave with [`Exit::Preempted`], if any.
    pub deadline: Option<u64>,
    /// Instructions the emulator may retire before it leaves with [`Exit::Preempted`].
    pub max_instructions: u64,
}

/// The MSRs whose values a backend holds in its guest state ([`X86Ops::get_msr`]): what
/// [`VcpuState::msrs`] carries, in this order, for the ones the backend answers.
pub const BACKEND_MSRS: [u32; 12] = {
    use crate::msr::index as m;
    [
        m::FS_BASE,
        m::GS_BASE,
        m::KERNEL_GS_BASE,
        m::STAR,
        m::LSTAR,
        m::CSTAR,
        m::SFMASK,
        m::SYSENTER_CS,
        m::SYSENTER_ESP,
        m::SYSENTER_EIP,
        m::PAT,
        m::TSC_AUX,
    ]
};

/// Everything architectural a vCPU's backend holds, at an instruction boundary: what
/// KVM's `KVM_GET_REGS`, `KVM_GET_SREGS`, `KVM_GET_FPU`, `KVM_GET_MSRS` and
/// `KVM_GET_VCPU_EVENTS` return together. A snapshot carries one per vCPU
/// ([`crate::snapshot`]); [`X86Ops::save_state`] and [`X86Ops::restore_state`] move it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VcpuState {
    /// General registers, RIP, RFLAGS (status flags materialised).
    pub regs: Regs,
    /// ES, CS, SS, DS, FS, GS, LDTR, TR with their hidden parts, in [`SegReg`] order.
    pub segments: [Segment; 8],
    /// GDTR.
    pub gdt: DescriptorTable,
    /// IDTR.
    pub idt: DescriptorTable,
    /// CR0.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// The backend-held MSRs ([`BACKEND_MSRS`]) the backend answers, as (index, value).
    pub msrs: alloc::vec::Vec<(u32, u64)>,
    /// The x87/MMX/SSE state, if the backend holds it.
    pub fpu: Option<FxsaveArea>,
    /// In a MOV SS / STI interrupt shadow.
    pub interrupt_shadow: bool,
    /// An event injected and not yet delivered.
    pub pending_event: Option<Event>,
    /// State only this backend has (the emulator: debug registers, XCR0, PKRU, NMI blocking,
    /// its instruction count and TSC base, an INS element or MMIO store in flight), in
    /// the backend's own encoding; empty for a backend that keeps none.
    pub backend: alloc::vec::Vec<u8>,
}

/// Why a vCPU's state could not be saved or restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuStateError {
    /// The backend did not take this MSR's value.
    Msr {
        /// The MSR.
        index: u32,
    },
    /// The x87/SSE image was refused.
    Fpu(FpuStateError),
    /// An event is injected and the backend cannot report which (save), or cannot take
    /// one (restore).
    EventInFlight,
    /// The backend-specific part is bad: the field and why.
    Backend(alloc::string::String),
}

impl core::fmt::Display for VcpuStateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VcpuStateError::Msr { index } => {
                write!(f, "MSR {index:#x}: the backend does not hold it")
            }
            VcpuStateError::Fpu(e) => write!(f, "the x87/SSE state: {e}"),
            VcpuStateError::EventInFlight => {
                f.write_str("an injected event the backend cannot save or restore")
            }
            VcpuStateError::Backend(why) => write!(f, "the backend's own state: {why}"),
        }
    }
}

/// The state every backend exposes through the individual [`X86Ops`] methods (no
/// pending event, no backend part): the default [`X86Ops::save_state`].
pub fn common_vcpu_state<B: X86Ops + ?Sized>(b: &B) -> VcpuState {
    VcpuState {
        regs: b.regs(),
        segments: SegReg::ALL.map(|s| b.segment(s)),
        gdt: b.gdt(),
        idt: b.idt(),
        cr0: b.cr0(),
        cr2: b.cr2(),
        cr3: b.cr3(),
        cr4: b.cr4(),
        efer: b.efer(),
        msrs: BACKEND_MSRS
            .iter()
            .filter_map(|&i| b.get_msr(i).map(|v| (i, v)))
            .collect(),
        fpu: b.fpu_state(),
        interrupt_shadow: b.interrupt_shadow(),
        pending_event: None,
        backend: alloc::vec::Vec::new(),
    }
}

/// Load what [`common_vcpu_state`] saves, in the order a mode change needs (EFER, then
/// CR0, CR4, CR3, then the segments), then flush every translation. The pending event
/// and the backend part are the caller's.
pub fn restore_common_vcpu_state<B: X86Ops + ?Sized>(
    b: &mut B,
    s: &VcpuState,
) -> Result<(), VcpuStateError> {
    if let Some(fpu) = &s.fpu {
        b.set_fpu_state(fpu).map_err(VcpuStateError::Fpu)?;
    }
    b.set_efer(s.efer);
    b.set_cr0(s.cr0);
    b.set_cr4(s.cr4);
    b.set_cr3(s.cr3);
    b.set_cr2(s.cr2);
    // set_cr0 derives LMA from LME and PG; the saved value is what the guest had.
    b.set_efer(s.efer);
    for (seg, value) in SegReg::ALL.iter().zip(&s.segments) {
        b.set_segment(*seg, value);
    }
    b.set_gdt(s.gdt);
    b.set_idt(s.idt);
    for &(index, value) in &s.msrs {
        if !b.set_msr(index, value) {
            return Err(VcpuStateError::Msr { index });
        }
    }
    b.set_regs(&s.regs);
    b.set_interrupt_shadow(s.interrupt_shadow);
    b.flush_tlb_all();
    Ok(())
}

/// The core's answer to exits that it can give during a backend's run
/// ([`X86Ops::run_with`]).
pub trait ExitSink {
    /// Whether `exit` may be one the sink takes: a quick look, before the backend copies
    /// the exit out for [`ExitSink::take`] (which may still decline it). `false` sends the
    /// exit back from the run at once.
    fn may_take(&self, exit: &Exit) -> bool;
    /// Answer `exit`, which `vcpu` has just made, if it is one the sink takes: then the
    /// exit is complete, counted and observed as the run loop would, and the run loop
    /// would have re-entered the vCPU at once, so the backend goes on (`true`). `false`
    /// leaves the exit and the vCPU untouched, for the backend to return.
    fn take<B: X86Ops>(&mut self, vcpu: &mut B, exit: &Exit) -> bool;
}

/// The sink that takes no exit: [`X86Ops::run_with`] with it is [`X86Ops::run`].
pub struct NoExitSink;

impl ExitSink for NoExitSink {
    #[inline(always)]
    fn may_take(&self, _: &Exit) -> bool {
        false
    }
    #[inline(always)]
    fn take<B: X86Ops>(&mut self, _: &mut B, _: &Exit) -> bool {
        false
    }
}

/// The backend operations (Linux KVM's `struct kvm_x86_ops`).
///
/// Calling convention, as in KVM: after an intercepted instruction exit (CPUID, RDMSR,
/// WRMSR, HLT, port I/O, ...), the guest's RIP still points at the instruction; the core
/// performs it (writing results with [`X86Ops::set_gpr`]) and then calls
/// [`X86Ops::skip_emulated_instruction`], or queues an exception instead (for instance
/// #GP for an unknown MSR) and leaves RIP where it is. Port input and MMIO reads finish
/// with [`X86Ops::complete_pio_in`] and [`X86Ops::complete_mmio`], which also retire the
/// instruction.
#[enum_dispatch]
pub trait X86Ops {
    // ---- identity and lifetime ----

    /// The backend's short name ("vmx", "svm", "emu").
    fn name(&self) -> &'static str;

    /// Reset the vCPU to its power-on or INIT state (KVM `vcpu_reset`).
    fn vcpu_reset(&mut self, kind: ResetKind);

    // ---- the CPU model (KVM `KVM_GET_SUPPORTED_CPUID`, `vcpu_after_set_cpuid`) ----

    /// Every leaf and feature this backend can offer a guest (KVM's
    /// `KVM_GET_SUPPORTED_CPUID`): a CPU model ([`crate::cpu_model`]) is cut down from
    /// what all the backends in use support.
    fn supported_cpuid(&self) -> CpuidPolicy;
    /// The guest's CPU model (KVM's `vcpu_after_set_cpuid`): from here on the backend
    /// offers exactly its features, so CR4 bits of features the model does not report
    /// raise #GP and instructions of such features raise #UD where the processor lets the
    /// backend decide.
    fn set_cpuid(&mut self, policy: &CpuidPolicy);

    // ---- general registers, RIP, RFLAGS (KVM `cache_reg`, `get_rflags`, ...) ----

    /// Read one general register.
    fn gpr(&self, reg: Gpr) -> u64;
    /// Write one general register.
    fn set_gpr(&mut self, reg: Gpr, value: u64);
    /// Read RIP.
    fn rip(&self) -> u64;
    /// Write RIP.
    fn set_rip(&mut self, rip: u64);
    /// Read RFLAGS.
    fn rflags(&self) -> u64;
    /// Write RFLAGS.
    fn set_rflags(&mut self, rflags: u64);

    /// All general registers, RIP and RFLAGS at once.
    fn regs(&self) -> Regs {
        let mut regs = Regs {
            rip: self.rip(),
            rflags: self.rflags(),
            ..Regs::default()
        };
        for reg in Gpr::ALL {
            regs.gpr[reg as usize] = self.gpr(reg);
        }
        regs
    }
    /// Set all general registers, RIP and RFLAGS at once.
    fn set_regs(&mut self, regs: &Regs) {
        for reg in Gpr::ALL {
            self.set_gpr(reg, regs.gpr[reg as usize]);
        }
        self.set_rip(regs.rip);
        self.set_rflags(regs.rflags);
    }

    // ---- segments, control registers, EFER, descriptor tables (KVM `get_segment`, ...) ----

    /// Read a segment register with its hidden part.
    fn segment(&self, seg: SegReg) -> Segment;
    /// Load a segment register, hidden part included, with no descriptor checks.
    fn set_segment(&mut self, seg: SegReg, value: &Segment);
    /// The current privilege level.
    fn cpl(&self) -> u8;
    /// Read CR0.
    fn cr0(&self) -> u64;
    /// Write CR0 (the backend applies any mode change it implies).
    fn set_cr0(&mut self, value: u64);
    /// Read CR2.
    fn cr2(&self) -> u64;
    /// Write CR2.
    fn set_cr2(&mut self, value: u64);
    /// Read CR3.
    fn cr3(&self) -> u64;
    /// Write CR3 (flushes the non-global TLB entries, as the instruction does).
    fn set_cr3(&mut self, value: u64);
    /// Read CR4.
    fn cr4(&self) -> u64;
    /// Write CR4.
    fn set_cr4(&mut self, value: u64);
    /// Read IA32_EFER.
    fn efer(&self) -> u64;
    /// Write IA32_EFER.
    fn set_efer(&mut self, value: u64);
    /// Read GDTR.
    fn gdt(&self) -> DescriptorTable;
    /// Write GDTR.
    fn set_gdt(&mut self, table: DescriptorTable);
    /// Read IDTR.
    fn idt(&self) -> DescriptorTable;
    /// Write IDTR.
    fn set_idt(&mut self, table: DescriptorTable);

    // ---- XCR0 and the debug registers ----

    /// XCR0, the XSAVE feature mask (KVM's `vcpu->arch.xcr0`). A backend that offers no
    /// XSAVE reports the x87 component alone, as XCR0 reads on such a processor's
    /// successors after reset.
    fn xcr0(&self) -> u64 {
        crate::arch::XCR0_X87
    }
    /// Load XCR0 with a value the core has checked against the CPU model (XSETBV). The
    /// core calls it only for a model with XSAVE, which only a backend that supports
    /// XSAVE reports: backends without XSAVE have nothing to load.
    fn set_xcr0(&mut self, value: u64) {
        let _ = value;
    }
    /// DR0-DR3, DR6 and DR7 as the guest reads them.
    fn debug_regs(&self) -> DebugRegs;
    /// Load DR0-DR3, DR6 and DR7 (a debugger setting breakpoints). DR6 and DR7 keep their
    /// fixed bits whatever `regs` holds there.
    fn set_debug_regs(&mut self, regs: &DebugRegs);

    /// What a debugger asks for ([`GuestDebug`]); all false: nothing, the guest runs as
    /// without one. `Err` names what this backend cannot do; it then keeps what it had.
    fn set_guest_debug(&mut self, debug: GuestDebug) -> Result<(), &'static str> {
        if debug == GuestDebug::default() {
            Ok(())
        } else {
            Err("this backend has no debugger stops")
        }
    }

    // ---- MSRs whose state the backend holds (KVM `get_msr`, `set_msr`) ----

    /// Read an MSR whose value lives in the backend's guest state (FS/GS base,
    /// KERNEL_GS_BASE, STAR/LSTAR/CSTAR/SFMASK, SYSENTER_*, PAT, ...); `None` if this
    /// backend does not hold it, in which case the core's MSR table answers.
    fn get_msr(&self, index: u32) -> Option<u64>;
    /// Write such an MSR; `false` if this backend does not hold it.
    fn set_msr(&mut self, index: u32, value: u64) -> bool;

    // ---- running ----

    /// Run the guest until something the core must handle happens.
    fn run(&mut self, mem: &mut GuestMemory, limit: &RunLimit) -> Exit;
    /// [`X86Ops::run`], offering each exit to `sink` first and running on under the same
    /// `limit` when the sink answers it: a backend that can go on in place after an exit
    /// (the emulator) saves the way out to the core and back in. A backend that cannot
    /// returns every exit, as `run` does; so does this default.
    #[inline(always)]
    fn run_with<Sink: ExitSink>(
        &mut self,
        mem: &mut GuestMemory,
        limit: &RunLimit,
        sink: &mut Sink,
    ) -> Exit {
        let _ = sink;
        self.run(mem, limit)
    }
    /// Retire the instruction that caused the last intercepted exit (KVM
    /// `skip_emulated_instruction`), including the end of an interrupt shadow.
    fn skip_emulated_instruction(&mut self);
    /// Finish an `IN`/`INS` exit with the value read from the port, and retire it.
    fn complete_pio_in(&mut self, value: u32);
    /// Finish an MMIO exit: `read` holds the value for a read, `None` for a write; the
    /// backend completes and retires the instruction.
    fn complete_mmio(&mut self, read: Option<u64>);

    // ---- interrupt shadow and event injection (KVM `get_interrupt_shadow`, `inject_irq`, ...) ----

    /// Whether the guest is in a MOV SS / STI interrupt shadow.
    fn interrupt_shadow(&self) -> bool;
    /// Set or clear the interrupt shadow.
    fn set_interrupt_shadow(&mut self, shadow: bool);
    /// Whether a maskable interrupt could be delivered now (RFLAGS.IF set, no shadow, no
    /// event already queued).
    fn interrupt_allowed(&self) -> bool;
    /// Whether an NMI could be delivered now.
    fn nmi_allowed(&self) -> bool;
    /// Queue an event for delivery on the next entry.
    fn inject_event(&mut self, event: Event);
    /// Whether an event is queued and not yet delivered.
    fn event_pending(&self) -> bool;
    /// Ask for [`Exit::InterruptWindow`] as soon as a maskable interrupt can be delivered.
    fn enable_irq_window(&mut self, enable: bool);
    /// Ask for [`Exit::NmiWindow`] as soon as an NMI can be delivered.
    fn enable_nmi_window(&mut self, enable: bool);

    // ---- TLB ----

    /// Flush every translation, global ones included.
    fn flush_tlb_all(&mut self);
    /// Flush the translations of the current address space (CR3 reload).
    fn flush_tlb_current(&mut self) {
        self.flush_tlb_all();
    }
    /// Flush the translation of one guest-virtual address (INVLPG).
    fn flush_tlb_gva(&mut self, gva: u64) {
        let _ = gva;
        self.flush_tlb_all();
    }

    // ---- second-level translation and time (optional) ----

    /// Load the root of the second-level page tables (EPT/NPT) built by the core. Backends
    /// without second-level translation ignore it.
    fn load_slat_root(&mut self, root: u64) {
        let _ = root;
    }
    /// Set the offset added to the host's time stamp counter for the guest.
    fn set_tsc_offset(&mut self, offset: i64) {
        let _ = offset;
    }
    /// Guest instructions retired so far, where the backend counts them.
    fn instructions_retired(&self) -> Option<u64> {
        None
    }
    /// The guest's TSC as RDTSC would read it at this point, where the backend counts it
    /// itself between the core's clock reads (the emulator: the [`RunLimit::tsc`] it
    /// last entered with plus one tick per instruction retired since); `None` where the
    /// processor counts it, and the core reads the clock instead.
    fn guest_tsc(&self) -> Option<u64> {
        None
    }
    /// Report every PAUSE as [`Exit::Pause`] (on), or run it as the hint it is (off, the
    /// reset state): a machine of several vCPUs sharing one host thread switches to
    /// another vCPU when one spins (KVM's PAUSE exiting). Backends that cannot report it
    /// ignore the request; their vCPUs then give way only at the end of a turn.
    fn set_pause_exiting(&mut self, on: bool) {
        let _ = on;
    }

    // ---- x87/MMX/SSE state (optional; KVM's `KVM_GET_FPU`/`KVM_SET_FPU`) ----

    /// The guest's x87/MMX/SSE state as a 512-byte FXSAVE image in the 64-bit layout
    /// (all sixteen XMM registers; see [`crate::fpu`]); `None` if this backend does not
    /// hold it. MXCSR_MASK in the image tells which MXCSR bits the backend supports.
    fn fpu_state(&self) -> Option<FxsaveArea> {
        None
    }
    /// Load the guest's x87/MMX/SSE state from an FXSAVE image (64-bit layout; its
    /// MXCSR_MASK and reserved bytes are ignored, as FXRSTOR ignores them). An image the
    /// processor would refuse (MXCSR bits outside the backend's MXCSR_MASK) is an
    /// error and changes nothing; [`FpuStateError::Unsupported`] if this backend does
    /// not hold the state.
    fn set_fpu_state(&mut self, state: &FxsaveArea) -> Result<(), FpuStateError> {
        let _ = state;
        Err(FpuStateError::Unsupported)
    }
    // ---- whole-vCPU state (snapshots; KVM's `KVM_GET_*`/`KVM_SET_*` together) ----

    /// The vCPU's whole architectural state at an instruction boundary. The default
    /// gathers it through the methods above and refuses while an event is injected and
    /// not delivered (it has no way to read which).
    fn save_state(&self) -> Result<VcpuState, VcpuStateError> {
        if self.event_pending() {
            return Err(VcpuStateError::EventInFlight);
        }
        Ok(common_vcpu_state(self))
    }
    /// Load a state [`X86Ops::save_state`] gave, flushing every cached translation. The
    /// default loads it through the methods above and injects the pending event; a
    /// backend part it does not know is refused.
    fn restore_state(&mut self, state: &VcpuState) -> Result<(), VcpuStateError> {
        if !state.backend.is_empty() {
            return Err(VcpuStateError::Backend(alloc::format!(
                "{} bytes this backend does not keep",
                state.backend.len()
            )));
        }
        restore_common_vcpu_state(self, state)?;
        if let Some(event) = state.pending_event {
            self.inject_event(event);
        }
        Ok(())
    }
}

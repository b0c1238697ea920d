//! The architectural state of the emulated CPU and the derived mode.

use crate::arith::flags::{mask, VM};
use crate::exception::{Ex, GP};
use crate::mem::{RamMap, Tlb};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use opsvisor_core::ops::{DescriptorTable, SegReg, Segment};

/// CR0 bits.
pub mod cr0 {
    /// Protection enable.
    pub const PE: u64 = 1;
    /// Monitor coprocessor.
    pub const MP: u64 = 1 << 1;
    /// x87 emulation.
    pub const EM: u64 = 1 << 2;
    /// Task switched.
    pub const TS: u64 = 1 << 3;
    /// Extension type (hard-wired to 1).
    pub const ET: u64 = 1 << 4;
    /// Numeric error.
    pub const NE: u64 = 1 << 5;
    /// Write protect.
    pub const WP: u64 = 1 << 16;
    /// Alignment mask.
    pub const AM: u64 = 1 << 18;
    /// Not write-through.
    pub const NW: u64 = 1 << 29;
    /// Cache disable.
    pub const CD: u64 = 1 << 30;
    /// Paging.
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits.
pub mod cr4 {
    /// Virtual-8086 mode extensions.
    pub const VME: u64 = 1;
    /// Protected-mode virtual interrupts.
    pub const PVI: u64 = 1 << 1;
    /// Time stamp disable (RDTSC at CPL>0 faults).
    pub const TSD: u64 = 1 << 2;
    /// Debugging extensions.
    pub const DE: u64 = 1 << 3;
    /// Page size extensions.
    pub const PSE: u64 = 1 << 4;
    /// Physical address extension.
    pub const PAE: u64 = 1 << 5;
    /// Machine check enable.
    pub const MCE: u64 = 1 << 6;
    /// Page global enable.
    pub const PGE: u64 = 1 << 7;
    /// Performance counter enable.
    pub const PCE: u64 = 1 << 8;
    /// FXSAVE/FXRSTOR support.
    pub const OSFXSR: u64 = 1 << 9;
    /// Unmasked SIMD exceptions.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// UMIP.
    pub const UMIP: u64 = 1 << 11;
    /// 57-bit linear addresses, 5-level paging.
    pub const LA57: u64 = 1 << 12;
    /// FSGSBASE instructions.
    pub const FSGSBASE: u64 = 1 << 16;
    /// PCID.
    pub const PCIDE: u64 = 1 << 17;
    /// XSAVE and the extended states enabled by XCR0.
    pub const OSXSAVE: u64 = 1 << 18;
    /// SMEP.
    pub const SMEP: u64 = 1 << 20;
    /// SMAP.
    pub const SMAP: u64 = 1 << 21;
    /// Protection keys for user-mode pages.
    pub const PKE: u64 = 1 << 22;
    /// Bits whose change invalidates every translation.
    pub const PAGING: u64 = PSE | PAE | PGE | PCIDE | SMEP | SMAP | PKE | LA57;
}

/// EFER bits.
pub mod efer {
    /// SYSCALL enable.
    pub const SCE: u64 = 1;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active.
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
    /// The writable bits.
    pub const ALLOWED: u64 = SCE | LME | LMA | NXE;
}

/// Segment register indices into [`Cpu::seg`] (the encoding order of [`SegReg`]).
pub mod sr {
    /// ES.
    pub const ES: u8 = 0;
    /// CS.
    pub const CS: u8 = 1;
    /// SS.
    pub const SS: u8 = 2;
    /// DS.
    pub const DS: u8 = 3;
    /// FS.
    pub const FS: u8 = 4;
    /// GS.
    pub const GS: u8 = 5;
    /// LDTR.
    pub const LDTR: u8 = 6;
    /// TR.
    pub const TR: u8 = 7;
}

/// The new value of a register that an instruction updates at address size `mask`
/// (RSI/RDI/RCX of string instructions, RCX of LOOP): a 16-bit update keeps the upper
/// bits, a 32-bit one is a 32-bit register write and clears them (SDM 1 3.4.1.1).
#[inline(always)]
pub fn addr_reg_write(old: u64, new: u64, mask: u64) -> u64 {
    if mask == 0xffff {
        (old & !mask) | (new & mask)
    } else {
        new & mask
    }
}

/// Index of the always-zero pseudo register used for "no base"/"no index".
pub const ZERO_REG: u8 = 16;

/// The low bits of [`Cpu::fetch_gen`] that hold the fetch mode: 0 outside 64-bit code,
/// 1 + CPL in it.
pub const FETCH_MODE_BITS: u32 = 3;
const FETCH_MODE_MASK: u64 = (1 << FETCH_MODE_BITS) - 1;

/// Entries of [`Cpu::gpr`]: the 16 registers and 16 always-zero ones, a power of two.
pub const GPR_SLOTS: usize = 32;
const _: () = assert!((ZERO_REG as usize) < GPR_SLOTS && GPR_SLOTS.is_power_of_two());

/// The instruction an intercept exit stopped at, kept so the core's completion call can
/// finish it.
#[derive(Clone, Copy, Debug)]
pub struct Intercept {
    /// RIP after the instruction.
    pub next_ip: u64,
    /// What completion does.
    pub kind: InterceptKind,
}

/// How an intercepted instruction completes.
#[derive(Clone, Copy, Debug)]
pub enum InterceptKind {
    /// Only RIP moves (CPUID, RDMSR, WRMSR, HLT, OUT).
    Plain,
    /// IN: the value goes to AL/AX/EAX.
    In {
        /// Access size (1, 2, 4).
        size: u8,
    },
    /// A plain load (`MOV r, m`) whose MMIO read exited: the value the core supplies goes
    /// to the register and the instruction retires, without executing it again.
    MmioLoad {
        /// Register code of the destination (see [`Cpu::set`]).
        reg: u8,
        /// Load size (1, 2, 4, 8).
        size: u8,
    },
    /// One element of INS (`gpa` is the checked destination) or OUTS.
    Str {
        /// Element size.
        size: u8,
        /// INS (true) or OUTS.
        ins: bool,
        /// REP prefix.
        rep: bool,
        /// Address-size mask of RSI/RDI/RCX.
        amask: u64,
        /// Destination of an INS element.
        gpa: u64,
        /// Destination of the INS element's bytes on the next page, when it crosses a
        /// page boundary (each page is translated on its own).
        gpa2: u64,
    },
}

/// One completed MMIO read, replayed when the instruction re-executes.
#[derive(Clone, Copy, Debug, Default)]
pub struct MmioRead {
    /// Guest-physical address.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u8,
    /// The value the core supplied.
    pub value: u64,
}

/// MMIO bookkeeping for the instruction in progress.
#[derive(Clone, Copy, Debug, Default)]
pub struct MmioState {
    /// Reads completed so far, in program order.
    pub log: [MmioRead; 4],
    /// Entries in `log`.
    pub len: u8,
    /// Entries consumed by the current execution.
    pub pos: u8,
    /// The read the last exit asked for.
    pub want: Option<(u64, u8)>,
    /// A store to MMIO made by the instruction just retired: (gpa, size, data).
    pub write: Option<(u64, u8, u64)>,
    /// A second store to MMIO by the same instruction (the upper part of a store that
    /// straddles two pages outside RAM), reported after `write`.
    pub write2: Option<(u64, u8, u64)>,
}

impl MmioState {
    /// The next MMIO store to report, in program order.
    pub fn take_write(&mut self) -> Option<(u64, u8, u64)> {
        let w = self.write.take();
        self.write = self.write2.take();
        w
    }
}

/// The architectural state plus the emulator's per-vCPU caches.
pub struct Cpu {
    /// RAX..R15, then always-zero entries: [`ZERO_REG`] (the 17th) stands for "no base"
    /// or "no index", and the table is 32 long so that a memory operand's register codes
    /// index it masked to 5 bits, without a bounds check (see `exec::ea`).
    pub gpr: [u64; GPR_SLOTS],
    /// RIP.
    pub rip: u64,
    /// RFLAGS, raw: its status flags are stale while [`Cpu::lz`] holds a record (see
    /// [`crate::lazy`]); read them through [`Cpu::rflags`], write through
    /// [`Cpu::set_rflags`]. The other bits are always current.
    pub rf: u64,
    /// The last flag-setting instruction, if its flags are not in [`Cpu::rf`] yet.
    pub lz: crate::lazy::Lazy,
    /// ES CS SS DS FS GS LDTR TR with their hidden parts.
    pub seg: [Segment; 8],
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
    /// GDTR.
    pub gdtr: DescriptorTable,
    /// IDTR.
    pub idtr: DescriptorTable,
    /// DR0..DR7.
    pub dr: [u64; 8],
    /// STAR.
    pub star: u64,
    /// LSTAR.
    pub lstar: u64,
    /// CSTAR.
    pub cstar: u64,
    /// SFMASK.
    pub sfmask: u64,
    /// KERNEL_GS_BASE.
    pub kernel_gs_base: u64,
    /// TSC_AUX.
    pub tsc_aux: u64,
    /// SYSENTER_CS.
    pub sysenter_cs: u64,
    /// SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// PAT.
    pub pat: u64,
    /// IA32_DEBUGCTL (BTF).
    pub debugctl: u64,
    /// XCR0.
    pub xcr0: u64,
    /// PKRU: access-disable and write-disable bits for the 16 protection keys.
    pub pkru: u32,
    /// What the guest's CPU model offers (see [`crate::features`]).
    pub feat: crate::features::Features,
    /// x87, MMX and SSE registers.
    pub fpu: crate::fpu::Fpu,
    /// Current privilege level.
    pub cpl: u8,
    /// Code size: 16, 32 or 64.
    pub bits: u8,
    /// STI / MOV SS shadow: interrupts are blocked until the next instruction retires.
    pub shadow: bool,
    /// The shadow is a MOV SS / POP SS one, which also holds back debug traps until
    /// after the next instruction (an STI shadow does not).
    pub ss_shadow: bool,
    /// DR7 enables a breakpoint: every instruction takes the loop's slow path, which
    /// checks the debug conditions (see [`crate::debug`]).
    pub dbg: bool,
    /// DR7 enables a data breakpoint: pages holding one take no fast-access TLB tag.
    pub dbg_data: bool,
    /// Data and I/O breakpoint conditions (bit `n` for DR`n`) the current instruction
    /// met.
    pub db_hits: u8,
    /// DR6 bits of the debug trap held back by a MOV SS / POP SS shadow, raised after the
    /// next instruction.
    pub db_held: u64,
    /// DR6 bits of the debug trap due when the intercepted instruction completes (its
    /// single-step and I/O breakpoints), with [`crate::debug::AFTER_SKIP`] when there is
    /// debug work to do then (0: none).
    pub db_after: u64,
    /// NMIs blocked (between NMI delivery and IRET).
    pub nmi_blocked: bool,
    /// Exceptions and software interrupts end the run instead of being delivered (see
    /// [`crate::EmuVcpu::set_event_exits`]).
    pub event_exits: bool,
    /// PAUSE ends the run with [`opsvisor_core::exit::Exit::Pause`] (see
    /// [`opsvisor_core::ops::X86Ops::set_pause_exiting`]).
    pub pause_exits: bool,
    /// Set by a handler when the current block must end after this instruction (mode,
    /// paging, shadow, self-modifying code, MMIO store).
    pub brk: bool,
    /// The translation cache.
    pub tlb: Tlb,
    /// What a translated run that accesses memory reads and reports (see
    /// [`crate::jit::JitCtx`]).
    pub jit: crate::jit::JitCtx,
    /// The first instruction of the translated run that last stopped before it, decoded
    /// alone (see `jit::stopped`): a run whose first access keeps stopping it (a device
    /// register polled in a loop, a load that misses the TLB) decodes it once. Boxed, so
    /// that it takes one word here (a larger `Cpu` lays out its hot fields worse);
    /// allocated when the first run that may stop is translated, and then rewritten in
    /// place, so that a stop never allocates.
    pub jit_first: Option<alloc::boxed::Box<crate::decode::Op>>,
    /// The host memory backing guest RAM during a run.
    pub ram: RamMap,
    /// MMIO replay state.
    pub mmio: MmioState,
    /// The intercepted instruction awaiting completion.
    pub intercept: Option<Intercept>,
    /// An INS element to store on the next run: (gpa, size, value, gpa of the bytes on
    /// the next page).
    pub ins_store: Option<(u64, u8, u32, u64)>,
    /// Instructions retired since creation.
    pub retired: u64,
    /// The count of retired instructions at which the current run stops (at the end of
    /// the block that reaches it; a translated loop stops there too).
    pub stop_at: u64,
    /// The last guest TSC the core handed over (`RunLimit::tsc`).
    pub tsc_entry: u64,
    /// `retired` when `tsc_entry` was handed over. The core re-reads its clock only now
    /// and then, so several runs may start from the same `tsc_entry`: counting from here
    /// rather than from the start of each run keeps the guest's TSC from stepping back.
    pub tsc_base_retired: u64,
    /// Code pages written since the last check: their blocks must go.
    pub smc_pages: Vec<u64>,
    /// Per RAM page, by its dense index ([`crate::mem::RamMap::page_slot`]): which
    /// 128-byte chunks hold decoded code.
    pub code_chunks: Vec<u32>,
    /// This vCPU's identity in the machine's shared record of code pages
    /// ([`opsvisor_core::mmu::code_pages::CodePages`]; 0 before the first run).
    pub code_reader: u32,
    /// The shared record's events this vCPU has looked at.
    pub code_seen: u64,
    /// What the decoded blocks' links and the jump cache are valid under: an epoch
    /// (above [`FETCH_MODE_BITS`]) that moves whenever cached translations or blocks may
    /// have become stale, and the fetch mode (below). See [`Cpu::update_mode`].
    pub fetch_gen: u64,
    /// The exit an [`Ex::Exit`] result stands for.
    pub exit: opsvisor_core::exit::Exit,
    /// Executions of unimplemented instructions, by mnemonic.
    pub unimpl: BTreeMap<u16, (iced_x86::Mnemonic, u64)>,
}

impl Default for Cpu {
    fn default() -> Self {
        Self::new()
    }
}

impl Cpu {
    /// A CPU in an all-zero state; [`crate::reset`] gives it its reset values.
    pub fn new() -> Cpu {
        Cpu {
            gpr: [0; GPR_SLOTS],
            rip: 0,
            rf: 2,
            lz: crate::lazy::Lazy::default(),
            seg: [Segment::default(); 8],
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            gdtr: DescriptorTable::default(),
            idtr: DescriptorTable::default(),
            dr: [0; 8],
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            kernel_gs_base: 0,
            tsc_aux: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            pat: 0x0007_0406_0007_0406,
            debugctl: 0,
            xcr0: 1,
            pkru: 0,
            feat: crate::features::Features::default(),
            fpu: crate::fpu::Fpu::default(),
            cpl: 0,
            bits: 16,
            shadow: false,
            ss_shadow: false,
            dbg: false,
            dbg_data: false,
            db_hits: 0,
            db_held: 0,
            db_after: 0,
            nmi_blocked: false,
            event_exits: false,
            pause_exits: false,
            brk: false,
            tlb: Tlb::new(),
            jit: crate::jit::JitCtx::default(),
            jit_first: None,
            ram: RamMap::default(),
            mmio: MmioState::default(),
            intercept: None,
            ins_store: None,
            retired: 0,
            stop_at: 0,
            tsc_entry: 0,
            tsc_base_retired: 0,
            smc_pages: Vec::with_capacity(8),
            code_chunks: Vec::new(),
            code_reader: 0,
            code_seen: 0,
            fetch_gen: 1 << FETCH_MODE_BITS,
            unimpl: BTreeMap::new(),
            exit: opsvisor_core::exit::Exit::Preempted,
        }
    }

    /// Recompute the code size and CPL after CS, CR0 or EFER changed.
    pub fn update_mode(&mut self) {
        let cs = &self.seg[sr::CS as usize];
        self.bits = if self.cr0 & cr0::PE == 0 || self.rf & VM != 0 {
            16
        } else if self.efer & efer::LMA != 0 && cs.attr & Segment::L != 0 {
            64
        } else if cs.attr & Segment::DB != 0 {
            32
        } else {
            16
        };
        self.cpl = if self.cr0 & cr0::PE == 0 {
            0
        } else if self.rf & VM != 0 {
            3
        } else {
            cs.dpl()
        };
        self.update_sel();
        // A link made in 64-bit code at one CPL holds again when the vCPU comes back to
        // that CPL with nothing else changed: there the fetch depends on the mode only
        // through the CPL (no CS base or limit), and every change of translations, of
        // CR0/CR4/EFER and of code starts a new epoch. Without this, every system call,
        // interrupt and return dropped all links, and a Linux guest went through the
        // block table after each. Other modes start a new epoch at each change, as CS's
        // base and limit take part in the fetch there.
        let mode = if self.bits == 64 {
            1 + u64::from(self.cpl)
        } else {
            0
        };
        if mode == 0 || self.fetch_gen & FETCH_MODE_MASK == 0 {
            self.new_fetch_epoch();
        }
        self.fetch_gen = self.fetch_gen & !FETCH_MODE_MASK | mode;
        self.brk = true;
    }

    /// Start a new fetch epoch: every link and jump-cache entry made before is stale.
    #[inline]
    pub fn new_fetch_epoch(&mut self) {
        self.fetch_gen = self.fetch_gen.wrapping_add(1 << FETCH_MODE_BITS);
    }

    /// Choose the TLB class of explicit accesses ([`crate::mem::Tlb::sel`]) after CPL,
    /// RFLAGS.AC or CR4.SMAP changed: user (CPL 3), supervisor, or supervisor with SMAP
    /// overridden by AC.
    #[inline]
    pub fn update_sel(&mut self) {
        self.tlb.sel = if self.cpl == 3 {
            crate::mem::USER
        } else if self.cr4 & cr4::SMAP != 0 && self.rf & crate::arith::flags::AC != 0 {
            crate::mem::SUPERVISOR_AC
        } else {
            crate::mem::SUPERVISOR
        };
    }

    /// Whether `la` is canonical for the paging mode in use: sign-extended from bit 47,
    /// or from bit 56 with CR4.LA57 (SDM 3A 4.5).
    #[inline]
    pub fn canonical(&self, la: u64) -> bool {
        if self.cr4 & cr4::LA57 != 0 {
            ((la as i64) << 7 >> 7) as u64 == la
        } else {
            crate::mem::canonical(la)
        }
    }

    /// Whether `la` is canonical for the widest linear address the processor supports
    /// (57 bits with LA57 in the CPU model): the check of addresses loaded into
    /// registers rather than used for an access (WRFSBASE, LGDT, ...), which does not
    /// depend on CR4.LA57.
    #[inline]
    pub fn canonical_max(&self, la: u64) -> bool {
        let shift = 64 - self.feat.max_la_bits;
        ((la as i64) << shift >> shift) as u64 == la
    }

    /// Whether the CPU is in 64-bit mode.
    #[inline(always)]
    pub fn long64(&self) -> bool {
        self.bits == 64
    }

    /// Whether long mode is active (64-bit or compatibility mode).
    #[inline(always)]
    pub fn lma(&self) -> bool {
        self.efer & efer::LMA != 0
    }

    /// Whether the CPU is in protected mode (not real mode, not virtual-8086).
    #[inline(always)]
    pub fn protected(&self) -> bool {
        self.cr0 & cr0::PE != 0 && self.rf & VM == 0
    }

    /// Read a register by operand code: bits 0-3 the register number, bit 4 set for
    /// AH/CH/DH/BH.
    #[inline(always)]
    pub fn get(&self, code: u8, size: u32) -> u64 {
        if code & 0x10 != 0 {
            (self.gpr[usize::from(code & 3)] >> 8) & 0xff
        } else {
            self.gpr[usize::from(code & 0xf)] & mask(size)
        }
    }

    /// Write a register by operand code with the x86 merge rules: 8- and 16-bit writes
    /// keep the other bits, 32-bit writes zero the upper half.
    #[inline(always)]
    pub fn set(&mut self, code: u8, size: u32, v: u64) {
        if code & 0x10 != 0 {
            let r = &mut self.gpr[usize::from(code & 3)];
            *r = (*r & !0xff00) | ((v & 0xff) << 8);
            return;
        }
        let r = &mut self.gpr[usize::from(code & 0xf)];
        *r = match size {
            1 => (*r & !0xff) | (v & 0xff),
            2 => (*r & !0xffff) | (v & 0xffff),
            4 => v & 0xffff_ffff,
            _ => v,
        };
    }

    /// [`Cpu::get`] for a size known when the handler was chosen (1, 2, 4; anything else
    /// is 8). Only byte registers carry the AH..BH bit, so wider sizes skip that test.
    #[inline(always)]
    pub fn get_s<const S: u8>(&self, code: u8) -> u64 {
        if S == 1 {
            self.get(code, 1)
        } else {
            self.gpr[usize::from(code & 0xf)] & mask(u32::from(S))
        }
    }

    /// [`Cpu::set`] for a size known when the handler was chosen (see [`Cpu::get_s`]).
    #[inline(always)]
    pub fn set_s<const S: u8>(&mut self, code: u8, v: u64) {
        match S {
            1 => self.set(code, 1, v),
            2 => {
                let r = &mut self.gpr[usize::from(code & 0xf)];
                *r = (*r & !0xffff) | (v & 0xffff);
            }
            4 => self.gpr[usize::from(code & 0xf)] = v & 0xffff_ffff,
            _ => self.gpr[usize::from(code & 0xf)] = v,
        }
    }

    /// The stack address size mask (SS.B, or 64-bit mode).
    #[inline(always)]
    pub fn stack_mask(&self) -> u64 {
        if self.bits == 64 {
            u64::MAX
        } else if self.protected() && self.seg[sr::SS as usize].attr & Segment::DB != 0 {
            0xffff_ffff
        } else {
            0xffff
        }
    }

    /// The IOPL field of RFLAGS.
    #[inline]
    pub fn iopl(&self) -> u8 {
        ((self.rf >> 12) & 3) as u8
    }

    /// #GP(0) unless CPL is 0.
    #[inline]
    pub fn require_cpl0(&self) -> Result<(), Ex> {
        if self.cpl != 0 {
            Err(GP(0))
        } else {
            Ok(())
        }
    }

    /// Read a segment as the [`SegReg`] API sees it.
    pub fn segment(&self, s: SegReg) -> Segment {
        self.seg[s as usize]
    }

    /// Guest TSC as of now: the core's last value plus one tick per instruction retired
    /// since the core handed it over.
    #[inline]
    pub fn tsc(&self) -> u64 {
        self.tsc_entry
            .wrapping_add(self.retired.wrapping_sub(self.tsc_base_retired))
    }

    /// Leave with exit `x` (see [`Ex::Exit`]).
    #[inline]
    pub fn exit_with(&mut self, x: opsvisor_core::exit::Exit) -> Ex {
        self.exit = x;
        Ex::Exit
    }

    /// Leave with an emulation failure at the current instruction.
    pub fn fail(&mut self) -> Ex {
        self.exit_with(opsvisor_core::exit::Exit::EmulationFailure { rip: self.rip })
    }

    /// Record an unimplemented instruction.
    pub fn count_unimplemented(&mut self, m: iced_x86::Mnemonic) {
        let e = self.unimpl.entry(m as u16).or_insert((m, 0));
        e.1 = e.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vCPU in 64-bit code with CS's DPL `cpl`.
    fn long_mode(c: &mut Cpu, cpl: u16) {
        c.cr0 |= cr0::PE;
        c.efer |= efer::LMA;
        c.seg[sr::CS as usize] = Segment::flat(0x8 | cpl, Segment::CODE64 | (u32::from(cpl) << 5));
        c.update_mode();
    }

    #[test]
    fn links_made_at_a_cpl_hold_again_on_return_unless_the_epoch_moved() {
        let mut c = Cpu::new();
        long_mode(&mut c, 0);
        assert_eq!((c.bits, c.cpl), (64, 0));
        let kernel = c.fetch_gen;
        long_mode(&mut c, 3);
        assert_eq!(c.cpl, 3);
        let user = c.fetch_gen;
        assert_ne!(user, kernel, "each CPL has its own links");
        long_mode(&mut c, 0);
        assert_eq!(c.fetch_gen, kernel, "back at CPL 0 with nothing changed");
        long_mode(&mut c, 3);
        assert_eq!(c.fetch_gen, user, "back at CPL 3 with nothing changed");
        // A new epoch (a CR3 write, INVLPG, a code store) ends both.
        c.new_fetch_epoch();
        assert_eq!(c.cpl, 3);
        assert_ne!(c.fetch_gen, user);
        long_mode(&mut c, 0);
        assert_ne!(c.fetch_gen, kernel);
        // Outside 64-bit code, where CS's base and limit take part in the fetch, every
        // mode change is a new epoch.
        let before = c.fetch_gen;
        c.seg[sr::CS as usize] = Segment::flat(0x10, Segment::CODE32);
        c.update_mode();
        assert_eq!(c.bits, 32);
        let compat = c.fetch_gen;
        assert_ne!(compat, before);
        c.update_mode();
        assert_ne!(c.fetch_gen, compat);
        long_mode(&mut c, 0);
        assert_ne!(c.fetch_gen, kernel);
    }
}

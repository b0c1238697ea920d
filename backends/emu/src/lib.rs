//! opsvisor's emulator backend: a software x86-64 CPU on the iced-x86 decoder.
//!
//! [`EmuVcpu`] implements [`X86Ops`]. It interprets guest code from a cache of decoded
//! blocks ([`cache`]), translates addresses through a software TLB ([`mem`]) over the
//! core's page walker, delivers events through the IDT ([`interrupt`]) and exits to the
//! core for exactly what a hardware backend intercepts: CPUID, RDMSR/WRMSR, HLT, port
//! I/O and MMIO.
#![no_std]

extern crate alloc;

pub mod arith;
pub mod cache;
pub mod cpu;
pub mod debug;
pub mod decode;
pub mod exception;
pub mod exec;
pub mod features;
pub mod fpu;
pub mod interrupt;
pub mod jit;
pub mod lazy;
pub mod mem;
pub mod reset;
pub mod state;
pub mod tlb;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_debug;
#[cfg(test)]
mod tests_system;

use crate::arith::flags::{IF, RF, TF};
use crate::cache::{decode_block, Block, Cache};
use crate::cpu::{cr0, efer, sr, Cpu, InterceptKind};
use crate::exception::Ex;
use opsvisor_core::cpuid::CpuidPolicy;
use opsvisor_core::exit::Exit;
use opsvisor_core::fpu::{FpuStateError, FxsaveArea};
use opsvisor_core::mmu::code_pages::{CodeEvent, CodeEvents};
use opsvisor_core::mmu::memory::GuestMemory;
// The indices of the MSRs the emulator holds (see `get_msr`): the core's table.
use opsvisor_core::msr::index as msr;
use opsvisor_core::ops::{
    DebugRegs, DescriptorTable, Event, ExitSink, Gpr, NoExitSink, ResetKind, RunLimit, SegReg,
    Segment, VcpuState, VcpuStateError, X86Ops,
};

pub use cpu::Cpu as CpuState;

/// The emulated vCPU.
pub struct EmuVcpu {
    cpu: Cpu,
    cache: Cache,
    pending: Option<Event>,
    irq_window: bool,
    nmi_window: bool,
    /// The block the last run ended in and the `fetch_gen` it ran under: after an
    /// intercept exit the next run follows this block's successor link instead of
    /// translating RIP and hashing (the link is checked against RIP and the generation).
    resume: (u32, u64),
    /// What a debugger asked for ([`EmuVcpu::set_guest_debug`]), if anything.
    debug: Option<alloc::boxed::Box<DebugState>>,
    /// The last run ended at an intercept exit taken in the block loop of
    /// [`EmuVcpu::run_resumed`] by an instruction that did not set `brk`, and since then
    /// the core has only read state, written general registers and completed that exit
    /// (`skip_emulated_instruction` but for a string element, `complete_mmio`,
    /// `complete_pio_in`): what [`EmuVcpu::quiet_resume`] checks is then as that run left
    /// it, which was quiet (an instruction that changes any of it sets `brk`), and the
    /// next run checks only the budget and the generation (see
    /// [`EmuVcpu::settled_resume`]). Every other method that takes `&mut self` clears
    /// it, and each run consumes it.
    settled: bool,
}

/// Most breakpoints [`EmuVcpu::set_guest_debug`] takes (gdb asks for a few; the bound
/// keeps the check at each instruction short).
pub const MAX_BREAKPOINTS: usize = 64;
/// Most write watchpoints [`EmuVcpu::set_guest_debug`] takes: the hardware's four debug
/// address registers.
pub const MAX_WATCHPOINTS: usize = 4;

/// A write watchpoint: `len` bytes (1 to 8) of guest-physical memory at `gpa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch {
    /// Where the watched bytes are.
    pub gpa: u64,
    /// How many (1 to 8).
    pub len: u8,
}

/// An access watchpoint: `len` bytes (1 to 8) at linear address `addr`, stopping after
/// an instruction whose memory operands read (`read`) or write (`write`) any of them, as
/// a data breakpoint in DR0-DR3 does. The operands are those iced-x86 reports for the
/// instruction (explicit operands, the stack, the string instructions' current
/// element), with the registers' values before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessWatch {
    /// The first watched byte's linear address.
    pub addr: u64,
    /// How many bytes (1 to 8).
    pub len: u8,
    /// Stop after reads.
    pub read: bool,
    /// Stop after writes.
    pub write: bool,
}

/// Why the emulator last stopped for the debugger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugStop {
    /// The single step is done.
    Step,
    /// A breakpoint at RIP.
    Breakpoint,
    /// The instruction just run changed the watched bytes of this watchpoint (its index).
    Watch(usize),
    /// The instruction just run accessed the bytes of this access watchpoint (its index
    /// in [`GuestDebug::access_watchpoints`]).
    Access(usize),
}

/// What a debugger asks the emulator to stop at: the counterpart of KVM's
/// `KVM_SET_GUEST_DEBUG` (single-step, and breakpoints the guest cannot see: nothing is
/// written into its memory, as QEMU's TCG does it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestDebug {
    /// Stop after one instruction with [`Exit::Exception`] for #DB (vector 1).
    pub single_step: bool,
    /// Stop before the instruction at any of these RIP values with [`Exit::Exception`]
    /// for #BP (vector 3). At most [`MAX_BREAKPOINTS`].
    pub breakpoints: alloc::vec::Vec<u64>,
    /// Stop after an instruction that changed any of these bytes, with
    /// [`Exit::Exception`] for #DB (vector 1), as a data breakpoint on writes does. The
    /// bytes are compared at each instruction boundary, so a store of the value they
    /// hold already does not stop (the hardware's would). At most [`MAX_WATCHPOINTS`].
    pub watchpoints: alloc::vec::Vec<Watch>,
    /// Stop after an instruction that read or wrote these bytes (see [`AccessWatch`]),
    /// with [`Exit::Exception`] for #DB (vector 1). At most [`MAX_WATCHPOINTS`].
    pub access_watchpoints: alloc::vec::Vec<AccessWatch>,
}

/// [`GuestDebug`] and where the vCPU was when it was set.
#[derive(Debug)]
struct DebugState {
    want: GuestDebug,
    /// RIP and the instruction count when the debugger resumed: until either changes the
    /// vCPU is still at the instruction it resumed from, where no breakpoint fires (it
    /// may be the one that stopped it) and no step is done yet.
    rip: u64,
    retired: u64,
    /// The watched bytes as last seen, one value per watchpoint.
    watched: alloc::vec::Vec<u64>,
    /// Why the last stop was made.
    last: Option<DebugStop>,
    /// The access watchpoint the instruction being run touches, and the instruction count
    /// before it: reported once it has retired (a fault reports nothing, as the hardware
    /// reports the fault).
    accessed: Option<(usize, u64)>,
    /// Reused for every instruction's memory operands.
    info: iced_x86::InstructionInfoFactory,
}

impl Default for EmuVcpu {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for EmuVcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EmuVcpu")
            .field("rip", &format_args!("{:#x}", self.cpu.rip))
            .field("bits", &self.cpu.bits)
            .field("retired", &self.cpu.retired)
            .finish()
    }
}

impl EmuVcpu {
    /// A vCPU in its power-on state.
    pub fn new() -> EmuVcpu {
        let mut v = EmuVcpu {
            cpu: Cpu::new(),
            cache: Cache::new(),
            pending: None,
            irq_window: false,
            nmi_window: false,
            resume: (u32::MAX, 0),
            debug: None,
            settled: false,
        };
        reset::reset(&mut v.cpu, ResetKind::PowerOn);
        v
    }

    /// Executions of instructions the emulator does not implement (each raised #UD), by
    /// mnemonic.
    pub fn unimplemented(&self) -> impl Iterator<Item = (iced_x86::Mnemonic, u64)> + '_ {
        self.cpu.unimpl.values().copied()
    }

    /// Turn the translation of runs of instructions into host code (see
    /// [`jit`]) on or off; it is on unless the host cannot map executable memory. Blocks
    /// already decoded are forgotten, so the change applies to everything run next.
    pub fn set_translation(&mut self, on: bool) {
        self.settled = false;
        self.cache.translator.set_enabled(on);
        self.cache.flush(&mut self.cpu);
    }

    /// Runs of instructions translated into host code since the vCPU was made.
    pub fn translated_runs(&self) -> u64 {
        self.cache.translator.runs()
    }

    /// Forget every decoded instruction (after the host wrote guest code behind the
    /// guest's back, for instance a loader placing a new image).
    pub fn invalidate_code(&mut self) {
        self.settled = false;
        self.cache.flush(&mut self.cpu);
    }

    /// Make every exception and software interrupt (INT n, INT3, INTO, INT1) end the run
    /// with [`Exit::Exception`] instead of being delivered through the IDT, the way a
    /// VMX exception bitmap with every bit set ends it: nothing is pushed, no handler
    /// runs. The registers are those the event found: for a fault, RIP at the faulting
    /// instruction and its partial effects (a REP count) in place; for INT n, INT3, INTO
    /// and INT1, RIP at the instruction (its length tells the return address); for a
    /// single-step trap, RIP after the instruction. Software interrupts first pass the
    /// gate checks of protected mode (a DPL-0 gate at CPL 3 ends with #GP instead).
    /// External interrupts and NMIs are still delivered. For tools that run snippets
    /// and report how they ended (`opsvisor exec`).
    pub fn set_event_exits(&mut self, on: bool) {
        self.settled = false;
        self.cpu.event_exits = on;
    }

    /// Stop for a debugger (see [`GuestDebug`]), from the next run on; `None` (or nothing
    /// asked for) runs the guest as before. While a debugger is attached the emulator
    /// runs one instruction at a time through its slow checks, so that every instruction
    /// boundary is seen. The breakpoint at the current RIP, if any, does not fire before
    /// the instruction there has run: resuming from a breakpoint goes on. An
    /// instruction the core completes (port I/O, CPUID, ...) counts as the step; an
    /// exception delivered to the guest ends the step at its handler's first instruction.
    /// More than [`MAX_BREAKPOINTS`] breakpoints or [`MAX_WATCHPOINTS`] watchpoints, or
    /// a watchpoint of no bytes or more than 8, are refused (`Err` with what is wrong).
    pub fn set_guest_debug(
        &mut self,
        mem: &GuestMemory,
        debug: Option<GuestDebug>,
    ) -> Result<(), &'static str> {
        self.install_debug(Some(mem), debug)
    }

    /// [`EmuVcpu::set_guest_debug`], where `mem` is needed only for watchpoints.
    fn install_debug(
        &mut self,
        mem: Option<&GuestMemory>,
        debug: Option<GuestDebug>,
    ) -> Result<(), &'static str> {
        self.settled = false;
        self.debug = match debug {
            Some(want) if want.breakpoints.len() > MAX_BREAKPOINTS => {
                return Err("too many breakpoints")
            }
            Some(want)
                if want.watchpoints.len() > MAX_WATCHPOINTS
                    || want.access_watchpoints.len() > MAX_WATCHPOINTS =>
            {
                return Err("too many watchpoints")
            }
            Some(want)
                if want.watchpoints.iter().any(|w| !(1..=8).contains(&w.len))
                    || want
                        .access_watchpoints
                        .iter()
                        .any(|w| !(1..=8).contains(&w.len)) =>
            {
                return Err("a watchpoint covers 1 to 8 bytes")
            }
            Some(want)
                if want.single_step
                    || !want.breakpoints.is_empty()
                    || !want.watchpoints.is_empty()
                    || !want.access_watchpoints.is_empty() =>
            {
                let watched = match mem {
                    Some(mem) => want.watchpoints.iter().map(|w| watched(mem, w)).collect(),
                    None if want.watchpoints.is_empty() => alloc::vec::Vec::new(),
                    None => return Err("watchpoints need the guest's memory"),
                };
                Some(alloc::boxed::Box::new(DebugState {
                    want,
                    rip: self.cpu.rip,
                    retired: self.cpu.retired,
                    watched,
                    last: None,
                    accessed: None,
                    info: iced_x86::InstructionInfoFactory::new(),
                }))
            }
            _ => None,
        };
        Ok(())
    }

    /// Why the emulator last stopped for the debugger (since [`EmuVcpu::set_guest_debug`]).
    pub fn debug_stop_reason(&self) -> Option<DebugStop> {
        self.debug.as_ref().and_then(|d| d.last)
    }

    /// Whether the debugger's step is done or a breakpoint is reached at this instruction
    /// boundary: the exit to leave with.
    #[cold]
    fn debug_stop(&mut self, mem: &GuestMemory) -> Option<Exit> {
        let d = self.debug.as_deref_mut()?;
        let c = &self.cpu;
        if c.rip == d.rip && c.retired == d.retired {
            return None;
        }
        let mut stop = match d.accessed.take() {
            Some((i, before)) if c.retired > before => Some(DebugStop::Access(i)),
            _ => None,
        };
        for (i, (w, seen)) in d.want.watchpoints.iter().zip(&mut d.watched).enumerate() {
            let now = watched(mem, w);
            if now != *seen {
                *seen = now;
                stop = stop.or(Some(DebugStop::Watch(i)));
            }
        }
        if stop.is_none() && d.want.single_step {
            stop = Some(DebugStop::Step);
        }
        if stop.is_none() && d.want.breakpoints.contains(&c.rip) {
            stop = Some(DebugStop::Breakpoint);
        }
        let stop = stop?;
        // Stopped here: resuming without a new request goes on from this instruction.
        d.rip = c.rip;
        d.retired = c.retired;
        d.want.single_step = false;
        d.last = Some(stop);
        let vector = match stop {
            DebugStop::Breakpoint => exception::BP,
            DebugStop::Step | DebugStop::Watch(_) | DebugStop::Access(_) => exception::DB,
        };
        Some(Exit::Exception {
            vector,
            error_code: None,
        })
    }

    /// The architectural state, read-only (for tests and debuggers).
    pub fn state(&self) -> &Cpu {
        &self.cpu
    }

    /// The x87/MMX/SSE state.
    pub fn fpu(&self) -> &fpu::Fpu {
        &self.cpu.fpu
    }

    /// The x87/MMX/SSE state, writable (the counterpart of KVM's `KVM_SET_FPU`).
    pub fn fpu_mut(&mut self) -> &mut fpu::Fpu {
        self.settled = false;
        &mut self.cpu.fpu
    }

    fn deliver_pending(&mut self, mem: &mut GuestMemory) -> Result<(), Exit> {
        let Some(ev) = self.pending.take() else {
            return Ok(());
        };
        let c = &mut self.cpu;
        // An injected event replaces the completion of an intercepted instruction.
        c.intercept = None;
        c.db_after = 0;
        c.shadow = false;
        match ev {
            Event::ExternalInterrupt(v) => interrupt::raise_external(c, mem, v),
            Event::Nmi => {
                c.nmi_blocked = true;
                interrupt::raise_external(c, mem, exception::NMI)
            }
            Event::Exception { vector, error_code } => interrupt::raise(c, mem, vector, error_code),
        }
    }

    /// The debug work after an intercepted instruction completed: RF is cleared (it
    /// lasts until an instruction completes: an IRET with RF back to an instruction
    /// breakpoint at a CPUID, say), and its debug trap (single-step, I/O breakpoints) is
    /// raised before the next instruction, as an event the next run delivers. A string
    /// I/O instruction traps after each element, with RIP still at the instruction while
    /// it repeats (SDM 3B 18.3.1.4).
    #[cold]
    #[inline(never)]
    fn intercept_trap(&mut self) {
        self.settled = false;
        let bits = core::mem::take(&mut self.cpu.db_after) & !debug::AFTER_SKIP;
        self.cpu.rf &= !RF;
        if bits == 0 {
            return;
        }
        debug::report(&mut self.cpu, bits);
        if self.pending.is_none() {
            self.pending = Some(Event::Exception {
                vector: exception::DB,
                error_code: None,
            });
        }
    }

    fn process_smc(&mut self) {
        while let Some(page) = self.cpu.smc_pages.pop() {
            self.cache.invalidate_page(&mut self.cpu, page);
        }
    }

    fn refresh_memory(&mut self, mem: &mut GuestMemory) {
        if self.cpu.ram.refresh(mem) {
            self.cpu.tlb.flush(true);
            // One entry per RAM page (dense: see `RamMap::page_slot`).
            let pages = self.cpu.ram.pages();
            self.cpu.code_chunks.clear();
            self.cpu.code_chunks.shrink_to(pages);
            self.cpu.code_chunks.resize(pages, 0);
            self.cache.flush(&mut self.cpu);
            // A new map (or a new layout): a new reader of its code-page record, which
            // has nothing this vCPU needs to catch up on.
            let record = mem.code_pages_mut();
            self.cpu.code_reader = record.register();
            self.cpu.code_seen = record.seq();
        }
        self.sync_code_pages(mem);
    }

    /// Catch up with what the other vCPUs did to code pages since this one last ran
    /// (see [`opsvisor_core::mmu::code_pages`]): drop the blocks decoded from pages they
    /// wrote, and stop fast stores to pages they began to decode from. The TLB keeps its
    /// translations: only this vCPU's INVLPG and CR3 writes drop them.
    fn sync_code_pages(&mut self, mem: &GuestMemory) {
        let record = mem.code_pages();
        let seq = record.seq();
        if seq == self.cpu.code_seen {
            return;
        }
        let me = self.cpu.code_reader;
        match record.events_since(self.cpu.code_seen) {
            CodeEvents::Overflow => {
                self.cache.flush(&mut self.cpu);
                self.cpu.protect_watched_pages(mem);
            }
            CodeEvents::Some(older, newer) => {
                let mut watched = false;
                for event in older.iter().chain(newer) {
                    match *event {
                        CodeEvent::Watched { by, .. } if by != me => watched = true,
                        CodeEvent::Written { page, by }
                            if by != me
                                && self.cpu.code_chunks_of(page).is_some_and(|m| m != 0) =>
                        {
                            self.cache.invalidate_page(&mut self.cpu, page);
                        }
                        _ => {}
                    }
                }
                // One pass over the TLB, whatever the number of pages.
                if watched {
                    self.cpu.protect_watched_pages(mem);
                }
            }
        }
        self.cpu.code_seen = seq;
    }

    /// Start a run under `limit`: the run's TSC, and the instruction count at which it
    /// must stop.
    #[inline(always)]
    fn enter(&mut self, limit: &RunLimit) -> u64 {
        let c = &mut self.cpu;
        let run_start = c.retired;
        if limit.tsc != c.tsc_entry {
            c.tsc_entry = limit.tsc;
            c.tsc_base_retired = c.retired;
        }
        c.mmio.pos = 0;
        let budget = match limit.deadline {
            Some(d) => limit.max_instructions.min(d.saturating_sub(c.tsc())),
            None => limit.max_instructions,
        };
        c.stop_at = run_start.saturating_add(budget);
        c.stop_at
    }

    /// [`EmuVcpu::enter`] for a run that goes on after an exit the core answered in place
    /// (see [`EmuVcpu::run_resumed`]). Out of line: inlined there, the loads of `limit`
    /// are hoisted to the function's entry and kept on the stack, which costs every run
    /// more than the call costs the runs that go on.
    #[inline(never)]
    fn reenter(&mut self, limit: &RunLimit) -> u64 {
        self.enter(limit)
    }

    /// A run with something to do before the first instruction: the memory map changed,
    /// an INS element must be stored, or an event is injected.
    #[cold]
    #[inline(never)]
    fn run_slow(&mut self, mem: &mut GuestMemory, limit: &RunLimit) -> Exit {
        self.refresh_memory(mem);
        let stop_at = self.enter(limit);
        if let Err(x) = self.enter_events(mem) {
            return x;
        }
        self.execute(mem, stop_at)
    }

    /// Entry work for a run that has something to do before the first instruction: the
    /// store of an INS element the core completed, and an injected event.
    fn enter_events(&mut self, mem: &mut GuestMemory) -> Result<(), Exit> {
        let c = &mut self.cpu;
        if let Some((gpa, size, value, gpa2)) = c.ins_store.take() {
            let bytes = value.to_le_bytes();
            let n = usize::from(size).min(4);
            // The destination was checked when the element exited, page by page when it
            // crosses a page boundary. Bytes outside RAM are dropped: string input into
            // device memory is not supported, and unbacked memory drops writes.
            let first = (4096 - (gpa & 0xfff)).min(n as u64) as usize;
            for (i, &b) in bytes[..n].iter().enumerate() {
                let at = if i < first {
                    gpa + i as u64
                } else {
                    gpa2 + (i - first) as u64
                };
                if mem.write_u8(at, b).is_ok() {
                    c.note_code_write(mem, at, 1);
                }
            }
        }
        self.deliver_pending(mem)
    }

    /// Whether the common re-entry after an intercept exit applies: nothing the slow checks
    /// of [`EmuVcpu::execute`] look at is set, and the block the last run ended in links
    /// to RIP under the current generation. Returns that block.
    #[inline(always)]
    fn quiet_resume(&self, stop_at: u64) -> Option<u32> {
        let (prev, gen) = self.resume;
        let c = &self.cpu;
        // A requested window that is closed can only open through an instruction that
        // sets `brk` (see `execute`).
        let window_open = (self.irq_window && self.interrupt_allowed())
            || (self.nmi_window && self.nmi_allowed());
        let quiet = gen == c.fetch_gen
            && !window_open
            && self.debug.is_none()
            && !c.shadow
            && c.rf & (TF | RF) == 0
            && !c.dbg
            && c.retired < stop_at
            && c.smc_pages.is_empty()
            && c.mmio.write.is_none();
        if !quiet {
            return None;
        }
        self.cache.follow(prev, c.rip, gen)
    }

    /// [`EmuVcpu::quiet_resume`] for a settled vCPU (see [`EmuVcpu::settled`]): of its
    /// checks only those that the core's completion of the exit, or the new run limit,
    /// can change remain. The generation is checked too, though only an instruction that
    /// sets `brk` or a method that clears `settled` changes it: a stale link must never
    /// run.
    #[inline(always)]
    fn settled_resume(&self, stop_at: u64) -> Option<u32> {
        let (prev, gen) = self.resume;
        let c = &self.cpu;
        if gen != c.fetch_gen || c.retired >= stop_at {
            return None;
        }
        self.cache.follow(prev, c.rip, gen)
    }

    /// Run linked blocks from `first` (see [`EmuVcpu::quiet_resume`]) until something needs
    /// the slow checks, then carry on in [`EmuVcpu::execute`]. Out of line, so that the
    /// block loop gets the registers to itself.
    ///
    /// A block left early because a handler set `brk` goes on here too when the slow
    /// checks find nothing to do (the common case: an MMIO read replayed after its exit,
    /// whose instruction ends its block so the read log is cleared when it retires) and the
    /// block it left from links to RIP.
    ///
    /// An intercept exit goes to `sink` first: when the core answers it there, the run
    /// goes on here as the next [`X86Ops::run_with`] under `limit` would, without leaving
    /// this frame.
    #[inline(never)]
    fn run_resumed<Sink: ExitSink>(
        &mut self,
        mem: &mut GuestMemory,
        limit: &RunLimit,
        first: u32,
        sink: &mut Sink,
    ) -> Exit {
        let mut first = first;
        // Where `enter` put it: one argument fewer to pass on the stack.
        let mut stop_at = self.cpu.stop_at;
        loop {
            let gen = self.cpu.fetch_gen;
            let fault = loop {
                let (last, fault) =
                    run_linked(&mut self.cpu, &self.cache, mem, first, gen, stop_at);
                self.resume = (last, gen);
                if fault.is_some() {
                    break fault;
                }
                match self.quiet_resume(stop_at) {
                    Some(next) => first = next,
                    None => break None,
                }
            };
            match fault {
                None => return self.execute(mem, stop_at),
                Some(Ex::Exit) => {
                    self.settled = !self.cpu.brk;
                    if !self.settled || !sink.may_take(&self.cpu.exit) {
                        return self.take_exit();
                    }
                    let exit = self.take_exit();
                    if !sink.take(self, &exit) {
                        return exit;
                    }
                    // Answered: the entry checks of the next run, `run_with`'s, here
                    // in a loop (a call back into `run_with` would nest a frame for each
                    // answered exit that left the vCPU unsettled, such as each element of
                    // a string instruction).
                    let settled = core::mem::take(&mut self.settled);
                    if self.cpu.ram.changed(mem)
                        || mem.code_pages().seq() != self.cpu.code_seen
                        || (!settled && (self.cpu.ins_store.is_some() || self.pending.is_some()))
                    {
                        return self.run_slow(mem, limit);
                    }
                    stop_at = self.reenter(limit);
                    let next = if settled {
                        self.settled_resume(stop_at)
                    } else {
                        self.quiet_resume(stop_at)
                    };
                    match next {
                        Some(next) => first = next,
                        None => return self.execute(mem, stop_at),
                    }
                }
                Some(Ex::Fault(f)) => {
                    // Delivery moves RIP into the handler: no link from here.
                    self.resume.0 = u32::MAX;
                    return match self.deliver_fault(mem, f) {
                        Some(x) => x,
                        None => self.execute(mem, stop_at),
                    };
                }
            }
        }
    }

    /// The interpreter loop.
    #[inline(never)]
    fn execute(&mut self, mem: &mut GuestMemory, stop_at: u64) -> Exit {
        let mut scratch: Option<Block> = None;
        // The cached block just executed and the generation it ran under.
        let (mut prev, mut prev_gen) = self.resume;
        // The core sets the windows between runs only.
        let windows = self.irq_window || self.nmi_window;
        // Leave the loop, remembering where to resume.
        macro_rules! leave {
            ($x:expr) => {{
                let x = $x;
                self.resume = (prev, prev_gen);
                return x;
            }};
        }
        loop {
            // ---- instruction boundary between blocks: the slow checks ----
            if !self.cpu.smc_pages.is_empty() {
                self.process_smc();
            }
            if let Some((gpa, size, data)) = self.cpu.mmio.take_write() {
                leave!(Exit::Mmio {
                    gpa,
                    size,
                    direction: opsvisor_core::exit::Direction::Write,
                    data,
                });
            }
            if self.debug.is_some() {
                if let Some(x) = self.debug_stop(mem) {
                    leave!(x);
                }
            }
            if self.cpu.retired >= stop_at {
                leave!(Exit::Preempted);
            }
            if self.irq_window && self.interrupt_allowed() {
                leave!(Exit::InterruptWindow);
            }
            if self.nmi_window && self.nmi_allowed() {
                leave!(Exit::NmiWindow);
            }
            let c = &mut self.cpu;
            // RF (set by an IRET back to a faulting instruction) lasts one instruction:
            // run that one alone, like a single step, to clear it after. A debugger sees
            // every instruction boundary, and armed breakpoints are checked one
            // instruction at a time too.
            let single = c.shadow || c.rf & (TF | RF) != 0 || self.debug.is_some() || c.dbg;
            if c.dbg && c.rf & RF == 0 {
                // Instruction breakpoints: a fault before the instruction is fetched.
                let hits = debug::code_hits(c);
                if hits != 0 {
                    debug::report(c, u64::from(hits));
                    // Unlike other faults, this one does not set RF in the pushed RFLAGS:
                    // the handler sets it there to run the instruction on return (SDM 3B
                    // 18.3.1.1; Linux's hw_breakpoint handler does, and Bochs agrees).
                    c.db_held = 0;
                    prev = u32::MAX;
                    if let Err(x) = interrupt::raise(c, mem, exception::DB, None) {
                        leave!(x);
                    }
                    continue;
                }
            }
            let rip = c.rip;
            let gen = c.fetch_gen;
            let linked = if prev_gen == gen {
                self.cache.follow(prev, rip, gen)
            } else {
                None
            };
            let idx = match linked {
                Some(i) => Some(i),
                None => match self.find_block(mem, rip, &mut scratch) {
                    Ok(i) => {
                        if let Some(i) = i {
                            if prev_gen == gen && self.cpu.fetch_gen == gen {
                                self.cache.link(prev, rip, gen, i);
                            }
                        }
                        i
                    }
                    Err(Some(x)) => leave!(x),
                    Err(None) => {
                        prev = u32::MAX;
                        continue;
                    }
                },
            };
            prev = idx.unwrap_or(u32::MAX);
            prev_gen = self.cpu.fetch_gen;
            // A requested window is closed here (the checks above left otherwise), and only
            // an instruction that sets `brk` can open it (STI, POPF setting IF, IRET and the
            // other mode changes): the tight loop stops there and the checks run again.
            if let (Some(i), false) = (idx, single) {
                // The common case: cached blocks, back to back, in the tight loop.
                let (last, fault) =
                    run_linked(&mut self.cpu, &self.cache, mem, i, prev_gen, stop_at);
                prev = last;
                if let Some(e) = fault {
                    if matches!(e, Ex::Fault(_)) {
                        // Delivery moves RIP into the handler: no link from here.
                        prev = u32::MAX;
                    }
                    // An exit keeps `prev`: the core usually resumes right after the
                    // intercepted instruction, and the link to there is checked by RIP.
                    if let Some(x) = self.take_fault(mem, e) {
                        leave!(x);
                    }
                }
                continue;
            }
            let EmuVcpu {
                cpu: c,
                cache,
                debug,
                ..
            } = self;
            let mut block = match idx {
                Some(i) => match cache.blocks.get(i as usize) {
                    Some(b) => b,
                    None => leave!(Exit::EmulationFailure { rip }),
                },
                None => match scratch.as_ref() {
                    Some(b) => b,
                    None => continue,
                },
            };
            // Run blocks back to back while nothing asks for the checks above: those only
            // matter after an instruction set `brk` (SMC, MMIO store, mode change), at the
            // budget's end, with a window requested, or when single-stepping.
            loop {
                let unfused;
                let ops = if single {
                    match block.ops.first() {
                        Some(op) if op.fused || op.dead_flags => {
                            // One instruction at a time splits a fused pair: run the flag
                            // setter alone and stop at the Jcc (see `exec::fused`). An
                            // instruction whose flags the next one overwrites computes
                            // them when run alone (see `exec::muldiv::dead_flags`).
                            unfused = decode::build(&op.i, u32::from(block.bits));
                            core::slice::from_ref(&unfused)
                        }
                        _ => &block.ops[..1.min(block.ops.len())],
                    }
                } else {
                    &block.ops[..]
                };
                let had_shadow = c.shadow;
                let tf = c.rf & TF != 0;
                let had_rf = c.rf & RF != 0;
                c.brk = false;
                c.db_hits = 0;
                let mut fault = None;
                // Counted in a register and added once per block: the only handlers that
                // read the count (RDTSC, RDTSCP) always start a block (see `decode_block`).
                // A fused pair (`exec::fused`) counts its second instruction itself.
                let mut done = 0u64;
                if let (Some(d), Some(op)) = (debug.as_deref_mut(), ops.first()) {
                    if !d.want.access_watchpoints.is_empty() {
                        let hit = access_hit(c, &mut d.info, &op.i, &d.want.access_watchpoints);
                        d.accessed = hit.map(|i| (i, c.retired));
                    }
                }
                for op in ops {
                    c.rip = op.next_ip;
                    if let Err(e) = (op.h)(c, mem, op) {
                        c.rip = op.i.ip();
                        fault = Some(e);
                        break;
                    }
                    done += 1;
                    if c.brk {
                        break;
                    }
                }
                c.retired += done;
                let retired_any = done != 0;
                if retired_any && c.mmio.len != 0 {
                    // The instruction that consumed the replayed MMIO values has retired.
                    c.mmio.len = 0;
                    c.mmio.pos = 0;
                }
                if let Some(e) = fault {
                    if matches!(e, Ex::Fault(_)) {
                        // Delivery moves RIP into the handler: no link from here.
                        prev = u32::MAX;
                        // A trap held back by a MOV SS shadow is lost with the
                        // instruction that faults.
                        c.db_held = 0;
                    }
                    // An exit keeps `prev`: the core usually resumes right after the
                    // intercepted instruction, and the link to there is checked by RIP.
                    if let Some(x) = self.take_fault(mem, e) {
                        leave!(x);
                    }
                    break;
                }
                if single {
                    let ss_shadow = had_shadow && c.ss_shadow;
                    if had_shadow {
                        c.shadow = false;
                        c.ss_shadow = false;
                    }
                    let first = ops.first().map(|op| &op.i);
                    let repeats =
                        first.is_some_and(|i| i.is_string_instruction() && c.rip == i.ip());
                    if had_rf && retired_any && !first.is_some_and(is_iret) && !repeats {
                        // The processor clears RF after every instruction it completes,
                        // except IRET, which loads it (SDM 3A 17.3.1.1), and keeps it
                        // between the iterations of a repeated string instruction.
                        c.rf &= !RF;
                    }
                    if retired_any {
                        let bits = match first {
                            Some(i) => debug_trap(c, i, tf),
                            None => 0,
                        };
                        if bits != 0 && !ss_shadow && c.shadow && c.ss_shadow {
                            // MOV SS / POP SS: the trap waits for the next instruction.
                            c.db_held |= bits;
                        } else if bits | c.db_held != 0 {
                            let bits = bits | core::mem::take(&mut c.db_held);
                            debug::report(c, bits);
                            prev = u32::MAX;
                            if let Err(x) = interrupt::raise(c, mem, exception::DB, None) {
                                leave!(x);
                            }
                        }
                    }
                    break;
                }
                if c.brk
                    || windows
                    || c.retired >= stop_at
                    || c.shadow
                    || c.rf & (TF | RF) != 0
                    || c.dbg
                    || c.fetch_gen != prev_gen
                {
                    break;
                }
                match cache.follow(prev, c.rip, prev_gen) {
                    Some(i) => match cache.blocks.get(i as usize) {
                        Some(b) => {
                            prev = i;
                            block = b;
                        }
                        None => break,
                    },
                    None => break,
                }
            }
        }
    }

    /// Find or decode the block at `rip`: `Ok(Some(index))` for a cached block, `Ok(None)`
    /// when it was decoded into `scratch` (not cacheable), `Err(Some(exit))` to leave,
    /// `Err(None)` when an exception was delivered instead.
    fn find_block(
        &mut self,
        mem: &mut GuestMemory,
        rip: u64,
        scratch: &mut Option<Block>,
    ) -> Result<Option<u32>, Option<Exit>> {
        let c = &mut self.cpu;
        let la = if c.bits == 64 {
            rip
        } else {
            c.seg[sr::CS as usize].base.wrapping_add(rip) & 0xffff_ffff
        };
        let gpa = match c.fetch_gpa(mem, la) {
            Ok(g) => g,
            Err(e) => return Err(self.take_fault(mem, e)),
        };
        let bits = self.cpu.bits;
        if let Some(i) = self.cache.lookup(gpa, bits, rip) {
            return Ok(Some(i));
        }
        let extend = self.cache.translator.translating();
        match decode_block(&mut self.cpu, mem, rip, la, gpa, bits, extend) {
            Ok((b, true)) => Ok(Some(self.cache.insert(&mut self.cpu, mem, b))),
            Ok((mut b, false)) => {
                cache::fuse(&mut b.ops, b.bits);
                *scratch = Some(b);
                Ok(None)
            }
            Err(e) => Err(self.take_fault(mem, e)),
        }
    }

    /// Handle a non-retiring outcome: deliver an exception (None = continue) or return an
    /// exit.
    fn take_fault(&mut self, mem: &mut GuestMemory, e: Ex) -> Option<Exit> {
        match e {
            Ex::Exit => Some(self.take_exit()),
            Ex::Fault(f) => self.deliver_fault(mem, f),
        }
    }

    /// The exit an instruction stored in [`Cpu::exit`].
    ///
    /// The common exits are copied field by field, each with a load of its own width
    /// ([`own_load`]): the handler has just stored the exit one field at a time, and a
    /// copy of the whole value reads several of those stores with one wider load, which
    /// the processor cannot serve while they are still in flight (it waits for them to
    /// reach the cache: a stall of the order of the rest of the exit, on every exit).
    #[inline(always)]
    fn take_exit(&mut self) -> Exit {
        match &self.cpu.exit {
            Exit::Cpuid => Exit::Cpuid,
            Exit::Rdmsr { index } => Exit::Rdmsr {
                index: own_load(index),
            },
            Exit::Io {
                port,
                size,
                direction,
                data,
            } => Exit::Io {
                port: own_load(port),
                size: own_load(size),
                direction: own_load(direction),
                data: own_load(data),
            },
            Exit::Mmio {
                gpa,
                size,
                direction,
                data,
            } => Exit::Mmio {
                gpa: own_load(gpa),
                size: own_load(size),
                direction: own_load(direction),
                data: own_load(data),
            },
            // Report the instruction, not the RIP after it.
            Exit::EmulationFailure { .. } => Exit::EmulationFailure { rip: self.cpu.rip },
            other => *other,
        }
    }

    /// Deliver an exception raised by an instruction (`Some` if delivery itself exits).
    #[cold]
    #[inline(never)]
    fn deliver_fault(&mut self, mem: &mut GuestMemory, f: exception::Fault) -> Option<Exit> {
        let (vector, error_code) = (f.vector(), f.error_code());
        let c = &mut self.cpu;
        c.intercept = None;
        c.mmio.len = 0;
        c.mmio.pos = 0;
        c.mmio.write = None;
        c.mmio.write2 = None;
        interrupt::raise(c, mem, vector, error_code).err()
    }
}

/// `*field`, read with a load of its own width that the compiler may not merge with the
/// loads of neighbouring fields (see [`EmuVcpu::take_exit`]).
#[inline(always)]
fn own_load<T: Copy>(field: &T) -> T {
    // SAFETY: a reference is valid for reads of its `T`, aligned and initialized.
    unsafe { core::ptr::read_volatile(field) }
}

/// The first access watchpoint `i`'s memory operands touch the way it watches, computed
/// with the registers as they are before `i` runs.
fn access_hit(
    c: &Cpu,
    info: &mut iced_x86::InstructionInfoFactory,
    i: &iced_x86::Instruction,
    watches: &[AccessWatch],
) -> Option<usize> {
    use iced_x86::{OpAccess, Register};
    let value = |reg: Register, _: usize, _: usize| -> Option<u64> {
        if reg.is_segment_register() {
            let n = reg as usize - Register::ES as usize;
            // In 64-bit mode only FS and GS have a base.
            if c.bits == 64 && !matches!(reg, Register::FS | Register::GS) {
                return Some(0);
            }
            return c.seg.get(n).map(|s| s.base);
        }
        if !reg.is_gpr() {
            return None;
        }
        let full = reg.full_register();
        let n = full as usize - Register::RAX as usize;
        let v = *c.gpr.get(n)?;
        Some(match reg.size() {
            2 => v & 0xffff,
            4 => v & 0xffff_ffff,
            8 => v,
            _ => return None,
        })
    };
    for m in info.info(i).used_memory() {
        let (reads, writes) = match m.access() {
            OpAccess::Read | OpAccess::CondRead => (true, false),
            OpAccess::Write | OpAccess::CondWrite => (false, true),
            OpAccess::ReadWrite | OpAccess::ReadCondWrite => (true, true),
            _ => continue,
        };
        let Some(addr) = m.virtual_address(0, value) else {
            continue;
        };
        let size = (m.memory_size().size() as u64).max(1);
        let hit = watches.iter().position(|w| {
            let overlaps =
                addr < w.addr.wrapping_add(u64::from(w.len)) && w.addr < addr.wrapping_add(size);
            overlaps && ((w.read && reads) || (w.write && writes))
        });
        if hit.is_some() {
            return hit;
        }
    }
    None
}

/// The bytes `w` watches, as a number (bytes outside RAM read as ones, as the bus does).
fn watched(mem: &GuestMemory, w: &Watch) -> u64 {
    let mut bytes = [0xffu8; 8];
    let n = usize::from(w.len).min(8);
    for (i, b) in bytes[..n].iter_mut().enumerate() {
        if let Ok(v) = mem.read_u8(w.gpa.wrapping_add(i as u64)) {
            *b = v;
        }
    }
    u64::from_le_bytes(bytes)
}

/// One element of an intercepted string I/O instruction is done: step the registers and
/// move past the instruction once the repetition ends.
#[cold]
#[inline(never)]
fn string_step(c: &mut Cpu) {
    let Some(ic) = c.intercept.take() else {
        return;
    };
    if let InterceptKind::Str {
        size,
        ins,
        rep,
        amask,
        ..
    } = ic.kind
    {
        if exec::io::string_io_step(c, size, ins, rep, amask) {
            c.rip = ic.next_ip;
        }
    }
    c.retired += 1;
    c.shadow = false;
    c.rf &= !RF;
}

/// Run cached blocks from `idx` on, following links made under `gen`, until an instruction
/// does not retire (the fault is returned) or the boundary needs [`EmuVcpu::execute`]'s
/// checks. Returns the last block run with the fault, if any. Never single-steps: callers
/// enter only without TF or an interrupt shadow, and it stops as soon as either appears.
///
/// Between two blocks it checks only the budget. Everything else the slow checks look at
/// changes only inside a handler that also sets [`Cpu::brk`], which ends the run at once:
/// an interrupt shadow (STI, MOV SS, POP SS), TF (POPF, and IRET/SYSRET through
/// [`Cpu::update_mode`]), a new `fetch_gen` (mode, CR3 and TLB changes), a store to code
/// (SMC) and a store to MMIO.
#[inline(always)]
fn run_linked(
    c: &mut Cpu,
    cache: &Cache,
    mem: &mut GuestMemory,
    mut idx: u32,
    gen: u64,
    stop_at: u64,
) -> (u32, Option<Ex>) {
    let Some(mut block) = cache.blocks.get(idx as usize) else {
        return (u32::MAX, None);
    };
    // Cleared once: the run ends as soon as a handler sets it.
    c.brk = false;
    // The loop leaves with the instruction that did not retire, if any; its bookkeeping
    // is done after the loop, where it does not cost the loop registers.
    let (idx, op, e) = 'run: loop {
        // Instructions retired are added once per block, or where it is left early: only
        // RDTSC and RDTSCP read the count, and they always start a block (see
        // `decode_block`). A fused pair (`exec::fused`) counts its second instruction
        // itself.
        if block.pure {
            // No instruction here can set `brk`: no check after each.
            for op in &block.ops {
                c.rip = op.next_ip;
                if let Err(e) = (op.h)(c, mem, op) {
                    break 'run (idx, op, e);
                }
                debug_assert!(!c.brk, "{:?} set brk in a pure block", op.i.mnemonic());
            }
        } else {
            for op in &block.ops {
                c.rip = op.next_ip;
                if let Err(e) = (op.h)(c, mem, op) {
                    break 'run (idx, op, e);
                }
                if c.brk {
                    retired_with_brk(c, op);
                    return (idx, None);
                }
            }
        }
        c.retired += block.ops.len() as u64;
        // A cached block is never empty: an instruction retired, and with it the one that
        // consumed any replayed MMIO values (a plain store costs less than a test).
        c.mmio.len = 0;
        c.mmio.pos = 0;
        debug_assert!(
            !c.shadow && c.rf & (TF | RF) == 0 && !c.dbg && c.fetch_gen == gen,
            "a handler changed the shadow, TF, RF, DR7 or fetch_gen without setting brk"
        );
        if c.retired >= stop_at {
            return (idx, None);
        }
        // The links of the block just run, without looking it up again.
        let Some(next) = block.links.iter().find(|l| l.rip == c.rip && l.gen == gen) else {
            return (idx, None);
        };
        let Some(b) = cache.blocks.get(next.idx as usize) else {
            return (idx, None);
        };
        idx = next.idx;
        block = b;
    };
    did_not_retire(c, op);
    (idx, Some(e))
}

/// [`run_linked`]'s bookkeeping when `op` did not retire (a fault or an exit): RIP back
/// at it, and the instructions before it in its block counted. Done after the block loop
/// (and [`retired_with_brk`] out of line) so that inside the loop only the op pointer is
/// live: with more, the compiler keeps a second induction variable there.
#[inline(always)]
fn did_not_retire(c: &mut Cpu, op: &decode::Op) {
    c.rip = op.i.ip();
    if op.pos != 0 {
        c.retired += u64::from(op.pos);
        // Earlier instructions retired, the MMIO replay was for one of them.
        c.mmio.len = 0;
        c.mmio.pos = 0;
    }
}

/// [`run_linked`]'s bookkeeping when `op` retired and set [`Cpu::brk`]: the instructions
/// of its block up to it counted.
#[cold]
#[inline(never)]
fn retired_with_brk(c: &mut Cpu, op: &decode::Op) {
    c.retired += u64::from(op.pos) + 1;
    // The instruction that consumed any replayed MMIO values has retired.
    c.mmio.len = 0;
    c.mmio.pos = 0;
}

impl X86Ops for EmuVcpu {
    fn name(&self) -> &'static str {
        "emu"
    }

    fn vcpu_reset(&mut self, kind: ResetKind) {
        self.settled = false;
        reset::reset(&mut self.cpu, kind);
        // After a reset the host loads new code into guest memory behind the guest's back
        // (a loader, the differential runner): decoded blocks from before must not run.
        self.cache.flush(&mut self.cpu);
        self.resume = (u32::MAX, 0);
        self.pending = None;
        self.irq_window = false;
        self.nmi_window = false;
    }

    #[inline]
    fn gpr(&self, reg: Gpr) -> u64 {
        self.cpu.gpr[reg as usize]
    }
    #[inline]
    fn set_gpr(&mut self, reg: Gpr, value: u64) {
        self.cpu.gpr[reg as usize] = value;
    }
    #[inline]
    fn rip(&self) -> u64 {
        self.cpu.rip
    }
    fn set_rip(&mut self, rip: u64) {
        self.settled = false;
        self.cpu.rip = rip;
        self.cpu.intercept = None;
    }
    fn rflags(&self) -> u64 {
        self.cpu.rflags()
    }
    fn set_rflags(&mut self, rflags: u64) {
        self.settled = false;
        self.cpu.set_rflags(rflags | 2);
        self.cpu.update_mode();
    }

    fn segment(&self, seg: SegReg) -> Segment {
        self.cpu.segment(seg)
    }
    fn set_segment(&mut self, seg: SegReg, value: &Segment) {
        self.settled = false;
        self.cpu.seg[seg as usize] = *value;
        self.cpu.update_mode();
        if seg == SegReg::Cs || seg == SegReg::Ss {
            // KVM convention: the CPL is SS.DPL (CS.DPL for the emulator's own loads).
            self.cpu.cpl = if self.cpu.protected() { value.dpl() } else { 0 };
            self.cpu.update_sel();
        }
    }
    fn cpl(&self) -> u8 {
        self.cpu.cpl
    }
    fn cr0(&self) -> u64 {
        self.cpu.cr0
    }
    fn set_cr0(&mut self, value: u64) {
        self.settled = false;
        let c = &mut self.cpu;
        let pg_on = value & cr0::PG != 0;
        c.cr0 = value | cr0::ET;
        if pg_on && c.efer & efer::LME != 0 {
            c.efer |= efer::LMA;
        } else if !pg_on {
            c.efer &= !efer::LMA;
        }
        c.tlb.flush(true);
        c.update_mode();
    }
    fn cr2(&self) -> u64 {
        self.cpu.cr2
    }
    fn set_cr2(&mut self, value: u64) {
        self.settled = false;
        self.cpu.cr2 = value;
    }
    fn cr3(&self) -> u64 {
        self.cpu.cr3
    }
    fn set_cr3(&mut self, value: u64) {
        self.settled = false;
        self.cpu.cr3 = value;
        self.cpu.tlb.flush(false);
        self.cpu.new_fetch_epoch();
    }
    fn cr4(&self) -> u64 {
        self.cpu.cr4
    }
    fn set_cr4(&mut self, value: u64) {
        self.settled = false;
        self.cpu.cr4 = value;
        self.cpu.tlb.flush(true);
        self.cpu.update_mode();
    }
    fn efer(&self) -> u64 {
        self.cpu.efer
    }
    fn set_efer(&mut self, value: u64) {
        self.settled = false;
        let c = &mut self.cpu;
        // LMA follows LME while paging is on (a WRMSR cannot set it directly).
        let lma = if c.cr0 & cr0::PG != 0 {
            c.efer & efer::LMA
        } else {
            0
        };
        c.efer = (value & !efer::LMA)
            | if value & efer::LMA != 0 && c.cr0 & cr0::PG == 0 {
                0
            } else {
                lma
            };
        if c.cr0 & cr0::PG == 0 && value & efer::LMA != 0 {
            // A loader setting up 64-bit state writes EFER with LMA before CR0.
            c.efer |= efer::LMA;
        }
        c.tlb.flush(true);
        c.update_mode();
    }
    fn gdt(&self) -> DescriptorTable {
        self.cpu.gdtr
    }
    fn set_gdt(&mut self, table: DescriptorTable) {
        self.settled = false;
        self.cpu.gdtr = table;
    }
    fn idt(&self) -> DescriptorTable {
        self.cpu.idtr
    }
    fn set_idt(&mut self, table: DescriptorTable) {
        self.settled = false;
        self.cpu.idtr = table;
    }

    fn supported_cpuid(&self) -> CpuidPolicy {
        CpuidPolicy::emulator()
    }

    fn set_cpuid(&mut self, policy: &CpuidPolicy) {
        self.settled = false;
        self.cpu.feat = features::Features::from_policy(policy);
    }

    fn xcr0(&self) -> u64 {
        self.cpu.xcr0
    }

    fn set_xcr0(&mut self, value: u64) {
        self.settled = false;
        self.cpu.xcr0 = value;
    }

    fn debug_regs(&self) -> DebugRegs {
        let c = &self.cpu;
        DebugRegs {
            db: [c.dr[0], c.dr[1], c.dr[2], c.dr[3]],
            dr6: c.dr[6],
            dr7: c.dr[7],
        }
    }

    fn set_guest_debug(
        &mut self,
        debug: opsvisor_core::ops::GuestDebug,
    ) -> Result<(), &'static str> {
        if debug.intercept_breakpoints || debug.intercept_debug {
            return Err("the emulator stops at breakpoints by address (EmuVcpu::set_guest_debug), not by intercepting #BP and #DB");
        }
        let want = debug.single_step.then(|| GuestDebug {
            single_step: true,
            ..GuestDebug::default()
        });
        self.install_debug(None, want)
    }

    fn set_debug_regs(&mut self, regs: &DebugRegs) {
        self.settled = false;
        let c = &mut self.cpu;
        c.dr[..4].copy_from_slice(&regs.db);
        c.dr[6] = exec::system::dr6_value(regs.dr6);
        c.dr[7] = exec::system::dr7_value(regs.dr7);
        debug::update(c);
    }

    fn get_msr(&self, index: u32) -> Option<u64> {
        let c = &self.cpu;
        Some(match index {
            msr::STAR => c.star,
            msr::LSTAR => c.lstar,
            msr::CSTAR => c.cstar,
            msr::SFMASK => c.sfmask,
            msr::FS_BASE => c.seg[sr::FS as usize].base,
            msr::GS_BASE => c.seg[sr::GS as usize].base,
            msr::KERNEL_GS_BASE => c.kernel_gs_base,
            msr::TSC_AUX => c.tsc_aux,
            msr::SYSENTER_CS => c.sysenter_cs,
            msr::SYSENTER_ESP => c.sysenter_esp,
            msr::SYSENTER_EIP => c.sysenter_eip,
            msr::PAT => c.pat,
            msr::DEBUGCTL => c.debugctl,
            _ => return None,
        })
    }

    fn set_msr(&mut self, index: u32, value: u64) -> bool {
        self.settled = false;
        let c = &mut self.cpu;
        match index {
            msr::STAR => c.star = value,
            msr::LSTAR => c.lstar = value,
            msr::CSTAR => c.cstar = value,
            msr::SFMASK => c.sfmask = value & 0xffff_ffff,
            msr::FS_BASE => c.seg[sr::FS as usize].base = value,
            msr::GS_BASE => c.seg[sr::GS as usize].base = value,
            msr::KERNEL_GS_BASE => c.kernel_gs_base = value,
            msr::TSC_AUX => c.tsc_aux = value & 0xffff_ffff,
            // 32 bits wide on Intel (the VMCS guest field is 32 bits; the upper half of a
            // WRMSR is dropped).
            msr::SYSENTER_CS => c.sysenter_cs = value & 0xffff_ffff,
            msr::SYSENTER_ESP => c.sysenter_esp = value,
            msr::SYSENTER_EIP => c.sysenter_eip = value,
            msr::PAT => c.pat = value,
            msr::DEBUGCTL => c.debugctl = value,
            _ => return false,
        }
        true
    }

    #[inline]
    fn run(&mut self, mem: &mut GuestMemory, limit: &RunLimit) -> Exit {
        self.run_with(mem, limit, &mut NoExitSink)
    }

    #[inline(always)]
    fn run_with<Sink: ExitSink>(
        &mut self,
        mem: &mut GuestMemory,
        limit: &RunLimit,
        sink: &mut Sink,
    ) -> Exit {
        if core::mem::take(&mut self.settled)
            && !self.cpu.ram.changed(mem)
            && mem.code_pages().seq() == self.cpu.code_seen
        {
            // The common return from an intercept exit (see `settled`).
            let stop_at = self.enter(limit);
            return match self.settled_resume(stop_at) {
                Some(first) => self.run_resumed(mem, limit, first, sink),
                None => self.execute(mem, stop_at),
            };
        }
        // Every call below is in tail position, so this path needs no frame of its own.
        if self.cpu.ins_store.is_some()
            || self.pending.is_some()
            || self.cpu.ram.changed(mem)
            || mem.code_pages().seq() != self.cpu.code_seen
        {
            return self.run_slow(mem, limit);
        }
        let stop_at = self.enter(limit);
        match self.quiet_resume(stop_at) {
            Some(first) => self.run_resumed(mem, limit, first, sink),
            None => self.execute(mem, stop_at),
        }
    }

    #[inline]
    fn skip_emulated_instruction(&mut self) {
        let c = &mut self.cpu;
        // Read only the tag and RIP for the common kinds; the string state stays put.
        let next_ip = match &c.intercept {
            None => return,
            Some(cpu::Intercept {
                next_ip,
                kind:
                    InterceptKind::Plain | InterceptKind::In { .. } | InterceptKind::MmioLoad { .. },
            }) => *next_ip,
            Some(_) => {
                // A string element: an INS's byte is still to be stored (see
                // `complete_pio_in`), which only the slow entry does.
                self.settled = false;
                string_step(c);
                if c.db_after != 0 {
                    self.intercept_trap();
                }
                return;
            }
        };
        c.intercept = None;
        c.rip = next_ip;
        c.retired += 1;
        c.shadow = false;
        if c.db_after != 0 {
            self.intercept_trap();
        }
    }

    #[inline]
    fn complete_pio_in(&mut self, value: u32) {
        let c = &mut self.cpu;
        match c.intercept.map(|i| i.kind) {
            Some(InterceptKind::In { size }) => c.set(0, u32::from(size), u64::from(value)),
            Some(InterceptKind::Str {
                size,
                ins: true,
                gpa,
                gpa2,
                ..
            }) => c.ins_store = Some((gpa, size, value, gpa2)),
            _ => {}
        }
        self.skip_emulated_instruction();
    }

    #[inline]
    fn complete_mmio(&mut self, read: Option<u64>) {
        let c = &mut self.cpu;
        if let (
            Some(v),
            Some(cpu::Intercept {
                next_ip,
                kind: InterceptKind::MmioLoad { reg, size },
            }),
        ) = (read, c.intercept)
        {
            // A plain load: it retires with the value, as a hardware backend completes it.
            c.intercept = None;
            c.mmio.want = None;
            c.set(reg, u32::from(size), v);
            c.rip = next_ip;
            c.retired += 1;
            c.shadow = false;
            return;
        }
        if let Some(v) = read {
            c.mmio_complete_read(v);
        }
    }

    fn interrupt_shadow(&self) -> bool {
        self.cpu.shadow
    }
    fn set_interrupt_shadow(&mut self, shadow: bool) {
        self.settled = false;
        self.cpu.shadow = shadow;
    }
    fn interrupt_allowed(&self) -> bool {
        self.cpu.rf & IF != 0 && !self.cpu.shadow && self.pending.is_none()
    }
    fn nmi_allowed(&self) -> bool {
        !self.cpu.nmi_blocked && !self.cpu.shadow && self.pending.is_none()
    }
    fn inject_event(&mut self, event: Event) {
        self.settled = false;
        self.pending = Some(event);
    }
    fn event_pending(&self) -> bool {
        self.pending.is_some()
    }
    fn enable_irq_window(&mut self, enable: bool) {
        self.settled = false;
        self.irq_window = enable;
    }
    fn enable_nmi_window(&mut self, enable: bool) {
        self.settled = false;
        self.nmi_window = enable;
    }

    fn flush_tlb_all(&mut self) {
        self.settled = false;
        self.cpu.tlb.flush(true);
        self.cpu.new_fetch_epoch();
    }
    fn flush_tlb_current(&mut self) {
        self.settled = false;
        self.cpu.tlb.flush(false);
        self.cpu.new_fetch_epoch();
    }
    fn flush_tlb_gva(&mut self, gva: u64) {
        self.settled = false;
        self.cpu.tlb.flush_page(gva);
        self.cpu.new_fetch_epoch();
    }
    fn instructions_retired(&self) -> Option<u64> {
        Some(self.cpu.retired)
    }
    fn guest_tsc(&self) -> Option<u64> {
        Some(self.cpu.tsc())
    }
    fn set_pause_exiting(&mut self, on: bool) {
        self.settled = false;
        self.cpu.pause_exits = on;
    }

    fn save_state(&self) -> Result<VcpuState, VcpuStateError> {
        self.save_whole_state()
    }
    fn restore_state(&mut self, state: &VcpuState) -> Result<(), VcpuStateError> {
        self.settled = false;
        self.restore_whole_state(state)
    }

    fn fpu_state(&self) -> Option<FxsaveArea> {
        Some(FxsaveArea(self.cpu.fpu.fxsave()))
    }
    fn set_fpu_state(&mut self, state: &FxsaveArea) -> Result<(), FpuStateError> {
        self.settled = false;
        // Checked before anything changes: the emulated FXRSTOR refuses the same image.
        self.cpu
            .fpu
            .fxrstor(state.as_bytes(), 16)
            .map_err(
                |fpu::ReservedMxcsrBits(mxcsr)| FpuStateError::ReservedMxcsrBits {
                    mxcsr,
                    mask: fpu::mxcsr::WRITABLE,
                },
            )?;
        // The 64-bit layout has no FCS/FDS; FXRSTOR64 leaves them zero too.
        self.cpu.fpu.x87.fcs = 0;
        self.cpu.fpu.x87.fds = 0;
        Ok(())
    }
}

/// Whether `i` is IRET in any operand size.
/// The DR6 bits of the debug trap after instruction `i` retired (0 for none): BS when
/// TF was set at its start (`tf`) and, with IA32_DEBUGCTL.BTF, only when it was a taken
/// branch; B0-B3 of the data and I/O breakpoints it hit. SYSCALL is the exception that
/// looks at TF after the instruction: IA32_FMASK clears it before a trap could be
/// taken (as on Intel processors; Xen's XSA-204 describes the behaviour).
fn debug_trap(c: &mut Cpu, i: &iced_x86::Instruction, tf: bool) -> u64 {
    use iced_x86::FlowControl as F;
    let mut bits = debug::take_hits(c);
    let mut step = tf;
    if i.mnemonic() == iced_x86::Mnemonic::Syscall {
        step &= c.rf & TF != 0;
    }
    if step && c.debugctl & opsvisor_core::msr::DEBUGCTL_BTF != 0 {
        step = match i.flow_control() {
            F::Next | F::Exception => false,
            F::ConditionalBranch => c.rip != i.next_ip(),
            _ => true,
        };
    }
    if step {
        bits |= debug::DR6_BS;
    }
    bits
}

fn is_iret(i: &iced_x86::Instruction) -> bool {
    matches!(
        i.mnemonic(),
        iced_x86::Mnemonic::Iret | iced_x86::Mnemonic::Iretd | iced_x86::Mnemonic::Iretq
    )
}

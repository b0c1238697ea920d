//! `opsvisor run --gdb`: GDB's remote serial protocol on the emulator, through the
//! `gdbstub` crate, as QEMU's `-gdb tcp::1234` (and `-S` as `--gdb-wait`).
//!
//! gdb sees one thread (the vCPU) of an x86-64 target: the general registers, RIP,
//! EFLAGS, the segment selectors, the x87 stack and its control registers, XMM0-15 and
//! MXCSR (gdb's `i386:x86-64` description with SSE), and `monitor info registers` prints
//! the rest as QEMU's monitor does (segments' hidden parts, GDTR, IDTR, CR0-CR4, EFER).
//! Memory is read and written by virtual address, translated by core's page walker with
//! the vCPU's CR0, CR3, CR4 and EFER (paging off: the address is physical).
//!
//! Software and hardware breakpoints are the same thing here: the emulator stops before
//! the instruction at that RIP without writing into guest memory
//! ([`EmuVcpu::set_guest_debug`]). `watch` watches the guest-physical bytes the address
//! maps to when it is set, compared after each instruction (a store of the value already
//! there does not stop); `rwatch` and `awatch` watch the linear address in each
//! instruction's memory operands ([`opsvisor_emu::AccessWatch`]). `stepi` runs exactly
//! one instruction, `continue` runs until a breakpoint, a watchpoint, the run's end, or
//! gdb's Ctrl-C, which the stub sees between two slices of the guest's run
//! ([`SLICE_INSTRUCTIONS`], [`SLICE_TIME`]).
//!
//! The run's end is reported to gdb as a process's: a debug exit as "exited with code
//! STATUS" (the program's exit status), a power-off as exit code 0, a triple fault as
//! SIGSEGV, a guest halted for good as SIGSTOP, the time or instruction limit as
//! SIGALRM, a backend failure as SIGILL, a reset as SIGHUP (a guest reset ends a run
//! with a debugger attached: gdb's session belongs to one machine).
//!
//! Without `--gdb-wait` the guest runs from the start and gdb may connect at any time:
//! the stub looks for a connection between slices and stops the guest when one comes.
//! When gdb detaches the guest runs on to its end; gdb's `kill` ends the run.

use crate::args::GdbOptions;
use gdbstub::common::Signal;
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::{run_blocking, DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{outputln, ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use gdbstub_arch::x86::X86_64_SSE;
use opsvisor_backends::{Backend, Machine};
use opsvisor_core::fpu::FxsaveArea;
use opsvisor_core::mmu::walk::{walk, Access, PagingRegs};
use opsvisor_core::ops::{Gpr, SegReg, X86Ops};
use opsvisor_core::platform::Platform;
use opsvisor_core::vm::RunOutcome;
use opsvisor_emu::{
    AccessWatch, DebugStop, EmuVcpu, GuestDebug, Watch, MAX_BREAKPOINTS, MAX_WATCHPOINTS,
};
use std::marker::PhantomData;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Instructions the guest runs between two looks at the connection.
pub const SLICE_INSTRUCTIONS: u64 = 200_000;
/// Host time the guest runs (or sleeps in HLT) between two looks at the connection.
pub const SLICE_TIME: Duration = Duration::from_millis(20);

/// gdb's register order (rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15) in core's.
const GDB_GPRS: [Gpr; 16] = [
    Gpr::Rax,
    Gpr::Rbx,
    Gpr::Rcx,
    Gpr::Rdx,
    Gpr::Rsi,
    Gpr::Rdi,
    Gpr::Rbp,
    Gpr::Rsp,
    Gpr::R8,
    Gpr::R9,
    Gpr::R10,
    Gpr::R11,
    Gpr::R12,
    Gpr::R13,
    Gpr::R14,
    Gpr::R15,
];

/// gdb's segment order (cs, ss, ds, es, fs, gs).
const GDB_SEGMENTS: [SegReg; 6] = [
    SegReg::Cs,
    SegReg::Ss,
    SegReg::Ds,
    SegReg::Es,
    SegReg::Fs,
    SegReg::Gs,
];

/// How a run with the stub ended.
#[derive(Debug, PartialEq, Eq)]
pub enum GdbEnd {
    /// The guest's run ended (gdb, if attached, was told).
    Outcome(RunOutcome),
    /// gdb's `kill` ended the run.
    Killed,
}

/// The stub's listening socket, kept across the run.
pub struct GdbServer {
    listener: TcpListener,
    wait: bool,
}

impl GdbServer {
    /// Listen where `options` say.
    pub fn bind(options: &GdbOptions) -> Result<GdbServer, String> {
        let listener = TcpListener::bind(&options.listen)
            .map_err(|e| format!("--gdb: cannot listen on {}: {e}", options.listen))?;
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| options.listen.clone());
        log::info!(
            "gdb stub listening on {address}{}",
            if options.wait {
                ": the guest waits for gdb to continue it"
            } else {
                ""
            }
        );
        Ok(GdbServer {
            listener,
            wait: options.wait,
        })
    }

    /// Run `vm` to its end with the stub: wait for gdb first with `--gdb-wait`, else
    /// run and look for gdb between slices.
    pub fn run<P: Platform>(&mut self, vm: &mut Machine<P>) -> Result<GdbEnd, String> {
        let mut runner = Runner::new(vm);
        let stream = if self.wait {
            // Only the first machine waits (QEMU's -S stops the first start).
            self.wait = false;
            let (stream, peer) = self
                .listener
                .accept()
                .map_err(|e| format!("--gdb: accepting gdb's connection failed: {e}"))?;
            log::info!("gdb connected from {peer}");
            stream
        } else {
            self.listener
                .set_nonblocking(true)
                .map_err(|e| format!("--gdb: {e}"))?;
            loop {
                match self.listener.accept() {
                    Ok((stream, peer)) => {
                        log::info!("gdb connected from {peer}");
                        break stream;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(format!("--gdb: accepting gdb's connection failed: {e}")),
                }
                if let Some(outcome) = runner.slice() {
                    return Ok(GdbEnd::Outcome(outcome));
                }
            }
        };
        stream
            .set_nonblocking(false)
            .map_err(|e| format!("--gdb: {e}"))?;
        let mut target = GdbTarget {
            runner,
            breakpoints: Vec::new(),
            hw_breakpoints: Vec::new(),
            watchpoints: Vec::new(),
            access_watchpoints: Vec::new(),
            step: false,
            _platform: PhantomData,
        };
        let stub = GdbStub::new(stream);
        let reason = stub.run_blocking::<EventLoop<P>>(&mut target);
        let GdbTarget { mut runner, .. } = target;
        match reason {
            Ok(DisconnectReason::Kill) => Ok(GdbEnd::Killed),
            Ok(DisconnectReason::Disconnect) => {
                log::info!("gdb detached: the guest runs on");
                runner.set_debug(None)?;
                Ok(GdbEnd::Outcome(runner.finish()))
            }
            Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => Ok(
                GdbEnd::Outcome(runner.end.take().unwrap_or(RunOutcome::Quit)),
            ),
            Err(e) => {
                // A broken connection: the guest runs on without gdb, as QEMU's does.
                log::warn!("gdb's connection ended: {e}; the guest runs on");
                if let Some(end) = runner.end.take() {
                    return Ok(GdbEnd::Outcome(end));
                }
                runner.set_debug(None)?;
                Ok(GdbEnd::Outcome(runner.finish()))
            }
        }
    }
}

/// The machine run in slices, with the user's limits kept across them.
struct Runner<'a, P: Platform> {
    vm: &'a mut Machine<P>,
    /// `--max-instructions` left, if given.
    instructions_left: Option<u64>,
    /// When `--timeout` ends the run, if given.
    deadline: Option<Instant>,
    /// The run's end, once it came.
    end: Option<RunOutcome>,
}

impl<'a, P: Platform> Runner<'a, P> {
    fn new(vm: &'a mut Machine<P>) -> Runner<'a, P> {
        let instructions_left = vm.config.max_instructions;
        let deadline = vm
            .config
            .timeout_ns
            .map(|ns| Instant::now() + Duration::from_nanos(ns));
        Runner {
            vm,
            instructions_left,
            deadline,
            end: None,
        }
    }

    fn emu(&mut self) -> &mut EmuVcpu {
        emu(&mut self.vm.bsp_mut().backend)
    }

    fn set_debug(&mut self, debug: Option<GuestDebug>) -> Result<(), String> {
        let (bsp, mem) = self.vm.bsp_and_mem_mut();
        emu(&mut bsp.backend)
            .set_guest_debug(mem, debug)
            .map_err(String::from)
    }

    /// Run one slice: `None` when it ended at the slice's own bounds, else how the run
    /// stopped (a debug stop, or its end under the user's limits).
    fn slice(&mut self) -> Option<RunOutcome> {
        let mut instructions = SLICE_INSTRUCTIONS;
        if let Some(left) = self.instructions_left {
            if left == 0 {
                return Some(RunOutcome::InstructionLimit);
            }
            instructions = instructions.min(left);
        }
        let mut time = SLICE_TIME;
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Some(RunOutcome::Timeout);
            }
            time = time.min(left);
        }
        self.vm.config.max_instructions = Some(instructions);
        self.vm.config.timeout_ns = Some(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX));
        let before = self
            .vm
            .bsp_mut()
            .backend
            .instructions_retired()
            .unwrap_or(0);
        let outcome = self.vm.run();
        let done = self
            .vm
            .bsp()
            .backend
            .instructions_retired()
            .unwrap_or(0)
            .saturating_sub(before);
        if let Some(left) = &mut self.instructions_left {
            *left = left.saturating_sub(done);
        }
        match outcome {
            RunOutcome::InstructionLimit if self.instructions_left != Some(0) => None,
            RunOutcome::Timeout if self.deadline.is_none_or(|d| Instant::now() < d) => None,
            other => Some(other),
        }
    }

    /// Run to the end without a debugger.
    fn finish(&mut self) -> RunOutcome {
        loop {
            if let Some(outcome) = self.slice() {
                return outcome;
            }
        }
    }
}

/// The emulator under `vcpu` (the only backend this program builds).
fn emu(vcpu: &mut Backend) -> &mut EmuVcpu {
    match vcpu {
        Backend::Emu(slot) => &mut slot.0,
        Backend::Vmx(slot) => match slot.0 {},
        Backend::Svm(slot) => match slot.0 {},
    }
}

/// The machine as gdb sees it.
struct GdbTarget<'a, P: Platform> {
    runner: Runner<'a, P>,
    /// Software breakpoints (gdb's `break`).
    breakpoints: Vec<u64>,
    /// Hardware breakpoints (gdb's `hbreak`).
    hw_breakpoints: Vec<u64>,
    /// Write watchpoints (gdb's `watch`): the virtual address and length gdb gave, and
    /// the guest-physical bytes they mapped to when set.
    watchpoints: Vec<(u64, u64, Watch)>,
    /// Read and access watchpoints (gdb's `rwatch`, `awatch`): the kind and length gdb
    /// gave, and the watch on the linear address.
    access_watchpoints: Vec<(WatchKind, u64, AccessWatch)>,
    /// The next resume is a single step.
    step: bool,
    _platform: PhantomData<P>,
}

impl<P: Platform> GdbTarget<'_, P> {
    /// The translation registers of the vCPU now.
    fn paging(&self) -> PagingRegs {
        let v = &self.runner.vm.bsp().backend;
        PagingRegs {
            cr0: v.cr0(),
            cr3: v.cr3(),
            cr4: v.cr4(),
            efer: v.efer(),
            // A debugger's accesses are not the guest's: protection keys do not stop them
            // (as QEMU's gdbstub reads through the page tables alone).
            pkru: 0,
        }
    }

    /// The guest-physical address of virtual `addr`, if it is mapped (the walk sets the
    /// accessed bits, as the guest's own access would).
    fn translate(&mut self, addr: u64, write: bool) -> Option<u64> {
        let regs = self.paging();
        let access = Access {
            write,
            ..Access::default()
        };
        walk(&mut self.runner.vm.mem, &regs, addr, access)
            .ok()
            .map(|t| t.gpa)
    }

    /// Run until a stop gdb hears about, or until gdb has something to say.
    fn wait(
        &mut self,
        conn: &mut TcpStream,
    ) -> Result<
        run_blocking::Event<SingleThreadStopReason<u64>>,
        run_blocking::WaitForStopReasonError<String, std::io::Error>,
    > {
        use run_blocking::WaitForStopReasonError::{Connection as ConnError, Target as TargetErr};
        let all: Vec<u64> = self
            .breakpoints
            .iter()
            .chain(&self.hw_breakpoints)
            .copied()
            .collect();
        let debug = GuestDebug {
            single_step: self.step,
            breakpoints: all,
            watchpoints: self.watchpoints.iter().map(|w| w.2).collect(),
            access_watchpoints: self.access_watchpoints.iter().map(|w| w.2).collect(),
        };
        self.runner.set_debug(Some(debug)).map_err(TargetErr)?;
        self.step = false;
        loop {
            let Some(outcome) = self.runner.slice() else {
                // gdb's Ctrl-C (or anything else it sends) stops the guest.
                match ConnectionExt::peek(conn).map_err(ConnError)? {
                    Some(_) => {
                        let byte = ConnectionExt::read(conn).map_err(ConnError)?;
                        return Ok(run_blocking::Event::IncomingData(byte));
                    }
                    None => continue,
                }
            };
            let rip = self.runner.vm.bsp_mut().backend.rip();
            let stop = self.runner.emu().debug_stop_reason();
            let reason = match (outcome, stop) {
                (RunOutcome::Debug { .. }, Some(DebugStop::Watch(i))) => {
                    SingleThreadStopReason::Watch {
                        tid: (),
                        kind: WatchKind::Write,
                        addr: self.watchpoints.get(i).map_or(0, |w| w.0),
                    }
                }
                (RunOutcome::Debug { .. }, Some(DebugStop::Access(i))) => {
                    let (kind, addr) = self
                        .access_watchpoints
                        .get(i)
                        .map_or((WatchKind::Read, 0), |w| (w.0, w.2.addr));
                    SingleThreadStopReason::Watch {
                        tid: (),
                        kind,
                        addr,
                    }
                }
                (RunOutcome::Debug { .. }, Some(DebugStop::Step)) => {
                    SingleThreadStopReason::DoneStep
                }
                (RunOutcome::Debug { .. }, _) if self.hw_breakpoints.contains(&rip) => {
                    SingleThreadStopReason::HwBreak(())
                }
                (RunOutcome::Debug { .. }, _) => SingleThreadStopReason::SwBreak(()),
                (end, _) => {
                    let reason = end_reason(&end);
                    self.runner.end = Some(end);
                    reason
                }
            };
            return Ok(run_blocking::Event::TargetStopped(reason));
        }
    }
}

/// How gdb hears of the run's end (see the module's documentation).
fn end_reason(end: &RunOutcome) -> SingleThreadStopReason<u64> {
    let signal = match end {
        RunOutcome::DebugExit { status } => return SingleThreadStopReason::Exited(*status as u8),
        RunOutcome::PowerOff => return SingleThreadStopReason::Exited(0),
        RunOutcome::TripleFault { .. } => Signal::SIGSEGV,
        RunOutcome::HaltedForever => Signal::SIGSTOP,
        RunOutcome::InstructionLimit | RunOutcome::Timeout => Signal::SIGALRM,
        RunOutcome::Reset => Signal::SIGHUP,
        RunOutcome::Quit => Signal::SIGKILL,
        RunOutcome::Debug { .. } | RunOutcome::Failed(_) => Signal::SIGILL,
    };
    SingleThreadStopReason::Terminated(signal)
}

impl<P: Platform> Target for GdbTarget<'_, P> {
    type Arch = X86_64_SSE;
    type Error = String;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    // gdb's stepi is the emulator's single step, never a temporary breakpoint.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl<P: Platform> SingleThreadBase for GdbTarget<'_, P> {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs) -> TargetResult<(), Self> {
        let v = &self.runner.vm.bsp().backend;
        for (slot, gpr) in regs.regs.iter_mut().zip(GDB_GPRS) {
            *slot = v.gpr(gpr);
        }
        regs.rip = v.rip();
        regs.eflags = v.rflags() as u32;
        let selectors = [
            &mut regs.segments.cs,
            &mut regs.segments.ss,
            &mut regs.segments.ds,
            &mut regs.segments.es,
            &mut regs.segments.fs,
            &mut regs.segments.gs,
        ];
        for (slot, seg) in selectors.into_iter().zip(GDB_SEGMENTS) {
            *slot = u32::from(v.segment(seg).selector);
        }
        let fx = v.fpu_state().unwrap_or_else(FxsaveArea::reset);
        for (n, st) in regs.st.iter_mut().enumerate() {
            *st = fx.st(n);
        }
        regs.fpu.fctrl = u32::from(fx.fcw());
        regs.fpu.fstat = u32::from(fx.fsw());
        regs.fpu.ftag = u32::from(full_tag_word(&fx));
        regs.fpu.fop = u32::from(fx.fop());
        // The 64-bit FXSAVE image has no selectors for the last instruction and operand.
        regs.fpu.fiseg = 0;
        regs.fpu.fioff = fx.fip() as u32;
        regs.fpu.foseg = 0;
        regs.fpu.fooff = fx.fdp() as u32;
        for (n, xmm) in regs.xmm.iter_mut().enumerate() {
            *xmm = fx.xmm(n);
        }
        regs.mxcsr = fx.mxcsr();
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs) -> TargetResult<(), Self> {
        let v = &mut self.runner.vm.bsp_mut().backend;
        // The x87 and SSE state first: one the processor would refuse (an MXCSR with a
        // reserved bit set) is an error for gdb, and nothing is written.
        let mut fx = v.fpu_state().unwrap_or_else(FxsaveArea::reset);
        for (n, st) in regs.st.iter().enumerate() {
            fx.set_st(n, *st);
        }
        fx.set_fcw(regs.fpu.fctrl as u16);
        fx.set_fsw(regs.fpu.fstat as u16);
        fx.set_ftw(abridged_tag(regs.fpu.ftag as u16));
        fx.set_fop(regs.fpu.fop as u16);
        for (n, xmm) in regs.xmm.iter().enumerate() {
            fx.set_xmm(n, *xmm);
        }
        fx.set_mxcsr(regs.mxcsr);
        v.set_fpu_state(&fx).map_err(|_| TargetError::NonFatal)?;
        for (value, gpr) in regs.regs.iter().zip(GDB_GPRS) {
            v.set_gpr(gpr, *value);
        }
        v.set_rip(regs.rip);
        // The upper half of RFLAGS is reserved (zero); bit 1 always reads as 1.
        v.set_rflags(u64::from(regs.eflags) | 2);
        let selectors = [
            regs.segments.cs,
            regs.segments.ss,
            regs.segments.ds,
            regs.segments.es,
            regs.segments.fs,
            regs.segments.gs,
        ];
        for (selector, seg) in selectors.into_iter().zip(GDB_SEGMENTS) {
            // A new selector alone: the descriptor cache stays (gdb writes every
            // register back, usually unchanged).
            let mut s = v.segment(seg);
            if u32::from(s.selector) != selector {
                s.selector = selector as u16;
                v.set_segment(seg, &s);
            }
        }
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        let mut done = 0;
        while done < data.len() {
            let addr = start.wrapping_add(done as u64);
            let in_page = (0x1000 - (addr & 0xfff)) as usize;
            let n = in_page.min(data.len() - done);
            let Some(gpa) = self.translate(addr, false) else {
                break;
            };
            if self
                .runner
                .vm
                .mem
                .read(gpa, &mut data[done..done + n])
                .is_err()
            {
                break;
            }
            done += n;
        }
        if done == 0 && !data.is_empty() {
            // gdb: "Cannot access memory at address ...".
            return Err(TargetError::NonFatal);
        }
        Ok(done)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        let mut done = 0;
        while done < data.len() {
            let addr = start.wrapping_add(done as u64);
            let in_page = (0x1000 - (addr & 0xfff)) as usize;
            let n = in_page.min(data.len() - done);
            let gpa = self.translate(addr, true).ok_or(TargetError::NonFatal)?;
            self.runner
                .vm
                .mem
                .write(gpa, &data[done..done + n])
                .map_err(|_| TargetError::NonFatal)?;
            done += n;
        }
        // The guest's code may have changed behind the emulator's decoded blocks.
        emu(&mut self.runner.vm.bsp_mut().backend).invalidate_code();
        Ok(())
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl<P: Platform> SingleThreadResume for GdbTarget<'_, P> {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        // A signal gdb would pass on has no meaning for a machine (QEMU ignores it too).
        self.step = false;
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl<P: Platform> SingleThreadSingleStep for GdbTarget<'_, P> {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.step = true;
        Ok(())
    }
}

impl<P: Platform> Breakpoints for GdbTarget<'_, P> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl<P: Platform> HwWatchpoint for GdbTarget<'_, P> {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        // gdb splits a longer region into aligned pieces of up to 8 bytes, as the debug
        // registers need.
        if !(1..=8).contains(&len) {
            return Ok(false);
        }
        if kind != WatchKind::Write {
            // rwatch and awatch: the instructions' memory operands, by linear address.
            if self.access_watchpoints.len() >= MAX_WATCHPOINTS {
                return Ok(false);
            }
            let watch = AccessWatch {
                addr,
                len: len as u8,
                read: true,
                write: kind == WatchKind::ReadWrite,
            };
            self.access_watchpoints.push((kind, len, watch));
            return Ok(true);
        }
        // watch: the bytes' values, compared after each instruction.
        let in_page = 0x1000 - (addr & 0xfff);
        if len > in_page || self.watchpoints.len() >= MAX_WATCHPOINTS {
            return Ok(false);
        }
        let Some(gpa) = self.translate(addr, false) else {
            return Ok(false);
        };
        let watch = Watch {
            gpa,
            len: len as u8,
        };
        self.watchpoints.push((addr, len, watch));
        Ok(true)
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let before = self.watchpoints.len() + self.access_watchpoints.len();
        if kind == WatchKind::Write {
            self.watchpoints.retain(|w| (w.0, w.1) != (addr, len));
        } else {
            self.access_watchpoints
                .retain(|w| (w.0, w.1, w.2.addr) != (kind, len, addr));
        }
        Ok(self.watchpoints.len() + self.access_watchpoints.len() != before)
    }
}

impl<P: Platform> MonitorCmd for GdbTarget<'_, P> {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), String> {
        match cmd.trim_ascii() {
            b"info registers" => {
                for line in info_registers(&self.runner.vm.bsp_mut().backend).lines() {
                    outputln!(out, "{line}");
                }
            }
            b"help" | b"" => outputln!(
                out,
                "monitor info registers: every register of the vCPU, control and system \
                 registers included (gdb's x86-64 description has no control registers)"
            ),
            other => outputln!(
                out,
                "unknown monitor command '{}' (monitor help lists them)",
                String::from_utf8_lossy(other)
            ),
        }
        Ok(())
    }
}

/// QEMU's `info registers`: the general registers, the segments with their hidden
/// parts, the descriptor tables, the control registers and EFER.
pub fn info_registers(v: &impl X86Ops) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let g = |r: Gpr| v.gpr(r);
    let _ = writeln!(
        s,
        "RAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}",
        g(Gpr::Rax),
        g(Gpr::Rbx),
        g(Gpr::Rcx),
        g(Gpr::Rdx)
    );
    let _ = writeln!(
        s,
        "RSI={:016x} RDI={:016x} RBP={:016x} RSP={:016x}",
        g(Gpr::Rsi),
        g(Gpr::Rdi),
        g(Gpr::Rbp),
        g(Gpr::Rsp)
    );
    let _ = writeln!(
        s,
        "R8 ={:016x} R9 ={:016x} R10={:016x} R11={:016x}",
        g(Gpr::R8),
        g(Gpr::R9),
        g(Gpr::R10),
        g(Gpr::R11)
    );
    let _ = writeln!(
        s,
        "R12={:016x} R13={:016x} R14={:016x} R15={:016x}",
        g(Gpr::R12),
        g(Gpr::R13),
        g(Gpr::R14),
        g(Gpr::R15)
    );
    let _ = writeln!(
        s,
        "RIP={:016x} RFL={:08x} CPL={}",
        v.rip(),
        v.rflags(),
        v.cpl()
    );
    for (name, seg) in [
        ("ES ", SegReg::Es),
        ("CS ", SegReg::Cs),
        ("SS ", SegReg::Ss),
        ("DS ", SegReg::Ds),
        ("FS ", SegReg::Fs),
        ("GS ", SegReg::Gs),
        ("LDT", SegReg::Ldtr),
        ("TR ", SegReg::Tr),
    ] {
        let x = v.segment(seg);
        let _ = writeln!(
            s,
            "{name}={:04x} {:016x} {:08x} {:08x}",
            x.selector, x.base, x.limit, x.attr
        );
    }
    let (gdt, idt) = (v.gdt(), v.idt());
    let _ = writeln!(s, "GDT=     {:016x} {:08x}", gdt.base, gdt.limit);
    let _ = writeln!(s, "IDT=     {:016x} {:08x}", idt.base, idt.limit);
    let _ = writeln!(
        s,
        "CR0={:08x} CR2={:016x} CR3={:016x} CR4={:08x}",
        v.cr0(),
        v.cr2(),
        v.cr3(),
        v.cr4()
    );
    let _ = writeln!(s, "EFER={:016x}", v.efer());
    s
}

/// Add `addr` to `list` if there is room for it among all breakpoints.
fn add(list: &mut Vec<u64>, other: &[u64], addr: u64) -> bool {
    if list.contains(&addr) {
        return true;
    }
    if list.len() + other.len() >= MAX_BREAKPOINTS {
        return false;
    }
    list.push(addr);
    true
}

/// Remove `addr` from `list`.
fn remove(list: &mut Vec<u64>, addr: u64) -> bool {
    let before = list.len();
    list.retain(|&a| a != addr);
    list.len() != before
}

impl<P: Platform> SwBreakpoint for GdbTarget<'_, P> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(add(&mut self.breakpoints, &self.hw_breakpoints, addr))
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(remove(&mut self.breakpoints, addr))
    }
}

impl<P: Platform> HwBreakpoint for GdbTarget<'_, P> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        // The four debug address registers of the hardware bound gdb's `hbreak`.
        if self.hw_breakpoints.len() >= 4 && !self.hw_breakpoints.contains(&addr) {
            return Ok(false);
        }
        Ok(add(&mut self.hw_breakpoints, &self.breakpoints, addr))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(remove(&mut self.hw_breakpoints, addr))
    }
}

/// The event loop `gdbstub` drives.
struct EventLoop<'a, P>(PhantomData<&'a mut P>);

impl<'a, P: Platform> run_blocking::BlockingEventLoop for EventLoop<'a, P> {
    type Target = GdbTarget<'a, P>;
    type Connection = TcpStream;
    type StopReason = SingleThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut GdbTarget<'a, P>,
        conn: &mut TcpStream,
    ) -> Result<
        run_blocking::Event<SingleThreadStopReason<u64>>,
        run_blocking::WaitForStopReasonError<String, <TcpStream as Connection>::Error>,
    > {
        target.wait(conn)
    }

    fn on_interrupt(
        _target: &mut GdbTarget<'a, P>,
    ) -> Result<Option<SingleThreadStopReason<u64>>, String> {
        Ok(Some(SingleThreadStopReason::Signal(Signal::SIGINT)))
    }
}

/// gdb's full x87 tag word (two bits per physical register: 0 valid, 1 zero,
/// 2 special, 3 empty) from FXSAVE's abridged one (a bit per register, set when not
/// empty) and the registers' contents, as FSTENV would store it.
fn full_tag_word(fx: &FxsaveArea) -> u16 {
    let top = usize::from((fx.fsw() >> 11) & 7);
    let mut word = 0u16;
    for physical in 0..8 {
        let tag = if fx.ftw() & (1 << physical) == 0 {
            3
        } else {
            let st = fx.st((physical + 8 - top) % 8);
            let exponent = u16::from_le_bytes([st[8], st[9]]) & 0x7fff;
            let mantissa =
                u64::from_le_bytes([st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]]);
            match (exponent, mantissa) {
                (0, 0) => 1,
                (0x7fff, _) | (0, _) => 2,
                (_, m) if m >> 63 == 0 => 2,
                _ => 0,
            }
        };
        word |= tag << (2 * physical);
    }
    word
}

/// FXSAVE's abridged tag (a bit per register, set when not empty) from a full tag word.
fn abridged_tag(full: u16) -> u8 {
    (0..8).fold(0, |acc, physical| {
        if (full >> (2 * physical)) & 3 == 3 {
            acc
        } else {
            acc | (1 << physical)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_words_convert_both_ways() {
        // Power-on: every register holds +0.0 and is tagged zero (SDM 1 table 9-1: 5555H).
        assert_eq!(full_tag_word(&FxsaveArea::reset()), 0x5555);
        // An abridged tag of 0: all empty, as after FNINIT.
        let mut fx = FxsaveArea::zeroed();
        assert_eq!(full_tag_word(&fx), 0xffff);
        // TOP = 7 after one push: ST0 is physical register 7.
        fx.set_fsw(7 << 11);
        fx.set_ftw(1 << 7);
        // 1.0: exponent 0x3fff, integer bit set.
        let mut one = [0u8; 10];
        one[7] = 0x80;
        one[8] = 0xff;
        one[9] = 0x3f;
        fx.set_st(0, one);
        assert_eq!(full_tag_word(&fx), 0x3fff);
        // Zero in ST0 is tagged zero.
        fx.set_st(0, [0; 10]);
        assert_eq!(full_tag_word(&fx), 0x7fff);
        assert_eq!(abridged_tag(0x3fff), 0x80);
        assert_eq!(abridged_tag(0xffff), 0);
        assert_eq!(abridged_tag(0), 0xff);
    }

    #[test]
    fn breakpoint_lists_are_bounded() {
        let mut sw = Vec::new();
        let hw: Vec<u64> = (0..4).collect();
        for a in 0..(MAX_BREAKPOINTS as u64 - 4) {
            assert!(add(&mut sw, &hw, 0x1000 + a));
        }
        assert!(!add(&mut sw, &hw, 0x9000));
        assert!(
            add(&mut sw, &hw, 0x1000),
            "an existing one is not added again"
        );
        assert!(remove(&mut sw, 0x1000));
        assert!(!remove(&mut sw, 0x1000));
        assert!(add(&mut sw, &hw, 0x9000));
    }
}

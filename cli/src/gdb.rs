//! `opsvisor run --gdb`: GDB's remote serial protocol on the emulator, through the
//! `gdbstub` crate, as QEMU's `-gdb tcp::1234` (and `-S` as `--gdb-wait`).
//!
//! gdb sees a thread per vCPU of an x86-64 target, as with QEMU: thread K is vCPU K - 1
//! (thread 1 the bootstrap processor), and `info threads` describes each as QEMU does,
//! "CPU#0 [running]", or "[halted]" for a vCPU asleep in HLT or waiting for a start-up
//! IPI. A thread's registers are the general registers, RIP, EFLAGS, the segment
//! selectors, the x87 stack and its control registers, XMM0-15 and MXCSR (gdb's
//! `i386:x86-64` description with SSE), and `monitor info registers` prints the rest as
//! QEMU's monitor does (segments' hidden parts, GDTR, IDTR, CR0-CR4, EFER) for the
//! current vCPU (`monitor info registers -a`: every vCPU, each under `CPU#N`). The
//! current vCPU is that of the thread gdb last read or wrote the registers or memory of
//! (gdb names the thread in each access, but answers from its cache what it has read
//! since the last stop), or the one QEMU's `monitor cpu N` chose since. Memory is read
//! and written by virtual address, translated by core's page walker with the thread's
//! CR0, CR3, CR4 and EFER (paging off: the address is physical).
//!
//! Software and hardware breakpoints are the same thing here: the emulator stops before
//! the instruction at that RIP without writing into guest memory
//! ([`EmuVcpu::set_guest_debug`]). `watch` watches the guest-physical bytes the address
//! maps to (with the selected thread's page tables) when it is set, compared after each
//! instruction (a store of the value already there does not stop); `rwatch` and
//! `awatch` watch the linear address in each instruction's memory operands
//! ([`opsvisor_emu::AccessWatch`]). Breakpoints and watchpoints apply to every vCPU, and
//! a stop names the thread of the vCPU that made it.
//!
//! `continue` runs every vCPU, in core's turns on this thread ([`opsvisor_core::sched`]),
//! until a breakpoint, a watchpoint, the run's end, or gdb's Ctrl-C, which the stub sees
//! between two slices of the guest's run ([`SLICE_INSTRUCTIONS`], [`SLICE_TIME`]) and
//! which stops them all. `stepi` runs exactly one instruction of the selected thread's
//! vCPU, alone: the other vCPUs stay stopped ([`opsvisor_core::vm::Vm::run_alone`]), as
//! with QEMU's gdbstub, so during a step the others neither run nor hit breakpoints,
//! and their registers stay as gdb saw them. With several vCPUs the step of a vCPU that
//! executes HLT ends after the HLT, and that of one already asleep in HLT or waiting for
//! a start-up IPI ends at once where it is (the stopped vCPUs could be what wakes it);
//! one whose start-up IPI is pending ends at the first instruction of its start-up code.
//! With one vCPU the step of a HLT waits for the interrupt that ends it, as the machine
//! runs on. With gdb's `set scheduler-locking on`, `stepi` is the same, and `continue`
//! still runs every vCPU.
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
use gdbstub::common::{Signal, Tid};
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::{run_blocking, DisconnectReason, GdbStub, MultiThreadStopReason};
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{outputln, ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use gdbstub_arch::x86::X86_64_SSE;
use opsvisor_backends::{Backend, Machine};
use opsvisor_core::mmu::walk::PagingRegs;
use opsvisor_core::ops::{Gpr, SegReg, X86Ops};
use opsvisor_core::platform::Platform;
use opsvisor_core::vcpu::MpState;
use opsvisor_core::vm::RunOutcome;
use opsvisor_emu::{
    AccessWatch, DebugStop, EmuVcpu, GuestDebug, Watch, MAX_BREAKPOINTS, MAX_WATCHPOINTS,
};
use opsvisor_gdb::{memory, regs};
use std::marker::PhantomData;
use std::net::{TcpListener, TcpStream};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

/// Instructions the guest runs between two looks at the connection.
pub const SLICE_INSTRUCTIONS: u64 = 200_000;
/// Host time the guest runs (or sleeps in HLT) between two looks at the connection.
pub const SLICE_TIME: Duration = Duration::from_millis(20);

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
            step: None,
            selected: 0,
            _platform: PhantomData,
        };
        let stub = GdbStub::new(stream);
        let reason = stub.run_blocking::<EventLoop<P>>(&mut target);
        let GdbTarget { mut runner, .. } = target;
        match reason {
            Ok(DisconnectReason::Kill) => Ok(GdbEnd::Killed),
            Ok(DisconnectReason::Disconnect) => {
                log::info!("gdb detached: the guest runs on");
                runner.set_debug(None, None)?;
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
                runner.set_debug(None, None)?;
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

    /// The vCPUs: gdb's threads 1 to this.
    fn vcpus(&self) -> usize {
        self.vm.vcpus().len()
    }

    /// What every vCPU stops at (`None`: nothing, the guest runs as without gdb); vCPU
    /// `step` also stops after its next instruction.
    fn set_debug(&mut self, debug: Option<&GuestDebug>, step: Option<usize>) -> Result<(), String> {
        let (vcpus, mem) = self.vm.vcpus_and_mem_mut();
        for (i, v) in vcpus.iter_mut().enumerate() {
            let want = debug.map(|d| GuestDebug {
                single_step: step == Some(i),
                ..d.clone()
            });
            emu(&mut v.backend)
                .set_guest_debug(mem, want)
                .map_err(String::from)?;
        }
        Ok(())
    }

    /// Run one slice: `None` when it ended at the slice's own bounds, else how the run
    /// stopped (a debug stop, or its end under the user's limits).
    fn slice(&mut self) -> Option<RunOutcome> {
        match self.run_slice(None) {
            Slice::Stop(outcome) => Some(outcome),
            Slice::Bounds | Slice::CannotRun => None,
        }
    }

    /// Run one slice of every vCPU in turns, or of vCPU `alone` with the others stopped
    /// ([`opsvisor_core::vm::Vm::run_alone`]).
    fn run_slice(&mut self, alone: Option<usize>) -> Slice {
        let mut instructions = SLICE_INSTRUCTIONS;
        if let Some(left) = self.instructions_left {
            if left == 0 {
                return Slice::Stop(RunOutcome::InstructionLimit);
            }
            instructions = instructions.min(left);
        }
        let mut time = SLICE_TIME;
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Slice::Stop(RunOutcome::Timeout);
            }
            time = time.min(left);
        }
        self.vm.config.max_instructions = Some(instructions);
        self.vm.config.timeout_ns = Some(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX));
        let before = self.vm.instructions_retired().unwrap_or(0);
        let outcome = match alone {
            None => Some(self.vm.run()),
            Some(i) => self.vm.run_alone(i),
        };
        let done = self
            .vm
            .instructions_retired()
            .unwrap_or(0)
            .saturating_sub(before);
        if let Some(left) = &mut self.instructions_left {
            *left = left.saturating_sub(done);
        }
        match outcome {
            None => Slice::CannotRun,
            Some(RunOutcome::InstructionLimit) if self.instructions_left != Some(0) => {
                Slice::Bounds
            }
            Some(RunOutcome::Timeout) if self.deadline.is_none_or(|d| Instant::now() < d) => {
                Slice::Bounds
            }
            Some(other) => Slice::Stop(other),
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

/// How one slice of the run ended.
enum Slice {
    /// At the slice's own bounds: the guest runs on.
    Bounds,
    /// The run stopped: a debug stop, or its end under the user's limits.
    Stop(RunOutcome),
    /// The vCPU run alone halted or waits for a start-up IPI.
    CannotRun,
}

/// gdb's thread ID of vCPU `index` (threads count from 1, as QEMU's CPUs do in gdb).
fn tid(index: usize) -> Tid {
    NonZeroUsize::MIN.saturating_add(index)
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
    /// The vCPU the next resume steps, alone, if it is a step.
    step: Option<usize>,
    /// The vCPU gdb last read or wrote registers or memory of, or `monitor cpu N` chose:
    /// watchpoints' addresses are translated and `monitor info registers` reads there.
    selected: usize,
    _platform: PhantomData<P>,
}

impl<P: Platform> GdbTarget<'_, P> {
    /// The vCPU of gdb's thread `tid`, which becomes the selected one.
    fn select(&mut self, tid: Tid) -> Option<usize> {
        let index = tid.get() - 1;
        if index >= self.runner.vcpus() {
            return None;
        }
        self.selected = index;
        Some(index)
    }

    /// The translation registers of the selected vCPU now.
    fn paging(&self) -> PagingRegs {
        memory::paging(&self.runner.vm.vcpus()[self.selected].backend)
    }

    /// The guest-physical address of virtual `addr`, if it is mapped (the walk sets the
    /// accessed bits, as the guest's own access would).
    fn translate(&mut self, addr: u64, write: bool) -> Option<u64> {
        let regs = self.paging();
        memory::translate(&mut self.runner.vm.mem, &regs, addr, write)
    }

    /// Run until a stop gdb hears about, or until gdb has something to say.
    fn wait(
        &mut self,
        conn: &mut TcpStream,
    ) -> Result<
        run_blocking::Event<MultiThreadStopReason<u64>>,
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
            single_step: false,
            breakpoints: all,
            watchpoints: self.watchpoints.iter().map(|w| w.2).collect(),
            access_watchpoints: self.access_watchpoints.iter().map(|w| w.2).collect(),
        };
        let step = self.step.take();
        self.runner
            .set_debug(Some(&debug), step)
            .map_err(TargetErr)?;
        // A step runs the stepped vCPU alone: the others stay stopped (QEMU's default).
        // With one vCPU there are no others, and the step of a HLT waits in it as before.
        let alone = step.filter(|_| self.runner.vcpus() > 1);
        loop {
            let outcome = match self.runner.run_slice(alone) {
                Slice::Stop(outcome) => outcome,
                Slice::CannotRun => {
                    // The stepped vCPU executed HLT, or sleeps in one or waits for SIPI
                    // with the others stopped: its step ends where it is.
                    let index = alone.unwrap_or(0);
                    return Ok(run_blocking::Event::TargetStopped(
                        MultiThreadStopReason::SignalWithThread {
                            tid: tid(index),
                            signal: Signal::SIGTRAP,
                        },
                    ));
                }
                Slice::Bounds => {
                    // gdb's Ctrl-C (or anything else it sends) stops the guest.
                    match ConnectionExt::peek(conn).map_err(ConnError)? {
                        Some(_) => {
                            let byte = ConnectionExt::read(conn).map_err(ConnError)?;
                            return Ok(run_blocking::Event::IncomingData(byte));
                        }
                        None => continue,
                    }
                }
            };
            // The vCPU whose exit stopped the run: the thread gdb hears of.
            let cur = self.runner.vm.cur();
            let tid = tid(cur);
            let v = emu(&mut self.runner.vm.vcpus_mut()[cur].backend);
            let (rip, stop) = (v.rip(), v.debug_stop_reason());
            let reason = match (outcome, stop) {
                (RunOutcome::Debug { .. }, Some(DebugStop::Watch(i))) => {
                    MultiThreadStopReason::Watch {
                        tid,
                        kind: WatchKind::Write,
                        addr: self.watchpoints.get(i).map_or(0, |w| w.0),
                    }
                }
                (RunOutcome::Debug { .. }, Some(DebugStop::Access(i))) => {
                    let (kind, addr) = self
                        .access_watchpoints
                        .get(i)
                        .map_or((WatchKind::Read, 0), |w| (w.0, w.2.addr));
                    MultiThreadStopReason::Watch { tid, kind, addr }
                }
                // gdb hears which thread stepped (DoneStep would name none).
                (RunOutcome::Debug { .. }, Some(DebugStop::Step)) => {
                    MultiThreadStopReason::SignalWithThread {
                        tid,
                        signal: Signal::SIGTRAP,
                    }
                }
                (RunOutcome::Debug { .. }, _) if self.hw_breakpoints.contains(&rip) => {
                    MultiThreadStopReason::HwBreak(tid)
                }
                (RunOutcome::Debug { .. }, _) => MultiThreadStopReason::SwBreak(tid),
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
fn end_reason(end: &RunOutcome) -> MultiThreadStopReason<u64> {
    match opsvisor_gdb::process_end(end) {
        Ok(code) => MultiThreadStopReason::Exited(code),
        Err(signal) => MultiThreadStopReason::Terminated(signal),
    }
}

impl<P: Platform> Target for GdbTarget<'_, P> {
    type Arch = X86_64_SSE;
    type Error = String;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
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

impl<P: Platform> MultiThreadBase for GdbTarget<'_, P> {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs, tid: Tid) -> TargetResult<(), Self> {
        let index = self.select(tid).ok_or(TargetError::NonFatal)?;
        regs::read(&self.runner.vm.vcpus()[index].backend, regs);
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs, tid: Tid) -> TargetResult<(), Self> {
        let index = self.select(tid).ok_or(TargetError::NonFatal)?;
        // x87/SSE state the processor would refuse (an MXCSR with a reserved bit set) is
        // an error for gdb, and nothing is written.
        regs::write(&mut self.runner.vm.vcpus_mut()[index].backend, regs)
            .map_err(|_| TargetError::NonFatal)?;
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        self.select(tid).ok_or(TargetError::NonFatal)?;
        let paging = self.paging();
        let done = memory::read_virtual(&mut self.runner.vm.mem, &paging, start, data);
        if done == 0 && !data.is_empty() {
            // gdb: "Cannot access memory at address ...".
            return Err(TargetError::NonFatal);
        }
        Ok(done)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        self.select(tid).ok_or(TargetError::NonFatal)?;
        let paging = self.paging();
        if !memory::write_virtual(&mut self.runner.vm.mem, &paging, start, data) {
            return Err(TargetError::NonFatal);
        }
        // The guest's code may have changed behind every vCPU's decoded blocks.
        for v in self.runner.vm.vcpus_mut() {
            emu(&mut v.backend).invalidate_code();
        }
        Ok(())
    }

    fn list_active_threads(
        &mut self,
        register_thread: &mut dyn FnMut(Tid),
    ) -> Result<(), Self::Error> {
        for index in 0..self.runner.vcpus() {
            register_thread(tid(index));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}

impl<P: Platform> ThreadExtraInfo for GdbTarget<'_, P> {
    /// QEMU's description of a CPU in `info threads`: "CPU#0 [running]", or
    /// "[halted]" for one asleep in HLT or waiting for a start-up IPI.
    fn thread_extra_info(&self, tid: Tid, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let index = tid.get() - 1;
        let Some(v) = self.runner.vm.vcpus().get(index) else {
            return Ok(0);
        };
        let state = match v.mp_state() {
            MpState::Runnable => "running",
            MpState::Halted | MpState::WaitForSipi => "halted",
        };
        let text = format!("CPU#{index} [{state}]");
        let n = text.len().min(buf.len());
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        Ok(n)
    }
}

impl<P: Platform> MultiThreadResume for GdbTarget<'_, P> {
    fn resume(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.step = None;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        // Every vCPU continues when none steps. A signal gdb would pass on has no
        // meaning for a machine (QEMU ignores it too).
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl<P: Platform> MultiThreadSingleStep for GdbTarget<'_, P> {
    fn set_resume_action_step(
        &mut self,
        tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        let index = tid.get() - 1;
        if index >= self.runner.vcpus() {
            return Err(format!("gdb asked to step thread {tid}, which is no vCPU"));
        }
        self.step = Some(index);
        Ok(())
    }
}

impl<P: Platform> MultiThreadSchedulerLocking for GdbTarget<'_, P> {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        // gdb resumes only the threads it named (its step over a breakpoint, or
        // `set scheduler-locking on`): a step runs its vCPU alone in any case; a
        // continue resumes every vCPU (see the module's documentation).
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
        let text = String::from_utf8_lossy(cmd.trim_ascii()).into_owned();
        let words: Vec<&str> = text.split_whitespace().collect();
        match words[..] {
            ["info", "registers"] => {
                let v = &self.runner.vm.vcpus()[self.selected].backend;
                for line in info_registers(v).lines() {
                    outputln!(out, "{line}");
                }
            }
            ["info", "registers", "-a"] => {
                for (index, v) in self.runner.vm.vcpus().iter().enumerate() {
                    outputln!(out, "");
                    outputln!(out, "CPU#{index}");
                    for line in info_registers(&v.backend).lines() {
                        outputln!(out, "{line}");
                    }
                }
            }
            ["cpu", index] => match index.parse::<usize>() {
                Ok(index) if index < self.runner.vcpus() => self.selected = index,
                _ => outputln!(
                    out,
                    "invalid CPU index '{index}': expected 0 to {}",
                    self.runner.vcpus() - 1
                ),
            },
            ["help"] | [] => {
                outputln!(
                    out,
                    "monitor info registers: every register of the current vCPU, control and \
                     system registers included (gdb's x86-64 description has no control registers)"
                );
                outputln!(out, "monitor info registers -a: the same for every vCPU");
                outputln!(
                    out,
                    "monitor cpu N: make vCPU N (gdb's thread N+1) the current one"
                );
            }
            _ => outputln!(
                out,
                "unknown monitor command '{text}' (monitor help lists them)"
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
    type StopReason = MultiThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut GdbTarget<'a, P>,
        conn: &mut TcpStream,
    ) -> Result<
        run_blocking::Event<MultiThreadStopReason<u64>>,
        run_blocking::WaitForStopReasonError<String, <TcpStream as Connection>::Error>,
    > {
        target.wait(conn)
    }

    fn on_interrupt(
        target: &mut GdbTarget<'a, P>,
    ) -> Result<Option<MultiThreadStopReason<u64>>, String> {
        // Every vCPU is stopped (they share this thread); gdb hears of the one that ran
        // last.
        Ok(Some(MultiThreadStopReason::SignalWithThread {
            tid: tid(target.runner.vm.cur()),
            signal: Signal::SIGINT,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! The stub of a machine whose backend stops for a debugger through
//! [`X86Ops::set_guest_debug`] (VMX and SVM): gdb sees one thread, the bootstrap
//! processor (vCPU 0), as QEMU shows a single-CPU machine.
//!
//! - Software breakpoints (`break`): an INT3 written into guest memory at the
//!   breakpoint's guest-physical address (translated with the vCPU's page tables when
//!   gdb sets it), the byte it replaced put back when gdb removes it; the backend
//!   intercepts #BP. An INT3 of the guest's own (none of the stub's at its address) is
//!   given back to the guest: RIP past it and #BP injected, as the processor would have
//!   delivered it.
//! - Hardware breakpoints (`hbreak`): instruction breakpoints in DR0-DR3 with DR7, which
//!   the debugger owns while any is set (the guest's own values are put back when the
//!   last goes); the backend intercepts #DB. A #DB the stub did not ask for (the guest's
//!   own single step or breakpoint) is given back to the guest.
//! - `stepi`: the backend's single step ([`GuestDebug::single_step`]: the monitor trap
//!   flag, or RFLAGS.TF hidden from the guest).
//! - `continue` runs the guest in slices of [`HwStub::new`]'s `slice_ns` of host time,
//!   looking at the connection between two: a byte from gdb (its Ctrl-C) stops the
//!   guest.
//! - The run's end is reported as a process's, as the emulator's stub does: the debug
//!   exit as "exited with code STATUS", power-off as code 0, a triple fault as SIGSEGV,
//!   a guest halted for good as SIGSTOP, a reset as SIGHUP, a failure as SIGILL.
//!
//! gdb removes its breakpoints when the guest stops and inserts them again when it
//! resumes (its default), so the guest's memory holds the INT3s only while it runs.

use crate::{memory, regs};
use alloc::vec::Vec;
use core::marker::PhantomData;
use gdbstub::common::Signal;
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::{run_blocking, DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, SwBreakpoint, SwBreakpointOps,
};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use gdbstub_arch::x86::X86_64_SSE;
use opsvisor_core::ops::{DebugRegs, Event, GuestDebug, X86Ops};
use opsvisor_core::platform::Platform;
use opsvisor_core::vm::{RunOutcome, Vm};

/// Most software breakpoints the stub keeps (gdb asks for a few; the bound keeps the
/// host's memory independent of gdb).
pub const MAX_SW_BREAKPOINTS: usize = 64;
/// INT3.
const INT3: u8 = 0xcc;
/// #DB.
const DB: u8 = 1;
/// #BP.
const BP: u8 = 3;
/// DR6: B0-B3.
const DR6_B: u64 = 0xf;

/// A software breakpoint: where it is, and the byte its INT3 replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SwBp {
    addr: u64,
    gpa: u64,
    saved: u8,
}

/// How a session with gdb ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// gdb detached: the guest runs on without it.
    Detached,
    /// gdb's `kill`: the run ends.
    Killed,
    /// The guest's run ended (gdb was told).
    Ended(RunOutcome),
    /// The connection failed: the guest runs on without gdb.
    ConnectionLost,
}

/// The stub's target: the machine and what gdb asked for.
pub struct HwStub<'a, B: X86Ops, P: Platform> {
    vm: &'a mut Vm<B, P>,
    sw: Vec<SwBp>,
    hw: [Option<u64>; 4],
    /// The guest's DR0-DR3, DR6 and DR7 while the debugger owns them.
    guest_dr: Option<DebugRegs>,
    /// The next resumption is a single step.
    step: bool,
    /// Host time of a slice of the guest's run between two looks at the connection.
    slice_ns: u64,
    /// The run's end, once it came.
    end: Option<RunOutcome>,
}

impl<'a, B: X86Ops, P: Platform> HwStub<'a, B, P> {
    /// The stub of `vm`, stopped; `continue` runs it in slices of `slice_ns`.
    pub fn new(vm: &'a mut Vm<B, P>, slice_ns: u64) -> HwStub<'a, B, P> {
        HwStub {
            vm,
            sw: Vec::new(),
            hw: [None; 4],
            guest_dr: None,
            step: false,
            slice_ns: slice_ns.max(1),
            end: None,
        }
    }

    /// Speak to gdb over `conn` until it detaches, kills the run or the run ends; then
    /// every breakpoint is gone from the guest and its debug registers are its own (as
    /// whenever the stub is dropped).
    pub fn serve<C: ConnectionExt>(mut self, conn: C) -> SessionEnd {
        let saved = self.vm.config.timeout_ns;
        let reason = GdbStub::new(conn).run_blocking::<EventLoop<'a, B, P, C>>(&mut self);
        self.vm.config.timeout_ns = saved;
        // Dropping the stub at the end takes the breakpoints out (see `Drop`).
        match reason {
            Ok(DisconnectReason::Kill) => SessionEnd::Killed,
            Ok(DisconnectReason::Disconnect) => SessionEnd::Detached,
            Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => {
                SessionEnd::Ended(self.end.take().unwrap_or(RunOutcome::Quit))
            }
            Err(_) => match self.end.take() {
                Some(end) => SessionEnd::Ended(end),
                None => SessionEnd::ConnectionLost,
            },
        }
    }

    /// The bootstrap processor, gdb's thread.
    pub(crate) fn vcpu(&self) -> &B {
        &self.vm.bsp().backend
    }

    /// Remove every breakpoint and stop asking the backend for stops.
    fn detach(&mut self) {
        for bp in core::mem::take(&mut self.sw) {
            let _ = self.vm.mem.write(bp.gpa, &[bp.saved]);
        }
        self.hw = [None; 4];
        self.load_debug_regs();
        let _ = self
            .vm
            .bsp_mut()
            .backend
            .set_guest_debug(GuestDebug::default());
    }

    /// DR0-DR3 and DR7 for the hardware breakpoints (instruction breakpoints, local
    /// enable), or the guest's own back when there are none.
    pub(crate) fn load_debug_regs(&mut self) {
        let v = &mut self.vm.bsp_mut().backend;
        if self.hw.iter().all(Option::is_none) {
            if let Some(guest) = self.guest_dr.take() {
                v.set_debug_regs(&guest);
            }
            return;
        }
        let guest = *self.guest_dr.get_or_insert_with(|| v.debug_regs());
        let mut dr = DebugRegs {
            dr6: guest.dr6 & !DR6_B,
            ..DebugRegs::default()
        };
        for (n, addr) in self.hw.iter().enumerate() {
            if let Some(addr) = addr {
                dr.db[n] = *addr;
                // L<n>; R/W and LEN 00: an instruction breakpoint.
                dr.dr7 |= 1 << (2 * n);
            }
        }
        v.set_debug_regs(&dr);
    }

    /// Run until a stop gdb hears about, or until gdb has something to say.
    fn wait<C: ConnectionExt>(
        &mut self,
        conn: &mut C,
    ) -> Result<
        run_blocking::Event<SingleThreadStopReason<u64>>,
        run_blocking::WaitForStopReasonError<&'static str, C::Error>,
    > {
        use run_blocking::WaitForStopReasonError::{Connection as ConnError, Target as TargetErr};
        self.load_debug_regs();
        let step = core::mem::take(&mut self.step);
        let want = GuestDebug {
            single_step: step,
            intercept_breakpoints: !self.sw.is_empty(),
            intercept_debug: self.hw.iter().any(Option::is_some),
        };
        self.vm
            .bsp_mut()
            .backend
            .set_guest_debug(want)
            .map_err(TargetErr)?;
        self.vm.config.timeout_ns = Some(self.slice_ns);
        loop {
            let outcome = self.vm.run();
            let rip = self.vcpu().rip();
            let reason = match outcome {
                RunOutcome::Timeout => {
                    // gdb's Ctrl-C (or anything else it sends) stops the guest.
                    match conn.peek().map_err(ConnError)? {
                        Some(_) => {
                            let byte = conn.read().map_err(ConnError)?;
                            return Ok(run_blocking::Event::IncomingData(byte));
                        }
                        None => continue,
                    }
                }
                RunOutcome::Debug { vector: BP } => {
                    if self.sw.iter().any(|bp| bp.addr == rip) {
                        SingleThreadStopReason::SwBreak(())
                    } else {
                        // The guest's own INT3: delivered as the processor would have.
                        let v = &mut self.vm.bsp_mut().backend;
                        v.set_rip(rip.wrapping_add(1));
                        v.inject_event(Event::Exception {
                            vector: BP,
                            error_code: None,
                        });
                        continue;
                    }
                }
                RunOutcome::Debug { vector: DB } => {
                    let dr6 = self.vcpu().debug_regs().dr6;
                    let ours = (0..4).any(|n| dr6 & (1 << n) != 0 && self.hw[n].is_some());
                    if step {
                        SingleThreadStopReason::DoneStep
                    } else if ours || self.hw.contains(&Some(rip)) {
                        SingleThreadStopReason::HwBreak(())
                    } else {
                        // The guest's own #DB (its TF or its breakpoints).
                        self.vm.bsp_mut().backend.inject_event(Event::Exception {
                            vector: DB,
                            error_code: None,
                        });
                        continue;
                    }
                }
                end => {
                    let reason = end_reason(&end);
                    self.end = Some(end);
                    reason
                }
            };
            let _ = self
                .vm
                .bsp_mut()
                .backend
                .set_guest_debug(GuestDebug::default());
            return Ok(run_blocking::Event::TargetStopped(reason));
        }
    }
}

#[cfg(test)]
impl<B: X86Ops, P: Platform> HwStub<'_, B, P> {
    /// The guest-physical byte at `gpa` as the guest sees it (INT3s included).
    pub(crate) fn guest_byte(&self, gpa: u64) -> Option<u8> {
        self.vm.mem.read_u8(gpa).ok()
    }
}

impl<B: X86Ops, P: Platform> Drop for HwStub<'_, B, P> {
    /// The session is over: every INT3 out of guest memory, the guest's debug registers
    /// back, and no more stops asked of the backend.
    fn drop(&mut self) {
        self.detach();
    }
}

/// How gdb hears of the run's end ([`crate::process_end`]).
fn end_reason(end: &RunOutcome) -> SingleThreadStopReason<u64> {
    match crate::process_end(end) {
        Ok(code) => SingleThreadStopReason::Exited(code),
        Err(signal) => SingleThreadStopReason::Terminated(signal),
    }
}

impl<B: X86Ops, P: Platform> Target for HwStub<'_, B, P> {
    type Arch = X86_64_SSE;
    type Error = &'static str;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    // gdb's stepi is the backend's single step, never a temporary breakpoint.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl<B: X86Ops, P: Platform> SingleThreadBase for HwStub<'_, B, P> {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs) -> TargetResult<(), Self> {
        regs::read(self.vcpu(), regs);
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs) -> TargetResult<(), Self> {
        regs::write(&mut self.vm.bsp_mut().backend, regs).map_err(|_| TargetError::NonFatal)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        let paging = memory::paging(self.vcpu());
        let done = memory::read_virtual(&mut self.vm.mem, &paging, start, data);
        if done == 0 && !data.is_empty() {
            // gdb: "Cannot access memory at address ...".
            return Err(TargetError::NonFatal);
        }
        // The stub's INT3s are not the guest's code: gdb reads the bytes they replaced.
        for bp in &self.sw {
            if let Some(i) = bp.addr.checked_sub(start) {
                if let Some(b) = data[..done].get_mut(i as usize) {
                    *b = bp.saved;
                }
            }
        }
        Ok(done)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        let paging = memory::paging(self.vcpu());
        if !memory::write_virtual(&mut self.vm.mem, &paging, start, data) {
            return Err(TargetError::NonFatal);
        }
        // A write over one of the stub's INT3s changes the byte it put back later.
        for bp in &mut self.sw {
            if let Some(i) = bp.addr.checked_sub(start) {
                if let Some(&b) = data.get(i as usize) {
                    bp.saved = b;
                    let _ = self.vm.mem.write(bp.gpa, &[INT3]);
                }
            }
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl<B: X86Ops, P: Platform> SingleThreadResume for HwStub<'_, B, P> {
    fn resume(&mut self, signal: Option<Signal>) -> Result<(), Self::Error> {
        if signal.is_some() {
            return Err("the stub does not deliver signals: continue without one");
        }
        self.step = false;
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl<B: X86Ops, P: Platform> SingleThreadSingleStep for HwStub<'_, B, P> {
    fn step(&mut self, signal: Option<Signal>) -> Result<(), Self::Error> {
        if signal.is_some() {
            return Err("the stub does not deliver signals: step without one");
        }
        self.step = true;
        Ok(())
    }
}

impl<B: X86Ops, P: Platform> Breakpoints for HwStub<'_, B, P> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl<B: X86Ops, P: Platform> SwBreakpoint for HwStub<'_, B, P> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.sw.iter().any(|bp| bp.addr == addr) {
            return Ok(true);
        }
        if self.sw.len() >= MAX_SW_BREAKPOINTS {
            return Ok(false);
        }
        let paging = memory::paging(self.vcpu());
        let Some(gpa) = memory::translate(&mut self.vm.mem, &paging, addr, false) else {
            return Ok(false);
        };
        let Ok(saved) = self.vm.mem.read_u8(gpa) else {
            return Ok(false);
        };
        if self.vm.mem.write(gpa, &[INT3]).is_err() {
            return Ok(false);
        }
        self.sw.push(SwBp { addr, gpa, saved });
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let Some(i) = self.sw.iter().position(|bp| bp.addr == addr) else {
            return Ok(false);
        };
        let bp = self.sw.swap_remove(i);
        Ok(self.vm.mem.write(bp.gpa, &[bp.saved]).is_ok())
    }
}

impl<B: X86Ops, P: Platform> HwBreakpoint for HwStub<'_, B, P> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.hw.contains(&Some(addr)) {
            return Ok(true);
        }
        match self.hw.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => {
                *slot = Some(addr);
                Ok(true)
            }
            // DR0-DR3 are taken.
            None => Ok(false),
        }
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        match self.hw.iter_mut().find(|slot| **slot == Some(addr)) {
            Some(slot) => {
                *slot = None;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// The event loop `gdbstub` drives.
struct EventLoop<'a, B, P, C>(PhantomData<(&'a mut B, &'a mut P, C)>);

impl<'a, B: X86Ops, P: Platform, C: ConnectionExt> run_blocking::BlockingEventLoop
    for EventLoop<'a, B, P, C>
{
    type Target = HwStub<'a, B, P>;
    type Connection = C;
    type StopReason = SingleThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut HwStub<'a, B, P>,
        conn: &mut C,
    ) -> Result<
        run_blocking::Event<SingleThreadStopReason<u64>>,
        run_blocking::WaitForStopReasonError<&'static str, <C as Connection>::Error>,
    > {
        target.wait(conn)
    }

    fn on_interrupt(
        _target: &mut HwStub<'a, B, P>,
    ) -> Result<Option<SingleThreadStopReason<u64>>, &'static str> {
        Ok(Some(SingleThreadStopReason::Signal(Signal::SIGINT)))
    }
}

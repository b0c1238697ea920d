//! A host that observes exits: the program's platform with the exit trace
//! (`--trace-exits`) and the exit breakdowns (`--stats`) attached.
//!
//! It is a `Platform` of its own, wrapping another: the run loop is monomorphized for it,
//! so a run without tracing or statistics runs the plain platform, whose exit hooks are
//! empty, and pays nothing for them.

use crate::breakdown::Breakdown;
use crate::trace::TraceWriter;
use opsvisor_core::platform::Platform;
use opsvisor_core::{Exit, X86Ops};

/// `P` with the exit trace and breakdowns attached.
pub struct Observed<P> {
    /// The platform that serves the guest.
    pub inner: P,
    /// The exit trace, if one is written.
    pub trace: Option<TraceWriter>,
    /// The breakdowns, if statistics are kept.
    pub breakdown: Option<Box<Breakdown>>,
}

impl<P: Platform> Platform for Observed<P> {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }

    fn wall_clock_ns(&self) -> u64 {
        self.inner.wall_clock_ns()
    }

    fn wait(&mut self, deadline_ns: Option<u64>) -> bool {
        self.inner.wait(deadline_ns)
    }

    #[inline]
    fn console_write(&mut self, bytes: &[u8]) {
        self.inner.console_write(bytes)
    }

    fn console_flush(&mut self) {
        self.inner.console_flush()
    }

    #[inline]
    fn console_read(&mut self) -> Option<u8> {
        self.inner.console_read()
    }

    #[inline]
    fn console_input_ready(&mut self) -> bool {
        self.inner.console_input_ready()
    }

    fn console_input_possible(&mut self) -> bool {
        self.inner.console_input_possible()
    }

    fn stop_requested(&mut self) -> bool {
        self.inner.stop_requested()
    }

    #[inline]
    fn observe_exit<B: X86Ops>(&mut self, vcpu: u32, exit: &Exit, cpu: &B) {
        if let Some(trace) = &mut self.trace {
            let inner = &self.inner;
            trace.exit(|| inner.now_ns(), vcpu, exit, cpu);
        }
        if let Some(breakdown) = &mut self.breakdown {
            breakdown.exit(vcpu, exit, cpu);
        }
    }

    #[inline]
    fn observe_read(&mut self, value: u64) {
        if let Some(trace) = &mut self.trace {
            trace.read(value);
        }
    }

    #[inline]
    fn observe_exit_time(&mut self, ns: u64) {
        if let Some(breakdown) = &mut self.breakdown {
            breakdown.exit_time(ns);
        }
    }
}

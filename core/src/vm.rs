//! The VM: a vCPU on some backend, its memory, its devices, and the run loop.
//!
//! The loop is KVM's `vcpu_run` in miniature: deliver pending events, enter the guest with
//! a [`RunLimit`], handle the [`Exit`] (each family in [`crate::exits`]), repeat. Reading
//! the host clock costs more than a whole CPUID exit on the emulator, so the loop does not
//! read it after every exit: only after exits that concern time (HLT, preemption, timer
//! MSRs, APIC accesses) and at least every [`VmConfig::exits_per_clock_read`] exits. The
//! backend's own budget (the emulator's instruction slice, VMX's preemption timer) bounds
//! the time between those reads.
//!
//! Interrupts take one path ([`crate::irq`]): a device drives a line with
//! [`Vm::set_irq`]; the PIC and the I/O APIC turn lines into LINT0 levels and messages;
//! the local APIC decides what is pending; [`Vm::deliver_events`] injects, in priority
//! order, an NMI, the local APIC's highest fixed interrupt, or the PIC's vector through
//! LINT0 (ExtINT, after the INTA cycle), or asks the backend for the window in which the
//! guest can take it.

use crate::acpi::SCI_IRQ;
use crate::apic::LocalApic;
use crate::cpuid::CpuidPolicy;
use crate::devices::bus::{Bus, MmioDevice, PioDevice};
use crate::devices::pit::PIT_IRQ;
use crate::devices::rtc::RTC_IRQ;
pub use crate::devices::COM1_IRQ;
use crate::devices::{register_ports, Devices};
use crate::exit::Exit;
use crate::mmu::memory::GuestMemory;
use crate::msr::MsrState;
use crate::ops::{RunLimit, X86Ops};
use crate::platform::Platform;
use crate::stats::ExitStats;
use alloc::string::String;

/// The earlier of two optional times.
pub(crate) fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The guest wrote to the debug-exit port; `status` is the process exit status
    /// (`(value << 1) | 1`, as QEMU's isa-debug-exit).
    DebugExit {
        /// The exit status.
        status: i32,
    },
    /// The guest triple-faulted.
    TripleFault {
        /// RIP when it happened.
        rip: u64,
    },
    /// The instruction limit was reached.
    InstructionLimit,
    /// The wall-clock timeout was reached.
    Timeout,
    /// The guest halted with nothing that could ever wake it (interrupts disabled, or no
    /// timer armed and no interrupt source).
    HaltedForever,
    /// The guest powered the machine off: ACPI sleep state S5 through PM1a_CNT.
    PowerOff,
    /// The guest reset the machine (the keyboard controller's reset line, the reset
    /// control register at 0xCF9, which is also the ACPI reset register). The VM stops;
    /// its owner decides whether to start the guest again, as QEMU does unless
    /// `-no-reboot`.
    Reset,
    /// The run could not continue; the string says why.
    Failed(String),
}

/// Run-loop settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// Stop after this many guest instructions in one [`Vm::run`] (backends that count
    /// them).
    pub max_instructions: Option<u64>,
    /// Stop after this much host time, in nanoseconds.
    pub timeout_ns: Option<u64>,
    /// Measure the host time spent handling each exit kind.
    pub collect_timing: bool,
    /// Instructions the emulator runs before it must come back to the core.
    pub time_slice: u64,
    /// Exits handled between two reads of the host clock, at most.
    pub exits_per_clock_read: u32,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            max_instructions: None,
            timeout_ns: None,
            collect_timing: false,
            time_slice: 200_000,
            exits_per_clock_read: 32,
        }
    }
}

/// What the run loop does after an exit handler. A plain tag (the outcome of a stop waits
/// in `Vm::stop`), so the loop branches on it without moving a `RunOutcome` around.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Re-enter at once.
    Resume,
    /// Something that may change pending interrupts happened (EOI, TPR, APIC writes,
    /// IF opening): re-evaluate event delivery before re-entering.
    Events,
    /// Time matters now: read the clock, update timers, deliver events.
    Clock,
    /// Stop the run with the outcome stored by [`Vm::stop`].
    Stop,
}

/// One virtual machine with one vCPU.
pub struct Vm<B: X86Ops, P: Platform> {
    /// The vCPU's backend.
    pub vcpu: B,
    /// Guest-physical memory.
    pub mem: GuestMemory,
    /// The host services.
    pub platform: P,
    /// What CPUID reports.
    pub cpuid: CpuidPolicy,
    /// The MSRs the core holds.
    pub msrs: MsrState,
    /// The local APIC.
    pub apic: LocalApic,
    /// The platform devices.
    pub devices: Devices,
    /// Port-I/O map.
    pub pio: Bus<PioDevice>,
    /// MMIO map.
    pub mmio: Bus<MmioDevice>,
    /// Exit counts and times.
    pub stats: ExitStats,
    /// Run-loop settings.
    pub config: VmConfig,
    /// The limit handed to the backend; refreshed when the clock is read.
    pub(crate) limit: RunLimit,
    /// Host time (ns) when the current or last run started.
    run_started_ns: u64,
    /// Host time (ns) when the last run ended.
    run_ended_ns: u64,
    /// The backend's retired-instruction count when the current or last run started:
    /// [`VmConfig::max_instructions`] counts from there, whatever the vCPU ran before.
    retired_at_start: u64,
    /// The xAPIC page currently registered on the MMIO bus.
    apic_mmio_registered: Option<u64>,
    /// Whether the core asked the backend for an interrupt window.
    irq_window: bool,
    /// Whether the core asked the backend for an NMI window.
    nmi_window: bool,
    /// How the run ends, once a handler returned [`Flow::Stop`].
    stop: Option<RunOutcome>,
}

impl<B: X86Ops, P: Platform> Vm<B, P> {
    /// A VM around a vCPU whose architectural state the caller has already set (for
    /// instance with a loader's [`crate::loader::BootState`]), running the CPU model
    /// `cpuid` (given to the backend with [`X86Ops::set_cpuid`]), with the PC's platform
    /// devices ([`Devices`], registered by [`register_ports`]) and the local APIC. The
    /// firmware tables are the caller's to build ([`crate::pc`]).
    pub fn new(
        vcpu: B,
        mem: GuestMemory,
        platform: P,
        cpuid: CpuidPolicy,
        config: VmConfig,
    ) -> Vm<B, P> {
        let mut vcpu = vcpu;
        vcpu.set_cpuid(&cpuid);
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        register_ports(&mut pio, &mut mmio);
        let devices = Devices::new(&mem, platform.wall_clock_ns(), platform.now_ns());
        let mut vm = Vm {
            vcpu,
            mem,
            platform,
            cpuid,
            msrs: MsrState::new(),
            apic: LocalApic::new(0),
            devices,
            pio,
            mmio,
            stats: ExitStats::default(),
            config,
            limit: RunLimit {
                tsc: 0,
                deadline: None,
                max_instructions: config.time_slice,
            },
            run_started_ns: 0,
            run_ended_ns: 0,
            retired_at_start: 0,
            apic_mmio_registered: None,
            irq_window: false,
            nmi_window: false,
            stop: None,
        };
        vm.sync_apic_mmio();
        vm
    }

    /// Give up the VM and keep its host services (the console of a machine that reboots).
    pub fn into_platform(self) -> P {
        self.platform
    }

    /// The guest's TSC now (reads the host clock).
    pub fn guest_tsc(&self) -> u64 {
        self.platform
            .now_ns()
            .wrapping_add_signed(self.msrs.tsc_offset())
    }

    /// The guest TSC as of the last clock read (no clock read).
    pub fn last_guest_tsc(&self) -> u64 {
        self.limit.tsc
    }

    /// Bring the guest TSC the core works with up to the host clock and advance the APIC
    /// timer to it, for accesses whose result depends on the exact time.
    pub(crate) fn catch_up_clock(&mut self) {
        let tsc = self.guest_tsc();
        // Never step back: the backend may have shown the guest a later value.
        self.limit.tsc = self.limit.tsc.max(tsc);
        self.apic.update(self.limit.tsc);
    }

    /// Drive interrupt line `line` (ISA IRQ 0-15 or GSI 16-23; see [`crate::irq`] for the
    /// wiring) to `level`, as a device's interrupt output. Setting the level a line
    /// already has changes nothing. Call it from an exit handler that then returns
    /// [`Flow::Events`], or between runs: the run loop delivers what it made pending
    /// before the guest runs again. Returns whether the line changed.
    pub fn set_irq(&mut self, line: u32, level: bool) -> bool {
        self.devices
            .irqchip
            .set_irq(line, level, core::slice::from_mut(&mut self.apic))
    }

    /// Raise and lower `line`: one edge, for a source that signals events.
    pub fn pulse_irq(&mut self, line: u32) {
        self.devices
            .irqchip
            .pulse_irq(line, core::slice::from_mut(&mut self.apic));
    }

    /// Pulse the NMI line (LINT1 of every local APIC; QEMU's `nmi` command, KVM's
    /// `KVM_NMI`): an NMI where LINT1 is programmed for one, as a PC firmware leaves it,
    /// or directly while the APIC is globally disabled.
    pub fn nmi(&mut self) {
        self.apic.set_lint1(true);
        self.apic.set_lint1(false);
    }

    /// Bring COM1's interrupt line to what the UART computes now (after an access, or
    /// when console input may have arrived). Returns whether the line changed.
    pub(crate) fn update_com1_irq(&mut self) -> bool {
        let level = self.devices.com1.irq_pending(&mut self.platform);
        self.set_irq(COM1_IRQ, level)
    }

    /// Host time (ns) at which the current run started.
    pub(crate) fn run_started_ns(&self) -> u64 {
        self.run_started_ns
    }

    /// Host nanoseconds the last (or current) call of [`Vm::run`] took.
    pub fn run_time_ns(&self) -> u64 {
        self.run_ended_ns.saturating_sub(self.run_started_ns)
    }

    /// Keep the MMIO bus in step with where the xAPIC page is (it moves with
    /// IA32_APIC_BASE and disappears in x2APIC mode or when the APIC is disabled).
    pub(crate) fn sync_apic_mmio(&mut self) {
        let want = self.apic.mmio_base();
        if want != self.apic_mmio_registered {
            if let Some(old) = self.apic_mmio_registered.take() {
                self.mmio.unregister(old);
            }
            if let Some(base) = want {
                if self
                    .mmio
                    .register(base, 0x1000, MmioDevice::LocalApic)
                    .is_ok()
                {
                    self.apic_mmio_registered = Some(base);
                }
            }
        }
    }

    /// End the run with `outcome` (a handler's `return self.stop(...)`).
    #[cold]
    pub(crate) fn stop(&mut self, outcome: RunOutcome) -> Flow {
        self.stop = Some(outcome);
        Flow::Stop
    }

    /// Run the guest until it stops (debug exit, triple fault, a limit, or a failure).
    pub fn run(&mut self) -> RunOutcome {
        self.run_started_ns = self.platform.now_ns();
        self.retired_at_start = self.vcpu.instructions_retired().unwrap_or(0);
        let outcome = self.run_loop();
        self.run_ended_ns = self.platform.now_ns();
        self.platform.console_flush();
        outcome
    }

    fn run_loop(&mut self) -> RunOutcome {
        if let Some(stop) = self.read_clock() {
            return stop;
        }
        self.deliver_events();
        // Exits left before the clock must be read (counts down to 1).
        let mut until_clock = self.config.exits_per_clock_read;
        loop {
            let exit = self.vcpu.run(&mut self.mem, &self.limit);
            let kind = exit.kind();
            self.stats.count(kind);
            let flow = if self.config.collect_timing {
                self.handle_exit_timed(exit)
            } else {
                self.handle_exit(exit)
            };
            match flow {
                Flow::Resume if until_clock > 1 => until_clock -= 1,
                Flow::Events if until_clock > 1 => {
                    until_clock -= 1;
                    self.deliver_events()
                }
                Flow::Stop => {
                    return self.stop.take().unwrap_or_else(|| {
                        RunOutcome::Failed(String::from(
                            "an exit handler stopped without an outcome",
                        ))
                    })
                }
                Flow::Resume | Flow::Events | Flow::Clock => {
                    until_clock = self.config.exits_per_clock_read;
                    if let Some(stop) = self.read_clock() {
                        return stop;
                    }
                    self.deliver_events();
                }
            }
        }
    }

    /// [`Vm::handle_exit`], timed into the exit statistics (off the common path: the two
    /// clock reads cost more than the exit).
    #[cold]
    #[inline(never)]
    fn handle_exit_timed(&mut self, exit: Exit) -> Flow {
        let kind = exit.kind();
        let started = self.platform.now_ns();
        let flow = self.handle_exit(exit);
        let took = self.platform.now_ns().saturating_sub(started);
        self.stats.add_time(kind, took);
        flow
    }

    /// Read the clock, run the timers, check the run's limits and refresh the backend's
    /// [`RunLimit`].
    fn read_clock(&mut self) -> Option<RunOutcome> {
        let now_ns = self.platform.now_ns();
        if let Some(timeout) = self.config.timeout_ns {
            if now_ns.saturating_sub(self.run_started_ns) >= timeout {
                return Some(RunOutcome::Timeout);
            }
        }
        let mut slice = self.config.time_slice.max(1);
        if let Some(max) = self.config.max_instructions {
            let done = self
                .vcpu
                .instructions_retired()
                .unwrap_or(0)
                .saturating_sub(self.retired_at_start);
            if done >= max {
                return Some(RunOutcome::InstructionLimit);
            }
            slice = slice.min(max - done);
        }
        let tsc = now_ns.wrapping_add_signed(self.msrs.tsc_offset());
        self.apic.update(tsc);
        self.update_platform_timers(now_ns);
        // Console input may have arrived since the UART was last looked at.
        self.update_com1_irq();
        self.limit = RunLimit {
            tsc,
            deadline: self.next_deadline_tsc(),
            max_instructions: slice,
        };
        None
    }

    /// Bring the platform timers (the PIT, the RTC, the ACPI PM timer) to `now_ns` and
    /// their interrupt lines with them: IRQ 0 gets one edge however many periods of
    /// channel 0 passed (an edge-triggered input latches one request), IRQ 8 and the SCI
    /// follow their levels.
    pub(crate) fn update_platform_timers(&mut self, now_ns: u64) {
        let d = &mut self.devices;
        d.pit.update(now_ns);
        d.rtc.update(now_ns);
        d.acpi_pm.update(now_ns);
        if d.pit.take_irq_edges() > 0 {
            self.pulse_irq(PIT_IRQ);
        }
        let rtc = self.devices.rtc.irq_level();
        self.set_irq(RTC_IRQ, rtc);
        let sci = self.devices.acpi_pm.sci_level();
        self.set_irq(u32::from(SCI_IRQ), sci);
    }

    /// The guest TSC value of machine time `ns` (the TSC is the machine clock plus the
    /// guest's offset; a time before the TSC's zero is its zero).
    fn ns_to_tsc(&self, ns: u64) -> u64 {
        let tsc = i128::from(ns) + i128::from(self.msrs.tsc_offset());
        u64::try_from(tsc.max(0)).unwrap_or(u64::MAX)
    }

    /// The machine time at which the guest TSC reads `tsc`.
    fn tsc_to_ns(&self, tsc: u64) -> u64 {
        let ns = i128::from(tsc) - i128::from(self.msrs.tsc_offset());
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }

    /// The next time, as a guest TSC value, at which a timer may raise an interrupt: the
    /// local APIC's timer or a platform timer.
    fn next_deadline_tsc(&self) -> Option<u64> {
        let platform = self.devices.next_deadline().map(|ns| self.ns_to_tsc(ns));
        earliest(self.apic.next_deadline(), platform)
    }

    /// When a halted vCPU must wake to look again, as machine time: the platform timers'
    /// next deadline, or the local APIC timer's unless its vector is already requested
    /// ([`LocalApic::next_wakeup`]).
    pub(crate) fn next_wakeup_ns(&self) -> Option<u64> {
        let apic = self.apic.next_wakeup().map(|tsc| self.tsc_to_ns(tsc));
        earliest(apic, self.devices.next_deadline())
    }

    /// Route the local APIC's EOI broadcasts, then deliver what is pending, highest
    /// priority first: an NMI, else the local APIC's highest fixed interrupt, else an
    /// external interrupt whose vector the PIC's INTA cycle gives. What the guest cannot
    /// take now gets a window exit instead (an NMI window, an interrupt window).
    pub(crate) fn deliver_events(&mut self) {
        while let Some(vector) = self.apic.take_eoi_broadcast() {
            self.devices
                .irqchip
                .eoi(vector, core::slice::from_mut(&mut self.apic));
        }
        let nmi_window = if self.apic.nmi_pending() {
            if self.vcpu.nmi_allowed() {
                self.apic.nmi_injected();
                self.vcpu.inject_event(crate::ops::Event::Nmi);
                false
            } else {
                true
            }
        } else {
            false
        };
        if nmi_window != self.nmi_window {
            self.nmi_window = nmi_window;
            self.vcpu.enable_nmi_window(nmi_window);
        }
        let fixed = self.apic.pending_interrupt();
        if fixed.is_none() && !self.apic.extint_pending() {
            if self.irq_window {
                self.irq_window = false;
                self.vcpu.enable_irq_window(false);
            }
            return;
        }
        if self.vcpu.interrupt_allowed() {
            let vector = match fixed {
                Some(vector) => {
                    self.apic.acknowledge(vector);
                    vector
                }
                None => self.acknowledge_extint(),
            };
            self.vcpu
                .inject_event(crate::ops::Event::ExternalInterrupt(vector));
            if self.irq_window {
                self.irq_window = false;
                self.vcpu.enable_irq_window(false);
            }
        } else if !self.irq_window {
            self.irq_window = true;
            self.vcpu.enable_irq_window(true);
        }
    }

    /// The INTA cycle of an external interrupt the guest is about to take.
    #[cold]
    fn acknowledge_extint(&mut self) -> u8 {
        self.apic.extint_acknowledged();
        self.devices
            .irqchip
            .acknowledge_extint(core::slice::from_mut(&mut self.apic))
    }

    /// Dispatch one exit to its handler family (inlined into the loop: a call here costs
    /// as much as the CPUID handler itself).
    #[inline(always)]
    fn handle_exit(&mut self, exit: Exit) -> Flow {
        match exit {
            Exit::Cpuid => self.handle_cpuid(),
            Exit::Rdmsr { index } => self.handle_rdmsr(index),
            Exit::Wrmsr { index, value } => self.handle_wrmsr(index, value),
            Exit::Io {
                port,
                size,
                direction,
                data,
            } => self.handle_io(port, size, direction, data),
            Exit::Mmio {
                gpa,
                size,
                direction,
                data,
            } => self.handle_mmio(gpa, size, direction, data),
            Exit::Hlt => self.handle_hlt(),
            Exit::InterruptWindow | Exit::NmiWindow | Exit::ExternalInterrupt => Flow::Events,
            Exit::Preempted => Flow::Clock,
            Exit::Xsetbv { index, value } => self.handle_xsetbv(index, value),
            Exit::Hypercall => self.handle_hypercall(),
            Exit::Cr8 { direction, gpr } => self.handle_cr8(direction, gpr),
            Exit::CacheFlush => {
                self.vcpu.skip_emulated_instruction();
                Flow::Resume
            }
            Exit::TripleFault => {
                let rip = self.vcpu.rip();
                self.stop(RunOutcome::TripleFault { rip })
            }
            Exit::SlatViolation { .. }
            | Exit::Exception { .. }
            | Exit::EntryFailed { .. }
            | Exit::EmulationFailure { .. } => self.handle_failure(exit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apic::{reg, LVT_DELIVERY_EXTINT, LVT_DELIVERY_NMI};
    use crate::arch::RFLAGS_IF;
    use crate::exit::Direction;
    use crate::ops::{DescriptorTable, Event, Gpr, ResetKind, SegReg, Segment};
    use alloc::vec::Vec;

    /// A vCPU that records what the run loop asks of it; the test decides when the guest
    /// can take an interrupt or an NMI.
    #[derive(Default)]
    struct EventVcpu {
        rflags: u64,
        nmi_ok: bool,
        /// An injected event not yet taken by the "guest".
        pending: Option<Event>,
        injected: Vec<Event>,
        irq_window: bool,
        nmi_window: bool,
        pio_in: Option<u32>,
    }

    impl EventVcpu {
        /// The guest took the queued event.
        fn enter(&mut self) {
            self.pending = None;
        }
    }

    impl X86Ops for EventVcpu {
        fn name(&self) -> &'static str {
            "events"
        }
        fn vcpu_reset(&mut self, _kind: ResetKind) {}
        fn gpr(&self, _reg: Gpr) -> u64 {
            0
        }
        fn set_gpr(&mut self, _reg: Gpr, _value: u64) {}
        fn rip(&self) -> u64 {
            0
        }
        fn set_rip(&mut self, _rip: u64) {}
        fn rflags(&self) -> u64 {
            self.rflags
        }
        fn set_rflags(&mut self, rflags: u64) {
            self.rflags = rflags;
        }
        fn segment(&self, _seg: SegReg) -> Segment {
            Segment::default()
        }
        fn set_segment(&mut self, _seg: SegReg, _value: &Segment) {}
        fn cpl(&self) -> u8 {
            0
        }
        fn cr0(&self) -> u64 {
            0
        }
        fn set_cr0(&mut self, _value: u64) {}
        fn cr2(&self) -> u64 {
            0
        }
        fn set_cr2(&mut self, _value: u64) {}
        fn cr3(&self) -> u64 {
            0
        }
        fn set_cr3(&mut self, _value: u64) {}
        fn cr4(&self) -> u64 {
            0
        }
        fn set_cr4(&mut self, _value: u64) {}
        fn efer(&self) -> u64 {
            0
        }
        fn set_efer(&mut self, _value: u64) {}
        fn gdt(&self) -> DescriptorTable {
            DescriptorTable::default()
        }
        fn set_gdt(&mut self, _table: DescriptorTable) {}
        fn idt(&self) -> DescriptorTable {
            DescriptorTable::default()
        }
        fn set_idt(&mut self, _table: DescriptorTable) {}
        fn supported_cpuid(&self) -> CpuidPolicy {
            CpuidPolicy::emulator()
        }
        fn set_cpuid(&mut self, _policy: &CpuidPolicy) {}
        fn debug_regs(&self) -> crate::ops::DebugRegs {
            crate::ops::DebugRegs::default()
        }
        fn set_debug_regs(&mut self, _regs: &crate::ops::DebugRegs) {}
        fn get_msr(&self, _index: u32) -> Option<u64> {
            None
        }
        fn set_msr(&mut self, _index: u32, _value: u64) -> bool {
            false
        }
        fn run(&mut self, _mem: &mut GuestMemory, _limit: &RunLimit) -> Exit {
            Exit::Hlt
        }
        fn skip_emulated_instruction(&mut self) {}
        fn complete_pio_in(&mut self, value: u32) {
            self.pio_in = Some(value);
        }
        fn complete_mmio(&mut self, _read: Option<u64>) {}
        fn interrupt_shadow(&self) -> bool {
            false
        }
        fn set_interrupt_shadow(&mut self, _shadow: bool) {}
        fn interrupt_allowed(&self) -> bool {
            self.rflags & RFLAGS_IF != 0 && self.pending.is_none()
        }
        fn nmi_allowed(&self) -> bool {
            self.nmi_ok && self.pending.is_none()
        }
        fn inject_event(&mut self, event: Event) {
            self.pending = Some(event);
            self.injected.push(event);
        }
        fn event_pending(&self) -> bool {
            self.pending.is_some()
        }
        fn enable_irq_window(&mut self, enable: bool) {
            self.irq_window = enable;
        }
        fn enable_nmi_window(&mut self, enable: bool) {
            self.nmi_window = enable;
        }
        fn flush_tlb_all(&mut self) {}
    }

    /// A clock that stands still and a console with nothing attached.
    struct Quiet;

    impl Platform for Quiet {
        fn now_ns(&self) -> u64 {
            0
        }
        fn wait(&mut self, _deadline_ns: Option<u64>) -> bool {
            false
        }
        fn console_write(&mut self, _bytes: &[u8]) {}
        fn console_read(&mut self) -> Option<u8> {
            None
        }
        fn console_input_ready(&mut self) -> bool {
            false
        }
    }

    fn vm() -> Vm<EventVcpu, Quiet> {
        let mem = GuestMemory::with_ram(1 << 20).unwrap();
        let mut vm = Vm::new(
            EventVcpu::default(),
            mem,
            Quiet,
            CpuidPolicy::emulator(),
            VmConfig::default(),
        );
        vm.apic.mmio_write(reg::SVR, 0x1ff, 0);
        vm
    }

    fn outb(vm: &mut Vm<EventVcpu, Quiet>, port: u16, value: u8) -> Flow {
        vm.handle_io(port, 1, Direction::Write, u32::from(value))
    }

    fn inb(vm: &mut Vm<EventVcpu, Quiet>, port: u16) -> u8 {
        vm.handle_io(port, 1, Direction::Read, 0);
        vm.vcpu.pio_in.take().unwrap() as u8
    }

    /// Linux's init_8259A: vectors 0x30/0x38, then the masks.
    fn init_pic(vm: &mut Vm<EventVcpu, Quiet>, masks: [u8; 2]) {
        for (port, value) in [
            (0x21, 0xff),
            (0x20, 0x11),
            (0x21, 0x30),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xa0, 0x11),
            (0xa1, 0x38),
            (0xa1, 0x02),
            (0xa1, 0x01),
            (0x21, masks[0]),
            (0xa1, masks[1]),
        ] {
            // Clock: an unmasked line can make a platform timer's deadline matter.
            assert_eq!(outb(vm, port, value), Flow::Clock);
        }
    }

    fn ioapic_write(vm: &mut Vm<EventVcpu, Quiet>, index: u32, value: u32) -> Flow {
        vm.handle_mmio(0xfec0_0000, 4, Direction::Write, u64::from(index));
        vm.handle_mmio(0xfec0_0010, 4, Direction::Write, u64::from(value))
    }

    #[test]
    fn nmi_first_then_fixed_then_the_pic_through_lint0() {
        let mut vm = vm();
        init_pic(&mut vm, [0, 0]);
        vm.apic.mmio_write(reg::LVT_LINT0, LVT_DELIVERY_EXTINT, 0);
        vm.apic.mmio_write(reg::LVT_LINT1, LVT_DELIVERY_NMI, 0);
        vm.set_irq(3, true);
        vm.apic.deliver_fixed(0x50, false);
        vm.nmi();
        // Interrupts disabled, NMIs blocked: both windows are requested.
        vm.deliver_events();
        assert!(vm.vcpu.injected.is_empty());
        assert!(vm.vcpu.irq_window && vm.vcpu.nmi_window);
        // The NMI goes first; the interrupt waits for the next entry.
        vm.vcpu.nmi_ok = true;
        vm.vcpu.rflags = RFLAGS_IF;
        vm.deliver_events();
        assert_eq!(vm.vcpu.injected, [Event::Nmi]);
        assert!(!vm.vcpu.nmi_window && vm.vcpu.irq_window);
        vm.vcpu.enter();
        // Then the local APIC's fixed interrupt, then the PIC's vector (its INTA).
        vm.deliver_events();
        vm.vcpu.enter();
        assert_eq!(vm.devices.irqchip.pic.isr(), 0, "no INTA yet");
        vm.deliver_events();
        vm.vcpu.enter();
        assert_eq!(
            vm.vcpu.injected,
            [
                Event::Nmi,
                Event::ExternalInterrupt(0x50),
                Event::ExternalInterrupt(0x33)
            ]
        );
        assert_eq!(vm.devices.irqchip.pic.isr(), 0x0008);
        assert!(!vm.vcpu.irq_window, "nothing left: window closed");
        // The handler's EOI to the PIC: IRQ 3 made no new edge, nothing more.
        assert_eq!(outb(&mut vm, 0x20, 0x63), Flow::Clock);
        vm.deliver_events();
        assert_eq!(vm.vcpu.injected.len(), 3);
    }

    #[test]
    fn com1_level_interrupt_through_the_ioapic_and_the_eoi_broadcast() {
        let mut vm = vm();
        // Pin 4: vector 0x41, level-triggered, physical destination 0.
        ioapic_write(&mut vm, 0x11 + 8, 0);
        assert_eq!(ioapic_write(&mut vm, 0x10 + 8, 0x8041), Flow::Clock);
        vm.vcpu.rflags = RFLAGS_IF;
        // The UART raises IRQ 4 once OUT2 and the THR-empty interrupt are on.
        assert_eq!(outb(&mut vm, 0x3fc, 0x0b), Flow::Resume, "line still low");
        assert_eq!(outb(&mut vm, 0x3f9, 0x02), Flow::Events, "line raised");
        vm.deliver_events();
        vm.vcpu.enter();
        assert_eq!(vm.vcpu.injected, [Event::ExternalInterrupt(0x41)]);
        // The guest's EOI without reading IIR: broadcast, remote IRR cleared, the
        // still-high line delivers again.
        assert_eq!(
            vm.handle_mmio(0xfee0_00b0, 4, Direction::Write, 0),
            Flow::Events
        );
        vm.deliver_events();
        vm.vcpu.enter();
        assert_eq!(vm.vcpu.injected.len(), 2);
        // Reading IIR drops the line; the next EOI ends it.
        assert_eq!(inb(&mut vm, 0x3fa) & 0x0f, 0x02);
        assert!(!vm.devices.irqchip.line(COM1_IRQ));
        vm.handle_mmio(0xfee0_00b0, 4, Direction::Write, 0);
        vm.deliver_events();
        assert_eq!(vm.vcpu.injected.len(), 2);
        assert_eq!(vm.devices.irqchip.ioapic.entry(4) & (1 << 14), 0);
        // The PIC saw the line too (masked there since reset).
        assert_eq!(vm.devices.irqchip.pic.irr() & 0x10, 0x10);
        assert_eq!(inb(&mut vm, 0x21), 0xfb, "the BIOS masks");
    }

    #[test]
    fn hlt_wakes_for_the_pic_and_for_nmis() {
        let mut vm = vm();
        init_pic(&mut vm, [0xef, 0xff]);
        vm.apic.mmio_write(reg::LVT_LINT0, LVT_DELIVERY_EXTINT, 0);
        vm.vcpu.rflags = RFLAGS_IF;
        assert_eq!(vm.handle_hlt(), Flow::Stop, "nothing can wake it");
        assert_eq!(vm.stop.take(), Some(RunOutcome::HaltedForever));
        vm.set_irq(4, true);
        assert_eq!(
            vm.handle_hlt(),
            Flow::Clock,
            "the PIC's IRQ 4 through LINT0"
        );
        // With IF clear only an NMI wakes it.
        vm.vcpu.rflags = 0;
        assert_eq!(vm.handle_hlt(), Flow::Stop);
        vm.stop = None;
        vm.apic.mmio_write(reg::LVT_LINT1, LVT_DELIVERY_NMI, 0);
        vm.nmi();
        assert_eq!(vm.handle_hlt(), Flow::Clock);
    }

    #[test]
    fn set_irq_reports_changes_and_ignores_unwired_lines() {
        let mut vm = vm();
        assert!(vm.set_irq(9, true));
        assert!(!vm.set_irq(9, true));
        assert!(vm.set_irq(9, false));
        assert!(!vm.set_irq(24, true));
        assert!(!vm.set_irq(u32::MAX, true));
        vm.pulse_irq(0);
        assert!(!vm.devices.irqchip.line(0));
        assert_eq!(vm.devices.irqchip.pic.irr() & 1, 1, "the edge was latched");
    }

    /// A clock that moves only when the VM waits: each wait jumps to its deadline.
    #[derive(Default)]
    struct Ticking {
        now: core::cell::Cell<u64>,
        waits: u32,
    }

    impl Platform for Ticking {
        fn now_ns(&self) -> u64 {
            self.now.get()
        }
        fn wait(&mut self, deadline_ns: Option<u64>) -> bool {
            self.waits += 1;
            if let Some(deadline) = deadline_ns {
                self.now.set(self.now.get().max(deadline));
            }
            true
        }
        fn console_write(&mut self, _bytes: &[u8]) {}
        fn console_read(&mut self) -> Option<u8> {
            None
        }
        fn console_input_ready(&mut self) -> bool {
            false
        }
        fn console_input_possible(&mut self) -> bool {
            false
        }
    }

    fn ticking_vm() -> Vm<EventVcpu, Ticking> {
        let mem = GuestMemory::with_ram(1 << 20).unwrap();
        let config = VmConfig {
            timeout_ns: Some(1_000_000_000),
            ..VmConfig::default()
        };
        let mut vm = Vm::new(
            EventVcpu::default(),
            mem,
            Ticking::default(),
            CpuidPolicy::emulator(),
            config,
        );
        vm.apic.mmio_write(reg::SVR, 0x1ff, 0);
        vm.vcpu.rflags = RFLAGS_IF;
        vm
    }

    #[test]
    fn hlt_sleeps_through_timers_that_cannot_interrupt() {
        // The local APIC timer runs periodically at its shortest period, but the TPR holds
        // its vector back: once it is requested, firing again changes nothing.
        let mut vm = ticking_vm();
        vm.apic.mmio_write(reg::TPR, 0xf0, 0);
        vm.apic
            .mmio_write(reg::LVT_TIMER, 0x40 | crate::apic::LVT_TIMER_PERIODIC, 0);
        vm.apic.mmio_write(reg::TIMER_DIVIDE, 0xb, 0);
        vm.apic.mmio_write(reg::TIMER_INITIAL, 1, 0);
        assert_eq!(vm.handle_hlt(), Flow::Stop);
        assert_eq!(vm.stop.take(), Some(RunOutcome::HaltedForever));
        assert!(vm.platform.waits <= 2, "woke {} times", vm.platform.waits);

        // The PIT counts from power-on (18.2 Hz), but IRQ 0 is masked at the PIC and the
        // I/O APIC as firmware leaves them.
        let mut vm = ticking_vm();
        assert_eq!(vm.handle_hlt(), Flow::Stop);
        assert_eq!(vm.stop.take(), Some(RunOutcome::HaltedForever));
        assert_eq!(vm.platform.waits, 0);
        // Unmasked at the PIC (through LINT0 in virtual-wire mode), its tick wakes HLT.
        vm.apic.mmio_write(reg::LVT_LINT0, LVT_DELIVERY_EXTINT, 0);
        let apics = core::slice::from_mut(&mut vm.apic);
        vm.devices.irqchip.pic_write(0x21, 0xfe, apics);
        assert_eq!(vm.handle_hlt(), Flow::Clock);
        assert_eq!(vm.platform.waits, 1);
        let tick = vm.platform.now.get();
        assert!(
            (54_000_000..=56_000_000).contains(&tick),
            "the first tick at 65536 PIT clocks, not {tick} ns"
        );
    }

    #[test]
    fn keyboard_bytes_each_raise_irq1() {
        let mut vm = vm();
        // I/O APIC pin 1: vector 0x51, edge.
        ioapic_write(&mut vm, 0x11 + 2, 0);
        ioapic_write(&mut vm, 0x10 + 2, 0x51);
        vm.vcpu.rflags = RFLAGS_IF;
        // The keyboard's answer to "identify" is three bytes; Linux's handler reads one
        // per interrupt.
        outb(&mut vm, 0x60, 0xf2);
        for (n, byte) in [0xfa, 0xab, 0x41].into_iter().enumerate() {
            vm.deliver_events();
            vm.vcpu.enter();
            assert_eq!(vm.vcpu.injected.len(), n + 1, "an interrupt for byte {n}");
            assert_eq!(inb(&mut vm, 0x60), byte);
            vm.apic.mmio_write(reg::EOI, 0, 0);
        }
        vm.deliver_events();
        assert_eq!(vm.vcpu.injected.len(), 3, "nothing after the last byte");
    }

    #[test]
    fn power_off_and_reset_end_the_run() {
        let mut vm = vm();
        // PM1a_CNT: a sleep type the DSDT does not declare is no sleep state.
        let slp = |typ: u32| (typ << 10) | (1 << 13);
        assert_ne!(vm.handle_io(0x604, 2, Direction::Write, slp(1)), Flow::Stop);
        assert_eq!(
            vm.handle_io(
                0x604,
                2,
                Direction::Write,
                slp(u32::from(crate::acpi::S5_SLEEP_TYPE))
            ),
            Flow::Stop
        );
        assert_eq!(vm.stop.take(), Some(RunOutcome::PowerOff));
        // The reset control register (the FADT's reset register) and the 8042's pulse.
        assert_eq!(outb(&mut vm, 0xcf9, 0x02), Flow::Resume);
        assert_eq!(outb(&mut vm, 0xcf9, 0x06), Flow::Stop);
        assert_eq!(vm.stop.take(), Some(RunOutcome::Reset));
        assert_eq!(outb(&mut vm, 0x64, 0xfe), Flow::Stop);
        assert_eq!(vm.stop.take(), Some(RunOutcome::Reset));
        // A dword at 0xCF8 is the PCI configuration address, not the reset register.
        assert_eq!(
            vm.handle_io(0xcf8, 4, Direction::Write, 0x8000_0000),
            Flow::Resume
        );
        assert_eq!(vm.handle_io(0xcfc, 4, Direction::Read, 0), Flow::Resume);
        assert_eq!(vm.vcpu.pio_in.take(), Some(0x1237_8086), "the host bridge");
    }
}

//! The machine (Linux KVM's `struct kvm`): guest memory, the buses and platform devices,
//! the interrupt routing, the CPUID policy, and the vCPUs ([`Vcpu`], `struct kvm_vcpu`),
//! with the run loop.
//!
//! The loop is KVM's `vcpu_run` in miniature: deliver pending events, enter the guest with
//! a [`RunLimit`], handle the [`Exit`] (each family in [`crate::exits`]), repeat. Reading
//! the host clock costs more than a whole CPUID exit on the emulator, so the loop does not
//! read it after every exit: only after exits that concern time (HLT, preemption, timer
//! MSRs, APIC accesses) and at least every [`VmConfig::exits_per_clock_read`] exits. The
//! backend's own budget (the emulator's instruction slice, VMX's preemption timer) bounds
//! the time between those reads.
//!
//! **Several vCPUs** share the one host thread that calls [`Vm::run`], in turns
//! ([`crate::sched`] says why and how): a vCPU runs until its turn's budget is spent
//! ([`VmConfig::smp_turn`] instructions), it executes PAUSE (a spinning vCPU gives way at
//! once), or it halts or waits for SIPI; then the next vCPU that can run takes its turn,
//! round robin. When none can, the thread sleeps until a timer or console input can wake
//! one. The exits of the running vCPU are handled with [`Vm::cur`] naming it; its
//! interrupts and IPIs reach the other vCPUs' local APICs directly.
//!
//! Interrupts take one path ([`crate::irq`]): a device drives a line with
//! [`Vm::set_irq`]; the PIC and the I/O APIC turn lines into LINT0 levels and messages;
//! the local APICs decide what is pending; [`Vm::deliver_events`] injects, in priority
//! order, an NMI, the local APIC's highest fixed interrupt, or the PIC's vector through
//! LINT0 (ExtINT, after the INTA cycle), or asks the backend for the window in which the
//! guest can take it.

use crate::acpi::SCI_IRQ;
use crate::cpuid::CpuidPolicy;
use crate::devices::bus::{Bus, MmioDevice, PioDevice};
use crate::devices::pit::PIT_IRQ;
use crate::devices::rtc::RTC_IRQ;
pub use crate::devices::COM1_IRQ;
use crate::devices::{register_ports, Devices};
use crate::exit::Exit;
use crate::exits::quick::{QuickExits, QUICK_KINDS};
use crate::mmu::memory::GuestMemory;
use crate::ops::{RunLimit, X86Ops};
use crate::platform::Platform;
use crate::stats::ExitStats;
pub use crate::vcpu::{MpState, Vcpu};
use alloc::string::String;
use alloc::vec::Vec;

/// The most vCPUs a machine has: the xAPIC's 8-bit APIC IDs 0-254 (255 is the broadcast
/// address), which the MADT's processor entries also carry.
pub const MAX_VCPUS: usize = 255;

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
    /// Every vCPU halted with nothing that could ever wake it (interrupts disabled, or no
    /// timer armed and no interrupt source), or waits for a start-up IPI nobody can send.
    HaltedForever,
    /// The guest powered the machine off: ACPI sleep state S5 through PM1a_CNT.
    PowerOff,
    /// The user ended the run from the console (QEMU's Ctrl-A x; see
    /// [`Platform::stop_requested`]).
    Quit,
    /// The guest reset the machine (the keyboard controller's reset line, the reset
    /// control register at 0xCF9, which is also the ACPI reset register). The VM stops;
    /// its owner decides whether to start the guest again, as QEMU does unless
    /// `-no-reboot`.
    Reset,
    /// The backend stopped for a debugger, as KVM's `KVM_EXIT_DEBUG`: a single step
    /// done (`vector` 1, #DB) or a breakpoint reached (`vector` 3, #BP), where a debugger
    /// asked the backend to stop (for instance the emulator's `set_guest_debug`). The
    /// vCPU is at an instruction boundary; [`Vm::run`] goes on from there.
    Debug {
        /// The exception vector the stop is reported as.
        vector: u8,
    },
    /// The run could not continue; the string says why.
    Failed(String),
}

/// Run-loop settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// Stop after this many guest instructions in one [`Vm::run`], all vCPUs together
    /// (backends that count them).
    pub max_instructions: Option<u64>,
    /// Stop after this much host time, in nanoseconds.
    pub timeout_ns: Option<u64>,
    /// Measure the host time spent handling each exit kind.
    pub collect_timing: bool,
    /// Instructions the emulator runs before it must come back to the core.
    pub time_slice: u64,
    /// Exits handled between two reads of the host clock, at most. A read (the clock
    /// itself, and the timers and deadlines brought up to it) costs about one or two exits
    /// on the emulator: the default, 64, keeps the reads near 2 % of an exit-bound loop
    /// there, while a timer that falls due in such a loop waits at most 64 exits, a few
    /// microseconds on the emulator.
    pub exits_per_clock_read: u32,
    /// With several vCPUs: the instructions one vCPU runs in a turn before the next
    /// takes over (see [`crate::sched`]).
    pub smp_turn: u64,
    /// With several vCPUs: the host time one turn may take at most, in nanoseconds (what
    /// bounds a turn on a backend that does not count instructions).
    pub smp_turn_ns: u64,
    /// The machine clock counts guest instructions instead of host time (QEMU's
    /// `-icount shift=0,sleep=off`): one nanosecond per instruction retired by any vCPU,
    /// and when every vCPU sleeps, the clock jumps to the next timer instead of waiting
    /// for it. A run is then a function of the guest's instructions and its console
    /// input alone, so a restored snapshot continues exactly as the original did
    /// ([`crate::snapshot`]). Backends that do not count instructions keep host time.
    pub icount: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            max_instructions: None,
            timeout_ns: None,
            collect_timing: false,
            time_slice: 200_000,
            exits_per_clock_read: 64,
            smp_turn: crate::sched::DEFAULT_TURN,
            smp_turn_ns: crate::sched::DEFAULT_TURN_NS,
            icount: false,
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
    /// The vCPU's turn ends (it halted, waits for SIPI, gave way at PAUSE, or used its
    /// budget): the next vCPU that can run takes over.
    Yield,
    /// Stop the run with the outcome stored by [`Vm::stop`].
    Stop,
}

/// Why a machine could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmError {
    /// The number of vCPUs is not 1 to [`MAX_VCPUS`].
    VcpuCount(usize),
}

impl core::fmt::Display for VmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmError::VcpuCount(n) => write!(
                f,
                "a machine of {n} vCPUs: the number of vCPUs must be 1 to {MAX_VCPUS}"
            ),
        }
    }
}

/// One virtual machine: the shared state and its vCPUs.
pub struct Vm<B: X86Ops, P: Platform> {
    /// The vCPUs, index 0 the bootstrap processor.
    pub(crate) vcpus: Vec<Vcpu<B>>,
    /// The vCPU whose turn it is: the one whose exits are being handled.
    pub(crate) cur: usize,
    /// Guest-physical memory.
    pub mem: GuestMemory,
    /// The host services.
    pub platform: P,
    /// What CPUID reports (the same model on every vCPU; the APIC ID differs).
    pub cpuid: CpuidPolicy,
    /// The platform devices.
    pub devices: Devices,
    /// Port-I/O map.
    pub pio: Bus<PioDevice>,
    /// MMIO map (the local APICs' pages are each vCPU's own and not on it).
    pub mmio: Bus<MmioDevice>,
    /// Exit counts and times, all vCPUs together.
    pub stats: ExitStats,
    /// Run-loop settings.
    pub config: VmConfig,
    /// Host time (ns) when the current or last run started.
    run_started_ns: u64,
    /// Host time (ns) when the last run ended.
    run_ended_ns: u64,
    /// With several vCPUs: host time at which the current turn ends.
    pub(crate) turn_end_ns: u64,
    /// With several vCPUs: the current vCPU's retired-instruction count at which its turn
    /// ends.
    pub(crate) turn_end_retired: u64,
    /// How the run ends, once a handler returned [`Flow::Stop`].
    stop: Option<RunOutcome>,
    /// Added (wrapping) to the clock source to give the machine clock: zero for a new
    /// machine, what carries a restored machine's clock on from its snapshot.
    pub(crate) clock_offset: u64,
    /// With [`VmConfig::icount`]: the time the clock jumped over while every vCPU slept.
    pub(crate) idle_ns: u64,
    /// The last run stopped at its instruction limit in the middle of the current vCPU's
    /// turn: the next run finishes that turn before the next vCPU's, as one long run
    /// would have.
    pub(crate) resume_turn: bool,
    /// Machine time before which bringing the platform timers up to date changes no
    /// interrupt line (see [`Vm::update_platform_timers`]); 0 after anything that may
    /// have changed them (an access to their ports, a new run), so that the next update
    /// is made in full.
    pub(crate) timers_quiet_until: u64,
}

impl<B: X86Ops, P: Platform> Vm<B, P> {
    /// A machine with one vCPU whose architectural state the caller has already set (for
    /// instance with a loader's [`crate::loader::BootState`]), running the CPU model
    /// `cpuid` (given to the backend with [`X86Ops::set_cpuid`]), with the PC's platform
    /// devices ([`Devices`], registered by [`register_ports`]) and its local APIC. The
    /// firmware tables are the caller's to build ([`crate::pc`]).
    pub fn new(
        vcpu: B,
        mem: GuestMemory,
        platform: P,
        cpuid: CpuidPolicy,
        config: VmConfig,
    ) -> Vm<B, P> {
        let mut vcpus = Vec::with_capacity(1);
        vcpus.push(vcpu);
        match Vm::with_vcpus(vcpus, mem, platform, cpuid, config) {
            Ok(vm) => vm,
            // One vCPU is always a valid count.
            Err(_) => unreachable!("a machine of one vCPU"),
        }
    }

    /// A machine with the vCPUs `backends`: the first is the bootstrap processor, in the
    /// state the caller set; the others are application processors, reset to their
    /// power-on state and waiting for SIPI (as a PC's firmware leaves them, parked for
    /// the operating system's INIT-SIPI-SIPI). vCPU `i` gets local APIC ID `i`; the
    /// CPUID policy's topology ([`CpuidPolicy::set_topology`]), the CMOS CPU count and
    /// fw_cfg's CPU counts are set to the number of vCPUs. The ACPI tables are the
    /// caller's ([`crate::pc::build_acpi`] with the same count).
    pub fn with_vcpus(
        backends: Vec<B>,
        mem: GuestMemory,
        platform: P,
        mut cpuid: CpuidPolicy,
        config: VmConfig,
    ) -> Result<Vm<B, P>, VmError> {
        let n = backends.len();
        if n == 0 || n > MAX_VCPUS {
            return Err(VmError::VcpuCount(n));
        }
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        register_ports(&mut pio, &mut mmio);
        // n <= MAX_VCPUS (255) fits both.
        let now_ns = if config.icount { 0 } else { platform.now_ns() };
        let devices = Devices::new(&mem, n as u16, platform.wall_clock_ns(), now_ns);
        cpuid.set_topology(n as u32);
        let mut vcpus: Vec<Vcpu<B>> = backends
            .into_iter()
            .enumerate()
            .map(|(i, backend)| Vcpu::new(i as u32, backend, config.time_slice))
            .collect();
        let pause_exits = n > 1;
        for v in &mut vcpus {
            // Every vCPU runs the same model, with the topology of the whole machine (the
            // per-vCPU APIC IDs are filled in by the CPUID exit).
            v.backend.set_cpuid(&cpuid);
            v.backend.set_pause_exiting(pause_exits);
        }
        Ok(Vm {
            vcpus,
            cur: 0,
            mem,
            platform,
            cpuid,
            devices,
            pio,
            mmio,
            stats: ExitStats::default(),
            config,
            run_started_ns: 0,
            run_ended_ns: 0,
            turn_end_ns: 0,
            turn_end_retired: 0,
            stop: None,
            clock_offset: 0,
            idle_ns: 0,
            resume_turn: false,
            timers_quiet_until: 0,
        })
    }

    /// Give up the VM and keep its host services (the console of a machine that reboots).
    pub fn into_platform(self) -> P {
        self.platform
    }

    /// Take the machine apart: the vCPUs' backends (index 0 first), guest memory and the
    /// host services.
    pub fn into_parts(self) -> (Vec<B>, GuestMemory, P) {
        let backends = self.vcpus.into_iter().map(|v| v.backend).collect();
        (backends, self.mem, self.platform)
    }

    /// The vCPUs, index 0 (the bootstrap processor) first.
    pub fn vcpus(&self) -> &[Vcpu<B>] {
        &self.vcpus
    }

    /// The vCPUs, writable.
    pub fn vcpus_mut(&mut self) -> &mut [Vcpu<B>] {
        &mut self.vcpus
    }

    /// The bootstrap processor (vCPU 0).
    pub fn bsp(&self) -> &Vcpu<B> {
        &self.vcpus[0]
    }

    /// The bootstrap processor, writable.
    pub fn bsp_mut(&mut self) -> &mut Vcpu<B> {
        &mut self.vcpus[0]
    }

    /// Every vCPU and guest memory, both writable (a debugger sets what each vCPU stops
    /// at, with the memory its watchpoints compare).
    pub fn vcpus_and_mem_mut(&mut self) -> (&mut [Vcpu<B>], &mut GuestMemory) {
        (&mut self.vcpus, &mut self.mem)
    }

    /// The index of the vCPU whose turn it is (or was, when the run stopped).
    pub fn cur(&self) -> usize {
        self.cur
    }

    /// The vCPU whose turn it is.
    #[inline(always)]
    pub(crate) fn vcpu(&mut self) -> &mut Vcpu<B> {
        &mut self.vcpus[self.cur]
    }

    /// Guest instructions retired by all vCPUs so far, where the backend counts them.
    pub fn instructions_retired(&self) -> Option<u64> {
        self.vcpus.iter().try_fold(0u64, |sum, v| {
            v.backend
                .instructions_retired()
                .map(|n| sum.saturating_add(n))
        })
    }

    /// Accesses to MSRs nobody implements, all vCPUs together, and the index of the last
    /// one (of the highest-numbered vCPU that made one).
    pub fn unknown_msr_accesses(&self) -> (u64, Option<u32>) {
        self.vcpus.iter().fold((0, None), |(n, last), v| {
            (
                n + v.msrs.unknown_accesses(),
                v.msrs.last_unknown().or(last),
            )
        })
    }

    /// The current vCPU's TSC now (reads the machine clock).
    pub fn guest_tsc(&self) -> u64 {
        let v = &self.vcpus[self.cur];
        self.now_ns().wrapping_add_signed(v.tsc_offset())
    }

    /// The machine clock, in nanoseconds: what the timers, the TSCs and the scheduler's
    /// turns count in. The host's monotonic clock, or with [`VmConfig::icount`] the
    /// guest's instruction count and the time skipped while idle; carried on from its
    /// snapshot by a restored machine.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.clock_at(self.platform.now_ns())
    }

    /// The machine clock when the host clock reads `host_ns`.
    #[inline]
    pub(crate) fn clock_at(&self, host_ns: u64) -> u64 {
        let source = if self.config.icount {
            match self.instructions_retired() {
                Some(n) => n.wrapping_add(self.idle_ns),
                None => host_ns,
            }
        } else {
            host_ns
        };
        source.wrapping_add(self.clock_offset)
    }

    /// The current vCPU's TSC as of the last clock read (no clock read).
    pub fn last_guest_tsc(&self) -> u64 {
        self.vcpus[self.cur].limit.tsc
    }

    /// Bring the TSC the core works with for the current vCPU up to the host clock and
    /// advance its APIC timer to it, for accesses whose result depends on the exact time.
    pub(crate) fn catch_up_clock(&mut self) {
        let tsc = self.guest_tsc();
        let v = &mut self.vcpus[self.cur];
        // Never step back: the backend may have shown the guest a later value.
        v.limit.tsc = v.limit.tsc.max(tsc);
        v.apic.update(v.limit.tsc);
    }

    /// Drive interrupt line `line` (ISA IRQ 0-15 or GSI 16-23; see [`crate::irq`] for the
    /// wiring) to `level`, as a device's interrupt output. Setting the level a line
    /// already has changes nothing. Call it from an exit handler that then returns
    /// [`Flow::Events`], or between runs: the run loop delivers what it made pending
    /// before the guest runs again. Returns whether the line changed.
    pub fn set_irq(&mut self, line: u32, level: bool) -> bool {
        self.devices
            .irqchip
            .set_irq(line, level, &mut self.vcpus[..])
    }

    /// Give the machine QEMU's ISA test device (`-device pc-testdev`, see
    /// [`crate::devices::pc_testdev`]). Refused, naming the first range that is taken,
    /// if the machine already has it.
    pub fn attach_pc_testdev(&mut self) -> Result<(), crate::devices::bus::BusConflict> {
        crate::devices::attach_pc_testdev(&mut self.devices, &mut self.pio, &mut self.mmio)
    }

    /// Raise and lower `line`: one edge, for a source that signals events.
    pub fn pulse_irq(&mut self, line: u32) {
        self.devices.irqchip.pulse_irq(line, &mut self.vcpus[..]);
    }

    /// Pulse the NMI line (LINT1 of every local APIC; QEMU's `nmi` command, KVM's
    /// `KVM_NMI`): an NMI where LINT1 is programmed for one, as a PC firmware leaves it,
    /// or directly while the APIC is globally disabled.
    pub fn nmi(&mut self) {
        for v in &mut self.vcpus {
            v.apic.set_lint1(true);
            v.apic.set_lint1(false);
        }
    }

    /// Bring COM1's interrupt line to what the UART computes now (after an access, or
    /// when console input may have arrived). Returns whether the line changed.
    pub(crate) fn update_com1_irq(&mut self) -> bool {
        let level = self.devices.com1.irq_pending(&mut self.platform);
        self.set_irq(COM1_IRQ, level)
    }

    /// Send the IPI the current vCPU's last ICR write produced, if any, to the local
    /// APICs it addresses (any vCPU's, its own included).
    pub(crate) fn route_ipi(&mut self) {
        if let Some(ipi) = self.vcpus[self.cur].apic.take_ipi() {
            crate::irq::deliver_ipi(&ipi, self.cur, &mut self.vcpus[..]);
        }
    }

    /// Host time (ns) at which the current run started.
    pub(crate) fn run_started_ns(&self) -> u64 {
        self.run_started_ns
    }

    /// Host nanoseconds the last (or current) call of [`Vm::run`] took.
    pub fn run_time_ns(&self) -> u64 {
        self.run_ended_ns.saturating_sub(self.run_started_ns)
    }

    /// End the run with `outcome` (a handler's `return self.stop(...)`).
    #[cold]
    pub(crate) fn stop(&mut self, outcome: RunOutcome) -> Flow {
        self.stop = Some(outcome);
        Flow::Stop
    }

    /// The outcome a handler stored with [`Vm::stop`].
    #[cold]
    fn take_stop(&mut self) -> RunOutcome {
        self.stop.take().unwrap_or_else(|| {
            RunOutcome::Failed(String::from("an exit handler stopped without an outcome"))
        })
    }

    /// Run the guest until it stops (debug exit, triple fault, a limit, or a failure).
    pub fn run(&mut self) -> RunOutcome {
        self.run_started_ns = self.platform.now_ns();
        // The devices may have been changed from outside since the last run.
        self.timers_quiet_until = 0;
        for v in &mut self.vcpus {
            v.retired_at_start = v.backend.instructions_retired().unwrap_or(0);
        }
        let outcome = self.run_vcpus();
        self.run_ended_ns = self.platform.now_ns();
        self.platform.console_flush();
        outcome
    }

    /// Run vCPU `index` alone while the others stay stopped, as a debugger steps one
    /// thread (QEMU's gdbstub steps one CPU with the others stopped): its turns follow
    /// one another until the run stops (`Some`, as [`Vm::run`] reports it, a debug stop
    /// included) or the vCPU can no longer run (`None`: it halted or waits for a
    /// start-up IPI, which only the stopped vCPUs or a timer would end). A halted vCPU's
    /// local APIC timer is brought to the present first, so one that expired wakes it.
    /// The run's limits apply as to [`Vm::run`]. An index past the last vCPU is a
    /// [`RunOutcome::Failed`].
    pub fn run_alone(&mut self, index: usize) -> Option<RunOutcome> {
        if index >= self.vcpus.len() {
            return Some(RunOutcome::Failed(alloc::format!(
                "there is no vCPU {index} (the machine has {})",
                self.vcpus.len()
            )));
        }
        self.run_started_ns = self.platform.now_ns();
        self.timers_quiet_until = 0;
        for v in &mut self.vcpus {
            v.retired_at_start = v.backend.instructions_retired().unwrap_or(0);
        }
        self.cur = index;
        let outcome = loop {
            let v = &mut self.vcpus[index];
            if v.mp_state == MpState::Halted {
                let now_ns = self.now_ns();
                let v = &mut self.vcpus[index];
                v.apic.update(v.ns_to_tsc(now_ns));
            }
            if !self.vcpus[index].can_run() {
                break None;
            }
            if let Some(outcome) = self.run_turn() {
                break Some(outcome);
            }
        };
        // The scheduler's next run starts a fresh turn: a turn this one cut short at the
        // instruction limit belongs to the vCPU run alone, not to the round robin.
        self.resume_turn = false;
        self.run_ended_ns = self.platform.now_ns();
        self.platform.console_flush();
        outcome
    }

    /// One turn of the current vCPU: from its pending INIT or SIPI and events, through its
    /// exits, until it yields (`None`) or the run stops.
    pub(crate) fn run_turn(&mut self) -> Option<RunOutcome> {
        {
            let v = &mut self.vcpus[self.cur];
            v.accept_events();
            match v.mp_state {
                MpState::WaitForSipi => return None,
                // Woken: the HLT it executed has retired.
                MpState::Halted | MpState::Runnable => v.mp_state = MpState::Runnable,
            }
        }
        if self.vcpus.len() > 1 {
            self.start_turn();
        }
        self.continue_turn()
    }

    /// The current vCPU's turn from its next clock read on: where a turn starts, and
    /// where a run that stopped at its instruction limit goes on.
    pub(crate) fn continue_turn(&mut self) -> Option<RunOutcome> {
        match self.read_clock() {
            Flow::Stop => return Some(self.take_stop()),
            Flow::Yield => return None,
            _ => {}
        }
        self.deliver_events();
        // Exits left before the clock must be read (counts down to 1).
        let mut until_clock = self.config.exits_per_clock_read;
        // Whether the last exit was of a kind the quick path takes (`exits::quick`): the
        // next run offers its exits to it. Exits come in runs of a kind, and a run that
        // offers none saves what offering costs (the sink, and the backend's look at each
        // exit). Timing sends every exit through the timed handler instead.
        let quick_kinds = if self.config.collect_timing {
            0
        } else {
            QUICK_KINDS
        };
        let mut quick = false;
        loop {
            let Vm {
                vcpus,
                cur,
                mem,
                platform,
                cpuid,
                devices,
                pio,
                stats,
                ..
            } = self;
            let v = &mut vcpus[*cur];
            let exit = if quick {
                let mut sink = QuickExits {
                    cpu: *cur as u32,
                    until_clock,
                    apic: &mut v.apic,
                    now: v.limit.tsc,
                    cpuid,
                    pio,
                    post_code: &mut devices.post_code,
                    platform: &mut *platform,
                    stats: &mut *stats,
                };
                let exit = v.backend.run_with(mem, &v.limit, &mut sink);
                until_clock = sink.until_clock;
                exit
            } else {
                v.backend.run(mem, &v.limit)
            };
            // The exit stays in memory, and each handler reads its own fields at their
            // own widths. The backend has just stored them one by one: loaded together
            // into registers right after the call (as the compiler does with a local it
            // can take apart), wider loads span several of those stores, which the
            // processor cannot forward while they are in flight, and every exit stalls.
            let exit = core::hint::black_box(&exit);
            let kind = exit.kind();
            quick = quick_kinds & 1 << kind as u32 != 0;
            stats.count(kind);
            platform.observe_exit(*cur as u32, exit, &v.backend);
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
                Flow::Stop => return Some(self.take_stop()),
                Flow::Yield => return None,
                Flow::Resume | Flow::Events | Flow::Clock => {
                    until_clock = self.config.exits_per_clock_read;
                    match self.read_clock() {
                        Flow::Stop => return Some(self.take_stop()),
                        Flow::Yield => return None,
                        _ => {}
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
    fn handle_exit_timed(&mut self, exit: &Exit) -> Flow {
        let kind = exit.kind();
        let started = self.platform.now_ns();
        let flow = self.handle_exit(exit);
        let took = self.platform.now_ns().saturating_sub(started);
        self.stats.add_time(kind, took);
        self.platform.observe_exit_time(took);
        flow
    }

    /// Read the clock, run the timers, check the run's limits and refresh the current
    /// vCPU's [`RunLimit`]. [`Flow::Stop`] when a limit ended the run, [`Flow::Yield`]
    /// when the vCPU's turn is over, [`Flow::Clock`] otherwise.
    fn read_clock(&mut self) -> Flow {
        let host_ns = self.platform.now_ns();
        if let Some(timeout) = self.config.timeout_ns {
            if host_ns.saturating_sub(self.run_started_ns) >= timeout {
                return self.stop(RunOutcome::Timeout);
            }
        }
        let now_ns = self.clock_at(host_ns);
        if self.platform.stop_requested() {
            return self.stop(RunOutcome::Quit);
        }
        let mut slice = self.config.time_slice.max(1);
        if let Some(max) = self.config.max_instructions {
            let done = self.instructions_this_run();
            if done >= max {
                self.resume_turn = true;
                return self.stop(RunOutcome::InstructionLimit);
            }
            slice = slice.min(max - done);
        }
        let smp = self.vcpus.len() > 1;
        if smp {
            if self.wake_halted(now_ns) {
                return Flow::Yield;
            }
            match self.turn_left(now_ns) {
                Some(left) => slice = slice.min(left),
                None => return Flow::Yield,
            }
        }
        let v = &mut self.vcpus[self.cur];
        let tsc = now_ns.wrapping_add_signed(v.tsc_offset());
        v.apic.update(tsc);
        self.update_platform_timers(now_ns);
        // Console input may have arrived since the UART was last looked at.
        self.update_com1_irq();
        let deadline = self.next_deadline_tsc(smp);
        self.vcpus[self.cur].limit = RunLimit {
            tsc,
            deadline,
            max_instructions: slice,
        };
        Flow::Clock
    }

    /// Guest instructions the vCPUs retired since this run started.
    fn instructions_this_run(&self) -> u64 {
        self.vcpus.iter().fold(0u64, |sum, v| {
            let now = v.backend.instructions_retired().unwrap_or(0);
            sum.saturating_add(now.saturating_sub(v.retired_at_start))
        })
    }

    /// Bring the platform timers (the PIT, the RTC, the ACPI PM timer) to `now_ns` and
    /// their interrupt lines with them: IRQ 0 gets one edge however many periods of
    /// channel 0 passed (an edge-triggered input latches one request), IRQ 8 and the SCI
    /// follow their levels.
    ///
    /// Before the first time at which one of their lines can move by itself
    /// ([`Devices::next_timer_line_change`], kept in `timers_quiet_until`), the timers
    /// are left where they are: bringing them forward would change no line, and every
    /// access to their ports brings them up to date first (each counts from where it was
    /// last brought to, with the same result however many steps it is brought there in).
    /// Their lines' levels are set again either way.
    pub(crate) fn update_platform_timers(&mut self, now_ns: u64) {
        if now_ns >= self.timers_quiet_until {
            let d = &mut self.devices;
            d.pit.update(now_ns);
            d.rtc.update(now_ns);
            d.acpi_pm.update(now_ns);
            if d.pit.take_irq_edges() > 0 {
                self.pulse_irq(PIT_IRQ);
            }
            self.timers_quiet_until = self.devices.next_timer_line_change().unwrap_or(u64::MAX);
        }
        let rtc = self.devices.rtc.irq_level();
        self.set_irq(RTC_IRQ, rtc);
        let sci = self.devices.acpi_pm.sci_level();
        self.set_irq(u32::from(SCI_IRQ), sci);
    }

    /// The next time, as the current vCPU's TSC value, at which a timer may raise an
    /// interrupt: its local APIC's timer or a platform timer, and with several vCPUs
    /// (`smp`) the timer that wakes a halted one, which must not wait for this turn's end,
    /// and the end of the turn itself.
    fn next_deadline_tsc(&self, smp: bool) -> Option<u64> {
        let v = &self.vcpus[self.cur];
        let mut ns = self.devices.next_deadline();
        if smp {
            ns = earliest(ns, self.halted_wakeup_ns());
            ns = earliest(ns, Some(self.turn_end_ns()));
        }
        earliest(v.apic.next_deadline(), ns.map(|ns| v.ns_to_tsc(ns)))
    }

    /// When a halted vCPU's local APIC timer next makes an interrupt it could take, as
    /// machine time (see [`crate::apic::LocalApic::next_wakeup`]).
    pub(crate) fn halted_wakeup_ns(&self) -> Option<u64> {
        self.vcpus
            .iter()
            .filter(|v| {
                v.mp_state == MpState::Halted && v.backend.rflags() & crate::arch::RFLAGS_IF != 0
            })
            .filter_map(|v| v.apic.next_wakeup().map(|tsc| v.tsc_to_ns(tsc)))
            .min()
    }

    /// Route the current vCPU's EOI broadcasts, then deliver what is pending for it,
    /// highest priority first: an NMI, else the local APIC's highest fixed interrupt,
    /// else an external interrupt whose vector the PIC's INTA cycle gives. What the guest
    /// cannot take now gets a window exit instead (an NMI window, an interrupt window).
    pub(crate) fn deliver_events(&mut self) {
        while let Some(vector) = self.vcpus[self.cur].apic.take_eoi_broadcast() {
            self.devices.irqchip.eoi(vector, &mut self.vcpus[..]);
        }
        let v = &mut self.vcpus[self.cur];
        let nmi_window = if v.apic.nmi_pending() {
            if v.backend.nmi_allowed() {
                v.apic.nmi_injected();
                v.backend.inject_event(crate::ops::Event::Nmi);
                false
            } else {
                true
            }
        } else {
            false
        };
        if nmi_window != v.nmi_window {
            v.nmi_window = nmi_window;
            v.backend.enable_nmi_window(nmi_window);
        }
        let fixed = v.apic.pending_interrupt();
        if fixed.is_none() && !v.apic.extint_pending() {
            if v.irq_window {
                v.irq_window = false;
                v.backend.enable_irq_window(false);
            }
            return;
        }
        if v.backend.interrupt_allowed() {
            let vector = match fixed {
                Some(vector) => {
                    v.apic.acknowledge(vector);
                    vector
                }
                None => self.acknowledge_extint(),
            };
            let v = &mut self.vcpus[self.cur];
            v.backend
                .inject_event(crate::ops::Event::ExternalInterrupt(vector));
            if v.irq_window {
                v.irq_window = false;
                v.backend.enable_irq_window(false);
            }
        } else if !v.irq_window {
            v.irq_window = true;
            v.backend.enable_irq_window(true);
        }
    }

    /// The INTA cycle of an external interrupt the current vCPU is about to take.
    #[cold]
    fn acknowledge_extint(&mut self) -> u8 {
        self.vcpus[self.cur].apic.extint_acknowledged();
        self.devices.irqchip.acknowledge_extint(&mut self.vcpus[..])
    }

    /// Dispatch one exit to its handler family (inlined into the loop: a call here costs
    /// as much as the CPUID handler itself).
    #[inline(always)]
    fn handle_exit(&mut self, exit: &Exit) -> Flow {
        match *exit {
            Exit::Cpuid => self.handle_cpuid(),
            Exit::Rdmsr { index } => self.handle_rdmsr(index),
            Exit::Wrmsr { index, value } => self.handle_wrmsr(index, value),
            Exit::Io {
                ref port,
                size,
                direction,
                data,
            } => {
                // Read as the two bytes the backend stored: left to itself the compiler
                // loads four, across the padding after it, and that load waits for the
                // store (see `continue_turn`).
                let port = *core::hint::black_box(port);
                self.handle_io(port, size, direction, data)
            }
            Exit::Mmio {
                gpa,
                size,
                direction,
                data,
            } => self.handle_mmio(gpa, size, direction, data),
            Exit::Hlt => self.handle_hlt(),
            Exit::Pause => self.handle_pause(),
            Exit::InterruptWindow | Exit::NmiWindow | Exit::ExternalInterrupt => Flow::Events,
            Exit::Preempted => Flow::Clock,
            Exit::Xsetbv { index, value } => self.handle_xsetbv(index, value),
            Exit::Hypercall => self.handle_hypercall(),
            Exit::Cr8 { direction, gpr } => self.handle_cr8(direction, gpr),
            Exit::CacheFlush => {
                self.vcpu().backend.skip_emulated_instruction();
                Flow::Resume
            }
            Exit::TripleFault => {
                let rip = self.vcpu().backend.rip();
                self.stop(RunOutcome::TripleFault { rip })
            }
            Exit::SlatViolation { .. }
            | Exit::Exception { .. }
            | Exit::EntryFailed { .. }
            | Exit::EmulationFailure { .. } => self.handle_failure(*exit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apic::{reg, LVT_DELIVERY_EXTINT, LVT_DELIVERY_NMI};
    use crate::arch::RFLAGS_IF;
    use crate::exit::Direction;
    use crate::ops::Event;
    use crate::test_support::{StillClock, TestVcpu};

    fn vm() -> Vm<TestVcpu, StillClock> {
        let mem = GuestMemory::with_ram(1 << 20).unwrap();
        let mut vm = Vm::new(
            TestVcpu::default(),
            mem,
            StillClock(0),
            CpuidPolicy::emulator(),
            VmConfig::default(),
        );
        vm.vcpus[0].apic.mmio_write(reg::SVR, 0x1ff, 0);
        vm
    }

    #[test]
    fn debug_stops_end_the_run_as_debug_other_exceptions_as_failures() {
        let mut vm = vm();
        for vector in [1, 3] {
            let exit = Exit::Exception {
                vector,
                error_code: None,
            };
            assert_eq!(vm.handle_exit(&exit), Flow::Stop);
            assert_eq!(vm.stop.take(), Some(RunOutcome::Debug { vector }));
        }
        let page_fault = Exit::Exception {
            vector: 14,
            error_code: Some(2),
        };
        assert_eq!(vm.handle_exit(&page_fault), Flow::Stop);
        assert!(matches!(vm.stop.take(), Some(RunOutcome::Failed(_))));
    }

    /// The guest executes HLT: `Ok(true)` if something to take was pending already,
    /// `Ok(false)` once the machine, idle, was woken; the run's end if nothing can wake it.
    fn hlt<P: Platform>(vm: &mut Vm<TestVcpu, P>) -> Result<bool, RunOutcome> {
        match vm.handle_hlt() {
            Flow::Clock => Ok(true),
            Flow::Yield => {
                assert_eq!(vm.vcpus[0].mp_state(), MpState::Halted);
                match vm.idle() {
                    None => {
                        assert!(vm.vcpus[0].can_run());
                        Ok(false)
                    }
                    Some(outcome) => Err(outcome),
                }
            }
            other => panic!("HLT: {other:?}"),
        }
    }

    fn outb(vm: &mut Vm<TestVcpu, StillClock>, port: u16, value: u8) -> Flow {
        vm.handle_io(port, 1, Direction::Write, u32::from(value))
    }

    fn inb(vm: &mut Vm<TestVcpu, StillClock>, port: u16) -> u8 {
        vm.handle_io(port, 1, Direction::Read, 0);
        vm.vcpus[0].backend.pio_in.take().unwrap() as u8
    }

    /// Linux's init_8259A: vectors 0x30/0x38, then the masks.
    fn init_pic(vm: &mut Vm<TestVcpu, StillClock>, masks: [u8; 2]) {
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

    fn ioapic_write(vm: &mut Vm<TestVcpu, StillClock>, index: u32, value: u32) -> Flow {
        vm.handle_mmio(0xfec0_0000, 4, Direction::Write, u64::from(index));
        vm.handle_mmio(0xfec0_0010, 4, Direction::Write, u64::from(value))
    }

    #[test]
    fn nmi_first_then_fixed_then_the_pic_through_lint0() {
        let mut vm = vm();
        init_pic(&mut vm, [0, 0]);
        vm.vcpus[0]
            .apic
            .mmio_write(reg::LVT_LINT0, LVT_DELIVERY_EXTINT, 0);
        vm.vcpus[0]
            .apic
            .mmio_write(reg::LVT_LINT1, LVT_DELIVERY_NMI, 0);
        vm.set_irq(3, true);
        vm.vcpus[0].apic.deliver_fixed(0x50, false);
        vm.nmi();
        // Interrupts disabled, NMIs blocked: both windows are requested.
        vm.deliver_events();
        assert!(vm.vcpus[0].backend.injected.is_empty());
        assert!(vm.vcpus[0].backend.irq_window && vm.vcpus[0].backend.nmi_window);
        // The NMI goes first; the interrupt waits for the next entry.
        vm.vcpus[0].backend.nmi_ok = true;
        vm.vcpus[0].backend.rflags = RFLAGS_IF;
        vm.deliver_events();
        assert_eq!(vm.vcpus[0].backend.injected, [Event::Nmi]);
        assert!(!vm.vcpus[0].backend.nmi_window && vm.vcpus[0].backend.irq_window);
        vm.vcpus[0].backend.enter();
        // Then the local APIC's fixed interrupt, then the PIC's vector (its INTA).
        vm.deliver_events();
        vm.vcpus[0].backend.enter();
        assert_eq!(vm.devices.irqchip.pic.isr(), 0, "no INTA yet");
        vm.deliver_events();
        vm.vcpus[0].backend.enter();
        assert_eq!(
            vm.vcpus[0].backend.injected,
            [
                Event::Nmi,
                Event::ExternalInterrupt(0x50),
                Event::ExternalInterrupt(0x33)
            ]
        );
        assert_eq!(vm.devices.irqchip.pic.isr(), 0x0008);
        assert!(
            !vm.vcpus[0].backend.irq_window,
            "nothing left: window closed"
        );
        // The handler's EOI to the PIC: IRQ 3 made no new edge, nothing more.
        assert_eq!(outb(&mut vm, 0x20, 0x63), Flow::Clock);
        vm.deliver_events();
        assert_eq!(vm.vcpus[0].backend.injected.len(), 3);
    }

    #[test]
    fn com1_level_interrupt_through_the_ioapic_and_the_eoi_broadcast() {
        let mut vm = vm();
        // Pin 4: vector 0x41, level-triggered, physical destination 0.
        ioapic_write(&mut vm, 0x11 + 8, 0);
        assert_eq!(ioapic_write(&mut vm, 0x10 + 8, 0x8041), Flow::Clock);
        vm.vcpus[0].backend.rflags = RFLAGS_IF;
        // The UART raises IRQ 4 once OUT2 and the THR-empty interrupt are on.
        assert_eq!(outb(&mut vm, 0x3fc, 0x0b), Flow::Resume, "line still low");
        assert_eq!(outb(&mut vm, 0x3f9, 0x02), Flow::Events, "line raised");
        vm.deliver_events();
        vm.vcpus[0].backend.enter();
        assert_eq!(
            vm.vcpus[0].backend.injected,
            [Event::ExternalInterrupt(0x41)]
        );
        // The guest's EOI without reading IIR: broadcast, remote IRR cleared, the
        // still-high line delivers again.
        assert_eq!(
            vm.handle_mmio(0xfee0_00b0, 4, Direction::Write, 0),
            Flow::Events
        );
        vm.deliver_events();
        vm.vcpus[0].backend.enter();
        assert_eq!(vm.vcpus[0].backend.injected.len(), 2);
        // Reading IIR drops the line; the next EOI ends it.
        assert_eq!(inb(&mut vm, 0x3fa) & 0x0f, 0x02);
        assert!(!vm.devices.irqchip.line(COM1_IRQ));
        vm.handle_mmio(0xfee0_00b0, 4, Direction::Write, 0);
        vm.deliver_events();
        assert_eq!(vm.vcpus[0].backend.injected.len(), 2);
        assert_eq!(vm.devices.irqchip.ioapic.entry(4) & (1 << 14), 0);
        // The PIC saw the line too (masked there since reset).
        assert_eq!(vm.devices.irqchip.pic.irr() & 0x10, 0x10);
        assert_eq!(inb(&mut vm, 0x21), 0xfb, "the BIOS masks");
    }

    #[test]
    fn pc_testdev_drives_lines_and_its_window() {
        let mut vm = vm();
        // Without the device its ports and window are unclaimed.
        assert_eq!(inb(&mut vm, 0xe0), 0xff);
        assert_eq!(outb(&mut vm, 0x2005, 1), Flow::Resume);
        assert!(!vm.devices.irqchip.line(5));
        vm.attach_pc_testdev().expect("the first attach");
        assert!(vm.attach_pc_testdev().is_err(), "one device per machine");
        // The scratch register through both views.
        vm.handle_io(0xe0, 4, Direction::Write, 0x8765_4321);
        assert_eq!(inb(&mut vm, 0xe9), 0x43);
        vm.handle_io(0xe1, 2, Direction::Read, 0);
        assert_eq!(
            vm.vcpus[0].backend.pio_in.take(),
            Some(0),
            "unaligned: refused"
        );
        assert_eq!(inb(&mut vm, 0xe3), 0x87);
        // Line 10 through the I/O APIC: pin 10, vector 0x5a, level-triggered.
        ioapic_write(&mut vm, 0x11 + 20, 0);
        ioapic_write(&mut vm, 0x10 + 20, 0x805a);
        vm.vcpus[0].backend.rflags = RFLAGS_IF;
        assert_eq!(outb(&mut vm, 0x200a, 1), Flow::Events, "line raised");
        assert!(vm.devices.irqchip.line(10));
        assert_eq!(outb(&mut vm, 0x200a, 2), Flow::Resume, "already high");
        vm.deliver_events();
        vm.vcpus[0].backend.enter();
        assert_eq!(
            vm.vcpus[0].backend.injected,
            [Event::ExternalInterrupt(0x5a)]
        );
        // Lowered before the EOI: nothing more comes.
        assert_eq!(outb(&mut vm, 0x200a, 0), Flow::Events);
        vm.handle_mmio(0xfee0_00b0, 4, Direction::Write, 0);
        vm.deliver_events();
        assert_eq!(vm.vcpus[0].backend.injected.len(), 1);
        // A word write to a line port is ignored.
        vm.handle_io(0x200a, 2, Direction::Write, 1);
        assert!(!vm.devices.irqchip.line(10));
        // The PIC latched the edge on IRQ 3 (masked at reset).
        outb(&mut vm, 0x2003, 1);
        assert_eq!(vm.devices.irqchip.pic.irr() & 0x08, 0x08);
        // The window: an 8-byte write read back in pieces, the last byte and beyond.
        vm.handle_mmio(0xff00_0100, 8, Direction::Write, 0x1122_3344_5566_7788);
        vm.handle_mmio(0xff00_0102, 4, Direction::Read, 0);
        assert_eq!(vm.vcpus[0].backend.mmio_in.take(), Some(0x3344_5566));
        vm.handle_mmio(0xff00_ffff, 2, Direction::Write, 0xabcd);
        vm.handle_mmio(0xff00_fffe, 2, Direction::Read, 0);
        assert_eq!(vm.vcpus[0].backend.mmio_in.take(), Some(0xcd00));
        vm.handle_mmio(0xff01_0000, 1, Direction::Read, 0);
        assert_eq!(vm.vcpus[0].backend.mmio_in.take(), Some(0xff));
    }

    #[test]
    fn hlt_wakes_for_the_pic_and_for_nmis() {
        let mut vm = vm();
        init_pic(&mut vm, [0xef, 0xff]);
        vm.vcpus[0]
            .apic
            .mmio_write(reg::LVT_LINT0, LVT_DELIVERY_EXTINT, 0);
        vm.vcpus[0].backend.rflags = RFLAGS_IF;
        assert_eq!(
            hlt(&mut vm),
            Err(RunOutcome::HaltedForever),
            "nothing can wake it"
        );
        vm.set_irq(4, true);
        assert_eq!(hlt(&mut vm), Ok(true), "the PIC's IRQ 4 through LINT0");
        // With IF clear only an NMI wakes it.
        vm.vcpus[0].backend.rflags = 0;
        assert_eq!(hlt(&mut vm), Err(RunOutcome::HaltedForever));
        vm.vcpus[0]
            .apic
            .mmio_write(reg::LVT_LINT1, LVT_DELIVERY_NMI, 0);
        vm.nmi();
        assert_eq!(hlt(&mut vm), Ok(true));
    }

    #[test]
    fn a_masked_pit_latches_its_edge_at_the_first_clock_read_past_it() {
        // The PIT counts from power-on; IRQ 0 is masked at the PIC, which still latches
        // its edges in the IRR (a guest can read it there).
        let mut vm = vm();
        assert!(!vm.devices.irqchip.line_unmasked(PIT_IRQ));
        assert_eq!(vm.read_clock(), Flow::Clock);
        let edge = vm.devices.pit.next_irq_edge().expect("channel 0 counts");
        assert_eq!(vm.timers_quiet_until, edge);
        vm.platform.0 = edge - 1;
        vm.read_clock();
        assert_eq!(vm.devices.irqchip.pic.irr() & 1, 0, "{edge} ns: not yet");
        vm.platform.0 = edge;
        vm.read_clock();
        assert_eq!(vm.devices.irqchip.pic.irr() & 1, 1, "the edge at {edge} ns");
        assert!(vm.timers_quiet_until > edge, "the next edge is later");
    }

    #[test]
    fn an_access_to_the_pit_brings_it_up_to_date_at_the_next_clock_read() {
        let mut vm = vm();
        vm.read_clock();
        let quiet = vm.timers_quiet_until;
        // Channel 0, mode 2, count 100 (about 84 us): edges long before the power-on
        // count's first.
        vm.platform.0 = 1_000;
        outb(&mut vm, 0x43, 0x34);
        outb(&mut vm, 0x40, 100);
        outb(&mut vm, 0x40, 0);
        vm.platform.0 = 200_000;
        assert!(vm.platform.0 < quiet);
        vm.read_clock();
        assert_eq!(vm.devices.irqchip.pic.irr() & 1, 1, "an edge by 200 us");
        assert!(vm.timers_quiet_until <= 300_000, "the next within a period");
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
        stop: bool,
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
        fn stop_requested(&mut self) -> bool {
            self.stop
        }
    }

    fn ticking_vm() -> Vm<TestVcpu, Ticking> {
        let mem = GuestMemory::with_ram(1 << 20).unwrap();
        let config = VmConfig {
            timeout_ns: Some(1_000_000_000),
            ..VmConfig::default()
        };
        let mut vm = Vm::new(
            TestVcpu::default(),
            mem,
            Ticking::default(),
            CpuidPolicy::emulator(),
            config,
        );
        vm.vcpus[0].apic.mmio_write(reg::SVR, 0x1ff, 0);
        vm.vcpus[0].backend.rflags = RFLAGS_IF;
        vm
    }

    #[test]
    fn hlt_sleeps_through_timers_that_cannot_interrupt() {
        // The local APIC timer runs periodically at its shortest period, but the TPR holds
        // its vector back: once it is requested, firing again changes nothing.
        let mut vm = ticking_vm();
        vm.vcpus[0].apic.mmio_write(reg::TPR, 0xf0, 0);
        vm.vcpus[0]
            .apic
            .mmio_write(reg::LVT_TIMER, 0x40 | crate::apic::LVT_TIMER_PERIODIC, 0);
        vm.vcpus[0].apic.mmio_write(reg::TIMER_DIVIDE, 0xb, 0);
        vm.vcpus[0].apic.mmio_write(reg::TIMER_INITIAL, 1, 0);
        assert_eq!(hlt(&mut vm), Err(RunOutcome::HaltedForever));
        assert!(vm.platform.waits <= 2, "woke {} times", vm.platform.waits);

        // The PIT counts from power-on (18.2 Hz), but IRQ 0 is masked at the PIC and the
        // I/O APIC as firmware leaves them.
        let mut vm = ticking_vm();
        assert_eq!(hlt(&mut vm), Err(RunOutcome::HaltedForever));
        assert_eq!(vm.platform.waits, 0);
        // Unmasked at the PIC (through LINT0 in virtual-wire mode), its tick wakes HLT.
        vm.vcpus[0]
            .apic
            .mmio_write(reg::LVT_LINT0, LVT_DELIVERY_EXTINT, 0);
        vm.devices.irqchip.pic_write(0x21, 0xfe, &mut vm.vcpus[..]);
        assert_eq!(hlt(&mut vm), Ok(false), "woken by the tick");
        assert_eq!(vm.platform.waits, 1);
        let tick = vm.platform.now.get();
        assert!(
            (54_000_000..=56_000_000).contains(&tick),
            "the first tick at 65536 PIT clocks, not {tick} ns"
        );
    }

    #[test]
    fn the_console_can_end_the_run() {
        let mut vm = ticking_vm();
        vm.platform.stop = true;
        assert_eq!(hlt(&mut vm), Err(RunOutcome::Quit), "a halted guest");
        assert_eq!(
            vm.run(),
            RunOutcome::Quit,
            "a running guest, at the clock read"
        );
    }

    #[test]
    fn keyboard_bytes_each_raise_irq1() {
        let mut vm = vm();
        // I/O APIC pin 1: vector 0x51, edge.
        ioapic_write(&mut vm, 0x11 + 2, 0);
        ioapic_write(&mut vm, 0x10 + 2, 0x51);
        vm.vcpus[0].backend.rflags = RFLAGS_IF;
        // The keyboard's answer to "identify" is three bytes; Linux's handler reads one
        // per interrupt.
        outb(&mut vm, 0x60, 0xf2);
        for (n, byte) in [0xfa, 0xab, 0x41].into_iter().enumerate() {
            vm.deliver_events();
            vm.vcpus[0].backend.enter();
            assert_eq!(
                vm.vcpus[0].backend.injected.len(),
                n + 1,
                "an interrupt for byte {n}"
            );
            assert_eq!(inb(&mut vm, 0x60), byte);
            vm.vcpus[0].apic.mmio_write(reg::EOI, 0, 0);
        }
        vm.deliver_events();
        assert_eq!(
            vm.vcpus[0].backend.injected.len(),
            3,
            "nothing after the last byte"
        );
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
        assert_eq!(
            vm.vcpus[0].backend.pio_in.take(),
            Some(0x1237_8086),
            "the host bridge"
        );
    }
}

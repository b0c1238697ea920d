//! The semantic exit: what a backend reports when the guest stops running.
//!
//! Every backend reports the same exits for the same guest behaviour; VMX exit reasons,
//! SVM exit codes and the emulator's intercepts are all translated into [`Exit`], and the
//! core handles each kind once (see [`crate::exits`]).

use crate::ops::Gpr;

/// Direction of a port or MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The guest reads (IN, INS, a load).
    Read,
    /// The guest writes (OUT, OUTS, a store).
    Write,
}

/// Why the guest stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// CPUID: leaf in EAX, subleaf in ECX; the core writes EAX..EDX and skips.
    Cpuid,
    /// RDMSR of `index`; the core writes EDX:EAX and skips, or queues #GP.
    Rdmsr {
        /// The MSR (ECX).
        index: u32,
    },
    /// WRMSR of `value` (EDX:EAX) to `index` (ECX); the core skips or queues #GP.
    Wrmsr {
        /// The MSR.
        index: u32,
        /// The value.
        value: u64,
    },
    /// Port I/O: one element of IN/OUT/INS/OUTS (string and REP forms exit once per
    /// element). For a write, `data` holds the value in its low `size` bytes.
    Io {
        /// The port.
        port: u16,
        /// Access size in bytes: 1, 2 or 4.
        size: u8,
        /// Read (IN) or write (OUT).
        direction: Direction,
        /// The value written (zero for a read).
        data: u32,
    },
    /// An access to guest-physical memory that is not RAM (an MMIO region or nothing).
    Mmio {
        /// Guest-physical address.
        gpa: u64,
        /// Access size in bytes: 1, 2, 4 or 8, or 1 to 7 for the part outside RAM of an
        /// access that straddles a page boundary (the emulator splits such an access at
        /// the boundary, as the bus sees it).
        size: u8,
        /// Read or write.
        direction: Direction,
        /// The value written (zero for a read).
        data: u64,
    },
    /// HLT with interrupts possibly enabled; the core skips it and sleeps until an
    /// interrupt or a timer deadline.
    Hlt,
    /// PAUSE, when the core asked for these exits ([`crate::ops::X86Ops::set_pause_exiting`]):
    /// the core skips it and lets another vCPU run.
    Pause,
    /// The interrupt window asked for with `enable_irq_window` is open.
    InterruptWindow,
    /// The NMI window asked for with `enable_nmi_window` is open.
    NmiWindow,
    /// The run limit (deadline or instruction budget) was reached.
    Preempted,
    /// A host interrupt arrived while the guest ran (hardware backends).
    ExternalInterrupt,
    /// An instruction fetch or access the backend cannot complete at `gpa` (for instance
    /// code fetched from a region that is not RAM).
    SlatViolation {
        /// Guest-physical address.
        gpa: u64,
    },
    /// An exception the backend was told to intercept.
    Exception {
        /// Vector.
        vector: u8,
        /// Error code, if any.
        error_code: Option<u32>,
    },
    /// The guest triple-faulted (or otherwise entered the shutdown state).
    TripleFault,
    /// XSETBV of `value` to XCR `index`.
    Xsetbv {
        /// XCR number (ECX).
        index: u32,
        /// Value (EDX:EAX).
        value: u64,
    },
    /// INVD or WBINVD.
    CacheFlush,
    /// VMCALL / VMMCALL (and, on hardware, the other virtualization instructions).
    Hypercall,
    /// MOV to or from CR8. CR8 is the local APIC's task-priority register (its bits 3:0
    /// are TPR bits 7:4), which the core holds: a write takes the value from `gpr`, a
    /// read puts it there. The core then skips the instruction.
    Cr8 {
        /// Write (MOV to CR8) or read (MOV from CR8).
        direction: Direction,
        /// The general register operand.
        gpr: Gpr,
    },
    /// The VM entry itself failed (hardware backends).
    EntryFailed {
        /// The backend's failure code (VM-instruction error, exit reason).
        reason: u32,
        /// Detail: the offending VMCS field or the exit qualification.
        detail: u64,
    },
    /// The backend could not decode or complete an instruction at `rip`.
    EmulationFailure {
        /// Guest RIP of the instruction.
        rip: u64,
    },
}

/// The kind of an [`Exit`], without its payload: the index of the per-reason statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum ExitKind {
    Cpuid = 0,
    Rdmsr,
    Wrmsr,
    Io,
    Mmio,
    Hlt,
    InterruptWindow,
    NmiWindow,
    Preempted,
    ExternalInterrupt,
    SlatViolation,
    Exception,
    TripleFault,
    Xsetbv,
    CacheFlush,
    Hypercall,
    Cr8,
    EntryFailed,
    EmulationFailure,
    Pause,
}

impl ExitKind {
    /// How many kinds there are.
    pub const COUNT: usize = 20;

    /// Every kind, in discriminant order.
    pub const ALL: [ExitKind; Self::COUNT] = [
        ExitKind::Cpuid,
        ExitKind::Rdmsr,
        ExitKind::Wrmsr,
        ExitKind::Io,
        ExitKind::Mmio,
        ExitKind::Hlt,
        ExitKind::InterruptWindow,
        ExitKind::NmiWindow,
        ExitKind::Preempted,
        ExitKind::ExternalInterrupt,
        ExitKind::SlatViolation,
        ExitKind::Exception,
        ExitKind::TripleFault,
        ExitKind::Xsetbv,
        ExitKind::CacheFlush,
        ExitKind::Hypercall,
        ExitKind::Cr8,
        ExitKind::EntryFailed,
        ExitKind::EmulationFailure,
        ExitKind::Pause,
    ];

    /// A short lowercase name for reports.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::Cpuid => "cpuid",
            ExitKind::Rdmsr => "rdmsr",
            ExitKind::Wrmsr => "wrmsr",
            ExitKind::Io => "io",
            ExitKind::Mmio => "mmio",
            ExitKind::Hlt => "hlt",
            ExitKind::InterruptWindow => "interrupt-window",
            ExitKind::NmiWindow => "nmi-window",
            ExitKind::Preempted => "preempted",
            ExitKind::ExternalInterrupt => "external-interrupt",
            ExitKind::SlatViolation => "slat-violation",
            ExitKind::Exception => "exception",
            ExitKind::TripleFault => "triple-fault",
            ExitKind::Xsetbv => "xsetbv",
            ExitKind::CacheFlush => "cache-flush",
            ExitKind::Hypercall => "hypercall",
            ExitKind::Cr8 => "cr8",
            ExitKind::EntryFailed => "entry-failed",
            ExitKind::EmulationFailure => "emulation-failure",
            ExitKind::Pause => "pause",
        }
    }
}

impl Exit {
    /// This exit's kind.
    pub fn kind(&self) -> ExitKind {
        match self {
            Exit::Cpuid => ExitKind::Cpuid,
            Exit::Rdmsr { .. } => ExitKind::Rdmsr,
            Exit::Wrmsr { .. } => ExitKind::Wrmsr,
            Exit::Io { .. } => ExitKind::Io,
            Exit::Mmio { .. } => ExitKind::Mmio,
            Exit::Hlt => ExitKind::Hlt,
            Exit::Pause => ExitKind::Pause,
            Exit::InterruptWindow => ExitKind::InterruptWindow,
            Exit::NmiWindow => ExitKind::NmiWindow,
            Exit::Preempted => ExitKind::Preempted,
            Exit::ExternalInterrupt => ExitKind::ExternalInterrupt,
            Exit::SlatViolation { .. } => ExitKind::SlatViolation,
            Exit::Exception { .. } => ExitKind::Exception,
            Exit::TripleFault => ExitKind::TripleFault,
            Exit::Xsetbv { .. } => ExitKind::Xsetbv,
            Exit::CacheFlush => ExitKind::CacheFlush,
            Exit::Hypercall => ExitKind::Hypercall,
            Exit::Cr8 { .. } => ExitKind::Cr8,
            Exit::EntryFailed { .. } => ExitKind::EntryFailed,
            Exit::EmulationFailure { .. } => ExitKind::EmulationFailure,
        }
    }
}

//! The instruction groups the emulator is checked against the host CPU in, as sets of
//! iced-x86 `Code`s: one definition shared by the differential tests (each group has a
//! test that runs every Code of it the generator can build) and the coverage report
//! (`cargo xtask coverage`, docs/emu-coverage.md).
//!
//! A group holds the user-mode Codes of its instruction-set extension that a program can
//! run at CPL 3 with deterministic results. Left out, with the reason recorded in
//! [`EXCLUDED`]: instructions answered by the hypervisor rather than the CPU (CPUID,
//! RDTSC, ...), I/O and interrupts, control transfers (exercised by the guest corpus and
//! the emulator's unit tests: the oracle runs straight-line code), and instructions whose
//! results depend on the operating system's descriptor tables.

use iced_x86::{Code, CpuidFeature as F, EncodingKind, FlowControl, Mnemonic as M};

/// One group of the coverage report.
#[derive(Clone, Copy, Debug)]
pub struct Group {
    /// Short name (the differential test's name).
    pub name: &'static str,
    /// Title for the report.
    pub title: &'static str,
    /// Code size its instructions run at (64, or 32 for the legacy forms).
    pub bits: u32,
    /// Membership.
    pub contains: fn(Code) -> bool,
}

impl Group {
    /// Every Code of the group, in iced order.
    pub fn codes(&self) -> Vec<Code> {
        Code::values().filter(|c| (self.contains)(*c)).collect()
    }

    /// The Codes the generator can build and the host can run (what the differential
    /// test of the group runs).
    pub fn testable_codes(&self) -> Vec<Code> {
        self.codes()
            .into_iter()
            .filter(|c| testable(*c, self.bits))
            .collect()
    }
}

/// Whether the generator can build `code` at code size `bits` and the host can run it.
pub fn testable(code: Code, bits: u32) -> bool {
    if bits == 32 {
        crate::gen::supported_legacy32(code)
    } else {
        crate::gen::supported(code)
    }
}

/// Instructions left out of the groups although their extension would include them.
pub const EXCLUDED: &[(M, &str)] = &[
    (M::Cpuid, "answered by the hypervisor's CPUID policy"),
    (M::Rdtsc, "time stamp: differs by design"),
    (M::Rdtscp, "time stamp: differs by design"),
    (M::Rdpmc, "performance counters"),
    (M::Rdpid, "processor ID from the OS"),
    (M::In, "I/O: exits to the core's device model"),
    (M::Out, "I/O: exits to the core's device model"),
    (M::Insb, "I/O"),
    (M::Insw, "I/O"),
    (M::Insd, "I/O"),
    (M::Outsb, "I/O"),
    (M::Outsw, "I/O"),
    (M::Outsd, "I/O"),
    (M::Cli, "interrupt flag: IOPL-sensitive system instruction"),
    (M::Sti, "interrupt flag: IOPL-sensitive system instruction"),
    (M::Lar, "reads the OS's descriptor tables"),
    (M::Lsl, "reads the OS's descriptor tables"),
    (M::Verr, "reads the OS's descriptor tables"),
    (M::Verw, "reads the OS's descriptor tables"),
    (M::Sgdt, "OS descriptor-table registers (UMIP)"),
    (M::Sidt, "OS descriptor-table registers (UMIP)"),
    (M::Sldt, "OS descriptor-table registers (UMIP)"),
    (M::Str, "OS descriptor-table registers (UMIP)"),
    (M::Smsw, "OS control register (UMIP)"),
    (M::Lfs, "loads FS (the host's thread pointer)"),
    (M::Lgs, "loads GS"),
    (M::Lss, "loads SS"),
    (M::Monitor, "MONITOR/MWAIT: not offered (CPUID clears MONITOR)"),
    (M::Mwait, "MONITOR/MWAIT: not offered (CPUID clears MONITOR)"),
    (M::Popf, "may set TF: the oracle cannot follow the trap out of the snippet (unit-tested)"),
    (M::Popfd, "may set TF: the oracle cannot follow the trap out of the snippet (unit-tested)"),
    (M::Popfq, "may set TF: the oracle cannot follow the trap out of the snippet (unit-tested)"),
    (
        M::Reservednop,
        "reserved-NOP hint space: vendors differ (AMD raises #UD for register forms of 0F 0D); the emulator follows Intel (NOP)",
    ),
    (M::Ud0, "defined to raise #UD"),
    (M::Ud1, "defined to raise #UD"),
    (M::Ud2, "defined to raise #UD"),
];

fn excluded(code: Code) -> bool {
    EXCLUDED.iter().any(|(m, _)| *m == code.mnemonic()) || is_segment_register_code(code)
}

/// MOV to/from segment registers, PUSH/POP of segment registers: their values are the
/// OS's selectors.
fn is_segment_register_code(code: Code) -> bool {
    use iced_x86::OpCodeOperandKind as K;
    let kinds = code.op_code().op_kinds();
    kinds.iter().any(|k| {
        matches!(
            k,
            K::seg_reg | K::es | K::cs | K::ss | K::ds | K::fs | K::gs
        )
    })
}

/// The user-mode Codes of 64-bit mode in general (legacy or VEX encoding, straight-line,
/// not privileged, not excluded).
fn user64(code: Code) -> bool {
    let op = code.op_code();
    op.is_instruction()
        && op.mode64()
        && matches!(code.encoding(), EncodingKind::Legacy | EncodingKind::VEX)
        && matches!(
            code.flow_control(),
            FlowControl::Next | FlowControl::Exception
        )
        && !code.is_privileged()
        && !excluded(code)
}

fn features_within(code: Code, allowed: &[F]) -> bool {
    code.cpuid_features().iter().all(|f| allowed.contains(f))
}

fn has_feature(code: Code, feature: F) -> bool {
    code.cpuid_features().contains(&feature)
}

const INTEGER_FEATURES: &[F] = &[
    F::INTEL8086,
    F::INTEL186,
    F::INTEL286,
    F::INTEL386,
    F::INTEL486,
    F::X64,
    F::CMOV,
    F::CX8,
    F::CMPXCHG16B,
    F::BMI1,
    F::BMI2,
    F::ADX,
    F::LZCNT,
    F::POPCNT,
    F::MOVBE,
    F::MULTIBYTENOP,
];

fn integer(code: Code) -> bool {
    user64(code)
        && (features_within(code, INTEGER_FEATURES) || code.mnemonic() == M::Crc32)
        // WAIT is the x87 group's.
        && code.mnemonic() != M::Wait
}

fn x87(code: Code) -> bool {
    user64(code)
        && code.encoding() == EncodingKind::Legacy
        && (code
            .cpuid_features()
            .iter()
            .any(|f| matches!(f, F::FPU | F::FPU287 | F::FPU387))
            || code.mnemonic() == M::Wait)
}

fn fxsr(code: Code) -> bool {
    user64(code) && code.encoding() == EncodingKind::Legacy && has_feature(code, F::FXSR)
}

fn simd(feature: F) -> impl Fn(Code) -> bool {
    move |code| {
        user64(code)
            && code.encoding() == EncodingKind::Legacy
            && has_feature(code, feature)
            && !matches!(code.mnemonic(), M::Crc32 | M::Popcnt)
    }
}

/// The forms that exist only outside 64-bit mode and that issue 3 names: BCD adjusts,
/// PUSHA/POPA, BOUND, ARPL, LES/LDS.
pub const LEGACY32_MNEMONICS: &[M] = &[
    M::Daa,
    M::Das,
    M::Aaa,
    M::Aas,
    M::Aam,
    M::Aad,
    M::Pusha,
    M::Pushad,
    M::Popa,
    M::Popad,
    M::Bound,
    M::Arpl,
    M::Les,
    M::Lds,
];

fn legacy32(code: Code) -> bool {
    let op = code.op_code();
    op.is_instruction()
        && op.mode32()
        && !op.mode64()
        && code.encoding() == EncodingKind::Legacy
        && LEGACY32_MNEMONICS.contains(&code.mnemonic())
}

/// The groups, in report order.
pub const GROUPS: &[Group] = &[
    Group {
        name: "integer",
        title: "General-purpose integer (incl. BMI1, BMI2, ADX, LZCNT/POPCNT/TZCNT, MOVBE, CRC32, CMPXCHG16B, strings)",
        bits: 64,
        contains: integer,
    },
    Group {
        name: "legacy32",
        title: "Legacy forms outside 64-bit mode (BCD, PUSHA/POPA, BOUND, ARPL, LES/LDS), run in compatibility mode",
        bits: 32,
        contains: legacy32,
    },
    Group {
        name: "x87",
        title: "x87 FPU",
        bits: 64,
        contains: x87,
    },
    Group {
        name: "fxsr",
        title: "FXSAVE/FXRSTOR",
        bits: 64,
        contains: fxsr,
    },
    Group {
        name: "mmx",
        title: "MMX",
        bits: 64,
        contains: |c| simd(F::MMX)(c),
    },
    Group {
        name: "sse",
        title: "SSE",
        bits: 64,
        contains: |c| simd(F::SSE)(c),
    },
    Group {
        name: "sse2",
        title: "SSE2",
        bits: 64,
        contains: |c| simd(F::SSE2)(c),
    },
    Group {
        name: "sse3",
        title: "SSE3",
        bits: 64,
        contains: |c| simd(F::SSE3)(c),
    },
    Group {
        name: "ssse3",
        title: "SSSE3",
        bits: 64,
        contains: |c| simd(F::SSSE3)(c),
    },
    Group {
        name: "sse4_1",
        title: "SSE4.1",
        bits: 64,
        contains: |c| simd(F::SSE4_1)(c),
    },
    Group {
        name: "sse4_2",
        title: "SSE4.2",
        bits: 64,
        contains: |c| simd(F::SSE4_2)(c),
    },
];

/// The group named `name`.
pub fn group(name: &str) -> Option<&'static Group> {
    GROUPS.iter().find(|g| g.name == name)
}

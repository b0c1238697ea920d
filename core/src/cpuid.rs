//! CPUID policy: what the guest sees, exactly what the backend implements.
//!
//! A [`CpuidPolicy`] is a table of leaves ([`CpuidEntry`]) that the caller may edit
//! ([`CpuidPolicy::set_leaf`], [`CpuidPolicy::set_feature`]): the emulator backend uses
//! [`CpuidPolicy::emulator`] as it is; the hardware backends will start from it and
//! intersect it with what the host offers. [`CpuidPolicy::lookup`] answers the CPUID
//! instruction, filling in the fields that depend on the vCPU's state ([`CpuidDynamic`]).
//!
//! Rules the lookup follows (Intel behaviour, as KVM implements it):
//!
//! - Leaves whose output does not depend on ECX answer every subleaf with their subleaf-0
//!   entry; for the sub-leaf-indexed leaves ([`is_indexed_leaf`]) a subleaf without an
//!   entry reads all zeros.
//! - A leaf inside its range (basic up to leaf 0's EAX, hypervisor 0x4000_00xx up to
//!   0x4000_0000's EAX, extended up to 0x8000_0000's EAX) without an entry reads zeros.
//! - A leaf above the maximum of its range (or in a range that does not exist) returns the
//!   data of the highest basic leaf, with the caller's subleaf, as Intel processors do
//!   (SDM 2A, CPUID, "If a value entered for CPUID.EAX is higher than the maximum input
//!   value for basic or extended function ...").

use alloc::vec::Vec;

/// MAXPHYADDR of the CPU model: the guest-physical address width reported in CPUID
/// 0x8000_0008 EAX bits 7:0. IA32_APIC_BASE, the MTRRs and the page-table walker take their
/// reserved bits from it (39 bits, 512 GiB, as on Intel client cores).
pub const PHYS_ADDR_BITS: u32 = 39;
/// The linear-address width reported in CPUID 0x8000_0008 EAX bits 15:8 (4-level paging).
pub const VIRT_ADDR_BITS: u32 = 48;

/// The 12-byte hypervisor signature in leaf 0x4000_0000 EBX, ECX, EDX: "opsvisor"
/// followed by four NUL bytes (as KVM's "KVMKVMKVM\0\0\0").
pub const HYPERVISOR_SIGNATURE: [u8; 12] = *b"opsvisor\0\0\0\0";

/// The brand string of leaves 0x8000_0002..=0x8000_0004.
pub const BRAND_STRING: &str = "opsvisor emulated CPU";

/// The guest TSC frequency in kHz, for the timing leaves.
const TSC_KHZ: u32 = (crate::platform::GUEST_TSC_HZ / 1000) as u32;

/// One leaf (and subleaf) of the table: the values of EAX, EBX, ECX, EDX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidEntry {
    /// The leaf (EAX input).
    pub leaf: u32,
    /// The subleaf (ECX input); 0 for leaves that do not depend on ECX.
    pub subleaf: u32,
    /// EAX, EBX, ECX, EDX.
    pub regs: [u32; 4],
}

/// A register of a CPUID result, as an index into `[EAX, EBX, ECX, EDX]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
#[allow(missing_docs)]
pub enum CpuidReg {
    Eax = 0,
    Ebx = 1,
    Ecx = 2,
    Edx = 3,
}

/// Leaves whose output depends on the subleaf in ECX (SDM 2A, CPUID).
pub const fn is_indexed_leaf(leaf: u32) -> bool {
    matches!(
        leaf,
        0x4 | 0x7
            | 0xb
            | 0xd
            | 0xf
            | 0x10
            | 0x12
            | 0x14
            | 0x17
            | 0x18
            | 0x1b
            | 0x1d
            | 0x1e
            | 0x1f
            | 0x20
            | 0x23
            | 0x24
            | 0x8000_001d
            | 0x8000_0020
            | 0x8000_0026
    )
}

/// A CPU feature flag: one bit of one CPUID leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Feature {
    // Leaf 1 EDX.
    Fpu,
    Vme,
    De,
    Pse,
    Tsc,
    Msr,
    Pae,
    Mce,
    Cx8,
    Apic,
    Sep,
    Mtrr,
    Pge,
    Mca,
    Cmov,
    Pat,
    Pse36,
    Clfsh,
    Mmx,
    Fxsr,
    Sse,
    Sse2,
    Htt,
    // Leaf 1 ECX.
    Sse3,
    Pclmulqdq,
    Monitor,
    Vmx,
    Ssse3,
    Fma,
    Cx16,
    Pcid,
    Sse41,
    Sse42,
    X2apic,
    Movbe,
    Popcnt,
    TscDeadline,
    Aes,
    Xsave,
    Osxsave,
    Avx,
    F16c,
    Rdrand,
    Hypervisor,
    // Leaf 6 EAX.
    Arat,
    // Leaf 7 subleaf 0 EBX / ECX.
    Fsgsbase,
    TscAdjust,
    Bmi1,
    Avx2,
    Smep,
    Bmi2,
    Erms,
    Invpcid,
    Rdseed,
    Adx,
    Smap,
    Clflushopt,
    Sha,
    Umip,
    Pku,
    Ospke,
    La57,
    Rdpid,
    // Leaf 7 subleaf 0 EDX.
    ArchCapabilities,
    // Leaf 0xd subleaf 1 EAX.
    Xsaveopt,
    Xsavec,
    // Leaf 0x8000_0001 ECX / EDX.
    LahfLm,
    Abm,
    Prefetchw,
    Syscall,
    Nx,
    Page1Gb,
    Rdtscp,
    Lm,
    // Leaf 0x8000_0007 EDX.
    InvariantTsc,
}

impl Feature {
    /// Every feature, in CPUID order (leaf, register, bit).
    pub const ALL: [Feature; 75] = [
        Feature::Fpu,
        Feature::Vme,
        Feature::De,
        Feature::Pse,
        Feature::Tsc,
        Feature::Msr,
        Feature::Pae,
        Feature::Mce,
        Feature::Cx8,
        Feature::Apic,
        Feature::Sep,
        Feature::Mtrr,
        Feature::Pge,
        Feature::Mca,
        Feature::Cmov,
        Feature::Pat,
        Feature::Pse36,
        Feature::Clfsh,
        Feature::Mmx,
        Feature::Fxsr,
        Feature::Sse,
        Feature::Sse2,
        Feature::Htt,
        Feature::Sse3,
        Feature::Pclmulqdq,
        Feature::Monitor,
        Feature::Vmx,
        Feature::Ssse3,
        Feature::Fma,
        Feature::Cx16,
        Feature::Pcid,
        Feature::Sse41,
        Feature::Sse42,
        Feature::X2apic,
        Feature::Movbe,
        Feature::Popcnt,
        Feature::TscDeadline,
        Feature::Aes,
        Feature::Xsave,
        Feature::Osxsave,
        Feature::Avx,
        Feature::F16c,
        Feature::Rdrand,
        Feature::Hypervisor,
        Feature::Arat,
        Feature::Fsgsbase,
        Feature::TscAdjust,
        Feature::Bmi1,
        Feature::Avx2,
        Feature::Smep,
        Feature::Bmi2,
        Feature::Erms,
        Feature::Invpcid,
        Feature::Rdseed,
        Feature::Adx,
        Feature::Smap,
        Feature::Clflushopt,
        Feature::Sha,
        Feature::Umip,
        Feature::Pku,
        Feature::Ospke,
        Feature::La57,
        Feature::Rdpid,
        Feature::ArchCapabilities,
        Feature::Xsaveopt,
        Feature::Xsavec,
        Feature::LahfLm,
        Feature::Abm,
        Feature::Prefetchw,
        Feature::Syscall,
        Feature::Nx,
        Feature::Page1Gb,
        Feature::Rdtscp,
        Feature::Lm,
        Feature::InvariantTsc,
    ];

    /// The feature's name as QEMU's `-cpu` option and Linux's `/proc/cpuinfo` spell it
    /// (`pni` for SSE3, `sse4.1`, `tsc-deadline`, ...).
    pub fn name(self) -> &'static str {
        use Feature::*;
        match self {
            Fpu => "fpu",
            Vme => "vme",
            De => "de",
            Pse => "pse",
            Tsc => "tsc",
            Msr => "msr",
            Pae => "pae",
            Mce => "mce",
            Cx8 => "cx8",
            Apic => "apic",
            Sep => "sep",
            Mtrr => "mtrr",
            Pge => "pge",
            Mca => "mca",
            Cmov => "cmov",
            Pat => "pat",
            Pse36 => "pse36",
            Clfsh => "clflush",
            Mmx => "mmx",
            Fxsr => "fxsr",
            Sse => "sse",
            Sse2 => "sse2",
            Htt => "ht",
            Sse3 => "pni",
            Pclmulqdq => "pclmulqdq",
            Monitor => "monitor",
            Vmx => "vmx",
            Ssse3 => "ssse3",
            Fma => "fma",
            Cx16 => "cx16",
            Pcid => "pcid",
            Sse41 => "sse4.1",
            Sse42 => "sse4.2",
            X2apic => "x2apic",
            Movbe => "movbe",
            Popcnt => "popcnt",
            TscDeadline => "tsc-deadline",
            Aes => "aes",
            Xsave => "xsave",
            Osxsave => "osxsave",
            Avx => "avx",
            F16c => "f16c",
            Rdrand => "rdrand",
            Hypervisor => "hypervisor",
            Arat => "arat",
            Fsgsbase => "fsgsbase",
            TscAdjust => "tsc-adjust",
            Bmi1 => "bmi1",
            Avx2 => "avx2",
            Smep => "smep",
            Bmi2 => "bmi2",
            Erms => "erms",
            Invpcid => "invpcid",
            Rdseed => "rdseed",
            Adx => "adx",
            Smap => "smap",
            Clflushopt => "clflushopt",
            Sha => "sha-ni",
            Umip => "umip",
            Pku => "pku",
            Ospke => "ospke",
            La57 => "la57",
            Rdpid => "rdpid",
            ArchCapabilities => "arch-capabilities",
            Xsaveopt => "xsaveopt",
            Xsavec => "xsavec",
            LahfLm => "lahf-lm",
            Abm => "abm",
            Prefetchw => "3dnowprefetch",
            Syscall => "syscall",
            Nx => "nx",
            Page1Gb => "pdpe1gb",
            Rdtscp => "rdtscp",
            Lm => "lm",
            InvariantTsc => "invtsc",
        }
    }

    /// The feature QEMU's `-cpu` option names `name`: its own name, with `_` and `-`
    /// interchangeable, or one of QEMU's aliases (`sse3` for `pni`, `sse4-1` and `sse4_1`
    /// for `sse4.1`, `xd` for `nx`, `i64` for `lm`, `sha` for `sha-ni`).
    pub fn from_name(name: &str) -> Option<Feature> {
        let mut buf = [0u8; 24];
        let bytes = name.as_bytes();
        let norm = buf.get_mut(..bytes.len())?;
        for (dst, &src) in norm.iter_mut().zip(bytes) {
            *dst = if src == b'_' {
                b'-'
            } else {
                src.to_ascii_lowercase()
            };
        }
        let norm: &[u8] = norm;
        let alias: &[u8] = match norm {
            b"sse3" => b"pni",
            b"sse4-1" => b"sse4.1",
            b"sse4-2" => b"sse4.2",
            b"xd" => b"nx",
            b"i64" => b"lm",
            b"sha" => b"sha-ni",
            b"clflush" | b"clfsh" => b"clflush",
            other => other,
        };
        Feature::ALL
            .into_iter()
            .find(|f| f.name().as_bytes() == alias)
    }

    /// Whether the core implements the feature the same on every backend, whatever the
    /// processor has: the local APIC and its timers, the MTRRs and PAT, the TSC (RDTSC
    /// exits on the hardware backends), the hypervisor leaves and the topology. A
    /// hardware backend offers these whatever its processor reports.
    pub fn core_emulated(self) -> bool {
        use Feature::*;
        matches!(
            self,
            Apic | X2apic
                | TscDeadline
                | Arat
                | InvariantTsc
                | TscAdjust
                | Tsc
                | Msr
                | Mtrr
                | Pat
                | Hypervisor
                | Htt
        )
    }

    /// Where the flag lives: leaf, subleaf, register, bit.
    pub fn location(self) -> (u32, u32, CpuidReg, u32) {
        use CpuidReg::{Eax, Ebx, Ecx, Edx};
        use Feature::*;
        let (leaf, reg, bit) = match self {
            Fpu => (1, Edx, 0),
            Vme => (1, Edx, 1),
            De => (1, Edx, 2),
            Pse => (1, Edx, 3),
            Tsc => (1, Edx, 4),
            Msr => (1, Edx, 5),
            Pae => (1, Edx, 6),
            Mce => (1, Edx, 7),
            Cx8 => (1, Edx, 8),
            Apic => (1, Edx, 9),
            Sep => (1, Edx, 11),
            Mtrr => (1, Edx, 12),
            Pge => (1, Edx, 13),
            Mca => (1, Edx, 14),
            Cmov => (1, Edx, 15),
            Pat => (1, Edx, 16),
            Pse36 => (1, Edx, 17),
            Clfsh => (1, Edx, 19),
            Mmx => (1, Edx, 23),
            Fxsr => (1, Edx, 24),
            Sse => (1, Edx, 25),
            Sse2 => (1, Edx, 26),
            Htt => (1, Edx, 28),
            Sse3 => (1, Ecx, 0),
            Pclmulqdq => (1, Ecx, 1),
            Monitor => (1, Ecx, 3),
            Vmx => (1, Ecx, 5),
            Ssse3 => (1, Ecx, 9),
            Fma => (1, Ecx, 12),
            Cx16 => (1, Ecx, 13),
            Pcid => (1, Ecx, 17),
            Sse41 => (1, Ecx, 19),
            Sse42 => (1, Ecx, 20),
            X2apic => (1, Ecx, 21),
            Movbe => (1, Ecx, 22),
            Popcnt => (1, Ecx, 23),
            TscDeadline => (1, Ecx, 24),
            Aes => (1, Ecx, 25),
            Xsave => (1, Ecx, 26),
            Osxsave => (1, Ecx, 27),
            Avx => (1, Ecx, 28),
            F16c => (1, Ecx, 29),
            Rdrand => (1, Ecx, 30),
            Hypervisor => (1, Ecx, 31),
            Arat => (6, Eax, 2),
            Fsgsbase => (7, Ebx, 0),
            TscAdjust => (7, Ebx, 1),
            Bmi1 => (7, Ebx, 3),
            Avx2 => (7, Ebx, 5),
            Smep => (7, Ebx, 7),
            Bmi2 => (7, Ebx, 8),
            Erms => (7, Ebx, 9),
            Invpcid => (7, Ebx, 10),
            Rdseed => (7, Ebx, 18),
            Adx => (7, Ebx, 19),
            Smap => (7, Ebx, 20),
            Clflushopt => (7, Ebx, 23),
            Sha => (7, Ebx, 29),
            Umip => (7, Ecx, 2),
            Pku => (7, Ecx, 3),
            Ospke => (7, Ecx, 4),
            La57 => (7, Ecx, 16),
            Rdpid => (7, Ecx, 22),
            ArchCapabilities => (7, Edx, 29),
            Xsaveopt => return (0xd, 1, Eax, 0),
            Xsavec => return (0xd, 1, Eax, 1),
            LahfLm => (0x8000_0001, Ecx, 0),
            Abm => (0x8000_0001, Ecx, 5),
            Prefetchw => (0x8000_0001, Ecx, 8),
            Syscall => (0x8000_0001, Edx, 11),
            Nx => (0x8000_0001, Edx, 20),
            Page1Gb => (0x8000_0001, Edx, 26),
            Rdtscp => (0x8000_0001, Edx, 27),
            Lm => (0x8000_0001, Edx, 29),
            InvariantTsc => (0x8000_0007, Edx, 8),
        };
        (leaf, 0, reg, bit)
    }
}

/// The CPU model the guest sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuidPolicy {
    /// Sorted by (leaf, subleaf), one entry per pair.
    entries: Vec<CpuidEntry>,
    /// A copy of the basic leaves below [`FAST_LEAVES`] (zeros where absent), kept in step
    /// with `entries`: CPUID is the most frequent exit, and the common leaves are answered
    /// from here by index instead of by three binary searches.
    fast: [[u32; 4]; FAST_LEAVES],
    /// Leaf 0 EAX (0 when leaf 0 is absent), kept in step with `entries`.
    max_basic: u32,
}

/// Basic leaves with a copy in [`CpuidPolicy`]'s by-index table.
const FAST_LEAVES: usize = 32;

/// Bit `n` set: leaf `n` may be answered from the by-index table (it is below
/// [`FAST_LEAVES`] and not indexed). One shift and test instead of a chain of comparisons.
const FAST_MASK: u32 = {
    let mut mask = 0;
    let mut leaf = 0;
    while leaf < FAST_LEAVES as u32 {
        if !is_indexed_leaf(leaf) {
            mask |= 1 << leaf;
        }
        leaf += 1;
    }
    mask
};

/// Four ASCII bytes as a little-endian register value, as CPUID returns strings.
fn str_reg(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    for (dst, src) in word.iter_mut().zip(bytes) {
        *dst = *src;
    }
    u32::from_le_bytes(word)
}

impl CpuidPolicy {
    /// A policy with no leaves at all (every lookup reads zeros).
    pub fn empty() -> CpuidPolicy {
        CpuidPolicy {
            entries: Vec::new(),
            fast: [[0; 4]; FAST_LEAVES],
            max_basic: 0,
        }
    }

    /// The policy for the emulator backend: the features it implements and no more.
    ///
    /// GenuineIntel, family 6 model 0x9e stepping 10 (a generic modern core). Basic leaves
    /// up to 0x16 (so the TSC leaves 0x15/0x16 exist; leaves the model does not fill, such
    /// as 4, 0xa and 0xd, read zeros), hypervisor leaves up to 0x4000_0010, extended leaves
    /// up to 0x8000_0008. The instruction-set extensions are exactly those the emulator
    /// implements (checked by the oracle crate's `cpuid_policy` test): x87, FXSR, MMX, SSE
    /// through SSE4.2, POPCNT, MOVBE, CMPXCHG16B, BMI1/2, ADX, LZCNT, FSGSBASE, RDPID,
    /// RDTSCP, XSAVE with XSAVEOPT and XSAVEC for the x87 and SSE state components
    /// (leaf 0xd); AVX and later are clear. The system features are those it implements:
    /// SMEP, SMAP, UMIP, protection keys (PKU), PCID and INVPCID, 5-level paging (LA57,
    /// with a 57-bit linear address width in leaf 0x8000_0008). MAXPHYADDR is
    /// [`PHYS_ADDR_BITS`].
    pub fn emulator() -> CpuidPolicy {
        let mut policy = CpuidPolicy::empty();
        let vendor = b"GenuineIntel";
        // Leaf 0: max basic leaf; vendor in EBX, EDX, ECX order.
        policy.set_leaf(
            0,
            0,
            [
                0x16,
                str_reg(&vendor[0..4]),
                str_reg(&vendor[8..12]),
                str_reg(&vendor[4..8]),
            ],
        );
        // Leaf 1: signature (family 6, extended model 9, model 0xe, stepping 0xa); EBX:
        // CLFLUSH line 8 × 8 bytes, one logical processor, APIC ID filled in by lookup.
        policy.set_leaf(1, 0, [0x0009_06ea, 0x0001_0800, 0, 0]);
        use Feature::*;
        for feature in [
            Fpu,
            Pse,
            Tsc,
            Msr,
            Pae,
            Cx8,
            Apic,
            Sep,
            Mtrr,
            Pge,
            Cmov,
            Pat,
            Clfsh,
            Mmx,
            Fxsr,
            Sse,
            Sse2,
            Sse3,
            Ssse3,
            Sse41,
            Sse42,
            Cx16,
            Pcid,
            Xsave,
            X2apic,
            Movbe,
            Popcnt,
            TscDeadline,
            Hypervisor,
        ] {
            policy.set_feature(feature, true);
        }
        // Leaf 2: one iteration, no descriptors.
        policy.set_leaf(2, 0, [0x0000_0001, 0, 0, 0]);
        // Leaf 6: the APIC timer runs at a constant rate in every C-state.
        policy.set_feature(Arat, true);
        // Leaf 7.0: max subleaf 0. IA32_TSC_ADJUST is implemented by the MSR table.
        policy.set_leaf(7, 0, [0; 4]);
        for feature in [
            Fsgsbase, TscAdjust, Bmi1, Smep, Bmi2, Invpcid, Adx, Smap, Umip, Pku, La57, Rdpid,
        ] {
            policy.set_feature(feature, true);
        }
        // IA32_ARCH_CAPABILITIES, read from the MSR table: an emulator that does not
        // speculate is affected by none of the speculative-execution flaws it lists.
        policy.set_feature(ArchCapabilities, true);
        // Leaves 0xb and 0x1f: one thread per core (SMT level), one core per package
        // (core level) until the machine sets its topology; EDX (the x2APIC ID) is filled
        // in by lookup.
        policy.set_topology(1);
        // Leaf 0x15: TSC = crystal (1 GHz) × 1 / 1.
        policy.set_leaf(0x15, 0, [1, 1, crate::platform::GUEST_TSC_HZ as u32, 0]);
        // Leaf 0x16: base 1000 MHz, max 1000 MHz, bus (reference) 100 MHz.
        policy.set_leaf(0x16, 0, [1000, 1000, 100, 0]);
        // Hypervisor leaves: signature and, in the VMware/ACRN style timing leaf 0x4000_0010,
        // the TSC and APIC timer input frequencies in kHz (both the 1 GHz guest TSC).
        let sig = &HYPERVISOR_SIGNATURE;
        policy.set_leaf(
            0x4000_0000,
            0,
            [
                0x4000_0010,
                str_reg(&sig[0..4]),
                str_reg(&sig[4..8]),
                str_reg(&sig[8..12]),
            ],
        );
        policy.set_leaf(0x4000_0010, 0, [TSC_KHZ, TSC_KHZ, 0, 0]);
        // Extended leaves.
        policy.set_leaf(0x8000_0000, 0, [0x8000_0008, 0, 0, 0]);
        policy.set_leaf(0x8000_0001, 0, [0; 4]);
        for feature in [LahfLm, Abm, Syscall, Nx, Page1Gb, Rdtscp, Lm] {
            policy.set_feature(feature, true);
        }
        let mut brand = [0u8; 48];
        brand[..BRAND_STRING.len()].copy_from_slice(BRAND_STRING.as_bytes());
        for (i, chunk) in brand.chunks(16).enumerate() {
            let regs = [
                str_reg(&chunk[0..4]),
                str_reg(&chunk[4..8]),
                str_reg(&chunk[8..12]),
                str_reg(&chunk[12..16]),
            ];
            policy.set_leaf(0x8000_0002 + i as u32, 0, regs);
        }
        policy.set_feature(InvariantTsc, true);
        policy.set_leaf(
            0x8000_0008,
            0,
            [PHYS_ADDR_BITS | (VIRT_ADDR_BITS << 8), 0, 0, 0],
        );
        // Leaf 0xd subleaf 1: XSAVEOPT and XSAVEC (the sizes follow from XSAVE).
        policy.set_feature(Xsaveopt, true);
        policy.set_feature(Xsavec, true);
        policy.sync_derived_leaves();
        policy
    }

    /// Keep the by-index copy of `leaf` in step after it changed to `regs` (`None`:
    /// removed). Indexed leaves are never answered from the copy.
    fn sync_fast(&mut self, leaf: u32, regs: Option<[u32; 4]>) {
        if leaf == 0 {
            self.max_basic = regs.map_or(0, |r| r[0]);
        }
        if let Some(slot) = self.fast.get_mut(leaf as usize) {
            if !is_indexed_leaf(leaf) {
                *slot = regs.unwrap_or([0; 4]);
            }
        }
    }

    fn position(&self, leaf: u32, subleaf: u32) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|e| (e.leaf, e.subleaf).cmp(&(leaf, subleaf)))
    }

    /// The subleaf key under which `leaf` stores `subleaf`.
    fn key(leaf: u32, subleaf: u32) -> u32 {
        if is_indexed_leaf(leaf) {
            subleaf
        } else {
            0
        }
    }

    /// Set (add or replace) one leaf. For leaves that do not depend on ECX the subleaf is
    /// ignored (stored as 0). Changing leaf 0, 0x4000_0000 or 0x8000_0000 EAX changes the
    /// range of leaves that exist.
    pub fn set_leaf(&mut self, leaf: u32, subleaf: u32, regs: [u32; 4]) {
        let subleaf = Self::key(leaf, subleaf);
        match self.position(leaf, subleaf) {
            Ok(i) => self.entries[i].regs = regs,
            Err(i) => self.entries.insert(
                i,
                CpuidEntry {
                    leaf,
                    subleaf,
                    regs,
                },
            ),
        }
        self.sync_fast(leaf, Some(regs));
    }

    /// The table's entry for `leaf`/`subleaf`, without the dynamic fields or out-of-range
    /// rules.
    pub fn leaf(&self, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        let subleaf = Self::key(leaf, subleaf);
        self.position(leaf, subleaf)
            .ok()
            .map(|i| self.entries[i].regs)
    }

    /// Remove one leaf; returns what it held.
    pub fn remove_leaf(&mut self, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        let subleaf = Self::key(leaf, subleaf);
        let i = self.position(leaf, subleaf).ok()?;
        let regs = self.entries.remove(i).regs;
        self.sync_fast(leaf, None);
        Some(regs)
    }

    /// Every entry, sorted by leaf and subleaf.
    pub fn entries(&self) -> &[CpuidEntry] {
        &self.entries
    }

    /// Whether the table reports `feature`. Dynamic bits (APIC, OSXSAVE) are answered as
    /// stored: APIC present in the model, OSXSAVE normally clear.
    pub fn has_feature(&self, feature: Feature) -> bool {
        let (leaf, subleaf, reg, bit) = feature.location();
        self.leaf(leaf, subleaf)
            .is_some_and(|regs| regs[reg as usize] & (1 << bit) != 0)
    }

    /// Turn `feature` on or off; a leaf not yet in the table is added as zeros first.
    pub fn set_feature(&mut self, feature: Feature, on: bool) {
        let (leaf, subleaf, reg, bit) = feature.location();
        let mut regs = self.leaf(leaf, subleaf).unwrap_or([0; 4]);
        if on {
            regs[reg as usize] |= 1 << bit;
        } else {
            regs[reg as usize] &= !(1 << bit);
        }
        self.set_leaf(leaf, subleaf, regs);
    }

    /// Describe the topology of a machine of `cpus` vCPUs with APIC IDs 0 to `cpus` - 1,
    /// as QEMU's `-smp N` describes a PC's: one package of `cpus` cores, one thread per
    /// core. Leaf 1: EBX[23:16], the addressable IDs in the package (`cpus` rounded up to
    /// a power of two), and EDX.HTT when there is more than one. Leaf 4 (each cache
    /// subleaf the model has): EAX[31:26], the core IDs in the package less one (at most
    /// 63, the field's width). Leaf 0xB, and leaf 0x1F when the model reaches it: level 0
    /// SMT (one logical processor, no ID bits), level 1 core (`cpus` logical processors,
    /// the core ID's bits as the shift to the package ID); EDX, the x2APIC ID, is each
    /// vCPU's own (filled in by lookup).
    pub fn set_topology(&mut self, cpus: u32) {
        let cpus = cpus.max(1);
        // Bits of the core ID: ceil(log2(cpus)).
        let core_bits = 32 - (cpus - 1).leading_zeros();
        let ids = (1u32 << core_bits).min(0xff);
        if let Some(mut regs) = self.leaf(1, 0) {
            regs[1] = (regs[1] & !0x00ff_0000) | (ids << 16);
            self.set_leaf(1, 0, regs);
            self.set_feature(Feature::Htt, cpus > 1);
        }
        let leaf4: Vec<u32> = self
            .entries
            .iter()
            .filter(|e| e.leaf == 4)
            .map(|e| e.subleaf)
            .collect();
        for subleaf in leaf4 {
            if let Some(mut regs) = self.leaf(4, subleaf) {
                if regs[0] & 0x1f != 0 {
                    // A 6-bit field: a package of more than 64 core IDs saturates it.
                    let core_ids = ((1u32 << core_bits) - 1).min(0x3f);
                    regs[0] = (regs[0] & 0x03ff_ffff) | (core_ids << 26);
                    self.set_leaf(4, subleaf, regs);
                }
            }
        }
        for leaf in [0xb, 0x1f] {
            if leaf > self.max_basic {
                continue;
            }
            self.set_leaf(leaf, 0, [0, 1, 0x100, 0]);
            self.set_leaf(leaf, 1, [core_bits, cpus, 0x201, 0]);
        }
    }

    /// Remove every feature the core does not implement itself
    /// ([`Feature::core_emulated`]) that the processor's CPUID, `host(leaf, subleaf)`,
    /// does not report (a leaf above the processor's maximum reports nothing): what a
    /// guest of a hardware backend executes natively must exist on the processor.
    pub fn keep_host_features(&mut self, host: impl Fn(u32, u32) -> [u32; 4]) {
        let max_basic = host(0, 0)[0];
        let max_extended = host(0x8000_0000, 0)[0];
        for feature in Feature::ALL {
            if feature.core_emulated() || !self.has_feature(feature) {
                continue;
            }
            let (leaf, subleaf, reg, bit) = feature.location();
            let in_range = if leaf >= 0x8000_0000 {
                leaf <= max_extended
            } else {
                leaf <= max_basic
            };
            if !in_range || host(leaf, subleaf)[reg as usize] & (1 << bit) == 0 {
                self.set_feature(feature, false);
            }
        }
    }

    /// Keep only the features `other` also reports (every [`Feature`]; the other fields
    /// of the leaves, identity and sizes, stay this policy's): the model of several
    /// backends is what all of them support.
    pub fn intersect_features(&mut self, other: &CpuidPolicy) {
        for feature in Feature::ALL {
            if self.has_feature(feature) && !other.has_feature(feature) {
                self.set_feature(feature, false);
            }
        }
    }

    /// The highest basic leaf (leaf 0 EAX).
    pub fn max_basic_leaf(&self) -> u32 {
        self.max_basic
    }

    /// The highest extended leaf (leaf 0x8000_0000 EAX), 0 if there are none.
    pub fn max_extended_leaf(&self) -> u32 {
        self.leaf(0x8000_0000, 0).map_or(0, |r| r[0])
    }

    /// The CR4 bits a guest of this CPU model may set (KVM's `__cr4_reserved_bits`, the
    /// complement): the bits every x86-64 processor has, and each bit whose feature the
    /// model reports. Writing any other bit raises #GP(0).
    pub fn cr4_allowed(&self) -> u64 {
        use crate::arch::*;
        let mut allowed = CR4_VME
            | CR4_PVI
            | CR4_TSD
            | CR4_DE
            | CR4_PSE
            | CR4_PAE
            | CR4_MCE
            | CR4_PGE
            | CR4_PCE
            | CR4_OSFXSR
            | CR4_OSXMMEXCPT;
        for (feature, bit) in [
            (Feature::Umip, CR4_UMIP),
            (Feature::La57, CR4_LA57),
            (Feature::Vmx, CR4_VMXE),
            (Feature::Fsgsbase, CR4_FSGSBASE),
            (Feature::Pcid, CR4_PCIDE),
            (Feature::Xsave, CR4_OSXSAVE),
            (Feature::Smep, CR4_SMEP),
            (Feature::Smap, CR4_SMAP),
            (Feature::Pku, CR4_PKE),
        ] {
            if self.has_feature(feature) {
                allowed |= bit;
            }
        }
        allowed
    }

    /// The XCR0 bits a guest may set with XSETBV: leaf 0xd subleaf 0 EDX:EAX, or none
    /// without XSAVE.
    pub fn xcr0_supported(&self) -> u64 {
        if !self.has_feature(Feature::Xsave) {
            return 0;
        }
        self.leaf(0xd, 0)
            .map_or(0, |r| u64::from(r[0]) | (u64::from(r[3]) << 32))
    }

    /// The linear-address width: 57 bits with LA57 in the model, 48 without.
    pub fn virt_addr_bits(&self) -> u32 {
        if self.has_feature(Feature::La57) {
            57
        } else {
            VIRT_ADDR_BITS
        }
    }

    /// Bring the leaves that describe features in more detail in step with the feature
    /// bits: leaf 0xd (the XSAVE state components x87 and SSE, their 576-byte area, and
    /// subleaf 1's XSAVEOPT and XSAVEC bits) exists only with XSAVE, and leaf
    /// 0x8000_0008 reports the linear-address width of [`CpuidPolicy::virt_addr_bits`].
    /// A feature that needs another is cleared without it (XSAVEOPT and XSAVEC need
    /// XSAVE; OSPKE and OSXSAVE are never stored: the vCPU's CR4 supplies them).
    pub fn sync_derived_leaves(&mut self) {
        let xsave = self.has_feature(Feature::Xsave);
        let sub1 = self.leaf(0xd, 1).map_or(0, |r| r[0]) & 0b11;
        if xsave {
            let size = crate::arch::XSAVE_LEGACY_AND_HEADER;
            let xcr0 = (crate::arch::XCR0_X87 | crate::arch::XCR0_SSE) as u32;
            self.set_leaf(0xd, 0, [xcr0, size, size, 0]);
            // Subleaf 1 EBX: the compacted area for XCR0 | IA32_XSS, with XSAVEC.
            let compacted = if sub1 & 2 != 0 { size } else { 0 };
            self.set_leaf(0xd, 1, [sub1, compacted, 0, 0]);
        } else {
            self.remove_leaf(0xd, 0);
            self.remove_leaf(0xd, 1);
        }
        self.set_feature(Feature::Osxsave, false);
        if self.leaf(7, 0).is_some() {
            self.set_feature(Feature::Ospke, false);
        }
        if let Some(mut regs) = self.leaf(0x8000_0008, 0) {
            regs[0] = (regs[0] & !0xff00) | (self.virt_addr_bits() << 8);
            self.set_leaf(0x8000_0008, 0, regs);
        }
    }

    /// The leaf that actually answers `leaf`: itself if it is within its range, otherwise
    /// the highest basic leaf (Intel's out-of-range behaviour).
    fn effective_leaf(&self, leaf: u32) -> u32 {
        let max_basic = self.max_basic_leaf();
        let class = match leaf {
            0x4000_0000..=0x4fff_ffff => leaf & 0xffff_ff00,
            0xc000_0000.. => 0xc000_0000,
            _ => leaf & 0x8000_0000,
        };
        let class_max = if class == 0 {
            Some(max_basic)
        } else {
            self.leaf(class, 0).map(|r| r[0])
        };
        match class_max {
            Some(max) if leaf <= max => leaf,
            _ => max_basic,
        }
    }

    /// The result of CPUID for `leaf`/`subleaf`, as [EAX, EBX, ECX, EDX]. `apic_id` fills
    /// the initial APIC ID fields; `osxsave` mirrors CR4.OSXSAVE into leaf 1 ECX;
    /// `apic_enabled` mirrors IA32_APIC_BASE.EN into leaf 1 EDX.APIC.
    #[inline]
    pub fn lookup(&self, leaf: u32, subleaf: u32, dynamic: &CpuidDynamic) -> [u32; 4] {
        self.lookup_with(leaf, subleaf, || *dynamic)
    }

    /// The registers of basic leaf `leaf` in the fast copy, when it is in range and does
    /// not depend on ECX; leaf 1's state-dependent fields are still to be filled.
    #[inline(always)]
    fn fast_leaf(&self, leaf: u32) -> Option<&[u32; 4]> {
        if leaf <= self.max_basic && leaf < FAST_LEAVES as u32 && FAST_MASK >> leaf & 1 != 0 {
            self.fast.get(leaf as usize)
        } else {
            None
        }
    }

    /// The registers of `leaf` for any subleaf and any vCPU state, in place, when the
    /// fast copy holds them: what [`CpuidPolicy::lookup_with`] returns for it. A CPUID
    /// exit reads them from here a register at a time; a copy of the four, stored as one
    /// 16-byte block and loaded back a register at a time, makes the loads wait for the
    /// store where the processor cannot forward its bytes to them.
    #[inline(always)]
    pub fn fixed_leaf(&self, leaf: u32) -> Option<&[u32; 4]> {
        if leaf == 1 {
            return None;
        }
        self.fast_leaf(leaf)
    }

    /// [`CpuidPolicy::lookup`] with the vCPU state read only for the leaves that report it
    /// (leaf 1, 0xb, 0x1f): a CPUID exit for any other leaf does not pay for reading CR4
    /// and IA32_APIC_BASE.
    #[inline(always)]
    pub fn lookup_with(
        &self,
        leaf: u32,
        subleaf: u32,
        dynamic: impl FnOnce() -> CpuidDynamic,
    ) -> [u32; 4] {
        // Fast path: an in-range basic leaf that does not depend on ECX (the copy holds
        // zeros for indexed leaves, so those are excluded here).
        if let Some(regs) = self.fast_leaf(leaf) {
            let mut regs = *regs;
            if leaf == 1 {
                Self::leaf1_dynamic(&mut regs, &dynamic());
            }
            return regs;
        }
        self.lookup_slow(leaf, subleaf, &dynamic())
    }

    /// Fill leaf 1's state-dependent fields.
    #[inline]
    fn leaf1_dynamic(regs: &mut [u32; 4], dynamic: &CpuidDynamic) {
        regs[1] = (regs[1] & 0x00ff_ffff) | ((dynamic.apic_id & 0xff) << 24);
        let (_, _, reg, bit) = Feature::Osxsave.location();
        regs[reg as usize] &= !(1 << bit);
        if dynamic.osxsave {
            regs[reg as usize] |= 1 << bit;
        }
        let (_, _, reg, bit) = Feature::Apic.location();
        if !dynamic.apic_enabled {
            regs[reg as usize] &= !(1 << bit);
        }
    }

    /// [`CpuidPolicy::lookup`] through the sorted table, for every leaf.
    #[inline(never)]
    fn lookup_slow(&self, leaf: u32, subleaf: u32, dynamic: &CpuidDynamic) -> [u32; 4] {
        let leaf = self.effective_leaf(leaf);
        let entry = self.leaf(leaf, subleaf);
        let mut regs = entry.unwrap_or([0; 4]);
        match leaf {
            1 => Self::leaf1_dynamic(&mut regs, dynamic),
            7 if subleaf == 0 => {
                let (_, _, reg, bit) = Feature::Ospke.location();
                regs[reg as usize] &= !(1 << bit);
                if dynamic.pke {
                    regs[reg as usize] |= 1 << bit;
                }
            }
            0xb | 0x1f => {
                if entry.is_none() {
                    // An invalid level still echoes the level number (SDM 2A, leaf 0xb).
                    regs[2] = subleaf & 0xff;
                }
                regs[3] = dynamic.apic_id;
            }
            _ => {}
        }
        regs
    }

    /// A [`raw_cpuid::CpuIdReader`] over this policy for the given vCPU state, to decode it
    /// with `raw_cpuid::CpuId::with_cpuid_reader`.
    pub fn reader(&self, dynamic: CpuidDynamic) -> PolicyReader<'_> {
        PolicyReader {
            policy: self,
            dynamic,
        }
    }
}

/// Reads a [`CpuidPolicy`] as if it were the CPU, for `raw-cpuid`'s decoders.
#[derive(Clone, Copy, Debug)]
pub struct PolicyReader<'a> {
    policy: &'a CpuidPolicy,
    dynamic: CpuidDynamic,
}

impl raw_cpuid::CpuIdReader for PolicyReader<'_> {
    fn cpuid2(&self, eax: u32, ecx: u32) -> raw_cpuid::CpuIdResult {
        let [eax, ebx, ecx, edx] = self.policy.lookup(eax, ecx, &self.dynamic);
        raw_cpuid::CpuIdResult { eax, ebx, ecx, edx }
    }
}

/// The parts of CPUID that depend on the vCPU's current state.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuidDynamic {
    /// The vCPU's APIC ID.
    pub apic_id: u32,
    /// CR4.OSXSAVE.
    pub osxsave: bool,
    /// IA32_APIC_BASE.EN.
    pub apic_enabled: bool,
    /// CR4.PKE, mirrored into leaf 7 ECX.OSPKE.
    pub pke: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use raw_cpuid::{CpuId, Hypervisor, TopologyType};

    fn dynamic() -> CpuidDynamic {
        CpuidDynamic {
            apic_id: 0,
            osxsave: false,
            apic_enabled: true,
            pke: false,
        }
    }

    #[test]
    fn vendor_signature_brand() {
        let policy = CpuidPolicy::emulator();
        let cpuid = CpuId::with_cpuid_reader(policy.reader(dynamic()));
        assert_eq!(cpuid.get_vendor_info().unwrap().as_str(), "GenuineIntel");
        let fi = cpuid.get_feature_info().unwrap();
        assert_eq!(fi.family_id(), 6);
        assert_eq!(fi.model_id(), 0x9e);
        assert_eq!(fi.stepping_id(), 0xa);
        assert_eq!(fi.cflush_cache_line_size(), 8);
        assert_eq!(fi.max_logical_processor_ids(), 1);
        assert_eq!(
            cpuid.get_processor_brand_string().unwrap().as_str(),
            BRAND_STRING
        );
        let hv = cpuid.get_hypervisor_info().unwrap();
        let sig = |r: u32| r.to_le_bytes();
        match hv.identify() {
            Hypervisor::Unknown(ebx, ecx, edx) => {
                let mut bytes = [0u8; 12];
                bytes[0..4].copy_from_slice(&sig(ebx));
                bytes[4..8].copy_from_slice(&sig(ecx));
                bytes[8..12].copy_from_slice(&sig(edx));
                assert_eq!(&bytes, &HYPERVISOR_SIGNATURE);
            }
            other => panic!("unexpected hypervisor {other:?}"),
        }
        assert_eq!(hv.tsc_frequency(), Some(1_000_000));
        assert_eq!(hv.apic_frequency(), Some(1_000_000));
    }

    #[test]
    fn leaf1_features() {
        let policy = CpuidPolicy::emulator();
        let cpuid = CpuId::with_cpuid_reader(policy.reader(dynamic()));
        let fi = cpuid.get_feature_info().unwrap();
        for (name, have) in [
            ("tsc", fi.has_tsc()),
            ("msr", fi.has_msr()),
            ("pae", fi.has_pae()),
            ("cx8", fi.has_cmpxchg8b()),
            ("apic", fi.has_apic()),
            ("sep", fi.has_sysenter_sysexit()),
            ("pge", fi.has_pge()),
            ("cmov", fi.has_cmov()),
            ("pat", fi.has_pat()),
            ("pse", fi.has_pse()),
            ("clflush", fi.has_clflush()),
            ("mtrr", fi.has_mtrr()),
            ("x2apic", fi.has_x2apic()),
            ("tsc-deadline", fi.has_tsc_deadline()),
            ("cx16", fi.has_cmpxchg16b()),
            ("popcnt", fi.has_popcnt()),
            ("movbe", fi.has_movbe()),
            ("hypervisor", fi.has_hypervisor()),
            ("fpu", fi.has_fpu()),
            ("fxsr", fi.has_fxsave_fxstor()),
            ("mmx", fi.has_mmx()),
            ("sse", fi.has_sse()),
            ("sse2", fi.has_sse2()),
            ("sse3", fi.has_sse3()),
            ("ssse3", fi.has_ssse3()),
            ("sse4.1", fi.has_sse41()),
            ("sse4.2", fi.has_sse42()),
            ("xsave", fi.has_xsave()),
        ] {
            assert!(have, "{name}");
        }
        for (name, have) in [
            ("oxsave", fi.has_oxsave()),
            ("avx", fi.has_avx()),
            ("mce", fi.has_mce()),
            ("mca", fi.has_mca()),
            ("htt", fi.has_htt()),
            ("vmx", fi.has_vmx()),
            ("monitor", fi.has_monitor_mwait()),
        ] {
            assert!(!have, "{name}");
        }
    }

    #[test]
    fn dynamic_fields() {
        let policy = CpuidPolicy::emulator();
        let state = CpuidDynamic {
            apic_id: 0x1234_5605,
            osxsave: true,
            apic_enabled: false,
            pke: true,
        };
        let cpuid = CpuId::with_cpuid_reader(policy.reader(state));
        let fi = cpuid.get_feature_info().unwrap();
        assert_eq!(fi.initial_local_apic_id(), 0x05);
        assert!(fi.has_oxsave());
        assert!(!fi.has_apic());
        let levels: alloc::vec::Vec<_> = cpuid.get_extended_topology_info().unwrap().collect();
        assert!(levels.iter().all(|l| l.x2apic_id() == 0x1234_5605));
        // Static answers are unchanged by the dynamic state.
        assert!(policy.has_feature(Feature::Apic));
        assert!(!policy.has_feature(Feature::Osxsave));
    }

    /// N vCPUs are one package of N cores (QEMU's `-smp N`): leaf 1's addressable IDs and
    /// HTT, leaf 4's core IDs, leaf 0xB's (and 0x1F's) core level, each vCPU's own
    /// x2APIC ID, all agreeing with N.
    #[test]
    fn topology_of_n_cores() {
        for (cpus, bits) in [(2u32, 1u32), (4, 2), (6, 3), (64, 6), (255, 8)] {
            let mut policy = CpuidPolicy::emulator();
            // A model that describes its caches in leaf 4 (the emulator's does not): an
            // L1 data cache, and the terminating null subleaf.
            policy.set_leaf(4, 0, [0x121, 0x01c0_003f, 0x3f, 0]);
            policy.set_leaf(4, 1, [0, 0, 0, 0]);
            policy.set_topology(cpus);
            let at = |leaf, subleaf, apic_id| {
                let d = CpuidDynamic {
                    apic_id,
                    ..dynamic()
                };
                policy.lookup(leaf, subleaf, &d)
            };
            let leaf1 = at(1, 0, cpus - 1);
            assert_eq!(leaf1[1] >> 24, cpus - 1, "{cpus}: leaf 1 APIC ID");
            assert_eq!((leaf1[1] >> 16) & 0xff, (1 << bits).min(255), "{cpus}: IDs");
            assert_ne!(leaf1[3] & (1 << 28), 0, "{cpus}: HTT");
            let leaf4 = at(4, 0, 0);
            assert_eq!(
                leaf4[0] >> 26,
                ((1 << bits) - 1).min(63),
                "{cpus}: leaf 4 cores"
            );
            assert_eq!(
                leaf4[0] & 0x03ff_ffff,
                0x121,
                "{cpus}: the cache stays described"
            );
            assert_eq!(at(4, 1, 0), [0; 4], "{cpus}: the null subleaf stays null");
            for leaf in [0xb, 0x1f] {
                if leaf > policy.max_basic_leaf() {
                    continue;
                }
                let smt = at(leaf, 0, 3);
                assert_eq!(
                    (smt[0] & 0x1f, smt[1] & 0xffff),
                    (0, 1),
                    "{cpus}: SMT level"
                );
                assert_eq!((smt[2] >> 8) & 0xff, 1, "{cpus}: SMT type");
                let core = at(leaf, 1, 3);
                assert_eq!(core[0] & 0x1f, bits, "{cpus}: shift to the package ID");
                assert_eq!(core[1] & 0xffff, cpus, "{cpus}: cores");
                assert_eq!((core[2] >> 8) & 0xff, 2, "{cpus}: core type");
                assert_eq!(core[3], 3, "{cpus}: the vCPU's own x2APIC ID");
            }
        }
    }

    #[test]
    fn topology_one_thread_one_core() {
        let policy = CpuidPolicy::emulator();
        let cpuid = CpuId::with_cpuid_reader(policy.reader(dynamic()));
        let levels: alloc::vec::Vec<_> = cpuid.get_extended_topology_info().unwrap().collect();
        assert_eq!(levels.len(), 2);
        assert_eq!(levels[0].level_type(), TopologyType::SMT);
        assert_eq!(levels[0].processors(), 1);
        assert_eq!(levels[0].shift_right_for_next_apic_id(), 0);
        assert_eq!(levels[1].level_type(), TopologyType::Core);
        assert_eq!(levels[1].processors(), 1);
        assert_eq!(levels[1].level_number(), 1);
        // The invalid level echoes the subleaf.
        assert_eq!(policy.lookup(0xb, 7, &dynamic()), [0, 0, 7, 0]);
    }

    #[test]
    fn extended_features_and_sizes() {
        let policy = CpuidPolicy::emulator();
        let cpuid = CpuId::with_cpuid_reader(policy.reader(dynamic()));
        let ext = cpuid.get_extended_feature_info().unwrap();
        assert!(ext.has_bmi1() && ext.has_bmi2() && ext.has_adx() && ext.has_tsc_adjust_msr());
        assert!(ext.has_fsgsbase() && ext.has_smep() && ext.has_smap());
        assert!(ext.has_invpcid() && ext.has_umip() && ext.has_pku() && ext.has_la57());
        assert!(ext.has_rdpid() && !ext.has_rep_movsb_stosb() && !ext.has_avx2());
        // OSPKE mirrors CR4.PKE.
        assert!(!ext.has_ospke());
        let e1 = cpuid
            .get_extended_processor_and_feature_identifiers()
            .unwrap();
        assert!(e1.has_lahf_sahf() && e1.has_lzcnt() && e1.has_syscall_sysret());
        assert!(e1.has_execute_disable() && e1.has_1gib_pages() && e1.has_rdtscp());
        assert!(e1.has_64bit_mode());
        assert!(!e1.has_prefetchw());
        let apm = cpuid.get_advanced_power_mgmt_info().unwrap();
        assert!(apm.has_invariant_tsc());
        let sizes = cpuid.get_processor_capacity_feature_info().unwrap();
        assert_eq!(u32::from(sizes.physical_address_bits()), PHYS_ADDR_BITS);
        assert_eq!(sizes.linear_address_bits(), 57);
        assert!(cpuid.get_thermal_power_info().unwrap().has_arat());
        let tsc = cpuid.get_tsc_info().unwrap();
        assert_eq!(tsc.tsc_frequency(), Some(1_000_000_000));
        let freq = cpuid.get_processor_frequency_info().unwrap();
        assert_eq!(freq.processor_base_frequency(), 1000);
    }

    #[test]
    fn out_of_range_leaves_return_highest_basic() {
        let policy = CpuidPolicy::emulator();
        let d = dynamic();
        let highest = policy.lookup(0x16, 0, &d);
        assert_eq!(highest, [1000, 1000, 100, 0]);
        assert_eq!(policy.lookup(0x17, 0, &d), highest);
        assert_eq!(policy.lookup(0x3fff_ffff, 3, &d), highest);
        assert_eq!(policy.lookup(0x4000_0011, 0, &d), highest);
        assert_eq!(policy.lookup(0x4000_0100, 0, &d), highest);
        assert_eq!(policy.lookup(0x8000_0009, 0, &d), highest);
        assert_eq!(policy.lookup(0xc000_0000, 0, &d), highest);
        assert_eq!(policy.lookup(0xffff_ffff, 0, &d), highest);
        // In range but not filled in: zeros.
        assert_eq!(policy.lookup(0xd, 2, &d), [0; 4]);
        assert_eq!(policy.lookup(0x4000_0001, 0, &d), [0; 4]);
        assert_eq!(policy.lookup(0x8000_0006, 0, &d), [0; 4]);
        // Non-indexed leaves ignore the subleaf; indexed ones do not.
        assert_eq!(
            policy.lookup(0x8000_0008, 5, &d),
            policy.lookup(0x8000_0008, 0, &d)
        );
        assert_eq!(policy.lookup(7, 1, &d), [0; 4]);
        assert_ne!(policy.lookup(7, 0, &d), [0; 4]);
        // Leaf 0xd: x87 and SSE in 576 bytes, XSAVEOPT and XSAVEC in subleaf 1.
        assert_eq!(policy.lookup(0xd, 0, &d), [3, 576, 576, 0]);
        assert_eq!(policy.lookup(0xd, 1, &d), [3, 576, 0, 0]);
    }

    #[test]
    fn address_width_matches_the_page_walker() {
        // CPUID 0x8000_0008, IA32_APIC_BASE, the MTRRs and the walker's reserved bits must
        // all agree on MAXPHYADDR.
        assert_eq!(PHYS_ADDR_BITS, crate::mmu::walk::MAXPHYADDR);
        let eax = CpuidPolicy::emulator().lookup(0x8000_0008, 0, &dynamic())[0];
        assert_eq!(eax & 0xff, PHYS_ADDR_BITS);
    }

    #[test]
    fn editable_table() {
        let mut policy = CpuidPolicy::emulator();
        assert!(policy.has_feature(Feature::Nx));
        policy.set_feature(Feature::Nx, false);
        assert!(!policy.has_feature(Feature::Nx));
        policy.set_feature(Feature::Sse2, true);
        assert!(policy.has_feature(Feature::Sse2));
        // Lowering the maximum basic leaf hides the leaves above it.
        let mut low = policy.leaf(0, 0).unwrap();
        low[0] = 0xb;
        policy.set_leaf(0, 0, low);
        assert_eq!(policy.max_basic_leaf(), 0xb);
        let d = dynamic();
        assert_eq!(policy.lookup(0x15, 0, &d), policy.lookup(0xb, 0, &d));
        // Removing the extended range sends every extended leaf to the basic maximum.
        assert!(policy.remove_leaf(0x8000_0000, 0).is_some());
        assert_eq!(policy.max_extended_leaf(), 0);
        assert_eq!(policy.lookup(0x8000_0001, 0, &d), policy.lookup(0xb, 0, &d));
        // Subleaves of non-indexed leaves collapse onto subleaf 0.
        policy.set_leaf(0x16, 9, [1, 2, 3, 4]);
        assert_eq!(policy.leaf(0x16, 0), Some([1, 2, 3, 4]));
        let keys: alloc::vec::Vec<_> = policy
            .entries()
            .iter()
            .map(|e| (e.leaf, e.subleaf))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(keys, sorted);
        assert!(CpuidPolicy::empty().lookup(1, 0, &d)[2] == 0);
    }

    /// The by-index fast path answers exactly what the sorted table answers, through
    /// edits that add, change and remove leaves (leaf 0 included).
    #[test]
    fn fast_path_matches_table() {
        let check = |policy: &CpuidPolicy| {
            for osxsave in [false, true] {
                let d = CpuidDynamic {
                    apic_id: 3,
                    osxsave,
                    apic_enabled: !osxsave,
                    pke: osxsave,
                };
                for leaf in (0..40).chain([0x4000_0000, 0x8000_0000, 0x8000_0001]) {
                    for subleaf in 0..3 {
                        assert_eq!(
                            policy.lookup(leaf, subleaf, &d),
                            policy.lookup_slow(leaf, subleaf, &d),
                            "leaf {leaf:#x}.{subleaf}"
                        );
                    }
                }
            }
        };
        let mut policy = CpuidPolicy::emulator();
        check(&policy);
        policy.set_leaf(7, 1, [5, 6, 7, 8]);
        policy.set_leaf(3, 0, [1, 2, 3, 4]);
        policy.set_leaf(0x1c, 0, [9, 9, 9, 9]);
        check(&policy);
        let mut high = policy.leaf(0, 0).unwrap();
        high[0] = 0x30;
        policy.set_leaf(0, 0, high);
        check(&policy);
        assert_eq!(policy.remove_leaf(3, 0), Some([1, 2, 3, 4]));
        check(&policy);
        assert!(policy.remove_leaf(0, 0).is_some());
        assert_eq!(policy.max_basic_leaf(), 0);
        check(&policy);
        check(&CpuidPolicy::empty());
    }
}

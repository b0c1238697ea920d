//! CPUID of the test machines' SVM CPU models, recorded on real runs of the image (it
//! prints the leaves it reads when it picks its backend), as [`CpuidRead`] sources for
//! tests. Only the leaves [`SvmCaps::read`] and the backend choice read are kept.

use super::*;

/// A recorded CPUID: `(leaf, [EAX, EBX, ECX, EDX])` for subleaf 0; absent leaves read
/// as zeros, as a leaf above the maximum does on AMD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidFixture {
    /// The model's name.
    pub name: &'static str,
    /// The leaves.
    pub leaves: &'static [(u32, [u32; 4])],
}

impl CpuidRead for CpuidFixture {
    fn cpuid(&self, leaf: u32, _subleaf: u32) -> [u32; 4] {
        self.leaves
            .iter()
            .find(|(l, _)| *l == leaf)
            .map_or([0; 4], |(_, regs)| *regs)
    }
}

/// "AuthenticAMD" as CPUID leaf 0 returns it in EBX, ECX, EDX.
const AMD: [u32; 3] = [0x6874_7541, 0x444d_4163, 0x6974_6e65];

/// Bochs 2.7 `ryzen`: nested paging, LBR virtualization, SVM lock, NRIP save,
/// flush-by-ASID, pause filter; 0x8000 ASIDs.
pub const BOCHS_RYZEN: CpuidFixture = CpuidFixture {
    name: "bochs ryzen",
    leaves: &[
        (0, [0xd, AMD[0], AMD[1], AMD[2]]),
        (1, [0x0080_0f11, 0x0000_0800, 0x7ed8_320b, 0x178b_fbff]),
        (7, [0, 0x209c_01a9, 0, 0]),
        (0x8000_0000, [0x8000_001f, AMD[0], AMD[1], AMD[2]]),
        (0x8000_0001, [0x0080_0f11, 0, 0x3581_ffff, 0x2fd3_fbff]),
        (0x8000_0008, [0x0000_3030, 0, 0, 0]),
        (0x8000_000a, [1, 0x8000, 0, 0x44f]),
    ],
};

/// QEMU 7.2 TCG `-cpu qemu64,+svm,+npt`: nested paging only (no NRIP save, no decode
/// assists, no flush-by-ASID); 16 ASIDs.
pub const QEMU_QEMU64_SVM_NPT: CpuidFixture = CpuidFixture {
    name: "qemu qemu64,+svm,+npt",
    leaves: &[
        (0, [0xd, AMD[0], AMD[1], AMD[2]]),
        (1, [0x0000_0663, 0x0000_0800, 0x8020_2001, 0x0783_fbfd]),
        (0x8000_0000, [0x8000_000a, AMD[0], AMD[1], AMD[2]]),
        (0x8000_0001, [0x0000_0663, 0, 0x0000_0005, 0x2193_fbfd]),
        (0x8000_0008, [0x0000_3028, 0, 0, 0]),
        (0x8000_000a, [1, 0x10, 0, 0x1]),
    ],
};

/// Bochs 2.7 `turion64_tyler`: SVM without nested paging.
pub const BOCHS_TURION64_TYLER: CpuidFixture = CpuidFixture {
    name: "bochs turion64_tyler",
    leaves: &[
        (0, [0x1, AMD[0], AMD[1], AMD[2]]),
        (1, [0x0006_0f82, 0x0000_0800, 0x0000_2001, 0x178b_fbff]),
        (0x8000_0000, [0x8000_0018, AMD[0], AMD[1], AMD[2]]),
        (0x8000_0001, [0x0006_0f82, 0, 0x0000_011f, 0xebd3_fbff]),
        (0x8000_0008, [0x0000_3028, 0, 0, 0]),
        (0x8000_000a, [1, 0x40, 0, 0x0]),
    ],
};

/// Not a recorded machine: a processor with every SVM feature this backend uses that
/// neither test machine has (decode assists, VMCB clean bits) besides NRIP save and
/// flush-by-ASID, as Zen processors report them (CPUID 0x8000000A EDX bits 0-7, 10, 12,
/// 13, 15, 16), 1 GiB pages and RDTSCP; for the tests of those paths.
pub const ZEN_FEATURES: CpuidFixture = CpuidFixture {
    name: "synthetic zen-like",
    leaves: &[
        (0, [0x10, AMD[0], AMD[1], AMD[2]]),
        (1, [0x0080_0f82, 0x0000_0800, 0x7ed8_320b, 0x178b_fbff]),
        (7, [0, 0x209c_01a9, 0, 0]),
        (0x8000_0000, [0x8000_001f, AMD[0], AMD[1], AMD[2]]),
        (0x8000_0001, [0x0080_0f82, 0, 0x35c1_33ff, 0x2fd3_fbff]),
        (0x8000_0008, [0x0000_3030, 0, 0, 0]),
        (0x8000_000a, [1, 0x8000, 0, 0x0001_b4ff]),
    ],
};

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
/// flush-by-ASID, pause filter (EDX 0x44f); 0x8000 ASIDs; 40 physical-address bits.
pub const BOCHS_RYZEN: CpuidFixture = CpuidFixture {
    name: "bochs ryzen",
    leaves: &[
        (0, [0xd, AMD[0], AMD[1], AMD[2]]),
        (1, [0x0080_0f11, 0x0001_0800, 0x76d8_320b, 0x178b_fbff]),
        (7, [0, 0x209c_01a9, 0, 0]),
        (0x8000_0000, [0x8000_001f, AMD[0], AMD[1], AMD[2]]),
        (
            0x8000_0001,
            [0x0080_0f11, 0x2000_0000, 0x35c2_23ff, 0x2fd3_fbff],
        ),
        (0x8000_0008, [0x0000_3028, 1, 0, 0]),
        (0x8000_000a, [1, 0x8000, 0, 0x44f]),
    ],
};

/// QEMU 7.2 TCG `-cpu max`: nested paging, virtual GIF and the VMRUN address check
/// (EDX 0x10010001), no NRIP save, decode assists or flush-by-ASID; 16 ASIDs.
pub const QEMU_TCG_MAX: CpuidFixture = CpuidFixture {
    name: "qemu tcg max",
    leaves: &[
        (0, [0xd, AMD[0], AMD[1], AMD[2]]),
        (1, [0x0006_0fb1, 0x0000_0800, 0xf6d8_320b, 0x0fcb_fbfd]),
        (7, [0, 0x01d8_43a9, 0x8001_020c, 0]),
        (0x8000_0000, [0x8000_000a, AMD[0], AMD[1], AMD[2]]),
        (0x8000_0001, [0x0006_0fb1, 0, 0x75, 0xedd3_fbfd]),
        (0x8000_0008, [0x0000_3928, 0, 0, 0]),
        (0x8000_000a, [1, 0x10, 0, 0x1001_0001]),
    ],
};

/// Bochs 2.7 `turion64_tyler`: SVM without nested paging (EDX 0x2: LBR virtualization
/// alone); 0x40 ASIDs.
pub const BOCHS_TURION64_TYLER: CpuidFixture = CpuidFixture {
    name: "bochs turion64_tyler",
    leaves: &[
        (0, [0x1, AMD[0], AMD[1], AMD[2]]),
        (1, [0x0006_0f82, 0x0001_0800, 0x0000_2001, 0x178b_fbff]),
        (0x8000_0000, [0x8000_0018, AMD[0], AMD[1], AMD[2]]),
        (0x8000_0001, [0x0006_0f82, 0x59f, 0x11f, 0xebd3_fbff]),
        (0x8000_0008, [0x0000_3028, 0, 0, 0]),
        (0x8000_000a, [1, 0x40, 0, 0x2]),
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

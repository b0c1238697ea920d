//! What the processor offers for SVM, from CPUID (APM 3 appendix E): the SVM bit of
//! leaf 0x80000001 (ECX bit 2), and leaf 0x8000000A with the SVM revision (EAX 7:0),
//! the number of ASIDs (EBX) and the feature bits (EDX: nested paging, NRIP save,
//! flush-by-ASID, decode assists, VMCB clean bits, pause filter, ...).
//!
//! [`SvmCaps::read`] takes any [`CpuidRead`]: the processor ([`HardwareCpuid`]) or a
//! recorded model ([`fixtures`]).

pub mod fixtures;

use core::fmt;

/// A CPUID source.
pub trait CpuidRead {
    /// CPUID leaf `leaf`, subleaf `subleaf`: [EAX, EBX, ECX, EDX].
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
}

/// The processor this code runs on.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, Default)]
pub struct HardwareCpuid;

#[cfg(target_arch = "x86_64")]
impl CpuidRead for HardwareCpuid {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        // CPUID is always available in 64-bit mode.
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }
}

/// CPUID 0x8000000A EDX: the SVM features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvmFeatures(pub u32);

impl SvmFeatures {
    /// Bit 0: nested paging.
    pub fn npt(self) -> bool {
        self.0 & (1 << 0) != 0
    }
    /// Bit 1: LBR virtualization.
    pub fn lbr_virtualization(self) -> bool {
        self.0 & (1 << 1) != 0
    }
    /// Bit 2: SVM lock (VM_CR.LOCK and SVM_KEY).
    pub fn svm_lock(self) -> bool {
        self.0 & (1 << 2) != 0
    }
    /// Bit 3: NRIP save: instruction intercepts store the next RIP in the VMCB.
    pub fn nrip_save(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// Bit 4: TSC rate control.
    pub fn tsc_rate(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// Bit 5: VMCB clean bits.
    pub fn vmcb_clean(self) -> bool {
        self.0 & (1 << 5) != 0
    }
    /// Bit 6: flush by ASID (TLB control 3 and 7).
    pub fn flush_by_asid(self) -> bool {
        self.0 & (1 << 6) != 0
    }
    /// Bit 7: decode assists (the fetched instruction bytes, CR/DR/INVLPG operands).
    pub fn decode_assists(self) -> bool {
        self.0 & (1 << 7) != 0
    }
    /// Bit 10: PAUSE intercept filter.
    pub fn pause_filter(self) -> bool {
        self.0 & (1 << 10) != 0
    }
    /// Bit 12: PAUSE filter threshold.
    pub fn pause_filter_threshold(self) -> bool {
        self.0 & (1 << 12) != 0
    }
    /// Bit 13: AVIC.
    pub fn avic(self) -> bool {
        self.0 & (1 << 13) != 0
    }
    /// Bit 15: virtualized VMSAVE/VMLOAD.
    pub fn vmsave_virtualization(self) -> bool {
        self.0 & (1 << 15) != 0
    }
    /// Bit 16: virtual GIF.
    pub fn vgif(self) -> bool {
        self.0 & (1 << 16) != 0
    }
}

/// Why the capabilities could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapsError {
    /// CPUID has no leaf 0x8000000A (max extended leaf given).
    NoSvmLeaf(u32),
    /// CPUID 0x80000001 ECX bit 2 (SVM) is clear.
    NoSvm,
    /// The processor reports fewer than two ASIDs: ASID 0 is the host's, so a guest
    /// has none.
    NoAsids(u32),
}

impl fmt::Display for CapsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapsError::NoSvmLeaf(max) => write!(
                f,
                "CPUID has no SVM leaf 0x8000000A (the highest extended leaf is {max:#x})"
            ),
            CapsError::NoSvm => {
                f.write_str("the CPU does not report SVM (CPUID 0x80000001:ECX bit 2)")
            }
            CapsError::NoAsids(n) => write!(
                f,
                "CPUID 0x8000000A reports {n} ASIDs: a guest needs one besides the host's ASID 0"
            ),
        }
    }
}

/// The processor's SVM capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvmCaps {
    /// The SVM revision (CPUID 0x8000000A EAX 7:0).
    pub revision: u8,
    /// How many ASIDs (CPUID 0x8000000A EBX); ASID 0 is the host's.
    pub asids: u32,
    /// The feature bits.
    pub features: SvmFeatures,
    /// 1 GiB pages (CPUID 0x80000001 EDX bit 26), for the nested page tables.
    pub pages_1g: bool,
    /// RDTSCP and IA32_TSC_AUX (CPUID 0x80000001 EDX bit 27).
    pub rdtscp: bool,
    /// Physical-address width (CPUID 0x80000008 EAX 7:0; 36 without the leaf).
    pub phys_bits: u8,
    /// 5-level paging (CPUID 7.0 ECX bit 16): CR4.LA57 is defined.
    pub la57: bool,
    /// CR4 bits the processor defines (from the CPUID feature bits), for the VMRUN
    /// consistency check of CR4.
    pub cr4_valid: u64,
    /// The feature leaves, for the CPU model the backend can offer a guest.
    pub feature_leaves: FeatureLeaves,
}

/// The processor's CPUID leaves that report the instruction-set and paging features a
/// guest runs natively: leaf 1, leaf 7 subleaf 0 and leaf 0x80000001, with the highest
/// basic and extended leaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureLeaves {
    /// The highest basic leaf (leaf 0 EAX).
    pub max_basic: u32,
    /// The highest extended leaf (leaf 0x80000000 EAX).
    pub max_extended: u32,
    /// Leaf 1.
    pub leaf1: [u32; 4],
    /// Leaf 7 subleaf 0.
    pub leaf7: [u32; 4],
    /// Leaf 0x80000001.
    pub ext1: [u32; 4],
}

impl FeatureLeaves {
    /// CPUID as far as these leaves tell: the recorded ones, the two maxima, and zeros
    /// for every other leaf (features reported elsewhere count as absent).
    pub fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        match (leaf, subleaf) {
            (0, _) => [self.max_basic, 0, 0, 0],
            (1, _) => self.leaf1,
            (7, 0) => self.leaf7,
            (0x8000_0000, _) => [self.max_extended, 0, 0, 0],
            (0x8000_0001, _) => self.ext1,
            _ => [0; 4],
        }
    }
}

/// CPUID vendor string of AMD processors (EBX, EDX, ECX of leaf 0).
pub const AMD_VENDOR: [u8; 12] = *b"AuthenticAMD";

/// The vendor string of `cpu` (leaf 0: EBX, EDX, ECX).
pub fn vendor(cpu: &impl CpuidRead) -> [u8; 12] {
    let [_, b, c, d] = cpu.cpuid(0, 0);
    let mut v = [0u8; 12];
    v[0..4].copy_from_slice(&b.to_le_bytes());
    v[4..8].copy_from_slice(&d.to_le_bytes());
    v[8..12].copy_from_slice(&c.to_le_bytes());
    v
}

/// Whether CPUID reports SVM (leaf 0x80000001 ECX bit 2).
pub fn has_svm(cpu: &impl CpuidRead) -> bool {
    cpu.cpuid(0x8000_0000, 0)[0] >= 0x8000_0001 && cpu.cpuid(0x8000_0001, 0)[2] & (1 << 2) != 0
}

impl SvmCaps {
    /// Read the capabilities from `cpu`.
    pub fn read(cpu: &impl CpuidRead) -> Result<SvmCaps, CapsError> {
        if !has_svm(cpu) {
            return Err(CapsError::NoSvm);
        }
        let max_ext = cpu.cpuid(0x8000_0000, 0)[0];
        if max_ext < 0x8000_000a {
            return Err(CapsError::NoSvmLeaf(max_ext));
        }
        let [eax, asids, _, edx] = cpu.cpuid(0x8000_000a, 0);
        if asids < 2 {
            return Err(CapsError::NoAsids(asids));
        }
        let ext1_edx = cpu.cpuid(0x8000_0001, 0)[3];
        let phys_bits = if max_ext >= 0x8000_0008 {
            match cpu.cpuid(0x8000_0008, 0)[0] as u8 {
                0 => 36,
                bits => bits.min(52),
            }
        } else {
            36
        };
        let max_basic = cpu.cpuid(0, 0)[0];
        let leaf1 = cpu.cpuid(1, 0);
        let leaf7 = if max_basic >= 7 {
            cpu.cpuid(7, 0)
        } else {
            [0; 4]
        };
        let la57 = leaf7[2] & (1 << 16) != 0;
        Ok(SvmCaps {
            revision: eax as u8,
            asids,
            features: SvmFeatures(edx),
            pages_1g: ext1_edx & (1 << 26) != 0,
            rdtscp: ext1_edx & (1 << 27) != 0,
            phys_bits,
            la57,
            cr4_valid: cr4_valid(leaf1, leaf7),
            feature_leaves: FeatureLeaves {
                max_basic,
                max_extended: max_ext,
                leaf1,
                leaf7,
                ext1: cpu.cpuid(0x8000_0001, 0),
            },
        })
    }
}

/// The CR4 bits a processor with CPUID leaves 1 and 7.0 (`leaf1`, `leaf7`) defines:
/// VME..OSXMMEXCPT always (every SVM processor has them), then UMIP, LA57, FSGSBASE,
/// PCIDE, OSXSAVE, SMEP, SMAP, PKE and CET as their feature bits say. AMD has no VMXE or
/// SMXE.
fn cr4_valid(leaf1: [u32; 4], leaf7: [u32; 4]) -> u64 {
    let mut valid = 0x7ff; // VME PVI TSD DE PSE PAE MCE PGE PCE OSFXSR OSXMMEXCPT
    let bit = |reg: u32, n: u32| reg & (1 << n) != 0;
    for (present, cr4_bit) in [
        (bit(leaf7[2], 2), 11),  // UMIP
        (bit(leaf7[2], 16), 12), // LA57
        (bit(leaf7[1], 0), 16),  // FSGSBASE
        (bit(leaf1[2], 17), 17), // PCID
        (bit(leaf1[2], 26), 18), // XSAVE
        (bit(leaf7[1], 7), 20),  // SMEP
        (bit(leaf7[1], 20), 21), // SMAP
        (bit(leaf7[2], 3), 22),  // PKU
        (bit(leaf7[2], 7), 23),  // CET shadow stacks
    ] {
        if present {
            valid |= 1u64 << cr4_bit;
        }
    }
    valid
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn bochs_ryzen() {
        let caps = SvmCaps::read(&BOCHS_RYZEN).unwrap();
        assert_eq!(caps.asids, 0x8000);
        let f = caps.features;
        assert!(f.npt() && f.lbr_virtualization() && f.svm_lock() && f.nrip_save());
        assert!(f.flush_by_asid() && f.pause_filter());
        assert!(!f.decode_assists() && !f.vmcb_clean());
        assert_eq!(caps.phys_bits, 40);
        assert!(caps.pages_1g && caps.rdtscp);
        assert_eq!(vendor(&BOCHS_RYZEN), AMD_VENDOR);
    }

    #[test]
    fn qemu_has_nested_paging_without_nrip_save() {
        let caps = SvmCaps::read(&QEMU_TCG_MAX).unwrap();
        assert_eq!(caps.asids, 0x10);
        assert!(caps.features.npt() && caps.features.vgif());
        assert!(!caps.features.nrip_save() && !caps.features.flush_by_asid());
        assert!(!caps.features.decode_assists() && !caps.features.vmcb_clean());
        assert!(caps.pages_1g);
        assert_eq!(caps.phys_bits, 40);
    }

    #[test]
    fn turion_has_svm_without_nested_paging() {
        let caps = SvmCaps::read(&BOCHS_TURION64_TYLER).unwrap();
        assert!(!caps.features.npt());
    }

    #[test]
    fn intel_and_missing_leaves_are_refused() {
        struct Cpu([[u32; 4]; 2]);
        impl CpuidRead for Cpu {
            fn cpuid(&self, leaf: u32, _: u32) -> [u32; 4] {
                match leaf {
                    0x8000_0000 => self.0[0],
                    0x8000_0001 => self.0[1],
                    0x8000_000a => [1, 1, 0, 1],
                    _ => [0; 4],
                }
            }
        }
        // No SVM bit.
        let intel = Cpu([[0x8000_0008, 0, 0, 0], [0, 0, 0x121, 0]]);
        assert_eq!(SvmCaps::read(&intel), Err(CapsError::NoSvm));
        // The SVM bit but no leaf 0x8000000A.
        let short = Cpu([[0x8000_0008, 0, 0, 0], [0, 0, 4, 0]]);
        assert_eq!(
            SvmCaps::read(&short),
            Err(CapsError::NoSvmLeaf(0x8000_0008))
        );
        // One ASID: the host's alone.
        let no_asids = Cpu([[0x8000_000a, 0, 0, 0], [0, 0, 4, 0]]);
        assert_eq!(SvmCaps::read(&no_asids), Err(CapsError::NoAsids(1)));
        extern crate std;
        use std::string::ToString;
        assert!(CapsError::NoSvm.to_string().contains("does not report SVM"));
    }

    #[test]
    fn cr4_bits_follow_the_feature_bits() {
        assert_eq!(cr4_valid([0; 4], [0; 4]), 0x7ff);
        // OSXSAVE with XSAVE, SMEP/SMAP with their leaf 7 bits.
        let v = cr4_valid([0, 0, 1 << 26, 0], [0, (1 << 7) | (1 << 20), 0, 0]);
        assert_eq!(v, 0x7ff | (1 << 18) | (1 << 20) | (1 << 21));
        // Never VMXE (13) or SMXE (14).
        assert_eq!(cr4_valid([u32::MAX; 4], [u32::MAX; 4]) & (3 << 13), 0);
    }
}

//! The processor the image runs on, read through `raw-cpuid`: its vendor and signature,
//! whether it has VMX or SVM (which picks the backend) and SVM's features (leaf
//! 0x8000_000A), the local APIC, the XSAVE area (leaf 0xD), the TSC's frequency (leaves
//! 0x15 and 0x16), the brand string and the physical-address width.
//!
//! Every CPUID the image executes goes through the crate: decoded here, and as raw
//! leaves through [`leaf`] where the image passes a host leaf on to the guest as it is.

use alloc::format;
use alloc::string::String;
use raw_cpuid::{CpuId, CpuIdReader, CpuIdReaderNative};

/// This processor's CPUID, decoded.
fn host() -> CpuId<CpuIdReaderNative> {
    CpuId::new()
}

/// CPUID leaf `leaf`, subleaf `sub`, as this processor answers it: [EAX, EBX, ECX, EDX].
pub fn leaf(leaf: u32, sub: u32) -> [u32; 4] {
    let r = CpuIdReaderNative.cpuid2(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Whether the processor reports VMX (leaf 1 ECX bit 5).
pub fn has_vmx() -> bool {
    host().get_feature_info().is_some_and(|f| f.has_vmx())
}

/// Whether the processor reports SVM (leaf 0x8000_0001 ECX bit 2).
pub fn has_svm() -> bool {
    host()
        .get_extended_processor_and_feature_identifiers()
        .is_some_and(|f| f.has_svm())
}

/// Whether the processor is AMD's (vendor string "AuthenticAMD").
pub fn is_amd() -> bool {
    host()
        .get_vendor_info()
        .is_some_and(|v| v.as_str() == "AuthenticAMD")
}

/// Whether the processor has a local APIC (leaf 1 EDX bit 9).
pub fn has_apic() -> bool {
    host().get_feature_info().is_some_and(|f| f.has_apic())
}

/// Whether the brand string (leaves 0x8000_0002..4) starts with `prefix`.
pub fn brand_starts_with(prefix: &str) -> bool {
    host()
        .get_processor_brand_string()
        .is_some_and(|b| b.as_str().starts_with(prefix))
}

/// Whether the processor has the brand-string leaves.
pub fn has_brand_string() -> bool {
    host().get_processor_brand_string().is_some()
}

/// The physical-address width (leaf 0x8000_0008 EAX 7:0), if reported.
pub fn phys_addr_bits() -> Option<u8> {
    host()
        .get_processor_capacity_feature_info()
        .map(|c| c.physical_address_bits())
}

/// The TSC frequency in Hz from the TSC leaf (0x15: crystal × numerator / denominator),
/// when it reports all three.
pub fn tsc_hz_from_tsc_leaf() -> Option<u64> {
    host().get_tsc_info().and_then(|t| t.tsc_frequency())
}

/// The TSC frequency in Hz from the processor-frequency leaf (0x16: the base frequency
/// in MHz), when it reports one.
pub fn tsc_hz_from_frequency_leaf() -> Option<u64> {
    host()
        .get_processor_frequency_info()
        .map(|f| u64::from(f.processor_base_frequency()) * 1_000_000)
        .filter(|&hz| hz != 0)
}

/// One line saying what the processor is and offers for the backends: vendor, family,
/// model and stepping, brand, VMX or SVM (with SVM's revision, ASIDs and the features
/// the svm backend uses), the XSAVE area's size.
pub fn describe() -> String {
    let cpu = host();
    let vendor = cpu.get_vendor_info();
    let mut line = String::from(vendor.as_ref().map_or("(no vendor)", |v| v.as_str()));
    if let Some(f) = cpu.get_feature_info() {
        line.push_str(&format!(
            " family {:#x} model {:#x} stepping {}",
            f.family_id(),
            f.model_id(),
            f.stepping_id()
        ));
    }
    if let Some(brand) = cpu.get_processor_brand_string() {
        line.push_str(&format!(" \"{}\"", brand.as_str().trim()));
    }
    if has_vmx() {
        line.push_str(", vmx");
    }
    if let Some(svm) = cpu.get_svm_info() {
        line.push_str(&format!(
            ", svm revision {} with {} ASIDs",
            svm.revision(),
            svm.supported_asids()
        ));
        for (have, name) in [
            (svm.has_nested_paging(), "nested paging"),
            (svm.has_nrip(), "NRIP save"),
            (svm.has_flush_by_asid(), "flush by ASID"),
            (svm.has_vmcb_clean_bits(), "VMCB clean bits"),
            (svm.has_decode_assists(), "decode assists"),
            (svm.has_tsc_rate_msr(), "TSC rate"),
        ] {
            if have {
                line.push_str(&format!(", {name}"));
            }
        }
    } else if has_svm() {
        line.push_str(", svm without its feature leaf");
    }
    let xsave = cpu.get_feature_info().is_some_and(|f| f.has_xsave());
    match cpu.get_extended_state_info() {
        Some(state) if xsave => line.push_str(&format!(
            ", xsave area {} bytes",
            state.xsave_area_size_supported_features()
        )),
        _ => line.push_str(", no xsave"),
    }
    line
}

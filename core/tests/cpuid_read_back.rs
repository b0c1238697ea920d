//! CPUID policies read back through `raw-cpuid`, an independent decoder of the SDM's and
//! APM's CPUID layouts: the guest is told exactly the features a policy means to offer,
//! every flag `raw-cpuid` knows of leaves 1, 6, 7, 0x8000_0001 and 0x8000_0007 checked, not
//! only those core names; core's [`Feature`] table puts each flag at the bit `raw-cpuid`
//! reads it from; the signature, the XSAVE leaf and the topology leaves of `--smp N` decode
//! to what the policy says.

use opsvisor_core::cpuid::{CpuidDynamic, CpuidPolicy, Feature, PolicyReader};
use raw_cpuid::{CpuId, TopologyType};

type Cpu<'a> = CpuId<PolicyReader<'a>>;

/// One flag as `raw-cpuid` decodes it: its name here and its reader.
struct Flag {
    name: &'static str,
    read: fn(&Cpu<'_>) -> bool,
}

macro_rules! flags {
    ($($get:ident { $($name:literal => $has:ident),* $(,)? })*) => {
        &[$($(Flag {
            name: $name,
            read: |c: &Cpu<'_>| c.$get().is_some_and(|info| info.$has()),
        },)*)*]
    };
}

/// Every flag `raw-cpuid` decodes in the feature leaves.
const FLAGS: &[Flag] = flags! {
    get_feature_info {
        // Leaf 1 EDX.
        "fpu" => has_fpu, "vme" => has_vme, "de" => has_de, "pse" => has_pse,
        "tsc" => has_tsc, "msr" => has_msr, "pae" => has_pae, "mce" => has_mce,
        "cx8" => has_cmpxchg8b, "apic" => has_apic, "sep" => has_sysenter_sysexit,
        "mtrr" => has_mtrr, "pge" => has_pge, "mca" => has_mca, "cmov" => has_cmov,
        "pat" => has_pat, "pse36" => has_pse36, "psn" => has_psn, "clflush" => has_clflush,
        "ds" => has_ds, "acpi" => has_acpi, "mmx" => has_mmx, "fxsr" => has_fxsave_fxstor,
        "sse" => has_sse, "sse2" => has_sse2, "ss" => has_ss, "htt" => has_htt,
        "tm" => has_tm, "pbe" => has_pbe,
        // Leaf 1 ECX.
        "sse3" => has_sse3, "pclmulqdq" => has_pclmulqdq, "dtes64" => has_ds_area,
        "monitor" => has_monitor_mwait, "ds-cpl" => has_cpl, "vmx" => has_vmx,
        "smx" => has_smx, "est" => has_eist, "tm2" => has_tm2, "ssse3" => has_ssse3,
        "cnxt-id" => has_cnxtid, "fma" => has_fma, "cx16" => has_cmpxchg16b,
        "pdcm" => has_pdcm, "pcid" => has_pcid, "dca" => has_dca, "sse4.1" => has_sse41,
        "sse4.2" => has_sse42, "x2apic" => has_x2apic, "movbe" => has_movbe,
        "popcnt" => has_popcnt, "tsc-deadline" => has_tsc_deadline, "aes" => has_aesni,
        "xsave" => has_xsave, "osxsave" => has_oxsave, "avx" => has_avx,
        "f16c" => has_f16c, "rdrand" => has_rdrand, "hypervisor" => has_hypervisor,
    }
    get_thermal_power_info {
        // Leaf 6 EAX.
        "arat" => has_arat,
    }
    get_extended_feature_info {
        // Leaf 7.0 EBX.
        "fsgsbase" => has_fsgsbase, "tsc-adjust" => has_tsc_adjust_msr, "bmi1" => has_bmi1,
        "hle" => has_hle, "avx2" => has_avx2, "fdp-excptn-only" => has_fdp, "smep" => has_smep,
        "bmi2" => has_bmi2, "erms" => has_rep_movsb_stosb, "invpcid" => has_invpcid,
        "rtm" => has_rtm, "pqm" => has_rdtm, "zero-fcs-fds" => has_fpu_cs_ds_deprecated,
        "mpx" => has_mpx, "pqe" => has_rdta, "rdseed" => has_rdseed, "adx" => has_adx,
        "smap" => has_smap, "clflushopt" => has_clflushopt, "intel-pt" => has_processor_trace,
        "sha-ni" => has_sha, "sgx" => has_sgx, "avx512f" => has_avx512f,
        "avx512dq" => has_avx512dq, "avx512ifma" => has_avx512_ifma,
        "avx512pf" => has_avx512pf, "avx512er" => has_avx512er, "avx512cd" => has_avx512cd,
        "avx512bw" => has_avx512bw, "avx512vl" => has_avx512vl, "clwb" => has_clwb,
        // Leaf 7.0 ECX.
        "prefetchwt1" => has_prefetchwt1, "avx512vbmi" => has_avx512vbmi, "umip" => has_umip,
        "pku" => has_pku, "ospke" => has_ospke, "waitpkg" => has_waitpkg,
        "avx512vbmi2" => has_avx512vbmi2, "cet-ss" => has_cet_ss, "gfni" => has_gfni,
        "vaes" => has_vaes, "vpclmulqdq" => has_vpclmulqdq, "avx512vnni" => has_avx512vnni,
        "avx512bitalg" => has_avx512bitalg, "tme" => has_tme_en,
        "avx512-vpopcntdq" => has_avx512vpopcntdq, "la57" => has_la57, "rdpid" => has_rdpid,
        "sgx-lc" => has_sgx_lc,
        // Leaf 7.0 EDX.
        "avx512-4vnniw" => has_avx512_4vnniw, "avx512-4fmaps" => has_avx512_4fmaps,
        "avx512-vp2intersect" => has_avx512_vp2intersect, "amx-bf16" => has_amx_bf16,
        "avx512-fp16" => has_avx512_fp16, "amx-tile" => has_amx_tile,
        "amx-int8" => has_amx_int8,
    }
    get_extended_processor_and_feature_identifiers {
        // Leaf 0x8000_0001 ECX.
        "lahf-lm" => has_lahf_sahf, "cmp-legacy" => has_cmp_legacy, "svm" => has_svm,
        "extapic" => has_ext_apic_space, "cr8legacy" => has_alt_mov_cr8, "abm" => has_lzcnt,
        "sse4a" => has_sse4a, "misalignsse" => has_misaligned_sse_mode,
        "3dnowprefetch" => has_prefetchw, "osvw" => has_osvw, "ibs" => has_ibs,
        "xop" => has_xop, "skinit" => has_skinit, "wdt" => has_wdt, "lwp" => has_lwp,
        "fma4" => has_fma4, "tbm" => has_tbm, "topoext" => has_topology_extensions,
        "perfctr-core" => has_perf_cntr_extensions, "perfctr-nb" => has_nb_perf_cntr_extensions,
        "bpext" => has_data_access_bkpt_extension, "perftsc" => has_perf_tsc,
        "perfctr-llc" => has_perf_cntr_llc_extensions, "mwaitx" => has_monitorx_mwaitx,
        "addr-mask-ext" => has_addr_mask_extension,
        // Leaf 0x8000_0001 EDX.
        "syscall" => has_syscall_sysret, "nx" => has_execute_disable,
        "mmxext" => has_mmx_extensions, "fxsr-opt" => has_fast_fxsave_fxstor,
        "pdpe1gb" => has_1gib_pages, "rdtscp" => has_rdtscp, "lm" => has_64bit_mode,
        "3dnowext" => has_amd_3dnow_extensions, "3dnow" => has_3dnow,
    }
    get_advanced_power_mgmt_info {
        // Leaf 0x8000_0007 EDX.
        "invtsc" => has_invariant_tsc,
    }
};

/// The name under which [`FLAGS`] reads `feature` (QEMU's spelling where it has one).
/// Exhaustive: a new [`Feature`] does not compile until it is read back here too.
fn flag_of(feature: Feature) -> &'static str {
    use Feature::*;
    match feature {
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
        Htt => "htt",
        Sse3 => "sse3",
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
        Rdpid => "rdpid",
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

/// Every [`Feature`], in [`flag_of`]'s order.
const FEATURES: [Feature; 69] = {
    use Feature::*;
    [
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
        Arat,
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
        Rdpid,
        LahfLm,
        Abm,
        Prefetchw,
        Syscall,
        Nx,
        Page1Gb,
        Rdtscp,
        Lm,
        InvariantTsc,
    ]
};

/// A vCPU after reset with its APIC enabled: the APIC bit reads as the model has it,
/// OSXSAVE clear (CR4.OSXSAVE is clear).
fn reset_state() -> CpuidDynamic {
    CpuidDynamic {
        apic_id: 0,
        osxsave: false,
        apic_enabled: true,
    }
}

/// The names of the flags `policy` reports through `raw-cpuid`, in [`FLAGS`]' order.
fn reported(policy: &CpuidPolicy, state: CpuidDynamic) -> Vec<&'static str> {
    let cpu = CpuId::with_cpuid_reader(policy.reader(state));
    FLAGS
        .iter()
        .filter(|flag| (flag.read)(&cpu))
        .map(|flag| flag.name)
        .collect()
}

/// `want`, sorted into [`FLAGS`]' order.
fn in_flag_order(want: &[&'static str]) -> Vec<&'static str> {
    for name in want {
        assert!(
            FLAGS.iter().any(|f| f.name == *name),
            "{name}: not a flag raw-cpuid reads"
        );
    }
    FLAGS
        .iter()
        .map(|f| f.name)
        .filter(|name| want.contains(name))
        .collect()
}

/// The emulator's policy offers exactly the instruction-set extensions the emulator
/// implements and the platform features core emulates: x87, FXSR, MMX, SSE to SSE4.2,
/// SSSE3, POPCNT, MOVBE, CMPXCHG8B/16B, BMI1/2, ADX, LZCNT, LAHF/SAHF in long mode,
/// SYSENTER and SYSCALL, RDTSCP, NX, 1 GiB pages, PAE, PSE, PGE, PAT, MTRRs, the TSC
/// (invariant, with IA32_TSC_ADJUST and the APIC's TSC deadline), the x2APIC, ARAT, the
/// hypervisor bit; no XSAVE, AVX, VMX, SVM, SMEP/SMAP, PCID, MCE/MCA, HTT (one vCPU), ...
#[test]
fn emulator_policy_offers_exactly_its_features() {
    let want = in_flag_order(&[
        "fpu",
        "pse",
        "tsc",
        "msr",
        "pae",
        "cx8",
        "apic",
        "sep",
        "mtrr",
        "pge",
        "cmov",
        "pat",
        "clflush",
        "mmx",
        "fxsr",
        "sse",
        "sse2",
        "sse3",
        "ssse3",
        "cx16",
        "sse4.1",
        "sse4.2",
        "x2apic",
        "movbe",
        "popcnt",
        "tsc-deadline",
        "hypervisor",
        "arat",
        "tsc-adjust",
        "bmi1",
        "bmi2",
        "adx",
        "lahf-lm",
        "abm",
        "syscall",
        "nx",
        "pdpe1gb",
        "rdtscp",
        "lm",
        "invtsc",
    ]);
    let policy = CpuidPolicy::emulator();
    assert_eq!(reported(&policy, reset_state()), want);

    // The state-dependent bits follow the vCPU: OSXSAVE with CR4.OSXSAVE, APIC with
    // IA32_APIC_BASE.EN; nothing else moves.
    let mut with_osxsave = want.clone();
    with_osxsave.push("osxsave");
    let state = CpuidDynamic {
        osxsave: true,
        ..reset_state()
    };
    assert_eq!(
        reported(&policy, state),
        in_flag_order(&with_osxsave),
        "CR4.OSXSAVE set"
    );
    let state = CpuidDynamic {
        apic_enabled: false,
        ..reset_state()
    };
    let without_apic: Vec<_> = want.iter().copied().filter(|n| *n != "apic").collect();
    assert_eq!(reported(&policy, state), without_apic, "APIC disabled");

    // Core's own view of the table agrees with the decoder's, flag by flag.
    for feature in FEATURES {
        assert_eq!(
            policy.has_feature(feature),
            want.contains(&flag_of(feature)),
            "{feature:?}"
        );
    }
}

/// The identification leaves decode to the model the policy describes.
#[test]
fn emulator_policy_identifies_its_model() {
    let policy = CpuidPolicy::emulator();
    let cpu = CpuId::with_cpuid_reader(policy.reader(reset_state()));
    assert_eq!(cpu.get_vendor_info().unwrap().as_str(), "GenuineIntel");
    let fi = cpu.get_feature_info().unwrap();
    assert_eq!(
        (fi.family_id(), fi.model_id(), fi.stepping_id()),
        (6, 0x9e, 0xa)
    );
    assert_eq!(fi.cflush_cache_line_size(), 8, "64-byte lines");
    let sizes = cpu.get_processor_capacity_feature_info().unwrap();
    assert_eq!(
        u32::from(sizes.physical_address_bits()),
        opsvisor_core::cpuid::PHYS_ADDR_BITS
    );
    assert_eq!(sizes.linear_address_bits(), 48);
}

/// Without XSAVE the XSAVE leaf (0xd) describes no state: no XCR0 component, no area,
/// none of XSAVEOPT/XSAVEC/XGETBV1/XSAVES.
#[test]
fn emulator_policy_describes_no_xsave_state() {
    let policy = CpuidPolicy::emulator();
    let cpu = CpuId::with_cpuid_reader(policy.reader(reset_state()));
    assert!(!cpu.get_feature_info().unwrap().has_xsave());
    let state = cpu.get_extended_state_info().unwrap();
    assert!(!state.xcr0_supports_legacy_x87());
    assert!(!state.xcr0_supports_sse_128());
    assert!(!state.xcr0_supports_avx_256());
    assert_eq!(state.xsave_area_size_supported_features(), 0);
    assert_eq!(state.xsave_area_size_enabled_features(), 0);
    assert!(!state.has_xsaveopt() && !state.has_xsavec());
    assert!(!state.has_xgetbv() && !state.has_xsaves_xrstors());
    assert_eq!(state.iter().count(), 0);
}

/// Core's feature table against the decoder: each [`Feature`] alone, on a policy whose
/// feature leaves are otherwise empty, is the one flag `raw-cpuid` reports, under the
/// name [`flag_of`] gives it.
#[test]
fn feature_table_matches_the_decoder() {
    let mut bare = CpuidPolicy::emulator();
    for leaf in [1, 6, 7, 0x8000_0001, 0x8000_0007] {
        let mut regs = bare.leaf(leaf, 0).unwrap_or([0; 4]);
        match leaf {
            // Keep leaf 1's signature and EBX; leaf 7.0's EAX is its subleaf count.
            1 | 7 => regs[2..].fill(0),
            _ => regs = [0; 4],
        }
        if leaf == 7 {
            regs[1] = 0;
        }
        bare.set_leaf(leaf, 0, regs);
    }
    // OSXSAVE shows only with CR4.OSXSAVE set, APIC only with the APIC enabled.
    let state = CpuidDynamic {
        osxsave: false,
        ..reset_state()
    };
    assert_eq!(reported(&bare, state), Vec::<&str>::new());
    for feature in FEATURES {
        let mut policy = bare.clone();
        policy.set_feature(feature, true);
        let state = CpuidDynamic {
            osxsave: feature == Feature::Osxsave,
            ..state
        };
        assert_eq!(
            reported(&policy, state),
            [flag_of(feature)],
            "{feature:?} at {:x?}",
            feature.location()
        );
    }
}

/// `--smp N` (N vCPUs, one package of N cores, as QEMU's `-smp N`): leaf 1 counts the
/// package's addressable IDs and sets HTT from two vCPUs on; leaf 0xB describes an SMT
/// level of one thread and a core level of N cores, shifting the x2APIC ID by the core
/// ID's bits, and reports each vCPU's own x2APIC ID.
#[test]
fn topology_of_smp_n_reads_back() {
    for (cpus, core_bits) in [
        (1u32, 0u32),
        (2, 1),
        (3, 2),
        (4, 2),
        (8, 3),
        (12, 4),
        (64, 6),
    ] {
        let mut policy = CpuidPolicy::emulator();
        policy.set_topology(cpus);
        for apic_id in [0, cpus - 1] {
            let state = CpuidDynamic {
                apic_id,
                ..reset_state()
            };
            let cpu = CpuId::with_cpuid_reader(policy.reader(state));
            let fi = cpu.get_feature_info().unwrap();
            assert_eq!(fi.has_htt(), cpus > 1, "{cpus}: HTT");
            assert_eq!(
                u32::from(fi.max_logical_processor_ids()),
                1 << core_bits,
                "{cpus}: addressable IDs"
            );
            assert_eq!(u32::from(fi.initial_local_apic_id()), apic_id, "{cpus}");
            let levels: Vec<_> = cpu.get_extended_topology_info().unwrap().collect();
            assert_eq!(levels.len(), 2, "{cpus}: SMT and core levels");
            let (smt, core) = (&levels[0], &levels[1]);
            assert_eq!(smt.level_type(), TopologyType::SMT, "{cpus}");
            assert_eq!(
                (smt.processors(), smt.shift_right_for_next_apic_id()),
                (1, 0),
                "{cpus}: one thread per core"
            );
            assert_eq!(core.level_type(), TopologyType::Core, "{cpus}");
            assert_eq!(u32::from(core.processors()), cpus, "{cpus}: cores");
            assert_eq!(core.shift_right_for_next_apic_id(), core_bits, "{cpus}");
            for level in &levels {
                assert_eq!(level.x2apic_id(), apic_id, "{cpus}: x2APIC ID");
            }
        }
    }
}

//! CPUID policies read back through `raw-cpuid`, an independent decoder of the SDM's and
//! APM's CPUID layouts: the guest is told exactly the features a policy means to offer (the
//! emulator's model, and the `max` and `qemu64` CPU models on it), every flag `raw-cpuid`
//! knows of leaves 1, 6, 7, 0xD.1, 0x8000_0001 and 0x8000_0007 checked, not only those core
//! names; core's [`Feature`] table puts each flag at the bit `raw-cpuid` reads it from,
//! under its QEMU name; the signature, the XSAVE leaf's sizes and the topology leaves of
//! `--smp N` decode to what the policy says.

use opsvisor_core::cpu_model::CpuModel;
use opsvisor_core::cpuid::{CpuidDynamic, CpuidPolicy, Feature, PolicyReader};
use raw_cpuid::{CpuId, CpuIdReader, TopologyType};

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
        "sse" => has_sse, "sse2" => has_sse2, "ss" => has_ss, "ht" => has_htt,
        "tm" => has_tm, "pbe" => has_pbe,
        // Leaf 1 ECX.
        "pni" => has_sse3, "pclmulqdq" => has_pclmulqdq, "dtes64" => has_ds_area,
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
    get_extended_state_info {
        // Leaf 0xD.1 EAX.
        "xsaveopt" => has_xsaveopt, "xsavec" => has_xsavec, "xgetbv1" => has_xgetbv,
        "xsaves" => has_xsaves_xrstors,
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

/// Flags `raw-cpuid` does not decode, read here from where the SDM puts them (volume 2A,
/// CPUID): name, leaf, subleaf, register (EAX 0 to EDX 3), bit.
const RAW_FLAGS: &[(&str, u32, u32, usize, u32)] = &[
    // Leaf 7.0 EDX: IA32_ARCH_CAPABILITIES exists.
    ("arch-capabilities", 7, 0, 3, 29),
];

/// Every flag name this file checks, in the order [`reported`] lists them.
fn all_names() -> impl Iterator<Item = &'static str> {
    FLAGS
        .iter()
        .map(|f| f.name)
        .chain(RAW_FLAGS.iter().map(|f| f.0))
}

/// A vCPU after reset with its APIC enabled: the APIC bit reads as the model has it,
/// OSXSAVE and OSPKE clear (CR4.OSXSAVE and CR4.PKE are clear).
fn reset_state() -> CpuidDynamic {
    CpuidDynamic {
        apic_id: 0,
        osxsave: false,
        apic_enabled: true,
        pke: false,
    }
}

/// The names of the flags `policy` reports through `raw-cpuid`, in [`FLAGS`]' order, then
/// those of [`RAW_FLAGS`] it sets.
fn reported(policy: &CpuidPolicy, state: CpuidDynamic) -> Vec<&'static str> {
    let cpu = CpuId::with_cpuid_reader(policy.reader(state));
    let reader = policy.reader(state);
    FLAGS
        .iter()
        .filter(|flag| (flag.read)(&cpu))
        .map(|flag| flag.name)
        .chain(
            RAW_FLAGS
                .iter()
                .filter(|(_, leaf, subleaf, reg, bit)| {
                    let r = reader.cpuid2(*leaf, *subleaf);
                    [r.eax, r.ebx, r.ecx, r.edx][*reg] >> bit & 1 == 1
                })
                .map(|f| f.0),
        )
        .collect()
}

/// `want`, sorted into [`FLAGS`]' order.
fn in_flag_order(want: &[&'static str]) -> Vec<&'static str> {
    for name in want {
        assert!(
            all_names().any(|n| n == *name),
            "{name}: not a flag raw-cpuid reads or RAW_FLAGS lists"
        );
    }
    all_names().filter(|name| want.contains(name)).collect()
}

/// Check that `policy` reports through `raw-cpuid` exactly the flags `want` (after reset),
/// that the state-dependent bits follow the vCPU (OSXSAVE with CR4.OSXSAVE where XSAVE is
/// offered, OSPKE with CR4.PKE where PKU is, APIC with IA32_APIC_BASE.EN) and nothing else
/// moves, and
/// that core's own view of the table agrees flag by flag.
fn check_offers(policy: &CpuidPolicy, want: &[&'static str], what: &str) {
    let want = in_flag_order(want);
    assert_eq!(reported(policy, reset_state()), want, "{what}");

    // The CR4 mirrors, where the feature that makes the CR4 bit settable is offered
    // (without it the guest's CR4 write faults, and the state cannot arise).
    for (feature, mirror, state) in [
        (
            "xsave",
            "osxsave",
            CpuidDynamic {
                osxsave: true,
                ..reset_state()
            },
        ),
        (
            "pku",
            "ospke",
            CpuidDynamic {
                pke: true,
                ..reset_state()
            },
        ),
    ] {
        if want.contains(&feature) {
            let mut names = want.clone();
            names.push(mirror);
            assert_eq!(
                reported(policy, state),
                in_flag_order(&names),
                "{what}: {mirror} with its CR4 bit set"
            );
        }
    }
    let state = CpuidDynamic {
        apic_enabled: false,
        ..reset_state()
    };
    let without_apic: Vec<_> = want.iter().copied().filter(|n| *n != "apic").collect();
    assert_eq!(
        reported(policy, state),
        without_apic,
        "{what}: APIC disabled"
    );

    for feature in Feature::ALL {
        assert_eq!(
            policy.has_feature(feature),
            want.contains(&feature.name()),
            "{what}: {feature:?}"
        );
    }
}

/// What `qemu64` offers (`core::cpu_model`'s documentation: QEMU's `qemu64` less MCE,
/// MCA, PSE-36 and SVM) within what the emulator implements: of that list the emulator
/// lacks DE, so the model has it not.
const QEMU64_ON_EMULATOR: &[&str] = &[
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
    "pni",
    "cx16",
    "hypervisor",
    "lahf-lm",
    "syscall",
    "nx",
    "lm",
];

/// The emulator's policy offers exactly the instruction-set extensions the emulator
/// implements and the platform features core emulates: x87, FXSR, MMX, SSE to SSE4.2,
/// SSSE3, POPCNT, MOVBE, CMPXCHG8B/16B, BMI1/2, ADX, LZCNT, LAHF/SAHF in long mode,
/// SYSENTER and SYSCALL, RDTSCP, RDPID, NX, 1 GiB pages, PAE, PSE, PGE, PAT, MTRRs, the
/// TSC (invariant, with IA32_TSC_ADJUST and the APIC's TSC deadline), the x2APIC, ARAT,
/// the hypervisor bit; the system features PCID, INVPCID, FSGSBASE, SMEP, SMAP, UMIP, PKU
/// and LA57; XSAVE with XSAVEOPT and XSAVEC (x87 and SSE state); no AVX, VMX, SVM,
/// MCE/MCA, HTT (one vCPU), XSAVES, ...
#[test]
fn emulator_policy_offers_exactly_its_features() {
    let want = [
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
        "pni",
        "ssse3",
        "cx16",
        "pcid",
        "sse4.1",
        "sse4.2",
        "x2apic",
        "movbe",
        "popcnt",
        "tsc-deadline",
        "xsave",
        "hypervisor",
        "arat",
        "fsgsbase",
        "tsc-adjust",
        "bmi1",
        "smep",
        "bmi2",
        "invpcid",
        "adx",
        "smap",
        "umip",
        "pku",
        "la57",
        "rdpid",
        "arch-capabilities",
        "xsaveopt",
        "xsavec",
        "lahf-lm",
        "abm",
        "syscall",
        "nx",
        "pdpe1gb",
        "rdtscp",
        "lm",
        "invtsc",
    ];
    check_offers(&CpuidPolicy::emulator(), &want, "emulator");
}

/// The CPU models on the emulator: `max` is the emulator's model, `qemu64` its baseline,
/// and `qemu64,+smep,-nx` that plus and minus one flag.
#[test]
fn cpu_models_offer_exactly_their_features() {
    let emulator = CpuidPolicy::emulator();
    let model = |spec: &str| {
        CpuModel::parse(spec)
            .unwrap()
            .policy(&emulator, "emu")
            .unwrap()
    };
    assert_eq!(
        reported(&model("max"), reset_state()),
        reported(&emulator, reset_state()),
        "max"
    );
    check_offers(&model("qemu64"), QEMU64_ON_EMULATOR, "qemu64");
    let mut changed: Vec<&str> = QEMU64_ON_EMULATOR
        .iter()
        .copied()
        .filter(|n| *n != "nx")
        .collect();
    changed.push("smep");
    check_offers(&model("qemu64,+smep,-nx"), &changed, "qemu64,+smep,-nx");
}

/// The identification leaves decode to the model the policy describes, in every model:
/// vendor, family/model/stepping, cache line, the physical-address width and the linear
/// one (57 bits with LA57, 48 without).
#[test]
fn policies_identify_their_model() {
    let emulator = CpuidPolicy::emulator();
    let qemu64 = CpuModel::parse("qemu64")
        .unwrap()
        .policy(&emulator, "emu")
        .unwrap();
    for (policy, linear) in [(&emulator, 57), (&qemu64, 48)] {
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
        assert_eq!(sizes.linear_address_bits(), linear);
    }
}

/// The XSAVE leaf (0xD) describes the state the policy offers: with XSAVE (the emulator),
/// x87 and SSE in XCR0 and a 576-byte area (the 512-byte legacy region and the 64-byte
/// header), standard and compacted, XSAVEOPT and XSAVEC, no further component; without
/// it (`qemu64`), no state at all.
#[test]
fn xsave_leaf_describes_the_offered_state() {
    let emulator = CpuidPolicy::emulator();
    let cpu = CpuId::with_cpuid_reader(emulator.reader(reset_state()));
    assert!(cpu.get_feature_info().unwrap().has_xsave());
    let state = cpu.get_extended_state_info().unwrap();
    assert!(state.xcr0_supports_legacy_x87() && state.xcr0_supports_sse_128());
    assert!(!state.xcr0_supports_avx_256());
    assert_eq!(state.xsave_area_size_supported_features(), 512 + 64);
    assert_eq!(state.xsave_area_size_enabled_features(), 512 + 64);
    assert_eq!(state.xsave_size(), 512 + 64, "the compacted area");
    assert!(state.has_xsaveopt() && state.has_xsavec());
    assert!(!state.has_xgetbv() && !state.has_xsaves_xrstors());
    assert_eq!(state.iter().count(), 0, "no component beyond SSE");

    let qemu64 = CpuModel::parse("qemu64")
        .unwrap()
        .policy(&emulator, "emu")
        .unwrap();
    let cpu = CpuId::with_cpuid_reader(qemu64.reader(reset_state()));
    assert!(!cpu.get_feature_info().unwrap().has_xsave());
    let state = cpu.get_extended_state_info().unwrap();
    assert!(!state.xcr0_supports_legacy_x87() && !state.xcr0_supports_sse_128());
    assert_eq!(state.xsave_area_size_supported_features(), 0);
    assert_eq!(state.xsave_size(), 0);
    assert!(!state.has_xsaveopt() && !state.has_xsavec());
}

/// Core's feature table against the decoder: each [`Feature`] alone, on a policy whose
/// feature leaves are otherwise empty, is the one flag `raw-cpuid` reports, under the
/// name [`Feature::name`] gives it (OSXSAVE and OSPKE with the CR4 bit they mirror set).
#[test]
fn feature_table_matches_the_decoder() {
    let mut bare = CpuidPolicy::emulator();
    for (leaf, subleaf) in [
        (1, 0),
        (6, 0),
        (7, 0),
        (0xd, 1),
        (0x8000_0001, 0),
        (0x8000_0007, 0),
    ] {
        let mut regs = bare.leaf(leaf, subleaf).unwrap_or([0; 4]);
        match leaf {
            // Keep leaf 1's signature and EBX, and leaf 7.0's subleaf count.
            1 => regs[2..].fill(0),
            7 => regs[1..].fill(0),
            _ => regs = [0; 4],
        }
        bare.set_leaf(leaf, subleaf, regs);
    }
    assert_eq!(reported(&bare, reset_state()), Vec::<&str>::new());
    for feature in Feature::ALL {
        let mut policy = bare.clone();
        policy.set_feature(feature, true);
        let state = CpuidDynamic {
            osxsave: feature == Feature::Osxsave,
            pke: feature == Feature::Ospke,
            ..reset_state()
        };
        assert_eq!(
            reported(&policy, state),
            [feature.name()],
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

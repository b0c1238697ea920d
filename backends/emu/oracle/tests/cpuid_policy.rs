//! The emulator's CPUID policy reports exactly the instruction-set extensions the
//! emulator implements: a feature bit is set if and only if every Code of its coverage
//! group is implemented, and the extensions the emulator has no group for are hidden.
#![cfg(feature = "emu")]

use opsvisor_core::cpuid::{CpuidPolicy, Feature};
use opsvisor_oracle::coverage::{status, Status};
use opsvisor_oracle::groups::group;

fn fully_implemented(name: &str) -> bool {
    let g = group(name).expect("group exists");
    g.codes()
        .into_iter()
        .all(|c| status(c, g) != Status::Missing)
}

#[test]
fn reported_features_are_the_implemented_groups() {
    let policy = CpuidPolicy::emulator();
    let pairs: &[(Feature, &[&str])] = &[
        (Feature::Fpu, &["x87"]),
        (Feature::Fxsr, &["fxsr"]),
        (Feature::Mmx, &["mmx"]),
        (Feature::Sse, &["sse"]),
        (Feature::Sse2, &["sse2"]),
        (Feature::Sse3, &["sse3"]),
        (Feature::Ssse3, &["ssse3"]),
        (Feature::Sse41, &["sse4_1"]),
        (Feature::Sse42, &["sse4_2"]),
        (Feature::Cmov, &["integer"]),
        (Feature::Cx8, &["integer"]),
        (Feature::Cx16, &["integer"]),
        (Feature::Movbe, &["integer"]),
        (Feature::Popcnt, &["integer"]),
        (Feature::Bmi1, &["integer"]),
        (Feature::Bmi2, &["integer"]),
        (Feature::Adx, &["integer"]),
        (Feature::Abm, &["integer"]),
    ];
    let mut wrong = Vec::new();
    for (feature, groups) in pairs {
        let implemented = groups.iter().all(|g| fully_implemented(g));
        if policy.has_feature(*feature) != implemented {
            wrong.push(format!(
                "{feature:?}: CPUID says {}, the emulator implements {} of it",
                policy.has_feature(*feature),
                if implemented { "all" } else { "not all" }
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn extensions_without_an_implementation_are_hidden() {
    let policy = CpuidPolicy::emulator();
    for feature in [
        Feature::Avx,
        Feature::Avx2,
        Feature::Fma,
        Feature::F16c,
        Feature::Aes,
        Feature::Pclmulqdq,
        Feature::Osxsave,
        Feature::Rdrand,
        Feature::Rdseed,
        Feature::Sha,
        Feature::Monitor,
    ] {
        assert!(!policy.has_feature(feature), "{feature:?} is reported");
    }
}

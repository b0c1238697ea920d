//! CPU models: what `--cpu MODEL[,+feature][,-feature]...` asks for, as QEMU's `-cpu`
//! spells it, turned into the [`CpuidPolicy`] the guest sees.
//!
//! A model names a set of features; the backends in use say what they can offer
//! ([`crate::ops::X86Ops::supported_cpuid`], intersected over every backend with
//! [`CpuidPolicy::intersect_features`]); the guest gets the model's features that all of
//! them support, plus or minus the features the option adds or removes. Asking for a
//! feature no backend in use implements is an error naming it, rather than a guest that
//! would fault on what its CPUID promised.
//!
//! The models:
//!
//! - `max`: everything the backends in use implement (QEMU's `max`).
//! - `qemu64`: QEMU's conservative default model, a 64-bit processor with SSE3 and
//!   CMPXCHG16B and nothing later: FPU, DE, PSE, TSC, MSR, PAE, CX8, APIC, SEP, MTRR, PGE,
//!   CMOV, PAT, CLFLUSH, MMX, FXSR, SSE, SSE2 (leaf 1 EDX), SSE3, CX16 (leaf 1 ECX), LM,
//!   SYSCALL, NX (leaf 0x8000_0001 EDX), LAHF-LM (ECX), and the hypervisor bit. It keeps
//!   the vendor and signature of the backends' model (GenuineIntel), whose behaviour the
//!   emulator follows, where QEMU's reports an AMD processor; of QEMU's list, MCE, MCA and
//!   PSE-36 (not implemented) and SVM (no nested virtualization) are left out.
//!
//! The syntax, as QEMU takes it: items separated by commas, the first the model; then
//! `+feature` or `feature=on` adds, `-feature` or `feature=off` removes, later items
//! override earlier ones. Feature names are QEMU's (and Linux's `/proc/cpuinfo`'s):
//! `pni` for SSE3, `sse4.1`, `tsc-deadline`, with `_` and `-` interchangeable
//! ([`Feature::from_name`]).

use crate::cpuid::{CpuidPolicy, Feature};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// A named CPU model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelName {
    /// Everything the backends in use implement.
    Max,
    /// QEMU's `qemu64` baseline (see the module documentation).
    Qemu64,
}

impl ModelName {
    /// The models, by name.
    pub const ALL: [(&'static str, ModelName); 2] =
        [("max", ModelName::Max), ("qemu64", ModelName::Qemu64)];

    /// The model's name as `--cpu` takes it.
    pub fn name(self) -> &'static str {
        match self {
            ModelName::Max => "max",
            ModelName::Qemu64 => "qemu64",
        }
    }

    /// The features the model has where the backends implement them; `None` for all.
    fn features(self) -> Option<&'static [Feature]> {
        use Feature::*;
        match self {
            ModelName::Max => None,
            ModelName::Qemu64 => Some(&[
                Fpu, De, Pse, Tsc, Msr, Pae, Cx8, Apic, Sep, Mtrr, Pge, Cmov, Pat, Clfsh, Mmx,
                Fxsr, Sse, Sse2, Sse3, Cx16, Hypervisor, Lm, Syscall, Nx, LahfLm,
            ]),
        }
    }
}

/// Why a `--cpu` specification cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuModelError(String);

impl CpuModelError {
    /// The explanation.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CpuModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed `--cpu` specification: a model and the features added to or removed from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuModel {
    /// The named model.
    pub model: ModelName,
    /// The features the specification turns on (`true`) or off (`false`), in order.
    pub changes: Vec<(Feature, bool)>,
}

impl Default for CpuModel {
    /// `max`, with no changes: what a machine gets when no model is named.
    fn default() -> Self {
        CpuModel {
            model: ModelName::Max,
            changes: Vec::new(),
        }
    }
}

/// The feature names a user may add or remove: those whose bit the CPU model holds
/// (OSXSAVE and OSPKE mirror the guest's CR4 instead).
fn settable(feature: Feature) -> bool {
    !matches!(feature, Feature::Osxsave | Feature::Ospke)
}

impl CpuModel {
    /// Parse `MODEL[,+feature][,-feature][,feature=on|off]...`.
    pub fn parse(spec: &str) -> Result<CpuModel, CpuModelError> {
        let mut items = spec.split(',');
        let name = items.next().unwrap_or("").trim();
        let model = ModelName::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                let known: Vec<&str> = ModelName::ALL.iter().map(|(n, _)| *n).collect();
                CpuModelError(if name.is_empty() {
                    alloc::format!("no CPU model named (expected one of: {})", known.join(", "))
                } else {
                    alloc::format!(
                        "unknown CPU model '{name}' (expected one of: {})",
                        known.join(", ")
                    )
                })
            })?;
        let mut changes = Vec::new();
        for item in items {
            let item = item.trim();
            let (feature_name, on) = if let Some(f) = item.strip_prefix('+') {
                (f, true)
            } else if let Some(f) = item.strip_prefix('-') {
                (f, false)
            } else if let Some((f, v)) = item.split_once('=') {
                let on = match v {
                    "on" | "true" | "yes" => true,
                    "off" | "false" | "no" => false,
                    _ => {
                        return Err(CpuModelError(alloc::format!(
                            "'{item}': expected {f}=on or {f}=off"
                        )))
                    }
                };
                (f, on)
            } else if item.is_empty() {
                return Err(CpuModelError(
                    "an empty item between commas (expected +feature, -feature or feature=on|off)"
                        .to_string(),
                ));
            } else {
                // QEMU's legacy form: a bare name turns the feature on.
                (item, true)
            };
            let feature = Feature::from_name(feature_name).ok_or_else(|| {
                CpuModelError(alloc::format!(
                    "unknown CPU feature '{feature_name}' (names as QEMU's -cpu and /proc/cpuinfo spell them, e.g. smep, pku, xsave, la57)"
                ))
            })?;
            if !settable(feature) {
                return Err(CpuModelError(alloc::format!(
                    "CPU feature '{feature_name}' is not part of the model: the guest sets it through CR4"
                )));
            }
            changes.push((feature, on));
        }
        Ok(CpuModel { model, changes })
    }

    /// The CPU model the guest sees, given what the backends in use support (`supported`,
    /// named `backends` in errors): the model's features within `supported`, then the
    /// changes, each added one checked against `supported`. The leaves derived from the
    /// features are brought in step ([`CpuidPolicy::sync_derived_leaves`]).
    pub fn policy(
        &self,
        supported: &CpuidPolicy,
        backends: &str,
    ) -> Result<CpuidPolicy, CpuModelError> {
        let mut policy = supported.clone();
        if let Some(features) = self.model.features() {
            for feature in Feature::ALL {
                if !features.contains(&feature) {
                    policy.set_feature(feature, false);
                }
            }
        }
        for &(feature, on) in &self.changes {
            if on && !supported.has_feature(feature) {
                return Err(CpuModelError(alloc::format!(
                    "CPU feature '{}' is not implemented by {backends}",
                    feature.name()
                )));
            }
            policy.set_feature(feature, on);
        }
        if self
            .changes
            .iter()
            .any(|&(f, on)| on && matches!(f, Feature::Xsaveopt | Feature::Xsavec))
            && !policy.has_feature(Feature::Xsave)
        {
            return Err(CpuModelError(
                "CPU features 'xsaveopt' and 'xsavec' need 'xsave'".to_string(),
            ));
        }
        policy.sync_derived_leaves();
        Ok(policy)
    }

    /// The specification in `--cpu` syntax (the model, then each change).
    pub fn spec(&self) -> String {
        let mut s = String::from(self.model.name());
        for &(feature, on) in &self.changes {
            s.push(',');
            s.push(if on { '+' } else { '-' });
            s.push_str(feature.name());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_models_and_changes() {
        let m = CpuModel::parse("max").unwrap();
        assert_eq!(m, CpuModel::default());
        let m = CpuModel::parse("qemu64,+smep,-nx,pku=on,smap=off,sse4_1,la57").unwrap();
        assert_eq!(m.model, ModelName::Qemu64);
        assert_eq!(
            m.changes,
            [
                (Feature::Smep, true),
                (Feature::Nx, false),
                (Feature::Pku, true),
                (Feature::Smap, false),
                (Feature::Sse41, true),
                (Feature::La57, true),
            ]
        );
        assert_eq!(m.spec(), "qemu64,+smep,-nx,+pku,-smap,+sse4.1,+la57");
        assert_eq!(CpuModel::parse(&m.spec()).unwrap(), m);
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let err = |s: &str| CpuModel::parse(s).unwrap_err().to_string();
        assert!(err("pentium").contains("unknown CPU model 'pentium'"));
        assert!(err("pentium").contains("max, qemu64"));
        assert!(err("").contains("no CPU model"));
        assert!(err("max,+frobnicate").contains("unknown CPU feature 'frobnicate'"));
        assert!(err("max,,+smep").contains("empty item"));
        assert!(err("max,smep=maybe").contains("smep=on or smep=off"));
        assert!(err("max,+osxsave").contains("through CR4"));
        assert!(err("max,+ospke").contains("through CR4"));
    }

    #[test]
    fn feature_names_round_trip() {
        for feature in Feature::ALL {
            assert_eq!(
                Feature::from_name(feature.name()),
                Some(feature),
                "{feature:?}"
            );
        }
        assert_eq!(Feature::from_name("sse3"), Some(Feature::Sse3));
        assert_eq!(Feature::from_name("SSE4-2"), Some(Feature::Sse42));
        assert_eq!(
            Feature::from_name("tsc_deadline"),
            Some(Feature::TscDeadline)
        );
        assert_eq!(Feature::from_name("lahf_lm"), Some(Feature::LahfLm));
        assert_eq!(Feature::from_name("a-name-longer-than-the-buffer"), None);
    }

    #[test]
    fn qemu64_is_a_subset_of_max() {
        let supported = CpuidPolicy::emulator();
        let max = CpuModel::default().policy(&supported, "emu").unwrap();
        let base = CpuModel::parse("qemu64")
            .unwrap()
            .policy(&supported, "emu")
            .unwrap();
        for feature in Feature::ALL {
            if base.has_feature(feature) {
                assert!(max.has_feature(feature), "{feature:?}");
            }
        }
        for feature in [
            Feature::Sse41,
            Feature::Popcnt,
            Feature::X2apic,
            Feature::Rdtscp,
        ] {
            assert!(
                max.has_feature(feature) && !base.has_feature(feature),
                "{feature:?}"
            );
        }
        for feature in [
            Feature::Sse3,
            Feature::Cx16,
            Feature::Lm,
            Feature::Nx,
            Feature::Pae,
        ] {
            assert!(base.has_feature(feature), "{feature:?}");
        }
        // Identity leaves stay.
        assert_eq!(base.leaf(0, 0), max.leaf(0, 0));
        assert_eq!(base.leaf(0x8000_0002, 0), max.leaf(0x8000_0002, 0));
    }

    #[test]
    fn added_features_must_be_supported() {
        let mut supported = CpuidPolicy::emulator();
        supported.set_feature(Feature::Smep, false);
        let err = CpuModel::parse("max,+smep")
            .unwrap()
            .policy(&supported, "vmx and emu")
            .unwrap_err();
        assert_eq!(
            err.message(),
            "CPU feature 'smep' is not implemented by vmx and emu"
        );
        // Removing an unsupported feature is fine.
        let p = CpuModel::parse("max,-smep")
            .unwrap()
            .policy(&supported, "emu")
            .unwrap();
        assert!(!p.has_feature(Feature::Smep));
        // qemu64 plus a feature of max.
        let p = CpuModel::parse("qemu64,+popcnt")
            .unwrap()
            .policy(&supported, "emu")
            .unwrap();
        assert!(p.has_feature(Feature::Popcnt));
    }
}

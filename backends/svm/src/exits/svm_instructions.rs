//! The SVM instructions: VMRUN (0x80), VMLOAD (0x82), VMSAVE (0x83), STGI (0x84), CLGI
//! (0x85), SKINIT (0x86) and INVLPGA (0x7A). The guest's CPUID offers no SVM, so each
//! gets #UD, as on a processor without it (VMMCALL is the hypercall, see
//! [`super::vmmcall`]).

use super::{code, BackendExit, SvmExit};

/// Whether `c` is the exit of an SVM instruction other than VMMCALL.
pub(crate) fn is_svm_instruction(c: u64) -> bool {
    matches!(
        c,
        code::VMRUN
            | code::VMLOAD
            | code::VMSAVE
            | code::STGI
            | code::CLGI
            | code::SKINIT
            | code::INVLPGA
    )
}

/// Decode an SVM-instruction exit.
pub(crate) fn decode(c: u64) -> SvmExit {
    SvmExit::Backend(BackendExit::SvmInstruction { code: c })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{code, BackendExit, SvmExit};
    use super::is_svm_instruction;

    #[test]
    fn svm_instructions_are_refused() {
        for c in [
            code::VMRUN,
            code::VMLOAD,
            code::VMSAVE,
            code::STGI,
            code::CLGI,
            code::SKINIT,
            code::INVLPGA,
        ] {
            assert!(is_svm_instruction(c));
            assert_eq!(
                decode(c, &[]),
                Ok(SvmExit::Backend(BackendExit::SvmInstruction { code: c }))
            );
        }
        assert!(!is_svm_instruction(code::VMMCALL));
    }
}

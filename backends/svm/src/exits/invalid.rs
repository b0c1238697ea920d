//! VMEXIT_INVALID (exit code -1; QEMU writes 0x00000000FFFFFFFF): VMRUN found the VMCB's
//! state or controls inconsistent (APM 2 15.5.1). The processor says nothing about
//! which check failed; the vCPU finds it with [`crate::consistency`].

use super::{BackendExit, SvmExit};

/// Decode a VMEXIT_INVALID.
pub(crate) fn decode() -> SvmExit {
    SvmExit::Backend(BackendExit::Invalid)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{code, BackendExit, SvmExit};

    #[test]
    fn invalid() {
        assert_eq!(
            decode(code::INVALID, &[]),
            Ok(SvmExit::Backend(BackendExit::Invalid))
        );
    }
}

//! VMMCALL (exit code 0x81): core's hypercall, with KVM's calling convention (the
//! number in RAX, the result in RAX: -KVM_ENOSYS, -1000, for a number the machine does
//! not define), as VMCALL on VMX.

use super::SvmExit;
use opsvisor_core::Exit;

/// Decode a VMMCALL exit.
pub(crate) fn decode() -> SvmExit {
    SvmExit::Core(Exit::Hypercall)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{code, SvmExit};
    use opsvisor_core::Exit;

    #[test]
    fn vmmcall_is_a_hypercall() {
        assert_eq!(
            decode(code::VMMCALL, &[]),
            Ok(SvmExit::Core(Exit::Hypercall))
        );
    }
}

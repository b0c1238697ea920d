//! VMMCALL (exit code 0x81): core's hypercall path (which today answers #UD, as on a
//! processor without a hypervisor interface).

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

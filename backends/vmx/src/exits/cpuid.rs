//! CPUID (exit reason 10): always exits in VMX non-root operation; core reads the leaf
//! from EAX/ECX itself.

use super::VmxExit;
use opsvisor_core::Exit;

/// Decode a CPUID exit.
pub(crate) fn decode() -> VmxExit {
    VmxExit::Core(Exit::Cpuid)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::VmxExit;
    use opsvisor_core::Exit;

    #[test]
    fn cpuid_exit() {
        assert_eq!(decode(10, &[]), Ok(VmxExit::Core(Exit::Cpuid)));
    }
}

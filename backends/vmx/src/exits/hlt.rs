//! HLT (exit reason 12, with "HLT exiting").

use super::VmxExit;
use opsvisor_core::Exit;

/// Decode a HLT exit.
pub(crate) fn decode() -> VmxExit {
    VmxExit::Core(Exit::Hlt)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::VmxExit;
    use opsvisor_core::Exit;

    #[test]
    fn hlt_exit() {
        assert_eq!(decode(12, &[]), Ok(VmxExit::Core(Exit::Hlt)));
    }
}

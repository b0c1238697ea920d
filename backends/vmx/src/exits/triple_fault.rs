//! Triple fault (exit reason 2): the guest would have entered the shutdown state.

use super::VmxExit;
use opsvisor_core::Exit;

/// Decode a triple-fault exit.
pub(crate) fn decode() -> VmxExit {
    VmxExit::Core(Exit::TripleFault)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::VmxExit;
    use opsvisor_core::Exit;

    #[test]
    fn triple_fault_exit() {
        assert_eq!(decode(2, &[]), Ok(VmxExit::Core(Exit::TripleFault)));
    }
}

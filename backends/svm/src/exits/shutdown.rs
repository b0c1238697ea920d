//! Shutdown (exit code 0x7F): the guest triple-faulted (or otherwise entered the
//! shutdown state), which without the intercept would shut the processor down.

use super::SvmExit;
use opsvisor_core::Exit;

/// Decode a shutdown exit.
pub(crate) fn decode() -> SvmExit {
    SvmExit::Core(Exit::TripleFault)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{code, SvmExit};
    use opsvisor_core::Exit;

    #[test]
    fn shutdown_is_a_triple_fault() {
        assert_eq!(
            decode(code::SHUTDOWN, &[]),
            Ok(SvmExit::Core(Exit::TripleFault))
        );
    }
}

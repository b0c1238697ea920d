//! HLT (exit code 0x78): core sleeps until an interrupt or a timer deadline.

use super::SvmExit;
use opsvisor_core::Exit;

/// Decode a HLT exit.
pub(crate) fn decode() -> SvmExit {
    SvmExit::Core(Exit::Hlt)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{code, SvmExit};
    use opsvisor_core::Exit;

    #[test]
    fn hlt() {
        assert_eq!(decode(code::HLT, &[]), Ok(SvmExit::Core(Exit::Hlt)));
    }
}

//! INVD (exit code 0x76) and WBINVD/WBNOINVD (0x89): core retires them without touching
//! the host's caches.

use super::SvmExit;
use opsvisor_core::Exit;

/// Decode an INVD or WBINVD exit.
pub(crate) fn decode() -> SvmExit {
    SvmExit::Core(Exit::CacheFlush)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{code, SvmExit};
    use opsvisor_core::Exit;

    #[test]
    fn invd_and_wbinvd() {
        for c in [code::INVD, code::WBINVD] {
            assert_eq!(decode(c, &[]), Ok(SvmExit::Core(Exit::CacheFlush)));
        }
    }
}

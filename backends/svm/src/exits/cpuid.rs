//! CPUID (exit code 0x72): the leaf in EAX and the subleaf in ECX, which core reads
//! through the vCPU's registers.

use super::SvmExit;
use opsvisor_core::Exit;

/// Decode a CPUID exit.
pub(crate) fn decode() -> SvmExit {
    SvmExit::Core(Exit::Cpuid)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{code, SvmExit};
    use opsvisor_core::Exit;

    #[test]
    fn cpuid() {
        assert_eq!(decode(code::CPUID, &[]), Ok(SvmExit::Core(Exit::Cpuid)));
    }
}

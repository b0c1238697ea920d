//! Interrupt-type exits: physical INTR (0x60), NMI (0x61), SMI (0x62), INIT (0x63), and
//! the virtual-interrupt window (VINTR, 0x64: a V_IRQ the vCPU requested is about to be
//! taken, so a real interrupt can be injected now).

use super::{code, BackendExit, SvmExit};
use opsvisor_core::Exit;

/// Decode one of the exits above (`c` is one of their codes).
pub(crate) fn decode(c: u64) -> SvmExit {
    match c {
        code::INTR => SvmExit::Backend(BackendExit::HostInterrupt),
        code::NMI => SvmExit::Backend(BackendExit::HostNmi),
        code::SMI => SvmExit::Backend(BackendExit::HostSmi),
        code::INIT => SvmExit::Backend(BackendExit::Init),
        code::VINTR => SvmExit::Core(Exit::InterruptWindow),
        other => SvmExit::Backend(BackendExit::Unexpected { code: other }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{code, BackendExit, SvmExit};
    use opsvisor_core::Exit;

    #[test]
    fn interrupts() {
        assert_eq!(
            decode(code::INTR, &[]),
            Ok(SvmExit::Backend(BackendExit::HostInterrupt))
        );
        assert_eq!(
            decode(code::NMI, &[]),
            Ok(SvmExit::Backend(BackendExit::HostNmi))
        );
        assert_eq!(
            decode(code::SMI, &[]),
            Ok(SvmExit::Backend(BackendExit::HostSmi))
        );
        assert_eq!(
            decode(code::INIT, &[]),
            Ok(SvmExit::Backend(BackendExit::Init))
        );
        assert_eq!(
            decode(code::VINTR, &[]),
            Ok(SvmExit::Core(Exit::InterruptWindow))
        );
    }
}

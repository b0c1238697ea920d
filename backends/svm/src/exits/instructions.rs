//! The other intercepted instructions: RDTSC (0x6E) and RDTSCP (0x87), which read core's
//! clock; IRET (0x74), intercepted while an injected NMI blocks NMIs; RDPMC (0x6F),
//! RDPRU (0x8E), MONITOR (0x8A) and MWAIT (0x8B, 0x8C), intercepted to be refused with
//! #UD, and INVPCID (0xA2), intercepted when the guest's CPU model lacks it, also refused
//! with #UD. Every other defined code that reaches this module is one this backend's
//! intercepts never cause.

use super::{code, BackendExit, SvmExit};

/// Decode an instruction exit (or report an unexpected one).
pub(crate) fn decode(c: u64) -> SvmExit {
    if c == code::PAUSE {
        // Intercepted only when the core asks, on a machine of several vCPUs.
        return SvmExit::Core(opsvisor_core::Exit::Pause);
    }
    SvmExit::Backend(match c {
        code::RDTSC => BackendExit::Rdtsc,
        code::RDTSCP => BackendExit::Rdtscp,
        code::IRET => BackendExit::Iret,
        code::RDPMC
        | code::RDPRU
        | code::MONITOR
        | code::MWAIT
        | code::MWAIT_CONDITIONAL
        | code::INVPCID => BackendExit::RefusedInstruction { code: c },
        other => BackendExit::Unexpected { code: other },
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{code, BackendExit, SvmExit};

    #[test]
    fn instructions() {
        assert_eq!(
            decode(code::RDTSC, &[]),
            Ok(SvmExit::Backend(BackendExit::Rdtsc))
        );
        assert_eq!(
            decode(code::RDTSCP, &[]),
            Ok(SvmExit::Backend(BackendExit::Rdtscp))
        );
        assert_eq!(
            decode(code::IRET, &[]),
            Ok(SvmExit::Backend(BackendExit::Iret))
        );
        for c in [
            code::RDPMC,
            code::RDPRU,
            code::MONITOR,
            code::MWAIT,
            code::INVPCID,
        ] {
            assert_eq!(
                decode(c, &[]),
                Ok(SvmExit::Backend(BackendExit::RefusedInstruction {
                    code: c
                }))
            );
        }
        assert_eq!(
            decode(code::PAUSE, &[]),
            Ok(SvmExit::Core(opsvisor_core::Exit::Pause))
        );
        // Never caused by this backend's intercepts.
        for c in [code::TASK_SWITCH, code::INVLPG, code::POPF, 0x401] {
            assert_eq!(
                decode(c, &[]),
                Ok(SvmExit::Backend(BackendExit::Unexpected { code: c }))
            );
        }
    }
}

//! Condition codes of Jcc, SETcc, CMOVcc and LOOPcc, evaluated on RFLAGS.

use iced_x86::ConditionCode;

use super::flags::{CF, OF, PF, SF, ZF};

/// Evaluates condition `cc` on `rflags`. [`ConditionCode::None`] (an unconditional form) is
/// true.
#[inline(always)]
pub fn cond(cc: ConditionCode, rflags: u64) -> bool {
    let set = |flag: u64| rflags & flag != 0;
    let lt = set(SF) != set(OF);
    match cc {
        ConditionCode::None => true,
        ConditionCode::o => set(OF),
        ConditionCode::no => !set(OF),
        ConditionCode::b => set(CF),
        ConditionCode::ae => !set(CF),
        ConditionCode::e => set(ZF),
        ConditionCode::ne => !set(ZF),
        ConditionCode::be => set(CF) || set(ZF),
        ConditionCode::a => !set(CF) && !set(ZF),
        ConditionCode::s => set(SF),
        ConditionCode::ns => !set(SF),
        ConditionCode::p => set(PF),
        ConditionCode::np => !set(PF),
        ConditionCode::l => lt,
        ConditionCode::ge => !lt,
        ConditionCode::le => set(ZF) || lt,
        ConditionCode::g => !set(ZF) && !lt,
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    extern crate std;
    use std::format;

    use super::super::flags::AF;
    use super::super::testutil::Checker;
    use super::*;

    /// Runs `setcc` for condition `cc` on the host with RFLAGS = `f`.
    fn host(cc: ConditionCode, f: u64) -> bool {
        macro_rules! setcc {
            ($insn:literal) => {{
                let mut r: u8;
                let fl = f;
                // SAFETY: loads RFLAGS with status flags only and reads one condition; the
                // stack use is balanced.
                unsafe {
                    core::arch::asm!("push {f}", "popfq", concat!($insn, " {r}"),
                        f = in(reg) fl, r = out(reg_byte) r);
                }
                r != 0
            }};
        }
        match cc {
            ConditionCode::None => true,
            ConditionCode::o => setcc!("seto"),
            ConditionCode::no => setcc!("setno"),
            ConditionCode::b => setcc!("setb"),
            ConditionCode::ae => setcc!("setae"),
            ConditionCode::e => setcc!("sete"),
            ConditionCode::ne => setcc!("setne"),
            ConditionCode::be => setcc!("setbe"),
            ConditionCode::a => setcc!("seta"),
            ConditionCode::s => setcc!("sets"),
            ConditionCode::ns => setcc!("setns"),
            ConditionCode::p => setcc!("setp"),
            ConditionCode::np => setcc!("setnp"),
            ConditionCode::l => setcc!("setl"),
            ConditionCode::ge => setcc!("setge"),
            ConditionCode::le => setcc!("setle"),
            ConditionCode::g => setcc!("setg"),
        }
    }

    #[test]
    fn conditions_match_host() {
        let mut ck = Checker::new("condition codes (setcc)");
        // Every combination of the six status flags.
        for bitsel in 0u64..64 {
            let mut f = 2;
            for (i, flag) in [CF, PF, AF, ZF, SF, OF].into_iter().enumerate() {
                if bitsel & (1 << i) != 0 {
                    f |= flag;
                }
            }
            for cc in crate::exec::CCS {
                ck.case();
                ck.value(
                    || format!("{cc:?} flags {f:#x}"),
                    u64::from(cond(cc, f | (0xff << 40))),
                    u64::from(host(cc, f)),
                );
            }
        }
        ck.finish();
    }
}

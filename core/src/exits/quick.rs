//! The quick path: exits the run loop answers during the backend's run
//! ([`crate::ops::X86Ops::run_with`]), so that a backend which can go on in place (the
//! emulator) does not leave its run and enter it again for each.
//!
//! It takes only what needs nothing of the machine but the current vCPU's local APIC,
//! the CPUID policy, the port map and the POST-code register, and after which the run
//! loop would re-enter at once ([`crate::vm::Flow::Resume`]):
//! - CPUID;
//! - RDMSR of IA32_TSC on a backend that counts the TSC;
//! - a read of a local APIC register other than the timer's through the xAPIC page;
//! - a port access no device claims, and a write of the POST-code port (0x80, Linux's
//!   I/O delay).
//!
//! Each is answered by the handler the run loop itself calls, and counted and observed
//! as there. The sink also counts down the exits left before the run loop must read the
//! clock (`VmConfig::exits_per_clock_read`), and lets the last one go back to the run
//! loop, which reads the clock after it, as it would have.

use crate::apic::LocalApic;
use crate::cpuid::CpuidPolicy;
use crate::devices::bus::{Bus, PioDevice};
use crate::devices::post_code::PostCode;
use crate::exit::{Direction, Exit, ExitKind};
use crate::ops::{ExitSink, X86Ops};
use crate::platform::Platform;
use crate::stats::ExitStats;

/// The quick path's view of the machine for one run of the current vCPU.
pub(crate) struct QuickExits<'a, P: Platform> {
    /// The current vCPU's index.
    pub cpu: u32,
    /// Exits before the clock must be read, as the run loop counts them (down to 1: that
    /// exit goes back to the run loop).
    pub until_clock: u32,
    /// The current vCPU's local APIC.
    pub apic: &'a mut LocalApic,
    /// The TSC of the run's limit, at which the run loop reads APIC registers.
    pub now: u64,
    /// What CPUID reports.
    pub cpuid: &'a CpuidPolicy,
    /// The port map.
    pub pio: &'a Bus<PioDevice>,
    /// The POST-code register.
    pub post_code: &'a mut PostCode,
    /// The host services, which observe each exit.
    pub platform: &'a mut P,
    /// The exit counts.
    pub stats: &'a mut ExitStats,
}

/// The kinds of exit the quick path answers some of, one bit per [`ExitKind`] (it leaves
/// the rest of them to the run loop: an MSR but the TSC, an MMIO write or a timer
/// register, a port a device claims).
pub(crate) const QUICK_KINDS: u32 = 1 << ExitKind::Cpuid as u32
    | 1 << ExitKind::Rdmsr as u32
    | 1 << ExitKind::Io as u32
    | 1 << ExitKind::Mmio as u32;

/// Whether `exit` may be one the quick path answers: of [`QUICK_KINDS`], but an MMIO
/// write. By pattern, since the backend asks before it has the exit's kind (the kind's
/// bit costs the emulator's CPUID round trip about 10 host instructions more).
#[inline(always)]
fn quick_exit(exit: &Exit) -> bool {
    matches!(
        exit,
        Exit::Cpuid
            | Exit::Rdmsr { .. }
            | Exit::Io { .. }
            | Exit::Mmio {
                direction: Direction::Read,
                ..
            }
    )
}

impl<P: Platform> QuickExits<'_, P> {
    /// Count and observe `exit` as the run loop does before its handler.
    #[inline(always)]
    fn account<B: X86Ops>(&mut self, exit: &Exit, vcpu: &B) {
        self.stats.count(exit.kind());
        self.platform.observe_exit(self.cpu, exit, vcpu);
        self.until_clock -= 1;
    }
}

impl<P: Platform> ExitSink for QuickExits<'_, P> {
    #[inline(always)]
    fn may_take(&self, exit: &Exit) -> bool {
        self.until_clock > 1 && quick_exit(exit)
    }

    #[inline(always)]
    fn take<B: X86Ops>(&mut self, vcpu: &mut B, exit: &Exit) -> bool {
        if self.until_clock <= 1 {
            return false;
        }
        match *exit {
            Exit::Cpuid => {
                self.account(exit, vcpu);
                super::cpuid::answer_cpuid(self.cpuid, self.apic, vcpu);
                true
            }
            Exit::Rdmsr { index } => {
                // The counter the run loop's handler reads too (see `Vm::handle_rdmsr`);
                // a backend that keeps none leaves the exit to the MSR table.
                let tsc = match vcpu.guest_tsc() {
                    Some(tsc) if index == super::msr::MSR_TSC => tsc,
                    _ => return false,
                };
                self.account(exit, vcpu);
                super::msr::complete_rdmsr(vcpu, self.platform, tsc);
                true
            }
            Exit::Mmio {
                gpa,
                size,
                direction: Direction::Read,
                ..
            } => {
                let Some(offset) = super::mmio::xapic_page_offset(self.apic, gpa) else {
                    return false;
                };
                if super::mmio::apic_register_is_timer(offset as u32 & !3) {
                    return false;
                }
                self.account(exit, vcpu);
                let (size, mask) = super::mmio::mmio_size_mask(size);
                super::mmio::local_apic_read(
                    self.apic,
                    self.now,
                    offset,
                    size,
                    mask,
                    vcpu,
                    self.platform,
                );
                true
            }
            Exit::Io {
                port,
                size,
                direction,
                data,
            } => match self.pio.find(u64::from(port)) {
                None => {
                    self.account(exit, vcpu);
                    super::io::unclaimed_port_access(direction, size, vcpu, self.platform);
                    true
                }
                Some((PioDevice::PostCode, _)) if direction == Direction::Write => {
                    self.account(exit, vcpu);
                    // As the run loop's handler: the instruction retires, the low byte
                    // is recorded.
                    vcpu.skip_emulated_instruction();
                    self.post_code.write(data as u8);
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pattern the backend asks with and the kinds the run loop offers with name the
    /// same exits (MMIO writes aside, which the sink never takes).
    #[test]
    fn the_pattern_and_the_kinds_agree() {
        let mmio = |direction| Exit::Mmio {
            gpa: 0xfee0_0030,
            size: 4,
            direction,
            data: 0,
        };
        let exits = [
            Exit::Cpuid,
            Exit::Rdmsr { index: 0x10 },
            Exit::Wrmsr {
                index: 0x10,
                value: 0,
            },
            Exit::Io {
                port: 0x80,
                size: 1,
                direction: Direction::Write,
                data: 0,
            },
            mmio(Direction::Read),
            mmio(Direction::Write),
            Exit::Hlt,
            Exit::Pause,
            Exit::InterruptWindow,
            Exit::NmiWindow,
            Exit::Preempted,
            Exit::ExternalInterrupt,
            Exit::TripleFault,
            Exit::CacheFlush,
            Exit::Hypercall,
        ];
        for exit in exits {
            let by_kind =
                QUICK_KINDS & 1 << exit.kind() as u32 != 0 && exit != mmio(Direction::Write);
            assert_eq!(quick_exit(&exit), by_kind, "{exit:?}");
        }
    }
}

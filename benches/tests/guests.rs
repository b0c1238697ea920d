//! The benchmark guests do what the benchmarks claim: each loop makes exactly one exit of
//! its kind per iteration and retires the stated number of instructions.

use opsvisor_backends::Backend;
use opsvisor_benches::*;
use opsvisor_core::exit::ExitKind;
use opsvisor_core::vm::RunOutcome;
use opsvisor_core::{EmuSlot, X86Ops};
use opsvisor_emu::EmuVcpu;

fn emu() -> Backend {
    Backend::from(EmuSlot(EmuVcpu::new()))
}

#[test]
fn each_exit_loop_exits_once_per_iteration() {
    const N: u64 = 1000;
    for kind in ExitLoop::ALL {
        let code = exit_loop_program(kind, N).unwrap();
        let mut vm = bench_vm(emu(), &code).unwrap();
        assert_eq!(
            vm.run(),
            RunOutcome::DebugExit { status: 1 },
            "{}",
            kind.name()
        );
        let expect = match kind {
            ExitLoop::Baseline => None,
            ExitLoop::Cpuid => Some(ExitKind::Cpuid),
            ExitLoop::RdmsrTsc => Some(ExitKind::Rdmsr),
            ExitLoop::WrmsrX2apicEoi | ExitLoop::WrmsrTscDeadline => Some(ExitKind::Wrmsr),
            ExitLoop::OutNullPort => Some(ExitKind::Io),
            ExitLoop::ApicMmioRead => Some(ExitKind::Mmio),
        };
        if let Some(exit) = expect {
            // The x2APIC loop's set-up WRMSR and the final debug-exit OUT are the extras.
            let extra = match kind {
                ExitLoop::WrmsrX2apicEoi | ExitLoop::OutNullPort => 1,
                _ => 0,
            };
            assert_eq!(vm.stats.exits(exit), N + extra, "{}", kind.name());
        }
        // No #GP or other surprise: no unknown MSR was touched.
        assert_eq!(vm.bsp().msrs.unknown_accesses(), 0, "{}", kind.name());
    }
}

#[test]
fn throughput_loops_retire_the_stated_instruction_counts() {
    const N: u64 = 10_000;
    for (code, per_iteration) in [
        (int_loop_program(N).unwrap(), INT_LOOP_INSTRUCTIONS),
        (mem_loop_program(N).unwrap(), MEM_LOOP_INSTRUCTIONS),
    ] {
        let mut vm = bench_vm(emu(), &code).unwrap();
        assert_eq!(vm.run(), RunOutcome::DebugExit { status: 1 });
        let retired = vm.bsp().backend.instructions_retired().unwrap();
        // A few set-up and exit instructions besides the loop.
        assert!(
            (N * per_iteration..N * per_iteration + 16).contains(&retired),
            "retired {retired} for {N} iterations, stated {per_iteration} per iteration"
        );
    }
}

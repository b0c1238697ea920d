//! The SVM backend's exit-handling path on the host, without AMD-V: an `SvmVcpu` on
//! `ReplayVmcb` (an in-memory VMCB whose "VMRUN" records the next scripted #VMEXIT as the
//! processor would: exit code, EXITINFO1/2, NRIP, guest RIP and RAX, guest registers)
//! runs under core's real run loop (`Vm::run`), as the bare-metal image runs it (through
//! core's `Backend` enum), beside `vmx_exit` for the VMX backend.
//!
//! `svm_exit/*` time, per exit: the backend's post-VMRUN work (RAX back from the VMCB,
//! EXITINTINFO, exit decode, the instruction length from NRIP or EXITINFO2, for MMIO the
//! guest page walk, instruction fetch and decode), core's handler, and the completion's
//! VMCB writes (RIP advance, GPRs, interrupt shadow), plus the run loop's bookkeeping
//! and the pre-VMRUN work (EVENTINJ, RAX, TLB control, the deadline). The processor is
//! Bochs' `ryzen` (NRIP save, no decode assists, no VMCB clean bits). Only the world
//! switch (VMRUN and #VMEXIT with VMLOAD/VMSAVE) is missing: the image's `svm round trip`
//! line measures that part. `svm_decode/*` time the exit decode alone.
//!
//! Each iteration replays `iters` exits of one kind, then the guest's debug-exit OUT
//! that ends the run. The measured run must not allocate: a counting global allocator
//! checks it on every iteration.
// criterion_group! generates public functions without documentation.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use opsvisor_benches::{
    bench_vm, time_run_without_allocating, CountingAllocator, CODE_ADDR, NULL_PORT,
};
use opsvisor_core::ops::Gpr;
use opsvisor_core::platform::CapturePlatform;
use opsvisor_core::vm::{RunOutcome, Vm};
use opsvisor_core::{SvmSlot, Unavailable};
use opsvisor_emu::EmuVcpu;
use opsvisor_svm::caps::fixtures::BOCHS_RYZEN;
use opsvisor_svm::caps::SvmCaps;
use opsvisor_svm::exits::ExitDecoder;
use opsvisor_svm::replay::{no_msr, replay_phys, ReplayVmcb, ScriptedExit};
use opsvisor_svm::vmcb::InMemoryVmcb;
use opsvisor_svm::{SvmConfig, SvmVcpu};
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The image's backend set, with the SVM vCPU on the replaying VMCB.
type Backend = opsvisor_core::Backend<Unavailable, SvmVcpu<ReplayVmcb>, EmuVcpu>;

/// The xAPIC version register.
const APIC_VERSION: u64 = 0xfee0_0030;
/// `mov eax, [r9]`: the MMIO load the nested page fault replays (R9 = APIC_VERSION).
const MMIO_LOAD: [u8; 3] = [0x41, 0x8b, 0x01];

/// The exits measured, named as the emulator's and VMX's exit benchmarks.
fn scripts() -> [(&'static str, ScriptedExit); 5] {
    [
        ("cpuid", ScriptedExit::cpuid(CODE_ADDR, 0, 0)),
        ("rdmsr_tsc", ScriptedExit::rdmsr(CODE_ADDR, 0x10)),
        (
            "wrmsr_tsc_deadline",
            ScriptedExit::wrmsr(CODE_ADDR, 0x6e0, 0x7fff_ffff << 32),
        ),
        (
            "out_null_port",
            ScriptedExit::out(CODE_ADDR, NULL_PORT, 1, false, 0),
        ),
        (
            "apic_mmio_read",
            ScriptedExit::npf_read(CODE_ADDR, APIC_VERSION).gpr(Gpr::R9, APIC_VERSION),
        ),
    ]
}

/// A long-mode VM (the emulator benchmarks' machine) on a replaying SVM vCPU, run once
/// so that the nested page tables exist before anything is measured.
fn replay_vm(exit: ScriptedExit) -> Vm<Backend, CapturePlatform> {
    let caps = SvmCaps::read(&BOCHS_RYZEN).expect("fixture caps");
    let config = SvmConfig {
        to_phys: replay_phys,
        tsc_hz: 1_000_000_000,
        timer: None,
        probe_msr: no_msr,
    };
    // The debug exit: OUT 0xF4, EAX with EAX = 0.
    let last = ScriptedExit::out(CODE_ADDR, 0xf4, 4, true, 0);
    let replay = ReplayVmcb::new(exit, 16, last).expect("valid script");
    let vcpu = SvmVcpu::replay(caps, config, replay).expect("ryzen has nested paging");
    let mut vm = bench_vm(Backend::from(SvmSlot(vcpu)), &MMIO_LOAD).expect("benchmark VM");
    assert_eq!(vm.run(), RunOutcome::DebugExit { status: 1 });
    vm
}

fn replay_mut(vm: &mut Vm<Backend, CapturePlatform>) -> &mut ReplayVmcb {
    match &mut vm.bsp_mut().backend {
        Backend::Svm(SvmSlot(vcpu)) => vcpu.replay_mut(),
        _ => unreachable!("the benchmark VM is on SVM"),
    }
}

/// Replay `iters` exits and time the run; check it allocated nothing.
fn time_exits(vm: &mut Vm<Backend, CapturePlatform>, name: &str, iters: u64) -> Duration {
    replay_mut(vm).rearm(iters);
    time_run_without_allocating(vm, name)
}

fn exit_paths(c: &mut Criterion) {
    let mut group = c.benchmark_group("svm_exit");
    for (name, exit) in scripts() {
        let mut vm = replay_vm(exit);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| time_exits(&mut vm, name, iters))
        });
    }
    group.finish();
}

fn decode_only(c: &mut Criterion) {
    let caps = SvmCaps::read(&BOCHS_RYZEN).expect("fixture caps");
    let decoder = ExitDecoder::new(caps.features.decode_assists());
    let mut group = c.benchmark_group("svm_decode");
    for (name, exit) in scripts() {
        let mut vmcb = InMemoryVmcb::new();
        let mut gprs = [0u64; 16];
        exit.record(&mut vmcb, &mut gprs).expect("valid script");
        group.bench_function(name, |b| {
            b.iter(|| decoder.decode(black_box(&vmcb), black_box(&gprs)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = exit_paths, decode_only
}
criterion_main!(benches);

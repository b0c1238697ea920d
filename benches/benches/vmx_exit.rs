//! The VMX backend's exit-handling path on the host, without VT-x: a `VmxVcpu` on
//! `ReplayVmcs` (an in-memory VMCS whose "VM entry" records the next scripted exit as
//! the processor would: exit reason, qualification, instruction length, guest RIP,
//! guest-physical and linear address, guest registers) runs under core's real run loop
//! (`Vm::run`), as the bare-metal image runs it (through core's `Backend` enum).
//!
//! `vmx_exit/*` time, per exit: the backend's post-exit work (vectoring information,
//! exit decode, for MMIO the guest page walk, instruction fetch and decode), core's
//! handler, and the completion's VMCS writes (RIP advance, GPRs, interrupt shadow),
//! plus the run loop's own bookkeeping and the pre-entry work (preemption timer, event
//! injection check). Only the world switch (VMRESUME and the exit, hundreds of cycles
//! on silicon) is missing: the image's `vmx round trip` line measures that part.
//! `vmx_decode/*` time the exit decode alone.
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
use opsvisor_core::{Unavailable, VmxSlot};
use opsvisor_emu::EmuVcpu;
use opsvisor_vmx::caps::fixtures::CORE_I7_SKYLAKE_X;
use opsvisor_vmx::caps::VmxCaps;
use opsvisor_vmx::exits::ExitDecoder;
use opsvisor_vmx::replay::{replay_phys, ReplayVmcs, ScriptedExit};
use opsvisor_vmx::vmcs::InMemoryVmcs;
use opsvisor_vmx::{VmxConfig, VmxVcpu};
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The image's backend set, with the VMX vCPU on the replaying VMCS.
type Backend = opsvisor_core::Backend<VmxVcpu<ReplayVmcs>, Unavailable, EmuVcpu>;

/// The xAPIC version register.
const APIC_VERSION: u64 = 0xfee0_0030;
/// `mov eax, [r9]`: the MMIO load the EPT-violation exit replays (R9 = APIC_VERSION).
const MMIO_LOAD: [u8; 3] = [0x41, 0x8b, 0x01];

/// The exits measured, named as the emulator's exit benchmarks (`benches/exits.rs`).
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
            ScriptedExit::ept_read(CODE_ADDR, APIC_VERSION, APIC_VERSION)
                .gpr(Gpr::R9, APIC_VERSION),
        ),
    ]
}

/// A long-mode VM (the emulator benchmarks' machine) on a replaying VMX vCPU, run once
/// so that the EPT tables exist before anything is measured.
fn replay_vm(exit: ScriptedExit) -> Vm<Backend, CapturePlatform> {
    let caps = VmxCaps::read(&CORE_I7_SKYLAKE_X).expect("fixture caps");
    let config = VmxConfig {
        to_phys: replay_phys,
        tsc_hz: 1_000_000_000,
    };
    // The debug exit: OUT 0xF4, EAX with EAX = 0.
    let last = ScriptedExit::out(CODE_ADDR, 0xf4, 4, true, 0);
    let replay = ReplayVmcs::new(exit, 16, last).expect("valid script");
    let vcpu = VmxVcpu::replay(caps, config, replay).expect("skylake has EPT");
    let mut vm = bench_vm(Backend::from(VmxSlot(vcpu)), &MMIO_LOAD).expect("benchmark VM");
    assert_eq!(vm.run(), RunOutcome::DebugExit { status: 1 });
    vm
}

fn replay_mut(vm: &mut Vm<Backend, CapturePlatform>) -> &mut ReplayVmcs {
    match &mut vm.bsp_mut().backend {
        Backend::Vmx(VmxSlot(vcpu)) => vcpu.replay_mut(),
        _ => unreachable!("the benchmark VM is on VMX"),
    }
}

/// Replay `iters` exits and time the run; check it allocated nothing.
fn time_exits(vm: &mut Vm<Backend, CapturePlatform>, name: &str, iters: u64) -> Duration {
    replay_mut(vm).rearm(iters);
    time_run_without_allocating(vm, name)
}

fn exit_paths(c: &mut Criterion) {
    let mut group = c.benchmark_group("vmx_exit");
    for (name, exit) in scripts() {
        let mut vm = replay_vm(exit);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| time_exits(&mut vm, name, iters))
        });
    }
    group.finish();
}

fn decode_only(c: &mut Criterion) {
    let caps = VmxCaps::read(&CORE_I7_SKYLAKE_X).expect("fixture caps");
    let decoder = ExitDecoder::new(&caps);
    let mut group = c.benchmark_group("vmx_decode");
    for (name, exit) in scripts() {
        let mut vmcs = InMemoryVmcs::new();
        let mut gprs = [0u64; 16];
        exit.record(&mut vmcs, &mut gprs).expect("valid script");
        group.bench_function(name, |b| {
            b.iter(|| decoder.decode(black_box(&vmcs), black_box(&gprs)))
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

//! The vCPU on scripted exits ([`crate::replay`]): every exit handler, the completions'
//! VMCB writes, event injection and re-injection, the TLB controls, VMEXIT_INVALID and
//! the clean bits, on the test machines' capabilities (Bochs `ryzen`: NRIP save and
//! flush-by-ASID; QEMU: neither) and on one with decode assists and clean bits.

extern crate std;

use crate::caps::fixtures::{CpuidFixture, BOCHS_RYZEN, QEMU_TCG_MAX, ZEN_FEATURES};
use crate::caps::SvmCaps;
use crate::consistency::Inconsistency;
use crate::exits::code;
use crate::replay::{no_msr, replay_phys, ReplayError, ReplayVmcb, ScriptedExit};
use crate::vcpu::{SvmConfig, SvmFailure, SvmVcpu, ENTRY_FAILED_INVALID};
use crate::vmcb::fields::{self, misc1, tlb_control, vintr};
use crate::vmcb::VmcbAccess;
use opsvisor_core::cpuid::CpuidPolicy;
use opsvisor_core::exit::Direction;
use opsvisor_core::fpu::{FpuStateError, FxsaveArea};
use opsvisor_core::ops::{Event, Gpr, ResetKind, RunLimit, SegReg, Segment, X86Ops};
use opsvisor_core::platform::Platform;
use opsvisor_core::vm::{RunOutcome, Vm, VmConfig};
use opsvisor_core::{Exit, ExitKind, GuestMemory};

const LIMIT: RunLimit = RunLimit {
    tsc: 0,
    deadline: None,
    max_instructions: 1000,
};
const RIP: u64 = 0x1000;
const APIC_VERSION: u64 = 0xfee0_0030;

/// A clock that never moves and no console.
struct Still;

impl Platform for Still {
    fn now_ns(&self) -> u64 {
        0
    }
    fn wait(&mut self, _: Option<u64>) -> bool {
        false
    }
    fn console_write(&mut self, _: &[u8]) {}
    fn console_read(&mut self) -> Option<u8> {
        None
    }
    fn console_input_ready(&mut self) -> bool {
        false
    }
}

/// `OUT 0xF4, EAX` with EAX = 0: the debug exit with status 1.
fn debug_exit(rip: u64) -> ScriptedExit {
    ScriptedExit::out(rip, 0xf4, 4, true, 0)
}

/// The replay's page translation, folded into the 40 physical-address bits the test
/// machines report, so that VMRUN's checks of the VMCB's physical addresses hold (the
/// host's heap lies far above 2^40; allocations of one process do not collide mod 2^40).
fn phys40(addr: u64) -> u64 {
    replay_phys(addr) & ((1 << 40) - 1)
}

fn config() -> SvmConfig {
    SvmConfig {
        to_phys: phys40,
        tsc_hz: 1_000_000_000,
        timer: None,
        probe_msr: no_msr,
    }
}

fn vcpu_on(fixture: &CpuidFixture, repeat: ScriptedExit, count: u64) -> SvmVcpu<ReplayVmcb> {
    let caps = SvmCaps::read(fixture).unwrap();
    let replay = ReplayVmcb::new(repeat, count, debug_exit(0x9000)).unwrap();
    SvmVcpu::replay(caps, config(), replay).unwrap()
}

fn vcpu(repeat: ScriptedExit, count: u64) -> SvmVcpu<ReplayVmcb> {
    vcpu_on(&BOCHS_RYZEN, repeat, count)
}

/// 32-bit flat protected mode, no paging, at [`RIP`].
fn flat32(vcpu: &mut SvmVcpu<ReplayVmcb>) {
    vcpu.set_cr0(0x11);
    vcpu.set_segment(SegReg::Cs, &Segment::flat(8, Segment::CODE32));
    for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
        vcpu.set_segment(seg, &Segment::flat(0x10, Segment::DATA));
    }
    vcpu.set_rip(RIP);
}

fn vmcb(vcpu: &SvmVcpu<ReplayVmcb>, field: fields::Field) -> u64 {
    vcpu.replay_vmcb().vmcb().read(field)
}

#[test]
fn a_debuggers_stops_intercept_bp_and_db_and_step_on_hidden_tf() {
    use opsvisor_core::ops::GuestDebug;
    let mut vcpu = vcpu(ScriptedExit::cpuid(RIP, 0, 0), 3);
    flat32(&mut vcpu);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    let limit = RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: 1000,
    };
    let own = vmcb(&vcpu, fields::INTERCEPT_EXCEPTIONS);
    assert_eq!(own & 0b1010, 0, "the guest's own #BP and #DB by default");
    let step = GuestDebug {
        single_step: true,
        intercept_breakpoints: true,
        intercept_debug: false,
    };
    vcpu.set_guest_debug(step).unwrap();
    assert_eq!(vmcb(&vcpu, fields::INTERCEPT_EXCEPTIONS), own | 0b1010);
    assert_eq!(vcpu.run(&mut mem, &limit), Exit::Cpuid);
    // TF was the backend's for the VMRUN only.
    assert_eq!(vcpu.rflags() & (1 << 8), 0);
    // The core completes the CPUID: the step is done, the next run stops at once.
    vcpu.skip_emulated_instruction();
    let runs = vcpu.replay_vmcb().runs();
    assert_eq!(
        vcpu.run(&mut mem, &limit),
        Exit::Exception {
            vector: 1,
            error_code: None
        }
    );
    assert_eq!(vcpu.replay_vmcb().runs(), runs);
    vcpu.set_guest_debug(GuestDebug::default()).unwrap();
    assert_eq!(vmcb(&vcpu, fields::INTERCEPT_EXCEPTIONS), own);
    vcpu.skip_emulated_instruction();
    assert_eq!(vcpu.run(&mut mem, &limit), Exit::Cpuid);
    assert_eq!(vcpu.replay_vmcb().runs(), runs + 1);
}

#[test]
fn setup_writes_the_control_area() {
    let vcpu = vcpu(ScriptedExit::cpuid(RIP, 0, 0), 1);
    assert_eq!(
        vmcb(&vcpu, fields::INTERCEPT_MISC2) & 1,
        1,
        "VMRUN intercepted"
    );
    assert_eq!(vmcb(&vcpu, fields::NP_CONTROL), 1);
    assert_eq!(vmcb(&vcpu, fields::GUEST_ASID), 1);
    assert_ne!(vmcb(&vcpu, fields::VINTR) & vintr::V_INTR_MASKING, 0);
    assert_ne!(vmcb(&vcpu, fields::IOPM_BASE_PA), 0);
    assert_ne!(vmcb(&vcpu, fields::MSRPM_BASE_PA), 0);
    // The power-on state: real mode at F000:FFF0, EFER.SVME set but hidden.
    assert_eq!(vcpu.rip(), 0xfff0);
    assert_eq!(vcpu.segment(SegReg::Cs).base, 0xffff_0000);
    assert_eq!(vcpu.cr0(), 0x6000_0010);
    assert_eq!(vcpu.efer(), 0);
    assert_eq!(vmcb(&vcpu, fields::EFER), 1 << 12);
    assert_eq!(vcpu.gpr(Gpr::Rdx), 0x600);
    // The VMCB passes VMRUN's consistency checks.
    let caps = SvmCaps::read(&BOCHS_RYZEN).unwrap();
    assert_eq!(
        crate::consistency::check(vcpu.replay_vmcb().vmcb(), &caps),
        Ok(())
    );
}

#[test]
fn no_nested_paging_is_refused() {
    let caps = SvmCaps::read(&crate::caps::fixtures::BOCHS_TURION64_TYLER).unwrap();
    let replay = ReplayVmcb::new(ScriptedExit::hlt(0), 1, debug_exit(0)).unwrap();
    assert_eq!(
        SvmVcpu::replay(caps, config(), replay).unwrap_err(),
        crate::enable::EnableError::NoNpt
    );
}

#[test]
fn instruction_exits_complete_with_nrip() {
    let mut vcpu = vcpu(ScriptedExit::cpuid(RIP, 7, 0), 1);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    let e = vcpu.run(&mut mem, &LIMIT);
    assert_eq!(e, Exit::Cpuid, "{:?}", vcpu.last_failure());
    assert_eq!(vcpu.gpr(Gpr::Rax), 7);
    vcpu.set_gpr(Gpr::Rbx, 0xabcd);
    vcpu.set_gpr(Gpr::Rax, 0x1234);
    vcpu.skip_emulated_instruction();
    assert_eq!(vcpu.rip(), RIP + 2);
    assert_eq!(vcpu.gpr(Gpr::Rbx), 0xabcd);
    // The script's last exit, for ever after; RAX went to the VMCB at VMRUN.
    for _ in 0..2 {
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::Io {
                port: 0xf4,
                size: 4,
                direction: Direction::Write,
                data: 0
            }
        );
    }
    assert_eq!(vcpu.replay_vmcb().runs(), 3);
    // The nested tables were built for the guest's memory.
    let npt = vcpu.nested_tables().unwrap();
    assert_eq!(npt.format(), opsvisor_core::mmu::slat::SlatFormat::Npt);
    assert_eq!(vmcb(&vcpu, fields::N_CR3), npt.root());
}

#[test]
fn without_nrip_the_length_comes_from_the_instruction() {
    // QEMU has no NRIP save: CPUID with an operand-size prefix is 3 bytes long, read
    // from guest memory at CS:RIP.
    let exit = ScriptedExit::new(code::CPUID).field(fields::RIP, RIP);
    let mut vcpu = vcpu_on(&QEMU_TCG_MAX, exit, 1);
    flat32(&mut vcpu);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    mem.write(RIP, &[0x66, 0x0f, 0xa2]).unwrap();
    assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Cpuid);
    vcpu.skip_emulated_instruction();
    assert_eq!(vcpu.rip(), RIP + 3);
    // Garbage at RIP: the run ends with the reason.
    let mut vcpu = vcpu_on(&QEMU_TCG_MAX, exit, 1);
    flat32(&mut vcpu);
    // FF /7 is undefined.
    mem.write(RIP, &[0xff, 0xff, 0xff]).unwrap();
    assert_eq!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::EmulationFailure { rip: RIP }
    );
    assert_eq!(
        vcpu.last_failure(),
        Some(SvmFailure::InstructionLength {
            rip: RIP,
            paging: [0x11, 0, 0, 1 << 12]
        })
    );
    // I/O exits carry the next RIP in EXITINFO2 even there.
    let mut vcpu = vcpu_on(
        &QEMU_TCG_MAX,
        ScriptedExit::out(RIP, 0x80, 1, true, 0x55),
        1,
    );
    assert!(matches!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Io {
            port: 0x80,
            data: 0x55,
            ..
        }
    ));
    vcpu.skip_emulated_instruction();
    assert_eq!(vcpu.rip(), RIP + 2);
}

#[test]
fn mmio_read_through_the_walker_and_through_decode_assists() {
    // mov eax, [ecx] at RIP, ECX pointing at the xAPIC version register.
    let exit = ScriptedExit::npf_read(RIP, APIC_VERSION).gpr(Gpr::Rcx, APIC_VERSION);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    mem.write(RIP, &[0x8b, 0x01]).unwrap();
    for (fixture, exit) in [
        (&BOCHS_RYZEN, exit),
        // Decode assists: the bytes come with the exit; guest memory holds others.
        (&ZEN_FEATURES, exit.bytes(&[0x8b, 0x01, 0x90])),
    ] {
        let mut vcpu = vcpu_on(fixture, exit, 1);
        flat32(&mut vcpu);
        vcpu.set_gpr(Gpr::Rax, 0xffff_ffff_0000_0000);
        if fixture == &ZEN_FEATURES {
            mem.write(RIP, &[0x0f, 0xff]).unwrap();
        }
        let Exit::Mmio {
            gpa,
            size,
            direction,
            ..
        } = vcpu.run(&mut mem, &LIMIT)
        else {
            panic!(
                "{}: not an MMIO exit: {:?}",
                fixture.name,
                vcpu.last_failure()
            );
        };
        assert_eq!((gpa, size, direction), (APIC_VERSION, 4, Direction::Read));
        vcpu.complete_mmio(Some(0x5_0014));
        // A 32-bit load zero-extends into RAX.
        assert_eq!(vcpu.gpr(Gpr::Rax), 0x5_0014);
        assert_eq!(vcpu.rip(), RIP + 2);
    }
}

#[test]
fn rep_movsb_from_mmio_runs_element_by_element_without_entering_the_guest() {
    // rep movsb at RIP from the pc-testdev window (not RAM) to RAM at 0x8000, with and
    // without decode assists.
    let window = 0xff00_0000;
    let exit = ScriptedExit::npf_read(RIP, window)
        .gpr(Gpr::Rsi, window)
        .gpr(Gpr::Rdi, 0x8000)
        .gpr(Gpr::Rcx, 3);
    for (fixture, exit) in [
        (&BOCHS_RYZEN, exit),
        (&ZEN_FEATURES, exit.bytes(&[0xf3, 0xa4, 0x90])),
    ] {
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        mem.write(RIP, &[0xf3, 0xa4]).unwrap();
        let mut vcpu = vcpu_on(fixture, exit, 1);
        flat32(&mut vcpu);
        for (i, value) in [0x11, 0x22, 0x33].into_iter().enumerate() {
            assert_eq!(
                vcpu.run(&mut mem, &LIMIT),
                Exit::Mmio {
                    gpa: window + i as u64,
                    size: 1,
                    direction: Direction::Read,
                    data: 0
                },
                "{}: {:?}",
                fixture.name,
                vcpu.last_failure()
            );
            vcpu.complete_mmio(Some(value));
        }
        // The last element's store and the retirement come before the next VMRUN, which
        // meets the script's debug exit: one VMRUN for the whole instruction.
        assert!(matches!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::Io { port: 0xf4, .. }
        ));
        assert_eq!(vcpu.replay_vmcb().runs(), 2, "{}", fixture.name);
        let mut copied = [0u8; 3];
        mem.read(0x8000, &mut copied).unwrap();
        assert_eq!(copied, [0x11, 0x22, 0x33]);
        assert_eq!(
            (vcpu.gpr(Gpr::Rcx), vcpu.gpr(Gpr::Rsi), vcpu.gpr(Gpr::Rdi)),
            (0, window + 3, 0x8003)
        );
    }
}

#[test]
fn mmio_store_carries_its_data_and_fetches_fail_cleanly() {
    // mov [ecx], edx.
    let exit = ScriptedExit::new(code::NPF)
        .field(fields::RIP, RIP)
        .field(fields::EXITINFO1, (1 << 32) | 0x6)
        .field(fields::EXITINFO2, 0xfee0_00b0)
        .gpr(Gpr::Rcx, 0xfee0_00b0)
        .gpr(Gpr::Rdx, 0xdead_beef);
    let mut vcpu = vcpu(exit, 1);
    flat32(&mut vcpu);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    mem.write(RIP, &[0x89, 0x11]).unwrap();
    assert_eq!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Mmio {
            gpa: 0xfee0_00b0,
            size: 4,
            direction: Direction::Write,
            data: 0xdead_beef
        }
    );
    vcpu.complete_mmio(None);
    assert_eq!(vcpu.rip(), RIP + 2);
    // A fetch from outside RAM is core's SLAT violation.
    let fetch = ScriptedExit::new(code::NPF)
        .field(fields::RIP, 0xffff_0000)
        .field(fields::EXITINFO1, (1 << 32) | 0x14)
        .field(fields::EXITINFO2, 0xffff_0000);
    let mut vcpu = vcpu_on(&BOCHS_RYZEN, fetch, 1);
    assert_eq!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::SlatViolation { gpa: 0xffff_0000 }
    );
    // A fault on RAM means the tables are out of step: the run ends.
    let ram = ScriptedExit::npf_read(RIP, 0x2000);
    let mut vcpu = vcpu_on(&BOCHS_RYZEN, ram, 1);
    assert!(matches!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::EmulationFailure { .. }
    ));
}

#[test]
fn core_run_loop_handles_replayed_exits() {
    for (exit, kind, flat) in [
        (ScriptedExit::cpuid(RIP, 0, 0), ExitKind::Cpuid, false),
        (ScriptedExit::rdmsr(RIP, 0x10), ExitKind::Rdmsr, false),
        (
            ScriptedExit::wrmsr(RIP, 0x6e0, u64::MAX >> 1),
            ExitKind::Wrmsr,
            false,
        ),
        (
            ScriptedExit::out(RIP, 0x2f0, 1, false, 0),
            ExitKind::Io,
            false,
        ),
        (
            ScriptedExit::npf_read(RIP, APIC_VERSION).gpr(Gpr::Rcx, APIC_VERSION),
            ExitKind::Mmio,
            true,
        ),
    ] {
        for fixture in [&BOCHS_RYZEN, &QEMU_TCG_MAX] {
            let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
            // mov eax, [ecx]; the instruction the scripted exits stand for is read
            // only on QEMU (no NRIP) and for MMIO: CPUID, RDMSR, WRMSR there.
            let code: &[u8] = match kind {
                ExitKind::Cpuid => &[0x0f, 0xa2],
                ExitKind::Rdmsr => &[0x0f, 0x32],
                ExitKind::Wrmsr => &[0x0f, 0x30],
                _ => &[0x8b, 0x01],
            };
            mem.write(RIP, code).unwrap();
            let mut vcpu = vcpu_on(fixture, exit, 50);
            if flat || fixture == &QEMU_TCG_MAX {
                flat32(&mut vcpu);
            }
            let mut vm = Vm::new(
                vcpu,
                mem,
                Still,
                CpuidPolicy::emulator(),
                VmConfig::default(),
            );
            let outcome = vm.run();
            assert_eq!(
                outcome,
                RunOutcome::DebugExit { status: 1 },
                "{kind:?} on {}: {:?}",
                fixture.name,
                vm.bsp().backend.last_failure()
            );
            let io = u64::from(kind == ExitKind::Io);
            assert_eq!(vm.stats.exits(kind), 50 + io, "{kind:?}");
            assert_eq!(vm.bsp().backend.replay_vmcb().runs(), 51, "{kind:?}");
            assert_eq!(vm.stats.exits(ExitKind::Exception), 0);
            assert!(!vm.bsp().backend.event_pending(), "{kind:?}");
        }
    }
}

#[test]
fn vmmcall_is_the_hypercall_and_svm_instructions_raise_ud() {
    // VMMCALL is core's hypercall.
    let mut vcpu = vcpu(ScriptedExit::vmmcall(RIP), 1);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hypercall);
    // VMRUN, STGI, ...: #UD without a core exit, RIP on the instruction.
    let vmrun = ScriptedExit::new(code::VMRUN).field(fields::RIP, RIP);
    let mut vcpu = vcpu_on(&BOCHS_RYZEN, vmrun, 1);
    flat32(&mut vcpu);
    // The #UD is queued at the VMRUN exit and written into EVENTINJ at the next VMRUN,
    // whose exit is the script's last one.
    assert!(matches!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Io { port: 0xf4, .. }
    ));
    assert_eq!(vmcb(&vcpu, fields::EVENTINJ), 0x8000_0306);
    assert_eq!(vcpu.replay_vmcb().runs(), 2);
}

#[test]
fn injected_exceptions_set_rf_and_carry_their_error_code() {
    let mut vcpu = vcpu(ScriptedExit::hlt(RIP), 1);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    flat32(&mut vcpu);
    vcpu.inject_event(Event::Exception {
        vector: 13,
        error_code: Some(0x18),
    });
    assert!(vcpu.event_pending());
    assert!(!vcpu.interrupt_allowed());
    assert_eq!(vcpu.rflags() & (1 << 16), 1 << 16);
    assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt);
    assert_eq!(vmcb(&vcpu, fields::EVENTINJ), 0x0000_0018_8000_0b0d);
    assert!(!vcpu.event_pending());
    // Real mode: no error code, no RF.
    let mut vcpu = vcpu_on(&BOCHS_RYZEN, ScriptedExit::hlt(RIP), 1);
    vcpu.inject_event(Event::Exception {
        vector: 13,
        error_code: Some(0x18),
    });
    assert_eq!(vcpu.rflags() & (1 << 16), 0);
    vcpu.run(&mut mem, &LIMIT);
    assert_eq!(vmcb(&vcpu, fields::EVENTINJ), 0x8000_030d);
}

#[test]
fn an_interrupted_delivery_is_injected_again() {
    // A nested page fault while delivering external interrupt 0x20 (its IDT entry is
    // not RAM): the next VMRUN delivers it again, before anything core queues.
    let exit = ScriptedExit::npf_read(RIP, 0xfee0_0000)
        .field(fields::EXITINTINFO, 0x8000_0020)
        .field(fields::EXITINFO1, (1 << 33) | 0x4);
    let mut vcpu = vcpu(exit, 1);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    // A page-table access outside RAM ends the run, but the event is kept.
    assert_eq!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::SlatViolation { gpa: 0xfee0_0000 }
    );
    assert!(vcpu.event_pending());
    vcpu.inject_event(Event::ExternalInterrupt(0x31));
    vcpu.run(&mut mem, &LIMIT);
    assert_eq!(vmcb(&vcpu, fields::EVENTINJ), 0x8000_0020);
    // INT n is run again rather than re-injected.
    let int = ScriptedExit::npf_read(RIP, 0xfee0_0000)
        .field(fields::EXITINTINFO, 0x8000_0480)
        .field(fields::EXITINFO1, (1 << 33) | 0x4);
    let mut vcpu = vcpu_on(&BOCHS_RYZEN, int, 1);
    vcpu.run(&mut mem, &LIMIT);
    assert!(!vcpu.event_pending());
}

#[test]
fn the_interrupt_window_is_a_virtual_interrupt() {
    let window = ScriptedExit::new(code::VINTR).field(fields::RIP, RIP);
    let mut vcpu = vcpu(window, 1);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    vcpu.enable_irq_window(true);
    let v = vmcb(&vcpu, fields::VINTR);
    assert_ne!(v & vintr::V_IRQ, 0);
    assert_ne!(v & vintr::V_IGN_TPR, 0);
    assert_ne!(v & vintr::V_INTR_MASKING, 0);
    assert_ne!(
        vmcb(&vcpu, fields::INTERCEPT_MISC1) & u64::from(misc1::VINTR),
        0
    );
    assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::InterruptWindow);
    vcpu.enable_irq_window(false);
    assert_eq!(vmcb(&vcpu, fields::VINTR) & vintr::V_IRQ, 0);
    assert_eq!(
        vmcb(&vcpu, fields::INTERCEPT_MISC1) & u64::from(misc1::VINTR),
        0
    );
    // Interrupts are allowed with IF set and no shadow.
    vcpu.set_rflags(0x202);
    assert!(vcpu.interrupt_allowed());
    vcpu.set_interrupt_shadow(true);
    assert!(vcpu.interrupt_shadow() && !vcpu.interrupt_allowed());
    vcpu.set_interrupt_shadow(false);
    assert!(vcpu.interrupt_allowed());
}

#[test]
fn nmi_blocking_follows_the_handlers_iret() {
    let iret = ScriptedExit::new(code::IRET).field(fields::RIP, 0x2000);
    let mut vcpu = vcpu(iret, 1);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    assert!(vcpu.nmi_allowed());
    vcpu.inject_event(Event::Nmi);
    assert_ne!(
        vmcb(&vcpu, fields::INTERCEPT_MISC1) & u64::from(misc1::IRET),
        0
    );
    vcpu.enable_nmi_window(true);
    // The IRET exit: step over it with TF and intercept the #DB after it.
    let step = ScriptedExit::new(code::EXCP0 + 1).field(fields::RIP, 0x3000);
    vcpu.replay_mut().rescript(iret, 1, step).unwrap();
    assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::NmiWindow);
    assert!(vcpu.nmi_allowed());
    assert!(!vcpu.event_pending());
    assert_eq!(
        vmcb(&vcpu, fields::INTERCEPT_MISC1) & u64::from(misc1::IRET),
        0
    );
    // The step's #DB intercept is gone; #UD's stays.
    assert_eq!(vmcb(&vcpu, fields::INTERCEPT_EXCEPTIONS), 1 << 6);
    assert_eq!(vcpu.rflags() & (1 << 8), 0, "the step's TF is gone");
    // With NMIs unblocked, the window is open at once.
    assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::NmiWindow);
    vcpu.enable_nmi_window(false);
}

#[test]
fn tlb_flushes_by_asid_or_by_new_asid() {
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    // Ryzen flushes by ASID: a CR3 write flushes the non-global entries at the next
    // VMRUN, and TLB control goes back to nothing after it.
    let mut ryzen = vcpu(ScriptedExit::cpuid(RIP, 0, 0), 4);
    ryzen.run(&mut mem, &LIMIT);
    let asid = ryzen.asid();
    ryzen.set_cr3(0x5000);
    ryzen.run(&mut mem, &LIMIT);
    assert_eq!(
        vmcb(&ryzen, fields::TLB_CONTROL),
        tlb_control::FLUSH_ASID_NON_GLOBAL
    );
    ryzen.flush_tlb_all();
    ryzen.run(&mut mem, &LIMIT);
    assert_eq!(vmcb(&ryzen, fields::TLB_CONTROL), tlb_control::FLUSH_ASID);
    ryzen.run(&mut mem, &LIMIT);
    assert_eq!(vmcb(&ryzen, fields::TLB_CONTROL), tlb_control::DO_NOTHING);
    assert_eq!(ryzen.asid(), asid);
    ryzen.flush_tlb_gva(0x7000);
    assert_eq!(ryzen.replay_vmcb().invlpgas(), 1);
    // QEMU cannot flush by ASID: a flush takes a new ASID, and when its 15 run out,
    // ASID 1 again with every ASID flushed.
    let mut qemu = vcpu_on(&QEMU_TCG_MAX, ScriptedExit::cpuid(RIP, 0, 0), 40);
    let mut seen = std::vec::Vec::new();
    for _ in 0..20 {
        qemu.flush_tlb_all();
        qemu.run(&mut mem, &LIMIT);
        seen.push((qemu.asid(), vmcb(&qemu, fields::TLB_CONTROL)));
        assert_eq!(vmcb(&qemu, fields::GUEST_ASID), u64::from(qemu.asid()));
    }
    assert!(seen.iter().all(|&(a, _)| (1..16).contains(&a)));
    assert!(seen.contains(&(1, tlb_control::FLUSH_ALL)));
    assert!(!seen.iter().any(|&(_, t)| t == tlb_control::FLUSH_ASID));
}

#[test]
fn vmexit_invalid_names_the_failing_check_and_keeps_the_guest_state() {
    // The processor overwrites RIP, RSP, RAX and RFLAGS with the host's.
    let invalid = ScriptedExit::new(u64::MAX)
        .field(fields::RIP, 0xffff_8000_0000_1234)
        .field(fields::RSP, 0xffff_8000_0000_8000)
        .field(fields::RFLAGS, 0x46)
        .gpr(Gpr::Rax, 0xdead);
    let mut vcpu = vcpu(invalid, 1);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    flat32(&mut vcpu);
    vcpu.set_gpr(Gpr::Rsp, 0x8000);
    vcpu.set_gpr(Gpr::Rax, 0x42);
    // CR0.NW without CD.
    vcpu.set_cr0(0x2000_0011);
    assert_eq!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::EntryFailed {
            reason: ENTRY_FAILED_INVALID,
            detail: Inconsistency::Cr0NwWithoutCd(0x2000_0011).number()
        }
    );
    assert_eq!(
        vcpu.last_failure(),
        Some(SvmFailure::Invalid(Some(Inconsistency::Cr0NwWithoutCd(
            0x2000_0011
        ))))
    );
    assert_eq!(vcpu.rip(), RIP);
    assert_eq!(vcpu.gpr(Gpr::Rsp), 0x8000);
    assert_eq!(vcpu.gpr(Gpr::Rax), 0x42);
    assert_eq!(vcpu.rflags(), 2);
    // QEMU's spelling of the exit code, and a VMCB no listed check explains.
    let qemu = ScriptedExit::new(0xffff_ffff);
    let mut vcpu = vcpu_on(&BOCHS_RYZEN, qemu, 1);
    assert_eq!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::EntryFailed {
            reason: ENTRY_FAILED_INVALID,
            detail: 0
        }
    );
    assert_eq!(vcpu.last_failure(), Some(SvmFailure::Invalid(None)));
}

#[test]
fn clean_bits_never_hide_a_change() {
    // The synthetic processor has VMCB clean bits: a VMRUN that marks clean a field
    // written since the last one would run with a stale copy.
    let caps = SvmCaps::read(&ZEN_FEATURES).unwrap();
    let replay = ReplayVmcb::new(ScriptedExit::cpuid(RIP, 0, 0), 100, debug_exit(0x9000))
        .unwrap()
        .check_clean_bits();
    let mut vcpu = SvmVcpu::replay(caps, config(), replay).unwrap();
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    vcpu.run(&mut mem, &LIMIT);
    assert_ne!(
        vmcb(&vcpu, fields::VMCB_CLEAN),
        0x7ff,
        "the first VMRUN loads all"
    );
    vcpu.run(&mut mem, &LIMIT);
    assert_eq!(vmcb(&vcpu, fields::VMCB_CLEAN), 0x7ff, "nothing changed");
    flat32(&mut vcpu);
    vcpu.set_cr3(0x3000);
    vcpu.set_cr4(0x20);
    vcpu.set_gdt(opsvisor_core::ops::DescriptorTable {
        base: 0x500,
        limit: 0x17,
    });
    vcpu.set_cr2(0x1234);
    vcpu.enable_irq_window(true);
    vcpu.set_msr(0x277, 0x0606_0606_0606_0606);
    vcpu.inject_event(Event::ExternalInterrupt(0x40));
    vcpu.run(&mut mem, &LIMIT);
    let clean = vmcb(&vcpu, fields::VMCB_CLEAN) as u32;
    use crate::vmcb::fields::clean;
    for bit in [
        clean::CRX,
        clean::SEG,
        clean::DT,
        clean::CR2,
        clean::TPR,
        clean::NP,
        clean::INTERCEPTS,
    ] {
        assert_eq!(clean & bit, 0, "{bit:#x}");
    }
    assert_ne!(clean & clean::IOPM, 0);
    for _ in 0..10 {
        vcpu.skip_emulated_instruction();
        vcpu.set_rip(RIP);
        vcpu.run(&mut mem, &LIMIT);
    }
    assert_eq!(vcpu.replay_vmcb().clean_violations(), 0);
    // A write behind the vCPU's back is caught.
    vcpu.replay_mut().write(fields::CR4, 0x620).unwrap();
    vcpu.run(&mut mem, &LIMIT);
    assert_eq!(vcpu.replay_vmcb().clean_violations(), 1);
}

#[test]
fn rdtsc_reads_cores_clock() {
    let rdtsc = ScriptedExit::new(code::RDTSC)
        .field(fields::RIP, RIP)
        .field(fields::NRIP, RIP + 2);
    let mut vcpu = vcpu(rdtsc, 1);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    let limit = RunLimit {
        tsc: 0x1_0000_0000,
        ..LIMIT
    };
    assert!(matches!(
        vcpu.run(&mut mem, &limit),
        Exit::Io { port: 0xf4, .. }
    ));
    let tsc = (vcpu.gpr(Gpr::Rdx) << 32) | vcpu.gpr(Gpr::Rax);
    assert!(tsc >= 0x1_0000_0000, "{tsc:#x}");
    // The RDTSC retired: RIP moved past it before the final exit rewrote it.
    assert_eq!(vcpu.replay_vmcb().runs(), 2);
}

#[test]
fn rdtscp_reported_as_rdtsc_reads_tsc_aux() {
    // QEMU's TCG takes RDTSCP (0F 01 F9) through the RDTSC intercept, without NRIP:
    // the backend decodes the instruction and completes it as RDTSCP.
    let exit = ScriptedExit::new(code::RDTSC)
        .field(fields::RIP, RIP)
        .gpr(Gpr::Rcx, 0xc000_0103);
    let mut vcpu = vcpu_on(&QEMU_TCG_MAX, exit, 1);
    flat32(&mut vcpu);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    mem.write(RIP, &[0x0f, 0x01, 0xf9]).unwrap();
    assert!(vcpu.set_msr(0xc000_0103, 0x1234));
    assert!(matches!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Io { port: 0xf4, .. }
    ));
    assert_eq!(vcpu.gpr(Gpr::Rcx), 0x1234);
    // RDTSC itself leaves RCX alone.
    let exit = ScriptedExit::new(code::RDTSC)
        .field(fields::RIP, RIP)
        .gpr(Gpr::Rcx, 7);
    let mut vcpu = vcpu_on(&QEMU_TCG_MAX, exit, 1);
    flat32(&mut vcpu);
    mem.write(RIP, &[0x0f, 0x31]).unwrap();
    vcpu.run(&mut mem, &LIMIT);
    assert_eq!(vcpu.gpr(Gpr::Rcx), 7);
}

#[test]
fn instruction_bytes_left_from_an_earlier_exit_are_not_used() {
    // Decode assists fetch the bytes for #NPF and #PF only: after an RDTSC exit the
    // VMCB still holds an earlier exit's (here an RDTSC's), and the instruction at RIP,
    // RDTSCP, must be read from the guest.
    let exit = ScriptedExit::new(code::RDTSC)
        .field(fields::RIP, RIP)
        .field(fields::NRIP, RIP + 3)
        .bytes(&[0x0f, 0x31, 0x90])
        .gpr(Gpr::Rcx, 7);
    let mut vcpu = vcpu_on(&ZEN_FEATURES, exit, 1);
    flat32(&mut vcpu);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    mem.write(RIP, &[0x0f, 0x01, 0xf9]).unwrap();
    assert!(vcpu.set_msr(0xc000_0103, 0x1234));
    assert!(matches!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Io { port: 0xf4, .. }
    ));
    assert_eq!(vcpu.gpr(Gpr::Rcx), 0x1234, "completed as RDTSCP");
}

#[test]
fn string_io_elements_with_and_without_decode_assists() {
    // REP OUTSB to 0x3f8 through FS, 32-bit addressing: EXITINFO1 bits: string, REP,
    // SZ8, A32, segment 4 (FS), port.
    let info1 = (1 << 2) | (1 << 3) | (1 << 4) | (1 << 8) | (4 << 10) | (0x3f8 << 16);
    let outs = ScriptedExit::new(code::IOIO)
        .field(fields::RIP, RIP)
        .field(fields::EXITINFO1, info1)
        .field(fields::EXITINFO2, RIP + 3);
    for fixture in [&ZEN_FEATURES, &BOCHS_RYZEN] {
        let mut vcpu = vcpu_on(fixture, outs, 3);
        flat32(&mut vcpu);
        vcpu.set_segment(
            SegReg::Fs,
            &Segment {
                base: 0x10_0000,
                ..Segment::flat(0x10, Segment::DATA)
            },
        );
        vcpu.set_gpr(Gpr::Rsi, 0x200);
        vcpu.set_gpr(Gpr::Rcx, 3);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        // rep outsb with an FS override: what the instruction bytes say without
        // decode assists.
        mem.write(RIP, &[0x64, 0xf3, 0x6e]).unwrap();
        mem.write(0x10_0200, b"abc").unwrap();
        for (i, byte) in b"abc".iter().enumerate() {
            assert_eq!(
                vcpu.run(&mut mem, &LIMIT),
                Exit::Io {
                    port: 0x3f8,
                    size: 1,
                    direction: Direction::Write,
                    data: u32::from(*byte)
                },
                "{} element {i}: {:?}",
                fixture.name,
                vcpu.last_failure()
            );
            vcpu.skip_emulated_instruction();
        }
        assert_eq!(vcpu.gpr(Gpr::Rcx), 0);
        assert_eq!(vcpu.gpr(Gpr::Rsi), 0x203);
        assert_eq!(vcpu.rip(), RIP + 3);
    }
}

#[test]
fn ins_stores_before_the_next_vmrun() {
    // INSW from 0x1f0 through ES:DI, 16-bit addressing, no REP.
    let info1 = 1 | (1 << 2) | (1 << 5) | (1 << 7) | (0x1f0 << 16);
    let ins = ScriptedExit::new(code::IOIO)
        .field(fields::RIP, RIP)
        .field(fields::EXITINFO1, info1)
        .field(fields::EXITINFO2, RIP + 2);
    let mut vcpu = vcpu(ins, 1);
    flat32(&mut vcpu);
    vcpu.set_gpr(Gpr::Rdi, 0x3000);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    assert_eq!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Io {
            port: 0x1f0,
            size: 2,
            direction: Direction::Read,
            data: 0
        }
    );
    vcpu.complete_pio_in(0xbeef);
    assert_eq!(vcpu.rip(), RIP + 2);
    assert_eq!(vcpu.gpr(Gpr::Rdi), 0x3002);
    // The store happens before the next VMRUN.
    vcpu.run(&mut mem, &LIMIT);
    assert_eq!(mem.read_u16(0x3000).unwrap(), 0xbeef);
}

#[test]
fn control_register_exits() {
    // MOV CR8, RAX and MOV RBX, CR8 with decode assists (EXITINFO1 bit 63, the
    // register): core's CR8 exits, naming the register.
    let cr8 = ScriptedExit::new(code::CR0_WRITE + 8)
        .field(fields::RIP, RIP)
        .field(fields::NRIP, RIP + 4)
        .field(fields::EXITINFO1, 1 << 63)
        .gpr(Gpr::Rax, 9);
    let mut vcpu = vcpu_on(&ZEN_FEATURES, cr8, 1);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    assert_eq!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Cr8 {
            direction: Direction::Write,
            gpr: Gpr::Rax
        }
    );
    let read = ScriptedExit::new(code::CR0_READ + 8)
        .field(fields::RIP, RIP)
        .field(fields::NRIP, RIP + 4)
        .field(fields::EXITINFO1, (1 << 63) | 3);
    let mut vcpu = vcpu_on(&ZEN_FEATURES, read, 1);
    assert_eq!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Cr8 {
            direction: Direction::Read,
            gpr: Gpr::Rbx
        }
    );
    // The core retires it with NRIP.
    vcpu.skip_emulated_instruction();
    assert_eq!(vcpu.rip(), RIP + 4);
    // Without decode assists: MOV CR0, EAX decoded from guest memory; then CLTS.
    let mov = ScriptedExit::new(code::CR0_WRITE)
        .field(fields::RIP, RIP)
        .gpr(Gpr::Rax, 0x19);
    let mut vcpu = vcpu_on(&QEMU_TCG_MAX, mov, 1);
    flat32(&mut vcpu);
    mem.write(RIP, &[0x0f, 0x22, 0xc0]).unwrap();
    assert!(matches!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Io { port: 0xf4, .. }
    ));
    assert_eq!(vcpu.cr0(), 0x19);
    let clts = ScriptedExit::new(code::CR0_SEL_WRITE).field(fields::RIP, RIP);
    vcpu.replay_mut()
        .rescript(clts, 1, debug_exit(0x9000))
        .unwrap();
    vcpu.set_rip(RIP);
    mem.write(RIP, &[0x0f, 0x06]).unwrap();
    assert!(matches!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Io { port: 0xf4, .. }
    ));
    assert_eq!(vcpu.cr0(), 0x11, "CLTS cleared TS");
}

#[test]
fn long_mode_follows_efer_and_paging() {
    let mut vcpu = vcpu(ScriptedExit::hlt(RIP), 1);
    vcpu.set_cr4(0x20);
    vcpu.set_efer(1 << 8);
    vcpu.set_cr0(0x8000_0011);
    assert_eq!(vcpu.efer(), (1 << 8) | (1 << 10));
    assert_eq!(vmcb(&vcpu, fields::EFER), (1 << 8) | (1 << 10) | (1 << 12));
    vcpu.set_cr0(0x11);
    assert_eq!(vcpu.efer(), 1 << 8);
}

#[test]
fn msrs_live_in_the_vmcb() {
    let mut vcpu = vcpu(ScriptedExit::hlt(RIP), 1);
    for (index, field) in [
        (0xc000_0100, fields::FS.base),
        (0xc000_0101, fields::GS.base),
        (0xc000_0102, fields::KERNEL_GS_BASE),
        (0xc000_0081, fields::STAR),
        (0xc000_0082, fields::LSTAR),
        (0xc000_0083, fields::CSTAR),
        (0x174, fields::SYSENTER_CS),
        (0x175, fields::SYSENTER_ESP),
        (0x176, fields::SYSENTER_EIP),
        (0x277, fields::G_PAT),
    ] {
        assert!(vcpu.set_msr(index, 0x0606_0606_0606_0606), "{index:#x}");
        assert_eq!(vmcb(&vcpu, field), 0x0606_0606_0606_0606, "{index:#x}");
        assert_eq!(vcpu.get_msr(index), Some(0x0606_0606_0606_0606));
    }
    // SFMASK holds 32 bits.
    assert!(vcpu.set_msr(0xc000_0084, 0xde1c_61f9_0000_0700));
    assert_eq!(vmcb(&vcpu, fields::SFMASK), 0x700);
    assert_eq!(vcpu.get_msr(0xc000_0084), Some(0x700));
    // TSC_AUX lives in the processor (ryzen has RDTSCP).
    assert!(vcpu.set_msr(0xc000_0103, 7));
    assert_eq!(vcpu.get_msr(0xc000_0103), Some(7));
    assert_eq!(vcpu.get_msr(0x1b), None);
    assert!(!vcpu.set_msr(0xc000_0080, 0));
    // A power-on reset clears them.
    vcpu.vcpu_reset(ResetKind::PowerOn);
    assert_eq!(vcpu.get_msr(0xc000_0082), Some(0));
    assert_eq!(vcpu.get_msr(0x277), Some(opsvisor_core::arch::PAT_DEFAULT));
}

#[test]
fn shutdown_host_events_and_unexpected_exits() {
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    for (c, want) in [
        (code::SHUTDOWN, Exit::TripleFault),
        (code::INTR, Exit::Preempted),
        (code::NMI, Exit::ExternalInterrupt),
        // EDX holds the processor signature after reset.
        (
            code::XSETBV,
            Exit::Xsetbv {
                index: 0,
                value: 0x600 << 32,
            },
        ),
        (code::WBINVD, Exit::CacheFlush),
        // Intercepted when the core asks (several vCPUs): its turn ends.
        (code::PAUSE, Exit::Pause),
        // An exception other than #UD (the backend's) goes to core.
        (
            code::EXCP0 + 18,
            Exit::Exception {
                vector: 18,
                error_code: None,
            },
        ),
    ] {
        let exit = ScriptedExit::new(c)
            .field(fields::RIP, RIP)
            .field(fields::NRIP, RIP + 3);
        let mut vcpu = vcpu(exit, 1);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), want, "{c:#x}");
    }
    for c in [code::TASK_SWITCH, code::EXCP0 + 14] {
        let mut vcpu = vcpu(ScriptedExit::new(c).field(fields::RIP, RIP), 1);
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::EmulationFailure { rip: RIP },
            "{c:#x}"
        );
        assert!(matches!(
            vcpu.last_failure(),
            Some(SvmFailure::Unhandled(_))
        ));
    }
    let mut vcpu = vcpu(ScriptedExit::new(0x4ff), 1);
    assert!(matches!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::EmulationFailure { .. }
    ));
    assert!(matches!(vcpu.last_failure(), Some(SvmFailure::Decode(_))));
}

#[test]
fn scripts_are_checked() {
    let mut too_many = ScriptedExit::new(code::CPUID);
    for _ in 0..=crate::replay::MAX_SCRIPTED_FIELDS {
        too_many = too_many.field(fields::RIP, 0);
    }
    assert_eq!(
        ReplayVmcb::new(too_many, 1, debug_exit(0)).unwrap_err(),
        ReplayError::TooManyFields
    );
    let bad = fields::Field::new(0xffc, 8, "bad");
    assert_eq!(
        ReplayVmcb::new(
            ScriptedExit::new(code::CPUID).field(bad, 0),
            1,
            debug_exit(0)
        )
        .unwrap_err(),
        ReplayError::BadField(bad)
    );
}

#[test]
fn fpu_state_round_trips_and_mxcsr_is_checked() {
    let mut vcpu = vcpu(ScriptedExit::hlt(RIP), 1);
    let reset = vcpu.fpu_state().unwrap();
    assert_eq!(reset.mxcsr(), 0x1f80);
    assert_eq!(reset.fcw(), FxsaveArea::reset().fcw());
    let mut state = FxsaveArea::reset();
    state.set_fcw(0x27f);
    state.set_mxcsr(0x9fc0);
    state.set_xmm(15, 0x1234_5678_9abc_def0_0fed_cba9_8765_4321);
    vcpu.set_fpu_state(&state).unwrap();
    let back = vcpu.fpu_state().unwrap();
    assert_eq!(back.fcw(), 0x27f);
    assert_eq!(back.mxcsr(), 0x9fc0);
    assert_eq!(back.xmm(15), 0x1234_5678_9abc_def0_0fed_cba9_8765_4321);
    let mut bad = state;
    bad.set_mxcsr(1 << 20);
    assert!(matches!(
        vcpu.set_fpu_state(&bad),
        Err(FpuStateError::ReservedMxcsrBits { .. })
    ));
}

#[test]
fn cr2_reaches_the_processor_when_written() {
    let mut vcpu = vcpu(ScriptedExit::cpuid(RIP, 0, 0), 5);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    vcpu.run(&mut mem, &LIMIT);
    // The reset's CR2 went in once; exits leave it to the processor.
    assert_eq!(vcpu.replay_vmcb().processor_cr2(), (0, 1));
    vcpu.run(&mut mem, &LIMIT);
    assert_eq!(vcpu.replay_vmcb().processor_cr2(), (0, 1));
    // Core sets CR2 with a #PF: the next VMRUN finds it in the processor too.
    vcpu.set_cr2(0xdead_b000);
    vcpu.inject_event(Event::Exception {
        vector: 14,
        error_code: Some(2),
    });
    vcpu.run(&mut mem, &LIMIT);
    assert_eq!(vcpu.replay_vmcb().processor_cr2(), (0xdead_b000, 2));
    assert_eq!(vmcb(&vcpu, fields::CR2), 0xdead_b000);
}

#[test]
fn string_io_without_a_reported_address_size_decodes_it() {
    // INSW as QEMU 7.2 reports it: IN, string, SZ16, no address-size bit.
    let info1 = 1 | (1 << 2) | (1 << 5) | (0x1f0 << 16);
    let ins = ScriptedExit::new(code::IOIO)
        .field(fields::RIP, RIP)
        .field(fields::EXITINFO1, info1)
        .field(fields::EXITINFO2, RIP + 3);
    let mut vcpu = vcpu_on(&QEMU_TCG_MAX, ins, 1);
    flat32(&mut vcpu);
    // 32-bit code: `67 66 6d` is INSW with a 16-bit address (DI), `66 6d` with EDI.
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    mem.write(RIP, &[0x67, 0x66, 0x6d]).unwrap();
    vcpu.set_gpr(Gpr::Rdi, 0x1_3000);
    assert!(matches!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Io {
            port: 0x1f0,
            size: 2,
            direction: Direction::Read,
            ..
        }
    ));
    vcpu.complete_pio_in(0x1234);
    // DI wrapped within 16 bits: the element went to ES:0x3000.
    assert_eq!(vcpu.gpr(Gpr::Rdi), 0x1_3002);
    vcpu.run(&mut mem, &LIMIT);
    assert_eq!(mem.read_u16(0x3000).unwrap(), 0x1234);
}

#[test]
fn cr8_is_the_local_apics_tpr() {
    // MOV CR8, EDI in 32-bit protected mode: `lock mov cr0, edi` (F0 0F 22 C7), AMD's
    // spelling of CR8 there; the exit names CR8, and without decode assists (QEMU) the
    // register comes from decoding the instruction. The core takes it into the local
    // APIC's TPR (bits 7:4).
    let write = |rdi: u64| {
        ScriptedExit::new(code::CR0_WRITE + 8)
            .field(fields::RIP, RIP)
            .gpr(Gpr::Rdi, rdi)
    };
    let machine = |script: ScriptedExit| {
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        // lock mov cr0, edi; lock mov esi, cr0 (MOV ESI, CR8).
        mem.write(RIP, &[0xf0, 0x0f, 0x22, 0xc7]).unwrap();
        mem.write(RIP + 0x100, &[0xf0, 0x0f, 0x20, 0xc6]).unwrap();
        let mut vcpu = vcpu_on(&QEMU_TCG_MAX, script, 1);
        flat32(&mut vcpu);
        Vm::new(
            vcpu,
            mem,
            Still,
            CpuidPolicy::emulator(),
            VmConfig::default(),
        )
    };
    let mut vm = machine(write(0x9));
    assert_eq!(vm.run(), RunOutcome::DebugExit { status: 1 });
    assert_eq!(vm.stats.exits(ExitKind::Cr8), 1);
    assert_eq!(vm.bsp().apic.cr8(), 9);
    assert!(!vm.bsp().backend.event_pending());
    // TPR bits above 3: #GP(0), and the MOV does not retire (the #GP is written into
    // EVENTINJ at the next VMRUN, the script's last exit).
    let mut vm = machine(write(0x10));
    vm.run();
    assert_eq!(
        vm.bsp().backend.replay_vmcb().vmcb().read(fields::EVENTINJ),
        0x8000_0b0d
    );
    assert_eq!(vm.bsp().apic.cr8(), 0);
    // A read gives the TPR the APIC holds, however it was written.
    let read = ScriptedExit::new(code::CR0_READ + 8).field(fields::RIP, RIP + 0x100);
    let mut vm = machine(read);
    vm.bsp_mut().apic.set_cr8(5);
    vm.bsp_mut().backend.set_rip(RIP + 0x100);
    assert_eq!(vm.run(), RunOutcome::DebugExit { status: 1 });
    assert_eq!(vm.bsp().backend.gpr(Gpr::Rsi), 5);
    // Both directions of CR8 are intercepted.
    let cr = vm
        .bsp()
        .backend
        .replay_vmcb()
        .vmcb()
        .read(fields::INTERCEPT_CR);
    assert_eq!(cr & ((1 << 8) | (1 << 24)), (1 << 8) | (1 << 24));
}

/// A recorded-style CPUID with INVPCID, PCID and PKU (and XSAVE), which neither test
/// machine has all of: for the CPU-model gating of those.
const INVPCID_PKU: CpuidFixture = CpuidFixture {
    name: "synthetic with invpcid and pku",
    leaves: &[
        (0, [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
        (1, [0x0080_0f82, 0x0000_0800, 0x7eda_320b, 0x178b_fbff]),
        (7, [0, 0x209c_05a9, 0x0000_000c, 0]),
        (
            0x8000_0000,
            [0x8000_001f, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
        ),
        (0x8000_0001, [0x0080_0f82, 0, 0x35c1_33ff, 0x2fd3_fbff]),
        (0x8000_0008, [0x0000_3030, 0, 0, 0]),
        (0x8000_000a, [1, 0x8000, 0, 0x0001_b4ff]),
    ],
};

#[test]
fn the_model_is_what_the_processor_runs() {
    use opsvisor_core::cpuid::Feature;
    // QEMU's max: SMEP, SMAP, UMIP, FSGSBASE, LA57; no INVPCID or PCID.
    let qemu = vcpu_on(&QEMU_TCG_MAX, ScriptedExit::hlt(RIP), 1).supported_cpuid();
    for f in [
        Feature::Smep,
        Feature::Smap,
        Feature::Umip,
        Feature::Fsgsbase,
        Feature::La57,
        Feature::Rdtscp,
    ] {
        assert!(qemu.has_feature(f), "qemu: {f:?}");
    }
    for f in [Feature::Invpcid, Feature::Pcid] {
        assert!(!qemu.has_feature(f), "qemu: {f:?}");
    }
    // Bochs ryzen: no UMIP or LA57 (leaf 7 ECX is 0).
    let ryzen = vcpu(ScriptedExit::hlt(RIP), 1).supported_cpuid();
    assert!(ryzen.has_feature(Feature::Smep) && ryzen.has_feature(Feature::Smap));
    assert!(!ryzen.has_feature(Feature::Umip) && !ryzen.has_feature(Feature::La57));
    // Never PKU or XSAVE (PKRU and XCR0 are not switched); the core's own features
    // whatever the processor says.
    let full = vcpu_on(&INVPCID_PKU, ScriptedExit::hlt(RIP), 1).supported_cpuid();
    assert!(full.has_feature(Feature::Invpcid) && full.has_feature(Feature::Pcid));
    for policy in [&qemu, &ryzen, &full] {
        assert!(!policy.has_feature(Feature::Pku));
        assert!(!policy.has_feature(Feature::Xsave));
        assert!(policy.has_feature(Feature::X2apic));
        assert!(policy.has_feature(Feature::TscDeadline));
        assert_eq!(policy.cr4_allowed() & ((1 << 18) | (1 << 22)), 0);
    }
}

/// MOV CR4, RAX (0F 22 E0) intercepted at [`RIP`] in long mode, RAX = `value`.
fn mov_to_cr4(value: u64) -> ScriptedExit {
    ScriptedExit::new(code::CR0_WRITE + 4)
        .field(fields::RIP, RIP)
        .field(fields::NRIP, RIP + 3)
        .field(fields::EXITINFO1, 1 << 63)
        .gpr(Gpr::Rax, value)
}

#[test]
fn cr4_bits_of_features_the_model_lacks_raise_gp() {
    const PAE: u64 = 1 << 5;
    const SMEP: u64 = 1 << 20;
    const PKE: u64 = 1 << 22;
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    let long_mode = |vcpu: &mut SvmVcpu<ReplayVmcb>| {
        vcpu.set_cr4(PAE);
        vcpu.set_efer(1 << 8);
        vcpu.set_cr0(0x8000_0011);
        vcpu.set_rip(RIP);
    };
    // The processor has PKU, the model cannot: CR4 writes exit, and PKE raises #GP(0)
    // without retiring the MOV.
    let mut vcpu = vcpu_on(&INVPCID_PKU, mov_to_cr4(PAE | PKE), 1);
    let model = vcpu.supported_cpuid();
    vcpu.set_cpuid(&model);
    assert_ne!(vmcb(&vcpu, fields::INTERCEPT_CR) & (1 << 20), 0);
    long_mode(&mut vcpu);
    vcpu.run(&mut mem, &LIMIT);
    assert_eq!(vmcb(&vcpu, fields::EVENTINJ), 0x8000_0b0d);
    assert_eq!(vcpu.cr4(), PAE);
    // A bit the model has is taken, and the MOV retires.
    let mut vcpu = vcpu_on(&INVPCID_PKU, mov_to_cr4(PAE | SMEP), 1);
    vcpu.set_cpuid(&model);
    long_mode(&mut vcpu);
    vcpu.run(&mut mem, &LIMIT);
    assert_eq!(vcpu.cr4(), PAE | SMEP);
    assert_eq!(vmcb(&vcpu, fields::EVENTINJ), 0);
    assert_eq!(vcpu.rip(), 0x9000);
    // A model without SMEP: #GP there too; clearing PAE in long mode as well.
    let mut without = model.clone();
    without.set_feature(opsvisor_core::cpuid::Feature::Smep, false);
    for value in [PAE | SMEP, 0] {
        let mut vcpu = vcpu_on(&INVPCID_PKU, mov_to_cr4(value), 1);
        vcpu.set_cpuid(&without);
        long_mode(&mut vcpu);
        vcpu.run(&mut mem, &LIMIT);
        assert_eq!(vmcb(&vcpu, fields::EVENTINJ), 0x8000_0b0d, "{value:#x}");
        assert_eq!(vcpu.cr4(), PAE);
    }
    // A model with every CR4 bit the processor has leaves CR4 to the guest.
    let mut vcpu = vcpu_on(&QEMU_TCG_MAX, ScriptedExit::hlt(RIP), 1);
    vcpu.set_cpuid(&CpuidPolicy::emulator());
    assert_eq!(vmcb(&vcpu, fields::INTERCEPT_CR) & (1 << 20), 0);
}

#[test]
fn rdtscp_and_invpcid_follow_the_model() {
    use opsvisor_core::cpuid::Feature;
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    // INVPCID: intercepted (vector 5 bit 2) only when the processor has it and the
    // model does not; the exit raises #UD.
    let invpcid = ScriptedExit::new(code::INVPCID).field(fields::RIP, RIP);
    let mut vcpu = vcpu_on(&INVPCID_PKU, invpcid, 1);
    let mut model = vcpu.supported_cpuid();
    vcpu.set_cpuid(&model);
    assert_eq!(vmcb(&vcpu, fields::INTERCEPT_MISC3), 0);
    model.set_feature(Feature::Invpcid, false);
    model.set_feature(Feature::Rdtscp, false);
    vcpu.set_cpuid(&model);
    assert_eq!(vmcb(&vcpu, fields::INTERCEPT_MISC3), 1 << 2);
    flat32(&mut vcpu);
    vcpu.run(&mut mem, &LIMIT);
    assert_eq!(vmcb(&vcpu, fields::EVENTINJ), 0x8000_0306);
    // RDTSCP without the model's RDTSCP: #UD, RCX untouched.
    let rdtscp = ScriptedExit::new(code::RDTSCP)
        .field(fields::RIP, RIP)
        .field(fields::NRIP, RIP + 3);
    let mut vcpu = vcpu_on(&INVPCID_PKU, rdtscp, 1);
    vcpu.set_cpuid(&model);
    vcpu.set_gpr(Gpr::Rcx, 77);
    flat32(&mut vcpu);
    vcpu.run(&mut mem, &LIMIT);
    assert_eq!(vmcb(&vcpu, fields::EVENTINJ), 0x8000_0306);
    assert_eq!(vcpu.gpr(Gpr::Rcx), 77);
}

#[test]
fn debug_registers_live_in_the_vmcb_and_the_processor() {
    use opsvisor_core::ops::DebugRegs;
    let mut vcpu = vcpu(ScriptedExit::hlt(RIP), 1);
    // After reset: DR6 and DR7 at their reset values.
    assert_eq!(vcpu.debug_regs(), DebugRegs::default());
    vcpu.set_debug_regs(&DebugRegs {
        db: [0x1000, 0x2000, 0xffff_8000_0000_3000, 0x4000],
        // B0 and BS, and bits that are not writable.
        dr6: 0x4001 | (1 << 40) | 0x30,
        // L0 with a 4-byte write watch, GD, and bit 11 (reserved, reads 0).
        dr7: 0x000d_2001 | (1 << 11) | (1 << 40),
    });
    let r = vcpu.debug_regs();
    assert_eq!(r.db, [0x1000, 0x2000, 0xffff_8000_0000_3000, 0x4000]);
    assert_eq!(r.dr6, 0xffff_0ff0 | 0x4001);
    assert_eq!(r.dr7, 0x000d_2401);
    // DR6 and DR7 are the VMCB's (VMRUN loads them); DR0-DR3 the processor's.
    assert_eq!(vmcb(&vcpu, fields::DR6), 0xffff_4ff1);
    assert_eq!(vmcb(&vcpu, fields::DR7), 0x000d_2401);
    assert_eq!(
        crate::consistency::check(vcpu.replay_vmcb().vmcb(), vcpu.caps()),
        Ok(())
    );
}

#[test]
fn vmmcall_is_answered_with_kvms_abi() {
    // VMMCALL in real mode (reset) with an unknown number: -KVM_ENOSYS truncated to
    // 32 bits, the instruction retired.
    let call = ScriptedExit::vmmcall(0xfff0).gpr(Gpr::Rax, 12345);
    let caps = SvmCaps::read(&BOCHS_RYZEN).unwrap();
    // Then HLT with interrupts off, which ends the run and leaves RAX alone.
    let replay = ReplayVmcb::new(call, 1, ScriptedExit::hlt(0xfff3)).unwrap();
    let vcpu = SvmVcpu::replay(caps, config(), replay).unwrap();
    let mem = GuestMemory::with_ram(2 << 20).unwrap();
    let mut vm = Vm::new(
        vcpu,
        mem,
        Still,
        CpuidPolicy::emulator(),
        VmConfig::default(),
    );
    assert_eq!(vm.run(), RunOutcome::HaltedForever);
    assert_eq!(vm.stats.exits(ExitKind::Hypercall), 1);
    assert_eq!(vm.stats.exits(ExitKind::Exception), 0);
    assert_eq!(vm.bsp().backend.gpr(Gpr::Rax) as u32, -1000i32 as u32);
}

/// A #UD exit at [`RIP`] (exception intercept vector 6; no NRIP for exceptions).
fn invalid_opcode() -> ScriptedExit {
    ScriptedExit::new(code::EXCP0 + 6).field(fields::RIP, RIP)
}

/// 32-bit flat protected mode at CPL 3: user code and stack segments.
fn flat32_user(vcpu: &mut SvmVcpu<ReplayVmcb>) {
    flat32(vcpu);
    vcpu.set_segment(SegReg::Cs, &Segment::flat(0x1b, Segment::CODE32 | 0x60));
    vcpu.set_segment(SegReg::Ss, &Segment::flat(0x23, Segment::DATA | 0x60));
}

#[test]
fn vmcall_arrives_as_invalid_opcode_and_is_the_hypercall() {
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    // A bare VMCALL is 3 bytes; with a CS override, 4 (the emulator's decoding).
    for (bytes, len) in [(&[0x0f, 0x01, 0xc1][..], 3), (&[0x2e, 0x0f, 0x01, 0xc1], 4)] {
        for fixture in [&BOCHS_RYZEN, &QEMU_TCG_MAX, &ZEN_FEATURES] {
            let mut vcpu = vcpu_on(fixture, invalid_opcode(), 1);
            flat32(&mut vcpu);
            mem.write(RIP, bytes).unwrap();
            assert_eq!(
                vcpu.run(&mut mem, &LIMIT),
                Exit::Hypercall,
                "{}",
                fixture.name
            );
            assert!(!vcpu.event_pending());
            vcpu.skip_emulated_instruction();
            assert_eq!(vcpu.rip(), RIP + len, "{}", fixture.name);
        }
    }
}

#[test]
fn other_invalid_opcodes_go_back_to_the_guest() {
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    // UD2; VMCALL with an operand-size or a LOCK prefix; VMCALL cut short by the end of
    // RAM (a fetch that reads two bytes).
    for (at, bytes) in [
        (RIP, &[0x0f, 0x0b][..]),
        (RIP, &[0x66, 0x0f, 0x01, 0xc1]),
        (RIP, &[0xf0, 0x0f, 0x01, 0xc1]),
        ((2 << 20) - 2, &[0x0f, 0x01]),
    ] {
        let exit = ScriptedExit::new(code::EXCP0 + 6).field(fields::RIP, at);
        let mut vcpu = vcpu(exit, 1);
        flat32(&mut vcpu);
        mem.write(at, bytes).unwrap();
        // The #UD is queued at the exit (no core exit) and written into EVENTINJ at the
        // next VMRUN, whose exit is the script's last one: vector 6, no error code.
        assert!(
            matches!(vcpu.run(&mut mem, &LIMIT), Exit::Io { port: 0xf4, .. }),
            "{bytes:02x?}"
        );
        assert_eq!(vmcb(&vcpu, fields::EVENTINJ), 0x8000_0306, "{bytes:02x?}");
        assert_eq!(vcpu.replay_vmcb().runs(), 2);
    }
}

/// Run `call` (at [`RIP`], then HLT with interrupts off) in a VM, flat 32-bit at CPL 0
/// or 3; the VM's hypercall and exception exit counts, and RAX after.
fn hypercall_in_vm(call: ScriptedExit, user: bool, bytes: &[u8]) -> (u64, u64, u64) {
    let caps = SvmCaps::read(&BOCHS_RYZEN).unwrap();
    let call = call.gpr(Gpr::Rax, 12345);
    let replay = ReplayVmcb::new(call, 1, ScriptedExit::hlt(RIP + 3)).unwrap();
    let mut vcpu = SvmVcpu::replay(caps, config(), replay).unwrap();
    if user {
        flat32_user(&mut vcpu);
    } else {
        flat32(&mut vcpu);
    }
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    mem.write(RIP, bytes).unwrap();
    let mut vm = Vm::new(
        vcpu,
        mem,
        Still,
        CpuidPolicy::emulator(),
        VmConfig::default(),
    );
    assert_eq!(vm.run(), RunOutcome::HaltedForever);
    (
        vm.stats.exits(ExitKind::Hypercall),
        vm.stats.exits(ExitKind::Exception),
        vm.bsp().backend.gpr(Gpr::Rax),
    )
}

#[test]
fn vmcall_is_answered_as_vmmcall_at_every_privilege_level() {
    let vmcall = [0x0f, 0x01, 0xc1];
    let vmmcall = [0x0f, 0x01, 0xd9];
    // CPL 0, an unknown number: -KVM_ENOSYS (-1000) in EAX, zero-extended outside
    // 64-bit mode. CPL 3: -KVM_EPERM (-1), as for VMMCALL at CPL 3.
    for (user, result) in [(false, -1000i32), (true, -1)] {
        let expected = (1, 0, u64::from(result as u32));
        assert_eq!(
            hypercall_in_vm(invalid_opcode(), user, &vmcall),
            expected,
            "vmcall, cpl 3: {user}"
        );
        assert_eq!(
            hypercall_in_vm(ScriptedExit::vmmcall(RIP), user, &vmmcall),
            expected,
            "vmmcall, cpl 3: {user}"
        );
    }
}

/// RFLAGS.TF and RFLAGS.RF.
const TF: u64 = 1 << 8;
const RF: u64 = 1 << 16;
/// DR6 as reset leaves it, and its BS bit.
const DR6_RESET: u64 = 0xffff_0ff0;
const DR6_BS: u64 = 1 << 14;
/// EVENTINJ of a #DB: vector 1, type 3 (exception), valid.
const EVENTINJ_DB: u64 = 0x8000_0301;

/// The debug registers with DR0-DR3 `db`, DR6 `dr6` and DR7 `dr7`.
fn debug_regs(db: [u64; 4], dr6: u64, dr7: u64) -> opsvisor_core::ops::DebugRegs {
    opsvisor_core::ops::DebugRegs { db, dr6, dr7 }
}

/// The next VMRUN (the script's debug exit) carries the event queued before it: its
/// EVENTINJ word.
fn injected_at_next_run(vcpu: &mut SvmVcpu<ReplayVmcb>, mem: &mut GuestMemory) -> u64 {
    vcpu.run(mem, &LIMIT);
    vmcb(vcpu, fields::EVENTINJ)
}

#[test]
fn single_step_over_a_skipped_instruction_injects_db_after_it() {
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    // CPUID with TF (and RF, left by an IRETQ from an earlier #DB handler), DR6 still
    // reporting breakpoint 1 from before and DR7.GD set.
    let mut vcpu = self::vcpu(ScriptedExit::cpuid(RIP, 0, 0), 1);
    vcpu.set_debug_regs(&debug_regs([0; 4], DR6_RESET | 0b10, 0x400 | (1 << 13)));
    vcpu.set_rflags(0x2 | TF | RF);
    assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Cpuid);
    assert!(!vcpu.event_pending());
    vcpu.skip_emulated_instruction();
    // The trap: after the instruction, BS with B0-B3 replaced, GD cleared as delivering
    // a #DB clears it, RF cleared as completing an instruction clears it, TF kept.
    assert_eq!(vcpu.rip(), RIP + 2);
    assert!(vcpu.event_pending());
    assert_eq!(vcpu.rflags(), 0x2 | TF);
    let regs = vcpu.debug_regs();
    assert_eq!(regs.dr6, DR6_RESET | DR6_BS);
    assert_eq!(regs.dr7, 0x400);
    // Nothing else is injected over it (core asks event_pending first; a late one
    // waits).
    vcpu.inject_event(Event::ExternalInterrupt(0x30));
    assert_eq!(injected_at_next_run(&mut vcpu, &mut mem), EVENTINJ_DB);
    assert_eq!(vcpu.rip(), 0x9000);

    // The same for the instructions the core completes through other exits: RDMSR,
    // WRMSR, VMMCALL and an OUT with no breakpoint armed.
    for exit in [
        ScriptedExit::rdmsr(RIP, 0x10),
        ScriptedExit::wrmsr(RIP, 0x10, 0),
        ScriptedExit::vmmcall(RIP),
        ScriptedExit::out(RIP, 0x80, 1, true, 0x42),
    ] {
        let mut vcpu = self::vcpu(exit, 1);
        vcpu.set_rflags(0x2 | TF);
        let e = vcpu.run(&mut mem, &LIMIT);
        assert!(!matches!(e, Exit::EmulationFailure { .. }), "{e:?}");
        vcpu.skip_emulated_instruction();
        assert!(vcpu.event_pending(), "{e:?}");
        assert_eq!(vcpu.debug_regs().dr6, DR6_RESET | DR6_BS, "{e:?}");
        assert_eq!(injected_at_next_run(&mut vcpu, &mut mem), EVENTINJ_DB);
    }

    // Without TF, or over HLT (the halt ends with the interrupt core delivers): no
    // trap, and DR6 untouched; RF is cleared all the same.
    for (exit, rflags) in [
        (ScriptedExit::cpuid(RIP, 0, 0), 0x2 | RF),
        (ScriptedExit::hlt(RIP), 0x2 | TF | RF),
    ] {
        let mut vcpu = self::vcpu(exit, 1);
        vcpu.set_rflags(rflags);
        vcpu.run(&mut mem, &LIMIT);
        vcpu.skip_emulated_instruction();
        assert!(!vcpu.event_pending());
        assert_eq!(vcpu.rflags() & RF, 0);
        assert_eq!(vcpu.debug_regs().dr6, DR6_RESET);
        assert_eq!(injected_at_next_run(&mut vcpu, &mut mem), 0);
    }
}

#[test]
fn io_breakpoint_of_a_skipped_port_access_injects_db_after_it() {
    const CR4_DE: u64 = 1 << 3;
    // Breakpoint 2 on ports 0x80-0x81 (R/W 10, LEN 01: two bytes, the address masked
    // to them), locally enabled; breakpoint 0 on the same ports, not enabled.
    let dr7 = 0x400 | (1 << 4) | (2 << 24) | (1 << 26) | (2 << 16);
    let armed = debug_regs([0x80, 0, 0x81, 0], DR6_RESET, dr7);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    let out = ScriptedExit::out(RIP, 0x80, 1, true, 0x42);

    let mut vcpu = self::vcpu(out, 1);
    vcpu.set_cr4(CR4_DE);
    vcpu.set_debug_regs(&armed);
    assert!(matches!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Io { port: 0x80, .. }
    ));
    vcpu.skip_emulated_instruction();
    assert_eq!(vcpu.rip(), RIP + 2);
    assert!(vcpu.event_pending());
    // B2 and the matching B0 (reported with an enabled one); DR6 bit 12 is reserved
    // and stays 0; no BS without TF.
    assert_eq!(vcpu.debug_regs().dr6, DR6_RESET | 0b101);
    assert_eq!(injected_at_next_run(&mut vcpu, &mut mem), EVENTINJ_DB);

    // An IN of port 0x81 (DX form), with TF: both causes in one #DB.
    let in_81 = ScriptedExit::new(code::IOIO)
        .field(fields::RIP, RIP)
        .field(fields::EXITINFO1, 1 | (1 << 4) | (1 << 9) | (0x81 << 16))
        .field(fields::EXITINFO2, RIP + 1)
        .gpr(Gpr::Rdx, 0x81);
    let mut vcpu = self::vcpu(in_81, 1);
    vcpu.set_cr4(CR4_DE);
    vcpu.set_debug_regs(&armed);
    vcpu.set_rflags(0x2 | TF);
    assert!(matches!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Io {
            port: 0x81,
            direction: Direction::Read,
            ..
        }
    ));
    vcpu.complete_pio_in(0x5a);
    assert_eq!(vcpu.rip(), RIP + 1);
    assert_eq!(vcpu.gpr(Gpr::Rax) & 0xff, 0x5a);
    // Breakpoint 0 covers port 0x80 alone (LEN 00).
    assert_eq!(vcpu.debug_regs().dr6, DR6_RESET | DR6_BS | 0b100);
    assert_eq!(injected_at_next_run(&mut vcpu, &mut mem), EVENTINJ_DB);

    // No trap: without CR4.DE (R/W 10 is undefined then), for a port outside the
    // range, or with the matching breakpoint not enabled.
    let outside = ScriptedExit::out(RIP, 0x82, 1, true, 0);
    let not_enabled = debug_regs([0, 0, 0x81, 0], DR6_RESET, dr7 & !(1 << 4));
    for (exit, cr4, regs) in [
        (out, 0, armed),
        (outside, CR4_DE, armed),
        (out, CR4_DE, not_enabled),
    ] {
        let mut vcpu = self::vcpu(exit, 1);
        vcpu.set_cr4(cr4);
        vcpu.set_debug_regs(&regs);
        vcpu.run(&mut mem, &LIMIT);
        vcpu.skip_emulated_instruction();
        assert!(!vcpu.event_pending());
        assert_eq!(vcpu.debug_regs().dr6, DR6_RESET);
    }
}

/// Two vCPUs of QEMU's SVM (15 ASIDs, no flush by ASID), taking their ASIDs from the
/// processor's one allocator as `SvmHost::new_vcpu` gives it to them.
fn vcpus_sharing_asids() -> (SvmVcpu<ReplayVmcb>, SvmVcpu<ReplayVmcb>) {
    let caps = SvmCaps::read(&QEMU_TCG_MAX).unwrap();
    let pool = crate::asid::AsidAllocator::new(caps.asids).unwrap();
    let pool = std::rc::Rc::new(core::cell::RefCell::new(pool));
    let make = || {
        let replay =
            ReplayVmcb::new(ScriptedExit::cpuid(RIP, 0, 0), 100, debug_exit(0x9000)).unwrap();
        let mut v = SvmVcpu::assemble(replay, caps, config(), std::rc::Rc::clone(&pool)).unwrap();
        v.setup().unwrap();
        v
    };
    (make(), make())
}

#[test]
fn vcpus_of_one_processor_never_share_an_asid() {
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    let (mut a, mut b) = vcpus_sharing_asids();
    // Their resets and first runs (which build the nested tables) flushed: new ASIDs
    // on QEMU, each from the same allocator.
    a.run(&mut mem, &LIMIT);
    b.run(&mut mem, &LIMIT);
    assert_ne!(a.asid(), b.asid());
    // A flushes until the allocator wraps (QEMU: ASIDs 1 to 15) and A holds ASID 1
    // of the new generation; B's ASID is of the old one and may be handed out again,
    // so B takes a fresh one before its next VMRUN, and the first VMRUN after the
    // wrap, B's here, flushes every ASID.
    let mut flushes = 0;
    while a.asid() != 1 {
        a.flush_tlb_all();
        flushes += 1;
        assert!(flushes <= 15);
    }
    b.run(&mut mem, &LIMIT);
    assert_eq!(b.asid(), 2);
    assert_eq!(vmcb(&b, fields::GUEST_ASID), 2);
    assert_eq!(vmcb(&b, fields::TLB_CONTROL), tlb_control::FLUSH_ALL);
    a.run(&mut mem, &LIMIT);
    assert_eq!((a.asid(), vmcb(&a, fields::GUEST_ASID)), (1, 1));
    b.run(&mut mem, &LIMIT);
    assert_eq!(vmcb(&b, fields::TLB_CONTROL), tlb_control::DO_NOTHING);
    // Many more flushes on both: at every VMRUN the two hold different ASIDs.
    for i in 0..40 {
        if i % 3 == 0 {
            b.flush_tlb_all();
        } else {
            a.flush_tlb_all();
        }
        a.run(&mut mem, &LIMIT);
        b.run(&mut mem, &LIMIT);
        assert_ne!(
            vmcb(&a, fields::GUEST_ASID),
            vmcb(&b, fields::GUEST_ASID),
            "round {i}"
        );
    }
}

#[test]
fn string_mmio_single_steps_after_each_element() {
    // rep movsb from the pc-testdev window with TF: as the processor single-steps a
    // REP, one #DB (DR6.BS) after the first element, the guest entered with RCX
    // counting the elements left (RIP stays at the instruction: see
    // opsvisor_core::emulate::strings' tests).
    let window = 0xff00_0000;
    let exit = ScriptedExit::npf_read(RIP, window)
        .gpr(Gpr::Rsi, window)
        .gpr(Gpr::Rdi, 0x8000)
        .gpr(Gpr::Rcx, 3);
    let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
    mem.write(RIP, &[0xf3, 0xa4]).unwrap();
    let mut vcpu = vcpu_on(&BOCHS_RYZEN, exit, 1);
    flat32(&mut vcpu);
    vcpu.set_rflags(0x2 | TF);
    assert!(matches!(vcpu.run(&mut mem, &LIMIT), Exit::Mmio { .. }));
    assert!(!vcpu.event_pending());
    assert_eq!(vcpu.rip(), RIP);
    vcpu.complete_mmio(Some(0x11));
    assert!(matches!(
        vcpu.run(&mut mem, &LIMIT),
        Exit::Io { port: 0xf4, .. }
    ));
    assert_eq!(vmcb(&vcpu, fields::EVENTINJ), EVENTINJ_DB);
    assert_eq!(vcpu.debug_regs().dr6, DR6_RESET | DR6_BS);
    assert_eq!(vcpu.gpr(Gpr::Rcx), 2, "two elements left");
    let mut byte = [0u8];
    mem.read(0x8000, &mut byte).unwrap();
    assert_eq!(byte[0], 0x11);
}

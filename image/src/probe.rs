//! The hardware backends' round-trip probe: before the real guest, a built-in guest of a
//! few bytes measures, in host TSC cycles, what one CPUID exit and one hypercall exit
//! (VMCALL on VMX, VMMCALL on SVM) cost the guest, from the exiting instruction to the
//! guest running again.
//!
//! The probe guest runs in 32-bit flat protected mode (no paging) on 2 MiB of RAM,
//! through core's run loop exactly as a real guest: each program is a loop of `LOOPS`
//! iterations of one instruction, ending with the debug-exit OUT. The host reads the
//! TSC around each `Vm::run`; the same loop without the instruction (the baseline) is
//! subtracted, so what remains per iteration is the exit, the backend's decode, core's
//! handler, the completion and the VM entry. The guest cannot time itself: RDTSC
//! exits on this backend (the guest's TSC is core's clock), which would add an exit to
//! every sample.
//!
//! VMCALL and VMMCALL are the hypercall: core answers them with KVM's calling
//! convention (here -KVM_ENOSYS in EAX, no hypercall being defined) and retires them, so
//! the hypercall figure is the exit, core's hypercall handler and the completion: what a
//! guest's hypercall costs on this backend.
//!
//! Under Bochs the cycles are Bochs' emulated TSC (it ticks with emulated instructions),
//! under QEMU TCG the host's TSC as QEMU passes it through, on hardware they are real.
//! Each figure is the median of `RUNS` runs.

use crate::cpu;
use crate::platform::BareMetal;
use crate::Backend;
use alloc::format;
use alloc::string::String;
use opsvisor_core::cpuid::CpuidPolicy;
use opsvisor_core::ops::{DescriptorTable, Gpr, ResetKind, SegReg, Segment, X86Ops};
use opsvisor_core::vm::{RunOutcome, Vm, VmConfig};
use opsvisor_core::GuestMemory;
use x86_64::registers::control::Cr0Flags;
use x86_64::structures::gdt::DescriptorFlags;

/// Iterations of each loop.
pub const LOOPS: u32 = 100;
/// Timed runs of each loop; the figure is their median.
pub const RUNS: usize = 5;

/// Probe guest RAM.
const RAM: u64 = 2 << 20;
/// Guest-physical layout.
const GDT: u64 = 0x500;
const IDT: u64 = 0x600;
const CPUID_LOOP: u64 = 0x1000;
const HYPERCALL_LOOP: u64 = 0x1100;
const BASELINE_LOOP: u64 = 0x1200;
const STACK_TOP: u64 = 0x8000;
const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
/// CR0.PE | CR0.ET.
const CR0_PROTECTED: u64 = Cr0Flags::PROTECTED_MODE_ENABLE.bits() | Cr0Flags::EXTENSION_TYPE.bits();

/// The GDT: null, flat 32-bit code (execute/read, accessed), flat data (read/write,
/// accessed), as the `x86_64` crate encodes them.
const GDT_ENTRIES: [u64; 3] = [
    0,
    DescriptorFlags::KERNEL_CODE32.bits(),
    DescriptorFlags::KERNEL_DATA.bits(),
];

/// `mov esi, LOOPS`, then the loop: `body`, `dec esi`, `jnz loop`; then the debug
/// exit `xor eax, eax; out 0xf4, eax` and `hlt`.
fn loop_program(body: &[u8]) -> ([u8; 32], usize) {
    let mut code = [0u8; 32];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if let Some(slot) = code.get_mut(n) {
                *slot = b;
            }
            n += 1;
        }
    };
    put(&[0xbe]);
    put(&LOOPS.to_le_bytes());
    let top: i32 = 5;
    put(body);
    put(&[0x4e]);
    // jnz rel8 back to the top: the displacement counts from the end of the jump.
    let rel = top - (top + body.len() as i32 + 1 + 2);
    put(&[0x75, rel as i8 as u8]);
    put(&[0x31, 0xc0, 0xe7, 0xf4, 0xf4]);
    (code, n)
}

/// The round-trip figures, in host TSC cycles.
pub struct RoundTrip {
    /// One CPUID exit.
    pub cpuid: u64,
    /// One hypercall exit answered by the core's hypercall handler.
    pub hypercall: u64,
}

/// The hypercall instruction of a hardware backend.
#[derive(Clone, Copy)]
pub struct Hypercall {
    /// Its mnemonic, for the log.
    pub name: &'static str,
    /// Its bytes (three for both vendors).
    pub bytes: [u8; 3],
}

/// The hypercall instruction of `vcpu`'s backend; `None` for the emulator, which has
/// no round trip worth probing.
pub fn hypercall(vcpu: &Backend) -> Option<Hypercall> {
    match vcpu {
        Backend::Vmx(_) => Some(Hypercall {
            name: "vmcall",
            bytes: [0x0f, 0x01, 0xc1],
        }),
        Backend::Svm(_) => Some(Hypercall {
            name: "vmmcall",
            bytes: [0x0f, 0x01, 0xd9],
        }),
        Backend::Emu(_) => None,
    }
}

/// Write the probe guest into fresh memory.
fn probe_memory(call: Hypercall) -> Result<GuestMemory, String> {
    let mut mem = GuestMemory::with_ram(RAM).map_err(|e| format!("probe RAM: {e}"))?;
    let mut put = |gpa: u64, bytes: &[u8]| {
        mem.write(gpa, bytes)
            .map_err(|e| format!("probe guest at {gpa:#x}: {e}"))
    };
    for (i, entry) in GDT_ENTRIES.iter().enumerate() {
        put(GDT + 8 * i as u64, &entry.to_le_bytes())?;
    }
    for (at, body) in [
        (CPUID_LOOP, &[0x31, 0xc0, 0x0f, 0xa2][..]),
        (HYPERCALL_LOOP, &call.bytes[..]),
        (BASELINE_LOOP, &[][..]),
    ] {
        let (code, len) = loop_program(body);
        put(at, code.get(..len).unwrap_or(&[]))?;
    }
    Ok(mem)
}

/// 32-bit flat protected mode at `rip`, with the probe's GDT, IDT and stack.
fn start_at(vcpu: &mut Backend, rip: u64) {
    vcpu.set_cr0(CR0_PROTECTED);
    vcpu.set_segment(SegReg::Cs, &Segment::flat(CODE_SELECTOR, Segment::CODE32));
    for seg in [SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs, SegReg::Ss] {
        vcpu.set_segment(seg, &Segment::flat(DATA_SELECTOR, Segment::DATA));
    }
    vcpu.set_gdt(DescriptorTable {
        base: GDT,
        limit: (GDT_ENTRIES.len() * 8 - 1) as u16,
    });
    vcpu.set_idt(DescriptorTable {
        base: IDT,
        limit: 32 * 8 - 1,
    });
    vcpu.set_gpr(Gpr::Rsp, STACK_TOP);
    vcpu.set_rflags(2);
    vcpu.set_rip(rip);
}

/// Host TSC cycles of one run of the loop at `rip`.
fn timed_run(vm: &mut Vm<Backend, BareMetal>, rip: u64) -> Result<u64, String> {
    start_at(&mut vm.bsp_mut().backend, rip);
    let start = cpu::rdtsc();
    let outcome = vm.run();
    let cycles = cpu::rdtsc().wrapping_sub(start);
    match outcome {
        RunOutcome::DebugExit { status: 1 } => Ok(cycles),
        other => Err(format!("the probe loop at {rip:#x} ended with {other:?}")),
    }
}

fn median(samples: &mut [u64; RUNS]) -> u64 {
    samples.sort_unstable();
    samples[RUNS / 2]
}

/// Run the probe on `vcpu` (a hardware backend, whose hypercall is `call`) and give the
/// vCPU back, reset, with the figures or why they could not be had.
pub fn round_trip(vcpu: Backend, hz: u64, call: Hypercall) -> (Backend, Result<RoundTrip, String>) {
    let mem = match probe_memory(call) {
        Ok(mem) => mem,
        Err(e) => return (vcpu, Err(e)),
    };
    let mut vm = Vm::new(
        vcpu,
        mem,
        BareMetal::new(hz, false),
        CpuidPolicy::emulator(),
        VmConfig::default(),
    );
    let result = (|| {
        // One untimed round builds the EPT (NPT) for the probe's memory.
        for rip in [BASELINE_LOOP, CPUID_LOOP, HYPERCALL_LOOP] {
            timed_run(&mut vm, rip)?;
        }
        let mut cpuid = [0; RUNS];
        let mut hypercall = [0; RUNS];
        for (c, v) in cpuid.iter_mut().zip(hypercall.iter_mut()) {
            let base = timed_run(&mut vm, BASELINE_LOOP)?;
            let per_exit = |cycles: u64| cycles.saturating_sub(base) / u64::from(LOOPS);
            *c = per_exit(timed_run(&mut vm, CPUID_LOOP)?);
            *v = per_exit(timed_run(&mut vm, HYPERCALL_LOOP)?);
        }
        Ok(RoundTrip {
            cpuid: median(&mut cpuid),
            hypercall: median(&mut hypercall),
        })
    })();
    let Some(mut vcpu) = vm.into_parts().0.pop() else {
        unreachable!("a machine of one vCPU")
    };
    vcpu.vcpu_reset(ResetKind::PowerOn);
    (vcpu, result)
}

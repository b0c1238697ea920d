//! Guest programs for the benchmarks: small 64-bit loops assembled with iced-x86's
//! `CodeAssembler`, started directly in long mode (identity-mapped first GiB) so that a
//! benchmark measures the loop and nothing else. Each program ends by writing 0 to the
//! debug-exit port, so a run returns `DebugExit { status: 1 }`.

use iced_x86::code_asm::*;
use opsvisor_core::arch::{CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME};
use opsvisor_core::cpuid::CpuidPolicy;
use opsvisor_core::loader::BootState;
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::{Gpr, ResetKind, SegReg, Segment, X86Ops};
use opsvisor_core::platform::{CapturePlatform, Platform};
use opsvisor_core::vm::{RunOutcome, Vm, VmConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the code is loaded and starts.
pub const CODE_ADDR: u64 = 0x10_0000;
/// The PML4 (the PDPT follows it).
const PML4_ADDR: u64 = 0x1000;
/// A scratch buffer the memory loops use.
pub const DATA_ADDR: u64 = 0x20_0000;
/// Top of the stack.
const STACK_TOP: u64 = 0x8_0000;
/// Guest RAM of the benchmark VMs.
pub const MEMORY: u64 = 64 << 20;
/// A port no device claims.
pub const NULL_PORT: u16 = 0x2f0;

/// The exit each exit benchmark's loop performs once per iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitLoop {
    /// Same loop, no exiting instruction: the cost to subtract.
    Baseline,
    /// CPUID leaf 0.
    Cpuid,
    /// RDMSR IA32_TSC.
    RdmsrTsc,
    /// WRMSR x2APIC EOI (0x80B).
    WrmsrX2apicEoi,
    /// WRMSR IA32_TSC_DEADLINE (far in the future).
    WrmsrTscDeadline,
    /// OUT to a port with no device.
    OutNullPort,
    /// Read the xAPIC version register over MMIO.
    ApicMmioRead,
}

impl ExitLoop {
    /// Every loop, baseline first.
    pub const ALL: [ExitLoop; 7] = [
        ExitLoop::Baseline,
        ExitLoop::Cpuid,
        ExitLoop::RdmsrTsc,
        ExitLoop::WrmsrX2apicEoi,
        ExitLoop::WrmsrTscDeadline,
        ExitLoop::OutNullPort,
        ExitLoop::ApicMmioRead,
    ];

    /// The benchmark's name.
    pub fn name(self) -> &'static str {
        match self {
            ExitLoop::Baseline => "baseline_loop",
            ExitLoop::Cpuid => "cpuid",
            ExitLoop::RdmsrTsc => "rdmsr_tsc",
            ExitLoop::WrmsrX2apicEoi => "wrmsr_x2apic_eoi",
            ExitLoop::WrmsrTscDeadline => "wrmsr_tsc_deadline",
            ExitLoop::OutNullPort => "out_null_port",
            ExitLoop::ApicMmioRead => "apic_mmio_read",
        }
    }
}

fn asm_err(e: IcedError) -> String {
    format!("assembling a benchmark guest failed: {e}")
}

/// The program: `iterations` times one exit of `kind`, then the debug exit.
pub fn exit_loop_program(kind: ExitLoop, iterations: u64) -> Result<Vec<u8>, String> {
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let mut top = a.create_label();
    (|| -> Result<(), IcedError> {
        if kind == ExitLoop::WrmsrX2apicEoi {
            // Switch the APIC to x2APIC mode: IA32_APIC_BASE = default base | EN | EXTD.
            a.mov(ecx, 0x1bu32)?;
            a.mov(eax, 0xfee0_0c00u32)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
        }
        // The APIC page sits at 0xFEE00000: a disp32 would sign-extend, so use a register.
        a.mov(r9, 0xfee0_0030u64)?;
        a.mov(r8, iterations)?;
        a.set_label(&mut top)?;
        match kind {
            ExitLoop::Baseline => a.nop()?,
            ExitLoop::Cpuid => {
                a.xor(eax, eax)?;
                a.cpuid()?;
            }
            ExitLoop::RdmsrTsc => {
                a.mov(ecx, 0x10u32)?;
                a.rdmsr()?;
            }
            ExitLoop::WrmsrX2apicEoi => {
                a.mov(ecx, 0x80bu32)?;
                a.xor(eax, eax)?;
                a.xor(edx, edx)?;
                a.wrmsr()?;
            }
            ExitLoop::WrmsrTscDeadline => {
                a.mov(ecx, 0x6e0u32)?;
                a.mov(edx, 0x7fff_ffffu32)?;
                a.xor(eax, eax)?;
                a.wrmsr()?;
            }
            ExitLoop::OutNullPort => {
                a.mov(dx, NULL_PORT as u32)?;
                a.out(dx, al)?;
            }
            ExitLoop::ApicMmioRead => {
                a.mov(eax, dword_ptr(r9))?;
            }
        }
        a.dec(r8)?;
        a.jnz(top)?;
        exit_sequence(&mut a)
    })()
    .map_err(asm_err)?;
    a.assemble(CODE_ADDR).map_err(asm_err)
}

fn exit_sequence(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.xor(eax, eax)?;
    a.out(0xf4, eax)?;
    a.hlt()
}

/// Instructions one iteration of [`int_loop_program`] retires.
pub const INT_LOOP_INSTRUCTIONS: u64 = 12;

/// An integer/branch loop: dependent ALU operations and three branches, two of them
/// alternating between taken and not taken (both paths retire the same count).
pub fn int_loop_program(iterations: u64) -> Result<Vec<u8>, String> {
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let mut top = a.create_label();
    let mut even = a.create_label();
    let mut join = a.create_label();
    (|| -> Result<(), IcedError> {
        a.mov(rcx, iterations)?;
        a.mov(rax, 1u64)?;
        a.mov(rbx, 3u64)?;
        a.set_label(&mut top)?;
        a.add(rax, rbx)?; // 1
        a.xor(rdx, rax)?; // 2
        a.shl(rbx, 1)?; // 3
        a.or(rbx, 1)?; // 4
        a.sub(rsi, rdx)?; // 5
        a.test(ecx, 1)?; // 6
        a.jz(even)?; // 7
        a.inc(rdi)?; // 8 (odd)
        a.jmp(join)?; // 9 (odd)
        a.set_label(&mut even)?;
        a.dec(rdi)?; // 8 (even)
        a.nop()?; // 9 (even)
        a.set_label(&mut join)?;
        a.and(rbx, 0xffffi32)?; // 10
        a.dec(rcx)?; // 11
        a.jnz(top)?; // 12
        exit_sequence(&mut a)
    })()
    .map_err(asm_err)?;
    a.assemble(CODE_ADDR).map_err(asm_err)
}

/// Instructions one iteration of [`mem_loop_program`] retires.
pub const MEM_LOOP_INSTRUCTIONS: u64 = 13;

/// A memory/string loop: loads and stores through a 64 KiB buffer, a PUSH/POP pair and
/// a short `REP MOVSQ` (each iteration retires the same number of instructions).
pub fn mem_loop_program(iterations: u64) -> Result<Vec<u8>, String> {
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let mut top = a.create_label();
    (|| -> Result<(), IcedError> {
        a.mov(r8, iterations)?;
        a.mov(rbx, DATA_ADDR)?;
        a.xor(r9, r9)?;
        a.set_label(&mut top)?;
        a.mov(rax, qword_ptr(rbx + r9))?; // 1
        a.add(rax, r8)?; // 2
        a.mov(qword_ptr(rbx + r9 + 8), rax)?; // 3
        a.push(rax)?; // 4
        a.pop(rdx)?; // 5
        a.lea(rsi, qword_ptr(rbx + r9))?; // 6
        a.lea(rdi, qword_ptr(rbx + r9 + 0x100))?; // 7
        a.mov(ecx, 4u32)?; // 8
        a.rep().movsq()?; // 9
        a.add(r9, 64)?; // 10
        a.and(r9, 0xffffi32)?; // 11
        a.dec(r8)?; // 12
        a.jnz(top)?; // 13
        exit_sequence(&mut a)
    })()
    .map_err(asm_err)?;
    a.assemble(CODE_ADDR).map_err(asm_err)
}

/// Guest memory with the first 4 GiB identity-mapped by 1 GiB pages (so the xAPIC page
/// at 0xFEE00000 is reachable) and `code` at [`CODE_ADDR`].
pub fn bench_memory(code: &[u8], size: u64) -> Result<GuestMemory, String> {
    let mut mem = GuestMemory::with_ram(size).map_err(|e| e.to_string())?;
    let pdpt = PML4_ADDR + 0x1000;
    let w =
        |mem: &mut GuestMemory, gpa: u64, v: u64| mem.write_u64(gpa, v).map_err(|e| e.to_string());
    w(&mut mem, PML4_ADDR, pdpt | 0x3)?;
    for i in 0..4u64 {
        // Present, writable, 1 GiB page; the last one (MMIO) uncached.
        let pcd = if i == 3 { 0x10 } else { 0 };
        w(&mut mem, pdpt + i * 8, (i << 30) | 0x83 | pcd)?;
    }
    mem.write(CODE_ADDR, code).map_err(|e| e.to_string())?;
    Ok(mem)
}

/// The long-mode entry state: flat 64-bit code, paging on, interrupts off.
pub fn long_mode_state() -> BootState {
    let mut state = BootState::protected_flat(0, 0x08, 0x10);
    state.segments[SegReg::Cs as usize] = Segment::flat(0x08, Segment::CODE64);
    state.cr0 = CR0_PG | CR0_ET | CR0_PE;
    state.cr3 = PML4_ADDR;
    state.cr4 = CR4_PAE;
    state.efer = EFER_LME | EFER_LMA;
    state.regs.rip = CODE_ADDR;
    state.regs.gpr[Gpr::Rsp as usize] = STACK_TOP;
    state
}

/// A VM on backend `vcpu` with [`MEMORY`] bytes of RAM that runs `code` from
/// [`long_mode_state`].
pub fn bench_vm<B: X86Ops>(vcpu: B, code: &[u8]) -> Result<Vm<B, CapturePlatform>, String> {
    bench_vm_with_memory(vcpu, code, MEMORY)
}

/// [`bench_vm`] with `size` bytes of RAM (at least 4 MiB: the code sits at 1 MiB and the
/// memory loop's buffer at 2 MiB).
pub fn bench_vm_with_memory<B: X86Ops>(
    vcpu: B,
    code: &[u8],
    size: u64,
) -> Result<Vm<B, CapturePlatform>, String> {
    bench_vm_on(vcpu, code, size, CapturePlatform::new())
}

/// [`bench_vm_with_memory`] on host `platform` (one that observes exits, for the cost of
/// tracing them).
pub fn bench_vm_on<B: X86Ops, P: Platform>(
    mut vcpu: B,
    code: &[u8],
    size: u64,
    platform: P,
) -> Result<Vm<B, P>, String> {
    let mem = bench_memory(code, size)?;
    vcpu.vcpu_reset(ResetKind::PowerOn);
    long_mode_state().apply(&mut vcpu);
    Ok(Vm::new(
        vcpu,
        mem,
        platform,
        CpuidPolicy::emulator(),
        VmConfig::default(),
    ))
}

/// The system allocator, counting allocations: a benchmark binary that checks its exit
/// path allocates nothing installs it as its `#[global_allocator]`.
pub struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

impl CountingAllocator {
    /// Allocations (and reallocations) so far, when this is the global allocator.
    pub fn allocations() -> u64 {
        ALLOCATIONS.load(Ordering::Relaxed)
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// relaxed atomic with no other effect.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Run `vm` to its end and time it, checking that it ended at the debug exit and that
/// the run allocated nothing ([`CountingAllocator`] must be the global allocator).
pub fn time_run_without_allocating<B: X86Ops, P: Platform>(
    vm: &mut Vm<B, P>,
    name: &str,
) -> Duration {
    let before = CountingAllocator::allocations();
    let start = Instant::now();
    let outcome = vm.run();
    let took = start.elapsed();
    let allocated = CountingAllocator::allocations() - before;
    assert_eq!(outcome, RunOutcome::DebugExit { status: 1 }, "{name}");
    assert_eq!(allocated, 0, "{name}: the exit path allocated");
    took
}

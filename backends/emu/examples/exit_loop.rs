//! A profiling aid: the exit and throughput benchmark loops (as in `benches/src/lib.rs`)
//! on the bare emulator through the core's run loop, sized by the command line:
//! `exit_loop <cpuid|nop|int|mem> <iterations>`. For `valgrind --tool=callgrind` and
//! `perf`, where criterion's harness is in the way.

use iced_x86::code_asm::*;
use opsvisor_core::cpuid::CpuidPolicy;
use opsvisor_core::loader::BootState;
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::{ResetKind, SegReg, Segment, X86Ops};
use opsvisor_core::platform::CapturePlatform;
use opsvisor_core::vm::{Vm, VmConfig};
use opsvisor_emu::EmuVcpu;

const CODE: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;

fn program(kind: &str, n: u64) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut top = a.create_label();
    match kind {
        "int" => {
            let mut even = a.create_label();
            let mut join = a.create_label();
            a.mov(rcx, n)?;
            a.mov(rax, 1u64)?;
            a.mov(rbx, 3u64)?;
            a.set_label(&mut top)?;
            a.add(rax, rbx)?;
            a.xor(rdx, rax)?;
            a.shl(rbx, 1)?;
            a.or(rbx, 1)?;
            a.sub(rsi, rdx)?;
            a.test(ecx, 1)?;
            a.jz(even)?;
            a.inc(rdi)?;
            a.jmp(join)?;
            a.set_label(&mut even)?;
            a.dec(rdi)?;
            a.nop()?;
            a.set_label(&mut join)?;
            a.and(rbx, 0xffffi32)?;
            a.dec(rcx)?;
            a.jnz(top)?;
        }
        "mem" => {
            a.mov(r8, n)?;
            a.mov(rbx, DATA)?;
            a.xor(r9, r9)?;
            a.set_label(&mut top)?;
            a.mov(rax, qword_ptr(rbx + r9))?;
            a.add(rax, r8)?;
            a.mov(qword_ptr(rbx + r9 + 8), rax)?;
            a.push(rax)?;
            a.pop(rdx)?;
            a.lea(rsi, qword_ptr(rbx + r9))?;
            a.lea(rdi, qword_ptr(rbx + r9 + 0x100))?;
            a.mov(ecx, 4u32)?;
            a.rep().movsq()?;
            a.add(r9, 64)?;
            a.and(r9, 0xffffi32)?;
            a.dec(r8)?;
            a.jnz(top)?;
        }
        _ => {
            a.mov(r8, n)?;
            a.set_label(&mut top)?;
            if kind == "cpuid" {
                a.xor(eax, eax)?;
                a.cpuid()?;
            } else {
                a.nop()?;
            }
            a.dec(r8)?;
            a.jnz(top)?;
        }
    }
    a.xor(eax, eax)?;
    a.out(0xf4, eax)?;
    a.hlt()?;
    a.assemble(CODE)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "cpuid".into());
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let code = program(&kind, n).expect("assembles");
    let mut mem = GuestMemory::with_ram(64 << 20).expect("RAM");
    mem.write_u64(0x1000, 0x2000 | 3).expect("PML4");
    for i in 0..4u64 {
        let pcd = if i == 3 { 0x10 } else { 0 };
        mem.write_u64(0x2000 + i * 8, (i << 30) | 0x83 | pcd)
            .expect("PDPT");
    }
    mem.write(CODE, &code).expect("code");
    let mut st = BootState::default();
    let data = Segment {
        selector: 0x10,
        base: 0,
        limit: 0xffff_ffff,
        attr: 0xc093,
    };
    for s in [SegReg::Es, SegReg::Ss, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
        st.segments[s as usize] = data;
    }
    st.segments[SegReg::Cs as usize] = Segment {
        selector: 8,
        base: 0,
        limit: 0xffff_ffff,
        attr: 0xa09b,
    };
    st.segments[SegReg::Tr as usize] = Segment {
        attr: 0x8b,
        limit: 0x67,
        ..Segment::default()
    };
    st.segments[SegReg::Ldtr as usize] = Segment {
        attr: Segment::UNUSABLE | 0x82,
        ..Segment::default()
    };
    st.cr0 = 0x8000_0011;
    st.cr3 = 0x1000;
    st.cr4 = 0x20;
    st.efer = 0x500;
    st.regs.rip = CODE;
    st.regs.rflags = 2;
    st.regs.gpr[4] = 0x8_0000;
    let mut vcpu = EmuVcpu::new();
    vcpu.vcpu_reset(ResetKind::PowerOn);
    st.apply(&mut vcpu);
    let mut vm = Vm::new(
        vcpu,
        mem,
        CapturePlatform::new(),
        CpuidPolicy::emulator(),
        VmConfig::default(),
    );
    let t = std::time::Instant::now();
    let out = vm.run();
    let dt = t.elapsed();
    println!(
        "{kind}: {out:?}, {n} iterations in {dt:?} = {:.2} ns/iteration",
        dt.as_nanos() as f64 / n as f64
    );
}

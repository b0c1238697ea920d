//! Arbitrary code in every CPU mode with arbitrary system state: the host must not panic,
//! every `run` must stop within its instruction budget (give or take one decoded block),
//! and (under ASan and the guest
//! memory's bounds checks) nothing may touch host memory outside the guest's.
//!
//! Input: byte 0 picks the mode (real, 16-bit protected, 32-bit protected, long,
//! compatibility); bytes 1..9 flip optional CR0/CR4/EFER bits; the next 64 bytes are the
//! GDT (selectors 0x08..0x38; the mode's code and data selectors are made valid), the
//! next 64 bytes are XORed into the page tables (identity paging of the first 2 MiB is
//! built first, so most inputs still run), and the rest is the code, at 0x10000. The IDT
//! at 0x8000 points every vector at 0x10000 + 16 * vector, inside the code, so faults
//! keep executing fuzzer bytes. Every exit is completed the way the core would (I/O
//! reads all ones, MMIO reads zero, CPUID/MSR/HLT skipped).
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsvisor_core::exit::{Direction, Exit};
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::{DescriptorTable, Gpr, ResetKind, RunLimit, SegReg, Segment, X86Ops};
use opsvisor_emu::EmuVcpu;

const RAM: u64 = 2 << 20;
const GDT: u64 = 0x7000;
const IDT: u64 = 0x8000;
const PML4: u64 = 0x1000;
const CODE: u64 = 0x10000;
const STACK: u64 = 0xf000;
const MAX_PER_RUN: u64 = 256;
/// The emulator checks its budget between decoded blocks (at most 64 instructions), so
/// a run may retire up to one block more than asked.
const BLOCK_SLACK: u64 = 64;
const RUNS: usize = 16;

fuzz_target!(|data: &[u8]| {
    if data.len() < 1 + 8 + 64 + 64 {
        return;
    }
    let mode = data[0] % 5;
    let bits = u64::from_le_bytes(data[1..9].try_into().unwrap_or([0; 8]));
    let gdt_in = &data[9..73];
    let pt_in = &data[73..137];
    let code = &data[137..data.len().min(137 + 0x8000)];
    let Ok(mut mem) = GuestMemory::with_ram(RAM) else {
        return;
    };
    run_input(
        &mut EmuVcpu::new(),
        &mut mem,
        mode,
        bits,
        gdt_in,
        pt_in,
        code,
    );
});

fn run_input(
    v: &mut EmuVcpu,
    mem: &mut GuestMemory,
    mode: u8,
    bits: u64,
    gdt_in: &[u8],
    pt_in: &[u8],
    code: &[u8],
) {
    // Identity paging of the first 2 MiB: 4-level for long/compat mode, 32-bit paging
    // (4 MiB page) otherwise; then the fuzzer's bytes XORed into the tables.
    let long = mode >= 3;
    if long {
        let _ = mem.write_u64(PML4, 0x2000 | 7);
        let _ = mem.write_u64(0x2000, 0x3000 | 7);
        let _ = mem.write_u64(0x3000, 0x83 | 4);
    } else {
        let _ = mem.write_u32(PML4, 0x83 | 4);
    }
    for (i, b) in pt_in.iter().enumerate() {
        let at = PML4 + ((i as u64 * 67) % 0x3000);
        if let Ok(old) = mem.read_u8(at) {
            let _ = mem.write_u8(at, old ^ b);
        }
    }
    // GDT: the fuzzer's descriptors, with 0x08 code and 0x10 data fixed up for the mode.
    let _ = mem.write(GDT, gdt_in);
    let code_desc: u64 = match mode {
        1 => 0x000f_9b00_0000_ffff,
        2 => 0x00cf_9b00_0000_ffff,
        3 => 0x00af_9b00_0000_ffff,
        _ => 0x00cf_9b00_0000_ffff,
    };
    let _ = mem.write_u64(GDT + 8, code_desc);
    let _ = mem.write_u64(GDT + 16, 0x00cf_9300_0000_ffff);
    // IDT / IVT: every vector into the code.
    for v in 0..256u64 {
        let h = CODE + 16 * v;
        if mode == 0 {
            let _ = mem.write_u32(v * 4, ((CODE >> 4) << 16 | (16 * v)) as u32);
        } else if long {
            let lo = (h & 0xffff) | (8 << 16) | (0x8e << 40) | (((h >> 16) & 0xffff) << 48);
            let _ = mem.write_u64(IDT + 16 * v, lo);
            let _ = mem.write_u64(IDT + 16 * v + 8, h >> 32);
        } else {
            let kind = if mode == 1 { 0x86 } else { 0x8e };
            let lo = (h & 0xffff) | (8 << 16) | (kind << 40) | (((h >> 16) & 0xffff) << 48);
            let _ = mem.write_u64(IDT + 8 * v, lo);
        }
    }
    let _ = mem.write(CODE, code);

    v.vcpu_reset(ResetKind::PowerOn);
    v.set_gdt(DescriptorTable {
        base: GDT,
        limit: 63,
    });
    // Optional bits: MP EM TS NE WP AM CD NW in CR0; VME PVI TSD DE PGE OSFXSR
    // OSXMMEXCPT UMIP SMEP SMAP in CR4; SCE NXE in EFER.
    let cr0_opt = bits & 0x6005_002e;
    let cr4_opt = (bits >> 16) & 0x30_068f;
    let efer_opt = (bits >> 40) & 0x801;
    let paging = bits >> 63 != 0;
    let (cr0, cr4, efer) = match mode {
        0 => (cr0_opt & !0x8000_0001, cr4_opt & !0x20, 0),
        1 | 2 => (
            cr0_opt | 1 | if paging { 0x8000_0000 } else { 0 },
            cr4_opt | 0x10,
            efer_opt,
        ),
        _ => (cr0_opt | 0x8000_0001, cr4_opt | 0x20, efer_opt | 0x500),
    };
    v.set_idt(DescriptorTable {
        base: if mode == 0 { 0 } else { IDT },
        limit: match mode {
            0 => 0x3ff,
            3 | 4 => 0xfff,
            _ => 0x7ff,
        },
    });
    v.set_cr3(PML4);
    v.set_cr4(cr4);
    v.set_efer(efer);
    v.set_cr0(cr0);
    let (cs, data_seg, rip) = match mode {
        0 => (
            Segment::real_mode((CODE >> 4) as u16, true),
            Segment::real_mode(0, false),
            0,
        ),
        1 => (
            Segment {
                selector: 8,
                base: 0,
                limit: 0xffff,
                attr: 0x9b,
            },
            Segment {
                selector: 0x10,
                base: 0,
                limit: 0xffff,
                attr: 0x93,
            },
            CODE,
        ),
        2 => (
            Segment::flat(8, Segment::CODE32),
            Segment::flat(0x10, Segment::DATA),
            CODE,
        ),
        3 => (
            Segment::flat(8, Segment::CODE64),
            Segment::flat(0x10, Segment::DATA),
            CODE,
        ),
        _ => (
            Segment::flat(8, Segment::CODE32),
            Segment::flat(0x10, Segment::DATA),
            CODE,
        ),
    };
    for s in [SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs, SegReg::Ss] {
        v.set_segment(s, &data_seg);
    }
    v.set_segment(
        SegReg::Ldtr,
        &Segment {
            selector: 0,
            base: 0,
            limit: 0,
            attr: Segment::LDT_UNUSABLE,
        },
    );
    v.set_segment(
        SegReg::Tr,
        &Segment {
            selector: 0x18,
            base: 0x6000,
            limit: 0x67,
            attr: Segment::TSS_BUSY,
        },
    );
    v.set_segment(SegReg::Cs, &cs);
    v.set_rip(rip);
    v.set_gpr(Gpr::Rsp, STACK);
    v.set_rflags(0x2);

    let limit = RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: MAX_PER_RUN,
    };
    for _ in 0..RUNS {
        let before = v.instructions_retired().unwrap_or(0);
        let exit = v.run(mem, &limit);
        let after = v.instructions_retired().unwrap_or(0);
        assert!(
            after.saturating_sub(before) <= MAX_PER_RUN + BLOCK_SLACK,
            "a run retired {} instructions on a budget of {MAX_PER_RUN}",
            after - before
        );
        match exit {
            Exit::Preempted | Exit::InterruptWindow | Exit::NmiWindow | Exit::ExternalInterrupt => {
            }
            Exit::Io {
                direction: Direction::Read,
                ..
            } => v.complete_pio_in(u32::MAX),
            Exit::Mmio { direction, .. } => {
                v.complete_mmio((direction == Direction::Read).then_some(0));
            }
            Exit::Cpuid
            | Exit::Rdmsr { .. }
            | Exit::Wrmsr { .. }
            | Exit::Io { .. }
            | Exit::Hlt
            | Exit::Xsetbv { .. }
            | Exit::CacheFlush
            | Exit::Hypercall
            | Exit::Pause
            | Exit::Cr8 { .. } => v.skip_emulated_instruction(),
            Exit::TripleFault | Exit::EmulationFailure { .. } | Exit::SlatViolation { .. } => break,
            Exit::Exception { .. } | Exit::EntryFailed { .. } => break,
        }
    }
}

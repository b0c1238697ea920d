//! Whole-CPU tests: small programs assembled with iced-x86's `CodeAssembler`, run on an
//! [`EmuVcpu`] with a minimal stand-in for the core's run loop.

extern crate std;

use crate::arith::flags::{CF, IF, OF, PF, SF, ZF};
use crate::{AccessWatch, DebugStop, EmuVcpu, GuestDebug, Watch, MAX_BREAKPOINTS};
use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;
use opsvisor_core::exit::{Direction, Exit};
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::{
    DescriptorTable, Event, ExitSink, Gpr, RunLimit, SegReg, Segment, X86Ops,
};
use std::collections::HashMap;
use std::vec::Vec;

pub(crate) const PML4: u64 = 0x1000;
pub(crate) const GDT: u64 = 0x500;
pub(crate) const IDT: u64 = 0x4000;
pub(crate) const TSS: u64 = 0x6000;
pub(crate) const KSTACK: u64 = 0x9000;
pub(crate) const CODE: u64 = 0x10000;
/// xAPIC page: not RAM in the test machine (RAM ends at 4 MiB), so accesses are MMIO.
pub(crate) const APIC: u64 = 0xfee0_0000;

/// The stand-in core: what the tests' guests may exit for.
pub(crate) struct Harness {
    pub(crate) vcpu: EmuVcpu,
    pub(crate) mem: GuestMemory,
    /// Bytes written to port 0x3f8.
    pub(crate) out: Vec<u8>,
    /// Port reads answer from here (then 0).
    pub(crate) input: Vec<u8>,
    /// The fake MMIO device: register values by address.
    pub(crate) mmio: HashMap<u64, u64>,
    /// Every exit seen, in order.
    pub(crate) exits: Vec<Exit>,
    /// Instructions each run may retire (`RunLimit::max_instructions`).
    pub(crate) budget: u64,
    /// Runs [`Harness::run`] makes before it gives up (returning `Exit::Preempted`).
    pub(crate) runs: usize,
    labels: HashMap<&'static str, u64>,
}

pub(crate) fn asm64() -> CodeAssembler {
    CodeAssembler::new(64).unwrap()
}

impl Harness {
    pub(crate) fn new() -> Harness {
        Harness {
            vcpu: EmuVcpu::new(),
            mem: GuestMemory::with_ram(4 << 20).unwrap(),
            out: Vec::new(),
            input: Vec::new(),
            mmio: HashMap::new(),
            exits: Vec::new(),
            labels: HashMap::new(),
            budget: 10_000,
            runs: 100_000,
        }
    }

    /// Assemble `a` at `at` into guest memory; record the named labels' addresses.
    pub(crate) fn load(
        &mut self,
        a: &mut CodeAssembler,
        at: u64,
        labels: &[(&'static str, CodeLabel)],
    ) {
        let r = a
            .assemble_options(at, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
            .unwrap();
        self.mem.write(at, r.inner.code_buffer.as_slice()).unwrap();
        for (name, l) in labels {
            self.labels.insert(name, r.label_ip(l).unwrap());
        }
    }

    pub(crate) fn label(&self, name: &str) -> u64 {
        self.labels[name]
    }

    /// A 64-bit kernel environment: identity map of 1 GiB with 2 MiB user pages, GDT, TSS
    /// with RSP0, empty IDT, CPL 0, RIP at `CODE`.
    pub(crate) fn long_mode(&mut self) {
        let m = &mut self.mem;
        m.write_u64(PML4, 0x2000 | 7).unwrap();
        m.write_u64(0x2000, 0x3000 | 7).unwrap();
        // The xAPIC's 2 MiB page (not RAM: MMIO).
        m.write_u64(0x2000 + 3 * 8, 0x5000 | 7).unwrap();
        m.write_u64(
            0x5000 + ((APIC >> 21) & 511) * 8,
            (APIC & !0x1f_ffff) | 0x83,
        )
        .unwrap();
        for i in 0..512u64 {
            m.write_u64(0x3000 + i * 8, (i << 21) | 0x87).unwrap();
        }
        let gdt: [u64; 6] = [
            0,
            0x00af_9b00_0000_ffff, // 0x08 kernel code 64
            0x00cf_9300_0000_ffff, // 0x10 kernel data
            0x00cf_fb00_0000_ffff, // 0x18 user code 32
            0x00cf_f300_0000_ffff, // 0x20 user data
            0x00af_fb00_0000_ffff, // 0x28 user code 64
        ];
        for (i, d) in gdt.iter().enumerate() {
            m.write_u64(GDT + 8 * i as u64, *d).unwrap();
        }
        // 0x30: 64-bit TSS descriptor.
        let tss_lo = 0x67 | ((TSS & 0xff_ffff) << 16) | (0x89u64 << 40) | ((TSS >> 24) << 56);
        m.write_u64(GDT + 0x30, tss_lo).unwrap();
        m.write_u64(GDT + 0x38, 0).unwrap();
        m.write_u64(TSS + 4, KSTACK).unwrap();
        let v = &mut self.vcpu;
        v.set_gdt(DescriptorTable {
            base: GDT,
            limit: 0x3f,
        });
        v.set_idt(DescriptorTable {
            base: IDT,
            limit: 0xfff,
        });
        v.set_cr3(PML4);
        v.set_cr4(0x20);
        v.set_efer(0x501);
        v.set_cr0(0x8000_0011);
        v.set_segment(
            SegReg::Cs,
            &Segment {
                selector: 8,
                base: 0,
                limit: u32::MAX,
                attr: 0xa09b,
            },
        );
        let data = Segment {
            selector: 0x10,
            base: 0,
            limit: u32::MAX,
            attr: 0xc093,
        };
        for s in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
            v.set_segment(s, &data);
        }
        v.set_segment(
            SegReg::Tr,
            &Segment {
                selector: 0x30,
                base: TSS,
                limit: 0x67,
                attr: 0x8b,
            },
        );
        v.set_gpr(Gpr::Rsp, KSTACK);
        v.set_rip(CODE);
        v.set_rflags(2);
    }

    /// Point IDT vector `v` at `handler` (64-bit interrupt gate, DPL `dpl`).
    pub(crate) fn gate(&mut self, v: u8, handler: u64, dpl: u8) {
        let lo = (handler & 0xffff)
            | (8 << 16)
            | ((0x8e | u64::from(dpl) << 5) << 40)
            | ((handler >> 16 & 0xffff) << 48);
        self.mem.write_u64(IDT + 16 * u64::from(v), lo).unwrap();
        self.mem
            .write_u64(IDT + 16 * u64::from(v) + 8, handler >> 32)
            .unwrap();
    }

    /// Run until HLT (returned as Ok) or another terminal exit (Err), handling what the
    /// core would handle.
    pub(crate) fn run(&mut self) -> Result<(), Exit> {
        let limit = RunLimit {
            tsc: 0,
            deadline: None,
            max_instructions: self.budget,
        };
        for _ in 0..self.runs {
            let exit = self.vcpu.run(&mut self.mem, &limit);
            self.exits.push(exit);
            match exit {
                Exit::Hlt => {
                    self.vcpu.skip_emulated_instruction();
                    return Ok(());
                }
                Exit::Cpuid => {
                    let leaf = self.vcpu.gpr(Gpr::Rax);
                    self.vcpu.set_gpr(Gpr::Rax, 0x1234_0000 | leaf);
                    self.vcpu.set_gpr(Gpr::Rbx, 0);
                    self.vcpu.set_gpr(Gpr::Rcx, 0);
                    self.vcpu.set_gpr(Gpr::Rdx, 0);
                    self.vcpu.skip_emulated_instruction();
                }
                Exit::Rdmsr { index } => match self.vcpu.get_msr(index) {
                    Some(v) => {
                        self.vcpu.set_gpr(Gpr::Rax, v & 0xffff_ffff);
                        self.vcpu.set_gpr(Gpr::Rdx, v >> 32);
                        self.vcpu.skip_emulated_instruction();
                    }
                    None if index == 0xc000_0080 => {
                        let v = self.vcpu.efer();
                        self.vcpu.set_gpr(Gpr::Rax, v & 0xffff_ffff);
                        self.vcpu.set_gpr(Gpr::Rdx, v >> 32);
                        self.vcpu.skip_emulated_instruction();
                    }
                    None => self.vcpu.inject_event(Event::Exception {
                        vector: 13,
                        error_code: Some(0),
                    }),
                },
                Exit::Wrmsr { index, value } => {
                    if index == 0xc000_0080 {
                        self.vcpu.set_efer(value);
                        self.vcpu.skip_emulated_instruction();
                    } else if self.vcpu.set_msr(index, value) {
                        self.vcpu.skip_emulated_instruction();
                    } else {
                        self.vcpu.inject_event(Event::Exception {
                            vector: 13,
                            error_code: Some(0),
                        });
                    }
                }
                Exit::Io {
                    port,
                    direction,
                    data,
                    ..
                } => match direction {
                    Direction::Write => {
                        if port == 0x3f8 {
                            self.out.push(data as u8);
                        }
                        self.vcpu.skip_emulated_instruction();
                    }
                    Direction::Read => {
                        let v = if self.input.is_empty() {
                            0
                        } else {
                            self.input.remove(0)
                        };
                        self.vcpu.complete_pio_in(u32::from(v));
                    }
                },
                Exit::Mmio {
                    gpa,
                    direction,
                    data,
                    ..
                } => match direction {
                    Direction::Read => {
                        let v = self.mmio.get(&gpa).copied().unwrap_or(0);
                        self.vcpu.complete_mmio(Some(v));
                    }
                    Direction::Write => {
                        self.mmio.insert(gpa, data);
                        self.vcpu.complete_mmio(None);
                    }
                },
                Exit::Xsetbv { index, value } => {
                    // The core's check, for a model with the x87 and SSE components.
                    if opsvisor_core::exits::xsetbv::xsetbv_allowed(index, value, 3)
                        && self.vcpu.cpl() == 0
                    {
                        self.vcpu.set_xcr0(value);
                        self.vcpu.skip_emulated_instruction();
                    } else {
                        self.vcpu.inject_event(Event::Exception {
                            vector: 13,
                            error_code: Some(0),
                        });
                    }
                }
                Exit::Preempted => {}
                other => return Err(other),
            }
        }
        Err(Exit::Preempted)
    }

    pub(crate) fn gpr(&self, r: Gpr) -> u64 {
        self.vcpu.gpr(r)
    }
}

#[test]
fn arithmetic_and_branches_in_long_mode() {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    // Sum 1..=100 with a loop, then a few ALU forms.
    a.xor(rax, rax).unwrap();
    a.mov(ecx, 100u32).unwrap();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.add(rax, rcx).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(top).unwrap();
    a.mov(rbx, 0x1234_5678_9abc_def0u64).unwrap();
    a.mov(ebx, ebx).unwrap(); // 32-bit write zero-extends
    a.mov(rdx, -1i64).unwrap();
    a.mov(dl, 0x12u32).unwrap();
    a.mov(dh, 0x34u32).unwrap();
    a.imul_3(rsi, rax, 3).unwrap();
    a.mov(rdi, 7u64).unwrap();
    a.shl(rdi, 4).unwrap();
    a.bsr(r8, rdi).unwrap();
    a.lea(r9, ptr(rdi + rsi * 2 + 5)).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::Rax), 5050);
    assert_eq!(h.gpr(Gpr::Rbx), 0x9abc_def0);
    assert_eq!(h.gpr(Gpr::Rdx), 0xffff_ffff_ffff_3412);
    assert_eq!(h.gpr(Gpr::Rsi), 15150);
    assert_eq!(h.gpr(Gpr::Rdi), 0x70);
    assert_eq!(h.gpr(Gpr::R8), 6);
    assert_eq!(h.gpr(Gpr::R9), 0x70 + 15150 * 2 + 5);
    assert!(h.vcpu.instructions_retired().unwrap() > 300);
}

#[test]
fn xchg_between_registers_at_every_size() {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    a.mov(rax, 0x1111_1111_1111_1111u64).unwrap();
    a.mov(rbx, 0x2222_2222_2222_2222u64).unwrap();
    a.mov(rcx, 0x3333_3333_3333_3333u64).unwrap();
    a.mov(rdx, 0x4444_4444_4444_4444u64).unwrap();
    a.mov(rsi, 0x5555_5555_5555_5555u64).unwrap();
    a.mov(rdi, 0x6666_6666_6666_6666u64).unwrap();
    a.mov(r9, 0x8888_8888_8888_8899u64).unwrap();
    a.mov(r10, 0x9999_9999_9999_99aau64).unwrap();
    // 64 bits; 32 bits zero-extend both; 16 bits keep the rest; AH with a low byte.
    a.xchg(rax, rbx).unwrap();
    a.xchg(ecx, edx).unwrap();
    a.xchg(si, di).unwrap();
    a.xchg(ah, bl).unwrap();
    // The accumulator short form (90+r) and a register with itself (`87 C9`).
    a.xchg(r9, rax).unwrap();
    a.xchg(r10d, r10d).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::Rax), 0x8888_8888_8888_8899);
    assert_eq!(h.gpr(Gpr::R9), 0x2222_2222_2222_1122);
    assert_eq!(h.gpr(Gpr::Rbx), 0x1111_1111_1111_1122);
    assert_eq!(h.gpr(Gpr::Rcx), 0x4444_4444);
    assert_eq!(h.gpr(Gpr::Rdx), 0x3333_3333);
    assert_eq!(h.gpr(Gpr::Rsi), 0x5555_5555_5555_6666);
    assert_eq!(h.gpr(Gpr::Rdi), 0x6666_6666_6666_5555);
    assert_eq!(h.gpr(Gpr::R10), 0x9999_99aa);
}

/// Run `op` with RFLAGS preset to all-zero and all-one (the writable status flags) and
/// return (result, flags) for each.
fn flags_run(build: impl Fn(&mut CodeAssembler)) -> [(u64, u64); 2] {
    let mut out = [(0, 0); 2];
    for (k, preset) in [0u64, 0xcd5].into_iter().enumerate() {
        let mut h = Harness::new();
        h.long_mode();
        let mut a = asm64();
        a.mov(rax, preset).unwrap();
        a.push(rax).unwrap();
        a.popfq().unwrap();
        build(&mut a);
        a.pushfq().unwrap();
        a.pop(rbx).unwrap();
        a.hlt().unwrap();
        h.load(&mut a, CODE, &[]);
        h.run().unwrap();
        out[k] = (h.gpr(Gpr::Rcx), h.gpr(Gpr::Rbx));
    }
    out
}

#[test]
fn alu_flags_from_all_zero_and_all_one() {
    let st = CF | PF | ZF | SF | OF | (1 << 4);
    // ADD that overflows signed and carries: 0x7fffffff + 0x80000001 = 0 (CF, ZF, PF).
    let r = flags_run(|a| {
        a.mov(ecx, 0x7fff_ffffu32).unwrap();
        a.add(ecx, 0x8000_0001u32 as i32).unwrap();
    });
    for (v, f) in r {
        assert_eq!(v, 0);
        assert_eq!(f & st, CF | ZF | PF | (1 << 4));
    }
    // ADC sees the preset carry.
    let r = flags_run(|a| {
        a.mov(ecx, 1u32).unwrap();
        a.adc(ecx, 1).unwrap();
    });
    assert_eq!(r[0].0, 2);
    assert_eq!(r[1].0, 3);
    // INC keeps CF; DEC to zero sets ZF.
    let r = flags_run(|a| {
        a.mov(ecx, 1u32).unwrap();
        a.dec(ecx).unwrap();
    });
    assert_eq!(r[0].1 & (CF | ZF), ZF);
    assert_eq!(r[1].1 & (CF | ZF), CF | ZF);
    // SUB with borrow, 8-bit.
    let r = flags_run(|a| {
        a.mov(ecx, 0u32).unwrap();
        a.sub(cl, 1).unwrap();
    });
    for (v, f) in r {
        assert_eq!(v, 0xff);
        assert_eq!(f & (CF | SF | ZF | OF), CF | SF);
    }
    // Logic clears CF/OF whatever the preset.
    let r = flags_run(|a| {
        a.mov(rcx, -1i64).unwrap();
        a.and(rcx, 0x80).unwrap();
    });
    for (v, f) in r {
        assert_eq!(v, 0x80);
        assert_eq!(f & (CF | OF | ZF | SF), 0);
    }
    // Shift count 0 changes nothing; SAR propagates the sign.
    let r = flags_run(|a| {
        a.mov(rcx, 0x8000_0000_0000_0000u64).unwrap();
        a.sar(rcx, 63).unwrap();
    });
    assert_eq!(r[0].0, u64::MAX);
    // CMOV / SETcc follow the preset flags.
    let r = flags_run(|a| {
        a.mov(ecx, 5u32).unwrap();
        a.mov(edx, 9u32).unwrap();
        a.cmovc(ecx, edx).unwrap();
    });
    assert_eq!((r[0].0, r[1].0), (5, 9));
}

#[test]
fn string_ops_with_rep_and_df() {
    let mut h = Harness::new();
    h.long_mode();
    h.mem.write(0x30000, b"hello, string world!").unwrap();
    let mut a = asm64();
    a.cld().unwrap();
    a.mov(rsi, 0x30000u64).unwrap();
    a.mov(rdi, 0x31000u64).unwrap();
    a.mov(ecx, 20u32).unwrap();
    a.rep().movsb().unwrap();
    // Backwards fill of 4 qwords ending at 0x32018.
    a.std().unwrap();
    a.mov(rdi, 0x32018u64).unwrap();
    a.mov(rax, 0x1122_3344_5566_7788u64).unwrap();
    a.mov(ecx, 4u32).unwrap();
    a.rep().stosq().unwrap();
    a.cld().unwrap();
    // REPNE SCASB finds '!'.
    a.mov(rdi, 0x31000u64).unwrap();
    a.mov(al, b'!' as u32).unwrap();
    a.mov(ecx, 100u32).unwrap();
    a.repne().scasb().unwrap();
    a.mov(r10, rcx).unwrap();
    // REPE CMPSB stops at the first difference.
    a.mov(rsi, 0x30000u64).unwrap();
    a.mov(rdi, 0x31000u64).unwrap();
    a.mov(byte_ptr(0x3100au64), b'X' as u32).unwrap();
    a.mov(ecx, 20u32).unwrap();
    a.repe().cmpsb().unwrap();
    a.mov(r11, rcx).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    let mut buf = [0u8; 20];
    h.mem.read(0x31000, &mut buf).unwrap();
    assert_eq!(&buf[..10], b"hello, str");
    for k in 0..4 {
        assert_eq!(
            h.mem.read_u64(0x32000 + 8 * k).unwrap(),
            0x1122_3344_5566_7788
        );
    }
    assert_eq!(h.mem.read_u64(0x32020).unwrap(), 0);
    assert_eq!(h.gpr(Gpr::Rdi), 0x31000 + 11);
    assert_eq!(h.gpr(Gpr::R10), 100 - 20);
    assert_eq!(h.gpr(Gpr::R11), 20 - 11);
}

/// REP STOSB and MOVSB from address 0 in 64-bit mode: the elements before the address
/// wraps (2^64 of them) do not fit a u64, and the bulk step's count saturates instead of
/// overflowing (found by the emu_differential fuzz target).
#[test]
fn rep_strings_from_address_zero_in_64_bit_mode() {
    let mut h = Harness::new();
    h.long_mode();
    h.mem.write(0x40000, &[0x5a; 16]).unwrap();
    let mut a = asm64();
    // Both pages in the TLB, so the bulk path is taken.
    a.mov(rax, qword_ptr(0u64)).unwrap();
    a.mov(qword_ptr(0u64), rax).unwrap();
    a.mov(rax, qword_ptr(0x40000u64)).unwrap();
    a.xor(edi, edi).unwrap();
    a.mov(ecx, 16u32).unwrap();
    a.mov(al, 0xabu32).unwrap();
    a.rep().stosb().unwrap();
    a.mov(r8, rdi).unwrap();
    a.xor(esi, esi).unwrap();
    a.mov(rdi, 0x40000u64).unwrap();
    a.mov(ecx, 8u32).unwrap();
    a.rep().movsb().unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R8), 16);
    let mut buf = [0u8; 16];
    h.mem.read(0, &mut buf).unwrap();
    assert_eq!(buf, [0xab; 16]);
    h.mem.read(0x40000, &mut buf).unwrap();
    assert_eq!(buf[..8], [0xab; 8]);
    assert_eq!(buf[8..], [0x5a; 8]);
    assert_eq!(h.gpr(Gpr::Rsi), 8);
}

/// REP MOVS through the one-memmove fast path (both pages in the TLB) gives what the
/// element-by-element path gives, including overlapping copies in both directions, and
/// a copy onto decoded code still takes the checked path and is seen.
#[test]
fn rep_movs_fast_path_matches_elements() {
    let mut h = Harness::new();
    h.long_mode();
    let src: Vec<u8> = (0u8..64)
        .map(|i| i.wrapping_mul(7).wrapping_add(1))
        .collect();
    h.mem.write(0x40000, &src).unwrap();
    h.mem.write(0x42000, &src).unwrap();
    h.mem.write(0x44000, &src).unwrap();
    let mut a = asm64();
    let mut patch = a.create_label();
    // Touch source and destination first so that both translations are cached.
    a.mov(rax, qword_ptr(0x40000u64)).unwrap();
    a.mov(qword_ptr(0x41000u64), rax).unwrap();
    a.mov(rsi, 0x40000u64).unwrap();
    a.mov(rdi, 0x41000u64).unwrap();
    a.mov(ecx, 8u32).unwrap();
    a.rep().movsq().unwrap();
    a.mov(r8, rsi).unwrap();
    a.mov(r9, rdi).unwrap();
    a.mov(r10, rcx).unwrap();
    // Overlapping upwards by one byte: the first byte is replicated.
    a.mov(rsi, 0x42000u64).unwrap();
    a.mov(rdi, 0x42001u64).unwrap();
    a.mov(ecx, 16u32).unwrap();
    a.rep().movsb().unwrap();
    // Overlapping downwards by one byte: a plain shift.
    a.mov(rsi, 0x44001u64).unwrap();
    a.mov(rdi, 0x44000u64).unwrap();
    a.mov(ecx, 16u32).unwrap();
    a.rep().movsb().unwrap();
    // Copy a new immediate over an instruction that has been decoded already.
    a.xor(r12, r12).unwrap();
    a.set_label(&mut patch).unwrap();
    a.mov(eax, 1u32).unwrap();
    a.add(r12, rax).unwrap();
    a.mov(dword_ptr(0x46000u64), 100u32 as i32).unwrap();
    a.mov(rsi, 0x46000u64).unwrap();
    a.lea(rdi, ptr(patch)).unwrap();
    a.add(rdi, 1).unwrap();
    a.mov(ecx, 4u32).unwrap();
    a.rep().movsb().unwrap();
    a.cmp(r12, 1).unwrap();
    a.je(patch).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    let mut buf = [0u8; 64];
    h.mem.read(0x41000, &mut buf).unwrap();
    assert_eq!(&buf[..], &src[..]);
    assert_eq!(
        (h.gpr(Gpr::R8), h.gpr(Gpr::R9), h.gpr(Gpr::R10)),
        (0x40040, 0x41040, 0)
    );
    let mut up = [0u8; 18];
    h.mem.read(0x42000, &mut up).unwrap();
    assert!(up[..17].iter().all(|&b| b == src[0]), "{up:?}");
    assert_eq!(up[17], src[17]);
    let mut down = [0u8; 17];
    h.mem.read(0x44000, &mut down).unwrap();
    assert_eq!(&down[..16], &src[1..17]);
    assert_eq!(down[16], src[16]);
    assert_eq!(h.gpr(Gpr::R12), 101);
}

/// RDTSC sees every instruction retired before it, even in the middle of straight-line
/// code (the block loop stores the count only between blocks).
#[test]
fn rdtsc_counts_instructions_within_a_block() {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    a.rdtsc().unwrap();
    a.shl(rdx, 32).unwrap();
    a.or(rax, rdx).unwrap();
    a.mov(r8, rax).unwrap();
    for _ in 0..5 {
        a.nop().unwrap();
    }
    a.rdtscp().unwrap();
    a.shl(rdx, 32).unwrap();
    a.or(rax, rdx).unwrap();
    a.sub(rax, r8).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    // RDTSC, SHL, OR, MOV and five NOPs retired between the two reads.
    assert_eq!(h.gpr(Gpr::Rax), 9);
}

#[test]
fn mmio_read_modify_write_protocol() {
    let mut h = Harness::new();
    h.long_mode();
    h.mmio.insert(APIC + 0x80, 0x10);
    let mut a = asm64();
    a.mov(eax, 5u32).unwrap();
    a.mov(rbx, APIC).unwrap();
    a.add(dword_ptr(rbx + 0x80), eax).unwrap();
    a.mov(ecx, dword_ptr(rbx + 0x80)).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    let mmio: Vec<Exit> = h
        .exits
        .iter()
        .copied()
        .filter(|e| matches!(e, Exit::Mmio { .. }))
        .collect();
    assert_eq!(
        mmio,
        [
            Exit::Mmio {
                gpa: APIC + 0x80,
                size: 4,
                direction: Direction::Read,
                data: 0
            },
            Exit::Mmio {
                gpa: APIC + 0x80,
                size: 4,
                direction: Direction::Write,
                data: 0x15
            },
            Exit::Mmio {
                gpa: APIC + 0x80,
                size: 4,
                direction: Direction::Read,
                data: 0
            },
        ]
    );
    assert_eq!(h.gpr(Gpr::Rcx), 0x15);
}

/// A plain MMIO load completes from the value the core supplies, like a hardware
/// backend's: one exit, the register written with the load's size rules, the instructions
/// after it run and are counted once; the same loads single-stepped go through the
/// replay and still trap after each instruction.
#[test]
fn mmio_load_completes_without_running_again() {
    for stepping in [false, true] {
        let mut h = Harness::new();
        h.long_mode();
        h.mmio.insert(APIC + 0x30, 0x8005_0014);
        h.mmio.insert(APIC + 0x20, 0xfedc_ba98_7654_3210);
        let mut a = asm64();
        let mut db = a.create_label();
        a.mov(r9, 0x8_0000u64).unwrap();
        a.mov(rbx, APIC).unwrap();
        a.mov(rcx, u64::MAX).unwrap();
        a.mov(rdx, u64::MAX).unwrap();
        if stepping {
            a.pushfq().unwrap();
            a.or(qword_ptr(rsp), 0x100).unwrap();
            a.popfq().unwrap();
        }
        a.mov(ecx, dword_ptr(rbx + 0x30)).unwrap();
        a.mov(dl, byte_ptr(rbx + 0x30)).unwrap();
        a.mov(rsi, qword_ptr(rbx + 0x20)).unwrap();
        a.lea(rdi, qword_ptr(rcx + 1)).unwrap();
        a.pushfq().unwrap();
        a.and(qword_ptr(rsp), !0x100).unwrap();
        a.popfq().unwrap();
        a.hlt().unwrap();
        // #DB: count the traps.
        a.set_label(&mut db).unwrap();
        a.inc(r10).unwrap();
        a.iretq().unwrap();
        h.load(&mut a, CODE, &[("db", db)]);
        let db = h.label("db");
        h.gate(1, db, 0);
        h.run().unwrap();
        let reads = h
            .exits
            .iter()
            .filter(|e| matches!(e, Exit::Mmio { .. }))
            .count();
        assert_eq!(reads, 3, "one exit per load (stepping {stepping})");
        assert_eq!(h.gpr(Gpr::Rcx), 0x8005_0014, "a 32-bit load zero-extends");
        assert_eq!(h.gpr(Gpr::Rdx), 0xffff_ffff_ffff_ff14, "a byte load merges");
        assert_eq!(h.gpr(Gpr::Rsi), 0xfedc_ba98_7654_3210);
        assert_eq!(h.gpr(Gpr::Rdi), 0x8005_0015);
        if stepping {
            // A trap after each instruction from the three loads to the POPFQ clearing TF.
            assert_eq!(h.gpr(Gpr::R10), 7);
        }
    }
}

#[test]
fn port_io_protocol_and_string_io() {
    let mut h = Harness::new();
    h.long_mode();
    h.mem.write(0x30000, b"abc").unwrap();
    h.input = std::vec![7, 8, 9, 10];
    let mut a = asm64();
    a.mov(dx, 0x3f8u32).unwrap();
    a.mov(al, b'X' as u32).unwrap();
    a.out(dx, al).unwrap();
    a.mov(rsi, 0x30000u64).unwrap();
    a.mov(ecx, 3u32).unwrap();
    a.rep().outsb().unwrap();
    a.in_(al, dx).unwrap();
    a.mov(r8, rax).unwrap();
    a.mov(rdi, 0x31000u64).unwrap();
    a.mov(ecx, 3u32).unwrap();
    a.rep().insb().unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    assert_eq!(h.out, b"Xabc");
    assert_eq!(h.gpr(Gpr::R8) & 0xff, 7);
    let mut buf = [0u8; 3];
    h.mem.read(0x31000, &mut buf).unwrap();
    assert_eq!(buf, [8, 9, 10]);
    assert_eq!(h.gpr(Gpr::Rcx), 0);
    assert_eq!(h.gpr(Gpr::Rdi), 0x31003);
    let io = h
        .exits
        .iter()
        .filter(|e| matches!(e, Exit::Io { .. }))
        .count();
    assert_eq!(io, 1 + 3 + 1 + 3);
}

#[test]
fn unimplemented_instruction_raises_ud_and_is_counted() {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    let mut ud_handler = a.create_label();
    a.rdrand(eax).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut ud_handler).unwrap();
    a.mov(r15, 0x600du64).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[("ud", ud_handler)]);
    let ud = h.label("ud");
    h.gate(6, ud, 0);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R15), 0x600d);
    // The #UD frame holds the faulting RIP.
    assert_eq!(h.mem.read_u64(h.gpr(Gpr::Rsp)).unwrap(), CODE);
    let names: Vec<(iced_x86::Mnemonic, u64)> = h.vcpu.unimplemented().collect();
    assert_eq!(names, [(iced_x86::Mnemonic::Rdrand, 1)]);
}

#[test]
fn triple_fault_without_idt() {
    let mut h = Harness::new();
    h.long_mode();
    h.vcpu.set_idt(DescriptorTable { base: 0, limit: 0 });
    let mut a = asm64();
    a.ud2().unwrap();
    h.load(&mut a, CODE, &[]);
    assert_eq!(h.run(), Err(Exit::TripleFault));
}

#[test]
fn page_fault_handler_maps_page_and_returns() {
    let mut h = Harness::new();
    h.long_mode();
    // Map 0x4000_0000 (1 GiB, PDPT entry 1) through a 4 KiB page table that starts empty.
    h.mem.write_u64(0x2008, 0x7000 | 7).unwrap(); // PDPT[1] -> PD at 0x7000
    h.mem.write_u64(0x7000, 0x8000 | 7).unwrap(); // PD[0] -> PT at 0x8000
    let mut a = asm64();
    let mut pf = a.create_label();
    a.mov(rax, 0x4000_0010u64).unwrap();
    a.mov(qword_ptr(rax), 0x77).unwrap();
    a.mov(rbx, qword_ptr(rax)).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut pf).unwrap();
    // Handler: map the faulting page to 0x200000, count, pop error code, return.
    a.mov(rdx, cr2).unwrap();
    a.mov(r12, rdx).unwrap();
    a.mov(rcx, 0x20_0007u64).unwrap();
    a.mov(qword_ptr(0x8000u64), rcx).unwrap();
    a.invlpg(qword_ptr(rdx)).unwrap();
    a.inc(r13).unwrap();
    a.add(rsp, 8).unwrap();
    a.iretq().unwrap();
    h.load(&mut a, CODE, &[("pf", pf)]);
    let pf = h.label("pf");
    h.gate(14, pf, 0);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R12), 0x4000_0010);
    assert_eq!(h.gpr(Gpr::R13), 1);
    assert_eq!(h.gpr(Gpr::Rbx), 0x77);
    assert_eq!(h.mem.read_u64(0x20_0010).unwrap(), 0x77);
}

#[test]
fn ring3_by_iretq_back_by_syscall_and_int() {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    let mut user = a.create_label();
    let mut sys = a.create_label();
    let mut int80 = a.create_label();
    let mut after = a.create_label();
    // Kernel: enable SYSCALL, go to ring 3 at `user`.
    a.mov(ecx, 0xc000_0081u32).unwrap();
    a.mov(edx, 0x0018_0008u32).unwrap(); // SYSRET base 0x18, SYSCALL CS 0x08
    a.xor(eax, eax).unwrap();
    a.wrmsr().unwrap();
    a.mov(ecx, 0xc000_0082u32).unwrap();
    a.lea(rax, ptr(sys)).unwrap();
    a.mov(rdx, rax).unwrap();
    a.shr(rdx, 32).unwrap();
    a.wrmsr().unwrap();
    a.push(0x23).unwrap(); // SS
    a.push(0x2_0000).unwrap(); // RSP
    a.push(0x202).unwrap(); // RFLAGS
    a.push(0x2b).unwrap(); // CS
    a.lea(rax, ptr(user)).unwrap();
    a.push(rax).unwrap();
    a.iretq().unwrap();
    a.set_label(&mut user).unwrap();
    a.mov(r8, 0x11u64).unwrap();
    a.syscall().unwrap();
    a.set_label(&mut after).unwrap();
    a.mov(r9, cs).unwrap();
    a.int(0x80).unwrap();
    a.hlt().unwrap(); // never reached: ring 3 HLT would #GP
                      // SYSCALL entry: note the CPL, return with SYSRET.
    a.set_label(&mut sys).unwrap();
    a.mov(r10, cs).unwrap();
    a.mov(r14, rcx).unwrap();
    a.sysretq().unwrap();
    // INT 0x80 handler: runs at CPL 0 on RSP0, halts.
    a.set_label(&mut int80).unwrap();
    a.mov(r11, rsp).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[("int80", int80), ("after", after)]);
    let i80 = h.label("int80");
    h.gate(0x80, i80, 3);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R8), 0x11);
    assert_eq!(h.gpr(Gpr::R10), 0x08);
    assert_eq!(h.gpr(Gpr::R14), h.label("after"));
    assert_eq!(h.gpr(Gpr::R9), 0x2b);
    assert_eq!(h.gpr(Gpr::R11), KSTACK - 40);
    assert_eq!(h.vcpu.cpl(), 0);
    // The frame: SS, RSP, RFLAGS, CS of ring 3.
    assert_eq!(h.mem.read_u64(KSTACK - 8).unwrap(), 0x23);
    assert_eq!(h.mem.read_u64(KSTACK - 32).unwrap(), 0x2b);
}

#[test]
fn real_to_protected_to_long_mode() {
    let mut h = Harness::new();
    // Tables prepared by "firmware": the same ones long_mode() writes, without entering it.
    h.long_mode();
    h.vcpu.vcpu_reset(opsvisor_core::ops::ResetKind::PowerOn);
    // Real mode at 0000:7c00.
    h.vcpu.set_segment(SegReg::Cs, &Segment::real_mode(0, true));
    h.vcpu.set_rip(0x7c00);
    // GDT gets a 32-bit code segment at 0x40.
    h.mem.write_u64(GDT + 0x40, 0x00cf_9b00_0000_ffff).unwrap();
    // GDTR image at 0x600.
    h.mem.write_u16(0x600, 0x47).unwrap();
    h.mem.write_u32(0x602, GDT as u32).unwrap();
    let mut a16 = CodeAssembler::new(16).unwrap();
    a16.cli().unwrap();
    a16.lgdt(ptr(0x600u32)).unwrap();
    a16.mov(eax, cr0).unwrap();
    a16.or(eax, 1).unwrap();
    a16.mov(cr0, eax).unwrap();
    a16.jmp_far(0x40, 0x8000).unwrap();
    h.load(&mut a16, 0x7c00, &[]);
    let mut a32 = CodeAssembler::new(32).unwrap();
    a32.mov(ax, 0x10u32).unwrap();
    a32.mov(ds, ax).unwrap();
    a32.mov(ss, ax).unwrap();
    a32.mov(esp, 0x9000u32).unwrap();
    a32.mov(eax, PML4 as u32).unwrap();
    a32.mov(cr3, eax).unwrap();
    a32.mov(eax, 0x20u32).unwrap();
    a32.mov(cr4, eax).unwrap();
    a32.mov(ecx, 0xc000_0080u32).unwrap();
    a32.rdmsr().unwrap();
    a32.or(eax, 0x100).unwrap();
    a32.wrmsr().unwrap();
    a32.mov(eax, cr0).unwrap();
    a32.or(eax, 0x8000_0000u32 as i32).unwrap();
    a32.mov(cr0, eax).unwrap();
    a32.jmp_far(0x08, 0x9000).unwrap();
    h.load(&mut a32, 0x8000, &[]);
    let mut a = asm64();
    a.mov(rax, 0x1_0000_0000u64).unwrap();
    a.mov(rbx, rsp).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, 0x9000, &[]);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::Rax), 0x1_0000_0000);
    assert_eq!(h.gpr(Gpr::Rbx), 0x9000);
    assert_eq!(h.vcpu.efer() & 0x500, 0x500);
    assert_eq!(h.vcpu.state().bits, 64);
}

#[test]
fn self_modifying_code_is_seen() {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    let mut patch = a.create_label();
    a.xor(r12, r12).unwrap();
    a.set_label(&mut patch).unwrap();
    a.mov(eax, 1u32).unwrap(); // B8 imm32: the imm32 is patched below
    a.add(r12, rax).unwrap();
    a.lea(rbx, ptr(patch)).unwrap();
    a.mov(dword_ptr(rbx + 1), 100u32 as i32).unwrap();
    a.cmp(r12, 1).unwrap();
    a.je(patch).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R12), 101);
}

#[test]
fn interrupt_window_and_external_interrupt() {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    let mut irq = a.create_label();
    a.cli().unwrap();
    a.mov(eax, 1u32).unwrap();
    a.sti().unwrap();
    a.mov(ebx, 2u32).unwrap(); // in the STI shadow
    a.mov(ecx, 3u32).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut irq).unwrap();
    a.mov(r15, 0x99u64).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[("irq", irq)]);
    let irq = h.label("irq");
    h.gate(0x30, irq, 0);
    h.vcpu.enable_irq_window(true);
    let limit = RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: 1000,
    };
    let e = h.vcpu.run(&mut h.mem, &limit);
    assert_eq!(e, Exit::InterruptWindow);
    // Window opens after the instruction in the shadow: RBX set, RCX not yet.
    assert_eq!(h.gpr(Gpr::Rbx), 2);
    assert_eq!(h.gpr(Gpr::Rcx), 0);
    assert!(h.vcpu.interrupt_allowed());
    h.vcpu.enable_irq_window(false);
    h.vcpu.inject_event(Event::ExternalInterrupt(0x30));
    assert!(!h.vcpu.interrupt_allowed());
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R15), 0x99);
    assert_eq!(h.gpr(Gpr::Rcx), 0);
    // Interrupt gate cleared IF; the frame returns to `mov ecx, 3`.
    assert_eq!(h.vcpu.rflags() & IF, 0);
}

#[test]
fn cpuid_and_msr_exits_and_gp_on_unknown_msr() {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    let mut gp = a.create_label();
    a.mov(eax, 7u32).unwrap();
    a.cpuid().unwrap();
    a.mov(r8, rax).unwrap();
    a.mov(ecx, 0xc000_0100u32).unwrap(); // FS.base
    a.mov(eax, 0x30000u32).unwrap();
    a.xor(edx, edx).unwrap();
    a.wrmsr().unwrap();
    a.mov(r9, qword_ptr(0u64).fs()).unwrap();
    a.mov(ecx, 0x1234u32).unwrap();
    a.rdmsr().unwrap();
    a.hlt().unwrap();
    a.set_label(&mut gp).unwrap();
    a.pop(r10).unwrap(); // error code
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[("gp", gp)]);
    let gp = h.label("gp");
    h.gate(13, gp, 0);
    h.mem.write_u64(0x30000, 0xfeed).unwrap();
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R8), 0x1234_0007);
    assert_eq!(h.gpr(Gpr::R9), 0xfeed);
    assert_eq!(h.gpr(Gpr::R10), 0);
    assert_eq!(h.vcpu.get_msr(0xc000_0100), Some(0x30000));
}

#[test]
fn division_by_zero_raises_de() {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    let mut de = a.create_label();
    a.mov(eax, 10u32).unwrap();
    a.xor(edx, edx).unwrap();
    a.mov(ecx, 3u32).unwrap();
    a.div(ecx).unwrap();
    a.mov(r8, rax).unwrap();
    a.mov(r9, rdx).unwrap();
    a.xor(ecx, ecx).unwrap();
    a.div(ecx).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut de).unwrap();
    a.mov(r10, 1u64).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[("de", de)]);
    let de = h.label("de");
    h.gate(0, de, 0);
    h.run().unwrap();
    assert_eq!((h.gpr(Gpr::R8), h.gpr(Gpr::R9), h.gpr(Gpr::R10)), (3, 1, 1));
}

/// Throughput: `cargo test -p opsvisor-emu --release -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput() {
    let mut h = Harness::new();
    h.long_mode();
    // Integer/branch loop: 5 instructions per iteration.
    let mut a = asm64();
    a.mov(ecx, 20_000_000u32).unwrap();
    a.xor(eax, eax).unwrap();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.add(rax, rcx).unwrap();
    a.xor(rbx, rax).unwrap();
    a.sub(rdx, 3).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(top).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    let limit = RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: u64::MAX,
    };
    let t = std::time::Instant::now();
    let e = h.vcpu.run(&mut h.mem, &limit);
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(e, Exit::Hlt);
    let n = h.vcpu.instructions_retired().unwrap();
    std::println!(
        "integer loop: {n} instructions in {dt:.3}s = {:.0} M/s",
        n as f64 / dt / 1e6
    );

    // Memory loop: load, store, add through memory.
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    a.mov(ecx, 20_000_000u32).unwrap();
    a.mov(rsi, 0x30000u64).unwrap();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.mov(rax, qword_ptr(rsi)).unwrap();
    a.add(qword_ptr(rsi + 8), rax).unwrap();
    a.mov(qword_ptr(rsi + 16), rcx).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(top).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    let t = std::time::Instant::now();
    let e = h.vcpu.run(&mut h.mem, &limit);
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(e, Exit::Hlt);
    let n = h.vcpu.instructions_retired().unwrap();
    std::println!(
        "memory loop: {n} instructions in {dt:.3}s = {:.0} M/s",
        n as f64 / dt / 1e6
    );

    // CPUID round trip.
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.cpuid().unwrap();
    a.jmp(top).unwrap();
    h.load(&mut a, CODE, &[]);
    let rounds = 2_000_000u32;
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        let e = h.vcpu.run(&mut h.mem, &limit);
        debug_assert_eq!(e, Exit::Cpuid);
        h.vcpu.set_gpr(Gpr::Rax, 1);
        h.vcpu.set_gpr(Gpr::Rbx, 2);
        h.vcpu.set_gpr(Gpr::Rcx, 3);
        h.vcpu.set_gpr(Gpr::Rdx, 4);
        h.vcpu.skip_emulated_instruction();
    }
    let dt = t.elapsed().as_secs_f64();
    std::println!("cpuid round trip: {:.1} ns", dt * 1e9 / f64::from(rounds));
}

/// Flag setters fused with the Jcc after them (`exec::fused`): every fused form, size and
/// condition branches, sets RFLAGS and counts instructions as the two instructions do.
#[test]
fn fused_compare_and_branch_matches_eager_semantics() {
    use crate::arith::alu::{alu, dec, AluOp};
    use crate::arith::flags::ARITH;
    type Jcc = fn(&mut CodeAssembler, CodeLabel) -> Result<(), IcedError>;
    let conds: [(u8, Jcc); 12] = [
        (3, |a, l| a.jb(l)),
        (4, |a, l| a.jae(l)),
        (5, |a, l| a.je(l)),
        (6, |a, l| a.jne(l)),
        (7, |a, l| a.jbe(l)),
        (8, |a, l| a.ja(l)),
        (9, |a, l| a.js(l)),
        (10, |a, l| a.jns(l)),
        (13, |a, l| a.jl(l)),
        (14, |a, l| a.jge(l)),
        (15, |a, l| a.jle(l)),
        (16, |a, l| a.jg(l)),
    ];
    let values: [(u64, u64); 5] = [
        (5, 5),
        (1, 2),
        (0x8000_0000, 1),
        (u64::MAX, 0x7fff_ffff),
        (0x7fff_ffff_ffff_ffff, 0xffff_ffff_8000_0000),
    ];
    let imm = |b: u64| b as u32 as i32;
    let mut a = asm64();
    let (mut not_taken, mut digest, mut count) = (0u64, 0u64, 0u64);
    // The memory forms' operand lives at R15.
    a.mov(r15, 0x5_0000u64).unwrap();
    for form in 0..15 {
        for size in [1u32, 4, 8] {
            let memory = form >= 10;
            if size == 1 && !matches!(form, 12 | 14) {
                continue;
            }
            for &(cc, jcc) in &conds {
                for &(x, y) in &values {
                    let m = match size {
                        1 => 0xff,
                        4 => 0xffff_ffff,
                        _ => u64::MAX,
                    };
                    // The immediate forms take y as a sign-extended imm32 (imm8 for bytes).
                    let yi = if size == 1 {
                        y & 0xff
                    } else {
                        (imm(y) as i64 as u64) & m
                    };
                    a.mov(rax, x).unwrap();
                    a.mov(rbx, y).unwrap();
                    if memory {
                        // CMP r, m reads y from memory; the others x.
                        let v = if form == 10 { rbx } else { rax };
                        a.mov(qword_ptr(r15), v).unwrap();
                    }
                    let (r, f) = match (form, size) {
                        (0, 4) => (a.cmp(eax, ebx), alu(AluOp::Sub, 4, x, y, 2)),
                        (0, _) => (a.cmp(rax, rbx), alu(AluOp::Sub, 8, x, y, 2)),
                        (1, 4) => (a.cmp(eax, imm(y)), alu(AluOp::Sub, 4, x, yi, 2)),
                        (1, _) => (a.cmp(rax, imm(y)), alu(AluOp::Sub, 8, x, yi, 2)),
                        (2, 4) => (a.test(eax, ebx), alu(AluOp::And, 4, x, y, 2)),
                        (2, _) => (a.test(rax, rbx), alu(AluOp::And, 8, x, y, 2)),
                        (3, 4) => (a.test(eax, imm(y)), alu(AluOp::And, 4, x, yi, 2)),
                        (3, _) => (a.test(rax, imm(y)), alu(AluOp::And, 8, x, yi, 2)),
                        (4, 4) => (a.sub(eax, imm(y)), alu(AluOp::Sub, 4, x, yi, 2)),
                        (4, _) => (a.sub(rax, imm(y)), alu(AluOp::Sub, 8, x, yi, 2)),
                        (5, 4) => (a.and(eax, imm(y)), alu(AluOp::And, 4, x, yi, 2)),
                        (5, _) => (a.and(rax, imm(y)), alu(AluOp::And, 8, x, yi, 2)),
                        (6, 4) => (a.add(eax, imm(y)), alu(AluOp::Add, 4, x, yi, 2)),
                        (6, _) => (a.add(rax, imm(y)), alu(AluOp::Add, 8, x, yi, 2)),
                        (7, 4) => (a.dec(eax), dec(4, x, 2)),
                        (7, _) => (a.dec(rax), dec(8, x, 2)),
                        (8, 4) => (a.add(eax, ebx), alu(AluOp::Add, 4, x, y, 2)),
                        (8, _) => (a.add(rax, rbx), alu(AluOp::Add, 8, x, y, 2)),
                        (9, 4) => (a.sub(eax, ebx), alu(AluOp::Sub, 4, x, y, 2)),
                        (9, _) => (a.sub(rax, rbx), alu(AluOp::Sub, 8, x, y, 2)),
                        (10, 4) => (a.cmp(eax, dword_ptr(r15)), alu(AluOp::Sub, 4, x, y, 2)),
                        (10, _) => (a.cmp(rax, qword_ptr(r15)), alu(AluOp::Sub, 8, x, y, 2)),
                        (11, 4) => (a.cmp(dword_ptr(r15), ebx), alu(AluOp::Sub, 4, x, y, 2)),
                        (11, _) => (a.cmp(qword_ptr(r15), rbx), alu(AluOp::Sub, 8, x, y, 2)),
                        (12, 1) => (
                            a.cmp(byte_ptr(r15), y as u8 as i8 as i32),
                            alu(AluOp::Sub, 1, x, yi, 2),
                        ),
                        (12, 4) => (a.cmp(dword_ptr(r15), imm(y)), alu(AluOp::Sub, 4, x, yi, 2)),
                        (12, _) => (a.cmp(qword_ptr(r15), imm(y)), alu(AluOp::Sub, 8, x, yi, 2)),
                        (13, 4) => (a.test(dword_ptr(r15), ebx), alu(AluOp::And, 4, x, y, 2)),
                        (13, _) => (a.test(qword_ptr(r15), rbx), alu(AluOp::And, 8, x, y, 2)),
                        (14, 1) => (
                            a.test(byte_ptr(r15), y as u8 as i8 as i32),
                            alu(AluOp::And, 1, x, yi, 2),
                        ),
                        (14, 4) => (a.test(dword_ptr(r15), imm(y)), alu(AluOp::And, 4, x, yi, 2)),
                        (_, _) => (a.test(qword_ptr(r15), imm(y)), alu(AluOp::And, 8, x, yi, 2)),
                    };
                    r.unwrap();
                    let f = f.1;
                    let mut skip = a.create_label();
                    jcc(&mut a, skip).unwrap();
                    let taken = crate::arith::cond::cond(crate::exec::CCS[usize::from(cc)], f);
                    // LEA: counts without touching the flags under test.
                    a.lea(r12, qword_ptr(r12 + 1)).unwrap();
                    a.set_label(&mut skip).unwrap();
                    a.pushfq().unwrap();
                    a.pop(r13).unwrap();
                    a.and(r13, (ARITH) as i32).unwrap();
                    a.rol(r14, 5).unwrap();
                    // Leaves CF clear for the next DEC, as the digest assumes.
                    a.xor(r14, r13).unwrap();
                    not_taken += u64::from(!taken);
                    digest = digest.rotate_left(5) ^ (f & ARITH);
                    count += 9 + u64::from(memory) + u64::from(!taken);
                }
            }
        }
    }
    a.hlt().unwrap();
    let mut h = Harness::new();
    h.long_mode();
    h.load(&mut a, CODE, &[]);
    let before = h.vcpu.instructions_retired().unwrap();
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R12), not_taken);
    assert_eq!(h.gpr(Gpr::R14), digest);
    // The HLT retires too (completed by the harness).
    // The HLT and the MOV to R15 retire too.
    assert_eq!(h.vcpu.instructions_retired().unwrap() - before, count + 2);
}

/// A fused comparison with memory that faults has done nothing: the #PF reports the CMP,
/// the handler maps the page, and the pair runs again and branches on the new value.
#[test]
fn fused_memory_compare_faults_before_the_branch() {
    let mut h = Harness::new();
    h.long_mode();
    map_4k(&mut h, &[0]);
    h.mem.write_u64(0x20_0000, 7).unwrap();
    let mut a = asm64();
    let mut cmp = a.create_label();
    let mut equal = a.create_label();
    a.xor(r13d, r13d).unwrap();
    a.xor(r12d, r12d).unwrap();
    a.mov(rsi, 0x4000_0000u64).unwrap();
    a.set_label(&mut cmp).unwrap();
    a.cmp(qword_ptr(rsi), 7).unwrap();
    a.je(equal).unwrap();
    a.mov(r12d, 1u32).unwrap();
    a.set_label(&mut equal).unwrap();
    a.hlt().unwrap();
    let pf = paging_fault_handler(&mut a);
    h.load(&mut a, CODE, &[("pf", pf), ("cmp", cmp)]);
    let pf = h.label("pf");
    h.gate(14, pf, 0);
    h.run().unwrap();
    let f = faults(&h);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0][0], f[0][1]),
        (0x4000_0000, 0),
        "a read of the unmapped page"
    );
    assert_eq!(fault_rip(&h, 0), h.label("cmp"), "the fault is the CMP's");
    assert_eq!(
        h.gpr(Gpr::R12),
        0,
        "the branch went on the value behind the new mapping"
    );
}

/// Single-stepping stops between the two instructions of a fused pair.
#[test]
fn single_step_splits_a_fused_pair() {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    let mut db = a.create_label();
    let mut jcc = a.create_label();
    let mut skip = a.create_label();
    a.mov(r9, 0x8_0000u64).unwrap();
    a.mov(rax, 1u64).unwrap();
    a.pushfq().unwrap();
    a.or(qword_ptr(rsp), 0x100).unwrap();
    a.popfq().unwrap();
    a.cmp(rax, 2).unwrap();
    a.set_label(&mut jcc).unwrap();
    a.jne(skip).unwrap();
    a.nop().unwrap();
    a.set_label(&mut skip).unwrap();
    a.pushfq().unwrap();
    a.and(qword_ptr(rsp), !0x100).unwrap();
    a.popfq().unwrap();
    a.hlt().unwrap();
    // #DB: record the RIP the trap returns to.
    a.set_label(&mut db).unwrap();
    a.push(rax).unwrap();
    a.mov(rax, qword_ptr(rsp + 8)).unwrap();
    a.mov(qword_ptr(r9), rax).unwrap();
    a.add(r9, 8).unwrap();
    a.pop(rax).unwrap();
    a.iretq().unwrap();
    h.load(&mut a, CODE, &[("db", db), ("jcc", jcc), ("skip", skip)]);
    let db = h.label("db");
    h.gate(1, db, 0);
    h.run().unwrap();
    let traps: Vec<u64> = (0..h.gpr(Gpr::R9).saturating_sub(0x8_0000) / 8)
        .map(|i| h.mem.read_u64(0x8_0000 + 8 * i).unwrap())
        .collect();
    // A trap after CMP (at the Jcc), then one after the taken Jcc (at its target).
    let at = |l: &str| traps.iter().position(|&t| t == h.label(l));
    let (j, s) = (at("jcc"), at("skip"));
    assert!(j.is_some() && s == j.map(|j| j + 1), "traps at {traps:x?}");
}

/// An IMUL whose flags the next instruction overwrites skips them in a block
/// (`exec::muldiv::dead_flags`), but single-stepped it stops with its own CF and OF: the
/// trap after it sees them set by an overflowing product, and the ADD after it clears them.
#[test]
fn single_step_sees_the_flags_of_an_imul_the_block_skips() {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    let mut db = a.create_label();
    let mut after = a.create_label();
    a.mov(r9, 0x8_0000u64).unwrap();
    a.mov(rax, 1u64 << 62).unwrap();
    a.mov(rbx, 4u64).unwrap();
    a.xor(ecx, ecx).unwrap();
    a.pushfq().unwrap();
    a.or(qword_ptr(rsp), 0x100).unwrap();
    a.popfq().unwrap();
    a.imul_2(rax, rbx).unwrap();
    a.set_label(&mut after).unwrap();
    a.add(rcx, 1).unwrap();
    a.pushfq().unwrap();
    a.and(qword_ptr(rsp), !0x100).unwrap();
    a.popfq().unwrap();
    a.hlt().unwrap();
    // #DB: record the RIP and RFLAGS the trap returns with.
    a.set_label(&mut db).unwrap();
    a.push(rax).unwrap();
    a.mov(rax, qword_ptr(rsp + 8)).unwrap();
    a.mov(qword_ptr(r9), rax).unwrap();
    a.mov(rax, qword_ptr(rsp + 24)).unwrap();
    a.mov(qword_ptr(r9 + 8), rax).unwrap();
    a.add(r9, 16).unwrap();
    a.pop(rax).unwrap();
    a.iretq().unwrap();
    h.load(&mut a, CODE, &[("db", db), ("after", after)]);
    let db = h.label("db");
    h.gate(1, db, 0);
    h.run().unwrap();
    let traps: Vec<(u64, u64)> = (0..h.gpr(Gpr::R9).saturating_sub(0x8_0000) / 16)
        .map(|i| {
            let at = 0x8_0000 + 16 * i;
            (h.mem.read_u64(at).unwrap(), h.mem.read_u64(at + 8).unwrap())
        })
        .collect();
    let (cf, of) = (1u64, 1u64 << 11);
    let k = traps
        .iter()
        .position(|&(rip, _)| rip == h.label("after"))
        .expect("a trap after the IMUL");
    assert_eq!(
        traps[k].1 & (cf | of),
        cf | of,
        "flags after IMUL: {traps:x?}"
    );
    assert_eq!(traps[k + 1].1 & (cf | of), 0, "flags after ADD: {traps:x?}");
    assert_eq!(h.gpr(Gpr::Rax), 0);
    assert_eq!(h.gpr(Gpr::Rcx), 1);
}

/// In a block, an IMUL followed by instructions that overwrite its flags (directly, or
/// after some that leave the flags alone) leaves the same registers and flags as when each
/// instruction computes all of its own, for every form and size, from flags preset to
/// all-zero and all-one.
#[test]
fn imul_with_dead_flags_matches_eager_semantics() {
    type Build = fn(&mut CodeAssembler);
    let pairs: [(Build, Build); 8] = [
        (
            |a| a.imul_2(rax, rbx).unwrap(),
            |a| a.add(rcx, rdx).unwrap(),
        ),
        (
            |a| a.imul_2(rax, rbx).unwrap(),
            |a| {
                a.mov(rdx, rax).unwrap();
                a.lea(rcx, qword_ptr(rcx + rdx * 4 + 7)).unwrap();
                a.imul_2(rcx, rbx).unwrap();
            },
        ),
        (
            |a| a.imul_3(ebx, eax, 3).unwrap(),
            |a| {
                a.movzx(ecx, bl).unwrap();
                a.not(rdx).unwrap();
                a.and(edx, ecx).unwrap();
            },
        ),
        (|a| a.imul_2(eax, ebx).unwrap(), |a| a.cmp(ecx, 5).unwrap()),
        (|a| a.imul_2(ax, bx).unwrap(), |a| a.test(cl, 1).unwrap()),
        (
            |a| a.imul_3(rax, rbx, -3).unwrap(),
            |a| a.xor(rcx, rcx).unwrap(),
        ),
        (
            |a| a.imul_3(eax, ebx, 0x7fff_0001).unwrap(),
            |a| a.sub(edx, ecx).unwrap(),
        ),
        (
            |a| a.imul_3(ax, bx, 0x1234).unwrap(),
            |a| a.or(rdx, 0x10).unwrap(),
        ),
    ];
    for (first, second) in pairs {
        let setup = |a: &mut CodeAssembler| {
            a.mov(rax, 0x8765_4321_fedc_ba98u64).unwrap();
            a.mov(rbx, 0x1357_9bdf_0246_8aceu64).unwrap();
            a.mov(rcx, 0x7fu64).unwrap();
            a.mov(rdx, 0xffff_ffff_ffff_ff80u64).unwrap();
        };
        // Together in one block, and split by a block end (a JMP to the next instruction),
        // which runs the IMUL with the handler that computes its flags.
        let together = flags_run(|a| {
            setup(a);
            first(a);
            second(a);
            // Fold the registers into RCX without touching the flags.
            a.lea(rcx, qword_ptr(rcx + rax)).unwrap();
            a.lea(rcx, qword_ptr(rcx + rdx * 2)).unwrap();
        });
        let apart = flags_run(|a| {
            setup(a);
            first(a);
            let mut next = a.create_label();
            a.jmp(next).unwrap();
            a.set_label(&mut next).unwrap();
            second(a);
            // Fold the registers into RCX without touching the flags.
            a.lea(rcx, qword_ptr(rcx + rax)).unwrap();
            a.lea(rcx, qword_ptr(rcx + rdx * 2)).unwrap();
        });
        assert_eq!(together, apart);
    }
}

/// The run limit of the re-entry tests: no deadline, a budget that preempts now and then.
const REENTRY_LIMIT: RunLimit = RunLimit {
    tsc: 0,
    deadline: None,
    max_instructions: 10_000,
};

/// Load the re-entry tests' guest into `h`, in long mode with IF set: `xor eax, eax;
/// cpuid`, then `step`, then `cmp r12, last; jb` back to the XOR, then HLT; `irq` is the
/// handler of vector 0x30 and `db` that of #DB (each followed by IRETQ). Returns the
/// addresses of `step` and of the CMP after it.
fn cpuid_loop_guest(
    h: &mut Harness,
    step: impl FnOnce(&mut CodeAssembler),
    last: i32,
    irq: impl FnOnce(&mut CodeAssembler),
    db: impl FnOnce(&mut CodeAssembler),
) -> (u64, u64) {
    h.long_mode();
    let mut a = asm64();
    let mut labels = [(); 5].map(|_| a.create_label());
    let [top, step_at, after, irq_at, db_at] = &mut labels;
    a.set_label(top).unwrap();
    a.xor(eax, eax).unwrap();
    a.cpuid().unwrap();
    a.set_label(step_at).unwrap();
    step(&mut a);
    a.set_label(after).unwrap();
    a.cmp(r12, last).unwrap();
    a.jb(*top).unwrap();
    a.hlt().unwrap();
    a.set_label(irq_at).unwrap();
    irq(&mut a);
    a.iretq().unwrap();
    a.set_label(db_at).unwrap();
    db(&mut a);
    a.iretq().unwrap();
    let named = [
        ("step", *step_at),
        ("after", *after),
        ("irq", *irq_at),
        ("db", *db_at),
    ];
    h.load(&mut a, CODE, &named);
    h.gate(0x30, h.label("irq"), 0);
    h.gate(1, h.label("db"), 0);
    h.vcpu.set_rflags(2 | IF);
    (h.label("step"), h.label("after"))
}

/// Run the re-entry tests' guest to its HLT, through preemptions. Every other exit goes
/// to `on_exit` with the number of CPUID exits so far, a CPUID already skipped. Returns
/// that number.
fn run_cpuid_loop(h: &mut Harness, mut on_exit: impl FnMut(&mut Harness, Exit, u64)) -> u64 {
    let mut cpuids = 0u64;
    loop {
        match h.vcpu.run(&mut h.mem, &REENTRY_LIMIT) {
            Exit::Preempted => {}
            Exit::Hlt => return cpuids,
            exit => {
                if exit == Exit::Cpuid {
                    cpuids += 1;
                    h.vcpu.skip_emulated_instruction();
                }
                on_exit(h, exit, cpuids);
            }
        }
        assert!(cpuids < 2000, "the guest loops");
    }
}

/// The quick re-entry after an intercept exit must notice what the core changed in between:
/// an injected interrupt, TF set through RFLAGS, code rewritten behind the guest's back,
/// and a new memory region.
#[test]
fn reentry_after_exit_sees_core_changes() {
    let mut h = Harness::new();
    let (step, after) = cpuid_loop_guest(
        &mut h,
        |a| a.add(r12, 1).unwrap(),
        1000,
        // External interrupt: count it and record where it interrupted.
        |a| {
            a.inc(r13).unwrap();
            a.mov(r14, qword_ptr(rsp)).unwrap();
        },
        // #DB: record where the trap returns to and stop single-stepping.
        |a| {
            a.mov(r15, qword_ptr(rsp)).unwrap();
            a.and(qword_ptr(rsp + 16), !0x100).unwrap();
        },
    );
    let cpuids = run_cpuid_loop(&mut h, |h, exit, cpuids| match (exit, cpuids) {
        (Exit::Cpuid, 10) => h.vcpu.inject_event(Event::ExternalInterrupt(0x30)),
        (Exit::Cpuid, 20) => {
            let f = h.vcpu.rflags();
            h.vcpu.set_rflags(f | 0x100);
        }
        (Exit::Cpuid, 30) => {
            // `add r12, 1` becomes `add r12, 2`.
            h.mem.write_u8(after - 1, 2).unwrap();
            h.vcpu.invalidate_code();
        }
        (Exit::Cpuid, 40) => h.mem.add_ram(0x1000_0000, 0x10_0000).unwrap(),
        (Exit::Cpuid, _) => {}
        (other, _) => panic!("unexpected exit {other:?}"),
    });
    assert_eq!(h.gpr(Gpr::R13), 1);
    assert_eq!(h.gpr(Gpr::R14), step);
    // One instruction (the ADD) ran under TF before the trap.
    assert_eq!(h.gpr(Gpr::R15), after);
    // R12 was 29 at the 30th exit; from then on each iteration adds 2: 31, 33, ... 1001.
    assert_eq!(h.gpr(Gpr::R12), 1001);
    assert_eq!(cpuids, 30 + (1001 - 31) / 2);
}

/// After an intercept exit the next run skips the slow checks while nothing changed
/// (`EmuVcpu::settled`): every change the core can make between two runs must still act
/// at once, at the instruction after the exit. Each is made alone at its own CPUID exit:
/// an injected interrupt, an interrupt window, an interrupt shadow, TF, an instruction
/// breakpoint in DR7, and the debugger's single step.
#[test]
fn settled_reentry_sees_each_core_change_at_once() {
    let mut h = Harness::new();
    // At the k-th CPUID exit R12 is k - 1, and the run after it starts at the INC.
    let (inc, _) = cpuid_loop_guest(
        &mut h,
        |a| a.inc(r12).unwrap(),
        100,
        // External interrupt: the count it interrupted.
        |a| a.mov(r13, r12).unwrap(),
        // #DB: the count, the RIP it returns to; TF and DR7 off.
        |a| {
            a.mov(r14, r12).unwrap();
            a.mov(r15, qword_ptr(rsp)).unwrap();
            a.and(qword_ptr(rsp + 16), !0x100).unwrap();
            a.xor(r9d, r9d).unwrap();
            a.mov(dr7, r9).unwrap();
        },
    );
    // (what happened, R12 then, RIP then)
    let mut seen: Vec<(&str, u64, u64)> = Vec::new();
    run_cpuid_loop(&mut h, |h, exit, cpuids| match (exit, cpuids) {
        (Exit::Cpuid, 10) => h.vcpu.inject_event(Event::ExternalInterrupt(0x30)),
        (Exit::Cpuid, 20) => h.vcpu.enable_irq_window(true),
        // The shadow holds the window shut for one instruction.
        (Exit::Cpuid, 30) => {
            h.vcpu.set_interrupt_shadow(true);
            h.vcpu.enable_irq_window(true);
        }
        // The shadow alone lasts one instruction too: the window asked for at the next
        // exit is open at once.
        (Exit::Cpuid, 40) => h.vcpu.set_interrupt_shadow(true),
        (Exit::Cpuid, 41) => h.vcpu.enable_irq_window(true),
        (Exit::Cpuid, 50) => {
            let f = h.vcpu.rflags();
            h.vcpu.set_rflags(f | 0x100);
        }
        (Exit::Cpuid, 55) => seen.push(("trap", h.gpr(Gpr::R14), h.gpr(Gpr::R15))),
        (Exit::Cpuid, 60) => {
            // DR0 at the INC, execute, enabled locally.
            let mut regs = h.vcpu.debug_regs();
            regs.db[0] = inc;
            regs.dr7 |= 1;
            h.vcpu.set_debug_regs(&regs);
        }
        (Exit::Cpuid, 70) => X86Ops::set_guest_debug(
            &mut h.vcpu,
            opsvisor_core::ops::GuestDebug {
                single_step: true,
                ..Default::default()
            },
        )
        .unwrap(),
        (Exit::Cpuid, _) => {}
        (Exit::InterruptWindow, _) => {
            seen.push(("window", h.gpr(Gpr::R12), h.vcpu.rip()));
            h.vcpu.enable_irq_window(false);
        }
        (Exit::Exception { vector: 1, .. }, _) => {
            seen.push(("step", h.gpr(Gpr::R12), h.vcpu.rip()));
            X86Ops::set_guest_debug(&mut h.vcpu, Default::default()).unwrap();
        }
        (other, _) => panic!("unexpected exit {other:?}"),
    });
    assert_eq!(
        h.gpr(Gpr::R13),
        9,
        "the interrupt came before the INC after exit 10"
    );
    assert_eq!(
        seen,
        [
            ("window", 19, inc),
            ("window", 30, inc + 3),
            ("window", 40, inc),
            // TF trapped after the INC (the #DB handler's R12 and return RIP).
            ("trap", 50, inc + 3),
            ("step", 70, inc + 3),
        ]
    );
    // The breakpoint faulted before the INC.
    assert_eq!((h.gpr(Gpr::R14), h.gpr(Gpr::R15)), (59, inc));
    assert_eq!(h.gpr(Gpr::R12), 100);
}

/// The quick path's test sink: it answers the CPUIDs whose number (from 1, counting those
/// it leaves to the caller too) `accepts` takes, as [`answer_numbered_cpuid`] does.
struct CpuidSink {
    /// CPUID exits so far, answered here or by the caller.
    cpuids: u64,
    /// Those answered here.
    taken: u64,
    /// Which numbers this sink answers.
    accepts: fn(u64) -> bool,
    /// The number whose answer also queues external interrupt 0x30.
    inject_at: u64,
}

/// Answer CPUID number `n`: RBX gets `n`, the instruction retires, and at `inject_at`
/// external interrupt 0x30 is queued too.
fn answer_numbered_cpuid<B: X86Ops>(vcpu: &mut B, n: u64, inject_at: u64) {
    vcpu.set_gpr(Gpr::Rbx, n);
    vcpu.skip_emulated_instruction();
    if n == inject_at {
        vcpu.inject_event(Event::ExternalInterrupt(0x30));
    }
}

impl ExitSink for CpuidSink {
    fn may_take(&self, exit: &Exit) -> bool {
        *exit == Exit::Cpuid
    }
    fn take<B: X86Ops>(&mut self, vcpu: &mut B, exit: &Exit) -> bool {
        if *exit != Exit::Cpuid || !(self.accepts)(self.cpuids + 1) {
            return false;
        }
        self.cpuids += 1;
        self.taken += 1;
        answer_numbered_cpuid(vcpu, self.cpuids, self.inject_at);
        true
    }
}

/// `run_with`: an exit the sink answers does not end the run, one it declines comes back
/// untouched, and a change the sink makes (an injected interrupt) acts at the
/// instruction after the exit, as after a new run.
#[test]
fn run_with_goes_on_after_an_exit_the_sink_answers() {
    let mut h = Harness::new();
    // At the k-th CPUID R12 is k - 1; R13 sums the numbers RBX brings.
    let (step, _) = cpuid_loop_guest(
        &mut h,
        |a| {
            a.add(r13, rbx).unwrap();
            a.inc(r12).unwrap();
        },
        300,
        // External interrupt: the count it interrupted and where.
        |a| {
            a.mov(r14, r12).unwrap();
            a.mov(r15, qword_ptr(rsp)).unwrap();
        },
        |_| {},
    );
    let mut sink = CpuidSink {
        cpuids: 0,
        taken: 0,
        accepts: |n| n % 3 != 0,
        inject_at: 100,
    };
    let mut returned = Vec::new();
    loop {
        match h.vcpu.run_with(&mut h.mem, &REENTRY_LIMIT, &mut sink) {
            Exit::Hlt => break,
            Exit::Preempted => {}
            Exit::Cpuid => {
                sink.cpuids += 1;
                returned.push(sink.cpuids);
                answer_numbered_cpuid(&mut h.vcpu, sink.cpuids, sink.inject_at);
            }
            other => panic!("unexpected exit {other:?}"),
        }
        assert!(returned.len() < 400, "the guest loops");
    }
    assert_eq!(sink.cpuids, 300);
    assert_eq!(h.gpr(Gpr::R12), 300);
    assert_eq!(h.gpr(Gpr::R13), 300 * 301 / 2);
    // Every CPUID the sink declines comes back; of those it would take, only a few do:
    // those of runs that start in the interpreter loop (the first, the second before the
    // link from the CPUID's block to the next exists, the one after the interrupt).
    let declined: Vec<u64> = (1..=300).filter(|n| n % 3 == 0).collect();
    let extra: Vec<u64> = returned.iter().copied().filter(|n| n % 3 != 0).collect();
    assert!(
        declined.iter().all(|n| returned.contains(n)),
        "{returned:?}"
    );
    assert!(extra.len() <= 3, "answered in place too rarely: {extra:?}");
    assert_eq!(sink.taken + returned.len() as u64, 300);
    // The interrupt queued with the 100th answer came before the step after it.
    assert_eq!(h.gpr(Gpr::R14), 99);
    assert_eq!(h.gpr(Gpr::R15), step);
}

/// An INS right after another exit runs through the quick re-entry (see
/// `EmuVcpu::settled`), and so does the run after its own exit: the byte the core
/// completed must still be stored before the next instruction.
#[test]
fn ins_after_an_exit_stores_its_byte_through_the_quick_reentry() {
    let mut h = Harness::new();
    h.long_mode();
    h.input = (1..=16).collect();
    let mut a = asm64();
    let mut top = a.create_label();
    a.mov(rdi, 0x31000u64).unwrap();
    a.mov(r12d, 16u32).unwrap();
    a.set_label(&mut top).unwrap();
    a.xor(eax, eax).unwrap();
    a.cpuid().unwrap();
    a.mov(dx, 0x60u32).unwrap();
    a.insb().unwrap();
    a.dec(r12d).unwrap();
    a.jnz(top).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    let mut buf = [0u8; 16];
    h.mem.read(0x31000, &mut buf).unwrap();
    assert_eq!(buf.to_vec(), (1..=16).collect::<Vec<u8>>());
    assert_eq!(h.gpr(Gpr::Rdi), 0x31010);
}

/// The blocks that skip the `brk` check after each instruction (`Block::pure`) hold only
/// register and immediate forms that cannot set it; anything that may store to memory,
/// change the mode, the stack, the flags' control bits or a segment is left out. (The
/// block loop also asserts, in debug builds, that no instruction of a pure block set it.)
#[test]
fn never_breaks_lists_only_register_forms() {
    /// Assembles one instruction.
    type Emit = dyn Fn(&mut CodeAssembler) -> Result<(), IcedError>;
    let decode = |build: &Emit| {
        let mut a = asm64();
        build(&mut a).unwrap();
        let bytes = a.assemble(CODE).unwrap();
        let mut d = iced_x86::Decoder::with_ip(64, &bytes, CODE, iced_x86::DecoderOptions::NONE);
        d.decode()
    };
    let pure: [&Emit; 9] = [
        &|a| a.add(rax, rbx),
        &|a| a.xor(eax, eax),
        &|a| a.shl(rbx, 1),
        &|a| a.dec(r8),
        &|a| a.lea(rsi, qword_ptr(rbx + r9 + 8)),
        &|a| a.mov(rcx, 0x1234_5678_9abc_def0u64),
        &|a| a.test(ecx, 1),
        &|a| a.nop(),
        &|a| a.cpuid(),
    ];
    for (n, b) in pure.iter().enumerate() {
        let i = decode(b);
        assert!(crate::decode::never_breaks(&i), "#{n} {i} should be pure");
    }
    let breaking: [&Emit; 14] = [
        &|a| a.mov(qword_ptr(rbx), rax),
        &|a| a.add(qword_ptr(rbx), 1),
        &|a| a.mov(rax, qword_ptr(rbx)),
        &|a| a.push(rax),
        &|a| a.pop(rax),
        &|a| a.popfq(),
        &|a| a.sti(),
        &|a| a.mov(ss, ax),
        &|a| a.mov(cr3, rax),
        &|a| a.out(dx, al),
        &|a| a.rep().movsq(),
        &|a| a.ret(),
        &|a| a.wrmsr(),
        &|a| a.nop_1(dword_ptr(rax)),
    ];
    for (n, b) in breaking.iter().enumerate() {
        let i = decode(b);
        assert!(
            !crate::decode::never_breaks(&i),
            "#{n} {i} must not be pure"
        );
    }
}

/// The read of a read-modify-write instruction is checked as a write: on a page that is
/// not present, `add [m], r` faults with W=1 in the error code (not as a read); once the
/// handler maps the page it completes, a second RMW takes the cached translation, and the
/// dirty bit is set. RMWs on a page that holds code (no fast writes) work too.
#[test]
fn read_modify_write_faults_as_a_write() {
    let mut h = Harness::new();
    h.long_mode();
    // 0x4000_0000 (PDPT entry 1) through a 4 KiB page table whose entry is not present.
    h.mem.write_u64(0x2008, 0x7000 | 7).unwrap();
    h.mem.write_u64(0x7000, 0x8000 | 7).unwrap();
    h.mem.write_u64(0x8000, 0x20_0000).unwrap();
    h.mem.write_u64(0x20_0010, 40).unwrap();
    let mut a = asm64();
    let mut pf = a.create_label();
    let mut counter = a.create_label();
    a.mov(rax, 0x4000_0010u64).unwrap();
    a.mov(ecx, 2u32).unwrap();
    a.add(qword_ptr(rax), rcx).unwrap();
    a.add(qword_ptr(rax), rcx).unwrap();
    a.inc(qword_ptr(counter)).unwrap();
    a.inc(qword_ptr(counter)).unwrap();
    a.mov(r15, qword_ptr(counter)).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut pf).unwrap();
    // Handler: note the error code and CR2, map the page writable, retry.
    a.pop(r12).unwrap();
    a.mov(r13, cr2).unwrap();
    a.inc(r14).unwrap();
    a.mov(rdx, 0x20_0003u64).unwrap();
    a.mov(qword_ptr(0x8000u64), rdx).unwrap();
    a.invlpg(qword_ptr(r13)).unwrap();
    a.iretq().unwrap();
    a.set_label(&mut counter).unwrap();
    a.dq(&[0]).unwrap();
    h.load(&mut a, CODE, &[("pf", pf)]);
    let pf = h.label("pf");
    h.gate(14, pf, 0);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R14), 1, "one #PF");
    assert_eq!(h.gpr(Gpr::R12), 0x2, "not present, write, supervisor");
    assert_eq!(h.gpr(Gpr::R13), 0x4000_0010);
    assert_eq!(h.mem.read_u64(0x20_0010).unwrap(), 44);
    assert_ne!(h.mem.read_u64(0x8000).unwrap() & 0x40, 0, "dirty");
    assert_eq!(h.gpr(Gpr::R15), 2);
}

/// A #PF handler for the paging tests below: logs CR2, the error code, RCX, RSI, RDI and
/// the RIP it returns to (48 bytes per fault from `FAULT_LOG`, the count in R13), then
/// maps the faulting page of
/// the 4 KiB table at 0x8000 (virtual 0x4000_0000 + n·4 KiB) to physical 0x20_0000 +
/// n·4 KiB, present, writable, and returns to retry.
const FAULT_LOG: u64 = 0x7_0000;

fn paging_fault_handler(a: &mut CodeAssembler) -> CodeLabel {
    let mut pf = a.create_label();
    a.set_label(&mut pf).unwrap();
    a.push(rax).unwrap();
    a.push(rdx).unwrap();
    a.mov(rax, r13).unwrap();
    a.imul_3(rax, rax, 48).unwrap();
    a.add(rax, FAULT_LOG as i32).unwrap();
    a.mov(rdx, cr2).unwrap();
    a.mov(qword_ptr(rax), rdx).unwrap();
    a.mov(rdx, qword_ptr(rsp + 16)).unwrap();
    a.mov(qword_ptr(rax + 8), rdx).unwrap();
    a.mov(qword_ptr(rax + 16), rcx).unwrap();
    a.mov(qword_ptr(rax + 24), rsi).unwrap();
    a.mov(qword_ptr(rax + 32), rdi).unwrap();
    a.mov(rdx, qword_ptr(rsp + 24)).unwrap();
    a.mov(qword_ptr(rax + 40), rdx).unwrap();
    a.inc(r13).unwrap();
    // PTE n = 0x20_0000 + n·4 KiB | P RW.
    a.mov(rdx, cr2).unwrap();
    a.shr(rdx, 12).unwrap();
    a.and(edx, 511).unwrap();
    a.mov(rax, rdx).unwrap();
    a.shl(rax, 12).unwrap();
    a.add(rax, 0x20_0003).unwrap();
    a.mov(qword_ptr(rdx * 8 + 0x8000), rax).unwrap();
    a.mov(rdx, cr2).unwrap();
    a.invlpg(qword_ptr(rdx)).unwrap();
    a.pop(rdx).unwrap();
    a.pop(rax).unwrap();
    a.add(rsp, 8).unwrap();
    a.iretq().unwrap();
    pf
}

/// The RIP the `i`th logged fault returned to.
fn fault_rip(h: &Harness, i: u64) -> u64 {
    h.mem.read_u64(FAULT_LOG + 48 * i + 40).unwrap()
}

/// The logged faults: (CR2, error code, RCX, RSI, RDI).
fn faults(h: &Harness) -> Vec<[u64; 5]> {
    (0..h.gpr(Gpr::R13))
        .map(|i| {
            let mut f = [0; 5];
            for (k, v) in f.iter_mut().enumerate() {
                *v = h.mem.read_u64(FAULT_LOG + 48 * i + 8 * k as u64).unwrap();
            }
            f
        })
        .collect()
}

/// Virtual 0x4000_0000.. through a 4 KiB page table at 0x8000 with `ptes` (entry n maps
/// 0x20_0000 + n·4 KiB when present).
fn map_4k(h: &mut Harness, ptes: &[u64]) {
    h.mem.write_u64(0x2008, 0x7000 | 7).unwrap();
    h.mem.write_u64(0x7000, 0x8000 | 7).unwrap();
    for (n, &pte) in ptes.iter().enumerate() {
        h.mem.write_u64(0x8000 + 8 * n as u64, pte).unwrap();
    }
}

/// REP string instructions that run into a page they may not access fault at the first
/// element on that page, with RCX, RSI and RDI counting the elements before it (the
/// elements on the first page went to host memory in one bulk step), and finish the run
/// after the handler maps the page: MOVSB reading across into a not-present page, STOSQ
/// going down into a read-only page (a write fault, P and W), CMPSB whose ES:[RDI] side
/// crosses first, and LODSD/SCASB that stop early.
#[test]
fn rep_string_faults_at_the_page_boundary_with_the_registers_of_the_element() {
    let mut h = Harness::new();
    h.long_mode();
    // Pages 0 and 3 present and writable, 1 and 4 not present, 2 read-only.
    map_4k(&mut h, &[0x20_0003, 0, 0x20_2001, 0x20_3003, 0, 0x20_5003]);
    let pattern: Vec<u8> = (0..0x6000u32).map(|i| (i * 13 + i / 251) as u8).collect();
    h.mem.write(0x20_0000, &pattern).unwrap();
    let mut a = asm64();
    a.xor(r13d, r13d).unwrap();
    // CR0.WP: supervisor writes to read-only pages fault.
    a.mov(rax, cr0).unwrap();
    a.or(rax, 1 << 16).unwrap();
    a.mov(cr0, rax).unwrap();
    // 1. MOVSB from 0x4000_0f00 (0x300 bytes) to 0x60000: the source crosses into page 1.
    a.cld().unwrap();
    a.mov(rsi, 0x4000_0f00u64).unwrap();
    a.mov(rdi, 0x6_0000u64).unwrap();
    a.mov(ecx, 0x300u32).unwrap();
    a.rep().movsb().unwrap();
    a.mov(r8, rcx).unwrap();
    a.mov(r9, rsi).unwrap();
    a.mov(r10, rdi).unwrap();
    // 2. STOSQ down from 0x4000_3040 (20 qwords): 9 on page 3, then page 2 (read-only).
    a.std().unwrap();
    a.mov(rdi, 0x4000_3040u64).unwrap();
    a.mov(rax, 0x0102_0304_0506_0708u64).unwrap();
    a.mov(ecx, 20u32).unwrap();
    a.rep().stosq().unwrap();
    a.cld().unwrap();
    a.mov(r11, rdi).unwrap();
    // 3. REPE CMPSB of equal bytes: RSI from 0x62000 (RAM), RDI from 0x4000_3ff0 into
    //    page 4 (not present); after the fault the bytes differ at 0x4000_4008.
    a.mov(rsi, 0x6_2000u64).unwrap();
    a.mov(rdi, 0x4000_3ff0u64).unwrap();
    a.mov(ecx, 0x100u32).unwrap();
    a.repe().cmpsb().unwrap();
    a.mov(r12, rcx).unwrap();
    a.mov(r14, rdi).unwrap();
    // 4. REPNE SCASB for byte 0xEE (placed at 0x4000_5123), and LODSD over page 5.
    a.mov(rdi, 0x4000_5000u64).unwrap();
    a.mov(al, 0xeeu32).unwrap();
    a.mov(ecx, 0x1000u32).unwrap();
    a.repne().scasb().unwrap();
    a.mov(r15, rcx).unwrap();
    a.mov(rsi, 0x4000_5000u64).unwrap();
    a.mov(ecx, 0x400u32).unwrap();
    a.rep().lodsd().unwrap();
    a.mov(rbx, rax).unwrap();
    a.hlt().unwrap();
    let pf = paging_fault_handler(&mut a);
    h.load(&mut a, CODE, &[("pf", pf)]);
    let pf = h.label("pf");
    h.gate(14, pf, 0);
    // CMPSB's source: the bytes at 0x4000_3ff0.. as they will be, one differing.
    let mut cmp = pattern[0x3ff0..0x40f0].to_vec();
    cmp[0x18] ^= 0xff;
    h.mem.write(0x6_2000, &cmp).unwrap();
    h.mem.write(0x20_5000, &[0u8; 0x1000]).unwrap();
    h.mem.write_u8(0x20_5123, 0xee).unwrap();
    let last = 0x20_5ffc;
    h.mem.write(last, &0xdead_beefu32.to_le_bytes()).unwrap();
    h.run().unwrap();
    assert_eq!(
        faults(&h),
        [
            // MOVSB: 0x100 bytes done, the read of 0x4000_1000 faults (not present).
            [0x4000_1000, 0, 0x200, 0x4000_1000, 0x6_0100],
            // STOSQ: 9 qwords done, the write to 0x4000_2ff8 faults (present, write);
            // RSI is what MOVSB left.
            [0x4000_2ff8, 3, 11, 0x4000_1200, 0x4000_2ff8],
            // CMPSB: 16 bytes done, ES:[RDI] at 0x4000_4000 faults first.
            [0x4000_4000, 0, 0xf0, 0x6_2010, 0x4000_4000],
        ]
    );
    assert_eq!(
        (h.gpr(Gpr::R8), h.gpr(Gpr::R9), h.gpr(Gpr::R10)),
        (0, 0x4000_1200, 0x6_0300)
    );
    let mut copied = [0u8; 0x300];
    h.mem.read(0x6_0000, &mut copied).unwrap();
    // Page 1 was mapped by the handler to 0x20_1000, which holds the pattern too.
    assert_eq!(&copied[..], &pattern[0xf00..0x1200]);
    assert_eq!(h.gpr(Gpr::R11), 0x4000_3040 - 20 * 8);
    for k in 0..20u64 {
        let at = 0x20_3040 - 8 * k;
        assert_eq!(
            h.mem.read_u64(at).unwrap(),
            0x0102_0304_0506_0708,
            "{at:#x}"
        );
    }
    // CMPSB stopped after the differing byte at offset 0x18.
    assert_eq!(
        (h.gpr(Gpr::R12), h.gpr(Gpr::R14)),
        (0x100 - 0x19, 0x4000_4009)
    );
    assert_eq!(h.gpr(Gpr::R15), 0x1000 - 0x124);
    assert_eq!(h.gpr(Gpr::Rbx), 0xdead_beef);
}

/// The TLB against page-table changes: a remapped 4 KiB page is seen after INVLPG and
/// after a CR3 reload (before them the old or the new mapping, as the SDM allows); a
/// global page after INVLPG and after CR4.PGE is toggled; a 2 MiB page after INVLPG of
/// another 4 KiB part of it (one large-page translation covers the whole page).
#[test]
fn tlb_sees_remapped_pages_after_invlpg_cr3_and_pge() {
    let mut h = Harness::new();
    h.long_mode();
    let (a_frame, b_frame) = (0x20_0000u64, 0x20_1000u64);
    map_4k(&mut h, &[a_frame | 3]);
    h.mem.write_u64(a_frame, 0xaaaa).unwrap();
    h.mem.write_u64(b_frame, 0xbbbb).unwrap();
    // PD[1]: a 2 MiB page at 0x4020_0000 -> 0 (RAM is 4 MiB); the new target 0x20_0000.
    h.mem.write_u64(0x7008, 0x83).unwrap();
    h.mem.write_u64(0x3_8000, 0x1111).unwrap();
    h.mem.write_u64(0x23_8000, 0x6666).unwrap();
    let va = 0x4000_0000u64;
    let mut a = asm64();
    let read = |a: &mut CodeAssembler, r: AsmRegister64| {
        a.mov(rdx, va).unwrap();
        a.mov(r, qword_ptr(rdx)).unwrap();
    };
    let set_pte = |a: &mut CodeAssembler, v: u64| {
        a.mov(rax, v).unwrap();
        a.mov(qword_ptr(0x8000u64), rax).unwrap();
    };
    read(&mut a, r8);
    set_pte(&mut a, b_frame | 3);
    read(&mut a, r9); // either
    a.mov(rdx, va).unwrap();
    a.invlpg(qword_ptr(rdx)).unwrap();
    read(&mut a, r10); // new
    set_pte(&mut a, a_frame | 3);
    a.mov(rax, cr3).unwrap();
    a.mov(cr3, rax).unwrap();
    read(&mut a, r11); // new (A again)
                       // Global: CR4.PGE on, the page global.
    a.mov(rax, cr4).unwrap();
    a.or(rax, 0x80).unwrap();
    a.mov(cr4, rax).unwrap();
    set_pte(&mut a, a_frame | 0x103);
    a.mov(rdx, va).unwrap();
    a.invlpg(qword_ptr(rdx)).unwrap();
    read(&mut a, r12); // A, now cached as global
    set_pte(&mut a, b_frame | 0x103);
    a.mov(rax, cr3).unwrap();
    a.mov(cr3, rax).unwrap();
    read(&mut a, r13); // either: a CR3 write may keep global entries
    a.mov(rdx, va).unwrap();
    a.invlpg(qword_ptr(rdx)).unwrap();
    read(&mut a, r14); // B
    set_pte(&mut a, a_frame | 0x103);
    a.mov(rax, cr4).unwrap();
    a.and(rax, !0x80).unwrap();
    a.mov(cr4, rax).unwrap();
    a.or(rax, 0x80).unwrap();
    a.mov(cr4, rax).unwrap();
    read(&mut a, r15); // A
                       // Large page: read through it, retarget it, INVLPG another 4 KiB part of it.
    a.mov(rdx, 0x4023_8000u64).unwrap();
    a.mov(rbx, qword_ptr(rdx)).unwrap();
    a.mov(rax, 0x20_0000u64 | 0x83).unwrap();
    a.mov(qword_ptr(0x7008u64), rax).unwrap();
    a.mov(rdx, 0x4020_5000u64).unwrap();
    a.invlpg(qword_ptr(rdx)).unwrap();
    a.mov(rdx, 0x4023_8000u64).unwrap();
    a.mov(rcx, qword_ptr(rdx)).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    let either = [0xaaaa, 0xbbbb];
    assert_eq!(h.gpr(Gpr::R8), 0xaaaa);
    assert!(either.contains(&h.gpr(Gpr::R9)), "{:#x}", h.gpr(Gpr::R9));
    assert_eq!(h.gpr(Gpr::R10), 0xbbbb, "after INVLPG");
    assert_eq!(h.gpr(Gpr::R11), 0xaaaa, "after the CR3 reload");
    assert_eq!(h.gpr(Gpr::R12), 0xaaaa);
    assert!(either.contains(&h.gpr(Gpr::R13)), "{:#x}", h.gpr(Gpr::R13));
    assert_eq!(h.gpr(Gpr::R14), 0xbbbb, "a global page after INVLPG");
    assert_eq!(
        h.gpr(Gpr::R15),
        0xaaaa,
        "a global page after CR4.PGE toggled"
    );
    assert_eq!(h.gpr(Gpr::Rbx), 0x1111);
    assert_eq!(
        h.gpr(Gpr::Rcx),
        0x6666,
        "the 2 MiB page after INVLPG inside it"
    );
}

/// The end of RAM in the test machine (4 MiB; the identity map goes on to 1 GiB, so the
/// pages above are mapped but not RAM).
const RAM_END: u64 = 4 << 20;

/// The MMIO exits the run made, in order.
fn mmio_exits(h: &Harness) -> Vec<Exit> {
    h.exits
        .iter()
        .copied()
        .filter(|e| matches!(e, Exit::Mmio { .. }))
        .collect()
}

/// A read that straddles the end of RAM takes its low part from RAM and its high part
/// from the bus (an MMIO read of just those bytes); a store splits the same way, the RAM
/// part written and the rest an MMIO store. An access straddling two pages that are both
/// outside RAM is two MMIO accesses. None of this ends the run.
#[test]
fn accesses_straddling_the_end_of_ram_split_into_ram_and_bus_parts() {
    let mut h = Harness::new();
    h.long_mode();
    h.mem.write_u32(RAM_END - 4, 0x4433_2211).unwrap();
    h.mmio.insert(RAM_END, 0xddcc_bbaa);
    h.mmio.insert(RAM_END + 0xffe, 0xbbaa);
    h.mmio.insert(RAM_END + 0x1000, 0xffee_ddcc_bbaa_9988);
    let mut a = asm64();
    a.mov(rbx, RAM_END - 4).unwrap();
    a.mov(rax, qword_ptr(rbx)).unwrap();
    a.mov(rdx, 0x0102_0304_0506_0708u64).unwrap();
    a.mov(qword_ptr(rbx), rdx).unwrap();
    // Both pages outside RAM: two reads, then two stores.
    a.mov(rbx, RAM_END + 0xffe).unwrap();
    a.mov(rsi, qword_ptr(rbx)).unwrap();
    a.mov(qword_ptr(rbx), rdx).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::Rax), 0xddcc_bbaa_4433_2211);
    assert_eq!(h.mem.read_u32(RAM_END - 4).unwrap(), 0x0506_0708);
    assert_eq!(h.gpr(Gpr::Rsi), 0xddcc_bbaa_9988_bbaa);
    let read = |gpa, size| Exit::Mmio {
        gpa,
        size,
        direction: Direction::Read,
        data: 0,
    };
    let write = |gpa, size, data| Exit::Mmio {
        gpa,
        size,
        direction: Direction::Write,
        data,
    };
    assert_eq!(
        mmio_exits(&h),
        [
            read(RAM_END, 4),
            write(RAM_END, 4, 0x0102_0304),
            read(RAM_END + 0xffe, 2),
            read(RAM_END + 0x1000, 6),
            write(RAM_END + 0xffe, 2, 0x0708),
            write(RAM_END + 0x1000, 6, 0x0102_0304_0506),
        ]
    );
}

/// REP string instructions on memory outside RAM run to the end, one MMIO access per
/// element and exit, in both directions (stores with REP STOS, loads with REP LODS).
#[test]
fn rep_string_instructions_outside_ram_run_element_by_element() {
    let mut h = Harness::new();
    h.long_mode();
    h.mmio.insert(RAM_END + 0x100, 0x11);
    h.mmio.insert(RAM_END + 0x107, 0x77);
    let mut a = asm64();
    a.cld().unwrap();
    a.mov(rdi, RAM_END + 0x200).unwrap();
    a.mov(eax, 0x5au32).unwrap();
    a.mov(ecx, 16u32).unwrap();
    a.rep().stosb().unwrap();
    a.mov(rsi, RAM_END + 0x100).unwrap();
    a.mov(ecx, 8u32).unwrap();
    a.xor(eax, eax).unwrap();
    a.rep().lodsb().unwrap();
    a.mov(r8, rax).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::Rcx), 0);
    assert_eq!(h.gpr(Gpr::Rdi), RAM_END + 0x210);
    assert_eq!(h.gpr(Gpr::Rsi), RAM_END + 0x108);
    assert_eq!(h.gpr(Gpr::R8), 0x77, "the last element loaded");
    let exits = mmio_exits(&h);
    let stores: Vec<u64> = exits
        .iter()
        .filter_map(|e| match *e {
            Exit::Mmio {
                gpa,
                direction: Direction::Write,
                data: 0x5a,
                size: 1,
            } => Some(gpa),
            _ => None,
        })
        .collect();
    assert_eq!(
        stores,
        (0..16).map(|i| RAM_END + 0x200 + i).collect::<Vec<_>>()
    );
    let loads: Vec<u64> = exits
        .iter()
        .filter_map(|e| match *e {
            Exit::Mmio {
                gpa,
                direction: Direction::Read,
                ..
            } => Some(gpa),
            _ => None,
        })
        .collect();
    assert_eq!(
        loads,
        (0..8).map(|i| RAM_END + 0x100 + i).collect::<Vec<_>>()
    );
}

/// An instruction whose bytes run past the end of RAM reads the missing bytes as all
/// ones (unbacked memory): `mov eax, imm32` with two bytes in RAM loads 0xffffff11. The
/// next instruction lies wholly outside RAM, which is refused as before.
#[test]
fn an_instruction_straddling_the_end_of_ram_reads_ones_beyond_it() {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    a.mov(rax, RAM_END - 2).unwrap();
    a.jmp(rax).unwrap();
    h.load(&mut a, CODE, &[]);
    h.mem.write(RAM_END - 2, &[0xb8, 0x11]).unwrap();
    let end = h.run();
    assert_eq!(h.gpr(Gpr::Rax), 0xffff_ff11);
    assert_eq!(end, Err(Exit::SlatViolation { gpa: RAM_END + 3 }));
}

/// The self-modifying-code table has one entry per RAM page, wherever the RAM is: a
/// 2 MiB region at 256 GiB (near the top of the 39-bit physical address space the CPU
/// model reports) adds 512 entries, not 2^26, and code there that patches itself is
/// still seen.
#[test]
fn code_tracking_is_sized_by_ram_not_by_address() {
    const HIGH: u64 = 1 << 38;
    let mut h = Harness::new();
    h.long_mode();
    h.mem.add_ram(HIGH, 2 << 20).unwrap();
    // PDPT entry 256 -> PD at 0xb000 -> a 2 MiB page at 256 GiB.
    h.mem.write_u64(0x2000 + 256 * 8, 0xb000 | 7).unwrap();
    h.mem.write_u64(0xb000, HIGH | 0x87).unwrap();
    let mut a = asm64();
    a.mov(rax, HIGH).unwrap();
    a.jmp(rax).unwrap();
    h.load(&mut a, CODE, &[]);
    let mut high = asm64();
    let mut patch = high.create_label();
    high.xor(r12, r12).unwrap();
    high.set_label(&mut patch).unwrap();
    high.mov(eax, 1u32).unwrap();
    high.add(r12, rax).unwrap();
    high.lea(rbx, ptr(patch)).unwrap();
    high.mov(dword_ptr(rbx + 1), 100u32 as i32).unwrap();
    high.cmp(r12, 1).unwrap();
    high.je(patch).unwrap();
    high.hlt().unwrap();
    h.load(&mut high, HIGH, &[]);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R12), 101);
    let pages = ((4 << 20) + (2 << 20)) / 4096;
    assert_eq!(h.vcpu.state().code_chunks.len(), pages);
}

/// With event exits on, exceptions and software interrupts end the run where they arise,
/// with nothing pushed and no handler run: a fault leaves RIP at the instruction with its
/// registers as they were, INT3 leaves RIP at itself, and INT n through a gate that is
/// not present ends with the #NP that check raises.
#[test]
fn event_exits_report_exceptions_without_delivering_them() {
    let mut h = Harness::new();
    h.long_mode();
    h.vcpu.set_event_exits(true);
    let stack = 0x20_0000u64;
    h.mem.write(stack - 64, &[0x5a; 64]).unwrap();
    // A division by zero, INT3 and INT 0x40, each run from its own RIP.
    let mut a = asm64();
    let mut de = a.create_label();
    let mut brk = a.create_label();
    let mut np = a.create_label();
    a.mov(rsp, stack).unwrap();
    a.mov(ecx, 3u32).unwrap();
    a.xor(edx, edx).unwrap();
    a.xor(ebx, ebx).unwrap();
    a.set_label(&mut de).unwrap();
    a.div(rbx).unwrap();
    a.set_label(&mut brk).unwrap();
    a.int3().unwrap();
    a.set_label(&mut np).unwrap();
    a.int(0x40).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[("de", de), ("bp", brk), ("np", np)]);
    // A present gate for INT3 (its handler never runs); none for 0x40.
    h.gate(3, CODE, 0);
    assert_eq!(
        h.run(),
        Err(Exit::Exception {
            vector: 0,
            error_code: None
        })
    );
    assert_eq!(h.vcpu.rip(), h.label("de"));
    assert_eq!(h.gpr(Gpr::Rsp), stack);
    assert_eq!(h.gpr(Gpr::Rcx), 3);
    h.vcpu.set_rip(h.label("bp"));
    assert_eq!(
        h.run(),
        Err(Exit::Exception {
            vector: 3,
            error_code: None
        })
    );
    assert_eq!(h.vcpu.rip(), h.label("bp"));
    h.vcpu.set_rip(h.label("np"));
    assert_eq!(
        h.run(),
        Err(Exit::Exception {
            vector: 11,
            error_code: Some(0x40 * 8 + 2)
        })
    );
    assert_eq!(h.vcpu.rip(), h.label("np"));
    assert_eq!(h.gpr(Gpr::Rsp), stack);
    let mut below = [0u8; 64];
    h.mem.read(stack - 64, &mut below).unwrap();
    assert_eq!(below, [0x5a; 64], "no frame was pushed");
}

/// An INS element that crosses a page boundary is stored page by page: each page is
/// translated on its own (the next linear page may map anywhere), and the bytes past the
/// end of RAM are dropped while the ones in RAM are stored.
#[test]
fn ins_elements_crossing_a_page_are_stored_page_by_page() {
    let mut h = Harness::new();
    h.long_mode();
    // Linear 0x4000_0000 and 0x4000_1000 through a 4 KiB page table, onto two physical
    // pages that are not adjacent.
    h.mem.write_u64(0x2008, 0x7000 | 7).unwrap();
    h.mem.write_u64(0x7000, 0x8000 | 7).unwrap();
    h.mem.write_u64(0x8000, 0x20_0000 | 3).unwrap();
    h.mem.write_u64(0x8008, 0x30_0000 | 3).unwrap();
    h.input = std::vec![0xa1, 0xb2];
    h.mem.write_u8(0x30_0000, 0xee).unwrap();
    h.mem.write_u8(0x20_1000, 0xee).unwrap();
    let mut a = asm64();
    a.mov(edx, 0x60u32).unwrap();
    a.mov(rdi, 0x4000_0fffu64).unwrap();
    a.insw().unwrap();
    a.mov(rdi, RAM_END - 1).unwrap();
    a.insw().unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().unwrap();
    // The harness answers a port read with one byte: the high byte of each word is 0.
    assert_eq!(h.mem.read_u8(0x20_0fff).unwrap(), 0xa1);
    assert_eq!(
        h.mem.read_u8(0x30_0000).unwrap(),
        0x00,
        "the next linear page's byte"
    );
    assert_eq!(
        h.mem.read_u8(0x20_1000).unwrap(),
        0xee,
        "not the next physical byte"
    );
    assert_eq!(h.mem.read_u8(RAM_END - 1).unwrap(), 0xb2);
    assert_eq!(h.gpr(Gpr::Rdi), RAM_END + 1);
}

/// A straight-line block with an OUT in the middle, a loop and a fault handled by the
/// guest: what a debugger steps through and stops in.
fn debug_harness() -> Harness {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    let mut again = a.create_label();
    a.mov(eax, 1u32).unwrap(); // 0
    a.mov(ebx, 2u32).unwrap(); // 1
    a.add(eax, ebx).unwrap(); // 2
    a.mov(dx, 0x3f8u32).unwrap(); // 3
    a.out(dx, al).unwrap(); // 4: intercepted, completed by the core
    a.mov(ecx, 3u32).unwrap(); // 5
    a.set_label(&mut again).unwrap();
    a.inc(r8).unwrap(); // the loop's body
    a.dec(ecx).unwrap();
    a.jnz(again).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[("loop", again)]);
    h
}

fn debug_stop(vector: u8) -> Exit {
    Exit::Exception {
        vector,
        error_code: None,
    }
}

#[test]
fn guest_debug_single_steps_one_instruction_at_a_time() {
    let mut h = debug_harness();
    // Run it once first: steps must split the cached blocks too.
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R8), 3);
    h.vcpu.set_rip(CODE);
    h.vcpu.set_gpr(Gpr::R8, 0);
    h.out.clear();
    let mut rips = std::vec![h.vcpu.rip()];
    for _ in 0..6 {
        let step = GuestDebug {
            single_step: true,
            ..GuestDebug::default()
        };
        h.vcpu.set_guest_debug(&h.mem, Some(step)).unwrap();
        assert_eq!(h.run(), Err(debug_stop(1)));
        rips.push(h.vcpu.rip());
    }
    // mov eax (5 bytes), mov ebx (5), add (2), mov dx (4), out (1), mov ecx (5).
    assert_eq!(
        rips,
        [0, 5, 10, 12, 16, 17, 22].map(|o| CODE + o).to_vec(),
        "one instruction per step"
    );
    assert_eq!(h.gpr(Gpr::Rax) & 0xff, 3);
    // The OUT was completed by the core within its step, once.
    assert_eq!(h.out, b"\x03");
    // Without a request the guest runs to its end.
    h.vcpu.set_guest_debug(&h.mem, None).unwrap();
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R8), 3);
}

#[test]
fn x86ops_guest_debug_is_the_emulators_single_step() {
    use opsvisor_core::ops::GuestDebug as Stops;
    let mut h = debug_harness();
    let step = Stops {
        single_step: true,
        ..Stops::default()
    };
    X86Ops::set_guest_debug(&mut h.vcpu, step).unwrap();
    assert_eq!(h.run(), Err(debug_stop(1)));
    assert_eq!(h.vcpu.rip(), CODE + 5, "one instruction");
    // The emulator stops at breakpoints by address, not by intercepting #BP and #DB.
    for intercept in [
        Stops {
            intercept_breakpoints: true,
            ..Stops::default()
        },
        Stops {
            intercept_debug: true,
            ..step
        },
    ] {
        assert!(X86Ops::set_guest_debug(&mut h.vcpu, intercept).is_err());
    }
    X86Ops::set_guest_debug(&mut h.vcpu, step).unwrap();
    assert_eq!(h.run(), Err(debug_stop(1)));
    assert_eq!(h.vcpu.rip(), CODE + 10);
    X86Ops::set_guest_debug(&mut h.vcpu, Stops::default()).unwrap();
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R8), 3);
}

#[test]
fn guest_debug_breakpoints_stop_before_the_instruction_each_time() {
    let mut h = debug_harness();
    h.run().unwrap();
    h.vcpu.set_rip(CODE);
    h.vcpu.set_gpr(Gpr::R8, 0);
    let body = h.label("loop");
    let debug = GuestDebug {
        breakpoints: std::vec![body],
        ..GuestDebug::default()
    };
    h.vcpu.set_guest_debug(&h.mem, Some(debug.clone())).unwrap();
    for pass in 0..3 {
        assert_eq!(h.run(), Err(debug_stop(3)), "pass {pass}");
        assert_eq!(h.vcpu.rip(), body);
        // Stopped before the INC: R8 counts the passes done.
        assert_eq!(h.gpr(Gpr::R8), pass);
        assert_eq!(h.vcpu.debug_stop_reason(), Some(DebugStop::Breakpoint));
        // Resuming from the breakpoint runs the instruction there.
        h.vcpu.set_guest_debug(&h.mem, Some(debug.clone())).unwrap();
    }
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R8), 3);
    // Memory is untouched: the breakpoint is not an INT3 in the code.
    let mut byte = [0u8];
    h.mem.read(body, &mut byte).unwrap();
    assert_ne!(byte[0], 0xcc);
    let too_many = GuestDebug {
        breakpoints: (0..=MAX_BREAKPOINTS as u64).collect(),
        ..GuestDebug::default()
    };
    assert!(h.vcpu.set_guest_debug(&h.mem, Some(too_many)).is_err());
    let too_wide = GuestDebug {
        watchpoints: std::vec![Watch { gpa: 0, len: 9 }],
        ..GuestDebug::default()
    };
    assert!(h.vcpu.set_guest_debug(&h.mem, Some(too_wide)).is_err());
}

#[test]
fn guest_debug_step_into_an_exception_stops_at_its_handler() {
    let mut h = Harness::new();
    h.long_mode();
    let mut handler = asm64();
    handler.hlt().unwrap();
    h.load(&mut handler, 0x40000, &[]);
    h.gate(0, 0x40000, 0);
    let mut a = asm64();
    a.xor(ecx, ecx).unwrap();
    a.mov(eax, 1u32).unwrap();
    a.xor(edx, edx).unwrap();
    a.div(ecx).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    let step = || GuestDebug {
        single_step: true,
        ..GuestDebug::default()
    };
    for _ in 0..3 {
        h.vcpu.set_guest_debug(&h.mem, Some(step())).unwrap();
        assert_eq!(h.run(), Err(debug_stop(1)));
    }
    assert_eq!(h.vcpu.rip(), CODE + 9, "at the DIV");
    h.vcpu.set_guest_debug(&h.mem, Some(step())).unwrap();
    assert_eq!(h.run(), Err(debug_stop(1)));
    assert_eq!(
        h.vcpu.rip(),
        0x40000,
        "the #DE handler, before its first instruction"
    );
}

#[test]
fn guest_debug_watchpoints_stop_after_a_store_that_changes_the_bytes() {
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    a.mov(rdi, 0x30000u64).unwrap();
    a.mov(byte_ptr(rdi + 8), 1u32).unwrap(); // next to the watched bytes
    a.mov(eax, 7u32).unwrap();
    a.mov(dword_ptr(rdi + 4), eax).unwrap(); // overlaps them: stops after
    a.mov(dword_ptr(rdi + 4), eax).unwrap(); // the same value: no stop
    a.mov(byte_ptr(rdi + 5), 9u32).unwrap(); // stops after
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    let watch = GuestDebug {
        watchpoints: std::vec![Watch {
            gpa: 0x30004,
            len: 2
        }],
        ..GuestDebug::default()
    };
    h.vcpu.set_guest_debug(&h.mem, Some(watch.clone())).unwrap();
    assert_eq!(h.run(), Err(debug_stop(1)));
    assert_eq!(h.vcpu.debug_stop_reason(), Some(DebugStop::Watch(0)));
    // After the first store to them: mov rdi (10 bytes), mov byte (4), mov eax (5),
    // mov dword (3).
    assert_eq!(h.vcpu.rip(), CODE + 22);
    h.vcpu.set_guest_debug(&h.mem, Some(watch)).unwrap();
    assert_eq!(h.run(), Err(debug_stop(1)));
    assert_eq!(
        h.vcpu.rip(),
        CODE + 29,
        "after the byte store, not the same-value one"
    );
    let mut bytes = [0u8; 2];
    h.mem.read(0x30004, &mut bytes).unwrap();
    assert_eq!(bytes, [7, 9]);
}

#[test]
fn guest_debug_access_watchpoints_stop_after_reads_and_writes_of_the_bytes() {
    let mut h = Harness::new();
    h.long_mode();
    h.mem.write(0x30000, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let mut a = asm64();
    a.mov(rdi, 0x30000u64).unwrap(); // 10 bytes
    a.mov(eax, dword_ptr(rdi)).unwrap(); // 2: reads 0x30000..4, beside the watch
    a.mov(ax, word_ptr(rdi + 3)).unwrap(); // 4: reads 0x30003..5: stops
    a.mov(byte_ptr(rdi + 4), 9u32).unwrap(); // 4: writes 0x30004: stops for writes
    a.push(qword_ptr(rdi)).unwrap(); // 2: reads 0x30000..8 (and writes the stack)
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    let debug = |read, write| GuestDebug {
        access_watchpoints: std::vec![AccessWatch {
            addr: 0x30004,
            len: 2,
            read,
            write,
        }],
        ..GuestDebug::default()
    };
    // Reads: after the word load, then after the push's load.
    h.vcpu
        .set_guest_debug(&h.mem, Some(debug(true, false)))
        .unwrap();
    assert_eq!(h.run(), Err(debug_stop(1)));
    assert_eq!(h.vcpu.debug_stop_reason(), Some(DebugStop::Access(0)));
    assert_eq!(h.vcpu.rip(), CODE + 16);
    assert_eq!(h.gpr(Gpr::Rax) & 0xffff, 0x0504);
    h.vcpu
        .set_guest_debug(&h.mem, Some(debug(true, false)))
        .unwrap();
    assert_eq!(h.run(), Err(debug_stop(1)));
    assert_eq!(
        h.vcpu.rip(),
        CODE + 22,
        "after the push, not the byte store"
    );
    h.vcpu.set_guest_debug(&h.mem, None).unwrap();
    h.run().unwrap();
    // Writes: only the byte store, even though it stores what a write watch by value
    // would also see.
    h.vcpu.set_rip(CODE);
    h.vcpu
        .set_guest_debug(&h.mem, Some(debug(false, true)))
        .unwrap();
    assert_eq!(h.run(), Err(debug_stop(1)));
    assert_eq!(h.vcpu.rip(), CODE + 20);
    h.vcpu
        .set_guest_debug(&h.mem, Some(debug(false, true)))
        .unwrap();
    h.run().unwrap();
}

/// Two vCPUs on one guest memory: a store by one reaches the code the other decoded, even
/// when the storing vCPU had the page in its TLB as plain data before the other decoded
/// from it (cross-modifying code, SDM 3A 9.1.3), and each vCPU's own decode cache
/// follows stores it did not make.
#[test]
fn cross_modifying_code_between_vcpus_is_seen() {
    const DATA: u64 = CODE + 0x800;
    const WRITER: u64 = CODE + 0x4000;
    let mut h = Harness::new();
    h.long_mode();
    // vCPU A's code, on the page at CODE: EAX = imm32, HLT.
    let mut a = asm64();
    a.mov(eax, 1u32).unwrap();
    a.hlt().unwrap();
    a.jmp(CODE).unwrap();
    h.load(&mut a, CODE, &[]);
    // vCPU B's code, elsewhere: a data store to A's page (filling B's TLB while nothing
    // there is code), HLT; then a store to A's imm32 (RBX), HLT.
    let mut b = asm64();
    let mut patch = b.create_label();
    b.mov(dword_ptr(DATA), 0x55u32 as i32).unwrap();
    b.hlt().unwrap();
    b.set_label(&mut patch).unwrap();
    b.mov(dword_ptr(rbx + 1), edx).unwrap();
    b.hlt().unwrap();
    b.jmp(WRITER).unwrap();
    h.load(&mut b, WRITER, &[("patch", patch)]);

    // B first: A's page becomes a fast store target in B's TLB.
    let mut vcpu_a = core::mem::take(&mut h.vcpu);
    h.long_mode();
    h.vcpu.set_rip(WRITER);
    h.vcpu.set_gpr(Gpr::Rbx, CODE);
    h.run().unwrap();
    assert_eq!(h.mem.read_u32(DATA).unwrap(), 0x55);
    let mut vcpu_b = core::mem::replace(&mut h.vcpu, vcpu_a);

    // A decodes and runs its code.
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::Rax), 1);

    // B patches A's immediate; A, run again from the start, executes the new bytes.
    for value in [7u32, 0x1234_5678] {
        vcpu_a = core::mem::replace(&mut h.vcpu, vcpu_b);
        h.vcpu.set_gpr(Gpr::Rdx, u64::from(value));
        h.vcpu.set_rip(h.label("patch"));
        h.run().unwrap();
        vcpu_b = core::mem::replace(&mut h.vcpu, vcpu_a);
        h.vcpu.set_rip(CODE);
        h.run().unwrap();
        assert_eq!(h.gpr(Gpr::Rax), u64::from(value), "A ran stale code");
    }
    drop(vcpu_b);
}

/// TLB shootdowns between two vCPUs: each vCPU's software TLB is its own. A page-table
/// change and INVLPG on vCPU B do not reach vCPU A's cached translation (as on hardware,
/// A may keep using it until it flushes), and A's own INVLPG, or its CR3 write, makes
/// A's next access walk the changed tables.
#[test]
fn tlb_flushes_are_per_vcpu() {
    const PT: u64 = 0x7000;
    const VA: u64 = 0x100_0000;
    const OLD: u64 = 0x20000;
    const NEW: u64 = 0x21000;
    const WRITER: u64 = CODE + 0x4000;
    let mut h = Harness::new();
    h.long_mode();
    // Both vCPUs in the same long-mode environment (set up before the tables change).
    let mut vcpu_a = core::mem::take(&mut h.vcpu);
    h.long_mode();
    let mut vcpu_b = core::mem::replace(&mut h.vcpu, vcpu_a);
    // VA's 2 MiB region through a page table whose first entry maps OLD.
    h.mem.write_u64(0x3000 + (VA >> 21) * 8, PT | 7).unwrap();
    h.mem.write_u64(PT, OLD | 7).unwrap();
    h.mem.write_u32(OLD, 0x1111).unwrap();
    h.mem.write_u32(NEW, 0x2222).unwrap();
    // A: read VA; or flush VA with INVLPG and read; or reload CR3 and read.
    let mut a = asm64();
    let (mut read, mut invlpg_read, mut cr3_read) =
        (a.create_label(), a.create_label(), a.create_label());
    a.set_label(&mut read).unwrap();
    a.mov(eax, dword_ptr(VA)).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut invlpg_read).unwrap();
    a.invlpg(byte_ptr(VA)).unwrap();
    a.mov(eax, dword_ptr(VA)).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut cr3_read).unwrap();
    a.mov(rbx, cr3).unwrap();
    a.mov(cr3, rbx).unwrap();
    a.mov(eax, dword_ptr(VA)).unwrap();
    a.hlt().unwrap();
    h.load(
        &mut a,
        CODE,
        &[
            ("read", read),
            ("invlpg_read", invlpg_read),
            ("cr3_read", cr3_read),
        ],
    );
    // B: read VA, point the page-table entry at RDX, INVLPG, read VA again.
    let mut b = asm64();
    b.mov(ecx, dword_ptr(VA)).unwrap();
    b.mov(qword_ptr(PT), rdx).unwrap();
    b.invlpg(byte_ptr(VA)).unwrap();
    b.mov(r8d, dword_ptr(VA)).unwrap();
    b.hlt().unwrap();
    h.load(&mut b, WRITER, &[]);

    let run_a = |h: &mut Harness, label: &str| {
        h.vcpu.set_rip(h.label(label));
        h.run().unwrap();
        h.gpr(Gpr::Rax)
    };
    assert_eq!(run_a(&mut h, "read"), 0x1111);

    // B remaps VA to NEW and flushes its own TLB.
    vcpu_a = core::mem::replace(&mut h.vcpu, vcpu_b);
    h.vcpu.set_gpr(Gpr::Rdx, NEW | 7);
    h.vcpu.set_rip(WRITER);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::Rcx), 0x1111, "B before its change");
    assert_eq!(h.gpr(Gpr::R8), 0x2222, "B after its own INVLPG");
    vcpu_b = core::mem::replace(&mut h.vcpu, vcpu_a);

    assert_eq!(
        run_a(&mut h, "read"),
        0x1111,
        "B's INVLPG does not flush A's TLB"
    );
    assert_eq!(run_a(&mut h, "invlpg_read"), 0x2222, "A's own INVLPG");

    // B maps VA back to OLD; A sees it after reloading CR3.
    vcpu_a = core::mem::replace(&mut h.vcpu, vcpu_b);
    h.vcpu.set_gpr(Gpr::Rdx, OLD | 7);
    h.vcpu.set_rip(WRITER);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R8), 0x1111);
    vcpu_b = core::mem::replace(&mut h.vcpu, vcpu_a);
    assert_eq!(run_a(&mut h, "read"), 0x2222, "A still translates to NEW");
    assert_eq!(run_a(&mut h, "cr3_read"), 0x1111, "A's CR3 write flushes");
    drop(vcpu_b);
}

/// String instructions whose source and destination are both outside RAM (kvm-unit-tests'
/// `test_cmps` on QEMU's pc-testdev window): each element's reads and write reach the bus
/// in program order, one element per execution so the replay log never holds more than
/// one element's reads, REPE CMPSB stops at the first difference with
/// its flags, and RSI/RDI/RCX end as the SDM says.
#[test]
fn string_instructions_from_mmio_to_mmio_complete() {
    let mut h = Harness::new();
    h.long_mode();
    let (src, dst) = (RAM_END + 0x100, RAM_END + 0x800);
    for i in 0..8u64 {
        h.mmio.insert(src + i, 0x10 + i);
        h.mmio.insert(dst + i, 0x10 + i);
    }
    // The seventh byte differs: REPE CMPSB stops after it.
    h.mmio.insert(dst + 6, 0x99);
    let mut a = asm64();
    a.cld().unwrap();
    a.mov(rsi, src).unwrap();
    a.mov(rdi, dst).unwrap();
    a.mov(ecx, 8u32).unwrap();
    a.repe().cmpsb().unwrap();
    a.pushfq().unwrap();
    a.pop(r8).unwrap();
    a.mov(r9, rcx).unwrap();
    a.mov(r10, rsi).unwrap();
    a.mov(r11, rdi).unwrap();
    // One MOVSB, then REP MOVSB of 4 bytes, both MMIO to MMIO.
    a.mov(rsi, src).unwrap();
    a.mov(rdi, dst + 0x100).unwrap();
    a.movsb().unwrap();
    a.mov(ecx, 4u32).unwrap();
    a.rep().movsb().unwrap();
    // Backwards, by words.
    a.std().unwrap();
    a.mov(rsi, src + 6).unwrap();
    a.mov(rdi, dst + 0x206).unwrap();
    a.mov(ecx, 2u32).unwrap();
    a.rep().movsw().unwrap();
    a.cld().unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    h.run().expect("the string instructions complete");
    assert_eq!(h.gpr(Gpr::R9), 1, "RCX: one element left");
    assert_eq!(h.gpr(Gpr::R10), src + 7);
    assert_eq!(h.gpr(Gpr::R11), dst + 7);
    let flags = h.gpr(Gpr::R8);
    assert_eq!(flags & 0x40, 0, "ZF clear: the bytes differed");
    assert_eq!(flags & 1, 1, "CF: 0x16 < 0x99");
    assert_eq!(h.gpr(Gpr::Rcx), 0);
    assert_eq!(h.gpr(Gpr::Rsi), src + 2);
    assert_eq!(h.gpr(Gpr::Rdi), dst + 0x202);
    for i in 0..5u64 {
        assert_eq!(
            h.mmio.get(&(dst + 0x100 + i)),
            Some(&(0x10 + i)),
            "byte {i}"
        );
    }
    assert_eq!(
        h.mmio.get(&(dst + 0x206)),
        Some(&0x16),
        "the first word down"
    );
    assert_eq!(h.mmio.get(&(dst + 0x204)), Some(&0x14), "the second word");
    let read = |gpa, size| Exit::Mmio {
        gpa,
        size,
        direction: Direction::Read,
        data: 0,
    };
    let write = |gpa, size, data| Exit::Mmio {
        gpa,
        size,
        direction: Direction::Write,
        data,
    };
    // CMPS reads ES:RDI before DS:RSI (QEMU's TCG reads them in this order too; the SDM
    // does not order the two reads).
    let mut expected = std::vec::Vec::new();
    for i in 0..7 {
        expected.push(read(dst + i, 1));
        expected.push(read(src + i, 1));
    }
    for i in 0..5 {
        expected.push(read(src + i, 1));
        expected.push(write(dst + 0x100 + i, 1, 0x10 + i));
    }
    expected.push(read(src + 6, 2));
    expected.push(write(dst + 0x206, 2, 0x16));
    expected.push(read(src + 4, 2));
    expected.push(write(dst + 0x204, 2, 0x14));
    assert_eq!(mmio_exits(&h), expected);
}

//! Whole-CPU tests of the debug facilities (SDM 3B chapter 18): instruction, data and
//! I/O breakpoints, DR6 and DR7 rules, MOV DR faults, single-step with its shadows,
//! branch single-step (BTF), SYSCALL under TF, and INT1.

extern crate std;

use crate::tests::{asm64, Harness, CODE};
use iced_x86::code_asm::*;
use opsvisor_core::ops::{Gpr, X86Ops};
use std::vec::Vec;

/// The #DB handler's log: one record of four quadwords per debug exception.
const LOG: u64 = 0x8_0000;
/// Data the tests watch (RAM ends at 4 MiB).
const DATA: u64 = 0x20_0000;
const RF: u64 = 1 << 16;
const TF: u64 = 1 << 8;

/// One #DB as the handler saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Db {
    /// The RIP the exception returns to.
    rip: u64,
    /// DR6 in the handler.
    dr6: u64,
    /// The RFLAGS image pushed.
    rflags: u64,
    /// R14, where the tests' code marks its progress.
    r14: u64,
}

/// A #DB handler that logs RIP, DR6, the pushed RFLAGS and R14 through R9, resets DR6 and
/// returns; #UD and #GP handlers that leave the vector in R15 and halt. The test's code
/// (`body`, which ends in HLT) runs at `CODE` with R9 at the log.
fn run(body: impl FnOnce(&mut CodeAssembler)) -> (Harness, Vec<Db>) {
    run_in(Harness::new(), body)
}

fn run_in(mut h: Harness, body: impl FnOnce(&mut CodeAssembler)) -> (Harness, Vec<Db>) {
    h.long_mode();
    let mut a = asm64();
    let mut db = a.create_label();
    let mut ud = a.create_label();
    let mut gp = a.create_label();
    a.mov(r9, LOG).unwrap();
    a.mov(r15, 0u64).unwrap();
    a.mov(r14, 0u64).unwrap();
    body(&mut a);
    a.hlt().unwrap();
    a.set_label(&mut db).unwrap();
    a.push(rax).unwrap();
    a.mov(rax, qword_ptr(rsp + 8)).unwrap();
    a.mov(qword_ptr(r9), rax).unwrap();
    a.mov(rax, dr6).unwrap();
    a.mov(qword_ptr(r9 + 8), rax).unwrap();
    a.mov(rax, qword_ptr(rsp + 24)).unwrap();
    a.mov(qword_ptr(r9 + 16), rax).unwrap();
    a.mov(qword_ptr(r9 + 24), r14).unwrap();
    a.add(r9, 32).unwrap();
    // RF in the image, as a debugger's handler sets it: an instruction breakpoint's
    // fault does not, and the instruction must run on return.
    a.or(qword_ptr(rsp + 24), 1 << 16).unwrap();
    a.xor(eax, eax).unwrap();
    a.mov(dr6, rax).unwrap();
    a.pop(rax).unwrap();
    a.iretq().unwrap();
    a.set_label(&mut ud).unwrap();
    a.mov(r15, 6u64).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut gp).unwrap();
    a.mov(r15, 13u64).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[("db", db), ("ud", ud), ("gp", gp)]);
    let (db, ud, gp) = (h.label("db"), h.label("ud"), h.label("gp"));
    h.gate(1, db, 0);
    h.gate(6, ud, 0);
    h.gate(13, gp, 0);
    if let Err(x) = h.run() {
        let first: Vec<u64> = (0..8)
            .map(|i| h.mem.read_u64(LOG + 8 * i).unwrap())
            .collect();
        panic!(
            "{x:?} at {:#x}, {} #DB, dr7 {:#x}, rflags {:#x}, log {first:x?}",
            h.vcpu.state().rip,
            (h.gpr(Gpr::R9) - LOG) / 32,
            h.vcpu.debug_regs().dr7,
            h.vcpu.state().rflags(),
        );
    }
    let n = (h.gpr(Gpr::R9) - LOG) / 32;
    let log = (0..n)
        .map(|i| {
            let at = LOG + 32 * i;
            Db {
                rip: h.mem.read_u64(at).unwrap(),
                dr6: h.mem.read_u64(at + 8).unwrap(),
                rflags: h.mem.read_u64(at + 16).unwrap(),
                r14: h.mem.read_u64(at + 24).unwrap(),
            }
        })
        .collect();
    (h, log)
}

/// The R14 values the traps of `log` saw: where the code was (the tests mark their
/// progress with `mov r14, n` after the instructions that should trap).
fn marks(log: &[Db]) -> Vec<u64> {
    log.iter().map(|d| d.r14).collect()
}

fn set_dr7(a: &mut CodeAssembler, v: u64) {
    a.mov(rax, v).unwrap();
    a.mov(dr7, rax).unwrap();
}

fn set_dr(a: &mut CodeAssembler, n: u8, v: u64) {
    a.mov(rax, v).unwrap();
    match n {
        0 => a.mov(dr0, rax).unwrap(),
        1 => a.mov(dr1, rax).unwrap(),
        2 => a.mov(dr2, rax).unwrap(),
        _ => a.mov(dr3, rax).unwrap(),
    }
}

/// DR7 for breakpoint `n`: local enable, R/W kind and length field.
fn dr7_bp(n: u32, rw: u64, len: u64) -> u64 {
    (1 << (2 * n)) | (rw << (16 + 4 * n)) | (len << (18 + 4 * n))
}

/// DR6 with the fixed-one bits and `bits`.
fn dr6_with(bits: u64) -> u64 {
    0xffff_0ff0 | bits
}

/// Turn TF on (the trap comes after the instruction following the POPF).
fn tf_on(a: &mut CodeAssembler) {
    a.pushfq().unwrap();
    a.or(qword_ptr(rsp), TF as i32).unwrap();
    a.popfq().unwrap();
}

/// An instruction breakpoint faults before the instruction with B0 in DR6 and, unlike
/// other faults, RF clear in the pushed RFLAGS; the IRET back with RF (which the handler
/// sets) runs the instruction once, without a second fault.
#[test]
fn instruction_breakpoint_faults_once_and_rf_suppresses_it() {
    let (h, log) = run(|a| {
        let mut t = a.create_label();
        a.lea(rax, ptr(t)).unwrap();
        a.mov(dr0, rax).unwrap();
        set_dr7(a, dr7_bp(0, 0, 0));
        a.mov(rbx, 0u64).unwrap();
        a.set_label(&mut t).unwrap();
        a.inc(rbx).unwrap();
        a.nop().unwrap();
    });
    assert_eq!(h.gpr(Gpr::Rbx), 1);
    assert_eq!(log.len(), 1, "{log:x?}");
    let rip = h.vcpu.debug_regs().db[0];
    assert_eq!(log[0].rip, rip);
    assert_eq!(log[0].dr6, dr6_with(1));
    assert_eq!(log[0].rflags & RF, 0);
}

/// A global enable fires as a local one does, and B0-B3 report every instruction
/// breakpoint whose address matches, enabled or not, when an enabled one fires.
#[test]
fn matching_breakpoints_are_reported_even_when_not_enabled() {
    let (h, log) = run(|a| {
        let mut t = a.create_label();
        a.lea(rax, ptr(t)).unwrap();
        a.mov(dr1, rax).unwrap();
        a.mov(dr3, rax).unwrap();
        // G1 only; DR3 (R/W 00) matches but is not enabled.
        set_dr7(a, 1 << 3);
        a.set_label(&mut t).unwrap();
        a.nop().unwrap();
    });
    assert_eq!(log.len(), 1, "{log:x?}");
    assert_eq!(log[0].rip, h.vcpu.debug_regs().db[1]);
    assert_eq!(log[0].dr6, dr6_with(0b1010));
    // Neither enabled: nothing.
    let (_, log) = run(|a| {
        let mut t = a.create_label();
        a.lea(rax, ptr(t)).unwrap();
        a.mov(dr1, rax).unwrap();
        set_dr7(a, 0);
        a.set_label(&mut t).unwrap();
        a.nop().unwrap();
    });
    assert!(log.is_empty(), "{log:x?}");
}

/// A data write breakpoint traps after the instruction that wrote any byte of its range
/// (the address masked to the length), never for reads or bytes outside it.
#[test]
fn write_breakpoints_trap_after_writes_in_their_range() {
    let (_, log) = run(|a| {
        // DR1 at DATA+9 with length 4: the range is DATA+8..DATA+12.
        set_dr(a, 1, DATA + 9);
        set_dr7(a, dr7_bp(1, 1, 3));
        a.mov(rbx, DATA).unwrap();
        a.mov(byte_ptr(rbx + 11), 1).unwrap(); // hit (1)
        a.mov(r14, 1u64).unwrap();
        a.mov(rax, qword_ptr(rbx + 8)).unwrap(); // a read: no trap
        a.mov(byte_ptr(rbx + 12), 1).unwrap(); // outside
        a.mov(dword_ptr(rbx + 4), 1).unwrap(); // DATA+4..8: outside
        a.mov(qword_ptr(rbx + 4), 1).unwrap(); // hit (2)
        a.mov(r14, 2u64).unwrap();
        a.push(rbx).unwrap();
        a.mov(rsp, DATA + 16).unwrap();
        a.push(rax).unwrap(); // a push to DATA+8: hit (3)
        a.mov(r14, 3u64).unwrap();
        a.add(dword_ptr(rbx + 8), 1).unwrap(); // read-modify-write: hit (4)
        a.mov(r14, 4u64).unwrap();
        a.mov(rsp, 0x9000u64).unwrap();
    });
    assert_eq!(log.len(), 4, "{log:x?}");
    for d in &log {
        assert_eq!(d.dr6, dr6_with(0b10), "{log:x?}");
        // A trap: RF is not set in the pushed image.
        assert_eq!(d.rflags & RF, 0);
    }
    // Each trap comes right after the writing instruction, before the mark after it.
    assert_eq!(marks(&log), [0, 1, 2, 3]);
}

/// Read/write breakpoints of each length trap on reads and writes; a length-8 breakpoint
/// catches an access to its last byte, and an access that straddles its start.
#[test]
fn read_write_breakpoints_of_each_length() {
    for (len_field, bytes) in [(0u64, 1u64), (1, 2), (3, 4), (2, 8)] {
        let (h, log) = run(|a| {
            set_dr(a, 2, DATA + 0x40);
            set_dr7(a, dr7_bp(2, 3, len_field));
            a.mov(rbx, DATA).unwrap();
            // The last byte of the range.
            a.mov(al, byte_ptr(rbx + 0x40 + bytes as i32 - 1)).unwrap();
            a.mov(r14, 1u64).unwrap();
            // The byte after it: no trap.
            a.mov(al, byte_ptr(rbx + 0x40 + bytes as i32)).unwrap();
            // A word that ends at the first byte.
            a.mov(word_ptr(rbx + 0x3f), ax).unwrap();
            a.mov(r14, 2u64).unwrap();
        });
        assert_eq!(log.len(), 2, "length {bytes}: {log:x?}");
        assert!(log.iter().all(|d| d.dr6 == dr6_with(0b100)), "{log:x?}");
        assert_eq!(marks(&log), [0, 1]);
        assert_eq!(h.gpr(Gpr::R14), 2);
    }
}

/// Data breakpoints do not disturb the code around them: a loop that copies and sums
/// memory next to a watched quadword gives the same result, with one trap per write to it.
#[test]
fn data_breakpoints_leave_other_accesses_alone() {
    let (h, log) = run(|a| {
        set_dr(a, 0, DATA + 0x100);
        set_dr7(a, dr7_bp(0, 1, 2));
        a.mov(rbx, DATA).unwrap();
        a.xor(eax, eax).unwrap();
        a.mov(ecx, 64u32).unwrap();
        let mut top = a.create_label();
        a.set_label(&mut top).unwrap();
        a.mov(qword_ptr(rbx + rcx * 8), rcx).unwrap();
        a.add(rax, qword_ptr(rbx + rcx * 8)).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
        a.mov(rdx, rax).unwrap();
    });
    assert_eq!(h.gpr(Gpr::Rdx), (1..=64).sum::<u64>());
    // Only the write of element 32 (DATA + 0x100) hits.
    assert_eq!(log.len(), 1, "{log:x?}");
    assert_eq!(h.mem.read_u64(DATA + 0x100).unwrap(), 32);
}

/// I/O breakpoints (R/W 10) exist with CR4.DE: an OUT to a port in the range traps after
/// the instruction, once the core has completed it.
#[test]
fn io_breakpoints_trap_after_the_port_access() {
    let (h, log) = run(|a| {
        a.mov(rax, cr4).unwrap();
        a.or(rax, 8).unwrap();
        a.mov(cr4, rax).unwrap();
        set_dr(a, 3, 0x3f8);
        set_dr7(a, dr7_bp(3, 2, 1));
        a.mov(al, b'x' as u32).unwrap();
        a.mov(dx, 0x3f9u32).unwrap();
        a.out(dx, al).unwrap(); // 0x3f9: inside 0x3f8..0x3fa
        a.mov(r14, 1u64).unwrap();
        a.mov(dx, 0x3fau32).unwrap();
        a.out(dx, al).unwrap(); // outside
        a.mov(dx, 0x3f8u32).unwrap();
        a.out(dx, al).unwrap(); // inside
        a.mov(r14, 2u64).unwrap();
        a.in_(al, dx).unwrap(); // inside
        a.mov(r14, 3u64).unwrap();
    });
    assert_eq!(log.len(), 3, "{log:x?}");
    assert!(log.iter().all(|d| d.dr6 == dr6_with(0b1000)), "{log:x?}");
    assert_eq!(marks(&log), [0, 1, 2]);
    // Only the OUT to 0x3f8 reaches the harness's serial port.
    assert_eq!(h.out, b"x");
}

/// DR6 and DR7 read their fixed bits; MOV to either with bits 63:32 set raises #GP(0).
#[test]
fn dr6_and_dr7_fixed_bits_and_upper_half() {
    let (h, _) = run(|a| {
        a.xor(eax, eax).unwrap();
        a.mov(dr6, rax).unwrap();
        a.mov(dr7, rax).unwrap();
        a.mov(rbx, dr6).unwrap();
        a.mov(rcx, dr7).unwrap();
        a.mov(rax, u64::MAX >> 32).unwrap();
        a.mov(dr6, rax).unwrap();
        a.mov(rdx, dr6).unwrap();
        a.mov(rax, 1u64 << 32).unwrap();
        a.mov(dr7, rax).unwrap();
    });
    assert_eq!(h.gpr(Gpr::Rbx), 0xffff_0ff0);
    assert_eq!(h.gpr(Gpr::Rcx), 0x400);
    assert_eq!(h.gpr(Gpr::Rdx), 0xffff_efff);
    assert_eq!(h.gpr(Gpr::R15), 13);
}

/// DR4 and DR5 are DR6 and DR7 without CR4.DE and raise #UD with it.
#[test]
fn dr4_and_dr5_alias_without_de_and_fault_with_it() {
    let (h, _) = run(|a| {
        a.mov(rax, 0x1u64).unwrap();
        a.mov(dr7, rax).unwrap();
        a.mov(rbx, dr5).unwrap();
        a.xor(eax, eax).unwrap();
        a.mov(dr5, rax).unwrap();
        a.mov(rcx, dr4).unwrap();
        a.mov(rax, cr4).unwrap();
        a.or(rax, 8).unwrap();
        a.mov(cr4, rax).unwrap();
        a.mov(rdx, dr4).unwrap();
    });
    assert_eq!(h.gpr(Gpr::Rbx), 0x401);
    assert_eq!(h.vcpu.debug_regs().dr7, 0x400);
    assert_eq!(h.gpr(Gpr::Rcx), 0xffff_0ff0);
    assert_eq!(h.gpr(Gpr::R15), 6);
}

/// With DR7.GD, any MOV DR raises a #DB fault before it executes, with BD in DR6 and GD
/// cleared for the handler (whose own MOV DR then works).
#[test]
fn general_detect_faults_mov_dr_and_clears_gd() {
    let (h, log) = run(|a| {
        set_dr7(a, 1 << 13);
        a.mov(rbx, 0x1234u64).unwrap();
        a.mov(rbx, dr0).unwrap();
        a.mov(r14, dr7).unwrap();
    });
    assert_eq!(log.len(), 1, "{log:x?}");
    assert_eq!(log[0].dr6, dr6_with(1 << 13));
    // The fault returned to the MOV, which then read DR0.
    assert_eq!(h.gpr(Gpr::Rbx), 0);
    assert_eq!(h.gpr(Gpr::R14), 0x400);
}

/// TF: the POPF that sets it does not trap, the next instruction does, and each one
/// after; the instruction that clears TF still traps.
#[test]
fn single_step_traps_after_each_instruction_from_the_one_after_popf() {
    let (h, log) = run(|a| {
        tf_on(a);
        a.mov(r14, 1u64).unwrap();
        a.mov(r14, 2u64).unwrap();
        a.pushfq().unwrap();
        a.and(qword_ptr(rsp), !(TF as i32)).unwrap();
        a.popfq().unwrap();
        a.mov(r14, 3u64).unwrap();
    });
    // After mov, mov, pushfq, and, popfq: five traps.
    assert_eq!(log.len(), 5, "{log:x?}");
    assert!(log.iter().all(|d| d.dr6 == dr6_with(1 << 14)), "{log:x?}");
    // The last trap follows the POPF that cleared TF.
    assert!(log[..4].iter().all(|d| d.rflags & TF != 0));
    assert_eq!(log[4].rflags & TF, 0);
    assert_eq!(h.gpr(Gpr::R14), 3);
    // The first trap comes after `mov r14, 1`, not after the POPF.
    assert_eq!(marks(&log), [1, 2, 2, 2, 2]);
}

/// An STI shadow does not hold the trap back; a MOV SS or POP SS shadow does, until after
/// the next instruction, and then one #DB reports it.
#[test]
fn single_step_and_the_sti_and_mov_ss_shadows() {
    let (_, log) = run(|a| {
        a.cli().unwrap();
        tf_on(a);
        a.sti().unwrap(); // trap 1 (after STI)
        a.mov(eax, ss).unwrap(); // trap 2
        a.mov(ss, eax).unwrap(); // held
        a.nop().unwrap(); // trap 3 (after NOP)
        a.pushfq().unwrap(); // trap 4
        a.and(qword_ptr(rsp), !(TF as i32)).unwrap(); // trap 5
        a.popfq().unwrap(); // trap 6
    });
    assert_eq!(log.len(), 6, "{log:x?}");
    // The trap after MOV SS (2 bytes) comes after the NOP: one #DB, 3 bytes on.
    assert_eq!(log[2].rip - log[1].rip, 3, "{log:x?}");
    assert!(log.iter().all(|d| d.dr6 == dr6_with(1 << 14)), "{log:x?}");
}

/// BTF with TF: single-step traps only after taken branches.
#[test]
fn branch_single_step_traps_only_on_taken_branches() {
    let (h, log) = run(|a| {
        let mut t1 = a.create_label();
        let mut t2 = a.create_label();
        a.mov(ecx, 0x1d9u32).unwrap();
        a.mov(eax, 2u32).unwrap();
        a.xor(edx, edx).unwrap();
        a.wrmsr().unwrap();
        tf_on(a);
        a.nop().unwrap();
        a.jmp(t1).unwrap(); // trap 1 at t1
        a.nop().unwrap();
        a.set_label(&mut t1).unwrap();
        a.xor(eax, eax).unwrap();
        a.jnz(t2).unwrap(); // not taken
        a.nop().unwrap();
        a.jz(t2).unwrap(); // trap 2 at t2
        a.nop().unwrap();
        a.set_label(&mut t2).unwrap();
        a.pushfq().unwrap();
        a.and(qword_ptr(rsp), !(TF as i32)).unwrap();
        a.popfq().unwrap();
    });
    assert_eq!(log.len(), 2, "{log:x?}");
    assert!(log.iter().all(|d| d.dr6 == dr6_with(1 << 14)));
    // The second target is 2+1+2+2+1 bytes past the first (xor, jnz, nop, jz, nop).
    assert_eq!(log[1].rip - log[0].rip, 8, "{log:x?}");
    assert_eq!(h.vcpu.get_msr(0x1d9), Some(2));
}

/// SYSCALL with TF: with TF in IA32_FMASK no trap reaches the kernel entry; without it
/// the trap comes after SYSCALL, at the entry point, in the kernel's context.
#[test]
fn syscall_with_tf_traps_only_when_fmask_keeps_tf() {
    for (fmask, traps_at_entry) in [(TF, false), (0, true)] {
        let (h, log) = run(|a| {
            let mut entry = a.create_label();
            let mut after = a.create_label();
            // EFER.SCE, STAR (kernel CS 0x08), LSTAR, FMASK.
            a.mov(ecx, 0xc000_0080u32).unwrap();
            a.rdmsr().unwrap();
            a.or(eax, 1).unwrap();
            a.wrmsr().unwrap();
            a.mov(ecx, 0xc000_0081u32).unwrap();
            a.xor(eax, eax).unwrap();
            a.mov(edx, 0x0008u32).unwrap();
            a.wrmsr().unwrap();
            a.mov(ecx, 0xc000_0082u32).unwrap();
            a.lea(rax, ptr(entry)).unwrap();
            a.xor(edx, edx).unwrap();
            a.wrmsr().unwrap();
            a.mov(ecx, 0xc000_0084u32).unwrap();
            a.mov(eax, fmask as u32).unwrap();
            a.wrmsr().unwrap();
            tf_on(a);
            a.syscall().unwrap();
            a.set_label(&mut entry).unwrap();
            a.mov(r13, 1u64).unwrap();
            a.pushfq().unwrap();
            a.and(qword_ptr(rsp), !(TF as i32)).unwrap();
            a.popfq().unwrap();
            a.set_label(&mut after).unwrap();
        });
        assert_eq!(h.gpr(Gpr::R13), 1);
        // R11 holds the RFLAGS SYSCALL saved, with TF.
        assert_ne!(h.gpr(Gpr::R11) & TF, 0);
        // The trap after SYSCALL is the first record, at the entry point (= RCX here,
        // since the entry follows the SYSCALL).
        let entry = h.gpr(Gpr::Rcx);
        let at_entry = log.iter().any(|d| d.rip == entry);
        assert_eq!(at_entry, traps_at_entry, "fmask {fmask:#x}: {log:x?}");
        if traps_at_entry {
            assert_eq!(log[0].rip, entry);
            assert_eq!(log[0].dr6, dr6_with(1 << 14));
        }
    }
}

/// An instruction the core completes (CPUID) traps after it under TF, once the core has
/// moved RIP past it, and RF is clear after it.
#[test]
fn single_step_over_an_intercepted_instruction() {
    let (h, log) = run(|a| {
        tf_on(a);
        a.cpuid().unwrap(); // trap 1, after CPUID (2 bytes)
        a.pushfq().unwrap(); // trap 2
        a.and(qword_ptr(rsp), !(TF as i32)).unwrap(); // trap 3
        a.popfq().unwrap(); // trap 4
    });
    assert_eq!(log.len(), 4, "{log:x?}");
    assert_eq!(log[1].rip - log[0].rip, 1, "{log:x?}");
    assert_eq!(h.gpr(Gpr::Rax) >> 16, 0x1234);
    // The handler returns with RF; the CPUID completed by the core clears it as any
    // completed instruction does.
    assert!(log.iter().all(|d| d.rflags & RF == 0), "{log:x?}");
}

/// IRET that loads TF does not trap; the instruction it returns to does.
#[test]
fn iret_loading_tf_traps_after_the_next_instruction() {
    let (h, log) = run(|a| {
        let mut back = a.create_label();
        a.mov(rax, rsp).unwrap();
        a.push(0x10).unwrap();
        a.push(rax).unwrap();
        a.pushfq().unwrap();
        a.or(qword_ptr(rsp), TF as i32).unwrap();
        a.push(0x08).unwrap();
        a.lea(rax, ptr(back)).unwrap();
        a.push(rax).unwrap();
        a.iretq().unwrap();
        a.set_label(&mut back).unwrap();
        a.mov(r14, 1u64).unwrap(); // trap 1
        a.pushfq().unwrap(); // trap 2
        a.and(qword_ptr(rsp), !(TF as i32)).unwrap(); // trap 3
        a.popfq().unwrap(); // trap 4
    });
    assert_eq!(log.len(), 4, "{log:x?}");
    assert_eq!(h.gpr(Gpr::R14), 1);
    assert_eq!(log[1].rip - log[0].rip, 1, "{log:x?}");
}

/// A data breakpoint and the single-step trap of the same instruction are one #DB with
/// both causes in DR6.
#[test]
fn data_breakpoint_and_single_step_share_one_trap() {
    let (_, log) = run(|a| {
        set_dr(a, 0, DATA);
        set_dr7(a, dr7_bp(0, 1, 0));
        a.mov(rbx, DATA).unwrap();
        tf_on(a);
        a.mov(byte_ptr(rbx), 1).unwrap(); // trap 1: BS and B0
        a.pushfq().unwrap();
        a.and(qword_ptr(rsp), !(TF as i32)).unwrap();
        a.popfq().unwrap();
    });
    assert_eq!(log.len(), 4, "{log:x?}");
    assert_eq!(log[0].dr6, dr6_with(1 << 14 | 1));
    assert_eq!(log[1].dr6, dr6_with(1 << 14));
}

/// INT1 (ICEBP) delivers #DB as a trap after the instruction.
#[test]
fn int1_delivers_db_after_the_instruction() {
    let (h, log) = run(|a| {
        a.int1().unwrap();
        a.mov(r14, 1u64).unwrap();
    });
    assert_eq!(log.len(), 1, "{log:x?}");
    assert_eq!(h.gpr(Gpr::R14), 1);
    assert_eq!(log[0].rflags & RF, 0);
    // After INT1, before the mark.
    assert_eq!(log[0].r14, 0);
    assert_eq!(log[0].dr6, dr6_with(0));
}

/// Breakpoints a debugger sets between runs (through `set_debug_regs`) take effect at
/// once, even on the quick re-entry after an intercept exit.
#[test]
fn breakpoints_set_by_the_host_between_runs() {
    use opsvisor_core::exit::Exit;
    use opsvisor_core::ops::{DebugRegs, RunLimit};
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    a.cpuid().unwrap();
    a.nop().unwrap();
    a.nop().unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    let limit = RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: 1000,
    };
    assert_eq!(h.vcpu.run(&mut h.mem, &limit), Exit::Cpuid);
    h.vcpu.skip_emulated_instruction();
    h.vcpu.set_debug_regs(&DebugRegs {
        db: [CODE + 3, 0, 0, 0],
        dr6: 0,
        dr7: 1,
    });
    h.vcpu.set_event_exits(true);
    let exit = h.vcpu.run(&mut h.mem, &limit);
    assert_eq!(
        exit,
        Exit::Exception {
            vector: 1,
            error_code: None
        }
    );
    assert_eq!(h.vcpu.state().rip, CODE + 3);
    assert_eq!(h.vcpu.debug_regs().dr6, dr6_with(1));
}

/// A repeated string instruction is single-stepped one iteration at a time, with RIP at
/// the instruction until the last; a data breakpoint traps after the iteration that hit
/// it, and the instruction then goes on where it stopped.
#[test]
fn rep_string_instructions_trap_after_each_iteration() {
    let (h, log) = run(|a| {
        a.mov(rsi, DATA).unwrap();
        a.mov(rdi, DATA + 0x100).unwrap();
        a.mov(ecx, 3u32).unwrap();
        tf_on(a);
        a.rep().movsb().unwrap(); // traps 1-3
        a.pushfq().unwrap(); // trap 4
        a.and(qword_ptr(rsp), !(TF as i32)).unwrap(); // trap 5
        a.popfq().unwrap(); // trap 6
    });
    assert_eq!(log.len(), 6, "{log:x?}");
    assert_eq!(log[0].rip, log[1].rip, "{log:x?}");
    assert_eq!(log[2].rip, log[1].rip + 2, "{log:x?}");
    assert_eq!(h.gpr(Gpr::Rcx), 0);
    let (h, log) = run(|a| {
        set_dr(a, 0, DATA + 0x101);
        set_dr7(a, dr7_bp(0, 1, 0));
        a.mov(rsi, DATA).unwrap();
        a.mov(rdi, DATA + 0x100).unwrap();
        a.mov(ecx, 64u32).unwrap();
        a.rep().stosb().unwrap();
        a.mov(r14, 1u64).unwrap();
    });
    // One trap, after the second element, at the STOS with 62 elements left.
    assert_eq!(log.len(), 1, "{log:x?}");
    assert_eq!(log[0].r14, 0);
    assert_eq!(log[0].dr6, dr6_with(1));
    assert_eq!(h.gpr(Gpr::Rcx), 0);
    assert_eq!(h.gpr(Gpr::Rdi), DATA + 0x140);
}

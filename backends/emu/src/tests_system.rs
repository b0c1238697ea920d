//! Whole-CPU tests of the system features a CPU model offers: CR4 bits gated by the
//! model, SMEP/SMAP with STAC/CLAC, protection keys, PCID and INVPCID, 5-level paging,
//! UMIP, RDTSCP/RDPID, descriptor-table bases, and CR8 as an exit to the core.

extern crate std;

use crate::tests::{asm64, Harness, CODE, PML4};
use iced_x86::code_asm::*;
use opsvisor_core::cpuid::{CpuidPolicy, Feature};
use opsvisor_core::exit::{Direction, Exit};
use opsvisor_core::ops::{Gpr, X86Ops};

/// Where the tests keep their data: the 2 MiB page at 2 MiB (RAM ends at 4 MiB).
const DATA: u64 = 0x20_0000;
/// PD entry of the first 2 MiB (tables, code, stacks).
const PD0: u64 = 0x3000;
/// PD entry of the data page.
const PD1: u64 = 0x3008;

/// The machine of [`Harness::long_mode`] with the first 2 MiB supervisor-only and the data
/// page user-accessible, and handlers for #UD, #GP and #PF that leave the vector in R15,
/// the error code in R14 (CR2 in R13 for #PF) and halt.
fn machine() -> Harness {
    let mut h = Harness::new();
    h.long_mode();
    h.mem.write_u64(PD0, 0x83).unwrap();
    h.mem.write_u64(PD1, DATA | 0x87).unwrap();
    h
}

/// Emit the fault handlers after the test's code and point the IDT at them.
fn handlers(h: &mut Harness, mut a: CodeAssembler) {
    let mut ud = a.create_label();
    let mut gp = a.create_label();
    let mut pf = a.create_label();
    a.set_label(&mut ud).unwrap();
    a.mov(r15, 6u64).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut gp).unwrap();
    a.mov(r15, 13u64).unwrap();
    a.pop(r14).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut pf).unwrap();
    a.mov(r15, 14u64).unwrap();
    a.pop(r14).unwrap();
    a.mov(r13, cr2).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[("ud", ud), ("gp", gp), ("pf", pf)]);
    let (ud, gp, pf) = (h.label("ud"), h.label("gp"), h.label("pf"));
    h.gate(6, ud, 0);
    h.gate(13, gp, 0);
    h.gate(14, pf, 0);
}

/// Run `body` (which ends in HLT) in the machine; returns it.
fn run_with(model: Option<CpuidPolicy>, body: impl FnOnce(&mut CodeAssembler)) -> Harness {
    let mut h = machine();
    if let Some(policy) = model {
        h.vcpu.set_cpuid(&policy);
    }
    let mut a = asm64();
    a.mov(r15, 0u64).unwrap();
    body(&mut a);
    a.hlt().unwrap();
    handlers(&mut h, a);
    h.run().unwrap();
    h
}

fn without(feature: Feature) -> Option<CpuidPolicy> {
    let mut p = CpuidPolicy::emulator();
    p.set_feature(feature, false);
    Some(p)
}

const CR4_UMIP: u64 = 1 << 11;
const CR4_LA57: u64 = 1 << 12;
const CR4_FSGSBASE: u64 = 1 << 16;
const CR4_PCIDE: u64 = 1 << 17;
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const CR4_PKE: u64 = 1 << 22;

#[test]
fn cr4_bits_exist_only_with_their_feature() {
    for (bit, feature) in [
        (CR4_UMIP, Feature::Umip),
        (CR4_FSGSBASE, Feature::Fsgsbase),
        (CR4_SMEP, Feature::Smep),
        (CR4_SMAP, Feature::Smap),
        (CR4_PKE, Feature::Pku),
        (CR4_PCIDE, Feature::Pcid),
        (CR4_OSXSAVE, Feature::Xsave),
    ] {
        // With the feature, the bit can be set and read back.
        let h = run_with(None, |a| {
            a.mov(rax, cr4).unwrap();
            a.or(rax, bit as i32).unwrap();
            a.mov(cr4, rax).unwrap();
            a.mov(rbx, cr4).unwrap();
        });
        assert_eq!(h.gpr(Gpr::R15), 0, "{feature:?}");
        assert_ne!(h.gpr(Gpr::Rbx) & bit, 0, "{feature:?}");
        // Without it, #GP(0) and CR4 unchanged.
        let h = run_with(without(feature), |a| {
            a.mov(rax, cr4).unwrap();
            a.or(rax, bit as i32).unwrap();
            a.mov(cr4, rax).unwrap();
        });
        assert_eq!((h.gpr(Gpr::R15), h.gpr(Gpr::R14)), (13, 0), "{feature:?}");
        assert_eq!(h.vcpu.cr4() & bit, 0, "{feature:?}");
    }
    // Bits no model has: VMXE, CET, and a reserved bit.
    for bit in [1u64 << 13, 1 << 23, 1 << 15] {
        let h = run_with(None, |a| {
            a.mov(rax, cr4).unwrap();
            a.or(rax, bit as i32).unwrap();
            a.mov(cr4, rax).unwrap();
        });
        assert_eq!(h.gpr(Gpr::R15), 13, "bit {bit:#x}");
    }
}

#[test]
fn smap_blocks_supervisor_data_access_to_user_pages_unless_ac() {
    let h = run_with(None, |a| {
        a.mov(qword_ptr(DATA + 8), 0x55).unwrap();
        a.mov(rax, cr4).unwrap();
        a.or(rax, CR4_SMAP as i32).unwrap();
        a.mov(cr4, rax).unwrap();
        // AC set: the access goes through (and is cached in the AC class).
        a.stac().unwrap();
        a.mov(rbx, qword_ptr(DATA + 8)).unwrap();
        a.mov(qword_ptr(DATA + 16), rbx).unwrap();
        a.clac().unwrap();
        // AC clear: the same page faults, though a translation was just used.
        a.mov(rcx, qword_ptr(DATA + 8)).unwrap();
    });
    assert_eq!(h.gpr(Gpr::Rbx), 0x55);
    assert_eq!(h.mem.read_u64(DATA + 16).unwrap(), 0x55);
    assert_eq!(h.gpr(Gpr::R15), 14);
    // Present, read, supervisor.
    assert_eq!(h.gpr(Gpr::R14), 1);
    assert_eq!(h.gpr(Gpr::R13), DATA + 8);
    assert_eq!(h.gpr(Gpr::Rcx), 0);
    // A write faults with W set; POPF setting AC opens the way as STAC does.
    let h = run_with(None, |a| {
        a.mov(rax, cr4).unwrap();
        a.or(rax, CR4_SMAP as i32).unwrap();
        a.mov(cr4, rax).unwrap();
        a.pushfq().unwrap();
        a.or(qword_ptr(rsp), 1 << 18).unwrap();
        a.popfq().unwrap();
        a.mov(qword_ptr(DATA), 7).unwrap();
        a.pushfq().unwrap();
        a.and(qword_ptr(rsp), !(1 << 18)).unwrap();
        a.popfq().unwrap();
        a.mov(qword_ptr(DATA), 8).unwrap();
    });
    assert_eq!(h.mem.read_u64(DATA).unwrap(), 7);
    assert_eq!((h.gpr(Gpr::R15), h.gpr(Gpr::R14)), (14, 3));
}

#[test]
fn stac_and_clac_fault_where_they_do_not_exist() {
    // Without SMAP in the model: #UD.
    let h = run_with(without(Feature::Smap), |a| {
        a.stac().unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 6);
    let h = run_with(None, |a| {
        a.stac().unwrap();
        a.pushfq().unwrap();
        a.pop(rbx).unwrap();
        a.clac().unwrap();
        a.pushfq().unwrap();
        a.pop(rcx).unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 0);
    assert_ne!(h.gpr(Gpr::Rbx) & (1 << 18), 0);
    assert_eq!(h.gpr(Gpr::Rcx) & (1 << 18), 0);
}

#[test]
fn smep_blocks_supervisor_fetches_from_user_pages() {
    let mut h = machine();
    let mut a = asm64();
    a.mov(r15, 0u64).unwrap();
    a.mov(rax, cr4).unwrap();
    a.or(rax, CR4_SMEP as i32).unwrap();
    a.mov(cr4, rax).unwrap();
    a.mov(rax, DATA).unwrap();
    a.call(rax).unwrap();
    a.hlt().unwrap();
    handlers(&mut h, a);
    // RET at the user page.
    h.mem.write(DATA, &[0xc3]).unwrap();
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R15), 14);
    // Present, fetch.
    assert_eq!(h.gpr(Gpr::R14), 0x11);
    assert_eq!(h.gpr(Gpr::R13), DATA);
}

/// The data page with protection key `key`.
fn keyed_data(h: &mut Harness, key: u64) {
    h.mem.write_u64(PD1, DATA | 0x87 | (key << 59)).unwrap();
}

#[test]
fn protection_keys_deny_what_pkru_says() {
    let build = |a: &mut CodeAssembler, pkru: u32, write: bool| {
        a.mov(rax, cr0).unwrap();
        a.bts(rax, 16).unwrap();
        a.mov(cr0, rax).unwrap();
        a.mov(rax, cr4).unwrap();
        a.or(rax, CR4_PKE as i32).unwrap();
        a.mov(cr4, rax).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.xor(edx, edx).unwrap();
        // Read the page once with every right, so a translation is cached.
        a.mov(rbx, qword_ptr(DATA)).unwrap();
        a.mov(eax, pkru).unwrap();
        a.wrpkru().unwrap();
        a.xor(eax, eax).unwrap();
        a.rdpkru().unwrap();
        a.mov(r12, rax).unwrap();
        if write {
            a.mov(qword_ptr(DATA), 1).unwrap();
        } else {
            a.mov(rbx, qword_ptr(DATA)).unwrap();
        }
    };
    for (pkru, write, fault) in [
        (1u32 << 6, false, Some(0x20 | 1)), // AD3: reads fault with PK
        (2 << 6, false, None),              // WD3: reads pass
        (2 << 6, true, Some(0x20 | 3)),     // WD3: supervisor writes fault (CR0.WP)
        (!(3u32 << 6), true, None),         // other keys do not matter
    ] {
        let mut h = machine();
        keyed_data(&mut h, 3);
        let mut a = asm64();
        a.mov(r15, 0u64).unwrap();
        build(&mut a, pkru, write);
        a.hlt().unwrap();
        handlers(&mut h, a);
        h.run().unwrap();
        assert_eq!(
            h.gpr(Gpr::R12),
            u64::from(pkru),
            "RDPKRU reads what WRPKRU wrote"
        );
        match fault {
            Some(ec) => {
                assert_eq!(h.gpr(Gpr::R15), 14, "pkru {pkru:#x}");
                assert_eq!(h.gpr(Gpr::R14), ec, "pkru {pkru:#x}");
            }
            None => assert_eq!(h.gpr(Gpr::R15), 0, "pkru {pkru:#x}"),
        }
    }
}

#[test]
fn rdpkru_and_wrpkru_fault_rules() {
    // Without CR4.PKE: #UD.
    let h = run_with(None, |a| {
        a.xor(ecx, ecx).unwrap();
        a.rdpkru().unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 6);
    // ECX must be 0 for both, EDX too for WRPKRU.
    for (ecx_v, edx_v, wr) in [(1u32, 0u32, false), (1, 0, true), (0, 1, true)] {
        let h = run_with(None, |a| {
            a.mov(rax, cr4).unwrap();
            a.or(rax, CR4_PKE as i32).unwrap();
            a.mov(cr4, rax).unwrap();
            a.mov(ecx, ecx_v).unwrap();
            a.mov(edx, edx_v).unwrap();
            a.xor(eax, eax).unwrap();
            if wr {
                a.wrpkru().unwrap();
            } else {
                a.rdpkru().unwrap();
            }
        });
        assert_eq!((h.gpr(Gpr::R15), h.gpr(Gpr::R14)), (13, 0));
    }
}

#[test]
fn pcid_rules_for_cr4_and_cr3() {
    // PCIDE cannot be set while CR3[11:0] is not zero.
    let h = run_with(None, |a| {
        a.mov(rax, PML4 | 5).unwrap();
        a.mov(cr3, rax).unwrap();
        a.mov(rax, cr4).unwrap();
        a.or(rax, CR4_PCIDE as i32).unwrap();
        a.mov(cr4, rax).unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 13);
    // With PCIDE: CR3 holds the PCID, bit 63 is not stored; MAXPHYADDR bits fault.
    let h = run_with(None, |a| {
        a.mov(rax, cr4).unwrap();
        a.or(rax, CR4_PCIDE as i32).unwrap();
        a.mov(cr4, rax).unwrap();
        a.mov(rax, PML4 | 0x7 | (1 << 63)).unwrap();
        a.mov(cr3, rax).unwrap();
        a.mov(rbx, cr3).unwrap();
        a.mov(rax, PML4 | (1 << 40)).unwrap();
        a.mov(cr3, rax).unwrap();
    });
    assert_eq!(h.gpr(Gpr::Rbx), PML4 | 7);
    assert_eq!(h.gpr(Gpr::R15), 13);
    // Without PCIDE bit 63 is reserved.
    let h = run_with(None, |a| {
        a.mov(rax, PML4 | (1 << 63)).unwrap();
        a.mov(cr3, rax).unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 13);
}

#[test]
fn invpcid_types_and_faults() {
    let desc = DATA + 0x100;
    let run = |ty: u64, pcid: u64, addr: u64, pcide: bool| {
        let mut h = machine();
        h.mem.write_u64(desc, pcid).unwrap();
        h.mem.write_u64(desc + 8, addr).unwrap();
        let mut a = asm64();
        a.mov(r15, 0u64).unwrap();
        if pcide {
            a.mov(rax, cr4).unwrap();
            a.or(rax, CR4_PCIDE as i32).unwrap();
            a.mov(cr4, rax).unwrap();
        }
        a.mov(rax, ty).unwrap();
        a.invpcid(rax, xmmword_ptr(desc)).unwrap();
        a.hlt().unwrap();
        handlers(&mut h, a);
        h.run().unwrap();
        h.gpr(Gpr::R15)
    };
    for ty in 0..4 {
        assert_eq!(run(ty, 0, DATA, false), 0, "type {ty}");
    }
    assert_eq!(run(4, 0, 0, false), 13, "type 4");
    assert_eq!(run(0, 1 << 12, DATA, true), 13, "reserved descriptor bits");
    assert_eq!(run(0, 0, 1 << 56, true), 13, "non-canonical address");
    assert_eq!(run(0, 1, DATA, false), 13, "a PCID without PCIDE");
    assert_eq!(run(1, 1, 0, false), 13, "a PCID without PCIDE");
    assert_eq!(run(1, 1, 0, true), 0, "a PCID with PCIDE");
    assert_eq!(run(2, 0, 1 << 47, false), 0, "the address is ignored");
    // Without INVPCID in the model: #UD.
    let h = run_with(without(Feature::Invpcid), |a| {
        a.xor(eax, eax).unwrap();
        a.invpcid(rax, xmmword_ptr(desc)).unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 6);
}

#[test]
fn invpcid_drops_the_translation_of_an_address() {
    let desc = 0x1f_0000u64;
    let mut h = machine();
    h.mem.write_u64(0, 0x33).unwrap();
    h.mem.write_u64(DATA, 0x11).unwrap();
    h.mem.write_u64(desc, 0).unwrap();
    h.mem.write_u64(desc + 8, DATA).unwrap();
    let mut a = asm64();
    a.mov(r15, 0u64).unwrap();
    a.mov(rbx, qword_ptr(DATA)).unwrap();
    // Point the data page at guest-physical 0 behind the TLB's back.
    a.mov(qword_ptr(PD1), 0x87).unwrap();
    a.mov(rcx, qword_ptr(DATA)).unwrap();
    a.xor(eax, eax).unwrap();
    a.invpcid(rax, xmmword_ptr(desc)).unwrap();
    a.mov(rdx, qword_ptr(DATA)).unwrap();
    a.hlt().unwrap();
    handlers(&mut h, a);
    h.run().unwrap();
    assert_eq!(h.gpr(Gpr::R15), 0);
    assert_eq!(h.gpr(Gpr::Rbx), 0x11);
    assert_eq!(
        h.gpr(Gpr::Rcx),
        0x11,
        "the TLB still holds the old translation"
    );
    assert_eq!(h.gpr(Gpr::Rdx), 0x33, "INVPCID type 0 dropped it");
}

#[test]
fn la57_walks_five_levels_and_widens_canonical_addresses() {
    let mut h = machine();
    // PML5 at 0x7000: entry 1 (linear bit 48) and entry 0 both lead to the PML4.
    h.mem.write_u64(0x7000, PML4 | 7).unwrap();
    h.mem.write_u64(0x7008, PML4 | 7).unwrap();
    h.vcpu.set_cr4(h.vcpu.cr4() | CR4_LA57);
    h.vcpu.set_cr3(0x7000);
    let high = (1u64 << 48) | DATA;
    let mut a = asm64();
    a.mov(r15, 0u64).unwrap();
    a.mov(qword_ptr(DATA), 0x5a).unwrap();
    a.mov(rax, high).unwrap();
    a.mov(rbx, qword_ptr(rax)).unwrap();
    // CR4.LA57 cannot change in IA-32e mode.
    a.mov(rax, cr4).unwrap();
    a.btr(rax, 12).unwrap();
    a.mov(cr4, rax).unwrap();
    a.hlt().unwrap();
    handlers(&mut h, a);
    h.run().unwrap();
    assert_eq!(
        h.gpr(Gpr::Rbx),
        0x5a,
        "a 57-bit canonical address through the PML5"
    );
    assert_eq!((h.gpr(Gpr::R15), h.gpr(Gpr::R14)), (13, 0));
    // Without LA57 the same address is not canonical: #GP.
    let h = run_with(None, |a| {
        a.mov(rax, high).unwrap();
        a.mov(rbx, qword_ptr(rax)).unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 13);
}

#[test]
fn rdtscp_and_rdpid_need_their_features() {
    let h = run_with(None, |a| {
        a.mov(ecx, 0xc000_0103u32).unwrap();
        a.mov(eax, 0x1234u32).unwrap();
        a.xor(edx, edx).unwrap();
        a.wrmsr().unwrap();
        a.mov(rbx, -1i64).unwrap();
        a.rdpid(rbx).unwrap();
        a.rdtscp().unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 0);
    assert_eq!(h.gpr(Gpr::Rbx), 0x1234);
    assert_eq!(h.gpr(Gpr::Rcx), 0x1234);
    for feature in [Feature::Rdpid, Feature::Rdtscp] {
        let h = run_with(without(feature), |a| {
            if feature == Feature::Rdpid {
                a.rdpid(rbx).unwrap();
            } else {
                a.rdtscp().unwrap();
            }
        });
        assert_eq!(h.gpr(Gpr::R15), 6, "{feature:?}");
    }
}

#[test]
fn lgdt_and_lidt_refuse_non_canonical_bases() {
    for lidt in [false, true] {
        let h = run_with(None, |a| {
            a.mov(word_ptr(DATA), 0xfff).unwrap();
            // Not canonical even for 57-bit linear addresses (bit 56 set, 63:57 clear).
            a.mov(rax, 0x0100_0000_0000_0000u64).unwrap();
            a.mov(qword_ptr(DATA + 2), rax).unwrap();
            if lidt {
                a.lidt(ptr(DATA)).unwrap();
            } else {
                a.lgdt(ptr(DATA)).unwrap();
            }
        });
        assert_eq!((h.gpr(Gpr::R15), h.gpr(Gpr::R14)), (13, 0), "lidt {lidt}");
        assert_ne!(h.vcpu.gdt().base, 0x0100_0000_0000_0000);
        assert_ne!(h.vcpu.idt().base, 0x0100_0000_0000_0000);
    }
    // A canonical high-half base loads.
    let h = run_with(None, |a| {
        a.mov(word_ptr(DATA), 0x7f).unwrap();
        a.mov(rax, 0xffff_8000_0000_1000u64).unwrap();
        a.mov(qword_ptr(DATA + 2), rax).unwrap();
        a.lgdt(ptr(DATA)).unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 0);
    assert_eq!(h.vcpu.gdt().base, 0xffff_8000_0000_1000);
}

#[test]
fn mov_cr8_is_an_exit_to_the_core() {
    let mut h = machine();
    let mut a = asm64();
    a.mov(r9, 9u64).unwrap();
    a.mov(cr8, r9).unwrap();
    a.mov(r10, cr8).unwrap();
    a.hlt().unwrap();
    handlers(&mut h, a);
    let limit = opsvisor_core::ops::RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: 1000,
    };
    let exit = h.vcpu.run(&mut h.mem, &limit);
    assert_eq!(
        exit,
        Exit::Cr8 {
            direction: Direction::Write,
            gpr: Gpr::R9
        }
    );
    h.vcpu.skip_emulated_instruction();
    let exit = h.vcpu.run(&mut h.mem, &limit);
    assert_eq!(
        exit,
        Exit::Cr8 {
            direction: Direction::Read,
            gpr: Gpr::R10
        }
    );
    h.vcpu.set_gpr(Gpr::R10, 9);
    h.vcpu.skip_emulated_instruction();
    assert_eq!(h.vcpu.run(&mut h.mem, &limit), Exit::Hlt);
}

/// CR4.OSFXSR, OSXMMEXCPT and OSXSAVE on, then `body`.
fn with_osxsave(model: Option<CpuidPolicy>, body: impl FnOnce(&mut CodeAssembler)) -> Harness {
    run_with(model, |a| {
        a.mov(rax, cr4).unwrap();
        a.or(rax, (CR4_OSXSAVE | 0x600) as i32).unwrap();
        a.mov(cr4, rax).unwrap();
        body(a);
    })
}

/// `xsetbv` with XCR0 = `value`.
fn set_xcr0(a: &mut CodeAssembler, value: u32) {
    a.xor(ecx, ecx).unwrap();
    a.xor(edx, edx).unwrap();
    a.mov(eax, value).unwrap();
    a.xsetbv().unwrap();
}

#[test]
fn xgetbv_and_xsetbv_follow_the_xcr0_rules() {
    // Without CR4.OSXSAVE both are #UD.
    for xset in [false, true] {
        let h = run_with(None, |a| {
            a.xor(ecx, ecx).unwrap();
            if xset {
                a.mov(eax, 1u32).unwrap();
                a.xor(edx, edx).unwrap();
                a.xsetbv().unwrap();
            } else {
                a.xgetbv().unwrap();
            }
        });
        assert_eq!(h.gpr(Gpr::R15), 6, "xsetbv {xset}");
    }
    // XCR0 starts as x87 alone; x87 | SSE can be loaded and read back.
    let h = with_osxsave(None, |a| {
        a.mov(rdx, -1i64).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.xgetbv().unwrap();
        a.mov(r8, rax).unwrap();
        a.mov(r9, rdx).unwrap();
        set_xcr0(a, 3);
        a.xgetbv().unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 0);
    assert_eq!((h.gpr(Gpr::R8), h.gpr(Gpr::R9)), (1, 0));
    assert_eq!((h.gpr(Gpr::Rax), h.gpr(Gpr::Rdx)), (3, 0));
    assert_eq!(h.vcpu.xcr0(), 3);
    // x87 cleared, AVX (not in the model), and XCR1 are #GP(0); XGETBV of ECX 1 too.
    for (ecx_value, eax_value) in [(0u32, 2u32), (0, 7), (1, 1)] {
        let h = with_osxsave(None, |a| {
            a.mov(ecx, ecx_value).unwrap();
            a.mov(eax, eax_value).unwrap();
            a.xor(edx, edx).unwrap();
            a.xsetbv().unwrap();
        });
        assert_eq!((h.gpr(Gpr::R15), h.gpr(Gpr::R14)), (13, 0), "{eax_value}");
        assert_eq!(h.vcpu.xcr0(), 1);
    }
    let h = with_osxsave(None, |a| {
        a.mov(ecx, 1u32).unwrap();
        a.xgetbv().unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 13);
}

/// XMM0 = 0x1122..., one x87 register loaded, XCR0 = x87 | SSE.
fn dirty_state(a: &mut CodeAssembler) {
    set_xcr0(a, 3);
    a.mov(rax, 0x1122_3344_5566_7788u64).unwrap();
    a.movq(xmm0, rax).unwrap();
    a.fninit().unwrap();
    a.fld1().unwrap();
}

#[test]
fn xsave_and_xrstor_round_trip_the_x87_and_sse_state() {
    let h = with_osxsave(None, |a| {
        dirty_state(a);
        a.mov(rdi, DATA).unwrap();
        a.mov(eax, 3u32).unwrap();
        a.xor(edx, edx).unwrap();
        a.xsave64(ptr(rdi)).unwrap();
        // Change both components, then restore them.
        a.pxor(xmm0, xmm0).unwrap();
        a.fninit().unwrap();
        a.mov(eax, 3u32).unwrap();
        a.xrstor64(ptr(rdi)).unwrap();
        a.movq(rbx, xmm0).unwrap();
        a.fnstsw(ax).unwrap();
        a.movzx(r8d, ax).unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 0);
    assert_eq!(h.gpr(Gpr::Rbx), 0x1122_3344_5566_7788);
    // TOP is 7 again: the FLD1 came back.
    assert_eq!((h.gpr(Gpr::R8) >> 11) & 7, 7);
    let m = &h.mem;
    assert_eq!(m.read_u64(DATA + 160).unwrap(), 0x1122_3344_5566_7788);
    assert_eq!(m.read_u64(DATA + 24).unwrap() & 0xffff_ffff, 0x1f80);
    // XSTATE_BV: both components in use.
    assert_eq!(m.read_u64(DATA + 512).unwrap(), 3);
    assert_eq!(m.read_u64(DATA + 520).unwrap(), 0);
}

#[test]
fn xsavec_writes_the_compacted_header_and_xrstor_takes_it() {
    let h = with_osxsave(None, |a| {
        set_xcr0(a, 3);
        // x87 in its initial configuration, SSE in use.
        a.fninit().unwrap();
        a.mov(rax, 0x55u64).unwrap();
        a.movq(xmm1, rax).unwrap();
        a.mov(rdi, DATA).unwrap();
        a.mov(eax, 3u32).unwrap();
        a.xor(edx, edx).unwrap();
        a.xsavec64(ptr(rdi)).unwrap();
        a.pxor(xmm1, xmm1).unwrap();
        a.fld1().unwrap();
        a.xrstor64(ptr(rdi)).unwrap();
        a.movq(rbx, xmm1).unwrap();
        a.fnstsw(ax).unwrap();
        a.movzx(r8d, ax).unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 0);
    assert_eq!(h.gpr(Gpr::Rbx), 0x55);
    // The x87 component was initialised (XSTATE_BV bit 0 clear): TOP 0, stack empty.
    assert_eq!(h.gpr(Gpr::R8), 0);
    assert_eq!(h.mem.read_u64(DATA + 512).unwrap(), 2);
    assert_eq!(h.mem.read_u64(DATA + 520).unwrap(), (1 << 63) | 3);
}

#[test]
fn xsaveopt_skips_components_in_their_initial_configuration() {
    let h = with_osxsave(None, |a| {
        set_xcr0(a, 3);
        a.mov(rdi, DATA).unwrap();
        // A marker where XMM0 goes: the initial SSE state is not written over it.
        a.mov(qword_ptr(rdi + 160), 0x77).unwrap();
        a.mov(qword_ptr(rdi + 512), -1).unwrap();
        a.fninit().unwrap();
        a.fld1().unwrap();
        a.mov(eax, 3u32).unwrap();
        a.xor(edx, edx).unwrap();
        a.xsaveopt64(ptr(rdi)).unwrap();
    });
    assert_eq!(h.gpr(Gpr::R15), 0);
    assert_eq!(h.mem.read_u64(DATA + 160).unwrap(), 0x77);
    // XSTATE_BV: x87 in use, SSE not; bits outside RFBM kept.
    assert_eq!(h.mem.read_u64(DATA + 512).unwrap(), !2u64);
}

#[test]
fn xsave_family_faults() {
    // Misaligned area: #GP(0).
    let h = with_osxsave(None, |a| {
        set_xcr0(a, 3);
        a.mov(rdi, DATA + 32).unwrap();
        a.mov(eax, 3u32).unwrap();
        a.xsave64(ptr(rdi)).unwrap();
    });
    assert_eq!((h.gpr(Gpr::R15), h.gpr(Gpr::R14)), (13, 0));
    // XRSTOR headers: XSTATE_BV beyond XCR0, reserved header bytes, compacted
    // XSTATE_BV beyond XCOMP_BV, a reserved MXCSR bit.
    for (offset, value) in [
        (512u64, 4u64),
        (528, 1),
        (520, (1 << 63) | 1),
        (24, 1 << 16),
    ] {
        let h = with_osxsave(None, |a| {
            set_xcr0(a, 3);
            a.mov(rdi, DATA).unwrap();
            a.mov(eax, 3u32).unwrap();
            a.xsave64(ptr(rdi)).unwrap();
            a.mov(rax, value).unwrap();
            a.mov(qword_ptr(rdi + offset as i32), rax).unwrap();
            if offset == 520 {
                a.mov(qword_ptr(rdi + 512), 3).unwrap();
            }
            a.mov(eax, 3u32).unwrap();
            a.xrstor64(ptr(rdi)).unwrap();
        });
        assert_eq!((h.gpr(Gpr::R15), h.gpr(Gpr::R14)), (13, 0), "{offset}");
    }
    // XSAVEOPT and XSAVEC are #UD without their feature; CR0.TS is #NM.
    for feature in [Feature::Xsaveopt, Feature::Xsavec] {
        let h = with_osxsave(without(feature), |a| {
            a.mov(rdi, DATA).unwrap();
            if feature == Feature::Xsaveopt {
                a.xsaveopt64(ptr(rdi)).unwrap();
            } else {
                a.xsavec64(ptr(rdi)).unwrap();
            }
        });
        assert_eq!(h.gpr(Gpr::R15), 6, "{feature:?}");
    }
}

#[test]
fn vmcall_and_vmmcall_are_hypercall_exits() {
    for vmmcall in [false, true] {
        let mut h = machine();
        let mut a = asm64();
        if vmmcall {
            a.vmmcall().unwrap();
        } else {
            a.vmcall().unwrap();
        }
        a.hlt().unwrap();
        h.load(&mut a, CODE, &[]);
        assert_eq!(h.run(), Err(Exit::Hypercall), "vmmcall {vmmcall}");
        // Not retired until the core answers it.
        assert_eq!(h.vcpu.rip(), CODE);
        h.vcpu.skip_emulated_instruction();
        assert_eq!(h.vcpu.rip(), CODE + 3);
    }
}

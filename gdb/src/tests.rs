//! The shared parts on the emulator's vCPU: registers through gdb's layout, memory
//! through the guest's page tables, and the hardware stub's breakpoint bookkeeping
//! (INT3s in guest memory, DR0-DR3 and DR7).

use crate::stub::{HwStub, MAX_SW_BREAKPOINTS};
use crate::{memory, regs};
use gdbstub::target::ext::base::singlethread::SingleThreadBase;
use gdbstub::target::ext::breakpoints::{HwBreakpoint, SwBreakpoint};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use opsvisor_core::cpuid::CpuidPolicy;
use opsvisor_core::fpu::FxsaveArea;
use opsvisor_core::ops::{DebugRegs, Gpr, SegReg, X86Ops};
use opsvisor_core::platform::CapturePlatform;
use opsvisor_core::vm::{Vm, VmConfig};
use opsvisor_core::GuestMemory;
use opsvisor_emu::EmuVcpu;

/// CR0.PE | CR0.PG, CR4.PAE, EFER.LME | EFER.LMA.
const CR0_PE_PG: u64 = 0x8000_0001;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME_LMA: u64 = (1 << 8) | (1 << 10);
/// Where the page tables are, and the mapping they hold: the 4 KiB page at virtual
/// `VIRT` is guest-physical `PAGE`; the page after `VIRT` is not mapped.
const PML4: u64 = 0x1000;
const VIRT: u64 = 0xffff_8000_0040_0000;
const PAGE: u64 = 0x8000;

/// A vCPU in long mode on 4-level tables that map `VIRT` to `PAGE` (present, writable).
fn long_mode(mem: &mut GuestMemory) -> EmuVcpu {
    let index = |level: u32| (VIRT >> (12 + 9 * level)) & 0x1ff;
    let (pdpt, pd, pt) = (0x2000, 0x3000, 0x4000);
    mem.write_u64(PML4 + 8 * index(3), pdpt | 3).unwrap();
    mem.write_u64(pdpt + 8 * index(2), pd | 3).unwrap();
    mem.write_u64(pd + 8 * index(1), pt | 3).unwrap();
    mem.write_u64(pt + 8 * index(0), PAGE | 3).unwrap();
    let mut v = EmuVcpu::new();
    v.set_cr4(CR4_PAE);
    v.set_efer(EFER_LME_LMA);
    v.set_cr3(PML4);
    v.set_cr0(CR0_PE_PG);
    v
}

fn machine() -> Vm<EmuVcpu, CapturePlatform> {
    let mut mem = GuestMemory::with_ram(1 << 20).unwrap();
    let v = long_mode(&mut mem);
    Vm::new(
        v,
        mem,
        CapturePlatform::new(),
        CpuidPolicy::emulator(),
        VmConfig::default(),
    )
}

#[test]
fn tag_words_convert_both_ways() {
    // Power-on: every register holds +0.0 and is tagged zero (SDM 1 table 9-1: 5555H).
    assert_eq!(regs::full_tag_word(&FxsaveArea::reset()), 0x5555);
    // An abridged tag of 0: all empty, as after FNINIT.
    let mut fx = FxsaveArea::zeroed();
    assert_eq!(regs::full_tag_word(&fx), 0xffff);
    // TOP = 7 after one push: ST0 is physical register 7.
    fx.set_fsw(7 << 11);
    fx.set_ftw(1 << 7);
    // 1.0: exponent 0x3fff, integer bit set.
    let mut one = [0u8; 10];
    one[7] = 0x80;
    one[8] = 0xff;
    one[9] = 0x3f;
    fx.set_st(0, one);
    assert_eq!(regs::full_tag_word(&fx), 0x3fff);
    // Zero in ST0 is tagged zero.
    fx.set_st(0, [0; 10]);
    assert_eq!(regs::full_tag_word(&fx), 0x7fff);
    assert_eq!(regs::abridged_tag(0x3fff), 0x80);
    assert_eq!(regs::abridged_tag(0xffff), 0);
    assert_eq!(regs::abridged_tag(0), 0xff);
}

#[test]
fn registers_in_gdbs_order_both_ways() {
    let mut v = EmuVcpu::new();
    v.set_gpr(Gpr::Rbx, 0x1111);
    v.set_gpr(Gpr::Rsp, 0x2222);
    v.set_gpr(Gpr::R15, 0x3333);
    v.set_rip(0x4444);
    let mut r = X86_64CoreRegs::default();
    regs::read(&v, &mut r);
    // gdb: rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15.
    assert_eq!(
        (r.regs[1], r.regs[7], r.regs[15], r.rip),
        (0x1111, 0x2222, 0x3333, 0x4444)
    );
    assert_eq!(r.segments.cs, u32::from(v.segment(SegReg::Cs).selector));
    assert_eq!(r.mxcsr, 0x1f80);
    r.regs[2] = 0xdead;
    r.eflags = 0x200;
    r.xmm[3] = 0x0123_4567_89ab_cdef;
    regs::write(&mut v, &r).unwrap();
    assert_eq!(v.gpr(Gpr::Rcx), 0xdead);
    // Bit 1 of RFLAGS always reads as 1.
    assert_eq!(v.rflags(), 0x202);
    assert_eq!(v.fpu_state().unwrap().xmm(3), 0x0123_4567_89ab_cdef);
    // A reserved MXCSR bit: refused, nothing written.
    r.mxcsr = 0x10000;
    r.regs[2] = 0xbeef;
    assert!(regs::write(&mut v, &r).is_err());
    assert_eq!(v.gpr(Gpr::Rcx), 0xdead);
}

#[test]
fn memory_through_the_page_tables() {
    let mut mem = GuestMemory::with_ram(1 << 20).unwrap();
    let v = long_mode(&mut mem);
    let paging = memory::paging(&v);
    mem.write(PAGE + 0xff8, b"opsvisor").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        memory::read_virtual(&mut mem, &paging, VIRT + 0xff8, &mut buf),
        8
    );
    assert_eq!(&buf, b"opsvisor");
    // The read stops at the unmapped page after it.
    let mut buf = [0u8; 16];
    assert_eq!(
        memory::read_virtual(&mut mem, &paging, VIRT + 0xff8, &mut buf),
        8
    );
    assert_eq!(
        memory::read_virtual(&mut mem, &paging, VIRT + 0x1000, &mut buf),
        0
    );
    assert!(memory::write_virtual(
        &mut mem,
        &paging,
        VIRT + 0x10,
        b"gdb"
    ));
    assert_eq!(mem.read_u8(PAGE + 0x12).unwrap(), b'b');
    assert!(!memory::write_virtual(
        &mut mem,
        &paging,
        VIRT + 0xffe,
        b"abcd"
    ));
    assert_eq!(
        memory::translate(&mut mem, &paging, VIRT + 0x123, false),
        Some(PAGE + 0x123)
    );
    assert_eq!(memory::translate(&mut mem, &paging, 0x1234, false), None);
}

#[test]
fn software_breakpoints_are_int3s_gdb_does_not_see() {
    let mut vm = machine();
    vm.mem.write(PAGE + 0x20, &[0x90, 0x55, 0xc3]).unwrap();
    let mut stub = HwStub::new(&mut vm, 1_000_000);
    assert_eq!(stub.add_sw_breakpoint(VIRT + 0x21, 1).ok(), Some(true));
    // An address no page maps cannot take one.
    assert_eq!(stub.add_sw_breakpoint(VIRT + 0x1000, 1).ok(), Some(false));
    let mut seen = [0u8; 3];
    assert_eq!(stub.read_addrs(VIRT + 0x20, &mut seen).ok(), Some(3));
    assert_eq!(seen, [0x90, 0x55, 0xc3], "gdb reads the replaced byte");
    // gdb writes over the breakpoint: the INT3 stays, the new byte comes back later.
    assert!(stub.write_addrs(VIRT + 0x21, &[0x56]).is_ok());
    assert_eq!(stub.read_addrs(VIRT + 0x20, &mut seen).ok(), Some(3));
    assert_eq!(seen, [0x90, 0x56, 0xc3]);
    assert_eq!(stub.remove_sw_breakpoint(VIRT + 0x21, 1).ok(), Some(true));
    assert_eq!(stub.remove_sw_breakpoint(VIRT + 0x21, 1).ok(), Some(false));
    for a in 0..MAX_SW_BREAKPOINTS as u64 {
        assert_eq!(stub.add_sw_breakpoint(VIRT + a, 1).ok(), Some(true));
    }
    assert_eq!(
        stub.add_sw_breakpoint(VIRT + 0x800, 1).ok(),
        Some(false),
        "bounded"
    );
    // While set, guest memory holds the INT3 the backend intercepts.
    assert_eq!(stub.guest_byte(PAGE + 0x21), Some(0xcc));
    // The session's end (the stub dropped) takes every INT3 out.
    drop(stub);
    assert_eq!(vm.mem.read_u8(PAGE + 0x21).unwrap(), 0x56);
}

#[test]
fn hardware_breakpoints_are_dr0_to_dr3() {
    let mut vm = machine();
    let mut stub = HwStub::new(&mut vm, 1_000_000);
    for n in 0..4u64 {
        assert_eq!(stub.add_hw_breakpoint(0x1000 + n, 1).ok(), Some(true));
    }
    assert_eq!(
        stub.add_hw_breakpoint(0x2000, 1).ok(),
        Some(false),
        "DR0-DR3 taken"
    );
    assert_eq!(stub.remove_hw_breakpoint(0x1001, 1).ok(), Some(true));
    assert_eq!(stub.remove_hw_breakpoint(0x1001, 1).ok(), Some(false));
    assert_eq!(stub.add_hw_breakpoint(0x2000, 1).ok(), Some(true));
}

#[test]
fn debug_registers_while_hardware_breakpoints_are_set() {
    let mut vm = machine();
    let guest = DebugRegs {
        db: [0x11, 0x22, 0x33, 0x44],
        dr7: 0x400 | 0b1100_0000,
        ..DebugRegs::default()
    };
    vm.bsp_mut().backend.set_debug_regs(&guest);
    let mut stub = HwStub::new(&mut vm, 1_000_000);
    assert_eq!(stub.add_hw_breakpoint(0x1000, 1).ok(), Some(true));
    assert_eq!(stub.add_hw_breakpoint(0x3000, 1).ok(), Some(true));
    stub.load_debug_regs();
    let dr = stub.vcpu().debug_regs();
    // L0 and L1, R/W and LEN 00: instruction breakpoints.
    assert_eq!(
        (dr.db[0], dr.db[1], dr.dr7 & 0xffff_00ff),
        (0x1000, 0x3000, 0b0101)
    );
    assert_eq!(stub.remove_hw_breakpoint(0x1000, 1).ok(), Some(true));
    assert_eq!(stub.remove_hw_breakpoint(0x3000, 1).ok(), Some(true));
    stub.load_debug_regs();
    assert_eq!(stub.vcpu().debug_regs(), guest, "the guest's own come back");
}

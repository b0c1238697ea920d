//! The backend set: one `enum_dispatch` enum over the three backends.
//!
//! `enum_dispatch` only sees the crate it expands in, and the backend crates depend on
//! the core, so the core cannot name their types. It defines a generic enum instead,
//! whose variants are distinct wrapper types (bare type parameters would make the
//! generated `From` impls overlap); the `opsvisor-backends` crate names the concrete
//! `Backend<VmxVcpu, SvmVcpu, EmuVcpu>`. Calls through it are a `match`, not a vtable.
//! A backend that is not built in is [`Unavailable`], an uninhabited type.

use crate::cpuid::CpuidPolicy;
use crate::exit::Exit;
use crate::fpu::{FpuStateError, FxsaveArea};
use crate::mmu::memory::GuestMemory;
use crate::ops::{
    DebugRegs, DescriptorTable, Event, ExitSink, Gpr, GuestDebug, Regs, ResetKind, RunLimit,
    SegReg, Segment, X86Ops,
};
use crate::ops::{VcpuState, VcpuStateError};
use enum_dispatch::enum_dispatch;

/// Implements [`X86Ops`] for a wrapper by forwarding every operation to its field.
macro_rules! forward_x86_ops {
    ($slot:ident) => {
        impl<T: X86Ops> X86Ops for $slot<T> {
            #[inline(always)]
            fn name(&self) -> &'static str {
                self.0.name()
            }
            #[inline(always)]
            fn vcpu_reset(&mut self, kind: ResetKind) {
                self.0.vcpu_reset(kind)
            }
            #[inline(always)]
            fn gpr(&self, reg: Gpr) -> u64 {
                self.0.gpr(reg)
            }
            #[inline(always)]
            fn set_gpr(&mut self, reg: Gpr, value: u64) {
                self.0.set_gpr(reg, value)
            }
            #[inline(always)]
            fn rip(&self) -> u64 {
                self.0.rip()
            }
            #[inline(always)]
            fn set_rip(&mut self, rip: u64) {
                self.0.set_rip(rip)
            }
            #[inline(always)]
            fn rflags(&self) -> u64 {
                self.0.rflags()
            }
            #[inline(always)]
            fn set_rflags(&mut self, rflags: u64) {
                self.0.set_rflags(rflags)
            }
            #[inline(always)]
            fn regs(&self) -> Regs {
                self.0.regs()
            }
            #[inline(always)]
            fn set_regs(&mut self, regs: &Regs) {
                self.0.set_regs(regs)
            }
            #[inline(always)]
            fn segment(&self, seg: SegReg) -> Segment {
                self.0.segment(seg)
            }
            #[inline(always)]
            fn set_segment(&mut self, seg: SegReg, value: &Segment) {
                self.0.set_segment(seg, value)
            }
            #[inline(always)]
            fn cpl(&self) -> u8 {
                self.0.cpl()
            }
            #[inline(always)]
            fn cr0(&self) -> u64 {
                self.0.cr0()
            }
            #[inline(always)]
            fn set_cr0(&mut self, value: u64) {
                self.0.set_cr0(value)
            }
            #[inline(always)]
            fn cr2(&self) -> u64 {
                self.0.cr2()
            }
            #[inline(always)]
            fn set_cr2(&mut self, value: u64) {
                self.0.set_cr2(value)
            }
            #[inline(always)]
            fn cr3(&self) -> u64 {
                self.0.cr3()
            }
            #[inline(always)]
            fn set_cr3(&mut self, value: u64) {
                self.0.set_cr3(value)
            }
            #[inline(always)]
            fn cr4(&self) -> u64 {
                self.0.cr4()
            }
            #[inline(always)]
            fn set_cr4(&mut self, value: u64) {
                self.0.set_cr4(value)
            }
            #[inline(always)]
            fn efer(&self) -> u64 {
                self.0.efer()
            }
            #[inline(always)]
            fn set_efer(&mut self, value: u64) {
                self.0.set_efer(value)
            }
            #[inline(always)]
            fn gdt(&self) -> DescriptorTable {
                self.0.gdt()
            }
            #[inline(always)]
            fn set_gdt(&mut self, table: DescriptorTable) {
                self.0.set_gdt(table)
            }
            #[inline(always)]
            fn idt(&self) -> DescriptorTable {
                self.0.idt()
            }
            #[inline(always)]
            fn set_idt(&mut self, table: DescriptorTable) {
                self.0.set_idt(table)
            }
            #[inline(always)]
            fn supported_cpuid(&self) -> CpuidPolicy {
                self.0.supported_cpuid()
            }
            #[inline(always)]
            fn set_cpuid(&mut self, policy: &CpuidPolicy) {
                self.0.set_cpuid(policy)
            }
            #[inline(always)]
            fn xcr0(&self) -> u64 {
                self.0.xcr0()
            }
            #[inline(always)]
            fn set_xcr0(&mut self, value: u64) {
                self.0.set_xcr0(value)
            }
            #[inline(always)]
            fn debug_regs(&self) -> DebugRegs {
                self.0.debug_regs()
            }
            #[inline(always)]
            fn set_debug_regs(&mut self, regs: &DebugRegs) {
                self.0.set_debug_regs(regs)
            }
            #[inline(always)]
            fn set_guest_debug(&mut self, debug: GuestDebug) -> Result<(), &'static str> {
                self.0.set_guest_debug(debug)
            }
            #[inline(always)]
            fn get_msr(&self, index: u32) -> Option<u64> {
                self.0.get_msr(index)
            }
            #[inline(always)]
            fn set_msr(&mut self, index: u32, value: u64) -> bool {
                self.0.set_msr(index, value)
            }
            #[inline(always)]
            fn run(&mut self, mem: &mut GuestMemory, limit: &RunLimit) -> Exit {
                self.0.run(mem, limit)
            }
            #[inline(always)]
            fn run_with<Sink: ExitSink>(
                &mut self,
                mem: &mut GuestMemory,
                limit: &RunLimit,
                sink: &mut Sink,
            ) -> Exit {
                self.0.run_with(mem, limit, sink)
            }
            #[inline(always)]
            fn skip_emulated_instruction(&mut self) {
                self.0.skip_emulated_instruction()
            }
            #[inline(always)]
            fn complete_pio_in(&mut self, value: u32) {
                self.0.complete_pio_in(value)
            }
            #[inline(always)]
            fn complete_mmio(&mut self, read: Option<u64>) {
                self.0.complete_mmio(read)
            }
            #[inline(always)]
            fn interrupt_shadow(&self) -> bool {
                self.0.interrupt_shadow()
            }
            #[inline(always)]
            fn set_interrupt_shadow(&mut self, shadow: bool) {
                self.0.set_interrupt_shadow(shadow)
            }
            #[inline(always)]
            fn interrupt_allowed(&self) -> bool {
                self.0.interrupt_allowed()
            }
            #[inline(always)]
            fn nmi_allowed(&self) -> bool {
                self.0.nmi_allowed()
            }
            #[inline(always)]
            fn inject_event(&mut self, event: Event) {
                self.0.inject_event(event)
            }
            #[inline(always)]
            fn event_pending(&self) -> bool {
                self.0.event_pending()
            }
            #[inline(always)]
            fn enable_irq_window(&mut self, enable: bool) {
                self.0.enable_irq_window(enable)
            }
            #[inline(always)]
            fn enable_nmi_window(&mut self, enable: bool) {
                self.0.enable_nmi_window(enable)
            }
            #[inline(always)]
            fn flush_tlb_all(&mut self) {
                self.0.flush_tlb_all()
            }
            #[inline(always)]
            fn flush_tlb_current(&mut self) {
                self.0.flush_tlb_current()
            }
            #[inline(always)]
            fn flush_tlb_gva(&mut self, gva: u64) {
                self.0.flush_tlb_gva(gva)
            }
            #[inline(always)]
            fn load_slat_root(&mut self, root: u64) {
                self.0.load_slat_root(root)
            }
            #[inline(always)]
            fn set_tsc_offset(&mut self, offset: i64) {
                self.0.set_tsc_offset(offset)
            }
            #[inline(always)]
            fn instructions_retired(&self) -> Option<u64> {
                self.0.instructions_retired()
            }
            #[inline(always)]
            fn guest_tsc(&self) -> Option<u64> {
                self.0.guest_tsc()
            }
            #[inline(always)]
            fn set_pause_exiting(&mut self, on: bool) {
                self.0.set_pause_exiting(on)
            }
            #[inline(always)]
            fn fpu_state(&self) -> Option<FxsaveArea> {
                self.0.fpu_state()
            }
            #[inline(always)]
            fn set_fpu_state(&mut self, state: &FxsaveArea) -> Result<(), FpuStateError> {
                self.0.set_fpu_state(state)
            }
            fn save_state(&self) -> Result<VcpuState, VcpuStateError> {
                self.0.save_state()
            }
            fn restore_state(&mut self, state: &VcpuState) -> Result<(), VcpuStateError> {
                self.0.restore_state(state)
            }
        }
    };
}

/// The VMX backend's place in [`Backend`].
#[derive(Debug)]
pub struct VmxSlot<V>(pub V);
/// The SVM backend's place in [`Backend`].
#[derive(Debug)]
pub struct SvmSlot<S>(pub S);
/// The emulator backend's place in [`Backend`].
#[derive(Debug)]
pub struct EmuSlot<E>(pub E);

forward_x86_ops!(VmxSlot);
forward_x86_ops!(SvmSlot);
forward_x86_ops!(EmuSlot);

/// One of the three backends, dispatched by `match` (no vtable on the exit path).
#[enum_dispatch(X86Ops)]
#[derive(Debug)]
pub enum Backend<V: X86Ops, S: X86Ops, E: X86Ops> {
    /// Intel VT-x.
    Vmx(VmxSlot<V>),
    /// AMD-V.
    Svm(SvmSlot<S>),
    /// The iced-x86 software CPU.
    Emu(EmuSlot<E>),
}

/// A backend that is not built in: no value of this type exists, so a `Backend` variant
/// holding it can never be constructed and its arms compile to nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {}

impl X86Ops for Unavailable {
    fn name(&self) -> &'static str {
        match *self {}
    }
    fn vcpu_reset(&mut self, _: ResetKind) {
        match *self {}
    }
    fn gpr(&self, _: Gpr) -> u64 {
        match *self {}
    }
    fn set_gpr(&mut self, _: Gpr, _: u64) {
        match *self {}
    }
    fn rip(&self) -> u64 {
        match *self {}
    }
    fn set_rip(&mut self, _: u64) {
        match *self {}
    }
    fn rflags(&self) -> u64 {
        match *self {}
    }
    fn set_rflags(&mut self, _: u64) {
        match *self {}
    }
    fn segment(&self, _: SegReg) -> Segment {
        match *self {}
    }
    fn set_segment(&mut self, _: SegReg, _: &Segment) {
        match *self {}
    }
    fn cpl(&self) -> u8 {
        match *self {}
    }
    fn cr0(&self) -> u64 {
        match *self {}
    }
    fn set_cr0(&mut self, _: u64) {
        match *self {}
    }
    fn cr2(&self) -> u64 {
        match *self {}
    }
    fn set_cr2(&mut self, _: u64) {
        match *self {}
    }
    fn cr3(&self) -> u64 {
        match *self {}
    }
    fn set_cr3(&mut self, _: u64) {
        match *self {}
    }
    fn cr4(&self) -> u64 {
        match *self {}
    }
    fn set_cr4(&mut self, _: u64) {
        match *self {}
    }
    fn efer(&self) -> u64 {
        match *self {}
    }
    fn set_efer(&mut self, _: u64) {
        match *self {}
    }
    fn gdt(&self) -> DescriptorTable {
        match *self {}
    }
    fn set_gdt(&mut self, _: DescriptorTable) {
        match *self {}
    }
    fn idt(&self) -> DescriptorTable {
        match *self {}
    }
    fn set_idt(&mut self, _: DescriptorTable) {
        match *self {}
    }
    fn supported_cpuid(&self) -> CpuidPolicy {
        match *self {}
    }
    fn set_cpuid(&mut self, _: &CpuidPolicy) {
        match *self {}
    }
    fn debug_regs(&self) -> DebugRegs {
        match *self {}
    }
    fn set_debug_regs(&mut self, _: &DebugRegs) {
        match *self {}
    }
    fn get_msr(&self, _: u32) -> Option<u64> {
        match *self {}
    }
    fn set_msr(&mut self, _: u32, _: u64) -> bool {
        match *self {}
    }
    fn run(&mut self, _: &mut GuestMemory, _: &RunLimit) -> Exit {
        match *self {}
    }
    fn skip_emulated_instruction(&mut self) {
        match *self {}
    }
    fn complete_pio_in(&mut self, _: u32) {
        match *self {}
    }
    fn complete_mmio(&mut self, _: Option<u64>) {
        match *self {}
    }
    fn interrupt_shadow(&self) -> bool {
        match *self {}
    }
    fn set_interrupt_shadow(&mut self, _: bool) {
        match *self {}
    }
    fn interrupt_allowed(&self) -> bool {
        match *self {}
    }
    fn nmi_allowed(&self) -> bool {
        match *self {}
    }
    fn inject_event(&mut self, _: Event) {
        match *self {}
    }
    fn event_pending(&self) -> bool {
        match *self {}
    }
    fn enable_irq_window(&mut self, _: bool) {
        match *self {}
    }
    fn enable_nmi_window(&mut self, _: bool) {
        match *self {}
    }
    fn flush_tlb_all(&mut self) {
        match *self {}
    }
}

//! Test-only stand-ins for a backend and a platform, shared by core's unit tests: a
//! vCPU that holds its architectural registers in plain fields and records what the run
//! loop asks of it, and a platform whose clock reads what the test sets.

use crate::cpuid::CpuidPolicy;
use crate::exit::Exit;
use crate::mmu::memory::GuestMemory;
use crate::ops::{
    DebugRegs, DescriptorTable, Event, Gpr, ResetKind, RunLimit, SegReg, Segment, X86Ops,
};
use crate::platform::Platform;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Which MSRs a [`TestVcpu`] keeps itself (as VMX and SVM keep the ones they switch on
/// entry and exit) instead of leaving them to core's MSR table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeldMsrs {
    /// None: every MSR is core's.
    #[default]
    None,
    /// These indexes.
    Only(&'static [u32]),
    /// Every index; one never written reads 0.
    All,
}

/// A vCPU whose registers are fields. It never runs guest code: `run` reports HLT. The
/// test decides when the "guest" can take an interrupt (`rflags.IF`, nothing pending) or
/// an NMI (`nmi_ok`), and reads back what was injected and completed.
#[derive(Default)]
pub struct TestVcpu {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub seg: [Segment; 8],
    /// CR0 to CR4 by number (CR1 unused).
    pub cr: [u64; 5],
    pub efer: u64,
    pub cpl: u8,
    pub gdt: DescriptorTable,
    pub idt: DescriptorTable,
    pub held_msrs: HeldMsrs,
    pub msrs: BTreeMap<u32, u64>,
    pub tsc_offset: i64,
    pub shadow: bool,
    pub nmi_ok: bool,
    /// An injected event not yet taken by the "guest".
    pub pending: Option<Event>,
    /// Every event injected, in order.
    pub injected: Vec<Event>,
    pub irq_window: bool,
    pub nmi_window: bool,
    /// The value the last port read completed with.
    pub pio_in: Option<u32>,
    /// The value the last MMIO read completed with.
    pub mmio_in: Option<u64>,
}

impl TestVcpu {
    /// The guest took the queued event.
    pub fn enter(&mut self) {
        self.pending = None;
    }

    fn holds(&self, index: u32) -> bool {
        match self.held_msrs {
            HeldMsrs::None => false,
            HeldMsrs::Only(list) => list.contains(&index),
            HeldMsrs::All => true,
        }
    }
}

impl X86Ops for TestVcpu {
    fn name(&self) -> &'static str {
        "test"
    }
    fn vcpu_reset(&mut self, _kind: ResetKind) {}
    fn supported_cpuid(&self) -> CpuidPolicy {
        CpuidPolicy::emulator()
    }
    fn set_cpuid(&mut self, _policy: &CpuidPolicy) {}
    fn gpr(&self, reg: Gpr) -> u64 {
        self.gpr[reg as usize]
    }
    fn set_gpr(&mut self, reg: Gpr, value: u64) {
        self.gpr[reg as usize] = value;
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, rip: u64) {
        self.rip = rip;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, rflags: u64) {
        self.rflags = rflags;
    }
    fn segment(&self, seg: SegReg) -> Segment {
        self.seg[seg as usize]
    }
    fn set_segment(&mut self, seg: SegReg, value: &Segment) {
        self.seg[seg as usize] = *value;
    }
    fn cpl(&self) -> u8 {
        self.cpl
    }
    fn cr0(&self) -> u64 {
        self.cr[0]
    }
    fn set_cr0(&mut self, value: u64) {
        self.cr[0] = value;
    }
    fn cr2(&self) -> u64 {
        self.cr[2]
    }
    fn set_cr2(&mut self, value: u64) {
        self.cr[2] = value;
    }
    fn cr3(&self) -> u64 {
        self.cr[3]
    }
    fn set_cr3(&mut self, value: u64) {
        self.cr[3] = value;
    }
    fn cr4(&self) -> u64 {
        self.cr[4]
    }
    fn set_cr4(&mut self, value: u64) {
        self.cr[4] = value;
    }
    fn efer(&self) -> u64 {
        self.efer
    }
    fn set_efer(&mut self, value: u64) {
        self.efer = value;
    }
    fn gdt(&self) -> DescriptorTable {
        self.gdt
    }
    fn set_gdt(&mut self, table: DescriptorTable) {
        self.gdt = table;
    }
    fn idt(&self) -> DescriptorTable {
        self.idt
    }
    fn set_idt(&mut self, table: DescriptorTable) {
        self.idt = table;
    }
    fn debug_regs(&self) -> DebugRegs {
        DebugRegs::default()
    }
    fn set_debug_regs(&mut self, _regs: &DebugRegs) {}
    fn get_msr(&self, index: u32) -> Option<u64> {
        self.holds(index)
            .then(|| self.msrs.get(&index).copied().unwrap_or(0))
    }
    fn set_msr(&mut self, index: u32, value: u64) -> bool {
        let held = self.holds(index);
        if held {
            self.msrs.insert(index, value);
        }
        held
    }
    fn run(&mut self, _mem: &mut GuestMemory, _limit: &RunLimit) -> Exit {
        Exit::Hlt
    }
    fn skip_emulated_instruction(&mut self) {}
    fn complete_pio_in(&mut self, value: u32) {
        self.pio_in = Some(value);
    }
    fn complete_mmio(&mut self, read: Option<u64>) {
        self.mmio_in = read;
    }
    fn interrupt_shadow(&self) -> bool {
        self.shadow
    }
    fn set_interrupt_shadow(&mut self, shadow: bool) {
        self.shadow = shadow;
    }
    fn interrupt_allowed(&self) -> bool {
        self.rflags & crate::arch::RFLAGS_IF != 0 && self.pending.is_none()
    }
    fn nmi_allowed(&self) -> bool {
        self.nmi_ok && self.pending.is_none()
    }
    fn inject_event(&mut self, event: Event) {
        self.pending = Some(event);
        self.injected.push(event);
    }
    fn event_pending(&self) -> bool {
        self.pending.is_some()
    }
    fn enable_irq_window(&mut self, enable: bool) {
        self.irq_window = enable;
    }
    fn enable_nmi_window(&mut self, enable: bool) {
        self.nmi_window = enable;
    }
    fn flush_tlb_all(&mut self) {}
    fn set_tsc_offset(&mut self, offset: i64) {
        self.tsc_offset = offset;
    }
}

/// A platform whose clock reads the nanoseconds the test sets, with a console attached
/// to nothing.
pub struct StillClock(pub u64);

impl Platform for StillClock {
    fn now_ns(&self) -> u64 {
        self.0
    }
    fn wait(&mut self, _deadline_ns: Option<u64>) -> bool {
        false
    }
    fn console_write(&mut self, _bytes: &[u8]) {}
    fn console_read(&mut self) -> Option<u8> {
        None
    }
    fn console_input_ready(&mut self) -> bool {
        false
    }
}

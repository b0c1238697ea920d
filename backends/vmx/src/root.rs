//! VMX root operation on one logical processor, shared by every vCPU created on it.
//!
//! VMXON is per processor; a VMCS is per vCPU (SDM 3C 25.1). A machine of N vCPUs on
//! one host CPU (the bare-metal image runs them in core's turns) has one VMXON region
//! and N VMCSs, all active on this processor, one of them current. Two things follow:
//!
//! - **The current VMCS.** VMREAD, VMWRITE and VM entry act on the current VMCS, and
//!   core touches any vCPU's state at any time (the APs' power-on reset when the machine
//!   is built, a halted vCPU's RFLAGS.IF when the scheduler looks for one to wake). Each
//!   vCPU's VMCS handle therefore makes its VMCS current (VMPTRLD) before an access when
//!   another one is: [`LogicalCpu::make_current`]. The launch state is the VMCS's own
//!   (VMLAUNCH once, then VMRESUME, per VMCS: the vCPU tracks it); switching with
//!   VMPTRLD keeps every VMCS active on this processor, which needs no VMCLEAR (SDM 3C
//!   25.11.1 asks for VMCLEAR before a VMCS moves to another processor or its memory is
//!   given up: the handle's drop clears it).
//! - **The registers VMX does not switch.** STAR, LSTAR, CSTAR, SFMASK,
//!   KERNEL_GS_BASE, TSC_AUX, DR0-DR3, DR6 and the x87/SSE state stay in the processor
//!   across VM entries and exits; between runs they are the guest's of the vCPU that
//!   ran last. [`LogicalCpu::claim`] hands them to the vCPU about to enter: the holder's
//!   values are saved in its [`Unswitched`] and the newcomer's loaded. A vCPU that does
//!   not hold them reads and writes its saved copy.
//!
//! The decisions are generic over [`SwitchOps`] (the instructions), so the host tests
//! check which VMPTRLDs, saves and loads happen.

use crate::vmcs::VmxError;
use alloc::rc::Rc;
use core::cell::{Cell, RefCell};
use opsvisor_core::fpu::FxsaveArea;

/// The MSRs whose guest values VMX leaves in the processor, in [`Unswitched::msrs`]
/// order: STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, TSC_AUX (the last only on a
/// processor with RDTSCP).
pub const UNSWITCHED_MSRS: [u32; 6] = [
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0xc000_0102,
    0xc000_0103,
];

/// The guest registers VMX does not switch, as one vCPU left them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unswitched {
    /// The MSRs of [`UNSWITCHED_MSRS`].
    pub msrs: [u64; 6],
    /// DR0-DR3 and DR6.
    pub dr: [u64; 5],
    /// The x87/MMX/SSE state, as FXSAVE64 stores it (MXCSR_MASK included).
    pub fpu: FxsaveArea,
}

impl Unswitched {
    /// A new vCPU's: zero MSRs and breakpoints, DR6 with its fixed bits, and `fpu` (the
    /// processor's image, for its MXCSR_MASK: the vCPU's reset loads its own state).
    pub fn new(fpu: FxsaveArea) -> Unswitched {
        Unswitched {
            msrs: [0; 6],
            dr: [0, 0, 0, 0, 0xffff_0ff0],
            fpu,
        }
    }

    /// The saved value of MSR `index`, if it is one of [`UNSWITCHED_MSRS`].
    pub fn msr(&self, index: u32) -> Option<u64> {
        let i = UNSWITCHED_MSRS.iter().position(|&m| m == index)?;
        self.msrs.get(i).copied()
    }

    /// Set the saved value of MSR `index` (ignored for any other MSR).
    pub fn set_msr(&mut self, index: u32, value: u64) {
        if let Some(slot) = UNSWITCHED_MSRS
            .iter()
            .position(|&m| m == index)
            .and_then(|i| self.msrs.get_mut(i))
        {
            *slot = value;
        }
    }
}

/// The instructions behind switching vCPUs: VMPTRLD and the unswitched registers of
/// the processor. An implementation exists only where they can run (VMX root operation
/// at CPL 0 on hardware), so the operations are safe to call; the values written are
/// the guest's (validated by core, or read back from the processor).
pub trait SwitchOps {
    /// VMPTRLD of the VMCS at host-physical `phys`.
    fn vmptrld(&self, phys: u64) -> Result<(), VmxError>;
    /// RDMSR of one of [`UNSWITCHED_MSRS`].
    fn read_msr(&self, index: u32) -> u64;
    /// WRMSR of one of [`UNSWITCHED_MSRS`].
    fn write_msr(&self, index: u32, value: u64);
    /// DR`n` (0-3; any other `n` is DR6).
    fn read_dr(&self, n: u8) -> u64;
    /// Load DR`n` (0-3; any other `n` is DR6).
    fn write_dr(&self, n: u8, value: u64);
    /// FXSAVE64 into `area`.
    fn fxsave(&self, area: &mut FxsaveArea);
    /// FXRSTOR64 from `area` (whose MXCSR fits the processor's MXCSR_MASK).
    fn fxrstor(&self, area: &FxsaveArea);
}

/// The debug registers [`Unswitched::dr`] holds, in its order.
const DRS: [u8; 5] = [0, 1, 2, 3, 6];

/// One logical processor in VMX root operation: which VMCS is current and which vCPU's
/// unswitched registers it holds (see the module documentation).
pub struct LogicalCpu<S: SwitchOps> {
    ops: S,
    /// The host-physical address of the current VMCS; [`NO_VMCS`] when none is.
    current: Cell<u64>,
    /// The saved registers of the vCPU whose values the processor holds.
    holder: RefCell<Option<Rc<RefCell<Unswitched>>>>,
    /// The processor has TSC_AUX (RDTSCP).
    tsc_aux: bool,
    /// VMPTRLDs so far.
    vmptrlds: Cell<u64>,
    /// Times the unswitched registers changed hands.
    handovers: Cell<u64>,
}

/// [`LogicalCpu`]'s current-VMCS value when no VMCS is current (VMCLEAR of the current
/// VMCS leaves the processor so, SDM 3C 31.3 VMCLEAR).
pub const NO_VMCS: u64 = u64::MAX;

impl<S: SwitchOps> LogicalCpu<S> {
    /// The processor behind `ops`, with no VMCS current and no vCPU's registers loaded.
    pub fn new(ops: S, tsc_aux: bool) -> LogicalCpu<S> {
        LogicalCpu {
            ops,
            current: Cell::new(NO_VMCS),
            holder: RefCell::new(None),
            tsc_aux,
            vmptrlds: Cell::new(0),
            handovers: Cell::new(0),
        }
    }

    /// The instructions.
    pub fn ops(&self) -> &S {
        &self.ops
    }

    /// Make the VMCS at `phys` current, with VMPTRLD when another one is.
    #[inline]
    pub fn make_current(&self, phys: u64) -> Result<(), VmxError> {
        if self.current.get() == phys {
            return Ok(());
        }
        self.ops.vmptrld(phys)?;
        self.current.set(phys);
        self.vmptrlds.set(self.vmptrlds.get().wrapping_add(1));
        Ok(())
    }

    /// The VMCS at `phys` was cleared (VMCLEAR): if it was current, none is now.
    pub fn cleared(&self, phys: u64) {
        if self.current.get() == phys {
            self.current.set(NO_VMCS);
        }
    }

    /// The host-physical address of the current VMCS, [`NO_VMCS`] when none is.
    pub fn current(&self) -> u64 {
        self.current.get()
    }

    /// Whether the processor holds the unswitched registers saved in `guest`.
    #[inline]
    pub fn holds(&self, guest: &Rc<RefCell<Unswitched>>) -> bool {
        self.holder
            .borrow()
            .as_ref()
            .is_some_and(|h| Rc::ptr_eq(h, guest))
    }

    /// Give the processor the unswitched registers of `guest` (its vCPU is about to
    /// enter): the holder's are saved into its copy, `guest`'s loaded. Nothing happens
    /// when `guest` holds them already.
    pub fn claim(&self, guest: &Rc<RefCell<Unswitched>>) {
        if self.holds(guest) {
            return;
        }
        let msrs = if self.tsc_aux { 6 } else { 5 };
        if let Some(previous) = self.holder.borrow().as_ref() {
            let mut p = previous.borrow_mut();
            for (slot, &index) in p.msrs.iter_mut().zip(&UNSWITCHED_MSRS).take(msrs) {
                *slot = self.ops.read_msr(index);
            }
            for (slot, n) in p.dr.iter_mut().zip(DRS) {
                *slot = self.ops.read_dr(n);
            }
            self.ops.fxsave(&mut p.fpu);
        }
        let g = guest.borrow();
        for (&value, &index) in g.msrs.iter().zip(&UNSWITCHED_MSRS).take(msrs) {
            self.ops.write_msr(index, value);
        }
        for (&value, n) in g.dr.iter().zip(DRS) {
            self.ops.write_dr(n, value);
        }
        self.ops.fxrstor(&g.fpu);
        drop(g);
        *self.holder.borrow_mut() = Some(Rc::clone(guest));
        self.handovers.set(self.handovers.get().wrapping_add(1));
    }

    /// MSR `index` (one of [`UNSWITCHED_MSRS`]) of `guest`'s vCPU: the processor's when
    /// it holds them, else the saved copy.
    pub fn read_msr(&self, guest: &Rc<RefCell<Unswitched>>, index: u32) -> u64 {
        if self.holds(guest) {
            self.ops.read_msr(index)
        } else {
            guest.borrow().msr(index).unwrap_or(0)
        }
    }

    /// Write MSR `index` of `guest`'s vCPU (the processor's or the saved copy).
    pub fn write_msr(&self, guest: &Rc<RefCell<Unswitched>>, index: u32, value: u64) {
        if self.holds(guest) {
            self.ops.write_msr(index, value)
        } else {
            guest.borrow_mut().set_msr(index, value)
        }
    }

    /// DR`n` (0-3, else DR6) of `guest`'s vCPU.
    pub fn read_dr(&self, guest: &Rc<RefCell<Unswitched>>, n: u8) -> u64 {
        if self.holds(guest) {
            self.ops.read_dr(n)
        } else {
            guest.borrow().dr[usize::from(n.min(4))]
        }
    }

    /// Write DR`n` (0-3, else DR6) of `guest`'s vCPU.
    pub fn write_dr(&self, guest: &Rc<RefCell<Unswitched>>, n: u8, value: u64) {
        if self.holds(guest) {
            self.ops.write_dr(n, value)
        } else {
            guest.borrow_mut().dr[usize::from(n.min(4))] = value;
        }
    }

    /// The x87/SSE state of `guest`'s vCPU, as FXSAVE64 stores it (for one that does
    /// not hold the registers, the image saved when it last did, or its reset state).
    pub fn fxsave(&self, guest: &Rc<RefCell<Unswitched>>, area: &mut FxsaveArea) {
        if self.holds(guest) {
            self.ops.fxsave(area)
        } else {
            *area = guest.borrow().fpu;
        }
    }

    /// Load the x87/SSE state of `guest`'s vCPU (MXCSR checked against the processor's
    /// MXCSR_MASK by the caller); one that does not hold the registers gets it at its
    /// next claim.
    pub fn fxrstor(&self, guest: &Rc<RefCell<Unswitched>>, area: &FxsaveArea) {
        if self.holds(guest) {
            self.ops.fxrstor(area)
        } else {
            // FXSAVE stores the processor's MXCSR_MASK whatever FXRSTOR loaded: the copy
            // keeps the one it has (the processor's, from `Unswitched::new`), which the
            // next MXCSR check reads.
            let mut saved = guest.borrow_mut();
            let mask = saved.fpu.mxcsr_mask();
            saved.fpu = *area;
            saved.fpu.set_mxcsr_mask(mask);
        }
    }

    /// `guest`'s vCPU goes away: the processor no longer holds anything of it.
    pub fn release(&self, guest: &Rc<RefCell<Unswitched>>) {
        if self.holds(guest) {
            *self.holder.borrow_mut() = None;
        }
    }

    /// VMPTRLDs so far.
    pub fn vmptrlds(&self) -> u64 {
        self.vmptrlds.get()
    }

    /// Times the unswitched registers changed hands so far.
    pub fn handovers(&self) -> u64 {
        self.handovers.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    /// A processor that records the instructions and holds one set of registers.
    #[derive(Default)]
    struct Recorder {
        log: RefCell<Vec<(&'static str, u64)>>,
        held: RefCell<[u64; 6]>,
    }

    impl SwitchOps for Recorder {
        fn vmptrld(&self, phys: u64) -> Result<(), VmxError> {
            self.log.borrow_mut().push(("vmptrld", phys));
            Ok(())
        }
        fn read_msr(&self, index: u32) -> u64 {
            let i = UNSWITCHED_MSRS.iter().position(|&m| m == index).unwrap();
            let value = self.held.borrow()[i];
            if index == 0xc000_0082 {
                self.log.borrow_mut().push(("save", value));
            }
            value
        }
        fn write_msr(&self, index: u32, value: u64) {
            let i = UNSWITCHED_MSRS.iter().position(|&m| m == index).unwrap();
            self.held.borrow_mut()[i] = value;
            if index == 0xc000_0082 {
                self.log.borrow_mut().push(("load", value));
            }
        }
        fn read_dr(&self, _: u8) -> u64 {
            0
        }
        fn write_dr(&self, _: u8, _: u64) {}
        fn fxsave(&self, _: &mut FxsaveArea) {}
        fn fxrstor(&self, _: &FxsaveArea) {}
    }

    fn guest(lstar: u64) -> Rc<RefCell<Unswitched>> {
        let mut u = Unswitched::new(FxsaveArea::zeroed());
        u.set_msr(0xc000_0082, lstar);
        Rc::new(RefCell::new(u))
    }

    #[test]
    fn vmptrld_only_when_another_vmcs_is_current() {
        let cpu = LogicalCpu::new(Recorder::default(), true);
        assert_eq!(cpu.current(), NO_VMCS);
        for phys in [0x1000, 0x1000, 0x2000, 0x2000, 0x2000, 0x1000, 0x3000] {
            cpu.make_current(phys).unwrap();
            assert_eq!(cpu.current(), phys);
        }
        assert_eq!(
            *cpu.ops().log.borrow(),
            [
                ("vmptrld", 0x1000),
                ("vmptrld", 0x2000),
                ("vmptrld", 0x1000),
                ("vmptrld", 0x3000)
            ]
        );
        assert_eq!(cpu.vmptrlds(), 4);
        // VMCLEAR of a VMCS that is not current leaves the current one; of the current
        // one, none is current and the next access loads it again.
        cpu.cleared(0x1000);
        assert_eq!(cpu.current(), 0x3000);
        cpu.cleared(0x3000);
        assert_eq!(cpu.current(), NO_VMCS);
        cpu.make_current(0x3000).unwrap();
        assert_eq!(cpu.vmptrlds(), 5);
    }

    #[test]
    fn unswitched_registers_change_hands_with_the_vcpu_that_enters() {
        let cpu = LogicalCpu::new(Recorder::default(), false);
        let (a, b) = (guest(0xaaaa), guest(0xbbbb));
        cpu.claim(&a);
        assert!(cpu.holds(&a) && !cpu.holds(&b));
        assert_eq!(cpu.ops().held.borrow()[1], 0xaaaa);
        // A's guest changes LSTAR in the processor (WRMSR is not intercepted).
        cpu.ops().held.borrow_mut()[1] = 0xa1a1;
        cpu.claim(&a);
        cpu.claim(&b);
        assert_eq!(a.borrow().msr(0xc000_0082), Some(0xa1a1));
        assert_eq!(cpu.ops().held.borrow()[1], 0xbbbb);
        cpu.claim(&a);
        assert_eq!(cpu.ops().held.borrow()[1], 0xa1a1);
        assert_eq!(
            *cpu.ops().log.borrow(),
            [
                ("load", 0xaaaa),
                ("save", 0xa1a1),
                ("load", 0xbbbb),
                ("save", 0xbbbb),
                ("load", 0xa1a1)
            ]
        );
        assert_eq!(cpu.handovers(), 3);
        // Without TSC_AUX on the processor, its saved value is never touched.
        a.borrow_mut().set_msr(0xc000_0103, 7);
        cpu.claim(&b);
        assert_eq!(a.borrow().msr(0xc000_0103), Some(7));
        // A vCPU that goes away leaves nothing to save.
        cpu.release(&b);
        assert!(!cpu.holds(&b));
        cpu.claim(&a);
        assert_eq!(cpu.ops().log.borrow().last(), Some(&("load", 0xa1a1)));
    }

    #[test]
    fn a_vcpu_not_holding_the_registers_keeps_the_processors_mxcsr_mask() {
        // The copy starts with the processor's FXSAVE image (here a mask with DAZ); a
        // state loaded while another vCPU holds the registers (an FXSAVE image without
        // a mask, as a differential case's) must not turn it into the default 0xffbf,
        // or the next MXCSR check would refuse DAZ.
        let cpu = LogicalCpu::new(Recorder::default(), true);
        let mut processor = FxsaveArea::zeroed();
        processor.set_mxcsr_mask(0xffff);
        let g = Rc::new(RefCell::new(Unswitched::new(processor)));
        assert!(!cpu.holds(&g));
        let mut state = FxsaveArea::zeroed();
        state.set_mxcsr(0x1fc0);
        cpu.fxrstor(&g, &state);
        let mut back = FxsaveArea::zeroed();
        cpu.fxsave(&g, &mut back);
        assert_eq!(back.mxcsr(), 0x1fc0);
        assert_eq!(back.effective_mxcsr_mask(), 0xffff);
        assert!(state.check_mxcsr(back.effective_mxcsr_mask()).is_ok());
    }

    #[test]
    fn saved_msrs_are_found_by_index() {
        let mut u = Unswitched::new(FxsaveArea::zeroed());
        u.set_msr(0xc000_0102, 5);
        u.set_msr(0x10, 9);
        assert_eq!(u.msr(0xc000_0102), Some(5));
        assert_eq!(u.msr(0x10), None);
        assert_eq!(u.dr[4], 0xffff_0ff0);
    }
}

/// Two [`crate::VmxVcpu`]s on one stand-in processor: the generic vCPU code, the
/// handover of [`LogicalCpu`] and a processor that, like the hardware, has one current
/// VMCS, refuses VMLAUNCH of a launched VMCS and VMRESUME of a clear one, and holds one
/// set of unswitched registers.
#[cfg(all(test, target_arch = "x86_64"))]
mod vcpu_tests {
    use super::*;
    use crate::caps::fixtures::CORE_I7_SKYLAKE_X;
    use crate::caps::{InveptType, VmxCaps};
    use crate::controls::Controls;
    use crate::exits::Gprs;
    use crate::replay::{replay_phys, skylake_x_cpuid, ScriptedExit};
    use crate::vcpu::{VmxConfig, VmxProcessor, VmxVcpu};
    use crate::vmcs::{fields, Field, InMemoryVmcs, InstructionError, VmcsAccess};
    use alloc::collections::BTreeMap;
    use opsvisor_core::ops::{RunLimit, X86Ops};
    use opsvisor_core::{Exit, GuestMemory};

    const LSTAR: u32 = 0xc000_0082;

    /// The processor: its VMCSs by address with their launch states, the current one,
    /// and its unswitched registers.
    #[derive(Default)]
    struct Processor {
        vmcss: RefCell<BTreeMap<u64, (InMemoryVmcs, bool)>>,
        current: Cell<u64>,
        msrs: RefCell<[u64; 6]>,
        dr: RefCell<[u64; 5]>,
        fpu: RefCell<FxsaveArea>,
        /// What the guest running next writes to LSTAR (WRMSR does not exit).
        guest_lstar: Cell<Option<u64>>,
    }

    impl SwitchOps for Processor {
        fn vmptrld(&self, phys: u64) -> Result<(), VmxError> {
            if !self.vmcss.borrow().contains_key(&phys) {
                return Err(VmxError::FailValid(
                    InstructionError::VMPTRLD_INVALID_ADDRESS,
                ));
            }
            self.current.set(phys);
            Ok(())
        }
        fn read_msr(&self, index: u32) -> u64 {
            let i = UNSWITCHED_MSRS.iter().position(|&m| m == index).unwrap();
            self.msrs.borrow()[i]
        }
        fn write_msr(&self, index: u32, value: u64) {
            let i = UNSWITCHED_MSRS.iter().position(|&m| m == index).unwrap();
            self.msrs.borrow_mut()[i] = value;
        }
        fn read_dr(&self, n: u8) -> u64 {
            self.dr.borrow()[usize::from(n.min(4))]
        }
        fn write_dr(&self, n: u8, value: u64) {
            self.dr.borrow_mut()[usize::from(n.min(4))] = value;
        }
        fn fxsave(&self, area: &mut FxsaveArea) {
            *area = *self.fpu.borrow();
            area.set_mxcsr_mask(0xffff);
        }
        fn fxrstor(&self, area: &FxsaveArea) {
            *self.fpu.borrow_mut() = *area;
        }
    }

    /// One vCPU's VMCS on the processor, as [`crate::vmcs::HardwareVmcs`] is.
    struct Handle {
        phys: u64,
        cpu: Rc<LogicalCpu<Processor>>,
        guest: Rc<RefCell<Unswitched>>,
    }

    impl Handle {
        /// The processor's current VMCS (VMREAD and VMWRITE act on it).
        fn with_current<T>(&self, f: impl FnOnce(&mut InMemoryVmcs, &mut bool) -> T) -> T {
            let p = self.cpu.ops();
            let mut vmcss = p.vmcss.borrow_mut();
            let (vmcs, launched) = vmcss.get_mut(&p.current.get()).unwrap();
            f(vmcs, launched)
        }
    }

    impl VmcsAccess for Handle {
        fn read(&self, field: Field) -> Result<u64, VmxError> {
            self.cpu.make_current(self.phys)?;
            self.with_current(|vmcs, _| vmcs.read(field))
        }
        fn write(&mut self, field: Field, value: u64) -> Result<(), VmxError> {
            self.cpu.make_current(self.phys)?;
            self.with_current(|vmcs, _| vmcs.write(field, value))
        }
    }

    impl VmxProcessor for Handle {
        /// A CPUID exit at the guest's RIP, after the launch-state check.
        unsafe fn enter(
            &mut self,
            gprs: &mut Gprs,
            _cr2: &mut u64,
            launched: bool,
        ) -> Result<(), VmxError> {
            self.cpu.make_current(self.phys)?;
            self.cpu.claim(&self.guest);
            if let Some(value) = self.cpu.ops().guest_lstar.take() {
                self.cpu.ops().write_msr(LSTAR, value);
            }
            self.with_current(|vmcs, state| {
                match (launched, *state) {
                    (false, true) => {
                        return Err(VmxError::FailValid(InstructionError::VMLAUNCH_NON_CLEAR))
                    }
                    (true, false) => {
                        return Err(VmxError::FailValid(InstructionError::VMRESUME_NON_LAUNCHED))
                    }
                    _ => *state = true,
                }
                let rip = vmcs.read(fields::GUEST_RIP)?;
                ScriptedExit::cpuid(rip, 0, 0).record(vmcs, gprs)
            })
        }
        unsafe fn invept(&mut self, _: InveptType, _: u64) -> Result<(), VmxError> {
            Ok(())
        }
        unsafe fn read_msr(&self, index: u32) -> u64 {
            self.cpu.read_msr(&self.guest, index)
        }
        unsafe fn write_msr(&mut self, index: u32, value: u64) {
            self.cpu.write_msr(&self.guest, index, value)
        }
        fn tsc(&self) -> u64 {
            0
        }
        unsafe fn fxsave(&self, area: &mut FxsaveArea) {
            self.cpu.fxsave(&self.guest, area)
        }
        fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
            skylake_x_cpuid().leaf(leaf, subleaf).unwrap_or([0; 4])
        }
        unsafe fn read_dr(&self, n: u8) -> u64 {
            self.cpu.read_dr(&self.guest, n)
        }
        unsafe fn write_dr(&mut self, n: u8, value: u64) {
            self.cpu.write_dr(&self.guest, n, value)
        }
        unsafe fn fxrstor(&mut self, area: &FxsaveArea) {
            self.cpu.fxrstor(&self.guest, area)
        }
    }

    /// A vCPU whose VMCS is at `phys`, made as `VmxRoot::new_vcpu` makes one: the VMCS
    /// cleared (known to the processor, launch state clear), then set up.
    fn vcpu(cpu: &Rc<LogicalCpu<Processor>>, phys: u64, vpid: u16) -> VmxVcpu<Handle> {
        cpu.ops()
            .vmcss
            .borrow_mut()
            .insert(phys, (InMemoryVmcs::new(), false));
        let mut fpu = FxsaveArea::zeroed();
        fpu.set_mxcsr_mask(0xffff);
        let handle = Handle {
            phys,
            cpu: Rc::clone(cpu),
            guest: Rc::new(RefCell::new(Unswitched::new(fpu))),
        };
        let caps = VmxCaps::read(&CORE_I7_SKYLAKE_X).unwrap();
        let controls = Controls::compute(&caps).unwrap();
        let config = VmxConfig {
            to_phys: replay_phys,
            tsc_hz: 1_000_000_000,
        };
        let mut region = crate::page::Page::zeroed();
        region.0[0] = u64::from(caps.basic.revision_id());
        let mut v = VmxVcpu::assemble(handle, caps, controls, config, region, vpid);
        v.setup_for_replay().unwrap();
        v
    }

    const LIMIT: RunLimit = RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: 1000,
    };

    #[test]
    fn each_vcpu_has_its_own_vmcs_launch_state_vpid_and_registers() {
        let cpu = Rc::new(LogicalCpu::new(Processor::default(), true));
        let mut a = vcpu(&cpu, 0x10_000, 1);
        let mut b = vcpu(&cpu, 0x20_000, 2);
        // Guest state goes to each vCPU's own VMCS, whichever was current.
        a.set_rip(0x7000);
        b.set_rip(0x8000);
        a.set_gpr(opsvisor_core::ops::Gpr::Rsp, 0x7ff0);
        assert_eq!((a.rip(), b.rip()), (0x7000, 0x8000));
        assert_eq!(b.gpr(opsvisor_core::ops::Gpr::Rsp), 0);
        let vpid = |phys: u64| {
            cpu.ops().vmcss.borrow()[&phys]
                .0
                .read(fields::VIRTUAL_PROCESSOR_ID)
        };
        assert_eq!((vpid(0x10_000), vpid(0x20_000)), (Ok(1), Ok(2)));
        // PAUSE exits on a machine of several vCPUs (core asks), for that vCPU only.
        a.set_pause_exiting(true);
        let proc = |phys: u64| {
            cpu.ops().vmcss.borrow()[&phys]
                .0
                .read(fields::PRIMARY_PROC_BASED_VM_EXEC_CONTROLS)
                .unwrap()
        };
        let pause = u64::from(crate::controls::proc_based::PAUSE_EXITING);
        assert_eq!((proc(0x10_000) & pause, proc(0x20_000) & pause), (pause, 0));
        // The unswitched registers: each vCPU's saved copy until it first enters.
        assert!(a.set_msr(LSTAR, 0xa000));
        assert!(b.set_msr(LSTAR, 0xb000));
        let mut dr = a.debug_regs();
        dr.db[0] = 0xd0;
        a.set_debug_regs(&dr);
        let mut fpu = FxsaveArea::reset();
        fpu.set_fcw(0x27f);
        a.set_fpu_state(&fpu).unwrap();
        assert_eq!(cpu.handovers(), 0);

        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        let loads = cpu.vmptrlds();
        // Turns: A, B, A, B. The first entry of each VMCS is VMLAUNCH, the others
        // VMRESUME (the stand-in refuses either in the wrong launch state).
        for turn in 0..4 {
            let v = if turn % 2 == 0 { &mut a } else { &mut b };
            if turn == 2 {
                // A's guest writes LSTAR while it runs.
                cpu.ops().guest_lstar.set(Some(0xa111));
            }
            assert_eq!(v.run(&mut mem, &LIMIT), Exit::Cpuid, "turn {turn}");
            v.skip_emulated_instruction();
        }
        assert!(cpu
            .ops()
            .vmcss
            .borrow()
            .values()
            .all(|&(_, launched)| launched));
        assert_eq!((a.rip(), b.rip()), (0x7004, 0x8004));
        // A switch between vCPUs loads the other VMCS; a vCPU's own exits do not.
        assert!(cpu.vmptrlds() - loads >= 4, "{}", cpu.vmptrlds() - loads);
        assert_eq!(cpu.handovers(), 4);
        // B holds the registers: A's are its saved copy, with what its guest wrote.
        assert_eq!(a.get_msr(LSTAR), Some(0xa111));
        assert_eq!(b.get_msr(LSTAR), Some(0xb000));
        assert_eq!(cpu.ops().read_msr(LSTAR), 0xb000);
        assert_eq!(a.debug_regs().db[0], 0xd0);
        assert_eq!(b.debug_regs().db[0], 0);
        assert_eq!(a.fpu_state().unwrap().fcw(), 0x27f);
        assert_eq!(b.fpu_state().unwrap().fcw(), FxsaveArea::reset().fcw());
        // A third entry of A restores its registers in the processor.
        assert_eq!(a.run(&mut mem, &LIMIT), Exit::Cpuid);
        assert_eq!(cpu.ops().read_msr(LSTAR), 0xa111);
        assert_eq!(cpu.ops().read_dr(0), 0xd0);
        assert_eq!(cpu.ops().fpu.borrow().fcw(), 0x27f);
    }
}

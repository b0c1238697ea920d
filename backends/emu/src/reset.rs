//! Power-on and INIT state (SDM 3A 10.1, table 10-1).

use crate::cpu::{cr0, efer, sr, Cpu};
use opsvisor_core::ops::{DescriptorTable, ResetKind, Segment};

/// Processor signature left in EDX at reset (family 6, as CPUID leaf 1 reports).
pub const RESET_EDX: u64 = 0x0000_0600;

/// Put `c` in its reset state.
pub fn reset(c: &mut Cpu, kind: ResetKind) {
    c.gpr = [0; 17];
    c.gpr[2] = RESET_EDX;
    c.rip = 0xfff0;
    c.set_rflags(2);
    for s in 0..6 {
        c.seg[s] = Segment::real_mode(0, false);
    }
    c.seg[sr::CS as usize] = Segment {
        selector: 0xf000,
        base: 0xffff_0000,
        limit: 0xffff,
        attr: 0x9b,
    };
    c.seg[sr::LDTR as usize] = Segment {
        selector: 0,
        base: 0,
        limit: 0xffff,
        attr: 0x82,
    };
    c.seg[sr::TR as usize] = Segment {
        selector: 0,
        base: 0,
        limit: 0xffff,
        attr: 0x8b,
    };
    c.cr0 = 0x6000_0000 | cr0::ET;
    c.cr2 = 0;
    c.cr3 = 0;
    c.cr4 = 0;
    c.gdtr = DescriptorTable {
        base: 0,
        limit: 0xffff,
    };
    c.idtr = DescriptorTable {
        base: 0,
        limit: 0xffff,
    };
    c.dr = [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400];
    c.debugctl = 0;
    match kind {
        ResetKind::PowerOn => {
            // SDM 3A table 10-1: XCR0 1 and PKRU 0 at power-on, unchanged by INIT.
            c.xcr0 = 1;
            c.pkru = 0;
            c.efer = 0;
            c.star = 0;
            c.lstar = 0;
            c.cstar = 0;
            c.sfmask = 0;
            c.kernel_gs_base = 0;
            c.tsc_aux = 0;
            c.sysenter_cs = 0;
            c.sysenter_esp = 0;
            c.sysenter_eip = 0;
            c.pat = 0x0007_0406_0007_0406;
            // SDM 3A table 10-1: FCW 0040H, FSW 0, FTW 5555H (every register holds
            // +0, tagged valid), MXCSR 1F80H. INIT leaves the FPU state alone.
            c.fpu = crate::fpu::Fpu::default();
            c.fpu.x87.fcw = 0x0040;
            c.fpu.x87.ftw = 0xff;
        }
        ResetKind::Init => {
            // Paging is off after INIT, so long mode cannot stay active.
            c.efer &= !efer::LMA;
        }
    }
    c.shadow = false;
    c.nmi_blocked = false;
    c.intercept = None;
    c.ins_store = None;
    c.mmio = Default::default();
    c.tlb.flush(true);
    c.update_mode();
}

//! Guest state in the VMCB: segment registers (the VMCB's 12-bit attribute word against
//! core's access-rights layout) and the fields every VMRUN needs, written through
//! [`VmcbAccess`] so they are tested with the in-memory VMCB.
//!
//! The attribute word holds descriptor bits 47:40 (type, S, DPL, P) in its bits 7:0 and
//! bits 55:52 (AVL, L, D/B, G) in its bits 11:8 (APM 2 15.5.1); core's layout has the
//! latter at bits 15:12. SVM has no "unusable" bit: as in KVM, an unusable segment is
//! stored not present, and a segment that is not present reads back unusable.
//!
//! TR goes into the VMCB with its type available (9 for a 32/64-bit TSS, 1 for a 16-bit
//! one) and reads back busy, as KVM reads it (`svm_get_segment`): VMRUN does not look at
//! the cached type, QEMU's TCG does when it takes the ring-0 stack from the TSS for an
//! interrupt at CPL 3, and aborts ("invalid tss type") on a busy one, which its own LTR
//! never caches.

use crate::vmcb::{fields, VmcbAccess, VmcbError};
use opsvisor_core::arch::{DR6_DEFAULT, DR7_DEFAULT, PAT_DEFAULT};
use opsvisor_core::ops::{SegReg, Segment};

/// Core's access rights as a VMCB attribute word.
pub fn to_vmcb_attrib(attr: u32) -> u16 {
    let low = attr & 0xff;
    let high = (attr >> 4) & 0xf00;
    let attrib = (low | high) as u16;
    if attr & Segment::UNUSABLE != 0 {
        attrib & !(Segment::P as u16)
    } else {
        attrib
    }
}

/// A VMCB attribute word as core's access rights.
pub fn from_vmcb_attrib(attrib: u16) -> u32 {
    let attrib = u32::from(attrib);
    let attr = (attrib & 0xff) | ((attrib & 0xf00) << 4);
    if attr & Segment::P == 0 {
        attr | Segment::UNUSABLE
    } else {
        attr
    }
}

/// Load a segment register into the state save area. SS also sets the VMCB's CPL
/// (VMRUN takes the privilege level from there, not from SS.DPL).
pub fn write_segment<V: VmcbAccess>(
    vmcb: &mut V,
    seg: SegReg,
    value: &Segment,
) -> Result<(), VmcbError> {
    let f = fields::segment(seg);
    let attr = if seg == SegReg::Tr {
        value.attr & !TSS_BUSY
    } else {
        value.attr
    };
    vmcb.write(f.selector, value.selector.into())?;
    vmcb.write(f.attrib, to_vmcb_attrib(attr).into())?;
    vmcb.write(f.limit, value.limit.into())?;
    vmcb.write(f.base, value.base)?;
    if seg == SegReg::Ss {
        vmcb.write(fields::CPL, value.dpl().into())?;
    }
    Ok(())
}

/// Read a segment register from the state save area.
pub fn read_segment<V: VmcbAccess>(vmcb: &V, seg: SegReg) -> Segment {
    let f = fields::segment(seg);
    let attr = from_vmcb_attrib(vmcb.read(f.attrib) as u16);
    Segment {
        selector: vmcb.read(f.selector) as u16,
        base: vmcb.read(f.base),
        limit: vmcb.read(f.limit) as u32,
        attr: if seg == SegReg::Tr {
            attr | TSS_BUSY
        } else {
            attr
        },
    }
}

/// The busy bit of a TSS descriptor's type (bit 1).
const TSS_BUSY: u32 = 1 << 1;

/// Guest-state fields that are not registers core sets: DR6, DR7, G_PAT and DBGCTL at
/// their reset values, no interrupt shadow.
pub fn write_guest_defaults<V: VmcbAccess>(vmcb: &mut V) -> Result<(), VmcbError> {
    vmcb.write(fields::DR6, DR6_DEFAULT)?;
    vmcb.write(fields::DR7, DR7_DEFAULT)?;
    vmcb.write(fields::G_PAT, PAT_DEFAULT)?;
    vmcb.write(fields::DBGCTL, 0)?;
    vmcb.write(fields::INTERRUPT_SHADOW, 0)?;
    vmcb.write(fields::EVENTINJ, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmcb::InMemoryVmcb;

    #[test]
    fn attributes_convert_both_ways() {
        // 64-bit code: type b, S, P, L, G -> 0xa9b in the VMCB.
        assert_eq!(to_vmcb_attrib(Segment::CODE64), 0xa9b);
        assert_eq!(from_vmcb_attrib(0xa9b), Segment::CODE64);
        // Flat 32-bit data: G, D/B -> 0xc93.
        assert_eq!(to_vmcb_attrib(Segment::DATA), 0xc93);
        assert_eq!(from_vmcb_attrib(0xc93), Segment::DATA);
        // A busy TSS, an LDT.
        assert_eq!(from_vmcb_attrib(to_vmcb_attrib(Segment::TSS_BUSY)), 0x8b);
        // Unusable is stored not present and reads back unusable.
        assert_eq!(to_vmcb_attrib(Segment::UNUSABLE | Segment::DATA), 0xc13);
        assert_eq!(
            from_vmcb_attrib(0xc13),
            Segment::UNUSABLE | (Segment::DATA & !Segment::P)
        );
        assert_eq!(from_vmcb_attrib(0), Segment::UNUSABLE);
        // The reserved bits 11:8 of core's layout never reach the VMCB.
        assert_eq!(to_vmcb_attrib(0xf00 | 0x93), 0x93);
    }

    #[test]
    fn segments_round_trip_and_ss_sets_the_cpl() {
        let mut vmcb = InMemoryVmcb::new();
        for (i, seg) in SegReg::ALL.into_iter().enumerate() {
            let value = Segment {
                selector: 8 * i as u16,
                base: 0x1000 * i as u64,
                limit: 0xffff_ffff,
                attr: Segment::CODE64,
            };
            write_segment(&mut vmcb, seg, &value).unwrap();
            assert_eq!(read_segment(&vmcb, seg), value, "{seg:?}");
        }
        assert_eq!(vmcb.read(fields::CPL), 0);
        // A DPL-3 stack segment puts the guest at CPL 3.
        let user_ss = Segment::flat(0x2b, Segment::DATA | (3 << 5));
        write_segment(&mut vmcb, SegReg::Ss, &user_ss).unwrap();
        assert_eq!(vmcb.read(fields::CPL), 3);
        assert_eq!(vmcb.read(fields::SS.attrib), 0xcf3);
        assert_eq!(read_segment(&vmcb, SegReg::Ss), user_ss);
    }

    #[test]
    fn tr_is_stored_available_and_read_busy() {
        let mut vmcb = InMemoryVmcb::new();
        let tr = Segment {
            selector: 0x20,
            base: 0x4000,
            limit: 0x67,
            attr: Segment::TSS_BUSY,
        };
        write_segment(&mut vmcb, SegReg::Tr, &tr).unwrap();
        assert_eq!(vmcb.read(fields::TR.attrib), 0x89);
        assert_eq!(read_segment(&vmcb, SegReg::Tr), tr);
        // A 16-bit TSS, and what a processor's VMSAVE leaves after the guest's LTR.
        vmcb.write(fields::TR.attrib, 0x81).unwrap();
        assert_eq!(read_segment(&vmcb, SegReg::Tr).attr, 0x83);
        vmcb.write(fields::TR.attrib, 0x8b).unwrap();
        assert_eq!(read_segment(&vmcb, SegReg::Tr).attr, 0x8b);
        // Other segments are stored as they are.
        let ds = Segment::flat(0x10, Segment::DATA);
        write_segment(&mut vmcb, SegReg::Ds, &ds).unwrap();
        assert_eq!(read_segment(&vmcb, SegReg::Ds), ds);
    }

    #[test]
    fn defaults() {
        let mut vmcb = InMemoryVmcb::new();
        write_guest_defaults(&mut vmcb).unwrap();
        assert_eq!(vmcb.read(fields::DR6), 0xffff_0ff0);
        assert_eq!(vmcb.read(fields::DR7), 0x400);
        assert_eq!(vmcb.read(fields::G_PAT), PAT_DEFAULT);
    }
}

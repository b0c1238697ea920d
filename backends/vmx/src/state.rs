//! Guest state in the VMCS: segment registers and the fields every entry needs, written
//! through [`VmcsAccess`] so they are tested with the in-memory VMCS.

use crate::vmcs::{fields, Field, VmcsAccess, VmxError};
use opsvisor_core::ops::{SegReg, Segment};

/// The selector, base, limit and access-rights fields of a segment register.
pub fn segment_fields(seg: SegReg) -> [Field; 4] {
    use fields::*;
    match seg {
        SegReg::Es => [
            GUEST_ES_SELECTOR,
            GUEST_ES_BASE,
            GUEST_ES_LIMIT,
            GUEST_ES_ACCESS_RIGHTS,
        ],
        SegReg::Cs => [
            GUEST_CS_SELECTOR,
            GUEST_CS_BASE,
            GUEST_CS_LIMIT,
            GUEST_CS_ACCESS_RIGHTS,
        ],
        SegReg::Ss => [
            GUEST_SS_SELECTOR,
            GUEST_SS_BASE,
            GUEST_SS_LIMIT,
            GUEST_SS_ACCESS_RIGHTS,
        ],
        SegReg::Ds => [
            GUEST_DS_SELECTOR,
            GUEST_DS_BASE,
            GUEST_DS_LIMIT,
            GUEST_DS_ACCESS_RIGHTS,
        ],
        SegReg::Fs => [
            GUEST_FS_SELECTOR,
            GUEST_FS_BASE,
            GUEST_FS_LIMIT,
            GUEST_FS_ACCESS_RIGHTS,
        ],
        SegReg::Gs => [
            GUEST_GS_SELECTOR,
            GUEST_GS_BASE,
            GUEST_GS_LIMIT,
            GUEST_GS_ACCESS_RIGHTS,
        ],
        SegReg::Ldtr => [
            GUEST_LDTR_SELECTOR,
            GUEST_LDTR_BASE,
            GUEST_LDTR_LIMIT,
            GUEST_LDTR_ACCESS_RIGHTS,
        ],
        SegReg::Tr => [
            GUEST_TR_SELECTOR,
            GUEST_TR_BASE,
            GUEST_TR_LIMIT,
            GUEST_TR_ACCESS_RIGHTS,
        ],
    }
}

/// The access-rights bits the VMCS keeps (SDM 3C 25.4.1): type, S, DPL, P, AVL, L,
/// D/B, G and unusable; bits 11:8 and 31:17 are reserved.
pub const ACCESS_RIGHTS_MASK: u32 = 0x1_f0ff;

/// Load a segment register into the guest-state area.
pub fn write_segment<V: VmcsAccess>(
    vmcs: &mut V,
    seg: SegReg,
    value: &Segment,
) -> Result<(), VmxError> {
    let [sel, base, limit, ar] = segment_fields(seg);
    vmcs.write(sel, value.selector.into())?;
    vmcs.write(base, value.base)?;
    vmcs.write(limit, value.limit.into())?;
    vmcs.write(ar, (value.attr & ACCESS_RIGHTS_MASK).into())
}

/// Read a segment register from the guest-state area.
pub fn read_segment<V: VmcsAccess>(vmcs: &V, seg: SegReg) -> Result<Segment, VmxError> {
    let [sel, base, limit, ar] = segment_fields(seg);
    Ok(Segment {
        selector: vmcs.read(sel)? as u16,
        base: vmcs.read(base)?,
        limit: vmcs.read(limit)? as u32,
        attr: vmcs.read(ar)? as u32 & ACCESS_RIGHTS_MASK,
    })
}

pub use opsvisor_core::arch::{DR7_DEFAULT, PAT_DEFAULT};

/// Guest-state fields that are not architectural registers core sets: the VMCS link
/// pointer (none), DR7, DEBUGCTL, PAT, the activity and interruptibility state, pending
/// debug exceptions.
pub fn write_guest_defaults<V: VmcsAccess>(vmcs: &mut V) -> Result<(), VmxError> {
    use fields::*;
    vmcs.write(VMCS_LINK_POINTER, u64::MAX)?;
    vmcs.write(GUEST_DR7, DR7_DEFAULT)?;
    vmcs.write(GUEST_IA32_DEBUGCTL, 0)?;
    vmcs.write(GUEST_IA32_PAT, PAT_DEFAULT)?;
    vmcs.write(GUEST_ACTIVITY_STATE, 0)?;
    vmcs.write(GUEST_INTERRUPTIBILITY_STATE, 0)?;
    vmcs.write(GUEST_PENDING_DEBUG_EXCEPTIONS, 0)?;
    vmcs.write(GUEST_IA32_SYSENTER_CS, 0)?;
    vmcs.write(GUEST_IA32_SYSENTER_ESP, 0)?;
    vmcs.write(GUEST_IA32_SYSENTER_EIP, 0)
}

pub use opsvisor_core::arch::ResetState;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmcs::InMemoryVmcs;

    #[test]
    fn segments_round_trip() {
        let mut vmcs = InMemoryVmcs::new();
        for (i, seg) in SegReg::ALL.into_iter().enumerate() {
            let value = Segment {
                selector: 8 * i as u16,
                base: 0x1000 * i as u64,
                limit: 0xffff_ffff,
                attr: Segment::CODE64 | if i == 7 { Segment::UNUSABLE } else { 0 },
            };
            write_segment(&mut vmcs, seg, &value).unwrap();
        }
        for (i, seg) in SegReg::ALL.into_iter().enumerate() {
            let got = read_segment(&vmcs, seg).unwrap();
            assert_eq!(got.selector, 8 * i as u16);
            assert_eq!(got.base, 0x1000 * i as u64);
            assert_eq!(got.attr & Segment::UNUSABLE != 0, i == 7);
        }
        // Reserved access-rights bits never reach the VMCS.
        write_segment(
            &mut vmcs,
            SegReg::Ds,
            &Segment {
                attr: 0xffff_ffff,
                ..Segment::default()
            },
        )
        .unwrap();
        assert_eq!(
            vmcs.read(fields::GUEST_DS_ACCESS_RIGHTS),
            Ok(u64::from(ACCESS_RIGHTS_MASK))
        );
    }

    #[test]
    fn defaults_have_no_link_pointer() {
        let mut vmcs = InMemoryVmcs::new();
        write_guest_defaults(&mut vmcs).unwrap();
        assert_eq!(vmcs.read(fields::VMCS_LINK_POINTER), Ok(u64::MAX));
        assert_eq!(vmcs.read(fields::GUEST_DR7), Ok(0x400));
        assert_eq!(vmcs.read(fields::GUEST_IA32_PAT), Ok(PAT_DEFAULT));
        assert_eq!(ResetState::segment(SegReg::Cs).base, 0xffff_0000);
    }
}

//! Event injection (SDM 3C 25.8.3, 27.6) and re-injection of an event whose delivery
//! a VM exit interrupted (SDM 3C 28.2.4, 29.2.4 of newer editions: "Information for VM
//! Exits During Event Delivery").
//!
//! The VM-entry interruption-information field, the VM-exit interruption information
//! and the IDT-vectoring information share one layout, [`InterruptionInfo`]: vector in
//! bits 7:0, type in bits 10:8, error-code bit 11, bit 12 "NMI unblocking due to IRET"
//! (exit information only), valid bit 31.

use crate::exits::{reason, DecodeError};
use crate::vmcs::{fields, Field, VmcsAccess, VmxError};
use opsvisor_core::ops::Event;

/// The interruption type (bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum InterruptionType {
    /// External interrupt.
    ExternalInterrupt = 0,
    /// Non-maskable interrupt.
    Nmi = 2,
    /// Hardware exception (every exception but #BP/#OF from INT3/INTO and #DB from INT1).
    HardwareException = 3,
    /// Software interrupt (INT n).
    SoftwareInterrupt = 4,
    /// Privileged software exception (INT1).
    PrivilegedSoftwareException = 5,
    /// Software exception (INT3, INTO).
    SoftwareException = 6,
    /// Other event (MTF on entry).
    OtherEvent = 7,
}

impl InterruptionType {
    /// The type with encoding `bits` (0..8); `None` for the reserved type 1.
    pub fn from_bits(bits: u32) -> Option<Self> {
        Some(match bits {
            0 => Self::ExternalInterrupt,
            2 => Self::Nmi,
            3 => Self::HardwareException,
            4 => Self::SoftwareInterrupt,
            5 => Self::PrivilegedSoftwareException,
            6 => Self::SoftwareException,
            7 => Self::OtherEvent,
            _ => return None,
        })
    }

    /// Whether delivery is caused by an instruction, so that re-injection needs its
    /// length (SDM 3C 27.6.1.1).
    pub fn is_software(self) -> bool {
        matches!(
            self,
            Self::SoftwareInterrupt | Self::PrivilegedSoftwareException | Self::SoftwareException
        )
    }
}

/// An interruption-information word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptionInfo(pub u32);

impl InterruptionInfo {
    /// Valid bit.
    pub const VALID: u32 = 1 << 31;
    /// Deliver-error-code / error-code-valid bit.
    pub const ERROR_CODE: u32 = 1 << 11;
    /// NMI unblocking due to IRET (exit information only).
    pub const NMI_UNBLOCKING: u32 = 1 << 12;

    /// A valid word for `vector` of type `kind`.
    pub fn new(vector: u8, kind: InterruptionType, error_code: bool) -> Self {
        let mut info = Self::VALID | (u32::from(kind as u8) << 8) | u32::from(vector);
        if error_code {
            info |= Self::ERROR_CODE;
        }
        InterruptionInfo(info)
    }

    /// Bit 31.
    pub fn valid(self) -> bool {
        self.0 & Self::VALID != 0
    }
    /// Bits 7:0.
    pub fn vector(self) -> u8 {
        (self.0 & 0xff) as u8
    }
    /// Bits 10:8; `None` for the reserved type.
    pub fn kind(self) -> Option<InterruptionType> {
        InterruptionType::from_bits((self.0 >> 8) & 7)
    }
    /// Bit 11.
    pub fn has_error_code(self) -> bool {
        self.0 & Self::ERROR_CODE != 0
    }
    /// Bit 12.
    pub fn nmi_unblocking(self) -> bool {
        self.0 & Self::NMI_UNBLOCKING != 0
    }
}

/// Guest interruptibility state, bit 3: blocking by NMI.
pub const BLOCKING_BY_NMI: u64 = 1 << 3;

/// Whether exception `vector` pushes an error code in protected mode: #DF, #TS, #NP,
/// #SS, #GP, #PF, #AC and #CP (the vectors for which VM entry requires the
/// deliver-error-code bit, SDM 3C 27.2.1.3).
pub fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21)
}

/// Why an event cannot be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectError {
    /// An exception vector above 31, or 2 (NMI is its own event type).
    InvalidExceptionVector(u8),
    /// The error code does not match the vector in protected mode.
    ErrorCodeMismatch {
        /// The vector.
        vector: u8,
        /// Whether an error code was given.
        given: bool,
    },
}

/// The three VM-entry fields that inject one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryEvent {
    /// VM-entry interruption information.
    pub info: InterruptionInfo,
    /// VM-entry exception error code (written only when `info` delivers one).
    pub error_code: u32,
    /// VM-entry instruction length (written only for software types).
    pub instruction_len: u32,
}

impl EntryEvent {
    /// Encode one of core's events. `protected_mode` is the guest's CR0.PE at entry:
    /// in real mode (unrestricted guest) exceptions push no error code, and VM entry
    /// requires the deliver-error-code bit clear. `any_error_code` is IA32_VMX_BASIC bit
    /// 56, under which the error code need not match the vector.
    pub fn from_event(
        event: Event,
        protected_mode: bool,
        any_error_code: bool,
    ) -> Result<EntryEvent, InjectError> {
        let info = match event {
            Event::ExternalInterrupt(vector) => {
                InterruptionInfo::new(vector, InterruptionType::ExternalInterrupt, false)
            }
            Event::Nmi => InterruptionInfo::new(2, InterruptionType::Nmi, false),
            Event::Exception { vector, error_code } => {
                if vector > 31 || vector == 2 {
                    return Err(InjectError::InvalidExceptionVector(vector));
                }
                let deliver = protected_mode && error_code.is_some();
                if protected_mode
                    && !any_error_code
                    && error_code.is_some() != exception_has_error_code(vector)
                {
                    return Err(InjectError::ErrorCodeMismatch {
                        vector,
                        given: error_code.is_some(),
                    });
                }
                let info =
                    InterruptionInfo::new(vector, InterruptionType::HardwareException, deliver);
                return Ok(EntryEvent {
                    info,
                    error_code: if deliver { error_code.unwrap_or(0) } else { 0 },
                    instruction_len: 0,
                });
            }
        };
        Ok(EntryEvent {
            info,
            error_code: 0,
            instruction_len: 0,
        })
    }

    /// Write the event into the VM-entry fields.
    pub fn write<V: VmcsAccess>(&self, vmcs: &mut V) -> Result<(), VmxError> {
        if self.info.has_error_code() {
            vmcs.write(
                fields::VM_ENTRY_EXCEPTION_ERROR_CODE,
                self.error_code.into(),
            )?;
        }
        if self.info.kind().is_some_and(InterruptionType::is_software) {
            vmcs.write(
                fields::VM_ENTRY_INSTRUCTION_LEN,
                self.instruction_len.into(),
            )?;
        }
        vmcs.write(fields::VM_ENTRY_INTR_INFO, self.info.0.into())
    }
}

/// An event whose delivery was interrupted by the VM exit (valid IDT-vectoring
/// information): it must be delivered again on the next entry, before anything new.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectoringEvent {
    /// The IDT-vectoring information (bit 12 and the reserved bits cleared).
    pub info: InterruptionInfo,
    /// The IDT-vectoring error code, when bit 11 says there is one.
    pub error_code: Option<u32>,
    /// The VM-exit instruction length, for the software types.
    pub instruction_len: u32,
}

fn read(vmcs: &impl VmcsAccess, field: Field) -> Result<u64, DecodeError> {
    vmcs.read(field)
        .map_err(|error| DecodeError::Vmcs { field, error })
}

impl VectoringEvent {
    /// Read the IDT-vectoring information after an exit; `None` when no delivery was
    /// interrupted.
    pub fn read<V: VmcsAccess>(vmcs: &V) -> Result<Option<VectoringEvent>, DecodeError> {
        // The field is 32 bits wide.
        let raw = read(vmcs, fields::IDT_VECTORING_INFO)? as u32;
        let info = InterruptionInfo(raw);
        if !info.valid() {
            return Ok(None);
        }
        let invalid = DecodeError::InvalidInterruptionInfo {
            field: fields::IDT_VECTORING_INFO,
            info: raw,
        };
        let kind = info.kind().ok_or(invalid)?;
        // Only events that go through the IDT can be interrupted; NMI is vector 2;
        // exceptions are vectors 0-31.
        let consistent = match kind {
            InterruptionType::OtherEvent => false,
            InterruptionType::Nmi => info.vector() == 2,
            InterruptionType::HardwareException
            | InterruptionType::PrivilegedSoftwareException
            | InterruptionType::SoftwareException => info.vector() < 32,
            InterruptionType::ExternalInterrupt | InterruptionType::SoftwareInterrupt => true,
        };
        if !consistent || (info.has_error_code() && kind != InterruptionType::HardwareException) {
            return Err(invalid);
        }
        let error_code = if info.has_error_code() {
            Some(read(vmcs, fields::IDT_VECTORING_ERROR_CODE)? as u32)
        } else {
            None
        };
        let instruction_len = if kind.is_software() {
            read(vmcs, fields::VM_EXIT_INSTRUCTION_LEN)? as u32
        } else {
            0
        };
        Ok(Some(VectoringEvent {
            // Bit 12 is undefined in IDT-vectoring information and reserved (must be
            // 0) in the VM-entry field; bits 30:13 are reserved in both.
            info: InterruptionInfo(raw & (InterruptionInfo::VALID | 0xfff)),
            error_code,
            instruction_len,
        }))
    }

    /// The entry fields that deliver this event again.
    pub fn reinjection(&self) -> EntryEvent {
        EntryEvent {
            info: self.info,
            error_code: self.error_code.unwrap_or(0),
            instruction_len: self.instruction_len,
        }
    }

    /// The event as core sees it, for the types core can queue itself (external
    /// interrupts, NMIs, hardware exceptions); `None` for the software types, which
    /// only the backend can re-inject (they need the instruction length).
    pub fn to_core_event(&self) -> Option<Event> {
        match self.info.kind()? {
            InterruptionType::ExternalInterrupt => {
                Some(Event::ExternalInterrupt(self.info.vector()))
            }
            InterruptionType::Nmi => Some(Event::Nmi),
            InterruptionType::HardwareException => Some(Event::Exception {
                vector: self.info.vector(),
                error_code: self.error_code,
            }),
            _ => None,
        }
    }

    /// Arrange for the event to be delivered on the next entry: write the VM-entry
    /// fields and, for an NMI, clear blocking by NMI in the guest interruptibility
    /// state, which VM entry requires when injecting an NMI (SDM 3C 27.3.1.5) and which
    /// the interrupted delivery may have left set.
    pub fn reinject<V: VmcsAccess>(&self, vmcs: &mut V) -> Result<(), VmxError> {
        if self.info.kind() == Some(InterruptionType::Nmi) {
            let state = vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE)?;
            vmcs.write(
                fields::GUEST_INTERRUPTIBILITY_STATE,
                state & !BLOCKING_BY_NMI,
            )?;
        }
        self.reinjection().write(vmcs)
    }
}

/// Whether the exit with basic reason `basic` happened in a guest IRET that unblocked
/// NMIs before faulting (SDM 3C 28.2.3, "NMI unblocking due to IRET"): exception exits
/// report it in bit 12 of the exit interruption information, EPT violations and
/// page-modification-log-full exits in bit 12 of the exit qualification. With virtual
/// NMIs, the backend must then set blocking by NMI again before re-entering
/// ([`restore_nmi_blocking`]), unless the exit interrupted an event delivery.
pub fn nmi_unblocked_by_iret<V: VmcsAccess>(vmcs: &V, basic: u16) -> Result<bool, DecodeError> {
    let bit12 = |field| read(vmcs, field).map(|v| v & (1 << 12) != 0);
    match basic {
        reason::EXCEPTION_OR_NMI => {
            let info = InterruptionInfo(read(vmcs, fields::VM_EXIT_INTR_INFO)? as u32);
            Ok(info.valid() && info.nmi_unblocking())
        }
        reason::EPT_VIOLATION | reason::PML_FULL => bit12(fields::EXIT_QUALIFICATION),
        _ => Ok(false),
    }
}

/// Set blocking by NMI in the guest interruptibility state (see
/// [`nmi_unblocked_by_iret`]).
pub fn restore_nmi_blocking<V: VmcsAccess>(vmcs: &mut V) -> Result<(), VmxError> {
    let state = vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE)?;
    vmcs.write(
        fields::GUEST_INTERRUPTIBILITY_STATE,
        state | BLOCKING_BY_NMI,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmcs::{InMemoryVmcs, VmcsAccess};

    fn entry(event: Event, pe: bool) -> Result<EntryEvent, InjectError> {
        EntryEvent::from_event(event, pe, false)
    }

    #[test]
    fn external_interrupt_encoding() {
        let e = entry(Event::ExternalInterrupt(0x30), true).unwrap();
        assert_eq!(e.info.0, 0x8000_0030);
        let e = entry(Event::ExternalInterrupt(0xff), false).unwrap();
        assert_eq!(e.info.0, 0x8000_00ff);
    }

    #[test]
    fn nmi_encoding() {
        assert_eq!(entry(Event::Nmi, true).unwrap().info.0, 0x8000_0202);
    }

    #[test]
    fn hardware_exception_encodings() {
        let gp = Event::Exception {
            vector: 13,
            error_code: Some(0x18),
        };
        let e = entry(gp, true).unwrap();
        assert_eq!(e.info.0, 0x8000_0b0d);
        assert_eq!(e.error_code, 0x18);
        let ud = Event::Exception {
            vector: 6,
            error_code: None,
        };
        assert_eq!(entry(ud, true).unwrap().info.0, 0x8000_0306);
        // #BP from core is a hardware exception (no instruction length).
        let bp = Event::Exception {
            vector: 3,
            error_code: None,
        };
        assert_eq!(entry(bp, true).unwrap().info.0, 0x8000_0303);
    }

    #[test]
    fn real_mode_exceptions_drop_the_error_code() {
        let gp = Event::Exception {
            vector: 13,
            error_code: Some(0),
        };
        let e = entry(gp, false).unwrap();
        assert_eq!(e.info.0, 0x8000_030d);
        assert!(!e.info.has_error_code());
    }

    #[test]
    fn inconsistent_exceptions_are_refused() {
        let ud_with_code = Event::Exception {
            vector: 6,
            error_code: Some(0),
        };
        assert_eq!(
            entry(ud_with_code, true),
            Err(InjectError::ErrorCodeMismatch {
                vector: 6,
                given: true
            })
        );
        let pf_without = Event::Exception {
            vector: 14,
            error_code: None,
        };
        assert_eq!(
            entry(pf_without, true),
            Err(InjectError::ErrorCodeMismatch {
                vector: 14,
                given: false
            })
        );
        // IA32_VMX_BASIC bit 56 lifts the rule.
        let e = EntryEvent::from_event(ud_with_code, true, true).unwrap();
        assert_eq!(e.info.0, 0x8000_0b06);
        for vector in [2, 32, 255] {
            let bad = Event::Exception {
                vector,
                error_code: None,
            };
            assert_eq!(
                entry(bad, true),
                Err(InjectError::InvalidExceptionVector(vector))
            );
        }
    }

    #[test]
    fn entry_event_is_written() {
        let mut vmcs = InMemoryVmcs::new();
        let e = entry(
            Event::Exception {
                vector: 14,
                error_code: Some(2),
            },
            true,
        )
        .unwrap();
        e.write(&mut vmcs).unwrap();
        assert_eq!(vmcs.read(fields::VM_ENTRY_INTR_INFO), Ok(0x8000_0b0e));
        assert_eq!(vmcs.read(fields::VM_ENTRY_EXCEPTION_ERROR_CODE), Ok(2));
        assert_eq!(vmcs.read(fields::VM_ENTRY_INSTRUCTION_LEN), Ok(0));
    }

    fn vectoring(pairs: &[(Field, u64)]) -> Result<Option<VectoringEvent>, DecodeError> {
        let mut vmcs = InMemoryVmcs::new();
        vmcs.script(pairs).unwrap();
        VectoringEvent::read(&vmcs)
    }

    #[test]
    fn no_vectoring_event_when_invalid() {
        assert_eq!(
            vectoring(&[(fields::IDT_VECTORING_INFO, 0x0000_0b0e)]),
            Ok(None)
        );
    }

    #[test]
    fn page_fault_during_delivery_is_reinjected_with_its_error_code() {
        let mut vmcs = InMemoryVmcs::new();
        vmcs.script(&[
            // #PF with error code, bit 12 (undefined) set by the processor.
            (fields::IDT_VECTORING_INFO, 0x8000_1b0e),
            (fields::IDT_VECTORING_ERROR_CODE, 0x6),
            (fields::VM_EXIT_INSTRUCTION_LEN, 3),
        ])
        .unwrap();
        let ev = VectoringEvent::read(&vmcs).unwrap().unwrap();
        assert_eq!(ev.info.0, 0x8000_0b0e);
        assert_eq!(ev.error_code, Some(6));
        assert_eq!(ev.instruction_len, 0);
        assert_eq!(
            ev.to_core_event(),
            Some(Event::Exception {
                vector: 14,
                error_code: Some(6)
            })
        );
        ev.reinject(&mut vmcs).unwrap();
        assert_eq!(vmcs.read(fields::VM_ENTRY_INTR_INFO), Ok(0x8000_0b0e));
        assert_eq!(vmcs.read(fields::VM_ENTRY_EXCEPTION_ERROR_CODE), Ok(6));
    }

    #[test]
    fn software_interrupt_reinjection_carries_the_instruction_length() {
        let mut vmcs = InMemoryVmcs::new();
        vmcs.script(&[
            (fields::IDT_VECTORING_INFO, 0x8000_0480),
            (fields::VM_EXIT_INSTRUCTION_LEN, 2),
        ])
        .unwrap();
        let ev = VectoringEvent::read(&vmcs).unwrap().unwrap();
        assert_eq!(ev.info.kind(), Some(InterruptionType::SoftwareInterrupt));
        assert_eq!(ev.instruction_len, 2);
        assert_eq!(ev.to_core_event(), None);
        ev.reinject(&mut vmcs).unwrap();
        assert_eq!(vmcs.read(fields::VM_ENTRY_INTR_INFO), Ok(0x8000_0480));
        assert_eq!(vmcs.read(fields::VM_ENTRY_INSTRUCTION_LEN), Ok(2));
    }

    #[test]
    fn nmi_reinjection_clears_blocking_by_nmi() {
        let mut vmcs = InMemoryVmcs::new();
        vmcs.write(fields::GUEST_INTERRUPTIBILITY_STATE, BLOCKING_BY_NMI | 1)
            .unwrap();
        vmcs.script(&[(fields::IDT_VECTORING_INFO, 0x8000_0202)])
            .unwrap();
        let ev = VectoringEvent::read(&vmcs).unwrap().unwrap();
        assert_eq!(ev.to_core_event(), Some(Event::Nmi));
        ev.reinject(&mut vmcs).unwrap();
        assert_eq!(vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE), Ok(1));
        assert_eq!(vmcs.read(fields::VM_ENTRY_INTR_INFO), Ok(0x8000_0202));
    }

    #[test]
    fn external_interrupt_vectoring_maps_back_to_core() {
        let ev = vectoring(&[(fields::IDT_VECTORING_INFO, 0x8000_0041)])
            .unwrap()
            .unwrap();
        assert_eq!(ev.to_core_event(), Some(Event::ExternalInterrupt(0x41)));
        assert_eq!(ev.reinjection().info.0, 0x8000_0041);
    }

    #[test]
    fn garbage_vectoring_information_is_an_error() {
        for raw in [
            0x8000_0100u64, // reserved type 1
            0x8000_0700,    // other event
            0x8000_0205,    // NMI with vector 5
            0x8000_0340,    // hardware exception 64
            0x8000_0830,    // external interrupt with an error code
        ] {
            assert_eq!(
                vectoring(&[(fields::IDT_VECTORING_INFO, raw)]),
                Err(DecodeError::InvalidInterruptionInfo {
                    field: fields::IDT_VECTORING_INFO,
                    info: raw as u32
                }),
                "{raw:#x}"
            );
        }
    }

    #[test]
    fn nmi_unblocking_due_to_iret() {
        let mut vmcs = InMemoryVmcs::new();
        vmcs.script(&[(fields::VM_EXIT_INTR_INFO, 0x8000_1b0d)])
            .unwrap();
        assert_eq!(
            nmi_unblocked_by_iret(&vmcs, reason::EXCEPTION_OR_NMI),
            Ok(true)
        );
        assert_eq!(nmi_unblocked_by_iret(&vmcs, reason::CPUID), Ok(false));
        vmcs.script(&[(fields::EXIT_QUALIFICATION, 0x1002)])
            .unwrap();
        assert_eq!(
            nmi_unblocked_by_iret(&vmcs, reason::EPT_VIOLATION),
            Ok(true)
        );
        vmcs.script(&[(fields::EXIT_QUALIFICATION, 0x0002)])
            .unwrap();
        assert_eq!(
            nmi_unblocked_by_iret(&vmcs, reason::EPT_VIOLATION),
            Ok(false)
        );
        restore_nmi_blocking(&mut vmcs).unwrap();
        assert_eq!(
            vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE),
            Ok(BLOCKING_BY_NMI)
        );
    }
}

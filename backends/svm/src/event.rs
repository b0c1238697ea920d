//! Event injection (APM 2 15.20, EVENTINJ) and re-injection of an event whose delivery a
//! #VMEXIT interrupted (APM 2 15.7.2, EXITINTINFO).
//!
//! EVENTINJ and EXITINTINFO share one layout, [`EventInfo`]: vector in bits 7:0, type in
//! bits 10:8 (0 external interrupt, 2 NMI, 3 exception, 4 software interrupt), bit 11
//! "error code valid", bit 31 valid, the error code in bits 63:32.

use opsvisor_core::ops::Event;

/// The event type (bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EventType {
    /// External or virtual interrupt (INTR).
    Interrupt = 0,
    /// Non-maskable interrupt.
    Nmi = 2,
    /// Exception (fault or trap).
    Exception = 3,
    /// Software interrupt (INT n).
    SoftwareInterrupt = 4,
}

impl EventType {
    /// The type with encoding `bits`; `None` for the reserved 1, 5, 6 and 7.
    pub fn from_bits(bits: u64) -> Option<EventType> {
        Some(match bits {
            0 => EventType::Interrupt,
            2 => EventType::Nmi,
            3 => EventType::Exception,
            4 => EventType::SoftwareInterrupt,
            _ => return None,
        })
    }
}

/// An EVENTINJ or EXITINTINFO word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventInfo(pub u64);

impl EventInfo {
    /// Valid (bit 31).
    pub const VALID: u64 = 1 << 31;
    /// Error code valid (bit 11).
    pub const ERROR_CODE_VALID: u64 = 1 << 11;

    /// A valid word for `vector` of type `kind`, with `error_code` if given.
    pub fn new(vector: u8, kind: EventType, error_code: Option<u32>) -> EventInfo {
        let mut info = Self::VALID | (u64::from(kind as u8) << 8) | u64::from(vector);
        if let Some(code) = error_code {
            info |= Self::ERROR_CODE_VALID | (u64::from(code) << 32);
        }
        EventInfo(info)
    }

    /// Bit 31.
    pub fn valid(self) -> bool {
        self.0 & Self::VALID != 0
    }
    /// Bits 7:0.
    pub fn vector(self) -> u8 {
        self.0 as u8
    }
    /// Bits 10:8; `None` for a reserved type.
    pub fn kind(self) -> Option<EventType> {
        EventType::from_bits((self.0 >> 8) & 7)
    }
    /// The error code, when bit 11 says there is one.
    pub fn error_code(self) -> Option<u32> {
        (self.0 & Self::ERROR_CODE_VALID != 0).then_some((self.0 >> 32) as u32)
    }

    /// Whether VMRUN accepts this word in EVENTINJ (APM 2 15.20): a defined type, an
    /// exception vector of 0-31 other than 2 (NMI has its own type), and bits 30:12
    /// clear. An invalid word (bit 31 clear) injects nothing and is always accepted.
    pub fn injectable(self) -> bool {
        if !self.valid() {
            return true;
        }
        let reserved = self.0 & 0x7fff_f000 != 0;
        match self.kind() {
            None => false,
            Some(EventType::Exception) => !reserved && self.vector() < 32 && self.vector() != 2,
            Some(EventType::Nmi) => !reserved && self.vector() == 2,
            Some(_) => !reserved,
        }
    }
}

/// Whether exception `vector` pushes an error code in protected mode: #DF, #TS, #NP,
/// #SS, #GP, #PF, #AC and #CP.
pub fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21)
}

/// Why an event cannot be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectError {
    /// An exception vector above 31, or 2 (NMI is its own event type).
    InvalidExceptionVector(u8),
}

/// The EVENTINJ word that delivers one of core's events. `protected_mode` is the
/// guest's CR0.PE at VMRUN: in real mode exceptions push no error code.
pub fn event_injection(event: Event, protected_mode: bool) -> Result<EventInfo, InjectError> {
    Ok(match event {
        Event::ExternalInterrupt(vector) => EventInfo::new(vector, EventType::Interrupt, None),
        Event::Nmi => EventInfo::new(2, EventType::Nmi, None),
        Event::Exception { vector, error_code } => {
            if vector > 31 || vector == 2 {
                return Err(InjectError::InvalidExceptionVector(vector));
            }
            let error_code = if protected_mode { error_code } else { None };
            EventInfo::new(vector, EventType::Exception, error_code)
        }
    })
}

/// Why EXITINTINFO does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidExitIntInfo(pub u64);

/// What to do with EXITINTINFO after a #VMEXIT: the EVENTINJ word that delivers the
/// interrupted event again, or `None` when there is nothing to deliver — no event was
/// interrupted, or the event comes from an instruction (INT n, INT3, INTO) that did not
/// complete: RIP still points at it, and running it again raises the event again (as
/// KVM re-executes software exceptions rather than re-inject them).
pub fn reinjection(exitintinfo: u64) -> Result<Option<EventInfo>, InvalidExitIntInfo> {
    let info = EventInfo(exitintinfo);
    if !info.valid() {
        return Ok(None);
    }
    let invalid = InvalidExitIntInfo(exitintinfo);
    let kind = info.kind().ok_or(invalid)?;
    if info.error_code().is_some() && kind != EventType::Exception {
        return Err(invalid);
    }
    match kind {
        EventType::SoftwareInterrupt => Ok(None),
        // #BP and #OF come only from INT3/INTO (and INT 3 / INT 4 as INT n).
        EventType::Exception if matches!(info.vector(), 3 | 4) => Ok(None),
        _ if !info.injectable() => Err(invalid),
        _ => Ok(Some(info)),
    }
}

/// The event as core sees it (for messages and tests).
pub fn to_core_event(info: EventInfo) -> Option<Event> {
    match info.kind()? {
        EventType::Interrupt => Some(Event::ExternalInterrupt(info.vector())),
        EventType::Nmi => Some(Event::Nmi),
        EventType::Exception => Some(Event::Exception {
            vector: info.vector(),
            error_code: info.error_code(),
        }),
        EventType::SoftwareInterrupt => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_words() {
        assert_eq!(
            event_injection(Event::ExternalInterrupt(0x30), true),
            Ok(EventInfo(0x8000_0030))
        );
        assert_eq!(
            event_injection(Event::Nmi, false),
            Ok(EventInfo(0x8000_0202))
        );
        // #GP(0x10) in protected mode: type 3, EV, the code in the high half.
        let gp = Event::Exception {
            vector: 13,
            error_code: Some(0x10),
        };
        assert_eq!(
            event_injection(gp, true),
            Ok(EventInfo(0x0000_0010_8000_0b0d))
        );
        // Real mode pushes no error code.
        assert_eq!(event_injection(gp, false), Ok(EventInfo(0x8000_030d)));
        for vector in [2, 32, 255] {
            assert_eq!(
                event_injection(
                    Event::Exception {
                        vector,
                        error_code: None
                    },
                    true
                ),
                Err(InjectError::InvalidExceptionVector(vector))
            );
        }
        assert!(EventInfo(0x8000_0b0d).injectable());
        assert!(!EventInfo(0x8000_0302).injectable(), "exception 2");
        assert!(!EventInfo(0x8000_0320).injectable(), "exception 32");
        assert!(!EventInfo(0x8000_0100).injectable(), "type 1");
        assert!(!EventInfo(0x8000_0203).injectable(), "NMI vector 3");
        assert!(!EventInfo(0x8000_1030).injectable(), "bit 12");
        assert!(
            EventInfo(0x0000_0100).injectable(),
            "not valid: nothing injected"
        );
        assert!(exception_has_error_code(14) && !exception_has_error_code(6));
    }

    #[test]
    fn interrupted_deliveries_are_reinjected() {
        assert_eq!(reinjection(0), Ok(None));
        // External interrupt 0x20 (the IDT entry's page was not mapped).
        assert_eq!(reinjection(0x8000_0020), Ok(Some(EventInfo(0x8000_0020))));
        // #PF with its error code; an NMI.
        let pf = 0x0000_0002_8000_0b0e;
        assert_eq!(reinjection(pf), Ok(Some(EventInfo(pf))));
        assert_eq!(
            to_core_event(EventInfo(pf)),
            Some(Event::Exception {
                vector: 14,
                error_code: Some(2)
            })
        );
        assert_eq!(reinjection(0x8000_0202), Ok(Some(EventInfo(0x8000_0202))));
        assert_eq!(to_core_event(EventInfo(0x8000_0202)), Some(Event::Nmi));
    }

    #[test]
    fn instruction_events_run_again_instead() {
        // INT 0x80, INT3 (#BP), INTO (#OF): RIP is at the instruction.
        assert_eq!(reinjection(0x8000_0480), Ok(None));
        assert_eq!(reinjection(0x8000_0303), Ok(None));
        assert_eq!(reinjection(0x8000_0304), Ok(None));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            0x8000_0100u64,        // reserved type 1
            0x8000_0700,           // reserved type 7
            0x0000_0001_8000_0820, // error code on an interrupt
            0x8000_0320,           // exception vector 32
        ] {
            assert_eq!(reinjection(bad), Err(InvalidExitIntInfo(bad)), "{bad:#x}");
        }
    }
}

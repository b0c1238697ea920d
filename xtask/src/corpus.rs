//! What the corpus table says about each guest that a run of the bare-metal image needs:
//! how a passing run ends and what is typed on the guest's console. The table is the
//! corpus crate's guest list (`corpus/src/guest_list.rs`), included here so that a guest
//! is still named in one place.

use crate::machines::Verdict;

#[path = "../../corpus/src/guest_list.rs"]
mod guest_list;

/// How a passing run of a guest ends (the corpus crate's `Outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest's PASS through the debug-exit port: `guest exit status 1`.
    Pass,
    /// The guest reset the machine: `guest reset the machine`.
    Reset,
    /// The guest entered ACPI S5: `guest powered off`.
    PowerOff,
}

impl Outcome {
    /// Whether the image's report says the run ended this way.
    pub fn accepts(self, verdict: &Verdict) -> bool {
        match self {
            Outcome::Pass => *verdict == Verdict::GuestExit(1),
            Outcome::Reset => *verdict == Verdict::Reset,
            Outcome::PowerOff => *verdict == Verdict::PoweredOff,
        }
    }

    /// The ending, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Pass => "guest exit status 1",
            Outcome::Reset => "a reset",
            Outcome::PowerOff => "a power-off",
        }
    }
}

/// One guest of the corpus table, as far as the image's runs need it.
#[derive(Clone, Copy, Debug)]
pub struct CorpusGuest {
    /// Its name (the binary in `guests/src/bin/`).
    pub name: &'static str,
    /// How a passing run ends.
    pub outcome: Outcome,
    /// Console input for the guest.
    pub input: &'static [u8],
    /// The vCPUs the guest needs (`smp=N` on the image's command line).
    pub vcpus: u32,
    /// Whether the guest needs QEMU's ISA test device (`device=pc-testdev` on the
    /// image's command line).
    pub pc_testdev: bool,
    /// Why the image's runners skip the guest, if they do.
    pub image_skip: Option<&'static str>,
}

/// Expands the guest list into [`CORPUS`] (the list calls it by this name).
#[doc(hidden)]
#[macro_export]
macro_rules! xtask_corpus_table {
    ({} $($name:ident : (
        $cmdline:expr,
        [$($expect:expr),* $(,)?],
        $timeout:expr
        $(, outcome = $outcome:ident)?
        $(, input = $input:expr)?
        $(, smp = $smp:expr)?
        $(, pc_testdev = $testdev:expr)?
        $(, image_skip = $image_skip:expr)?
    )),* $(,)?) => {
        &[$($crate::corpus::CorpusGuest {
            name: stringify!($name),
            outcome: $crate::__given_or!(
                $crate::corpus::Outcome::Pass $(, $crate::corpus::Outcome::$outcome)?
            ),
            input: $crate::__given_or!(b"" $(, $input)?),
            vcpus: $crate::__given_or!(1 $(, $smp)?),
            pc_testdev: $crate::__given_or!(false $(, $testdev)?),
            image_skip: $crate::__given_or!(None $(, Some($image_skip))?),
        }),*]
    };
}

/// Every guest of the corpus table.
pub const CORPUS: &[CorpusGuest] = crate::__with_guest_list!(xtask_corpus_table! {});

/// The corpus guest named `name`.
pub fn guest(name: &str) -> Option<&'static CorpusGuest> {
    CORPUS.iter().find(|g| g.name == name)
}

/// The image's command-line word that gives the guest `input` on its console
/// (`console-input=` and the bytes in hex), if there is input.
pub fn console_input_word(input: &[u8]) -> Option<String> {
    (!input.is_empty()).then(|| {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        format!("console-input={hex}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_console_input;

    #[test]
    fn the_table_is_the_corpus_crates() {
        assert!(CORPUS.len() >= 20);
        let hello = guest("hello").expect("hello is listed");
        assert_eq!((hello.outcome, hello.input), (Outcome::Pass, &b""[..]));
        assert_eq!(guest("reset_cf9").map(|g| g.outcome), Some(Outcome::Reset));
        assert_eq!(guest("reset_8042").map(|g| g.outcome), Some(Outcome::Reset));
        assert_eq!(guest("acpi_s5").map(|g| g.outcome), Some(Outcome::PowerOff));
        assert!(guest("com1_rx").is_some_and(|g| !g.input.is_empty()));
        assert!(guest("no_such_guest").is_none());
        assert_eq!(guest("smp_start").map(|g| g.vcpus), Some(4));
        assert_eq!(guest("smp_tlb").map(|g| g.vcpus), Some(2));
        assert_eq!(
            guest("pc_testdev").map(|g| (g.vcpus, g.pc_testdev)),
            Some((1, true))
        );
        assert_eq!(
            guest("pc_testdev_strings").map(|g| (g.pc_testdev, g.image_skip)),
            Some((true, None))
        );
        assert_eq!(guest("hello").and_then(|g| g.image_skip), None);
        assert_eq!(guest("debug_single_step").and_then(|g| g.image_skip), None);
        // Every guest in guests/src/bin is listed.
        let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/src/bin");
        for entry in std::fs::read_dir(bin).expect("guests/src/bin") {
            let file = entry.expect("entry").file_name();
            let name = file.to_string_lossy();
            if let Some(name) = name.strip_suffix(".rs") {
                assert!(guest(name).is_some(), "{name} is not in the guest list");
            }
        }
    }

    #[test]
    fn outcomes_accept_their_own_report_only() {
        let reports = [
            Verdict::GuestExit(1),
            Verdict::Reset,
            Verdict::PoweredOff,
            Verdict::GuestExit(3),
            Verdict::TripleFault("triple fault at rip 0x0".into()),
        ];
        for (outcome, accepted) in [
            (Outcome::Pass, 0),
            (Outcome::Reset, 1),
            (Outcome::PowerOff, 2),
        ] {
            for (i, v) in reports.iter().enumerate() {
                assert_eq!(outcome.accepts(v), i == accepted, "{outcome:?} {v:?}");
            }
        }
    }

    #[test]
    fn console_input_reaches_the_image_as_written() {
        assert_eq!(console_input_word(b""), None);
        let input = guest("com1_rx").expect("listed").input;
        let word = console_input_word(input).expect("a word");
        let hex = word.strip_prefix("console-input=").expect("the option");
        let mut parsed = image_console_input::ConsoleInput::from_hex(hex).expect("parses");
        let mut back = Vec::new();
        while let Some(b) = parsed.take() {
            back.push(b);
        }
        assert_eq!(back, input);
        for bad in ["6", "zz", "+1", &"00".repeat(65)] {
            assert!(
                image_console_input::ConsoleInput::from_hex(bad).is_err(),
                "{bad:?}"
            );
        }
        assert!(image_console_input::ConsoleInput::from_hex(&"41".repeat(64)).is_ok());
    }
}

//! One line for a clap error, for `opsvisor` and `cargo xtask`: both print every
//! command-line mistake as a single line naming the option and what was wrong with it,
//! where clap's own rendering is several lines with usage and a help hint.
//!
//! [`Problem::of`] says what an error is about in the terms such a line needs;
//! [`Problem::line`] words the cases both programs word alike. A program matches the
//! problems it words its own way (a positional argument too many names its subcommand's
//! operand) and hands the rest to `line`.

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// What a clap error is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// An option given twice.
    Repeated {
        /// The option's name (`--memory`).
        option: String,
    },
    /// Two arguments that exclude each other.
    Conflict {
        /// The name of the one clap reports.
        option: String,
        /// The name of the one it conflicts with.
        prior: String,
    },
    /// A flag given a value.
    TakesNoValue {
        /// The flag's name.
        option: String,
        /// The value it was given.
        value: String,
    },
    /// An option given without its value.
    NeedsValue {
        /// The option's name.
        option: String,
    },
    /// An argument starting with `-` that no option matches.
    UnknownOption {
        /// The argument as given.
        arg: String,
    },
    /// A word where no positional argument or subcommand is expected.
    UnexpectedWord {
        /// The word.
        word: String,
    },
    /// A subcommand that does not exist.
    UnknownCommand {
        /// Its name as given.
        name: String,
    },
    /// A required argument left out.
    Missing {
        /// How clap names it (`--kernel <KERNEL>`, or several joined by ", ").
        what: String,
    },
    /// An argument that had to be text and is not UTF-8.
    NotUtf8 {
        /// clap's first line without its "error: " prefix (a value parser's own
        /// message names the option).
        text: String,
    },
    /// Anything else (a value parser's own message among them): clap's first line
    /// without its "error: " prefix.
    Other {
        /// That line.
        text: String,
    },
}

impl Problem {
    /// What `e` is about.
    pub fn of(e: &clap::Error) -> Problem {
        let text = |kind| match e.get(kind) {
            Some(ContextValue::String(s)) => Some(s.clone()),
            Some(ContextValue::Strings(v)) => Some(v.join(", ")),
            _ => None,
        };
        let arg = text(ContextKind::InvalidArg);
        match (e.kind(), arg) {
            (ErrorKind::ArgumentConflict, Some(arg)) => {
                let prior = text(ContextKind::PriorArg).unwrap_or_default();
                if prior == arg {
                    Problem::Repeated {
                        option: option_name(&arg).into(),
                    }
                } else {
                    Problem::Conflict {
                        option: option_name(&arg).into(),
                        prior: option_name(&prior).into(),
                    }
                }
            }
            (ErrorKind::TooManyValues, Some(arg)) => Problem::TakesNoValue {
                option: option_name(&arg).into(),
                value: text(ContextKind::InvalidValue).unwrap_or_default(),
            },
            (ErrorKind::InvalidValue, Some(arg))
                if text(ContextKind::InvalidValue).is_none_or(|v| v.is_empty()) =>
            {
                Problem::NeedsValue {
                    option: option_name(&arg).into(),
                }
            }
            (ErrorKind::UnknownArgument, Some(arg)) if arg.starts_with('-') => {
                Problem::UnknownOption { arg }
            }
            (ErrorKind::UnknownArgument, Some(word)) => Problem::UnexpectedWord { word },
            (ErrorKind::InvalidSubcommand, _) => Problem::UnknownCommand {
                name: text(ContextKind::InvalidSubcommand).unwrap_or_default(),
            },
            (ErrorKind::MissingRequiredArgument, _) => Problem::Missing {
                what: text(ContextKind::InvalidArg).unwrap_or_default(),
            },
            (ErrorKind::InvalidUtf8, _) => Problem::NotUtf8 {
                text: first_line(e),
            },
            _ => Problem::Other {
                text: first_line(e),
            },
        }
    }

    /// The line both programs print for this problem. Line breaks a value carried are
    /// spaces, so the message stays one line.
    pub fn line(&self) -> String {
        let line = match self {
            Problem::Repeated { option } => format!("option {option} is given more than once"),
            Problem::Conflict { option, prior } => format!("{option} cannot be used with {prior}"),
            Problem::TakesNoValue { option, value } => {
                format!("option {option} takes no value (got '{value}')")
            }
            Problem::NeedsValue { option } => format!("option {option} needs a value"),
            Problem::UnknownOption { arg } => format!("unknown option '{arg}'"),
            Problem::UnexpectedWord { word } => format!("unexpected argument '{word}'"),
            Problem::UnknownCommand { name } => {
                format!("unknown command '{}'", name.escape_debug())
            }
            Problem::Missing { what } => format!("missing {what}"),
            Problem::NotUtf8 { text } | Problem::Other { text } => text.clone(),
        };
        line.replace(['\n', '\r'], " ")
    }
}

/// clap's first line for `e`, without its "error: " prefix.
fn first_line(e: &clap::Error) -> String {
    let rendered = e.to_string();
    let first = rendered.lines().next().unwrap_or("");
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// An argument's name as clap shows it in a message (`--memory <SIZE>`,
/// `--verbose...`), without its value placeholder or repetition mark.
fn option_name(spec: &str) -> &str {
    let name = spec.split([' ', '=']).next().unwrap_or(spec);
    name.trim_end_matches("...")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{ArgAction, Parser, Subcommand};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Subcommand, Debug)]
    enum Cmd {
        Run {
            #[arg(long)]
            memory: Option<String>,
            #[arg(long, conflicts_with = "memory")]
            flat: bool,
            #[arg(short, long, action = ArgAction::Count)]
            verbose: u8,
            #[arg(long, required = true)]
            kernel: Option<String>,
        },
    }

    fn problem(args: &[&str]) -> Problem {
        let e = Cli::try_parse_from(core::iter::once("prog").chain(args.iter().copied()))
            .expect_err("the arguments are wrong");
        Problem::of(&e)
    }

    #[test]
    fn each_kind_of_mistake_is_named_with_its_option() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["run", "--kernel", "k", "--memory", "1", "--memory", "2"],
                "option --memory is given more than once",
            ),
            (
                &["run", "--kernel", "k", "--memory", "1", "--flat"],
                "--memory cannot be used with --flat",
            ),
            (
                &["run", "--kernel", "k", "--flat=yes"],
                "option --flat takes no value (got 'yes')",
            ),
            (&["run", "--kernel"], "option --kernel needs a value"),
            (
                &["run", "--kernel", "k", "--bogus"],
                "unknown option '--bogus'",
            ),
            (
                &["run", "--kernel", "k", "extra"],
                "unexpected argument 'extra'",
            ),
            (&["fly"], "unknown command 'fly'"),
            (&["run"], "missing --kernel <KERNEL>"),
        ];
        for (args, want) in cases {
            assert_eq!(problem(args).line(), *want, "{args:?}");
        }
    }

    #[test]
    fn a_repeatable_flag_is_named_without_its_mark() {
        assert_eq!(option_name("--verbose..."), "--verbose");
        assert_eq!(option_name("--memory <SIZE>"), "--memory");
        assert_eq!(option_name("--memory=<SIZE>"), "--memory");
    }

    #[test]
    fn a_value_parsers_message_is_kept_on_one_line() {
        let e = clap::Error::raw(clap::error::ErrorKind::ValueValidation, "bad\nsize\n");
        assert_eq!(Problem::of(&e).line(), "bad");
        let p = Problem::Other {
            text: "two\r\nlines".into(),
        };
        assert_eq!(p.line(), "two  lines");
    }
}

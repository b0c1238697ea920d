//! The opsvisor command-line program as a library: its option parsing, bounded input
//! reading, `opsvisor exec`, and the exit trace and breakdowns of `opsvisor run`, so that
//! tests and fuzz targets can call each part without running a guest. `src/main.rs` is
//! the program.

pub mod args;
pub mod breakdown;
pub mod exec;
pub mod input;
pub mod observer;
pub mod output;
pub mod terminal;
pub mod trace;

/// `message` on one line: control characters (a newline in a file name, a JSON key, an
/// option) are written as escapes, so every error stays the one line the program
/// promises.
pub fn one_line(message: &str) -> String {
    if !message.chars().any(char::is_control) {
        return message.to_string();
    }
    message
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_stay_on_one_line() {
        assert_eq!(super::one_line("plain"), "plain");
        assert_eq!(super::one_line("a\nb\tc\u{7f}"), "a\\nb\\tc\\u{7f}");
    }
}

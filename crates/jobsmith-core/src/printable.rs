//! Text that came from a queue, made safe to print on a terminal or in a log.
//!
//! Job names, queue names, ids and reasons are written by whoever can write
//! to the broker. Printed raw, a name holding `\x1b[2J` clears an operator's
//! screen, and one holding a newline forges a log line. [`printable`] writes
//! such text with its control characters escaped as JSON escapes them
//! (`\n`, `\u001b`), so that an escaped JSON document stays valid and means
//! the same; everything else, unicode included, is written as it is.
//!
//! ```
//! use jobsmith_core::printable;
//! assert_eq!(printable("evil\x1b[2J\n").to_string(), r"evil\u001b[2J\n");
//! assert_eq!(printable("café").to_string(), "café");
//! ```

use std::fmt;

/// `text` with every control character escaped, newlines and tabs included:
/// for one field of a log line or one cell of a table.
pub fn printable(text: &str) -> Printable<'_> {
    Printable { text, lines: false }
}

/// `text` with every control character escaped except newlines and tabs:
/// for text that may span lines, such as a reason or a whole report.
pub fn printable_lines(text: &str) -> Printable<'_> {
    Printable { text, lines: true }
}

/// Text shown with its control characters escaped; see [`printable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Printable<'a> {
    text: &'a str,
    /// Whether newlines and tabs are kept as they are.
    lines: bool,
}

/// Whether `c` is escaped: C0 and C1 controls, DEL, and the bidirectional
/// overrides and isolates that reorder what a terminal shows.
fn escaped(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut plain = 0;
        for (i, c) in self.text.char_indices() {
            if !escaped(c) || (self.lines && matches!(c, '\n' | '\t')) {
                continue;
            }
            f.write_str(&self.text[plain..i])?;
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "\\u{:04x}", u32::from(c))?,
            }
            plain = i + c.len_utf8();
        }
        f.write_str(&self.text[plain..])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let evil = "a\u{1b}[2J\u{7}\u{9b}31m\u{202e}b\r\n\tc\u{7f}é";
        assert_eq!(
            printable(evil).to_string(),
            r"a\u001b[2J\u0007\u009b31m\u202eb\r\n\tc\u007fé"
        );
        assert_eq!(
            printable_lines(evil).to_string(),
            "a\\u001b[2J\\u0007\\u009b31m\\u202eb\\r\n\tc\\u007fé"
        );
        assert_eq!(printable("plain name").to_string(), "plain name");
        assert_eq!(printable("").to_string(), "");
    }
}

//! Everything the CLI prints goes through [`Terminal`], which escapes the
//! control characters in it.
//!
//! Queue names, job names, ids and reasons come from whoever can write to the
//! broker: a name holding `\x1b[2J` would clear the operator's screen, or
//! worse. The one sequence the CLI means to send, the screen clear of
//! `stats --watch`, goes out through [`Terminal::clear_screen`]; all else is
//! written with its control characters escaped (`\u001b`), newlines and tabs
//! kept. The escapes are JSON's, so `--json` output stays valid and means
//! the same: serde escapes C0 controls itself but writes C1 controls and
//! bidirectional overrides as they are, and this escapes those.
//! Table cells and one-line fields are escaped whole, newlines included, by
//! their writers (`table.rs`, [`jobsmith_core::printable`]).

use jobsmith_core::printable_lines;
use std::io::{self, Write};

/// A writer that escapes control characters on their way to `out`.
pub(crate) struct Terminal<'a> {
    out: &'a mut (dyn Write + Send),
    /// The start of a UTF-8 sequence whose end has not been written yet.
    pending: Vec<u8>,
}

impl<'a> Terminal<'a> {
    pub(crate) fn new(out: &'a mut (dyn Write + Send)) -> Self {
        Self {
            out,
            pending: Vec::new(),
        }
    }

    /// Clears the screen and puts the cursor at the top left.
    pub(crate) fn clear_screen(&mut self) -> io::Result<()> {
        self.out.write_all(b"\x1b[2J\x1b[H")
    }

    /// Escapes `bytes` into `to`: text with its controls escaped, and bytes
    /// that are not UTF-8 as `\xNN`; an incomplete sequence at the end is
    /// returned, to be completed by the next write.
    fn escape(mut bytes: &[u8], to: &mut Vec<u8>) -> Vec<u8> {
        loop {
            match std::str::from_utf8(bytes) {
                Ok(text) => {
                    // Writing into a Vec cannot fail.
                    let _ = write!(to, "{}", printable_lines(text));
                    return Vec::new();
                }
                Err(e) => {
                    let (good, bad) = bytes.split_at(e.valid_up_to());
                    let text = std::str::from_utf8(good).unwrap_or_default();
                    let _ = write!(to, "{}", printable_lines(text));
                    let Some(n) = e.error_len() else {
                        return bad.to_vec();
                    };
                    for b in &bad[..n] {
                        let _ = write!(to, "\\x{b:02x}");
                    }
                    bytes = &bad[n..];
                }
            }
        }
    }
}

impl Write for Terminal<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(buf);
        let mut escaped = Vec::with_capacity(bytes.len());
        self.pending = Self::escape(&bytes, &mut escaped);
        self.out.write_all(&escaped)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Drop for Terminal<'_> {
    /// An incomplete sequence left at the end is not UTF-8: it is written escaped.
    fn drop(&mut self) {
        for b in std::mem::take(&mut self.pending) {
            let _ = write!(self.out, "\\x{b:02x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(writes: &[&[u8]]) -> String {
        let mut out: Vec<u8> = Vec::new();
        {
            let mut t = Terminal::new(&mut out);
            for w in writes {
                t.write_all(w).unwrap();
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn controls_are_escaped_and_lines_kept() {
        assert_eq!(
            through(&[b"mail\x1b[2J\tq\n", "\u{9b}é\n".as_bytes()]),
            "mail\\u001b[2J\tq\n\\u009bé\n"
        );
    }

    #[test]
    fn a_character_split_across_writes_is_whole_again() {
        let csi = "\u{9b}".as_bytes();
        let e = "é".as_bytes();
        assert_eq!(
            through(&[&csi[..1], &csi[1..], &e[..1], &e[1..]]),
            "\\u009bé"
        );
        assert_eq!(through(&[b"a\xffb", &e[..1]]), "a\\xffb\\xc3");
    }

    #[test]
    fn the_screen_clear_is_the_one_escape_sent() {
        let mut out: Vec<u8> = Vec::new();
        let mut t = Terminal::new(&mut out);
        t.clear_screen().unwrap();
        t.write_all(b"\x1b[2J").unwrap();
        drop(t);
        assert_eq!(out, b"\x1b[2J\x1b[H\\u001b[2J");
    }
}

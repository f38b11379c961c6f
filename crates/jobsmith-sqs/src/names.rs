//! SQS queue names for jobsmith queues, and priorities as levels.
//!
//! A jobsmith queue `q` under prefix `app` is a family of SQS queues:
//! `app-q` (priority level 0), `app-q__p1` .. `app-q__p4` and `app-q__m1` ..
//! `app-q__m4` (higher and lower levels, created when first used),
//! `app-q__dead` (its dead-letter queue) and `app-q__expired` (one small
//! message per job dropped because its TTL passed: a counter SQS keeps).
//! Characters SQS does not allow in a name are written `_xx` (hex), so the
//! `__` before a suffix can never come from a queue name. FIFO mode adds
//! `.fifo` to every name but the counter's.

use jobsmith_core::{Error, Result};

/// The lowest and highest priority levels.
pub(crate) const LEVELS: std::ops::RangeInclusive<i8> = -4..=4;

/// The level a priority runs at: 0 for 0; 1, 2-3, 4-7 and 8 or more for
/// levels 1 to 4; the same mirrored for negative priorities.
pub fn priority_level(priority: i32) -> i8 {
    if priority == 0 {
        return 0;
    }
    let magnitude = priority.unsigned_abs();
    let level = i8::try_from((magnitude.ilog2() + 1).min(4)).unwrap_or(4);
    if priority > 0 {
        level
    } else {
        -level
    }
}

/// What one SQS queue of a family is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Role {
    /// Jobs at one priority level.
    Level(i8),
    /// The dead-letter queue.
    Dead,
    /// The expired-jobs counter.
    Expired,
}

/// Names the SQS queues of this backend's jobsmith queues.
#[derive(Clone, Debug)]
pub(crate) struct Namer {
    prefix: String,
    fifo: bool,
}

impl Namer {
    pub(crate) fn new(prefix: &str, fifo: bool) -> Self {
        Self {
            prefix: prefix.to_owned(),
            fifo,
        }
    }

    /// The start every name of this backend shares.
    pub(crate) fn family_start(&self) -> String {
        format!("{}-", self.prefix)
    }

    /// The SQS name of `queue`'s queue for `role`.
    pub(crate) fn name(&self, queue: &str, role: Role) -> Result<String> {
        let mut name = self.family_start();
        encode_into(queue, &mut name);
        match role {
            Role::Level(0) => {}
            Role::Level(l) if l > 0 => name.push_str(&format!("__p{l}")),
            Role::Level(l) => name.push_str(&format!("__m{}", l.unsigned_abs())),
            Role::Dead => name.push_str("__dead"),
            Role::Expired => name.push_str("__expired"),
        }
        if self.fifo && role != Role::Expired {
            name.push_str(".fifo");
        }
        if name.len() > 80 {
            return Err(Error::Config(format!(
                "queue `{queue}` gives the SQS queue name `{name}`, over SQS's 80 characters; use a shorter queue name or prefix"
            )));
        }
        Ok(name)
    }

    /// The jobsmith queue and role an SQS queue name stands for, if it is one of ours.
    pub(crate) fn parse(&self, name: &str) -> Option<(String, Role)> {
        let rest = name.strip_prefix(&self.family_start())?;
        let rest = match rest.strip_suffix(".fifo") {
            Some(r) if self.fifo => r,
            Some(_) => return None,
            None => rest,
        };
        let (encoded, role) = match rest.split_once("__") {
            None => (rest, Role::Level(0)),
            Some((q, "dead")) => (q, Role::Dead),
            Some((q, "expired")) => (q, Role::Expired),
            Some((q, suffix)) => {
                let (sign, digits) = suffix.split_at(1);
                let l: i8 = digits.parse().ok()?;
                let l = match sign {
                    "p" => l,
                    "m" => -l,
                    _ => return None,
                };
                LEVELS.contains(&l).then_some(())?;
                (q, Role::Level(l))
            }
        };
        Some((decode(encoded)?, role))
    }
}

fn encode_into(queue: &str, out: &mut String) {
    for b in queue.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
}

fn decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_fall_into_nine_levels() {
        let cases = [
            (0, 0),
            (1, 1),
            (2, 2),
            (3, 2),
            (5, 3),
            (7, 3),
            (8, 4),
            (9, 4),
            (i32::MAX, 4),
            (-1, -1),
            (-3, -2),
            (i32::MIN, -4),
        ];
        for (p, l) in cases {
            assert_eq!(priority_level(p), l, "priority {p}");
        }
    }

    #[test]
    fn names_round_trip() {
        for fifo in [false, true] {
            let n = Namer::new("app", fifo);
            for q in ["default", "e-mail", "a_b", "ü.x", "low__p1"] {
                for role in [
                    Role::Level(0),
                    Role::Level(3),
                    Role::Level(-4),
                    Role::Dead,
                    Role::Expired,
                ] {
                    let name = n.name(q, role).expect("short");
                    assert!(name
                        .trim_end_matches(".fifo")
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
                    assert_eq!(n.parse(&name), Some((q.to_owned(), role)), "{name}");
                }
            }
        }
        assert_eq!(Namer::new("app", false).parse("other-q"), None);
    }
}

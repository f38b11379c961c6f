//! Event names and topic patterns, as AMQP's topic exchange reads them:
//! words separated by dots; in a pattern, `*` stands for exactly one word and
//! `#` for zero or more.

/// The longest event name or pattern, in bytes: AMQP's limit on a routing key.
pub const MAX_TOPIC_LEN: usize = 255;

/// Checks an event name: one or more words separated by dots, each word made
/// of ASCII letters, digits, `_` and `-` (`user.signed_up`), at most
/// [`MAX_TOPIC_LEN`] bytes. The error says what to write instead.
pub fn parse_event_name(name: &str) -> Result<(), String> {
    check(name, "event name", false)
}

/// Checks a topic pattern: words as in [`parse_event_name`], where a word may
/// also be `*` (exactly one word) or `#` (zero or more words):
/// `user.*`, `billing.#`, `#.failed`.
pub fn parse_topic_pattern(pattern: &str) -> Result<(), String> {
    check(pattern, "topic pattern", true)
}

/// Whether event `name` matches topic `pattern`, exactly as RabbitMQ's topic
/// exchange matches a routing key against a binding key.
pub fn topic_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let name: Vec<&str> = name.split('.').collect();
    // matched[j]: the pattern's words so far match the name's first j words.
    let mut matched = vec![false; name.len() + 1];
    matched[0] = true;
    for word in pattern {
        let mut next = vec![false; name.len() + 1];
        match word {
            "#" => {
                let mut any = false;
                for j in 0..=name.len() {
                    any |= matched[j];
                    next[j] = any;
                }
            }
            "*" => next[1..].copy_from_slice(&matched[..name.len()]),
            literal => {
                for j in 1..=name.len() {
                    next[j] = matched[j - 1] && name[j - 1] == literal;
                }
            }
        }
        matched = next;
    }
    matched[name.len()]
}

fn check(text: &str, what: &str, wildcards: bool) -> Result<(), String> {
    let example = if wildcards {
        "`user.*` or `billing.#`"
    } else {
        "`user.signed_up`"
    };
    if text.is_empty() {
        return Err(format!(
            "an empty {what}; write words separated by dots, such as {example}"
        ));
    }
    if text.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "the {what} is {} bytes long; the most is {MAX_TOPIC_LEN}, AMQP's limit on a routing key",
            text.len()
        ));
    }
    for word in text.split('.') {
        if word.is_empty() {
            return Err(format!(
                "{what} `{text}` has an empty word (a dot at either end, or two dots in a row); write words separated by single dots, such as {example}"
            ));
        }
        if wildcards && (word == "*" || word == "#") {
            continue;
        }
        if let Some(bad) = word
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            let hint = if (bad == '*' || bad == '#') && !wildcards {
                " (`*` and `#` belong in topic patterns, which subscribe; an event's name has none)"
                    .to_owned()
            } else if bad == '*' || bad == '#' {
                format!(" (`{bad}` stands alone as a whole word: `user.{bad}`, not `user{bad}`)")
            } else {
                String::new()
            };
            return Err(format!(
                "{what} `{text}` has `{bad}` in word `{word}`; words are made of ASCII letters, digits, `_` and `-`{hint}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns_are_checked() {
        assert_eq!(parse_event_name("user.signed_up"), Ok(()));
        assert_eq!(parse_event_name("a-b.c_d.E9"), Ok(()));
        for bad in ["", "user.", ".user", "a..b", "user.*", "user signed", "ünï"] {
            assert!(parse_event_name(bad).is_err(), "{bad}");
        }
        assert!(parse_event_name(&"a".repeat(256)).is_err());
        assert!(parse_event_name("user.*")
            .unwrap_err()
            .contains("belong in topic patterns"));
        for good in ["#", "*", "user.*", "#.failed", "a.#.b", "*.*"] {
            assert_eq!(parse_topic_pattern(good), Ok(()), "{good}");
        }
        for bad in ["", "user*", "a.#b", "a..b", "a b"] {
            assert!(parse_topic_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_follows_the_topic_exchange() {
        let cases = [
            ("user.signed_up", "user.signed_up", true),
            ("user.signed_up", "user.signed_in", false),
            ("user.*", "user.signed_up", true),
            ("user.*", "user", false),
            ("user.*", "user.a.b", false),
            ("user.#", "user", true),
            ("user.#", "user.a.b", true),
            ("#", "anything.at.all", true),
            ("#.failed", "failed", true),
            ("#.failed", "job.failed", true),
            ("#.failed", "job.failed.now", false),
            ("a.#.b", "a.b", true),
            ("a.#.b", "a.x.y.b", true),
            ("a.#.b", "a.x.y", false),
            ("*.*", "a", false),
            ("*.*", "a.b", true),
            ("#.#", "a", true),
            ("*.#", "a", true),
            ("#.*", "a.b.c", true),
            ("a.*.#", "a", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(topic_matches(pattern, name), expected, "{pattern} ~ {name}");
        }
    }
}

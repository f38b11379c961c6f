//! Backend URLs: the one reader of a URL's settings every backend uses, and
//! the one redactor every message that shows a URL goes through.

use crate::{Error, Result};

/// The settings of a backend URL (its query string), read whole: keys and
/// values percent-decoded, each key at most once.
///
/// A backend reads what it knows with [`UrlQuery::get`] or
/// [`UrlQuery::iter`], then calls [`UrlQuery::refuse_unknown`] with every
/// key it knows, so a typo is an error naming the closest key instead of a
/// setting silently not applied.
///
/// ```
/// use jobsmith_core::UrlQuery;
///
/// let q = UrlQuery::parse("redis://h?prefix=app%2D1&dead_max=7")?;
/// assert_eq!(q.get("prefix"), Some("app-1"));
/// let err = UrlQuery::parse("redis://h?prefx=app")?
///     .refuse_unknown("redis", &[&["prefix"], &["dead_max"]])
///     .unwrap_err();
/// assert!(err.to_string().contains("(did you mean `prefix`?)"));
/// # Ok::<(), jobsmith_core::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlQuery {
    pairs: Vec<(String, String)>,
}

impl UrlQuery {
    /// Reads the settings of `url`: what follows its first `?`, up to a `#`.
    pub fn parse(url: &str) -> Result<Self> {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let (k, v) = (decode(k)?, decode(v)?);
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(Error::Config(format!(
                    "URL setting `{}` is given twice: give it once",
                    redact_url(&k)
                )));
            }
            pairs.push((k, v));
        }
        Ok(Self { pairs })
    }

    /// The value of `key`, decoded.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every `key=value`, decoded, in the URL's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Refuses a key found in none of the lists `known`, naming the closest
    /// known key and listing them all.
    pub fn refuse_unknown(&self, scheme: &str, known: &[&[&str]]) -> Result<()> {
        let all: Vec<&str> = known.iter().flat_map(|k| k.iter().copied()).collect();
        let Some((key, _)) = self.pairs.iter().find(|(k, _)| !all.contains(&k.as_str())) else {
            return Ok(());
        };
        let hint = closest(key, all.iter().copied())
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        let mut listed = all.clone();
        listed.sort_unstable();
        // A password holding a raw `?` or `&` reads as settings: never show one.
        Err(Error::Config(format!(
            "unknown {scheme}:// URL setting `{}`{hint}; the settings are {} (a password holding `?`, `&` or `#` must be percent-encoded: `%3F`, `%26`, `%23`)",
            redact_url(key),
            listed
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

fn decode(s: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| {
            Error::Config(format!(
                "URL setting `{}` is not UTF-8 once percent-decoded",
                redact_url(&s.escape_debug().to_string())
            ))
        })
}

/// Of `known`, the word closest to `word`, if one is close enough to be
/// what was meant (at most a third of its letters differ), for "did you
/// mean" hints.
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = word.chars().count().div_ceil(3).max(1);
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// `url` with its credentials replaced by `***`, for every message and log
/// line that shows a URL.
///
/// Right for every valid URL, and safe for invalid ones: everything up to
/// the last `@` is taken as credentials, so a password holding a raw `/`,
/// `?`, `#` or `@` is hidden whole. Only a user name that is plainly one (no
/// `/`, `?`, `#`, `[` or `]`) is kept.
///
/// ```
/// use jobsmith_core::redact_url;
///
/// assert_eq!(redact_url("redis://me:s3cret@cache:6379/0"), "redis://me:***@cache:6379/0");
/// assert_eq!(redact_url("amqp://me:a/b@c@rabbit/%2f"), "amqp://me:***@rabbit/%2f");
/// assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    let (head, tail) = url.split_at(at);
    let (scheme, userinfo) = match head.split_once("://") {
        Some((s, u)) => (Some(s), u),
        None => (None, head),
    };
    let user = userinfo
        .split_once(':')
        .map(|(u, _)| u)
        .filter(|u| !u.is_empty() && !u.contains(['/', '?', '#', '[', ']']));
    let shown = user.map_or_else(|| "***".to_owned(), |u| format!("{u}:***"));
    match scheme {
        Some(s) => format!("{s}://{shown}{tail}"),
        None => format!("{shown}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_decodes_and_refuses_twice() {
        let q = UrlQuery::parse("x://h?a=1&b=%2F%20&c#frag").expect("valid");
        assert_eq!(
            q.iter().collect::<Vec<_>>(),
            [("a", "1"), ("b", "/ "), ("c", "")]
        );
        assert!(UrlQuery::parse("x://h?a=1&a=2").is_err());
        assert!(UrlQuery::parse("x://h?a=%FF").is_err());
        assert_eq!(
            UrlQuery::parse("x://h").expect("valid"),
            UrlQuery::default()
        );
    }

    #[test]
    fn names_the_closest_key() {
        let q = UrlQuery::parse("x://h?dead_maxx=1").expect("valid");
        let err = q
            .refuse_unknown("x", &[&["prefix"], &["dead_max", "dead_max_age"]])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`dead_maxx` (did you mean `dead_max`?)"),
            "{err}"
        );
        let err = UrlQuery::parse("x://h?zzzzzz=1")
            .expect("valid")
            .refuse_unknown("x", &[&["prefix"]])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("did you mean"), "nothing is close: {err}");
        assert_eq!(closest("prefx", ["prefix", "prefetch"]), Some("prefix"));
    }

    #[test]
    fn redacts_every_password() {
        for pw in [
            "p", "a/b", "a@b", "a?b", "a#b", "a:b", "a%40b", "@", "/@/", "a]b[",
        ] {
            for url in [
                format!("redis://me:{pw}@h:1/0?prefix=x"),
                format!("redis://:{pw}@h"),
                format!("me:{pw}@h"),
            ] {
                let shown = redact_url(&url);
                assert!(
                    shown.ends_with("@h:1/0?prefix=x") || shown.ends_with("@h"),
                    "{url} → {shown}"
                );
                assert!(!shown.contains(&format!(":{pw}@")), "{url} → {shown}");
                assert!(shown.contains("***"), "{url} → {shown}");
            }
        }
        assert_eq!(redact_url("redis://me:pw@h"), "redis://me:***@h");
        assert_eq!(redact_url("amqp://h/%2f"), "amqp://h/%2f");
    }
}

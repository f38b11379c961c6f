//! Backend URLs: [`BackendUrl`], the one reader every backend parses its URL
//! with (on the `url` crate), and [`redact_url`], the one redactor every
//! message that shows a URL goes through.

use crate::{Error, Result};
use std::fmt;

/// The backend URLs there are, for an error about text that is none.
const SHAPES: &str =
    "write `memory://`, `redis://host:6379`, `amqp://host:5672` or `sqs://region/prefix`";

/// How to write what a URL cannot hold raw, for an error about one that does.
const ENCODE: &str = "percent-encode each reserved character of a user name or password \
    (`/` as `%2F`, `?` as `%3F`, `#` as `%23`, `@` as `%40`, `:` as `%3A`, `%` as `%25`)";

/// A backend URL, read whole by the `url` crate: scheme, host, port, user
/// name and password (percent-decoded), path, fragment, and the settings of
/// its query string ([`UrlQuery`]).
///
/// Every backend reads its URL with this, takes what it knows, calls
/// [`BackendUrl::refuse_unknown`] with every setting it knows, and refuses
/// the parts it has no use for. A URL the `url` crate rejects, such as one
/// whose password holds a raw `/`, `?` or `#`, is an [`Error::Config`] that
/// says what to fix and never shows the password. `Debug` shows the URL
/// through [`redact_url`].
///
/// ```
/// use jobsmith_core::BackendUrl;
///
/// let url = BackendUrl::parse("redis://me:p%40ss@[::1]:6379/2?prefix=app%2D1")?;
/// assert_eq!((url.scheme(), url.host(), url.port()), ("redis", Some("[::1]"), Some(6379)));
/// assert_eq!((url.username(), url.password()), ("me", Some("p@ss")));
/// assert_eq!((url.path(), url.query().get("prefix")), ("/2", Some("app-1")));
/// assert_eq!(url.redacted(), "redis://me:***@[::1]:6379/2?prefix=app%2D1");
/// let err = BackendUrl::parse("redis://h?prefx=app")?
///     .refuse_unknown(&[&["prefix"], &["dead_max"]])
///     .unwrap_err();
/// assert!(err.to_string().contains("`prefx` (did you mean `prefix`?)"));
/// # Ok::<(), jobsmith_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BackendUrl {
    url: ::url::Url,
    username: String,
    password: Option<String>,
    query: UrlQuery,
}

impl BackendUrl {
    /// Reads `text`: a `scheme://` URL whose user name, password and query
    /// settings are UTF-8 once percent-decoded, each setting given once.
    pub fn parse(text: &str) -> Result<Self> {
        let url = ::url::Url::parse(text).map_err(|e| match e {
            ::url::ParseError::RelativeUrlWithoutBase => not_a_backend_url(text),
            e => Error::Config(format!(
                "`{}` is not a valid URL ({e}): check the host and port, and {ENCODE}",
                redact_url(text)
            )),
        })?;
        if !url.has_authority() {
            return Err(not_a_backend_url(text));
        }
        let username = decode(url.username(), "the user name", text)?;
        let password = match url.password() {
            Some(p) => Some(decode(p, "the password", text)?),
            None => None,
        };
        let query = UrlQuery::read(url.query().unwrap_or(""))?;
        Ok(Self {
            url,
            username,
            password,
            query,
        })
    }

    /// The scheme, lower case: `redis`, `amqps`, `sqs`, ...
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// The host as written (an IPv6 address in brackets, `[::1]`); `None`
    /// when there is none, as in `memory://`.
    pub fn host(&self) -> Option<&str> {
        self.url.host_str().filter(|h| !h.is_empty())
    }

    /// The port, when the URL gives one.
    pub fn port(&self) -> Option<u16> {
        self.url.port()
    }

    /// The user name, percent-decoded; empty when there is none.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password, percent-decoded.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Whether the URL holds a user name or a password.
    pub fn has_credentials(&self) -> bool {
        !self.username.is_empty() || self.password.is_some()
    }

    /// The path as written (percent-encoded, so `/%2f` stays apart from
    /// `//`): empty, or starting with `/`.
    pub fn path(&self) -> &str {
        self.url.path()
    }

    /// The fragment (after `#`), as written.
    pub fn fragment(&self) -> Option<&str> {
        self.url.fragment()
    }

    /// The settings of the query string.
    pub fn query(&self) -> &UrlQuery {
        &self.query
    }

    /// Refuses a setting found in none of the lists `known`, naming the
    /// closest known setting and listing them all: see [`UrlQuery::refuse_unknown`].
    pub fn refuse_unknown(&self, known: &[&[&str]]) -> Result<()> {
        self.query.refuse_unknown(self.scheme(), known)
    }

    /// The URL a client library connects with: this one with its query
    /// replaced by `settings` (none: no query), credentials and fragment
    /// kept. It holds the password: show it only through [`redact_url`].
    pub fn client_url(&self, settings: &[(&str, &str)]) -> String {
        let mut url = self.url.clone();
        url.set_query(None);
        if !settings.is_empty() {
            url.query_pairs_mut().extend_pairs(settings);
        }
        url.into()
    }

    /// The URL with its credentials hidden, for messages and logs.
    pub fn redacted(&self) -> String {
        redact_url(self.url.as_str())
    }
}

impl fmt::Debug for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BackendUrl").field(&self.redacted()).finish()
    }
}

fn not_a_backend_url(text: &str) -> Error {
    Error::Config(format!(
        "`{}` is not a backend URL: {SHAPES}",
        redact_url(text)
    ))
}

/// `s` percent-decoded; `what` names it in the error, which never shows it.
fn decode(s: &str, what: &str, url: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| {
            Error::Config(format!(
                "{what} in `{}` is not UTF-8 once percent-decoded: percent-encode its UTF-8 bytes",
                redact_url(url)
            ))
        })
}

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
    /// Reads the settings of the backend URL `url`: [`BackendUrl::parse`]'s query.
    pub fn parse(url: &str) -> Result<Self> {
        BackendUrl::parse(url).map(|u| u.query)
    }

    /// Reads a query string, as the `url` crate isolates it.
    ///
    /// Values are percent-decoded only: a `+` stays a `+` (a path such as
    /// `tls_ca=/etc/a+b.pem` is read as written), where HTML form decoding
    /// would make it a space.
    fn read(query: &str) -> Result<Self> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let (k, v) = (decode_setting(k)?, decode_setting(v)?);
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

fn decode_setting(s: &str) -> Result<String> {
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
/// A URL the `url` crate reads whole (every `@` in it ends its
/// credentials) is shown as that crate writes it, the user name kept when
/// there is a password. Any other text is hidden up to its last `@`, so a
/// password holding a raw `/`, `?`, `#` or `@` (a URL that does not parse,
/// or parses with the password in its path) is hidden whole; only a user
/// name that is plainly one (no `/`, `?`, `#`, `[` or `]`) is kept.
///
/// ```
/// use jobsmith_core::redact_url;
///
/// assert_eq!(redact_url("redis://me:s3cret@cache:6379/0"), "redis://me:***@cache:6379/0");
/// assert_eq!(redact_url("amqp://me:a/b@c@rabbit/%2f"), "amqp://me:***@rabbit/%2f");
/// assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    if !url.contains('@') {
        return url.to_owned();
    }
    match ::url::Url::parse(url) {
        Ok(parsed) if parsed.has_host() && !parsed[::url::Position::BeforePath..].contains('@') => {
            hide_credentials(parsed)
        }
        _ => hide_to_last_at(url),
    }
}

/// `url` with `***` for its password, or for its user name when that is
/// all it holds (it may be a password: `redis://secret@host`).
fn hide_credentials(mut url: ::url::Url) -> String {
    // Neither setter fails: the URL has a host.
    if url.password().is_some() && !url.username().is_empty() {
        let _ = url.set_password(Some("***"));
    } else if url.password().is_some() || !url.username().is_empty() {
        let _ = url.set_password(None);
        let _ = url.set_username("***");
    }
    url.into()
}

/// Text that is no URL the `url` crate reads whole, hidden up to its last `@`.
fn hide_to_last_at(text: &str) -> String {
    let Some(at) = text.rfind('@') else {
        return text.to_owned();
    };
    let (head, tail) = text.split_at(at);
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
    fn reads_every_part() {
        let url = BackendUrl::parse("AMQPS://me:p%2Fw@[::1]:5671/%2f?prefetch=5#x").expect("valid");
        assert_eq!(url.scheme(), "amqps");
        assert_eq!((url.host(), url.port()), (Some("[::1]"), Some(5671)));
        assert_eq!((url.username(), url.password()), ("me", Some("p/w")));
        assert_eq!((url.path(), url.fragment()), ("/%2f", Some("x")));
        assert_eq!(url.query().get("prefetch"), Some("5"));
        assert_eq!(
            url.client_url(&[("heartbeat", "4")]),
            "amqps://me:p%2Fw@[::1]:5671/%2f?heartbeat=4#x"
        );
        assert_eq!(
            format!("{url:?}"),
            "BackendUrl(\"amqps://me:***@[::1]:5671/%2f?prefetch=5#x\")"
        );
        let url = BackendUrl::parse("memory://?dead_max=3").expect("valid");
        assert_eq!((url.host(), url.path(), url.port()), (None, "", None));
        assert!(!url.has_credentials());
        assert_eq!(url.client_url(&[]), "memory://");
        let url = BackendUrl::parse("sqs://us-east-1/app").expect("valid");
        assert_eq!((url.host(), url.path()), (Some("us-east-1"), "/app"));
    }

    #[test]
    fn refuses_what_is_no_backend_url_without_showing_a_password() {
        for text in [
            "localhost:6379",
            "127.0.0.1:6379",
            "me:SECRET@h",
            "redis:/h",
            "",
        ] {
            let err = BackendUrl::parse(text).expect_err(text).to_string();
            assert!(err.contains("is not a backend URL"), "{text}: {err}");
            assert!(!err.contains("SECRET"), "{text}: {err}");
        }
        let err = BackendUrl::parse("redis://me:SECRET%FF@h")
            .expect_err("not UTF-8")
            .to_string();
        assert!(err.contains("password") && !err.contains("SECRET"), "{err}");
        let err = BackendUrl::parse("redis://me:SECRET/x@h")
            .expect_err("a raw `/`")
            .to_string();
        assert!(
            err.contains("`/` as `%2F`") && !err.contains("SECRET"),
            "{err}"
        );
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

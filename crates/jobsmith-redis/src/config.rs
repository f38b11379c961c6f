//! [`RedisConfig`]: what a `redis://` or `rediss://` URL says.

use jobsmith_core::{redact_url, BackendUrl, Error, Result, Settings};
use std::path::PathBuf;
use std::time::Duration;

/// The key prefix used when the URL does not give one.
pub const DEFAULT_PREFIX: &str = "jobsmith";

/// The URL settings of Redis's own, beside [`Settings::KEYS`].
const KEYS: &[&str] = &["prefix", "tls_ca"];

/// How long one Redis command may wait for its answer when the URL sets no
/// `call_timeout`: 10 s (an idle reserve's blocking wait comes on top).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a `#insecure` URL is refused when this build cannot skip certificate checks.
const INSECURE_OFF: &str =
    "`#insecure` skips TLS certificate checks, which this build leaves out: \
    enable the `tls-insecure` feature of jobsmith-redis (the facade's `redis-tls-insecure`), \
    for tests only, or trust the server's CA with `tls_ca=/path/to/ca.pem`";

/// The longest a connection attempt may take, whatever `call_timeout` says.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the Redis server is and how jobsmith uses it, read from a URL.
///
/// `redis://[user[:password]@]host[:port][/db][?prefix=..&dead_max=..&dead_max_age=..&unique_for=..&max_payload=..&call_timeout=..]`;
/// `rediss://` is the same over TLS (feature `tls`). The path is the
/// database number, and nothing else: none is database 0. Every key
/// jobsmith writes starts with `prefix` (default [`DEFAULT_PREFIX`]).
///
/// Over TLS the server's certificate is checked against the system's root
/// certificates, or, with `tls_ca=/path/to/ca.pem`, against the CA
/// certificates in that PEM file only (a private CA; as `redis-cli --cacert`).
/// The URL fragment `#insecure` skips the checks altogether: for tests only,
/// and only with the `tls-insecure` feature (the facade's
/// `redis-tls-insecure`); without it such a URL is an [`Error::Config`].
///
/// ```
/// # use jobsmith_redis::RedisConfig;
/// # fn main() -> jobsmith_core::Result<()> {
/// # #[cfg(feature = "tls")] {
/// let c = RedisConfig::from_url("rediss://cache:6380?prefix=app&tls_ca=/etc/redis/ca.pem")?;
/// assert_eq!(c.tls_ca.as_deref(), Some(std::path::Path::new("/etc/redis/ca.pem")));
/// # }
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The connection part of the URL, with the query string removed.
    pub(crate) server: String,
    /// The key prefix.
    pub prefix: String,
    /// The settings every backend honours.
    pub settings: Settings,
    /// A PEM file of CA certificates to trust instead of the system's roots
    /// (`tls_ca=` in the URL; `rediss://` only).
    pub tls_ca: Option<PathBuf>,
}

impl RedisConfig {
    /// Reads a `redis://` or `rediss://` URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let url = BackendUrl::parse(url)?;
        let scheme = url.scheme();
        if scheme != "redis" && scheme != "rediss" {
            return Err(Error::Config(format!("`{scheme}://` is not a Redis URL: write `redis://host:6379` or `rediss://host:6380`")));
        }
        check_fragment(scheme, url.fragment())?;
        check_database(&url)?;
        url.refuse_unknown(&[KEYS, Settings::KEYS])?;
        let settings = Settings::from_query(url.query().iter())?;
        let mut prefix = DEFAULT_PREFIX.to_owned();
        let mut tls_ca = None;
        for (k, v) in url.query().iter() {
            match k {
                "prefix" if v.is_empty() => {
                    return Err(Error::Config(
                        "bad URL setting `prefix=`: the key prefix cannot be empty".into(),
                    ));
                }
                "prefix" => prefix = v.to_owned(),
                "tls_ca" if v.is_empty() => {
                    return Err(Error::Config(
                        "bad URL setting `tls_ca=`: give the path of a PEM file of CA certificates"
                            .into(),
                    ));
                }
                "tls_ca" if scheme != "rediss" => {
                    return Err(Error::Config(format!(
                        "bad URL setting `tls_ca={v}`: a CA applies only to TLS, write `rediss://`"
                    )));
                }
                "tls_ca" => tls_ca = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        if scheme == "rediss" && !cfg!(feature = "tls") {
            return Err(Error::Config(
                "`rediss://` needs TLS support: enable the `tls` feature of jobsmith-redis".into(),
            ));
        }
        if url.fragment() == Some("insecure") && !cfg!(feature = "tls-insecure") {
            return Err(Error::Config(INSECURE_OFF.into()));
        }
        Ok(Self {
            // The redis client reads the fragment itself (`#insecure`).
            server: url.client_url(&[]),
            prefix,
            settings,
            tls_ca,
        })
    }

    /// The same server with another key prefix.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The same server, trusting the CA certificates in the PEM file `path`
    /// instead of the system's roots (as `tls_ca=` in the URL does; for a
    /// path that a URL cannot spell, such as one with `&` or `#`).
    #[must_use]
    pub fn with_tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self
    }

    /// How long one command may wait for its answer: the `call_timeout`
    /// setting, or [`DEFAULT_CALL_TIMEOUT`].
    pub fn call_timeout(&self) -> Duration {
        self.settings.call_timeout_or(DEFAULT_CALL_TIMEOUT)
    }

    /// How long a connection attempt may take: 2 s, or `call_timeout` if shorter.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.call_timeout().min(CONNECT_TIMEOUT)
    }

    /// The same server with other settings.
    #[must_use]
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }
}

/// Refuses a fragment other than `#insecure` on `rediss://`.
fn check_fragment(scheme: &str, fragment: Option<&str>) -> Result<()> {
    match fragment {
        None => Ok(()),
        Some("insecure") if scheme == "rediss" => Ok(()),
        Some("insecure") => Err(Error::Config(
            "`#insecure` skips TLS checks, and `redis://` has no TLS: drop it, or write `rediss://`"
                .into(),
        )),
        Some(f) => Err(Error::Config(format!(
            "unknown Redis URL fragment `#{}`: the only one is `#insecure` (`rediss://` only, for tests); percent-encode a `#` in a password as `%23`",
            redact_url(f)
        ))),
    }
}

/// Refuses a path other than a database number (none, `/`, `/0`, `/15`),
/// which the redis client would refuse only at connect.
fn check_database(url: &BackendUrl) -> Result<()> {
    let path = url.path();
    let db = path.strip_prefix('/').unwrap_or(path);
    if db.is_empty() || (db.bytes().all(|b| b.is_ascii_digit()) && db.parse::<u32>().is_ok()) {
        return Ok(());
    }
    let scheme = url.scheme();
    if path.contains('@') {
        // A password holding a raw `/` (`me:123/pw@host`): the URL reads its
        // start as a host and port, the rest as the path. Show none of it.
        return Err(Error::Config(format!(
            "a {scheme}:// URL's path is a database number, and this one holds `@`: \
             percent-encode a `/` in a password as `%2F` (`{scheme}://me:p%2Fw@host:6379/0`)"
        )));
    }
    let host = url.host().unwrap_or("host");
    let at = url
        .port()
        .map_or_else(|| host.to_owned(), |p| format!("{host}:{p}"));
    Err(Error::Config(format!(
        "`{path}` is not a Redis database number: a {scheme}:// URL's path is the database \
         (0 to 15 on a default server), as in `{scheme}://{at}/0`; a key prefix is `?prefix=…`"
    )))
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("server", &redact_url(&self.server))
            .field("prefix", &self.prefix)
            .field("settings", &self.settings)
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reads_credentials_db_prefix_and_settings() {
        let c = RedisConfig::from_url(
            "redis://me:s3cret@cache:6380/2?prefix=app&dead_max=7&unique_for=1h",
        )
        .expect("valid");
        assert_eq!(c.server, "redis://me:s3cret@cache:6380/2");
        assert_eq!(c.prefix, "app");
        assert_eq!(c.settings.dead_max, 7);
        assert_eq!(c.settings.unique_for, Duration::from_secs(3600));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "Debug hides the password"
        );
    }

    #[test]
    fn defaults_and_errors() {
        let c = RedisConfig::from_url("redis://127.0.0.1").expect("valid");
        assert_eq!(
            (c.prefix.as_str(), c.settings),
            (DEFAULT_PREFIX, Settings::default())
        );
        assert!(RedisConfig::from_url("amqp://x").is_err());
        assert!(RedisConfig::from_url("redis://x?prefix=").is_err());
        assert!(RedisConfig::from_url("redis://x?dead_max=many").is_err());
        assert_eq!(c.tls_ca, None);
        let e = RedisConfig::from_url("redis://x?tls_ca=/ca.pem").expect_err("plain TCP");
        assert!(e.to_string().contains("rediss://"), "{e}");
    }

    #[test]
    fn the_client_gets_a_password_with_any_reserved_character_decoded() {
        for c in ['/', '@', '?', '#', '%', ':'] {
            let url = format!("redis://me:a%{:02X}b@cache:6380/2?prefix=p", c as u32);
            let config = RedisConfig::from_url(&url).expect(&url);
            assert!(!format!("{config:?}").contains("a%"), "{config:?}");
            let client = redis::Client::open(config.server.as_str()).expect("the client reads it");
            let info = client.get_connection_info().redis_settings();
            assert_eq!(info.password(), Some(format!("a{c}b").as_str()), "{url}");
            assert_eq!((info.username(), info.db()), (Some("me"), 2), "{url}");
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn reads_tls_ca() {
        let c =
            RedisConfig::from_url("rediss://h:6380/1?tls_ca=/etc/ca.pem&prefix=p").expect("valid");
        assert_eq!(c.server, "rediss://h:6380/1");
        assert_eq!(c.tls_ca, Some(PathBuf::from("/etc/ca.pem")));
        assert!(RedisConfig::from_url("rediss://h?tls_ca=").is_err());
        let c = RedisConfig::from_url("rediss://h")
            .expect("valid")
            .with_tls_ca("/a&b.pem");
        assert_eq!(c.tls_ca, Some(PathBuf::from("/a&b.pem")));
    }

    #[cfg(feature = "tls-insecure")]
    #[test]
    fn reads_insecure() {
        let c = RedisConfig::from_url("rediss://h:6380/1?tls_ca=/etc/ca.pem&prefix=p#insecure")
            .expect("valid");
        assert_eq!(c.server, "rediss://h:6380/1#insecure");
    }

    #[cfg(all(feature = "tls", not(feature = "tls-insecure")))]
    #[test]
    fn insecure_without_its_feature_names_the_feature() {
        let e = RedisConfig::from_url("rediss://h:6380#insecure").expect_err("no tls-insecure");
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(e.to_string().contains("`tls-insecure` feature"), "{e}");
    }
}

//! [`RedisConfig`]: what a `redis://` or `rediss://` URL says.

use jobsmith_core::{query_pairs, split_scheme, Error, Result, Settings};

/// The key prefix used when the URL does not give one.
pub const DEFAULT_PREFIX: &str = "jobsmith";

/// Where the Redis server is and how jobsmith uses it, read from a URL.
///
/// `redis://[user[:password]@]host[:port][/db][?prefix=..&dead_max=..&dead_max_age=..&unique_for=..&max_payload=..]`;
/// `rediss://` is the same over TLS (feature `tls`), and `#insecure` skips
/// certificate checks. Every key jobsmith writes starts with `prefix`
/// (default [`DEFAULT_PREFIX`]).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The connection part of the URL, with the query string removed.
    pub(crate) server: String,
    /// The key prefix.
    pub prefix: String,
    /// The settings every backend honours.
    pub settings: Settings,
}

impl RedisConfig {
    /// Reads a `redis://` or `rediss://` URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let (scheme, rest) = split_scheme(url)?;
        if scheme != "redis" && scheme != "rediss" {
            return Err(Error::Config(format!("`{scheme}://` is not a Redis URL: write `redis://host:6379` or `rediss://host:6380`")));
        }
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        let settings = Settings::from_query(query_pairs(rest))?;
        let mut prefix = DEFAULT_PREFIX.to_owned();
        for (k, v) in query_pairs(rest) {
            if k == "prefix" {
                if v.is_empty() {
                    return Err(Error::Config(
                        "bad URL setting `prefix=`: the key prefix cannot be empty".into(),
                    ));
                }
                prefix = v.to_owned();
            }
        }
        let base = rest.split_once('?').map_or(rest, |(b, _)| b);
        let mut server = format!("{scheme}://{base}");
        if let Some(f) = fragment {
            server.push('#');
            server.push_str(f);
        }
        if scheme == "rediss" && !cfg!(feature = "tls") {
            return Err(Error::Config(
                "`rediss://` needs TLS support: enable the `tls` feature of jobsmith-redis".into(),
            ));
        }
        Ok(Self {
            server,
            prefix,
            settings,
        })
    }

    /// The same server with another key prefix.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The same server with other settings.
    #[must_use]
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The server URL may hold a password: show only where it points.
        let shown = match self.server.split_once("://") {
            Some((scheme, rest)) => format!(
                "{scheme}://{}",
                rest.rsplit_once('@').map_or(rest, |(_, host)| host)
            ),
            None => self.server.clone(),
        };
        f.debug_struct("RedisConfig")
            .field("server", &shown)
            .field("prefix", &self.prefix)
            .field("settings", &self.settings)
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
            "redis://me:s3cret@cache:6380/2?prefix=app&dead_max=7&unique_for=1h&other=1",
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
    }
}

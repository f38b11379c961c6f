//! [`AmqpConfig`]: what an `amqp://` or `amqps://` URL says.

use jobsmith_core::{parse_duration, query_pairs, split_scheme, Error, Result, Settings};
use std::time::Duration;

/// The queue-name prefix used when the URL does not give one.
pub const DEFAULT_PREFIX: &str = "jobsmith";

/// RabbitMQ's own default `consumer_timeout`: 30 minutes.
pub const DEFAULT_CONSUMER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Where the broker is and how jobsmith uses it, read from a URL.
///
/// `amqp://[user[:password]@]host[:port][/vhost][?prefix=..&quorum=..&queue_version=..&prefetch=..&expires=..&consumer_timeout=..&dead_max=..&dead_max_age=..&unique_for=..&max_payload=..]`;
/// `amqps://` is the same over TLS (feature `tls`). The vhost is
/// percent-encoded (`%2f` is `/`). Other query keys (`heartbeat`,
/// `connection_timeout`, `frame_max`, `channel_max`) go to the AMQP client.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// The connection part of the URL, with jobsmith's own query keys removed.
    pub(crate) server: String,
    /// Every queue and exchange jobsmith declares starts with this and a dot.
    pub prefix: String,
    /// Declare work, dead-letter and expired queues as quorum queues (no priorities on 3.10).
    pub quorum: bool,
    /// The classic queue version of work queues: 1 (default) or 2. Version 2
    /// costs the broker less per published message (on the bench it enqueues
    /// about 1.4x faster) but hands deliveries out in smaller runs, which
    /// costs the worker more per job (it drains about 0.7x as fast); see
    /// `docs/benchmarks.md`. Ignored with `quorum`.
    pub queue_version: u8,
    /// Per-queue consumer prefetch: how many deliveries a process may hold unacknowledged.
    pub prefetch: u16,
    /// If set, every queue is declared with `x-expires` (deleted after being unused
    /// this long): for throw-away namespaces such as tests.
    pub expires: Option<Duration>,
    /// The broker's `consumer_timeout` (default 30 min, RabbitMQ's default).
    /// A delivery held unacknowledged for half of it is handed over to a park
    /// queue, so the broker never closes the channel under a long job.
    pub consumer_timeout: Duration,
    /// The settings every backend honours.
    pub settings: Settings,
}

impl AmqpConfig {
    /// Reads an `amqp://` or `amqps://` URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let (scheme, rest) = split_scheme(url)?;
        if scheme != "amqp" && scheme != "amqps" {
            return Err(Error::Config(format!(
                "`{scheme}://` is not an AMQP URL: write `amqp://user:pass@host:5672/%2f`"
            )));
        }
        if scheme == "amqps" && !cfg!(feature = "tls") {
            return Err(Error::Config(
                "`amqps://` needs TLS support: enable the `tls` feature of jobsmith-amqp".into(),
            ));
        }
        let settings = Settings::from_query(query_pairs(rest))?;
        let bad = |k: &str, v: &str, why: String| {
            Error::Config(format!("bad URL setting `{k}={v}`: {why}"))
        };
        let mut cfg = Self {
            server: String::new(),
            prefix: DEFAULT_PREFIX.to_owned(),
            quorum: false,
            queue_version: 1,
            prefetch: 500,
            expires: None,
            consumer_timeout: DEFAULT_CONSUMER_TIMEOUT,
            settings,
        };
        let mut passthrough = Vec::new();
        for (k, v) in query_pairs(rest) {
            match k {
                "prefix" => {
                    if v.is_empty() || v.contains('*') || v.contains('#') {
                        return Err(bad(k, v, "a non-empty name without `*` or `#`".into()));
                    }
                    v.clone_into(&mut cfg.prefix);
                }
                "quorum" => {
                    cfg.quorum = v
                        .parse()
                        .map_err(|_| bad(k, v, "write `true` or `false`".into()))?;
                }
                "queue_version" => {
                    cfg.queue_version = match v {
                        "1" => 1,
                        "2" => 2,
                        _ => return Err(bad(k, v, "classic queue version `1` or `2`".into())),
                    };
                }
                "prefetch" => {
                    cfg.prefetch = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(k, v, "a number from 1 to 65535".into()))?;
                }
                "expires" => cfg.expires = Some(parse_duration(v).map_err(|e| bad(k, v, e))?),
                "consumer_timeout" => {
                    cfg.consumer_timeout =
                        parse_duration(v).map_err(|e| bad(k, v, e)).and_then(|d| {
                            if d >= Duration::from_secs(1) {
                                Ok(d)
                            } else {
                                Err(bad(k, v, "at least 1s".into()))
                            }
                        })?;
                }
                "dead_max" | "dead_max_age" | "unique_for" | "max_payload" => {}
                _ => passthrough.push(format!("{k}={v}")),
            }
        }
        let base = rest.split_once('?').map_or(rest, |(b, _)| b);
        cfg.server = format!("{scheme}://{base}");
        if !passthrough.is_empty() {
            cfg.server.push('?');
            cfg.server.push_str(&passthrough.join("&"));
        }
        Ok(cfg)
    }

    /// Whether work queues are asked for as classic queue version 2
    /// (`queue_version=2`; quorum work queues have no version).
    pub(crate) fn version_2(&self) -> bool {
        self.queue_version == 2 && !self.quorum
    }

    /// The connection URL without credentials, for logs.
    pub fn redacted(&self) -> String {
        match self.server.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => self.server.clone(),
            },
            None => self.server.clone(),
        }
    }
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("server", &self.redacted())
            .field("prefix", &self.prefix)
            .field("quorum", &self.quorum)
            .field("queue_version", &self.queue_version)
            .field("prefetch", &self.prefetch)
            .field("expires", &self.expires)
            .field("consumer_timeout", &self.consumer_timeout)
            .field("settings", &self.settings)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_keys_and_passes_the_rest_on() {
        let c = AmqpConfig::from_url(
            "amqp://u:p@h:5672/%2f?prefix=x&quorum=true&queue_version=2&prefetch=10&heartbeat=5&dead_max=3&consumer_timeout=1h",
        )
        .expect("valid");
        assert_eq!(c.prefix, "x");
        assert!(c.quorum);
        assert_eq!(c.queue_version, 2);
        assert_eq!(c.prefetch, 10);
        assert_eq!(c.consumer_timeout, Duration::from_secs(3600));
        assert_eq!(c.settings.dead_max, 3);
        assert_eq!(c.server, "amqp://u:p@h:5672/%2f?heartbeat=5");
        assert_eq!(c.redacted(), "amqp://***@h:5672/%2f?heartbeat=5");
    }

    #[test]
    fn rejects_bad_values() {
        assert!(AmqpConfig::from_url("amqp://h?prefetch=0").is_err());
        assert!(AmqpConfig::from_url("amqp://h?quorum=yes").is_err());
        let err = AmqpConfig::from_url("amqp://h?queue_version=3")
            .expect_err("no version 3")
            .to_string();
        assert!(err.contains("classic queue version `1` or `2`"), "{err}");
        assert_eq!(
            AmqpConfig::from_url("amqp://h")
                .expect("valid")
                .queue_version,
            1
        );
        assert!(AmqpConfig::from_url("amqp://h?consumer_timeout=10ms").is_err());
        assert_eq!(
            AmqpConfig::from_url("amqp://h")
                .expect("valid")
                .consumer_timeout,
            DEFAULT_CONSUMER_TIMEOUT
        );
        assert!(AmqpConfig::from_url("redis://h").is_err());
    }
}

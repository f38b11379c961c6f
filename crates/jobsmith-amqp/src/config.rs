//! [`AmqpConfig`]: what an `amqp://` or `amqps://` URL says.

use jobsmith_core::{parse_duration, redact_url, BackendUrl, Error, Result, Settings};
use std::path::PathBuf;
use std::time::Duration;

/// The queue-name prefix used when the URL does not give one.
pub const DEFAULT_PREFIX: &str = "jobsmith";

/// The URL settings of AMQP's own, beside [`Settings::KEYS`].
const KEYS: &[&str] = &[
    "prefix",
    "quorum",
    "queue_version",
    "prefetch",
    "expires",
    "consumer_timeout",
    "tls_ca",
];

/// The URL settings passed on to the AMQP client (lapin), each checked by
/// [`check_client_setting`].
const CLIENT_KEYS: &[&str] = &[
    "heartbeat",
    "connection_timeout",
    "frame_max",
    "channel_max",
];

/// AMQP's smallest frame: a broker refuses a `frame_max` below it.
const FRAME_MIN_SIZE: u32 = 4096;

/// The fewest channels jobsmith can work with: it keeps three open on its
/// connection (publish, consume, admin) and opens more for dead-letter
/// browses and after a channel error.
const CHANNEL_MIN: u16 = 8;

/// How long a call to the broker may wait for its answer when the URL sets
/// no `call_timeout`: 30 s.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// RabbitMQ's own default `consumer_timeout`: 30 minutes.
pub const DEFAULT_CONSUMER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Where the broker is and how jobsmith uses it, read from a URL.
///
/// `amqp://[user[:password]@]host[:port][/vhost][?prefix=..&quorum=..&queue_version=..&prefetch=..&expires=..&consumer_timeout=..&dead_max=..&dead_max_age=..&unique_for=..&max_payload=..&call_timeout=..]`;
/// `amqps://` is the same over TLS (feature `tls`). The vhost is
/// percent-encoded (`%2f` is `/`). `call_timeout` (default
/// [`DEFAULT_CALL_TIMEOUT`]) bounds every call through the connection's
/// heartbeat: see [`AmqpConfig::call_timeout`]. Other query keys go to the
/// AMQP client, each refused when the client or the broker would refuse it
/// at connect, or when it would lift that bound: `heartbeat` (whole seconds,
/// 1 to 2/5 of `call_timeout`), `connection_timeout` (milliseconds, 1 to
/// `call_timeout`), `frame_max` (4096 to 4294967295 bytes, or 0 for the
/// broker's own) and `channel_max` (8 to 65535, or 0 for the broker's own).
///
/// Over TLS the broker's certificate is checked against the system's root
/// certificates; `tls_ca=/path/to/ca.pem` adds the CA certificates in that
/// PEM file (a private CA, as RabbitMQ's own TLS guide sets up).
///
/// ```
/// # use jobsmith_amqp::AmqpConfig;
/// # fn main() -> jobsmith_core::Result<()> {
/// # #[cfg(feature = "tls")] {
/// let c = AmqpConfig::from_url("amqps://app:secret@mq:5671/%2f?prefix=app&tls_ca=/etc/rabbitmq/ca.pem")?;
/// assert_eq!(c.tls_ca.as_deref(), Some(std::path::Path::new("/etc/rabbitmq/ca.pem")));
/// # }
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// The connection part of the URL, with jobsmith's own query keys removed.
    pub(crate) server: String,
    /// Whether the URL sets the client's `heartbeat` itself.
    sets_heartbeat: bool,
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
    /// A PEM file of CA certificates to trust besides the system's roots
    /// (`tls_ca=` in the URL; `amqps://` only).
    pub tls_ca: Option<PathBuf>,
}

impl AmqpConfig {
    /// Reads an `amqp://` or `amqps://` URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let url = BackendUrl::parse(url)?;
        let scheme = url.scheme();
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
        if url.fragment().is_some() {
            return Err(Error::Config(format!(
                "`{}`: an AMQP URL has no fragment (`#…`); percent-encode a `#` in a password as `%23`",
                url.redacted()
            )));
        }
        url.refuse_unknown(&[KEYS, CLIENT_KEYS, Settings::KEYS])?;
        let settings = Settings::from_query(url.query().iter())?;
        let bad = |k: &str, v: &str, why: String| {
            Error::Config(format!("bad URL setting `{k}={v}`: {why}"))
        };
        let mut cfg = Self {
            server: String::new(),
            sets_heartbeat: false,
            prefix: DEFAULT_PREFIX.to_owned(),
            quorum: false,
            queue_version: 1,
            prefetch: 500,
            expires: None,
            consumer_timeout: DEFAULT_CONSUMER_TIMEOUT,
            settings,
            tls_ca: None,
        };
        let mut passthrough = Vec::new();
        for (k, v) in url.query().iter() {
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
                "tls_ca" if v.is_empty() => {
                    return Err(bad(
                        k,
                        v,
                        "give the path of a PEM file of CA certificates".into(),
                    ));
                }
                "tls_ca" if scheme != "amqps" => {
                    return Err(bad(
                        k,
                        v,
                        "a CA applies only to TLS, write `amqps://`".into(),
                    ));
                }
                "tls_ca" => cfg.tls_ca = Some(PathBuf::from(v)),
                _ if CLIENT_KEYS.contains(&k) => {
                    check_client_setting(k, v, cfg.call_timeout()).map_err(|why| bad(k, v, why))?;
                    passthrough.push((k, v));
                }
                _ => {}
            }
        }
        cfg.server = url.client_url(&passthrough);
        cfg.sets_heartbeat = passthrough.iter().any(|(k, _)| *k == "heartbeat");
        Ok(cfg)
    }

    /// The same broker, also trusting the CA certificates in the PEM file
    /// `path` (as `tls_ca=` in the URL does; for a path that a URL cannot
    /// spell, such as one with `&` or `#`).
    #[must_use]
    pub fn with_tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self
    }

    /// Whether work queues are asked for as classic queue version 2
    /// (`queue_version=2`; quorum work queues have no version).
    pub(crate) fn version_2(&self) -> bool {
        self.queue_version == 2 && !self.quorum
    }

    /// How long a call to the broker may wait for its answer: the
    /// `call_timeout` setting, or [`DEFAULT_CALL_TIMEOUT`].
    pub fn call_timeout(&self) -> Duration {
        self.settings.call_timeout_or(DEFAULT_CALL_TIMEOUT)
    }

    /// The URL the AMQP client connects with: the server, and unless the URL
    /// sets its own `heartbeat`, a heartbeat of 2/5 of `call_timeout` in
    /// whole seconds (at least 1 s).
    ///
    /// The client closes a connection that has heard nothing from the broker
    /// for two heartbeats (it looks every half heartbeat), and every call
    /// waiting on it fails: a broker that hangs fails every call, and an idle
    /// consumer's wait, within `call_timeout` (2 s for any shorter setting).
    pub(crate) fn connection_uri(&self) -> String {
        if self.sets_heartbeat {
            return self.server.clone();
        }
        let secs = heartbeat_for(self.call_timeout());
        let sep = if self.server.contains('?') { '&' } else { '?' };
        format!("{}{sep}heartbeat={secs}", self.server)
    }

    /// The connection URL without credentials, for logs.
    pub fn redacted(&self) -> String {
        redact_url(&self.server)
    }
}

/// The longest heartbeat that keeps a hung broker within `call_timeout`,
/// in whole seconds (at least 1), and the heartbeat when the URL sets none:
/// the client notices a silent broker after two and a half heartbeats (it
/// drops the connection after two, and looks every half), so 2/5 of it.
fn heartbeat_for(call_timeout: Duration) -> u16 {
    u16::try_from(call_timeout.as_millis() * 2 / 5_000)
        .unwrap_or(u16::MAX)
        .max(1)
}

/// Why the client setting `key=value` is refused, if it is: what the client
/// cannot read, what the broker refuses at connect, and what would lift the
/// bound `call_timeout` puts on every call.
fn check_client_setting(
    key: &str,
    value: &str,
    call_timeout: Duration,
) -> std::result::Result<(), String> {
    match key {
        "heartbeat" => {
            let most = heartbeat_for(call_timeout);
            let range = format!("whole seconds from 1 to {most} (2/5 of call_timeout={call_timeout:?}; the default when heartbeat is left out)");
            match value.parse::<u16>() {
                Ok(0) => Err(format!(
                    "0 leaves the heartbeat to the broker, or turns it off, and then nothing \
                     bounds a call by call_timeout; give {range}"
                )),
                Ok(n) if n > most => Err(format!(
                    "the client notices a hung broker after two and a half heartbeats \
                     ({}s), beyond call_timeout={call_timeout:?}; give {range}, or raise call_timeout",
                    u32::from(n) * 5 / 2
                )),
                Ok(_) => Ok(()),
                Err(_) => Err(format!("give {range}")),
            }
        }
        "connection_timeout" => {
            let most = call_timeout.as_millis();
            match value.parse::<u128>() {
                Ok(n) if (1..=most).contains(&n) => Ok(()),
                _ => Err(format!(
                    "the TCP connect's time limit, in whole milliseconds from 1 to {most} \
                     (call_timeout={call_timeout:?}, which bounds a connect whatever this says)"
                )),
            }
        }
        "frame_max" => match value.parse::<u32>() {
            Ok(n) if n == 0 || n >= FRAME_MIN_SIZE => Ok(()),
            _ => Err(format!(
                "the largest frame in bytes, {FRAME_MIN_SIZE} to {} ({FRAME_MIN_SIZE} is \
                 AMQP's smallest frame), or 0 for the broker's own limit",
                u32::MAX
            )),
        },
        "channel_max" => match value.parse::<u16>() {
            Ok(n) if n == 0 || n >= CHANNEL_MIN => Ok(()),
            _ => Err(format!(
                "the most channels on the connection, {CHANNEL_MIN} to {} (jobsmith keeps \
                 three open and opens more for dead-letter browses), or 0 for the broker's own limit",
                u16::MAX
            )),
        },
        _ => Ok(()),
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
            .field("tls_ca", &self.tls_ca)
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
        assert_eq!(c.redacted(), "amqp://u:***@h:5672/%2f?heartbeat=5");
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

    #[test]
    fn call_timeout_sets_the_heartbeat_unless_the_url_does() {
        let c = AmqpConfig::from_url("amqp://h").expect("valid");
        assert_eq!(c.call_timeout(), DEFAULT_CALL_TIMEOUT);
        assert_eq!(c.connection_uri(), "amqp://h?heartbeat=12");
        let c = AmqpConfig::from_url("amqp://h/%2f?call_timeout=10s&prefix=p").expect("valid");
        assert_eq!(c.call_timeout(), Duration::from_secs(10));
        assert_eq!(
            c.server, "amqp://h/%2f",
            "call_timeout is ours, not the client's"
        );
        assert_eq!(c.connection_uri(), "amqp://h/%2f?heartbeat=4");
        let c = AmqpConfig::from_url("amqp://h?call_timeout=500ms").expect("valid");
        assert_eq!(c.connection_uri(), "amqp://h?heartbeat=1");
        let c = AmqpConfig::from_url("amqp://h?frame_max=8192&heartbeat=5").expect("valid");
        assert_eq!(c.connection_uri(), "amqp://h?frame_max=8192&heartbeat=5");
        assert!(AmqpConfig::from_url("amqp://h?call_timeout=0s").is_err());
    }

    #[test]
    fn the_client_gets_a_password_with_any_reserved_character_decoded() {
        for c in ['/', '@', '?', '#', '%', ':'] {
            let url = format!("amqp://me:a%{:02X}b@[::1]:5673/%2f?prefix=p", c as u32);
            let config = AmqpConfig::from_url(&url).expect(&url);
            assert_eq!(config.redacted(), "amqp://me:***@[::1]:5673/%2f", "{url}");
            let uri: lapin::uri::AMQPUri = config.connection_uri().parse().expect("lapin reads it");
            let user = &uri.authority.userinfo;
            assert_eq!(
                (user.username.as_str(), user.password.as_str()),
                ("me", format!("a{c}b").as_str()),
                "{url}"
            );
            assert_eq!(
                (uri.authority.port, uri.vhost.as_str()),
                (5673, "/"),
                "{url}"
            );
        }
    }

    #[test]
    fn tls_ca_is_for_amqps_only() {
        let e = AmqpConfig::from_url("amqp://h?tls_ca=/ca.pem").expect_err("plain TCP");
        assert_eq!(
            e.to_string(),
            "bad URL setting `tls_ca=/ca.pem`: a CA applies only to TLS, write `amqps://`"
        );
        assert_eq!(
            AmqpConfig::from_url("amqp://h").expect("valid").tls_ca,
            None
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn reads_tls_ca() {
        let c = AmqpConfig::from_url("amqps://u:p@h:5671/%2f?tls_ca=/etc/a%26b.pem&heartbeat=5")
            .expect("valid");
        assert_eq!(c.tls_ca, Some(PathBuf::from("/etc/a&b.pem")));
        assert_eq!(c.server, "amqps://u:p@h:5671/%2f?heartbeat=5");
        assert!(AmqpConfig::from_url("amqps://h?tls_ca=").is_err());
        let c = AmqpConfig::from_url("amqps://h")
            .expect("valid")
            .with_tls_ca("/x#y.pem");
        assert_eq!(c.tls_ca, Some(PathBuf::from("/x#y.pem")));
    }
}

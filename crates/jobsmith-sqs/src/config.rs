//! [`SqsConfig`]: what an `sqs://` URL says.

use jobsmith_core::{BackendUrl, Error, Result, Settings};
use std::time::Duration;

/// The queue-name prefix used when the URL names none.
pub const DEFAULT_PREFIX: &str = "jobsmith";

/// The default limit on one message, in bytes: SQS's classic 256 KiB
/// (`max_payload` raises it up to [`SQS_MAX_MESSAGE`]). Counted as SQS
/// counts them: the body's UTF-8 bytes plus every message attribute's name,
/// type and value.
pub const SQS_MESSAGE_LIMIT: usize = 262_144;

/// The largest message SQS takes on any queue, in bytes (1 MiB): the most
/// `max_payload` may say. A queue whose `MaximumMessageSize` is lower
/// refuses larger messages at enqueue.
pub const SQS_MAX_MESSAGE: usize = 1_048_576;

/// The default [`SqsConfig::dead_scan_window`]: 30 s.
pub const DEFAULT_DEAD_SCAN_WINDOW: Duration = Duration::from_secs(30);

/// The URL settings of SQS's own, beside [`Settings::KEYS`].
const KEYS: &[&str] = &[
    "prefix",
    "endpoint",
    "fifo",
    "max_receives",
    "keys_table",
    "dead_scan_window",
];

/// How long one SQS or DynamoDB request may wait for its answer, retries
/// included, when the URL sets no `call_timeout`: 30 s (a long poll's own
/// wait comes on top).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// SQS's longest visibility timeout: 12 hours.
pub(crate) const MAX_VISIBILITY_SECS: u64 = 43_200;

/// How an [`SqsBackend`](crate::SqsBackend) reaches SQS and names its queues.
///
/// Written as a URL:
/// `sqs://<region>[/<prefix>]?endpoint=<url>&fifo=true&max_receives=50&keys_table=<name>&dead_scan_window=30s`
/// (or `?prefix=<prefix>`; values percent-encoded, an unknown setting refused)
/// plus the [`Settings`] every backend reads (`dead_max`, `dead_max_age`,
/// `unique_for`, `max_payload`: default [`SQS_MESSAGE_LIMIT`], at most
/// [`SQS_MAX_MESSAGE`]; `call_timeout`: default [`DEFAULT_CALL_TIMEOUT`]). Credentials never appear in the URL: they
/// come from the standard AWS chain (environment, profile, web identity,
/// container or instance role).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqsConfig {
    /// The AWS region, such as `us-east-1`.
    pub region: String,
    /// Every queue this backend creates or uses is named `<prefix>-...`.
    pub prefix: String,
    /// An endpoint to use instead of AWS's (moto, LocalStack, ElasticMQ).
    pub endpoint: Option<String>,
    /// Use FIFO queues (`.fifo`): message group and deduplication id come
    /// from the job's idempotency key, or its id when it has none.
    pub fifo: bool,
    /// A message received this many times without being settled (its
    /// workers kept dying) is moved to the dead-letter queue by SQS's own
    /// redrive policy. Default 50.
    pub max_receives: u32,
    /// The DynamoDB table that holds idempotency keys across processes;
    /// `None` for `<prefix>-keys`. Created when a keyed job first needs it.
    pub keys_table: Option<String>,
    /// How long a dead-letter scan first hides each message it reads, in
    /// whole seconds (1 s to 12 h; default 30 s). SQS cannot list a queue,
    /// so listing, requeueing or purging dead jobs receives them all; a
    /// scan that outlasts this window hides what it holds again for twice
    /// as long, so a dead-letter queue of any depth is read to its end.
    pub dead_scan_window: Duration,
    /// The settings every backend honours.
    pub settings: Settings,
}

impl SqsConfig {
    /// A configuration for `region` with the default prefix and settings.
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            endpoint: None,
            fifo: false,
            max_receives: 50,
            keys_table: None,
            dead_scan_window: DEFAULT_DEAD_SCAN_WINDOW,
            settings: Settings::default(),
        }
    }

    /// Reads an `sqs://<region>?...` URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let url = BackendUrl::parse(url)?;
        if url.scheme() != "sqs" {
            return Err(Error::Config(format!(
                "`{}://` is not an sqs:// URL",
                url.scheme()
            )));
        }
        if url.fragment().is_some() {
            return Err(Error::Config(
                "an sqs:// URL has no fragment (`#…`): write `sqs://us-east-1/myapp?endpoint=…`"
                    .into(),
            ));
        }
        let (region, path) = region_and_path(&url)?;
        url.refuse_unknown(&[KEYS, Settings::KEYS])?;
        let query = url.query();
        match query.get("prefix") {
            Some(p) if !path.is_empty() && p != path => {
                return Err(Error::Config(format!(
                    "sqs:// URL names two prefixes, `/{path}` and `prefix={p}`: give one"
                )));
            }
            _ => {}
        }
        let mut config = Self::new(region);
        if !path.is_empty() {
            path.clone_into(&mut config.prefix);
        }
        let bad = |k: &str, v: &str, why: &str| {
            Error::Config(format!("bad sqs:// URL setting `{k}={v}`: {why}"))
        };
        for (k, v) in query.iter() {
            match k {
                "prefix" => config.prefix = v.to_owned(),
                "endpoint" => config.endpoint = Some(v.to_owned()),
                "fifo" => {
                    config.fifo = match v {
                        "" | "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad(k, v, "write true or false")),
                    }
                }
                "max_receives" => {
                    config.max_receives = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| bad(k, v, "a whole number from 1 to 1000"))?;
                }
                "keys_table" => config.keys_table = Some(v.to_owned()),
                "dead_scan_window" => {
                    config.dead_scan_window = jobsmith_core::parse_duration(v)
                        .ok()
                        .filter(|d| {
                            d.subsec_nanos() == 0
                                && (1..=MAX_VISIBILITY_SECS).contains(&d.as_secs())
                        })
                        .ok_or_else(|| {
                            bad(k, v, "whole seconds from 1s to 12h, such as `30s` or `5m`")
                        })?;
                }
                _ => {}
            }
        }
        config.settings = Settings::from_query(query.iter())?;
        config.check_max_payload()?;
        config.check_prefix()?;
        config.check_keys_table()?;
        Ok(config)
    }

    /// Uses `prefix` for queue names.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Uses `endpoint` instead of AWS's.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Keeps idempotency keys in the DynamoDB table `table`.
    #[must_use]
    pub fn with_keys_table(mut self, table: impl Into<String>) -> Self {
        self.keys_table = Some(table.into());
        self
    }

    /// The DynamoDB table of idempotency keys: `keys_table`, or `<prefix>-keys`.
    pub fn keys_table_name(&self) -> String {
        self.keys_table
            .clone()
            .unwrap_or_else(|| format!("{}-keys", self.prefix))
    }

    /// Hides what a dead-letter scan reads for `window` at first (whole
    /// seconds, 1 s to 12 h): see [`SqsConfig::dead_scan_window`].
    #[must_use]
    pub fn with_dead_scan_window(mut self, window: Duration) -> Self {
        self.dead_scan_window = window;
        self
    }

    /// Uses `settings`.
    #[must_use]
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// How long one request may wait for its answer, retries included:
    /// `call_timeout`, or [`DEFAULT_CALL_TIMEOUT`]. A receive's long poll
    /// gets its wait on top.
    pub fn call_timeout(&self) -> Duration {
        self.settings.call_timeout_or(DEFAULT_CALL_TIMEOUT)
    }

    /// The largest envelope an enqueue accepts: `max_payload`, or SQS's 256 KiB.
    pub fn limit(&self) -> usize {
        self.settings.max_payload.unwrap_or(SQS_MESSAGE_LIMIT)
    }

    /// Where this configuration reaches SQS, for logs: the region, and the
    /// endpoint's `host:port` before it when one is set
    /// (`127.0.0.1:5000/us-east-1`); never the endpoint's credentials, path
    /// or query.
    pub fn server(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("{}/{}", host_port(endpoint), self.region),
            None => self.region.clone(),
        }
    }

    /// Refuses a `max_payload` that SQS would refuse at every enqueue.
    pub(crate) fn check_max_payload(&self) -> Result<()> {
        match self.settings.max_payload {
            Some(n) if n > SQS_MAX_MESSAGE => Err(Error::Config(format!(
                "bad sqs:// URL setting `max_payload={n}`: SQS takes messages of at most \
                 {SQS_MAX_MESSAGE} bytes (1 MiB); give {} to {SQS_MAX_MESSAGE} \
                 (default {SQS_MESSAGE_LIMIT})",
                Settings::MIN_PAYLOAD
            ))),
            _ => Ok(()),
        }
    }

    pub(crate) fn check_prefix(&self) -> Result<()> {
        let ok = !self.prefix.is_empty()
            && self.prefix.len() <= 40
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "SQS queue prefix `{}` must be 1 to 40 letters, digits or hyphens",
                self.prefix
            )))
        }
    }

    pub(crate) fn check_keys_table(&self) -> Result<()> {
        let name = self.keys_table_name();
        let ok = (3..=255).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "DynamoDB table name `{name}` must be 3 to 255 letters, digits, `_`, `.` or `-`"
            )))
        }
    }
}

/// The `host:port` of an endpoint URL, its scheme's port when it names
/// none; what follows the host and any user info before it are left out.
fn host_port(endpoint: &str) -> String {
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("https", endpoint));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // A port follows the last `:`, unless that is inside an IPv6 address's brackets.
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']'));
    match scheme {
        _ if has_port => host.to_owned(),
        "http" => format!("{host}:80"),
        _ => format!("{host}:443"),
    }
}

/// The region (the host) and the prefix (the path, if any) of an sqs://
/// URL, which holds no credentials or port.
fn region_and_path(url: &BackendUrl) -> Result<(&str, &str)> {
    let Some(region) = url.host() else {
        return Err(Error::Config(
            "an sqs:// URL names its region: `sqs://us-east-1/myapp`".into(),
        ));
    };
    if url.has_credentials() || url.port().is_some() {
        return Err(Error::Config(format!(
            "`{}` holds credentials or a port, and an sqs:// URL holds neither: credentials come from the AWS chain, another endpoint is `?endpoint=http://host:port`; write `sqs://{region}/myapp`",
            url.redacted()
        )));
    }
    if !region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(Error::Config(format!(
            "`{region}` is not an AWS region (such as `us-east-1`)"
        )));
    }
    let path = url.path().strip_prefix('/').unwrap_or(url.path());
    if path.contains('/') {
        return Err(Error::Config(format!(
            "sqs:// URL path `/{path}`: give one name, the prefix: `sqs://{region}/myapp`"
        )));
    }
    Ok((region, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_part_of_the_url() {
        let c = SqsConfig::from_url(
            "sqs://eu-west-1?prefix=app-1&endpoint=http://127.0.0.1:5000&fifo=true&max_receives=7&dead_max=5",
        )
        .expect("valid");
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.prefix, "app-1");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert!(c.fifo);
        assert_eq!(c.max_receives, 7);
        assert_eq!(c.settings.dead_max, 5);
        assert_eq!(c.limit(), SQS_MESSAGE_LIMIT);
        assert_eq!(c.keys_table_name(), "app-1-keys");
        let c = SqsConfig::from_url("sqs://eu-west-1?keys_table=shared.keys").expect("valid");
        assert_eq!(c.keys_table_name(), "shared.keys");
        assert_eq!(c.dead_scan_window, DEFAULT_DEAD_SCAN_WINDOW);
        let c = SqsConfig::from_url("sqs://eu-west-1?dead_scan_window=2m").expect("valid");
        assert_eq!(c.dead_scan_window, Duration::from_secs(120));
    }

    #[test]
    fn the_server_names_the_region_and_the_endpoint_s_host_and_port_only() {
        let c = SqsConfig::new("eu-west-1");
        assert_eq!(c.server(), "eu-west-1");
        for (endpoint, server) in [
            ("http://127.0.0.1:5000", "127.0.0.1:5000/eu-west-1"),
            ("http://127.0.0.1:5000/", "127.0.0.1:5000/eu-west-1"),
            ("http://localhost", "localhost:80/eu-west-1"),
            (
                "https://sqs.example.com/path?x=1",
                "sqs.example.com:443/eu-west-1",
            ),
            ("https://me:s3cret@[::1]:4566", "[::1]:4566/eu-west-1"),
            ("https://[::1]", "[::1]:443/eu-west-1"),
        ] {
            let c = SqsConfig::new("eu-west-1").with_endpoint(endpoint);
            assert_eq!(c.server(), server, "{endpoint}");
        }
    }

    #[test]
    fn refuses_what_sqs_would() {
        assert!(SqsConfig::from_url("sqs://?prefix=x").is_err());
        assert!(SqsConfig::from_url("sqs://us-east-1?prefix=a.b").is_err());
        assert!(SqsConfig::from_url("sqs://us-east-1?fifo=maybe").is_err());
        assert!(SqsConfig::from_url("sqs://us-east-1?keys_table=a%20b").is_err());
        assert!(SqsConfig::from_url("sqs://us-east-1?keys_table=ab").is_err());
        assert!(SqsConfig::from_url("redis://x").is_err());
        let err = SqsConfig::from_url("sqs://us-east-1?max_payload=1048577")
            .expect_err("over SQS's limit")
            .to_string();
        assert!(err.contains("1024 to 1048576"), "{err}");
        let over = SqsConfig::new("us-east-1").with_settings({
            let mut s = Settings::default();
            s.max_payload = Some(SQS_MAX_MESSAGE + 1);
            s
        });
        assert!(over.check_max_payload().is_err());
        for bad in ["0s", "1500ms", "13h", "soon"] {
            let err = SqsConfig::from_url(&format!("sqs://us-east-1?dead_scan_window={bad}"))
                .expect_err(bad)
                .to_string();
            assert!(err.contains("whole seconds from 1s to 12h"), "{bad}: {err}");
        }
    }
}

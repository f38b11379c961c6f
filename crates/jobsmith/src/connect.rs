//! Choosing a backend by URL scheme, from the backends compiled in.

use jobsmith_core::{App, BackendUrl, Error, Result};
use std::future::Future;

/// The URL schemes jobsmith knows, and the cargo feature that compiles each in.
const SCHEMES: &[(&str, &str)] = &[
    ("memory", "(built in)"),
    ("redis", "redis"),
    ("rediss", "redis-tls"),
    ("amqp", "amqp"),
    ("amqps", "amqp-tls"),
    ("sqs", "sqs"),
];

/// Connects to the backend a URL names: `memory://`, `redis://..`, `amqp://..`, `sqs://..`.
///
/// Each scheme needs its feature (`rediss://` and `amqps://`, over TLS, need
/// `redis-tls` and `amqp-tls`); a scheme whose feature is off is refused
/// with the line to add to Cargo.toml.
///
/// The first app connected becomes the default app, which enqueues that are
/// not given `.on(&app)` use.
pub async fn connect(url: impl AsRef<str>) -> Result<App> {
    let url = url.as_ref();
    let parsed = BackendUrl::parse(url)?;
    let app = match parsed.scheme() {
        "memory" => App::connect_memory(url)?,
        #[cfg(feature = "redis")]
        "redis" => App::new(jobsmith_redis::RedisBackend::connect(url).await?),
        #[cfg(feature = "redis-tls")]
        "rediss" => App::new(jobsmith_redis::RedisBackend::connect(url).await?),
        #[cfg(feature = "sqs")]
        "sqs" => App::new(jobsmith_sqs::SqsBackend::connect(url).await?),
        #[cfg(feature = "amqp")]
        "amqp" => App::new(jobsmith_amqp::AmqpBackend::connect(url).await?),
        #[cfg(feature = "amqp-tls")]
        "amqps" => App::new(jobsmith_amqp::AmqpBackend::connect(url).await?),
        other => {
            return Err(match SCHEMES.iter().find(|(s, _)| *s == other) {
                Some((_, feature)) => Error::Config(format!(
                    "`{other}://` needs the `{feature}` feature: enable it with `jobsmith = {{ version = \"0.1\", features = [\"{feature}\"] }}` in Cargo.toml"
                )),
                None => Error::Config(format!(
                    "unknown backend scheme `{other}://`; known schemes: {}",
                    SCHEMES.iter().map(|(s, _)| format!("{s}://")).collect::<Vec<_>>().join(", ")
                )),
            })
        }
    };
    app.set_default_if_unset();
    Ok(app)
}

/// `App::connect(url)`, with `use jobsmith::prelude::*` in scope.
pub trait Connect: Sized {
    /// Connects to the backend a URL names; see [`connect`].
    fn connect(url: impl AsRef<str> + Send) -> impl Future<Output = Result<Self>> + Send;
}

impl Connect for App {
    fn connect(url: impl AsRef<str> + Send) -> impl Future<Output = Result<Self>> + Send {
        let url = url.as_ref().to_owned();
        async move { connect(url).await }
    }
}

#[cfg(test)]
mod tests {
    use super::connect;

    #[tokio::test]
    async fn memory_url_connects_with_its_settings() {
        let app = connect("memory://?max_payload=2000&dead_max=5")
            .await
            .unwrap();
        assert_eq!(app.backend().name(), "memory");
        assert_eq!(app.backend().max_payload(), 2000);
    }

    #[tokio::test]
    async fn bad_urls_say_what_to_write() {
        let err = connect("localhost:6379").await.unwrap_err().to_string();
        assert!(
            err.contains("is not a backend URL") && err.contains("redis://"),
            "{err}"
        );
        let err = connect("ftp://x").await.unwrap_err().to_string();
        assert!(
            err.contains("unknown backend scheme `ftp://`") && err.contains("memory://"),
            "{err}"
        );
        let err = connect("memory://?dead_max_age=7parsecs")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("dead_max_age=7parsecs"), "{err}");
    }

    #[cfg(not(feature = "redis-tls"))]
    #[tokio::test]
    async fn tls_without_its_feature_names_the_tls_feature() {
        let err = connect("rediss://127.0.0.1:6380?tls_ca=/ca.pem")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs the `redis-tls` feature")
                && err.contains("features = [\"redis-tls\"]"),
            "{err}"
        );
    }

    #[cfg(not(feature = "amqp"))]
    #[tokio::test]
    async fn a_backend_that_is_not_compiled_in_names_its_feature() {
        let err = connect("amqp://guest:guest@127.0.0.1:5672/%2f")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs the `amqp` feature") && err.contains("features = [\"amqp\"]"),
            "{err}"
        );
    }
}

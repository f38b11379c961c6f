//! Choosing a backend by URL scheme, from the backends compiled in.

use jobsmith_core::{split_scheme, App, Error, Result};
use std::future::Future;

/// The URL schemes jobsmith knows, and the cargo feature that compiles each in.
const SCHEMES: &[(&str, &str)] = &[
    ("memory", "(built in)"),
    ("redis", "redis"),
    ("rediss", "redis"),
    ("amqp", "amqp"),
    ("amqps", "amqp"),
    ("sqs", "sqs"),
];

/// Connects to the backend a URL names: `memory://`, `redis://..`, `amqp://..`, `sqs://..`.
///
/// The first app connected becomes the default app, which enqueues that are
/// not given `.on(&app)` use.
pub async fn connect(url: impl AsRef<str>) -> Result<App> {
    let url = url.as_ref();
    let (scheme, _) = split_scheme(url)?;
    let app = match scheme {
        "memory" => App::connect_memory(url)?,
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

//! TLS for `amqps://` URLs (feature `tls`): which certificates to trust.
//!
//! lapin checks the broker's certificate against the system's root
//! certificates (rustls' platform verifier); `tls_ca=/path/ca.pem` in the URL
//! adds the CA certificates of that PEM file, for a broker whose certificate
//! a private CA signed.

use crate::config::AmqpConfig;
use jobsmith_core::{Error, Result};
use lapin::tcp::OwnedTLSConfig;

/// The TLS settings for connecting to the broker `cfg` names; the CA file,
/// if any, is read on every connection, so a replaced file takes effect on
/// the next reconnect.
pub(crate) fn config(cfg: &AmqpConfig) -> Result<OwnedTLSConfig> {
    let Some(ca) = &cfg.tls_ca else {
        return Ok(OwnedTLSConfig::default());
    };
    let bad =
        |why: String| Error::Config(format!("bad URL setting `tls_ca={}`: {why}", ca.display()));
    if !cfg.server.starts_with("amqps://") {
        return Err(bad("a CA applies only to TLS, write `amqps://`".into()));
    }
    let pem = std::fs::read(ca).map_err(|e| bad(format!("cannot read the CA file: {e}")))?;
    let pem = String::from_utf8(pem)
        .map_err(|_| bad("not a PEM certificate file: it is not text".into()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(bad("the file holds no `BEGIN CERTIFICATE` block".into()));
    }
    Ok(OwnedTLSConfig {
        identity: None,
        cert_chain: Some(pem),
    })
}

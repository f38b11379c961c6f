//! TLS for `rediss://` URLs (feature `tls`).
//!
//! Certificates are checked against the system's root certificates, or, with
//! `tls_ca=/path/ca.pem` in the URL, against the certificates in that PEM file
//! only (as `redis-cli --cacert` does). `#insecure` skips the checks
//! (feature `tls-insecure`; see `config.rs`).

use jobsmith_core::{Error, Result};
use redis::{Client, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;

/// Makes ring the process's rustls crypto provider, unless one is installed already.
pub(crate) fn install_provider() {
    // An error only means another provider was installed first, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for `server` (a `rediss://` URL) that trusts only the CA certificates in the PEM file `ca`.
pub(crate) fn client_trusting(server: &str, ca: &Path) -> Result<Client> {
    let pem = std::fs::read(ca).map_err(|e| {
        Error::Config(format!(
            "bad URL setting `tls_ca={}`: cannot read the CA file: {e}",
            ca.display()
        ))
    })?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| {
            Error::Config(format!(
                "bad URL setting `tls_ca={}`: not a PEM certificate file: {e}",
                ca.display()
            ))
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(Error::Config(format!(
            "bad URL setting `tls_ca={}`: the file holds no `BEGIN CERTIFICATE` block",
            ca.display()
        )));
    }
    let certs = TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    Client::build_with_tls(server, certs).map_err(|e| Error::Config(format!("bad Redis URL: {e}")))
}

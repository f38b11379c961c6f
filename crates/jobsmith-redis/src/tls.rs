//! TLS for `rediss://` URLs (feature `tls`).

/// Makes ring the process's rustls crypto provider, unless one is installed already.
pub(crate) fn install_provider() {
    // An error only means another provider was installed first, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

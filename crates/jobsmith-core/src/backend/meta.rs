//! The [`MetaStore`] capability: small values shared by every process on a backend.

use crate::backend::Backend;
use crate::error::Result;

/// Small values shared by every process on the backend (schedule states,
/// job records). Last writer wins; values are a few hundred bytes.
#[async_trait::async_trait]
pub trait MetaStore: Backend {
    /// Stores `value` under `key`, replacing any value there.
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()>;

    /// The value under `key`, if any.
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Every key that starts with `prefix`, with its value, sorted by key.
    async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;
}

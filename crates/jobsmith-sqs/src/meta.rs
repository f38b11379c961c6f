//! [`MetaStore`] for [`SqsBackend`]: entries in one item of the key table
//! (see `unique.rs`).

use crate::backend::SqsBackend;
use jobsmith_core::{MetaStore, Result};

#[async_trait::async_trait]
impl MetaStore for SqsBackend {
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.inner.keys.put_meta(key, value).await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        // One item holds every entry: reading it whole is one call as well.
        let found = self.inner.keys.list_meta(key).await?;
        Ok(found.into_iter().find(|(k, _)| k == key).map(|(_, v)| v))
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.inner.keys.list_meta(prefix).await
    }
}

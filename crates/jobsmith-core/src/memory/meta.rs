//! The metadata store: [`MetaStore`] for the memory backend.

use super::*;

#[async_trait::async_trait]
impl MetaStore for MemoryBackend {
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.check_available()?;
        self.inner
            .state
            .lock_unpoisoned()
            .meta
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.check_available()?;
        Ok(self.inner.state.lock_unpoisoned().meta.get(key).cloned())
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.check_available()?;
        Ok(self
            .inner
            .state
            .lock_unpoisoned()
            .meta
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

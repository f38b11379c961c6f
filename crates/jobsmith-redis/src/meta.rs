//! [`MetaStore`] on Redis: one hash of small entries (schedule states), field by key.

use crate::backend::RedisBackend;
use crate::error::from_redis;
use jobsmith_core::{MetaStore, Result};

#[async_trait::async_trait]
impl MetaStore for RedisBackend {
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        let mut conn = self.conn();
        redis::cmd("HSET")
            .arg(self.inner.keys.meta())
            .arg(key)
            .arg(value)
            .query_async::<()>(&mut conn)
            .await
            .map_err(from_redis)
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn();
        redis::cmd("HGET")
            .arg(self.inner.keys.meta())
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(from_redis)
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut conn = self.conn();
        // The hash holds one small entry per schedule: read it whole.
        let all: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(self.inner.keys.meta())
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let mut found: Vec<(String, Vec<u8>)> = all
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }
}

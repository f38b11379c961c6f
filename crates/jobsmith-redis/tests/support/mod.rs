//! What the Redis tests share: the server's URL, fresh prefixes, a TCP proxy
//! that can cut the backend off, and writing raw bytes into a queue.
#![allow(dead_code, unreachable_pub)]

pub mod record;
pub mod server;

use jobsmith_conformance::Faults;
use std::time::{SystemTime, UNIX_EPOCH};

/// The Redis the tests use: `JOBSMITH_REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("JOBSMITH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test uses.
pub fn fresh_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "jobsmith-test-{:x}-{:08x}",
        nanos & 0xffff_ffff_ffff,
        fastrand_u32()
    )
}

fn fastrand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish() as u32
}

/// The TCP proxy the tests put in front of Redis, to cut or freeze it.
pub use jobsmith_conformance::Proxy;

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes `raw` into `queue` the way the backend stores payloads, as a foreign producer would:
/// the bytes and the ready time in the queue's job hash, its id at the tail of the priority-0
/// ready list, and a wake token.
pub async fn push_raw(url: &str, prefix: &str, queue: &str, raw: &[u8]) -> String {
    let id = serde_json::from_slice::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
        .unwrap_or_else(|| format!("raw-{}", fresh_prefix()));
    let client = redis::Client::open(url).expect("redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let base = format!("{{{prefix}:{queue}}}");
    redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(format!("{base}:jobs"))
        .arg(format!("p:{id}"))
        .arg(raw)
        .arg(format!("r:{id}"))
        .arg(now_ms())
        .cmd("RPUSH")
        .arg(format!("{base}:ready:0"))
        .arg(&id)
        .cmd("ZADD")
        .arg(format!("{base}:prios"))
        .arg(0)
        .arg(0)
        .cmd("RPUSH")
        .arg(format!("{base}:wake"))
        .arg(1)
        .exec_async(&mut conn)
        .await
        .expect("write raw job");
    id
}

/// Deletes every key under `prefix`.
pub async fn delete_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    for pattern in [format!("{{{prefix}:*"), format!("{prefix}:*")] {
        let mut cursor = 0u64;
        loop {
            let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
            else {
                return;
            };
            if !keys.is_empty() {
                let _: redis::RedisResult<i64> =
                    redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
}

/// Counts the keys under `prefix`.
pub async fn count_keys(url: &str, prefix: &str) -> usize {
    let client = redis::Client::open(url).expect("redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut n = 0;
    for pattern in [format!("{{{prefix}:*"), format!("{prefix}:*")] {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("scan");
            n += keys.len();
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    n
}

/// The Redis backend's faults: a proxy to cut, and raw writes into the real server.
/// Dropping it deletes the test's keys.
pub struct RedisFaults {
    pub proxy: Proxy,
    pub url: String,
    pub prefix: String,
}

#[async_trait::async_trait]
impl Faults for RedisFaults {
    async fn sever(&self) {
        self.proxy.sever();
    }
    async fn restore(&self) {
        self.proxy.restore();
    }
    async fn freeze(&self) -> Option<String> {
        self.proxy.freeze();
        Some("a proxy in front of Redis stopped forwarding".into())
    }
    fn server_words(&self) -> Vec<String> {
        vec![self.proxy.addr.to_string()]
    }
    async fn thaw(&self) {
        self.proxy.thaw();
    }
    async fn push_raw(&self, queue: &str, raw: &[u8]) {
        push_raw(&self.url, &self.prefix, queue, raw).await;
    }
    /// A string written over the queue's lease set, as a stray client or a
    /// hand-typed command could: every script that reads it fails with
    /// WRONGTYPE. The jobs stay in place.
    async fn break_queue(&self, queue: &str) -> Option<String> {
        let key = format!("{{{}:{queue}}}:leases", self.prefix);
        self.command(redis::cmd("SET").arg(&key).arg("not a lease set"))
            .await;
        Some(format!("a string written into `{key}`"))
    }
    async fn repair_queue(&self, queue: &str) {
        let key = format!("{{{}:{queue}}}:leases", self.prefix);
        self.command(redis::cmd("DEL").arg(&key)).await;
    }
}

impl RedisFaults {
    /// Runs `cmd` on the real server, straight, not through the proxy.
    async fn command(&self, cmd: &redis::Cmd) {
        let client = redis::Client::open(self.url.as_str()).expect("redis URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis");
        cmd.query_async::<redis::Value>(&mut conn)
            .await
            .expect("a command of the fault");
    }
}

impl Drop for RedisFaults {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        // Drop may run inside the test's runtime: clean up on a thread of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(delete_prefix(&url, &prefix));
            }
        })
        .join();
    }
}

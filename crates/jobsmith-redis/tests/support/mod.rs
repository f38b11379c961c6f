//! What the Redis tests share: the server's URL, fresh prefixes, a TCP proxy
//! that can cut the backend off, and writing raw bytes into a queue.
#![allow(dead_code, unreachable_pub)]

pub mod record;
pub mod server;

use jobsmith_core::testkit::Faults;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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

/// `url` with its host and port replaced by `addr` (credentials, db and query kept).
pub fn with_addr(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (creds, hostpart) = match rest.rsplit_once('@') {
        Some((c, h)) => (format!("{c}@"), h),
        None => (String::new(), rest),
    };
    let tail_at = hostpart.find(['/', '?', '#']).unwrap_or(hostpart.len());
    format!("{scheme}://{creds}{addr}{}", &hostpart[tail_at..])
}

/// `host:port` of a URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostpart = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let end = hostpart.find(['/', '?', '#']).unwrap_or(hostpart.len());
    let hp = &hostpart[..end];
    if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:6379")
    }
}

/// A TCP proxy in front of Redis that can drop every connection and refuse new ones.
pub struct Proxy {
    pub addr: SocketAddr,
    severed: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let severed = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let (flag, tx) = (Arc::clone(&severed), cut.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut rx = tx.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            severed,
            cut,
            task,
        }
    }

    pub fn sever(&self) {
        self.severed.store(true, Ordering::SeqCst);
        self.cut.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.severed.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

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
    async fn push_raw(&self, queue: &str, raw: &[u8]) {
        push_raw(&self.url, &self.prefix, queue, raw).await;
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

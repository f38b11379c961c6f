//! The backend conformance suite from `jobsmith-conformance`, unchanged, against the
//! Redis at `JOBSMITH_REDIS_URL` (default `redis://127.0.0.1:6379`), with a
//! fresh key prefix per test and a proxy in front to cut the connection.

mod support;

use jobsmith_conformance::{Approximations, Harness};
use jobsmith_core::{Backend, BoxFuture, Settings};
use jobsmith_redis::{RedisBackend, RedisConfig};
use std::sync::Arc;
use std::time::Duration;

fn harness(settings: Settings) -> BoxFuture<'static, Harness> {
    Box::pin(async move {
        let url = support::redis_url();
        let proxy = support::Proxy::start(jobsmith_conformance::url_host_port(&url, 6379)).await;
        let prefix = support::fresh_prefix();
        let config = RedisConfig::from_url(&jobsmith_conformance::url_through(&url, proxy.addr))
            .expect("JOBSMITH_REDIS_URL is a redis:// URL")
            .with_prefix(prefix.clone())
            .with_settings(settings.clone());
        let backend = RedisBackend::connect_with(config)
            .await
            .expect("Redis is reachable at JOBSMITH_REDIS_URL");
        let peer_config = RedisConfig::from_url(&url)
            .expect("JOBSMITH_REDIS_URL is a redis:// URL")
            .with_prefix(prefix.clone())
            .with_settings(settings);
        Harness {
            backend: Arc::new(backend),
            faults: Arc::new(support::RedisFaults { proxy, url, prefix }),
            short_lease: Duration::from_millis(300),
            approximations: Approximations::default(),
            peer: Arc::new(move || -> BoxFuture<'static, Arc<dyn Backend>> {
                let config = peer_config.clone();
                Box::pin(async move {
                    let b: Arc<dyn Backend> = Arc::new(
                        RedisBackend::connect_with(config)
                            .await
                            .expect("Redis is reachable at JOBSMITH_REDIS_URL"),
                    );
                    b
                })
            }),
        }
    })
}

jobsmith_conformance::conformance_suite!(harness);

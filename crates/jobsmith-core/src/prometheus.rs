//! The worker's metrics in the Prometheus text format (feature `prometheus`).
//!
//! [`Worker::prometheus`](crate::Worker::prometheus) serves them on
//! `GET /metrics` while the worker runs. [`Exporter::install`] is the same
//! recorder for an application that serves them itself, or that wants the
//! enqueues made before its worker starts to be counted too.
//!
//! ```
//! let exporter = jobsmith_core::prometheus::Exporter::install()?;
//! metrics::counter!("jobsmith_jobs_enqueued_total", "queue" => "email").increment(1);
//! assert!(exporter.render().contains("jobsmith_jobs_enqueued_total{queue=\"email\"} 1"));
//! # Ok::<(), jobsmith_core::Error>(())
//! ```
//!
//! `docs/operations.md` lists every series with its labels.

use crate::error::{Error, Result};
use crate::lock::LockExt;
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;

/// Where the worker's `/metrics` endpoint listens: a socket address, or a
/// bare port, which means that port on 127.0.0.1.
///
/// ```
/// use jobsmith_core::prometheus::MetricsAddr;
/// assert_eq!(MetricsAddr::from(9464).0.to_string(), "127.0.0.1:9464");
/// let any: std::net::SocketAddr = "0.0.0.0:9464".parse().unwrap();
/// assert_eq!(MetricsAddr::from(any).0, any);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddr(pub SocketAddr);

impl From<SocketAddr> for MetricsAddr {
    fn from(addr: SocketAddr) -> Self {
        MetricsAddr(addr)
    }
}

impl From<u16> for MetricsAddr {
    /// The port on 127.0.0.1: only this machine can scrape it.
    fn from(port: u16) -> Self {
        MetricsAddr(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    }
}

impl<I: Into<IpAddr>> From<(I, u16)> for MetricsAddr {
    fn from((ip, port): (I, u16)) -> Self {
        MetricsAddr(SocketAddr::new(ip.into(), port))
    }
}

/// Bucket bounds, in seconds, of `jobsmith_job_duration_seconds`: 5 ms to 15 min.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// Bucket bounds, in seconds, of `jobsmith_job_queue_wait_seconds`: 1 ms to 1 h.
pub const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// The process's Prometheus recorder: renders every `metrics` series as text.
#[derive(Clone, Debug)]
pub struct Exporter {
    handle: PrometheusHandle,
}

/// The exporter this process installed, once it has.
static INSTALLED: Mutex<Option<Exporter>> = Mutex::new(None);

impl Exporter {
    /// Installs jobsmith's Prometheus recorder as the process's global
    /// `metrics` recorder, or returns the one installed already.
    ///
    /// Fails with [`Error::MetricsRecorder`] when some other recorder was
    /// installed first: there can be only one per process.
    pub fn install() -> Result<Exporter> {
        let mut slot = INSTALLED.lock_unpoisoned();
        if let Some(exporter) = slot.as_ref() {
            return Ok(exporter.clone());
        }
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("jobsmith_job_duration_seconds".into()),
                DURATION_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("jobsmith_job_queue_wait_seconds".into()),
                    QUEUE_WAIT_BUCKETS,
                )
            })
            .map_err(|e| Error::Config(format!("bad Prometheus bucket settings: {e}")))?;
        let handle = builder
            .install_recorder()
            .map_err(|_| Error::MetricsRecorder)?;
        describe();
        let exporter = Exporter { handle };
        *slot = Some(exporter.clone());
        Ok(exporter)
    }

    /// Every series, in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds recorded histogram samples into their buckets, so memory stays
    /// bounded between scrapes. The worker's endpoint calls it every few seconds.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// The `# HELP` line of each series.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "jobsmith_jobs_enqueued_total",
        "Jobs enqueued through an App, per queue."
    );
    describe_counter!(
        "jobsmith_jobs_started_total",
        "Attempts started by this worker, per queue and job."
    );
    describe_counter!(
        "jobsmith_jobs_succeeded_total",
        "Attempts that succeeded and were acknowledged, per queue and job."
    );
    describe_counter!(
        "jobsmith_jobs_retried_total",
        "Attempts that failed and were scheduled to run again, per queue and job."
    );
    describe_counter!(
        "jobsmith_jobs_dead_total",
        "Jobs moved to the dead-letter queue, per queue and job."
    );
    describe_counter!(
        "jobsmith_jobs_expired_total",
        "Jobs this process dropped unrun because their TTL had passed (at reserve or before running), per queue and job."
    );
    describe_counter!(
        "jobsmith_leases_lost_total",
        "Settlements refused because the job's lease had expired."
    );
    describe_histogram!(
        "jobsmith_job_duration_seconds",
        Unit::Seconds,
        "Run time of each attempt, per queue and job."
    );
    describe_histogram!(
        "jobsmith_job_queue_wait_seconds",
        Unit::Seconds,
        "Time from when a job was due to when an attempt started, per queue and job."
    );
    describe_gauge!(
        "jobsmith_queue_depth",
        "Jobs in each state (ready, scheduled, in_flight, dead), per queue, sampled from the backend."
    );
    describe_gauge!(
        "jobsmith_queue_oldest_age_seconds",
        Unit::Seconds,
        "How long the oldest ready job has been ready, per queue, sampled from the backend; 0 when none is."
    );
}

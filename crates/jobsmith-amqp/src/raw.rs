//! The broker's own rate with a plain client, for the benchmark to compare against.

use crate::call::Calls;
use crate::config::AmqpConfig;
use crate::error::from_lapin;
use crate::link::confirm_channel;
use crate::names::Names;
use crate::topology::Topology;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use jobsmith_core::{Envelope, Error, Result};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use std::time::Instant;

/// Publishes a plain client keeps unconfirmed at once (`FACTS.md`'s method).
const IN_FLIGHT: usize = 500;
/// The plain consumer's prefetch; it acks each delivery on its own.
const PREFETCH: u16 = 100;

/// Which queue the plain client measures.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawQueue {
    /// A durable classic queue with no arguments: the broker's cheapest.
    Plain,
    /// A durable queue with the arguments jobsmith gives a work queue under
    /// the same URL (priority levels, lazy mode or `queue_version`): what the
    /// contract costs the broker.
    AsWorkQueue,
}

/// Plain RabbitMQ throughput through lapin, with none of jobsmith's work:
/// `n` persistent messages (a no-op job's envelope)
/// published with confirms, 500 unconfirmed at once, to the default exchange
/// without `mandatory`; then consumed with prefetch 100, each delivery acked
/// on its own (acks sent as deliveries come, not each awaited before the
/// next). Uses a fresh queue under the URL's prefix, deleted afterwards.
/// Returns (publishes per second, consumes per second).
#[doc(hidden)]
pub async fn raw_rate(url: &str, n: usize, queue: RawQueue) -> Result<(f64, f64)> {
    let cfg = AmqpConfig::from_url(url)?;
    let conn = Connection::connect(&cfg.connection_uri(), ConnectionProperties::default())
        .await
        .map_err(from_lapin)?;
    let calls = Calls::new(&conn, cfg.call_timeout(), cfg.redacted());
    let ch = confirm_channel(&calls, &conn).await?;
    let name = format!("{}.raw{:08x}", cfg.prefix, fastrand::u32(..));
    let args = match queue {
        RawQueue::Plain => FieldTable::default(),
        RawQueue::AsWorkQueue => {
            let names = Names::new(&cfg.prefix);
            Topology {
                cfg: &cfg,
                names: &names,
            }
            .work_args("raw", cfg.version_2())
        }
    };
    ch.queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)
        .await
        .map_err(from_lapin)?;
    // A no-op job's envelope, as the bench enqueues it.
    let body = Envelope::with_args("bench_noop", "bench", &0u64)?.to_bytes();
    let result = async {
        let started = Instant::now();
        let mut pending = FuturesUnordered::new();
        for _ in 0..n {
            if pending.len() >= IN_FLIGHT {
                confirmed(pending.next().await)?;
            }
            let confirm = ch
                .basic_publish(
                    "".into(),
                    name.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .map_err(from_lapin)?;
            pending.push(confirm);
        }
        while !pending.is_empty() {
            confirmed(pending.next().await)?;
        }
        let publish = n as f64 / started.elapsed().as_secs_f64();

        let consume_ch = conn.create_channel().await.map_err(from_lapin)?;
        consume_ch
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(from_lapin)?;
        let started = Instant::now();
        let mut consumer = consume_ch
            .basic_consume(
                name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(from_lapin)?;
        // Each delivery's ack is sent at once and awaited beside the next
        // deliveries, as pika's are: awaiting each one before reading on
        // would time lapin's hand-over to its I/O thread, not the broker.
        let mut acks = FuturesUnordered::new();
        let mut got = 0;
        while got < n {
            tokio::select! {
                biased;
                Some(acked) = acks.next(), if !acks.is_empty() => {
                    let acked: lapin::Result<()> = acked;
                    acked.map_err(from_lapin)?;
                }
                d = consumer.next() => {
                    let Some(d) = d else {
                        return Err(Error::backend("the raw consumer was cancelled"));
                    };
                    let d = d.map_err(from_lapin)?;
                    acks.push(consume_ch.basic_ack(d.delivery_tag, BasicAckOptions::default()));
                    got += 1;
                }
            }
        }
        while let Some(acked) = acks.next().await {
            acked.map_err(from_lapin)?;
        }
        Ok((publish, n as f64 / started.elapsed().as_secs_f64()))
    }
    .await;
    let _ = ch
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "raw rate measured".into()).await;
    result
}

fn confirmed(c: Option<lapin::Result<Confirmation>>) -> Result<()> {
    match c {
        Some(Ok(Confirmation::Ack(_) | Confirmation::NotRequested)) | None => Ok(()),
        Some(Ok(Confirmation::Nack(_))) => Err(Error::backend("the broker refused a message")),
        Some(Err(e)) => Err(from_lapin(e)),
    }
}

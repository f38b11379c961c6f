//! How late scheduled jobs arrive through the RabbitMQ delay levels: a
//! measurement for `docs/backends/rabbitmq.md`, not a check, so it is ignored by
//! default. Run it with
//!
//! ```text
//! cargo nextest run -p jobsmith-amqp --test timing --run-ignored only --no-capture
//! ```
//!
//! For delays with few and with many set bits (one delay level each), it
//! prints how long after its `run_at` an idle reserve got the job, and how
//! long the enqueue (publish and confirm) took.
#![allow(clippy::print_stdout)] // a measurement reports on stdout

mod support;

use jobsmith_core::SettleExt;
use jobsmith_core::{Backend, Envelope, Timestamp};
use std::time::{Duration, Instant};

const SAMPLES: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for docs/backends/rabbitmq.md; run it on purpose"]
async fn lateness_through_the_delay_levels() {
    let backend = support::fresh("").await;
    let queues = vec!["timing".to_owned()];
    for delay_ms in [0u64, 1, 2, 256, 511, 1024, 2047, 4095] {
        let (mut late, mut enqueue) = (Vec::new(), Vec::new());
        for _ in 0..SAMPLES {
            let offset = Duration::from_millis(delay_ms);
            let mut env = Envelope::with_args("timing", "timing", &()).expect("args");
            env.run_at = Timestamp::now().plus(offset);
            let run_at = Instant::now() + offset;
            let t0 = Instant::now();
            backend.enqueue(vec![env]).await.expect("enqueue");
            enqueue.push(t0.elapsed().as_secs_f64() * 1000.0);
            let got = backend
                .reserve(&queues, 1, Duration::from_secs(30), Duration::from_secs(10))
                .await
                .expect("reserve");
            let at = Instant::now();
            assert_eq!(got.len(), 1, "the job is reserved when due");
            backend.ack(&[got[0].lease.clone()]).await.expect("ack");
            late.push(at.saturating_duration_since(run_at).as_secs_f64() * 1000.0);
        }
        late.sort_by(f64::total_cmp);
        enqueue.sort_by(f64::total_cmp);
        println!(
            "delay {delay_ms:>5} ms ({} levels): late median {:.1} ms, max {:.1} ms; enqueue median {:.1} ms",
            delay_ms.count_ones(),
            late[late.len() / 2],
            late[late.len() - 1],
            enqueue[enqueue.len() / 2],
        );
    }
}

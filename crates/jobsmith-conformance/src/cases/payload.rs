//! What a job carries: payloads byte for byte, the size limit, payloads that
//! are not envelopes, and job arguments bit for bit.

use super::common::{dead_of, enqueue, env_of, fresh, job, stats, take_exactly, take_one, LONG};
use crate::Factory;
use jobsmith_core::{App, Backend, Envelope, Error, LeaseStatus, SettleExt, Timestamp};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every envelope field round-trips, arguments byte for byte, unicode and escapes included.
pub async fn payload_round_trips_byte_for_byte(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let args = r#"{"text":"Grüße, 世界! 🚀 \u0000\n\t\"q\" \\ \ud83d\ude00","n":1, "nested":{"a":[1,2.5,-3e10,null,true]}}"#;
    let mut e = Envelope::new(
        "conformance_noop",
        "q",
        serde_json::value::RawValue::from_string(args.to_owned()).expect("valid JSON"),
    );
    e.priority = 3;
    e.max_attempts = 7;
    e.expires_at = Some(Timestamp::now().plus(LONG));
    e.idempotency_key = Some("ключ-🔑".into());
    e.trace = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    enqueue(b, e.clone()).await;
    let d = take_one(b, "q").await;
    let got = env_of(&d);
    assert_eq!(got.args.get(), args, "arguments round-trip byte for byte");
    assert_eq!(
        (got.v, &got.job, &got.queue, got.priority, got.max_attempts),
        (e.v, &e.job, &e.queue, e.priority, e.max_attempts)
    );
    assert_eq!(
        (got.enqueued_at, got.run_at, got.expires_at),
        (e.enqueued_at, e.run_at, e.expires_at)
    );
    assert_eq!(
        (&got.idempotency_key, &got.trace),
        (&e.idempotency_key, &e.trace)
    );
}

/// A payload exactly at the backend's limit round-trips; one byte over is a clear error and nothing is written.
pub async fn payload_at_limit_round_trips_and_over_limit_is_rejected(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let limit = b.max_payload();
    let sized = |size: usize| {
        let mut e = Envelope::new(
            "conformance_noop",
            "q",
            serde_json::value::RawValue::from_string("\"\"".into()).expect("json"),
        );
        let base = e.to_bytes().len();
        let pad = "é".repeat((size - base) / 2) + &"x".repeat((size - base) % 2);
        e.args = serde_json::value::to_raw_value(&pad).expect("json");
        assert_eq!(
            e.to_bytes().len(),
            size,
            "the suite sizes envelopes exactly"
        );
        e
    };
    let at = sized(limit);
    enqueue(b, at.clone()).await;
    let d = take_one(b, "q").await;
    assert_eq!(
        env_of(&d).args.get(),
        at.args.get(),
        "a payload at the limit round-trips"
    );
    b.ack(&[d.lease]).await.expect("ack");

    let over = sized(limit + 1);
    match b.enqueue(vec![job("q", 1), over]).await {
        Err(Error::PayloadTooLarge { size, limit: l }) => assert_eq!((size, l), (limit + 1, limit)),
        other => panic!("one byte over the limit must be PayloadTooLarge, got {other:?}"),
    }
    let s = stats(b, "q").await;
    assert_eq!(
        (s.ready, s.scheduled),
        (0, 0),
        "a rejected batch writes nothing"
    );
}

/// Bytes that are not an envelope are delivered as malformed, so the worker can dead-letter them.
pub async fn malformed_payload_is_delivered_for_dead_lettering(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let garbage = b"\x00\xffnot json at all{";
    h.faults.push_raw("q", garbage).await;
    let d = take_one(b, "q").await;
    let bad = d.envelope.as_ref().expect_err("garbage is not an envelope");
    assert_eq!(bad.raw, garbage, "the raw bytes are handed over as found");
    assert!(!bad.reason.is_empty());
    assert_eq!(
        b.dead_letter(&d.lease, &bad.reason).await.expect("dead"),
        LeaseStatus::Held
    );
    let dead = dead_of(b).dead_list("q", 0, 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].raw, garbage,
        "the dead-letter queue keeps the bytes"
    );
    assert_eq!(dead[0].reason, bad.reason);
    assert_eq!(
        dead_of(b)
            .dead_requeue("q", &[dead[0].id.clone()])
            .await
            .expect("requeue"),
        0,
        "garbage is not requeued"
    );
}

/// How many argument values one enqueue carries in [`arguments_round_trip_bit_for_bit`].
const VALUES_PER_ENQUEUE: usize = 48;

/// Enqueues one suite job per value in `values` in one call, with the value
/// as its `value` argument, reserves and acks them all, and reads each value
/// back as a job's runner would (serde_json, from the arguments' text).
/// Returns the values that did not come back bit for bit: their index, and
/// what came back or why it could not be read.
async fn round_trip_values(
    b: &dyn Backend,
    values: &[crate::values::ArgValue],
) -> Vec<(usize, String)> {
    // Written straight from the typed values: a detour through
    // `serde_json::Value` would refuse 128-bit integers.
    #[derive(serde::Serialize)]
    struct Sent<'a> {
        fail_times: u32,
        n: usize,
        value: &'a crate::values::ArgValue,
    }
    #[derive(serde::Deserialize)]
    struct Args {
        n: usize,
        value: crate::values::ArgValue,
    }
    let sent: Vec<Envelope> = values
        .iter()
        .enumerate()
        .map(|(n, value)| {
            let args = Sent {
                fail_times: 0,
                n,
                value,
            };
            Envelope::with_args("conformance_noop", "q", &args).expect("finite values serialize")
        })
        .collect();
    b.enqueue(sent).await.expect("enqueue succeeds");
    let got = take_exactly(b, "q", values.len(), "every enqueued value is reserved").await;
    let leases: Vec<_> = got.iter().map(|d| d.lease.clone()).collect();
    b.ack(&leases).await.expect("ack");
    let mut bad = Vec::new();
    for d in &got {
        let text = env_of(d).args.get();
        match serde_json::from_str::<Args>(text) {
            Ok(Args { n, value }) if value.same(&values[n]) => {}
            Ok(Args { n, value }) => bad.push((n, format!("{value:?}"))),
            Err(e) => {
                let n = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v["n"].as_u64())
                    .and_then(|n| usize::try_from(n).ok())
                    .expect("the suite's jobs carry n");
                bad.push((n, format!("unreadable ({e}): {text}")));
            }
        }
    }
    bad.sort_by_key(|(n, _)| *n);
    bad
}

/// A property: arbitrary job arguments of every serde kind (floats with
/// subnormals, extremes and `-0.0`, integers to 128 bits, strings with
/// control characters, nested sequences, maps and options) come back from
/// enqueue and reserve bit for bit, read as a job reads them.
///
/// Values go 48 to an enqueue, for at least two enqueues and then for about
/// two seconds, so a slow broker (moto) runs fewer. A failing value is
/// shrunk, through the backend and for up to ten seconds, to a smaller one
/// that still fails; the seed in the message repeats the run
/// (`PROPTEST_RNG_SEED=<seed>`).
pub async fn arguments_round_trip_bit_for_bit(factory: Factory) {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, RngSeed, TestRunner};
    let h = fresh(factory).await;
    let b = &*h.backend;
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut runner = TestRunner::new(Config {
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    });
    let strategy = crate::values::arg_values();
    let started = Instant::now();
    let mut rounds = 0;
    let mut checked = 0;
    while rounds < 2 || (rounds < 16 && started.elapsed() < Duration::from_secs(2)) {
        let mut trees: Vec<_> = (0..VALUES_PER_ENQUEUE)
            .map(|_| strategy.new_tree(&mut runner).expect("values generate"))
            .collect();
        let values: Vec<_> = trees.iter().map(ValueTree::current).collect();
        let bad = round_trip_values(b, &values).await;
        if let Some((first, came_back)) = bad.first().cloned() {
            let mut tree = trees.swap_remove(first);
            let mut failing = (tree.current(), came_back);
            let shrinking = Instant::now();
            for _ in 0..256 {
                if shrinking.elapsed() > Duration::from_secs(10) || !tree.simplify() {
                    break;
                }
                let smaller = tree.current();
                match round_trip_values(b, std::slice::from_ref(&smaller))
                    .await
                    .pop()
                {
                    Some((_, came_back)) => failing = (smaller, came_back),
                    None if !tree.complicate() => break,
                    None => {}
                }
            }
            let (sent, came_back) = failing;
            let json = serde_json::to_string(&sent).unwrap_or_default();
            panic!(
                "job arguments must round-trip bit for bit; {} of {} values in one enqueue did not. \
                 Smallest failing value: {sent:?}, sent as {json}, came back as {came_back}. \
                 Seed {seed} (PROPTEST_RNG_SEED={seed} repeats the run)",
                bad.len(),
                values.len(),
            );
        }
        rounds += 1;
        checked += values.len();
    }
    assert!(
        checked >= 2 * VALUES_PER_ENQUEUE,
        "at least two enqueues ran"
    );
}

/// JSON has no NaN or infinity: an argument holding one, at any depth, is
/// refused at enqueue with an error naming the argument, and nothing is
/// written. (serde_json alone writes `null` for them, and the job would run
/// with a value it was never given.)
pub async fn non_finite_argument_is_refused_at_enqueue(factory: Factory) {
    #[derive(serde::Serialize)]
    struct Args {
        fail_times: u32,
        n: u64,
        ratio: f64,
        scores: Vec<f32>,
        by_name: std::collections::BTreeMap<String, Vec<f64>>,
    }
    let args = |ratio: f64, score: f32, named: f64| Args {
        fail_times: 0,
        n: 1,
        ratio,
        scores: vec![1.0, 2.0, score],
        by_name: [("k".to_owned(), vec![named])].into_iter().collect(),
    };
    let h = fresh(factory).await;
    let app = App::from_backend(Arc::clone(&h.backend));
    let cases = [
        (args(f64::NAN, 3.0, 4.0), "ratio", "NaN"),
        (args(0.5, f32::INFINITY, 4.0), "scores[2]", "inf"),
        (
            args(0.5, 3.0, f64::NEG_INFINITY),
            "by_name[\"k\"][0]",
            "-inf",
        ),
    ];
    for (bad, path, value) in &cases {
        let enqueue = jobsmith_core::Enqueue::new(&crate::NOOP_JOB, bad).queue("q");
        let err = app
            .enqueue(enqueue)
            .await
            .expect_err("an argument JSON cannot carry is refused at enqueue, not written as null");
        let text = err.to_string();
        assert!(
            text.contains(&format!("`{path}`")) && text.contains(value),
            "the error names the argument `{path}` and its value {value}: {text}"
        );
        assert!(
            Envelope::with_args("conformance_noop", "q", bad).is_err(),
            "an envelope cannot be built around `{path}` = {value} either"
        );
    }
    let s = stats(&*h.backend, "q").await;
    assert_eq!(
        (s.ready, s.scheduled),
        (0, 0),
        "a refused enqueue writes nothing"
    );
    let fine = jobsmith_core::Enqueue::new(&crate::NOOP_JOB, &args(0.5, 3.0, -0.0)).queue("q");
    app.enqueue(fine)
        .await
        .expect("the same arguments with finite values enqueue");
    let d = take_one(&*h.backend, "q").await;
    assert_eq!(
        env_of(&d).args.get(),
        r#"{"fail_times":0,"n":1,"ratio":0.5,"scores":[1.0,2.0,3.0],"by_name":{"k":[-0.0]}}"#,
        "finite floats are written exactly, -0.0 with its sign"
    );
}

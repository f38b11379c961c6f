//! Typed job arguments end to end, on the memory backend: a `#[job]` run by a
//! worker receives exactly the values it was enqueued with, bit for bit, and
//! an argument JSON cannot carry is refused at the enqueue.
//!
//! The conformance case `arguments_round_trip_bit_for_bit` checks the same
//! property on every backend with arbitrary values; this one goes through
//! the macro's own encoding and decoding, as an application does.

use jobsmith::prelude::*;
use jobsmith::testing::TestApp;
use jobsmith::Error;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// A nested argument, with floats at two depths.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Point {
    x: f64,
    y: f32,
    label: String,
    inner: Option<Box<Point>>,
}

/// One job's arguments, as sent and as received.
#[derive(Clone, Debug)]
struct Sample {
    a: f64,
    b: f32,
    c: i64,
    d: u64,
    e: i128,
    f: u128,
    s: String,
    v: Vec<f64>,
    o: Option<f64>,
    p: Point,
}

/// What the job received, in the order it ran.
#[derive(Debug, Default)]
struct Received(Mutex<Vec<Sample>>);

#[job(queue = "args_exact", retries = 0)]
#[allow(clippy::too_many_arguments)]
async fn exact(
    a: f64,
    b: f32,
    c: i64,
    d: u64,
    e: i128,
    f: u128,
    s: String,
    v: Vec<f64>,
    o: Option<f64>,
    p: Point,
    got: State<Received>,
) {
    let sample = Sample {
        a,
        b,
        c,
        d,
        e,
        f,
        s,
        v,
        o,
        p,
    };
    got.0 .0.lock().unwrap().push(sample);
}

fn same_point(x: &Point, y: &Point) -> bool {
    x.x.to_bits() == y.x.to_bits()
        && x.y.to_bits() == y.y.to_bits()
        && x.label == y.label
        && match (&x.inner, &y.inner) {
            (None, None) => true,
            (Some(x), Some(y)) => same_point(x, y),
            _ => false,
        }
}

/// Bit for bit: floats by their bits, so `-0.0` differs from `0.0`.
fn same(x: &Sample, y: &Sample) -> bool {
    x.a.to_bits() == y.a.to_bits()
        && x.b.to_bits() == y.b.to_bits()
        && (x.c, x.d, x.e, x.f) == (y.c, y.d, y.e, y.f)
        && x.s == y.s
        && x.v.len() == y.v.len()
        && x.v
            .iter()
            .zip(&y.v)
            .all(|(x, y)| x.to_bits() == y.to_bits())
        && x.o.map(f64::to_bits) == y.o.map(f64::to_bits)
        && same_point(&x.p, &y.p)
}

/// Finite `f64`s of arbitrary bits: serde_json's default float parser read
/// many of these back one bit off.
fn random_floats(n: usize) -> Vec<f64> {
    std::iter::repeat_with(|| f64::from_bits(fastrand::u64(..)))
        .filter(|x| x.is_finite())
        .take(n)
        .collect()
}

fn point(x: f64, y: f32, inner: Option<Point>) -> Point {
    Point {
        x,
        y,
        label: "p\u{0}\u{1f}\"\\\u{2028}\u{10ffff}".into(),
        inner: inner.map(Box::new),
    }
}

fn samples() -> Vec<Sample> {
    let edges = [
        -1.5e-300,
        f64::from_bits(1),
        -0.0,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        0.1,
        1e23,
    ];
    let mut out: Vec<Sample> = edges
        .iter()
        .zip(0..)
        .map(|(&a, i)| Sample {
            a,
            b: -f32::from_bits(1),
            c: i64::MIN,
            d: u64::MAX - i,
            e: i128::MIN,
            f: u128::MAX,
            s: "naïve \u{0}\t\u{7f} 日本 🦀".into(),
            v: random_floats(50),
            o: Some(-0.0),
            p: point(a, f32::MAX, Some(point(-a, f32::MIN_POSITIVE, None))),
        })
        .collect();
    out.push(Sample {
        a: 0.0,
        b: 0.0,
        c: 0,
        d: 0,
        e: 0,
        f: 0,
        s: String::new(),
        v: Vec::new(),
        o: None,
        p: point(0.0, -0.0, None),
    });
    out
}

#[tokio::test]
async fn a_job_receives_its_arguments_bit_for_bit() {
    let t = TestApp::new();
    let sent = samples();
    for s in &sent {
        let s = s.clone();
        exact
            .delay(s.a, s.b, s.c, s.d, s.e, s.f, s.s, s.v, s.o, s.p)
            .on(t.app())
            .await
            .unwrap();
    }
    let received = Arc::new(Received::default());
    let mut state = jobsmith::StateMap::new();
    state.insert_shared(Arc::clone(&received));
    let report = t.drain(state).await.unwrap();
    assert_eq!(
        report.succeeded,
        sent.len() as u64,
        "every job ran: {report:?}"
    );
    let got = received.0.lock().unwrap().clone();
    assert_eq!(got.len(), sent.len());
    // A worker with several slots may finish jobs out of order: each sample
    // is found by `d`, which differs between them.
    for s in &sent {
        let g = got.iter().find(|g| g.d == s.d);
        assert!(
            g.is_some_and(|g| same(s, g)),
            "the job received its arguments changed: sent {s:?}, received {g:?}"
        );
    }
}

#[tokio::test]
async fn an_argument_json_cannot_carry_is_refused_at_the_enqueue() {
    let t = TestApp::new();
    let s = samples().remove(0);
    let nan = exact
        .delay(
            f64::NAN,
            s.b,
            s.c,
            s.d,
            s.e,
            s.f,
            s.s.clone(),
            s.v.clone(),
            s.o,
            s.p.clone(),
        )
        .on(t.app())
        .await
        .expect_err("a NaN argument is refused");
    assert!(
        matches!(&nan, Error::NonFiniteArgument { path, value: "NaN" } if path == "a"),
        "{nan:?}"
    );
    let deep = point(1.0, 1.0, Some(point(f64::INFINITY, 1.0, None)));
    let inf = exact
        .delay(s.a, s.b, s.c, s.d, s.e, s.f, s.s, s.v, s.o, deep)
        .on(t.app())
        .await
        .expect_err("an infinite argument, however deep, is refused");
    assert_eq!(
        inf.to_string(),
        "job argument `p.inner.x` is inf, which JSON cannot carry (it has no NaN or infinity), \
         so nothing was enqueued; check for it before enqueueing, or send such a value as an \
         `Option` or a string"
    );
    assert!(t.enqueued("args_exact").is_empty(), "nothing was enqueued");
}

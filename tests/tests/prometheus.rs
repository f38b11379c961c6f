//! The worker's `/metrics` endpoint, scraped over real HTTP and parsed, with
//! real `#[job]`s on the memory backend and on the Redis at
//! `JOBSMITH_REDIS_URL` (default `redis://127.0.0.1:6379`).
//!
//! Its own test binary: the Prometheus recorder is global to a process. The
//! two backends' tests share it, so each uses its own queue and reads only
//! that queue's series.

use jobsmith::prelude::*;
use jobsmith::Error;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Holds `prom_block` until the test opens it.
#[derive(Debug)]
struct Gate {
    started: AtomicBool,
    open: watch::Sender<bool>,
}

#[job(retries = 0)]
async fn prom_ok(n: u32) {
    let _ = n;
    tokio::time::sleep(Duration::from_millis(5)).await;
}

#[job(retries = 0)]
async fn prom_bad() -> Result<(), String> {
    Err("this job always fails".into())
}

#[job(retries = 0)]
async fn prom_block(gate: State<Gate>) {
    gate.started.store(true, Ordering::SeqCst);
    let mut open = gate.open.subscribe();
    let _ = open.wait_for(|o| *o).await;
}

// ---- scraping and parsing -------------------------------------------------

/// One sample line of the exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape: the samples and each family's `# TYPE`.
#[derive(Debug, Default)]
struct Scrape {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
}

impl Scrape {
    /// Reads the Prometheus text format (0.0.4); panics on a line that breaks it.
    fn parse(text: &str) -> Scrape {
        let mut out = Scrape::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("`# TYPE name kind`");
                out.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            out.samples.push(parse_sample(line));
        }
        out
    }

    /// Samples of `name` whose labels include every pair of `with`.
    fn find<'a>(
        &'a self,
        name: &'a str,
        with: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The one sample of `name` with labels `with`, or `None`.
    fn value(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<_> = self.find(name, with).collect();
        assert!(
            found.len() <= 1,
            "{name}{with:?} matches {} samples",
            found.len()
        );
        found.first().map(|s| s.value)
    }
}

fn parse_sample(line: &str) -> Sample {
    let bad = |why: &str| -> ! { panic!("not a sample line ({why}): {line:?}") };
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad("no value"));
    let name = line[..name_end].to_owned();
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        bad("metric name");
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.strip_prefix(',').unwrap_or(body);
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = body.split_once("=\"").unwrap_or_else(|| bad("label"));
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => bad("escape"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => bad("unterminated label value"),
                }
            };
            labels.insert(key.to_owned(), value);
            body = &after[end + 1..];
        }
    }
    let value = match rest.split_whitespace().next() {
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some("NaN") => f64::NAN,
        Some(v) => v.parse().unwrap_or_else(|_| bad("value")),
        None => bad("no value"),
    };
    Sample {
        name,
        labels,
        value,
    }
}

/// A raw HTTP/1.1 request to `addr`: the status code, headers (lower-cased names) and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, HashMap<String, String>, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines.next().expect("a status line");
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((code, headers, body.to_owned()))
}

/// Scrapes `/metrics`, checking the response is the Prometheus text format.
async fn scrape(addr: SocketAddr) -> Scrape {
    let (code, headers, body) = http(addr, "GET", "/metrics")
        .await
        .expect("the endpoint answers");
    assert_eq!(code, 200, "{body}");
    let ct = headers.get("content-type").cloned().unwrap_or_default();
    assert!(
        ct.starts_with("text/plain; version=0.0.4"),
        "content type {ct}"
    );
    assert_eq!(
        headers.get("content-length").map(String::as_str),
        Some(body.len().to_string().as_str())
    );
    Scrape::parse(&body)
}

/// Scrapes until `ready` holds, or fails after 15 s with the last scrape.
async fn scrape_until(addr: SocketAddr, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = scrape(addr).await;
        if ready(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last scrape: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A port nothing listens on right now.
async fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// ---- the scenario, on any backend -----------------------------------------

/// Runs jobs on `q` through a worker that serves `/metrics`, and checks what a scrape says.
async fn scenario(app: App, q: &str) {
    // Installed before the first enqueue, so that enqueues are counted too.
    jobsmith::prometheus::Exporter::install().expect("no other recorder in this binary");
    let addr = free_addr().await;
    app.enqueue_many(
        (0..3)
            .map(|n| prom_ok.delay(n).queue(q))
            .chain([prom_bad.delay().queue(q)]),
    )
    .await
    .unwrap();

    let (open, _) = watch::channel(false);
    let gate = std::sync::Arc::new(Gate {
        started: AtomicBool::new(false),
        open,
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let worker = app
        .worker()
        .queues([q])
        .concurrency(1)
        .sample_every(Duration::from_millis(100))
        .state_shared(std::sync::Arc::clone(&gate))
        .prometheus(addr)
        .stop_on(async {
            let _ = stop_rx.await;
        });
    let running = tokio::spawn(worker.run_report());
    // The worker binds as it starts: wait until it listens.
    let t0 = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the worker never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Counters: three succeeded, one dead, on this queue.
    let ql = [("queue", q)];
    let s = scrape_until(addr, "3 succeeded and 1 dead", |s| {
        s.find("jobsmith_jobs_succeeded_total", &ql)
            .map(|x| x.value)
            .sum::<f64>()
            == 3.0
            && s.find("jobsmith_jobs_dead_total", &ql)
                .map(|x| x.value)
                .sum::<f64>()
                == 1.0
    })
    .await;
    assert_eq!(
        s.value(
            "jobsmith_jobs_succeeded_total",
            &[("queue", q), ("job", "prom_ok")]
        ),
        Some(3.0)
    );
    assert_eq!(
        s.value(
            "jobsmith_jobs_dead_total",
            &[("queue", q), ("job", "prom_bad")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "jobsmith_jobs_started_total",
            &[("queue", q), ("job", "prom_ok")]
        ),
        Some(3.0)
    );
    assert_eq!(
        s.value("jobsmith_jobs_enqueued_total", &[("queue", q)]),
        Some(4.0)
    );
    assert_eq!(
        s.types
            .get("jobsmith_jobs_succeeded_total")
            .map(String::as_str),
        Some("counter")
    );

    // Histograms, as true Prometheus histograms with jobsmith's buckets.
    for (family, bounds) in [
        (
            "jobsmith_job_duration_seconds",
            jobsmith::prometheus::DURATION_BUCKETS,
        ),
        (
            "jobsmith_job_queue_wait_seconds",
            jobsmith::prometheus::QUEUE_WAIT_BUCKETS,
        ),
    ] {
        assert_eq!(
            s.types.get(family).map(String::as_str),
            Some("histogram"),
            "{family}"
        );
        let ok = [("queue", q), ("job", "prom_ok")];
        let bucket_name = format!("{family}_bucket");
        let buckets: Vec<&Sample> = s.find(&bucket_name, &ok).collect();
        let les: Vec<f64> = buckets
            .iter()
            .map(|b| b.labels["le"].parse::<f64>().unwrap())
            .collect();
        let mut want: Vec<f64> = bounds.to_vec();
        want.push(f64::INFINITY);
        assert_eq!(les, want, "{family} buckets");
        let counts: Vec<f64> = buckets.iter().map(|b| b.value).collect();
        assert!(
            counts.windows(2).all(|w| w[0] <= w[1]),
            "{family} buckets are cumulative: {counts:?}"
        );
        let count = s.value(&format!("{family}_count"), &ok).expect("a _count");
        assert_eq!(count, 3.0, "{family}: one observation per attempt");
        assert_eq!(
            *counts.last().unwrap(),
            count,
            "{family}: +Inf equals _count"
        );
        let sum = s.value(&format!("{family}_sum"), &ok).expect("a _sum");
        assert!(sum >= 0.0);
    }
    // Each prom_ok sleeps 5 ms: none falls in the 5 ms bucket... all in 1 s.
    let le = |b: &str| {
        s.value(
            "jobsmith_job_duration_seconds_bucket",
            &[("queue", q), ("job", "prom_ok"), ("le", b)],
        )
        .unwrap()
    };
    assert_eq!(le("1"), 3.0, "each prom_ok takes about 5 ms");

    // Depth: one job running, one waiting behind it, one scheduled, one dead.
    prom_block.delay().queue(q).on(&app).await.unwrap();
    let t0 = Instant::now();
    while !gate.started.load(Ordering::SeqCst) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "prom_block never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    prom_ok.delay(100).queue(q).on(&app).await.unwrap();
    prom_ok
        .schedule(in_hours(1), 101)
        .queue(q)
        .on(&app)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let depth = |s: &Scrape, state: &str| {
        s.value("jobsmith_queue_depth", &[("queue", q), ("state", state)])
    };
    let s = scrape_until(
        addr,
        "depth gauges of 1 ready, 1 scheduled, 1 in flight, 1 dead, aged",
        |s| {
            depth(s, "ready") == Some(1.0)
                && depth(s, "scheduled") == Some(1.0)
                && depth(s, "in_flight") == Some(1.0)
                && depth(s, "dead") == Some(1.0)
                && s.value("jobsmith_queue_oldest_age_seconds", &ql)
                    .is_some_and(|a| a >= 1.0)
        },
    )
    .await;
    let stats = app
        .stats()
        .await
        .unwrap()
        .into_iter()
        .find(|st| st.queue == q)
        .expect("the backend's stats for the queue");
    assert_eq!(depth(&s, "ready"), Some(stats.ready as f64), "{stats:?}");
    assert_eq!(
        depth(&s, "scheduled"),
        Some(stats.scheduled as f64),
        "{stats:?}"
    );
    assert_eq!(
        depth(&s, "in_flight"),
        Some(stats.in_flight as f64),
        "{stats:?}"
    );
    assert_eq!(depth(&s, "dead"), Some(stats.dead as f64), "{stats:?}");
    let age = s.value("jobsmith_queue_oldest_age_seconds", &ql).unwrap();
    let backend_age = stats.oldest_ready_age.expect("a job waits").as_secs_f64();
    assert!(
        age > 0.0 && (age - backend_age).abs() < 2.0,
        "gauge {age} s, backend {backend_age} s"
    );
    assert_eq!(
        s.types.get("jobsmith_queue_depth").map(String::as_str),
        Some("gauge")
    );

    // Anything but GET /metrics is refused.
    assert_eq!(http(addr, "GET", "/").await.unwrap().0, 404);
    assert_eq!(http(addr, "POST", "/metrics").await.unwrap().0, 405);

    // The endpoint stops with the worker.
    gate.open.send_replace(true);
    stop_tx.send(()).unwrap();
    let report = running.await.unwrap().unwrap();
    assert!(report.succeeded >= 4, "{report:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "nothing listens on {addr} once the worker has stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_worker_serves_metrics_a_scrape_can_read() {
    scenario(App::memory(), "prom_mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_worker_serves_metrics_a_scrape_can_read() {
    let url =
        std::env::var("JOBSMITH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("jobsmith-test-prom-{:016x}", fastrand::u64(..));
    let sep = if url.contains('?') { '&' } else { '?' };
    let app = jobsmith::connect(format!("{url}{sep}prefix={prefix}"))
        .await
        .expect("Redis is reachable at JOBSMITH_REDIS_URL");
    scenario(app, "prom_redis").await;
    // Clean up: every key under the fresh prefix.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error_and_nothing_runs() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let app = App::memory();
    prom_ok.delay(1).queue("prom_busy").on(&app).await.unwrap();
    let err = app
        .worker()
        .queues(["prom_busy"])
        .prometheus(addr)
        .run()
        .await
        .expect_err("the port is taken");
    assert!(
        matches!(err, Error::MetricsBind { addr: a, .. } if a == addr),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&addr.to_string()) && msg.contains("pick a free port"),
        "{msg}"
    );
    let stats = app.stats().await.unwrap();
    assert_eq!(stats[0].ready, 1, "the worker reserved nothing: {stats:?}");
}

/// Addresses of this machine other than 127.0.0.1 that a listener on every
/// interface answers on right now: 127.0.0.2 (Linux routes all of 127/8 to
/// the loopback interface) and the address outgoing traffic leaves from,
/// when there is a route out. Each is checked against a listener of the
/// test's own on 0.0.0.0, so an address that could not tell a loopback-only
/// listener from one on every interface is not returned.
async fn other_addresses() -> Vec<IpAddr> {
    let mut candidates = vec![IpAddr::from([127, 0, 0, 2])];
    // Connecting a UDP socket sends nothing; it only picks the route.
    if let Ok(udp) = std::net::UdpSocket::bind("0.0.0.0:0") {
        if udp.connect("192.0.2.1:9").is_ok() {
            if let Ok(local) = udp.local_addr() {
                if !local.ip().is_loopback() && !local.ip().is_unspecified() {
                    candidates.push(local.ip());
                }
            }
        }
    }
    let everywhere = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = everywhere.local_addr().unwrap().port();
    let mut out = Vec::new();
    for ip in candidates {
        let reached = tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(SocketAddr::new(ip, port)),
        )
        .await;
        if matches!(reached, Ok(Ok(_))) {
            out.push(ip);
        }
    }
    out
}

/// A bare port means 127.0.0.1: a worker given one answers `/metrics` there
/// and on no other address of the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_port_listens_on_loopback_only() {
    assert_eq!(
        jobsmith::prometheus::MetricsAddr::from(9464).0.to_string(),
        "127.0.0.1:9464"
    );
    let port = free_addr().await.port();
    let app = App::memory();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let worker = app
        .worker()
        .queues(["prom_bare_port"])
        .prometheus(port)
        .stop_on(async {
            let _ = stop_rx.await;
        });
    let running = tokio::spawn(worker.run());
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    let t0 = Instant::now();
    while TcpStream::connect(loopback).await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the worker never listened on {loopback}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A scrape on 127.0.0.1 is answered (and checked: status, type, format).
    scrape(loopback).await;

    let others = other_addresses().await;
    assert!(
        !others.is_empty(),
        "no address but 127.0.0.1 reaches this machine, so nothing shows the endpoint is loopback-only"
    );
    for ip in others {
        let addr = SocketAddr::new(ip, port);
        let tried = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connecting to {addr} neither succeeded nor failed"));
        let err = tried.expect_err("the endpoint answers on an address other than 127.0.0.1");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{addr}: {err}"
        );
    }

    stop_tx.send(()).unwrap();
    running.await.unwrap().unwrap();
}

/// Job and queue names come from whoever can write to the broker: label
/// values come only from the registered jobs and the worker's own queues.
/// Thousands of envelopes naming unknown jobs, and envelopes of a known job
/// whose `queue` field says anything, are all counted, under one label
/// each, and the scrape does not grow with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_the_queue_do_not_make_series() {
    const UNKNOWN: usize = 5_000;
    const FOREIGN_QUEUES: u32 = 200;
    let exporter = jobsmith::prometheus::Exporter::install().expect("no other recorder");
    let t = jobsmith::testing::TestApp::new();
    let q = "prom_hostile";
    for i in 0..UNKNOWN {
        let env =
            jobsmith::Envelope::with_args(format!("evil_{i}"), q, &serde_json::json!({})).unwrap();
        t.backend().push_raw(q, env.to_bytes());
    }
    for i in 0..FOREIGN_QUEUES {
        let mut env =
            jobsmith::Envelope::with_args("prom_ok", q, &serde_json::json!({ "n": i })).unwrap();
        env.queue = format!("evil_queue_{i}\u{1b}[2J");
        t.backend().push_raw(q, env.to_bytes());
    }
    let report = t
        .app()
        .worker()
        .queues([q])
        .concurrency(32)
        .until_idle()
        .run_report()
        .await
        .unwrap();
    assert_eq!(report.dead, UNKNOWN as u64, "{report:?}");
    assert_eq!(report.succeeded, u64::from(FOREIGN_QUEUES), "{report:?}");

    let text = exporter.render();
    let hostile: Vec<&str> = text.lines().filter(|l| l.contains("evil")).collect();
    assert!(
        hostile.is_empty(),
        "{} lines of the scrape carry names from the queue, such as {:?}",
        hostile.len(),
        &hostile[..hostile.len().min(3)]
    );
    let s = Scrape::parse(&text);
    assert_eq!(
        s.value(
            "jobsmith_jobs_dead_total",
            &[("queue", q), ("job", "unregistered")]
        ),
        Some(UNKNOWN as f64),
        "every unknown job is counted under one label"
    );
    assert_eq!(
        s.value(
            "jobsmith_jobs_started_total",
            &[("queue", q), ("job", "prom_ok")]
        ),
        Some(f64::from(FOREIGN_QUEUES)),
        "a known job is counted under the queue the worker took it from"
    );
    let ours = text.lines().filter(|l| l.contains(q)).count();
    assert!(ours < 100, "{ours} lines for one queue and two job labels");
}

//! What the CLI tests share: server URLs with fresh namespaces, running the
//! binary, seeding a backend and reading every job back.
#![allow(dead_code, unreachable_pub)]

use jobsmith_core::{Backend, DeadJob, Envelope, JobId, QueueStats, Timestamp};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub fn redis_url() -> String {
    let base =
        std::env::var("JOBSMITH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    format!("{base}/?prefix=jscli{:012x}", fastrand::u64(..) >> 16)
}

pub fn amqp_url() -> String {
    let base = std::env::var("JOBSMITH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let sep = if base.contains('?') { '&' } else { '?' };
    format!(
        "{base}{sep}prefix=jscli{:016x}&expires=10m",
        fastrand::u64(..)
    )
}

pub fn sqs_url() -> String {
    let endpoint =
        std::env::var("JOBSMITH_SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    format!(
        "sqs://us-east-1?prefix=c{:012x}&endpoint={endpoint}",
        fastrand::u64(..) >> 16
    )
}

pub async fn connect(url: &str) -> jobsmith::App {
    jobsmith::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{url} is reachable (`cargo xtask services` starts it): {e}"))
}

/// The binary, with `JOBSMITH_URL` unset so only the arguments count.
pub fn jobsmith() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jobsmith"));
    c.env_remove("JOBSMITH_URL")
        .env_remove("JOBSMITH_MIGRATE_FAULT_AFTER");
    c
}

/// Runs the binary to completion; panics with its stderr unless it succeeds.
pub fn ok(args: &[&str]) -> String {
    let out = jobsmith().args(args).output().expect("the binary runs");
    assert!(
        out.status.success(),
        "jobsmith {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("output is UTF-8")
}

/// Runs the binary expecting it to fail; returns its stderr.
pub fn fails(args: &[&str]) -> String {
    let out: Output = jobsmith().args(args).output().expect("the binary runs");
    assert!(
        !out.status.success(),
        "jobsmith {args:?} should have failed, printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `jobsmith migrate` with a fault point after `n` copied jobs, waits
/// until it reports reaching it, and SIGKILLs it there.
pub fn migrate_killed_after(args: &[&str], n: u64) {
    let mut child = jobsmith()
        .args(args)
        .env("JOBSMITH_MIGRATE_FAULT_AFTER", n.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("piped");
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("stderr is text");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("fault point reached") {
            break;
        }
    }
    assert!(
        seen.contains("fault point reached"),
        "the migration should reach its fault point; it printed: {seen}"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}

/// What a seeded queue holds.
#[derive(Debug, Default)]
pub struct Seeded {
    /// Waiting jobs by id: (attempt, run_at, scheduled?).
    pub waiting: BTreeMap<JobId, (u32, Timestamp, bool)>,
    /// Dead job ids and their reasons.
    pub dead: BTreeMap<JobId, String>,
}

/// Imports `ready` ready jobs (attempts 0..2, two priorities), `scheduled`
/// jobs due at `due`, and `dead` dead jobs into `queue`.
pub async fn seed(
    b: &dyn Backend,
    queue: &str,
    ready: usize,
    scheduled: usize,
    dead: usize,
    due: Timestamp,
) -> Seeded {
    let mut s = Seeded::default();
    let mut jobs = Vec::new();
    for i in 0..ready + scheduled {
        let mut env =
            Envelope::with_args("send_welcome", queue, &json!({"user_id": i})).expect("JSON");
        env.attempt = (i % 3) as u32;
        env.max_attempts = 5;
        env.priority = (i % 2) as i32;
        let later = i >= ready;
        if later {
            env.run_at = due;
        }
        s.waiting
            .insert(env.id.clone(), (env.attempt, env.run_at, later));
        jobs.push(env);
    }
    for chunk in jobs.chunks(50) {
        let w = b
            .migration()
            .expect("the backend has it")
            .import(chunk.to_vec())
            .await
            .expect("seed import");
        assert!(w.iter().all(|w| *w), "seeding writes every job");
    }
    let mut buried = Vec::new();
    for i in 0..dead {
        let mut env =
            Envelope::with_args("charge_card", queue, &json!({"order": i})).expect("JSON");
        let reason = format!("card declined #{i}");
        env.attempt = 4;
        env.last_error = Some(reason.clone());
        s.dead.insert(env.id.clone(), reason.clone());
        buried.push(DeadJob::new(
            env.id.clone(),
            queue.to_owned(),
            reason,
            Timestamp(Timestamp::now().0 - 60_000),
            env.to_bytes(),
        ));
    }
    if !buried.is_empty() {
        b.migration()
            .expect("the backend has it")
            .import_dead(buried)
            .await
            .expect("seed dead");
    }
    s
}

/// The stats of one queue.
pub async fn queue_stats(b: &dyn Backend, queue: &str) -> QueueStats {
    let inspect = b.inspect().expect("the backend has stats");
    let mut stats = inspect.stats(&[queue.to_owned()]).await.expect("stats");
    stats.pop().expect("one row per queue asked for")
}

/// Every waiting job of `queue`, taken (held an hour) page by page; each
/// job is returned once however many pages it takes.
pub async fn take_all(b: &dyn Backend, queue: &str) -> Vec<Envelope> {
    let mut out = Vec::new();
    loop {
        let page = b
            .migration()
            .expect("the backend has it")
            .take(queue, 100, Duration::from_secs(3600))
            .await
            .expect("take");
        if page.is_empty() {
            return out;
        }
        out.extend(page.into_iter().map(|d| d.envelope.expect("an envelope")));
    }
}

/// Checks that `dest` holds exactly the seeded jobs, each once, attempts and
/// run_at kept, and that `source` holds none of them.
pub async fn check_moved(source: &dyn Backend, dest: &dyn Backend, queue: &str, s: &Seeded) {
    let got = take_all(dest, queue).await;
    let mut seen: BTreeMap<JobId, usize> = BTreeMap::new();
    for env in &got {
        *seen.entry(env.id.clone()).or_default() += 1;
        let (attempt, run_at, _) = s
            .waiting
            .get(&env.id)
            .unwrap_or_else(|| panic!("{} was never seeded", env.id));
        assert_eq!(env.attempt, *attempt, "the attempt of {} is kept", env.id);
        assert_eq!(env.run_at, *run_at, "the run_at of {} is kept", env.id);
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs in the destination twice: {twice:?}");
    let missing: Vec<_> = s
        .waiting
        .keys()
        .filter(|id| !seen.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} jobs are missing from the destination: {missing:?}",
        missing.len(),
        s.waiting.len()
    );
    let dead = dest
        .dead_letters()
        .expect("the backend has it")
        .dead_list(queue, 0, 10_000)
        .await
        .expect("dead list");
    let mut dead_ids: Vec<JobId> = dead.iter().map(|d| d.id.clone()).collect();
    dead_ids.sort();
    let want: Vec<JobId> = s.dead.keys().cloned().collect();
    assert_eq!(dead_ids, want, "every dead job is in the destination once");
    for d in &dead {
        assert_eq!(Some(&d.reason), s.dead.get(&d.id), "the reason is kept");
    }
    let left = source
        .inspect()
        .expect("the backend has it")
        .stats(&[queue.to_owned()])
        .await
        .expect("stats")
        .pop()
        .expect("one queue");
    assert_eq!(
        (left.ready, left.scheduled, left.in_flight, left.dead),
        (0, 0, 0, 0),
        "the source is empty"
    );
}

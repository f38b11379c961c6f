//! A job for the fault tests that records each completion in Redis, under
//! its own key, so that completions survive the worker that ran them.

use jobsmith_core::{Backoff, BoxFuture, Failure, JobContext, JobDef, JobOptions, Registry};
use redis::aio::ConnectionManager;
use serde_json::value::RawValue;
use std::time::Duration;

/// Where completions go: the set of finished `n`s and a count of runs.
#[derive(Clone)]
pub struct Recorder {
    pub conn: ConnectionManager,
    pub done_key: String,
    pub runs_key: String,
}

impl Recorder {
    pub async fn connect(url: &str, prefix: &str) -> Recorder {
        let client = redis::Client::open(url).expect("redis URL");
        let conn = ConnectionManager::new(client)
            .await
            .expect("connect the recorder");
        Recorder {
            conn,
            done_key: format!("{prefix}-done"),
            runs_key: format!("{prefix}-runs"),
        }
    }

    /// The `n`s recorded as done.
    pub async fn done(&self) -> Vec<u64> {
        let mut conn = self.conn.clone();
        let mut v: Vec<u64> = redis::cmd("SMEMBERS")
            .arg(&self.done_key)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// How many runs completed, duplicates included.
    pub async fn runs(&self) -> u64 {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(&self.runs_key)
            .query_async::<Option<u64>>(&mut conn)
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

/// `record`: arguments `{"n": n, "sleep_ms": ms}`; sleeps, then adds `n` to the done set.
/// A failure to record (Redis down) is retryable, 50 attempts 100 ms apart.
pub static RECORD_JOB: JobDef = JobDef {
    name: "record",
    location: "jobsmith_redis::tests::support::record",
    options: JobOptions {
        retries: 49,
        backoff: Backoff::Fixed(Duration::from_millis(100)),
        ..JobOptions::DEFAULT
    },
    run: run_record,
    params: &[],
    shapes: Vec::new,
};

fn run_record(
    args: &RawValue,
    ctx: JobContext,
) -> Result<BoxFuture<'static, Result<(), Failure>>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Args {
        n: u64,
        #[serde(default)]
        sleep_ms: u64,
    }
    let args: Args = serde_json::from_str(args.get())?;
    Ok(Box::pin(async move {
        if args.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.sleep_ms)).await;
        }
        let Some(rec) = ctx.state::<Recorder>() else {
            return Err(Failure::permanent("no recorder"));
        };
        let mut conn = rec.0.conn.clone();
        redis::pipe()
            .cmd("SADD")
            .arg(&rec.0.done_key)
            .arg(args.n)
            .cmd("INCR")
            .arg(&rec.0.runs_key)
            .exec_async(&mut conn)
            .await
            .map_err(|e| Failure::retryable(format!("could not record: {e}")))?;
        Ok(())
    }))
}

/// A registry holding only [`RECORD_JOB`].
pub fn registry() -> Registry {
    Registry::from_defs([&RECORD_JOB]).expect("one job cannot clash")
}

/// An envelope for `record`.
pub fn envelope(n: u64, sleep_ms: u64) -> jobsmith_core::Envelope {
    let mut e = jobsmith_core::Envelope::with_args(
        "record",
        "default",
        &serde_json::json!({"n": n, "sleep_ms": sleep_ms}),
    )
    .expect("plain JSON");
    e.max_attempts = 50;
    e
}

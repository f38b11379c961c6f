//! `jobsmith enqueue NAME --args JSON`: an envelope built by name.
//!
//! The CLI does not link the application's jobs, so it cannot check the
//! arguments' types: it checks that they are a JSON object, and a worker
//! dead-letters a job whose arguments do not deserialize, naming the problem.

use crate::args::EnqueueArgs;
use crate::error::{Error, Result};
use crate::when::{parse_age, parse_at, rfc3339};
use jobsmith::{App, Envelope, Timestamp};
use serde_json::value::RawValue;
use std::io::Write;

pub(crate) async fn command(
    app: &App,
    args: EnqueueArgs,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let env = envelope(args, Timestamp::now())?;
    let run_at = env.run_at;
    let queue = env.queue.clone();
    let id = app
        .backend()
        .enqueue(vec![env])
        .await?
        .pop()
        .ok_or_else(|| Error::Usage("the backend returned no id".into()))?;
    if json {
        let v = serde_json::json!({"id": id.as_str(), "queue": queue, "run_at": rfc3339(run_at)});
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "{id}")?;
    }
    Ok(())
}

/// The envelope `jobsmith enqueue` would write.
fn envelope(args: EnqueueArgs, now: Timestamp) -> Result<Envelope> {
    let hint = "give the job's arguments as a JSON object keyed by parameter name, e.g. --args '{\"user_id\": 7, \"template\": \"welcome\"}' ('{}' for none)";
    let value: serde_json::Value = serde_json::from_str(&args.args)
        .map_err(|e| Error::Usage(format!("bad --args: {e}; {hint}")))?;
    if !value.is_object() {
        return Err(Error::Usage(format!(
            "bad --args: `{}` is not a JSON object; {hint}",
            args.args
        )));
    }
    if args.name.trim().is_empty() {
        return Err(Error::Usage("the job name is empty: give the job's registered name (its fn name, or its `name = \"...\"`)".into()));
    }
    if args.max_attempts == 0 {
        return Err(Error::Usage(
            "--max-attempts 0 would never run the job: give 1 or more".into(),
        ));
    }
    let raw = RawValue::from_string(args.args.trim().to_owned())
        .map_err(|e| Error::Usage(format!("bad --args: {e}; {hint}")))?;
    let mut env = Envelope::new(args.name, args.queue, raw);
    env.enqueued_at = now;
    env.run_at = match &args.at {
        Some(at) => parse_at(at, now)?,
        None => now,
    };
    env.priority = args.priority;
    env.idempotency_key = args.key;
    env.max_attempts = args.max_attempts;
    if let Some(ttl) = &args.ttl {
        env.expires_at = Some(env.run_at.plus(parse_age("--ttl", ttl)?));
    }
    Ok(env)
}

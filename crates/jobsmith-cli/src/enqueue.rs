//! `jobsmith enqueue NAME --args JSON`: an envelope built by name.
//!
//! The CLI does not link the application's jobs. It reads what their workers
//! publish in the backend (a [`JobRecord`] per job: queue, attempts,
//! priority, TTL and the parameters' JSON shapes) and takes the job's own
//! defaults from it, so that a `retries = 0` job enqueued here runs at most
//! once, in the queue its workers read. `--args` are checked against the
//! record's parameters; what the record cannot tell (a struct's fields), the
//! worker still checks, and dead-letters arguments that do not deserialize.
//! A name no worker published is refused unless `--force`.

use crate::args::EnqueueArgs;
use crate::error::{Error, Result};
use crate::when::{parse_age, parse_at, rfc3339};
use jobsmith::{App, Envelope, JobRecord, Timestamp};
use serde_json::value::RawValue;
use std::io::Write;
use std::time::Duration;

/// The queue of a job enqueued with `--force` and no record nor `--queue`.
const FORCED_QUEUE: &str = "default";
/// The attempts of a job enqueued with `--force` and no record nor
/// `--max-attempts`: the runtime's default `retries = 3`, plus one.
const FORCED_ATTEMPTS: u32 = 4;
/// How many known names an unknown one's error lists.
const KNOWN_SHOWN: usize = 10;

pub(crate) async fn command(
    app: &App,
    args: EnqueueArgs,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let now = Timestamp::now();
    let given = Given::parse(&args, now)?;
    let record = record_for(app, &args, &given).await?;
    let env = envelope(args, given, record.as_ref(), now);
    // The queue name, and whatever else no flag covers.
    env.check_bounds()
        .map_err(|e| Error::Usage(e.to_string()))?;
    let (queue, run_at, max_attempts) = (env.queue.clone(), env.run_at, env.max_attempts);
    let id = app
        .backend()
        .enqueue(vec![env])
        .await?
        .pop()
        .ok_or_else(|| Error::Usage("the backend returned no id".into()))?;
    if json {
        let v = serde_json::json!({
            "id": id.as_str(),
            "queue": queue,
            "run_at": rfc3339(run_at),
            "max_attempts": max_attempts,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "{id}")?;
    }
    Ok(())
}

/// What the command line says, checked before the backend is asked anything.
struct Given {
    args: serde_json::Value,
    raw: Box<RawValue>,
    run_at: Timestamp,
    ttl: Option<Duration>,
}

impl Given {
    fn parse(args: &EnqueueArgs, now: Timestamp) -> Result<Self> {
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
        if let Some(queue) = &args.queue {
            jobsmith_core::check_queue_name(queue).map_err(|e| Error::Usage(e.to_string()))?;
        }
        if let Some(n) = args.max_attempts {
            if !(1..=jobsmith_core::MAX_ATTEMPTS).contains(&n) {
                return Err(Error::Usage(format!(
                    "bad --max-attempts {n}: give 1 (run once, no retries) to {} (`retries = 100`, the most a job takes, + 1)",
                    jobsmith_core::MAX_ATTEMPTS
                )));
            }
        }
        let raw = RawValue::from_string(args.args.trim().to_owned())
            .map_err(|e| Error::Usage(format!("bad --args: {e}; {hint}")))?;
        let run_at = match &args.at {
            Some(at) => parse_at(at, now)?,
            None => now,
        };
        let ttl = match &args.ttl {
            Some(text) => {
                let ttl = parse_age("--ttl", text)?;
                if ttl > jobsmith_core::MAX_AHEAD {
                    return Err(Error::Usage(format!(
                        "bad --ttl `{text}`: more than 100 years; give a shorter one, or none"
                    )));
                }
                Some(ttl)
            }
            None => None,
        };
        Ok(Self {
            args: value,
            raw,
            run_at,
            ttl,
        })
    }
}

/// The job's published record, its arguments checked against it; `None`
/// only with `--force`, when there is none or it cannot be read.
async fn record_for(app: &App, args: &EnqueueArgs, given: &Given) -> Result<Option<JobRecord>> {
    let backend = &**app.backend();
    let record = match jobsmith::published_job(backend, &args.name).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            let known = closest_first(
                &args.name,
                jobsmith::published_jobs(backend)
                    .await?
                    .into_iter()
                    .map(|r| r.name),
            );
            if !args.force {
                return Err(Error::UnknownJob {
                    name: args.name.clone(),
                    known,
                });
            }
            warn(&format!(
                "no worker has published a job named `{}`; enqueuing it anyway (--force) on queue `{}` with {} attempts",
                args.name,
                args.queue.as_deref().unwrap_or(FORCED_QUEUE),
                args.max_attempts.unwrap_or(FORCED_ATTEMPTS),
            ));
            return Ok(None);
        }
        // A record of another format (a later jobsmith) or not JSON.
        Err(e @ jobsmith::Error::Config(_)) if args.force => {
            warn(&format!(
                "{e}; enqueuing anyway (--force) on queue `{}` with {} attempts",
                args.queue.as_deref().unwrap_or(FORCED_QUEUE),
                args.max_attempts.unwrap_or(FORCED_ATTEMPTS),
            ));
            return Ok(None);
        }
        Err(e @ jobsmith::Error::Config(_)) => {
            return Err(Error::Usage(format!(
                "{e}; pass --force to enqueue with the command's defaults (queue `{FORCED_QUEUE}`, {FORCED_ATTEMPTS} attempts) or your own"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if let Err(misfit) = record.check_args(&given.args) {
        let message = format!("bad --args for `{}`: {misfit}", args.name);
        if !args.force {
            // An unknown key's message lists the parameters already.
            let signature = match misfit {
                jobsmith::ArgsMisfit::Unknown { .. } => String::new(),
                _ => format!("; the job takes {}", signature(&record)),
            };
            return Err(Error::Usage(format!(
                "{message}{signature} (pass --force to enqueue them anyway)"
            )));
        }
        warn(&format!("{message}; enqueuing them anyway (--force)"));
    }
    let age = Timestamp::now().since(record.published_at);
    if age > jobsmith::REFRESH_EVERY * 3 {
        warn(&format!(
            "the record of `{}` was last published {} minutes ago (by jobsmith {}, pid {}): no worker running it may be up; its defaults are used all the same",
            record.name,
            age.as_secs() / 60,
            record.published_by.jobsmith,
            record.published_by.pid,
        ));
    }
    if record.unique && args.key.is_none() {
        warn(&format!(
            "`{}` is a unique job, and this command does not derive its key from the arguments: pass --key to keep equal jobs out",
            record.name
        ));
    }
    Ok(Some(record))
}

/// The envelope `jobsmith enqueue` writes: what the command line gives,
/// else the record's defaults, else (forced, no record) the command's own.
fn envelope(
    args: EnqueueArgs,
    given: Given,
    record: Option<&JobRecord>,
    now: Timestamp,
) -> Envelope {
    let queue = args
        .queue
        .or_else(|| record.map(|r| r.queue.clone()))
        .unwrap_or_else(|| FORCED_QUEUE.to_owned());
    let mut env = Envelope::new(args.name, queue, given.raw);
    env.enqueued_at = now;
    env.run_at = given.run_at;
    env.priority = args.priority.or(record.map(|r| r.priority)).unwrap_or(0);
    env.idempotency_key = args.key;
    env.max_attempts = args
        .max_attempts
        .or(record.map(|r| r.max_attempts))
        .unwrap_or(FORCED_ATTEMPTS);
    // `--ttl` counts from the run time; the job's own TTL from the enqueue,
    // as it does when the application enqueues the job.
    env.expires_at = match (given.ttl, record.and_then(JobRecord::ttl)) {
        (Some(ttl), _) => Some(env.run_at.plus(ttl)),
        (None, Some(ttl)) => {
            let expires = now.plus(ttl);
            if expires <= env.run_at {
                warn(&format!(
                    "the job's ttl ({}) runs out before --at: it will expire unrun; pass a longer --ttl",
                    record.and_then(|r| r.ttl.as_deref()).unwrap_or("?")
                ));
            }
            Some(expires)
        }
        (None, None) => None,
    };
    env
}

/// `card: String, cents: u64`: a record's parameters as a signature.
fn signature(record: &JobRecord) -> String {
    if record.params.is_empty() {
        return "none".to_owned();
    }
    record
        .params
        .iter()
        .map(|p| format!("{}: {}", p.name, p.rust_type))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Says `message` on stderr, on one line, its control characters escaped:
/// it quotes the record's name, parameters and publisher, which whoever
/// can write to the broker wrote.
fn warn(message: &str) {
    eprintln!("jobsmith: warning: {}", jobsmith_core::printable(message));
}

/// `names` sorted by edit distance to `name`, then by name; at most
/// [`KNOWN_SHOWN`], with a count of the rest.
fn closest_first(name: &str, names: impl Iterator<Item = String>) -> Vec<String> {
    let mut scored: Vec<(usize, String)> = names.map(|n| (distance(name, &n), n)).collect();
    scored.sort();
    let rest = scored.len().saturating_sub(KNOWN_SHOWN);
    let mut out: Vec<String> = scored
        .into_iter()
        .take(KNOWN_SHOWN)
        .map(|(_, n)| n)
        .collect();
    if rest > 0 {
        out.push(format!("and {rest} more"));
    }
    out
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_come_closest_first() {
        let names = ["send_welcome", "charge_card", "charge_cards", "a"].map(String::from);
        assert_eq!(
            closest_first("chrage_card", names.into_iter()),
            ["charge_card", "charge_cards", "a", "send_welcome"]
        );
        assert_eq!(distance("kitten", "sitting"), 3);
        let many = (0..12).map(|i| format!("job{i:02}"));
        let shown = closest_first("job00", many);
        assert_eq!((shown.len(), shown[10].as_str()), (11, "and 2 more"));
    }
}

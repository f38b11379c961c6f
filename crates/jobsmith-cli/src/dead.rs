//! `jobsmith dead list|show|retry|purge`.

use crate::args::{DeadCommand, DeadFilter};
use crate::error::{Error, Result};
use crate::table;
use crate::when::{human, parse_age, rfc3339};
use jobsmith::{App, DeadJob, JobId, Timestamp};
use jobsmith_core::printable;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

/// Dead jobs read per call to the backend.
const PAGE: usize = 500;

/// A filter with its ages parsed.
struct Filter {
    queues: Vec<String>,
    job: Option<String>,
    older_than: Option<Duration>,
    newer_than: Option<Duration>,
}

impl Filter {
    async fn new(app: &App, f: DeadFilter) -> Result<Self> {
        let older_than = f
            .older_than
            .as_deref()
            .map(|t| parse_age("--older-than", t))
            .transpose()?;
        let newer_than = f
            .newer_than
            .as_deref()
            .map(|t| parse_age("--newer-than", t))
            .transpose()?;
        let known = app.backend().inspect()?.queues().await?;
        let queues = crate::chosen_queues(f.queues, known, "this backend")?;
        Ok(Self {
            queues,
            job: f.job,
            older_than,
            newer_than,
        })
    }

    fn matches(&self, d: &DeadJob, now: Timestamp) -> bool {
        let age = now.since(d.died_at);
        if self.older_than.is_some_and(|min| age < min) {
            return false;
        }
        if self.newer_than.is_some_and(|max| age >= max) {
            return false;
        }
        match &self.job {
            None => true,
            Some(name) => d.envelope().is_some_and(|e| &e.job == name),
        }
    }

    /// Every matching dead job, queue by queue, newest first within a queue.
    async fn collect(&self, app: &App, limit: usize) -> Result<Vec<DeadJob>> {
        let now = Timestamp::now();
        let mut out = Vec::new();
        for q in &self.queues {
            let mut offset = 0;
            loop {
                let page = app
                    .backend()
                    .dead_letters()?
                    .dead_list(q, offset, PAGE)
                    .await?;
                let n = page.len();
                out.extend(page.into_iter().filter(|d| self.matches(d, now)));
                if out.len() >= limit {
                    out.truncate(limit);
                    return Ok(out);
                }
                if n < PAGE {
                    break;
                }
                offset += n;
            }
        }
        Ok(out)
    }
}

#[derive(Serialize)]
struct Listed {
    id: String,
    queue: String,
    job: Option<String>,
    attempt: Option<u32>,
    /// The event the job was created for, when a publish created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<jobsmith::EventRef>,
    died_at: String,
    reason: String,
}

#[derive(Serialize)]
struct Shown {
    id: String,
    queue: String,
    died_at: String,
    reason: String,
    /// The envelope, when the payload is one.
    envelope: Option<Value>,
    /// The payload's bytes, escaped, when it is not an envelope.
    raw: Option<String>,
}

pub(crate) async fn command(
    app: &App,
    cmd: DeadCommand,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    match cmd {
        DeadCommand::List { filter, limit } => {
            let filter = Filter::new(app, filter).await?;
            let jobs = filter.collect(app, limit).await?;
            list(&jobs, json, out)
        }
        DeadCommand::Show { id, queue } => {
            let queues = match queue {
                Some(q) => vec![q],
                None => app.backend().inspect()?.queues().await?,
            };
            let id = JobId(id);
            for q in &queues {
                if let Some(d) = app.backend().dead_letters()?.dead_get(q, &id).await? {
                    return show(&d, json, out);
                }
            }
            Err(not_found(&[id], &queues))
        }
        DeadCommand::Retry { ids, all, filter } => {
            let targets = targets(app, ids, all, filter).await?;
            let mut n = 0;
            for (q, ids) in &targets {
                n += app.backend().dead_letters()?.dead_requeue(q, ids).await?;
            }
            done(out, json, "retried", n)
        }
        DeadCommand::Purge { ids, all, filter } => {
            let targets = targets(app, ids, all, filter).await?;
            let mut n = 0;
            for (q, ids) in &targets {
                n += app.backend().dead_letters()?.dead_delete(q, ids).await?;
            }
            done(out, json, "purged", n)
        }
    }
}

fn done(out: &mut dyn Write, json: bool, verb: &str, n: usize) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::json!({ verb: n }))?;
    } else {
        writeln!(out, "{verb} {n} dead job{}", if n == 1 { "" } else { "s" })?;
    }
    Ok(())
}

fn not_found(ids: &[JobId], queues: &[String]) -> Error {
    let ids: Vec<&str> = ids.iter().map(JobId::as_str).collect();
    Error::Usage(format!(
        "no dead job with id {} in queue{} {}; `jobsmith dead list` shows the dead jobs and their ids",
        ids.join(", "),
        if queues.len() == 1 { "" } else { "s" },
        if queues.is_empty() {
            "(none known)".to_owned()
        } else {
            queues.join(", ")
        }
    ))
}

/// The dead jobs a retry or purge acts on, by queue: the filter's matches,
/// narrowed to `ids` when given. Every id must be found before anything changes.
async fn targets(
    app: &App,
    ids: Vec<String>,
    all: bool,
    filter: DeadFilter,
) -> Result<BTreeMap<String, Vec<JobId>>> {
    if ids.is_empty() && !all {
        return Err(Error::Usage(
            "say which dead jobs: give their ids, or --all (narrowed with --queue, --job, --older-than, --newer-than)".into(),
        ));
    }
    let filter = Filter::new(app, filter).await?;
    let matched = filter.collect(app, usize::MAX).await?;
    let mut out: BTreeMap<String, Vec<JobId>> = BTreeMap::new();
    if all {
        for d in matched {
            out.entry(d.queue).or_default().push(d.id);
        }
        return Ok(out);
    }
    let mut missing = Vec::new();
    for id in ids.into_iter().map(JobId) {
        match matched.iter().find(|d| d.id == id) {
            Some(d) => out.entry(d.queue.clone()).or_default().push(id),
            None => missing.push(id),
        }
    }
    if !missing.is_empty() {
        return Err(not_found(&missing, &filter.queues));
    }
    Ok(out)
}

fn list(jobs: &[DeadJob], json: bool, out: &mut dyn Write) -> Result<()> {
    let now = Timestamp::now();
    if json {
        let rows: Vec<Listed> = jobs
            .iter()
            .map(|d| {
                let env = d.envelope();
                Listed {
                    id: d.id.0.clone(),
                    queue: d.queue.clone(),
                    job: env.as_ref().map(|e| e.job.clone()),
                    attempt: env.as_ref().map(|e| e.attempt),
                    event: env.as_ref().and_then(|e| e.event.as_deref().cloned()),
                    died_at: rfc3339(d.died_at),
                    reason: d.reason.clone(),
                }
            })
            .collect();
        let text = serde_json::to_string_pretty(&rows).map_err(jobsmith::Error::Serialize)?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    if jobs.is_empty() {
        writeln!(out, "no dead jobs match")?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|d| {
            let env = d.envelope();
            vec![
                d.id.0.clone(),
                d.queue.clone(),
                env.as_ref()
                    .map_or_else(|| "(not an envelope)".into(), |e| e.job.clone()),
                env.as_ref()
                    .map_or_else(|| "-".into(), |e| e.attempt.to_string()),
                env.as_ref()
                    .and_then(|e| e.event.as_deref())
                    .map_or_else(|| "-".into(), |e| e.name.clone()),
                format!("{} ago", human(now.since(d.died_at))),
                one_line(&d.reason, 60),
            ]
        })
        .collect();
    table::write(
        out,
        &["ID", "QUEUE", "JOB", "ATTEMPT", "EVENT", "DIED", "REASON"],
        &rows,
    )?;
    Ok(())
}

fn show(d: &DeadJob, json: bool, out: &mut dyn Write) -> Result<()> {
    let envelope: Option<Value> = d
        .envelope()
        .and_then(|_| serde_json::from_slice(&d.raw).ok());
    let raw = envelope.is_none().then(|| d.raw.escape_ascii().to_string());
    if json {
        let shown = Shown {
            id: d.id.0.clone(),
            queue: d.queue.clone(),
            died_at: rfc3339(d.died_at),
            reason: d.reason.clone(),
            envelope,
            raw,
        };
        let text = serde_json::to_string_pretty(&shown).map_err(jobsmith::Error::Serialize)?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    writeln!(out, "id:     {}", printable(d.id.as_str()))?;
    writeln!(out, "queue:  {}", printable(&d.queue))?;
    writeln!(
        out,
        "died:   {} ({} ago)",
        rfc3339(d.died_at),
        human(Timestamp::now().since(d.died_at))
    )?;
    writeln!(out, "reason: {}", d.reason)?;
    if let Some(event) = d.envelope().and_then(|e| e.event) {
        writeln!(
            out,
            "event:  {} (id {})",
            printable(&event.name),
            printable(event.id.as_str())
        )?;
    }
    match (envelope, raw) {
        (Some(env), _) => {
            let text = serde_json::to_string_pretty(&env).map_err(jobsmith::Error::Serialize)?;
            writeln!(out, "envelope:\n{text}")?;
        }
        (None, raw) => {
            writeln!(
                out,
                "payload (not an envelope, {} bytes, escaped):\n{}",
                d.raw.len(),
                raw.unwrap_or_default()
            )?;
        }
    }
    Ok(())
}

/// `s` on one line, cut to `max` characters with an ellipsis.
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut t: String = flat.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

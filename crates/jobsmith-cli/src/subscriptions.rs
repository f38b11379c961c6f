//! `jobsmith subscriptions` and `jobsmith publish`: events from the command line.

use crate::args::{PublishArgs, SubscriptionsCommand};
use crate::{table, Error, Result};
use jobsmith::{App, EventId, Timestamp};
use std::io::Write;

/// Lists the subscriptions (a table, or JSON: an array of subscriptions),
/// or removes one.
pub(crate) async fn command(
    app: &App,
    cmd: Option<SubscriptionsCommand>,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    match cmd {
        Some(SubscriptionsCommand::Remove { job }) => {
            if app.unsubscribe(&job).await? {
                writeln!(
                    out,
                    "removed the subscription of `{}`; publishes stop reaching it within a second",
                    jobsmith_core::printable(&job)
                )?;
                Ok(())
            } else {
                let known: Vec<String> = app
                    .subscriptions()
                    .await?
                    .into_iter()
                    .map(|s| s.job)
                    .collect();
                Err(Error::Usage(format!(
                    "no subscription of job `{}`; the subscribing jobs are: {}",
                    job.escape_default(),
                    if known.is_empty() {
                        "(none)".to_owned()
                    } else {
                        known.join(", ")
                    }
                )))
            }
        }
        None => {
            let subs = app.subscriptions().await?;
            if json {
                let text = serde_json::to_string(&subs).map_err(jobsmith::Error::Serialize)?;
                writeln!(out, "{text}")?;
            } else if subs.is_empty() {
                writeln!(
                    out,
                    "no subscriptions: a worker registers one for each job it runs with #[job(on = ..)]"
                )?;
            } else {
                let now = Timestamp::now();
                let rows: Vec<Vec<String>> = subs
                    .iter()
                    .map(|s| {
                        vec![
                            s.job.clone(),
                            s.queue.clone(),
                            s.pattern.clone(),
                            format!("{} ago", crate::when::human(now.since(s.registered_at))),
                        ]
                    })
                    .collect();
                table::write(out, &["JOB", "QUEUE", "PATTERN", "REGISTERED"], &rows)?;
            }
            Ok(())
        }
    }
}

/// Publishes an event by name and JSON payload; prints its id and how many
/// subscriptions it reached.
pub(crate) async fn publish(
    app: &App,
    args: PublishArgs,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let payload: serde_json::Value = serde_json::from_str(&args.payload).map_err(|e| {
        Error::Usage(format!(
            "the payload is not JSON ({e}); give it as the event type serializes, e.g. '{{\"user_id\": 7}}'"
        ))
    })?;
    let published = app
        .publish_json(
            &args.name,
            &payload,
            args.id.map(|id| EventId::from(id.as_str())),
        )
        .await?;
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"id": published.id, "reached": published.reached})
        )?;
    } else {
        writeln!(
            out,
            "published event {} ({}): {} subscription{} reached",
            jobsmith_core::printable(&args.name),
            published.id,
            published.reached,
            if published.reached == 1 { "" } else { "s" }
        )?;
    }
    Ok(())
}

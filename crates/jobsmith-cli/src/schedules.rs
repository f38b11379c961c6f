//! `jobsmith schedules`: the periodic schedules the workers run.

use crate::Result;
use jobsmith::App;
use std::io::Write;

/// Prints every schedule the workers recorded in the backend: a table, or
/// JSON (an array of schedule states). A schedule whose stored state cannot
/// be read is listed as unknown (`?`, or `"unreadable"` in JSON), with a
/// warning on stderr, rather than failing the listing.
pub(crate) async fn command(app: &App, json: bool, out: &mut (dyn Write + Send)) -> Result<()> {
    let schedules = jobsmith::schedules(app).await?;
    for s in &schedules {
        if let Some(why) = &s.unreadable {
            eprintln!(
                "jobsmith: warning: the stored state of schedule `{}` is not readable ({}); it is listed as unknown, and a worker running the schedule rewrites it (when it starts, and at each tick)",
                jobsmith_core::printable(&s.name),
                jobsmith_core::printable(why)
            );
        }
    }
    if json {
        let text = serde_json::to_string(&schedules).map_err(jobsmith::Error::Serialize)?;
        writeln!(out, "{text}")?;
    } else if schedules.is_empty() {
        writeln!(
            out,
            "no schedules recorded: a worker records each schedule it runs (#[job(cron = ..)] or Worker::schedule)"
        )?;
    } else {
        write!(out, "{}", jobsmith::ScheduleInfo::table(&schedules))?;
    }
    Ok(())
}

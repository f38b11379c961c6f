//! Scheduled jobs compile, with injected parameters only, and register their schedule.
use jobsmith::prelude::*;

struct Db;

#[job(cron = "0 */5 * * * *")]
async fn every_five_minutes() {}

#[job(cron = "0 0 3 * * Mon-Fri", tz = "Europe/Paris", missed = "catch_up", queue = "reports")]
async fn nightly(db: State<Db>, ctx: JobContext) -> Result<(), String> {
    let _ = (db, ctx.scheduled_for());
    Ok(())
}

fn main() {
    use jobsmith::Job as _;
    let cron = every_five_minutes::DEF.options.cron.expect("scheduled");
    assert_eq!((cron.expr, cron.tz, cron.missed), ("0 */5 * * * *", "UTC", Missed::Skip));
    let cron = nightly::DEF.options.cron.expect("scheduled");
    assert_eq!((cron.tz, cron.missed), ("Europe/Paris", Missed::CatchUp));
}

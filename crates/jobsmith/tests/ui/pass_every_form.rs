#![deny(warnings, missing_docs)]
//! Every form `#[job]` accepts, compiled under `deny(warnings, missing_docs)`.

use jobsmith::prelude::*;
use std::time::Duration;

/// Shared state.
#[derive(Debug)]
pub struct Db;

/// A public job with every option.
#[job(
    name = "every_option",
    queue = "q",
    priority = -5,
    retries = 0,
    backoff = "exponential(250ms, max = 1m, jitter = none)",
    ttl = "1h30m",
    timeout = "500ms",
    unique = true
)]
pub async fn all_options(id: u64, db: State<Db>, ctx: JobContext) -> Result<u64, Failure> {
    let _ = (&*db, ctx.attempt());
    Ok(id)
}

#[job(backoff = "none")]
async fn private_job(mut items: Vec<String>, _unused: Option<u8>) {
    items.sort();
}

#[job(backoff = "fixed(2s)", crate = ::jobsmith)]
pub(crate) async fn crate_visible(r#type: String) -> Result<(), std::fmt::Error> {
    let _ = r#type;
    Ok(())
}

mod nested {
    use jobsmith::prelude::*;

    /// Declared in a module, enqueued from outside.
    #[job]
    pub async fn inner(n: i32) -> Result<(), Failure> {
        if n < 0 {
            return Err(Failure::permanent("negative"));
        }
        Ok(())
    }
}

fn main() {
    let _ = all_options.delay(1);
    let _ = all_options
        .schedule(Duration::from_secs(3), 1)
        .priority(3)
        .key("k");
    let _ = private_job.delay(vec![], None);
    let _ = crate_visible.delay("x".into());
    let _ = nested::inner.schedule(in_hours(1), -1);
    let _future = nested::inner(3);
    let _future = private_job::call(vec![], Some(1));
    let job: nested::inner = nested::inner;
    let _ = format!("{job:?}");
    fn takes_job<J: jobsmith::Job + Copy>(_: J) {}
    takes_job(all_options);
}

use jobsmith::prelude::*;

#[job(cron = "0 */5 * * * *", on = "user.*")]
async fn audit(event: AnyEvent) {
    let _ = event;
}

fn main() {}

use jobsmith::prelude::*;

#[job(cron = "0 */5 * * * *")]
async fn report(region: String, ctx: JobContext) {
    let _ = (region, ctx);
}

fn main() {}

use jobsmith::prelude::*;

#[job(on = "user*")]
async fn audit(event: AnyEvent) {
    let _ = event;
}

fn main() {}

use jobsmith::prelude::*;

#[job(on = "user.*")]
async fn audit(event: String) {
    let _ = event;
}

fn main() {}

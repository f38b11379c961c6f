use jobsmith::prelude::*;

#[job(
    ttl = "7 parsecs",
    retries = 500,
    backoff = "sometimes",
    colour = "blue",
    queue = ""
)]
fn send(name: &str, (a, b): (u32, u32)) {
    let _ = (name, a, b);
}

fn main() {
    // Still a job type: no "unresolved name" here.
    let _ = send.delay("x", (1, 2));
}

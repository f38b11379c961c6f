use jobsmith::prelude::*;

#[job(queu = "email")]
async fn send(user_id: u64) {
    let _ = user_id;
}

#[job(concurrency = 3, retries = 2)]
async fn other() {}

fn main() {
    let _ = send.delay(1);
    let _ = other.delay();
}

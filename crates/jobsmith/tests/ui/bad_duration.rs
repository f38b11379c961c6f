use jobsmith::prelude::*;

#[job(ttl = "7 parsecs")]
async fn send(user_id: u64) {
    let _ = user_id;
}

#[job(timeout = "30", ttl = "0s")]
async fn other() {}

fn main() {
    let _ = send.delay(1);
    let _ = other.delay();
}

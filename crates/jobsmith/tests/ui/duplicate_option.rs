use jobsmith::prelude::*;

#[job(ttl = "1h", queue = "a", ttl = "2h", unique, unique = false)]
async fn send(user_id: u64) {
    let _ = user_id;
}

#[job(queue = "a")]
#[job(queue = "b")]
async fn twice() {}

fn main() {
    let _ = send.delay(1);
    let _ = twice.delay();
}

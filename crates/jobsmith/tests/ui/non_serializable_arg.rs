use jobsmith::prelude::*;

struct Connection;

#[job]
async fn send(user_id: u64, conn: Connection) {
    let _ = (user_id, conn);
}

fn main() {}

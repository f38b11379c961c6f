use jobsmith::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "user.signed_up")]
struct UserSignedUp {
    user_id: u64,
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = "user.deleted")]
struct UserDeleted {
    user_id: u64,
}

#[job(on = UserSignedUp)]
async fn send_welcome(event: UserDeleted, ctx: JobContext) {
    let _ = (event.user_id, ctx);
}

fn main() {}

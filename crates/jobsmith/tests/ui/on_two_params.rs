use jobsmith::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "user.signed_up")]
struct UserSignedUp {
    user_id: u64,
}

#[job(on = UserSignedUp)]
async fn send_welcome(event: UserSignedUp, template: String) {
    let _ = (event.user_id, template);
}

#[job(on = "user.*")]
async fn audit(ctx: JobContext) {
    let _ = ctx;
}

fn main() {}

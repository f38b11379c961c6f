use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, jobsmith::Event)]
#[event(name = "user.*")]
struct UserSignedUp {
    user_id: u64,
}

fn main() {}

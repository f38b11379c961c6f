use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, jobsmith::Event)]
struct UserSignedUp {
    user_id: u64,
}

fn main() {}

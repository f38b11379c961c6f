use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, jobsmith::Event)]
#[event(nmae = "user.signed_up", version = 2)]
struct UserSignedUp {
    user_id: u64,
}

#[derive(Serialize, Deserialize, jobsmith::Event)]
#[event(name = "user.deleted", name = "user.removed")]
struct UserDeleted {
    user_id: u64,
}

fn main() {}

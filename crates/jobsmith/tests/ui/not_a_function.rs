use jobsmith::prelude::*;

#[job]
struct Send {
    user_id: u64,
}

fn main() {
    let _ = Send { user_id: 1 }.user_id;
}

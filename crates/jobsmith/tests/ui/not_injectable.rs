use jobsmith::prelude::*;

mod other {
    pub struct State<T>(pub T);
}

#[job]
async fn send(user_id: u64, state: other::State<u64>, #[inject] db: String) {
    let _ = (user_id, state.0, db);
}

#[job]
async fn bad_result() -> u32 {
    7
}

fn main() {}

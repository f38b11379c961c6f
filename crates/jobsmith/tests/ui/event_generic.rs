use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, jobsmith::Event)]
#[event(name = "item.created")]
struct Created<T> {
    item: T,
}

fn main() {}

use jobsmith::prelude::*;

#[job]
async fn store(value: impl serde::Serialize) {
    let _ = value;
}

#[job]
async fn report() -> impl std::fmt::Debug {
    7
}

fn main() {}

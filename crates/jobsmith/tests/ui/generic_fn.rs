use jobsmith::prelude::*;

#[job]
async fn store<T: serde::Serialize>(value: T) {
    let _ = value;
}

#[job]
async fn store_where(value: u64)
where
    u64: Copy,
{
    let _ = value;
}

fn main() {}

use jobsmith::prelude::*;

#[job(on = u32)]
async fn count(n: u32) {
    let _ = n;
}

fn main() {}

use jobsmith::prelude::*;
use std::rc::Rc;

#[job]
async fn count(n: u64) {
    let shared = Rc::new(n);
    std::future::ready(()).await;
    let _ = shared;
}

fn main() {}

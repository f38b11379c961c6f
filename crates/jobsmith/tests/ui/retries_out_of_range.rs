use jobsmith::prelude::*;

#[job(retries = 1000)]
async fn a() {}

#[job(retries = -1)]
async fn b() {}

#[job(retries = "5", priority = 3000000000)]
async fn c() {}

fn main() {}

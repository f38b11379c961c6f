use jobsmith::prelude::*;

#[job(backoff = "linear(1s)")]
async fn a() {}

#[job(backoff = "exponential(1s, max = 10 minutes)")]
async fn b() {}

#[job(backoff = "exponential(1m, max = 1s)")]
async fn c() {}

#[job(backoff = "exponential(1s, jitter = some)")]
async fn d() {}

#[job(backoff = "fixed")]
async fn e() {}

fn main() {}

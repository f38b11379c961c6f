use jobsmith::prelude::*;

#[job(cron = "*/5 * * * *")]
async fn five_fields() {}

#[job(cron = "0 61 * * * *")]
async fn minute_out_of_range() {}

#[job(cron = "0 0 3 * * *", tz = "Europe/Atlantis")]
async fn unknown_zone() {}

#[job(cron = "0 0 3 * * *", missed = "sometimes")]
async fn unknown_policy() {}

#[job(tz = "Europe/Paris", missed = "catch_up")]
async fn zone_without_cron() {}

fn main() {}

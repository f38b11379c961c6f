//! The soak's command line.

use std::time::Duration;

/// The soak's options.
#[derive(Debug, Clone)]
pub(super) struct Options {
    pub(super) backend: String,
    pub(super) jobs: u64,
    pub(super) workers: usize,
    pub(super) kill_every: Option<Duration>,
    /// Graceful restarts of one worker at a time: SIGTERM, wait, start again.
    pub(super) restart_every: Option<Duration>,
    pub(super) restart_broker_every: Option<Duration>,
    pub(super) failure_rate: f64,
    pub(super) seed: u64,
    /// Keep the ledger tables and worker logs even when the run passes.
    pub(super) keep: bool,
    /// Backend URL settings added to the run's own, such as `delays=quorum`.
    pub(super) settings: Option<String>,
    /// Publish `jobs` events, each reaching three handlers, instead of plain jobs (`events.rs`).
    pub(super) events: bool,
}

const USAGE: &str = "usage: cargo xtask soak --backend memory|redis|amqp|sqs --jobs N [--workers W] [--kill-every SECONDS] [--restart-every SECONDS] [--restart-broker-every SECONDS] [--failure-rate F] [--seed S] [--keep] [--settings K=V&..] [--events]";

pub(super) fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        backend: String::new(),
        jobs: 20_000,
        workers: 4,
        kill_every: None,
        restart_every: None,
        restart_broker_every: None,
        failure_rate: 0.2,
        seed: 1,
        keep: false,
        settings: None,
        events: false,
    };
    let mut it = args.iter();
    let secs = |flag: &str, v: Option<&String>| -> Result<Duration, String> {
        let v = v.ok_or(format!("{flag} needs a number of seconds"))?;
        let s: f64 = v
            .parse()
            .map_err(|_| format!("{flag} {v}: not a number of seconds"))?;
        if !(s > 0.0 && s.is_finite()) {
            return Err(format!("{flag} {v}: must be more than 0 seconds"));
        }
        Ok(Duration::from_secs_f64(s))
    };
    while let Some(a) = it.next() {
        let mut num = |flag: &str| -> Result<String, String> {
            it.next()
                .cloned()
                .ok_or(format!("{flag} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--backend" => o.backend = num("--backend")?,
            "--jobs" => {
                let v = num("--jobs")?;
                o.jobs = v.parse().map_err(|_| format!("--jobs {v}: not a number"))?;
            }
            "--workers" => {
                let v = num("--workers")?;
                o.workers = v
                    .parse()
                    .ok()
                    .filter(|w| *w > 0)
                    .ok_or(format!("--workers {v}: need a number above 0"))?;
            }
            "--failure-rate" => {
                let v = num("--failure-rate")?;
                o.failure_rate = v
                    .parse()
                    .ok()
                    .filter(|f: &f64| (0.0..=1.0).contains(f))
                    .ok_or(format!("--failure-rate {v}: need a share from 0 to 1"))?;
            }
            "--seed" => {
                let v = num("--seed")?;
                o.seed = v.parse().map_err(|_| format!("--seed {v}: not a number"))?;
            }
            "--keep" => o.keep = true,
            "--events" => o.events = true,
            "--settings" => {
                let v = num("--settings")?;
                if v.is_empty() || v.starts_with('&') || v.contains("prefix=") {
                    return Err(format!(
                        "--settings {v}: give URL settings as `key=value&key=value`; the soak sets the prefix itself"
                    ));
                }
                o.settings = Some(v);
            }
            "--kill-every" => o.kill_every = Some(secs(a, it.next())?),
            "--restart-every" => o.restart_every = Some(secs(a, it.next())?),
            "--restart-broker-every" => o.restart_broker_every = Some(secs(a, it.next())?),
            other => return Err(format!("unknown soak option `{other}`\n{USAGE}")),
        }
    }
    match o.backend.as_str() {
        "memory" | "redis" | "amqp" | "sqs" => {}
        "" => return Err(format!("--backend is required\n{USAGE}")),
        other => {
            return Err(format!(
                "unknown backend `{other}`: use memory, redis, amqp or sqs"
            ))
        }
    }
    if o.settings.is_some() && o.backend == "memory" {
        return Err("--settings: the memory backend has no URL to add settings to".into());
    }
    if o.events && o.restart_broker_every.is_some() {
        return Err("--events with --restart-broker-every is not supported: a publish cut off by the restart cannot be told from one that was not sent".into());
    }
    if o.restart_broker_every.is_some() {
        match o.backend.as_str() {
            "memory" => return Err("--restart-broker-every: the memory backend has no broker to restart; it lives and dies with the process".into()),
            "sqs" => return Err("--restart-broker-every is not supported on SQS: moto keeps its queues in memory, so a restart would lose them all (that is moto, not SQS)".into()),
            _ => {}
        }
    }
    Ok(o)
}

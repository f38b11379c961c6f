//! The events soak's checker: the event ledger and the dead-letter queues
//! against every event's three subscriptions.

use super::{attempts_table, effects_table, planned_failures, Driven, Handler, HANDLER_ATTEMPTS};
use crate::soak::reads::dead_letters;
use jobsmith::App;
use std::collections::{HashMap, HashSet};

/// What the checker found.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// (event, handler) pairs that never succeeded, and jobs left in the queues.
    pub(crate) lost: u64,
    /// (event, handler) pairs run by more than one job: an event that made a
    /// second job for one subscription. On a backend whose event jobs carry
    /// no key (RabbitMQ, `Events::keys_jobs`), a republished event may make
    /// exactly one more: those are counted in `second_jobs_unkeyed` instead.
    pub(crate) second_jobs: u64,
    /// Republished events' second jobs on a backend that documents them.
    pub(crate) second_jobs_unkeyed: u64,
    /// Idempotent handlers whose effect was recorded more than once for an event.
    pub(crate) idempotency_broken: u64,
    /// Successes beyond the first of the handler that is not idempotent
    /// (at-least-once re-deliveries, mostly of killed workers' jobs).
    pub(crate) duplicates: u64,
    /// Re-deliveries to idempotent handlers whose effect was there already.
    pub(crate) absorbed: u64,
    /// Attempts past the handlers' policy, or a success before the planned failures.
    pub(crate) attempts_wrong: u64,
    /// Entries in the dead-letter queues (no handler is planned to die).
    pub(crate) dead: u64,
    /// Handler attempts recorded.
    pub(crate) attempts: u64,
    pub(crate) examples: Vec<String>,
}

impl Findings {
    pub(crate) fn pass(&self, driven: &Driven) -> bool {
        self.lost == 0
            && self.second_jobs == 0
            && self.idempotency_broken == 0
            && self.attempts_wrong == 0
            && self.dead == 0
            && driven.reached_wrong == 0
            && driven.failed == 0
    }

    fn note(&mut self, what: String) {
        if self.examples.len() < 20 {
            self.examples.push(what);
        }
    }
}

/// One (event, handler)'s totals.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ok: i64,
    dup: i64,
    jobs: i64,
    max_attempt: i32,
    first_ok: Option<i32>,
}

/// Checks a finished events run of `events` events.
pub(crate) async fn check(
    app: &App,
    pg: &tokio_postgres::Client,
    run: &str,
    seed: u64,
    failure_rate: f64,
    events: u64,
    left_in_queue: u64,
) -> Result<Findings, String> {
    let mut f = Findings::default();
    let unkeyed = !app
        .backend()
        .events()
        .map_err(|e| e.to_string())?
        .keys_jobs();
    for d in dead_letters(app).await? {
        f.dead += 1;
        f.note(format!(
            "dead-letter entry {} ({}): {}",
            d.id,
            d.reason,
            String::from_utf8_lossy(&d.raw[..d.raw.len().min(160)])
        ));
    }
    let sql = format!(
        "SELECT n, handler, count(*) FILTER (WHERE outcome = 'ok'), \
         count(*) FILTER (WHERE outcome = 'dup'), count(DISTINCT job), max(attempt), \
         min(attempt) FILTER (WHERE outcome IN ('ok', 'dup')), count(*) \
         FROM {} GROUP BY n, handler",
        attempts_table(run)
    );
    let rows = pg
        .query(&sql, &[])
        .await
        .map_err(|e| format!("reading the event ledger: {e}"))?;
    let mut tallies: HashMap<(u64, &'static str), Tally> = HashMap::new();
    for r in &rows {
        let n: i64 = r.get(0);
        let h: String = r.get(1);
        let all: i64 = r.get(7);
        f.attempts += all as u64;
        let Some(h) = Handler::from_str(&h) else {
            continue;
        };
        tallies.insert(
            (n as u64, h.as_str()),
            Tally {
                ok: r.get(2),
                dup: r.get(3),
                jobs: r.get(4),
                max_attempt: r.get(5),
                first_ok: r.get(6),
            },
        );
    }
    let effects: HashSet<(u64, String)> = pg
        .query(
            &format!("SELECT n, handler FROM {}", effects_table(run)),
            &[],
        )
        .await
        .map_err(|e| format!("reading the event effects: {e}"))?
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, String>(1)))
        .collect();
    for n in 0..events {
        for h in Handler::ALL {
            let t = tallies.get(&(n, h.as_str())).copied().unwrap_or_default();
            if t.ok + t.dup == 0 {
                f.lost += 1;
                f.note(format!(
                    "handler {} never ran event {n} to success",
                    h.job()
                ));
                continue;
            }
            if unkeyed && t.jobs == 2 && super::republished(n) {
                f.second_jobs_unkeyed += 1;
            } else if t.jobs > 1 {
                f.second_jobs += 1;
                f.note(format!(
                    "event {n} made {} jobs for the subscription of {}",
                    t.jobs,
                    h.job()
                ));
            }
            let planned = planned_failures(seed, failure_rate, n, h);
            if t.max_attempt > HANDLER_ATTEMPTS as i32
                || t.first_ok.is_some_and(|a| a <= planned as i32)
            {
                f.attempts_wrong += 1;
                f.note(format!(
                    "{} for event {n}: attempts up to {}, first success at {:?}; planned {planned} failures, {HANDLER_ATTEMPTS} attempts allowed",
                    h.job(),
                    t.max_attempt,
                    t.first_ok
                ));
            }
            if h.idempotent() {
                if t.ok > 1 {
                    f.idempotency_broken += 1;
                    f.note(format!(
                        "idempotent {} took effect {} times for event {n}",
                        h.job(),
                        t.ok
                    ));
                } else if !effects.contains(&(n, h.as_str().to_owned())) {
                    f.lost += 1;
                    f.note(format!(
                        "idempotent {} never took effect for event {n}",
                        h.job()
                    ));
                }
                f.absorbed += t.dup as u64;
            } else {
                f.duplicates += (t.ok - 1) as u64;
            }
        }
    }
    if left_in_queue > 0 {
        f.lost += left_in_queue;
        f.note(format!(
            "{left_in_queue} jobs were still in the queues when the run ended"
        ));
    }
    Ok(f)
}

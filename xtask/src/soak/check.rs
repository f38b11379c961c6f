//! The checker: the ledger and the dead-letter queue against every job's plan.

use super::inject::Injected;
use super::ledger::{attempts_table, effects_table};
use super::plan::{plan, Kind, MAX_ATTEMPTS, QUEUE};
use jobsmith::{App, DeadJob, Envelope};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// What the checker found.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// Jobs meant to succeed that never did, jobs meant to die that are not
    /// dead, injected payloads missing from the dead-letter queue, and jobs
    /// still in the queue at the end.
    pub(crate) lost: u64,
    /// Successful runs beyond the first (at-least-once re-deliveries, mostly of killed workers' jobs).
    pub(crate) duplicates: u64,
    /// Of those, re-deliveries of idempotent jobs whose effect was already recorded.
    pub(crate) absorbed: u64,
    /// Of those, runs again that no kill or broker restart explains: no worker
    /// that ran any attempt of the job was killed, nor the broker restarted,
    /// within [`EXPLAINS`] after that attempt.
    pub(crate) unexplained: u64,
    /// Idempotent jobs whose effect was recorded more than once, or by more than one `ok` row.
    pub(crate) idempotency_broken: u64,
    /// Jobs that ran more attempts than their retry policy allows, or succeeded too early.
    pub(crate) attempts_wrong: u64,
    /// Expired jobs that ran.
    pub(crate) expired_ran: u64,
    /// Dead-letter entries that should not be there.
    pub(crate) unexpected_dead: u64,
    /// Dead jobs found, of those expected (planned permanent failures).
    pub(crate) dead_found: u64,
    /// Planned permanent failures.
    pub(crate) dead_expected: u64,
    /// Injected payloads dead-lettered with a reason, of those injected.
    pub(crate) bad_found: u64,
    /// Payloads injected.
    pub(crate) bad_injected: u64,
    /// Examples of each problem, for the log.
    pub(crate) examples: Vec<String>,
}

impl Findings {
    /// Whether nothing is wrong.
    pub(crate) fn pass(&self) -> bool {
        self.lost == 0
            && self.idempotency_broken == 0
            && self.attempts_wrong == 0
            && self.expired_ran == 0
            && self.unexpected_dead == 0
    }

    fn note(&mut self, what: fmt::Arguments<'_>) {
        if self.examples.len() < 20 {
            self.examples.push(what.to_string());
        }
    }
}

/// How long after an attempt a kill of its worker (or a broker restart) may
/// come and still explain why the job ran again: the attempt's settlement
/// (an ack, or the ack that follows a retry's publish) had not reached the
/// broker yet. Some seconds, for a loaded machine.
pub(crate) const EXPLAINS: u64 = 10_000;

/// A worker killed (`worker: Some(number)`, at one instant), or the broker
/// restarted (`None`, from its stop until it answered again).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outage {
    pub(crate) worker: Option<usize>,
    pub(crate) from_ms: u64,
    pub(crate) to_ms: u64,
}

impl Outage {
    /// Whether the outage explains a run again of an attempt made at `at_ms`:
    /// it began at most [`EXPLAINS`] after the attempt, and the attempt was
    /// made before it ended (and the workers had reconnected: a few seconds
    /// after a broker restart, one after a kill).
    fn explains(&self, worker: usize, at_ms: u64) -> bool {
        let reconnect = if self.worker.is_some() { 1_000 } else { 5_000 };
        self.worker.is_none_or(|w| w == worker)
            && self.to_ms + reconnect >= at_ms
            && self.from_ms <= at_ms + EXPLAINS
    }
}

/// What the checker needs to know about the run.
#[derive(Debug)]
pub(crate) struct Run<'a> {
    pub(crate) run: &'a str,
    pub(crate) seed: u64,
    pub(crate) failure_rate: f64,
    pub(crate) jobs: u64,
    pub(crate) injected: &'a [Injected],
    pub(crate) left_in_queue: u64,
    pub(crate) outages: &'a [Outage],
}

/// The ledger's totals for one job.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    rows: i64,
    ok: i64,
    dup: i64,
    ran_expired: i64,
    max_attempt: i32,
    first_ok: Option<i32>,
}

/// Checks a finished run.
pub(crate) async fn check(
    app: &App,
    pg: &tokio_postgres::Client,
    r: &Run<'_>,
) -> Result<Findings, String> {
    let Run {
        run,
        seed,
        failure_rate,
        jobs,
        injected,
        left_in_queue,
        outages,
    } = *r;
    let mut f = Findings {
        bad_injected: injected.len() as u64,
        ..Findings::default()
    };
    let dead = dead_letters(app).await?;

    // The dead-letter queue: soak jobs by number, and the injected payloads.
    let mut dead_by_n: HashMap<u64, u64> = HashMap::new();
    let mut bad_left: Vec<&Injected> = injected.iter().collect();
    for d in &dead {
        if let Some(pos) = bad_left.iter().position(|i| is_injected(i, d)) {
            if d.reason.trim().is_empty() {
                f.note(format_args!(
                    "{} was dead-lettered without a reason",
                    bad_left[pos].describe()
                ));
            } else {
                bad_left.swap_remove(pos);
                f.bad_found += 1;
            }
            continue;
        }
        if injected.iter().any(|i| is_injected(i, d)) {
            // Buried again: a worker killed between burying the payload and
            // acking it. A payload that is not an envelope has no job id to
            // keep one entry by, so this is a duplicate (at least once), not
            // a dead letter that should not be there.
            f.duplicates += 1;
            continue;
        }
        match soak_number(d) {
            Some(n) => *dead_by_n.entry(n).or_default() += 1,
            None => {
                f.unexpected_dead += 1;
                f.note(format_args!(
                    "unexpected dead-letter entry {} ({}): {}",
                    d.id,
                    d.reason,
                    String::from_utf8_lossy(&d.raw[..d.raw.len().min(120)])
                ));
            }
        }
    }
    for i in bad_left {
        f.lost += 1;
        f.note(format_args!(
            "injected {} is not in the dead-letter queue",
            i.describe()
        ));
    }

    // The ledger, a slice of job numbers at a time.
    const SLICE: u64 = 100_000;
    let mut from = 0;
    while from < jobs {
        let to = (from + SLICE).min(jobs);
        let tallies = tallies(pg, run, from, to).await?;
        let effects = effects(pg, run, from, to).await?;
        for (n, runs) in repeated_successes(pg, run, from, to).await? {
            // Every success but the first is a run again; a kill of any worker
            // that ran the job (a success not yet acknowledged, or a retry
            // published before the attempt it replaces was settled), or a
            // broker restart, soon after its attempt explains it.
            let explained = runs
                .iter()
                .any(|r| outages.iter().any(|o| o.explains(r.worker, r.at_ms)));
            if !explained {
                let again = runs.iter().filter(|r| r.ok).count().saturating_sub(1);
                f.unexplained += again as u64;
                let who: Vec<String> = runs
                    .iter()
                    .map(|r| {
                        format!(
                            "worker {} attempt {}{}",
                            r.worker,
                            r.attempt,
                            if r.ok { " ok" } else { "" }
                        )
                    })
                    .collect();
                f.note(format_args!(
                    "job {n} succeeded {} times ({}), and no worker that ran it was killed, nor the broker restarted, within {EXPLAINS} ms after its attempt",
                    again + 1,
                    who.join(", ")
                ));
            }
        }
        for n in from..to {
            let p = plan(seed, failure_rate, n);
            let t = tallies.get(&n).copied().unwrap_or_default();
            let died = dead_by_n.remove(&n).unwrap_or(0);
            check_one(&mut f, n, p, t, effects.contains(&n), died);
        }
        from = to;
    }
    for (n, times) in dead_by_n {
        f.unexpected_dead += times;
        f.note(format_args!(
            "dead-letter entry for job {n}, which the run never enqueued"
        ));
    }
    if left_in_queue > 0 {
        f.lost += left_in_queue;
        f.note(format_args!(
            "{left_in_queue} jobs were still in the queue when the run ended"
        ));
    }
    Ok(f)
}

fn check_one(f: &mut Findings, n: u64, p: super::plan::Plan, t: Tally, effect: bool, died: u64) {
    let max = i64::from(MAX_ATTEMPTS);
    if t.rows > max || t.max_attempt > MAX_ATTEMPTS as i32 {
        f.attempts_wrong += 1;
        f.note(format_args!(
            "job {n} ({:?}): {} attempts recorded, up to attempt {}; its policy allows {MAX_ATTEMPTS}",
            p.kind, t.rows, t.max_attempt
        ));
    }
    if t.ran_expired > 0 {
        f.expired_ran += 1;
        f.note(format_args!("job {n} ran although its TTL had passed"));
    }
    if p.kind == Kind::Permanent {
        f.dead_expected += 1;
        match died {
            0 => {
                f.lost += 1;
                f.note(format_args!(
                    "job {n} failed permanently but is not in the dead-letter queue"
                ));
            }
            1 => f.dead_found += 1,
            k => {
                f.dead_found += 1;
                f.unexpected_dead += k - 1;
                f.note(format_args!(
                    "job {n} is in the dead-letter queue {k} times"
                ));
            }
        }
        return;
    }
    if died > 0 {
        f.unexpected_dead += died;
        f.note(format_args!(
            "job {n} ({:?}, {} attempts recorded) is in the dead-letter queue; it should have {}",
            p.kind,
            t.rows,
            if p.kind == Kind::Expire {
                "expired"
            } else {
                "succeeded"
            }
        ));
    }
    if !p.kind.succeeds() {
        return;
    }
    if let Some(first) = t.first_ok {
        if (first as u32) < p.kind.first_success() {
            f.attempts_wrong += 1;
            f.note(format_args!(
                "job {n} ({:?}) succeeded at attempt {first}, before its plan allows",
                p.kind
            ));
        }
    }
    if p.idempotent {
        if !effect || t.ok == 0 {
            if died == 0 {
                f.lost += 1;
                f.note(format_args!(
                    "idempotent job {n} ({:?}) never took effect",
                    p.kind
                ));
            }
        } else if t.ok > 1 {
            f.idempotency_broken += 1;
            f.note(format_args!(
                "idempotent job {n} took effect {} times",
                t.ok
            ));
        }
        f.duplicates += t.dup as u64;
        f.absorbed += t.dup as u64;
    } else if t.ok == 0 {
        if died == 0 {
            f.lost += 1;
            f.note(format_args!(
                "job {n} ({:?}) never succeeded ({} attempts recorded)",
                p.kind, t.rows
            ));
        }
    } else {
        f.duplicates += (t.ok - 1) as u64;
    }
}

fn is_injected(i: &Injected, d: &DeadJob) -> bool {
    match &i.id {
        Some(id) => d.id == *id || d.envelope().is_some_and(|e| e.id == *id),
        None => d.raw == i.raw,
    }
}

/// The soak job number of a dead entry, if it is a soak job's envelope.
fn soak_number(d: &DeadJob) -> Option<u64> {
    let env: Envelope = d.envelope()?;
    if env.job != "soak_job" {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(env.args.get())
        .ok()?
        .get("n")?
        .as_u64()
}

/// Every dead-letter entry of the soak's queue.
async fn dead_letters(app: &App) -> Result<Vec<DeadJob>, String> {
    let backend = app.backend();
    if backend.name() == "sqs" {
        // SQS lists by scanning the whole queue: one scan.
        return backend
            .dead_list(QUEUE, 0, usize::MAX)
            .await
            .map_err(|e| format!("listing dead letters: {e}"));
    }
    let mut all = Vec::new();
    loop {
        let page = backend
            .dead_list(QUEUE, all.len(), 10_000)
            .await
            .map_err(|e| format!("listing dead letters: {e}"))?;
        let done = page.len() < 10_000;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

async fn tallies(
    pg: &tokio_postgres::Client,
    run: &str,
    from: u64,
    to: u64,
) -> Result<HashMap<u64, Tally>, String> {
    let sql = format!(
        "SELECT n, count(*), count(*) FILTER (WHERE outcome = 'ok'), \
         count(*) FILTER (WHERE outcome = 'dup'), count(*) FILTER (WHERE outcome = 'ran-expired'), \
         max(attempt), min(attempt) FILTER (WHERE outcome IN ('ok', 'dup')) \
         FROM {} WHERE n >= {from} AND n < {to} GROUP BY n",
        attempts_table(run)
    );
    let rows = pg
        .query(&sql, &[])
        .await
        .map_err(|e| format!("reading the ledger: {e}"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let n: i64 = r.get(0);
            (
                n as u64,
                Tally {
                    rows: r.get(1),
                    ok: r.get(2),
                    dup: r.get(3),
                    ran_expired: r.get(4),
                    max_attempt: r.get(5),
                    first_ok: r.get(6),
                },
            )
        })
        .collect())
}

/// Jobs that succeeded more than once: each success's worker and time (ms since the epoch), in order.
/// One attempt of a job, as the ledger has it.
struct Attempt {
    worker: usize,
    attempt: i32,
    at_ms: u64,
    ok: bool,
}

/// Every attempt of each job in `from..to` that succeeded more than once, in order.
async fn repeated_successes(
    pg: &tokio_postgres::Client,
    run: &str,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, Vec<Attempt>)>, String> {
    let table = attempts_table(run);
    let sql = format!(
        "SELECT n, array_agg(worker ORDER BY at), array_agg(attempt ORDER BY at), \
         array_agg((extract(epoch FROM at) * 1000)::bigint ORDER BY at), \
         array_agg(outcome IN ('ok', 'dup') ORDER BY at) \
         FROM {table} WHERE n IN (SELECT n FROM {table} WHERE n >= {from} AND n < {to} \
         AND outcome IN ('ok', 'dup') GROUP BY n HAVING count(*) > 1) \
         GROUP BY n"
    );
    let rows = pg
        .query(&sql, &[])
        .await
        .map_err(|e| format!("reading the ledger: {e}"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let n: i64 = r.get(0);
            let workers: Vec<i32> = r.get(1);
            let attempts: Vec<i32> = r.get(2);
            let ats: Vec<i64> = r.get(3);
            let oks: Vec<bool> = r.get(4);
            let runs = workers
                .into_iter()
                .zip(attempts)
                .zip(ats.into_iter().zip(oks))
                .map(|((w, attempt), (at, ok))| Attempt {
                    worker: w as usize,
                    attempt,
                    at_ms: at as u64,
                    ok,
                })
                .collect();
            (n as u64, runs)
        })
        .collect())
}

async fn effects(
    pg: &tokio_postgres::Client,
    run: &str,
    from: u64,
    to: u64,
) -> Result<HashSet<u64>, String> {
    let sql = format!(
        "SELECT n FROM {} WHERE n >= {from} AND n < {to}",
        effects_table(run)
    );
    let rows = pg
        .query(&sql, &[])
        .await
        .map_err(|e| format!("reading the ledger's effects: {e}"))?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
}

#[cfg(test)]
mod tests {
    use super::super::plan::Plan;
    use super::*;

    fn plan(kind: Kind, idempotent: bool) -> Plan {
        Plan { kind, idempotent }
    }

    fn ok_once() -> Tally {
        Tally {
            rows: 1,
            ok: 1,
            max_attempt: 1,
            first_ok: Some(1),
            ..Tally::default()
        }
    }

    #[test]
    fn a_job_that_ran_as_planned_passes() {
        let mut f = Findings::default();
        check_one(&mut f, 1, plan(Kind::Ok, false), ok_once(), false, 0);
        check_one(&mut f, 2, plan(Kind::Ok, true), ok_once(), true, 0);
        check_one(
            &mut f,
            3,
            plan(Kind::Permanent, false),
            Tally::default(),
            false,
            1,
        );
        check_one(
            &mut f,
            4,
            plan(Kind::Expire, false),
            Tally::default(),
            false,
            0,
        );
        assert!(f.pass(), "{:?}", f.examples);
        assert_eq!((f.dead_found, f.dead_expected), (1, 1));
    }

    #[test]
    fn each_broken_promise_fails_the_run() {
        let cases: Vec<(&str, Plan, Tally, bool, u64)> = vec![
            (
                "never ran",
                plan(Kind::Ok, false),
                Tally::default(),
                false,
                0,
            ),
            (
                "idempotent without effect",
                plan(Kind::Ok, true),
                Tally::default(),
                false,
                0,
            ),
            (
                "idempotent twice",
                plan(Kind::Ok, true),
                Tally {
                    ok: 2,
                    rows: 2,
                    max_attempt: 2,
                    first_ok: Some(1),
                    ..Tally::default()
                },
                true,
                0,
            ),
            (
                "too many attempts",
                plan(Kind::Flaky(1), false),
                Tally {
                    rows: 7,
                    ok: 1,
                    max_attempt: 7,
                    first_ok: Some(7),
                    ..Tally::default()
                },
                false,
                0,
            ),
            (
                "success before the plan allows",
                plan(Kind::Flaky(2), false),
                Tally {
                    first_ok: Some(1),
                    ..ok_once()
                },
                false,
                0,
            ),
            (
                "expired job ran",
                plan(Kind::Expire, false),
                Tally {
                    rows: 1,
                    ran_expired: 1,
                    max_attempt: 1,
                    ..Tally::default()
                },
                false,
                0,
            ),
            (
                "permanent failure not dead",
                plan(Kind::Permanent, false),
                Tally::default(),
                false,
                0,
            ),
            (
                "dead twice",
                plan(Kind::Permanent, false),
                Tally::default(),
                false,
                2,
            ),
            (
                "dead but meant to succeed",
                plan(Kind::Ok, false),
                ok_once(),
                false,
                1,
            ),
        ];
        for (what, p, t, effect, died) in cases {
            let mut f = Findings::default();
            check_one(&mut f, 7, p, t, effect, died);
            assert!(!f.pass(), "{what}: the checker let it pass");
            assert!(!f.examples.is_empty(), "{what}: no example given");
        }
    }

    #[test]
    fn extra_successes_are_duplicates_not_failures() {
        let mut f = Findings::default();
        let twice = Tally {
            rows: 2,
            ok: 2,
            max_attempt: 2,
            first_ok: Some(1),
            ..Tally::default()
        };
        check_one(&mut f, 1, plan(Kind::Ok, false), twice, false, 0);
        let absorbed = Tally {
            rows: 2,
            ok: 1,
            dup: 1,
            max_attempt: 2,
            first_ok: Some(1),
            ..Tally::default()
        };
        check_one(&mut f, 2, plan(Kind::Ok, true), absorbed, true, 0);
        assert!(f.pass(), "{:?}", f.examples);
        assert_eq!((f.duplicates, f.absorbed), (2, 1));
    }

    #[test]
    fn outages_explain_attempts_just_before_and_during_them() {
        let kill = Outage {
            worker: Some(3),
            from_ms: 50_000,
            to_ms: 50_000,
        };
        assert!(kill.explains(3, 45_000), "killed before it could ack");
        assert!(!kill.explains(4, 45_000), "another worker's attempt");
        assert!(
            !kill.explains(3, 52_000),
            "made after the kill, by a later worker 3"
        );
        assert!(!kill.explains(3, 30_000), "long before the kill");
        let restart = Outage {
            worker: None,
            from_ms: 50_000,
            to_ms: 60_000,
        };
        assert!(
            restart.explains(4, 55_000),
            "made while the broker was down"
        );
        assert!(
            restart.explains(4, 63_000),
            "before the workers reconnected"
        );
        assert!(!restart.explains(4, 70_000), "after the broker was back");
    }
}

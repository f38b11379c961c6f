//! The checker: the ledger and the dead-letter queue against every job's plan.

use super::inject::Injected;
use super::plan::{plan, Kind};
use super::reads::{dead_letters, effects, first_starts, repeated_successes, tallies, Tally};
use super::workers::{CONCURRENCY, PROBE_CONCURRENCY};
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
    /// Successful runs beyond the first (at-least-once re-deliveries, mostly
    /// of killed workers' jobs), and deliveries of a job without retries
    /// after its one run that no kill explains (dead-lettered by its policy).
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
    /// Jobs dead-lettered without a single run: every attempt they were
    /// charged was a delivery that no handler started.
    pub(crate) dead_unrun: u64,
    /// Of those, jobs with no kill of a worker (nor broker restart) between
    /// their enqueue and their death: charged by a graceful stop, or by
    /// nothing at all. Must be 0.
    pub(crate) dead_unrun_unexplained: u64,
    /// Attempt numbers charged that no handler started, over every job that
    /// ran (the gaps below each job's highest recorded attempt). A kill
    /// charges the attempts its worker held, and so does a broker that hands
    /// one message to two receivers (moto); a graceful stop must charge none.
    pub(crate) attempts_unrun: u64,
    /// Whether `attempts_unrun` must be 0 ([`attempts_unrun_checked`]).
    pub(crate) attempts_unrun_checked: bool,
    /// The most jobs that the run's kills and broker restarts may leave dead
    /// unrun ([`dead_unrun_bound`]).
    pub(crate) dead_unrun_bound: u64,
    /// How late the delayed probes' first attempts started.
    pub(crate) delayed: Lateness,
    /// How late the retried probes' second attempts started.
    pub(crate) retried: Lateness,
    /// How late the probes sent to idle workers started (their measured attempt).
    pub(crate) idle: Lateness,
    /// The most a lateness p50 and p99 may be ([`lateness_bound`]).
    pub(crate) lateness_bound: LatenessBound,
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
            && self.dead_unrun <= self.dead_unrun_bound
            && self.dead_unrun_unexplained == 0
            && !(self.attempts_unrun_checked && self.attempts_unrun > 0)
            && self.on_time()
    }

    /// Whether the delayed and retried probes started within the lateness bounds (p50 and p99).
    pub(crate) fn on_time(&self) -> bool {
        [&self.delayed, &self.retried, &self.idle]
            .iter()
            .all(|l| self.lateness_bound.holds(l))
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

/// The most jobs a run's kills and broker restarts may leave dead-lettered
/// without a run. A killed worker's deliveries come back with an attempt
/// counted, and a backend must hold no more of them than the worker could
/// have been running: its concurrency (both of its queues'), per kill. A
/// broker crash may do the same to every worker at once. A graceful stop
/// may leave none.
pub(crate) fn dead_unrun_bound(kills: u64, broker_restarts: u64, workers: u64) -> u64 {
    (kills + broker_restarts * workers) * (CONCURRENCY + PROBE_CONCURRENCY) as u64
}

/// Whether a run must charge no attempt that no handler started: when
/// nothing but graceful restarts (if any) stopped its workers, and the
/// backend hands each message to one receiver at a time. moto at times
/// hands one message to two receivers, and the second's attempt counts.
pub(crate) fn attempts_unrun_checked(backend: &str, outages: usize) -> bool {
    outages == 0 && backend != "sqs"
}

/// The most the p50 and the p99 of the probes' lateness may be, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LatenessBound {
    pub(crate) p50: i64,
    pub(crate) p99: i64,
}

impl Default for LatenessBound {
    fn default() -> Self {
        Self { p50: 10, p99: 100 }
    }
}

impl LatenessBound {
    /// Whether `l` keeps within both bounds (an empty one does).
    pub(crate) fn holds(&self, l: &Lateness) -> bool {
        l.percentile(50).is_none_or(|p| p <= self.p50)
            && l.percentile(99).is_none_or(|p| p <= self.p99)
    }
}

/// The lateness bounds on a backend. The p50 is what the backend's own
/// scheduling adds (a timer, a script's wake-up, a job held until due); the
/// p99 is what the broker adds at its worst moments in the run.
pub(crate) fn lateness_bound(backend: &str) -> LatenessBound {
    match backend {
        // moto hands out a message whose delay ends during a long poll about
        // 0.7 s late (docs/reliability.md has what the soak measured there);
        // this is moto, not SQS.
        "sqs" => LatenessBound {
            p50: 500,
            p99: 2_000,
        },
        _ => LatenessBound::default(),
    }
}

/// How late one kind of probe started: each start minus its due time.
#[derive(Debug, Default)]
pub(crate) struct Lateness {
    /// Milliseconds late, one per job, sorted once the check is done.
    pub(crate) ms: Vec<i64>,
    /// The latest starts: (milliseconds late, job number), the latest first.
    pub(crate) worst: Vec<(i64, u64)>,
    /// Starts left out because a worker was killed, or the broker restarted,
    /// between the job's due time and its start: the killed worker may have
    /// been holding the job.
    pub(crate) after_outage: u64,
}

impl Lateness {
    /// The `p`th percentile (nearest rank), if there are samples.
    pub(crate) fn percentile(&self, p: usize) -> Option<i64> {
        let rank = (self.ms.len() * p).div_ceil(100).max(1);
        self.ms.get(rank - 1).copied()
    }

    /// `n=.. p50=.. p99=.. max=..` in milliseconds, for the summary line.
    pub(crate) fn summary(&self) -> String {
        let at = |p| self.percentile(p).map_or("-".to_owned(), |v| v.to_string());
        format!(
            "n={} p50={} p99={} max={}",
            self.ms.len(),
            at(50),
            at(99),
            at(100)
        )
    }

    fn add(&mut self, n: u64, due_ms: u64, started_ms: u64, outages: &[Outage]) {
        if outages.iter().any(|o| o.overlaps(due_ms, started_ms)) {
            self.after_outage += 1;
            return;
        }
        let late = started_ms as i64 - due_ms as i64;
        self.ms.push(late);
        if self.worst.len() < 5 || self.worst[4].0 < late {
            self.worst.push((late, n));
            self.worst.sort_unstable_by(|a, b| b.cmp(a));
            self.worst.truncate(5);
        }
    }
}

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
        self.worker.is_none_or(|w| w == worker)
            && self.to_ms + self.reconnect() >= at_ms
            && self.from_ms <= at_ms + EXPLAINS
    }

    /// How long after the outage its effects may still be felt: workers
    /// reconnect a few seconds after a broker restart; a killed worker's
    /// replacement starts within a second (and on SQS, a killed worker may
    /// have held a delayed job up to a second before it was due).
    fn reconnect(&self) -> u64 {
        if self.worker.is_some() {
            1_000
        } else {
            5_000
        }
    }

    /// Whether the outage (and its reconnection) overlaps `from_ms..=to_ms`:
    /// a job in the hands of the workers over that span may have been held
    /// by the killed worker, or by any worker when the broker restarted.
    fn overlaps(&self, from_ms: u64, to_ms: u64) -> bool {
        self.from_ms <= to_ms && self.to_ms + self.reconnect() >= from_ms
    }
}

/// What the checker needs to know about the run.
#[derive(Debug)]
pub(crate) struct Run<'a> {
    pub(crate) run: &'a str,
    pub(crate) seed: u64,
    pub(crate) failure_rate: f64,
    pub(crate) jobs: u64,
    /// The probes sent one at a time once the queue had drained.
    pub(crate) idle: &'a HashSet<u64>,
    /// Worker processes (or in-process workers) at once.
    pub(crate) workers: u64,
    pub(crate) injected: &'a [Injected],
    pub(crate) left_in_queue: u64,
    pub(crate) outages: &'a [Outage],
}

/// A soak job's entry in the dead-letter queue.
#[derive(Debug, Clone)]
struct Death {
    enqueued_ms: u64,
    died_ms: u64,
    reason: String,
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
        idle,
        workers,
        injected,
        left_in_queue,
        outages,
    } = *r;
    let kills = outages.iter().filter(|o| o.worker.is_some()).count() as u64;
    let broker_restarts = outages.len() as u64 - kills;
    let mut f = Findings {
        bad_injected: injected.len() as u64,
        dead_unrun_bound: dead_unrun_bound(kills, broker_restarts, workers),
        lateness_bound: lateness_bound(app.backend().name()),
        attempts_unrun_checked: attempts_unrun_checked(app.backend().name(), outages.len()),
        ..Findings::default()
    };
    let dead = dead_letters(app).await?;

    // The dead-letter queue: soak jobs by number, and the injected payloads.
    let mut dead_by_n: HashMap<u64, Vec<Death>> = HashMap::new();
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
            Some((n, enqueued_ms)) => dead_by_n.entry(n).or_default().push(Death {
                enqueued_ms,
                died_ms: d.died_at.as_millis(),
                reason: d.reason.clone(),
            }),
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
        let starts = first_starts(pg, run, from, to).await?;
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
            let deaths = dead_by_n.remove(&n).unwrap_or_default();
            if !deaths.is_empty() && t.rows == 0 {
                dead_unrun(&mut f, n, p.kind, &deaths, outages);
            }
            if let Some(attempt) = p.kind.measured_attempt() {
                if let Some(&(due, started)) = starts.get(&(n, attempt)) {
                    let l = if idle.contains(&n) {
                        &mut f.idle
                    } else if attempt == 1 {
                        &mut f.delayed
                    } else {
                        &mut f.retried
                    };
                    l.add(n, due, started, outages);
                }
            }
            // A death after a run is explained when a worker that made the
            // job's last attempt was killed (or the broker restarted) before
            // it could settle it.
            let dead_explained = t
                .last
                .is_some_and(|(w, at)| outages.iter().any(|o| o.explains(w, at)));
            check_one(
                &mut f,
                n,
                p,
                t,
                effects.contains(&n),
                deaths.len() as u64,
                dead_explained,
            );
        }
        from = to;
    }
    let charged = f.attempts_unrun;
    if f.attempts_unrun_checked && charged > 0 {
        f.note(format_args!(
            "{charged} attempts were charged that no handler started, in a run without kills or broker restarts: a graceful stop charged them"
        ));
    }
    let (unrun, bound) = (f.dead_unrun, f.dead_unrun_bound);
    if unrun > bound {
        f.note(format_args!(
            "{unrun} jobs were dead-lettered without a run, over the bound of {bound} for {kills} kills and {broker_restarts} broker restarts"
        ));
    }
    f.delayed.ms.sort_unstable();
    f.retried.ms.sort_unstable();
    f.idle.ms.sort_unstable();
    if !f.on_time() {
        let bound = f.lateness_bound;
        let worst: Vec<(i64, u64)> = [&f.delayed, &f.retried, &f.idle]
            .iter()
            .filter(|l| !bound.holds(l))
            .flat_map(|l| l.worst.iter().copied())
            .collect();
        for (late, n) in worst {
            f.note(format_args!(
                "job {n} ({:?}) started {late} ms after it was due",
                plan(seed, failure_rate, n).kind
            ));
        }
    }
    for (n, deaths) in dead_by_n {
        f.unexpected_dead += deaths.len() as u64;
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

/// Counts a job dead-lettered without a run, and whether a kill (or broker
/// restart) between its enqueue and its death may have charged its attempts.
fn dead_unrun(f: &mut Findings, n: u64, kind: Kind, deaths: &[Death], outages: &[Outage]) {
    f.dead_unrun += 1;
    let explained = deaths
        .iter()
        .any(|d| outages.iter().any(|o| o.overlaps(d.enqueued_ms, d.died_ms)));
    if explained {
        // Within the bound, a kill's doing; the total is checked at the end.
        return;
    }
    f.dead_unrun_unexplained += 1;
    let d = &deaths[0];
    f.note(format_args!(
        "job {n} ({kind:?}) was dead-lettered without a run, {} ms after its enqueue, with no kill nor broker restart in between: {}",
        d.died_ms.saturating_sub(d.enqueued_ms),
        d.reason
    ));
}

/// Checks one job against its plan; `died` is how often it is in the
/// dead-letter queue, and `dead_explained` whether a kill (or broker
/// restart) explains a death after a run.
fn check_one(
    f: &mut Findings,
    n: u64,
    p: super::plan::Plan,
    t: Tally,
    effect: bool,
    died: u64,
    dead_explained: bool,
) {
    f.attempts_unrun += t.skipped.max(0) as u64;
    let policy = p.kind.max_attempts();
    if t.rows > i64::from(policy) || t.max_attempt > policy as i32 {
        f.attempts_wrong += 1;
        f.note(format_args!(
            "job {n} ({:?}): {} attempts recorded, up to attempt {}; its policy allows {policy}",
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
    if died > 0 && t.rows == 0 {
        // Dead unrun: counted by `dead_unrun`, and there is nothing else to check.
        return;
    }
    if died > 0 && p.kind == Kind::Once {
        // One attempt allowed, and it was made: delivered again, the job is
        // dead-lettered, as its policy says. A kill explains the second
        // delivery; otherwise it is a duplicate delivery no kill explains.
        if !dead_explained {
            f.duplicates += died;
            f.unexplained += died;
            f.note(format_args!(
                "job {n} (Once) ran, and was then delivered again and dead-lettered, with no kill of its worker nor broker restart to explain it"
            ));
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

/// The soak job number of a dead entry, if it is a soak job's envelope,
/// and when it was enqueued (ms since the epoch).
fn soak_number(d: &DeadJob) -> Option<(u64, u64)> {
    let env: Envelope = d.envelope()?;
    if env.job != "soak_job" && env.job != "soak_once" {
        return None;
    }
    let n = serde_json::from_str::<serde_json::Value>(env.args.get())
        .ok()?
        .get("n")?
        .as_u64()?;
    Some((n, env.enqueued_at.as_millis()))
}

#[cfg(test)]
mod tests;

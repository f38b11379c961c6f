use super::*;
use crate::soak::plan::Plan;

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
    check_one(&mut f, 1, plan(Kind::Ok, false), ok_once(), false, 0, false);
    check_one(&mut f, 2, plan(Kind::Ok, true), ok_once(), true, 0, false);
    check_one(
        &mut f,
        3,
        plan(Kind::Permanent, false),
        Tally::default(),
        false,
        1,
        false,
    );
    check_one(
        &mut f,
        4,
        plan(Kind::Expire, false),
        Tally::default(),
        false,
        0,
        false,
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
        check_one(&mut f, 7, p, t, effect, died, false);
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
    check_one(&mut f, 1, plan(Kind::Ok, false), twice, false, 0, false);
    let absorbed = Tally {
        rows: 2,
        ok: 1,
        dup: 1,
        max_attempt: 2,
        first_ok: Some(1),
        ..Tally::default()
    };
    check_one(&mut f, 2, plan(Kind::Ok, true), absorbed, true, 0, false);
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

fn death(enqueued_ms: u64, died_ms: u64) -> Death {
    Death {
        enqueued_ms,
        died_ms,
        reason: "attempt 2 of 1: the worker running the last attempt was lost".into(),
    }
}

fn kill_at(worker: usize, at_ms: u64) -> Outage {
    Outage {
        worker: Some(worker),
        from_ms: at_ms,
        to_ms: at_ms,
    }
}

#[test]
fn a_job_dead_unrun_without_a_kill_fails_the_run() {
    // Graceful restarts only: no outage, so the bound is 0 and nothing explains it.
    let mut f = Findings::default();
    dead_unrun(&mut f, 9, Kind::Once, &[death(1_000, 1_300)], &[]);
    assert_eq!((f.dead_unrun, f.dead_unrun_unexplained), (1, 1));
    assert!(!f.pass(), "a job dead unrun with no kill passed");

    // A kill long before the job was enqueued does not explain it either.
    let mut f = Findings {
        dead_unrun_bound: dead_unrun_bound(1, 0, 3),
        ..Findings::default()
    };
    let kills = [kill_at(2, 100)];
    dead_unrun(&mut f, 9, Kind::Once, &[death(5_000, 5_300)], &kills);
    assert_eq!(f.dead_unrun_unexplained, 1);
    assert!(!f.pass());
}

#[test]
fn an_attempt_charged_unrun_fails_a_run_without_kills_except_on_moto() {
    assert!(attempts_unrun_checked("redis", 0));
    assert!(attempts_unrun_checked("amqp", 0));
    assert!(
        !attempts_unrun_checked("amqp", 1),
        "a kill may charge attempts"
    );
    assert!(!attempts_unrun_checked("sqs", 0), "moto may deliver twice");

    let mut t = ok_once();
    t.max_attempt = 3;
    t.first_ok = Some(3);
    t.rows = 2;
    t.skipped = 1;
    for checked in [true, false] {
        let mut f = Findings {
            attempts_unrun_checked: checked,
            ..Findings::default()
        };
        check_one(&mut f, 4, plan(Kind::Flaky(2), false), t, false, 0, false);
        assert_eq!(f.attempts_unrun, 1);
        assert_eq!(f.pass(), !checked, "checked: {checked}");
    }
}

#[test]
fn dead_unrun_after_kills_passes_within_the_bound_only() {
    let kills = [kill_at(2, 10_000)];
    let bound = dead_unrun_bound(1, 0, 3);
    assert_eq!(
        bound,
        (CONCURRENCY + PROBE_CONCURRENCY) as u64,
        "one kill: one worker's concurrency"
    );
    let mut f = Findings {
        dead_unrun_bound: bound,
        ..Findings::default()
    };
    for n in 0..bound {
        dead_unrun(&mut f, n, Kind::Once, &[death(9_000, 10_020)], &kills);
    }
    assert_eq!(f.dead_unrun_unexplained, 0);
    assert!(f.pass(), "{:?}", f.examples);
    dead_unrun(&mut f, bound, Kind::Once, &[death(9_000, 10_020)], &kills);
    assert!(!f.pass(), "one more than the bound passed");
    assert_eq!(
        dead_unrun_bound(2, 1, 3),
        5 * (CONCURRENCY + PROBE_CONCURRENCY) as u64
    );
}

#[test]
fn a_job_without_retries_dead_after_its_run_needs_a_kill_to_explain_it() {
    let ran = ok_once();
    let mut f = Findings::default();
    check_one(&mut f, 1, plan(Kind::Once, false), ran, false, 1, true);
    assert!(f.pass(), "{:?}", f.examples);
    assert_eq!((f.unexplained, f.unexpected_dead, f.lost), (0, 0, 0));
    check_one(&mut f, 2, plan(Kind::Once, false), ran, false, 1, false);
    assert_eq!(f.unexplained, 1, "a second delivery no kill explains");
    // Two attempts of a job that allows one break its policy.
    let twice = Tally {
        rows: 2,
        max_attempt: 2,
        ..ran
    };
    let mut f = Findings::default();
    check_one(&mut f, 3, plan(Kind::Once, false), twice, false, 0, false);
    assert!(!f.pass());
    assert_eq!(f.attempts_wrong, 1);
}

#[test]
fn lateness_percentiles_and_the_bound() {
    let mut l = Lateness::default();
    assert_eq!(l.percentile(99), None);
    for ms in 1..=100 {
        l.add(7, 1_000, 1_000 + ms, &[]);
    }
    l.ms.sort_unstable();
    assert_eq!(
        (l.percentile(50), l.percentile(99), l.percentile(100)),
        (Some(50), Some(99), Some(100))
    );
    assert_eq!(l.summary(), "n=100 p50=50 p99=99 max=100");
    let mut f = Findings {
        delayed: l,
        lateness_bound: LatenessBound { p50: 50, p99: 100 },
        ..Findings::default()
    };
    assert!(f.pass());
    // Two late starts in a hundred put the p99 over the bound.
    f.delayed.ms[98] = 5_000;
    f.delayed.ms[99] = 5_000;
    assert!(!f.on_time() && !f.pass());
    // A p50 over its bound fails the run though the p99 is within its own.
    f.delayed.ms[98] = 99;
    f.delayed.ms[99] = 100;
    assert!(f.on_time());
    f.lateness_bound.p50 = 49;
    assert!(!f.on_time() && !f.pass());
}

#[test]
fn lateness_leaves_out_starts_a_kill_may_have_delayed() {
    let kills = [kill_at(1, 20_000)];
    let mut l = Lateness::default();
    l.add(1, 19_000, 24_000, &kills);
    assert_eq!((l.after_outage, l.ms.len()), (1, 0), "killed while due");
    l.add(2, 25_000, 25_004, &kills);
    l.add(3, 10_000, 15_000, &kills);
    assert_eq!(l.ms, vec![4, 5_000], "due after, or late before, the kill");
    assert_eq!(l.worst, vec![(5_000, 3), (4, 2)]);
}

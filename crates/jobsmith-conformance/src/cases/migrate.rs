//! The [`Migrate`](jobsmith_core::Migrate) capability: taking jobs out,
//! holds, importing them.

use super::common::{
    dead_ids, dead_of, enqueue, env_of, fresh, job, migration_of, stats, take, take_one, LONG,
};
use crate::Factory;
use jobsmith_core::{JobId, LeaseStatus, SettleExt, Timestamp};
use std::time::Duration;

/// `take` holds ready and scheduled jobs away from workers, as stored (the
/// attempt not counted), and `remove` deletes them for good.
pub async fn migrate_take_holds_ready_and_scheduled(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let ready = enqueue(b, job("q", 1)).await;
    let mut later = job("q", 2);
    later.run_at = Timestamp::now().plus(Duration::from_secs(3600));
    let later_at = later.run_at;
    let scheduled = enqueue(b, later).await;
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(migration_of(b).take("q", 10, LONG).await.expect("take"));
        let want = if h.approximations.scheduled_hidden_until_due {
            1
        } else {
            2
        };
        if got.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ids: Vec<JobId> = got.iter().map(|d| env_of(d).id.clone()).collect();
    ids.sort();
    let mut want = vec![ready.clone()];
    if !h.approximations.scheduled_hidden_until_due {
        want.push(scheduled.clone());
    }
    want.sort();
    assert_eq!(ids, want, "take returns the ready and the scheduled job");
    for d in &got {
        assert_eq!(env_of(d).attempt, 0, "take does not count an attempt");
        if env_of(d).id == scheduled {
            assert_eq!(
                env_of(d).run_at.as_millis() / 1000,
                later_at.as_millis() / 1000,
                "a taken job keeps its run_at"
            );
        }
    }
    assert!(
        take(b, "q", 10).await.is_empty(),
        "a held job is not reserved by workers"
    );
    assert!(
        migration_of(b)
            .take("q", 10, LONG)
            .await
            .expect("take")
            .is_empty(),
        "a held job is not taken twice"
    );
    let leases: Vec<_> = got.iter().map(|d| d.lease.clone()).collect();
    assert_eq!(
        migration_of(b).remove(&leases).await.expect("remove"),
        vec![LeaseStatus::Held; leases.len()]
    );
    assert_eq!(
        migration_of(b).remove(&leases).await.expect("remove"),
        vec![LeaseStatus::Lost; leases.len()],
        "a removed job cannot be removed again"
    );
    let s = stats(b, "q").await;
    assert_eq!(s.ready, 0, "removed jobs are gone");
    assert_eq!(s.in_flight, 0, "removed jobs hold nothing");
}

/// A job whose hold runs out goes back where it was: a ready job is ready
/// again, a scheduled job waits for its time again; the old hold is refused.
pub async fn migrate_hold_that_runs_out_gives_the_job_back(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let ready = enqueue(b, job("q", 1)).await;
    let mut later = job("q", 2);
    later.run_at = Timestamp::now().plus(Duration::from_secs(3600));
    enqueue(b, later).await;
    let want = if h.approximations.scheduled_hidden_until_due {
        1
    } else {
        2
    };
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(
            migration_of(b)
                .take("q", 10, h.short_lease)
                .await
                .expect("take"),
        );
        if got.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.len(), want, "take holds the waiting jobs");
    tokio::time::sleep(h.short_lease * 2 + Duration::from_millis(500)).await;
    let d = take_one(b, "q").await;
    assert_eq!(env_of(&d).id, ready, "the ready job is ready again");
    assert_eq!(
        env_of(&d).attempt,
        1,
        "the hold did not count an attempt; this reserve does"
    );
    assert!(
        take(b, "q", 10).await.is_empty(),
        "the scheduled job is not run before its time"
    );
    let s = stats(b, "q").await;
    assert_eq!(
        s.scheduled + s.ready + s.in_flight,
        2,
        "both jobs are still in the queue"
    );
    let leases: Vec<_> = got.iter().map(|d| d.lease.clone()).collect();
    assert!(
        migration_of(b)
            .remove(&leases[..1])
            .await
            .expect("remove")
            .iter()
            .all(|s| *s == LeaseStatus::Lost),
        "a hold that ran out is refused"
    );
}

/// `import` keeps a job's id, attempt, run_at and priority, and writes each
/// id once however often it is imported, even after the job ran.
pub async fn migrate_import_keeps_fields_once_per_id(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let mut a = job("q", 1);
    a.attempt = 3;
    let mut c = job("q", 2);
    c.priority = 5;
    c.attempt = 1;
    let mut later = job("q", 3);
    later.run_at = Timestamp::now().plus(Duration::from_secs(3600));
    later.attempt = 2;
    let jobs = vec![a.clone(), c.clone(), later.clone()];
    assert_eq!(
        migration_of(b).import(jobs.clone()).await.expect("import"),
        vec![true; 3]
    );
    assert_eq!(
        migration_of(b).import(jobs.clone()).await.expect("import"),
        vec![false; 3],
        "a second import of the same ids writes nothing"
    );
    let got = take(b, "q", 10).await;
    assert_eq!(got.len(), 2, "the two ready jobs, once each");
    assert_eq!(env_of(&got[0]).id, c.id, "priority is kept");
    assert_eq!(env_of(&got[0]).attempt, 2, "attempts carry on");
    assert_eq!(env_of(&got[1]).id, a.id);
    assert_eq!(env_of(&got[1]).attempt, 4, "attempts carry on");
    let s = stats(b, "q").await;
    assert_eq!(s.scheduled, 1, "the future job is scheduled");
    b.ack(&got.iter().map(|d| d.lease.clone()).collect::<Vec<_>>())
        .await
        .expect("ack");
    assert_eq!(
        migration_of(b).import(jobs).await.expect("import"),
        vec![false; 3],
        "an imported id stays imported after its job ran"
    );
    assert!(take(b, "q", 10).await.is_empty(), "nothing ran twice");
}

/// `import_dead` writes dead jobs (reason, payload, malformed ones too) once
/// per id, and `dead_delete` deletes dead jobs by id.
pub async fn migrate_dead_import_and_delete(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let env = job("q", 1);
    let good = jobsmith_core::DeadJob::new(
        env.id.clone(),
        "q".into(),
        "boom".into(),
        Timestamp(Timestamp::now().0 - 60_000),
        env.to_bytes(),
    );
    let bad = jobsmith_core::DeadJob::new(
        JobId::new(),
        "q".into(),
        "payload is not a job envelope".into(),
        Timestamp::now(),
        b"\xff not json".to_vec(),
    );
    let both = vec![good.clone(), bad.clone()];
    assert_eq!(
        migration_of(b)
            .import_dead(both.clone())
            .await
            .expect("import"),
        vec![true; 2]
    );
    assert_eq!(
        migration_of(b).import_dead(both).await.expect("import"),
        vec![false; 2],
        "a dead job is imported once"
    );
    assert_eq!(stats(b, "q").await.dead, 2);
    let got = dead_of(b)
        .dead_get("q", &good.id)
        .await
        .expect("get")
        .expect("the imported dead job is found");
    assert_eq!(got.reason, "boom");
    assert_eq!(got.envelope().map(|e| e.id), Some(good.id.clone()));
    let raw = dead_of(b)
        .dead_get("q", &bad.id)
        .await
        .expect("get")
        .expect("the malformed dead job is found");
    assert_eq!(
        raw.raw, bad.raw,
        "a malformed payload is kept byte for byte"
    );
    assert_eq!(
        dead_of(b)
            .dead_delete("q", &[good.id.clone(), JobId::from("no-such-id")])
            .await
            .expect("delete"),
        1
    );
    assert_eq!(dead_ids(b, "q").await, vec![bad.id.clone()]);
}

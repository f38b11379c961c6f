//! The [`Events`](jobsmith_core::Events) capability: subscriptions kept on
//! the broker, and a publish that creates one job per matching subscription.

use super::common::{dead_of, env_of, fresh, take, take_exactly, LONG};
use crate::{Factory, Harness};
use jobsmith_core::lock::LockExt;
use jobsmith_core::{
    App, Backend, BoxFuture, Event, EventId, Failure, JobContext, JobDef, JobOptions, LeaseStatus,
    Param, Registry, SettleExt, Subscribe, Subscription, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The suite's event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct SignedUp {
    user_id: u64,
    plan: String,
}

impl Event for SignedUp {
    const NAME: &'static str = "conformance.user.signed_up";
}

fn signed_up(user_id: u64) -> SignedUp {
    SignedUp {
        user_id,
        plan: "pro".into(),
    }
}

/// A subscription of job `job` on `queue` to `pattern`.
fn sub(job: &str, queue: &str, pattern: &str) -> Subscription {
    Subscription {
        job: job.into(),
        queue: queue.into(),
        pattern: pattern.into(),
        any: pattern.contains(['*', '#']),
        param: "e".into(),
        priority: 0,
        max_attempts: 4,
        ttl_ms: None,
        registered_at: Timestamp::now(),
    }
}

fn app_of(h: &Harness) -> App {
    App::from_backend(Arc::clone(&h.backend))
}

/// The jobs of `queue`, reserved (each reserve waits up to 5 s), by job name.
async fn jobs_of(b: &dyn Backend, queue: &str, n: usize) -> Vec<jobsmith_core::Delivery> {
    let mut got = take_exactly(b, queue, n, "each job of the publish is ready").await;
    got.sort_by(|a, b| env_of(a).job.cmp(&env_of(b).job));
    got
}

fn args_of(d: &jobsmith_core::Delivery) -> serde_json::Value {
    serde_json::from_str(env_of(d).args.get()).expect("args are JSON")
}

/// A publish creates one job per matching subscription, on the subscriber's
/// queue with its priority, attempts and TTL; each carries the event (id and
/// name) and the payload under the handler's parameter, and is keyed by the
/// event's id and the subscription. A subscription to another event gets
/// nothing, and a publish nobody subscribes to reaches none, without error.
pub async fn events_fan_out_one_job_per_subscription(factory: Factory) {
    let h = fresh(factory).await;
    let (app, b) = (app_of(&h), &*h.backend);
    let none = app.publish(signed_up(1)).await.expect("publish");
    assert_eq!(none.reached, 0, "nobody subscribes yet: reached none");
    let mut audit = sub("audit_signup", "ev_audit", SignedUp::NAME);
    audit.priority = 3;
    audit.max_attempts = 6;
    audit.ttl_ms = Some(3_600_000);
    app.subscribe_all([
        sub("send_welcome", "ev_mail", SignedUp::NAME),
        sub("start_trial", "ev_mail", SignedUp::NAME),
        audit,
        sub("other_event", "ev_mail", "conformance.user.deleted"),
    ])
    .await
    .expect("subscribe");
    let published = app.publish(signed_up(7)).await.expect("publish");
    assert_eq!(published.reached, 3, "three subscriptions match");
    let mail = jobs_of(b, "ev_mail", 2).await;
    assert!(
        take(b, "ev_mail", 10).await.is_empty(),
        "no job for the subscription to another event"
    );
    let audit = jobs_of(b, "ev_audit", 1).await;
    let names: Vec<&str> = mail
        .iter()
        .chain(&audit)
        .map(|d| env_of(d).job.as_str())
        .collect();
    assert_eq!(names, ["send_welcome", "start_trial", "audit_signup"]);
    for d in mail.iter().chain(&audit) {
        let env = env_of(d);
        assert_eq!(args_of(d), json!({"e": {"user_id": 7, "plan": "pro"}}));
        let event = env.event.as_ref().expect("the job carries its event");
        assert_eq!(
            (&event.id, event.name.as_str()),
            (&published.id, SignedUp::NAME)
        );
        let key = format!("event:{}:{}", published.id, env.job);
        let expected = (!h.approximations.event_jobs_unkeyed).then_some(key.as_str());
        assert_eq!(
            env.idempotency_key.as_deref(),
            expected,
            "keyed by event and subscription, unless the backend documents otherwise"
        );
    }
    let a = env_of(&audit[0]);
    assert_eq!(
        (a.priority, a.max_attempts),
        (3, 6),
        "the subscriber's options"
    );
    let ttl = a
        .expires_at
        .expect("the subscriber's TTL")
        .since(a.enqueued_at);
    assert_eq!(ttl, Duration::from_secs(3600));
    assert_eq!(env_of(&mail[0]).max_attempts, 4);
    assert!(env_of(&mail[0]).expires_at.is_none());
    let many = app
        .publish_all([signed_up(8), signed_up(9)])
        .await
        .expect("publish many");
    assert_eq!(many.iter().map(|p| p.reached).collect::<Vec<_>>(), [3, 3]);
    assert_ne!(many[0].id, many[1].id, "each event has its own id");
    let mail = jobs_of(b, "ev_mail", 4).await;
    let audit = jobs_of(b, "ev_audit", 2).await;
    let mut users: Vec<u64> = mail
        .iter()
        .chain(&audit)
        .map(|d| args_of(d)["e"]["user_id"].as_u64().expect("user_id"))
        .collect();
    users.sort_unstable();
    assert_eq!(
        users,
        [8, 8, 8, 9, 9, 9],
        "one job per event and subscription"
    );
}

/// Topic patterns match as RabbitMQ's topic exchange does (`*` one word,
/// `#` zero or more), and a pattern's handler gets the event's name beside
/// its payload.
pub async fn events_patterns_match_as_topics(factory: Factory) {
    let h = fresh(factory).await;
    let (app, b) = (app_of(&h), &*h.backend);
    for (job, pattern) in [
        ("p_exact", "conformance.user.signed_up"),
        ("p_star", "conformance.user.*"),
        ("p_hash", "conformance.#"),
        ("p_all", "#"),
        ("p_tail", "#.signed_up"),
        ("p_star_short", "conformance.*"),
        ("p_other", "billing.#"),
        ("p_longer", "conformance.user.signed_up.*"),
    ] {
        app.subscribe(sub(job, "ev_topics", pattern))
            .await
            .expect("subscribe");
    }
    let published = app.publish(signed_up(9)).await.expect("publish");
    assert_eq!(published.reached, 5);
    let got = jobs_of(b, "ev_topics", 5).await;
    let names: Vec<&str> = got.iter().map(|d| env_of(d).job.as_str()).collect();
    assert_eq!(names, ["p_all", "p_exact", "p_hash", "p_star", "p_tail"]);
    let star = got
        .iter()
        .find(|d| env_of(d).job == "p_star")
        .expect("listed");
    assert_eq!(
        args_of(star),
        json!({"e": {"name": SignedUp::NAME, "payload": {"user_id": 9, "plan": "pro"}}}),
        "a pattern's handler gets the name and the payload"
    );
    assert!(
        take(b, "ev_topics", 10).await.is_empty(),
        "nothing else matched"
    );
}

/// Each subscription's job is settled on its own: one that fails is retried
/// alone, with its attempt counted, and the others are not run again.
pub async fn events_failing_subscriber_is_retried_alone(factory: Factory) {
    let h = fresh(factory).await;
    let (app, b) = (app_of(&h), &*h.backend);
    for job in ["a_ok", "b_fails", "c_ok"] {
        app.subscribe(sub(job, "ev_retry", SignedUp::NAME))
            .await
            .expect("subscribe");
    }
    assert_eq!(app.publish(signed_up(3)).await.expect("publish").reached, 3);
    let got = jobs_of(b, "ev_retry", 3).await;
    for d in &got {
        let env = env_of(d);
        if env.job == "b_fails" {
            let mut e = env.clone();
            e.last_error = Some("mail server said no".into());
            e.run_at = Timestamp::now().plus(Duration::from_millis(200));
            assert_eq!(
                b.retry(&d.lease, &e).await.expect("retry"),
                LeaseStatus::Held
            );
        } else {
            assert_eq!(
                b.ack(std::slice::from_ref(&d.lease)).await.expect("ack"),
                [LeaseStatus::Held]
            );
        }
    }
    let again = take_exactly(b, "ev_retry", 1, "the failed job comes back").await;
    let env = env_of(&again[0]);
    assert_eq!(
        (env.job.as_str(), env.attempt),
        ("b_fails", 2),
        "only it, on attempt 2"
    );
    assert_eq!(
        b.ack(std::slice::from_ref(&again[0].lease))
            .await
            .expect("ack"),
        [LeaseStatus::Held]
    );
    assert!(
        b.reserve(
            &["ev_retry".to_owned()],
            10,
            LONG,
            Duration::from_millis(500)
        )
        .await
        .expect("reserve")
        .is_empty(),
        "the others are not run again"
    );
}

/// A publish tried again under the same event id (its answer was lost)
/// creates no job twice: neither one still queued nor one already completed.
/// Where the backend documents its event jobs as unkeyed, it creates each
/// again, carrying the same event id, and no more.
pub async fn events_publish_tried_again_creates_no_job_twice(factory: Factory) {
    let h = fresh(factory).await;
    let (app, b) = (app_of(&h), &*h.backend);
    for job in ["once_a", "once_b"] {
        app.subscribe(sub(job, "ev_once", SignedUp::NAME))
            .await
            .expect("subscribe");
    }
    let id = EventId::new();
    let first = app
        .publish(signed_up(5))
        .id(id.clone())
        .await
        .expect("publish");
    assert_eq!((first.id.clone(), first.reached), (id.clone(), 2));
    let got = jobs_of(b, "ev_once", 2).await;
    // One completes; the other stays queued (handed back).
    assert_eq!(
        b.ack(std::slice::from_ref(&got[0].lease))
            .await
            .expect("ack"),
        [LeaseStatus::Held]
    );
    assert_eq!(
        b.release(std::slice::from_ref(&got[1].lease))
            .await
            .expect("release"),
        vec![LeaseStatus::Held]
    );
    let again = app
        .publish(signed_up(5))
        .id(id.clone())
        .await
        .expect("publish again");
    if h.approximations.event_jobs_unkeyed {
        assert_eq!((again.id, again.reached), (id.clone(), 2));
        let more = jobs_of(b, "ev_once", 3).await;
        assert!(
            more.iter()
                .all(|d| env_of(d).event.as_ref().is_some_and(|e| e.id == id)),
            "every job carries the same event id, for handlers to take effect once"
        );
        assert!(
            take(b, "ev_once", 10).await.is_empty(),
            "once more each, no more"
        );
        return;
    }
    assert_eq!(
        (again.id, again.reached),
        (id, 2),
        "the same event, the same subscriptions"
    );
    let left = jobs_of(b, "ev_once", 1).await;
    assert_eq!(
        env_of(&left[0]).id,
        env_of(&got[1]).id,
        "only the queued job, once"
    );
    assert!(
        take(b, "ev_once", 10).await.is_empty(),
        "the completed job was not created again"
    );
}

/// A subscription registered by another process reaches every publish that
/// starts after its registration returned, even in a process that read the
/// subscriptions just before.
pub async fn events_subscription_added_midstream_gets_later_publishes(factory: Factory) {
    let h = fresh(factory).await;
    let (app, b) = (app_of(&h), &*h.backend);
    app.subscribe(sub("early", "ev_mid", SignedUp::NAME))
        .await
        .expect("subscribe");
    assert_eq!(app.publish(signed_up(1)).await.expect("publish").reached, 1);
    let other = App::from_backend((h.peer)().await);
    other
        .subscribe(sub("late", "ev_mid", SignedUp::NAME))
        .await
        .expect("subscribe from another process");
    assert_eq!(
        app.publish(signed_up(2)).await.expect("publish").reached,
        2,
        "the publish after the registration reaches it"
    );
    let got = jobs_of(b, "ev_mid", 3).await;
    let late: Vec<u64> = got
        .iter()
        .filter(|d| env_of(d).job == "late")
        .map(|d| args_of(d)["e"]["user_id"].as_u64().expect("user_id"))
        .collect();
    assert_eq!(late, [2], "the late subscriber gets only the later event");
    let listed = other.subscriptions().await.expect("list");
    let jobs: Vec<&str> = listed.iter().map(|s| s.job.as_str()).collect();
    assert_eq!(jobs, ["early", "late"], "listed, sorted by job");
}

/// A removed subscription is no longer listed and, within the registration
/// bound, reached by no publish; removing it again says there was none.
pub async fn events_removed_subscription_gets_nothing_more(factory: Factory) {
    let h = fresh(factory).await;
    let (app, b) = (app_of(&h), &*h.backend);
    app.subscribe(sub("stays", "ev_rm", SignedUp::NAME))
        .await
        .expect("subscribe");
    app.subscribe(sub("goes", "ev_rm", SignedUp::NAME))
        .await
        .expect("subscribe");
    let other = App::from_backend((h.peer)().await);
    assert_eq!(
        other.publish(signed_up(1)).await.expect("publish").reached,
        2
    );
    assert!(
        app.unsubscribe("goes").await.expect("remove"),
        "it was there"
    );
    assert!(
        !app.unsubscribe("goes").await.expect("remove again"),
        "not any more"
    );
    let listed = app.subscriptions().await.expect("list");
    assert_eq!(
        listed.iter().map(|s| s.job.as_str()).collect::<Vec<_>>(),
        ["stays"]
    );
    assert_eq!(app.publish(signed_up(2)).await.expect("publish").reached, 1);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        other.publish(signed_up(3)).await.expect("publish").reached,
        1,
        "another process stops reaching it within the bound"
    );
    take_exactly(
        b,
        "ev_rm",
        4,
        "two jobs of the first event, one each of the others",
    )
    .await;
}

/// What the suite's handler saw: (attempt, user id) per run.
#[derive(Clone, Debug, Default)]
struct Seen(Arc<Mutex<Vec<(u32, u64)>>>);

impl Seen {
    fn push(&self, attempt: u32, user_id: u64) {
        self.0.lock_unpoisoned().push((attempt, user_id));
    }

    fn runs(&self) -> Vec<(u32, u64)> {
        self.0.lock_unpoisoned().clone()
    }
}

static WELCOME: JobDef = JobDef {
    name: "conformance_welcome",
    location: "jobsmith_conformance::cases::events",
    options: JobOptions {
        queue: "ev_worker",
        retries: 2,
        backoff: jobsmith_core::Backoff::Fixed(Duration::from_millis(50)),
        on: Some(Subscribe {
            pattern: SignedUp::NAME,
            any: false,
        }),
        ..JobOptions::DEFAULT
    },
    run: run_welcome,
    params: &[Param {
        name: "e",
        rust_type: "SignedUp",
    }],
    shapes: Vec::new,
};

/// Fails the first attempt of user 13's event, so that a retry shows.
fn run_welcome(
    args: &RawValue,
    ctx: JobContext,
) -> Result<BoxFuture<'static, Result<(), Failure>>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Args {
        e: SignedUp,
    }
    let args: Args = serde_json::from_str(args.get())?;
    Ok(Box::pin(async move {
        if let Some(seen) = ctx.state::<Seen>() {
            // A run that does not see its event is recorded as user 0.
            let knows = ctx.event().is_some_and(|e| e.name == SignedUp::NAME);
            seen.push(ctx.attempt(), if knows { args.e.user_id } else { 0 });
        }
        if args.e.user_id == 13 && ctx.attempt() == 1 {
            return Err(Failure::retryable("planned failure"));
        }
        Ok(())
    }))
}

/// A worker registers the subscriptions of the jobs it runs before its
/// first reserve; its handler runs each published event with the
/// subscriber's retries, and sees the event in its context; an event job whose payload does not fit the
/// handler (published by name with the wrong shape), and garbage on the
/// handler's queue, are dead-lettered, the first with its event named, and
/// the worker carries on.
pub async fn events_worker_registers_runs_and_dead_letters_misfits(factory: Factory) {
    let h = fresh(factory).await;
    let (app, b) = (app_of(&h), &*h.backend);
    let seen = Seen::default();
    let worker = tokio::spawn(
        app.worker()
            .registry(Registry::from_defs([&WELCOME]).expect("one job"))
            .state(seen.clone())
            .run_report(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !app
        .subscriptions()
        .await
        .expect("list")
        .iter()
        .any(|s| s.job == "conformance_welcome")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker registers its subscription"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = app.subscriptions().await.expect("list");
    let s = &listed[0];
    assert_eq!(
        (
            s.queue.as_str(),
            s.pattern.as_str(),
            s.param.as_str(),
            s.max_attempts,
            s.any
        ),
        ("ev_worker", SignedUp::NAME, "e", 3, false),
        "registered as the job declares it"
    );
    for user in [12, 13] {
        assert_eq!(
            app.publish(signed_up(user)).await.expect("publish").reached,
            1
        );
    }
    let garbage: &[u8] = b"\x00{ not an event's job";
    h.faults.push_raw("ev_worker", garbage).await;
    let misfit = app
        .publish_json(
            SignedUp::NAME,
            &json!({"user": "not the event's shape"}),
            None,
        )
        .await
        .expect("publish by name");
    assert_eq!(misfit.reached, 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let dead = dead_of(b)
            .dead_list("ev_worker", 0, 10)
            .await
            .expect("list");
        let runs = seen.runs();
        if dead.len() == 2 && runs.len() == 3 {
            assert!(
                dead.iter().any(|d| d.raw == garbage),
                "the garbage is dead, byte for byte"
            );
            let misfit_dead = dead.iter().find(|d| d.raw != garbage).expect("two");
            let env = misfit_dead.envelope().expect("still an envelope");
            let event = env.event.as_ref().expect("the dead job names its event");
            assert_eq!(
                (&event.id, event.name.as_str()),
                (&misfit.id, SignedUp::NAME)
            );
            let mut runs = runs;
            runs.sort_unstable();
            assert_eq!(
                runs,
                [(1, 12), (1, 13), (2, 13)],
                "13 retried once, alone; each run saw its event"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the events ran and the misfit is dead: dead {dead:?}, runs {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.abort();
}

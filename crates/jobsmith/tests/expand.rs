//! What `#[job]` and `#[derive(Event)]` expand to, compiled under strict lints
//! and checked at run time: direct calls, the envelopes that `.delay` and
//! `.schedule` build, the registry entries, runs through the registered runner
//! with state injected, and event handlers' subscriptions.

#![deny(warnings, clippy::pedantic)]

use jobsmith::prelude::*;
// The facade has no `serde_json` dev-dependency; the runtime's copy will do.
use jobsmith::__private::serde_json;
use jobsmith::{Backoff, Enqueue, Job, JobOptions, Registry};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Records what the jobs did, given to them as state.
#[derive(Debug, Default)]
pub struct Mailer {
    sent: Mutex<Vec<(u64, String)>>,
}

/// What `send_welcome` fails with.
#[derive(Debug)]
pub struct MailError(String);

impl std::fmt::Display for MailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Sends the welcome mail; every option set.
///
/// # Errors
/// When the template is empty.
///
/// # Panics
/// When run under a name other than `welcome`.
#[job(
    queue = "email",
    retries = 5,
    backoff = "exponential(1s, max = 10m, jitter = full)",
    ttl = "7d",
    timeout = "30s",
    priority = 3,
    unique,
    name = "welcome"
)]
pub async fn send_welcome(
    user_id: u64,
    template: String,
    mailer: State<Mailer>,
    ctx: JobContext,
) -> Result<(), MailError> {
    if template.is_empty() {
        return Err(MailError(format!("no template for {user_id}")));
    }
    assert_eq!(ctx.name(), "welcome");
    mailer.sent.lock().unwrap().push((user_id, template));
    Ok(())
}

/// A job with the defaults and no arguments, returning `()`.
#[job]
async fn tick() {
    TICKS.fetch_add(1, Ordering::SeqCst);
}

static TICKS: AtomicU64 = AtomicU64::new(0);

/// Another way to write the state: an alias, marked `#[inject]`, and a
/// `mut` argument whose name collides with the generated code's locals.
type Counter = State<AtomicU64>;

#[job(backoff = "fixed(30s)", priority = -2, unique = false, queue = "math")]
pub(crate) async fn add(
    mut args: Vec<i64>,
    ctx: u32,
    #[inject] counter: Counter,
) -> Result<i64, String> {
    args.push(i64::from(ctx));
    let sum: i64 = args.iter().sum();
    counter.fetch_add(
        u64::try_from(sum).map_err(|e| e.to_string())?,
        Ordering::SeqCst,
    );
    Ok(sum)
}

/// Through a re-export of the facade, with `crate = ...`.
mod reexport {
    pub(crate) use jobsmith as js;
}

#[job(crate = reexport::js, backoff = "none", retries = 0)]
async fn via_reexport(r#type: String) -> Result<(), std::convert::Infallible> {
    assert_eq!(r#type, "raw");
    Ok(())
}

/// A job whose arguments are borrowed nowhere: a struct argument and an option.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    x: i32,
    y: i32,
}

#[job(backoff = "exponential(500ms, jitter = none)")]
async fn plot(point: Point, label: Option<String>) -> Result<(), String> {
    assert_eq!(point, Point { x: 1, y: 2 });
    assert_eq!(label.as_deref(), Some("p"));
    Ok(())
}

fn state_with(mailer: Mailer) -> Arc<jobsmith_core::StateMap> {
    let mut state = jobsmith_core::StateMap::new();
    state.insert(mailer);
    state.insert(AtomicU64::new(0));
    Arc::new(state)
}

fn args_json(enqueue: Enqueue) -> serde_json::Value {
    let env = enqueue.into_envelope().unwrap();
    serde_json::from_str(env.args.get()).unwrap()
}

#[tokio::test]
async fn direct_calls_run_the_body() {
    let mailer = State::new(Mailer::default());
    let ctx = JobContext::inline("welcome", state_with(Mailer::default()));
    send_welcome(7, "hello".into(), mailer.clone(), ctx.clone())
        .await
        .unwrap();
    send_welcome::call(8, "again".into(), mailer.clone(), ctx.clone())
        .await
        .unwrap();
    assert!(send_welcome(9, String::new(), mailer.clone(), ctx)
        .await
        .is_err());
    assert_eq!(
        *mailer.sent.lock().unwrap(),
        [(7, "hello".to_owned()), (8, "again".to_owned())]
    );

    let before = TICKS.load(Ordering::SeqCst);
    tick().await;
    assert_eq!(TICKS.load(Ordering::SeqCst), before + 1);

    let counter = State::new(AtomicU64::new(0));
    assert_eq!(add(vec![1, 2], 3, counter.clone()).await, Ok(6));
    assert_eq!(counter.load(Ordering::SeqCst), 6);

    via_reexport("raw".into()).await.unwrap();
    plot(Point { x: 1, y: 2 }, Some("p".into())).await.unwrap();
}

/// An event, with a derived name.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, Event)]
#[event(name = "user.signed_up")]
pub struct UserSignedUp {
    user_id: u64,
}

/// Greets every user who signs up.
#[job(on = UserSignedUp, queue = "email")]
async fn greet(event: UserSignedUp, mailer: State<Mailer>) {
    mailer
        .sent
        .lock()
        .unwrap()
        .push((event.user_id, "greet".into()));
}

/// Sees every event about users.
///
/// # Errors
/// When the event is not about a user.
#[job(on = "user.#", retries = 0)]
async fn audit_users(event: AnyEvent, ctx: JobContext) -> Result<(), String> {
    if event.name.starts_with("user.") {
        Ok(())
    } else {
        Err(format!("{} in {}", event.name, ctx.name()))
    }
}

#[test]
fn delay_builds_the_envelope() {
    let env = send_welcome
        .delay(7, "hello".into())
        .into_envelope()
        .unwrap();
    assert_eq!(env.job, "welcome");
    assert_eq!(env.queue, "email");
    assert_eq!(env.priority, 3);
    assert_eq!(env.max_attempts, 6);
    assert_eq!(env.run_at, env.enqueued_at);
    assert_eq!(
        env.expires_at,
        Some(env.enqueued_at.plus(Duration::from_secs(7 * 86_400)))
    );
    assert!(env
        .idempotency_key
        .as_deref()
        .is_some_and(|k| k.starts_with("welcome:")));
    let args: serde_json::Value = serde_json::from_str(env.args.get()).unwrap();
    assert_eq!(args, serde_json::json!({"user_id": 7, "template": "hello"}));

    // Equal arguments, equal key; different arguments, different key.
    let again = send_welcome
        .delay(7, "hello".into())
        .into_envelope()
        .unwrap();
    let other = send_welcome
        .delay(8, "hello".into())
        .into_envelope()
        .unwrap();
    assert_eq!(env.idempotency_key, again.idempotency_key);
    assert_ne!(env.idempotency_key, other.idempotency_key);

    let env = tick.delay().into_envelope().unwrap();
    assert_eq!(
        (env.job.as_str(), env.queue.as_str(), env.priority),
        ("tick", "default", 0)
    );
    assert_eq!(env.max_attempts, 4);
    assert_eq!((env.expires_at, env.idempotency_key), (None, None));
    assert_eq!(env.args.get(), "{}");

    let env = add.delay(vec![1, 2], 3).into_envelope().unwrap();
    assert_eq!(
        (env.queue.as_str(), env.priority, env.idempotency_key),
        ("math", -2, None)
    );
    assert_eq!(
        args_json(add.delay(vec![1], 2)),
        serde_json::json!({"args": [1], "ctx": 2})
    );
    assert_eq!(
        args_json(via_reexport.delay("x".into())),
        serde_json::json!({"type": "x"})
    );
    assert_eq!(
        args_json(plot.delay(Point { x: 1, y: 2 }, None)),
        serde_json::json!({"point": {"x": 1, "y": 2}, "label": null})
    );
}

#[test]
fn schedule_sets_the_run_time() {
    let env = send_welcome
        .schedule(in_minutes(10), 7, "nudge".into())
        .into_envelope()
        .unwrap();
    assert_eq!(env.run_at, env.enqueued_at.plus(Duration::from_secs(600)));
    assert_eq!(
        args_json(send_welcome.schedule(Duration::from_secs(1), 1, "a".into())),
        serde_json::json!({"user_id": 1, "template": "a"})
    );
    let env = tick
        .schedule(in_seconds(5))
        .priority(9)
        .into_envelope()
        .unwrap();
    assert_eq!(
        (env.priority, env.run_at),
        (9, env.enqueued_at.plus(Duration::from_secs(5)))
    );
}

#[test]
fn the_registry_has_every_job_with_its_options() {
    let registry = Registry::global().unwrap();
    let names: Vec<_> = registry.names().collect();
    for name in ["add", "plot", "tick", "via_reexport", "welcome"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(!names.contains(&"send_welcome"));

    let welcome = registry.get("welcome").unwrap();
    assert!(std::ptr::eq(welcome, <send_welcome as Job>::DEF));
    assert_eq!(
        welcome.options,
        JobOptions {
            queue: "email",
            priority: 3,
            retries: 5,
            backoff: Backoff::Exponential {
                base: Duration::from_secs(1),
                max: Duration::from_secs(600),
                jitter: jobsmith_core::Jitter::Full,
            },
            ttl: Some(Duration::from_secs(7 * 86_400)),
            timeout: Some(Duration::from_secs(30)),
            unique: true,
            cron: None,
            on: None,
        }
    );
    assert!(
        welcome.location.starts_with("expand ("),
        "{}",
        welcome.location
    );
    assert!(
        welcome.location.contains("expand.rs:"),
        "{}",
        welcome.location
    );

    assert_eq!(registry.get("tick").unwrap().options, JobOptions::DEFAULT);
    assert_eq!(
        registry.get("greet").unwrap().options,
        JobOptions {
            queue: "email",
            on: Some(jobsmith::__private::Subscribe {
                pattern: "user.signed_up",
                any: false,
            }),
            ..JobOptions::DEFAULT
        }
    );
    let audit = registry.get("audit_users").unwrap().options;
    assert_eq!(
        (audit.on.map(|on| (on.pattern, on.any)), audit.retries),
        (Some(("user.#", true)), 0)
    );
    let add_options = registry.get("add").unwrap().options;
    assert_eq!(
        add_options,
        JobOptions {
            queue: "math",
            priority: -2,
            backoff: Backoff::Fixed(Duration::from_secs(30)),
            ..JobOptions::DEFAULT
        }
    );
    let reexport = registry.get("via_reexport").unwrap().options;
    assert_eq!((reexport.backoff, reexport.retries), (Backoff::None, 0));
    assert_eq!(
        registry.get("plot").unwrap().options.backoff,
        Backoff::Exponential {
            base: Duration::from_millis(500),
            max: Duration::from_secs(3600),
            jitter: jobsmith_core::Jitter::None,
        }
    );
}

#[tokio::test]
async fn the_runner_decodes_arguments_and_injects_state() {
    let registry = Registry::global().unwrap();
    let state = state_with(Mailer::default());

    let env = send_welcome
        .delay(7, "hello".into())
        .into_envelope()
        .unwrap();
    let def = registry.get(&env.job).unwrap();
    let run = (def.run)(&env.args, JobContext::inline(def.name, Arc::clone(&state))).unwrap();
    assert_eq!(run.await, Ok(()));
    let mailer = JobContext::inline("x", Arc::clone(&state))
        .state::<Mailer>()
        .unwrap();
    assert_eq!(*mailer.sent.lock().unwrap(), [(7, "hello".to_owned())]);

    // The job's error becomes a retryable failure.
    let env = send_welcome
        .delay(9, String::new())
        .into_envelope()
        .unwrap();
    let failure = (def.run)(&env.args, JobContext::inline(def.name, Arc::clone(&state)))
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(failure.message(), "no template for 9");
    assert!(!failure.is_permanent());

    // Missing state is a failure, not a panic.
    let empty = Arc::new(jobsmith_core::StateMap::new());
    let failure = (def.run)(&env.args, JobContext::inline(def.name, empty))
        .unwrap()
        .await
        .unwrap_err();
    assert!(failure.message().contains("Mailer"), "{failure}");

    // Arguments that do not match the signature are an error before running.
    let bad = serde_json::value::to_raw_value(&serde_json::json!({"user_id": "seven"})).unwrap();
    assert!((def.run)(&bad, JobContext::inline(def.name, Arc::clone(&state))).is_err());

    let env = add.delay(vec![10, 20], 5).into_envelope().unwrap();
    let add_def = registry.get("add").unwrap();
    let run = (add_def.run)(&env.args, JobContext::inline("add", Arc::clone(&state))).unwrap();
    assert_eq!(run.await, Ok(()));
    let counter = JobContext::inline("x", Arc::clone(&state))
        .state::<AtomicU64>()
        .unwrap();
    assert_eq!(counter.load(Ordering::SeqCst), 35);

    let env = greet
        .delay(UserSignedUp { user_id: 11 })
        .into_envelope()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(env.args.get()).unwrap(),
        serde_json::json!({"event": {"user_id": 11}})
    );
    let greet_def = registry.get("greet").unwrap();
    let run = (greet_def.run)(&env.args, JobContext::inline("greet", Arc::clone(&state))).unwrap();
    assert_eq!(run.await, Ok(()));
    assert_eq!(
        mailer.sent.lock().unwrap().last(),
        Some(&(11, "greet".to_owned()))
    );

    let event = AnyEvent {
        name: "billing.paid".into(),
        payload: serde_json::json!({"cents": 5}),
    };
    let env = audit_users.delay(event).into_envelope().unwrap();
    let audit_def = registry.get("audit_users").unwrap();
    let failure = (audit_def.run)(
        &env.args,
        JobContext::inline("audit_users", Arc::clone(&state)),
    )
    .unwrap()
    .await
    .unwrap_err();
    assert_eq!(failure.message(), "billing.paid in audit_users");

    let env = tick.delay().into_envelope().unwrap();
    let before = TICKS.load(Ordering::SeqCst);
    let tick_def = registry.get("tick").unwrap();
    (tick_def.run)(&env.args, JobContext::inline("tick", state))
        .unwrap()
        .await
        .unwrap();
    assert!(TICKS.load(Ordering::SeqCst) > before);
}

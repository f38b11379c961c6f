//! `jobsmith schedules` against a real Redis: what a worker's scheduler
//! recorded, read back by another process.

mod support;

use jobsmith::prelude::*;
use serde_json::Value;
use std::time::Duration;
use support::{connect, jobsmith, ok, redis_url};

#[job(cron = "* * * * * *", queue = "cli_sched")]
async fn cli_tick() -> Result<(), String> {
    Ok(())
}

/// A worker runs the one-second schedule until it has fired twice; the binary
/// then shows the schedule with the tick and job id the worker recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_shows_what_the_workers_recorded() {
    let url = redis_url();
    let app = connect(&url).await;
    assert!(
        ok(&["--url", &url, "schedules"]).contains("no schedules recorded"),
        "before any worker ran, the command says how schedules get recorded"
    );

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        app.worker()
            .stop_on(async move {
                let _ = stopped.await;
            })
            .run(),
    );
    // The first tick recorded, then the first one after it: a second firing
    // has rewritten the state the first one wrote.
    let mut first = None;
    let mut second = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while second.is_none() && tokio::time::Instant::now() < deadline {
        let states = jobsmith::schedules(&app).await.unwrap();
        if let Some(s) = states.iter().find(|s| s.name == "cli_tick") {
            if let (Some(prev), Some(id)) = (s.prev, &s.last_job) {
                match first {
                    None => first = Some(prev),
                    Some(p) if p != prev => second = Some((prev, id.clone())),
                    Some(_) => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
    let (prev, last_job) = second.unwrap_or_else(|| {
        panic!("the schedule did not fire twice within 15 s (first tick recorded: {first:?})")
    });

    let text = ok(&["--url", &url, "--json", "schedules"]);
    let listed: Vec<jobsmith::ScheduleInfo> = serde_json::from_str(&text).unwrap();
    let row = listed
        .iter()
        .find(|s| s.name == "cli_tick")
        .unwrap_or_else(|| panic!("cli_tick listed: {text}"));
    assert_eq!((row.expr.as_str(), row.tz.as_str()), ("* * * * * *", "UTC"));
    assert!(row.next.is_some(), "a next fire time: {text}");
    let shown = row.prev.expect("a previous fire time");
    // The worker may have fired once more before it stopped.
    assert!(shown >= prev, "{shown:?} before {prev:?}");
    if shown == prev {
        assert_eq!(row.last_job.as_ref(), Some(&last_job));
    } else {
        assert!(row.last_job.is_some() && row.last_job.as_ref() != Some(&last_job));
    }
    assert!(serde_json::from_str::<Value>(&text).unwrap().is_array());

    let table = ok(&["--url", &url, "schedules"]);
    eprintln!("{table}");
    let line = table
        .lines()
        .find(|l| l.starts_with("cli_tick"))
        .unwrap_or_else(|| panic!("a row for cli_tick:\n{table}"));
    assert!(
        line.contains("* * * * * *") && line.contains("UTC"),
        "{line}"
    );
}

/// A stored state the binary cannot read (written by a later version, say)
/// does not fail the listing: that schedule is listed as unknown, with a
/// warning on stderr, and the others as usual.
#[tokio::test]
async fn an_unreadable_schedule_state_is_listed_as_unknown() {
    let url = redis_url();
    let app = connect(&url).await;
    let backend = app.backend();
    backend
        .meta()
        .expect("the backend has it")
        .put_meta("schedule:from_the_future", b"{\"format\": 2}")
        .await
        .unwrap();
    let readable = serde_json::json!({
        "name": "hourly", "job": "hourly", "expr": "0 0 * * * *", "tz": "UTC",
        "missed": "skip", "prev": null, "next": null, "last_job": null, "updated_at": null,
    });
    backend
        .meta()
        .expect("the backend has it")
        .put_meta("schedule:hourly", readable.to_string().as_bytes())
        .await
        .unwrap();

    let out = jobsmith()
        .args(["--url", &url, "schedules"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "the listing succeeds: {stderr}");
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("a row for {name}:\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("from_the_future"),
        ["from_the_future", "?", "?", "?", "?", "?", "?", "?"],
        "{stdout}"
    );
    assert_eq!(row("hourly")[..3], ["hourly", "hourly", "0"], "{stdout}");
    assert!(
        stderr.contains("warning") && stderr.contains("`from_the_future` is not readable"),
        "{stderr}"
    );

    let text = ok(&["--url", &url, "--json", "schedules"]);
    let listed: Vec<jobsmith::ScheduleInfo> = serde_json::from_str(&text).unwrap();
    let names: Vec<(&str, bool)> = listed
        .iter()
        .map(|s| (s.name.as_str(), s.unreadable.is_some()))
        .collect();
    assert_eq!(
        names,
        [("from_the_future", true), ("hourly", false)],
        "{text}"
    );
}

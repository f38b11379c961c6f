//! What the worker and backends log, captured for tests to read: per test
//! thread with [`Logs::capture`], and, for the cases that check that an
//! operator is told (a hung broker must show in the worker's log), every
//! `WARN` and `ERROR` line of the process with `capture` and `lines`.
//!
//! One process-wide subscriber does both, so a test binary may use either.

use jobsmith_core::lock::LockExt;
use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

thread_local! {
    /// Where events logged on this thread go, while a test captures them.
    static CAPTURING: RefCell<Option<Logs>> = const { RefCell::new(None) };
}

/// Every `WARN` and `ERROR` line of the process; `None` when another
/// subscriber was installed first (the cases then say so).
static INSTALLED: OnceLock<Option<Logs>> = OnceLock::new();

/// Installs the process-wide subscriber, once; the process-wide lines, if it is ours.
fn install() -> Option<&'static Logs> {
    INSTALLED
        .get_or_init(|| {
            let process = Logs::default();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(Level::DEBUG)
                .with_writer(Router(process.clone()))
                .with_ansi(false)
                .without_time()
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .ok()
                .map(|()| process)
        })
        .as_ref()
}

/// Log lines captured by [`Logs::capture`], as `tracing-subscriber`'s plain
/// text format writes them (no colours, no time): level, target, message, fields.
#[derive(Debug, Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

/// Captures into its [`Logs`] until dropped.
#[derive(Debug)]
#[must_use = "capturing stops when this is dropped"]
pub struct Capturing(());

impl Drop for Capturing {
    fn drop(&mut self) {
        CAPTURING.with(|c| c.borrow_mut().take());
    }
}

impl Logs {
    /// Captures every event at `debug` and above logged on this thread until
    /// the guard is dropped.
    ///
    /// Events are told apart by the thread that logs them: run the test on a
    /// current-thread runtime (plain `#[tokio::test]`), so that the tasks the
    /// worker and the backend spawn log on this thread too. The first call
    /// installs a process-wide subscriber that sends each thread's events to
    /// its capture, if any (a subscriber per thread would miss events whose
    /// call sites another thread, logging nowhere, reached first). A test
    /// binary that installs a global subscriber of its own captures nothing.
    pub fn capture() -> (Self, Capturing) {
        install();
        let logs = Self::default();
        CAPTURING.with(|c| *c.borrow_mut() = Some(logs.clone()));
        (logs, Capturing(()))
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock_unpoisoned()).into_owned()
    }

    /// The captured lines that contain every one of `words`.
    pub fn lines_with(&self, words: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| words.iter().all(|w| line.contains(w)))
            .map(str::to_owned)
            .collect()
    }
}

/// Starts capturing the process's `WARN` and `ERROR` lines, once per
/// process; whether capture is on.
pub(crate) fn capture() -> bool {
    install().is_some()
}

/// Every `WARN` and `ERROR` line the process logged since [`capture`], each
/// starting with its level.
pub(crate) fn lines() -> Vec<String> {
    INSTALLED
        .get()
        .and_then(Option::as_ref)
        .map(|l| {
            l.text()
                .lines()
                .map(|l| l.trim_start().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Hands each event a writer to the capture of the thread that logs it
/// and, at `WARN` and above, to the process's lines.
struct Router(Logs);

impl<'a> MakeWriter<'a> for Router {
    type Writer = Route;

    fn make_writer(&'a self) -> Route {
        Route {
            thread: CAPTURING.with(|c| c.borrow().clone()),
            process: None,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Route {
        Route {
            thread: CAPTURING.with(|c| c.borrow().clone()),
            process: (*meta.level() <= Level::WARN).then(|| self.0.clone()),
        }
    }
}

/// One event's writer.
struct Route {
    thread: Option<Logs>,
    process: Option<Logs>,
}

impl Write for Route {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for logs in [&self.thread, &self.process].into_iter().flatten() {
            logs.0.lock_unpoisoned().extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

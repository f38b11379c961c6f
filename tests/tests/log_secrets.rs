//! No log line holds a password, at any level, once the filter carries
//! `jobsmith::LOG_DIRECTIVES`: lapin traces every frame it writes, and the
//! AMQP `connection.start-ok` frame holds the SASL response (the password).

use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Everything logged, from every thread (lapin writes frames on its own
/// thread), while connecting with `password` (refused by the broker, after
/// it was sent), under the filter `filter`.
fn logged_while_connecting(filter: &str, password: &str) -> String {
    use tracing_subscriber::{layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter};
    static LOGS: std::sync::OnceLock<(
        Captured,
        reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    )> = std::sync::OnceLock::new();
    let (captured, handle) = LOGS.get_or_init(|| {
        let captured = Captured::default();
        let (layer, handle) = reload::Layer::new(EnvFilter::new("off"));
        tracing_subscriber::registry()
            .with(layer)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(captured.clone()),
            )
            .init();
        (captured, handle)
    });
    handle
        .reload(EnvFilter::new(filter))
        .expect("the filter reloads");
    captured.0.lock().expect("not poisoned").clear();
    let base = std::env::var("JOBSMITH_AMQP_HOST").unwrap_or_else(|_| "127.0.0.1:5672".into());
    let url = format!("amqp://guest:{password}@{base}/%2f?prefix=logsecrets");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(jobsmith_amqp::AmqpBackend::connect(&url));
    assert!(r.is_err(), "the broker refuses the wrong password");
    // lapin's I/O thread may still be writing its last lines.
    std::thread::sleep(std::time::Duration::from_millis(200));
    handle
        .reload(EnvFilter::new("off"))
        .expect("the filter reloads");
    let bytes = captured.0.lock().expect("not poisoned").clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Whether `logs` show `password` as text, or as the list of its bytes
/// (`[78, 111, ...]` or `78, 111, ...`), as a `Debug` of a byte buffer does.
fn shows(logs: &str, password: &str) -> bool {
    let bytes: Vec<String> = password.bytes().map(|b| b.to_string()).collect();
    logs.contains(password) || logs.contains(&bytes.join(", ")) || logs.contains(&bytes.join(","))
}

#[test]
fn trace_logs_hold_no_amqp_password_with_the_directives() {
    let password = format!("NotGuest{:08x}", fastrand::u32(..));
    let bare = logged_while_connecting("trace", &password);
    assert!(
        shows(&bare, &password),
        "without the directives lapin's trace shows the password (if it no longer does, this test and LOG_DIRECTIVES can be revisited)"
    );
    let safe = logged_while_connecting(&format!("trace,{}", jobsmith::LOG_DIRECTIVES), &password);
    assert!(!safe.is_empty(), "trace lines were still logged");
    assert!(
        !shows(&safe, &password),
        "a log line holds the password:\n{safe}"
    );
}

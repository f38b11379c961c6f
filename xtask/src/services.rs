//! Starting the brokers the tests need, idempotently.

use crate::setup::installed;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Service {
    name: &'static str,
    port: u16,
    /// What to run when nothing listens on the port.
    start: &'static [&'static [&'static str]],
    /// The program that must exist, and how to install it.
    needs: (&'static str, &'static str),
    /// How long it may take to start listening.
    startup: Duration,
    /// Asks whether the service is up but not listening yet (a broker
    /// recovering its queues): if so it is waited for, not started again.
    booting: Option<&'static [&'static str]>,
    /// Its log, shown when it does not start listening in time.
    log: Option<&'static str>,
}

const SERVICES: &[Service] = &[
    Service {
        name: "Redis",
        port: 6379,
        start: &[&[
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/tmp",
        ]],
        needs: ("redis-server", "apt-get install -y redis-server"),
        startup: Duration::from_secs(20),
        booting: None,
        log: None,
    },
    Service {
        name: "RabbitMQ",
        port: 5672,
        start: &[&["rabbitmq-server", "-detached"]],
        needs: ("rabbitmq-server", "apt-get install -y rabbitmq-server"),
        // A node recovering thousands of durable queues from its data dir
        // (what killed test runs leave until their queues expire) can take
        // minutes before it listens; starting a second one then fails.
        startup: Duration::from_secs(600),
        booting: Some(&["rabbitmqctl", "-q", "--timeout", "10", "ping"]),
        log: Some("/var/log/rabbitmq"),
    },
    Service {
        name: "moto (SQS)",
        port: 5000,
        start: &[&[
            "sh",
            "-c",
            // moto's server with its receives made atomic (xtask/moto/serve.py says why).
            concat!(
                "nohup python3 ",
                env!("CARGO_MANIFEST_DIR"),
                "/moto/serve.py -H 127.0.0.1 -p 5000 >/tmp/jobsmith-moto.log 2>&1 &"
            ),
        ]],
        needs: ("moto_server", "pip install 'moto[server]'"),
        startup: Duration::from_secs(30),
        booting: None,
        log: Some("/tmp/jobsmith-moto.log"),
    },
    Service {
        name: "PostgreSQL (the soak's ledger)",
        port: 5432,
        start: &[&["sh", "-c", "service postgresql start"]],
        needs: ("psql", "apt-get install -y postgresql"),
        startup: Duration::from_secs(60),
        booting: None,
        log: None,
    },
];

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// Starts each service that is not already listening; says what to install when one is missing.
pub(crate) fn ensure_all() -> Result<(), String> {
    for s in SERVICES {
        if listening(s.port) {
            eprintln!("xtask: {} is running on 127.0.0.1:{}", s.name, s.port);
            continue;
        }
        let (program, install) = s.needs;
        if !installed(program) {
            return Err(format!(
                "{} is not running on 127.0.0.1:{} and `{program}` is not installed: run `{install}` (or start it yourself), then try again",
                s.name, s.port
            ));
        }
        let up = s.booting.is_some_and(|argv| {
            Command::new(argv[0])
                .args(&argv[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|st| st.success())
        });
        if up {
            eprintln!(
                "xtask: {} is up but not listening on 127.0.0.1:{} yet; waiting for it",
                s.name, s.port
            );
        } else {
            for argv in s.start {
                eprintln!("xtask: starting {}: {}", s.name, argv.join(" "));
                let status = Command::new(argv[0])
                    .args(&argv[1..])
                    .status()
                    .map_err(|e| format!("could not start {}: {e}", s.name))?;
                if !status.success() {
                    return Err(format!(
                        "starting {} failed ({status}); see its log",
                        s.name
                    ));
                }
            }
        }
        let started = Instant::now();
        let mut told = started;
        while !listening(s.port) {
            if started.elapsed() > s.startup {
                if let Some(log) = s.log {
                    show_log_tail(log);
                }
                return Err(format!(
                    "{} did not start listening on 127.0.0.1:{} within {:?}; its log is above",
                    s.name, s.port, s.startup
                ));
            }
            if told.elapsed() > Duration::from_secs(30) {
                eprintln!(
                    "xtask: still waiting for {} ({:.0?} so far)",
                    s.name,
                    started.elapsed()
                );
                told = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("xtask: {} started on 127.0.0.1:{}", s.name, s.port);
    }
    Ok(())
}

/// Prints the last lines of a log file, or of the newest `.log` file in a
/// directory, to stderr.
fn show_log_tail(path: &str) {
    let path = std::path::Path::new(path);
    let file = if path.is_dir() {
        std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.path())
    } else {
        Some(path.to_path_buf())
    };
    let Some(file) = file else { return };
    let Ok(text) = std::fs::read_to_string(&file) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("xtask: the end of {}:", file.display());
    for line in &lines[lines.len().saturating_sub(40)..] {
        eprintln!("  {line}");
    }
}

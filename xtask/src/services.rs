//! Starting the brokers the tests need, idempotently.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
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
    },
    Service {
        name: "RabbitMQ",
        port: 5672,
        start: &[&["rabbitmq-server", "-detached"]],
        needs: ("rabbitmq-server", "apt-get install -y rabbitmq-server"),
        startup: Duration::from_secs(90),
    },
    Service {
        name: "moto (SQS)",
        port: 5000,
        start: &[&[
            "sh",
            "-c",
            "nohup moto_server -H 127.0.0.1 -p 5000 >/tmp/jobsmith-moto.log 2>&1 &",
        ]],
        needs: ("moto_server", "pip install 'moto[server]'"),
        startup: Duration::from_secs(30),
    },
];

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
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
        let deadline = Instant::now() + s.startup;
        while !listening(s.port) {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not start listening on 127.0.0.1:{} within {:?}",
                    s.name, s.port, s.startup
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("xtask: {} started on 127.0.0.1:{}", s.name, s.port);
    }
    Ok(())
}

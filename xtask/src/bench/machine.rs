//! The machine a benchmark ran on, for docs/benchmarks.md: CPU, memory,
//! kernel, compiler and broker versions, each read from the machine itself.

use std::process::Command;

/// The first line a command prints, if it runs.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim().to_owned();
    (out.status.success() && !line.is_empty()).then_some(line)
}

fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cores = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{model}, {cores} cores")
}

fn ram() -> String {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or("unknown RAM".to_owned(), |kb| {
            format!("{:.1} GiB RAM", kb / 1024.0 / 1024.0)
        })
}

fn redis() -> String {
    // `Redis server v=7.0.15 sha=...`
    first_line("redis-server", &["--version"])
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("v="))
                .map(str::to_owned)
        })
        .map_or("Redis (version unknown)".to_owned(), |v| {
            format!("Redis {v}")
        })
}

fn rabbitmq() -> String {
    first_line("dpkg-query", &["-W", "-f=${Version}", "rabbitmq-server"])
        .or_else(|| first_line("rabbitmqctl", &["version"]))
        .map_or("RabbitMQ (version unknown)".to_owned(), |v| {
            format!("RabbitMQ {}", v.split(['-', '+']).next().unwrap_or(&v))
        })
}

fn moto() -> String {
    first_line(
        "python3",
        &[
            "-c",
            "import importlib.metadata as m; print(m.version('moto'))",
        ],
    )
    .map_or("moto (version unknown)".to_owned(), |v| format!("moto {v}"))
}

/// One sentence: CPU, RAM, kernel, compiler, brokers.
pub(super) fn describe() -> String {
    let kernel = first_line("uname", &["-r"]).unwrap_or_else(|| "unknown".into());
    let rustc = first_line("rustc", &["--version"])
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    format!(
        "{}, {}, Linux {kernel}; rustc {rustc}; {}, {} (persistent messages, confirms on), {} as the SQS endpoint; all on loopback",
        cpu(),
        ram(),
        redis(),
        rabbitmq(),
        moto()
    )
}

/// Today's date, UTC, as `YYYY-MM-DD`.
pub(super) fn today() -> String {
    first_line("date", &["-u", "+%Y-%m-%d"]).unwrap_or_else(|| "(date unknown)".into())
}

//! Installing what the test suite needs on a machine that has never seen
//! the project: Debian packages, moto and cargo-nextest. `cargo xtask test`
//! runs this first, so the README's test command works on a fresh machine.

use crate::run;
use std::process::Command;

/// A program the suite runs, and the Debian package that has it.
const PACKAGES: &[(&str, &str)] = &[
    ("redis-server", "redis-server"),
    // redis-cli and redis-benchmark: fault tests and the bench's yardstick.
    ("redis-cli", "redis-tools"),
    ("rabbitmq-server", "rabbitmq-server"),
    // promtool checks the alert rules in docs/alerts/ (tests/tests/alert_rules.rs).
    ("promtool", "prometheus"),
    // The TLS tests make their certificates with it.
    ("openssl", "openssl"),
    // The soak keeps its ledger of every job in PostgreSQL.
    ("psql", "postgresql"),
];

pub(crate) fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// `apt-get` as root: directly when this is root, through `sudo` otherwise.
fn apt_get() -> Result<Command, String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if root {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive");
        Ok(c)
    } else if installed("sudo") {
        let mut c = Command::new("sudo");
        c.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        Ok(c)
    } else {
        Err("packages are missing and this is not root and has no sudo: install them as root (see above), then run again".into())
    }
}

/// Installs each missing tool; says what it installs, and what to do when it cannot.
pub(crate) fn ensure_tools() -> Result<(), String> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(program, _)| !installed(program))
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
        run(apt_get()?.args(["update", "-q"]))?;
        run(apt_get()?.args(["install", "-y", "-q"]).args(&missing))?;
    }
    if !installed("moto_server") {
        eprintln!("xtask: installing moto (the SQS endpoint of the tests)");
        run(Command::new("python3").args(["-m", "pip", "install", "-q", "moto[server]"]))?;
    }
    let nextest = crate::cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nextest {
        eprintln!("xtask: installing cargo-nextest");
        run(crate::cargo().args(["install", "--locked", "cargo-nextest"]))?;
    }
    Ok(())
}

//! The Prometheus alert rules in `docs/alerts/` are valid, and their unit
//! tests (each alert fires on a series that should trip it, and none fires on
//! a healthy one) pass, checked with `promtool`.

use std::path::PathBuf;
use std::process::Command;

fn alerts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/alerts")
}

/// Runs `promtool` with `args` in `docs/alerts/`, failing the test with its output.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(alerts_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "could not run `promtool` ({e}): it checks the alert rules. Install it with \
                 `apt-get install prometheus` (Debian's package ships /usr/bin/promtool), \
                 or put a Prometheus release's promtool on PATH"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`promtool {}` failed:\n{text}",
        args.join(" ")
    );
    text
}

#[test]
fn the_alert_rules_are_valid() {
    let out = promtool(&["check", "rules", "jobsmith.rules.yml"]);
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
}

#[test]
fn each_alert_fires_when_it_should_and_not_on_a_healthy_system() {
    let out = promtool(&["test", "rules", "jobsmith.rules.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert the rules define is made to fire by at least one test.
    let rules = std::fs::read_to_string(alerts_dir().join("jobsmith.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(alerts_dir().join("jobsmith.rules.test.yml")).unwrap();
    let names: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    for name in names {
        let fires = tests.split("alertname: ").skip(1).any(|case| {
            case.starts_with(name)
                && case[name.len()..].starts_with('\n')
                && case.contains("exp_labels:")
                && !case
                    .split("alertname: ")
                    .next()
                    .unwrap()
                    .contains("exp_alerts: []")
        });
        assert!(fires, "no promtool test makes {name} fire");
    }
}

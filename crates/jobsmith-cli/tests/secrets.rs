//! No message the command prints holds a password, whatever the password
//! holds: each reserved character of RFC 3986, written raw (a URL that does
//! not parse) and percent-encoded (a valid one), in every backend's URL.

mod support;

use support::jobsmith;

/// Every character RFC 3986 reserves, and `%`.
const RESERVED: &str = ":/?#[]@!$&'()*+,;=%";

fn stderr_of(args: &[&str]) -> String {
    let out = jobsmith().args(args).output().expect("the binary runs");
    assert!(!out.status.success(), "{args:?} cannot succeed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn encoded(c: char) -> String {
    format!("%{:02X}", c as u32)
}

#[test]
fn no_message_prints_a_password() {
    let mut checked = 0;
    for c in RESERVED.chars() {
        for raw in [true, false] {
            let middle = if raw { c.to_string() } else { encoded(c) };
            // Distinct words on each side of the character: neither may show.
            let password = format!("SECRETHEAD{middle}SECRETTAIL");
            for url in [
                // Port 1: nothing listens, so each command fails after parsing.
                format!("redis://user:{password}@127.0.0.1:1/0"),
                format!("redis://:{password}@127.0.0.1:1"),
                format!("amqp://user:{password}@127.0.0.1:1/%2f"),
                format!("user:{password}@127.0.0.1:1"),
            ] {
                for args in [
                    vec!["--url", url.as_str(), "stats"],
                    vec![
                        "migrate",
                        "--from",
                        url.as_str(),
                        "--to",
                        "redis://127.0.0.1:1",
                    ],
                ] {
                    let err = stderr_of(&args);
                    assert!(
                        !err.contains("SECRETHEAD") && !err.contains("SECRETTAIL"),
                        "{args:?} printed the password: {err}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, RESERVED.chars().count() * 2 * 4 * 2);
}

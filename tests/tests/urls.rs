//! Every part and setting of a backend URL is used or refused, on every
//! backend: an unknown setting names the closest known one, a bad value
//! says what to write, and percent-encoded values are decoded.

use jobsmith_amqp::AmqpConfig;
use jobsmith_core::App;
use jobsmith_redis::RedisConfig;
use jobsmith_sqs::SqsConfig;

/// Parses `url` with the parser of its scheme; the error's text if it fails.
fn parse(url: &str) -> Result<(), String> {
    let scheme = url.split("://").next().unwrap_or("");
    let r = match scheme {
        "memory" => App::connect_memory(url).map(|_| ()),
        "redis" | "rediss" => RedisConfig::from_url(url).map(|_| ()),
        "amqp" | "amqps" => AmqpConfig::from_url(url).map(|_| ()),
        "sqs" => SqsConfig::from_url(url).map(|_| ()),
        other => panic!("no parser for {other}"),
    };
    r.map_err(|e| e.to_string())
}

const BASES: [&str; 4] = [
    "memory://",
    "redis://127.0.0.1:6379/0",
    "amqp://guest:guest@127.0.0.1:5672/%2f",
    "sqs://us-east-1",
];

#[test]
fn an_unknown_setting_is_refused_naming_the_closest() {
    for base in BASES {
        for (typo, meant) in [
            ("prefx", "prefix"),
            ("dead_maxx", "dead_max"),
            ("uniqe_for", "unique_for"),
        ] {
            if base.starts_with("memory") && typo == "prefx" {
                continue; // memory has no prefix: checked below
            }
            let url = format!("{base}?{typo}=1");
            let err = parse(&url).expect_err(&url);
            assert!(
                err.contains(typo) && err.contains(&format!("`{meant}`")),
                "{url}: {err}"
            );
        }
    }
    let err = parse("memory://?prefix=a").expect_err("memory has no prefix");
    assert!(err.contains("prefix"), "{err}");
}

#[test]
fn bad_values_are_refused() {
    for base in BASES {
        for setting in [
            "max_payload=0",
            "dead_max=0",
            "dead_max_age=0s",
            "max_payload=-1",
        ] {
            let url = format!("{base}?{setting}");
            let err = parse(&url).expect_err(&url);
            assert!(
                err.contains(setting.split('=').next().unwrap()),
                "{url}: {err}"
            );
        }
        // The same setting twice: which one counts would be a guess.
        let url = format!("{base}?dead_max=5&dead_max=6");
        let err = parse(&url).expect_err(&url);
        assert!(err.contains("twice"), "{url}: {err}");
    }
}

#[test]
fn every_url_part_is_used_or_refused() {
    for url in [
        "memory://somewhere",
        "memory:///path",
        "redis://127.0.0.1:6379/0#fragment",
        "amqp://127.0.0.1:5672/%2f#fragment",
        "sqs://us-east-1/app/extra",
        "sqs://user@us-east-1",
        "sqs://us-east-1:443",
        "sqs://us-east-1#x",
        "sqs://us-east-1/app?prefix=other",
    ] {
        assert!(parse(url).is_err(), "{url} is refused");
    }
}

#[test]
fn an_sqs_path_names_the_prefix() {
    let c = SqsConfig::from_url("sqs://us-east-1/myapp").expect("valid");
    assert_eq!(
        (c.region.as_str(), c.prefix.as_str()),
        ("us-east-1", "myapp")
    );
    let c = SqsConfig::from_url("sqs://us-east-1/myapp?prefix=myapp").expect("the same twice");
    assert_eq!(c.prefix, "myapp");
}

#[test]
fn values_are_percent_decoded() {
    let c = RedisConfig::from_url("redis://h?prefix=a%2Db").expect("valid");
    assert_eq!(c.prefix, "a-b");
    let c = AmqpConfig::from_url("amqp://h/%2f?prefix=a%2Db").expect("valid");
    assert_eq!(c.prefix, "a-b");
    let c = SqsConfig::from_url("sqs://us-east-1?endpoint=http%3A%2F%2F127.0.0.1%3A5000")
        .expect("valid");
    assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
}

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

/// Typos of the settings every backend reads, and what each must hint.
const COMMON_TYPOS: [(&str, &str); 5] = [
    ("dead_maxx", "dead_max"),
    ("dead_max_ag", "dead_max_age"),
    ("uniqe_for", "unique_for"),
    ("max_paylod", "max_payload"),
    ("call_timout", "call_timeout"),
];

/// Typos of each backend's own settings, and what each must hint.
fn own_typos(base: &str) -> &'static [(&'static str, &'static str)] {
    match base.split("://").next() {
        Some("redis") => &[("prefx", "prefix"), ("tls_cq", "tls_ca")],
        Some("amqp") => &[
            ("prefx", "prefix"),
            ("quorom", "quorum"),
            ("prefetc", "prefetch"),
            ("consumer_timout", "consumer_timeout"),
            ("hearbeat", "heartbeat"),
            ("frame_mx", "frame_max"),
        ],
        Some("sqs") => &[
            ("prefx", "prefix"),
            ("endpont", "endpoint"),
            ("fifio", "fifo"),
            ("max_receive", "max_receives"),
            ("keys_tabel", "keys_table"),
        ],
        _ => &[],
    }
}

/// The error lists every setting in backticks, so only the hint itself
/// tells whether the closest one was named.
#[test]
fn an_unknown_setting_is_refused_naming_the_closest() {
    for base in BASES {
        for &(typo, meant) in COMMON_TYPOS.iter().chain(own_typos(base)) {
            let url = format!("{base}?{typo}=1");
            let err = parse(&url).expect_err(&url);
            assert!(
                err.contains(&format!("`{typo}` (did you mean `{meant}`?)")),
                "{url}: the hint names `{meant}`: {err}"
            );
        }
        // Nothing close: no hint, only the list.
        for far in ["zzz", "color"] {
            let url = format!("{base}?{far}=1");
            let err = parse(&url).expect_err(&url);
            assert!(
                err.contains(&format!("`{far}`")) && !err.contains("did you mean"),
                "{url}: no setting is close, so none is hinted: {err}"
            );
        }
    }
    // memory:// has no prefix, and nothing of its own is close to one.
    let err = parse("memory://?prefx=a").expect_err("memory has no prefix");
    assert!(
        err.contains("`prefx`") && !err.contains("did you mean"),
        "{err}"
    );
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
    // Each backend's own, refused with the range it takes, where the client
    // or the broker would otherwise refuse them only at connect or enqueue.
    let amqp = "amqp://guest:guest@127.0.0.1:5672/%2f";
    for (setting, says) in [
        // 0 hands the heartbeat to the broker (or turns it off): nothing
        // bounds a call then. Over 2/5 of call_timeout (30 s by default), a
        // hung broker is noticed after call_timeout.
        ("heartbeat=0", "from 1 to 12"),
        ("heartbeat=13", "from 1 to 12"),
        ("heartbeat=60&call_timeout=1m", "from 1 to 24"),
        ("call_timeout=10s&heartbeat=5", "from 1 to 4"),
        ("heartbeat=soon", "from 1 to 12"),
        ("heartbeat=70000", "from 1 to 12"),
        ("frame_max=1000", "4096 to 4294967295"),
        ("frame_max=4294967296", "4096 to 4294967295"),
        ("channel_max=2", "8 to 65535"),
        ("channel_max=65536", "8 to 65535"),
        ("connection_timeout=0", "from 1 to 30000"),
        ("connection_timeout=5s", "from 1 to 30000"),
        ("connection_timeout=30001", "from 1 to 30000"),
    ] {
        let url = format!("{amqp}?{setting}");
        let err = parse(&url).expect_err(&url);
        let key = setting
            .split('&')
            .find(|s| !s.starts_with("call_timeout"))
            .and_then(|s| s.split('=').next())
            .unwrap();
        assert!(
            err.contains(&format!("`{key}=")) && err.contains(says),
            "{url}: the error names `{key}` and says `{says}`: {err}"
        );
    }
    for setting in [
        "heartbeat=12",
        "heartbeat=1&call_timeout=100ms",
        "heartbeat=24&call_timeout=1m",
        "frame_max=0",
        "frame_max=4096",
        "channel_max=0",
        "channel_max=8",
        "connection_timeout=30000",
    ] {
        let url = format!("{amqp}?{setting}");
        assert_eq!(parse(&url), Ok(()), "{url}");
    }
    // SQS takes messages of at most 1 MiB, whatever the queue says.
    let err = parse("sqs://us-east-1?max_payload=1048577").expect_err("over SQS's limit");
    assert!(
        err.contains("`max_payload=1048577`") && err.contains("1024 to 1048576"),
        "{err}"
    );
    assert_eq!(parse("sqs://us-east-1?max_payload=1048576"), Ok(()));
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

/// A Redis URL's path is its database number, which the redis client would
/// otherwise refuse only at connect.
#[test]
fn a_redis_path_is_a_database_number() {
    for url in [
        "redis://127.0.0.1:6379/abc",
        "redis://127.0.0.1:6379/0/x",
        "redis://127.0.0.1:6379/-1",
        "redis://127.0.0.1:6379//0",
        "redis://127.0.0.1:6379/1%32",
        "redis://127.0.0.1:6379/99999999999",
        "redis://127.0.0.1:6379/app?prefix=x",
    ] {
        let err = parse(url).expect_err(url);
        assert!(
            err.contains("database number") && err.contains("redis://127.0.0.1:6379/0"),
            "{url}: the error says the path is a database number, and how to write one: {err}"
        );
    }
    // A password with a raw `/` after digits reads as a port and a path:
    // refused too, showing neither.
    let url = "redis://me:123/SECRET@127.0.0.1:6379/0";
    let err = parse(url).expect_err(url);
    assert!(
        err.contains("%2F") && !err.contains("123") && !err.contains("SECRET"),
        "{url}: {err}"
    );
    for url in [
        "redis://127.0.0.1:6379",
        "redis://127.0.0.1:6379/",
        "redis://127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/15?prefix=x",
    ] {
        assert_eq!(parse(url), Ok(()), "{url}");
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

/// The characters a password may hold that a URL reserves: each must be
/// percent-encoded, and none may ever be shown.
const RESERVED: [char; 6] = ['/', '@', '?', '#', '%', ':'];

/// The URLs of every scheme that hold `password`, and whether the scheme
/// takes credentials (sqs:// and memory:// refuse them).
fn with_password(password: &str) -> [(String, bool); 6] {
    [
        (format!("redis://user:{password}@127.0.0.1:6379/0"), true),
        (format!("rediss://:{password}@127.0.0.1:6380"), true),
        (format!("amqp://user:{password}@127.0.0.1:5672/%2f"), true),
        (format!("amqps://user:{password}@[::1]:5671/%2f"), true),
        (format!("sqs://user:{password}@us-east-1/app"), false),
        (format!("memory://user:{password}@localhost"), false),
    ]
}

/// The text of a parse of `url` that may show: its error, or the config's `Debug`.
fn shown(url: &str) -> Result<String, String> {
    let scheme = url.split("://").next().unwrap_or("");
    match scheme {
        "memory" => App::connect_memory(url).map(|a| format!("{a:?}")),
        "redis" | "rediss" => RedisConfig::from_url(url).map(|c| format!("{c:?}")),
        "amqp" | "amqps" => AmqpConfig::from_url(url).map(|c| format!("{c:?}")),
        "sqs" => SqsConfig::from_url(url).map(|c| format!("{c:?}")),
        other => panic!("no parser for {other}"),
    }
    .map_err(|e| e.to_string())
}

/// Whether `e` is only that the TLS feature of this build is off.
fn tls_is_off(e: &str) -> bool {
    e.contains("needs TLS support")
}

#[test]
fn a_percent_encoded_reserved_character_in_a_password_is_read_and_never_shown() {
    for c in RESERVED {
        let password = format!("SECRETHEAD%{:02X}SECRETTAIL", c as u32);
        for (url, takes_credentials) in with_password(&password) {
            let parsed = jobsmith_core::BackendUrl::parse(&url).expect(&url);
            assert_eq!(
                parsed.password(),
                Some(format!("SECRETHEAD{c}SECRETTAIL").as_str()),
                "{url}"
            );
            let text = match shown(&url) {
                Ok(debug) => {
                    assert!(takes_credentials, "{url} is refused: {debug}");
                    debug
                }
                Err(e) => {
                    assert!(!takes_credentials || tls_is_off(&e), "{url}: {e}");
                    e
                }
            };
            for text in [text, jobsmith_core::redact_url(&url), parsed.redacted()] {
                assert!(
                    !text.contains("SECRETHEAD") && !text.contains("SECRETTAIL"),
                    "{url} shows its password: {text}"
                );
            }
        }
    }
}

#[test]
fn a_raw_reserved_character_in_a_password_is_read_as_meant_or_refused_unseen() {
    for c in RESERVED {
        let password = format!("SECRETHEAD{c}SECRETTAIL");
        for (url, takes_credentials) in with_password(&password) {
            match jobsmith_core::BackendUrl::parse(&url) {
                // `@`, `%` and `:` are unambiguous where they stand.
                Ok(parsed) => {
                    assert!(['@', '%', ':'].contains(&c), "{url} parses");
                    assert_eq!(parsed.password(), Some(password.as_str()), "{url}");
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains("percent-encode"), "{url}: {e}");
                }
            }
            let result = shown(&url);
            if !takes_credentials || ['/', '?', '#'].contains(&c) {
                assert!(result.is_err(), "{url} is refused");
            }
            let text = result.unwrap_or_else(|e| e);
            for text in [text, jobsmith_core::redact_url(&url)] {
                assert!(
                    !text.contains("SECRETHEAD") && !text.contains("SECRETTAIL"),
                    "{url} shows its password: {text}"
                );
            }
        }
    }
}

#[test]
fn a_url_the_url_crate_rejects_says_what_to_fix() {
    for url in [
        "redis://user:SECRET/TAIL@127.0.0.1:6379/0",
        "redis://127.0.0.1:notaport",
        "rediss://[::1:6380",
        "amqp://user:SECRET?TAIL@127.0.0.1:5672/%2f",
        "amqps://user:SECRET#TAIL@127.0.0.1:5671/%2f",
        "sqs://us-east-1:99999999",
        "memory://:5",
    ] {
        let err = match url.split("://").next() {
            Some("memory") => App::connect_memory(url).map(|_| ()),
            Some("redis" | "rediss") => RedisConfig::from_url(url).map(|_| ()),
            Some("amqp" | "amqps") => AmqpConfig::from_url(url).map(|_| ()),
            _ => SqsConfig::from_url(url).map(|_| ()),
        }
        .expect_err(url);
        assert!(
            matches!(err, jobsmith_core::Error::Config(_)),
            "{url}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("is not a valid URL") && text.contains("percent-encode"),
            "{url}: {text}"
        );
        assert!(
            !text.contains("SECRET") && !text.contains("TAIL"),
            "{url}: {text}"
        );
    }
}

#[test]
fn a_percent_encoded_setting_value_is_decoded_and_a_plus_is_kept() {
    for base in BASES {
        let url = format!("{base}?dead_max_age=1%68");
        assert_eq!(parse(&url), Ok(()), "{url}: `1%68` is `1h`");
    }
    let c = RedisConfig::from_url("redis://h?prefix=a%26b%3Dc%23d").expect("valid");
    assert_eq!(c.prefix, "a&b=c#d");
    let c = RedisConfig::from_url("redis://h?prefix=a+b").expect("valid");
    assert_eq!(c.prefix, "a+b", "a `+` is no space");
    let c = SqsConfig::from_url("sqs://us-east-1?keys_table=a%2Eb").expect("valid");
    assert_eq!(c.keys_table.as_deref(), Some("a.b"));
}

#[test]
fn ipv6_hosts_are_read_and_shown_in_brackets() {
    let c = RedisConfig::from_url("redis://me:pw@[::1]:6379/0?prefix=p").expect("valid");
    assert!(
        format!("{c:?}").contains("redis://me:***@[::1]:6379/0"),
        "{c:?}"
    );
    let c = AmqpConfig::from_url("amqp://me:pw@[::1]:5672/%2f").expect("valid");
    assert_eq!(c.redacted(), "amqp://me:***@[::1]:5672/%2f");
    assert!(SqsConfig::from_url("sqs://[::1]/app").is_err(), "no region");
}

//! Compile-time behaviour of `#[job]`: every misuse is an error on the
//! offending token that says how to fix it (`tests/ui/*.stderr`), and the
//! `pass_*` cases compile.
//!
//! The snapshots belong to one toolchain, the installed stable one; other
//! toolchains word their diagnostics differently, so the test is ignored
//! there. Regenerate with `TRYBUILD=overwrite cargo test -p jobsmith --test ui`
//! and read every changed `.stderr`.
//!
//! trybuild builds the facade with the features of this test run, so with a
//! backend feature on it would compile every broker client a second time; the
//! macro does not depend on backends, so the test runs without them
//! (`cargo xtask test` runs the facade's tests once with no features).

#[rustversion::attr(not(stable), ignore)]
#[cfg_attr(
    any(feature = "redis", feature = "amqp", feature = "sqs"),
    ignore = "run without backend features: cargo nextest run -p jobsmith"
)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    let mut cases: Vec<_> = std::fs::read_dir("tests/ui")
        .expect("tests/ui exists")
        .map(|entry| entry.expect("tests/ui is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    cases.sort();
    for case in cases {
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("pass_") {
            t.pass(&case);
        } else {
            t.compile_fail(&case);
        }
    }
}

//! Reading errors as an operator reads them: the whole chain of causes, and
//! the checks every backend's tests of permanent errors share.

use jobsmith_core::Error;

/// An error and all its causes, `: `-separated.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `e` is the error of a configuration to fix: permanent (a retry cannot
/// fix it), its message says what to change (`fix`), and no text in
/// `never` (a password, as the test's URL spells it) appears in it or in
/// any of its causes.
pub fn assert_says_what_to_fix(e: &Error, fix: &str, never: &[&str]) {
    let text = chain(e);
    assert!(
        e.is_permanent() && !e.is_transient(),
        "a retry cannot fix this, yet it is not a permanent error: {text}"
    );
    assert!(
        e.to_string().contains(fix),
        "the error does not say to fix the {fix}: {e}"
    );
    for secret in never {
        assert!(
            !text.contains(secret),
            "the error prints {secret:?}: {text}"
        );
    }
}

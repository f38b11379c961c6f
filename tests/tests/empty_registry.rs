//! A binary with no jobs linked in: the worker refuses to start and says how to link them.

#[tokio::test]
async fn an_empty_registry_says_how_to_link_the_jobs_crate() {
    let err = jobsmith::App::memory().worker().run().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no jobs are registered"), "{text}");
    assert!(text.contains("use your_jobs_crate as _;"), "{text}");
}

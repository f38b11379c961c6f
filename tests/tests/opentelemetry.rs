//! Trace propagation through OpenTelemetry (feature `opentelemetry`): the
//! enqueuing span's context is captured into the envelope's `trace`, and the
//! job's span is exported as its child, in the same trace.
//!
//! Its own test binary: it installs a global `tracing` subscriber with an
//! OpenTelemetry layer that exports to memory.

use jobsmith::prelude::*;
use jobsmith::testing::TestApp;
use jobsmith::trace::TraceParent;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use std::sync::OnceLock;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[job(queue = "otel_one")]
async fn otel_job() {
    tracing::info!("inside the job");
}

#[job(queue = "otel_chain")]
async fn otel_parent() {
    otel_child.delay().await.expect("enqueue the child job");
}

#[job(queue = "otel_chain")]
async fn otel_child() {}

/// The provider and its in-memory exporter, installed once for the binary.
fn otel() -> &'static (SdkTracerProvider, InMemorySpanExporter) {
    static OTEL: OnceLock<(SdkTracerProvider, InMemorySpanExporter)> = OnceLock::new();
    OTEL.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("jobsmith-tests"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::set_global_default(subscriber)
            .expect("first subscriber in this binary");
        (provider, exporter)
    })
}

/// Every span exported so far.
fn finished() -> Vec<SpanData> {
    let (provider, exporter) = otel();
    provider.force_flush().expect("flush spans");
    exporter.get_finished_spans().expect("exported spans")
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The exported `jobsmith.job` span of the job with this id.
fn job_span(id: &str) -> SpanData {
    finished()
        .into_iter()
        .find(|s| s.name == "jobsmith.job" && attr(s, "job.id").as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no jobsmith.job span for job {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_span_is_a_child_of_the_enqueuing_span() {
    otel();
    let t = TestApp::new();
    let enqueuing = tracing::info_span!("http.request");
    let id = otel_job
        .delay()
        .on(t.app())
        .instrument(enqueuing.clone())
        .await
        .unwrap();
    drop(enqueuing);
    let enq = finished()
        .into_iter()
        .find(|s| s.name == "http.request")
        .expect("the enqueuing span was exported");

    // The envelope carries the enqueuing span's context as a W3C traceparent.
    let queued = t.enqueued("otel_one");
    let tp = TraceParent::parse(
        queued[0]
            .trace
            .as_deref()
            .expect("enqueue captured a trace"),
    )
    .expect("a valid traceparent");
    assert_eq!(
        TraceId::from_bytes(tp.trace_id),
        enq.span_context.trace_id()
    );
    assert_eq!(SpanId::from_bytes(tp.span_id), enq.span_context.span_id());
    assert_eq!(tp.flags & 1, 1, "sampled");

    // The worker, in a task with no span of its own, links the job's span to it.
    let report = tokio::spawn(async move { t.drain(jobsmith::StateMap::new()).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.succeeded, 1);
    let job = job_span(&id.to_string());
    assert_eq!(
        job.span_context.trace_id(),
        enq.span_context.trace_id(),
        "one trace"
    );
    assert_eq!(
        job.parent_span_id,
        enq.span_context.span_id(),
        "enqueue → job"
    );
    assert_ne!(job.span_context.span_id(), enq.span_context.span_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_by_a_job_continues_its_trace() {
    otel();
    let t = TestApp::new();
    t.app().set_default();
    let root = tracing::info_span!("cron.tick");
    let parent_id = otel_parent
        .delay()
        .on(t.app())
        .instrument(root.clone())
        .await
        .unwrap();
    drop(root);
    t.drain(jobsmith::StateMap::new()).await.unwrap();
    let spans = finished();
    let root = spans.iter().find(|s| s.name == "cron.tick").unwrap();
    let parent = job_span(&parent_id.to_string());
    let child = spans
        .iter()
        .find(|s| s.name == "jobsmith.job" && attr(s, "job.name").as_deref() == Some("otel_child"))
        .expect("the child job ran");
    assert_eq!(parent.parent_span_id, root.span_context.span_id());
    assert_eq!(
        child.parent_span_id,
        parent.span_context.span_id(),
        "job → job"
    );
    assert_eq!(
        child.span_context.trace_id(),
        root.span_context.trace_id(),
        "one trace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_any_span_a_job_starts_its_own_trace() {
    otel();
    let t = TestApp::new();
    let id = otel_job.delay().on(t.app()).await.unwrap();
    assert_eq!(t.enqueued("otel_one")[0].trace, None, "nothing to carry");
    t.drain(jobsmith::StateMap::new()).await.unwrap();
    let job = job_span(&id.to_string());
    assert_eq!(job.parent_span_id, SpanId::INVALID, "a root span");
}

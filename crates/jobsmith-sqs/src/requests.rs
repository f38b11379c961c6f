//! Counting the SQS requests a process sends: SQS is billed per request, so
//! what a job costs is how many requests it takes.
//!
//! Every SQS client the backend builds carries [`CountRequests`], which
//! counts each request as it goes on the wire, retries included (each is
//! billed), in one process-wide counter read by [`requests_sent`] and in the
//! `jobsmith_sqs_requests_total` metric.

use aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sqs::error::BoxError;
use jobsmith_core::lock::LockExt;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// SQS requests sent by this process since it started, by operation
/// (`ReceiveMessage`, `SendMessageBatch`, ...).
static BY_OPERATION: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// How many SQS requests every [`SqsBackend`](crate::SqsBackend) of this
/// process has sent since the process started, retries included: what AWS
/// bills (about $0.40 per million standard-queue requests at list price).
/// `cargo xtask bench --backend sqs` reads it around a drain and an idle
/// minute to give the requests per job and per idle worker.
pub fn requests_sent() -> u64 {
    BY_OPERATION.lock_unpoisoned().values().sum()
}

/// [`requests_sent`] by operation, in name order: where a job's requests go.
pub fn requests_sent_by_operation() -> Vec<(String, u64)> {
    BY_OPERATION
        .lock_unpoisoned()
        .iter()
        .map(|(op, n)| (op.clone(), *n))
        .collect()
}

/// The interceptor that counts each request before it is sent.
#[derive(Debug)]
pub(crate) struct CountRequests;

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "jobsmith::CountRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The JSON protocol names the operation in a header: `AmazonSQS.ReceiveMessage`.
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("other");
        {
            let mut counts = BY_OPERATION.lock_unpoisoned();
            match counts.get_mut(operation) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(operation.to_owned(), 1);
                }
            }
        }
        metrics::counter!("jobsmith_sqs_requests_total", "operation" => operation.to_owned())
            .increment(1);
        Ok(())
    }
}

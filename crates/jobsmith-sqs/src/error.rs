//! How SQS and DynamoDB errors become jobsmith errors.

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use jobsmith_core::Error;
use std::fmt;

/// A request that never got an answer (refused or dropped connection,
/// timeout, an unreadable response) or that SQS answered with a 5xx or a
/// throttling error is transient ([`Error::Connection`]); credentials that
/// AWS does not accept, or that may not do what is asked, are permanent
/// ([`Error::Misconfigured`]); any other answer is [`Error::Backend`],
/// naming the operation and SQS's error code.
pub(crate) fn from_sdk<E, R>(op: &'static str, e: SdkError<E, R>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    from_service("sqs", op, e)
}

/// As [`from_sdk`], for a request to DynamoDB (the idempotency key table).
pub(crate) fn from_dynamodb<E, R>(op: &'static str, e: SdkError<E, R>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    from_service("dynamodb", op, e)
}

fn from_service<E, R>(service: &'static str, op: &'static str, e: SdkError<E, R>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let transient = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("");
            code.contains("Throttl")
                || code.contains("ServiceUnavailable")
                || code.contains("InternalError")
                || code.contains("InternalServer")
                || code.contains("RequestThrottled")
                || code.contains("ProvisionedThroughputExceeded")
                || code.contains("RequestLimitExceeded")
        }
        _ => false,
    };
    if let SdkError::TimeoutError(_) = &e {
        return Error::Connection(Box::new(OpError {
            service,
            op,
            detail: format!(
                "no answer: {}; the endpoint may be hung (the limit is the URL's `call_timeout`, plus a long poll's wait)",
                innermost(&e)
            ),
        }));
    }
    if transient {
        return Error::Connection(Box::new(OpError {
            service,
            op,
            detail: DisplayErrorContext(&e).to_string(),
        }));
    }
    if let Some(code) = e.code().filter(|c| REFUSED_CREDENTIALS.contains(c)) {
        return Error::Misconfigured {
            problem: format!(
                "AWS refused the credentials for {service} {op} ({code}: {})",
                e.message().unwrap_or("")
            ),
            fix: "check the AWS credentials this process finds (AWS_ACCESS_KEY_ID and \
                  AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the instance's or task's role), \
                  and that they may use this prefix's SQS queues (and the DynamoDB key \
                  table)"
                .to_owned(),
        };
    }
    let detail = match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or("")),
        None => DisplayErrorContext(&e).to_string(),
    };
    Error::backend_caused(format!("{service} {op}: {detail}"), e)
}

/// Error codes of SQS and DynamoDB that refuse the credentials or what they
/// may do: no retry can change them. (`ExpiredToken` is not one: a
/// credentials provider renews the token.)
const REFUSED_CREDENTIALS: &[&str] = &[
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "MissingAuthenticationToken",
    "InvalidSecurity",
    "AccessDenied",
    "AccessDeniedException",
];

/// What the deepest cause of `e` says (for a timeout: which limit, and how long).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(cause) = last.source() {
        last = cause;
    }
    last.to_string()
}

/// Whether an error says the queue does not exist.
pub(crate) fn is_missing_queue<E, R>(e: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    e.code()
        .is_some_and(|c| c.contains("NonExistentQueue") || c.contains("QueueDoesNotExist"))
}

/// One failed SQS or DynamoDB request, as the source of an [`Error::Connection`].
#[derive(Debug)]
struct OpError {
    service: &'static str,
    op: &'static str,
    detail: String,
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} failed: {}", self.service, self.op, self.detail)
    }
}

impl std::error::Error for OpError {}

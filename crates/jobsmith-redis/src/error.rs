//! How Redis errors become jobsmith errors.

use jobsmith_core::Error;
use redis::{ErrorKind, RedisError, RetryMethod};

/// A lost or refused connection, a server still loading its data, or a
/// timeout is transient ([`Error::Connection`]); anything else the server
/// said is [`Error::Backend`].
pub(crate) fn from_redis(e: RedisError) -> Error {
    let transient = e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.retry_method(),
            RetryMethod::WaitAndRetry | RetryMethod::RetryImmediately
        )
        || matches!(e.kind(), ErrorKind::Client if e.to_string().contains("reconnect"));
    if transient {
        Error::connection(e)
    } else {
        Error::Backend(format!("redis: {e}"))
    }
}

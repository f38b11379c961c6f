//! How Redis errors become jobsmith errors.

use jobsmith_core::Error;
use redis::{ErrorKind, RedisError, RetryMethod, ServerErrorKind};

/// A refused login, a missing permission or a database the server does not
/// have is permanent ([`Error::Misconfigured`]: only a change of URL or of
/// the server's users can fix it); a lost or refused connection, a server
/// still loading its data, or a timeout is transient ([`Error::Connection`]);
/// anything else the server said is [`Error::Backend`].
pub(crate) fn from_redis(e: RedisError) -> Error {
    if let Some(refused) = misconfigured(&e) {
        return refused;
    }
    if e.is_timeout() {
        return Error::connection(NoAnswer(e));
    }
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
        Error::backend_caused(format!("redis: {e}"), e)
    }
}

/// How every [`Error::Misconfigured`] of this crate begins; [`located`] adds the address.
const SERVER: &str = "the Redis server";

/// The permanent error `e` stands for, if it is one.
fn misconfigured(e: &RedisError) -> Option<Error> {
    let said = e.detail().unwrap_or_default();
    let (problem, fix) = match (e.kind(), e.code()) {
        (ErrorKind::AuthenticationFailed, _) | (_, Some("WRONGPASS")) => (
            format!("{SERVER} refused the user name or password"),
            "put the right credentials in the URL (`redis://:PASSWORD@host` or \
             `redis://USER:PASSWORD@host`, reserved characters percent-encoded)",
        ),
        (_, Some("NOAUTH")) => (
            format!("{SERVER} asks for a password and none was given"),
            "put the password in the URL (`redis://:PASSWORD@host`, reserved characters \
             percent-encoded)",
        ),
        (ErrorKind::Server(ServerErrorKind::NoPerm), _) => (
            format!("{SERVER} does not let this user run a command jobsmith needs ({said})"),
            "grant the user the commands jobsmith uses (scripting, lists, sorted sets, \
             hashes, `CLIENT`) on the keys of its prefix, or connect as another user",
        ),
        _ if e.to_string().contains("DB index is out of range") => (
            format!("{SERVER} has no database by the number the URL gives"),
            "pick a database the server has in the URL's path (`redis://host/0`; the \
             server's `databases` setting says how many it has, 16 by default)",
        ),
        _ => return None,
    };
    Some(Error::Misconfigured {
        problem,
        fix: fix.to_owned(),
    })
}

/// `e`, naming the server at `address` if it is a refusal of this crate.
pub(crate) fn located(e: Error, address: &str) -> Error {
    match e {
        Error::Misconfigured { problem, fix } if problem.starts_with(SERVER) => {
            Error::Misconfigured {
                problem: problem.replacen(SERVER, &format!("{SERVER} at {address}"), 1),
                fix,
            }
        }
        other => other,
    }
}

/// A command that got no answer in time, as the source of an [`Error::Connection`].
#[derive(Debug)]
struct NoAnswer(RedisError);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "redis command got no answer in time; the server may be hung (the limit is the \
             URL's `call_timeout`, default 10s)"
        )
    }
}

impl std::error::Error for NoAnswer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_error_gives_the_redis_error_as_its_source() {
        let e = from_redis(RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "not a list",
        )));
        assert!(matches!(e, Error::Backend { .. }), "{e:?}");
        let source = std::error::Error::source(&e).expect("the redis error is kept");
        let redis = source
            .downcast_ref::<RedisError>()
            .expect("the redis error itself");
        assert_eq!(redis.kind(), ErrorKind::UnexpectedReturnType);
    }
}

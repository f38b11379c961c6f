//! How broker and client failures become [`jobsmith_core::Error`]s.

use jobsmith_core::Error;
use lapin::ErrorKind;
use std::time::Duration;

/// A client error. A refusal that only a change of configuration can lift
/// (a login refused, a virtual host the broker does not have, a queue or
/// exchange it holds with other arguments) is permanent
/// ([`Error::Misconfigured`]); any other broker refusal (`RESOURCE_LOCKED`,
/// `NOT_FOUND`, ...) is [`Error::Backend`]; everything else means the
/// connection is gone and is transient ([`Error::Connection`]).
pub(crate) fn from_lapin(e: lapin::Error) -> Error {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let said = amqp.get_message().as_str();
            if let Some(refused) = misconfigured(amqp.get_id(), said) {
                return refused;
            }
            if is_connection_level(amqp) {
                Error::connection(e)
            } else {
                Error::backend_caused(format!("broker refused: {amqp}"), e)
            }
        }
        ErrorKind::MissingHeartbeatError => disconnected(
            "the broker sent nothing for two heartbeats and the connection was dropped: no \
             answer, the broker may be hung (the heartbeat is 2/5 of the URL's `call_timeout`)",
        ),
        _ => Error::connection(e),
    }
}

/// How every [`Error::Misconfigured`] of this crate begins; [`located`] adds the server.
const BROKER: &str = "RabbitMQ";

/// The permanent error of reply code `id` with text `said`, if it is one.
fn misconfigured(id: u16, said: &str) -> Option<Error> {
    let (problem, fix) = match id {
        // ACCESS_REFUSED: at login, or a resource the user has no permission on.
        403 => (
            format!("{BROKER} refused access ({said})"),
            "check the user name and password in the URL (`amqp://USER:PASSWORD@host/vhost`, \
             reserved characters percent-encoded) and the user's permissions on the virtual \
             host (`rabbitmqctl list_permissions -p VHOST`)",
        ),
        // NOT_ALLOWED: a virtual host that does not exist, or that the user may not open.
        530 => (
            format!("{BROKER} does not let this user open the virtual host ({said})"),
            "check the virtual host in the URL's path (`/%2f` is the default one `/`), create \
             it (`rabbitmqctl add_vhost`), or give the user permissions on it",
        ),
        // PRECONDITION_FAILED on a declaration: the name is taken with other arguments.
        406 if said.contains("inequivalent arg") => (
            format!("{BROKER} holds a queue or exchange of this prefix declared with other arguments than jobsmith declares ({said})"),
            "if it is jobsmith's, declared by another configuration (`quorum`, `max_priority`, \
             `expires`, `dead_max`, ...), use that configuration again; otherwise use another \
             `prefix`, or delete it if nothing in it is needed (`rabbitmqctl delete_queue NAME`)",
        ),
        _ => return None,
    };
    Some(Error::Misconfigured {
        problem,
        fix: fix.to_owned(),
    })
}

/// `e`, naming the broker at `server` if it is a refusal of this crate.
pub(crate) fn located(e: Error, server: &str) -> Error {
    match e {
        Error::Misconfigured { problem, fix } if problem.starts_with(BROKER) => {
            Error::Misconfigured {
                problem: problem.replacen(BROKER, &format!("{BROKER} at {server}"), 1),
                fix,
            }
        }
        other => other,
    }
}

fn is_connection_level(e: &lapin::protocol::AMQPError) -> bool {
    matches!(e.kind(), lapin::protocol::AMQPErrorKind::Hard(_)) || e.get_id() == 320
    // CONNECTION_FORCED: the broker is stopping
}

/// The transient error of the call `what`, which RabbitMQ at `server` did not
/// answer within `limit` (the URL's `call_timeout`); `blocked` is the
/// reason the broker gave for blocking the connection, if it did, and
/// `note` what became of the call.
pub(crate) fn unanswered(
    server: &str,
    what: &str,
    limit: Duration,
    blocked: Option<&str>,
    note: Option<&str>,
) -> Error {
    let why = match blocked {
        Some(reason) => format!(
            "it reports a resource alarm ({reason}) and blocks this connection, reading \
             nothing from it until the alarm clears (`rabbitmqctl status` lists the alarms)"
        ),
        None => "the broker may be overloaded or hung".to_owned(),
    };
    let mut text = format!(
        "{BROKER} at {server} gave no answer to {what} within {limit:?}, the URL's \
         `call_timeout`: {why}"
    );
    if let Some(note) = note {
        text.push_str("; ");
        text.push_str(note);
    }
    Error::connection(std::io::Error::new(std::io::ErrorKind::TimedOut, text))
}

/// The transient error of an operation attempted while the link is down.
pub(crate) fn disconnected(why: &str) -> Error {
    Error::connection(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        format!("not connected to RabbitMQ: {why}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::AMQPError;

    #[test]
    fn a_refusal_gives_the_lapin_error_as_its_source() {
        let refused = AMQPError::from_id(404, "NOT_FOUND - no queue 'q'".into()).expect("404");
        let e = from_lapin(lapin::Error::from(ErrorKind::ProtocolError(refused)));
        assert!(matches!(e, Error::Backend { .. }), "{e:?}");
        let source = std::error::Error::source(&e).expect("the lapin error is kept");
        let lapin = source
            .downcast_ref::<lapin::Error>()
            .expect("the lapin error itself");
        assert!(
            matches!(lapin.kind(), ErrorKind::ProtocolError(p) if p.get_id() == 404),
            "{lapin:?}"
        );
    }
}

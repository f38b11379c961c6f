//! How broker and client failures become [`jobsmith_core::Error`]s.

use jobsmith_core::Error;
use lapin::ErrorKind;

/// A client error: a broker refusal (`PRECONDITION_FAILED`, `ACCESS_REFUSED`,
/// ...) is permanent ([`Error::Backend`]); everything else means the
/// connection is gone and is transient ([`Error::Connection`]).
pub(crate) fn from_lapin(e: lapin::Error) -> Error {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) if !is_connection_level(amqp) => {
            Error::Backend(format!("broker refused: {amqp}"))
        }
        _ => Error::connection(e),
    }
}

fn is_connection_level(e: &lapin::protocol::AMQPError) -> bool {
    matches!(e.kind(), lapin::protocol::AMQPErrorKind::Hard(_)) || e.get_id() == 320
    // CONNECTION_FORCED: the broker is stopping
}

/// The transient error of an operation attempted while the link is down.
pub(crate) fn disconnected(why: &str) -> Error {
    Error::connection(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        format!("not connected to RabbitMQ: {why}"),
    ))
}

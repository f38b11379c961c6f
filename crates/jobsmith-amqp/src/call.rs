//! [`Calls`]: every call this crate makes to the broker, bounded by the URL's
//! `call_timeout`.
//!
//! The heartbeat that `call_timeout` sets (`AmqpConfig::connection_uri`)
//! catches a broker that goes silent: the client drops the connection, and
//! every call on it fails. It cannot catch a broker that keeps the
//! connection alive and leaves calls unanswered. RabbitMQ under a memory or
//! disk alarm does just that: it blocks each connection that publishes
//! (`connection.blocked`) and reads nothing more from it, acks and
//! declarations included, until the alarm clears, while its heartbeats and
//! deliveries keep coming. So every call on a channel goes through
//! [`Calls`], which gives up on it after `call_timeout` with a transient
//! error that names the setting, and the alarm when the broker has said so.
//! The broker's `connection.blocked` is also logged at `WARN`, naming the
//! server, as soon as it comes.
//!
//! A call given up on is not withdrawn: its frames wait on the connection,
//! and the broker acts on them once it reads again. Hence:
//! - a publish on a connection the broker blocks waits, within the bound,
//!   for the block to lift before it sends anything ([`Calls::publish`]):
//!   an enqueue that fails so has stored nothing;
//! - a step whose outcome must not be lost (a republish, then the ack of
//!   what it replaces) goes on in the background once its caller has had
//!   the error ([`Calls::or_in_background`]), so the delivery is acked or
//!   requeued by what the broker says of its copy, never both;
//! - a channel whose `basic.get` or `basic.consume` was given up on is
//!   closed ([`Calls::abandon`]), so that what the broker hands it later
//!   goes back to its queue.

use crate::error::{from_lapin, unanswered};
use futures_util::{FutureExt, Stream, StreamExt};
use jobsmith_core::Result;
use lapin::{Channel, Connection, Event};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What an unanswered publish that had not been sent yet adds to its error.
const NOT_SENT: &str = "nothing was sent";

/// What an unanswered publish that had been sent adds to its error.
const MAY_LAND: &str = "what was sent is stored if the broker reads it later";

/// What a step that goes on in the background adds to its error.
const FINISHES_LATER: &str =
    "the deliveries it settles are settled by what the broker answers, whenever it does";

/// How calls on one connection are bounded. Clones share the connection's
/// block state.
#[derive(Clone)]
pub(crate) struct Calls {
    limit: Duration,
    /// The server, without credentials, for errors and logs.
    server: Arc<str>,
    /// Why the broker blocks the connection (`connection.blocked`), while it does.
    blocked: watch::Receiver<Option<String>>,
}

impl Calls {
    /// Bounds calls on `conn` by `limit`, and follows the broker's blocks
    /// of it until the last clone is dropped.
    pub(crate) fn new(conn: &Connection, limit: Duration, server: String) -> Self {
        let (tx, blocked) = watch::channel(None);
        let server: Arc<str> = server.into();
        tokio::spawn(follow_blocks(
            conn.events_listener(),
            tx,
            Arc::clone(&server),
        ));
        Self {
            limit,
            server,
            blocked,
        }
    }

    /// The answer to `call`, the AMQP method `what`; a refusal is the broker's error.
    pub(crate) async fn answer<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = lapin::Result<T>>,
    ) -> Result<T> {
        self.within(what, call).await?.map_err(from_lapin)
    }

    /// Whatever `work` gives within the limit: the client's own result, for
    /// a caller that tells refusals apart, or a step of several calls
    /// answered together.
    pub(crate) async fn within<F: Future>(&self, what: &'static str, work: F) -> Result<F::Output> {
        tokio::time::timeout(self.limit, work)
            .await
            .map_err(|_| self.unanswered(what, None))
    }

    /// A publish: waits for any block of the connection to lift, then runs
    /// `send` (publishes and their confirms), all within the limit. Nothing
    /// is sent while the broker blocks the connection.
    pub(crate) async fn publish<T>(&self, send: impl Future<Output = Result<T>>) -> Result<T> {
        let mut sent = false;
        let bounded = tokio::time::timeout(self.limit, async {
            self.unblocked().await;
            sent = true;
            send.await
        })
        .await;
        bounded.unwrap_or_else(|_| {
            let note = if sent { MAY_LAND } else { NOT_SENT };
            Err(self.unanswered("basic.publish", Some(note)))
        })
    }

    /// `work` within the limit; past it, the caller gets the error and
    /// `work` goes on in the background until the broker answers (or the
    /// connection ends): for a step whose outcome must not be lost.
    pub(crate) async fn or_in_background<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let mut work = Box::pin(work);
        match tokio::time::timeout(self.limit, &mut work).await {
            Ok(done) => done,
            Err(_) => {
                tokio::spawn(work);
                Err(self.unanswered(what, Some(FINISHES_LATER)))
            }
        }
    }

    /// Waits until the broker does not block the connection; unbounded, for
    /// use inside a bound.
    pub(crate) async fn unblocked(&self) {
        if self.blocked.borrow().is_none() {
            return;
        }
        let mut blocked = self.blocked.clone();
        // The follower ends only with the connection, whose calls then fail on their own.
        let _ = blocked.wait_for(Option::is_none).await;
    }

    /// Closes `ch` in the background: a channel whose `basic.get` or
    /// `basic.consume` went unanswered may yet be handed messages, and the
    /// broker requeues them when it reads the close.
    pub(crate) fn abandon(ch: &Channel) {
        let ch = ch.clone();
        let mut close = Box::pin(async move {
            let _ = ch.close(200, "a call on it got no answer".into()).await;
        });
        // The first poll marks the channel closing, so that nothing takes it up again.
        if (&mut close).now_or_never().is_none() {
            tokio::spawn(close);
        }
    }

    /// The transient error of the call `what`, unanswered within the limit.
    fn unanswered(&self, what: &str, note: Option<&str>) -> jobsmith_core::Error {
        let blocked = self.blocked.borrow().clone();
        unanswered(&self.server, what, self.limit, blocked.as_deref(), note)
    }
}

/// Keeps `blocked` up to date with the broker's `connection.blocked` and
/// `connection.unblocked`, and logs both; ends when the connection's
/// events end or every [`Calls`] is gone.
async fn follow_blocks(
    events: impl Stream<Item = Event>,
    blocked: watch::Sender<Option<String>>,
    server: Arc<str>,
) {
    tokio::pin!(events);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = blocked.closed() => return,
        };
        match event {
            None => return,
            Some(Event::ConnectionBlocked(reason)) => {
                tracing::warn!(
                    backend = "amqp",
                    server = %server,
                    reason = %reason,
                    "RabbitMQ blocks this connection for a resource alarm: it reads nothing \
                     from it (publishes, acks, declarations) until the alarm clears, and each \
                     call fails after `call_timeout`"
                );
                blocked.send_replace(Some(reason));
            }
            Some(Event::ConnectionUnblocked) => {
                tracing::info!(backend = "amqp", server = %server, "RabbitMQ unblocked this connection: the resource alarm cleared");
                blocked.send_replace(None);
            }
            Some(_) => {}
        }
    }
}

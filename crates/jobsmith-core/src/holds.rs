//! [`Holds`]: the jobs a migration took and holds, by hold token, for a
//! backend whose broker keeps no hold of its own (RabbitMQ, SQS).
//!
//! [`Migrate::take`](crate::Migrate::take) holds each job it takes under a
//! fresh token; [`Migrate::remove`](crate::Migrate::remove) releases the
//! token and deletes the job; when the hold runs out first, whatever is
//! still held is handed back to the backend, which returns it to its queue.
//! A token is released once: by the remove or by the hand-back, never both.
//! Public for the backend crates, hidden: not an API for applications.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use jobsmith_core::holds::Holds;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let holds = Arc::new(Holds::new());
//! let removed = holds.hold("job 1");
//! let kept = holds.hold("job 2");
//! let (tx, rx) = tokio::sync::oneshot::channel();
//! holds.give_back_after(Duration::from_millis(10), vec![removed.clone(), kept], |left| async move {
//!     let _ = tx.send(left);
//! });
//! assert_eq!(holds.release(&removed), Some("job 1"));
//! assert_eq!(rx.await.unwrap(), vec!["job 2"]);
//! # }
//! ```

use crate::lock::LockExt;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one backend holds for migrations, by hold token.
#[derive(Debug)]
pub struct Holds<T> {
    held: Mutex<HashMap<String, T>>,
    seq: AtomicU64,
    /// Tells this table's tokens from another's (another backend object,
    /// another process) when one is shown or logged.
    instance: u32,
}

impl<T> Default for Holds<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Holds<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            held: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            instance: fastrand::u32(..),
        }
    }

    /// Holds `item`; returns its token, unique in this table.
    pub fn hold(&self, item: T) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let token = format!("take-{:08x}-{seq}", self.instance);
        self.held.lock_unpoisoned().insert(token.clone(), item);
        token
    }

    /// The item held under `token`, no longer held; `None` when it was
    /// released already, by a remove or by the hold running out.
    pub fn release(&self, token: &str) -> Option<T> {
        self.held.lock_unpoisoned().remove(token)
    }
}

impl<T: Send + 'static> Holds<T> {
    /// After `hold`, releases those of `tokens` still held and passes them to
    /// `give_back`, in the order of `tokens`. Nothing is handed back if the
    /// table is dropped first (its backend is gone; the broker returns what
    /// it held when the connection closes), or if every token was released.
    pub fn give_back_after<F, Fut>(
        self: &Arc<Self>,
        hold: Duration,
        tokens: Vec<String>,
        give_back: F,
    ) where
        F: FnOnce(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if tokens.is_empty() {
            return;
        }
        let table = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            let Some(table) = table.upgrade() else {
                return;
            };
            let left: Vec<T> = tokens.iter().filter_map(|t| table.release(t)).collect();
            drop(table);
            if !left.is_empty() {
                give_back(left).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_released_once() {
        let holds = Holds::new();
        let a = holds.hold(1);
        let b = holds.hold(2);
        assert_ne!(a, b);
        assert_eq!(holds.release(&a), Some(1));
        assert_eq!(holds.release(&a), None);
        assert_eq!(holds.release(&b), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_that_runs_out_hands_back_only_what_is_still_held() {
        let holds = Arc::new(Holds::new());
        let tokens: Vec<String> = (0..4).map(|i| holds.hold(i)).collect();
        let (tx, rx) = tokio::sync::oneshot::channel();
        holds.give_back_after(Duration::from_secs(30), tokens.clone(), |left| async move {
            let _ = tx.send(left);
        });
        assert_eq!(holds.release(&tokens[1]), Some(1));
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(rx.await.unwrap(), vec![0, 2, 3]);
        assert_eq!(
            holds.release(&tokens[0]),
            None,
            "handed back means released"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_table_hands_nothing_back() {
        let holds = Arc::new(Holds::new());
        let tokens = vec![holds.hold(1)];
        let (tx, mut rx) = tokio::sync::oneshot::channel::<Vec<i32>>();
        holds.give_back_after(Duration::from_secs(1), tokens, |left| async move {
            let _ = tx.send(left);
        });
        drop(holds);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(rx.try_recv().is_err());
    }
}

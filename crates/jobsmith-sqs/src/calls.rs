//! The SQS requests the backend makes, batched ten entries to a call.

use crate::codec::Outgoing;
use crate::config::MAX_VISIBILITY_SECS;
use crate::error::from_sdk;
use aws_sdk_sqs::error::BuildError;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use futures_util::future::join_all;
use jobsmith_core::{Error, Result};
use std::future::Future;
use std::ops::Range;
use std::time::{Duration, Instant};

/// SQS takes at most ten entries in one batch call.
pub(crate) const BATCH: usize = 10;

/// How many batch calls over one list of receipts run at once: a scan of a
/// deep dead-letter queue settles thousands of batches, and one connection
/// each at once would swamp the endpoint.
const CALLS_AT_ONCE: usize = 16;

/// SQS's longest per-message delay: 15 minutes.
pub(crate) const MAX_DELAY: u64 = 900;

/// One message to send.
#[derive(Debug)]
pub(crate) struct Send {
    pub(crate) out: Outgoing,
    /// Whole seconds to keep it hidden (standard queues only).
    pub(crate) delay: u64,
    /// FIFO message group and deduplication id.
    pub(crate) fifo: Option<(String, String)>,
}

/// Splits `sends` into batches of at most ten whose sizes add up to at most
/// `budget`: the index range of each.
fn batches(sends: &[Send], budget: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut total = 0;
    for (i, s) in sends.iter().enumerate() {
        let size = s.out.size();
        if i > start && (i - start == BATCH || total + size > budget) {
            out.push(start..i);
            start = i;
            total = 0;
        }
        total += size;
    }
    if start < sends.len() {
        out.push(start..sends.len());
    }
    out
}

fn build_error(e: BuildError) -> Error {
    Error::backend_caused(format!("sqs: {e}"), e)
}

/// Sends `sends` to `url` in order, one batch call after another.
pub(crate) async fn send(
    client: &Client,
    url: &str,
    sends: Vec<Send>,
    budget: usize,
) -> Result<()> {
    let ranges = batches(&sends, budget);
    let mut sends = sends.into_iter();
    for range in ranges {
        let count = range.len();
        let entries = sends
            .by_ref()
            .take(count)
            .enumerate()
            .map(|(i, s)| {
                let attributes = s.out.sdk_attributes();
                let mut e = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(s.out.body)
                    .set_message_attributes(attributes);
                match s.fifo {
                    Some((group, dedup)) => {
                        e = e.message_group_id(group).message_deduplication_id(dedup);
                    }
                    None if s.delay > 0 => {
                        e = e.delay_seconds(i32::try_from(s.delay.min(MAX_DELAY)).unwrap_or(900));
                    }
                    None => {}
                }
                e.build().map_err(build_error)
            })
            .collect::<Result<Vec<_>>>()?;
        let out = client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| from_sdk("SendMessageBatch", e))?;
        if let Some(f) = out.failed().first() {
            return Err(Error::backend(format!(
                "sqs SendMessageBatch: {} of {} messages refused: {}: {}",
                out.failed().len(),
                count,
                f.code(),
                f.message().unwrap_or("")
            )));
        }
    }
    Ok(())
}

/// Runs `call` on each batch of `receipts` at once; for each receipt, whether
/// SQS accepted it.
async fn per_receipt<'a, F, Fut>(receipts: &'a [&'a str], call: F) -> Result<Vec<bool>>
where
    F: Fn(&'a [&'a str]) -> Fut,
    Fut: Future<Output = Result<Vec<bool>>>,
{
    let mut all = Vec::with_capacity(receipts.len());
    for group in receipts.chunks(BATCH * CALLS_AT_ONCE) {
        for r in join_all(group.chunks(BATCH).map(&call)).await {
            all.extend(r?);
        }
    }
    Ok(all)
}

/// For a batch of `len` entries with ids `0..len`: whether each is not among `failed`.
fn accepted<'a>(len: usize, failed: impl IntoIterator<Item = &'a str>) -> Vec<bool> {
    let mut ok = vec![true; len];
    for id in failed {
        if let Some(slot) = id.parse::<usize>().ok().and_then(|i| ok.get_mut(i)) {
            *slot = false;
        }
    }
    ok
}

/// Deletes messages from `url`; for each receipt, whether SQS accepted it.
pub(crate) async fn delete(client: &Client, url: &str, receipts: &[&str]) -> Result<Vec<bool>> {
    per_receipt(receipts, |chunk| async move {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*r)
                    .build()
                    .map_err(build_error)
            })
            .collect::<Result<Vec<_>>>()?;
        let out = client
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| from_sdk("DeleteMessageBatch", e))?;
        Ok(accepted(chunk.len(), out.failed().iter().map(|f| f.id())))
    })
    .await
}

/// Sets the visibility timeout of messages in `url`; for each, whether SQS accepted it.
pub(crate) async fn change_visibility(
    client: &Client,
    url: &str,
    receipts: &[&str],
    seconds: u64,
) -> Result<Vec<bool>> {
    let seconds = i32::try_from(seconds.min(MAX_VISIBILITY_SECS)).unwrap_or(i32::MAX);
    per_receipt(receipts, |chunk| async move {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*r)
                    .visibility_timeout(seconds)
                    .build()
                    .map_err(build_error)
            })
            .collect::<Result<Vec<_>>>()?;
        let out = client
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| from_sdk("ChangeMessageVisibilityBatch", e))?;
        Ok(accepted(chunk.len(), out.failed().iter().map(|f| f.id())))
    })
    .await
}

/// Receives up to `max` (at most ten) messages from `url`, hiding them for
/// `visibility`; returns them with the instant the request was sent.
///
/// A long poll (`wait`, whole seconds up to 20) gets its wait added to the
/// client's call timeout, so the bound cuts off an endpoint that does not
/// answer, never a poll that waits as asked.
pub(crate) async fn receive(
    client: &Client,
    url: &str,
    max: usize,
    wait: Duration,
    visibility: u64,
) -> Result<(Vec<Message>, Instant)> {
    let wait = Duration::from_secs(wait.as_secs().min(20));
    let bound = client
        .config()
        .timeout_config()
        .and_then(aws_sdk_sqs::config::timeout::TimeoutConfig::operation_timeout)
        .map(|call| {
            let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                .operation_timeout(call + wait)
                .build();
            aws_sdk_sqs::config::Builder::default().timeout_config(timeouts)
        });
    let sent = Instant::now();
    let mut req = client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(i32::try_from(max.clamp(1, BATCH)).unwrap_or(10))
        .wait_time_seconds(i32::try_from(wait.as_secs()).unwrap_or(20))
        .visibility_timeout(i32::try_from(visibility.min(MAX_VISIBILITY_SECS)).unwrap_or(i32::MAX))
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .message_system_attribute_names(
            MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
        )
        .message_attribute_names("All")
        .customize();
    if let Some(bound) = bound {
        req = req.config_override(bound);
    }
    let out = req
        .send()
        .await
        .map_err(|e| from_sdk("ReceiveMessage", e))?;
    Ok((out.messages.unwrap_or_default(), sent))
}

/// Messages in `url`: (visible, in flight, delayed).
///
/// Asks for `All` attributes rather than the three counts: one request
/// either way on SQS, with a few hundred bytes more in the answer, but moto
/// (the usual test endpoint) works out every attribute three times for each
/// name asked for, scanning the queue's messages each time, and only once
/// for `All`: nine times less work on a deep queue.
pub(crate) async fn counts(client: &Client, url: &str) -> Result<(u64, u64, u64)> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| from_sdk("GetQueueAttributes", e))?;
    let get = |name: QueueAttributeName| {
        out.attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    ))
}

/// Whole seconds SQS should wait for `d`, rounded up, at least one.
pub(crate) fn whole_seconds_up(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(n: usize) -> Send {
        Send {
            out: Outgoing::text("x".repeat(n)),
            delay: 0,
            fifo: None,
        }
    }

    #[test]
    fn batches_hold_ten_and_fit_the_budget() {
        let sends: Vec<Send> = (0..25).map(|_| sized(10)).collect();
        let lens: Vec<usize> = batches(&sends, 1000).iter().map(|b| b.len()).collect();
        assert_eq!(lens, vec![10, 10, 5]);
        let sends: Vec<Send> = [100, 100, 900, 50, 1000].into_iter().map(sized).collect();
        let lens: Vec<usize> = batches(&sends, 1000).iter().map(|b| b.len()).collect();
        assert_eq!(lens, vec![2, 2, 1], "a batch never goes over the budget");
    }
}

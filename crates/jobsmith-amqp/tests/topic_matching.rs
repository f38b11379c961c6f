//! Events match topic patterns exactly as RabbitMQ's topic exchange matches
//! binding keys: every pattern of up to three words over `a`, `*` and `#`,
//! bound on a real topic exchange, gets exactly the event names of up to
//! three words over `a` and `b` that jobsmith's `topic_matches` says it does.

mod support;

use futures_util::future::try_join_all;
use jobsmith_grammar::topic_matches;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use std::collections::BTreeSet;

/// Every sequence of 1 to 3 words over `words`, joined by dots.
fn sequences(words: &[&str]) -> Vec<String> {
    let mut all: Vec<Vec<&str>> = words.iter().map(|w| vec![*w]).collect();
    let mut last = all.clone();
    for _ in 1..3 {
        last = last
            .iter()
            .flat_map(|seq| {
                words.iter().map(move |w| {
                    let mut longer = seq.clone();
                    longer.push(w);
                    longer
                })
            })
            .collect();
        all.extend(last.iter().cloned());
    }
    all.into_iter().map(|seq| seq.join(".")).collect()
}

#[tokio::test]
async fn patterns_match_as_the_topic_exchange_does() {
    let patterns = sequences(&["a", "*", "#"]);
    let names = sequences(&["a", "b"]);
    assert_eq!((patterns.len(), names.len()), (39, 14));
    let (conn, ch) = support::plain_channel().await;
    let exchange = format!("{}.topics", support::fresh_prefix());
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare the exchange");
    // One exclusive queue per pattern: they go when the connection closes.
    let queues = try_join_all(patterns.iter().map(|pattern| {
        let ch = ch.clone();
        let exchange = exchange.clone();
        async move {
            let q = ch
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            ch.queue_bind(
                q.name().clone(),
                exchange.as_str().into(),
                pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            Ok::<_, lapin::Error>(q.name().to_string())
        }
    }))
    .await
    .expect("declare and bind a queue per pattern");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    for name in &names {
        ch.basic_publish(
            exchange.as_str().into(),
            name.as_str().into(),
            BasicPublishOptions::default(),
            name.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirmed");
    }
    let mut disagreements = Vec::new();
    for (pattern, queue) in patterns.iter().zip(&queues) {
        let mut routed = BTreeSet::new();
        while let Some(m) = ch
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            routed.insert(String::from_utf8(m.delivery.data.clone()).expect("utf-8"));
        }
        let ours: BTreeSet<String> = names
            .iter()
            .filter(|n| topic_matches(pattern, n))
            .cloned()
            .collect();
        if routed != ours {
            disagreements.push(format!("`{pattern}`: RabbitMQ {routed:?}, ours {ours:?}"));
        }
    }
    let _ = ch
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    assert!(
        disagreements.is_empty(),
        "patterns matched otherwise than RabbitMQ does:\n{}",
        disagreements.join("\n")
    );
}

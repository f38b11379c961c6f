//! Payloads as SQS message bodies, and their size as SQS counts it.
//!
//! A body is text: SQS accepts only XML characters (tab, line feed,
//! carriage return, U+0020 to U+D7FF, U+E000 to U+FFFD, U+10000 and up).
//! Envelopes are JSON, whose escapes keep them inside that set, so they
//! travel as they are. Bytes that are not such text (a foreign producer's
//! binary payload) travel base64-encoded, marked by the message attribute
//! `jobsmith-encoding = base64`, and are handed back exactly as they were.

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use base64::Engine as _;
use std::collections::HashMap;

/// The attribute that marks a base64 body.
pub(crate) const ENCODING: &str = "jobsmith-encoding";
/// Why a dead job died (dead-letter queue only).
pub(crate) const REASON: &str = "jobsmith-reason";
/// When a dead job died, in milliseconds since the epoch (dead-letter queue only).
pub(crate) const DIED_AT: &str = "jobsmith-died-at";
/// A dead job's id (dead-letter queue only).
pub(crate) const ID: &str = "jobsmith-id";
/// The message attribute naming an imported copy's token.
pub(crate) const IMPORT: &str = "jobsmith-import";

/// A payload ready to send: its body and its message attributes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outgoing {
    pub(crate) body: String,
    pub(crate) attributes: Vec<(&'static str, String, &'static str)>,
}

impl Outgoing {
    /// A payload as a body, base64-encoded when it is not SQS text.
    pub(crate) fn from_raw(raw: &[u8]) -> Self {
        match std::str::from_utf8(raw) {
            Ok(text) if text.chars().all(sqs_char) => Self {
                body: text.to_owned(),
                attributes: Vec::new(),
            },
            _ => Self {
                body: base64::engine::general_purpose::STANDARD.encode(raw),
                attributes: vec![(ENCODING, "base64".to_owned(), "String")],
            },
        }
    }

    /// A body that is already SQS text (a serialized envelope).
    pub(crate) fn text(body: String) -> Self {
        Self {
            body,
            attributes: Vec::new(),
        }
    }

    /// Adds a string attribute.
    pub(crate) fn with(mut self, name: &'static str, value: String) -> Self {
        self.attributes.push((name, value, "String"));
        self
    }

    /// Adds a number attribute.
    pub(crate) fn with_number(mut self, name: &'static str, value: u64) -> Self {
        self.attributes.push((name, value.to_string(), "Number"));
        self
    }

    /// The message's size as SQS counts it against its limit: the body's
    /// bytes, and each attribute's name, data type and value.
    pub(crate) fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(n, v, t)| n.len() + v.len() + t.len())
                .sum::<usize>()
    }

    /// The attributes as the SDK takes them.
    pub(crate) fn sdk_attributes(&self) -> Option<HashMap<String, MessageAttributeValue>> {
        if self.attributes.is_empty() {
            return None;
        }
        Some(
            self.attributes
                .iter()
                .filter_map(|(n, v, t)| {
                    MessageAttributeValue::builder()
                        .data_type(*t)
                        .string_value(v.clone())
                        .build()
                        .ok()
                        .map(|a| ((*n).to_owned(), a))
                })
                .collect(),
        )
    }
}

/// Whether SQS accepts `c` in a message body.
fn sqs_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A received message's string attribute.
pub(crate) fn attribute<'a>(
    attrs: Option<&'a HashMap<String, MessageAttributeValue>>,
    name: &str,
) -> Option<&'a str> {
    attrs?.get(name)?.string_value()
}

/// The payload a received body carries.
pub(crate) fn decode_body(
    body: &str,
    attrs: Option<&HashMap<String, MessageAttributeValue>>,
) -> Vec<u8> {
    if attribute(attrs, ENCODING) == Some("base64") {
        if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(body) {
            return raw;
        }
    }
    body.as_bytes().to_vec()
}

/// A received message's system attribute as a number.
pub(crate) fn system_number(
    attrs: Option<&HashMap<MessageSystemAttributeName, String>>,
    name: &MessageSystemAttributeName,
) -> Option<u64> {
    attrs?.get(name)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_travels_as_is_and_binary_as_base64() {
        let json = Outgoing::from_raw("{\"a\":\"Grüße 🚀\"}".as_bytes());
        assert!(json.attributes.is_empty());
        assert_eq!(json.size(), "{\"a\":\"Grüße 🚀\"}".len());
        let bin = Outgoing::from_raw(b"\x00\xffnot json");
        assert_eq!(bin.attributes[0].1, "base64");
        let attrs = bin.sdk_attributes();
        assert_eq!(decode_body(&bin.body, attrs.as_ref()), b"\x00\xffnot json");
        assert_eq!(
            bin.size(),
            bin.body.len() + ENCODING.len() + "base64".len() + "String".len()
        );
    }
}

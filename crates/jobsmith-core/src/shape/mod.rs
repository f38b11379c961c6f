//! The JSON shape of a job argument, read off its type's own `Deserialize`.
//!
//! A process that does not link a job (the `jobsmith` CLI, a dashboard)
//! can still check arguments for it against the [`Shape`]s its workers
//! publish (see [`JobRecord`](crate::JobRecord)). [`shape_of`] finds a
//! type's shape by asking its `Deserialize` impl what it wants from a
//! deserializer that answers nothing: the first thing it asks for (`u8`, a
//! string, a sequence, a struct) is its shape, and the walk stops there with
//! an error, so nothing is built and no value is made up. Options,
//! sequences, maps and newtypes are looked into, one level at a time, for
//! what they hold; a struct's fields are named but not looked into, an enum's
//! variants likewise. A type that asks for "anything" (`serde_json::Value`,
//! untagged or internally tagged enums, a hand-written impl that reads
//! `deserialize_any`) is [`Shape::Any`]: a check never refuses what the job
//! would take, it only refuses what it cannot.
//!
//! `tracer.rs` is that deserializer; `check.rs` checks a JSON value against
//! a shape.

mod check;
mod tracer;

pub use check::Misfit;
pub use tracer::shape_of;

use serde::{Deserialize, Serialize};
use std::fmt;

/// What JSON a job argument takes, as far as its type tells.
///
/// Stored in the published [`JobRecord`](crate::JobRecord) with a `type`
/// tag: `{"type": "integer", "min": 0, "max": 255}`. A tag a reader does not
/// know (written by a later version) reads as [`Shape::Any`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Shape {
    /// `null` (`()`, a unit struct).
    Null,
    /// `true` or `false`.
    Boolean,
    /// A JSON integer (no fraction, no exponent) within `min..=max`; a bound
    /// is absent where it does not fit the field (128-bit integers).
    Integer {
        /// The smallest value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<i64>,
        /// The largest value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u64>,
    },
    /// Any JSON number (`f32`, `f64`).
    Number,
    /// A JSON string. (Not named `String`, nor the variant below `Option`:
    /// a public item of a std type's name makes rustc spell that type out
    /// in full, `std::string::String`, in every user's error messages.)
    #[serde(rename = "string")]
    Text,
    /// A JSON string of exactly one character (`char`).
    Char,
    /// `null`, or a value of shape `inner` (`Option<T>`); the parameter may
    /// also be left out.
    Nullable {
        /// The shape of the value when there is one.
        inner: Box<Shape>,
    },
    /// A JSON array of `items` (`Vec<T>`, sets, `VecDeque`).
    Array {
        /// The shape of each item.
        items: Box<Shape>,
    },
    /// A JSON array of exactly `len` items of any shape (tuples, `[T; N]`).
    Tuple {
        /// How many items.
        len: usize,
    },
    /// A JSON object whose values are of shape `values` (`HashMap`, `BTreeMap`).
    Map {
        /// The shape of each value.
        values: Box<Shape>,
    },
    /// A struct: a JSON object (or an array, in field order); its fields are
    /// named, their shapes not checked.
    Struct {
        /// The type's name.
        name: String,
        /// The fields' names, as serialized.
        fields: Vec<String>,
    },
    /// An externally tagged enum: a variant's name as a string, or an object
    /// with one key, the variant's name.
    Enum {
        /// The type's name.
        name: String,
        /// The variants' names, as serialized.
        variants: Vec<String>,
    },
    /// Any JSON value: the type reads whatever it is given.
    #[default]
    #[serde(other)]
    Any,
}

impl fmt::Display for Shape {
    /// What the shape takes, in words: `an integer from 0 to 255`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Any => f.write_str("any JSON value"),
            Shape::Null => f.write_str("null"),
            Shape::Boolean => f.write_str("a boolean (true or false)"),
            Shape::Integer { min, max } => {
                f.write_str("an integer")?;
                match (min, max) {
                    (Some(min), Some(max)) => write!(f, " from {min} to {max}"),
                    (Some(min), None) => write!(f, " of at least {min}"),
                    (None, Some(max)) => write!(f, " of at most {max}"),
                    (None, None) => Ok(()),
                }
            }
            Shape::Number => f.write_str("a number"),
            Shape::Text => f.write_str("a string"),
            Shape::Char => f.write_str("a string of one character"),
            Shape::Nullable { inner } => write!(f, "null or {inner}"),
            Shape::Array { items } => write!(f, "an array of {}", plural(items)),
            Shape::Tuple { len } => write!(f, "an array of {len} items"),
            Shape::Map { values } => write!(f, "an object of {}", plural(values)),
            Shape::Struct { name, .. } => write!(f, "an object ({name})"),
            Shape::Enum { name, variants } => {
                write!(f, "one of {} ({name})", variants.join(", "))
            }
        }
    }
}

/// "strings", "integers from 0 to 255": a shape said of many values.
fn plural(shape: &Shape) -> String {
    match shape {
        Shape::Any => "any JSON values".to_owned(),
        Shape::Text => "strings".to_owned(),
        Shape::Number => "numbers".to_owned(),
        Shape::Boolean => "booleans".to_owned(),
        Shape::Integer { .. } => shape.to_string().replacen("an integer", "integers", 1),
        other => format!("items each {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::collections::{BTreeMap, HashMap};

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Address {
        city: String,
        #[serde(rename = "zip_code")]
        zip: u32,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Plan {
        Free,
        #[serde(rename = "pro")]
        Pro(u32),
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    #[serde(untagged)]
    enum Loose {
        A(u8),
        B(String),
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct UserId(u64);

    #[derive(Deserialize)]
    #[allow(dead_code)]
    #[serde(try_from = "String")]
    struct Email(String);

    impl TryFrom<String> for Email {
        type Error = &'static str;
        fn try_from(s: String) -> Result<Self, Self::Error> {
            Ok(Email(s))
        }
    }

    fn int(min: i64, max: u64) -> Shape {
        Shape::Integer {
            min: Some(min),
            max: Some(max),
        }
    }

    #[test]
    fn shapes_come_from_the_types_own_deserialize() {
        assert_eq!(shape_of::<u8>(), int(0, 255));
        assert_eq!(shape_of::<i64>(), int(i64::MIN, i64::MAX as u64));
        assert_eq!(shape_of::<u64>(), int(0, u64::MAX));
        assert_eq!(shape_of::<f32>(), Shape::Number);
        assert_eq!(shape_of::<bool>(), Shape::Boolean);
        assert_eq!(shape_of::<String>(), Shape::Text);
        assert_eq!(shape_of::<char>(), Shape::Char);
        assert_eq!(shape_of::<()>(), Shape::Null);
        assert_eq!(
            shape_of::<Option<Vec<u16>>>(),
            Shape::Nullable {
                inner: Box::new(Shape::Array {
                    items: Box::new(int(0, 65535))
                })
            }
        );
        assert_eq!(
            shape_of::<HashMap<String, bool>>(),
            Shape::Map {
                values: Box::new(Shape::Boolean)
            }
        );
        assert_eq!(
            shape_of::<BTreeMap<u64, bool>>(),
            Shape::Map {
                values: Box::new(Shape::Any)
            },
            "a key that does not read from a string leaves the values unknown"
        );
        assert_eq!(shape_of::<(u8, String)>(), Shape::Tuple { len: 2 });
        assert_eq!(shape_of::<[u8; 3]>(), Shape::Tuple { len: 3 });
        assert_eq!(
            shape_of::<UserId>(),
            int(0, u64::MAX),
            "a newtype is what it wraps"
        );
        assert_eq!(
            shape_of::<Email>(),
            Shape::Text,
            "try_from reads its source"
        );
        assert_eq!(
            shape_of::<Address>(),
            Shape::Struct {
                name: "Address".into(),
                fields: vec!["city".into(), "zip_code".into()]
            }
        );
        assert_eq!(
            shape_of::<Plan>(),
            Shape::Enum {
                name: "Plan".into(),
                variants: vec!["Free".into(), "pro".into()]
            }
        );
        assert_eq!(shape_of::<Loose>(), Shape::Any);
        assert_eq!(shape_of::<Value>(), Shape::Any);
        assert_eq!(shape_of::<Box<u8>>(), int(0, 255));
        assert_eq!(
            shape_of::<u128>(),
            Shape::Integer {
                min: Some(0),
                max: None
            }
        );
    }

    #[test]
    fn checks_say_where_and_what() {
        let fits = |s: &Shape, v: Value| s.check(&v).is_ok();
        assert!(fits(&int(0, 255), json!(255)));
        assert!(!fits(&int(0, 255), json!(256)));
        assert!(!fits(&int(0, 255), json!(-1)));
        assert!(!fits(&int(0, 255), json!(1.0)));
        assert!(fits(&int(-128, 127), json!(-128)));
        assert!(fits(&Shape::Number, json!(3)));
        assert!(!fits(&Shape::Text, json!(3)));
        assert!(fits(&Shape::Char, json!("é")));
        assert!(!fits(&Shape::Char, json!("ab")));
        assert!(fits(&Shape::Any, json!({"a": [1]})));
        let plan = shape_of::<Plan>();
        assert!(fits(&plan, json!("Free")) && fits(&plan, json!({"pro": 3})));
        assert!(!fits(&plan, json!("Pro")) && !fits(&plan, json!({"Free": null, "pro": 1})));
        let tags = shape_of::<Option<Vec<String>>>();
        assert!(fits(&tags, json!(null)) && fits(&tags, json!(["a"])));
        let m = tags.check(&json!(["a", 7])).unwrap_err();
        assert_eq!(
            (m.path.as_str(), m.message.as_str()),
            ("[1]", "expected a string, got 7")
        );
        let m = shape_of::<HashMap<String, Vec<u8>>>()
            .check(&json!({"ok": [1], "a b": [300]}))
            .unwrap_err();
        assert_eq!(m.path, "[\"a b\"][0]");
        assert_eq!(m.message, "expected an integer from 0 to 255, got 300");
        let m = Shape::Text.check(&json!({"a": 1})).unwrap_err();
        assert_eq!(m.message, "expected a string, got an object {\"a\":1}");
    }

    #[test]
    fn shapes_round_trip_and_unknown_tags_read_as_any() {
        let s = shape_of::<Option<Vec<u8>>>();
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(
            text,
            r#"{"type":"nullable","inner":{"type":"array","items":{"type":"integer","min":0,"max":255}}}"#
        );
        assert_eq!(serde_json::from_str::<Shape>(&text).unwrap(), s);
        let later: Shape = serde_json::from_str(r#"{"type":"uuid","version":7}"#).unwrap();
        assert_eq!(later, Shape::Any);
    }
}

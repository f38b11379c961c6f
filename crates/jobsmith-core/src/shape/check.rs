//! [`Shape::check`]: whether a JSON value fits a shape, and where it does not.

use super::Shape;
use serde_json::Value;
use std::fmt;

/// Why a value does not fit a shape: where, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misfit {
    /// Where in the value, such as `[0]` or `.city` (empty for the value itself).
    pub path: String,
    /// What the shape takes and what was found instead.
    pub message: String,
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Shape {
    /// Whether `value` fits: `Err` says where it does not, and why.
    pub fn check(&self, value: &Value) -> Result<(), Misfit> {
        let misfit = |expected: String| {
            Err(Misfit {
                path: String::new(),
                message: format!("expected {expected}, got {}", describe(value)),
            })
        };
        match (self, value) {
            (Shape::Any, _)
            | (Shape::Null, Value::Null)
            | (Shape::Boolean, Value::Bool(_))
            | (Shape::Number, Value::Number(_))
            | (Shape::Text, Value::String(_))
            | (Shape::Nullable { .. }, Value::Null)
            | (Shape::Struct { .. }, Value::Object(_) | Value::Array(_)) => Ok(()),
            (Shape::Char, Value::String(s)) if s.chars().count() == 1 => Ok(()),
            (Shape::Integer { min, max }, Value::Number(n)) => {
                let fits = match (n.as_i64(), n.as_u64()) {
                    (_, Some(u)) => {
                        max.is_none_or(|max| u <= max)
                            && min.is_none_or(|min| {
                                u64::try_from(min).is_ok_and(|m| u >= m) || min < 0
                            })
                    }
                    (Some(i), None) => min.is_none_or(|min| i >= min),
                    (None, None) => false,
                };
                if fits {
                    Ok(())
                } else {
                    misfit(self.to_string())
                }
            }
            (Shape::Nullable { inner }, v) => inner.check(v),
            (Shape::Array { items }, Value::Array(vs)) => {
                for (i, v) in vs.iter().enumerate() {
                    items.check(v).map_err(|m| m.within(format!("[{i}]")))?;
                }
                Ok(())
            }
            (Shape::Tuple { len }, Value::Array(vs)) if vs.len() == *len => Ok(()),
            (Shape::Map { values }, Value::Object(m)) => {
                for (k, v) in m {
                    values.check(v).map_err(|m| m.within(key_segment(k)))?;
                }
                Ok(())
            }
            (Shape::Enum { variants, .. }, Value::String(s)) if variants.contains(s) => Ok(()),
            (Shape::Enum { variants, .. }, Value::Object(m))
                if m.len() == 1 && m.keys().all(|k| variants.contains(k)) =>
            {
                Ok(())
            }
            _ => misfit(self.to_string()),
        }
    }

    /// Whether a parameter of this shape may be left out of the arguments
    /// (an `Option`, which then reads as `None`).
    pub fn optional(&self) -> bool {
        matches!(self, Shape::Nullable { .. })
    }
}

impl Misfit {
    /// The misfit, found inside `segment` of a larger value.
    fn within(mut self, segment: String) -> Self {
        self.path.insert_str(0, &segment);
        self
    }
}

fn key_segment(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_alphanumeric() || c == '_') {
        format!(".{key}")
    } else {
        format!("[{}]", Value::String(key.to_owned()))
    }
}

/// A value's JSON kind, and the value itself when it is short, for messages.
fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => return "null".to_owned(),
        Value::Bool(b) => return b.to_string(),
        Value::Number(n) => return n.to_string(),
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let text = value.to_string();
    if text.chars().count() <= 40 {
        format!("{kind} {text}")
    } else {
        kind.to_owned()
    }
}

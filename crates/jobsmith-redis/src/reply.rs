//! Reading the scripts' replies.

use jobsmith_core::{Error, Result};
use redis::Value;

fn bad(what: &str, v: &Value) -> Error {
    Error::backend(format!("redis: unexpected script reply for {what}: {v:?}"))
}

/// The items of an array reply.
pub(crate) fn array(v: Value, what: &str) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(bad(what, &other)),
    }
}

/// An integer reply (Lua numbers arrive as integers, strings holding digits are read too).
pub(crate) fn int(v: &Value, what: &str) -> Result<i64> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map(|f| f as i64)
            .ok_or_else(|| bad(what, v)),
        Value::SimpleString(s) => s.parse::<f64>().map(|f| f as i64).map_err(|_| bad(what, v)),
        other => Err(bad(what, other)),
    }
}

/// A bulk string reply, taken.
pub(crate) fn bytes(v: Value, what: &str) -> Result<Vec<u8>> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        other => Err(bad(what, &other)),
    }
}

/// A bulk string reply as text.
pub(crate) fn string(v: Value, what: &str) -> Result<String> {
    String::from_utf8(bytes(v, what)?)
        .map_err(|e| Error::backend_caused(format!("redis: {what} is not UTF-8: {e}"), e))
}

/// One held/lost flag per item.
pub(crate) fn flags(v: Value, what: &str) -> Result<Vec<bool>> {
    array(v, what)?
        .iter()
        .map(|f| int(f, what).map(|n| n == 1))
        .collect()
}

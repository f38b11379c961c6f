//! Job arguments to JSON: serde_json, refusing what JSON cannot carry.
//!
//! serde_json writes a NaN or an infinite float as `null`, so a job would
//! run with a value it was never given (or fail to read its arguments). An
//! enqueue first walks the arguments with [`Check`], a serializer that writes
//! nothing and stops at the first non-finite float, then serializes them.
//! The walk allocates nothing unless it finds one.

use crate::error::{Error, Result};
use serde::ser::{self, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// `args` as JSON, or [`Error::NonFiniteArgument`] naming the first float in
/// them that JSON cannot carry.
pub(crate) fn to_json<T: Serialize + ?Sized>(args: &T) -> Result<Box<RawValue>> {
    if let Err(Found::NonFinite { value, mut path }) = args.serialize(Check) {
        path.reverse();
        let path = path.concat();
        let path = match path.strip_prefix('.') {
            Some(named) => named.to_owned(),
            None if path.is_empty() => "(the whole value)".to_owned(),
            None => path,
        };
        return Err(Error::NonFiniteArgument { path, value });
    }
    // Any other error of the walk is the type's own, which serde_json reports.
    serde_json::value::to_raw_value(args).map_err(Error::Serialize)
}

/// Why [`Check`] stopped.
#[derive(Debug)]
enum Found {
    /// A NaN or an infinity; `path` is where, innermost segment first.
    NonFinite {
        value: &'static str,
        path: Vec<String>,
    },
    /// The value's own `Serialize` failed.
    Other,
}

impl Found {
    /// Adds the segment the error came through, as it unwinds outwards.
    fn within(mut self, segment: impl FnOnce() -> String) -> Self {
        if let Found::NonFinite { path, .. } = &mut self {
            path.push(segment());
        }
        self
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not JSON")
    }
}

impl std::error::Error for Found {}

impl ser::Error for Found {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Found::Other
    }
}

fn float(x: f64) -> Result<(), Found> {
    let value = match x {
        x if x.is_finite() => return Ok(()),
        x if x.is_nan() => "NaN",
        x if x > 0.0 => "inf",
        _ => "-inf",
    };
    Err(Found::NonFinite {
        value,
        path: Vec::new(),
    })
}

/// The first segment of a path has no leading dot: it is an argument's name.
fn field(name: &str) -> String {
    format!(".{name}")
}

/// Walks a value as serde_json would write it, writing nothing.
#[derive(Clone, Copy)]
struct Check;

/// A sequence, tuple or map being walked: how many items came so far.
struct Items(usize);

/// A struct being walked.
struct Fields;

impl ser::Serializer for Check {
    type Ok = ();
    type Error = Found;
    type SerializeSeq = Items;
    type SerializeTuple = Items;
    type SerializeTupleStruct = Items;
    type SerializeTupleVariant = Items;
    type SerializeMap = Items;
    type SerializeStruct = Fields;
    type SerializeStructVariant = Fields;

    fn serialize_bool(self, _: bool) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_f32(self, x: f32) -> Result<(), Found> {
        float(f64::from(x))
    }
    fn serialize_f64(self, x: f64) -> Result<(), Found> {
        float(x)
    }
    fn serialize_char(self, _: char) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Found> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Found> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Found> {
        value
            .serialize(self)
            .map_err(|e| e.within(|| field(variant)))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Items, Found> {
        Ok(Items(0))
    }
    fn serialize_tuple(self, _: usize) -> Result<Items, Found> {
        Ok(Items(0))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Items, Found> {
        Ok(Items(0))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Items, Found> {
        Ok(Items(0))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Items, Found> {
        Ok(Items(0))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Fields, Found> {
        Ok(Fields)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Fields, Found> {
        Ok(Fields)
    }
    fn collect_str<T: fmt::Display + ?Sized>(self, _: &T) -> Result<(), Found> {
        // A string is always JSON: no need to format it.
        Ok(())
    }
}

impl Items {
    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Found> {
        let index = self.0;
        self.0 += 1;
        value
            .serialize(Check)
            .map_err(|e| e.within(|| format!("[{index}]")))
    }
}

/// The compound serializers whose elements are items, named by their place.
macro_rules! items {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Items {
            type Ok = ();
            type Error = Found;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Found> {
                self.item(value)
            }
            fn end(self) -> Result<(), Found> {
                Ok(())
            }
        }
    )*};
}

items!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Items {
    type Ok = ();
    type Error = Found;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Found> {
        key.serialize(Check)
            .map_err(|e| e.within(|| format!("[key {}]", self.0)))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Found> {
        // The key went by in its own call: the entry is named by its place.
        self.item(value)
    }
    fn serialize_entry<K, V>(&mut self, key: &K, value: &V) -> Result<(), Found>
    where
        K: Serialize + ?Sized,
        V: Serialize + ?Sized,
    {
        self.serialize_key(key)?;
        self.0 += 1;
        value.serialize(Check).map_err(|e| {
            // Named by its key, as JSON shows it, only once something is wrong.
            e.within(|| {
                let key = serde_json::to_string(key).unwrap_or_else(|_| "?".to_owned());
                format!("[{key}]")
            })
        })
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

/// The compound serializers whose elements are fields, named by their name.
macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Fields {
            type Ok = ();
            type Error = Found;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                name: &'static str,
                value: &T,
            ) -> Result<(), Found> {
                value.serialize(Check).map_err(|e| e.within(|| field(name)))
            }
            fn end(self) -> Result<(), Found> {
                Ok(())
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

//! [`shape_of`]: a deserializer that records what a type's `Deserialize`
//! asks for, and fails at once.

use super::Shape;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};
use std::fmt;

/// The shape of `T`'s JSON, as its `Deserialize` impl asks for it.
pub fn shape_of<T: DeserializeOwned>() -> Shape {
    let mut shape = Shape::Any;
    let _ = T::deserialize(Tracer {
        slot: &mut shape,
        depth: 0,
    });
    shape
}

/// Why the walk stopped: always, once it has seen what the type asks for.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("shape traced")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

/// How deep options, sequences, maps and newtypes are looked into; deeper
/// is [`Shape::Any`]. A bound for hand-written impls that recurse.
const MAX_DEPTH: u8 = 16;

/// A deserializer that records what it is asked for in `slot`, and fails.
struct Tracer<'a> {
    slot: &'a mut Shape,
    depth: u8,
}

impl Tracer<'_> {
    fn record<T>(self, shape: Shape) -> Result<T, Stop> {
        *self.slot = shape;
        Err(Stop)
    }

    /// Records `wrap` of what the visitor asks of the deserializer it is
    /// handed: the shape inside an option, a sequence or a map.
    fn inside<T>(
        self,
        visit: impl FnOnce(Tracer<'_>) -> Result<(), Stop>,
        wrap: impl FnOnce(Shape) -> Shape,
    ) -> Result<T, Stop> {
        let mut inner = Shape::Any;
        if self.depth < MAX_DEPTH {
            let _ = visit(Tracer {
                slot: &mut inner,
                depth: self.depth + 1,
            });
        }
        self.record(wrap(inner))
    }
}

fn integer(min: i64, max: u64) -> Shape {
    Shape::Integer {
        min: Some(min),
        max: Some(max),
    }
}

macro_rules! integers {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            #[allow(clippy::cast_lossless, clippy::cast_sign_loss)]
            self.record(integer(<$ty>::MIN as i64, <$ty>::MAX as u64))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = Stop;

    integers!(
        deserialize_i8: i8, deserialize_i16: i16, deserialize_i32: i32, deserialize_i64: i64,
        deserialize_u8: u8, deserialize_u16: u16, deserialize_u32: u32, deserialize_u64: u64
    );

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Any)
    }
    fn deserialize_bool<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Boolean)
    }
    fn deserialize_i128<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Integer {
            min: None,
            max: None,
        })
    }
    fn deserialize_u128<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Integer {
            min: Some(0),
            max: None,
        })
    }
    fn deserialize_f32<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Number)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Number)
    }
    fn deserialize_char<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Char)
    }
    fn deserialize_str<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Text)
    }
    fn deserialize_string<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Text)
    }
    // serde_json reads bytes from a string or an array of numbers.
    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Any)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Any)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.inside(
            |t| visitor.visit_some(t).map(drop),
            |inner| Shape::Nullable {
                inner: Box::new(inner),
            },
        )
    }
    fn deserialize_unit<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Null)
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, Stop> {
        self.record(Shape::Null)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        // serde_json reads a newtype as what it wraps.
        self.inside(|t| visitor.visit_newtype_struct(t).map(drop), |inner| inner)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.inside(
            |t| visitor.visit_seq(OneItem(Some(t))).map(drop),
            |items| Shape::Array {
                items: Box::new(items),
            },
        )
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Tuple { len })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        _: V,
    ) -> Result<V::Value, Stop> {
        self.record(Shape::Tuple { len })
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.inside(
            |t| visitor.visit_map(OneEntry(Some(t))).map(drop),
            |values| Shape::Map {
                values: Box::new(values),
            },
        )
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.record(Shape::Struct {
            name: name.to_owned(),
            fields: fields.iter().map(|&f| f.to_owned()).collect(),
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.record(Shape::Enum {
            name: name.to_owned(),
            variants: variants.iter().map(|&v| v.to_owned()).collect(),
        })
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Text)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.record(Shape::Any)
    }
}

/// A sequence whose first item is traced.
struct OneItem<'a>(Option<Tracer<'a>>);

impl<'de> de::SeqAccess<'de> for OneItem<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        match self.0.take() {
            Some(tracer) => seed.deserialize(tracer).map(Some),
            None => Ok(None),
        }
    }
}

/// A map of one entry, its key the string `"0"`, whose value is traced.
///
/// A key type that does not read from a string fails the walk before the
/// value is reached; the values are then [`Shape::Any`].
struct OneEntry<'a>(Option<Tracer<'a>>);

impl<'de> de::MapAccess<'de> for OneEntry<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        if self.0.is_none() {
            return Ok(None);
        }
        let key: de::value::StrDeserializer<'_, Stop> =
            de::IntoDeserializer::into_deserializer("0");
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        match self.0.take() {
            Some(tracer) => seed.deserialize(tracer),
            None => Err(Stop),
        }
    }
}

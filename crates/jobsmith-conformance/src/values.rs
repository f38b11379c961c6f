//! Arbitrary job arguments of every serde kind, for the round-trip property
//! case: [`ArgValue`] and the [`arg_values`] strategy.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One argument value, typed, so that it deserializes back into the kind it
/// was written as (a whole `f64` stays an `f64`, an `i128` an `i128`).
///
/// Externally tagged, as serde writes enums by default: every level
/// deserializes straight from the JSON text, with no buffering in between
/// that could widen or round a number.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ArgValue {
    /// `()`, written as `null` inside its tag.
    Unit(()),
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    I64(i64),
    /// An unsigned 64-bit integer.
    U64(u64),
    /// A signed 128-bit integer.
    I128(i128),
    /// An unsigned 128-bit integer.
    U128(u128),
    /// A finite `f64`: subnormals, extremes and `-0.0` included.
    F64(f64),
    /// A finite `f32`.
    F32(f32),
    /// A `char`, control characters included.
    Char(char),
    /// A string of any Unicode scalar values, control characters included.
    Str(String),
    /// An optional value: `null`, or the value.
    Opt(Option<Box<ArgValue>>),
    /// A sequence.
    Seq(Vec<ArgValue>),
    /// A map with string keys.
    Map(BTreeMap<String, ArgValue>),
    /// A map with integer keys, which JSON writes as strings.
    IntMap(BTreeMap<i64, ArgValue>),
}

impl ArgValue {
    /// Whether `self` and `other` are the same value bit for bit: floats
    /// compare by their bits, so `-0.0` differs from `0.0`.
    pub fn same(&self, other: &ArgValue) -> bool {
        use ArgValue as V;
        match (self, other) {
            (V::Unit(()), V::Unit(())) => true,
            (V::Bool(a), V::Bool(b)) => a == b,
            (V::I64(a), V::I64(b)) => a == b,
            (V::U64(a), V::U64(b)) => a == b,
            (V::I128(a), V::I128(b)) => a == b,
            (V::U128(a), V::U128(b)) => a == b,
            (V::F64(a), V::F64(b)) => a.to_bits() == b.to_bits(),
            (V::F32(a), V::F32(b)) => a.to_bits() == b.to_bits(),
            (V::Char(a), V::Char(b)) => a == b,
            (V::Str(a), V::Str(b)) => a == b,
            (V::Opt(a), V::Opt(b)) => match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => a.same(b),
                _ => false,
            },
            (V::Seq(a), V::Seq(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.same(b)),
            (V::Map(a), V::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, a), (kb, b))| ka == kb && a.same(b))
            }
            (V::IntMap(a), V::IntMap(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, a), (kb, b))| ka == kb && a.same(b))
            }
            _ => false,
        }
    }
}

/// Finite `f64`s: arbitrary bit patterns of every finite class, and the values
/// at the edges (the extremes, the smallest subnormal, `-0.0`, and
/// `-1.5e-300`, which serde_json's fast float parser reads one bit off).
fn f64s() -> BoxedStrategy<f64> {
    use proptest::num::f64 as f;
    prop_oneof![
        4 => f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO,
        2 => any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("JSON carries finite numbers only", |x| x.is_finite()),
        1 => proptest::sample::select(vec![
            0.0,
            -0.0,
            f64::MIN,
            f64::MAX,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            f64::EPSILON,
            f64::from_bits(1),
            -f64::from_bits(1),
            f64::from_bits(0x000f_ffff_ffff_ffff),
            -1.5e-300,
            0.1,
            1e23,
            9_007_199_254_740_993.0,
        ]),
    ]
    .boxed()
}

/// Finite `f32`s, as [`f64s`] makes `f64`s.
fn f32s() -> BoxedStrategy<f32> {
    use proptest::num::f32 as f;
    prop_oneof![
        4 => f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO,
        1 => proptest::sample::select(vec![
            0.0,
            -0.0,
            f32::MIN,
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::EPSILON,
            f32::from_bits(1),
            -f32::from_bits(1),
        ]),
    ]
    .boxed()
}

/// Characters of every kind, with the control characters JSON must escape
/// (and the line separators some parsers trip on) drawn often.
fn chars() -> BoxedStrategy<char> {
    prop_oneof![
        3 => any::<char>(),
        1 => proptest::char::range('\u{0}', '\u{1f}'),
        1 => proptest::sample::select(vec![
            '"', '\\', '/', '\u{7f}', '\u{2028}', '\u{2029}', '\u{feff}', '\u{fffd}',
            '\u{d7ff}', '\u{e000}', '\u{10ffff}',
        ]),
    ]
    .boxed()
}

fn strings() -> BoxedStrategy<String> {
    proptest::collection::vec(chars(), 0..12)
        .prop_map(String::from_iter)
        .boxed()
}

/// Integers of every width, with their extremes drawn often.
fn integers() -> BoxedStrategy<ArgValue> {
    prop_oneof![
        any::<i64>().prop_map(ArgValue::I64),
        any::<u64>().prop_map(ArgValue::U64),
        any::<i128>().prop_map(ArgValue::I128),
        any::<u128>().prop_map(ArgValue::U128),
        proptest::sample::select(vec![
            ArgValue::I64(i64::MIN),
            ArgValue::I64(i64::MAX),
            ArgValue::I64(-1),
            ArgValue::U64(u64::MAX),
            ArgValue::U64(0),
            ArgValue::I128(i128::MIN),
            ArgValue::I128(i128::MAX),
            ArgValue::U128(u128::MAX),
        ]),
    ]
    .boxed()
}

/// Arbitrary argument values: scalars of every kind, nested up to four
/// levels in sequences, maps and options.
pub fn arg_values() -> BoxedStrategy<ArgValue> {
    let leaf = prop_oneof![
        1 => Just(ArgValue::Unit(())),
        1 => any::<bool>().prop_map(ArgValue::Bool),
        2 => integers(),
        4 => f64s().prop_map(ArgValue::F64),
        1 => f32s().prop_map(ArgValue::F32),
        1 => chars().prop_map(ArgValue::Char),
        2 => strings().prop_map(ArgValue::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(ArgValue::Seq),
            proptest::collection::btree_map(strings(), inner.clone(), 0..6).prop_map(ArgValue::Map),
            proptest::collection::btree_map(any::<i64>(), inner.clone(), 0..4)
                .prop_map(ArgValue::IntMap),
            proptest::option::of(inner.prop_map(Box::new)).prop_map(ArgValue::Opt),
        ]
    })
    .boxed()
}

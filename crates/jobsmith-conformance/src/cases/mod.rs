//! One function per behaviour of the [`Backend`](jobsmith_core::Backend)
//! contract, in one module per part of it.
//!
//! Each takes a [`Factory`](crate::Factory), makes a fresh backend, and
//! panics with a sentence naming the broken rule when the backend breaks it.
#![allow(clippy::missing_panics_doc)]

mod common;
pub mod dead_letters;
pub mod events;
pub mod faults;
pub mod hot_path;
pub mod inspect;
pub mod keys;
pub mod meta;
pub mod migrate;
pub mod payload;
pub mod settle;
pub mod stops;
pub mod worker;

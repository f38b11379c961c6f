//! Examples live in `examples/*.rs`; see `cargo run --example quickstart`.

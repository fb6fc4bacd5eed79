//! Shared helpers of the example applications (none yet). The examples themselves are under
//! `examples/<name>/` and run with `cargo run --release --example <name>`.

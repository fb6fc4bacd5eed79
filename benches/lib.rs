//! Benchmarks of the IoT hub SDK. Run them all with `cargo bench`; the figures and the commands
//! that produced them are in `BENCHMARKS.md`.

//! The full hub, composed from the SDK crates: `cargo run --release --example hub`.
//!
//! Today it prepares its data directory and reports what it composes; it grows with the crates
//! (issue #7 composes store, jobs, auth and transport).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut data_dir = PathBuf::from("./hub-data");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data-dir" => data_dir = args.next().ok_or("--data-dir needs a path")?.into(),
            "--help" | "-h" => {
                eprintln!("usage: hub [--data-dir DIR]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    std::fs::create_dir_all(&data_dir)?;
    eprintln!("hub: data directory {}", data_dir.display());
    Ok(())
}

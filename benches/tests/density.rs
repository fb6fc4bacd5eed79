//! The density bench end to end, small: the command a user runs prints the fields with
//! every device connected, for the hub and (when installed) Mosquitto.

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_density"))
        .args(args)
        .output()
        .expect("the density binary runs");
    assert!(
        out.status.success(),
        "density failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("density prints JSON")
}

fn assert_density_report(report: &serde_json::Value, server: &str, n: u64) {
    assert_eq!(report["server"], server);
    assert_eq!(report["connected"], n, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["disconnects"], 0, "{report}");
    assert_eq!(report["auth"], "password");
    for field in [
        "rss_bytes_per_conn",
        "kernel_bytes_per_conn",
        "idle_cpu_percent",
    ] {
        assert!(report[field].is_number(), "{field} missing: {report}");
    }
}

#[test]
fn density_reports_the_hub_and_its_peer() {
    let with_peer = Command::new("mosquitto").arg("-h").output().is_ok();
    if !with_peer {
        eprintln!("mosquitto is not installed: the density test runs the hub alone");
    }
    let peer = if with_peer { "mosquitto" } else { "none" };
    let report = run(&[
        "--connections",
        "20",
        "--hold-secs",
        "1",
        "--keepalive-secs",
        "5",
        "--messages",
        "--load-secs",
        "2",
        "--peer",
        peer,
    ]);
    assert_eq!(report["mode"], "density");
    assert_density_report(&report, "hub", 20);
    // Every device received the messages published to it while the load ran.
    assert!(
        report["load"]["messages_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    if with_peer {
        assert_density_report(&report["peer"], "mosquitto", 20);
    } else {
        assert!(report.get("peer").is_none());
    }
}

#[test]
fn handshake_mode_counts_completed_connects() {
    let report = run(&[
        "--connections",
        "10",
        "--handshakes",
        "--handshake-secs",
        "1",
        "--handshake-concurrency",
        "2",
        "--peer",
        "none",
    ]);
    assert_eq!(report["mode"], "handshakes");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(report["handshakes"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn bad_arguments_are_refused_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_density"))
        .args(["--connections", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--connections"));
}

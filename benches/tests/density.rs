//! The density bench end to end, small: the command a user runs prints the fields with
//! every device connected, for the hub (in one or several server processes) and (when installed)
//! Mosquitto.

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
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    let last = stdout.lines().last().expect("density prints a line");
    serde_json::from_str(last).expect("the last line of density's output is one JSON object")
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
fn density_spreads_the_hub_over_several_server_processes() {
    let report = run(&[
        "--connections",
        "300",
        "--server-processes",
        "2",
        "--peer",
        "none",
        "--hold-secs",
        "2",
        "--messages",
        "--load-secs",
        "2",
    ]);
    assert_density_report(&report, "hub", 300);
    assert_eq!(report["server_processes"], 2, "{report}");
    let per_server = report["per_server"].as_array().expect("per_server");
    assert_eq!(per_server.len(), 2, "{report}");
    let total =
        |field: &str| -> u64 { per_server.iter().map(|s| s[field].as_u64().unwrap()).sum() };
    // Each server process held its half, and the halves add up to the run.
    for s in per_server {
        assert_eq!(s["connections"], 150, "{report}");
        assert_eq!(s["connected"], 150, "{report}");
        assert_eq!(s["open_after_hold"], 150, "{report}");
        assert!(s["rss_bytes_per_conn"].is_number(), "{report}");
        assert!(s["idle_cpu_percent"].is_number(), "{report}");
    }
    assert_eq!(total("connections"), 300);
    assert_eq!(total("connected"), report["connected"].as_u64().unwrap());
    assert_eq!(
        total("open_after_hold"),
        report["open_after_hold"].as_u64().unwrap()
    );
    assert_eq!(
        total("client_processes"),
        report["client_processes"].as_u64().unwrap()
    );
    // The totals are sums over the processes.
    let idle_cpu: f64 = per_server
        .iter()
        .map(|s| s["idle_cpu_percent"].as_f64().unwrap())
        .sum();
    assert!(
        (report["idle_cpu_percent"].as_f64().unwrap() - idle_cpu).abs() < 0.25,
        "{report}"
    );
    // Each client's publisher reached its devices through the server process that owns them.
    assert_eq!(report["load"]["open_after_load"], 300, "{report}");
    assert!(
        report["load"]["messages_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

#[test]
fn several_server_processes_are_refused_for_handshakes() {
    let out = Command::new(env!("CARGO_BIN_EXE_density"))
        .args(["--server-processes", "2", "--handshakes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server-processes"));
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

//! Connection density bench (issue #6).
//!
//! `cargo run --release -p hub-benches --bin density -- --connections N` opens N authenticated
//! MQTT-over-TLS device connections from separate client processes against the server under test
//! (a child process), holds them idle with keep-alive, and prints JSON with the server's resident
//! memory per connection, the kernel's slab growth per connection and the server's CPU during the
//! hold; then does the same against Mosquitto (`--peer mosquitto`, the default) with the same
//! client and certificate, reported under `peer`. `--handshakes` measures full TLS 1.3 handshakes
//! plus MQTT CONNECT per second instead; `--messages` adds a phase in which every device receives
//! a 1 KiB message a second. See `BENCHMARKS.md` ("Connection density") for the method.
//!
//! The same binary is the client process (`density client …`) and the hub server
//! (`density hub-server …`), both started by the orchestrator.

// A bench reports on standard output, and the client processes talk to the orchestrator there.
#![allow(clippy::print_stdout)]

mod client;
mod hub_server;
mod mqtt;
mod procfs;
mod server;
mod setup;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::ClientArgs;
use crate::server::{Kind, Server};
use crate::setup::CertFiles;

/// At most this many connections per client process: the per-process open-file limit here is
/// 20,000, and a client needs one descriptor per connection plus a few.
const MAX_PER_CLIENT_PROCESS: usize = 15_000;

/// Mosquitto is one process with the same 20,000-file limit, so it is asked for at most this many.
const MAX_MOSQUITTO: usize = 19_000;

const USAGE: &str = "\
usage: density [--connections N] [--processes P] [--hold-secs S] [--keepalive-secs K]
               [--server hub|mosquitto] [--peer mosquitto|none] [--concurrency C]
               [--messages [--load-secs S]] [--hub-kernel-buffers]
               [--handshakes [--handshake-secs S] [--handshake-concurrency C]]";

/// The orchestrator's options.
#[derive(Debug, Clone)]
struct Options {
    connections: usize,
    processes: Option<usize>,
    hold_secs: u64,
    keepalive_secs: u16,
    server: Kind,
    peer: Option<Kind>,
    concurrency: usize,
    messages: bool,
    load_secs: u64,
    handshakes: bool,
    handshake_secs: u64,
    handshake_concurrency: usize,
    hub_kernel_buffers: bool,
}

fn parse_options(argv: &[String]) -> Result<Options, String> {
    let mut o = Options {
        connections: 2_000,
        processes: None,
        hold_secs: 60,
        keepalive_secs: 60,
        server: Kind::Hub,
        peer: Some(Kind::Mosquitto),
        concurrency: 64,
        messages: false,
        load_secs: 30,
        handshakes: false,
        handshake_secs: 10,
        handshake_concurrency: 32,
        hub_kernel_buffers: false,
    };
    let kind = |s: &str| match s {
        "hub" => Ok(Some(Kind::Hub)),
        "mosquitto" => Ok(Some(Kind::Mosquitto)),
        "none" => Ok(None),
        other => Err(format!("unknown server {other:?} (hub, mosquitto or none)")),
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--connections" => o.connections = value()?.parse().map_err(|e| bad(&e))?,
            "--processes" => o.processes = Some(value()?.parse().map_err(|e| bad(&e))?),
            "--hold-secs" => o.hold_secs = value()?.parse().map_err(|e| bad(&e))?,
            "--keepalive-secs" => o.keepalive_secs = value()?.parse().map_err(|e| bad(&e))?,
            "--server" => {
                o.server = kind(&value()?)?.ok_or("--server cannot be none")?;
            }
            "--peer" => o.peer = kind(&value()?)?,
            "--concurrency" => o.concurrency = value()?.parse().map_err(|e| bad(&e))?,
            "--messages" => o.messages = true,
            "--load-secs" => o.load_secs = value()?.parse().map_err(|e| bad(&e))?,
            "--handshakes" => o.handshakes = true,
            "--hub-kernel-buffers" => o.hub_kernel_buffers = true,
            "--handshake-secs" => o.handshake_secs = value()?.parse().map_err(|e| bad(&e))?,
            "--handshake-concurrency" => {
                o.handshake_concurrency = value()?.parse().map_err(|e| bad(&e))?
            }
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if o.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if o.peer == Some(o.server) {
        o.peer = None;
    }
    Ok(o)
}

/// How many client processes for `n` connections.
fn process_count(n: usize, asked: Option<usize>) -> Result<usize, String> {
    let needed = n.div_ceil(MAX_PER_CLIENT_PROCESS).max(1);
    match asked {
        None => Ok(needed),
        Some(p) if p >= needed && p <= n => Ok(p),
        Some(p) => Err(format!(
            "--processes {p}: {n} connections need between {needed} and {n} client processes \
             (at most {MAX_PER_CLIENT_PROCESS} each)"
        )),
    }
}

/// Splits `n` devices into `processes` contiguous ranges `(first, count)`.
fn shares(n: usize, processes: usize) -> Vec<(usize, usize)> {
    (0..processes)
        .map(|p| {
            let first = n * p / processes;
            (first, n * (p + 1) / processes - first)
        })
        .collect()
}

/// A client process and its pipes.
struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ClientProcess {
    fn spawn(args: &ClientArgs) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
        let mut child = Command::new(exe)
            .args(client::to_command_line(args))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting a client process: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// Reads the next line and splits it into words, checking the first.
    fn expect(&mut self, word: &str) -> Result<Vec<String>, String> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("reading a client process: {e}"))?;
        if n == 0 {
            return Err("a client process exited early".into());
        }
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        if words.first().map(String::as_str) != Some(word) {
            return Err(format!(
                "expected {word:?} from a client process, got {line:?}"
            ));
        }
        Ok(words)
    }

    fn numbers(&mut self, word: &str) -> Result<Vec<u64>, String> {
        let words = self.expect(word)?;
        words[1..]
            .iter()
            .map(|w| w.parse().map_err(|e| format!("{word} line: {e}")))
            .collect()
    }

    fn send(&mut self, command: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("client stdin closed")?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to a client process: {e}"))
    }

    fn quit(mut self) {
        let _ = self.send("quit");
        self.stdin = None;
        let _ = self.child.wait();
    }
}

/// Sums the numbers each client answers to `command` (position by position).
fn ask_all(clients: &mut [ClientProcess], command: &str, word: &str) -> Result<Vec<u64>, String> {
    let mut sum: Vec<u64> = Vec::new();
    for c in clients.iter_mut() {
        c.send(command)?;
    }
    for c in clients.iter_mut() {
        let numbers = c.numbers(word)?;
        sum.resize(sum.len().max(numbers.len()), 0);
        for (s, n) in sum.iter_mut().zip(numbers) {
            *s += n;
        }
    }
    Ok(sum)
}

/// The server's CPU time in seconds.
fn cpu_secs(server: &Server, ticks_per_sec: u64) -> Result<f64, String> {
    Ok(procfs::cpu_ticks(server.pid())? as f64 / ticks_per_sec as f64)
}

fn per_conn(delta: i64, n: u64) -> Value {
    if n == 0 {
        Value::Null
    } else {
        json!((delta as f64 / n as f64).round() as i64)
    }
}

fn percent(cpu: f64, wall: Duration) -> f64 {
    (cpu / wall.as_secs_f64() * 1000.0).round() / 10.0
}

/// The density run against one server: connect `n` devices, hold, measure.
fn density(
    server: &mut Server,
    n: usize,
    o: &Options,
    certs: &CertFiles,
    seed: &str,
) -> Result<Value, String> {
    let tps = procfs::ticks_per_sec();
    let processes = process_count(n, o.processes)?;
    let name = server.kind.name();
    // Let the server finish starting before the baseline.
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = procfs::rss_bytes(server.pid())?;
    let slab_before = procfs::slab()?;

    eprintln!("density: {name}: opening {n} connections from {processes} client processes");
    let started = Instant::now();
    let mut clients = Vec::new();
    for (first, count) in shares(n, processes) {
        clients.push(ClientProcess::spawn(&ClientArgs {
            addr: server.addr,
            ca: certs.ca.clone(),
            seed: seed.to_owned(),
            first,
            count,
            keepalive_secs: o.keepalive_secs,
            concurrency: o.concurrency,
            subscribe: o.messages,
            handshake_secs: None,
        })?);
    }
    let (mut connected, mut failed) = (0u64, 0u64);
    for c in &mut clients {
        let ready = c.numbers("ready")?;
        connected += ready.first().copied().unwrap_or(0);
        failed += ready.get(1).copied().unwrap_or(0);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "density: {name}: {connected} connected, {failed} failed in {connect_secs:.1} s; \
         holding {} s",
        o.hold_secs
    );

    let cpu_start = cpu_secs(server, tps)?;
    let hold_start = Instant::now();
    std::thread::sleep(Duration::from_secs(o.hold_secs));
    let cpu_idle = cpu_secs(server, tps)? - cpu_start;
    let hold = hold_start.elapsed();
    let rss_after = procfs::rss_bytes(server.pid())?;
    let slab_after = procfs::slab()?;
    let idle = ask_all(&mut clients, "stats", "stats")?;

    let mut report = json!({
        "server": name,
        "auth": server.auth.name(),
        "connections": n,
        "connected": connected,
        "failed": failed,
        "client_processes": processes,
        "keepalive_secs": o.keepalive_secs,
        "hold_secs": o.hold_secs,
        "connect_secs": (connect_secs * 10.0).round() / 10.0,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "rss_bytes_per_conn": per_conn(rss_after as i64 - rss_before as i64, connected),
        "kernel_bytes_per_conn": per_conn(slab_after.total as i64 - slab_before.total as i64, connected),
        "kernel_unreclaimable_bytes_per_conn":
            per_conn(slab_after.unreclaimable as i64 - slab_before.unreclaimable as i64, connected),
        "idle_cpu_percent": percent(cpu_idle, hold),
        "open_after_hold": idle.first(),
        "disconnects": idle.get(2),
        "pings_sent": idle.get(3),
        "ping_responses": idle.get(4),
    });

    if o.messages {
        eprintln!(
            "density: {name}: every device now receives 1 KiB a second for {} s",
            o.load_secs
        );
        for c in &mut clients {
            c.send("load")?;
        }
        for c in &mut clients {
            let answer = c.expect("load")?;
            if answer.get(1).map(String::as_str) != Some("ok") {
                return Err(format!("the publisher failed: {}", answer[1..].join(" ")));
            }
        }
        // Let the publishers reach their rate before measuring.
        std::thread::sleep(Duration::from_secs(3));
        let before = ask_all(&mut clients, "stats", "stats")?;
        let cpu_start = cpu_secs(server, tps)?;
        let load_start = Instant::now();
        std::thread::sleep(Duration::from_secs(o.load_secs));
        let cpu_load = cpu_secs(server, tps)? - cpu_start;
        let rss_load = procfs::rss_bytes(server.pid())?;
        let after = ask_all(&mut clients, "stats", "stats")?;
        let wall = load_start.elapsed();
        let received = after.get(1).copied().unwrap_or(0) - before.get(1).copied().unwrap_or(0);
        let open = after.first().copied().unwrap_or(0);
        report["load"] = json!({
            "load_secs": o.load_secs,
            "message_bytes": 1024,
            "rss_bytes": rss_load,
            "rss_bytes_per_conn": per_conn(rss_load as i64 - rss_before as i64, connected),
            "cpu_percent": percent(cpu_load, wall),
            "messages_per_sec": (received as f64 / wall.as_secs_f64()).round(),
            "messages_per_conn_per_sec": if open == 0 { 0.0 } else {
                (received as f64 / wall.as_secs_f64() / open as f64 * 100.0).round() / 100.0
            },
            "open_after_load": open,
            "disconnects": after.get(2),
        });
    }
    for c in clients {
        c.quit();
    }
    if !server.running() {
        return Err(format!(
            "{name} died during the run:\n{}",
            server.log_tail()
        ));
    }
    Ok(report)
}

/// The handshake run against one server: full TLS 1.3 handshakes plus MQTT CONNECT/CONNACK.
fn handshake_rate(
    server: &mut Server,
    n: usize,
    o: &Options,
    certs: &CertFiles,
    seed: &str,
) -> Result<Value, String> {
    let tps = procfs::ticks_per_sec();
    let processes = o.processes.unwrap_or(1).max(1);
    let name = server.kind.name();
    eprintln!(
        "density: {name}: handshakes for {} s from {processes} client processes",
        o.handshake_secs
    );
    let cpu_start = cpu_secs(server, tps)?;
    let started = Instant::now();
    let mut clients = Vec::new();
    for (first, count) in shares(n, processes) {
        clients.push(ClientProcess::spawn(&ClientArgs {
            addr: server.addr,
            ca: certs.ca.clone(),
            seed: seed.to_owned(),
            first,
            count,
            keepalive_secs: o.keepalive_secs,
            concurrency: o.handshake_concurrency,
            subscribe: false,
            handshake_secs: Some(o.handshake_secs),
        })?);
    }
    let (mut ok, mut failed) = (0u64, 0u64);
    for c in &mut clients {
        let counts = c.numbers("handshakes")?;
        ok += counts.first().copied().unwrap_or(0);
        failed += counts.get(1).copied().unwrap_or(0);
    }
    let wall = started.elapsed();
    let cpu = cpu_secs(server, tps)? - cpu_start;
    for c in clients {
        c.quit();
    }
    Ok(json!({
        "server": name,
        "auth": server.auth.name(),
        "client_processes": processes,
        "concurrency_per_process": o.handshake_concurrency,
        "secs": (wall.as_secs_f64() * 10.0).round() / 10.0,
        "handshakes": ok,
        "failed": failed,
        "handshakes_per_sec": (ok as f64 / wall.as_secs_f64()).round(),
        "server_cpu_percent": percent(cpu, wall),
        "handshakes_per_server_cpu_sec": if cpu > 0.0 { (ok as f64 / cpu).round() } else { 0.0 },
    }))
}

/// Starts `kind` for `n` devices and runs the chosen measurement against it.
fn measure(
    kind: Kind,
    n: usize,
    o: &Options,
    dir: &Path,
    certs: &CertFiles,
    seed: &str,
) -> Result<Value, String> {
    let mut server = match kind {
        Kind::Hub => server::start_hub(dir, certs, seed, n, o.hub_kernel_buffers)?,
        Kind::Mosquitto => server::start_mosquitto(dir, certs, seed, n)?,
    };
    let result = if o.handshakes {
        handshake_rate(&mut server, n, o, certs, seed)
    } else {
        density(&mut server, n, o, certs, seed)
    };
    drop(server);
    // Closed sockets are freed by the kernel a moment later; let that happen before the next
    // server's baseline.
    std::thread::sleep(Duration::from_secs(3));
    let mut result = result?;
    if kind == Kind::Hub {
        result["socket_buffers"] = json!(if o.hub_kernel_buffers {
            "kernel"
        } else {
            "transport caps"
        });
    }
    if kind == Kind::Mosquitto && n < o.connections {
        result["capped_from"] = json!(o.connections);
    }
    Ok(result)
}

/// The connections a server is asked for: Mosquitto is one process, capped below its file limit.
fn connections_for(kind: Kind, o: &Options) -> usize {
    match kind {
        Kind::Mosquitto if o.connections > MAX_MOSQUITTO => {
            eprintln!(
                "density: Mosquitto is one process with a 20,000-file limit: \
                 it gets {MAX_MOSQUITTO} connections, not {}",
                o.connections
            );
            MAX_MOSQUITTO
        }
        _ => o.connections,
    }
}

fn orchestrate(o: &Options) -> Result<Value, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let certs = setup::generate_certs(dir.path())?;
    let seed = setup::random_seed()?;
    let mode = if o.handshakes {
        "handshakes"
    } else {
        "density"
    };
    let n = connections_for(o.server, o);
    let mut report = measure(o.server, n, o, dir.path(), &certs, &seed)?;
    report["mode"] = json!(mode);
    if let Some(peer) = o.peer {
        let n = connections_for(peer, o);
        report["peer"] = measure(peer, n, o, dir.path(), &certs, &seed)?;
    }
    Ok(report)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = if argv.first().map(String::as_str) == Some("client") {
        client::from_command_line(&argv[1..]).and_then(client::run)
    } else if argv.first().map(String::as_str) == Some("hub-server") {
        hub_server::run(&argv[1..])
    } else {
        parse_options(&argv).and_then(|o| {
            let report = orchestrate(&o)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("JSON values serialize")
            );
            Ok(())
        })
    };
    if let Err(e) = result {
        eprintln!("density: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_default_to_the_issue_run() {
        let o = parse_options(&args("--connections 19000")).unwrap();
        assert_eq!(o.connections, 19_000);
        assert_eq!((o.server, o.peer), (Kind::Hub, Some(Kind::Mosquitto)));
        assert_eq!((o.keepalive_secs, o.hold_secs), (60, 60));
        assert!(!o.handshakes && !o.messages);
        let o = parse_options(&args("--server mosquitto --peer mosquitto")).unwrap();
        assert_eq!(o.peer, None, "a server is not its own peer");
        assert!(parse_options(&args("--peer nginx")).is_err());
        assert!(parse_options(&args("--connections 0")).is_err());
        assert!(parse_options(&args("--connections")).is_err());
    }

    #[test]
    fn client_processes_stay_under_the_file_limit() {
        assert_eq!(process_count(2_000, None), Ok(1));
        assert_eq!(process_count(19_000, None), Ok(2));
        assert_eq!(process_count(100_000, None), Ok(7));
        assert_eq!(process_count(19_000, Some(4)), Ok(4));
        assert!(process_count(19_000, Some(1)).is_err());
        assert!(process_count(3, Some(4)).is_err());
    }

    #[test]
    fn shares_cover_every_device_once() {
        let s = shares(19_001, 3);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].0, 0);
        for w in s.windows(2) {
            assert_eq!(w[0].0 + w[0].1, w[1].0);
        }
        assert_eq!(s[2].0 + s[2].1, 19_001);
        assert!(s.iter().all(|&(_, c)| c <= MAX_PER_CLIENT_PROCESS));
    }

    #[test]
    fn mosquitto_is_capped_below_its_file_limit() {
        let o = parse_options(&args("--connections 50000")).unwrap();
        assert_eq!(connections_for(Kind::Mosquitto, &o), MAX_MOSQUITTO);
        assert_eq!(connections_for(Kind::Hub, &o), 50_000);
    }
}

//! The servers under test, each started as a child process on a free 127.0.0.1 port with the
//! run's certificate and device credentials.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::setup::{self, CertFiles};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The hub (hub-transport's MQTT-over-TLS listener).
    Hub,
    /// Eclipse Mosquitto.
    Mosquitto,
}

impl Kind {
    /// The name in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Hub => "hub",
            Kind::Mosquitto => "mosquitto",
        }
    }
}

/// How clients authenticate to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// Each device with its own user name and password (its access key).
    Password,
    /// No authentication: only when Mosquitto's `mosquitto_passwd` is missing.
    Anonymous,
}

impl Auth {
    /// The name in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Auth::Password => "password",
            Auth::Anonymous => "anonymous",
        }
    }
}

/// A running server under test. Killed when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    /// What it is.
    pub(crate) kind: Kind,
    /// How clients authenticate.
    pub(crate) auth: Auth,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its process.
    child: Child,
    /// Its log (standard error, or the log file it was told to write).
    log: PathBuf,
}

impl Server {
    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of the server's log, to explain a failure.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Whether the process still runs.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it a moment later).
fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    Ok(listener
        .local_addr()
        .map_err(|e| format!("finding a free port: {e}"))?
        .port())
}

/// Waits until the child accepts TCP connections on `addr`.
fn wait_listening(server: &mut Server) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if !server.running() {
            return Err(format!(
                "{} exited at start-up:\n{}",
                server.kind.name(),
                server.log_tail()
            ));
        }
        if TcpStream::connect_timeout(&server.addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{} did not listen within 30 s", server.kind.name()))
}

/// Whether a program is on the PATH.
pub(crate) fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Writes Mosquitto's password file for `devices` devices and the publisher, hashed with
/// `mosquitto_passwd -U` (PBKDF2-SHA512, Mosquitto's own format).
fn mosquitto_password_file(dir: &Path, seed: &str, devices: usize) -> Result<PathBuf, String> {
    let path = dir.join("mosquitto.passwd");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&path).map_err(|e| format!("writing the password file: {e}"))?,
    );
    let mut put = |user: &str, password: &str| {
        writeln!(file, "{user}:{password}").map_err(|e| format!("writing the password file: {e}"))
    };
    put(setup::PUBLISHER_USER, &setup::publisher_password(seed))?;
    for i in 0..devices {
        put(&setup::device_id(i), &setup::access_key(seed, i))?;
    }
    file.flush()
        .map_err(|e| format!("writing the password file: {e}"))?;
    drop(file);
    let status = Command::new("mosquitto_passwd")
        .arg("-U")
        .arg(&path)
        .status()
        .map_err(|e| format!("running mosquitto_passwd: {e}"))?;
    if !status.success() {
        return Err(format!("mosquitto_passwd -U failed: {status}"));
    }
    Ok(path)
}

/// Mosquitto's configuration: one TLS 1.3 listener on 127.0.0.1, no client certificates, password
/// authentication (or anonymous), no persistence, only warnings and errors logged.
pub(crate) fn mosquitto_config(
    port: u16,
    certs: &CertFiles,
    password_file: Option<&Path>,
    log: &Path,
) -> String {
    let auth = match password_file {
        Some(path) => format!("allow_anonymous false\npassword_file {}\n", path.display()),
        None => "allow_anonymous true\n".to_owned(),
    };
    format!(
        "# Generated by the density bench.\n\
         per_listener_settings false\n\
         persistence false\n\
         # Run as whoever started it (root here), so it can read the generated files.\n\
         user root\n\
         log_dest file {log}\n\
         log_type error\n\
         log_type warning\n\
         connection_messages false\n\
         max_keepalive 65535\n\
         {auth}\
         listener {port} 127.0.0.1\n\
         certfile {cert}\n\
         keyfile {key}\n\
         tls_version tlsv1.3\n\
         require_certificate false\n",
        log = log.display(),
        cert = certs.cert.display(),
        key = certs.key.display(),
    )
}

/// Starts Mosquitto for `devices` devices.
pub(crate) fn start_mosquitto(
    dir: &Path,
    certs: &CertFiles,
    seed: &str,
    devices: usize,
) -> Result<Server, String> {
    let auth = if installed("mosquitto_passwd") {
        Auth::Password
    } else {
        eprintln!("density: mosquitto_passwd not found; Mosquitto runs with allow_anonymous true");
        Auth::Anonymous
    };
    let password_file = match auth {
        Auth::Password => Some(mosquitto_password_file(dir, seed, devices)?),
        Auth::Anonymous => None,
    };
    let port = free_port()?;
    let log = dir.join("mosquitto.log");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        mosquitto_config(port, certs, password_file.as_deref(), &log),
    )
    .map_err(|e| format!("writing mosquitto.conf: {e}"))?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting mosquitto: {e}"))?;
    let mut server = Server {
        kind: Kind::Mosquitto,
        auth,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
        log,
    };
    wait_listening(&mut server)?;
    Ok(server)
}

/// Starts hub server process number `index` (`density hub-server`, this same binary) for the
/// devices in `devices`, on a port of its own; with `kernel_buffers`, its sockets keep the
/// kernel's buffer sizes instead of the transport's caps.
pub(crate) fn start_hub(
    dir: &Path,
    certs: &CertFiles,
    seed: &str,
    index: usize,
    devices: Range<usize>,
    kernel_buffers: bool,
) -> Result<Server, String> {
    let port = free_port()?;
    let log = dir.join(format!("hub-{index}.log"));
    let log_file =
        std::fs::File::create(&log).map_err(|e| format!("creating the hub's log: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let child = Command::new(exe)
        .arg("hub-server")
        .args(["--port", &port.to_string()])
        .arg("--cert")
        .arg(&certs.cert)
        .arg("--key")
        .arg(&certs.key)
        .args(["--seed", seed])
        .args(["--first-device", &devices.start.to_string()])
        .args(["--devices", &devices.len().to_string()])
        .args(kernel_buffers.then_some("--kernel-buffers"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("starting the hub: {e}"))?;
    let mut server = Server {
        kind: Kind::Hub,
        auth: Auth::Password,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
        log,
    };
    wait_listening(&mut server)?;
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mosquitto_config_has_a_tls_listener_with_password_auth() {
        let certs = CertFiles {
            ca: "/d/ca.pem".into(),
            cert: "/d/server.pem".into(),
            key: "/d/server.key".into(),
        };
        let conf = mosquitto_config(18883, &certs, Some(Path::new("/d/pw")), Path::new("/d/log"));
        for line in [
            "listener 18883 127.0.0.1",
            "certfile /d/server.pem",
            "keyfile /d/server.key",
            "tls_version tlsv1.3",
            "require_certificate false",
            "allow_anonymous false",
            "password_file /d/pw",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing:\n{conf}");
        }
        let anonymous = mosquitto_config(1, &certs, None, Path::new("/d/log"));
        assert!(anonymous.lines().any(|l| l == "allow_anonymous true"));
        assert!(!anonymous.contains("password_file"));
    }
}

//! What the bench reads from /proc: a process's resident memory and CPU time, the kernel's
//! slab, and the range of ephemeral ports.

/// A value in kB from a `Key:   1234 kB` line of `/proc/<pid>/status` or `/proc/meminfo`, in bytes.
fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// The resident set size (VmRSS) of process `pid`, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    kb_field(&text, "VmRSS").ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// The kernel's slab memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slab {
    /// `Slab`: all slab caches.
    pub(crate) total: u64,
    /// `SUnreclaim`: the part that cannot be reclaimed under pressure (TCP sockets live here;
    /// dentries and inodes, which other builds on the machine churn, do not).
    pub(crate) unreclaimable: u64,
}

fn parse_slab(meminfo: &str) -> Option<Slab> {
    Some(Slab {
        total: kb_field(meminfo, "Slab")?,
        unreclaimable: kb_field(meminfo, "SUnreclaim")?,
    })
}

/// The kernel's slab now.
pub(crate) fn slab() -> Result<Slab, String> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| format!("reading /proc/meminfo: {e}"))?;
    parse_slab(&text).ok_or_else(|| "no Slab/SUnreclaim in /proc/meminfo".to_owned())
}

/// utime + stime from the text of `/proc/<pid>/stat`, in clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces: count from after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are the 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU time process `pid` has used so far (user + system), in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    parse_cpu_ticks(&text).ok_or_else(|| format!("unreadable /proc/{pid}/stat"))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux if that cannot be run).
pub(crate) fn ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Linux's default `net.ipv4.ip_local_port_range` (32768–60999): 28,232 ports.
const DEFAULT_EPHEMERAL_PORTS: usize = 60_999 - 32_768 + 1;

/// How many ports the text of `/proc/sys/net/ipv4/ip_local_port_range` (`low high`) spans.
fn parse_port_range(text: &str) -> Option<usize> {
    let mut bounds = text.split_whitespace().map(|w| w.parse::<usize>().ok());
    let (low, high) = (bounds.next()??, bounds.next()??);
    (high >= low).then(|| high - low + 1)
}

/// The ephemeral ports a client may connect from: the most connections one source address can
/// have open to one destination address and port (Linux's default when the range is unreadable).
pub(crate) fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| parse_port_range(&text))
        .unwrap_or(DEFAULT_EPHEMERAL_PORTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kb_fields_as_bytes() {
        let status = "Name:\tmosquitto\nVmPeak:\t   12000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";
        assert_eq!(kb_field(status, "VmRSS"), Some(5120 * 1024));
        assert_eq!(kb_field(status, "VmSwap"), None);
        let meminfo = "MemTotal: 100 kB\nSlab:             761428 kB\nSReclaimable:     678420 kB\nSUnreclaim:        83008 kB\n";
        assert_eq!(
            parse_slab(meminfo),
            Some(Slab {
                total: 761_428 * 1024,
                unreclaimable: 83_008 * 1024
            })
        );
    }

    #[test]
    fn cpu_ticks_survive_a_command_name_with_spaces_and_parentheses() {
        let stat =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 1 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(42));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn counts_the_ephemeral_port_range() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(28_232));
        assert_eq!(parse_port_range("1024 1024"), Some(1));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("32768"), None);
        assert!(ephemeral_ports() > 0);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        cpu_ticks(me).unwrap();
        assert!(slab().unwrap().total > 0);
    }
}

//! Per-process accounting: wall time, CPU seconds and peak RSS of one child
//! process, and CPU / peak RSS / sockets of a long-running one read from `/proc`.
//!
//! `getrusage(RUSAGE_CHILDREN)` sums the CPU of every waited-for child but keeps
//! only the *largest* child's peak RSS, so per-process figures need a process
//! with exactly one child: `shoal-bench measure --report FILE -- CMD...` is that
//! process (our own `/usr/bin/time`, without `unsafe`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::resource::{getrusage, UsageWho};

/// What one measured process cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Wall time from just before the spawn to the reaped exit.
    pub wall: Duration,
    /// User + system CPU seconds, including the process's own waited children.
    pub cpu_s: f64,
    /// The system (kernel) part of `cpu_s`: socket and page-cache copies, fsync.
    pub sys_s: f64,
    /// Peak resident set size in KiB (the largest of the process tree).
    pub max_rss_kib: u64,
}

impl Usage {
    pub fn rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }
}

/// The line the `measure` wrapper writes: `exit wall_s user_s sys_s maxrss_kib`.
fn format_report(code: i32, wall: Duration, user_s: f64, sys_s: f64, maxrss_kib: u64) -> String {
    format!(
        "{code} {:.6} {user_s:.6} {sys_s:.6} {maxrss_kib}\n",
        wall.as_secs_f64()
    )
}

/// Parses the `measure` wrapper's report into the child's exit code and usage.
pub fn parse_report(s: &str) -> Result<(i32, Usage)> {
    let f: Vec<&str> = s.split_whitespace().collect();
    if f.len() != 5 {
        bail!("measure report {s:?} does not have 5 fields");
    }
    let num = |i: usize| -> Result<f64> {
        let v: f64 = f[i]
            .parse()
            .with_context(|| format!("field {i} of measure report {s:?} is not a number"))?;
        if !v.is_finite() || v < 0.0 {
            bail!("field {i} of measure report {s:?} is out of range");
        }
        Ok(v)
    };
    let code: i32 = f[0]
        .parse()
        .with_context(|| format!("exit code in measure report {s:?} is not a number"))?;
    let wall = Duration::from_secs_f64(num(1)?);
    let sys_s = num(3)?;
    let cpu_s = num(2)? + sys_s;
    let max_rss_kib: u64 = f[4]
        .parse()
        .with_context(|| format!("peak RSS in measure report {s:?} is not a number"))?;
    Ok((
        code,
        Usage {
            wall,
            cpu_s,
            sys_s,
            max_rss_kib,
        },
    ))
}

/// The `measure` subcommand: runs `cmd` with inherited stdio, writes its usage
/// to `report`, and returns its exit code (-1 if killed by a signal).
pub fn measure_main(report: &Path, cmd: &[OsString]) -> Result<i32> {
    let Some((prog, args)) = cmd.split_first() else {
        bail!("measure needs a command after --");
    };
    let start = Instant::now();
    let status = Command::new(prog)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", prog.to_string_lossy()))?;
    let wall = start.elapsed();
    let ru = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage failed")?;
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let code = status.code().unwrap_or(-1);
    let maxrss = u64::try_from(ru.max_rss()).unwrap_or(0);
    std::fs::write(
        report,
        format_report(code, wall, tv(ru.user_time()), tv(ru.system_time()), maxrss),
    )
    .with_context(|| format!("cannot write {}", report.display()))?;
    Ok(code)
}

/// `/proc/PID/stat` fields after the command name (which may contain spaces).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    // The state letter parses to 0; only numeric fields are read.
    Some(
        rest.split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect(),
    )
}

/// Clock ticks in `/proc/PID/stat` (USER_HZ, 100 on every Linux ABI).
const TICKS_PER_S: f64 = 100.0;

/// User + system CPU seconds of a live process (not its children).
pub fn proc_cpu_s(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    // Field n of stat is f[n - 3]: utime is 14, stime 15.
    Some((f.get(11)? + f.get(12)?) as f64 / TICKS_PER_S)
}

/// System CPU seconds of a live process (stime).
pub fn proc_sys_s(pid: u32) -> Option<f64> {
    Some(*stat_fields(pid)?.get(12)? as f64 / TICKS_PER_S)
}

/// System CPU seconds of a process's reaped children (cstime).
pub fn proc_children_sys_s(pid: u32) -> Option<f64> {
    Some(*stat_fields(pid)?.get(14)? as f64 / TICKS_PER_S)
}

/// CPU seconds of a process's reaped children (cutime + cstime).
pub fn proc_children_cpu_s(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    Some((f.get(13)? + f.get(14)?) as f64 / TICKS_PER_S)
}

/// Peak RSS (VmHWM) of a live process in KiB.
pub fn proc_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmHWM:")
}

/// Resident set size now (VmRSS) of a live process in KiB.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmRSS:")
}

/// File descriptors a live process holds open now.
pub fn proc_fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets a process's VmHWM to its current RSS (`clear_refs` 5, Linux ≥ 4.0), so
/// the next reading covers only what happens after this call.
pub fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Whether the process still has unreaped or running children.
pub fn has_children(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false)
}

/// Sockets a process holds, by protocol, as seen in `/proc/net/*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketCount {
    /// TCP sockets in ESTABLISHED state (listeners excluded).
    pub tcp_established: usize,
    /// TCP sockets in LISTEN state.
    pub tcp_listen: usize,
    /// UDP sockets (QUIC runs over these).
    pub udp: usize,
}

impl SocketCount {
    pub fn max(self, o: SocketCount) -> SocketCount {
        SocketCount {
            tcp_established: self.tcp_established.max(o.tcp_established),
            tcp_listen: self.tcp_listen.max(o.tcp_listen),
            udp: self.udp.max(o.udp),
        }
    }
}

/// Socket inodes open in a process (`/proc/PID/fd/* -> socket:[INODE]`).
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut set = HashSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return set;
    };
    for e in dir.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse().ok())
            {
                set.insert(n);
            }
        }
    }
    set
}

/// One row of `/proc/net/{tcp,udp}{,6}`: (local port, state, inode).
fn parse_net_line(line: &str) -> Option<(u16, u8, u64)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let local = f.get(1)?;
    let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
    let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
    let inode = f.get(9)?.parse().ok()?;
    Some((port, state, inode))
}

fn net_rows(proto: &str) -> Vec<(u16, u8, u64)> {
    let mut rows = Vec::new();
    for file in [format!("/proc/net/{proto}"), format!("/proc/net/{proto}6")] {
        if let Ok(text) = std::fs::read_to_string(file) {
            rows.extend(text.lines().skip(1).filter_map(parse_net_line));
        }
    }
    rows
}

const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0A;

/// The TCP and UDP sockets `pid` holds right now.
pub fn socket_count(pid: u32) -> SocketCount {
    let inodes = socket_inodes(pid);
    let mut c = SocketCount::default();
    for (_, state, inode) in net_rows("tcp") {
        if inodes.contains(&inode) {
            match state {
                TCP_ESTABLISHED => c.tcp_established += 1,
                TCP_LISTEN => c.tcp_listen += 1,
                _ => {}
            }
        }
    }
    c.udp = net_rows("udp")
        .into_iter()
        .filter(|(_, _, inode)| inodes.contains(inode))
        .count();
    c
}

/// How often, over periodic samples, some thread of a process was running
/// (or runnable) and how often some thread was in uninterruptible disk wait: a
/// profile without `perf` of where a process's wall time goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadStates {
    pub samples: u32,
    /// Samples with at least one thread in state R.
    pub running: u32,
    /// Samples with at least one thread in state D (usually fsync or writeback).
    pub disk_wait: u32,
}

impl ThreadStates {
    /// Adds one sample of `pid`'s threads; a vanished process adds nothing.
    pub fn sample(&mut self, pid: u32) {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return;
        };
        let (mut r, mut d, mut any) = (false, false, false);
        for e in dir.flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            any = true;
            match thread_state(&stat) {
                Some('R') => r = true,
                Some('D') => d = true,
                _ => {}
            }
        }
        if any {
            self.samples += 1;
            self.running += u32::from(r);
            self.disk_wait += u32::from(d);
        }
    }

    pub fn percent(n: u32, of: u32) -> f64 {
        if of == 0 {
            0.0
        } else {
            100.0 * f64::from(n) / f64::from(of)
        }
    }
}

/// The state letter of a `/proc/.../stat` line (after the command name).
fn thread_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether some socket listens on TCP `port` (any address): readiness of a
/// server without connecting to it (a connection would use up a one-shot
/// server like `socat`).
pub fn tcp_listening(port: u16) -> bool {
    net_rows("tcp")
        .into_iter()
        .any(|(p, state, _)| p == port && state == TCP_LISTEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_and_sums_user_and_system_time() {
        let line = format_report(0, Duration::from_millis(1500), 0.25, 0.5, 40_960);
        let (code, u) = parse_report(&line).unwrap();
        assert_eq!(code, 0);
        assert_eq!(u.wall, Duration::from_millis(1500));
        assert!((u.cpu_s - 0.75).abs() < 1e-9);
        assert!((u.sys_s - 0.5).abs() < 1e-9);
        assert_eq!(u.max_rss_kib, 40_960);
        assert!((u.rss_mib() - 40.0).abs() < 1e-9);
    }

    #[test]
    fn report_with_missing_or_negative_fields_is_rejected() {
        assert!(parse_report("0 1.0 0.1 0.1").is_err());
        assert!(parse_report("0 -1.0 0.1 0.1 10").is_err());
        assert!(parse_report("0 1.0 x 0.1 10").is_err());
        assert!(parse_report("").is_err());
    }

    #[test]
    fn net_line_gives_port_state_and_inode() {
        let l = "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0";
        assert_eq!(parse_net_line(l), Some((8080, TCP_LISTEN, 123456)));
        assert_eq!(parse_net_line("  sl  local_address rem_address"), None);
    }

    #[test]
    fn thread_state_is_read_after_a_command_name_with_parentheses() {
        assert_eq!(thread_state("42 (tokio (w) 1) D 1 42"), Some('D'));
        assert_eq!(thread_state("garbage"), None);
        let mut t = ThreadStates::default();
        t.sample(std::process::id());
        assert_eq!(t.samples, 1);
        assert_eq!(t.running, 1, "the sampling thread itself is running");
        assert!((ThreadStates::percent(1, 4) - 25.0).abs() < 1e-9);
        assert_eq!(ThreadStates::percent(1, 0), 0.0);
    }

    #[test]
    fn status_peak_rss_is_read_in_kib() {
        let s = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t   5120 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(parse_status_kib(s, "VmHWM:"), Some(5120));
        assert_eq!(parse_status_kib(s, "VmRSS:"), Some(100));
        assert_eq!(parse_status_kib(s, "VmSwap:"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_a_peak_rss() {
        let pid = std::process::id();
        assert!(proc_cpu_s(pid).is_some());
        assert!(proc_sys_s(pid).unwrap() <= proc_cpu_s(pid).unwrap() + 0.02);
        assert!(proc_hwm_kib(pid).unwrap_or(0) > 0);
        assert!(proc_rss_kib(pid).unwrap_or(0) > 0);
        assert!(proc_fd_count(pid).unwrap_or(0) >= 3);
    }

    #[test]
    fn a_listening_socket_is_seen_in_proc() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(tcp_listening(port));
        assert!(socket_count(std::process::id()).tcp_listen >= 1);
        drop(l);
    }
}

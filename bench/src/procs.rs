//! Child processes of the transfer benchmark: measured one-shot commands (through
//! the `measure` wrapper), long-running servers stopped by PID, and the throwaway
//! `sshd` the scp row needs.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::measure::{self, SocketCount, ThreadStates, Usage};

/// A program to run: path, arguments, extra environment.
#[derive(Clone, Debug)]
pub struct Cmd {
    pub prog: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
}

impl Cmd {
    pub fn new(prog: impl Into<PathBuf>) -> Self {
        Cmd {
            prog: prog.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, it: I) -> Self {
        self.args
            .extend(it.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// A `Command` with our `SHOAL_*` variables removed, so the caller's shell
    /// cannot change what the benchmark measures.
    fn command(&self, prog: &Path) -> Command {
        let mut c = Command::new(prog);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SHOAL_") {
                c.env_remove(k);
            }
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn display(&self) -> String {
        let mut s = self.prog.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::File::create(path).with_context(|| format!("cannot create log {}", path.display()))
}

/// Collects a pipe to a string on a thread, so the child never blocks on a full pipe.
fn drain<R: Read + Send + 'static>(mut r: R) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A command running under the `measure` wrapper, in its own process group.
pub struct Measured {
    child: Child,
    report: PathBuf,
    stdout: Option<JoinHandle<String>>,
    what: String,
}

/// How a measured command ended.
pub struct Finished {
    pub code: i32,
    pub usage: Usage,
    pub stdout: String,
    /// When the wrapper was reaped (for wall times spanning several processes).
    pub reaped_at: Instant,
}

impl Measured {
    /// Starts `cmd` under `shoal-bench measure`; stdout is captured, stderr goes
    /// to `stderr_log`.
    pub fn spawn(cmd: &Cmd, report: &Path, stderr_log: &Path) -> Result<Measured> {
        let me = std::env::current_exe().context("cannot find the shoal-bench executable")?;
        let mut c = cmd.command(&me);
        c.arg("measure")
            .arg("--report")
            .arg(report)
            .arg("--")
            .arg(&cmd.prog)
            .args(&cmd.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file(stderr_log)?)
            .process_group(0);
        let mut child = c
            .spawn()
            .with_context(|| format!("cannot start {}", cmd.display()))?;
        let stdout = child.stdout.take().map(drain);
        Ok(Measured {
            child,
            report: report.to_owned(),
            stdout,
            what: cmd.display(),
        })
    }

    /// PID of the wrapper (the measured program is its only child).
    pub fn wrapper_pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout`; on expiry kills the whole process group and fails.
    pub fn wait(mut self, timeout: Duration) -> Result<Finished> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() >= deadline {
                self.kill_group();
                let _ = self.child.wait();
                bail!(
                    "{} did not finish within {} s; killed it",
                    self.what,
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let reaped_at = Instant::now();
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&self.report).with_context(|| {
            format!("{} left no usage report (wrapper exit {status})", self.what)
        })?;
        let (code, usage) = measure::parse_report(&text)?;
        Ok(Finished {
            code,
            usage,
            stdout,
            reaped_at,
        })
    }

    fn kill_group(&self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        }
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_group();
            let _ = self.child.wait();
        }
    }
}

/// A long-running server (seeder, sshd) that we stop by PID.
pub struct Daemon {
    child: Child,
    name: String,
    lines: Option<mpsc::Receiver<String>>,
    cpu0: f64,
    sys0: f64,
    children_cpu0: f64,
    children_sys0: f64,
}

/// CPU and peak RSS of a server over one measured interval.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerUsage {
    pub cpu_s: f64,
    /// The system part of `cpu_s`.
    pub sys_s: f64,
    /// `None` when the peak could not be isolated to the interval.
    pub max_rss_kib: Option<u64>,
}

impl Daemon {
    /// Starts `cmd` with stdout readable line by line and stderr to `stderr_log`.
    pub fn spawn(name: &str, cmd: &Cmd, stderr_log: &Path) -> Result<Daemon> {
        let mut child = cmd
            .command(&cmd.prog)
            .args(&cmd.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file(stderr_log)?)
            .spawn()
            .with_context(|| format!("cannot start {name}: {}", cmd.display()))?;
        let lines = child.stdout.take().map(|out| {
            // Bounded: a server printing without end blocks on the channel, not our memory.
            let (tx, rx) = mpsc::sync_channel(64);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        Ok(Daemon {
            child,
            name: name.to_owned(),
            lines,
            cpu0: 0.0,
            sys0: 0.0,
            children_cpu0: 0.0,
            children_sys0: 0.0,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the first stdout line for which `pick` returns something;
    /// afterwards stdout keeps being drained.
    pub fn wait_line<T>(
        &mut self,
        timeout: Duration,
        stderr_log: &Path,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let Some(rx) = &self.lines else {
            bail!("{} has no stdout", self.name);
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = pick(&line) {
                        let rx = self.lines.take();
                        // Keep the pipe drained so the server never blocks on it.
                        std::thread::spawn(move || {
                            if let Some(rx) = rx {
                                while rx.recv().is_ok() {}
                            }
                        });
                        return Ok(v);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "{} printed nothing usable within {} s; see {}",
                    self.name,
                    timeout.as_secs(),
                    stderr_log.display()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                    "{} exited before it was ready; see {}",
                    self.name,
                    stderr_log.display()
                ),
            }
        }
    }

    /// Starts the measured interval: CPU from now, peak RSS from now if the
    /// kernel lets us reset it.
    pub fn begin(&mut self) -> bool {
        let pid = self.pid();
        self.cpu0 = measure::proc_cpu_s(pid).unwrap_or(0.0);
        self.sys0 = measure::proc_sys_s(pid).unwrap_or(0.0);
        self.children_cpu0 = measure::proc_children_cpu_s(pid).unwrap_or(0.0);
        self.children_sys0 = measure::proc_children_sys_s(pid).unwrap_or(0.0);
        measure::reset_hwm(pid)
    }

    /// CPU and peak RSS of the server itself since [`Daemon::begin`].
    pub fn usage(&self, hwm_was_reset: bool) -> ServerUsage {
        let pid = self.pid();
        ServerUsage {
            cpu_s: (measure::proc_cpu_s(pid).unwrap_or(0.0) - self.cpu0).max(0.0),
            sys_s: (measure::proc_sys_s(pid).unwrap_or(0.0) - self.sys0).max(0.0),
            max_rss_kib: measure::proc_hwm_kib(pid).filter(|_| hwm_was_reset),
        }
    }

    /// CPU of the server's reaped children since [`Daemon::begin`] (sshd runs
    /// each session in a child), once they have all been reaped (up to 3 s).
    pub fn children_usage(&self) -> ServerUsage {
        let pid = self.pid();
        let deadline = Instant::now() + Duration::from_secs(3);
        while measure::has_children(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        ServerUsage {
            cpu_s: (measure::proc_children_cpu_s(pid).unwrap_or(0.0) - self.children_cpu0).max(0.0),
            sys_s: (measure::proc_children_sys_s(pid).unwrap_or(0.0) - self.children_sys0).max(0.0),
            max_rss_kib: None,
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("{} ignored SIGTERM for 10 s; killed it", self.name)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// What [`SocketSampler`] saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sampled {
    pub sender_sockets: SocketCount,
    pub receiver_sockets: SocketCount,
    pub receiver_threads: ThreadStates,
}

/// Samples the sockets of processes every 20 ms until stopped, keeping the maximum
/// of each count (which transports a transfer really used), and the receiver's
/// thread states.
pub struct SocketSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Sampled>,
}

impl SocketSampler {
    /// `server` is sampled directly; `wrapper`'s only child is the receiver.
    pub fn start(server: u32, wrapper: u32) -> SocketSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Sampled::default();
            while !flag.load(Ordering::Relaxed) {
                out.sender_sockets = out.sender_sockets.max(measure::socket_count(server));
                if let Some(child) = child_of(wrapper) {
                    out.receiver_threads.sample(child);
                    out.receiver_sockets = out.receiver_sockets.max(measure::socket_count(child));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            out
        });
        SocketSampler { stop, handle }
    }

    pub fn finish(self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

fn child_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// A TCP port free on 127.0.0.1 right now (bound and released).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Waits until something listens on TCP `port`.
pub fn wait_listening(port: u16, timeout: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !measure::tcp_listening(port) {
        if Instant::now() >= deadline {
            bail!(
                "{what} is not listening on 127.0.0.1:{port} after {} s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// `name` found in `$PATH`, or the given path if it exists.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_owned());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|c| c.is_file())
}

/// A throwaway `sshd` on 127.0.0.1 with its own host key and one authorized key.
pub struct Sshd {
    pub daemon: Daemon,
    pub port: u16,
    pub user: String,
    pub client_key: PathBuf,
}

impl Sshd {
    /// Starts `sshd -D` from a config in `dir`; fails if OpenSSH is missing.
    pub fn start(dir: &Path) -> Result<Sshd> {
        let sshd = find_program("sshd").context("sshd not installed")?;
        let keygen = find_program("ssh-keygen").context("ssh-keygen not installed")?;
        std::fs::create_dir_all(dir)?;
        let host_key = dir.join("host_ed25519");
        let client_key = dir.join("client_ed25519");
        for k in [&host_key, &client_key] {
            let _ = std::fs::remove_file(k);
            let out = Command::new(&keygen)
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(k)
                .stdin(Stdio::null())
                .output()
                .context("cannot run ssh-keygen")?;
            if !out.status.success() {
                bail!(
                    "ssh-keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let authorized = dir.join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized)?;
        let user = String::from_utf8_lossy(&Command::new("id").arg("-un").output()?.stdout)
            .trim()
            .to_owned();
        let is_root = nix::unistd::geteuid().is_root();
        if is_root {
            // sshd's privilege-separation directory; Debian creates it only at boot.
            std::fs::create_dir_all("/run/sshd").context("cannot create /run/sshd")?;
        }
        let port = free_port()?;
        let sftp = ["/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("internal-sftp");
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nPidFile {}\nSubsystem sftp {sftp}\n",
                host_key.display(),
                authorized.display(),
                if is_root { "yes" } else { "no" },
                dir.join("sshd.pid").display(),
            ),
        )?;
        let log = dir.join("sshd.log");
        let cmd = Cmd::new(sshd).arg("-D").arg("-e").arg("-f").arg(&config);
        let daemon = Daemon::spawn("sshd", &cmd, &log)?;
        wait_listening(port, Duration::from_secs(10), "sshd")?;
        Ok(Sshd {
            daemon,
            port,
            user,
            client_key,
        })
    }
}

//! The one launcher of the real `quaerod`, for the end-to-end tests and for quaero-bench:
//! starts the binary on `127.0.0.1:0` (or a given port) with a temporary data dir and
//! definitions dir, reads the address it prints, stops it (SIGTERM, or SIGKILL as a crash
//! would) when asked or when dropped, and reads what the kernel says about it (CPU time,
//! RSS, I/O) and about its data dir (bytes on disk).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// What went wrong starting, stopping or reading a daemon, with its output where it helps.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn err(s: impl Into<String>) -> Error {
    Error(s.into())
}

/// Lines of the daemon's output kept (the newest), for failure messages and assertions.
const KEEP_LINES: usize = 20_000;

/// Path of a binary of this workspace, built next to the test executable
/// (`target/<profile>/deps/test-xxxx` → `target/<profile>/<name>`), or named by
/// `QUAERO_BIN_<NAME>`.
pub fn bin_path(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("QUAERO_BIN_{}", name.replace('-', "_").to_uppercase())) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run the tests with `cargo nextest run --workspace` (or cargo build first)",
        p.display()
    );
    p
}

/// A running daemon on a temp data dir. Killed (SIGKILL) when dropped.
pub struct Daemon {
    child: Option<Child>,
    bin: PathBuf,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub definitions_dir: PathBuf,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
    _tmp: tempfile::TempDir,
    output: Arc<Mutex<VecDeque<String>>>,
}

pub struct DaemonBuilder {
    bin: Option<PathBuf>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    definitions: Vec<(String, String)>,
}

impl DaemonBuilder {
    /// The binary to start; by default the workspace's `quaerod` ([`bin_path`]).
    pub fn bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin = Some(path.into());
        self
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }
    /// Writes `<file_name>` with `toml` into the definitions dir before start.
    pub fn definition(mut self, file_name: &str, toml: &str) -> Self {
        self.definitions.push((file_name.into(), toml.into()));
        self
    }

    /// Starts the daemon and waits (up to 60 s) for the line that names its address;
    /// panics with the daemon's output if it never comes.
    pub fn start(self) -> Daemon {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(self) -> Result<Daemon, Error> {
        let tmp = tempfile::Builder::new().prefix("quaero-").tempdir().map_err(|e| err(format!("temp dir: {e}")))?;
        let data_dir = tmp.path().join("data");
        let definitions_dir = tmp.path().join("jobs");
        std::fs::create_dir_all(&definitions_dir).map_err(|e| err(e.to_string()))?;
        for (name, body) in &self.definitions {
            std::fs::write(definitions_dir.join(name), body).map_err(|e| err(e.to_string()))?;
        }
        let mut d = Daemon {
            child: None,
            bin: self.bin.unwrap_or_else(|| bin_path("quaerod")),
            base: String::new(),
            port: 0,
            data_dir,
            definitions_dir,
            extra_args: self.args,
            envs: self.envs,
            _tmp: tmp,
            output: Default::default(),
        };
        d.spawn(0)?;
        Ok(d)
    }
}

impl Daemon {
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder { bin: None, args: vec![], envs: vec![], definitions: vec![] }
    }

    pub fn start() -> Daemon {
        Self::builder().start()
    }

    fn spawn(&mut self, port: u16) -> Result<(), Error> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--data")
            .arg(&self.data_dir)
            .arg("--definitions")
            .arg(&self.definitions_dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // What the daemon does is set here, not by the environment the tests run in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("QUAERO_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("QUAERO_LOG", "warn");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| err(format!("cannot start {}: {e}", self.bin.display())))?;
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for stream in [Box::new(stdout) as Box<dyn std::io::Read + Send>, Box::new(stderr)] {
            let tx = tx.clone();
            let log = self.output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    {
                        let mut log = log.lock().unwrap();
                        if log.len() == KEEP_LINES {
                            log.pop_front();
                        }
                        log.push_back(line.clone());
                    }
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    // The start line (`quaerod listening on http://…`), not a warning that
                    // mentions where it listens (`--host 0.0.0.0` without a token).
                    if let Some(rest) = line.split("listening on ").nth(1).filter(|r| r.starts_with("http")) {
                        let url = rest.split_whitespace().next().unwrap_or_default().to_string();
                        let Some(port) = url.rsplit(':').next().and_then(|p| p.parse().ok()) else {
                            let _ = child.kill();
                            let _ = child.wait();
                            return Err(err(format!("no port in the start line {line:?}")));
                        };
                        self.port = port;
                        self.base = url;
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(err(format!("quaerod did not print its address; output:\n{}", self.output_text())));
                }
            }
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.base.replacen("http://", "ws://", 1))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status (SIGKILL and a panic after 60 s).
    pub fn stop(&mut self) -> ExitStatus {
        self.try_stop(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// SIGTERM and wait up to `within` for the exit status; SIGKILL and an error after.
    pub fn try_stop(&mut self, within: Duration) -> Result<ExitStatus, Error> {
        let mut c = self.child.take().ok_or_else(|| err("not running"))?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        loop {
            match c.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return Err(err(format!("quaerod did not exit within {within:?} of SIGTERM")));
                }
                Err(e) => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return Err(err(e.to_string()));
                }
            }
        }
    }

    /// Starts again on the same data dir and the same port (so clients can reconnect).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill9 first");
        let port = self.port;
        self.spawn(port).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts again on the same data dir on a new free port.
    pub fn restart_any_port(&mut self) {
        assert!(self.child.is_none(), "stop or kill9 first");
        self.spawn(0).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn data_path(&self) -> &Path {
        &self.data_dir
    }

    /// What the daemon printed (stdout and stderr, the newest lines).
    pub fn output_text(&self) -> String {
        self.output.lock().unwrap().iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }

    /// The last `n` lines the daemon printed, for error messages.
    pub fn output_tail(&self, n: usize) -> String {
        let out = self.output.lock().unwrap();
        out.iter().skip(out.len().saturating_sub(n)).map(String::as_str).collect::<Vec<_>>().join("\n")
    }

    /// CPU seconds (user + system) the daemon has used so far.
    pub fn cpu_seconds(&self) -> Result<f64, Error> {
        proc::cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }

    /// The daemon's I/O so far from /proc/<pid>/io: (write syscalls, bytes written to disk).
    pub fn io_writes(&self) -> Result<(u64, u64), Error> {
        let path = format!("/proc/{}/io", self.pid());
        let io = std::fs::read_to_string(&path).map_err(|e| err(format!("{path}: {e}")))?;
        Ok((proc::field(&io, "syscw:", &path)?, proc::field(&io, "write_bytes:", &path)?))
    }

    /// Peak resident set size (VmHWM) in bytes.
    pub fn peak_rss(&self) -> Result<u64, Error> {
        self.status_kb("VmHWM:").map(|kb| kb * 1024)
    }

    /// Resident set size now (VmRSS) in bytes.
    pub fn rss(&self) -> Result<u64, Error> {
        self.status_kb("VmRSS:").map(|kb| kb * 1024)
    }

    fn status_kb(&self, key: &str) -> Result<u64, Error> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).map_err(|e| err(format!("{path}: {e}")))?;
        proc::field(&status, key, &path)
    }

    /// Bytes the data dir occupies: (allocated on disk, apparent size).
    pub fn disk_bytes(&self) -> (u64, u64) {
        proc::dir_bytes(&self.data_dir)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What the kernel says about a process and a directory.
pub mod proc {
    use std::path::Path;

    use super::{Error, err};

    /// CPU seconds (user + system) of the process whose `/proc/<pid>/stat` this is.
    pub fn cpu_seconds(stat_path: &str) -> Result<f64, Error> {
        let stat = std::fs::read_to_string(stat_path).map_err(|e| err(format!("{stat_path}: {e}")))?;
        // Fields after the command name (which may hold spaces) start with the state
        // (field 3); utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| err(format!("bad {stat_path}")))?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num =
            |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| err(format!("bad {stat_path}")));
        let (utime, stime) = (num(11)?, num(12)?);
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok((utime + stime) as f64 / hz)
    }

    /// The first number after `key` in a `key: value` file of /proc.
    pub(super) fn field(text: &str, key: &str, path: &str) -> Result<u64, Error> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| err(format!("no {key} in {path}")))
    }

    /// (allocated, apparent) bytes of every file under `dir`.
    pub fn dir_bytes(dir: &Path) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let mut total = (0, 0);
        let Ok(rd) = std::fs::read_dir(dir) else { return total };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                let (a, b) = dir_bytes(&e.path());
                total.0 += a;
                total.1 += b;
            } else {
                total.0 += m.blocks() * 512;
                total.1 += m.len();
            }
        }
        total
    }
}

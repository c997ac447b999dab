//! The daemon under test: the real release `quaerod`, started on `127.0.0.1:0` with a temp
//! data dir and an empty definitions dir, and what the kernel says about it (CPU time,
//! peak RSS) and about its data dir (bytes on disk).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Lines of the daemon's output kept for error messages.
const KEEP_LINES: usize = 50;

/// Finds the `quaerod` to benchmark: `QUAERO_BIN` if set; otherwise builds it in release
/// (a no-op when it is up to date) and takes the one next to this executable, so that a
/// stale binary is never measured by accident.
pub fn quaerod_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("QUAERO_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("QUAERO_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot find the bench executable")?;
    let dir = exe.parent().context("bench executable has no directory")?;
    let bin = dir.join("quaerod");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let profile = if dir.ends_with("release") { vec!["--release"] } else { vec![] };
    eprintln!("quaero-bench: building quaerod ({cargo} build {} --locked -p quaerod)", profile.join(" "));
    let status = std::process::Command::new(&cargo)
        .arg("build")
        .args(&profile)
        .args(["--locked", "-p", "quaerod", "--manifest-path"])
        .arg(&manifest)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => bail!("building quaerod failed ({s}); build it yourself or set QUAERO_BIN"),
        Err(e) if bin.is_file() => eprintln!("quaero-bench: cannot run {cargo} ({e}); using {}", bin.display()),
        Err(e) => bail!("cannot run {cargo} to build quaerod ({e}); set QUAERO_BIN"),
    }
    if !profile.contains(&"--release") {
        eprintln!("quaero-bench: WARNING: not a release build; numbers are not comparable with BENCHMARKS.md");
    }
    if !bin.is_file() {
        bail!("{} not found after building; set QUAERO_BIN", bin.display());
    }
    Ok(bin)
}

/// A running `quaerod`. Killed when dropped.
pub struct Daemon {
    child: Child,
    pub pid: u32,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub ws_url: String,
    pub data_dir: PathBuf,
    output: Arc<Mutex<Vec<String>>>,
    _tmp: tempfile::TempDir,
}

impl Daemon {
    /// Starts `bin` with `args` (beyond port, data and definitions dirs) and waits for the
    /// line that names its address.
    pub async fn start(bin: &Path, args: &[&str]) -> Result<Daemon> {
        let tmp = tempfile::Builder::new().prefix("quaero-bench-").tempdir().context("temp dir")?;
        let data_dir = tmp.path().join("data");
        let defs = tmp.path().join("jobs");
        std::fs::create_dir_all(&defs)?;
        let mut cmd = Command::new(bin);
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--data"])
            .arg(&data_dir)
            .arg("--definitions")
            .arg(&defs)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The environment must not change what is measured.
        for (k, _) in std::env::vars() {
            if k.starts_with("QUAERO_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("QUAERO_LOG", "warn");
        let mut child = cmd.spawn().with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().context("quaerod exited at once")?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        for (stream, is_stdout) in [
            (Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>, true),
            (Box::new(stderr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>, false),
        ] {
            let output = output.clone();
            let addr_tx = addr_tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if is_stdout && let Some(rest) = line.split("listening on ").nth(1) {
                        let _ = addr_tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                    }
                    let mut o = output.lock().expect("output");
                    o.push(line);
                    if o.len() > KEEP_LINES {
                        o.remove(0);
                    }
                }
            });
        }
        drop(addr_tx);
        let base = match tokio::time::timeout(Duration::from_secs(60), addr_rx.recv()).await {
            Ok(Some(url)) => url,
            _ => {
                let _ = child.kill().await;
                bail!("quaerod did not print its address; output:\n{}", output.lock().expect("output").join("\n"));
            }
        };
        let ws_url = format!("{}/ws", base.replacen("http://", "ws://", 1));
        Ok(Daemon { child, pid, base, ws_url, data_dir, output, _tmp: tmp })
    }

    /// The last lines the daemon printed, for error messages.
    pub fn output(&self) -> String {
        self.output.lock().expect("output").join("\n")
    }

    /// CPU seconds (user + system) the daemon has used so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        proc_cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// The daemon's I/O so far from /proc/<pid>/io: (write syscalls, bytes written to disk).
    /// More write syscalls for the same events means the writer committed in more, smaller
    /// batches (each ends with a flush).
    pub fn io_writes(&self) -> Result<(u64, u64)> {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.pid))?;
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| anyhow!("no {name} in /proc/{}/io", self.pid))
        };
        Ok((field("syscw:")?, field("write_bytes:")?))
    }

    /// Peak resident set size (VmHWM) in bytes.
    pub fn peak_rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no VmHWM"))?;
        Ok(kb * 1024)
    }

    /// Bytes the data dir occupies: (allocated on disk, apparent size).
    pub fn disk_bytes(&self) -> (u64, u64) {
        dir_bytes(&self.data_dir)
    }

    /// SIGTERM, then SIGKILL if it has not exited within 15 s. An exit other than 0 after
    /// SIGTERM is an error: the daemon did not shut down cleanly.
    pub async fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => bail!("quaerod exited with {s} after SIGTERM; output:\n{}", self.output()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("quaerod did not exit within 15 s of SIGTERM")
            }
        }
    }
}

/// CLOCK_MONOTONIC in seconds: the clock `perf record -k CLOCK_MONOTONIC` stamps samples
/// with, so measured windows can be cut out of a profile.
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU seconds (user + system) this process has used so far.
pub fn own_cpu_seconds() -> Result<f64> {
    proc_cpu_seconds("/proc/self/stat")
}

fn proc_cpu_seconds(stat_path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(stat_path)?;
    // Fields after the command name (which may hold spaces) start with the state (field
    // 3); utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("bad {stat_path}"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).ok_or_else(|| anyhow!("no utime"))?.parse()?;
    let stime: u64 = f.get(12).ok_or_else(|| anyhow!("no stime"))?.parse()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((utime + stime) as f64 / hz)
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

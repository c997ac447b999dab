//! The daemon under test: the real release `quaerod`, started by the launcher the
//! end-to-end tests use (`quaero_tests::daemon`) on `127.0.0.1:0` with a temp data dir and
//! an empty definitions dir; plus what the kernel says about this process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
pub use quaero_tests::daemon::Daemon;
pub use quaero_tests::daemon::proc::dir_bytes;

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

/// Starts `bin` with `args` (beyond port, data and definitions dirs) and waits for the line
/// that names its address. Blocking, deliberately: the bench starts and stops its daemons
/// between measurements, when nothing else runs.
pub fn start(bin: &Path, args: &[&str]) -> Result<Daemon> {
    Ok(Daemon::builder().bin(bin).args(args.iter().copied()).try_start()?)
}

/// SIGTERM, then SIGKILL if it has not exited within 15 s. An exit other than 0 after
/// SIGTERM is an error: the daemon did not shut down cleanly.
pub fn stop(mut d: Daemon) -> Result<()> {
    let status = d.try_stop(Duration::from_secs(15))?;
    if !status.success() {
        bail!("quaerod exited with {status} after SIGTERM; output:\n{}", d.output_tail(50));
    }
    Ok(())
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
    Ok(quaero_tests::daemon::proc::cpu_seconds("/proc/self/stat")?)
}

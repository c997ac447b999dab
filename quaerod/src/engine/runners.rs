//! Step runners: what one unit of work (a step that does not fan out, or one child job)
//! actually does. Each writes its output as events through the [`Sink`] and returns
//! `Ok(())` for success or the reason it failed.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quaero_shared::{JobPath, Level, Originator};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio_util::sync::CancellationToken;

use super::definition::{CommandSpec, EmitSpec, HttpSpec};
use super::leftovers::{DAEMON_ENV, INSTANCE_ENV, JOB_ID_ENV, daemon_marker, signal_group};
use crate::store::{NewEvent, Store};
use crate::time::now_ms;

/// Lines longer than this are cut, with a marker saying how much was dropped.
pub const MAX_LINE: usize = 64 * 1024;
/// Grace between SIGTERM and SIGKILL when a command is cancelled.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// Events handed to the writer per message when a runner produces them in bulk.
const CHUNK: usize = 256;

/// How a unit of work ended when it did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Failed(String),
    Cancelled,
}

pub type Outcome = Result<(), Failure>;

/// Where a runner's events go: one job's scope, with a fixed originator.
#[derive(Clone)]
pub struct Sink {
    pub store: Arc<dyn Store>,
    pub path: JobPath,
    pub originator: Originator,
}

impl Sink {
    pub fn event(&self, level: Level, message: String) -> NewEvent {
        NewEvent { path: self.path, level, originator: self.originator, ts_ms: now_ms(), message }
    }

    pub async fn send(&self, level: Level, message: String) {
        // A closed store means the daemon is stopping; the runner is being cancelled too.
        let _ = self.store.append(vec![self.event(level, message)]).await;
    }
}

fn render(template: &str, i: u64, n: u64, child: u32) -> String {
    template.replace("{i}", &i.to_string()).replace("{n}", &n.to_string()).replace("{child}", &child.to_string())
}

/// `emit`: `count` synthetic events, then success (or failure when `fail = true`).
pub async fn emit(spec: &EmitSpec, attempt: u32, sink: &Sink, cancel: &CancellationToken) -> Outcome {
    let n = spec.count;
    let child = sink.path.child;
    if spec.interval_ms == 0 {
        let mut i = 1;
        while i <= n {
            if cancel.is_cancelled() {
                return Err(Failure::Cancelled);
            }
            let end = (i + CHUNK as u64 - 1).min(n);
            let ts = now_ms();
            let chunk: Vec<NewEvent> = (i..=end)
                .map(|k| NewEvent {
                    path: sink.path,
                    level: spec.level,
                    originator: sink.originator,
                    ts_ms: ts,
                    message: render(&spec.message, k, n, child),
                })
                .collect();
            if sink.store.append(chunk).await.is_err() {
                return Err(Failure::Cancelled);
            }
            i = end + 1;
        }
    } else {
        let mut tick = tokio::time::interval(Duration::from_millis(spec.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for k in 1..=n {
            tokio::select! {
                _ = cancel.cancelled() => return Err(Failure::Cancelled),
                _ = tick.tick() => {}
            }
            sink.send(spec.level, render(&spec.message, k, n, child)).await;
        }
    }
    if spec.flaky_every > 0 && attempt <= 1 && u64::from(child.max(1)) % spec.flaky_every == 0 {
        let msg = format!("failing its first attempt as configured (flaky_every = {})", spec.flaky_every);
        sink.send(Level::Error, msg.clone()).await;
        return Err(Failure::Failed(msg));
    }
    if spec.fail {
        let msg = format!("failing as configured (fail = true) after {n} events");
        sink.send(Level::Error, msg.clone()).await;
        return Err(Failure::Failed(msg));
    }
    Ok(())
}

/// `http_fetch` for one URL: one event with status, size and time.
pub async fn http_get(
    client: &reqwest::Client,
    url: &str,
    spec: &HttpSpec,
    sink: &Sink,
    cancel: &CancellationToken,
) -> Outcome {
    let started = Instant::now();
    let fetch = async {
        let resp = client.get(url).timeout(spec.timeout_dur).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, body.len()))
    };
    let res = tokio::select! {
        _ = cancel.cancelled() => return Err(Failure::Cancelled),
        r = fetch => r,
    };
    let ms = started.elapsed().as_millis();
    match res {
        Ok((status, bytes)) if status.is_success() => {
            sink.send(Level::Info, format!("GET {url} → {status}, {bytes} bytes in {ms} ms")).await;
            Ok(())
        }
        Ok((status, bytes)) => {
            let msg = format!("GET {url} → {status}, {bytes} bytes in {ms} ms");
            sink.send(Level::Error, msg.clone()).await;
            Err(Failure::Failed(msg))
        }
        Err(e) => {
            let msg = format!("GET {url} failed after {ms} ms: {}", error_chain(&e));
            sink.send(Level::Error, msg.clone()).await;
            Err(Failure::Failed(msg))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `command`: runs the process in its own process group; stdout lines are `info`, stderr
/// lines `warn`. `item` fills `{item}` for fan-out children.
pub async fn command(spec: &CommandSpec, item: Option<&str>, sink: &Sink, cancel: &CancellationToken) -> Outcome {
    let subst = |s: &str| match item {
        Some(it) => s.replace("{item}", it),
        None => s.to_string(),
    };
    let mut cmd = match (&spec.run, &spec.argv) {
        (Some(run), _) => {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(subst(run));
            c
        }
        (None, Some(argv)) => {
            let mut c = tokio::process::Command::new(subst(&argv[0]));
            c.args(argv[1..].iter().map(|a| subst(a)));
            c
        }
        (None, None) => return Err(Failure::Failed("no command given".into())),
    };
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    // The daemon's token is not the job's business. QUAERO_INSTANCE and QUAERO_DAEMON mark
    // the processes as this data directory's and this daemon's, for a daemon that starts
    // after this one was killed (set after the definition's env, which cannot unset them).
    cmd.env_remove("QUAERO_SERVER_AUTH_TOKEN")
        .envs(&spec.env)
        .env(JOB_ID_ENV, sink.path.to_string())
        .env(INSTANCE_ENV, sink.store.instance())
        .env(DAEMON_ENV, daemon_marker())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(&soft) = crate::http::ORIGINAL_FD_LIMIT.get() {
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // getrlimit/setrlimit, which are async-signal-safe; no allocation.
        unsafe {
            cmd.pre_exec(move || {
                let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && soft < lim.rlim_cur {
                    lim.rlim_cur = soft;
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
                Ok(())
            });
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("cannot start the command: {e}");
            sink.send(Level::Error, msg.clone()).await;
            return Err(Failure::Failed(msg));
        }
    };
    let pgid = child.id().unwrap_or(0);
    let out = child.stdout.take().map(|s| tokio::spawn(pump(s, sink.clone(), Level::Info)));
    let err = child.stderr.take().map(|s| tokio::spawn(pump(s, sink.clone(), Level::Warn)));

    let mut cancelled = false;
    let status = tokio::select! {
        s = child.wait() => s,
        _ = cancel.cancelled() => {
            cancelled = true;
            signal_group(pgid, libc::SIGTERM);
            match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    signal_group(pgid, libc::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    // Whatever the command left behind in its group (background children holding the
    // pipes open) goes with it: a step owns its processes.
    if pgid != 0 {
        signal_group(pgid, libc::SIGKILL);
    }
    for h in [out, err].into_iter().flatten() {
        let _ = h.await;
    }
    if cancelled {
        return Err(Failure::Cancelled);
    }
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => {
            let msg = match s.code() {
                Some(127) => "command not found (exit code 127)".to_string(),
                Some(126) => "command not executable (exit code 126)".to_string(),
                Some(c) => format!("command exited with code {c}"),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    format!("command killed by signal {}", s.signal().unwrap_or(0))
                }
            };
            sink.send(Level::Error, msg.clone()).await;
            Err(Failure::Failed(msg))
        }
        Err(e) => {
            let msg = format!("waiting for the command failed: {e}");
            sink.send(Level::Error, msg.clone()).await;
            Err(Failure::Failed(msg))
        }
    }
}

/// Turns a byte stream into events, one per line.
async fn pump(stream: impl AsyncRead + Unpin, sink: Sink, level: Level) {
    let mut lines = LineReader::new(stream);
    while let Some(line) = lines.next_line().await {
        sink.send(level, line).await;
    }
}

/// Splits a stream into lines of at most [`MAX_LINE`] bytes without ever holding more
/// than that in memory: the rest of an over-long line is counted and dropped. Invalid
/// UTF-8 is replaced, a trailing `\r` removed.
pub struct LineReader<R> {
    inner: BufReader<R>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(r: R) -> Self {
        LineReader { inner: BufReader::with_capacity(64 * 1024, r) }
    }

    pub async fn next_line(&mut self) -> Option<String> {
        let mut line: Vec<u8> = Vec::new();
        let mut dropped: u64 = 0;
        let mut saw_any = false;
        while let Ok(buf) = self.inner.fill_buf().await {
            if buf.is_empty() {
                break;
            }
            saw_any = true;
            let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            let room = MAX_LINE.saturating_sub(line.len());
            let take = chunk.len().min(room);
            line.extend_from_slice(&chunk[..take]);
            dropped += (chunk.len() - take) as u64;
            let consumed = done.unwrap_or(chunk.len());
            self.inner.consume(consumed);
            if done.is_some() {
                break;
            }
        }
        if !saw_any {
            return None;
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let mut s = String::from_utf8_lossy(&line).into_owned();
        if dropped > 0 {
            s.push_str(&format!(" …[line cut: {dropped} more bytes]"));
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_capped_and_lossy() {
        let mut input = Vec::new();
        input.extend_from_slice(b"hello\r\n");
        input.extend_from_slice(&[0xff, 0xfe, b'x', b'\n']);
        input.extend(std::iter::repeat_n(b'a', 1024 * 1024));
        input.extend_from_slice(b"\nlast");
        let mut r = LineReader::new(&input[..]);
        assert_eq!(r.next_line().await.unwrap(), "hello");
        assert_eq!(r.next_line().await.unwrap(), "\u{fffd}\u{fffd}x");
        let long = r.next_line().await.unwrap();
        assert!(long.starts_with(&"a".repeat(MAX_LINE)));
        assert!(
            long.ends_with(&format!("[line cut: {} more bytes]", 1024 * 1024 - MAX_LINE)),
            "{}",
            &long[long.len() - 60..]
        );
        assert_eq!(r.next_line().await.unwrap(), "last");
        assert_eq!(r.next_line().await, None);
    }

    #[test]
    fn templates() {
        assert_eq!(render("event {i} of {n} (child {child})", 3, 10, 2), "event 3 of 10 (child 2)");
    }
}

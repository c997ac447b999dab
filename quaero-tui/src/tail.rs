//! Scripted mode: `quaero-tui --job <id>` / `--run <definition>`.
//!
//! Correctness rests on one cursor: every page is `after=<last printed seq>`, so an event is
//! printed once and in `seq` order whatever happens between pages (slow terminal, lost
//! triggers, a daemon restart). The WebSocket only decides *when* to fetch; a slow poll
//! covers for it while it is down. The job is only declared finished after its status
//! was seen terminal and the log was then drained to empty.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quaero_shared::{Event, ExecuteRequest, JobStatus, Level, Order, ServerMessage, sanitize_terminal};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::{ApiError, Client, Follower, LinkEvent, LogQuery, WsLink};
use crate::text::{event_source, event_time, level_label};

/// The API's maximum page.
pub use crate::client::MAX_PAGE as PAGE;
/// How long the server may stay unreachable before the tail gives up (exit 5).
const UNREACHABLE_FOR: Duration = Duration::from_secs(10);
/// Fallback poll while the WebSocket is down, and a safety net while it is up.
const POLL_WS_DOWN: Duration = Duration::from_millis(1000);
const POLL_WS_UP: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Job(String),
    Run(String),
}

#[derive(Debug, Clone)]
pub struct TailOptions {
    pub target: Target,
    /// For [`Target::Run`]: the parameters and start time of the run.
    pub execute: ExecuteRequest,
    /// Start from the last N events instead of the first.
    pub tail: Option<u32>,
    pub follow: bool,
    pub level: Option<Level>,
    pub json: bool,
    pub timestamps: bool,
    pub color: bool,
}

/// Why the tail stopped, which is also its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Completed = 0,
    Failed = 1,
    Usage = 2,
    Cancelled = 3,
    NotFound = 4,
    Unreachable = 5,
}

#[derive(Debug, thiserror::Error)]
enum TailError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Output closed (`| head`): stop quietly.
    #[error("broken pipe")]
    BrokenPipe,
    #[error("write error: {0}")]
    Io(io::Error),
}

impl From<io::Error> for TailError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe { Self::BrokenPipe } else { Self::Io(e) }
    }
}

/// Runs the tail to the end and returns the exit code; messages for the user go to stderr.
pub async fn run(client: Client, opts: TailOptions, out: impl Write) -> Exit {
    match tail(&client, &opts, out).await {
        Ok(exit) => exit,
        Err(TailError::BrokenPipe) => Exit::Completed,
        Err(TailError::Api(ApiError::NotFound(msg))) => {
            let what = match &opts.target {
                Target::Job(id) => format!("job {id:?}"),
                Target::Run(id) => format!("job definition {id:?}"),
            };
            eprintln!("quaero-tui: unknown {what}: {}", sanitize_terminal(&msg));
            Exit::NotFound
        }
        Err(TailError::Api(e)) if e.is_transient() => {
            eprintln!(
                "quaero-tui: {} (gave up after {}s)",
                sanitize_terminal(&e.to_string()),
                UNREACHABLE_FOR.as_secs()
            );
            Exit::Unreachable
        }
        // The server broke the `after` contract (a repeated or reordered event): not the
        // user's mistake, so not a usage error.
        Err(TailError::Api(e @ ApiError::Decode(_))) => {
            eprintln!("quaero-tui: {}", sanitize_terminal(&e.to_string()));
            Exit::Failed
        }
        Err(TailError::Api(e)) => {
            eprintln!("quaero-tui: {}", sanitize_terminal(&e.to_string()));
            Exit::Usage
        }
        Err(TailError::Io(e)) => {
            eprintln!("quaero-tui: {e}");
            Exit::Failed
        }
    }
}

async fn tail(client: &Client, opts: &TailOptions, mut out: impl Write) -> Result<Exit, TailError> {
    let id = match &opts.target {
        Target::Job(id) => id.clone(),
        Target::Run(def) => {
            let resp = retry(|| client.execute_with(def, &opts.execute)).await?;
            eprintln!("{}", sanitize_terminal(&resp.job_id));
            resp.job_id
        }
    };
    let job = retry(|| client.job(&id)).await?;

    let wake = Arc::new(Notify::new());
    let ws_up = Arc::new(AtomicBool::new(false));
    let watcher = opts
        .follow
        .then(|| tokio::spawn(watch(client.clone(), job.manager_id.clone(), id.clone(), wake.clone(), ws_up.clone())));
    // The watcher holds a socket; it must not outlive the tail.
    let _guard = AbortOnDrop(watcher);

    let cursor = match opts.tail {
        None => 0,
        Some(n) => {
            let q = LogQuery {
                limit: Some(n.clamp(1, PAGE)),
                order: Some(Order::Asc),
                level: opts.level,
                after: None,
                before: None,
            };
            let page = retry(|| client.logs(&id, &q)).await?;
            if n > 0 {
                write_events(&mut out, &page.logs, opts)?;
            }
            match (n, page.logs.last()) {
                (1.., Some(last)) => last.seq,
                _ => page.last_seq,
            }
        }
    };

    let mut follower = Follower::new(id.clone(), cursor).page_size(PAGE).level(opts.level);
    let mut terminal: Option<JobStatus> = None;
    loop {
        let q = follower.query();
        let resp = retry(|| client.logs(&id, &q)).await?;
        let page = follower.accept(resp)?;
        write_events(&mut out, &page.events, opts)?;
        // A full page means more is waiting: fetch again before anything else.
        if page.more {
            continue;
        }
        if let Some(status) = terminal {
            return Ok(exit_for(status));
        }
        if !opts.follow {
            return Ok(Exit::Completed);
        }
        let job = retry(|| client.job(&id)).await?;
        if job.status.is_terminal() {
            // Drain once more: events committed before the status changed are after `cursor`.
            terminal = Some(job.status);
            continue;
        }
        let poll = if ws_up.load(Ordering::Relaxed) { POLL_WS_UP } else { POLL_WS_DOWN };
        let _ = tokio::time::timeout(poll, wake.notified()).await;
    }
}

fn exit_for(status: JobStatus) -> Exit {
    match status {
        JobStatus::Completed => Exit::Completed,
        JobStatus::Cancelled => Exit::Cancelled,
        _ => Exit::Failed,
    }
}

struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Wakes the tail whenever the daemon says something about this job's manager.
async fn watch(client: Client, manager_id: String, id: String, wake: Arc<Notify>, up: Arc<AtomicBool>) {
    let mut link = WsLink::new(client.ws_url(), client.token().map(str::to_string), vec![manager_id.clone()]);
    loop {
        let relevant = match link.next().await {
            LinkEvent::Connected => {
                up.store(true, Ordering::Relaxed);
                // Anything may have happened while we were away.
                true
            }
            LinkEvent::Disconnected { .. } => {
                up.store(false, Ordering::Relaxed);
                true
            }
            LinkEvent::Message(ServerMessage::RefreshStepEvents(r)) => {
                r.manager_ids.contains(&manager_id)
                    || r.step_ids.iter().any(|s| id.starts_with(s.as_str()) || s.starts_with(id.as_str()))
            }
            LinkEvent::Message(ServerMessage::JobStatusChange(c)) => c.manager_id == manager_id,
            LinkEvent::Message(ServerMessage::JobLog(l)) => l.event.manager_id == manager_id,
            LinkEvent::Message(_) => false,
        };
        if relevant {
            wake.notify_one();
        }
    }
}

/// Retries transient failures (server down, restarting) for up to [`UNREACHABLE_FOR`].
async fn retry<T, F, Fut>(mut f: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut first_failure: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        match f().await {
            Err(e) if e.is_transient() => {
                let since = *first_failure.get_or_insert_with(|| {
                    eprintln!("quaero-tui: {}; retrying", sanitize_terminal(&e.to_string()));
                    Instant::now()
                });
                if since.elapsed() >= UNREACHABLE_FOR {
                    return Err(e);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

fn write_events(out: &mut impl Write, events: &[Event], opts: &TailOptions) -> Result<(), TailError> {
    for e in events {
        if opts.json {
            let line = serde_json::to_string(e).map_err(|err| TailError::Io(io::Error::other(err)))?;
            writeln!(out, "{}", escape_c1(&line))?;
        } else {
            writeln!(out, "{}", format_line(e, opts.timestamps, opts.color))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// JSON escapes C0 controls but not DEL or the C1 range (U+0080–U+009F), where U+009B is
/// the 8-bit CSI some terminals obey: those are escaped too (`\u009b`), still valid JSON
/// for the same text, since they can only occur inside strings.
fn escape_c1(json: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| ('\u{7f}'..='\u{9f}').contains(&c);
    if !json.contains(bad) {
        return json.into();
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// `HH:MM:SS.mmm LEVEL [step/originator] message`, control sequences stripped.
pub fn format_line(e: &Event, timestamps: bool, color: bool) -> String {
    let label = level_label(e.level);
    let level = if color {
        let code = match e.level {
            Level::Debug => "2",
            Level::Info => "32",
            Level::Warn => "33",
            Level::Error => "1;31",
        };
        format!("\x1b[{code}m{label}\x1b[0m")
    } else {
        label.to_string()
    };
    let msg = sanitize_terminal(&e.message);
    if timestamps {
        format!("{} {level} {} {msg}", event_time(e), event_source(e))
    } else {
        format!("{level} {} {msg}", event_source(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quaero_shared::Originator;

    #[test]
    fn json_lines_escape_c1_and_del_and_keep_the_text() {
        let e = ev("csi \u{9b}31m del \u{7f} nel \u{85} ok é \u{a0}");
        let line = serde_json::to_string(&e).unwrap();
        let escaped = escape_c1(&line);
        assert!(!escaped.chars().any(|c| ('\u{7f}'..='\u{9f}').contains(&c)), "{escaped}");
        assert!(escaped.contains("\\u009b") && escaped.contains('é') && escaped.contains('\u{a0}'), "{escaped}");
        let back: Event = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back, e);
    }

    fn ev(msg: &str) -> Event {
        Event {
            seq: 7,
            job_id: "m1-s1".into(),
            step_id: Some("m1-s1".into()),
            manager_id: "m1".into(),
            step_name: Some("build".into()),
            level: Level::Warn,
            message: msg.into(),
            originator: Originator::Step,
            timestamp: "13:04:05.123".into(),
            full_timestamp: "2026-11-28T13:04:05.123Z".into(),
        }
    }

    #[test]
    fn plain_lines_are_stripped_of_control_sequences() {
        assert_eq!(format_line(&ev("a\x1b[2Jb\x07"), true, false), "13:04:05.123 WARN  [build/step] ab");
        assert_eq!(format_line(&ev("x"), false, false), "WARN  [build/step] x");
    }

    #[test]
    fn colour_only_wraps_the_level() {
        assert_eq!(format_line(&ev("x"), false, true), "\x1b[33mWARN \x1b[0m [build/step] x");
    }

    #[test]
    fn broken_pipe_is_its_own_case() {
        let e: TailError = io::Error::from(io::ErrorKind::BrokenPipe).into();
        assert!(matches!(e, TailError::BrokenPipe));
    }
}

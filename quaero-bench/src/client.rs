//! How the bench talks to the daemon: the shared client (`quaero_shared::client`) set up
//! for measuring, and WebSocket clients that either never read (a stuck browser tab) or
//! behave as the dashboard does (refetch the last 100 events of each step a trigger names,
//! through the shared [`StepRefetch`] throttle: at most once per 500 ms per step with a
//! trailing fetch for what the window folded, at once for `finished` triggers).

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use quaero_shared::ServerMessage;
pub use quaero_shared::client::Client as Api;
use quaero_shared::client::{ClientOptions, StepRefetch};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::daemon::Daemon;

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the dashboard fetches for an open step panel.
pub const LAST_100: &str = "logs?limit=100&order=asc";

/// A client of `d` for measuring: many idle connections kept, long pages waited for, no proxy.
pub fn api(d: &Daemon) -> Result<Api> {
    let o = ClientOptions { timeout: Duration::from_secs(120), pool_max_idle_per_host: 128, no_proxy: true };
    Ok(Api::with_options(&d.base, None, &o)?)
}

/// A client that connects and never reads: the server must not let it slow anything.
pub async fn connect_idle(url: &str) -> Result<WsStream> {
    let (s, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url))
        .await
        .context("WebSocket connect timed out")?
        .context("WebSocket connect")?;
    Ok(s)
}

/// A `finished` trigger as a client received it.
#[derive(Debug, Clone)]
pub struct Finished {
    pub step_ids: Vec<String>,
    pub manager_ids: Vec<String>,
    pub at: SystemTime,
}

/// What one reading client saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchStats {
    pub messages: u64,
    pub bytes: u64,
    pub job_logs: u64,
    pub refreshes: u64,
    pub finished: u64,
    pub fetches: u64,
    pub fetch_errors: u64,
}

/// A reading client, running in its own task until [`Watcher::stop`].
pub struct Watcher {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<WatchStats>>,
}

impl Watcher {
    /// Connects and waits for `hello`. With `api`, refetches steps as the dashboard does;
    /// every `finished` trigger goes to `finished` when given.
    pub async fn start(url: &str, api: Option<Api>, finished: Option<mpsc::UnboundedSender<Finished>>) -> Result<Self> {
        let mut ws = connect_idle(url).await?;
        let mut stats = WatchStats::default();
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("\"hello\"") => {
                stats.messages += 1;
                stats.bytes += t.len() as u64;
            }
            other => bail!("expected hello, got {other:?}"),
        }
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut refetch = StepRefetch::default();
            loop {
                // A trailing fetch comes due, or the socket says something.
                let trailing = refetch.next_due();
                let msg = tokio::select! {
                    _ = &mut stopped => return Ok(stats),
                    _ = tokio::time::sleep_until(trailing.unwrap_or_else(Instant::now)), if trailing.is_some() => {
                        let due = refetch.due(Instant::now());
                        fetch_all(api.as_ref(), &due, &mut stats).await;
                        continue;
                    }
                    m = ws.next() => m,
                };
                let text = match msg {
                    None | Some(Ok(Message::Close(_))) => return Ok(stats),
                    Some(Err(e)) => return Err(e).context("WebSocket read"),
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                };
                stats.messages += 1;
                stats.bytes += text.len() as u64;
                // Push mode sends one of these per event: count, do not parse.
                if text.as_str().starts_with("{\"type\":\"job_log\"") {
                    stats.job_logs += 1;
                    continue;
                }
                let Ok(ServerMessage::RefreshStepEvents(r)) = serde_json::from_str::<ServerMessage>(text.as_str())
                else {
                    continue;
                };
                if r.finished {
                    stats.finished += 1;
                    if let Some(tx) = &finished {
                        let at = SystemTime::now();
                        let _ =
                            tx.send(Finished { step_ids: r.step_ids.clone(), manager_ids: r.manager_ids.clone(), at });
                    }
                } else {
                    stats.refreshes += 1;
                }
                if api.is_some() {
                    let now = refetch.trigger(&r.step_ids, r.finished, Instant::now());
                    fetch_all(api.as_ref(), &now, &mut stats).await;
                }
            }
        });
        Ok(Watcher { stop, task })
    }

    pub async fn stop(self) -> Result<WatchStats> {
        let _ = self.stop.send(());
        self.task.await.context("watcher task")?
    }
}

/// Fetches the last 100 events of each step, one after another as a browser tab would.
async fn fetch_all(api: Option<&Api>, steps: &[String], stats: &mut WatchStats) {
    let Some(api) = api else { return };
    for step in steps {
        stats.fetches += 1;
        let ok = match api.http().get(api.url(&format!("/api/jobs/{step}/{LAST_100}"))).send().await {
            Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
            Err(_) => false,
        };
        if !ok {
            stats.fetch_errors += 1;
        }
    }
}
